//! Device discovery against fake sysfs trees (one per bus the way the kernel lays them out) and
//! the selectors against the resulting inventory.
use lifeboat::devices::{resolve_in, scan, usage, Selected};
use lifeboat::ErrorKind;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

mod common;
use common::TempDir;

fn write(p: &Path, v: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, v).unwrap();
}

/// Builds `sys/devices/<devpath>/block/<name>` with its attributes, the `device` link to
/// `sys/devices/<devpath>` (or `device_rel` below the block dir), and `sys/block/<name>`.
struct Fake<'a> {
    sys: &'a Path,
    name: &'a str,
    dir: PathBuf,
}

impl<'a> Fake<'a> {
    fn disk(sys: &'a Path, devpath: &str, name: &'a str, sectors: u64, dev: &str) -> Fake<'a> {
        let dir = sys.join("devices").join(devpath).join("block").join(name);
        fs::create_dir_all(dir.join("holders")).unwrap();
        write(&dir.join("size"), &format!("{sectors}\n"));
        write(&dir.join("dev"), &format!("{dev}\n"));
        write(&dir.join("removable"), "0\n");
        write(&dir.join("ro"), "0\n");
        write(&dir.join("queue/logical_block_size"), "512\n");
        write(&dir.join("queue/physical_block_size"), "4096\n");
        write(&dir.join("queue/rotational"), "1\n");
        symlink("../..", dir.join("device")).unwrap();
        fs::create_dir_all(sys.join("block")).unwrap();
        symlink(
            format!("../devices/{devpath}/block/{name}"),
            sys.join("block").join(name),
        )
        .unwrap();
        Fake { sys, name, dir }
    }
    /// Repoints `device` to `rel` (relative to the block dir).
    fn device_link(self, rel: &str) -> Self {
        fs::remove_file(self.dir.join("device")).unwrap();
        symlink(rel, self.dir.join("device")).unwrap();
        self
    }
    fn attr(self, rel: &str, v: &str) -> Self {
        write(&self.dir.join(rel), v);
        self
    }
    fn device_attr(self, rel: &str, v: &[u8]) -> Self {
        let p = self.dir.join("device").join(rel);
        fs::create_dir_all(fs::canonicalize(self.dir.join("device")).unwrap()).unwrap();
        fs::write(p, v).unwrap();
        self
    }
    fn part(self, n: u32, start: u64, size: u64, dev: &str) -> Self {
        let pname = if self.name.chars().last().is_some_and(|c| c.is_ascii_digit()) {
            format!("{}p{n}", self.name)
        } else {
            format!("{}{n}", self.name)
        };
        let p = self.dir.join(&pname);
        write(&p.join("partition"), &format!("{n}\n"));
        write(&p.join("start"), &format!("{start}\n"));
        write(&p.join("size"), &format!("{size}\n"));
        write(&p.join("dev"), &format!("{dev}\n"));
        write(&p.join("ro"), "0\n");
        write(&p.join("uevent"), &format!("MAJOR=8\nMINOR=1\nDEVNAME={pname}\nDEVTYPE=partition\nPARTN={n}\nPARTNAME=part{n}\n"));
        fs::create_dir_all(p.join("holders")).unwrap();
        // /sys/class/block/<part> for in_use.
        let class = self.sys.join("class/block");
        fs::create_dir_all(&class).unwrap();
        let _ = symlink(fs::canonicalize(&p).unwrap(), class.join(&pname));
        self
    }
    fn class_link(self) -> Self {
        let class = self.sys.join("class/block");
        fs::create_dir_all(&class).unwrap();
        symlink(fs::canonicalize(&self.dir).unwrap(), class.join(self.name)).unwrap();
        self
    }
}

fn vpd80(serial: &str) -> Vec<u8> {
    let mut v = vec![0u8, 0x80, 0, serial.len() as u8];
    v.extend_from_slice(serial.as_bytes());
    v
}

/// A tree with one disk on each bus QEMU offers, plus things that must be skipped.
fn build_tree(root: &Path) -> (PathBuf, PathBuf) {
    let sys = root.join("sys");
    let dev = root.join("dev");
    fs::create_dir_all(&dev).unwrap();
    // AHCI SATA: .../ata1/host0/target0:0:0/0:0:0:0/block/sda, SATA link speed known.
    let ahci = "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0";
    Fake::disk(&sys, ahci, "sda", 2_097_152, "8:0")
        .device_attr("model", b"QEMU HARDDISK   \n")
        .device_attr("vendor", b"ATA     \n")
        .device_attr("vpd_pg80", &vpd80("        SATA-SER-1"))
        .device_attr(
            "wwid",
            b"t10.ATA     QEMU HARDDISK                           SATA-SER-1\n",
        )
        .part(1, 2048, 1_048_576, "8:1")
        .part(2, 1_050_624, 1_044_480, "8:2")
        .class_link();
    write(
        &sys.join("devices/pci0000:00/0000:00:1f.2/ata1/link1/ata_link/link1/sata_spd"),
        "1.5 Gbps\n",
    );
    // PATA (piix): the link exists but reports no SATA speed.
    let piix = "pci0000:00/0000:00:01.1/ata2/host1/target1:0:0/1:0:0:0";
    Fake::disk(&sys, piix, "sdb", 204_800, "8:16")
        .device_attr("model", b"OLD IDE DISK\n")
        .device_attr("vpd_pg80", &vpd80("PATA1"));
    write(
        &sys.join("devices/pci0000:00/0000:00:01.1/ata2/link2/ata_link/link2/sata_spd"),
        "<unknown>\n",
    );
    // NVMe: block dir under the controller; `device` points to the controller (nvme0).
    let nv = Fake::disk(
        &sys,
        "pci0000:00/0000:00:04.0/nvme/nvme0",
        "nvme0n1",
        4_194_304,
        "259:0",
    )
    .device_link("../../../nvme0")
    .attr("queue/rotational", "0\n")
    .attr("wwid", "eui.0011223344556677\n");
    write(
        &sys.join("devices/pci0000:00/0000:00:04.0/nvme/nvme0/model"),
        "QEMU NVMe Ctrl                          \n",
    );
    write(
        &sys.join("devices/pci0000:00/0000:00:04.0/nvme/nvme0/serial"),
        "NVME-SER-2          \n",
    );
    nv.part(1, 2048, 4096, "259:1").class_link();
    // USB storage on xhci: serial from the USB device (2-1), not the SCSI layer.
    let usbdev = "pci0000:00/0000:00:05.0/usb2/2-1";
    write(&sys.join("devices").join(usbdev).join("idVendor"), "46f4\n");
    write(
        &sys.join("devices").join(usbdev).join("serial"),
        "USB-SER-3\n",
    );
    let usb = format!("{usbdev}/2-1:1.0/host2/target2:0:0/2:0:0:0");
    Fake::disk(&sys, &usb, "sdc", 131_072, "8:32")
        .attr("removable", "1\n")
        .device_attr("model", b"QEMU HARDDISK\n")
        .device_attr("vendor", b"QEMU    \n")
        .device_attr("vpd_pg80", &vpd80("WRONG"));
    // virtio-blk: serial on the block device.
    Fake::disk(
        &sys,
        "pci0000:00/0000:00:06.0/virtio2",
        "vda",
        65_536,
        "254:0",
    )
    .device_link("../../../virtio2")
    .attr("serial", "VIRTIO-SER-4\n");
    // virtio-scsi disk: sd* under a virtio device -> scsi, serial from VPD 0x80.
    let vs = "pci0000:00/0000:00:07.0/virtio3/host3/target3:0:0/3:0:0:0";
    Fake::disk(&sys, vs, "sdd", 65_536, "8:48")
        .device_attr("model", b"QEMU HARDDISK\n")
        .device_attr("vendor", b"QEMU\n")
        .device_attr("vpd_pg80", &vpd80("SCSI-SER-5"))
        .device_attr("wwid", b"naa.5000c50012345678\n");
    // Skipped: RAM and zram disks, an empty loop, optical; kept: a bound loop, an MMC card.
    Fake::disk(&sys, "virtual", "ram0", 8192, "1:0");
    Fake::disk(&sys, "virtual", "zram0", 8192, "252:0");
    Fake::disk(&sys, "virtual", "loop0", 0, "7:0");
    Fake::disk(&sys, "virtual", "loop1", 20_480, "7:1")
        .attr("loop/backing_file", "/tmp/disk.img\n")
        .attr("queue/rotational", "0\n");
    Fake::disk(
        &sys,
        "pci0000:00/0000:00:08.0/ata3/host4/target4:0:0/4:0:0:0",
        "sr0",
        1000,
        "11:0",
    );
    Fake::disk(
        &sys,
        "pci0000:00/0000:00:09.0/mmc_host/mmc0/mmc0:0001",
        "mmcblk0",
        30_535_680,
        "179:0",
    )
    .device_link("../../../mmc0:0001")
    .device_attr("name", b"SD32G\n")
    .device_attr("serial", b"0x1234abcd\n");
    // Its hardware boot partitions (read-only by default, as the kernel keeps them) and the
    // replay-protected block (a block device on older kernels).
    for (name, devno, force_ro) in [
        ("mmcblk0boot0", "179:8", "1\n"),
        ("mmcblk0boot1", "179:16", "0\n"),
        ("mmcblk0rpmb", "179:24", "1\n"),
    ] {
        Fake::disk(
            &sys,
            "pci0000:00/0000:00:09.0/mmc_host/mmc0/mmc0:0001",
            name,
            8192,
            devno,
        )
        .device_link("../../../mmc0:0001")
        .attr("force_ro", force_ro);
    }
    (sys, dev)
}

fn disk<'a>(disks: &'a [lifeboat::devices::Disk], n: &str) -> &'a lifeboat::devices::Disk {
    disks
        .iter()
        .find(|d| d.name == n)
        .unwrap_or_else(|| panic!("{n} missing from {disks:#?}"))
}

#[test]
fn every_bus_and_serial_source() {
    let t = TempDir::new("buses");
    let (sys, dev) = build_tree(t.path());
    let disks = scan(&sys, &dev).unwrap();
    let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        ["loop1", "mmcblk0", "nvme0n1", "sda", "sdb", "sdc", "sdd", "vda"]
    );

    let sda = disk(&disks, "sda");
    assert_eq!(sda.transport, "sata");
    assert_eq!(sda.serial.as_deref(), Some("SATA-SER-1"));
    assert_eq!(sda.model.as_deref(), Some("QEMU HARDDISK"));
    assert_eq!(sda.vendor.as_deref(), Some("ATA"));
    assert_eq!(sda.wwn, None, "t10 vendor strings are not world-wide names");
    assert_eq!(sda.size_bytes, 2_097_152 * 512);
    assert_eq!(sda.dev, "8:0");
    assert_eq!(
        (sda.logical_block_size, sda.physical_block_size),
        (512, 4096)
    );
    assert!(sda.rotational && !sda.removable && !sda.read_only);
    assert_eq!(sda.path, dev.join("sda"));
    assert_eq!(sda.partitions.len(), 2);
    let p2 = &sda.partitions[1];
    assert_eq!(
        (p2.name.as_str(), p2.number, p2.start_bytes, p2.size_bytes),
        ("sda2", 2, 1_050_624 * 512, 1_044_480 * 512)
    );
    assert_eq!(p2.part_label.as_deref(), Some("part2"));
    assert_eq!(p2.path, dev.join("sda2"));
    // No /dev node to read: no table, no filesystem, no failure.
    assert_eq!(sda.partition_table, "none");
    assert_eq!(p2.fs_type, None);

    assert_eq!(disk(&disks, "sdb").transport, "ata");
    assert_eq!(disk(&disks, "sdb").serial.as_deref(), Some("PATA1"));

    let nv = disk(&disks, "nvme0n1");
    assert_eq!(nv.transport, "nvme");
    assert_eq!(nv.serial.as_deref(), Some("NVME-SER-2"));
    assert_eq!(nv.model.as_deref(), Some("QEMU NVMe Ctrl"));
    assert_eq!(nv.wwn.as_deref(), Some("eui.0011223344556677"));
    assert!(!nv.rotational);
    assert_eq!(nv.partitions[0].name, "nvme0n1p1");

    let usb = disk(&disks, "sdc");
    assert_eq!(usb.transport, "usb");
    assert_eq!(usb.serial.as_deref(), Some("USB-SER-3"));
    assert!(usb.removable);

    let vda = disk(&disks, "vda");
    assert_eq!(vda.transport, "virtio");
    assert_eq!(vda.serial.as_deref(), Some("VIRTIO-SER-4"));
    assert_eq!(vda.model, None);

    let sdd = disk(&disks, "sdd");
    assert_eq!(sdd.transport, "scsi");
    assert_eq!(sdd.serial.as_deref(), Some("SCSI-SER-5"));
    assert_eq!(sdd.wwn.as_deref(), Some("naa.5000c50012345678"));

    let l = disk(&disks, "loop1");
    assert_eq!(l.transport, "loop");
    assert_eq!(l.backing_file.as_deref(), Some("/tmp/disk.img"));

    let m = disk(&disks, "mmcblk0");
    assert_eq!(m.transport, "mmc");
    assert_eq!(m.model.as_deref(), Some("SD32G"));
    assert_eq!(m.serial.as_deref(), Some("0x1234abcd"));
    // The boot partitions are named under their card (not disks of their own), rpmb nowhere.
    let b: Vec<(&str, u64, bool, &str)> = m
        .mmc_boot_partitions
        .iter()
        .map(|b| (b.name.as_str(), b.size_bytes, b.read_only, b.dev.as_str()))
        .collect();
    assert_eq!(
        b,
        [
            ("mmcblk0boot0", 8192 * 512, true, "179:8"),
            ("mmcblk0boot1", 8192 * 512, false, "179:16")
        ]
    );
    assert_eq!(m.mmc_boot_partitions[0].path, dev.join("mmcblk0boot0"));
    assert!(lifeboat::devices::table(&disks)
        .contains("eMMC boot partitions mmcblk0boot0, mmcblk0boot1 not included"));
    // A clone or image of the card says so.
    let note = m.mmc_boot_note().unwrap();
    assert!(
        note.contains("(mmcblk0boot0, mmcblk0boot1) are separate devices"),
        "{note}"
    );
    assert!(
        note.contains("--mmc-boot-partitions clone mmcblk0boot0"),
        "{note}"
    );
    assert_eq!(disk(&disks, "sda").mmc_boot_note(), None);
}

/// Asked for (`--mmc-boot-partitions`), eMMC boot partitions are disks of their own, with a
/// note saying what they are (and how to make a read-only one writable); the replay-protected
/// block never is. A selector then finds them.
#[test]
fn mmc_boot_partitions_only_when_asked() {
    let t = TempDir::new("mmcboot");
    let (sys, dev) = build_tree(t.path());
    let opts = lifeboat::devices::ScanOptions {
        mmc_boot_as_disks: true,
    };
    let disks = lifeboat::devices::scan_with(&sys, &dev, opts).unwrap();
    let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "loop1",
            "mmcblk0",
            "mmcblk0boot0",
            "mmcblk0boot1",
            "nvme0n1",
            "sda",
            "sdb",
            "sdc",
            "sdd",
            "vda"
        ]
    );
    let b0 = disk(&disks, "mmcblk0boot0");
    assert_eq!(b0.transport, "mmc");
    assert_eq!(b0.size_bytes, 8192 * 512);
    let note = b0.note.as_deref().unwrap();
    assert!(note.contains("boot partition of mmcblk0"), "{note}");
    assert!(
        note.contains("echo 0 > /sys/block/mmcblk0boot0/force_ro"),
        "{note}"
    );
    let note1 = disk(&disks, "mmcblk0boot1").note.clone().unwrap();
    assert!(!note1.contains("force_ro"), "boot1 is writable: {note1}");
    assert!(matches!(
        resolve_in("mmcblk0boot1", &disks).unwrap(),
        Selected::Disk(d) if d.name == "mmcblk0boot1"
    ));
    assert!(resolve_in("mmcblk0rpmb", &disks).is_err());
    // Without the option, neither is a disk to select.
    let plain = scan(&sys, &dev).unwrap();
    assert!(resolve_in("mmcblk0boot0", &plain).is_err());
}

#[test]
fn json_contract_fields() {
    let t = TempDir::new("json");
    let (sys, dev) = build_tree(t.path());
    let disks = scan(&sys, &dev).unwrap();
    let v = lifeboat::devices::list_json(&disks);
    let s: serde_json::Value =
        serde_json::from_str(&lifeboat::devices::list_json_string(&disks)).unwrap();
    assert_eq!(v, s);
    let devs = v["devices"].as_array().unwrap();
    for d in devs {
        for k in [
            "name",
            "path",
            "size_bytes",
            "logical_block_size",
            "physical_block_size",
            "model",
            "vendor",
            "serial",
            "wwn",
            "transport",
            "removable",
            "rotational",
            "read_only",
            "partition_table",
            "boot_media",
            "partitions",
            "dev",
        ] {
            assert!(d.get(k).is_some(), "{k} missing in {d}");
        }
        assert_eq!(d["boot_media"], false);
        for p in d["partitions"].as_array().unwrap() {
            for k in [
                "name",
                "number",
                "start_bytes",
                "size_bytes",
                "fs_type",
                "label",
                "uuid",
            ] {
                assert!(p.get(k).is_some(), "{k} missing in {p}");
            }
        }
    }
    // Round trip through Deserialize.
    let back: Vec<lifeboat::devices::Disk> = serde_json::from_value(v["devices"].clone()).unwrap();
    assert_eq!(back, disks);
}

#[test]
fn selectors() {
    let t = TempDir::new("sel");
    let (sys, dev) = build_tree(t.path());
    let mut disks = scan(&sys, &dev).unwrap();
    // Labels and UUIDs as probing would have set them.
    disks
        .iter_mut()
        .find(|d| d.name == "sda")
        .unwrap()
        .partitions[0]
        .label = Some("EFI".into());
    disks
        .iter_mut()
        .find(|d| d.name == "sda")
        .unwrap()
        .partitions[1]
        .uuid = Some("0b7f3a5e-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into());
    disks
        .iter_mut()
        .find(|d| d.name == "nvme0n1")
        .unwrap()
        .partitions[0]
        .label = Some("DATA".into());

    let name = |s: &str| resolve_in(s, &disks).map(|x| x.name());
    assert_eq!(name("sda").unwrap(), "sda");
    assert_eq!(name("sda2").unwrap(), "sda2");
    assert_eq!(name("nvme0n1").unwrap(), "nvme0n1");
    assert_eq!(name("serial=USB-SER-3").unwrap(), "sdc");
    assert_eq!(name("SERIAL=VIRTIO-SER-4").unwrap(), "vda");
    assert_eq!(name("label=EFI").unwrap(), "sda1");
    assert_eq!(
        name("uuid=0B7F3A5E-1C2D-4E5F-8A9B-0C1D2E3F4A5B").unwrap(),
        "sda2"
    );
    assert_eq!(name("model=QEMU NVMe Ctrl").unwrap(), "nvme0n1");
    assert_eq!(name("partlabel=part2").unwrap(), "sda2");
    match resolve_in("label=DATA", &disks).unwrap() {
        Selected::Partition { disk, part } => {
            assert_eq!(disk.name, "nvme0n1");
            assert_eq!(part.number, 1);
        }
        other => panic!("{other:?}"),
    }

    // Unknown: NotFound, and the message lists what is there.
    let e = resolve_in("serial=NOPE", &disks).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(
        e.msg.contains("serial=USB-SER-3") && e.msg.contains("sda") && e.msg.contains("label=EFI"),
        "{}",
        e.msg
    );
    let e = resolve_in("sdz", &disks).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.msg.contains("nvme0n1"), "{}", e.msg);
    assert_eq!(
        resolve_in("/dev/lifeboat-no-such-disk", &disks)
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        resolve_in("label=", &disks).unwrap_err().kind,
        ErrorKind::InvalidInput
    );
    assert_eq!(
        resolve_in("", &disks).unwrap_err().kind,
        ErrorKind::InvalidInput
    );
    // Ambiguous: the same model on two disks.
    let e = resolve_in("model=QEMU HARDDISK", &disks).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidInput);
    assert!(
        e.msg.contains("sda") && e.msg.contains("sdc") && e.msg.contains("sdd"),
        "{}",
        e.msg
    );

    // A regular file is a disk image.
    let img = t.path().join("disk.img");
    fs::write(&img, [0u8; 512]).unwrap();
    assert_eq!(
        resolve_in(img.to_str().unwrap(), &disks).unwrap(),
        Selected::File(img.clone())
    );
    // A directory is neither.
    assert_eq!(
        resolve_in(t.path().to_str().unwrap(), &disks)
            .unwrap_err()
            .kind,
        ErrorKind::InvalidInput
    );
}

#[test]
fn holders_mounts_and_swap() {
    let t = TempDir::new("use");
    let (sys, _dev) = build_tree(t.path());
    fs::create_dir_all(sys.join("block/sda/sda2/holders/md0")).unwrap();
    let mounts = usage::parse_mountinfo(
        "40 1 8:1 / /mnt/efi rw - vfat /dev/sda1 rw\n41 1 8:17 / /x rw - ext4 /dev/sdb1 rw\n",
    );
    let swaps = "Filename\tType\tSize\tUsed\tPriority\n/dev/nvme0n1p1 partition 1024 0 -2\n";
    let r = usage::in_use_at(&sys, &mounts, swaps, "sda");
    assert_eq!(
        r,
        ["sda1 is mounted on /mnt/efi (vfat)", "sda2 is held by md0"]
    );
    assert_eq!(
        usage::in_use_at(&sys, &mounts, swaps, "sda1"),
        ["sda1 is mounted on /mnt/efi (vfat)"]
    );
    assert_eq!(
        usage::in_use_at(&sys, &mounts, swaps, "nvme0n1"),
        ["nvme0n1p1 is in use as swap (/dev/nvme0n1p1)"]
    );
    assert!(usage::in_use_at(&sys, &mounts, swaps, "vda").is_empty());
}

/// An NVMe subsystem with one controller and two namespaces, laid out as Linux does with native
/// multipath: the namespaces (`nvme1n1`, `nvme1n2`) under the subsystem device, which carries
/// model and serial; the controller's hidden paths (`nvme1c1n1`, `nvme1c1n2`, `hidden` = 1)
/// under the PCI controller.
fn nvme_subsystem_tree(root: &Path) -> (PathBuf, PathBuf) {
    let sys = root.join("sys");
    let dev = root.join("dev");
    fs::create_dir_all(&dev).unwrap();
    let subsys = "virtual/nvme-subsystem/nvme-subsys1";
    write(
        &sys.join("devices").join(subsys).join("model"),
        "QEMU NVMe Ctrl                          \n",
    );
    write(
        &sys.join("devices").join(subsys).join("serial"),
        "LB-NVSUB            \n",
    );
    let ids = [
        (1, "00 11 22 33 44 55 66 77", "0.0.0.0", "259:0"),
        (
            2,
            "00 00 00 00 00 00 00 00",
            "5254000e-a1b2-c3d4-0000-000000000002",
            "259:2",
        ),
    ];
    for (ns, eui, nguid, devno) in ids {
        let name = format!("nvme1n{ns}");
        let f = Fake::disk(&sys, subsys, &name, 65_536 * ns, devno)
            .device_link("../../../nvme-subsys1")
            .attr("nsid", &format!("{ns}\n"))
            .attr("eui", &format!("{eui}\n"))
            .attr("nguid", &format!("{nguid}\n"))
            .attr("queue/rotational", "0\n");
        let f = if ns == 1 {
            f.attr("wwid", "eui.0011223344556677\n")
        } else {
            f.attr("wwid", "eui.5254000ea1b2c3d40000000000000002\n")
        };
        f.class_link();
        let path = format!("nvme1c1n{ns}");
        Fake::disk(
            &sys,
            "pci0000:00/0000:00:04.0/nvme/nvme1",
            &path,
            65_536 * ns,
            "0:0",
        )
        .device_link("../../../nvme1")
        .attr("hidden", "1\n")
        .attr("nsid", &format!("{ns}\n"));
    }
    write(
        &sys.join("devices/pci0000:00/0000:00:04.0/nvme/nvme1/serial"),
        "LB-NVSUB            \n",
    );
    (sys, dev)
}

#[test]
fn nvme_namespaces_listed_once_each_and_serial_is_ambiguous() {
    let t = TempDir::new("nvme-ns");
    let (sys, dev) = nvme_subsystem_tree(t.path());
    let disks = scan(&sys, &dev).unwrap();
    let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        ["nvme1n1", "nvme1n2"],
        "the hidden paths are skipped"
    );
    let n1 = disk(&disks, "nvme1n1");
    let n2 = disk(&disks, "nvme1n2");
    for (d, ns) in [(n1, 1), (n2, 2)] {
        assert_eq!(d.transport, "nvme");
        assert_eq!(d.serial.as_deref(), Some("LB-NVSUB"));
        assert_eq!(d.model.as_deref(), Some("QEMU NVMe Ctrl"));
        assert_eq!(d.nsid, Some(ns));
    }
    assert_eq!(n1.eui64.as_deref(), Some("0011223344556677"));
    assert_eq!(n1.nguid, None, "an all-zero NGUID is not reported");
    assert_eq!(n2.eui64, None);
    assert_eq!(
        n2.nguid.as_deref(),
        Some("5254000ea1b2c3d40000000000000002")
    );
    assert_eq!(n2.size_bytes, 2 * 65_536 * 512);
    let v = lifeboat::devices::list_json(&disks);
    assert_eq!(v["devices"][1]["nsid"], 2);
    assert_eq!(v["devices"][0]["eui64"], "0011223344556677");

    // serial= names the controller, not a namespace: an error naming both, never a guess.
    let e = resolve_in("serial=LB-NVSUB", &disks).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidInput);
    let m = e.to_string();
    assert!(
        m.contains("nvme1n1 (32.0 MiB, namespace 1, wwn=eui.0011223344556677)")
            && m.contains(
                "nvme1n2 (64.0 MiB, namespace 2, wwn=eui.5254000ea1b2c3d40000000000000002)"
            ),
        "{m}"
    );
    // wwn= (as listed, or the bare EUI-64 / NGUID) and the kernel name pick one.
    for sel in [
        "wwn=eui.5254000ea1b2c3d40000000000000002",
        "wwn=5254000EA1B2C3D40000000000000002",
        "nvme1n2",
    ] {
        match resolve_in(sel, &disks).unwrap() {
            Selected::Disk(d) => assert_eq!(d.name, "nvme1n2", "{sel}"),
            other => panic!("{sel}: {other:?}"),
        }
    }
    match resolve_in("wwn=0011223344556677", &disks).unwrap() {
        Selected::Disk(d) => assert_eq!(d.name, "nvme1n1"),
        other => panic!("{other:?}"),
    }
}
