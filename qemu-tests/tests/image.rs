//! Issue 4 in the environment: image a SATA disk onto an exFAT partition of a USB disk selected
//! by label (Lifeboat mounts it itself), then in a second boot restore that image onto a larger
//! NVMe disk; the host compares partitions byte for byte and runs the real fsck tools. A second
//! test images a SATA disk with unreadable sectors (blkdebug) and checks they are recorded; a
//! third writes an image onto storage that silently drops some of its writes (blkdebug write
//! faults the disk reports as done) and checks the verify after write refuses it.
use lifeboat_qemu_tests::check::{extract, noise, same_partitions, text, Unchanged};
use lifeboat_qemu_tests::disks::{run, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{blkdebug, run_param, Bus, DiskSpec, Faults, TempDir, Vm};
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

/// Where the data area (cluster 2) of the FAT filesystem at byte `start` of `disk` begins,
/// in bytes from the start of the disk (from its boot sector).
fn fat_data_start(disk: &std::path::Path, start: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 512];
    std::fs::File::open(disk)
        .and_then(|f| f.read_exact_at(&mut b, start))
        .unwrap_or_else(|e| panic!("{}: {e}", disk.display()));
    let u16le = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let bps = u16le(11);
    let fat_sectors = match u16le(22) {
        0 => u32::from_le_bytes([b[36], b[37], b[38], b[39]]) as u64,
        n => n,
    };
    let root_sectors = (u16le(17) * 32).div_ceil(bps);
    start + (u16le(14) + b[16] as u64 * fat_sectors + root_sectors) * bps
}

/// Storage that loses writes: the store (SATA, FAT) fails four writes inside the data area
/// where the image goes and tells the guest they were done (`werror=ignore`), so the bytes
/// there stay what they were (zeros). Only reading the image back from the storage can see
/// it: the create must not call that image good (exit 5, `verified` false, the problems
/// named) — through the page cache it would read what it wrote.
#[test]
fn verify_after_write_catches_storage_that_drops_writes() {
    let t = TempDir::new("image-lies").unwrap();
    let src = t.join("src.img");
    std::fs::write(&src, noise(24 << 20, 11)).unwrap();
    let src_sha = Unchanged::record(&src);
    let store = t.join("store.img");
    let built = DiskBuilder::new(64, Table::Mbr)
        .part(Part::new(56, Fs::Vfat).label("LIES"))
        .build(&store)
        .unwrap_or_else(|e| panic!("{e}"));
    // A fresh FAT fills its data area from the start: the 24 MiB image (and its small journal
    // files) is there; 4, 8, 12 and 16 MiB in are inside the image's payloads.
    let data = fat_data_start(&store, built.partitions[0].start_bytes);
    let sectors: Vec<u64> = [4u64, 8, 12, 16]
        .iter()
        .map(|m| (data + (m << 20)) / 512)
        .collect();
    let cfg = t.join("write-faults.conf");
    std::fs::write(&cfg, blkdebug::write_fault_config(&sectors)).unwrap();
    let (mut vm, res) = boot_result(
        "image-lies",
        "image create serial=LB-LIE-SRC label=LIES:/x.lbi --json",
        vec![
            DiskSpec::new(&src, Bus::Virtio, "LB-LIE-SRC"),
            DiskSpec::new(&store, Bus::Sata, "LB-LIE-STORE")
                .blkdebug(&cfg)
                .lying_writes(),
        ],
    );
    let out = &res["output"];
    let problems = out["verify_problems"].as_array().map_or(0, |p| p.len());
    if res["exit_code"].as_i64() != Some(5)
        || out["ok"] != Value::Bool(false)
        || out["verified"] != Value::Bool(false)
    {
        vm.fail(&format!(
            "an image that lost writes was not refused (exit 5, verified false): {res}"
        ));
    }
    // Either the payloads' checks name the damage, or (a lost index or footer) the error does.
    if problems == 0
        && !out["error"]["message"]
            .as_str()
            .is_some_and(|e| e.contains("FAILED its verification"))
    {
        vm.fail(&format!("no problem named: {res}"));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    src_sha.check("the source disk");
}
