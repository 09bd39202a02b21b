//! Issue 12's drive health, read by Lifeboat itself in the VM: QEMU's AHCI disk answers ATA
//! SMART (through libata's SAT), QEMU's NVMe controller its SMART / Health log (one of them with
//! a critical-warning bit set, so it reads as failing), and the virtio, virtio-scsi and USB
//! disks cannot report. Checked from the host in `list --json`; then a clone onto the failing
//! NVMe disk is refused (exit 4) without `--yes`, naming the reason.
use lifeboat_qemu_tests::disks::{sha256, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{run_param, Bus, DiskSpec, TempDir, Vm};
use serde_json::Value;
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(300);

fn disks(t: &TempDir) -> Vec<DiskSpec> {
    let img = |name: &str, mib: u64| {
        let p = t.join(name);
        DiskBuilder::new(mib, Table::Gpt)
            .part(Part::new(mib - 8, Fs::Ext4).label("HEALTH"))
            .build(&p)
            .unwrap_or_else(|e| panic!("building {name}: {e}"));
        p
    };
    vec![
        DiskSpec::new(img("sata.img", 32), Bus::Sata, "LB-H-SATA").model("LB HEALTH SATA"),
        DiskSpec::new(img("nvme.img", 32), Bus::Nvme, "LB-H-NVME"),
        // Critical Warning bit 2: "NVM subsystem reliability has been degraded".
        DiskSpec::new(img("bad.img", 48), Bus::Nvme, "LB-H-NVMEBAD").nvme_critical_warning(0x04),
        DiskSpec::new(img("virtio.img", 32), Bus::Virtio, "LB-H-VIRTIO"),
        DiskSpec::new(img("scsi.img", 32), Bus::Scsi, "LB-H-SCSI"),
        DiskSpec::new(img("usb.img", 32), Bus::Usb, "LB-H-USB"),
    ]
}

fn by_serial<'a>(devices: &'a [Value], serial: &str) -> &'a Value {
    devices
        .iter()
        .find(|d| d["serial"].as_str() == Some(serial))
        .unwrap_or_else(|| panic!("no disk with serial {serial} in {devices:?}"))
}

/// Every mismatch in one disk's `health`, one line each.
fn check_health(
    d: &Value,
    status: &str,
    protocol: Option<&str>,
    counters: &[&str],
    reason: Option<&str>,
) -> Vec<String> {
    let serial = d["serial"].as_str().unwrap_or("?");
    let h = &d["health"];
    let mut errs = Vec::new();
    if h["status"] != status {
        errs.push(format!(
            "{serial}: status {}, expected {status}: {h}",
            h["status"]
        ));
    }
    if h["protocol"].as_str() != protocol {
        errs.push(format!(
            "{serial}: protocol {}, expected {protocol:?}",
            h["protocol"]
        ));
    }
    for c in counters {
        if !h["counters"][c].is_u64() {
            errs.push(format!("{serial}: counter {c} missing: {}", h["counters"]));
        }
    }
    let reasons: Vec<&str> = h["reasons"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match reason {
        None if !reasons.is_empty() => {
            errs.push(format!("{serial}: reasons {reasons:?}, expected none"))
        }
        Some(r) if !reasons.iter().any(|x| x.contains(r)) => {
            errs.push(format!("{serial}: no reason mentions {r:?}: {reasons:?}"))
        }
        _ => {}
    }
    if h.get("attributes").is_some() {
        errs.push(format!("{serial}: list --json carries the attribute table"));
    }
    errs
}

#[test]
fn health_in_list_json_and_a_failing_target_refused() {
    let t = TempDir::new("health").unwrap();
    let specs = disks(&t);
    let mut vm = Vm::boot("health-list", &run_param("list --json"), specs.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(BOOT);
    let res = vm.check(res);
    if res["ok"] != Value::Bool(true) {
        vm.fail(&format!("list --json failed: {res}"));
    }
    let devices = res["output"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut errs = Vec::new();
    let sata = by_serial(&devices, "LB-H-SATA");
    errs.extend(check_health(
        sata,
        "ok",
        Some("ata"),
        &[
            "reallocated_sectors",
            "power_on_hours",
            "power_cycles",
            "temperature_celsius",
        ],
        None,
    ));
    // QEMU's ide-hd: attribute 5 raw 0, attribute 9 (power-on hours) raw 1.
    if sata["health"]["counters"]["reallocated_sectors"] != 0
        || sata["health"]["counters"]["power_on_hours"] != 1
    {
        errs.push(format!(
            "LB-H-SATA counters: {}",
            sata["health"]["counters"]
        ));
    }
    let nvme_counters = [
        "critical_warning",
        "media_errors",
        "percentage_used",
        "available_spare",
        "available_spare_threshold",
        "power_on_hours",
        "unsafe_shutdowns",
        "temperature_celsius",
    ];
    let nvme = by_serial(&devices, "LB-H-NVME");
    errs.extend(check_health(nvme, "ok", Some("nvme"), &nvme_counters, None));
    if nvme["health"]["counters"]["critical_warning"] != 0
        || nvme["health"]["counters"]["media_errors"] != 0
    {
        errs.push(format!(
            "LB-H-NVME counters: {}",
            nvme["health"]["counters"]
        ));
    }
    let bad = by_serial(&devices, "LB-H-NVMEBAD");
    errs.extend(check_health(
        bad,
        "failing",
        Some("nvme"),
        &nvme_counters,
        Some("reliability is degraded"),
    ));
    if bad["health"]["counters"]["critical_warning"] != 4 {
        errs.push(format!(
            "LB-H-NVMEBAD counters: {}",
            bad["health"]["counters"]
        ));
    }
    errs.extend(check_health(
        by_serial(&devices, "LB-H-VIRTIO"),
        "unknown",
        None,
        &[],
        Some("virtio"),
    ));
    errs.extend(check_health(
        by_serial(&devices, "LB-H-SCSI"),
        "unknown",
        None,
        &[],
        // QEMU's scsi-hd answers no LOG SENSE page.
        Some("does not answer LOG SENSE"),
    ));
    errs.extend(check_health(
        by_serial(&devices, "LB-H-USB"),
        "unknown",
        None,
        &[],
        Some("USB bridge"),
    ));
    if !errs.is_empty() {
        vm.fail(&format!("health mismatches:\n{}", errs.join("\n")));
    }
    vm.kill();
    drop(vm);

    // A clone onto the failing NVMe disk without --yes: refused, nothing written.
    let before = sha256(&specs[2].image).unwrap();
    let mut vm = Vm::boot(
        "health-refuse",
        &run_param("clone serial=LB-H-SATA serial=LB-H-NVMEBAD --json"),
        specs.clone(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(BOOT);
    let res = vm.check(res);
    let msg = res["output"]["error"]["message"].as_str().unwrap_or("");
    if res["exit_code"] != 4 || !msg.contains("FAILING") || !msg.contains("--yes") {
        vm.fail(&format!(
            "expected a refusal naming the failing target: {res}"
        ));
    }
    vm.kill();
    drop(vm);
    assert_eq!(
        sha256(&specs[2].image).unwrap(),
        before,
        "the refused target was written"
    );
}
