//! Issue 13, SMB: images on a Windows-style share served by the host's real Samba (`smbd` on
//! loopback, a generated smb.conf, a password with a comma and a space), reached from a guest on
//! QEMU's restricted user network (DHCP from QEMU, the share at 10.0.2.100 forwarded to smbd):
//! create onto the share with the password from a credentials file on a FAT disk, verify the
//! image on the host, restore it in a second boot and compare (both reports naming the image by
//! its URL); a wrong password and an unreachable host fail with their plain messages, exit 1,
//! and leave nothing on the share. The password never appears on the serial console (which
//! carries the log and LIFEBOAT-RESULT).
//! A cable pulled mid-create (`set_link n0 off`) fails the job with the plain message "the network
//! share stopped answering … reconnect and run the same command again to resume" (exit 1, kind
//! `network_lost`), leaves only a `.partial` that `image info` calls incomplete, and the same
//! command with the cable back resumes and finishes.
use lifeboat_qemu_tests::check::{host_lifeboat, host_verify, noise, same_partitions, Unchanged};
use lifeboat_qemu_tests::disks::{DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::samba::Samba;
use lifeboat_qemu_tests::{run_param, Bus, DiskSpec, NetSpec, TempDir, Vm};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const PASSWORD: &str = "lb pw,7 secret";
/// Where the guest finds the share (forwarded to smbd on the host's loopback).
const SERVER: &str = "10.0.2.100";

fn net(samba: &Samba) -> NetSpec {
    NetSpec::restricted().forward(
        SERVER,
        445,
        &format!(
            "{} 127.0.0.1 {}",
            env!("CARGO_BIN_EXE_tcp-stdio"),
            samba.port
        ),
    )
}

/// A small FAT disk labelled CREDS holding `lifeboat.cred` with `password` for the share.
fn creds_disk(path: &Path, password: &str) {
    let cred = format!(
        "# lifeboat.cred for the test share\n[{SERVER}/backups]\nuser = root\npassword = {password}\n"
    );
    DiskBuilder::new(40, Table::Mbr)
        .part(
            Part::new(32, Fs::Vfat)
                .label("CREDS")
                .file("lifeboat.cred", cred),
        )
        .build(path)
        .unwrap_or_else(|e| panic!("{e}"));
}

fn boot(name: &str, cmd: &str, disks: Vec<DiskSpec>, samba: &Samba) -> (Vm, Value) {
    let params = format!(
        "lifeboat.credentials=label=CREDS:/lifeboat.cred {}",
        run_param(cmd)
    );
    let mut vm = Vm::boot_net(name, &params, disks, &net(samba)).unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(Duration::from_secs(300));
    let res = vm.check(res);
    (vm, res)
}

/// The password must not be anywhere on the console: the job's log, progress and result.
fn assert_no_password(vm: &Vm) {
    let out = String::from_utf8_lossy(&vm.output()).into_owned();
    if out.contains(PASSWORD) || out.contains("lb pw") {
        vm.fail("the password appears on the serial console");
    }
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            v.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    v.sort();
    v
}

/// Compressible text for the test files.
fn text(n: usize) -> Vec<u8> {
    lifeboat_qemu_tests::check::text(n, "the network test")
}

#[test]
fn image_to_smb_share_then_restore() {
    let t = TempDir::new("net-smb").unwrap();
    let share = t.join("share");
    std::fs::create_dir_all(&share).unwrap();
    let samba = Samba::start(&t.join("samba"), "backups", &share, "root", PASSWORD)
        .unwrap_or_else(|e| panic!("{e}"));
    let src = t.join("src.img");
    let built = DiskBuilder::new(64, Table::Gpt)
        .part(
            Part::new(40, Fs::Ext4)
                .label("NETSRC")
                .file("data/text.txt", text(2 << 20))
                .file("data/noise.bin", noise(3 << 20, 11)),
        )
        .part(
            Part::new(16, Fs::Vfat)
                .label("NETFAT")
                .file("A.TXT", text(100_000)),
        )
        .build(&src)
        .unwrap_or_else(|e| panic!("{e}"));
    let src_sha = Unchanged::record(&src);
    let creds = t.join("creds.img");
    creds_disk(&creds, PASSWORD);
    let url = format!("smb://root@{SERVER}/backups/pc/full.lbi");

    // Boot 1: image the source onto the share.
    let (mut vm, res) = boot(
        "net-smb-create",
        &format!("image create serial=LB-NET-SRC {url} --json"),
        vec![
            DiskSpec::new(&src, Bus::Sata, "LB-NET-SRC"),
            DiskSpec::new(&creds, Bus::Virtio, "LB-NET-CREDS"),
        ],
        &samba,
    );
    let out = &res["output"];
    if res["exit_code"].as_i64() != Some(0) || out["ok"] != Value::Bool(true) {
        vm.fail(&format!("image create onto the share failed: {res}"));
    }
    if out["image"] != Value::String(url.clone()) {
        vm.fail(&format!(
            "the report names the image {} not {url}",
            out["image"]
        ));
    }
    assert_no_password(&vm);
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    src_sha.check("the source disk");
    assert_eq!(
        files_under(&share),
        ["pc", "pc/full.lbi"],
        "the share holds exactly the finished image"
    );
    // The image on the share, checked on the host by the same binary.
    host_verify(&share.join("pc/full.lbi"));

    // Boot 2: restore from the share onto a blank disk.
    let target = t.join("target.img");
    DiskBuilder::new(64, Table::None)
        .build(&target)
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut vm, res) = boot(
        "net-smb-restore",
        &format!("image restore {url} serial=LB-NET-TGT --yes --json"),
        vec![
            DiskSpec::new(&target, Bus::Nvme, "LB-NET-TGT"),
            DiskSpec::new(&creds, Bus::Virtio, "LB-NET-CREDS"),
        ],
        &samba,
    );
    let out = &res["output"];
    if res["exit_code"].as_i64() != Some(0) || out["media_hash_verified"] != Value::Bool(true) {
        vm.fail(&format!("restore from the share failed: {res}"));
    }
    // The report names the image as given (the URL), not where the share was mounted.
    if out["image"] != Value::String(url.clone()) {
        vm.fail(&format!(
            "the restore report names the image {} not {url}",
            out["image"]
        ));
    }
    assert_no_password(&vm);
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    same_partitions(&built, &src, &target);
    src_sha.check("the source disk");
}

#[test]
fn wrong_password_and_unreachable_host_are_plain_failures() {
    let t = TempDir::new("net-smb-fail").unwrap();
    let share = t.join("share");
    std::fs::create_dir_all(&share).unwrap();
    let samba = Samba::start(&t.join("samba"), "backups", &share, "root", PASSWORD)
        .unwrap_or_else(|e| panic!("{e}"));
    let src = t.join("src.img");
    DiskBuilder::new(24, Table::Gpt)
        .part(Part::new(16, Fs::Ext4).label("NETSRC2"))
        .build(&src)
        .unwrap_or_else(|e| panic!("{e}"));
    let src_sha = Unchanged::record(&src);
    let creds = t.join("creds.img");
    creds_disk(&creds, "not the password");
    let disks = || {
        vec![
            DiskSpec::new(&src, Bus::Sata, "LB-NET-SRC2"),
            DiskSpec::new(&creds, Bus::Virtio, "LB-NET-CREDS"),
        ]
    };
    for (name, url, reason, words) in [
        (
            "net-smb-badpw",
            format!("smb://root@{SERVER}/backups/bad/x.lbi"),
            "access_denied",
            "access denied",
        ),
        // No host at .99: nobody answers the guest's ARP on the restricted network.
        (
            "net-smb-unreachable",
            "smb://root@10.0.2.99/backups/x.lbi".to_string(),
            "host_unreachable",
            "host unreachable",
        ),
    ] {
        let (mut vm, res) = boot(
            name,
            &format!("image create serial=LB-NET-SRC2 {url} --json"),
            disks(),
            &samba,
        );
        let out = &res["output"];
        let msg = out["error"]["message"].as_str().unwrap_or_default();
        if res["exit_code"].as_i64() != Some(1)
            || !msg.starts_with(words)
            || out["network_error"] != Value::String(reason.into())
        {
            vm.fail(&format!(
                "{url}: expected exit 1 with {words:?} ({reason}): {res}"
            ));
        }
        assert_no_password(&vm);
        let _ = vm.wait_exit(Duration::from_secs(60));
    }
    assert!(
        files_under(&share).is_empty(),
        "left on the share: {:?}",
        files_under(&share)
    );
    src_sha.check("the source disk");
}

/// The `done_bytes` of a `LIFEBOAT-PROGRESS` line.
fn done_bytes(line: &str) -> Option<u64> {
    let (_, j) = line.split_once("LIFEBOAT-PROGRESS")?;
    serde_json::from_str::<Value>(j.trim()).ok()?["done_bytes"].as_u64()
}

#[test]
fn cable_pulled_mid_create_leaves_an_incomplete_image_that_resumes() {
    let t = TempDir::new("net-smb-link").unwrap();
    let share = t.join("share");
    std::fs::create_dir_all(&share).unwrap();
    let samba = Samba::start(&t.join("samba"), "backups", &share, "root", PASSWORD)
        .unwrap_or_else(|e| panic!("{e}"));
    let src = t.join("src.img");
    // Incompressible data, read at 2 MiB/s: the job is still copying when the cable goes.
    DiskBuilder::new(48, Table::Gpt)
        .part(
            Part::new(40, Fs::Ext4)
                .label("LINKSRC")
                .file("data/noise.bin", noise(30 << 20, 3)),
        )
        .build(&src)
        .unwrap_or_else(|e| panic!("{e}"));
    let src_sha = Unchanged::record(&src);
    let creds = t.join("creds.img");
    creds_disk(&creds, PASSWORD);
    let disks = |throttle: bool| {
        let d = DiskSpec::new(&src, Bus::Sata, "LB-LINK-SRC");
        vec![
            if throttle {
                d.throttle_read_bps(2 << 20)
            } else {
                d
            },
            DiskSpec::new(&creds, Bus::Virtio, "LB-NET-CREDS"),
        ]
    };
    let url = format!("smb://root@{SERVER}/backups/pc/full.lbi");
    let cmd = format!("image create serial=LB-LINK-SRC {url} --json");
    let params = format!(
        "lifeboat.credentials=label=CREDS:/lifeboat.cred {}",
        run_param(&cmd)
    );
    let mut vm = Vm::boot_net("net-smb-link-pull", &params, disks(true), &net(&samba))
        .unwrap_or_else(|e| panic!("{e}"));
    // Past the first checkpoints (every 5 s), so there is something to resume from.
    let r = vm.wait_line("16 MiB copied", Duration::from_secs(300), |l| {
        done_bytes(l).is_some_and(|d| d >= 16 << 20)
    });
    vm.check(r);
    let r = vm.monitor("set_link n0 off");
    vm.check(r);
    let res = vm.wait_result(Duration::from_secs(400));
    let res = vm.check(res);
    if res["exit_code"].as_i64() == Some(0) || res["output"]["ok"] != Value::Bool(false) {
        vm.fail(&format!(
            "the job did not fail when the cable was pulled: {res}"
        ));
    }
    // The plain message, chosen by the error's kind (never the kernel's "Host is down").
    let out = &res["output"];
    let msg = out["error"]["message"].as_str().unwrap_or_default();
    if res["exit_code"].as_i64() != Some(1)
        || out["error"]["kind"] != "network_lost"
        || out["network_error"] != "stopped_answering"
        || !msg.starts_with(&format!("the network share stopped answering ({url}: "))
        || !msg.contains("reconnect and run the same command again to resume")
        || msg.contains("os error")
        || msg.contains("/run/lifeboat")
    {
        vm.fail(&format!(
            "expected the plain network-drop message (exit 1, network_lost): {res}"
        ));
    }
    let _ = vm.wait_exit(Duration::from_secs(120));
    drop(vm);
    // Never a complete-looking image: no final name, and the .partial is reported incomplete.
    assert!(
        !share.join("pc/full.lbi").exists(),
        "a complete-looking image was left"
    );
    let partial = share.join("pc/full.lbi.partial");
    assert!(
        partial.is_file(),
        "no .partial on the share: {:?}",
        files_under(&share)
    );
    let info = std::process::Command::new(host_lifeboat())
        .args(["image", "info"])
        .arg(&partial)
        .arg("--json")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stdout).to_uppercase()
        + &String::from_utf8_lossy(&info.stderr).to_uppercase();
    assert!(
        text.contains("INCOMPLETE"),
        "image info of the .partial: {text}"
    );

    // The cable back in: the same command resumes and finishes.
    let (mut vm, res) = boot("net-smb-link-resume", &cmd, disks(false), &samba);
    let out = &res["output"];
    if res["exit_code"].as_i64() != Some(0) || out["resumed_from"].is_null() {
        vm.fail(&format!("the rerun did not resume and finish: {res}"));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    host_verify(&share.join("pc/full.lbi"));
    src_sha.check("the source disk");
}
