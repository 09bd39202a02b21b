//! Issue 15 in the environment: `lifeboat image mount IMAGE DIR --partition 1` with the image
//! on a store disk (`label=LBSTORE:/pc.lbi`), run unattended. The kernel's NBD client (the
//! `nbd` module from the initramfs) reads the image's disk through Lifeboat's server over a
//! socket pair, and the ext4 partition is mounted read-only. The host checks the report — the
//! NBD partition, ext4, the top directory's names, and the free space the kernel reads from the
//! superblock against `dumpe2fs` of the source partition — and that neither the store disk nor
//! the source changed (everything is read-only, journal not replayed).
use lifeboat_qemu_tests::check::host_lifeboat;
use lifeboat_qemu_tests::disks::{run, sha256, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{run_param, Bus, DiskSpec, TempDir, Vm};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `dumpe2fs -h` field `name` of the ext4 filesystem at byte `offset` of `disk`.
fn dumpe2fs_field(t: &TempDir, disk: &Path, offset: u64, len: u64, name: &str) -> u64 {
    let part = t.join("part.img");
    let data = {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(disk).unwrap();
        let mut b = vec![0u8; len as usize];
        f.read_exact_at(&mut b, offset).unwrap();
        b
    };
    std::fs::write(&part, data).unwrap();
    let out = run("dumpe2fs", &["-h".into(), s(&part)], None).unwrap_or_else(|e| panic!("{e}"));
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in dumpe2fs output: {out}"))
}

#[test]
fn mount_a_partition_of_an_image_on_a_store_disk() {
    let t = TempDir::new("image-mount").unwrap();
    let src = t.join("src.img");
    let built = DiskBuilder::new(48, Table::Gpt)
        .part(
            Part::new(24, Fs::Ext4)
                .label("MNTROOT")
                .file("etc/hostname", "mounted\n")
                .file("data/a.txt", "a file in an image\n".repeat(30_000)),
        )
        .part(Part::new(16, Fs::Vfat).label("MNTFAT").file("B.TXT", "b\n"))
        .build(&src)
        .unwrap_or_else(|e| panic!("{e}"));
    let img = t.join("pc.lbi");
    let o = std::process::Command::new(host_lifeboat())
        .args(["image", "create", &s(&src), &s(&img)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let store = t.join("store.img");
    DiskBuilder::new(64, Table::Mbr)
        .part(
            Part::new(56, Fs::Ext4)
                .label("LBSTORE")
                .file("pc.lbi", std::fs::read(&img).unwrap()),
        )
        .build(&store)
        .unwrap_or_else(|e| panic!("{e}"));
    let (src_sha, store_sha) = (sha256(&src).unwrap(), sha256(&store).unwrap());

    let mut vm = Vm::boot(
        "image-mount",
        &run_param("image mount label=LBSTORE:/pc.lbi /mnt --partition 1 --json"),
        vec![DiskSpec::new(&store, Bus::Virtio, "LB-MNT-STORE")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(Duration::from_secs(240));
    let res = vm.check(res);
    let out = &res["output"];
    if res["exit_code"].as_i64() != Some(0) || out["ok"] != Value::Bool(true) {
        vm.fail(&format!("image mount failed: {res}"));
    }
    let names: Vec<&str> = out["root_entries"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if out["filesystem"] != "ext4"
        || out["partition"] != 1
        || !out["device"]
            .as_str()
            .is_some_and(|d| d.starts_with("/dev/nbd"))
        || names != ["data", "etc", "lost+found"]
    {
        vm.fail(&format!("unexpected mount report: {out}"));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    let p1 = &built.partitions[0];
    let free = dumpe2fs_field(&t, &src, p1.start_bytes, p1.size_bytes, "Free blocks");
    let bs = dumpe2fs_field(&t, &src, p1.start_bytes, p1.size_bytes, "Block size");
    assert_eq!(
        out["free_bytes"].as_u64(),
        Some(free * bs),
        "the kernel read another filesystem: {out}"
    );
    assert_eq!(sha256(&src).unwrap(), src_sha, "the source changed");
    assert_eq!(sha256(&store).unwrap(), store_sha, "the store disk changed");
}
