//! The target rules besides identity, shared by clone and image restore: given a target
//! selector, the job's other items (source, image chain, map, …) and the size needed, check the
//! storage identity rule ([`super::Check`]) and then: not in use (mounted, swap, held; opened
//! `O_EXCL` for the job), not read-only, not the boot medium, big enough, and a partition table
//! only onto a disk with its sector size. Refusals are exit 4 with a message that says why and
//! what to do; the target is opened for writing only after every rule passed.
use super::{Check, Item};
use crate::clone::gpt::{PartitionTable, TableKind};
use crate::devices::bootmedia::{self, BootMedia};
use crate::devices::usage::{system_mounts, Mount};
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

/// The loop devices whose backing file is `file` (the same inode, whatever its name).
fn loops_backed_by(file: &Path, env: &Env) -> Vec<String> {
    let Ok(f) = std::fs::metadata(file) else {
        return vec![];
    };
    env.disks
        .iter()
        .filter(|d| {
            d.backing_file
                .as_deref()
                .and_then(|b| std::fs::metadata(b).ok())
                .is_some_and(|m| m.dev() == f.dev() && m.ino() == f.ino())
        })
        .map(|d| d.name.clone())
        .collect()
}

fn refused(msg: String, path: &Path) -> Error {
    Error::refused(msg).at_path(path)
}

/// Resolves a target selector: a file path, or a disk/partition selector.
pub fn select(target: &str, env: &Env) -> Result<Selected> {
    match Path::new(target) {
        p if target.contains('/') && p.is_file() => Ok(Selected::File(p.to_path_buf())),
        _ => devices::resolve_in(target, &env.disks),
    }
}

/// Checks `target` against every rule and opens it for writing. `check` holds the job's other
/// items (the source, the image chain, the map file …: see [`Check`]); the target is added to it
/// as written. `min_size` is the least the target must hold (for a clone: the end of the
/// source's last partition, or the source size without a table).
pub fn open_target(target: &str, check: &mut Check, min_size: u64) -> Result<Target> {
    open_target_in(target, check, min_size, &Env::system()?)
}

/// [`open_target`] against a given environment.
pub fn open_target_in(target: &str, check: &mut Check, min_size: u64, env: &Env) -> Result<Target> {
    let selected = select(target, env)?;
    let path = selected.path();
    // The object the path names now, pinned (O_PATH: no access), is what is checked and then
    // opened for writing (through /proc/self/fd): a symlink switched in between cannot send the
    // writes elsewhere (to the source, say).
    let pin = pin_object(&path);
    let at = pin.as_ref().map_or(path.clone(), |(_, p)| p.clone());
    // Identity first: nothing is opened for writing before it passed.
    let mut storage = super::resolve(&at)?;
    storage.name = selected.name();
    if let Selected::Disk(_) | Selected::Partition { .. } = &selected {
        storage.name = path.display().to_string();
    }
    check.add(Item {
        role: "the target".into(),
        storage,
        written: true,
    });
    if let Some(b) = &env.boot {
        let p = PathBuf::from("/dev").join(&b.disk);
        if p.exists() {
            check.keeps("the medium Lifeboat booted from", &p)?;
        }
    }
    check.run()?;
    check_selected(&selected, env)?;
    // Not in use by identity either: no byte of a mounted filesystem (through a loop device over
    // the file it lives in, a partition of the disk under it …).
    let mut mounted = Check::default();
    if let Some(t) = check
        .items
        .iter()
        .find(|i| i.written && i.role == "the target")
    {
        mounted.add(t.clone());
        for m in super::Resolver::system().mounted_filesystems() {
            mounted.add(Item {
                role: "the mounted filesystem".into(),
                storage: m,
                written: false,
            });
        }
        mounted.run()?;
    }
    // Exclusive open: the kernel refuses (EBUSY) when anything mounts or holds the device.
    let exclusive = match &selected {
        Selected::File(_) => None,
        _ => Some(open_exclusive(&at)?),
    };
    let device = match Device::open(&at, Access::Write) {
        Ok(d) => d,
        Err(e) => return Err(open_refusal(e, &selected, &path)),
    };
    if device.is_read_only().unwrap_or(false) {
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

/// Why opening the target for writing failed, in the user's terms: a read-only medium or
/// filesystem (EROFS, or a block device the kernel marks read-only) is write protection;
/// EACCES/EPERM otherwise are permissions.
fn open_refusal(e: Error, selected: &Selected, path: &Path) -> Error {
    let errno = e.raw_os_error();
    let name = selected.name();
    let kernel_ro = || {
        File::open(path)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.file_type().is_block_device()))
            .and_then(|f| sys::get_ro(&f).ok())
            .unwrap_or(false)
    };
    use std::os::unix::fs::FileTypeExt;
    match errno {
        Some(libc::EROFS) => refused(
            format!("the target {name} is read-only (its filesystem or medium is write-protected); pick a writable disk or clear its write protection"),
            path,
        ),
        Some(libc::EACCES) | Some(libc::EPERM) if kernel_ro() => refused(
            format!("the target {name} is read-only in the kernel; pick a writable disk (or `blockdev --setrw` it if that is really intended)"),
            path,
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => refused(
            format!("permission denied: you may not write {name} (run as root, or pick a target you may write)"),
            path,
        ),
        _ => e,
    }
}

/// `path`'s object opened `O_PATH` (no read or write access) and its `/proc/self/fd` name, which
/// reopens exactly that object; `None` where that is not available (no /proc).
fn pin_object(path: &Path) -> Option<(File, PathBuf)> {
    use std::os::fd::AsRawFd;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let p = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    p.exists().then_some((f, p))
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
            Some(libc::EACCES) | Some(libc::EPERM) => refused(
                format!(
                    "permission denied: you may not open {} (run as root, or pick a target you may write)",
                    path.display()
                ),
                path,
            ),
            _ => Error::io("open exclusively", path, e),
        })
}

/// The rules that need no open descriptor and no identity: in use, read-only flag, boot
/// medium. Public so the UI can grey out targets before asking.
pub fn check_selected(selected: &Selected, env: &Env) -> Result<()> {
    let tpath = selected.path();
    let tname = selected.name();
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

/// The health rule: a disk whose own SMART / NVMe health log says it is FAILING is not written
/// without `--yes` (`allow_failing`): the copy would land on a drive that is losing data. Reads
/// the target disk's health (bounded: [`crate::health::LIST_TIMEOUT`]); a partition counts as
/// its disk; files, loop devices and disks whose health is unknown pass. With `--yes` the job
/// goes on and the returned note says what was overridden.
pub fn check_health(selected: &Selected, allow_failing: bool) -> Result<Option<String>> {
    let Some(disk) = selected.disk() else {
        return Ok(None);
    };
    let health = match &disk.health {
        Some(h) => h.clone(),
        None => {
            let mut one = [disk.clone()];
            crate::health::fill(&mut one, crate::health::LIST_TIMEOUT);
            let [d] = one;
            d.health
                .unwrap_or_else(|| crate::health::Health::unknown("not read"))
        }
    };
    health_refusal(selected, &health, allow_failing)
}

/// [`check_health`] on a health already read (pure; tests).
pub fn health_refusal(
    selected: &Selected,
    health: &crate::health::Health,
    allow_failing: bool,
) -> Result<Option<String>> {
    if !health.is_failing() {
        return Ok(None);
    }
    let name = selected
        .disk()
        .map(|d| d.name.clone())
        .unwrap_or_else(|| selected.name());
    let why = health.reasons.join("; ");
    if allow_failing {
        return Ok(Some(format!(
            "the target {name} is FAILING ({why}); writing onto it anyway, as --yes asked"
        )));
    }
    Err(refused(
        format!(
            "the target {name} is FAILING ({why}): a copy onto it may not survive; pick a healthy disk, or add --yes to write onto it anyway"
        ),
        &selected.path(),
    ))
}

/// An output file (an image, an export, their `.partial` names) may replace only a regular file,
/// and only with `force`: a device node, FIFO, socket or directory under that name is refused
/// whatever the flags (replacing `/dev/full` with a file, or writing into a FIFO, is never meant).
pub fn check_output(path: &Path, force: bool) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(md) = std::fs::metadata(path) else {
        return Ok(()); // nothing there yet (or a dangling symlink, which the rename replaces)
    };
    let ft = md.file_type();
    let kind = if ft.is_file() {
        return if force {
            Ok(())
        } else {
            Err(refused(
                format!(
                    "{} already exists; use --force to replace it (the old file stays until the new one is complete)",
                    path.display()
                ),
                path,
            ))
        };
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(refused(
        format!(
            "{} is {kind}, not a file: an output replaces regular files only (with --force); name a new file",
            path.display()
        ),
        path,
    ))
}

/// The final name of an output (the image, the export, a copy's volume): [`check_output`], and
/// never a symbolic link, dangling or not, whatever the flags. The finished file is renamed over
/// the name, which replaces the link itself, not the file it points to: `image export IMG
/// /dev/stdout` replaced `/dev/stdout` in `/dev` with a 16 MiB file; a dangling link was
/// replaced even without `--force`. Temporary names (`.partial`, journals) are replaced by
/// design and keep [`check_output`].
pub fn check_output_name(path: &Path, force: bool) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        let to = std::fs::read_link(path)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(refused(
            format!(
                "{} is a symbolic link (to {to}), not a file: an output replaces regular files \
                 only (with --force), never a link; name the file itself or a new file",
                path.display()
            ),
            path,
        ));
    }
    check_output(path, force)
}

/// A partition table counts in sectors, so it is only right on a disk with the sector size it
/// was written for. One rule for clone and restore: a block-device target whose logical sector
/// size differs from the sector size of the table being copied (`what`'s, GPT or MBR) is refused
/// (exit 4); without a partition table (a whole-disk filesystem) the copy is byte for byte and
/// allowed, with a note returned. A regular file has no sector size of its own, so it is never
/// refused here. `or_else` completes "Pick a target with N-byte sectors, or …".
pub fn check_sector_size(
    what: &str,
    table: Option<&PartitionTable>,
    t: &Target,
    or_else: &str,
) -> Result<Option<String>> {
    if !t.device.is_block_device() {
        return Ok(None);
    }
    let target_ss = t.device.logical_block_size();
    let tp = t.selected.path();
    match table {
        Some(tb) if tb.kind != TableKind::None => {
            if tb.sector_size == target_ss {
                return Ok(None);
            }
            let ss = tb.sector_size;
            Err(refused(
                format!(
                    "{what} has a partition table for {ss}-byte sectors (it counts in sectors); {} has \
                     {target_ss}-byte logical sectors, so the copied partitions would be wrong. Pick a \
                     target with {ss}-byte sectors, or {or_else}",
                    tp.display()
                ),
                &tp,
            ))
        }
        Some(tb) if tb.sector_size != target_ss => Ok(Some(format!(
            "{what} has no partition table, so it is copied byte for byte although {} has \
             {target_ss}-byte sectors and {what} {}-byte sectors",
            tp.display(),
            tb.sector_size
        ))),
        _ => Ok(None),
    }
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
        let err = check_selected(&sda, &e).unwrap_err();
        assert!(
            is_refusal(&err) && err.msg.contains("in use") && err.msg.contains("mounted"),
            "{err}"
        );
        let sdb = Selected::Disk(e.disks[1].clone());
        check_selected(&sdb, &e).unwrap();
        e.boot = Some(BootMedia {
            disk: "sdb".into(),
            serial: None,
        });
        let err = check_selected(&sdb, &e).unwrap_err();
        assert!(err.msg.contains("booted from"), "{err}");
        e.boot = None;
        let mut ro = e.disks[1].clone();
        ro.read_only = true;
        let err = check_selected(&Selected::Disk(ro), &e).unwrap_err();
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
        let keep = |p: &Path| {
            let mut c = Check::new();
            c.keeps("the source", p).unwrap();
            c
        };
        let err = open_target_in(s, &mut keep(&src), 0, &e).unwrap_err();
        assert!(
            is_refusal(&err) && err.msg.contains("would overwrite the source"),
            "{err}"
        );
        // Through another name (a symlink) it is still the source.
        let link = dir.join("link.img");
        std::os::unix::fs::symlink(&src, &link).unwrap();
        let err = open_target_in(link.to_str().unwrap(), &mut keep(&src), 0, &e).unwrap_err();
        assert!(is_refusal(&err), "{err}");
        let err = open_target_in(dst.to_str().unwrap(), &mut keep(&src), 2 << 20, &e).unwrap_err();
        assert!(is_refusal(&err) && err.msg.contains("smaller"), "{err}");
        let t = open_target_in(dst.to_str().unwrap(), &mut keep(&src), 1 << 20, &e).unwrap();
        assert_eq!(t.size, 1 << 20);
        drop(t);
        assert!(std::fs::read(&src).unwrap().iter().all(|&b| b == 1));
        assert!(std::fs::read(&dst).unwrap().iter().all(|&b| b == 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failing_target_needs_yes() {
        use crate::health::{ata, Health};
        let sdb = disk("sdb", "8:16", &[("sdb1", "8:17")]);
        let failing = ata::classify(&ata::tests::failing());
        let whole = Selected::Disk(sdb.clone());
        let err = health_refusal(&whole, &failing, false).unwrap_err();
        assert!(is_refusal(&err), "{err}");
        assert_eq!(err.exit_code(), crate::error::exit::REFUSED);
        assert!(
            err.msg.contains("sdb is FAILING (12 sectors pending"),
            "{err}"
        );
        assert!(err.msg.contains("--yes"), "{err}");
        // A partition of a failing disk is refused by its disk's health.
        let part = Selected::Partition {
            part: sdb.partitions[0].clone(),
            disk: sdb.clone(),
        };
        assert!(health_refusal(&part, &failing, false)
            .unwrap_err()
            .msg
            .contains("sdb is FAILING"));
        // --yes: allowed, with a note saying so.
        let note = health_refusal(&whole, &failing, true).unwrap().unwrap();
        assert!(note.contains("FAILING") && note.contains("--yes"), "{note}");
        // Worn, ok and unknown disks pass.
        let worn = Health {
            status: crate::health::Status::Worn,
            ..Health::unknown("x")
        };
        assert_eq!(health_refusal(&whole, &worn, false).unwrap(), None);
        assert_eq!(
            health_refusal(&whole, &Health::unknown("virtio"), false).unwrap(),
            None
        );
        let ok = ata::classify(&ata::tests::healthy());
        assert_eq!(health_refusal(&whole, &ok, false).unwrap(), None);
        // Health already known on the disk is used as is (no drive is asked).
        let mut known = sdb.clone();
        known.health = Some(failing.clone());
        assert!(check_health(&Selected::Disk(known), false).is_err());
        // A file has no health.
        let f = Selected::File(PathBuf::from("/tmp/x.img"));
        assert_eq!(check_health(&f, false).unwrap(), None);
    }
}
