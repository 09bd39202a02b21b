//! Booting the built artefacts: the interactive boot announces itself with LIFEBOAT-READY, an
//! unattended command's failure is reported as such, and lifeboat.then=poweroff ends the VM.
use lifeboat_qemu_tests::disks::{DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{run_param, Bus, DiskSpec, TempDir, Vm, RESULT};
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
