//! Issue 4 in the environment: image a SATA disk onto an exFAT partition of a USB disk selected
//! by label (Lifeboat mounts it itself), then in a second boot restore that image onto a larger
//! NVMe disk; the host compares partitions byte for byte and runs the real fsck tools. A second
//! test images a SATA disk with unreadable sectors (blkdebug) and checks they are recorded.
use lifeboat_qemu_tests::check::{extract, noise, same_partitions, text, Unchanged};
use lifeboat_qemu_tests::disks::{run, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{run_param, Bus, DiskSpec, Faults, TempDir, Vm};
use serde_json::Value;
use std::time::Duration;

fn boot_result(name: &str, cmd: &str, disks: Vec<DiskSpec>) -> (Vm, Value) {
    let mut vm = Vm::boot(name, &run_param(cmd), disks).unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(Duration::from_secs(240));
    let res = vm.check(res);
    (vm, res)
}

#[test]
fn image_to_usb_exfat_then_restore_to_nvme() {
    let t = TempDir::new("image").unwrap();
    let src = t.join("sata.img");
    let built = DiskBuilder::new(96, Table::Gpt)
        .part(
            Part::new(48, Fs::Ext4)
                .label("SRCROOT")
                .name("root")
                .file("etc/hostname", "imaged\n")
                .file("data/text.txt", text(3 << 20, "the imaged disk"))
                .file("data/noise.bin", noise(2 << 20, 9)),
        )
        .part(
            Part::new(32, Fs::Vfat)
                .label("SRCFAT")
                .name("esp")
                .file("README.TXT", text(200_000, "the FAT partition")),
        )
        .build(&src)
        .unwrap_or_else(|e| panic!("{e}"));
    let usb = t.join("usb.img");
    DiskBuilder::new(96, Table::Mbr)
        .part(Part::new(88, Fs::Exfat).label("BACKUPS"))
        .build(&usb)
        .unwrap_or_else(|e| panic!("{e}"));
    let src_sha = Unchanged::record(&src);

    // Boot 1: image the SATA disk onto the USB stick's exFAT, selected by label.
    let (mut vm, res) = boot_result(
        "image-create",
        "image create serial=LB-IMG-SRC label=BACKUPS:/pc/full.lbi --json",
        vec![
            DiskSpec::new(&src, Bus::Sata, "LB-IMG-SRC"),
            DiskSpec::new(&usb, Bus::Usb, "LB-IMG-USB"),
        ],
    );
    let out = &res["output"];
    if res["exit_code"].as_i64() != Some(0) || out["ok"] != Value::Bool(true) {
        vm.fail(&format!("image create failed: {res}"));
    }
    if out["disk_size_bytes"].as_u64() != Some(built.size_bytes)
        || out["image"] != "label=BACKUPS:/pc/full.lbi"
    {
        vm.fail(&format!("unexpected create report: {out}"));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    src_sha.check("the source disk");
    // The exFAT filesystem Lifeboat wrote to is clean (it synced and unmounted).
    let usb_part = t.join("usb-part.img");
    extract(&usb, &usb_part, 1 << 20, 88 << 20);
    run(
        "fsck.exfat",
        &["-n".into(), usb_part.display().to_string()],
        None,
    )
    .unwrap_or_else(|e| panic!("fsck.exfat on the backup partition: {e}"));

    // Boot 2: the USB stick (a copy, as if moved to another machine) and a larger blank NVMe disk.
    let usb2 = t.join("usb2.img");
    std::fs::copy(&usb, &usb2).unwrap();
    let nvme = t.join("nvme.img");
    DiskBuilder::new(128, Table::None)
        .build(&nvme)
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut vm, res) = boot_result(
        "image-restore",
        "image restore label=BACKUPS:/pc/full.lbi serial=LB-IMG-NVME --yes --json",
        vec![
            DiskSpec::new(&usb2, Bus::Usb, "LB-IMG-USB"),
            DiskSpec::new(&nvme, Bus::Nvme, "LB-IMG-NVME"),
        ],
    );
    let out = &res["output"];
    if res["exit_code"].as_i64() != Some(0) || out["media_hash_verified"] != Value::Bool(true) {
        vm.fail(&format!("image restore failed: {res}"));
    }
    if out["partition_table"]["fixed"] != Value::Bool(true) {
        vm.fail(&format!(
            "the GPT was not moved to the end of the larger disk: {out}"
        ));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);

    // Host: every partition identical, the table valid for the new size, filesystems clean.
    same_partitions(&built, &src, &nvme);
    let v = run("sgdisk", &["-v".into(), nvme.display().to_string()], None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        v.contains("No problems found"),
        "sgdisk -v on the restored disk: {v}"
    );
    let p1 = t.join("p1.img");
    let b1 = &built.partitions[0];
    extract(&nvme, &p1, b1.start_bytes, b1.size_bytes);
    run("e2fsck", &["-fn".into(), p1.display().to_string()], None)
        .unwrap_or_else(|e| panic!("e2fsck: {e}"));
    let p2 = t.join("p2.img");
    let b2 = &built.partitions[1];
    extract(&nvme, &p2, b2.start_bytes, b2.size_bytes);
    run("fsck.vfat", &["-n".into(), p2.display().to_string()], None)
        .unwrap_or_else(|e| panic!("fsck.vfat: {e}"));
}

#[test]
fn image_of_a_failing_disk_records_bad_sectors() {
    let t = TempDir::new("image-bad").unwrap();
    let src = t.join("failing.img");
    DiskBuilder::new(64, Table::Gpt)
        .part(
            Part::new(56, Fs::Ext4)
                .label("FAILING")
                .file("data/noise.bin", noise(4 << 20, 5)),
        )
        .build(&src)
        .unwrap_or_else(|e| panic!("{e}"));
    let src_sha = Unchanged::record(&src);
    let faults = Faults::new()
        .bad_bytes(8 << 20, 4096)
        .bad_bytes((20 << 20) + 512, 512);
    let cfg = t.join("blkdebug.conf");
    faults.write(&cfg).unwrap();
    let store = t.join("store.img");
    DiskBuilder::new(96, Table::Gpt)
        .part(Part::new(88, Fs::Ext4).label("STORE"))
        .build(&store)
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut vm, res) = boot_result(
        "image-failing",
        // Every sector, so both faults are met (in used-blocks mode a bad sector in free space
        // is never read; tests/image_used.rs covers that on the host).
        "image create serial=LB-IMG-FAIL label=STORE:/bad.lbi --all-sectors --json",
        vec![
            DiskSpec::new(&src, Bus::Nvme, "LB-IMG-FAIL").blkdebug(&cfg),
            DiskSpec::new(&store, Bus::Sata, "LB-IMG-STORE"),
        ],
    );
    let out = &res["output"];
    // Exit 3: completed, with unreadable sectors; `ok` is true only with exit 0, as clone's.
    if res["exit_code"].as_i64() != Some(3)
        || out["exit_code"].as_i64() != Some(3)
        || out["ok"] != Value::Bool(false)
    {
        vm.fail(&format!(
            "expected a completed image with bad sectors (exit 3): {res}"
        ));
    }
    let want: Vec<Value> = faults
        .permanent_ranges()
        .iter()
        .map(|&(s, l)| serde_json::json!([s, l]))
        .collect();
    if out["bad_ranges"].as_array() != Some(&want) {
        vm.fail(&format!(
            "bad ranges {} expected {want:?}",
            out["bad_ranges"]
        ));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    src_sha.check("the failing source disk");
}
