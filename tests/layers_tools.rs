//! Layered storage made by the real tools and named by `lifeboat list --json` (over a loop
//! device: `fs_type`, `role`, `note`) and copied all sectors by `lifeboat image create` (the
//! used-block plan's reason): LUKS1 and LUKS2 by `cryptsetup luksFormat`, an LVM2 physical
//! volume in a volume group by `pvcreate` + `vgcreate`. blkid is the referee for the type and
//! UUID. mdadm cannot write a superblock on a host without the md driver, and BitLocker, ZFS,
//! APFS, IMSM and Storage Spaces have no Debian tool that writes them: those are recorded
//! headers built from their on-disk formats, in `src/devices/layers_tests.rs`.
mod common;
use common::usedfs::have;
use common::{assert_exit, is_root, json, lifeboat, run, s, sha256, Loop, TempDir};
use std::process::Command;

/// blkid's (TYPE, UUID) of a file, read by probing (`-p`: no cache).
fn blkid(p: &str) -> (String, String) {
    let out = run(Command::new("blkid").args(["-p", "-o", "export", p]));
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    (get("TYPE"), get("UUID"))
}

/// The `list --json` entry of the loop device `dev`.
fn listed(dev: &str) -> serde_json::Value {
    let o = lifeboat(&["list", "--json"]);
    assert_exit(&o, 0);
    let v = json(&o);
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == dev)
        .unwrap_or_else(|| panic!("{dev} not listed: {v}"))
        .clone()
}

/// Images the file and returns the plan's one whole-disk partition (number 0).
fn imaged_plan(dir: &TempDir, img: &str) -> serde_json::Value {
    let out = dir.p("x.lbi");
    let _ = std::fs::remove_file(&out);
    let o = lifeboat(&["image", "create", img, s(&out), "--json"]);
    assert_exit(&o, 0);
    let v = json(&o);
    let parts = v["partitions"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(parts.len(), 1, "{v}");
    parts[0].clone()
}

#[test]
fn luks_containers_made_by_cryptsetup() {
    if !is_root() || !have(&["cryptsetup", "blkid", "losetup"]) {
        return;
    }
    let dir = TempDir::new("layers-luks");
    for version in ["luks1", "luks2"] {
        let img = dir.p(&format!("{version}.img"));
        std::fs::write(&img, vec![0u8; 20 << 20]).unwrap();
        let mut c = Command::new("cryptsetup");
        c.args(["luksFormat", "--batch-mode", "--type", version])
            .args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
            .args(["--key-file", "-"]);
        if version == "luks2" {
            c.args(["--label", "vault"]);
        }
        c.arg(&img);
        let mut child = c.stdin(std::process::Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"pw").unwrap();
        assert!(child.wait().unwrap().success(), "cryptsetup luksFormat");
        let (ty, uuid) = blkid(s(&img));
        assert_eq!(ty, "crypto_LUKS");
        let before = sha256(&img);
        {
            let Some(lp) = Loop::attach(&img) else { return };
            let d = listed(&lp.dev);
            assert_eq!(d["fs_type"], "crypto_LUKS", "{d}");
            assert_eq!(d["uuid"], uuid.as_str(), "{d}");
            assert_eq!(d["role"], "luks_container", "{d}");
            let note = d["note"].as_str().unwrap();
            let n = &version[4..];
            assert!(note.starts_with(&format!("LUKS{n} encrypted")), "{note}");
            if version == "luks2" {
                assert_eq!(d["label"], "vault", "{d}");
            }
        }
        let p = imaged_plan(&dir, s(&img));
        assert_eq!(p["filesystem"], "crypto_LUKS", "{p}");
        assert_eq!(p["mode"], "all_sectors", "{p}");
        assert_eq!(
            p["reason"],
            "LUKS-encrypted: which blocks are used is not visible"
        );
        assert_eq!(sha256(&img), before, "the source changed");
    }
}

#[test]
fn lvm_physical_volume_made_by_pvcreate_and_vgcreate() {
    if !is_root() || !have(&["pvcreate", "vgcreate", "blkid", "losetup"]) {
        return;
    }
    let dir = TempDir::new("layers-lvm");
    let img = dir.p("pv.img");
    std::fs::write(&img, vec![0u8; 24 << 20]).unwrap();
    let Some(lp) = Loop::attach(&img) else { return };
    // No udev and no device-mapper on the host: LVM is told to use the named device only and
    // not to wait for udev; neither command activates anything.
    let cfg = "devices{use_devicesfile=0 obtain_device_list_from_udev=0} \
               activation{udev_sync=0 udev_rules=0}";
    let lvm = |args: &[&str]| {
        let mut c = Command::new(args[0]);
        c.env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .args(["--devicesfile", "", "--config", cfg])
            .args(&args[1..]);
        run(&mut c)
    };
    lvm(&["pvcreate", "-ff", "-y", &lp.dev]);
    lvm(&["vgcreate", "lifeboatvg", &lp.dev]);
    let (ty, uuid) = blkid(&lp.dev);
    assert_eq!(ty, "LVM2_member");
    let before = sha256(&img);
    let d = listed(&lp.dev);
    assert_eq!(d["fs_type"], "LVM2_member", "{d}");
    assert_eq!(d["uuid"], uuid.as_str(), "{d}");
    assert_eq!(d["role"], "lvm_physical_volume", "{d}");
    let note = d["note"].as_str().unwrap();
    assert!(note.contains("volume group \"lifeboatvg\""), "{note}");
    drop(lp);
    let p = imaged_plan(&dir, s(&img));
    assert_eq!(p["filesystem"], "LVM2_member", "{p}");
    assert_eq!(p["mode"], "all_sectors", "{p}");
    assert_eq!(
        p["reason"],
        "LVM physical volume: its extents belong to volume groups"
    );
    assert_eq!(sha256(&img), before, "the source changed");
}
