//! NTFS image stores through Debian's `ntfs-3g` (FUSE): the environment's 6.1 kernel has no
//! ntfs3, so [`mount`] starts `/bin/ntfs-3g` (carried in the initramfs with its loader and
//! libraries, see `initramfs::programs`) as a child process that stays in the foreground
//! (`-o no_detach`), in its own process group (a Ctrl-C on the terminal goes to the job, which
//! cancels and unmounts in order; it must not stop the filesystem under it), read-only
//! (`-o ro`) for everything that only reads, and waits until the mount appears in
//! `/proc/self/mountinfo` — or the process exits, whose exit code ([`Status`], ntfs-3g's
//! `ntfs_volume_status`) becomes a typed error.
//!
//! Writing is refused (never forced: no `remove_hiberfile`) on a volume Windows did not shut
//! down fully — hibernated, or "Fast Startup", which is a hibernation of the kernel session:
//! Windows resumes with the volume's metadata it still holds in memory and would overwrite what
//! was written meanwhile. Checked twice: first by Lifeboat from the volume itself (`fs::ntfs`:
//! the dirty flag in `$Volume`, a `$LogFile` that is not clean), then by ntfs-3g (a hiberfil.sys
//! that starts with `hibr`/`HIBR`: ntfs-3g 2022 then mounts read-only instead of failing — seen
//! in the mount's options and unmounted at once —, older ones exit 14). Reading such a volume
//! read-only is allowed.
//!
//! [`NtfsMount`] unmounts on every path: [`NtfsMount::unmount`] (or drop, which also runs while
//! a panic unwinds) calls `umount2` on the mount point — for a `fuseblk` mount the kernel sends
//! ntfs-3g its DESTROY and waits for it, so the volume is written out and marked clean — then
//! waits for the ntfs-3g process to exit and syncs. The second Ctrl-C, which exits at once
//! without unwinding, runs the same through a [`crate::jobs::before_exit`] hook over the mounts
//! still live ([`unmount_all`]). A mount that stays busy (a file on it still open) is detached
//! lazily instead, and ntfs-3g writes the volume out when the last file closes.
use super::store::Mode;
use crate::error::{Error, ErrorKind, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the environment has ntfs-3g (scripts/build puts it there); on a host, PATH is searched
/// after these.
const NTFS3G: [&str; 2] = ["/bin/ntfs-3g", "/usr/bin/ntfs-3g"];

/// How long ntfs-3g may take to mount before it is given up on (a large, fragmented MFT on a
/// slow USB disk takes seconds; this only bounds a hang).
const MOUNT_DEADLINE: Duration = Duration::from_secs(180);

/// How long to wait for ntfs-3g to exit after its filesystem was unmounted before leaving it
/// running (it is never killed: killing it would lose what it has not written yet).
const EXIT_DEADLINE: Duration = Duration::from_secs(120);

/// ntfs-3g's exit codes (`ntfs_volume_status` in its volume.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    SyntaxError,
    NotNtfs,
    Corrupt,
    Hibernated,
    UncleanUnmount,
    Locked,
    Raid,
    NoPrivilege,
    OutOfMemory,
    FuseError,
    Other(i32),
}

impl Status {
    pub fn from_code(c: i32) -> Status {
        match c {
            11 => Status::SyntaxError,
            12 => Status::NotNtfs,
            13 => Status::Corrupt,
            14 => Status::Hibernated,
            15 => Status::UncleanUnmount,
            16 => Status::Locked,
            17 => Status::Raid,
            19 => Status::NoPrivilege,
            20 => Status::OutOfMemory,
            21 => Status::FuseError,
            c => Status::Other(c),
        }
    }
}

/// What to do about a volume Windows did not shut down fully.
pub const WINDOWS_ADVICE: &str = "start Windows and shut it down fully (hold Shift while \
     choosing Shut down), or turn Fast Startup off (Control Panel > Power Options > Choose what \
     the power buttons do), then try again; images on it can still be read (verify, restore)";

/// What to do about a volume marked dirty.
pub const DIRTY_ADVICE: &str = "let Windows check it (`chkdsk /f` on that drive, or start Windows \
     and shut it down fully), then try again; images on it can still be read (verify, restore)";

/// The error for ntfs-3g's exit `status` mounting `dev`; `said` is the end of what it
/// wrote on stderr.
pub fn status_error(dev: &Path, status: Status, said: &str) -> Error {
    let d = dev.display();
    let tail = if said.is_empty() {
        String::new()
    } else {
        format!(" (ntfs-3g: {said})")
    };
    let (kind, msg) = match status {
        Status::Hibernated => (
            ErrorKind::Refused,
            format!(
                "Windows is hibernated or stopped with Fast Startup on the NTFS volume {d}, so \
                 Lifeboat does not write to it (Windows would overwrite the changes when it \
                 resumes): {WINDOWS_ADVICE}"
            ),
        ),
        Status::UncleanUnmount => (
            ErrorKind::Refused,
            format!(
                "the NTFS volume {d} was not unmounted cleanly (its journal is not empty), so \
                 Lifeboat does not write to it: {WINDOWS_ADVICE}"
            ),
        ),
        Status::NotNtfs => (
            ErrorKind::Corrupt,
            format!("{d} does not hold a readable NTFS filesystem"),
        ),
        Status::Corrupt => (
            ErrorKind::Corrupt,
            format!(
                "the NTFS filesystem on {d} is damaged: run `chkdsk /f` on it in Windows, then try again"
            ),
        ),
        Status::Locked => (
            ErrorKind::Refused,
            format!("{d} is in use (already mounted or open elsewhere); unmount it first"),
        ),
        Status::Raid => (
            ErrorKind::Unsupported,
            format!("{d} is a member of a (fake) RAID set, not a plain NTFS partition"),
        ),
        Status::NoPrivilege => (
            ErrorKind::Io,
            format!("no permission to mount {d} with ntfs-3g (run as root)"),
        ),
        Status::FuseError => (
            ErrorKind::Unsupported,
            format!("ntfs-3g could not use FUSE to mount {d} (is the fuse module loaded, /dev/fuse there?)"),
        ),
        Status::SyntaxError | Status::OutOfMemory | Status::Other(_) => (
            ErrorKind::Io,
            format!("ntfs-3g could not mount {d} ({status:?})"),
        ),
    };
    Error::new(kind, format!("{msg}{tail}")).at_path(dev)
}

/// Refuses writing to the NTFS volume on `dev` when its own structures say Windows did not shut
/// down fully (dirty flag, a `$LogFile` that is not clean). Only reads. What `fs::ntfs` cannot
/// read is left to ntfs-3g to judge.
pub fn check_writable(dev: &Path) -> Result<()> {
    let d = crate::io::Device::open(dev, crate::io::Access::Read)?;
    let r = crate::fs::Region::new(&d, 0, crate::io::BlockSource::size(&d));
    match crate::fs::ntfs::unclean(r) {
        Ok(Some(u)) => Err(Error::refused(format!(
            "{} ({}), so Lifeboat does not write to it: {}",
            u.reason(),
            dev.display(),
            match u {
                crate::fs::ntfs::Unclean::Dirty => DIRTY_ADVICE,
                crate::fs::ntfs::Unclean::Log => WINDOWS_ADVICE,
            }
        ))
        .at_path(dev)),
        _ => Ok(()),
    }
}

/// The ntfs-3g program: the environment's, or the host's from PATH.
fn program() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    NTFS3G
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path).map(|d| d.join("ntfs-3g")))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::unsupported(
                "ntfs-3g is not available, so NTFS partitions cannot hold images here \
                 (on a host: apt-get install ntfs-3g)",
            )
        })
}

/// Makes sure /dev/fuse exists: loads the fuse module through the environment's loader when the
/// kernel does not know FUSE yet (devtmpfs then creates the node).
fn ensure_fuse() -> Result<()> {
    if Path::new("/dev/fuse").exists() {
        return Ok(());
    }
    if let Err(e) = crate::init::modules::load_by_name("fuse") {
        crate::errln!("lifeboat: could not load the fuse module: {e}");
    }
    if Path::new("/dev/fuse").exists() {
        Ok(())
    } else {
        Err(Error::unsupported(
            "/dev/fuse is missing (the fuse kernel module did not load), so NTFS partitions cannot hold images",
        ))
    }
}

/// The FUSE filesystem mounted at `mp` now, if any.
fn fuse_mounted_at(mp: &Path) -> Option<crate::devices::usage::Mount> {
    let want = mp.to_string_lossy();
    crate::devices::usage::system_mounts()
        .into_iter()
        .find(|m| m.mount_point == want && m.fs_type.starts_with("fuse"))
}

/// Whether mountinfo's superblock options say read-only.
fn read_only(options: &str) -> bool {
    options.split(',').any(|o| o == "ro")
}

/// The NTFS mounts this process has live (mount point, ntfs-3g pid), for [`unmount_all`].
static LIVE: Mutex<Vec<(PathBuf, u32)>> = Mutex::new(Vec::new());

/// A mounted NTFS filesystem served by a child ntfs-3g. Unmounts on drop.
pub struct NtfsMount {
    mp: PathBuf,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

/// Keeps the first 4 KiB of what ntfs-3g writes on stderr (its reasons come first; the rest is
/// read and dropped, by a thread: a full pipe would block ntfs-3g); the thread ends with ntfs-3g.
fn collect(
    mut r: impl Read + Send + 'static,
) -> (Arc<Mutex<Vec<u8>>>, Option<std::thread::JoinHandle<()>>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    let h = std::thread::Builder::new()
        .name("ntfs-3g-stderr".into())
        .spawn(move || {
            let mut chunk = [0u8; 1024];
            while let Ok(n) = r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                if let Ok(mut v) = b.lock() {
                    let room = 4096usize.saturating_sub(v.len()).min(n);
                    v.extend_from_slice(&chunk[..room]);
                }
            }
        })
        .ok();
    (buf, h)
}

/// ntfs-3g's informational lines (its banner with `no_detach`), left out of error messages.
const INFO: [&str; 7] = [
    "Version ",
    "Mounted ",
    "Cmdline options:",
    "Mount options:",
    "Ownership and permissions",
    "Unmounting ",
    "Could not mount read-write",
];

/// The first line ntfs-3g wrote that is not its banner: its reason.
fn said(buf: &Mutex<Vec<u8>>) -> String {
    let v = buf.lock().map(|v| v.clone()).unwrap_or_default();
    let text = String::from_utf8_lossy(&v);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !INFO.iter().any(|i| l.starts_with(i)))
        .take(1)
        .collect();
    lines.join(" ")
}

/// Mounts the NTFS volume on `dev` at `mp` (an existing empty directory) in `mode` through a
/// child ntfs-3g. With [`Mode::ReadWrite`] a volume Windows did not shut down fully is refused
/// first ([`check_writable`]).
pub fn mount(dev: &Path, mp: &Path, mode: Mode) -> Result<NtfsMount> {
    if mode == Mode::ReadWrite {
        check_writable(dev)?;
    }
    let prog = program()?;
    ensure_fuse()?;
    let opts = match mode {
        // ntfs-3g opens the device read-only and replays nothing with `ro`.
        Mode::ReadOnly => "ro,noatime,no_detach",
        // windows_names: refuse names Windows could not open (the image's names are plain).
        Mode::ReadWrite => "rw,noatime,windows_names,big_writes,no_detach",
    };
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(&prog)
        .arg("-o")
        .arg(opts)
        .arg(dev)
        .arg(mp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io(&format!("start {}", prog.display()), dev, e))?;
    let (stderr, mut reader) = match child.stderr.take() {
        Some(s) => collect(s),
        None => (Arc::new(Mutex::new(Vec::new())), None),
    };
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(st) = child
            .try_wait()
            .map_err(|e| Error::io("wait for ntfs-3g", dev, e))?
        {
            // Its stderr is closed now: the reader has the last words when it ends.
            if let Some(h) = reader.take() {
                let _ = h.join();
            }
            let code = st.code().unwrap_or(-1);
            return Err(status_error(dev, Status::from_code(code), &said(&stderr)));
        }
        if let Some(m) = fuse_mounted_at(mp) {
            if mode == Mode::ReadWrite && read_only(&m.options) {
                // ntfs-3g mounts a hibernated volume read-only instead of failing ("Falling
                // back to read-only mount because the NTFS partition is in an unsafe state").
                let mut n = NtfsMount {
                    mp: mp.to_path_buf(),
                    child: Some(child),
                    stderr: stderr.clone(),
                };
                let _ = n.unmount();
                if let Some(h) = reader.take() {
                    let _ = h.join();
                }
                return Err(status_error(dev, Status::Hibernated, &said(&stderr)));
            }
            break;
        }
        if start.elapsed() > MOUNT_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
            return Err(Error::io(
                "mount with ntfs-3g (no mount after 3 minutes)",
                dev,
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    if let Ok(mut l) = LIVE.lock() {
        l.push((mp.to_path_buf(), child.id()));
    }
    crate::jobs::before_exit(unmount_all);
    Ok(NtfsMount {
        mp: mp.to_path_buf(),
        child: Some(child),
        stderr,
    })
}

/// Unmounts `mp` (retrying while it is busy for a moment); when it stays busy, detaches it
/// lazily and returns the error.
fn umount(mp: &Path) -> Result<()> {
    use nix::mount::{umount2, MntFlags};
    let mut last = None;
    for _ in 0..20 {
        match umount2(mp, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) => {
                last = Some(nix::errno::Errno::EBUSY);
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    let e = last.unwrap_or(nix::errno::Errno::EIO);
    let _ = umount2(mp, MntFlags::MNT_DETACH);
    Err(Error::io(
        "unmount (ntfs-3g)",
        mp,
        std::io::Error::from_raw_os_error(e as i32),
    ))
}

/// Waits for `child` to exit, for at most [`EXIT_DEADLINE`]; its status, or None when it did not.
fn wait_gone(child: &mut Child) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    while start.elapsed() < EXIT_DEADLINE {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    None
}

impl NtfsMount {
    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mp
    }

    /// Unmounts, waits for ntfs-3g to write everything out and exit, and syncs. Idempotent.
    pub fn unmount(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let res = umount(&self.mp);
        if let Ok(mut l) = LIVE.lock() {
            l.retain(|(m, _)| m != &self.mp);
        }
        // Detached lazily (a file on it was still open): ntfs-3g writes the volume out and exits
        // when the last one is closed; waiting for it here would wait for ourselves.
        res?;
        let exited = wait_gone(&mut child);
        nix::unistd::sync();
        match exited {
            Some(st) if st.success() => Ok(()),
            Some(st) => Err(Error::io(
                &format!(
                    "finish writing the NTFS volume (ntfs-3g exited with {st}: {})",
                    said(&self.stderr)
                ),
                &self.mp,
                std::io::Error::from(std::io::ErrorKind::Other),
            )),
            None => Err(Error::io(
                "finish writing the NTFS volume (ntfs-3g still runs 2 minutes after the unmount)",
                &self.mp,
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            )),
        }
    }
}

impl Drop for NtfsMount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            crate::errln!("lifeboat: {e}");
        }
    }
}

/// Unmounts every NTFS mount still live and waits for its ntfs-3g (the exit path that does not
/// unwind: a second Ctrl-C).
pub fn unmount_all() {
    let live: Vec<(PathBuf, u32)> = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
    for (mp, pid) in live {
        if umount(&mp).is_err() {
            // Busy (the job's files are open until this process exits): detached lazily, and
            // ntfs-3g finishes by itself once they close.
            continue;
        }
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let start = Instant::now();
        while start.elapsed() < EXIT_DEADLINE {
            match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
    }
    nix::unistd::sync();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_become_typed_errors() {
        let d = Path::new("/dev/sdz1");
        let e = status_error(
            d,
            Status::from_code(14),
            "Windows is hibernated, refused to mount.",
        );
        assert_eq!(e.kind, ErrorKind::Refused);
        assert!(e.to_string().contains("Fast Startup"), "{e}");
        assert!(e.to_string().contains("shut it down fully"), "{e}");
        assert!(e.to_string().contains("Windows is hibernated"), "{e}");
        assert_eq!(
            status_error(d, Status::from_code(15), "").kind,
            ErrorKind::Refused
        );
        assert_eq!(
            status_error(d, Status::from_code(12), "").kind,
            ErrorKind::Corrupt
        );
        assert_eq!(
            status_error(d, Status::from_code(13), "").kind,
            ErrorKind::Corrupt
        );
        assert_eq!(
            status_error(d, Status::from_code(21), "").kind,
            ErrorKind::Unsupported
        );
        assert_eq!(Status::from_code(1), Status::Other(1));
    }

    #[test]
    fn read_only_option() {
        assert!(read_only(
            "ro,user_id=0,group_id=0,allow_other,blksize=4096"
        ));
        assert!(!read_only(
            "rw,user_id=0,group_id=0,allow_other,blksize=4096"
        ));
        assert!(!read_only("rw,errors=ro"));
    }

    #[test]
    fn said_keeps_the_reason() {
        let b = Mutex::new(
            b"Windows is hibernated, refused to mount.\nFalling back to read-only mount\nbecause\nVersion 2022.10.3 integrated FUSE 28\n"
                .to_vec(),
        );
        assert_eq!(said(&b), "Windows is hibernated, refused to mount.");
        let b = Mutex::new(b"Version 2022\nMounted /dev/x\n\n a \n".to_vec());
        assert_eq!(said(&b), "a");
        assert_eq!(said(&Mutex::new(Vec::new())), "");
    }
}
