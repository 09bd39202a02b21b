//! How much room an image store has and how much an image will need, for the console's location
//! screen (and anything else that must say "this will not fit" before a job starts).
//!
//! Free space of a partition: `statvfs` where it is mounted already; otherwise read from its
//! filesystem's own allocation map (`fs::UsageMap`: the ext block bitmaps, the FAT, the exFAT
//! and NTFS bitmaps), opened read-only, so finding out never mounts, replays or writes anything:
//! free = size − used, less ext's reserves ([`Room`]). A filesystem whose map cannot be trusted
//! (unknown, dirty) has no figure.
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
//! (statvfs of the mounted partition, NTFS volume or share, or of a plain directory). Both
//! figures, from a map or from statvfs, go through one rule, [`Room::for_image`]: the space
//! reserved for root on ext does not count (see there why).
use crate::devices::Partition;
use crate::error::{Error, Result};
use std::path::Path;

/// The flag of `image create` and `image copy` that skips the free-space check.
pub const IGNORE_FLAG: &str = "--ignore-free-space";

/// What a filesystem says of its free space: `free` bytes in free blocks, `reserved` of them
/// kept from ordinary files (ext's blocks reserved for root and the kernel's own reserve; none
/// on FAT, exFAT or NTFS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub free: u64,
    pub reserved: u64,
}

impl Room {
    /// The one rule for "will the image fit", whoever reads the figure (the console from an
    /// unmounted partition's bitmaps, the CLI and a network place by `statvfs`): the free bytes
    /// less the reserved ones — `df`'s "Avail", statvfs's `f_bavail`. Lifeboat writes as root
    /// and the kernel would let it into ext's blocks reserved for root, but those exist so that
    /// a filesystem filled by ordinary data still leaves root room to work (logs, a repair) and
    /// keeps fragmentation down; an image is ordinary data and must not count on them. So the
    /// same partition gets the same figure whether it is mounted or not, and from the console
    /// or the CLI (they used to differ by that 5 %).
    pub fn for_image(self) -> u64 {
        self.free.saturating_sub(self.reserved)
    }
}

/// Bytes an image may take on `part` ([`Room::for_image`]: statvfs where it is mounted
/// already, else its filesystem's own map, see the module documentation), or why that is
/// unknown.
pub fn free_bytes(part: &Partition) -> Result<u64, String> {
    if let Some(mp) = part.mounted.first() {
        return free_at(Path::new(mp.as_str())).map_err(|e| e.to_string());
    }
    let dev =
        crate::io::Device::open(&part.path, crate::io::Access::Read).map_err(|e| e.to_string())?;
    Ok(room_of(&dev)?.for_image())
}

/// The [`Room`] of the filesystem that fills `dev` (a partition, or a disk without a table),
/// read from its own allocation map (used-block analysis) and, for ext, its superblock's
/// reserves; or why that is unknown.
pub fn room_of(dev: &dyn crate::io::BlockSource) -> Result<Room, String> {
    let map = crate::fs::UsageMap::analyze(dev);
    let p = match map.partitions.as_slice() {
        [p] if p.number == 0 => p,
        _ => return Err("no single filesystem on it".into()),
    };
    if p.mode != crate::fs::Mode::UsedBlocks {
        return Err(p
            .reason
            .clone()
            .unwrap_or_else(|| "no allocation map".into()));
    }
    let reserved = match p.filesystem.as_deref() {
        Some("ext2" | "ext3" | "ext4") => {
            let r = crate::fs::Region::new(dev, 0, dev.size());
            crate::fs::ext::reserved_bytes(&r).map_err(|e| e.to_string())?
        }
        _ => 0,
    };
    Ok(Room {
        free: p.size_bytes.saturating_sub(p.used_bytes),
        reserved,
    })
}

/// The [`Room`] of the filesystem holding the directory `dir` (statvfs: free blocks
/// `f_bfree`, of which `f_bfree − f_bavail` reserved, in `f_frsize` units).
pub fn room_at(dir: &Path) -> Result<Room> {
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| Error::io("read the free space of", dir, std::io::Error::from(e)))?;
    let unit = st.fragment_size() as u64;
    let (free, avail) = (st.blocks_free() as u64, st.blocks_available() as u64);
    Ok(Room {
        free: free.saturating_mul(unit),
        reserved: free.saturating_sub(avail).saturating_mul(unit),
    })
}

/// Bytes an image may take in the filesystem holding the directory `dir` (a mounted
/// partition, NTFS volume, network share or plain directory): [`Room::for_image`] of
/// [`room_at`].
pub fn free_at(dir: &Path) -> Result<u64> {
    Ok(room_at(dir)?.for_image())
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
        .map(|m| held_bytes(&m))
        .sum();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let free = match free_at(dir) {
        Ok(f) => f,
        Err(e) if e.kind == crate::error::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            crate::errln!("lifeboat: note: {e}; the free space was not checked");
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

/// The bytes a file holds on its filesystem (what it frees when removed or what of a resumed
/// image is already written): its allocated blocks, never more than its length. A sparse file
/// (a file planted under an unfinished image's name, 4 GiB long and holding nothing) counts
/// for what it occupies, not for its length.
pub fn held_bytes(m: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    m.blocks().saturating_mul(512).min(m.len())
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

    /// statvfs of a directory agrees with df's "Avail" for it (the referee), within what other
    /// writers change between the two reads.
    #[test]
    fn free_at_a_directory_agrees_with_df() {
        let dir = std::env::temp_dir();
        let ours = free_at(&dir).unwrap();
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&dir)
            .output();
        let Ok(out) = out else {
            crate::errln!("note: df is missing; skipping");
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
        let room = room_at(&dir).unwrap();
        assert!(room.reserved <= room.free, "{room:?}");
        let e = free_at(Path::new("/nonexistent/dir")).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::NotFound);
    }

    #[test]
    fn the_reserved_part_of_the_free_space_is_not_for_images() {
        let r = |free, reserved| Room { free, reserved }.for_image();
        assert_eq!(r(100, 0), 100);
        assert_eq!(r(100, 5), 95);
        assert_eq!(r(100, 100), 0);
        // More reserved than free (ext when only root's blocks are left): nothing, no wrap.
        assert_eq!(r(3, 5), 0);
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

    /// An ext4 made by mkfs.ext4 in a file (`extra`: its options), the file's path, and
    /// dumpe2fs's header of it; None (with a note) where mkfs.ext4 is missing.
    fn ext4(tag: &str, extra: &[&str]) -> Option<(std::path::PathBuf, String)> {
        let dir = std::env::temp_dir().join(format!("lb-space-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("files")).unwrap();
        std::fs::write(dir.join("files/big"), vec![7u8; 8 << 20]).unwrap();
        let img = dir.join("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let ok = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096"])
            .args(extra)
            .arg("-d")
            .arg(dir.join("files"))
            .arg(&img)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            crate::errln!("note: mkfs.ext4 is missing; skipping");
            return None;
        }
        let out = std::process::Command::new("dumpe2fs")
            .arg("-h")
            .arg(&img)
            .output()
            .unwrap();
        Some((img, String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// A number field of dumpe2fs's header ("Free blocks:").
    fn field(header: &str, name: &str) -> u64 {
        header
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {header}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// A real filesystem in a file: free = size − used of its own bitmaps, reserved = the
    /// superblock's blocks for root plus the kernel's reserve; dumpe2fs is the referee of the
    /// counts (the mounted figure is compared with statvfs in tests/image_space.rs).
    #[test]
    fn room_of_an_unmounted_ext4_from_its_bitmaps_and_superblock() {
        // The default (5 % for root, extents: the kernel's reserve too) and a filesystem with
        // 10 % for root and no extents (no kernel reserve).
        for (tag, extra, kernel_reserve) in [
            ("default", &[][..], true),
            ("m10", &["-m", "10", "-O", "^extents,^64bit"][..], false),
        ] {
            let Some((img, header)) = ext4(tag, extra) else {
                return;
            };
            let before = std::fs::read(&img).unwrap();
            let dev = crate::io::Device::open(&img, crate::io::Access::Read).unwrap();
            let room = room_of(&dev).unwrap();
            assert_eq!(room.free, field(&header, "Free blocks:") * 4096, "{tag}");
            let blocks = field(&header, "Block count:");
            let root = field(&header, "Reserved block count:");
            let pct = if tag == "m10" { 10 } else { 5 };
            assert_eq!(root, blocks * pct / 100, "{tag}: mkfs -m {pct}");
            let kernel = if kernel_reserve {
                (blocks / 50).min(4096)
            } else {
                0
            };
            assert_eq!(room.reserved, (root + kernel) * 4096, "{tag}");
            assert!(room.free < (56 << 20), "{tag}: {room:?}");
            assert_eq!(room.for_image(), room.free - room.reserved);
            assert_eq!(std::fs::read(&img).unwrap(), before, "reading changed it");
            std::fs::remove_dir_all(img.parent().unwrap()).unwrap();
        }
    }
}
