//! Opening paths that come from the user or from a filesystem Lifeboat did not write, without
//! being tricked: [`open_regular`] never blocks on a FIFO or opens a device node where a file
//! is expected, and [`check_beneath`] keeps a path inside a mounted partition (no `..`, no
//! symlink out, no other filesystem) before anything is created or written there;
//! [`create_fresh`] creates Lifeboat's own files (`.partial` volumes, temporary files) without
//! writing through whatever had that name (a link, a device node).
use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// What kind of file `ft` is, for messages ("a FIFO (named pipe)", "a directory", ...).
pub fn file_kind(ft: &std::fs::FileType) -> &'static str {
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

fn not_regular(path: &Path, ft: &std::fs::FileType, what: &str) -> Error {
    Error::invalid(format!(
        "{} is {}, not {what}: give the path of a regular file",
        path.display(),
        file_kind(ft)
    ))
    .at_path(path)
}

/// Opens `path` read-only as a regular file, for `what` ("an image file", "a mapfile"). A FIFO,
/// socket or device node is refused (exit 2) without blocking: the type is checked before the
/// open, the open itself is non-blocking (a FIFO swapped in between cannot block it), and the
/// opened file is checked again.
pub fn open_regular(path: &Path, what: &str) -> Result<File> {
    let md = std::fs::metadata(path).map_err(|e| Error::io("open", path, e))?;
    if !md.is_file() {
        return Err(not_regular(path, &md.file_type(), what));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    let md = f.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !md.is_file() {
        return Err(not_regular(path, &md.file_type(), what));
    }
    // Back to ordinary (blocking) reads; for a regular file this changes nothing observable.
    let fl = nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| Error::io("read the flags of", path, e.into()))?;
    let fl = OFlag::from_bits_truncate(fl) & !OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(fl))
        .map_err(|e| Error::io("set the flags of", path, e.into()))?;
    Ok(f)
}

/// Creates `path` anew for a file Lifeboat itself writes under a name of its own making (a
/// `.partial` image volume, an export's or a map's temporary file), never writing through
/// whatever had that name: a regular file or symlink there (a leftover, or a link to something
/// else — a hard link's other names and a symlink's target keep their bytes) is unlinked, a
/// device node, FIFO, socket or directory is refused (exit 4), and the file is created with
/// `O_EXCL | O_NOFOLLOW`, so nothing put there in between is followed or truncated.
pub fn create_fresh(path: &Path) -> Result<File> {
    for _ in 0..8 {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create", path, e)),
        }
        let md = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("look at", path, e)),
        };
        let ft = md.file_type();
        if !(ft.is_file() || ft.is_symlink()) {
            return Err(Error::refused(format!(
                "{} is {}: Lifeboat writes a file of its own under that name and replaces only \
                 regular files; move it away or name the output differently",
                path.display(),
                file_kind(&ft)
            ))
            .at_path(path));
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove the old", path, e)),
        }
    }
    Err(Error::refused(format!(
        "{} keeps reappearing while Lifeboat creates it; is another program writing there?",
        path.display()
    ))
    .at_path(path))
}

/// Takes ownership of a descriptor a successful `openat`/`openat2` returned.
fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open call in this module and is not
    // owned by anything else; the OwnedFd closes it exactly once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Splits an absolute path inside a filesystem (`/pc/full.lbi`) into its normal components.
/// Refuses `..` (it could leave the filesystem) and an empty path.
pub fn inner_components(inner: &str) -> std::result::Result<Vec<PathBuf>, String> {
    let p = Path::new(inner);
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(PathBuf::from(n)),
            Component::ParentDir => {
                return Err(format!(
                    "{inner:?} contains '..': a path on a partition must stay inside it"
                ))
            }
            Component::Prefix(_) => return Err(format!("{inner:?} is not a Linux path")),
        }
    }
    if out.is_empty() {
        return Err("the path inside the partition is empty: name a file".to_string());
    }
    Ok(out)
}

/// The error for a path that leads out of the filesystem at `root`.
fn escapes(root: &Path, rel: &Path) -> Error {
    Error::refused(format!(
        "{} leads out of the filesystem mounted at {} (through a symbolic link or onto another \
         filesystem): nothing was written; give a path whose directories are real directories \
         on that partition",
        rel.display(),
        root.display()
    ))
}

/// Checks that `rel` (relative, no `..`: see [`inner_components`]) stays beneath `root` and on
/// its filesystem, following symlinks only while they stay inside. With `create_dirs` the
/// missing directories of `rel` are created, each beneath the last (a symlink cannot redirect
/// them). A refusal (exit 4) writes nothing. The check uses `openat2(RESOLVE_BENEATH |
/// RESOLVE_NO_XDEV)`; on a kernel without it (before 5.6), every component is opened with
/// `O_NOFOLLOW` (no symlink is followed at all) and its filesystem compared with the root's.
pub fn check_beneath(root: &Path, rel: &[PathBuf], create_dirs: bool) -> Result<()> {
    let root_fd = File::open(root).map_err(|e| Error::io("open the directory", root, e))?;
    let how = |dir: bool| {
        let mut f = OFlag::O_PATH | OFlag::O_CLOEXEC;
        if dir {
            f |= OFlag::O_DIRECTORY;
        }
        OpenHow::new().flags(f).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_XDEV
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        )
    };
    let full: PathBuf = rel.iter().collect();
    let mut prefix = PathBuf::new();
    for (i, c) in rel.iter().enumerate() {
        prefix.push(c);
        let last = i + 1 == rel.len();
        loop {
            match nix::fcntl::openat2(root_fd.as_raw_fd(), &prefix, how(!last)) {
                Ok(fd) => {
                    drop(own(fd));
                    break;
                }
                Err(Errno::ENOSYS) => return check_beneath_nofollow(root, rel, create_dirs),
                Err(Errno::EXDEV) | Err(Errno::ELOOP) => return Err(escapes(root, &full)),
                Err(Errno::ENOENT) if last || !create_dirs => return Ok(()),
                Err(Errno::ENOENT) => {
                    // Create this directory inside its (checked) parent.
                    let parent = prefix.parent().unwrap_or(Path::new(""));
                    let pfd = if parent.as_os_str().is_empty() {
                        None
                    } else {
                        Some(own(nix::fcntl::openat2(
                            root_fd.as_raw_fd(),
                            parent,
                            how(true),
                        )
                        .map_err(|e| Error::io("open", root.join(parent), e.into()))?))
                    };
                    let at = pfd
                        .as_ref()
                        .map(|f| f.as_raw_fd())
                        .unwrap_or(root_fd.as_raw_fd());
                    match nix::sys::stat::mkdirat(
                        Some(at),
                        c.as_path(),
                        nix::sys::stat::Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(Error::io(
                                "create the directory",
                                root.join(&prefix),
                                e.into(),
                            ))
                        }
                    }
                }
                Err(Errno::ENOTDIR) if !last => {
                    return Err(Error::invalid(format!(
                        "{} is not a directory",
                        root.join(&prefix).display()
                    )))
                }
                Err(e) => return Err(Error::io("look at", root.join(&prefix), e.into())),
            }
        }
    }
    Ok(())
}

/// [`check_beneath`] for kernels without `openat2`: every directory is opened with
/// `O_NOFOLLOW` from its parent's descriptor, so no symlink is followed, and must be on the
/// root's filesystem; the last component must not be a symlink either.
fn check_beneath_nofollow(root: &Path, rel: &[PathBuf], create_dirs: bool) -> Result<()> {
    use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
    let full: PathBuf = rel.iter().collect();
    let root_fd = File::open(root).map_err(|e| Error::io("open the directory", root, e))?;
    let root_dev = fstat(root_fd.as_raw_fd())
        .map_err(|e| Error::io("stat", root, e.into()))?
        .st_dev;
    let mut cur: OwnedFd = root_fd.into();
    let mut at = root.to_path_buf();
    for (i, c) in rel.iter().enumerate() {
        at.push(c);
        if i + 1 == rel.len() {
            return match fstatat(
                Some(cur.as_raw_fd()),
                c.as_path(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st)
                    if SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) == SFlag::S_IFLNK =>
                {
                    Err(escapes(root, &full))
                }
                Ok(st) if st.st_dev != root_dev => Err(escapes(root, &full)),
                Ok(_) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(Error::io("look at", &at, e.into())),
            };
        }
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::openat(Some(cur.as_raw_fd()), c.as_path(), flags, Mode::empty())
        {
            Ok(fd) => own(fd),
            Err(Errno::ENOENT) if !create_dirs => return Ok(()),
            Err(Errno::ENOENT) => {
                match nix::sys::stat::mkdirat(
                    Some(cur.as_raw_fd()),
                    c.as_path(),
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(Error::io("create the directory", &at, e.into())),
                }
                own(
                    nix::fcntl::openat(Some(cur.as_raw_fd()), c.as_path(), flags, Mode::empty())
                        .map_err(|e| Error::io("open", &at, e.into()))?,
                )
            }
            // O_NOFOLLOW on a symlink: ELOOP (or ENOTDIR with O_DIRECTORY).
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => return Err(escapes(root, &full)),
            Err(e) => return Err(Error::io("open", &at, e.into())),
        };
        let st = fstat(fd.as_raw_fd()).map_err(|e| Error::io("stat", &at, e.into()))?;
        if st.st_dev != root_dev {
            return Err(escapes(root, &full));
        }
        cur = fd;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        crate::io::scratch_dir(&format!("open-{tag}"))
    }

    #[test]
    fn components_refuse_dotdot_and_empty() {
        assert_eq!(
            inner_components("/pc//./full.lbi").unwrap(),
            vec![PathBuf::from("pc"), PathBuf::from("full.lbi")]
        );
        assert!(inner_components("/../x.lbi").is_err());
        assert!(inner_components("/a/../../x.lbi").is_err());
        assert!(inner_components("/").is_err());
        assert!(inner_components("").is_err());
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let d = tmp("fifo");
        let f = d.join("pipe.lbi");
        nix::unistd::mkfifo(&f, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = open_regular(&f, "an image file").unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::InvalidInput);
        assert!(e.msg.contains("FIFO"), "{e}");
        let e = open_regular(Path::new("/dev/null"), "an image file").unwrap_err();
        assert!(e.msg.contains("character device"), "{e}");
        std::fs::write(d.join("ok"), b"x").unwrap();
        assert!(open_regular(&d.join("ok"), "an image file").is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn beneath_refuses_symlinks_out_and_creates_inside() {
        let d = tmp("beneath");
        let root = d.join("root");
        std::fs::create_dir_all(root.join("in")).unwrap();
        std::os::unix::fs::symlink("/tmp", root.join("out")).unwrap();
        std::os::unix::fs::symlink("in", root.join("inlink")).unwrap();
        std::os::unix::fs::symlink("../../x", root.join("in/up")).unwrap();
        let c = |s: &str| inner_components(s).unwrap();
        for f in [check_beneath, check_beneath_nofollow] {
            assert!(f(&root, &c("/in/x.lbi"), false).is_ok());
            assert!(f(&root, &c("/out/x.lbi"), true).is_err());
            assert!(f(&root, &c("/in/up"), false).is_err());
            assert!(!d.join("x").exists());
        }
        // openat2 follows a symlink that stays inside; the fallback follows none.
        assert!(check_beneath(&root, &c("/inlink/x.lbi"), false).is_ok());
        assert!(check_beneath_nofollow(&root, &c("/inlink/x.lbi"), false).is_err());
        check_beneath(&root, &c("/new/deeper/x.lbi"), true).unwrap();
        assert!(root.join("new/deeper").is_dir());
        check_beneath_nofollow(&root, &c("/new2/d/x.lbi"), true).unwrap();
        assert!(root.join("new2/d").is_dir());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
