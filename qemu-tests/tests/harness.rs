//! The harness itself against real QEMU, without the Lifeboat artefacts: QEMU accepts the
//! command lines for every bus, block size, read-only and blkdebug disk, and the monitor works.
use lifeboat_qemu_tests::disks::{DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{Bus, DiskSpec, Faults, SerialMode, TempDir, Vm, VmSpec};
use std::path::Path;
use std::time::Duration;

#[test]
fn qemu_accepts_every_disk_kind() {
    let t = TempDir::new("harness").unwrap();
    let img = |n: &str| {
        let p = t.join(n);
        DiskBuilder::new(16, Table::Gpt)
            .part(Part::new(8, Fs::Blank))
            .build(&p)
            .unwrap();
        p
    };
    let faults = Faults::new().bad_bytes(4096, 512).transient_sector(100);
    faults.write(&t.join("bd.conf")).unwrap();
    let disks = vec![
        DiskSpec::new(img("v.img"), Bus::Virtio, "H-VIRTIO")
            .blkdebug(t.join("bd.conf"))
            .read_only(),
        DiskSpec::new(img("s.img"), Bus::Sata, "H-SATA").model("H SATA"),
        DiskSpec::new(img("n.img"), Bus::Nvme, "H-NVME").block_size(4096, 4096),
        DiskSpec::new(img("u.img"), Bus::Usb, "H-USB").removable(),
        DiskSpec::new(img("c.img"), Bus::Scsi, "H-SCSI")
            .model("H SCSI")
            .block_size(512, 4096),
    ];
    let mut spec = VmSpec::new(
        Path::new("/unused"),
        Path::new("/unused"),
        SerialMode::Terminal,
    );
    spec.kernel = None;
    spec.initrd = None;
    spec.disks = disks;
    spec.extra = vec!["-S".into()]; // never run the guest: this checks QEMU's configuration only
    let mut vm = Vm::start("harness-disks", spec).unwrap();
    let blocks = vm.check(vm.monitor("info block"));
    for n in 0..5 {
        assert!(
            blocks.contains(&format!("d{n}")),
            "drive d{n} missing:\n{blocks}"
        );
    }
    assert!(blocks.contains("blkdebug"), "{blocks}");
    let tree = vm.check(vm.monitor("info qtree"));
    for serial in ["H-VIRTIO", "H-SATA", "H-NVME", "H-USB", "H-SCSI"] {
        assert!(tree.contains(serial), "{serial} missing in qtree");
    }
    vm.check(vm.monitor("quit").map(|_| ()));
    let exit = vm.wait_exit(Duration::from_secs(20));
    vm.check(exit);
}
