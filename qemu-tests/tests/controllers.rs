//! Issue 17's "done means" for controllers, in two boots:
//! 1. `list --json` with a disk behind each of `megasas`, `megasas-gen2`, `mptsas1068`,
//!    `lsi53c895a`, `am53c974`, an SD card on `sdhci-pci`, a `usb-uas` disk, and an NVMe
//!    subsystem whose controller has two namespaces: each listed exactly once, with its size,
//!    serial (where the controller passes one) and transport; the namespaces by nsid (the
//!    hidden multipath paths `nvmeXcYnZ` not listed), the SAS disk with its SAS address as WWN.
//!    A `pvscsi` controller whose driver the kernel refuses to load
//!    (`module_blacklist=vmw_pvscsi`) is reported in `unsupported_controllers`: a PCI storage
//!    controller without a driver. A second `megasas` with no disk attached (a RAID controller
//!    without a logical drive) is the one entry of `controllers_without_disks`: its driver is
//!    loaded, no disk is behind it. `nvme_core.default_ps_max_latency_us=0` on the kernel
//!    command line is read back from /sys/module by the boot, which says it is in effect.
//! 2. A clone from the LSI 53C895A disk onto the MegaRAID SAS 2108 disk; the host compares them
//!    and checks the source unchanged.
use lifeboat_qemu_tests::disks::sha256;
use lifeboat_qemu_tests::{artefacts, qemu, run_param, Bus, DiskSpec, SerialMode, Vm, VmSpec};
use lifeboat_qemu_tests::{TempDir, RESULT};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// A zero-filled raw disk of `mib` MiB.
fn raw(t: &TempDir, name: &str, mib: u64) -> PathBuf {
    let p = t.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(mib * MIB).unwrap();
    p
}

/// Boots `disks` (plus `extra` QEMU arguments) with `params` and returns the result line.
fn boot(name: &str, params: &str, disks: Vec<DiskSpec>, extra: &[&str]) -> (Vm, Value) {
    let a = artefacts().unwrap_or_else(|e| panic!("{e}"));
    let mut spec = VmSpec::new(&a.kernel, &a.initrd, SerialMode::Terminal);
    spec.append = qemu::default_append(params);
    spec.disks = disks;
    spec.extra = extra.iter().map(|s| s.to_string()).collect();
    let mut vm = Vm::start(name, spec).unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(Duration::from_secs(420));
    let res = vm.check(res);
    (vm, res)
}

/// What a disk must look like in the guest's list.
struct Want {
    serial: Option<&'static str>,
    nsid: Option<u32>,
    size: u64,
    transport: &'static str,
}

fn check(devices: &[Value], w: &Want) -> Vec<String> {
    let hits: Vec<&Value> = devices
        .iter()
        .filter(|d| match w.serial {
            Some(s) => d["serial"] == s && w.nsid.is_none_or(|n| d["nsid"] == n),
            // No serial from the controller: the only disk of that transport and size.
            None => d["transport"] == w.transport && d["size_bytes"] == w.size,
        })
        .collect();
    let who = format!("{:?} nsid {:?} ({})", w.serial, w.nsid, w.transport);
    let d = match hits.as_slice() {
        [d] => *d,
        [] => return vec![format!("{who}: not listed")],
        _ => return vec![format!("{who}: listed {} times", hits.len())],
    };
    let mut errs = Vec::new();
    if d["size_bytes"] != w.size {
        errs.push(format!(
            "{who}: size_bytes {} != {}",
            d["size_bytes"], w.size
        ));
    }
    if d["transport"] != w.transport {
        errs.push(format!(
            "{who}: transport {} != {}",
            d["transport"], w.transport
        ));
    }
    errs
}

#[test]
fn every_controller_listed_once_then_a_sas_clone() {
    let t = TempDir::new("controllers").unwrap();
    // Distinct sizes tell the disks apart; an SD card's size must be a power of two. The
    // SAS1068 disk gets a SAS address (`qemu::sas_address`): without one Linux's mptsas
    // ignores it.
    let layout: [(&str, Bus, &str, u64); 9] = [
        ("megasas.img", Bus::Megasas, "LB-MEGASAS-01", 40),
        ("megasas2.img", Bus::MegasasGen2, "LB-MEGASAS2-02", 44),
        ("mptsas.img", Bus::Mptsas, "LB-MPTSAS-03", 48),
        ("lsi.img", Bus::Lsi, "LB-LSI-04", 52),
        ("am53c974.img", Bus::Am53c974, "LB-AM53C974-05", 56),
        ("sd.img", Bus::Sd, "NOT-PASSED", 32),
        ("uas.img", Bus::Uas, "LB-UAS-07", 60),
        ("ns1.img", Bus::NvmeNs(1), "LB-NVSUB-08", 64),
        ("ns2.img", Bus::NvmeNs(2), "LB-NVSUB-08", 68),
    ];
    let disks: Vec<DiskSpec> = layout
        .iter()
        .map(|(f, bus, serial, mib)| DiskSpec::new(raw(&t, f, *mib), *bus, serial))
        .collect();
    let wants: Vec<Want> = layout
        .iter()
        .map(|(_, bus, serial, mib)| Want {
            serial: bus.serial_passed().then_some(*serial),
            nsid: match bus {
                Bus::NvmeNs(n) => Some(*n),
                _ => None,
            },
            size: mib * MIB,
            transport: bus.transport(),
        })
        .collect();
    // A module parameter from the kernel command line, read back from /sys/module by the boot.
    let params = format!(
        "{} module_blacklist=vmw_pvscsi nvme_core.default_ps_max_latency_us=0",
        run_param("list --json")
    );
    let (mut vm, res) = boot(
        "controllers",
        &params,
        disks,
        &[
            "-device",
            "pvscsi,id=pvscsi0",
            "-device",
            "megasas,id=megasas_empty",
        ],
    );
    if res["ok"] != true {
        vm.fail(&format!("list --json failed: {res}"));
    }
    let out = &res["output"];
    let devices = out["devices"].as_array().cloned().unwrap_or_default();
    let mut errs: Vec<String> = wants.iter().flat_map(|w| check(&devices, w)).collect();
    if devices.len() != wants.len() {
        errs.push(format!(
            "{} disks listed, expected {}",
            devices.len(),
            wants.len()
        ));
    }
    if devices.iter().any(|d| {
        d["name"]
            .as_str()
            .is_some_and(|n| n.contains('c') && n.starts_with("nvme"))
    }) {
        errs.push("a hidden NVMe path device (nvmeXcYnZ) is listed".into());
    }
    // The pvscsi controller, driverless: VMware 15ad:07c0, SCSI storage class 0100.
    let unsupported = out["unsupported_controllers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let pv: Vec<&Value> = unsupported
        .iter()
        .filter(|u| u["id"] == "15ad:07c0")
        .collect();
    match pv.as_slice() {
        [u] => {
            if u["bus"] != "pci" || u["class"] != "010000" || u["driver"] != Value::Null {
                errs.push(format!("pvscsi reported as {u}"));
            }
        }
        _ => errs.push(format!(
            "pvscsi (15ad:07c0) not reported once in unsupported_controllers: {unsupported:?}"
        )),
    }
    if unsupported.len() != 1 {
        errs.push(format!(
            "only pvscsi lacks a driver, yet unsupported_controllers = {unsupported:?}"
        ));
    }
    // The SAS disk's WWN is the SAS address QEMU was given (disk 2 of the layout).
    let sas_wwn = format!("naa.{:016x}", qemu::sas_address(2));
    if !devices
        .iter()
        .any(|d| d["serial"] == "LB-MPTSAS-03" && d["wwn"] == sas_wwn.as_str())
    {
        errs.push(format!("the SAS1068 disk does not report wwn {sas_wwn}"));
    }
    // The empty MegaRAID (LSI SAS1078, 1000:0060, RAID class): driver loaded, no disk. The
    // one with a disk, and every other controller here, is not listed.
    let without = out["controllers_without_disks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match without.as_slice() {
        [w] if w["id"] == "1000:0060"
            && w["class"] == "010400"
            && w["driver"] == "megaraid_sas"
            && w["note"]
                .as_str()
                .is_some_and(|n| n.contains("no disk found behind it")) => {}
        _ => errs.push(format!(
            "controllers_without_disks should be the empty megasas alone: {without:?}"
        )),
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    let console = String::from_utf8_lossy(&vm.output()).into_owned();
    let results = console.lines().filter(|l| l.contains(RESULT)).count();
    let applied = "lifeboat: module parameter nvme_core.default_ps_max_latency_us=0 in effect";
    if !console.contains(applied) {
        errs.push(format!("the console does not say {applied:?}"));
    }
    if results != 1 {
        errs.push(format!("{results} LIFEBOAT-RESULT lines, expected one"));
    }
    if !errs.is_empty() {
        let pretty = serde_json::to_string_pretty(out).unwrap_or_default();
        vm.fail(&format!(
            "controller inventory mismatches:\n  {}\nguest output:\n{pretty}",
            errs.join("\n  ")
        ));
    }
    drop(vm);

    // Boot 2: clone the parallel-SCSI disk onto the SAS RAID one, end to end.
    let src = t.join("clone-src.img");
    std::fs::write(&src, pattern(24 * MIB)).unwrap();
    let dst = raw(&t, "clone-dst.img", 24);
    let before = sha256(&src).unwrap();
    let (mut vm, res) = boot(
        "controllers-clone",
        &run_param("clone serial=LB-LSI-SRC serial=LB-MEGASAS2-DST --yes --json"),
        vec![
            DiskSpec::new(&src, Bus::Lsi, "LB-LSI-SRC"),
            DiskSpec::new(&dst, Bus::MegasasGen2, "LB-MEGASAS2-DST"),
        ],
        &[],
    );
    if res["exit_code"] != 0 {
        vm.fail(&format!("the clone failed: {res}"));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    assert_eq!(sha256(&src).unwrap(), before, "the source changed");
    assert!(
        same(&src, &dst),
        "the target differs from the source after the clone: {res}"
    );
}

/// Deterministic non-zero bytes (no partition table: the whole disk is copied).
fn pattern(len: u64) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn same(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}
