//! `lifeboat image mount IMAGE DIR [--partition N]` and `lifeboat image umount DIR`: the disk
//! of an image attached to the kernel's NBD client and one partition mounted read-only (`ro`,
//! and `noload` for ext4: no journal replay), without restoring anything.
//!
//! `mount` starts a helper process (the same binary, `--attached`) that keeps the disk served:
//! it opens the chain, finds a free `/dev/nbdN` (loading the `nbd` module if needed), gives
//! the kernel one end of a socket pair (`NBD_SET_SOCK` …, [`crate::io::nbd`]), answers the
//! kernel's requests on the other end with the server's session (transmission phase only: the
//! kernel does no handshake) and blocks in `NBD_DO_IT` until the device is disconnected. The
//! command then mounts the partition and returns; `umount` unmounts it and disconnects the
//! device, which ends the helper.
use super::disk::Disk;
use crate::error::{exit, Error, ErrorKind, Result};
use crate::image::{Mode, Store};
use serde::Serialize;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `lifeboat image mount` arguments.
#[derive(clap::Args, Debug, Clone, PartialEq, serde::Serialize)]
pub struct MountArgs {
    /// The image (PARTITION:/path too); its disk as it was at this image.
    pub image: String,
    /// An existing, empty directory to mount on.
    pub dir: PathBuf,
    /// The partition to mount (1 = the first; default: the first partition, or the whole disk
    /// when it has no partition table).
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    #[arg(long, value_name = "FILE", help = crate::image::PASSPHRASE_FILE_HELP)]
    pub passphrase_file: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// Internal: run as the helper that keeps the disk attached.
    #[arg(long, hide = true)]
    pub attached: bool,
    /// Internal, with --attached: the passphrase comes on stdin (from the process that
    /// started the helper; never on a command line).
    #[arg(long, hide = true, requires = "attached")]
    pub secret_on_stdin: bool,
}

/// `lifeboat image umount` arguments.
#[derive(clap::Args, Debug, Clone, PartialEq, serde::Serialize)]
pub struct UmountArgs {
    /// The directory an image is mounted on.
    pub dir: PathBuf,
    #[arg(long)]
    pub json: bool,
}

/// What `image mount --json` reports.
#[derive(Debug, Clone, Serialize)]
pub struct MountReport {
    pub ok: bool,
    pub image: String,
    pub device: PathBuf,
    pub partition: u32,
    pub filesystem: String,
    pub mounted: PathBuf,
    pub read_only: bool,
    /// The mounted filesystem's size and free space (statvfs).
    pub size_bytes: u64,
    pub free_bytes: u64,
    /// The names in its top directory, sorted (at most 200).
    pub root_entries: Vec<String>,
    /// Every partition of the imaged disk (empty: it has no partition table).
    pub partitions: Vec<u32>,
}

/// What `image umount --json` reports.
#[derive(Debug, Clone, Serialize)]
pub struct UmountReport {
    pub ok: bool,
    pub unmounted: PathBuf,
    pub device: PathBuf,
}

/// The line the helper prints once the device runs.
const READY: &str = "LIFEBOAT-NBD ";
/// How long the device's partitions may take to appear.
const SETTLE: Duration = Duration::from_secs(20);

pub fn run_mount(a: MountArgs) -> Result<i32> {
    if a.attached {
        return run_helper(&a.image);
    }
    check_mount_dir(&a.dir)?;
    let secret = crate::image::cmd_keys::given_secret();
    let att = attach(
        &a.image,
        &a.dir,
        a.partition,
        None,
        secret.as_deref().map(|s| &s[..]),
    )?;
    let rep = att.report.clone();
    // The mount outlives this command: `image umount` undoes it.
    att.keep();
    crate::cli::emit_report(&rep, a.json);
    if !a.json {
        crate::errln!(
            "Mounted partition {} ({}) of {} read-only on {} (through {}); `lifeboat image umount {}` detaches it.",
            rep.partition,
            rep.filesystem,
            a.image,
            a.dir.display(),
            rep.device.display(),
            a.dir.display()
        );
    }
    Ok(exit::OK)
}

/// Refuses a directory that is not an empty directory of its own (mounting on it would hide
/// what it holds).
pub fn check_mount_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io("look at", dir, e))?;
    if !meta.is_dir() {
        return Err(Error::invalid(format!(
            "{} is not a directory: give an existing directory to mount on",
            dir.display()
        )));
    }
    // Mounting over a directory hides what it holds (or the filesystem mounted there): a
    // mistyped path (a home, "/", /proc) must not vanish behind the image's partition.
    let in_use = {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(dir.join("..")) {
            Ok(parent) => parent.dev() != meta.dev() || parent.ino() == meta.ino(),
            Err(e) => return Err(Error::io("look at", dir.join(".."), e)),
        }
    };
    if in_use {
        return Err(Error::invalid(format!(
            "{} is a mount point in use: give an empty directory of its own to mount on",
            dir.display()
        ))
        .at_path(dir));
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    if entries.next().is_some() {
        return Err(Error::invalid(format!(
            "{} is not empty: mounting on it would hide its files; give an empty directory",
            dir.display()
        ))
        .at_path(dir));
    }
    Ok(())
}

/// A partition of an image mounted read-only through a helper process and an NBD device.
/// Dropping it unmounts the partition and disconnects the device (which ends the helper), on
/// every path; [`Attached::keep`] leaves it mounted instead (`image mount`).
pub struct Attached {
    pub report: MountReport,
    /// The whole NBD device (`/dev/nbd0`).
    pub disk: PathBuf,
    child: Option<std::process::Child>,
    mounted: bool,
}

impl Attached {
    /// Leaves the partition mounted and the helper serving it.
    pub fn keep(mut self) {
        self.mounted = false;
        self.child = None;
        self.disk = PathBuf::new();
    }

    /// Unmounts and detaches now, reporting a failure (drop does the same, silently).
    pub fn detach(mut self) -> Result<()> {
        self.close()
    }

    fn close(&mut self) -> Result<()> {
        let mut res = Ok(());
        if self.mounted {
            self.mounted = false;
            let dir = &self.report.mounted;
            if let Err(e) = nix::mount::umount(dir.as_path()) {
                // Something still holds it (a shell in it): detach it lazily so the device can
                // go; the kernel finishes the unmount when the last user leaves.
                let _ = nix::mount::umount2(dir.as_path(), nix::mount::MntFlags::MNT_DETACH);
                res = Err(Error::io(
                    "unmount",
                    dir,
                    std::io::Error::from_raw_os_error(e as i32),
                ));
            }
        }
        if !self.disk.as_os_str().is_empty() {
            let disk = std::mem::take(&mut self.disk);
            if let Err(e) = disconnect(&disk) {
                res = res.and(Err(e));
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        res
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            crate::errln!("lifeboat: {e}");
        }
    }
}

/// Attaches the disk of `image` (a chain resolved) through a helper process and mounts its
/// partition `partition` (default: the first, or the whole disk without a table) read-only on
/// `dir`, which the caller checked.
///
/// The helper's messages go to this process's stderr, or to the file `log` (the console, whose
/// stderr is the screen). An encrypted image's passphrase `secret` goes to the helper through
/// a pipe on its stdin (never its command line); without one the helper asks on the terminal.
pub fn attach(
    image: &str,
    dir: &Path,
    partition: Option<u32>,
    log: Option<&Path>,
    secret: Option<&[u8]>,
) -> Result<Attached> {
    let exe = std::env::current_exe().map_err(|e| Error::os("find the lifeboat binary", e))?;
    let stderr = match log {
        Some(p) => std::process::Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| Error::io("open the log", p, e))?,
        ),
        None => std::process::Stdio::inherit(),
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["image", "mount", image])
        .arg(dir)
        .arg("--attached")
        // The helper's report (if it fails) is not the job's: the runner gets this command's.
        .env_remove(crate::cli::REPORT_ENV)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr);
    if secret.is_some() {
        cmd.arg("--secret-on-stdin")
            .stdin(std::process::Stdio::piped());
    } else {
        cmd.stdin(std::process::Stdio::null());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::os("start the helper that serves the image", e))?;
    if let (Some(s), Some(mut pipe)) = (secret, child.stdin.take()) {
        use std::io::Write;
        // Closed at once: the helper reads to the end. A helper that died early is seen below.
        let _ = pipe.write_all(s);
    }
    let mut line = String::new();
    let _ = std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
    let Some(dev) = line.trim().strip_prefix(READY).map(PathBuf::from) else {
        let st = child.wait();
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "the image could not be attached (the helper ended: {st:?}); see {}",
                log.map(|p| p.display().to_string())
                    .unwrap_or_else(|| "above".into())
            ),
        ));
    };
    let mut att = Attached {
        report: MountReport {
            ok: false,
            image: image.to_string(),
            device: dev.clone(),
            partition: 0,
            filesystem: String::new(),
            mounted: dir.to_path_buf(),
            read_only: true,
            size_bytes: 0,
            free_bytes: 0,
            root_entries: Vec::new(),
            partitions: Vec::new(),
        },
        disk: dev.clone(),
        child: Some(child),
        mounted: false,
    };
    // From here on, a failure drops `att`: the device is disconnected (which ends the helper).
    att.report = mount_partition(image, dir, partition, &dev)?;
    att.mounted = true;
    Ok(att)
}

fn mount_partition(
    image: &str,
    dir: &Path,
    partition: Option<u32>,
    dev: &Path,
) -> Result<MountReport> {
    let name = dev
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The device runs once the helper is in NBD_DO_IT (sysfs then shows its pid); the kernel
    // reads the partition table when asked.
    let t0 = Instant::now();
    while !Path::new(&format!("/sys/block/{name}/pid")).exists() && t0.elapsed() < SETTLE {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The kernel reads the table when asked; on a slow machine (the reads go through the
    // helper) its partitions may take a while, so wait for them when the disk has a table
    // (or a partition was asked for), asking again every second.
    let wait = if partition.is_some_and(|n| n > 0) || has_table(dev) {
        SETTLE
    } else {
        Duration::from_secs(2)
    };
    let parts: Vec<u32> = partitions(&name, dev, partition.filter(|&n| n > 0), wait);
    let n = match partition {
        Some(n) => n,
        None => parts.first().copied().unwrap_or(0),
    };
    let node = if n == 0 {
        dev.to_path_buf()
    } else {
        if !parts.contains(&n) {
            return Err(Error::not_found(format!(
                "the imaged disk has no partition {n} (it has {})",
                if parts.is_empty() {
                    "none: leave out --partition to mount the whole disk".to_string()
                } else {
                    format!("{parts:?}")
                }
            )));
        }
        PathBuf::from(format!("/dev/{name}p{n}"))
    };
    let t0 = Instant::now();
    while !node.exists() && t0.elapsed() < SETTLE {
        std::thread::sleep(Duration::from_millis(100));
    }
    let fs = crate::devices::probe::probe_fs(&node)
        .map(|f| f.fs_type)
        .ok_or_else(|| {
            Error::unsupported(format!(
                "no filesystem Lifeboat knows on partition {n} of the image ({})",
                node.display()
            ))
        })?;
    mount_ro(&node, dir, &fs)?;
    // statvfs's field types differ between targets (glibc, musl): cast them all.
    #[allow(clippy::unnecessary_cast)]
    let (size_bytes, free_bytes) = nix::sys::statvfs::statvfs(dir)
        .map(|v| {
            let f = v.fragment_size() as u64;
            (v.blocks() as u64 * f, v.blocks_free() as u64 * f)
        })
        .unwrap_or((0, 0));
    let mut root_entries: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    root_entries.sort();
    root_entries.truncate(200);
    Ok(MountReport {
        ok: true,
        image: image.to_string(),
        device: node,
        partition: n,
        filesystem: fs,
        mounted: dir.to_path_buf(),
        read_only: true,
        size_bytes,
        free_bytes,
        root_entries,
        partitions: parts,
    })
}

/// Whether the disk at `dev` starts with a partition table: a GPT header (at 512 or 4096), or
/// an MBR (0x55AA, a partition entry in use, and not a filesystem's boot sector, which starts
/// with a jump).
fn has_table(dev: &Path) -> bool {
    use std::io::Read;
    let mut b = vec![0u8; 4096 + 512];
    let Ok(mut f) = std::fs::File::open(dev) else {
        return false;
    };
    if f.read_exact(&mut b).is_err() {
        return false;
    }
    mbr_or_gpt(&b)
}

/// [`has_table`] on the first 4608 bytes of a disk.
fn mbr_or_gpt(b: &[u8]) -> bool {
    if b.len() < 4608 {
        return false;
    }
    if &b[512..520] == b"EFI PART" || &b[4096..4104] == b"EFI PART" {
        return true;
    }
    let entry_used = (0..4).any(|i| b[446 + 16 * i + 4] != 0);
    b[510] == 0x55 && b[511] == 0xAA && entry_used && b[0] != 0xEB && b[0] != 0xE9
}

/// The partition numbers the kernel found on `/dev/NAME` (from sysfs): once partition `want`
/// (or, without one, any partition) shows, or after `wait`; the table is read again every
/// second meanwhile.
fn partitions(name: &str, dev: &Path, want: Option<u32>, wait: Duration) -> Vec<u32> {
    let t0 = Instant::now();
    let mut asked = None::<Instant>;
    loop {
        if asked.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            if let Ok(d) = crate::io::Device::open(dev, crate::io::Access::Read) {
                let _ = d.reread_partitions();
            }
            asked = Some(Instant::now());
        }
        let mut v: Vec<u32> = std::fs::read_dir(format!("/sys/block/{name}"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let f = e.file_name().to_string_lossy().into_owned();
                f.strip_prefix(&format!("{name}p"))?.parse().ok()
            })
            .collect();
        v.sort_unstable();
        let done = match want {
            Some(n) => v.contains(&n),
            None => !v.is_empty(),
        };
        if done || t0.elapsed() > wait {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Mounts `dev` read-only at `dir`: `ro` (and `noload` for ext2/3/4, `norecovery` for XFS).
fn mount_ro(dev: &Path, dir: &Path, fs: &str) -> Result<()> {
    let (fstype, data) = match fs {
        "ext2" | "ext3" | "ext4" => ("ext4", Some("noload")),
        "vfat" => ("vfat", None),
        "exfat" => ("exfat", None),
        "ntfs" => ("ntfs3", None),
        "xfs" => ("xfs", Some("norecovery")),
        "btrfs" => ("btrfs", Some("rescue=nologreplay")),
        other => {
            return Err(Error::unsupported(format!(
                "{} holds {other}, which Lifeboat does not mount",
                dev.display()
            )))
        }
    };
    // The module (the character sets vfat and exFAT mount with the kernel asks for itself,
    // through modprobe: in the environment `init::modprobe`).
    crate::init::modules::load_fs_module(fstype);
    let flags = nix::mount::MsFlags::MS_RDONLY | nix::mount::MsFlags::MS_NOATIME;
    nix::mount::mount(Some(dev), dir, Some(fstype), flags, data).map_err(|e| {
        Error::io(
            &format!(
                "mount ({fstype}, read-only) on {} the filesystem of",
                dir.display()
            ),
            dev,
            std::io::Error::from_raw_os_error(e as i32),
        )
    })
}

/// The helper: attaches the image's disk to a free NBD device and serves it until the device
/// is disconnected.
fn run_helper(image: &str) -> Result<i32> {
    let store = Store::open(image, Mode::ReadOnly)?;
    crate::image::ops::require_complete(&store.path)?;
    let disk = super::open_disk(&store.path, None, super::DEFAULT_CACHE)?;
    let sector = disk.cache.sector_size.max(512);
    let (dev_path, dev) = free_device()?;
    let (kernel_end, ours) =
        std::os::unix::net::UnixStream::pair().map_err(|e| Error::os("make a socket pair", e))?;
    let flags = super::proto::TF_HAS_FLAGS | super::proto::TF_READ_ONLY;
    crate::io::nbd::configure(
        &dev,
        &kernel_end,
        sector,
        disk.size() / sector as u64,
        flags,
        30,
    )
    .map_err(|e| Error::io("set up", &dev_path, e))?;
    drop(kernel_end);
    let server = std::thread::Builder::new()
        .name("nbd-kernel".into())
        .spawn(move || {
            let Ok(mut r) = ours.try_clone() else { return };
            let mut w = std::io::BufWriter::with_capacity(128 << 10, ours);
            let log = |l: &str| crate::errln!("lifeboat: mount: {l}");
            if let Err(e) = super::session::run_transmission(&mut r, &mut w, &disk, &log) {
                crate::errln!("lifeboat: mount: the kernel's connection ended: {e}");
            }
        })
        .map_err(|e| Error::os("start the server thread", e))?;
    crate::outln!("{READY}{}", dev_path.display());
    // Runs until `image umount` (or anyone) disconnects the device.
    let r = crate::io::nbd::run(&dev);
    let _ = server.join();
    drop(store);
    r.map_err(|e| Error::io("run", &dev_path, e))?;
    Ok(exit::OK)
}

/// A `/dev/nbdN` nobody uses (no `pid` in sysfs), opened read-write.
fn free_device() -> Result<(PathBuf, std::fs::File)> {
    if !Path::new("/sys/block/nbd0").exists() {
        if let Err(e) = crate::init::modules::load_by_name("nbd") {
            // On a host: the system's modprobe.
            let ok = std::process::Command::new("modprobe")
                .arg("nbd")
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(Error::unsupported(format!(
                    "this kernel has no NBD devices (/dev/nbd0) and the nbd module could not be loaded ({e})"
                )));
            }
        }
    }
    for n in 0..1024 {
        let sys = PathBuf::from(format!("/sys/block/nbd{n}"));
        if !sys.exists() {
            break;
        }
        if sys.join("pid").exists() {
            continue;
        }
        let p = PathBuf::from(format!("/dev/nbd{n}"));
        if let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(&p) {
            return Ok((p, f));
        }
    }
    Err(Error::refused(
        "every NBD device (/dev/nbd*) is in use: unmount an image first",
    ))
}

/// Disconnects `/dev/nbdN` (for a partition node, its disk).
fn disconnect(dev: &Path) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .open(dev)
        .map_err(|e| Error::io("open", dev, e))?;
    crate::io::nbd::disconnect(&f).map_err(|e| Error::io("disconnect", dev, e))
}

/// The whole NBD device of a node (`/dev/nbd3p1` → `/dev/nbd3`); None for anything else.
pub fn nbd_disk_of(node: &str) -> Option<String> {
    let name = node.strip_prefix("/dev/")?;
    let rest = name.strip_prefix("nbd")?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return None;
    }
    let tail = &rest[digits.len()..];
    if !(tail.is_empty()
        || tail
            .strip_prefix('p')
            .is_some_and(|p| p.parse::<u32>().is_ok()))
    {
        return None;
    }
    Some(format!("/dev/nbd{digits}"))
}

/// The source of the mount on `dir` in a `/proc/self/mountinfo` text.
pub fn mount_source(mountinfo: &str, dir: &Path) -> Option<String> {
    let want = dir.to_string_lossy();
    mountinfo.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let mp = f.get(4)?.replace("\\040", " ");
        if mp != want {
            return None;
        }
        let sep = f.iter().position(|x| *x == "-")?;
        f.get(sep + 2).map(|s| s.to_string())
    })
}

pub fn run_umount(a: UmountArgs) -> Result<i32> {
    let dir = std::fs::canonicalize(&a.dir).map_err(|e| Error::io("look at", &a.dir, e))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
    let src = mount_source(&info, &dir)
        .ok_or_else(|| Error::not_found(format!("nothing is mounted on {}", dir.display())))?;
    let disk = nbd_disk_of(&src).ok_or_else(|| {
        Error::refused(format!(
            "{} is not an image mounted by `lifeboat image mount` ({src} is mounted there); nothing was changed",
            dir.display()
        ))
    })?;
    nix::mount::umount(&dir)
        .map_err(|e| Error::io("unmount", &dir, std::io::Error::from_raw_os_error(e as i32)))?;
    disconnect(Path::new(&disk))?;
    let rep = UmountReport {
        ok: true,
        unmounted: dir.clone(),
        device: PathBuf::from(&disk),
    };
    crate::cli::emit_report(&rep, a.json);
    if !a.json {
        crate::errln!("Unmounted {} and detached {disk}.", dir.display());
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_tables_are_told_from_boot_sectors() {
        let mut b = vec![0u8; 4608];
        assert!(!mbr_or_gpt(&b));
        b[512..520].copy_from_slice(b"EFI PART");
        assert!(mbr_or_gpt(&b));
        let mut m = vec![0u8; 4608];
        m[510] = 0x55;
        m[511] = 0xAA;
        assert!(!mbr_or_gpt(&m), "no entry in use");
        m[446 + 4] = 0x83;
        assert!(mbr_or_gpt(&m));
        // A FAT boot sector (jump, signature, bytes where the entries would be).
        m[0] = 0xEB;
        assert!(!mbr_or_gpt(&m));
    }

    #[test]
    fn nbd_nodes() {
        assert_eq!(nbd_disk_of("/dev/nbd3p1").as_deref(), Some("/dev/nbd3"));
        assert_eq!(nbd_disk_of("/dev/nbd12").as_deref(), Some("/dev/nbd12"));
        assert_eq!(nbd_disk_of("/dev/sda1"), None);
        assert_eq!(nbd_disk_of("/dev/nbd"), None);
        assert_eq!(nbd_disk_of("/dev/nbd1x"), None);
    }

    #[test]
    fn mount_sources() {
        let info = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    90 22 43:1 / /mnt/my\\040img ro,noatime shared:50 - ext4 /dev/nbd0p1 ro,noload\n";
        assert_eq!(
            mount_source(info, Path::new("/mnt/my img")).as_deref(),
            Some("/dev/nbd0p1")
        );
        assert_eq!(
            mount_source(info, Path::new("/")).as_deref(),
            Some("/dev/sda1")
        );
        assert_eq!(mount_source(info, Path::new("/x")), None);
    }
}
