//! Whether a disk or partition is in use by the running system: mounted (from
//! `/proc/self/mountinfo`, matched by major:minor), active swap (`/proc/swaps`), or held by
//! another block device (RAID, device-mapper: `/sys/class/block/X/holders`).
use super::sysfs::{attr, list_dir};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// "MAJ:MIN" of the mounted device (virtual for btrfs: then `source` is what matches).
    pub dev: String,
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
    /// The superblock options ("rw,lowerdir=/a,upperdir=/b,workdir=/c" for an overlay), escaped
    /// as in mountinfo (split at ',' first, then [`unescape`] each).
    pub options: String,
}

/// Undoes the octal escapes (`\040` for a space) the kernel uses in mountinfo and swaps.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut v = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if sep < 5 || sep + 2 >= f.len() {
            continue;
        }
        v.push(Mount {
            dev: f[2].to_string(),
            mount_point: unescape(f[4]),
            fs_type: f[sep + 1].to_string(),
            source: unescape(f[sep + 2]),
            options: f.get(sep + 3).unwrap_or(&"").to_string(),
        });
    }
    v
}

/// The mounts of the running system (empty when /proc is not there).
pub fn system_mounts() -> Vec<Mount> {
    parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// Whether a mount is of the block device `name` with number `dev`.
pub fn mount_matches(m: &Mount, name: &str, dev: &str) -> bool {
    (!dev.is_empty() && m.dev == dev) || m.source.strip_prefix("/dev/").is_some_and(|s| s == name)
}

/// "MAJ:MIN" of a device node or file's device (None for anything else).
pub fn rdev_of(path: &Path) -> Option<String> {
    let md = fs::metadata(path).ok()?;
    use std::os::unix::fs::FileTypeExt;
    if !md.file_type().is_block_device() {
        return None;
    }
    Some(fmt_dev(md.rdev()))
}

/// Splits a Linux dev_t into "MAJ:MIN".
pub fn fmt_dev(rdev: u64) -> String {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfffu64);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xffu64);
    format!("{major}:{minor}")
}

/// Why `name` (a disk or partition kernel name) must not be written to right now. A disk's
/// reasons include its partitions'. Empty when nothing is known to use it.
pub fn in_use(name: &str) -> Vec<String> {
    let mounts = system_mounts();
    let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
    in_use_at(Path::new("/sys"), &mounts, &swaps, name)
}

/// [`in_use`] against a given sysfs root, mount table and `/proc/swaps` text (for tests).
pub fn in_use_at(sysfs_root: &Path, mounts: &[Mount], swaps: &str, name: &str) -> Vec<String> {
    let class = sysfs_root.join("class").join("block");
    let dir = class.join(name);
    let mut names = vec![name.to_string()];
    // A whole disk's partitions are sub-directories with a `partition` attribute.
    for e in list_dir(&dir) {
        if e.starts_with(name) && dir.join(&e).join("partition").exists() {
            names.push(e);
        }
    }
    let swap_devs: Vec<(String, Option<String>)> = swaps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(|p| {
            let p = unescape(p);
            let rd = rdev_of(Path::new(&p));
            (p, rd)
        })
        .collect();
    let mut reasons = Vec::new();
    for n in &names {
        let d = if n == name { dir.clone() } else { dir.join(n) };
        let dev = attr(&d, "dev").unwrap_or_default();
        for m in mounts.iter().filter(|m| mount_matches(m, n, &dev)) {
            reasons.push(format!(
                "{n} is mounted on {} ({})",
                m.mount_point, m.fs_type
            ));
        }
        for (p, rd) in &swap_devs {
            let by_dev = !dev.is_empty() && rd.as_deref() == Some(dev.as_str());
            let by_name = p.strip_prefix("/dev/").is_some_and(|s| s == n);
            if by_dev || by_name {
                reasons.push(format!("{n} is in use as swap ({p})"));
            }
        }
        for h in list_dir(&d.join("holders")) {
            reasons.push(format!("{n} is held by {h}"));
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let t = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                 30 22 0:45 / /mnt/my\\040disk rw - btrfs /dev/sdb2 rw,space_cache\n\
                 garbage\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, "8:1");
        assert_eq!(m[1].mount_point, "/mnt/my disk");
        assert!(mount_matches(&m[1], "sdb2", "8:18"));
        assert!(!mount_matches(&m[1], "sdb1", "8:17"));
        assert!(mount_matches(&m[0], "sda1", "8:1"));
    }

    #[test]
    fn dev_numbers() {
        assert_eq!(fmt_dev(0x0801), "8:1");
        assert_eq!(fmt_dev((259 << 8) | 3), "259:3");
        // Large minors spill into the high bits.
        let rdev: u64 = (7u64 << 8) | 0x12 | (0x3u64 << 20);
        assert_eq!(fmt_dev(rdev), format!("7:{}", 0x12 | (0x3 << 8)));
    }
}
