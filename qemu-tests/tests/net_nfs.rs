//! Issue 13, NFS: an image created onto an NFSv4 export served by the host's real NFS-Ganesha
//! (userspace, on loopback), reached from a guest on QEMU's restricted user network (DHCP from
//! QEMU, the server at 10.0.2.100:2049 forwarded to ganesha); the image verified on the host and
//! restored from the export in a second boot, compared partition by partition with the source,
//! whose sha256 is unchanged.
use lifeboat_qemu_tests::check::{host_verify, noise, same_partitions, Unchanged};
use lifeboat_qemu_tests::disks::{DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::ganesha::Ganesha;
use lifeboat_qemu_tests::{run_param, Bus, DiskSpec, NetSpec, TempDir, Vm};
use serde_json::Value;
use std::time::Duration;

fn boot(name: &str, cmd: &str, disks: Vec<DiskSpec>, nfs: &Ganesha) -> (Vm, Value) {
    let net = NetSpec::restricted().forward(
        "10.0.2.100",
        2049,
        &format!("{} 127.0.0.1 {}", env!("CARGO_BIN_EXE_tcp-stdio"), nfs.port),
    );
    let mut vm = Vm::boot_net(name, &run_param(cmd), disks, &net).unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(Duration::from_secs(300));
    let res = vm.check(res);
    (vm, res)
}

#[test]
fn image_to_nfs_export_then_restore() {
    let t = TempDir::new("net-nfs").unwrap();
    let export = t.join("export");
    std::fs::create_dir_all(&export).unwrap();
    let nfs =
        Ganesha::start(&t.join("ganesha"), &export, "/export").unwrap_or_else(|e| panic!("{e}"));
    let src = t.join("src.img");
    let built = DiskBuilder::new(48, Table::Gpt)
        .part(
            Part::new(40, Fs::Ext4)
                .label("NFSSRC")
                .file("data/noise.bin", noise(3 << 20, 5)),
        )
        .build(&src)
        .unwrap_or_else(|e| panic!("{e}"));
    let src_sha = Unchanged::record(&src);
    let url = "nfs://10.0.2.100/export/pc/full.lbi";

    let (mut vm, res) = boot(
        "net-nfs-create",
        &format!("image create serial=LB-NFS-SRC {url} --json"),
        vec![DiskSpec::new(&src, Bus::Sata, "LB-NFS-SRC")],
        &nfs,
    );
    let out = &res["output"];
    if res["exit_code"].as_i64() != Some(0) || out["image"] != Value::String(url.into()) {
        vm.fail(&format!("image create onto the export failed: {res}"));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    src_sha.check("the source disk");
    let image = export.join("pc/full.lbi");
    assert!(image.is_file(), "no image on the export");
    assert!(
        !export.join("pc/full.lbi.partial").exists(),
        "a .partial was left on the export"
    );
    host_verify(&image);

    let target = t.join("target.img");
    DiskBuilder::new(48, Table::None)
        .build(&target)
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut vm, res) = boot(
        "net-nfs-restore",
        &format!("image restore {url} serial=LB-NFS-TGT --yes --json"),
        vec![DiskSpec::new(&target, Bus::Nvme, "LB-NFS-TGT")],
        &nfs,
    );
    if res["exit_code"].as_i64() != Some(0)
        || res["output"]["media_hash_verified"] != Value::Bool(true)
    {
        vm.fail(&format!("restore from the export failed: {res}"));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    same_partitions(&built, &src, &target);
}
