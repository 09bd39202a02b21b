//! How much room an image store has and how much an image will need, for the console's location
//! screen (and anything else that must say "this will not fit" before a job starts).
//!
//! Free space of a partition: `statvfs` where it is mounted already; otherwise read from its
//! filesystem's own allocation map (`fs::UsageMap`: the ext block bitmaps, the FAT, the exFAT
//! and NTFS bitmaps), opened read-only, so finding out never mounts, replays or writes anything:
//! free = size − used. A filesystem whose map cannot be trusted (unknown, dirty) has no figure.
//!
//! An image's size: at most the bytes the used-block plan reads (used blocks, everything outside
//! partitions, unmappable partitions whole — `SourceUsage::used_bytes`), since chunks are stored
//! compressed or raw, never larger, and zero chunks not at all; plus the index (56 bytes per 1 MiB
//! chunk), the usage record and headers. That bound is what [`image_upper_bound`] gives.
//!
//! The rule "this will not fit", shared by the console and the CLI (`image create`, `image copy`):
//! [`check_room`] refuses (exit 4, nothing written) a destination whose free space is less than
//! what the job may need, naming both figures and the flag that skips the check
//! ([`IGNORE_FLAG`]). The CLI reads the free space where the image goes with [`free_at`]
//! (statvfs of the mounted partition, NTFS volume or share, or of a plain directory).
use crate::devices::Partition;
use crate::error::{Error, Result};
use std::path::Path;

/// The flag of `image create` and `image copy` that skips the free-space check.
pub const IGNORE_FLAG: &str = "--ignore-free-space";

/// Bytes free for new files on `part` (see the module documentation), or why that is unknown.
pub fn free_bytes(part: &Partition) -> Result<u64, String> {
    if let Some(mp) = part.mounted.first() {
        return free_in(Path::new(mp.as_str()));
    }
    let dev =
        crate::io::Device::open(&part.path, crate::io::Access::Read).map_err(|e| e.to_string())?;
    let map = crate::fs::UsageMap::analyze(&dev);
    free_of(&map)
}

/// Bytes free for new files (an unprivileged writer's share: `f_bavail`) in the filesystem
/// mounted at `dir` — a mounted partition, or a network share (the console's network places).
pub fn free_in(dir: &std::path::Path) -> Result<u64, String> {
    let st =
        nix::sys::statvfs::statvfs(dir).map_err(|e| format!("statvfs {}: {e}", dir.display()))?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Free bytes of the filesystem that fills the device `map` was read from (partition 0: no
/// table on a partition), or why that is unknown.
pub fn free_of(map: &crate::fs::UsageMap) -> Result<u64, String> {
    match map.partitions.as_slice() {
        [p] if p.number == 0 && p.mode == crate::fs::Mode::UsedBlocks => {
            Ok(p.size_bytes.saturating_sub(p.used_bytes))
        }
        [p] if p.number == 0 => Err(p
            .reason
            .clone()
            .unwrap_or_else(|| "no allocation map".into())),
        _ => Err("no single filesystem on it".into()),
    }
}

/// Bytes free for new files in the filesystem holding the directory `dir` (statvfs: the blocks
/// available to files, `f_bavail × f_frsize`; on ext4 that leaves out the blocks reserved for
/// root, so the figure is the same whoever asks).
pub fn free_at(dir: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| Error::io("read the free space of", dir, std::io::Error::from(e)))?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// The free-space rule: `place` (as the user named it) with `free` bytes free cannot take
/// `what`, which may need up to `need` bytes, when `need > free`. The refusal (exit 4) gives both
/// figures and [`IGNORE_FLAG`]; its JSON report carries `free_bytes` and `needed_bytes`.
pub fn check_room(place: &str, free: u64, need: u64, what: &str) -> Result<()> {
    if need <= free {
        return Ok(());
    }
    let fmt = crate::jobs::fmt_bytes;
    Err(Error::refused(format!(
        "not enough free space: {place} has {} free ({free} bytes) and {what} may need up to {} \
        ({need} bytes); nothing was written. Free some space there or choose a place with more \
        room; or give {IGNORE_FLAG} to start anyway (should the space run out, the job stops \
        and nothing already there is lost)",
        fmt(free),
        fmt(need)
    ))
    .with_report("free_bytes", free)
    .with_report("needed_bytes", need))
}

/// The free-space check of a new full image written at `path` (`named`: as the user named it)
/// of a disk whose used-block plan is `plan`: [`image_upper_bound`], less what an unfinished run
/// of it already wrote there (its `.partial` volumes, which this run resumes), against the free
/// space of `path`'s directory. A directory that does not exist is not checked here (the job
/// says so); one whose free space cannot be read gets a note and no check.
pub fn check_image_room(path: &Path, named: &str, plan: &crate::fs::UsageMap) -> Result<()> {
    let need = image_upper_bound(plan.used_bytes, plan.disk_size);
    let written: u64 = (1..=u16::MAX as u32)
        .map(|n| super::create::partial_name(&super::format::volume_path(path, n)))
        .map_while(|p| std::fs::symlink_metadata(p).ok().filter(|m| m.is_file()))
        .map(|m| m.len())
        .sum();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let free = match free_at(dir) {
        Ok(f) => f,
        Err(e) if e.kind == crate::error::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            eprintln!("lifeboat: note: {e}; the free space was not checked");
            return Ok(());
        }
    };
    let what = if written > 0 {
        "the rest of the image (resumed)"
    } else {
        "the image"
    };
    check_room(
        &format!("the filesystem holding {named}"),
        free,
        need.saturating_sub(written),
        what,
    )
}

/// At most how many bytes an image of a disk of `disk_bytes` whose used-block plan reads
/// `used_bytes` takes (see the module documentation).
pub fn image_upper_bound(used_bytes: u64, disk_bytes: u64) -> u64 {
    let chunks = disk_bytes.div_ceil(1 << 20);
    used_bytes
        .saturating_add(chunks.saturating_mul(64))
        .saturating_add(2 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// statvfs of a directory agrees with df's figure for it (the referee), within what other
    /// writers change between the two reads.
    #[test]
    fn free_in_a_directory_agrees_with_df() {
        let dir = std::env::temp_dir();
        let ours = free_in(&dir).unwrap();
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&dir)
            .output();
        let Ok(out) = out else {
            eprintln!("note: df is missing; skipping");
            return;
        };
        let theirs: u64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(ours.abs_diff(theirs) < 1 << 30, "{ours} vs df {theirs}");
        assert!(free_in(std::path::Path::new("/nonexistent/dir")).is_err());
        let e = free_at(Path::new("/nonexistent/dir")).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::NotFound);
    }

    #[test]
    fn room_is_refused_with_both_figures_and_the_flag() {
        assert!(check_room("label=B:/pc/full.lbi", 100, 100, "the image").is_ok());
        let e = check_room("label=B:/pc/full.lbi", 100, 101, "the image").unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Refused);
        assert_eq!(e.exit_code(), crate::error::exit::REFUSED);
        let m = e.to_string();
        for w in [
            "label=B:/pc/full.lbi",
            "100 bytes",
            "101 bytes",
            IGNORE_FLAG,
        ] {
            assert!(m.contains(w), "{w:?} not in {m}");
        }
        let r = e.report.unwrap();
        assert_eq!(r["free_bytes"], 100);
        assert_eq!(r["needed_bytes"], 101);
    }

    #[test]
    fn bound_covers_index_and_records() {
        assert_eq!(image_upper_bound(0, 0), 2 << 20);
        let gib = 1u64 << 30;
        assert_eq!(image_upper_bound(gib, 4 * gib), gib + 4096 * 64 + (2 << 20));
        assert_eq!(image_upper_bound(u64::MAX, u64::MAX), u64::MAX);
    }

    /// A real filesystem in a file: free = size − used of its own bitmaps, and it agrees with
    /// what the filesystem's own tool says within its metadata.
    #[test]
    fn free_space_of_an_unmounted_ext4_from_its_bitmaps() {
        let dir = std::env::temp_dir().join(format!("lb-space-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("files")).unwrap();
        std::fs::write(dir.join("files/big"), vec![7u8; 8 << 20]).unwrap();
        let img = dir.join("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let ok = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-d"])
            .arg(dir.join("files"))
            .arg(&img)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("note: mkfs.ext4 is missing; skipping");
            return;
        }
        let before = std::fs::read(&img).unwrap();
        let dev = crate::io::Device::open(&img, crate::io::Access::Read).unwrap();
        let free = free_of(&crate::fs::UsageMap::analyze(&dev)).unwrap();
        // dumpe2fs's free block count is the referee.
        let out = std::process::Command::new("dumpe2fs")
            .arg("-h")
            .arg(&img)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let blocks: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("Free blocks:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(free, blocks * 4096);
        assert!(free < (56 << 20), "{free}");
        assert_eq!(std::fs::read(&img).unwrap(), before, "reading changed it");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
