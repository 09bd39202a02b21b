//! Issue 13, NTFS in the environment: the initramfs carries Debian's ntfs-3g (FUSE), which
//! Lifeboat starts itself. Boot 1 images a SATA disk onto the NTFS partition of a USB disk found
//! by `label=`; the host then checks that volume with the real tools (`ntfsfix -n` clean, the
//! image read out with `ntfscat` verifies with the host's `lifeboat image verify`). Boot 2
//! restores from it onto an NVMe disk (restore checks the media hash): every partition equals
//! the source's, and the NTFS volume, mounted read-only for that, is unchanged. Boot 3: a USB
//! disk whose NTFS Windows left hibernated (hiberfil.sys starting with `hibr`) is refused for
//! the create with the reason and exit 4, its bytes unchanged.
use lifeboat_qemu_tests::check::{extract, host_verify, noise, same_partitions, Unchanged};
use lifeboat_qemu_tests::disks::{run, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{run_param, Bus, DiskSpec, TempDir, Vm};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// Compressible text for the test files.
fn text(n: usize) -> Vec<u8> {
    lifeboat_qemu_tests::check::text(n, "a text file")
}

fn boot_result(name: &str, cmd: &str, disks: Vec<DiskSpec>) -> (Vm, Value) {
    let mut vm = Vm::boot(name, &run_param(cmd), disks).unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(Duration::from_secs(300));
    let res = vm.check(res);
    (vm, res)
}

/// A USB disk: MBR, one NTFS partition labelled `label` at 1 MiB.
fn usb_ntfs(path: &Path, label: &str, files: Vec<(&str, Vec<u8>)>) -> (u64, u64) {
    let mut part = Part::new(120, Fs::Ntfs).label(label);
    for (n, d) in files {
        part = part.file(n, d);
    }
    let b = DiskBuilder::new(128, Table::Mbr)
        .part(part)
        .build(path)
        .unwrap_or_else(|e| panic!("{e}"));
    let p = &b.partitions[0];
    assert_eq!(p.fs_type.as_deref(), Some("ntfs"));
    (p.start_bytes, p.size_bytes)
}

#[test]
fn image_onto_usb_ntfs_then_restore_from_it() {
    let t = TempDir::new("ntfs").unwrap();
    let src = t.join("sata.img");
    let built = DiskBuilder::new(96, Table::Gpt)
        .part(
            Part::new(56, Fs::Ext4)
                .label("NTSRCROOT")
                .file("data/text.txt", text(3 << 20))
                .file("data/noise.bin", noise(3 << 20, 11)),
        )
        .part(Part::new(32, Fs::Vfat).label("NTSRCFAT"))
        .build(&src)
        .unwrap_or_else(|e| panic!("{e}"));
    let usb = t.join("usb.img");
    let (ns, nl) = usb_ntfs(&usb, "WINBACKUP", vec![]);
    let src_sha = Unchanged::record(&src);

    // Boot 1: create onto the NTFS partition, found by label.
    let (mut vm, res) = boot_result(
        "ntfs-create",
        "image create serial=LB-NT-SRC label=WINBACKUP:/pc/full.lbi --json",
        vec![
            DiskSpec::new(&src, Bus::Sata, "LB-NT-SRC"),
            DiskSpec::new(&usb, Bus::Usb, "LB-NT-USB"),
        ],
    );
    if res["exit_code"].as_i64() != Some(0) || res["output"]["ok"] != Value::Bool(true) {
        vm.fail(&format!("image create onto NTFS failed: {res}"));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    src_sha.check("the source disk");

    // Host: the NTFS volume is clean and holds an image that verifies on its own.
    let part = t.join("ntfs-part.img");
    extract(&usb, &part, ns, nl);
    run("ntfsfix", &["-n".into(), part.display().to_string()], None)
        .unwrap_or_else(|e| panic!("ntfsfix -n on the NTFS store: {e}"));
    let out = std::process::Command::new("ntfscat")
        .arg(&part)
        .arg("pc/full.lbi")
        .output()
        .unwrap();
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "ntfscat pc/full.lbi: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lbi = t.join("full.lbi");
    std::fs::write(&lbi, &out.stdout).unwrap();
    host_verify(&lbi);
    let _ = std::fs::remove_file(&part);
    let _ = std::fs::remove_file(&lbi);

    // Boot 2: restore from the NTFS store onto a blank NVMe disk.
    let usb_sha = Unchanged::record(&usb);
    let nvme = t.join("nvme.img");
    DiskBuilder::new(96, Table::None)
        .build(&nvme)
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut vm, res) = boot_result(
        "ntfs-restore",
        "image restore label=WINBACKUP:/pc/full.lbi serial=LB-NT-NVME --yes --json",
        vec![
            DiskSpec::new(&usb, Bus::Usb, "LB-NT-USB"),
            DiskSpec::new(&nvme, Bus::Nvme, "LB-NT-NVME"),
        ],
    );
    if res["exit_code"].as_i64() != Some(0)
        || res["output"]["media_hash_verified"] != Value::Bool(true)
    {
        vm.fail(&format!("image restore from NTFS failed: {res}"));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    usb_sha.check("the USB disk the image was read from (ntfs-3g -o ro)");
    same_partitions(&built, &src, &nvme);
}

#[test]
fn hibernated_ntfs_is_refused_for_create() {
    let t = TempDir::new("ntfs-hib").unwrap();
    let src = t.join("sata.img");
    DiskBuilder::new(48, Table::Gpt)
        .part(Part::new(40, Fs::Ext4).label("NTHIBSRC"))
        .build(&src)
        .unwrap_or_else(|e| panic!("{e}"));
    let usb = t.join("usb.img");
    let mut hib = b"hibr".to_vec();
    hib.resize(64 << 10, 0);
    usb_ntfs(&usb, "WINHIBER", vec![("hiberfil.sys", hib)]);
    let (src_sha, usb_sha) = (Unchanged::record(&src), Unchanged::record(&usb));
    let (mut vm, res) = boot_result(
        "ntfs-hibernated",
        "image create serial=LB-NTH-SRC label=WINHIBER:/pc/full.lbi --json",
        vec![
            DiskSpec::new(&src, Bus::Sata, "LB-NTH-SRC"),
            DiskSpec::new(&usb, Bus::Usb, "LB-NTH-USB"),
        ],
    );
    let msg = res["output"]["error"]["message"].as_str().unwrap_or("");
    if res["exit_code"].as_i64() != Some(4)
        || !msg.contains("hibernated")
        || !msg.contains("shut it down fully")
    {
        vm.fail(&format!(
            "expected the hibernated NTFS refused (exit 4, the reason): {res}"
        ));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    usb_sha.check("the USB disk of the refused create");
    src_sha.check("the source disk");
}
