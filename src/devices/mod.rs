//! Disk discovery through sysfs: every whole disk, its identity and its partitions, and the
//! selectors (`/dev/sda`, `sda`, `serial=X`, `label=L`, `uuid=U`, a file) every command uses.
//! The inventory is classified by its children: `usage` (mounted, swap, held) and `bootmedia`
//! (the disk Lifeboat booted from); `layers` names LVM, RAID, encrypted and pooled storage.
pub mod bootmedia;
pub mod controllers;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod layers;
pub mod probe;
pub mod select;
pub mod sysfs;
pub mod usage;

pub use probe::{probe_fs, FsInfo};
pub use select::{inventory, lookup_dev, resolve_in};
pub use sysfs::{mmc_boot_as_disks, scan, scan_with, set_mmc_boot_as_disks, ScanOptions};
pub use usage::in_use;

use crate::error::Result;
use crate::jobs::fmt_bytes;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole disk (not a partition) as `lifeboat list --json` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// Kernel name: "sda", "nvme0n1", "vda", "mmcblk0", "loop3".
    pub name: String,
    /// The device node ("/dev/sda").
    pub path: PathBuf,
    /// "MAJ:MIN".
    pub dev: String,
    pub size_bytes: u64,
    pub logical_block_size: u32,
    pub physical_block_size: u32,
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub serial: Option<String>,
    /// A world-wide name (NAA/EUI-64/NGUID) when the device reports one.
    pub wwn: Option<String>,
    /// NVMe: the namespace id (a controller may have several namespaces, each a disk with the
    /// controller's serial: serial + nsid name one).
    #[serde(default)]
    pub nsid: Option<u32>,
    /// NVMe: the namespace's IEEE EUI-64 (16 hex digits) when it reports one.
    #[serde(default)]
    pub eui64: Option<String>,
    /// NVMe: the namespace's NGUID (32 hex digits) when it reports one.
    #[serde(default)]
    pub nguid: Option<String>,
    /// "sata", "ata", "nvme", "usb", "scsi", "virtio", "mmc", "xen", "loop" or "unknown".
    pub transport: String,
    pub removable: bool,
    pub rotational: bool,
    pub read_only: bool,
    /// "gpt", "mbr" or "none".
    pub partition_table: String,
    /// GPT disk GUID or MBR disk signature, as blkid's PTUUID.
    pub partition_table_uuid: Option<String>,
    /// Whether Lifeboat booted from this disk (set by the boot-media code).
    pub boot_media: bool,
    /// A filesystem on the whole disk (no partition table): type, label, UUID.
    pub fs_type: Option<String>,
    pub label: Option<String>,
    pub uuid: Option<String>,
    /// What the whole disk is when it is a layer under other storage (an IMSM or md RAID
    /// member, a dynamic disk, …; `devices::layers`), else None.
    #[serde(default)]
    pub role: Option<layers::Role>,
    /// For a layered disk: what it is and what Lifeboat does with it, for a person.
    #[serde(default)]
    pub note: Option<String>,
    /// Block devices stacked on this disk (md, dm).
    pub holders: Vec<String>,
    /// Where the whole disk is mounted (partitions have their own list).
    pub mounted: Vec<String>,
    /// For loop devices: the file behind it.
    pub backing_file: Option<String>,
    /// The device's path inside sysfs ("/devices/pci0000:00/.../block/sda").
    pub sysfs_path: String,
    pub partitions: Vec<Partition>,
    /// eMMC: the card's hardware boot partitions (`mmcblk0boot0`, `mmcblk0boot1`). They are
    /// separate block devices, not part of this disk: a clone or image of it does not copy
    /// them. Listed as disks of their own only with `--mmc-boot-partitions`; the
    /// replay-protected block (`rpmb`) never.
    #[serde(default)]
    pub mmc_boot_partitions: Vec<MmcBootPartition>,
    /// The drive's health (`crate::health`), when it was read: `list --json` always reads it;
    /// a plain inventory scan leaves it out (None).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::Health>,
}

/// A partition of a [`Disk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    /// Kernel name: "sda1", "nvme0n1p2".
    pub name: String,
    /// Partition number in the table.
    pub number: u32,
    pub path: PathBuf,
    /// "MAJ:MIN".
    pub dev: String,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// From the filesystem's own superblock ("ext4", "vfat", ...); None when unknown.
    pub fs_type: Option<String>,
    pub label: Option<String>,
    pub uuid: Option<String>,
    /// What the partition is when it is a layer under other storage (LVM PV, RAID member, LUKS,
    /// BitLocker, ZFS, APFS, Storage Spaces, LDM; `devices::layers`), else None.
    #[serde(default)]
    pub role: Option<layers::Role>,
    /// For a layered partition: what it is and what Lifeboat does with it, for a person.
    #[serde(default)]
    pub note: Option<String>,
    /// The GPT partition name, when the kernel reports one.
    pub part_label: Option<String>,
    pub read_only: bool,
    pub holders: Vec<String>,
    /// Mount points of this partition on the running system.
    pub mounted: Vec<String>,
}

/// An eMMC hardware boot partition of a [`Disk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MmcBootPartition {
    /// "mmcblk0boot0".
    pub name: String,
    pub path: PathBuf,
    pub dev: String,
    pub size_bytes: u64,
    /// Read-only (the kernel keeps boot partitions read-only, `force_ro` 1, until it is set to
    /// 0 in sysfs).
    pub read_only: bool,
}

impl Disk {
    /// For an eMMC card with hardware boot partitions: the note a clone or image of it carries
    /// (they are separate devices, not copied with it, and how to copy them). None otherwise.
    pub fn mmc_boot_note(&self) -> Option<String> {
        if self.mmc_boot_partitions.is_empty() {
            return None;
        }
        let names: Vec<&str> = self
            .mmc_boot_partitions
            .iter()
            .map(|b| b.name.as_str())
            .collect();
        Some(format!(
            "the eMMC boot partitions of {} ({}) are separate devices and are not copied with it; \
             where the board boots from them, copy each as a disk of its own: `lifeboat \
             --mmc-boot-partitions clone {} TARGET`",
            self.name,
            names.join(", "),
            names[0]
        ))
    }
}

/// What a selector named. (Variants differ in size; selections are few and short-lived.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Selected {
    Disk(Disk),
    Partition {
        disk: Disk,
        part: Partition,
    },
    /// A disk-image file (host use).
    File(PathBuf),
}

impl Disk {
    /// The whole disk whose device node (or a symlink to it, `/dev/disk/by-id/...`) is `path`.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Disk> {
        select::disk_from_path(path.as_ref(), &scan_system()?)
    }

    /// The end of the last partition in bytes (0 without partitions).
    pub fn partitions_end(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| p.start_bytes.saturating_add(p.size_bytes))
            .max()
            .unwrap_or(0)
    }
}

/// The disks of the running system (`/sys`, `/dev`), with mount points filled in.
pub fn scan_system() -> Result<Vec<Disk>> {
    let mut disks = scan(Path::new("/sys"), Path::new("/dev"))?;
    let mounts = usage::system_mounts();
    for d in disks.iter_mut() {
        d.mounted = mounts
            .iter()
            .filter(|m| usage::mount_matches(m, &d.name, &d.dev))
            .map(|m| m.mount_point.clone())
            .collect();
        for p in d.partitions.iter_mut() {
            p.mounted = mounts
                .iter()
                .filter(|m| usage::mount_matches(m, &p.name, &p.dev))
                .map(|m| m.mount_point.clone())
                .collect();
        }
    }
    // The disk Lifeboat booted from (its id is on the kernel command line).
    bootmedia::mark(&mut disks);
    Ok(disks)
}

/// Resolves a selector against the running system:
/// `/dev/sda`, `/dev/disk/by-id/...`, `/dev/sda1`, a regular file (disk image), a kernel name
/// (`sda`, `nvme0n1`, `sda1`), `serial=XYZ` or `model=M` (whole disks), `label=NAME`,
/// `uuid=U` (case-insensitive), `partlabel=`, `partuuid=` (partitions).
pub fn resolve(sel: &str) -> Result<Selected> {
    // A regular file needs no inventory (and works where sysfs is missing).
    let p = Path::new(sel);
    if sel.contains('/') && p.is_file() {
        return Ok(Selected::File(p.to_path_buf()));
    }
    resolve_in(sel, &scan_system()?)
}

#[derive(clap::Args, Debug, Clone, PartialEq, Serialize)]
pub struct ListArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run_list(a: ListArgs) -> Result<i32> {
    let mut disks = scan_system()?;
    // Every disk's health, in parallel, bounded by one short deadline (a dying drive must not
    // hold up the list). The attribute table stays in `lifeboat health`.
    crate::health::fill(&mut disks, crate::health::LIST_TIMEOUT);
    for d in disks.iter_mut() {
        if let Some(h) = d.health.as_mut() {
            h.attributes.clear();
        }
    }
    let c = controllers::scan(Path::new("/sys"));
    if a.json {
        crate::out::json_line(list_json_string_with(
            &disks,
            &c.unsupported,
            &c.without_disks,
        ));
    } else {
        crate::out!("{}", table(&disks));
        crate::out!("{}", unsupported_text(&c.unsupported));
        crate::out!("{}", unsupported_text(&c.without_disks));
    }
    Ok(crate::error::exit::OK)
}

/// `list --json`'s object on one line: `{"devices":[...],"unsupported_controllers":[...],
/// "controllers_without_disks":[...]}` (no driver; a driver but no disk).
pub fn list_json_string_with(
    disks: &[Disk],
    unsupported: &[controllers::Unsupported],
    without_disks: &[controllers::Unsupported],
) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        devices: &'a [Disk],
        unsupported_controllers: &'a [controllers::Unsupported],
        controllers_without_disks: &'a [controllers::Unsupported],
    }
    serde_json::to_string(&Out {
        devices: disks,
        unsupported_controllers: unsupported,
        controllers_without_disks: without_disks,
    })
    .unwrap_or_else(|_| list_json(disks).to_string())
}

/// The controllers that give no disk, one line each after the table ("" when none).
pub fn unsupported_text(unsupported: &[controllers::Unsupported]) -> String {
    unsupported
        .iter()
        .map(|u| format!("No disks from {}: {}\n", u.sysfs_path, u.note))
        .collect()
}

/// `{"devices":[...]}` as a value.
pub fn list_json(disks: &[Disk]) -> serde_json::Value {
    serde_json::json!({ "devices": disks })
}

/// `{"devices":[...]}` on one line, fields in declaration order (easier to read than sorted).
pub fn list_json_string(disks: &[Disk]) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        devices: &'a [Disk],
    }
    serde_json::to_string(&Out { devices: disks }).unwrap_or_else(|_| list_json(disks).to_string())
}

/// The human-readable inventory table.
pub fn table(disks: &[Disk]) -> String {
    if disks.is_empty() {
        return "No disks found.\n".to_string();
    }
    let mut rows: Vec<[String; 6]> = vec![[
        "NAME".into(),
        "SIZE".into(),
        "TRANSPORT".into(),
        "TABLE/FS".into(),
        "LABEL".into(),
        "IDENTITY / UUID".into(),
    ]];
    for d in disks {
        let mut ident = Vec::new();
        if let Some(v) = &d.vendor {
            ident.push(v.clone());
        }
        if let Some(m) = &d.model {
            ident.push(m.clone());
        }
        if let Some(s) = &d.serial {
            ident.push(format!("serial={s}"));
        }
        if let Some(b) = &d.backing_file {
            ident.push(format!("file={b}"));
        }
        let mut flags = Vec::new();
        match d.health.as_ref().map(|h| h.status) {
            Some(crate::health::Status::Failing) => flags.push("health FAILING"),
            Some(crate::health::Status::Worn) => flags.push("health worn"),
            _ => {}
        }
        if d.boot_media {
            flags.push("boot media");
        }
        if d.read_only {
            flags.push("read-only");
        }
        if d.removable {
            flags.push("removable");
        }
        if !flags.is_empty() {
            ident.push(format!("[{}]", flags.join(", ")));
        }
        if !d.mounted.is_empty() {
            ident.push(format!("mounted on {}", d.mounted.join(", ")));
        }
        if let Some(r) = d.role {
            ident.push(format!("[{}]", r.hint()));
        }
        if !d.mmc_boot_partitions.is_empty() {
            let b: Vec<&str> = d
                .mmc_boot_partitions
                .iter()
                .map(|b| b.name.as_str())
                .collect();
            ident.push(format!(
                "[eMMC boot partitions {} not included: --mmc-boot-partitions lists them]",
                b.join(", ")
            ));
        }
        let table = match &d.fs_type {
            Some(fs) if d.partition_table == "none" => fs.clone(),
            _ => d.partition_table.clone(),
        };
        rows.push([
            d.name.clone(),
            fmt_bytes(d.size_bytes),
            d.transport.clone(),
            table,
            d.label.clone().unwrap_or_default(),
            ident.join(" "),
        ]);
        for (i, p) in d.partitions.iter().enumerate() {
            let branch = if i + 1 == d.partitions.len() {
                "└─"
            } else {
                "├─"
            };
            let mut info = Vec::new();
            if let Some(u) = &p.uuid {
                info.push(u.clone());
            }
            if !p.mounted.is_empty() {
                info.push(format!("mounted on {}", p.mounted.join(", ")));
            }
            if let Some(r) = p.role {
                info.push(format!("[{}]", r.hint()));
            }
            rows.push([
                format!("{branch}{}", p.name),
                fmt_bytes(p.size_bytes),
                String::new(),
                p.fs_type.clone().unwrap_or_else(|| "-".into()),
                p.label.clone().unwrap_or_default(),
                info.join(" "),
            ]);
        }
    }
    // Labels, models, serials and file names come from the devices: every cell on one line,
    // its controls escaped (a hostile label must not rewrite the table or the terminal).
    let rows: Vec<[String; 6]> = rows
        .into_iter()
        .map(|r| r.map(|c| crate::out::shown(&c).into_owned()))
        .collect();
    let mut w = [0usize; 6];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(w[i] - c.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
