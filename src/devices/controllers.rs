//! What is there but gives no disk: PCI storage controllers (class 01xx) that no driver is
//! bound to — most often because the driver is not in Lifeboat's image — and USB mass-storage
//! interfaces that never produced a block device (a bridge the kernel could not talk to, a
//! driver that gave up): `unsupported_controllers` in `list --json`. And controllers whose
//! driver is loaded but that show no disk (a RAID controller with no logical drive configured,
//! a SAS HBA with a dead cable, an NVMe drive without a namespace): `controllers_without_disks`.
//! The Disks screen names both, so "the new machine's drive is not detected" says which
//! controller and what to check.
use super::sysfs::attr;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;

/// A controller or interface that should give disks and gives none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsupported {
    /// "pci" or "usb".
    pub bus: String,
    /// "vendor:device" (PCI) or "vendor:product" (USB), lower-case hex: what to search for.
    pub id: String,
    /// The PCI class code ("010400") or the USB interface's class, subclass and protocol
    /// ("080650"), hex.
    pub class: String,
    /// The class in words ("RAID bus controller", "USB mass storage").
    pub kind: String,
    /// The driver bound to it, if any (a USB interface can be bound and still give no disk).
    pub driver: Option<String>,
    /// The device's path inside sysfs ("/devices/pci0000:00/0000:00:05.0").
    pub sysfs_path: String,
    /// What it means, for a person.
    pub note: String,
}

/// The words for a PCI mass-storage subclass (the class code's middle byte).
fn pci_storage_kind(subclass: u8) -> &'static str {
    match subclass {
        0x00 => "SCSI storage controller",
        0x01 => "IDE controller",
        0x02 => "floppy controller",
        0x04 => "RAID bus controller",
        0x05 => "ATA controller",
        0x06 => "SATA controller",
        0x07 => "SAS controller",
        0x08 => "NVMe controller",
        0x09 => "UFS controller",
        _ => "storage controller",
    }
}

fn driver(dir: &Path) -> Option<String> {
    let l = fs::read_link(dir.join("driver")).ok()?;
    Some(l.file_name()?.to_string_lossy().into_owned())
}

fn hex_attr(dir: &Path, name: &str) -> Option<String> {
    let v = attr(dir, name)?;
    Some(v.trim_start_matches("0x").to_ascii_lowercase())
}

/// The device's path relative to the sysfs root ("/devices/...").
fn rel_path(root: &Path, dir: &Path) -> String {
    let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    fs::canonicalize(dir)
        .ok()
        .and_then(|r| {
            r.strip_prefix(&root)
                .ok()
                .map(|p| format!("/{}", p.display()))
        })
        .unwrap_or_else(|| dir.display().to_string())
}

/// Whether a `block` directory lies below `dir` (at most `depth` levels down).
pub(crate) fn has_block_below(dir: &Path, depth: u32) -> bool {
    if depth == 0 {
        return false;
    }
    let Ok(rd) = fs::read_dir(dir) else {
        return false;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        if e.file_name() == "block" || has_block_below(&e.path(), depth - 1) {
            return true;
        }
    }
    false
}

/// Whether a PCI storage controller of this subclass, with its driver loaded, is expected to
/// give at least one disk: SCSI (00), RAID (04), SAS (07), NVMe (08). IDE, ATA and SATA
/// controllers are left out: all their ports are often empty (a desktop whose only disk is
/// NVMe still has its AHCI controller), so no disk there is normal.
fn expects_disks(subclass: u8) -> bool {
    matches!(subclass, 0x00 | 0x04 | 0x07 | 0x08)
}

/// The real paths of every block device the kernel shows (`block/*` resolved), hidden NVMe
/// path devices included.
fn block_paths(sysfs_root: &Path) -> Vec<std::path::PathBuf> {
    let block = sysfs_root.join("block");
    super::sysfs::list_dir(&block)
        .into_iter()
        .filter_map(|n| fs::canonicalize(block.join(n)).ok())
        .collect()
}

/// Whether an NVMe controller's directory holds a namespace (`nvme/nvme0/nvme0n1`, or the
/// multipath path device `nvme0c0n1` whose disk `nvme0n1` lives under the subsystem).
fn has_nvme_namespace(dir: &Path) -> bool {
    let ctrls = dir.join("nvme");
    super::sysfs::list_dir(&ctrls).into_iter().any(|c| {
        super::sysfs::list_dir(&ctrls.join(&c))
            .iter()
            .any(|n| n.starts_with(c.as_str()) && n[c.len()..].contains('n'))
    })
}

/// Whether the PCI device at `dir` has a disk below it: one of the block devices `blocks`
/// (real paths), or an NVMe namespace.
fn gives_disk(dir: &Path, blocks: &[std::path::PathBuf]) -> bool {
    let Ok(real) = fs::canonicalize(dir) else {
        // Unreadable: not reported as a controller without disks.
        return true;
    };
    blocks.iter().any(|b| b.starts_with(&real)) || has_nvme_namespace(dir)
}

/// The controllers that give no disk, found in one walk of the PCI (and USB) devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoDisks {
    /// Storage controllers without a driver and USB mass-storage interfaces without a disk
    /// (`unsupported_controllers`).
    pub unsupported: Vec<Unsupported>,
    /// Storage controllers whose driver is loaded but that give no disk, for the classes
    /// where that is not normal ([`expects_disks`]) (`controllers_without_disks`).
    pub without_disks: Vec<Unsupported>,
}

/// Every PCI storage controller under `sysfs_root` that gives no disk — no driver bound, or a
/// driver but no block device below it in sysfs (for the classes where that is not normal:
/// [`expects_disks`]) — and every USB mass-storage interface without a disk; each list sorted
/// by sysfs path. Read after the boot's disk scan has settled, so a controller still scanning
/// its bus is not caught half way.
pub fn scan(sysfs_root: &Path) -> NoDisks {
    let mut found = NoDisks::default();
    let blocks = block_paths(sysfs_root);
    let pci = sysfs_root.join("bus/pci/devices");
    for name in super::sysfs::list_dir(&pci) {
        let dir = pci.join(&name);
        let Some(class) = hex_attr(&dir, "class") else {
            continue;
        };
        let Ok(code) = u32::from_str_radix(&class, 16) else {
            continue;
        };
        if code >> 16 != 0x01 {
            continue;
        }
        let subclass = (code >> 8) as u8;
        let drv = driver(&dir);
        let (list, note) = match &drv {
            None => (&mut found.unsupported, None),
            Some(d) if expects_disks(subclass) && !gives_disk(&dir, &blocks) => {
                (&mut found.without_disks, Some(d))
            }
            Some(_) => continue,
        };
        let id = format!(
            "{}:{}",
            hex_attr(&dir, "vendor").unwrap_or_default(),
            hex_attr(&dir, "device").unwrap_or_default()
        );
        let kind = pci_storage_kind(subclass);
        let note = match note {
            None => format!(
                "{kind} {id} at PCI {name} has no driver in Lifeboat: its disks cannot be \
                 seen. Please report it (with this id) to the Lifeboat project; meanwhile try \
                 the firmware's AHCI/non-RAID mode if it has one."
            ),
            Some(drv) if subclass == 0x08 => format!(
                "{kind} {id} at PCI {name}: driver {drv} loaded, no namespace found: the drive \
                 has no namespace (an interrupted format or sanitize can leave it so) or did \
                 not start (the kernel log says why: `dmesg`)."
            ),
            Some(drv) => format!(
                "{kind} {id} at PCI {name}: driver {drv} loaded, no disk found behind it: check \
                 the controller's own setup (logical drives: a RAID controller shows only the \
                 volumes configured in its setup utility) or cables and drive power."
            ),
        };
        list.push(Unsupported {
            bus: "pci".into(),
            note,
            id,
            class: format!("{:06x}", code & 0xff_ffff),
            kind: kind.into(),
            driver: drv,
            sysfs_path: rel_path(sysfs_root, &dir),
        });
    }
    let usb = sysfs_root.join("bus/usb/devices");
    for name in super::sysfs::list_dir(&usb) {
        // Interfaces are "bus-port:config.interface"; devices have no colon.
        if !name.contains(':') {
            continue;
        }
        let dir = usb.join(&name);
        if hex_attr(&dir, "bInterfaceClass").as_deref() != Some("08") {
            continue;
        }
        if has_block_below(&dir, 8) {
            continue;
        }
        let parent = dir.join("..");
        let id = format!(
            "{}:{}",
            attr(&parent, "idVendor").unwrap_or_default(),
            attr(&parent, "idProduct").unwrap_or_default()
        );
        let class = format!(
            "08{}{}",
            hex_attr(&dir, "bInterfaceSubClass").unwrap_or_else(|| "00".into()),
            hex_attr(&dir, "bInterfaceProtocol").unwrap_or_else(|| "00".into())
        );
        let drv = driver(&dir);
        let why = match &drv {
            None => "no driver took it".to_string(),
            Some(d) => format!("{d} is bound but no disk appeared"),
        };
        found.unsupported.push(Unsupported {
            bus: "usb".into(),
            note: format!(
                "USB mass-storage device {id} (interface {name}): {why}. Unplug it and plug it \
                 in again, try another port or cable; some enclosures need \
                 usb-storage.quirks={id}:u (README: kernel parameters)."
            ),
            id,
            class,
            kind: "USB mass storage".into(),
            driver: drv,
            sysfs_path: rel_path(sysfs_root, &dir),
        });
    }
    found
        .unsupported
        .sort_by(|a, b| a.sysfs_path.cmp(&b.sysfs_path));
    found
        .without_disks
        .sort_by(|a, b| a.sysfs_path.cmp(&b.sysfs_path));
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(p: &Path, v: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, v).unwrap();
    }

    /// A PCI function under `devices/pci0000:00` with its `bus/pci/devices` link.
    fn pci(sys: &Path, slot: &str, class: &str, vendor: &str, device: &str, drv: Option<&str>) {
        let dir = sys.join("devices/pci0000:00").join(slot);
        write(&dir.join("class"), &format!("{class}\n"));
        write(&dir.join("vendor"), &format!("{vendor}\n"));
        write(&dir.join("device"), &format!("{device}\n"));
        if let Some(d) = drv {
            let dd = sys.join("bus/pci/drivers").join(d);
            fs::create_dir_all(&dd).unwrap();
            symlink(&dd, dir.join("driver")).unwrap();
        }
        fs::create_dir_all(sys.join("bus/pci/devices")).unwrap();
        symlink(&dir, sys.join("bus/pci/devices").join(slot)).unwrap();
    }

    #[test]
    fn pci_storage_without_driver_and_silent_usb_storage() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        // An AHCI controller with its driver, a MegaRAID without one, a NIC without one.
        pci(
            sys,
            "0000:00:1f.2",
            "0x010601",
            "0x8086",
            "0x2922",
            Some("ahci"),
        );
        pci(sys, "0000:00:05.0", "0x010400", "0x1000", "0x0079", None);
        pci(sys, "0000:00:06.0", "0x020000", "0x8086", "0x100e", None);
        // USB: a stick whose disk appeared, one bound to usb-storage without a disk, a keyboard.
        let hub = sys.join("devices/pci0000:00/0000:00:14.0/usb1");
        for (port, vid, pid, class, drv, disk) in [
            ("1-1", "0781", "5567", "08", Some("usb-storage"), true),
            ("1-2", "152d", "0578", "08", Some("uas"), false),
            ("1-3", "046d", "c31c", "03", Some("usbhid"), false),
        ] {
            let dev = hub.join(port);
            write(&dev.join("idVendor"), &format!("{vid}\n"));
            write(&dev.join("idProduct"), &format!("{pid}\n"));
            let intf = dev.join(format!("{port}:1.0"));
            write(&intf.join("bInterfaceClass"), &format!("{class}\n"));
            write(&intf.join("bInterfaceSubClass"), "06\n");
            write(&intf.join("bInterfaceProtocol"), "62\n");
            if let Some(d) = drv {
                let dd = sys.join("bus/usb/drivers").join(d);
                fs::create_dir_all(&dd).unwrap();
                symlink(&dd, intf.join("driver")).unwrap();
            }
            if disk {
                fs::create_dir_all(intf.join("host0/target0:0:0/0:0:0:0/block/sda")).unwrap();
            }
            fs::create_dir_all(sys.join("bus/usb/devices")).unwrap();
            symlink(&dev, sys.join("bus/usb/devices").join(port)).unwrap();
            symlink(
                &intf,
                sys.join("bus/usb/devices").join(format!("{port}:1.0")),
            )
            .unwrap();
        }
        let u = scan(sys).unsupported;
        assert_eq!(u.len(), 2, "{u:#?}");
        assert_eq!(u[0].bus, "pci");
        assert_eq!(u[0].id, "1000:0079");
        assert_eq!(u[0].class, "010400");
        assert_eq!(u[0].kind, "RAID bus controller");
        assert_eq!(u[0].sysfs_path, "/devices/pci0000:00/0000:00:05.0");
        assert!(u[0].note.contains("no driver in Lifeboat"), "{}", u[0].note);
        assert_eq!(u[1].bus, "usb");
        assert_eq!(u[1].id, "152d:0578");
        assert_eq!(u[1].class, "080662");
        assert_eq!(u[1].driver.as_deref(), Some("uas"));
        assert!(
            u[1].note.contains("usb-storage.quirks=152d:0578:u"),
            "{}",
            u[1].note
        );
        // No sysfs at all: nothing, no panic.
        assert_eq!(scan(&sys.join("nope")), NoDisks::default());
    }

    /// A block device `name` whose sysfs directory is `dir` (relative to `devices/`), with its
    /// `block/NAME` link as the kernel makes it.
    fn block(sys: &Path, dir: &str, name: &str) {
        let d = sys.join("devices").join(dir);
        write(&d.join("size"), "2048\n");
        fs::create_dir_all(sys.join("block")).unwrap();
        symlink(&d, sys.join("block").join(name)).unwrap();
    }

    #[test]
    fn controllers_with_a_driver_but_no_disk() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path();
        let p = "pci0000:00";
        // A MegaRAID with its driver and no logical drive: reported.
        pci(
            sys,
            "0000:00:07.0",
            "0x010400",
            "0x1000",
            "0x0079",
            Some("megaraid_sas"),
        );
        // A SAS HBA whose disk came up (sdb below it): not reported.
        pci(
            sys,
            "0000:00:08.0",
            "0x010000",
            "0x1000",
            "0x0054",
            Some("mptsas"),
        );
        block(
            sys,
            &format!(
                "{p}/0000:00:08.0/host2/port-2:0/end_device-2:0/target2:0:0/2:0:0:0/block/sdb"
            ),
            "sdb",
        );
        // An AHCI controller with every port empty: normal, not reported.
        pci(
            sys,
            "0000:00:09.0",
            "0x010601",
            "0x8086",
            "0x2922",
            Some("ahci"),
        );
        // An NVMe drive in a subsystem: its disk lives under the subsystem, only the hidden
        // path device (no block link in this fixture) under the controller: not reported.
        pci(
            sys,
            "0000:00:0a.0",
            "0x010802",
            "0x1b36",
            "0x0010",
            Some("nvme"),
        );
        fs::create_dir_all(sys.join(format!("devices/{p}/0000:00:0a.0/nvme/nvme0/nvme0c0n1")))
            .unwrap();
        block(
            sys,
            "virtual/nvme-subsystem/nvme-subsys0/nvme0n1",
            "nvme0n1",
        );
        // An NVMe drive with no namespace: reported, with its own note.
        pci(
            sys,
            "0000:00:0b.0",
            "0x010802",
            "0x144d",
            "0xa808",
            Some("nvme"),
        );
        fs::create_dir_all(sys.join(format!("devices/{p}/0000:00:0b.0/nvme/nvme1/ng1"))).unwrap();
        // A RAID controller without a driver (unsupported, not this list) and a bound NIC.
        pci(sys, "0000:00:05.0", "0x010400", "0x1000", "0x005b", None);
        pci(
            sys,
            "0000:00:06.0",
            "0x020000",
            "0x8086",
            "0x100e",
            Some("e1000"),
        );

        let w = scan(sys).without_disks;
        assert_eq!(w.len(), 2, "{w:#?}");
        assert_eq!(w[0].id, "1000:0079");
        assert_eq!(w[0].class, "010400");
        assert_eq!(w[0].kind, "RAID bus controller");
        assert_eq!(w[0].driver.as_deref(), Some("megaraid_sas"));
        assert_eq!(w[0].sysfs_path, format!("/devices/{p}/0000:00:07.0"));
        assert!(
            w[0].note
                .contains("driver megaraid_sas loaded, no disk found behind it")
                && w[0].note.contains("logical drives"),
            "{}",
            w[0].note
        );
        assert_eq!(w[1].id, "144d:a808");
        assert_eq!(w[1].kind, "NVMe controller");
        assert!(w[1].note.contains("no namespace found"), "{}", w[1].note);
        // The driverless one is still only in `unsupported`.
        let u = scan(sys).unsupported;
        assert_eq!(u.len(), 1, "{u:#?}");
        assert_eq!(u[0].id, "1000:005b");
        // Once the MegaRAID shows a disk, it leaves the list.
        block(
            sys,
            &format!("{p}/0000:00:07.0/host0/target0:2:0/0:2:0:0/block/sda"),
            "sda",
        );
        let w = scan(sys).without_disks;
        assert_eq!(w.len(), 1, "{w:#?}");
        assert_eq!(w[0].id, "144d:a808");
    }

    /// `list --json` carries both lists under their contract names.
    #[test]
    fn list_json_names_both_lists() {
        let w = Unsupported {
            bus: "pci".into(),
            id: "1000:0060".into(),
            class: "010400".into(),
            kind: "RAID bus controller".into(),
            driver: Some("megaraid_sas".into()),
            sysfs_path: "/devices/pci0000:00/0000:00:07.0".into(),
            note: "driver megaraid_sas loaded, no disk found behind it".into(),
        };
        let v: serde_json::Value =
            serde_json::from_str(&super::super::list_json_string_with(&[], &[], &[w])).unwrap();
        assert_eq!(v["devices"], serde_json::json!([]));
        assert_eq!(v["unsupported_controllers"], serde_json::json!([]));
        assert_eq!(v["controllers_without_disks"][0]["id"], "1000:0060");
        assert_eq!(v["controllers_without_disks"][0]["driver"], "megaraid_sas");
    }
}
