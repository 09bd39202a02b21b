//! Booting the built artefacts: the interactive boot announces itself with LIFEBOAT-READY, an
//! unattended command's failure is reported as such, lifeboat.then=poweroff ends the VM, and a
//! USB disk plugged in after boot is driven (uevent → usb-storage loaded) and listed.
use lifeboat_qemu_tests::disks::{sha256, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{
    qemu, run_param, Bus, DiskSpec, SerialMode, TempDir, Vm, VmSpec, RESULT,
};
use serde_json::Value;
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(240);

fn one_disk(t: &TempDir) -> Vec<DiskSpec> {
    let p = t.join("boot.img");
    DiskBuilder::new(32, Table::Gpt)
        .part(Part::new(16, Fs::Ext4).label("BOOTTEST"))
        .build(&p)
        .unwrap();
    vec![DiskSpec::new(p, Bus::Virtio, "BOOT-VIRTIO")]
}

fn count_results(vm: &Vm) -> usize {
    String::from_utf8_lossy(&vm.output())
        .lines()
        .filter(|l| l.contains(RESULT))
        .count()
}

#[test]
fn interactive_boot_prints_ready() {
    let t = TempDir::new("boot-ready").unwrap();
    let mut vm = Vm::boot("boot-ready", "", one_disk(&t)).unwrap_or_else(|e| panic!("{e}"));
    let ready = vm.wait_ready(BOOT);
    let ready = vm.check(ready);
    for key in ["version", "boot_ms", "disks", "consoles"] {
        if ready.get(key).is_none() {
            vm.fail(&format!("LIFEBOAT-READY lacks `{key}`: {ready}"));
        }
    }
    let disks = ready["disks"].as_array().cloned().unwrap_or_default();
    if !disks.iter().any(|d| d.as_str() == Some("vda")) {
        vm.fail(&format!(
            "LIFEBOAT-READY disks {disks:?} lack the virtio disk vda: {ready}"
        ));
    }
    if count_results(&vm) != 0 {
        vm.fail("an interactive boot printed a LIFEBOAT-RESULT line");
    }
}

#[test]
fn failing_command_reports_failure() {
    let t = TempDir::new("boot-fail").unwrap();
    let params = run_param("list --no-such-option");
    let mut vm =
        Vm::boot("boot-failing-command", &params, one_disk(&t)).unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(BOOT);
    let res = vm.check(res);
    if res["ok"] != Value::Bool(false) {
        vm.fail(&format!("a failing command must give ok:false: {res}"));
    }
    let code = res["exit_code"].as_i64().unwrap_or(0);
    if code == 0 {
        vm.fail(&format!(
            "a failing command must give a nonzero exit_code: {res}"
        ));
    }
    if res["command"].as_str() != Some("list --no-such-option") {
        vm.fail(&format!("`command` must echo the command: {res}"));
    }
}

#[test]
fn then_poweroff_ends_the_vm() {
    let t = TempDir::new("boot-poweroff").unwrap();
    let params = format!("{} lifeboat.then=poweroff", run_param("list"));
    let mut vm = Vm::boot("boot-poweroff", &params, one_disk(&t)).unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(BOOT);
    let res = vm.check(res);
    if res["ok"] != Value::Bool(true) || res["exit_code"].as_i64() != Some(0) {
        vm.fail(&format!("`list` must succeed: {res}"));
    }
    // QEMU exits by itself (poweroff); the harness would otherwise kill it on drop.
    let exit = vm.wait_exit(Duration::from_secs(60));
    vm.check(exit);
    if count_results(&vm) != 1 {
        vm.fail(&format!(
            "expected exactly one LIFEBOAT-RESULT line, got {}",
            count_results(&vm)
        ));
    }
}

#[test]
fn usb_disk_plugged_in_after_boot_is_listed() {
    let t = TempDir::new("boot-hotplug").unwrap();
    let hot = t.join("hot.img");
    let built = DiskBuilder::new(48, Table::Mbr)
        .part(Part::new(32, Fs::Vfat).label("HOTFAT"))
        .build(&hot)
        .unwrap();
    let before = sha256(&hot).unwrap();
    let a = lifeboat_qemu_tests::artefacts().unwrap_or_else(|e| panic!("{e}"));
    let mut spec = VmSpec::new(&a.kernel, &a.initrd, SerialMode::Terminal);
    // The command waits for the disk the test plugs in once the environment says it is waiting.
    spec.append = qemu::default_append(&format!(
        "{} lifeboat.wait=serial=LB-HOT-0001 lifeboat.wait_timeout=150",
        run_param("list --json")
    ));
    spec.disks = one_disk(&t);
    // An empty xHCI controller: no USB disk at boot, so usb-storage is not loaded by coldplug.
    spec.extra = vec!["-device".into(), "qemu-xhci,id=xhci".into()];
    let mut vm = Vm::start("boot-hotplug", spec).unwrap_or_else(|e| panic!("{e}"));
    let waiting = vm.wait_marker("LIFEBOAT-WAITING ", BOOT);
    let waiting = vm.check(waiting);
    if waiting["selectors"] != serde_json::json!(["serial=LB-HOT-0001"]) {
        vm.fail(&format!(
            "LIFEBOAT-WAITING names the wrong disks: {waiting}"
        ));
    }
    let img = qemu::escape_opt(&hot.to_string_lossy());
    let r = vm.monitor(&format!(
        "drive_add 0 if=none,id=hot0,format=raw,file={img}"
    ));
    let out = vm.check(r);
    if out.contains("rror") {
        vm.fail(&format!("drive_add failed: {out}"));
    }
    let r =
        vm.monitor("device_add usb-storage,drive=hot0,bus=xhci.0,serial=LB-HOT-0001,id=hotdisk");
    let out = vm.check(r);
    // The monitor echoes the command line (with readline redraws); errors start with "Error".
    if out.contains("rror") {
        vm.fail(&format!("device_add failed: {out}"));
    }
    let res = vm.wait_result(BOOT);
    let res = vm.check(res);
    if res["ok"] != Value::Bool(true) {
        vm.fail(&format!("list --json failed after the hotplug: {res}"));
    }
    let devices = res["output"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let Some(d) = devices.iter().find(|d| d["serial"] == "LB-HOT-0001") else {
        vm.fail(&format!("the hot-plugged disk is not listed: {res}"));
    };
    if d["transport"] != "usb" || d["size_bytes"].as_u64() != Some(built.size_bytes) {
        vm.fail(&format!(
            "hot-plugged disk has the wrong transport or size: {d}"
        ));
    }
    let parts = d["partitions"].as_array().cloned().unwrap_or_default();
    if parts.len() != 1 || parts[0]["label"] != "HOTFAT" || parts[0]["fs_type"] != "vfat" {
        vm.fail(&format!("hot-plugged disk's partition is wrong: {d}"));
    }
    if !devices.iter().any(|d| d["serial"] == "BOOT-VIRTIO") {
        vm.fail(&format!("the boot-time disk vanished: {res}"));
    }
    let log = String::from_utf8_lossy(&vm.output()).into_owned();
    let name = d["name"].as_str().unwrap_or("?");
    if !log.contains(&format!("hotplug: disk {name} added")) {
        vm.fail(&format!(
            "no `hotplug: disk {name} added` line from the uevent listener"
        ));
    }
    let exit = vm.wait_exit(Duration::from_secs(60));
    vm.check(exit);
    drop(vm);
    assert_eq!(
        sha256(&hot).unwrap(),
        before,
        "listing must not write to the disk"
    );
}

#[test]
fn power_button_powers_off_cleanly() {
    let t = TempDir::new("boot-powerbutton").unwrap();
    let mut vm = Vm::boot("boot-powerbutton", "", one_disk(&t)).unwrap_or_else(|e| panic!("{e}"));
    let ready = vm.wait_ready(BOOT);
    vm.check(ready);
    // The ACPI power button, as a person pressing it on a PC.
    let r = vm.monitor("system_powerdown");
    vm.check(r);
    let exit = vm.wait_exit(Duration::from_secs(60));
    vm.check(exit);
    let log = String::from_utf8_lossy(&vm.output()).into_owned();
    for want in ["power button pressed", "powering off"] {
        if !log.contains(want) {
            vm.fail(&format!("no `{want}` line before the VM ended"));
        }
    }
}

/// A guest kernel that never gets to /init (held here with `-S`, as QEMU's TCG now and then hangs
/// one in early boot) is booted again twice, its silent consoles kept, and then reported as such;
/// a normal boot (every other test) passes the same watch.
#[test]
fn kernel_silent_before_init_is_booted_again_then_reported() {
    let a = lifeboat_qemu_tests::artefacts().unwrap_or_else(|e| panic!("{e}"));
    let name = "boot-hung-kernel";
    let logs = lifeboat_qemu_tests::logs_dir();
    for n in 1..=4 {
        let _ = std::fs::remove_file(logs.join(format!("{name}.hung-{n}.log")));
    }
    let mut spec = VmSpec::new(&a.kernel, &a.initrd, SerialMode::Terminal);
    spec.extra = vec!["-S".into()];
    spec.boot_stall = Some(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let err = match Vm::start(name, spec) {
        Ok(mut vm) => {
            vm.kill();
            panic!("a guest that never ran was taken for booted");
        }
        Err(e) => e,
    };
    assert!(err.contains("printed nothing"), "{err}");
    for n in 1..=3 {
        assert!(
            logs.join(format!("{name}.hung-{n}.log")).exists(),
            "console of boot {n} not kept: {err}"
        );
    }
    assert!(!logs.join(format!("{name}.hung-4.log")).exists());
    assert!(started.elapsed() >= Duration::from_secs(6), "{err}");
}
