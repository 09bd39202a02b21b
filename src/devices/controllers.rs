//! What is there but gives no disk: PCI storage controllers (class 01xx) that no driver is
//! bound to — most often because the driver is not in Lifeboat's image — and USB mass-storage
//! interfaces that never produced a block device (a bridge the kernel could not talk to, a
//! driver that gave up). `list --json` reports them as `unsupported_controllers` and the Disks
//! screen names them, so "the new machine's drive is not detected" says which controller.
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

/// Every storage controller and USB mass-storage interface under `sysfs_root` that gives no
/// disk, sorted by sysfs path.
pub fn unsupported(sysfs_root: &Path) -> Vec<Unsupported> {
    let mut out = Vec::new();
    let pci = sysfs_root.join("bus/pci/devices");
    for name in super::sysfs::list_dir(&pci) {
        let dir = pci.join(&name);
        let Some(class) = hex_attr(&dir, "class") else {
            continue;
        };
        let Ok(code) = u32::from_str_radix(&class, 16) else {
            continue;
        };
        if code >> 16 != 0x01 || driver(&dir).is_some() {
            continue;
        }
        let id = format!(
            "{}:{}",
            hex_attr(&dir, "vendor").unwrap_or_default(),
            hex_attr(&dir, "device").unwrap_or_default()
        );
        let kind = pci_storage_kind((code >> 8) as u8);
        out.push(Unsupported {
            bus: "pci".into(),
            note: format!(
                "{kind} {id} at PCI {name} has no driver in Lifeboat: its disks cannot be \
                 seen. Please report it (with this id) to the Lifeboat project; meanwhile try \
                 the firmware's AHCI/non-RAID mode if it has one."
            ),
            id,
            class: format!("{:06x}", code & 0xff_ffff),
            kind: kind.into(),
            driver: None,
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
        out.push(Unsupported {
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
    out.sort_by(|a, b| a.sysfs_path.cmp(&b.sysfs_path));
    out
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
        let u = unsupported(sys);
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
        assert!(unsupported(&sys.join("nope")).is_empty());
    }
}
