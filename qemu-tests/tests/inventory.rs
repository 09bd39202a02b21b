//! Issue 2's "done means": five disks on the five buses (virtio-blk, AHCI SATA, NVMe, USB
//! storage on xHCI, virtio-scsi) plus a 4096-byte-sector NVMe disk, GPT and MBR, ext4/vfat/exfat
//! with labels, booted with lifeboat.run="list --json"; every field checked from the host.
use lifeboat_qemu_tests::disks::{BuiltDisk, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{run_param, Bus, DiskSpec, TempDir, Vm, RESULT};
use serde_json::Value;
use std::time::Duration;

struct Expect {
    spec: DiskSpec,
    built: BuiltDisk,
}

fn disk(
    t: &TempDir,
    file: &str,
    builder: DiskBuilder,
    spec: impl FnOnce(std::path::PathBuf) -> DiskSpec,
) -> Expect {
    let path = t.join(file);
    let built = builder
        .build(&path)
        .unwrap_or_else(|e| panic!("building {file}: {e}"));
    Expect {
        spec: spec(path),
        built,
    }
}

fn str_or_null(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

/// Every mismatch between the guest's view and what was built, one line each.
fn compare(devices: &[Value], e: &Expect) -> Vec<String> {
    let serial = &e.spec.serial;
    let mut errs = Vec::new();
    let found: Vec<&Value> = devices
        .iter()
        .filter(|d| d["serial"].as_str() == Some(serial.as_str()))
        .collect();
    let d = match found.as_slice() {
        [d] => *d,
        [] => return vec![format!("{serial}: no device with this serial")],
        _ => {
            return vec![format!(
                "{serial}: {} devices with this serial",
                found.len()
            )]
        }
    };
    let mut eq = |field: &str, got: &Value, want: Value| {
        if *got != want {
            errs.push(format!("{serial}: {field} = {got}, expected {want}"));
        }
    };
    eq("size_bytes", &d["size_bytes"], e.built.size_bytes.into());
    eq("transport", &d["transport"], e.spec.bus.transport().into());
    let lbs = e.spec.logical_block_size.unwrap_or(512);
    eq("logical_block_size", &d["logical_block_size"], lbs.into());
    eq(
        "physical_block_size",
        &d["physical_block_size"],
        e.spec.physical_block_size.unwrap_or(lbs).into(),
    );
    eq(
        "partition_table",
        &d["partition_table"],
        e.built.table.as_str().into(),
    );
    eq("read_only", &d["read_only"], e.spec.read_only.into());
    eq("removable", &d["removable"], e.spec.removable.into());
    let model = str_or_null(&d["model"]).map(str::trim);
    if model != e.spec.expected_model().as_deref() {
        errs.push(format!(
            "{serial}: model = {:?}, expected {:?}",
            d["model"],
            e.spec.expected_model()
        ));
    }
    for key in ["name", "path", "vendor", "wwn", "rotational"] {
        if d.get(key).is_none() {
            errs.push(format!("{serial}: field `{key}` missing"));
        }
    }
    let parts = d["partitions"].as_array().cloned().unwrap_or_default();
    if parts.len() != e.built.partitions.len() {
        errs.push(format!(
            "{serial}: {} partitions, expected {}",
            parts.len(),
            e.built.partitions.len()
        ));
    }
    for bp in &e.built.partitions {
        let Some(p) = parts
            .iter()
            .find(|p| p["number"].as_u64() == Some(bp.number as u64))
        else {
            errs.push(format!("{serial}: partition {} missing", bp.number));
            continue;
        };
        let n = bp.number;
        let mut peq = |field: &str, got: &Value, want: Value| {
            if *got != want {
                errs.push(format!(
                    "{serial} partition {n}: {field} = {got}, expected {want}"
                ));
            }
        };
        peq("start_bytes", &p["start_bytes"], bp.start_bytes.into());
        peq("size_bytes", &p["size_bytes"], bp.size_bytes.into());
        peq("fs_type", &p["fs_type"], bp.fs_type.clone().into());
        peq("label", &p["label"], bp.label.clone().into());
        let uuid = p["uuid"].as_str().map(str::to_ascii_lowercase);
        if uuid != bp.uuid.as_ref().map(|u| u.to_ascii_lowercase()) {
            errs.push(format!(
                "{serial} partition {n}: uuid = {}, expected {:?}",
                p["uuid"], bp.uuid
            ));
        }
        if p.get("name").is_none() {
            errs.push(format!("{serial} partition {n}: field `name` missing"));
        }
    }
    errs
}

#[test]
fn inventory_of_every_bus() {
    let t = TempDir::new("inventory").unwrap();
    let expects = [
        disk(
            &t,
            "virtio.img",
            DiskBuilder::new(64, Table::Gpt)
                .part(
                    Part::new(24, Fs::Ext4)
                        .label("VIRTROOT")
                        .name("root")
                        .file("etc/hostname", "box\n"),
                )
                .part(Part::new(24, Fs::Vfat).label("VIRTFAT").name("data")),
            |p| DiskSpec::new(p, Bus::Virtio, "LB-VIRTIO-0001"),
        ),
        disk(
            &t,
            "sata.img",
            DiskBuilder::new(72, Table::Mbr)
                .part(
                    Part::new(32, Fs::Vfat)
                        .label("SATAFAT")
                        .file("README.TXT", "sata\n"),
                )
                .part(Part::new(32, Fs::Ext4).label("SATAEXT")),
            |p| DiskSpec::new(p, Bus::Sata, "LB-SATA-0002").model("LB SATA DISK"),
        ),
        disk(
            &t,
            "nvme.img",
            DiskBuilder::new(80, Table::Gpt)
                .part(Part::new(40, Fs::Exfat).label("NVMEXFAT").name("store"))
                .part(Part::new(24, Fs::Ext4).label("NVMEEXT").name("linux")),
            |p| DiskSpec::new(p, Bus::Nvme, "LB-NVME-0003"),
        ),
        disk(
            &t,
            "usb.img",
            DiskBuilder::new(56, Table::Mbr).part(Part::new(48, Fs::Exfat).label("USBEXFAT")),
            |p| DiskSpec::new(p, Bus::Usb, "LB-USB-0004"),
        ),
        disk(
            &t,
            "scsi.img",
            DiskBuilder::new(96, Table::Gpt)
                .part(Part::new(40, Fs::Vfat).label("SCSIFAT").name("esp"))
                .part(Part::new(40, Fs::Ext4).label("SCSIEXT").name("home")),
            |p| DiskSpec::new(p, Bus::Scsi, "LB-SCSI-0005").model("LB SCSI DISK"),
        ),
        disk(
            &t,
            "nvme4k.img",
            DiskBuilder::new(64, Table::Gpt)
                .sector_size(4096)
                .part(Part::new(32, Fs::Ext4).label("FOURKEXT").name("4k")),
            |p| DiskSpec::new(p, Bus::Nvme, "LB-NVME4K-0006").block_size(4096, 4096),
        ),
    ];
    let specs = expects.iter().map(|e| e.spec.clone()).collect();
    let mut vm =
        Vm::boot("inventory", &run_param("list --json"), specs).unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(Duration::from_secs(300));
    let res = vm.check(res);
    if res["ok"] != Value::Bool(true) || res["exit_code"].as_i64() != Some(0) {
        vm.fail(&format!("list --json failed: {res}"));
    }
    let devices = res["output"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut errs: Vec<String> = expects.iter().flat_map(|e| compare(&devices, e)).collect();
    let exit = vm.wait_exit(Duration::from_secs(60));
    if let Err(e) = exit {
        errs.push(format!("QEMU did not power off after the result: {e}"));
    }
    let results = String::from_utf8_lossy(&vm.output())
        .lines()
        .filter(|l| l.contains(RESULT))
        .count();
    if results != 1 {
        errs.push(format!(
            "{results} LIFEBOAT-RESULT lines, expected exactly one"
        ));
    }
    if !errs.is_empty() {
        let pretty = serde_json::to_string_pretty(&res["output"]).unwrap_or_default();
        vm.fail(&format!(
            "inventory mismatches:\n  {}\nguest output:\n{pretty}",
            errs.join("\n  ")
        ));
    }
}
