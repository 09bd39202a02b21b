//! Issue 15: an image served on the host by `lifeboat image serve --socket S` is a VM's disk —
//! QEMU attaches it with `-drive file=nbd+unix:///?socket=S` — and the booted environment
//! clones it (`--all-sectors`) onto a blank NVMe disk. The host checks the clone report (the
//! served disk's size and partitions as the guest saw them) and that the NVMe disk now equals
//! `image export`'s raw file byte for byte; the image is unchanged.
use lifeboat_qemu_tests::check::{host_lifeboat, host_lifeboat_ok};
use lifeboat_qemu_tests::disks::{sha256, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{run_param, Bus, DiskSpec, TempDir, Vm};
use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_served_image_is_a_vm_disk() {
    let t = TempDir::new("serve").unwrap();
    let src = t.join("src.img");
    DiskBuilder::new(64, Table::Gpt)
        .part(
            Part::new(32, Fs::Ext4)
                .label("SERVED")
                .file("etc/hostname", "served\n")
                .file(
                    "data/a.txt",
                    "a file inside a served image\n".repeat(20_000),
                ),
        )
        .part(
            Part::new(16, Fs::Vfat)
                .label("SERVEDFAT")
                .file("B.TXT", "b\n".repeat(9_000)),
        )
        .build(&src)
        .unwrap_or_else(|e| panic!("{e}"));
    let img = t.join("pc.lbi");
    host_lifeboat_ok(&["image", "create", s(&src), s(&img)]);
    let raw = t.join("export.raw");
    host_lifeboat_ok(&["image", "export", s(&img), s(&raw)]);
    let img_sha = sha256(&img).unwrap();

    let sock = t.join("nbd.sock");
    let mut server = Command::new(host_lifeboat())
        .args(["image", "serve", s(&img), "--socket", s(&sock), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let rep: Value = serde_json::from_str(&ready).unwrap_or_else(|e| panic!("{ready:?}: {e}"));
    let uri = rep["uri"].as_str().unwrap().to_string();

    let dst = t.join("nvme.img");
    std::fs::write(&dst, vec![0u8; 64 << 20]).unwrap();
    let disks = vec![
        // The export is read-only: QEMU attaches it read-only.
        DiskSpec::new(PathBuf::from(&uri), Bus::Virtio, "LB-SERVED").read_only(),
        DiskSpec::new(&dst, Bus::Nvme, "LB-SERVED-DST"),
    ];
    let mut vm = Vm::boot(
        "serve",
        &run_param("clone serial=LB-SERVED serial=LB-SERVED-DST --all-sectors --yes --json"),
        disks,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(Duration::from_secs(240));
    let res = vm.check(res);
    let out = &res["output"];
    if res["exit_code"].as_i64() != Some(0) || out["verified"] != Value::Bool(true) {
        vm.fail(&format!("the clone of the served disk failed: {res}"));
    }
    if out["size_bytes"].as_u64() != Some(64 << 20) {
        vm.fail(&format!("the guest saw another size: {out}"));
    }
    let fs: Vec<&str> = out["partitions"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["filesystem"].as_str()).collect())
        .unwrap_or_default();
    if fs != ["ext4", "vfat"] {
        vm.fail(&format!("the guest saw other partitions: {out}"));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let st = server.wait().unwrap();
    assert!(st.success(), "image serve exited with {st}");

    let (a, b) = (std::fs::read(&raw).unwrap(), std::fs::read(&dst).unwrap());
    let first = a.iter().zip(&b).position(|(x, y)| x != y);
    assert!(
        first.is_none() && a.len() == b.len(),
        "the clone differs from the export at byte {first:?}"
    );
    assert_eq!(sha256(&img).unwrap(), img_sha, "the image changed");
}
