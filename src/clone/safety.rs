//! The "never the wrong disk" rules, shared by clone and image restore: given a target selector,
//! the sources to protect and the size needed, open the target for writing or refuse (exit 4)
//! with a message that says why and what to do. Nothing is written here.
use crate::bootmedia::{self, BootMedia};
use crate::devices::usage::{fmt_dev, rdev_of, system_mounts, Mount};
use crate::devices::{self, Disk, Selected};
use crate::error::{Error, ErrorKind, Result};
use crate::io::{sys, Access, BlockSource, Device};
use crate::jobs::fmt_bytes;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A target that passed every rule, open for writing. For a block device an extra exclusive
/// (`O_EXCL`) descriptor is held for as long as this value lives, so nobody can mount the disk
/// or assemble a RAID on it while the job writes.
pub struct Target {
    /// What the selector named.
    pub selected: Selected,
    /// The open target (read-write, O_DIRECT when possible).
    pub device: Device,
    /// Size in bytes.
    pub size: u64,
    _exclusive: Option<File>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("selected", &self.selected.name())
            .field("size", &self.size)
            .finish()
    }
}

/// Reports why a kernel name (disk or partition) is in use.
pub type InUseFn = Box<dyn Fn(&str) -> Vec<String>>;

/// What the rules look at. [`Env::system`] reads the running system; tests build their own.
pub struct Env {
    pub disks: Vec<Disk>,
    pub mounts: Vec<Mount>,
    pub boot: Option<BootMedia>,
    /// Reasons a disk or partition (kernel name) is in use: mounted, swap, held.
    pub in_use: InUseFn,
}

impl Env {
    /// The running system: sysfs inventory, mount table, boot medium, usage.
    pub fn system() -> Result<Env> {
        // Where sysfs is missing (a minimal container) files are still usable targets.
        let disks = devices::scan_system().unwrap_or_default();
        Ok(Env {
            boot: bootmedia::detect_in(&disks),
            disks,
            mounts: system_mounts(),
            in_use: Box::new(devices::in_use),
        })
    }
}

/// Where a path's bytes live, for "is this the same storage" comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Identity {
    /// A block device: its whole disk's kernel name and its own "MAJ:MIN".
    Block { disk: Option<String>, dev: String },
    /// A regular file: (st_dev, inode) plus the whole disk holding its filesystem, if known.
    File {
        st_dev: u64,
        ino: u64,
        disk: Option<String>,
        path: PathBuf,
    },
}

fn identity(path: &Path, env: &Env) -> Option<Identity> {
    let md = std::fs::metadata(path).ok()?;
    if let Some(dev) = rdev_of(path) {
        let disk =
            devices::lookup_dev(&dev, &env.disks).and_then(|s| s.disk().map(|d| d.name.clone()));
        return Some(Identity::Block { disk, dev });
    }
    if md.is_file() {
        let st = fmt_dev(md.dev());
        // The filesystem's device number, or (btrfs, virtual st_dev) the mount's source device.
        let mut disk =
            devices::lookup_dev(&st, &env.disks).and_then(|s| s.disk().map(|d| d.name.clone()));
        if disk.is_none() {
            if let Some(m) = env.mounts.iter().find(|m| m.dev == st) {
                if let Some(rd) = rdev_of(Path::new(&m.source)) {
                    disk = devices::lookup_dev(&rd, &env.disks)
                        .and_then(|s| s.disk().map(|d| d.name.clone()));
                }
            }
        }
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        return Some(Identity::File {
            st_dev: md.dev(),
            ino: md.ino(),
            disk,
            path,
        });
    }
    None
}

/// The loop devices whose backing file is `file`.
fn loops_backed_by(file: &Path, env: &Env) -> Vec<String> {
    let canon = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    env.disks
        .iter()
        .filter(|d| {
            d.backing_file
                .as_deref()
                .map(Path::new)
                .is_some_and(|b| b == canon || b == file)
        })
        .map(|d| d.name.clone())
        .collect()
}

fn refused(msg: String, path: &Path) -> Error {
    Error::refused(msg).at_path(path)
}

/// Checks `target` against every rule and opens it for writing. `sources` are the paths (device
/// nodes or files) that must never be written; `min_size` is the least the target must hold
/// (for a clone: the end of the source's last partition, or the source size without a table).
pub fn open_target(target: &str, sources: &[PathBuf], min_size: u64) -> Result<Target> {
    open_target_in(target, sources, min_size, &Env::system()?)
}

/// [`open_target`] against a given environment.
pub fn open_target_in(
    target: &str,
    sources: &[PathBuf],
    min_size: u64,
    env: &Env,
) -> Result<Target> {
    let selected = match Path::new(target) {
        p if target.contains('/') && p.is_file() => Selected::File(p.to_path_buf()),
        _ => devices::resolve_in(target, &env.disks)?,
    };
    check_selected(&selected, sources, env)?;
    let path = selected.path();
    // Exclusive open: the kernel refuses (EBUSY) when anything mounts or holds the device.
    let exclusive = match &selected {
        Selected::File(_) => None,
        _ => Some(open_exclusive(&path)?),
    };
    let device = match Device::open(&path, Access::Write) {
        Ok(d) => d,
        Err(e) => {
            let ro = matches!(
                e.raw_os_error(),
                Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
            );
            if ro {
                return Err(refused(
                    format!("the target {} is read-only (cannot open it for writing); pick a writable disk or clear its write protection", selected.name()),
                    &path,
                ));
            }
            return Err(e);
        }
    };
    if device.is_block_device() && sys::get_ro(device.file()).unwrap_or(false) {
        return Err(refused(
            format!(
                "the target {} is read-only in the kernel; pick a writable disk (or `blockdev --setrw` it if that is really intended)",
                selected.name()
            ),
            &path,
        ));
    }
    let size = device.size();
    if size < min_size {
        return Err(refused(
            format!(
                "the target {} ({}) is smaller than the source's partitions need ({}, {} bytes); pick a disk of at least that size",
                selected.name(),
                fmt_bytes(size),
                fmt_bytes(min_size),
                min_size
            ),
            &path,
        ));
    }
    Ok(Target {
        selected,
        device,
        size,
        _exclusive: exclusive,
    })
}

fn open_exclusive(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => refused(
                format!(
                    "the target {} is in use (mounted, or held by RAID/device-mapper/another program); unmount or release it first",
                    path.display()
                ),
                path,
            ),
            _ => Error::io("open exclusively", path, e),
        })
}

/// The rules that need no open descriptor: same storage as a source, in use, read-only flag,
/// boot medium. Public so the UI can grey out targets before asking.
pub fn check_selected(selected: &Selected, sources: &[PathBuf], env: &Env) -> Result<()> {
    let tpath = selected.path();
    let tname = selected.name();
    let tid = identity(&tpath, env);
    let tdisk: Option<String> = selected.disk().map(|d| d.name.clone());
    for src in sources {
        let Some(sid) = identity(src, env) else {
            continue;
        };
        let s = src.display();
        let why: Option<String> = match (&sid, &tid) {
            (
                Identity::Block {
                    dev: sd,
                    disk: sdisk,
                },
                Some(Identity::Block { dev: td, .. }),
            ) => {
                if sd == td {
                    Some(format!("the target {tname} is the source {s}"))
                } else if sdisk.is_some() && sdisk == &tdisk {
                    let d = sdisk.clone().unwrap_or_default();
                    Some(format!(
                        "the target {tname} and the source {s} are on the same disk ({d})"
                    ))
                } else {
                    None
                }
            }
            (
                Identity::File {
                    st_dev, ino, path, ..
                },
                Some(Identity::File {
                    st_dev: t_dev,
                    ino: t_ino,
                    ..
                }),
            ) => (st_dev == t_dev && ino == t_ino)
                .then(|| format!("the target {tname} is the source file {}", path.display())),
            // A target file on a filesystem of the source disk: writing it writes to the source.
            (
                Identity::Block {
                    disk: Some(sdisk), ..
                },
                Some(Identity::File {
                    disk: Some(fdisk), ..
                }),
            ) if sdisk == fdisk => Some(format!(
                "the target file {tname} is stored on the source disk {sdisk}"
            )),
            // A source file stored on the target disk: overwriting the disk destroys the source.
            (
                Identity::File {
                    disk: Some(fdisk),
                    path,
                    ..
                },
                Some(Identity::Block { .. }),
            ) if tdisk.as_deref() == Some(fdisk.as_str()) => Some(format!(
                "the source file {} is stored on the target disk {fdisk}",
                path.display()
            )),
            _ => None,
        };
        let why = why.or_else(|| {
            // Loop devices: a loop over the target file is the source, or a loop source's file is the target.
            match (&sid, &tid) {
                (
                    Identity::Block {
                        disk: Some(sdisk), ..
                    },
                    Some(Identity::File { path, .. }),
                ) => loops_backed_by(path, env).contains(sdisk).then(|| {
                    format!(
                        "the source {s} is a loop device over the target file {}",
                        path.display()
                    )
                }),
                (Identity::File { path, .. }, Some(Identity::Block { .. })) => {
                    let l = loops_backed_by(path, env);
                    tdisk.as_ref().filter(|t| l.contains(t)).map(|t| {
                        format!(
                            "the target {t} is a loop device over the source file {}",
                            path.display()
                        )
                    })
                }
                _ => None,
            }
        });
        if let Some(w) = why {
            return Err(refused(
                format!("{w}; refusing to write: pick another target"),
                &tpath,
            ));
        }
    }
    // In use: mounted, swap, held (a disk's reasons include its partitions').
    let mut reasons = Vec::new();
    match selected {
        Selected::Disk(d) => reasons.extend((env.in_use)(&d.name)),
        Selected::Partition { part, .. } => reasons.extend((env.in_use)(&part.name)),
        Selected::File(p) => {
            for l in loops_backed_by(p, env) {
                reasons.push(format!("{} is attached as loop device {l}", p.display()));
            }
        }
    }
    if !reasons.is_empty() {
        return Err(refused(
            format!(
                "the target {tname} is in use: {}; unmount or release it first",
                reasons.join("; ")
            ),
            &tpath,
        ));
    }
    let ro = match selected {
        Selected::Disk(d) => d.read_only,
        Selected::Partition { disk, part } => disk.read_only || part.read_only,
        Selected::File(_) => false,
    };
    if ro {
        return Err(refused(format!("the target {tname} is read-only; pick a writable disk or clear its write protection"), &tpath));
    }
    if let (Some(b), Some(d)) = (&env.boot, selected.disk()) {
        let same_serial = b.serial.is_some() && b.serial == d.serial;
        if b.disk == d.name || same_serial {
            return Err(refused(
                format!("the target {tname} is the medium Lifeboat booted from; pick another disk"),
                &tpath,
            ));
        }
    }
    Ok(())
}

/// True when `e` is a safety refusal (exit status 4).
pub fn is_refusal(e: &Error) -> bool {
    e.kind == ErrorKind::Refused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, dev: &str, parts: &[(&str, &str)]) -> Disk {
        let partitions = parts
            .iter()
            .enumerate()
            .map(|(i, (n, d))| crate::devices::Partition {
                number: i as u32 + 1,
                path: PathBuf::from(format!("/nonexistent/dev/{n}")),
                dev: (*d).into(),
                ..crate::devices::fixtures::part(n, 1 << 20, 1 << 20, "", "")
            })
            .collect();
        Disk {
            path: PathBuf::from(format!("/nonexistent/dev/{name}")),
            dev: dev.into(),
            model: None,
            serial: Some(format!("SER-{name}")),
            transport: "sata".into(),
            partition_table: "gpt".into(),
            ..crate::devices::fixtures::disk(name, 1 << 30, partitions)
        }
    }

    fn env(disks: Vec<Disk>, busy: &'static str) -> Env {
        Env {
            disks,
            mounts: vec![],
            boot: None,
            in_use: Box::new(move |n| {
                if n == busy {
                    vec![format!("{n} is mounted on /mnt")]
                } else {
                    vec![]
                }
            }),
        }
    }

    #[test]
    fn in_use_read_only_and_boot_media_are_refused() {
        let mut e = env(
            vec![
                disk("sda", "8:0", &[("sda1", "8:1")]),
                disk("sdb", "8:16", &[]),
            ],
            "sda",
        );
        let sda = Selected::Disk(e.disks[0].clone());
        let err = check_selected(&sda, &[], &e).unwrap_err();
        assert!(
            is_refusal(&err) && err.msg.contains("in use") && err.msg.contains("mounted"),
            "{err}"
        );
        let sdb = Selected::Disk(e.disks[1].clone());
        check_selected(&sdb, &[], &e).unwrap();
        e.boot = Some(BootMedia {
            disk: "sdb".into(),
            serial: None,
        });
        let err = check_selected(&sdb, &[], &e).unwrap_err();
        assert!(err.msg.contains("booted from"), "{err}");
        e.boot = None;
        let mut ro = e.disks[1].clone();
        ro.read_only = true;
        let err = check_selected(&Selected::Disk(ro), &[], &e).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::REFUSED);
        assert!(err.msg.contains("read-only"), "{err}");
    }

    #[test]
    fn same_file_and_too_small_are_refused_and_nothing_written() {
        let dir = std::env::temp_dir().join(format!("lifeboat-safety-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src.img");
        let dst = dir.join("dst.img");
        std::fs::write(&src, vec![1u8; 1 << 20]).unwrap();
        std::fs::write(&dst, vec![2u8; 1 << 20]).unwrap();
        let e = env(vec![], "");
        let s = src.to_str().unwrap();
        let err = open_target_in(s, std::slice::from_ref(&src), 0, &e).unwrap_err();
        assert!(
            is_refusal(&err) && err.msg.contains("is the source"),
            "{err}"
        );
        // Through another name (a symlink) it is still the source.
        let link = dir.join("link.img");
        std::os::unix::fs::symlink(&src, &link).unwrap();
        let err =
            open_target_in(link.to_str().unwrap(), std::slice::from_ref(&src), 0, &e).unwrap_err();
        assert!(is_refusal(&err), "{err}");
        let err = open_target_in(
            dst.to_str().unwrap(),
            std::slice::from_ref(&src),
            2 << 20,
            &e,
        )
        .unwrap_err();
        assert!(is_refusal(&err) && err.msg.contains("smaller"), "{err}");
        let t = open_target_in(
            dst.to_str().unwrap(),
            std::slice::from_ref(&src),
            1 << 20,
            &e,
        )
        .unwrap();
        assert_eq!(t.size, 1 << 20);
        drop(t);
        assert!(std::fs::read(&src).unwrap().iter().all(|&b| b == 1));
        assert!(std::fs::read(&dst).unwrap().iter().all(|&b| b == 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
