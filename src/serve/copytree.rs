//! The copy under `image extract`: files, folders and symbolic links taken from a mounted,
//! read-only filesystem into a destination directory.
//!
//! - Nothing is followed out of the tree: the source is walked with `lstat`, a symbolic link is
//!   copied as a link, a path whose directories are links is refused ([`resolve_item`]).
//! - Nothing is replaced: every file, directory and link is created new (`O_EXCL`, `mkdir`,
//!   `symlink`); a name already taken at the destination (or taken by another name of the same
//!   letters on a case-insensitive filesystem such as FAT) gets ` (2)`, ` (3)` … before its
//!   extension, and the report lists it under `renamed`.
//! - Modes, owners and access/modification times are kept where the destination filesystem can
//!   store them (FAT cannot store modes or owners: one note says so, it is not an error).
//! - A file that cannot be read (a damaged chunk of the image reaches the filesystem as EIO) is
//!   reported with its path and the error, its partial copy removed, and the copy goes on. A
//!   destination that is full or read-only stops the copy.
//! - Progress in bytes of file data; cancellation between buffers (the file being copied is
//!   removed, everything finished before stays).
use crate::error::{Error, ErrorKind, Result};
use crate::jobs::{Cancel, Progress, ProgressSink, RateMeter};
use serde::Serialize;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How many errors, renames and skips the report lists (the counts are always complete).
const LIST_LIMIT: usize = 1000;
/// The copy buffer.
const BUF: usize = 1 << 20;

/// One path to copy: its components inside the source tree (empty = the whole tree).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub rel: Vec<PathBuf>,
}

impl Item {
    /// The path as the user sees it inside the source ("/data/a.txt").
    pub fn shown(&self) -> String {
        shown(&self.rel.iter().collect::<PathBuf>())
    }
}

fn shown(rel: &Path) -> String {
    format!("/{}", rel.display())
}

/// A file that could not be copied.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FileError {
    /// The path inside the source ("/data/a.txt").
    pub path: String,
    /// `read` (the source: a damaged image) or `write` (the destination).
    pub side: &'static str,
    pub message: String,
    /// The OS error number, when there was one (5 = EIO).
    pub errno: Option<i32>,
}

/// A name stored under another name at the destination.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Renamed {
    pub path: String,
    /// Where it is, relative to the destination directory.
    pub dest: String,
}

/// The kind name of a file type, as the reports say it (`image ls`'s `kind`, the copy's
/// `skipped[].what`): `file`, `dir`, `symlink`, `fifo`, `socket`, `char_device`,
/// `block_device`, `unknown`.
pub fn kind_of(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "char_device"
    } else if ft.is_block_device() {
        "block_device"
    } else {
        "unknown"
    }
}

/// Something that is not a file, folder or link (a device node, FIFO, socket): not copied.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Skipped {
    pub path: String,
    pub what: &'static str,
}

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CopyReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// File data copied.
    pub bytes: u64,
    /// Where each item went, relative to the destination directory (same order as given).
    pub items: Vec<Renamed>,
    pub renamed: Vec<Renamed>,
    pub errors: Vec<FileError>,
    pub errors_total: u64,
    pub skipped: Vec<Skipped>,
    pub notes: Vec<String>,
    /// Why the copy stopped before the end (a full or read-only destination), if it did.
    pub stopped: Option<String>,
}

impl CopyReport {
    /// Whether a file could not be read from the source (0 when none).
    pub fn read_errors(&self) -> usize {
        self.errors.iter().filter(|e| e.side == "read").count()
    }
}

/// The sizes to copy: file data bytes and entries, counted before the copy (for progress).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub bytes: u64,
    pub entries: u64,
}

/// Checks that `item` exists beneath `root` with no symbolic link among its directories
/// (a link in the image may point anywhere, also out of the mounted tree); returns its path
/// and metadata (of the last component itself: a link stays a link).
pub fn resolve_item(root: &Path, item: &Item) -> Result<(PathBuf, Metadata)> {
    let mut p = root.to_path_buf();
    for (i, c) in item.rel.iter().enumerate() {
        p.push(c);
        let m = fs::symlink_metadata(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::not_found(format!(
                    "{} is not in the image's filesystem (look with `lifeboat image ls`)",
                    item.shown()
                ))
            } else {
                Error::io("look at", &p, e)
            }
        })?;
        let last = i + 1 == item.rel.len();
        if !last && m.file_type().is_symlink() {
            let to = fs::read_link(&p)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            return Err(Error::invalid(format!(
                "{} is a symbolic link (to {to}) inside the image: give the path it points to",
                shown(&item.rel[..=i].iter().collect::<PathBuf>())
            )));
        }
        if !last && !m.is_dir() {
            return Err(Error::not_found(format!(
                "{} is not a directory in the image's filesystem",
                shown(&item.rel[..=i].iter().collect::<PathBuf>())
            )));
        }
    }
    let m = fs::symlink_metadata(&p).map_err(|e| Error::io("look at", &p, e))?;
    Ok((p, m))
}

/// Counts what copying `path` copies (never following links; unreadable directories count
/// as empty: the copy reports them).
pub fn count(path: &Path, m: &Metadata, t: &mut Totals, cancel: &Cancel) -> Result<()> {
    if cancel.is_cancelled() {
        return Err(Error::cancelled());
    }
    t.entries += 1;
    if m.is_file() {
        t.bytes += m.len();
    } else if m.is_dir() {
        for e in fs::read_dir(path).into_iter().flatten().flatten() {
            if let Ok(cm) = e.metadata() {
                count(&e.path(), &cm, t, cancel)?;
            }
        }
    }
    Ok(())
}

/// `name` with ` (n)` before its extension: "a.txt" → "a (2).txt", ".profile" → ".profile (2)".
pub fn numbered(name: &std::ffi::OsStr, n: u32) -> OsString {
    let s = name.to_string_lossy();
    let (stem, ext) = match s.rfind('.') {
        Some(i) if i > 0 => (&s[..i], &s[i..]),
        _ => (&s[..], ""),
    };
    OsString::from(format!("{stem} ({n}){ext}"))
}

/// Copies items into a destination directory; see the module documentation.
pub struct Copier<'a> {
    dest: PathBuf,
    sink: &'a dyn ProgressSink,
    cancel: &'a Cancel,
    progress: Progress,
    meter: RateMeter,
    last: Option<Instant>,
    buf: Vec<u8>,
    euid_root: bool,
    meta_lost: bool,
    pub report: CopyReport,
}

/// How one entry ended, for the caller's bookkeeping.
enum Fatal {
    /// Stop everything: cancelled, or the destination is unusable.
    Stop(Error),
}

impl<'a> Copier<'a> {
    pub fn new(
        dest: &Path,
        total: Totals,
        sink: &'a dyn ProgressSink,
        cancel: &'a Cancel,
    ) -> Copier<'a> {
        Copier {
            dest: dest.to_path_buf(),
            sink,
            cancel,
            progress: Progress::new("image-extract", "copying", total.bytes),
            meter: RateMeter::new(Duration::from_secs(10)),
            last: None,
            buf: vec![0u8; BUF],
            // /proc/self belongs to the process's effective user.
            euid_root: fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0),
            meta_lost: false,
            report: CopyReport::default(),
        }
    }

    /// Copies the entry at `src` (an item resolved by [`resolve_item`], shown to the user as
    /// `shown`) into the destination directory under its own name. Errors of single files go
    /// into the report; `Err` is a stop: cancelled (kind `Cancelled`) or a destination that
    /// cannot take more (the report says which).
    /// `name` is the name to give it there (default: its own; the whole filesystem has none).
    pub fn copy_item(
        &mut self,
        src: &Path,
        m: &Metadata,
        shown_path: &str,
        name: Option<OsString>,
    ) -> Result<()> {
        let name = name
            .or_else(|| src.file_name().map(OsString::from))
            .unwrap_or_else(|| OsString::from("filesystem"));
        let dest = self.dest.clone();
        match self.entry(src, m, shown_path, &dest, &name) {
            Ok(Some(at)) => {
                self.report.items.push(Renamed {
                    path: shown_path.to_string(),
                    dest: at,
                });
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(Fatal::Stop(e)) => Err(e),
        }
    }

    /// The latest progress snapshot.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Ends the copy: the final progress snapshot and the notes.
    pub fn finish(&mut self) {
        if self.meta_lost {
            self.report.notes.push(
                "the destination filesystem does not store Unix modes or owners (FAT, exFAT, a \
                 share): those were not kept; modification times were, where it can store them"
                    .into(),
            );
        }
        self.emit(true);
    }

    fn emit(&mut self, force: bool) {
        let now = Instant::now();
        if !force
            && self
                .last
                .is_some_and(|t| now.duration_since(t) < Duration::from_millis(200))
        {
            return;
        }
        self.last = Some(now);
        let p = &mut self.progress;
        let (rate, eta) = self.meter.update(now, p.done_bytes, p.total_bytes);
        p.rate_bytes_per_sec = rate;
        p.eta_secs = eta;
        self.sink.progress(p);
    }

    fn error(&mut self, path: &str, side: &'static str, e: &io::Error, what: &str) {
        self.report.errors_total += 1;
        if self.report.errors.len() < LIST_LIMIT {
            self.report.errors.push(FileError {
                path: path.to_string(),
                side,
                message: format!("{what}: {e}"),
                errno: e.raw_os_error(),
            });
        }
    }

    /// A write error that makes every further write fail too: stop.
    fn stops(&mut self, e: &io::Error, at: &Path) -> Option<Fatal> {
        let errno = e.raw_os_error()?;
        let why = match nix::errno::Errno::from_raw(errno) {
            nix::errno::Errno::ENOSPC | nix::errno::Errno::EDQUOT => "the destination is full",
            nix::errno::Errno::EROFS => "the destination is read-only",
            _ => return None,
        };
        self.report.stopped = Some(format!("{why} ({})", at.display()));
        Some(Fatal::Stop(Error::io(
            why,
            at,
            io::Error::from_raw_os_error(errno),
        )))
    }

    fn rel_of(&self, p: &Path) -> String {
        p.strip_prefix(&self.dest)
            .unwrap_or(p)
            .display()
            .to_string()
    }

    /// Creates `dir/name` (or the first free numbered name) with `make`; returns the path.
    fn create_unique<T>(
        &mut self,
        dir: &Path,
        name: &OsString,
        shown_path: &str,
        mut make: impl FnMut(&Path) -> io::Result<T>,
    ) -> io::Result<(PathBuf, T)> {
        let mut n = 1u32;
        loop {
            let cand = if n == 1 {
                dir.join(name)
            } else {
                dir.join(numbered(name, n))
            };
            match make(&cand) {
                Ok(v) => {
                    if n > 1 && self.report.renamed.len() < LIST_LIMIT {
                        let dest = self.rel_of(&cand);
                        self.report.renamed.push(Renamed {
                            path: shown_path.to_string(),
                            dest,
                        });
                    }
                    return Ok((cand, v));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 10_000 => n += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Copies one entry into `dir`; `Ok(Some(rel))` where it went, `Ok(None)` when it was not
    /// copied (reported).
    fn entry(
        &mut self,
        src: &Path,
        m: &Metadata,
        shown_path: &str,
        dir: &Path,
        name: &OsString,
    ) -> std::result::Result<Option<String>, Fatal> {
        if self.cancel.is_cancelled() {
            return Err(Fatal::Stop(Error::cancelled()));
        }
        let ft = m.file_type();
        if ft.is_file() {
            return self.file(src, m, shown_path, dir, name);
        }
        if ft.is_symlink() {
            let target = match fs::read_link(src) {
                Ok(t) => t,
                Err(e) => {
                    self.error(shown_path, "read", &e, "read the link");
                    return Ok(None);
                }
            };
            return match self.create_unique(dir, name, shown_path, |p| {
                std::os::unix::fs::symlink(&target, p)
            }) {
                Ok((at, ())) => {
                    self.keep_meta(&at, m, true);
                    self.report.symlinks += 1;
                    Ok(Some(self.rel_of(&at)))
                }
                Err(e) => match self.stops(&e, dir) {
                    Some(f) => Err(f),
                    None => {
                        self.error(shown_path, "write", &e, "create the link");
                        Ok(None)
                    }
                },
            };
        }
        if ft.is_dir() {
            let (at, ()) = match self.create_unique(dir, name, shown_path, |p| {
                fs::DirBuilder::new().mode(0o700).create(p)
            }) {
                Ok(v) => v,
                Err(e) => {
                    return match self.stops(&e, dir) {
                        Some(f) => Err(f),
                        None => {
                            self.error(shown_path, "write", &e, "create the folder");
                            Ok(None)
                        }
                    }
                }
            };
            self.report.dirs += 1;
            match fs::read_dir(src) {
                Ok(rd) => {
                    let mut names: Vec<OsString> = Vec::new();
                    let mut failed = None;
                    for e in rd {
                        match e {
                            Ok(e) => names.push(e.file_name()),
                            Err(e) => failed = Some(e),
                        }
                    }
                    if let Some(e) = failed {
                        self.error(shown_path, "read", &e, "list the folder");
                    }
                    // In name order: the same copy every time.
                    names.sort();
                    for n in names {
                        let child = src.join(&n);
                        let child_shown = if shown_path == "/" {
                            format!("/{}", n.to_string_lossy())
                        } else {
                            format!("{shown_path}/{}", n.to_string_lossy())
                        };
                        match fs::symlink_metadata(&child) {
                            Ok(cm) => {
                                self.entry(&child, &cm, &child_shown, &at, &n)?;
                            }
                            Err(e) => self.error(&child_shown, "read", &e, "look at"),
                        }
                    }
                }
                Err(e) => self.error(shown_path, "read", &e, "list the folder"),
            }
            // After its contents: writing them changed its times.
            self.keep_meta(&at, m, false);
            return Ok(Some(self.rel_of(&at)));
        }
        let what = kind_of(&ft);
        if self.report.skipped.len() < LIST_LIMIT {
            self.report.skipped.push(Skipped {
                path: shown_path.to_string(),
                what,
            });
        }
        Ok(None)
    }

    fn file(
        &mut self,
        src: &Path,
        m: &Metadata,
        shown_path: &str,
        dir: &Path,
        name: &OsString,
    ) -> std::result::Result<Option<String>, Fatal> {
        let mut input = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(src)
        {
            Ok(f) => f,
            Err(e) => {
                self.error(shown_path, "read", &e, "open");
                self.progress.done_bytes += m.len();
                return Ok(None);
            }
        };
        self.write_from(&mut input, m, shown_path, dir, name)
    }

    /// Writes what `input` gives as a new file `dir/name` with the metadata `m`.
    fn write_from(
        &mut self,
        input: &mut dyn Read,
        m: &Metadata,
        shown_path: &str,
        dir: &Path,
        name: &OsString,
    ) -> std::result::Result<Option<String>, Fatal> {
        let created = self.create_unique(dir, name, shown_path, |p| {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
        });
        let (at, mut out) = match created {
            Ok(v) => v,
            Err(e) => {
                self.progress.done_bytes += m.len();
                return match self.stops(&e, dir) {
                    Some(f) => Err(f),
                    None => {
                        self.error(shown_path, "write", &e, "create");
                        Ok(None)
                    }
                };
            }
        };
        let start = self.progress.done_bytes;
        let res = self.pump(input, &mut out);
        // Whatever happened, the progress counts the whole file as dealt with.
        self.progress.done_bytes = start + m.len();
        match res {
            Ok(n) => {
                self.report.bytes += n;
                self.report.files += 1;
                drop(out);
                self.keep_meta(&at, m, false);
                self.emit(false);
                Ok(Some(self.rel_of(&at)))
            }
            Err((side, e)) => {
                drop(out);
                let _ = fs::remove_file(&at);
                if e.kind() == io::ErrorKind::Interrupted && self.cancel.is_cancelled() {
                    return Err(Fatal::Stop(Error::cancelled()));
                }
                if side == "write" {
                    if let Some(f) = self.stops(&e, &at) {
                        self.error(shown_path, side, &e, "write");
                        return Err(f);
                    }
                }
                self.error(
                    shown_path,
                    side,
                    &e,
                    if side == "read" { "read" } else { "write" },
                );
                Ok(None)
            }
        }
    }

    /// Copies `input` to `out`; the error says which side failed.
    fn pump(
        &mut self,
        input: &mut dyn Read,
        out: &mut File,
    ) -> std::result::Result<u64, (&'static str, io::Error)> {
        let mut n = 0u64;
        loop {
            if self.cancel.is_cancelled() {
                return Err(("read", io::Error::from(io::ErrorKind::Interrupted)));
            }
            let got = match input.read(&mut self.buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(("read", e)),
            };
            out.write_all(&self.buf[..got]).map_err(|e| ("write", e))?;
            n += got as u64;
            self.progress.done_bytes += got as u64;
            self.emit(false);
        }
        Ok(n)
    }

    /// Gives `at` the mode, owner and times of the source entry `m`, as far as the destination
    /// stores them.
    fn keep_meta(&mut self, at: &Path, m: &Metadata, link: bool) {
        use nix::sys::stat::{utimensat, Mode, UtimensatFlags};
        use nix::sys::time::TimeSpec;
        if self.euid_root {
            let r = if link {
                std::os::unix::fs::lchown(at, Some(m.uid()), Some(m.gid()))
            } else {
                std::os::unix::fs::chown(at, Some(m.uid()), Some(m.gid()))
            };
            if r.is_err() {
                self.meta_lost = true;
            }
        }
        if !link {
            let mode = Mode::from_bits_truncate(m.mode() & 0o7777);
            if nix::sys::stat::fchmodat(
                None,
                at,
                mode,
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .is_err()
            {
                self.meta_lost = true;
            }
        }
        let atime = TimeSpec::new(m.atime(), m.atime_nsec());
        let mtime = TimeSpec::new(m.mtime(), m.mtime_nsec());
        let flag = if link {
            UtimensatFlags::NoFollowSymlink
        } else {
            UtimensatFlags::FollowSymlink
        };
        if utimensat(None, at, &atime, &mtime, flag).is_err() {
            self.meta_lost = true;
        }
    }
}

/// The error of a failed [`Copier::copy_item`] is a stop; its kind says which.
pub fn is_cancel(e: &Error) -> bool {
    e.kind == ErrorKind::Cancelled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::NoProgress;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("lifeboat-copytree-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn item(s: &str) -> Item {
        Item {
            rel: crate::io::open::inner_components(s).unwrap(),
        }
    }

    fn copy(root: &Path, dest: &Path, items: &[&str]) -> Result<CopyReport> {
        let cancel = Cancel::new();
        let mut t = Totals::default();
        let mut resolved = Vec::new();
        for s in items {
            let (p, m) = resolve_item(root, &item(s))?;
            count(&p, &m, &mut t, &cancel)?;
            resolved.push((p, m, item(s).shown()));
        }
        let mut c = Copier::new(dest, t, &NoProgress, &cancel);
        for (p, m, s) in &resolved {
            c.copy_item(p, m, s, None)?;
        }
        c.finish();
        Ok(c.report)
    }

    #[test]
    fn numbered_names() {
        assert_eq!(numbered("a.txt".as_ref(), 2), "a (2).txt");
        assert_eq!(numbered(".profile".as_ref(), 3), ".profile (3)");
        assert_eq!(numbered("dir".as_ref(), 2), "dir (2)");
        assert_eq!(numbered("a.tar.gz".as_ref(), 2), "a.tar (2).gz");
    }

    #[test]
    fn copies_a_tree_with_modes_times_and_links_and_never_replaces() {
        let src = tmp("src");
        let dst = tmp("dst");
        fs::create_dir_all(src.join("d/sub")).unwrap();
        fs::write(src.join("d/a.txt"), b"alpha").unwrap();
        fs::write(src.join("d/sub/b.bin"), vec![7u8; 3 << 20]).unwrap();
        fs::set_permissions(src.join("d/a.txt"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("d/link")).unwrap();
        let old = fs::FileTimes::new()
            .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000));
        File::options()
            .write(true)
            .open(src.join("d/a.txt"))
            .unwrap()
            .set_times(old)
            .unwrap();
        // Something of that name is already at the destination: kept, the copy renamed.
        fs::create_dir(dst.join("d")).unwrap();
        fs::write(dst.join("d/keep"), b"mine").unwrap();
        let r = copy(&src, &dst, &["/d"]).unwrap();
        assert_eq!((r.files, r.dirs, r.symlinks), (2, 2, 1), "{r:?}");
        assert_eq!(r.bytes, 5 + (3 << 20));
        assert!(r.errors.is_empty());
        assert_eq!(r.items[0].dest, "d (2)");
        assert_eq!(r.renamed[0].path, "/d");
        assert_eq!(fs::read(dst.join("d/keep")).unwrap(), b"mine");
        let a = dst.join("d (2)/a.txt");
        assert_eq!(fs::read(&a).unwrap(), b"alpha");
        let am = fs::metadata(&a).unwrap();
        assert_eq!(am.mode() & 0o7777, 0o640);
        assert_eq!(am.mtime(), 1_000_000_000);
        assert_eq!(
            fs::read(dst.join("d (2)/sub/b.bin")).unwrap(),
            vec![7u8; 3 << 20]
        );
        assert_eq!(
            fs::read_link(dst.join("d (2)/link")).unwrap(),
            Path::new("/etc/passwd")
        );
        // Again: a third copy, nothing replaced.
        let r = copy(&src, &dst, &["/d/a.txt", "/d"]).unwrap();
        assert_eq!(r.items[0].dest, "a.txt");
        assert_eq!(r.items[1].dest, "d (3)");
        let r = copy(&src, &dst, &["/d/a.txt"]).unwrap();
        assert_eq!(r.items[0].dest, "a (2).txt");
        let _ = fs::remove_dir_all(&src);
        let _ = fs::remove_dir_all(&dst);
    }

    #[test]
    fn refuses_links_among_the_directories_and_missing_paths() {
        let src = tmp("links");
        fs::create_dir_all(src.join("real")).unwrap();
        fs::write(src.join("real/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", src.join("out")).unwrap();
        let e = resolve_item(&src, &item("/out/passwd")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
        let e = resolve_item(&src, &item("/nope")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        let e = resolve_item(&src, &item("/real/f/g")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        // The link itself is an item: copied as a link, never followed.
        let (_, m) = resolve_item(&src, &item("/out")).unwrap();
        assert!(m.file_type().is_symlink());
        let _ = fs::remove_dir_all(&src);
    }

    #[test]
    fn an_unreadable_file_is_reported_and_the_rest_copied() {
        let src = tmp("eio-src");
        let dst = tmp("eio-dst");
        fs::write(src.join("good"), b"good").unwrap();
        let cancel = Cancel::new();
        let mut c = Copier::new(&dst, Totals::default(), &NoProgress, &cancel);
        // A reader that fails the way a damaged chunk does (EIO after some bytes).
        struct Failing(u32);
        impl Read for Failing {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                self.0 += 1;
                if self.0 > 2 {
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                b[..4].copy_from_slice(b"part");
                Ok(4)
            }
        }
        let m = fs::metadata(src.join("good")).unwrap();
        let got = c.write_from(&mut Failing(0), &m, "/x", &dst, &OsString::from("x"));
        assert!(matches!(got, Ok(None)));
        assert!(!dst.join("x").exists(), "the partial copy was left");
        let (p, m) = resolve_item(&src, &item("/good")).unwrap();
        c.copy_item(&p, &m, "/good", None).unwrap();
        assert_eq!(c.report.read_errors(), 1);
        assert_eq!(c.report.errors[0].errno, Some(libc::EIO));
        assert_eq!(c.report.files, 1);
        assert_eq!(fs::read(dst.join("good")).unwrap(), b"good");
        let _ = fs::remove_dir_all(&src);
        let _ = fs::remove_dir_all(&dst);
    }

    #[test]
    fn cancel_stops_and_removes_the_file_being_copied() {
        let src = tmp("cancel-src");
        let dst = tmp("cancel-dst");
        fs::write(src.join("big"), vec![1u8; 4 << 20]).unwrap();
        let cancel = Cancel::new();
        struct CancelOnFirst(Cancel);
        impl ProgressSink for CancelOnFirst {
            fn progress(&self, p: &Progress) {
                if p.done_bytes > 0 {
                    self.0.cancel();
                }
            }
        }
        let sink = CancelOnFirst(cancel.clone());
        let (p, m) = resolve_item(&src, &item("/big")).unwrap();
        let mut c = Copier::new(
            &dst,
            Totals {
                bytes: 4 << 20,
                entries: 1,
            },
            &sink,
            &cancel,
        );
        let e = c.copy_item(&p, &m, "/big", None).unwrap_err();
        assert!(is_cancel(&e), "{e}");
        assert!(!dst.join("big").exists(), "a half copy was left");
        let _ = fs::remove_dir_all(&src);
        let _ = fs::remove_dir_all(&dst);
    }

    #[test]
    fn special_files_are_skipped() {
        let src = tmp("fifo");
        let dst = tmp("fifo-dst");
        fs::create_dir(src.join("d")).unwrap();
        nix::unistd::mkfifo(
            &src.join("d/pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let r = copy(&src, &dst, &["/d"]).unwrap();
        assert_eq!(
            r.skipped,
            [Skipped {
                path: "/d/pipe".into(),
                what: "fifo"
            }]
        );
        assert!(!dst.join("d/pipe").exists());
        let _ = fs::remove_dir_all(&src);
        let _ = fs::remove_dir_all(&dst);
    }
}
