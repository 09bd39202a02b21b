//! Recognising the disk Lifeboat booted from, so it is reported and never offered as a target.
//!
//! `scripts/build-usb` gives every medium an id at build time: the FAT volume serial of the
//! stick's partition (and of the ISO's EFI partition), and the ISO 9660 volume UUID. The boot
//! menu passes them on the kernel command line as `lifeboat.media=ID[,ID...]` (blkid's UUID
//! format, e.g. `lifeboat.media=2E25-CE26,2026-11-25-14-51-58-38`). The boot medium is the disk
//! whose own filesystem, or one of whose partitions' filesystems, carries one of those UUIDs
//! (CD drives, which the inventory leaves out, are checked too). Nothing is written, nothing
//! is mounted: the inventory already reads each superblock.
use crate::devices::{self, Disk};
use std::path::Path;

/// The kernel parameter carrying the medium ids.
pub const PARAM: &str = "lifeboat.media";

/// The attached disk Lifeboat booted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootMedia {
    /// Kernel name of the whole disk, e.g. `sdb`.
    pub disk: String,
    /// That disk's serial, when the kernel exposes one.
    pub serial: Option<String>,
}

/// Which attached disk Lifeboat booted from, if it can tell (None on a host or when unknown).
pub fn detect() -> Option<BootMedia> {
    detect_in(&devices::scan_system().unwrap_or_default())
}

/// [`detect`] for callers that have just scanned the disks: looks in `disks`, then at the CD
/// drives (which the disk inventory leaves out), without scanning the disks again.
pub fn detect_in(disks: &[Disk]) -> Option<BootMedia> {
    let ids = ids_from_cmdline(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    if ids.is_empty() {
        return None;
    }
    find(disks, &ids).or_else(|| find_cdrom(Path::new("/sys"), Path::new("/dev"), &ids))
}

/// The medium ids of `lifeboat.media=` on a kernel command line (every occurrence, comma
/// separated, quotes dropped, empty items ignored).
pub fn ids_from_cmdline(cmdline: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for word in crate::kcmdline::split_kernel(cmdline) {
        if let Some(v) = word.strip_prefix(PARAM).and_then(|r| r.strip_prefix('=')) {
            for id in v.split(',') {
                let id = id.trim();
                if !id.is_empty() && !ids.iter().any(|i: &String| i.eq_ignore_ascii_case(id)) {
                    ids.push(id.to_string());
                }
            }
        }
    }
    ids
}

/// Whether `disk` carries one of the medium ids (on the whole disk or on a partition).
pub fn is_medium(disk: &Disk, ids: &[String]) -> bool {
    let hit = |u: &Option<String>| {
        u.as_deref()
            .is_some_and(|u| ids.iter().any(|id| id.eq_ignore_ascii_case(u)))
    };
    hit(&disk.uuid) || disk.partitions.iter().any(|p| hit(&p.uuid))
}

/// The first disk of an inventory that carries one of the medium ids.
pub fn find(disks: &[Disk], ids: &[String]) -> Option<BootMedia> {
    if ids.is_empty() {
        return None;
    }
    disks.iter().find(|d| is_medium(d, ids)).map(|d| BootMedia {
        disk: d.name.clone(),
        serial: d.serial.clone(),
    })
}

/// Sets `boot_media` on every disk of an inventory that carries one of the ids of this boot
/// (from `/proc/cmdline`; nothing is marked on a host that was not booted from Lifeboat media).
pub fn mark(disks: &mut [Disk]) {
    let ids = ids_from_cmdline(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    mark_with(disks, &ids);
}

/// [`mark`] with the ids given.
pub fn mark_with(disks: &mut [Disk], ids: &[String]) {
    for d in disks.iter_mut() {
        d.boot_media = !ids.is_empty() && is_medium(d, ids);
    }
}

/// A CD/DVD drive (`srN`, left out of the disk inventory) whose ISO 9660 volume carries one of
/// the ids: Lifeboat booted from a CD.
pub fn find_cdrom(sysfs_root: &Path, dev_root: &Path, ids: &[String]) -> Option<BootMedia> {
    let block = sysfs_root.join("block");
    let mut names: Vec<String> = std::fs::read_dir(&block)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sr"))
        .collect();
    names.sort();
    for name in names {
        let size = std::fs::read_to_string(block.join(&name).join("size")).unwrap_or_default();
        if size.trim().parse::<u64>().unwrap_or(0) == 0 {
            continue; // no medium in the drive
        }
        let Some(fs) = devices::probe_fs(&dev_root.join(&name)) else {
            continue;
        };
        let hit = fs
            .uuid
            .as_deref()
            .is_some_and(|u| ids.iter().any(|id| id.eq_ignore_ascii_case(u)));
        if hit {
            return Some(BootMedia {
                serial: cdrom_serial(&block.join(&name)),
                disk: name,
            });
        }
    }
    None
}

/// A CD drive's serial: the SCSI unit serial number page (VPD 0x80) when the drive has one.
fn cdrom_serial(dir: &Path) -> Option<String> {
    let raw = std::fs::read(dir.join("device").join("vpd_pg80")).ok()?;
    devices::sysfs::vpd_serial(&raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{fixtures, Partition};

    fn disk(name: &str, serial: &str, uuid: Option<&str>, parts: &[Option<&str>]) -> Disk {
        let partitions = parts
            .iter()
            .enumerate()
            .map(|(i, u)| Partition {
                uuid: u.map(str::to_string),
                ..fixtures::part(&format!("{name}{}", i + 1), 1 << 20, 1 << 20, "vfat", "")
            })
            .collect();
        Disk {
            model: None,
            serial: Some(serial.into()),
            transport: "usb".into(),
            removable: true,
            partition_table: if parts.is_empty() { "none" } else { "mbr" }.into(),
            fs_type: uuid.map(|_| "iso9660".into()),
            uuid: uuid.map(str::to_string),
            ..fixtures::disk(name, 1 << 30, partitions)
        }
    }

    #[test]
    fn parses_ids_from_cmdline() {
        let c = "BOOT_IMAGE=/boot/vmlinuz console=ttyS0 lifeboat.media=2E25-CE26,2026-11-25-14-51-58-38 quiet";
        assert_eq!(
            ids_from_cmdline(c),
            vec![
                "2E25-CE26".to_string(),
                "2026-11-25-14-51-58-38".to_string()
            ]
        );
        assert_eq!(
            ids_from_cmdline("lifeboat.media=\"abcd-0001\" lifeboat.media=ABCD-0001,,x"),
            vec!["abcd-0001".to_string(), "x".to_string()]
        );
        assert!(ids_from_cmdline("console=ttyS0 lifeboat.mediax=1 lifeboat.media=").is_empty());
        assert!(ids_from_cmdline("").is_empty());
    }

    #[test]
    fn finds_the_disk_by_partition_or_whole_disk_uuid() {
        let disks = vec![
            disk("nvme0n1", "NV1", None, &[Some("1111-2222"), None]),
            disk("sda", "STICK", None, &[Some("2e25-ce26")]),
            disk("sr9", "CD", Some("2026-11-25-14-51-58-38"), &[]),
        ];
        let ids = ids_from_cmdline("lifeboat.media=2E25-CE26");
        assert_eq!(
            find(&disks, &ids),
            Some(BootMedia {
                disk: "sda".into(),
                serial: Some("STICK".into())
            })
        );
        let iso = ids_from_cmdline("lifeboat.media=FFFF-0000,2026-11-25-14-51-58-38");
        assert_eq!(find(&disks, &iso).map(|m| m.disk), Some("sr9".into()));
        assert_eq!(
            find(&disks, &ids_from_cmdline("lifeboat.media=9999-9999")),
            None
        );
        assert_eq!(find(&disks, &[]), None);
    }

    #[test]
    fn marks_only_the_medium() {
        let mut disks = vec![
            disk("nvme0n1", "NV1", None, &[Some("1111-2222")]),
            disk("sda", "STICK", None, &[Some("2E25-CE26")]),
        ];
        disks[0].boot_media = true; // stale flags are cleared
        mark_with(&mut disks, &["2e25-ce26".to_string()]);
        assert!(!disks[0].boot_media);
        assert!(disks[1].boot_media);
        mark_with(&mut disks, &[]);
        assert!(disks.iter().all(|d| !d.boot_media));
    }

    #[test]
    fn finds_a_cdrom_by_its_iso_uuid() {
        let tmp = std::env::temp_dir().join(format!("lifeboat-bootmedia-{}", std::process::id()));
        let sys = tmp.join("sys");
        let dev = tmp.join("dev");
        std::fs::create_dir_all(sys.join("block/sr0/device")).unwrap();
        std::fs::create_dir_all(sys.join("block/sr1")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(sys.join("block/sr0/size"), "4096\n").unwrap();
        std::fs::write(sys.join("block/sr1/size"), "0\n").unwrap();
        // VPD page 0x80: header (4 bytes, length at 3) then the serial.
        let mut vpd = vec![0u8, 0x80, 0, 6];
        vpd.extend_from_slice(b"CDSER1");
        std::fs::write(sys.join("block/sr0/device/vpd_pg80"), &vpd).unwrap();
        // An ISO 9660 primary volume descriptor at 32 KiB with a modification date.
        let mut iso = vec![0u8; 0x8000 + 2048];
        let pvd = &mut iso[0x8000..];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[40..48].copy_from_slice(b"LIFEBOAT");
        pvd[830..846].copy_from_slice(b"2026112514515838");
        std::fs::write(dev.join("sr0"), &iso).unwrap();
        let ids = ids_from_cmdline("lifeboat.media=ABCD-0001,2026-11-25-14-51-58-38");
        let got = find_cdrom(&sys, &dev, &ids);
        let other = find_cdrom(&sys, &dev, &["2026-11-25-14-51-58-39".to_string()]);
        std::fs::remove_dir_all(&tmp).unwrap();
        assert_eq!(
            got,
            Some(BootMedia {
                disk: "sr0".into(),
                serial: Some("CDSER1".into())
            })
        );
        assert_eq!(other, None);
    }
}
