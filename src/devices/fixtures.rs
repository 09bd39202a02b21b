//! Test fixtures: disks and partitions as the inventory would report them (tests of devices,
//! bootmedia, clone safety and the TUI build their disks from these).
use crate::devices::{Disk, Partition};
use std::path::PathBuf;

pub fn disk(name: &str, size: u64, partitions: Vec<Partition>) -> Disk {
    Disk {
        name: name.into(),
        path: PathBuf::from(format!("/dev/{name}")),
        dev: "8:0".into(),
        size_bytes: size,
        logical_block_size: 512,
        physical_block_size: 512,
        model: Some(format!("MODEL {}", name.to_uppercase())),
        vendor: None,
        serial: Some(format!("SN-{}", name.to_uppercase())),
        wwn: None,
        nsid: None,
        eui64: None,
        nguid: None,
        transport: if name.starts_with("nvme") {
            "nvme".into()
        } else {
            "sata".into()
        },
        removable: false,
        rotational: false,
        read_only: false,
        partition_table: if partitions.is_empty() {
            "none".into()
        } else {
            "gpt".into()
        },
        partition_table_uuid: None,
        boot_media: false,
        fs_type: None,
        label: None,
        uuid: None,
        role: None,
        note: None,
        holders: vec![],
        mounted: vec![],
        backing_file: None,
        sysfs_path: String::new(),
        partitions,
        mmc_boot_partitions: vec![],
        health: None,
    }
}

pub fn part(name: &str, start: u64, size: u64, fs: &str, label: &str) -> Partition {
    let number = name
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>();
    let number: String = number.chars().rev().collect();
    Partition {
        name: name.into(),
        number: number.parse().unwrap_or(1),
        path: PathBuf::from(format!("/dev/{name}")),
        dev: "8:1".into(),
        start_bytes: start,
        size_bytes: size,
        fs_type: if fs.is_empty() { None } else { Some(fs.into()) },
        label: if label.is_empty() {
            None
        } else {
            Some(label.into())
        },
        uuid: None,
        role: None,
        note: None,
        part_label: None,
        read_only: false,
        holders: vec![],
        mounted: vec![],
    }
}

/// A small machine: a failing SATA disk with Windows-like partitions, an empty NVMe, a USB stick
/// Lifeboat booted from, and a too-small disk.
pub fn machine() -> Vec<Disk> {
    let mut sda = disk(
        "sda",
        500 << 30,
        vec![
            part("sda1", 1 << 20, 100 << 20, "vfat", "EFI"),
            part("sda2", 101 << 20, 16 << 20, "", ""),
            part("sda3", 117 << 20, 400 << 30, "ntfs", "Windows"),
            part(
                "sda4",
                (117 << 20) + (400 << 30),
                600 << 20,
                "ntfs",
                "Recovery",
            ),
        ],
    );
    sda.model = Some("WDC WD5000AAKX-00ERMA0".into());
    sda.serial = Some("WD-WCC2EAK80291".into());
    sda.rotational = true;
    let mut nvme = disk("nvme0n1", 1000 << 30, vec![]);
    nvme.model = Some("Samsung SSD 970 EVO 1TB".into());
    nvme.serial = Some("S467NX0M512345".into());
    let mut usb = disk(
        "sdb",
        8 << 30,
        vec![part(
            "sdb1",
            1 << 20,
            (8 << 30) - (2 << 20),
            "vfat",
            "LIFEBOAT",
        )],
    );
    usb.transport = "usb".into();
    usb.removable = true;
    usb.boot_media = true;
    usb.model = Some("SanDisk Cruzer Blade".into());
    usb.serial = Some("4C530001231114115123".into());
    let mut small = disk(
        "sdc",
        120 << 30,
        vec![part(
            "sdc1",
            1 << 20,
            (120 << 30) - (2 << 20),
            "ext4",
            "backup",
        )],
    );
    small.model = Some("KINGSTON SA400S37120G".into());
    small.serial = Some("50026B7782A1B2C3".into());
    // Health as Lifeboat reads it: the old SATA disk has a few reallocated sectors (worn; the
    // TUI tests make it FAILING where they need that), the NVMe and the small SSD are healthy,
    // the USB stick cannot report.
    let mut worn = crate::health::ata::tests::healthy();
    worn.smart = Some(crate::health::ata::tests::smart_page(&[
        (5, 0x33, 199, 199, 8),
        (9, 0x32, 80, 80, 14_020),
        (197, 0x32, 200, 200, 0),
        (198, 0x30, 200, 200, 0),
    ]));
    sda.health = Some(crate::health::ata::classify(&worn));
    nvme.health = Some(crate::health::nvme::classify(
        &crate::health::nvme::tests::page(0, 309, 100, 10, 3, 5_312, 61, 0),
    ));
    usb.health = Some(crate::health::Health::unknown(
        "the USB bridge does not pass ATA commands through (no SAT), so SMART cannot be read",
    ));
    small.health = Some(crate::health::ata::classify(
        &crate::health::ata::tests::healthy(),
    ));
    vec![sda, nvme, usb, small]
}
