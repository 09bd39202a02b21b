//! The one read-only guard: while a job reads a source block device, the kernel holds it
//! read-only (`BLKROSET`) together with every node that writes could reach it through — the
//! whole disk and all its partitions, the whole disk of a partition, and for a loop device over a
//! block device that device too. Each flag the guard changed is restored when it is dropped
//! (normal end, error, panic unwinding), and by [`restore_all`] on the signal path that exits at
//! once (a second Ctrl-C), which `jobs` calls before exiting.
use super::resolve::{dev_split, Resolver};
use crate::error::{Error, Result};
use crate::io::sys;
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Devices some live guard marked read-only (for [`restore_all`]).
static HELD: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Holds block devices read-only in the kernel; restores each flag it changed when dropped.
pub struct ReadOnlyGuard {
    held: Vec<(File, PathBuf)>,
}

impl std::fmt::Debug for ReadOnlyGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.paths()).finish()
    }
}

/// The block device nodes whose writes reach `path`'s bytes (itself first). Empty for a file.
pub fn related_nodes(path: &Path) -> Vec<PathBuf> {
    let Ok(md) = std::fs::metadata(path) else {
        return vec![];
    };
    if !md.file_type().is_block_device() {
        return vec![];
    }
    let r = Resolver::system();
    let mut out = vec![path.to_path_buf()];
    add_related(&r, md.rdev(), &mut out, 0);
    out
}

/// The device node of `dev`, when there is one (without udev, partitions may have none; nothing
/// can write through a node that does not exist).
fn node(r: &Resolver, dev: u64) -> Option<PathBuf> {
    let n = PathBuf::from(r.dev_name(dev));
    let ok =
        std::fs::metadata(&n).is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == dev);
    ok.then_some(n)
}

fn push(out: &mut Vec<PathBuf>, p: PathBuf) {
    let same = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.rdev() == y.rdev(),
        _ => a == b,
    };
    if !out.iter().any(|q| same(q, &p)) {
        out.push(p);
    }
}

fn add_related(r: &Resolver, dev: u64, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 {
        return;
    }
    let (ma, mi) = dev_split(dev);
    let Ok(sys) = std::fs::canonicalize(format!("/sys/dev/block/{ma}:{mi}")) else {
        return;
    };
    let whole = if sys.join("partition").exists() {
        sys.parent().map(Path::to_path_buf)
    } else {
        Some(sys.clone())
    };
    let Some(whole) = whole else { return };
    let devnum = |d: &Path| {
        let s = std::fs::read_to_string(d.join("dev")).ok()?;
        let (a, b) = s.trim().split_once(':')?;
        Some(super::resolve::dev_join(a.parse().ok()?, b.parse().ok()?))
    };
    if let Some(w) = devnum(&whole) {
        if let Some(n) = node(r, w) {
            push(out, n);
        }
    }
    if let Ok(rd) = std::fs::read_dir(&whole) {
        for e in rd.flatten() {
            if e.path().join("partition").exists() {
                if let Some(n) = devnum(&e.path()).and_then(|d| node(r, d)) {
                    push(out, n);
                }
            }
        }
    }
    // A loop device over a block device: hold that one too. Its number comes from the kernel
    // (LOOP_GET_STATUS64's lo_rdevice), which holds even when the backing node was deleted;
    // sysfs's backing_file is the fallback.
    if whole.join("loop").is_dir() {
        let status = devnum(&whole)
            .and_then(|d| node(r, d))
            .and_then(|p| File::open(p).ok())
            .and_then(|f| sys::loop_status(&f).ok());
        let rdev = match status {
            Some(s) => s.lo_rdevice,
            None => std::fs::read_to_string(whole.join("loop/backing_file"))
                .ok()
                .and_then(|b| std::fs::metadata(b.trim_end_matches('\n')).ok())
                .filter(|m| m.file_type().is_block_device())
                .map_or(0, |m| m.rdev()),
        };
        if rdev != 0 {
            if let Some(n) = node(r, rdev) {
                push(out, n);
            }
            add_related(r, rdev, out, depth + 1);
        }
    }
}

impl ReadOnlyGuard {
    /// Marks every block device in `paths`, and the nodes related to each ([`related_nodes`]),
    /// read-only. Regular files are skipped (the kernel has no such flag for them).
    pub fn new(paths: &[PathBuf]) -> Result<ReadOnlyGuard> {
        let mut g = ReadOnlyGuard { held: vec![] };
        let mut all: Vec<PathBuf> = Vec::new();
        for p in paths {
            for n in related_nodes(p) {
                push(&mut all, n);
            }
        }
        for p in all {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&p)
                .map_err(|e| Error::io("open (to mark it read-only)", &p, e))?;
            let was =
                sys::get_ro(&f).map_err(|e| Error::io("query the read-only flag of", &p, e))?;
            if !was {
                sys::set_ro(&f, true)
                    .map_err(|e| Error::io("mark read-only (BLKROSET; are you root?)", &p, e))?;
                if let Ok(mut h) = HELD.lock() {
                    h.push(p.clone());
                }
                g.held.push((f, p));
            }
        }
        crate::jobs::before_exit(restore_all);
        Ok(g)
    }

    /// The devices this guard changed.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.held.iter().map(|(_, p)| p.clone()).collect()
    }
}

impl Drop for ReadOnlyGuard {
    fn drop(&mut self) {
        for (f, p) in self.held.drain(..).rev() {
            if let Err(e) = sys::set_ro(&f, false) {
                crate::errln!(
                    "lifeboat: warning: could not restore {} to read-write: {e}",
                    p.display()
                );
            }
            if let Ok(mut h) = HELD.lock() {
                if let Some(i) = h.iter().position(|q| *q == p) {
                    h.remove(i);
                }
            }
        }
    }
}

/// Restores every device a live guard marked read-only (for a path that exits without
/// unwinding, e.g. the second Ctrl-C).
pub fn restore_all() {
    let Ok(mut h) = HELD.try_lock() else { return };
    for p in h.drain(..) {
        if let Ok(f) = File::open(&p) {
            let _ = sys::set_ro(&f, false);
        }
    }
}
