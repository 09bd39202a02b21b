//! The "restore files" job, without restoring the disk: `lifeboat image ls IMAGE [PATH]` lists
//! a directory of one partition of the disk as it was at an image, `lifeboat image extract
//! IMAGE PATH... --to DEST` copies files and folders out of it into a directory (a plain path,
//! `PARTITION:/path` or a share, like every other location).
//!
//! Both attach the image's disk through the kernel's NBD client and mount the partition
//! read-only on a private directory ([`super::attach::attach`]), and always unmount and detach
//! it afterwards: on success, on error, on Ctrl-C (the job stops between buffers) and on a
//! second Ctrl-C (an exit hook). The copy itself is [`super::copytree`].
use super::attach::{attach, Attached};
use super::copytree::{self, kind_of, Copier, CopyReport, Item, Totals};
use crate::error::{exit, Error, ErrorKind, Result};
use crate::image::{Mode, StoreLocation};
use crate::jobs::{Cancel, StderrSink};
use serde::Serialize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// `lifeboat image ls` arguments.
#[derive(clap::Args, Debug, Clone, PartialEq, serde::Serialize)]
pub struct LsArgs {
    /// The image (PARTITION:/path too); the disk as it was at this image.
    pub image: String,
    /// The directory to list, from the partition's top ("/", the default; "/home/ann").
    pub path: Option<String>,
    /// The partition (1 = the first; default: the first partition, or the whole disk when it
    /// has no partition table).
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    #[arg(long, value_name = "FILE", help = crate::image::PASSPHRASE_FILE_HELP)]
    pub passphrase_file: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// `lifeboat image extract` arguments.
#[derive(clap::Args, Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExtractArgs {
    /// The image (PARTITION:/path too); files are taken from the disk as it was at this image.
    pub image: String,
    /// Files and folders to copy, from the partition's top ("/home/ann/letter.odt", "/etc").
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// The directory to copy them into (created if missing): a path, PARTITION:/path
    /// (label=USB:/restored) or a share. Nothing there is replaced: a name already taken gets
    /// " (2)".
    #[arg(long, value_name = "DEST")]
    pub to: String,
    /// The partition of the image (1 = the first; default: the first partition, or the whole
    /// disk when it has no partition table).
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    #[arg(long, value_name = "FILE", help = crate::image::PASSPHRASE_FILE_HELP)]
    pub passphrase_file: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// One entry of `image ls`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LsEntry {
    pub name: String,
    /// `file`, `dir`, `symlink`, `fifo`, `socket`, `char_device`, `block_device`.
    pub kind: &'static str,
    pub size_bytes: u64,
    /// Permission bits (e.g. 0o644 as 420).
    pub mode: u32,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Where a symbolic link points (not followed).
    pub link_target: Option<String>,
}

/// What `image ls --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct LsReport {
    pub ok: bool,
    pub image: String,
    pub partition: u32,
    pub filesystem: String,
    pub path: String,
    /// Sorted by name.
    pub entries: Vec<LsEntry>,
}

/// What `image extract --json` prints (and hands to the runner).
#[derive(Debug, Clone, Serialize)]
pub struct ExtractReport {
    pub ok: bool,
    pub image: String,
    pub partition: u32,
    pub filesystem: String,
    /// The destination as given.
    pub destination: String,
    #[serde(flatten)]
    pub copy: CopyReport,
    pub duration_ms: u64,
    pub exit_code: i32,
}

/// The entries of the directory `dir` (links not followed), sorted by name.
pub fn list_dir(dir: &Path) -> Result<Vec<LsEntry>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let e = e.map_err(|e| Error::io("list", dir, e))?;
        let m = match e.metadata() {
            Ok(m) => m,
            Err(err) => return Err(Error::io("look at", e.path(), err)),
        };
        let ft = m.file_type();
        v.push(LsEntry {
            name: e.file_name().to_string_lossy().into_owned(),
            kind: kind_of(&ft),
            size_bytes: if ft.is_file() { m.len() } else { 0 },
            mode: m.mode() & 0o7777,
            mtime: m.mtime(),
            link_target: ft
                .is_symlink()
                .then(|| std::fs::read_link(e.path()).ok())
                .flatten()
                .map(|t| t.display().to_string()),
        });
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(v)
}

/// The image's partition mounted on a private directory of this process; unmounted, detached
/// and the directory removed on drop (and by the exit hook on a second Ctrl-C).
pub struct Opened {
    pub att: Option<Attached>,
    dir: PathBuf,
}

/// What the exit hook undoes: (mount directory, NBD disk).
static OPEN: Mutex<Option<(PathBuf, PathBuf)>> = Mutex::new(None);

fn undo_open() {
    let Some((dir, disk)) = OPEN.lock().ok().and_then(|mut g| g.take()) else {
        return;
    };
    let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
    if let Ok(f) = std::fs::File::open(&disk) {
        let _ = crate::io::nbd::disconnect(&f);
    }
    let _ = std::fs::remove_dir(&dir);
}

impl Opened {
    /// Attaches `image` and mounts its partition `partition` read-only under
    /// /run/lifeboat/mnt/ (the helper's messages into `log`, else on stderr).
    /// An encrypted image is opened with `secret`, else with the passphrase this job was
    /// given (`--passphrase-file`), else the helper asks on the terminal.
    pub fn open(
        image: &str,
        partition: Option<u32>,
        log: Option<&Path>,
        secret: Option<&[u8]>,
    ) -> Result<Opened> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = Path::new(crate::image::store::MOUNT_ROOT).join(format!(
            "image-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create the mount point", &dir, e))?;
        let mut o = Opened { att: None, dir };
        let given = crate::image::cmd_keys::given_secret();
        let secret = secret.or(given.as_deref().map(|s| &s[..]));
        let att = attach(image, &o.dir, partition, log, secret)?;
        if let Ok(mut g) = OPEN.lock() {
            *g = Some((o.dir.clone(), att.disk.clone()));
        }
        crate::jobs::before_exit(undo_open);
        o.att = Some(att);
        Ok(o)
    }

    /// Where the partition is mounted.
    pub fn root(&self) -> &Path {
        &self.dir
    }

    pub fn report(&self) -> &super::attach::MountReport {
        &self.att.as_ref().expect("attached").report
    }

    /// Unmounts and detaches now, reporting a failure.
    pub fn close(mut self) -> Result<()> {
        let r = match self.att.take() {
            Some(a) => a.detach(),
            None => Ok(()),
        };
        if let Ok(mut g) = OPEN.lock() {
            *g = None;
        }
        let _ = std::fs::remove_dir(&self.dir);
        r
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        drop(self.att.take());
        if let Ok(mut g) = OPEN.lock() {
            *g = None;
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Parses a path inside the image's filesystem ("/" is the whole filesystem).
pub fn parse_item(s: &str) -> Result<Item> {
    if !s.starts_with('/') {
        return Err(Error::invalid(format!(
            "{s:?}: a path inside the image starts with '/' (the partition's top directory), e.g. /{s}"
        )));
    }
    if s.trim_matches('/').is_empty() {
        return Ok(Item { rel: Vec::new() });
    }
    let rel = crate::io::open::inner_components(s).map_err(Error::invalid)?;
    Ok(Item { rel })
}

pub fn run_ls(a: LsArgs) -> Result<i32> {
    let item = parse_item(a.path.as_deref().unwrap_or("/"))?;
    let o = Opened::open(&a.image, a.partition, None, None)?;
    let (p, m) = if item.rel.is_empty() {
        let m =
            std::fs::symlink_metadata(o.root()).map_err(|e| Error::io("look at", o.root(), e))?;
        (o.root().to_path_buf(), m)
    } else {
        copytree::resolve_item(o.root(), &item)?
    };
    let entries = if m.is_dir() {
        list_dir(&p)?
    } else {
        // A file: itself, as `ls` does.
        let ft = m.file_type();
        vec![LsEntry {
            name: item
                .rel
                .last()
                .map(|n| n.display().to_string())
                .unwrap_or_default(),
            kind: kind_of(&ft),
            size_bytes: if ft.is_file() { m.len() } else { 0 },
            mode: m.mode() & 0o7777,
            mtime: m.mtime(),
            link_target: ft
                .is_symlink()
                .then(|| std::fs::read_link(&p).ok())
                .flatten()
                .map(|t| t.display().to_string()),
        }]
    };
    let mr = o.report().clone();
    o.close()?;
    let rep = LsReport {
        ok: true,
        image: a.image.clone(),
        partition: mr.partition,
        filesystem: mr.filesystem,
        path: item.shown(),
        entries,
    };
    crate::cli::emit_report(&rep, a.json);
    if !a.json {
        for l in ls_lines(&rep) {
            crate::outln!("{l}");
        }
    }
    Ok(exit::OK)
}

/// `image ls`'s lines for a person: size, date, name (`NAME/` for a folder, `NAME -> TARGET`
/// for a link). Names and targets come from the imaged filesystem: each stays on its line,
/// its controls escaped ([`crate::out::Shown`]).
pub fn ls_lines(rep: &LsReport) -> Vec<String> {
    use crate::out::Shown;
    rep.entries
        .iter()
        .map(|e| {
            let size = if e.kind == "file" {
                crate::jobs::fmt_bytes(e.size_bytes)
            } else {
                String::new()
            };
            let name = match (&e.link_target, e.kind) {
                (Some(t), _) => format!("{} -> {}", Shown(&e.name), Shown(t)),
                (None, "dir") => format!("{}/", Shown(&e.name)),
                _ => Shown(&e.name).to_string(),
            };
            format!(
                "{:>10}  {}  {name}",
                size,
                crate::image::ops::iso8601(e.mtime.max(0) as u64)
            )
        })
        .collect()
}

/// The exit code of a finished copy: 1 when something could not be written (or the
/// destination stopped the copy), 5 when a file could not be read from the image (damaged),
/// else 0.
pub fn exit_code(r: &CopyReport) -> i32 {
    if r.stopped.is_some() || r.errors.iter().any(|e| e.side == "write") {
        exit::FAILED
    } else if r.errors_total > 0 {
        exit::CORRUPT
    } else {
        exit::OK
    }
}

pub fn run_extract(a: ExtractArgs) -> Result<i32> {
    let t0 = Instant::now();
    let cancel = Cancel::new();
    // Before any thread starts (they inherit the blocked signals).
    crate::jobs::cancel_on_signals(
        &cancel,
        "the file being copied is removed; the image is unmounted",
    );
    let items: Vec<Item> = a
        .paths
        .iter()
        .map(|p| parse_item(p))
        .collect::<Result<_>>()?;
    // The destination first: mounted read-write (a partition also holding the image is then
    // mounted once, read-write, and the image read through that mount). Files are only ever
    // created new there, so nothing that exists — the image included — is written.
    let loc = StoreLocation::resolve(&a.to)?;
    if let Some(p) = loc.plain_path() {
        std::fs::create_dir_all(p).map_err(|e| Error::io("create the folder", p, e))?;
    }
    let store = loc.mount(Mode::ReadWrite)?;
    let dest = store.path.clone();
    match std::fs::create_dir(&dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create the folder", &dest, e)),
    }
    let dm = std::fs::symlink_metadata(&dest).map_err(|e| Error::io("look at", &dest, e))?;
    if !dm.is_dir() {
        return Err(Error::invalid(format!(
            "{} is not a folder: give a folder to copy into",
            a.to
        )));
    }
    let o = Opened::open(&a.image, a.partition, None, None)?;
    let mr = o.report().clone();
    let mut resolved = Vec::new();
    let mut totals = Totals::default();
    for it in &items {
        let (p, m) = if it.rel.is_empty() {
            let m = std::fs::symlink_metadata(o.root())
                .map_err(|e| Error::io("look at", o.root(), e))?;
            (o.root().to_path_buf(), m)
        } else {
            copytree::resolve_item(o.root(), it)?
        };
        copytree::count(&p, &m, &mut totals, &cancel)?;
        // The whole filesystem is copied into a folder named after its partition.
        let name = it
            .rel
            .is_empty()
            .then(|| format!("partition-{}", mr.partition).into());
        resolved.push((p, m, it.shown(), name));
    }
    let sink = StderrSink::from_env();
    let mut c = Copier::new(&dest, totals, &sink, &cancel);
    let mut stop = None;
    for (p, m, shown, name) in resolved {
        if let Err(e) = c.copy_item(&p, &m, &shown, name) {
            stop = Some(e);
            break;
        }
    }
    c.finish();
    sink.finish(c.progress());
    let copy = c.report.clone();
    drop(c);
    // Written data reaches the destination before the job says it is done.
    if let Ok(f) = std::fs::File::open(&dest) {
        let _ = nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f));
    }
    let closed = o.close();
    drop(store);
    let mut rep = ExtractReport {
        ok: false,
        image: a.image.clone(),
        partition: mr.partition,
        filesystem: mr.filesystem,
        destination: a.to.clone(),
        copy,
        duration_ms: t0.elapsed().as_millis() as u64,
        exit_code: 0,
    };
    if let Some(e) = stop {
        if e.kind == ErrorKind::Cancelled {
            return Err(with_copy_report(Error::cancelled(), &rep));
        }
        rep.exit_code = exit::FAILED;
    } else {
        rep.exit_code = exit_code(&rep.copy);
    }
    closed?;
    rep.ok = rep.exit_code == exit::OK;
    crate::cli::emit_report(&rep, a.json);
    if !a.json {
        for l in extract_lines(&rep) {
            crate::errln!("{l}");
        }
    }
    Ok(rep.exit_code)
}

/// `image extract`'s summary for a person. The paths come from the imaged filesystem (and
/// the messages may quote them): each stays on its line, its controls escaped.
pub fn extract_lines(rep: &ExtractReport) -> Vec<String> {
    use crate::out::Shown;
    let mut v = vec![format!(
        "Copied {} files, {} folders, {} links ({}) from partition {} of {} into {}.",
        rep.copy.files,
        rep.copy.dirs,
        rep.copy.symlinks,
        crate::jobs::fmt_bytes(rep.copy.bytes),
        rep.partition,
        Shown(&rep.image),
        Shown(&rep.destination)
    )];
    for r in &rep.copy.renamed {
        v.push(format!(
            "  {} is there as {} (the name was taken)",
            Shown(&r.path),
            Shown(&r.dest)
        ));
    }
    for e in &rep.copy.errors {
        v.push(format!(
            "  NOT COPIED: {} ({} error: {})",
            Shown(&e.path),
            e.side,
            Shown(&e.message)
        ));
    }
    for s in &rep.copy.skipped {
        v.push(format!("  skipped {} ({})", Shown(&s.path), Shown(&s.what)));
    }
    if let Some(s) = &rep.copy.stopped {
        v.push(format!("  STOPPED: {}", Shown(s)));
    }
    v
}

/// A cancelled job's error carrying what was copied before.
fn with_copy_report(mut e: Error, rep: &ExtractReport) -> Error {
    if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(rep) {
        for (k, v) in m {
            if k != "ok" && k != "exit_code" {
                e = e.with_report(&k, v);
            }
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_parse() {
        assert_eq!(parse_item("/").unwrap().rel.len(), 0);
        assert_eq!(parse_item("/a/b").unwrap().shown(), "/a/b");
        assert_eq!(parse_item("a").unwrap_err().kind, ErrorKind::InvalidInput);
        assert_eq!(
            parse_item("/a/../b").unwrap_err().kind,
            ErrorKind::InvalidInput
        );
    }

    fn report(errors: &[(&'static str, i32)], stopped: bool) -> CopyReport {
        CopyReport {
            errors: errors
                .iter()
                .map(|(side, n)| copytree::FileError {
                    path: "/x".into(),
                    side,
                    message: String::new(),
                    errno: Some(*n),
                })
                .collect(),
            errors_total: errors.len() as u64,
            stopped: stopped.then(|| "full".into()),
            ..Default::default()
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&report(&[], false)), exit::OK);
        assert_eq!(exit_code(&report(&[("read", 5)], false)), exit::CORRUPT);
        assert_eq!(
            exit_code(&report(&[("read", 5), ("write", 22)], false)),
            exit::FAILED
        );
        assert_eq!(exit_code(&report(&[], true)), exit::FAILED);
    }

    /// Names an imaged filesystem chose, holding terminal controls and line breaks: `ls` and
    /// `extract` print each on its own line, escaped; the JSON report keeps them exactly.
    #[test]
    fn hostile_names_are_shown_escaped_one_per_line() {
        let h = "\x1b[2J\x1b]0;t\x07\r\nFAKE\u{9b}1m\u{7f}\u{202e}";
        let d = std::env::temp_dir().join(format!("lifeboat-ls-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join(format!("d{h}"))).unwrap();
        std::fs::write(d.join(format!("f{h}")), b"1").unwrap();
        std::os::unix::fs::symlink(format!("t{h}"), d.join(format!("l{h}"))).unwrap();
        let entries = list_dir(&d).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
        let rep = LsReport {
            ok: true,
            image: "a.lbi".into(),
            partition: 1,
            filesystem: "ext4".into(),
            path: "/".into(),
            entries,
        };
        let lines = ls_lines(&rep);
        assert_eq!(lines.len(), 3);
        let shown = "\\x1b[2J\\x1b]0;t\\x07\\x0d\\x0aFAKE\\u{9b}1m\\x7f\\u{202e}";
        assert!(lines[0].ends_with(&format!("  d{shown}/")), "{lines:?}");
        assert!(lines[1].ends_with(&format!("  f{shown}")), "{lines:?}");
        assert!(
            lines[2].ends_with(&format!("  l{shown} -> t{shown}")),
            "{lines:?}"
        );
        for l in &lines {
            assert!(!l.chars().any(crate::out::unsafe_char), "{l:?}");
        }
        let v = serde_json::to_value(&rep).unwrap();
        assert_eq!(v["entries"][1]["name"], format!("f{h}"));
        assert_eq!(v["entries"][2]["link_target"], format!("t{h}"));

        let mut copy = report(&[("read", 5)], true);
        copy.errors[0].path = format!("/f{h}");
        copy.errors[0].message = format!("cannot read /f{h}");
        copy.renamed.push(copytree::Renamed {
            path: format!("/r{h}"),
            dest: format!("r{h}.1"),
        });
        copy.stopped = Some(format!("no space for /g{h}"));
        let rep = ExtractReport {
            ok: false,
            image: format!("i{h}.lbi"),
            partition: 1,
            filesystem: "ext4".into(),
            destination: "/t".into(),
            copy,
            duration_ms: 1,
            exit_code: 1,
        };
        let lines = extract_lines(&rep);
        assert_eq!(lines.len(), 4, "{lines:?}");
        for l in &lines {
            assert!(!l.chars().any(crate::out::unsafe_char), "{l:?}");
        }
        assert!(
            lines[2].starts_with(&format!(
                "  NOT COPIED: /f{shown} (read error: cannot read /f{shown})"
            )),
            "{lines:?}"
        );
    }

    #[test]
    fn listing_does_not_follow_links() {
        let d = std::env::temp_dir().join(format!("lifeboat-ls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("f"), b"12345").unwrap();
        std::os::unix::fs::symlink("/etc", d.join("l")).unwrap();
        let v = list_dir(&d).unwrap();
        let names: Vec<(&str, &str, u64)> = v
            .iter()
            .map(|e| (e.name.as_str(), e.kind, e.size_bytes))
            .collect();
        assert_eq!(
            names,
            [("f", "file", 5), ("l", "symlink", 0), ("sub", "dir", 0)]
        );
        assert_eq!(v[1].link_target.as_deref(), Some("/etc"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
