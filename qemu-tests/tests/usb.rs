//! Boot media: `target/lifeboat/lifeboat.img` booted as a USB stick on xHCI by UEFI (OVMF), by
//! legacy BIOS (SeaBIOS) and by Secure Boot UEFI (Microsoft keys, Debian's signed shim, GRUB
//! and kernel), and `lifeboat.iso` booted as a CD under BIOS and UEFI. Each boot must reach
//! LIFEBOAT-READY (or LIFEBOAT-RESULT) with the medium recognised as `boot_media`, and no other
//! disk taken for it. Build the media first: `scripts/build && scripts/build-usb`.
use lifeboat_qemu_tests::qemu::cdrom_args;
use lifeboat_qemu_tests::{repo_root, Bus, DiskSpec, Firmware, TempDir, Vm};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(300);
const STICK: &str = "LBSTICK01";
const OTHER: &str = "LBNVME01";

fn media(name: &str) -> PathBuf {
    let p = repo_root().join("target").join("lifeboat").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-usb (after scripts/build)",
        p.display()
    );
    p
}

/// A private copy of the stick image whose /lifeboat.cfg (the user's file) is replaced by
/// `cfg`, written with mtools into the FAT partition at 1 MiB, as a user would edit it.
fn stick_with_cfg(t: &TempDir, cfg: &str) -> PathBuf {
    let img = t.join("stick.img");
    std::fs::copy(media("lifeboat.img"), &img).unwrap();
    let cfg_path = t.join("lifeboat.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let out = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-o")
        .arg("-i")
        .arg(format!("{}@@1M", img.display()))
        .arg(&cfg_path)
        .arg("::/lifeboat.cfg")
        .output()
        .expect("mcopy (mtools) must be installed: scripts/setup");
    assert!(
        out.status.success(),
        "mcopy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

/// A blank disk that is not the boot medium.
fn other_disk(t: &TempDir) -> DiskSpec {
    let p = t.join("other.img");
    std::fs::File::create(&p)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    DiskSpec::new(p, Bus::Nvme, OTHER)
}

fn stick(img: &Path) -> DiskSpec {
    DiskSpec::new(img, Bus::Usb, STICK).removable().bootindex(0)
}

fn sha256(p: &Path) -> String {
    lifeboat_qemu_tests::disks::sha256(p).unwrap()
}

/// The stick, booted by `fw` with no menu delay, reaches READY and names itself as boot media.
fn stick_boots_to_ready(name: &str, fw: Firmware, t: &TempDir) -> Vm {
    let img = stick_with_cfg(t, "set timeout=0\nset lifeboat_params=''\n");
    let mut vm = Vm::boot_firmware(name, &fw, vec![stick(&img), other_disk(t)], vec![])
        .unwrap_or_else(|e| panic!("{e}"));
    let ready = vm.wait_ready(BOOT);
    let ready = vm.check(ready);
    if ready["boot_media"].as_str() != Some(STICK) {
        vm.fail(&format!(
            "LIFEBOAT-READY must give boot_media = the stick's serial {STICK}: {ready}"
        ));
    }
    vm
}

#[test]
fn uefi_usb_stick_boots_to_ready() {
    let t = TempDir::new("usb-uefi").unwrap();
    let fw = Firmware::uefi(t.path()).unwrap();
    let vm = stick_boots_to_ready("usb-uefi", fw, &t);
    let out = String::from_utf8_lossy(&vm.output()).into_owned();
    if !out.contains("lifeboat.media=") {
        vm.fail("the kernel command line lacks lifeboat.media= (booted without the stick's GRUB?)");
    }
}

#[test]
fn bios_usb_stick_boots_to_ready() {
    let t = TempDir::new("usb-bios").unwrap();
    let vm = stick_boots_to_ready("usb-bios", Firmware::Bios, &t);
    let out = String::from_utf8_lossy(&vm.output()).into_owned();
    if !out.contains("lifeboat.media=") {
        vm.fail("the kernel command line lacks lifeboat.media= (booted without the stick's GRUB?)");
    }
    if out.contains("efi: EFI v") {
        vm.fail("a BIOS boot must not be an EFI boot");
    }
}

#[test]
fn secure_boot_usb_stick_boots_to_ready() {
    let t = TempDir::new("usb-secureboot").unwrap();
    let fw = Firmware::secure_boot(t.path()).unwrap();
    let vm = stick_boots_to_ready("usb-secureboot", fw, &t);
    let out = String::from_utf8_lossy(&vm.output()).into_owned();
    if !out.contains("Secure boot enabled") {
        vm.fail("the kernel did not report Secure Boot enabled: not a Secure Boot boot");
    }
}

/// The one user-editable file works: parameters put in /lifeboat.cfg reach the kernel (here an
/// unattended `list --json`), and the inventory marks the stick, and only it, as boot media.
#[test]
fn lifeboat_cfg_params_reach_the_kernel_and_list_marks_the_stick() {
    let t = TempDir::new("usb-cfg").unwrap();
    let img = stick_with_cfg(
        &t,
        "# edited by the test\nset timeout=0\nset lifeboat_params='lifeboat.settle=5 lifeboat.then=stay'\nset lifeboat_run='list --json'\n",
    );
    let before = sha256(&img);
    let fw = Firmware::uefi(t.path()).unwrap();
    let mut vm = Vm::boot_firmware("usb-cfg", &fw, vec![stick(&img), other_disk(&t)], vec![])
        .unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(BOOT);
    let res = vm.check(res);
    let out = String::from_utf8_lossy(&vm.output()).into_owned();
    let cmdline = out
        .lines()
        .find(|l| l.contains("Kernel command line:"))
        .unwrap_or("")
        .to_string();
    if !cmdline.contains("lifeboat.settle=5 lifeboat.then=stay \"lifeboat.run=list --json\"") {
        vm.fail(&format!(
            "the parameters of /lifeboat.cfg must reach the kernel command line: {cmdline}"
        ));
    }
    let devices = res["output"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let flag = |serial: &str| {
        devices
            .iter()
            .find(|d| d["serial"].as_str() == Some(serial))
            .map(|d| d["boot_media"].clone())
    };
    if flag(STICK) != Some(Value::Bool(true)) {
        vm.fail(&format!(
            "list --json must mark the stick boot_media: true: {res}"
        ));
    }
    if flag(OTHER) != Some(Value::Bool(false)) {
        vm.fail(&format!(
            "list --json must mark the NVMe disk boot_media: false: {res}"
        ));
    }
    drop(vm);
    assert_eq!(before, sha256(&img), "booting must not write to the stick");
}

fn iso_boots_to_ready(name: &str, fw: Firmware, t: &TempDir) {
    let iso = t.join("lifeboat.iso");
    std::fs::copy(media("lifeboat.iso"), &iso).unwrap();
    let mut vm = Vm::boot_firmware(
        name,
        &fw,
        vec![other_disk(t)],
        cdrom_args(&iso, "LBCDROM01"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ready = vm.wait_ready(BOOT);
    let ready = vm.check(ready);
    // The CD drive is found by the ISO's volume UUID; ATAPI drives may have no serial, then
    // PID 1 reports the kernel name.
    match ready["boot_media"].as_str() {
        Some("LBCDROM01") | Some("sr0") => {}
        _ => vm.fail(&format!(
            "LIFEBOAT-READY must give boot_media = the CD drive (LBCDROM01 or sr0): {ready}"
        )),
    }
}

#[test]
fn iso_boots_as_cd_under_bios() {
    let t = TempDir::new("usb-iso-bios").unwrap();
    iso_boots_to_ready("usb-iso-bios", Firmware::Bios, &t);
}

#[test]
fn iso_boots_as_cd_under_uefi() {
    let t = TempDir::new("usb-iso-uefi").unwrap();
    let fw = Firmware::uefi(t.path()).unwrap();
    iso_boots_to_ready("usb-iso-uefi", fw, &t);
}

/// The hybrid ISO written to a stick (`dd`) boots from USB too, and is recognised there.
#[test]
fn iso_written_to_a_stick_boots_under_uefi() {
    let t = TempDir::new("usb-iso-stick").unwrap();
    let img = t.join("iso-stick.img");
    std::fs::copy(media("lifeboat.iso"), &img).unwrap();
    let fw = Firmware::uefi(t.path()).unwrap();
    let mut vm = Vm::boot_firmware(
        "usb-iso-stick",
        &fw,
        vec![stick(&img), other_disk(&t)],
        vec![],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ready = vm.wait_ready(BOOT);
    let ready = vm.check(ready);
    if ready["boot_media"].as_str() != Some(STICK) {
        vm.fail(&format!(
            "LIFEBOAT-READY must give boot_media = the stick's serial {STICK}: {ready}"
        ));
    }
}
