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
    other_disk_mib(t, 32)
}

fn other_disk_mib(t: &TempDir, mib: u64) -> DiskSpec {
    let p = t.join("other.img");
    std::fs::File::create(&p)
        .unwrap()
        .set_len(mib << 20)
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
    // Lockdown refuses unsigned modules; the stick was found, so usb-storage & co. loaded, and
    // no module may have been turned away.
    for bad in [
        "Loading of unsigned module",
        "module verification failed",
        "Key was rejected",
    ] {
        if out.contains(bad) {
            vm.fail(&format!(
                "a module was refused under Secure Boot lockdown: {bad}"
            ));
        }
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

/// Jobs refuse the boot medium as a target: cloning a (smaller, blank) disk onto the stick
/// Lifeboat booted from ends with exit 4 (refused by a safety rule) and the stick is unchanged.
#[test]
fn clone_refuses_the_boot_stick_as_target() {
    let t = TempDir::new("usb-refuse").unwrap();
    let img = stick_with_cfg(
        &t,
        &format!(
            "set timeout=0\nset lifeboat_run='clone serial={OTHER} serial={STICK} --yes --json'\n"
        ),
    );
    let before = sha256(&img);
    let fw = Firmware::uefi(t.path()).unwrap();
    let mut vm = Vm::boot_firmware(
        "usb-refuse",
        &fw,
        vec![stick(&img), other_disk_mib(&t, 8)],
        vec![],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(BOOT);
    let res = vm.check(res);
    if res["exit_code"].as_i64() != Some(4) {
        vm.fail(&format!(
            "cloning onto the boot stick must be refused with exit 4: {res}"
        ));
    }
    let out = String::from_utf8_lossy(&vm.output()).into_owned();
    if !out.contains("booted from") {
        vm.fail("the refusal must say the target is the medium Lifeboat booted from");
    }
    drop(vm);
    assert_eq!(
        before,
        sha256(&img),
        "a refused clone must not write to the stick"
    );
}

// ---- The built media, checked with real tools on the host (no VM) ----

fn media_env() -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(media("media.env")).unwrap();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn tool(prog: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(prog)
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e} (run scripts/setup)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn stick_image_is_well_formed() {
    let env = media_env();
    let fat_uuid = &env["FAT_UUID"];
    let id = &env["LIFEBOAT_MEDIA_ID"];
    let img = media("lifeboat.img");
    let bytes = std::fs::read(&img).unwrap();
    assert!(
        bytes.len() < 64 << 20,
        "the stick image must stay a few tens of MiB"
    );
    // MBR: signature, the id as disk signature, one active FAT32-LBA partition at 1 MiB to the end.
    assert_eq!(&bytes[510..512], &[0x55, 0xAA]);
    let sig = u32::from_le_bytes(bytes[440..444].try_into().unwrap());
    assert_eq!(format!("{sig:08x}"), *id);
    let e = &bytes[446..462];
    assert_eq!(
        (e[0], e[4]),
        (0x80, 0x0c),
        "partition 1 must be active, type 0x0c"
    );
    let start = u32::from_le_bytes(e[8..12].try_into().unwrap()) as usize;
    let count = u32::from_le_bytes(e[12..16].try_into().unwrap()) as usize;
    assert_eq!(start, 2048);
    assert_eq!((start + count) * 512, bytes.len());
    assert!(
        bytes[462..510].iter().all(|&b| b == 0),
        "only one partition"
    );
    // GRUB's boot.img in the MBR (but for the patched drive check) and core.img behind it.
    let boot = std::fs::read("/usr/lib/grub/i386-pc/boot.img").unwrap();
    assert_eq!(&bytes[..0x66], &boot[..0x66]);
    assert_eq!(&bytes[0x66..0x68], &[0x90, 0x90]);
    assert_eq!(&bytes[0x68..440], &boot[0x68..440]);
    let diskboot = std::fs::read("/usr/lib/grub/i386-pc/diskboot.img").unwrap();
    assert_eq!(
        &bytes[512..512 + 0x100],
        &diskboot[..0x100],
        "core.img at sector 1"
    );
    // The FAT passes fsck and carries the id as its serial.
    let t = TempDir::new("usb-wellformed").unwrap();
    let part = t.join("part.img");
    std::fs::write(&part, &bytes[start * 512..]).unwrap();
    let p = part.to_string_lossy().into_owned();
    let (ok, out) = tool("fsck.vfat", &["-n", &p]);
    assert!(ok, "fsck.vfat -n: {out}");
    let (_, out) = tool("blkid", &["-p", "-o", "export", &p]);
    assert!(out.contains(&format!("UUID={fat_uuid}")), "blkid: {out}");
    assert!(out.contains("LABEL=LIFEBOAT"), "blkid: {out}");
    // The Secure Boot chain is Debian's signed binaries, unchanged.
    for (inside, pkg) in [
        (
            "::/EFI/BOOT/BOOTX64.EFI",
            "/usr/lib/shim/shimx64.efi.signed",
        ),
        (
            "::/EFI/BOOT/grubx64.efi",
            "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
        ),
        ("::/EFI/BOOT/mmx64.efi", "/usr/lib/shim/mmx64.efi.signed"),
    ] {
        let dest = t.join("copy.efi");
        let _ = std::fs::remove_file(&dest);
        let (ok, out) = tool("mcopy", &["-i", &p, inside, &dest.to_string_lossy()]);
        assert!(ok, "mcopy {inside}: {out}");
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(pkg).unwrap(),
            "{inside} must be {pkg}"
        );
    }
    let (ok, cfg) = tool("mtype", &["-i", &p, "::/boot/grub/grub.cfg"]);
    assert!(ok, "{cfg}");
    assert!(
        cfg.contains(&format!("lifeboat_media=\"{fat_uuid}\"")),
        "{cfg}"
    );
    assert!(cfg.contains("console=tty0 console=ttyS0,115200"), "{cfg}");
    assert!(cfg.contains("nomodeset"), "{cfg}");
    let (ok, user) = tool("mtype", &["-i", &p, "::/lifeboat.cfg"]);
    assert!(ok && user.contains("set lifeboat_params="), "{user}");
    let (ok, efi) = tool("mtype", &["-i", &p, "::/EFI/debian/grub.cfg"]);
    assert!(ok && efi.contains(&fat_uuid.to_lowercase()), "{efi}");
}

#[test]
fn iso_is_well_formed() {
    let env = media_env();
    let iso = media("lifeboat.iso");
    let size = std::fs::metadata(&iso).unwrap().len();
    assert!(size < 64 << 20, "the ISO must stay a few tens of MiB");
    let p = iso.to_string_lossy().into_owned();
    let (_, out) = tool("blkid", &["-p", "-o", "export", &p]);
    assert!(
        out.contains(&format!("UUID={}", env["ISO_UUID"])),
        "blkid: {out}"
    );
    assert!(out.contains("TYPE=iso9660"), "blkid: {out}");
    let (ok, rep) = tool("xorriso", &["-indev", &p, "-report_el_torito", "plain"]);
    assert!(ok, "{rep}");
    assert!(
        rep.lines()
            .any(|l| l.contains("boot img") && l.contains("BIOS")),
        "no BIOS El Torito image: {rep}"
    );
    assert!(
        rep.lines()
            .any(|l| l.contains("boot img") && l.contains("UEFI")),
        "no UEFI El Torito image: {rep}"
    );
    // Hybrid: an MBR boot signature so the ISO also boots from a stick.
    let head = std::fs::read(&iso).unwrap();
    assert_eq!(&head[510..512], &[0x55, 0xAA]);
}
