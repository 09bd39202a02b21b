//! Issue 3 in the booted environment: a source on virtio-blk behind QEMU's blkdebug (single bad
//! sectors, a 4 KiB block, a larger region, one transient sector) is cloned unattended with
//! `lifeboat.run="clone serial=SRC serial=DST --yes --json"` onto a larger NVMe disk. The host
//! then checks the report (exit 3, bad_ranges exactly the permanent faults, verified), the
//! target sector by sector (source bytes, zeros at the bad sectors), `sgdisk -v` on the target
//! (GPT moved to the larger disk's end) and that the source file is unchanged. A second test
//! does the same with 4096-byte logical sectors on both disks (no partition table there: the
//! host's sgdisk cannot write a 4Kn GPT into a plain file).
use lifeboat_qemu_tests::disks::sha256;
use lifeboat_qemu_tests::{run_param, Bus, DiskSpec, Faults, TempDir, Vm};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const SRC_SIZE: u64 = 48 * MIB;
const DST_SIZE: u64 = 64 * MIB;

/// Deterministic, sector-unique contents.
fn pattern(size: u64) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    let mut x: u64 = 0x1234_5678_9ABC_DEF1;
    for c in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    v
}

fn sgdisk(args: &[&str], img: &Path) -> String {
    let o = Command::new("sgdisk")
        .args(args)
        .arg(img)
        .output()
        .expect("sgdisk (scripts/setup installs gdisk)");
    let s = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "sgdisk {args:?}: {s}");
    s
}

#[test]
fn clone_failing_virtio_onto_nvme() {
    let t = TempDir::new("clone").unwrap();
    let src = t.join("src.img");
    let dst = t.join("dst.img");
    std::fs::write(&src, pattern(SRC_SIZE)).unwrap();
    sgdisk(
        &["-n1:1MiB:+20MiB", "-t1:8300", "-n2:0:+24MiB", "-t2:8300"],
        &src,
    );
    std::fs::write(&dst, vec![0x77u8; DST_SIZE as usize]).unwrap();
    let faults = Faults::new()
        .bad_bytes(2000 * 512, 512) // a single sector
        .bad_bytes(5001 * 512, 512) // another, odd-numbered
        .bad_bytes(8 * MIB, 4096) // a 4 KiB block
        .bad_bytes(20 * MIB + 4096, 128 * 1024) // a larger region
        .transient_sector(30 * MIB / 512 + 3); // fails once, then reads
    let cfg = t.join("blkdebug.conf");
    faults.write(&cfg).unwrap();
    let before = sha256(&src).unwrap();
    let disks = vec![
        DiskSpec::new(&src, Bus::Virtio, "CLONE-SRC").blkdebug(&cfg),
        DiskSpec::new(&dst, Bus::Nvme, "CLONE-DST"),
    ];
    let mut vm = Vm::boot(
        "clone",
        &run_param("clone serial=CLONE-SRC serial=CLONE-DST --yes --json"),
        disks,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let res = vm
        .wait_result(Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("{e}"));
    drop(vm);
    let r = &res["output"];
    assert_eq!(
        res["exit_code"], 3,
        "a completed rescue with unreadable sectors exits 3: {res}"
    );
    let want: Vec<Value> = faults
        .permanent_ranges()
        .iter()
        .map(|(a, l)| serde_json::json!([a, l]))
        .collect();
    assert_eq!(r["bad_ranges"], Value::Array(want), "{r}");
    let bad_bytes: u64 = faults.permanent_ranges().iter().map(|r| r.1).sum();
    assert_eq!(r["bad_bytes"], bad_bytes);
    assert_eq!(r["bad_sectors"], bad_bytes / 512);
    assert_eq!(r["logical_block_size"], 512);
    assert_eq!(r["bytes_copied"], SRC_SIZE - bad_bytes);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["partition_table_fixed"], true, "{r}");
    assert_eq!(r["ok"], false);
    // Host checks: the source is unchanged; the target sector by sector.
    assert_eq!(sha256(&src).unwrap(), before, "the source changed");
    let s = std::fs::read(&src).unwrap();
    let d = std::fs::read(&dst).unwrap();
    let bad = faults.permanent_ranges();
    // Sectors 0-1 (protective MBR, primary header) and the old backup GPT are rewritten by the
    // fix-up; everything from the entry array to the last partition's end is compared.
    let end = 45 * MIB;
    let mut mismatches = Vec::new();
    for off in (1024..end).step_by(512) {
        let sec = &d[off as usize..off as usize + 512];
        let is_bad = bad.iter().any(|&(a, l)| off >= a && off < a + l);
        let ok = if is_bad {
            sec.iter().all(|&b| b == 0)
        } else {
            sec == &s[off as usize..off as usize + 512]
        };
        if !ok {
            mismatches.push(off);
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} target sectors wrong, first at byte {}",
        mismatches.len(),
        mismatches[0]
    );
    // The copied range beyond the partitions is the source too; the rest of the target untouched.
    assert_eq!(
        &d[end as usize..(SRC_SIZE - 33 * 512) as usize],
        &s[end as usize..(SRC_SIZE - 33 * 512) as usize]
    );
    assert!(d[SRC_SIZE as usize..(DST_SIZE - 33 * 512) as usize]
        .iter()
        .all(|&b| b == 0x77));
    let v = sgdisk(&["-v"], &dst);
    assert!(
        v.contains("No problems found"),
        "sgdisk -v on the target: {v}"
    );
}

/// Permanent 512-byte fault ranges widened to whole `lbs`-byte sectors and merged: what a
/// rescue reports on a disk with that logical sector size.
fn widen(ranges: &[(u64, u64)], lbs: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(a, l) in ranges {
        let s = a / lbs * lbs;
        let e = (a + l).div_ceil(lbs) * lbs;
        match out.last_mut() {
            Some(last) if last.0 + last.1 >= s => last.1 = last.1.max(e - last.0),
            _ => out.push((s, e - s)),
        }
    }
    out
}

#[test]
fn clone_failing_4kn_virtio_onto_4kn_nvme() {
    let t = TempDir::new("clone4k").unwrap();
    let src = t.join("src.img");
    let dst = t.join("dst.img");
    std::fs::write(&src, pattern(SRC_SIZE)).unwrap();
    std::fs::write(&dst, vec![0x77u8; DST_SIZE as usize]).unwrap();
    let faults = Faults::new()
        .bad_bytes(3000 * 512, 512) // one 512-byte unit: takes its whole 4 KiB sector down
        .bad_bytes(8 * MIB, 4096) // one 4 KiB sector
        .bad_bytes(12 * MIB + 4096, 64 * 1024) // a region
        .transient_sector(30 * MIB / 512 + 8); // fails once
    let cfg = t.join("blkdebug.conf");
    faults.write(&cfg).unwrap();
    let before = sha256(&src).unwrap();
    let disks = vec![
        DiskSpec::new(&src, Bus::Virtio, "CLONE4K-SRC")
            .block_size(4096, 4096)
            .blkdebug(&cfg),
        DiskSpec::new(&dst, Bus::Nvme, "CLONE4K-DST").block_size(4096, 4096),
    ];
    let mut vm = Vm::boot(
        "clone4k",
        &run_param("clone serial=CLONE4K-SRC serial=CLONE4K-DST --yes --json"),
        disks,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let res = vm
        .wait_result(Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("{e}"));
    drop(vm);
    let r = &res["output"];
    assert_eq!(res["exit_code"], 3, "{res}");
    assert_eq!(r["logical_block_size"], 4096, "{r}");
    let bad = widen(&faults.permanent_ranges(), 4096);
    let want: Vec<Value> = bad.iter().map(|(a, l)| serde_json::json!([a, l])).collect();
    assert_eq!(r["bad_ranges"], Value::Array(want), "{r}");
    let bad_bytes: u64 = bad.iter().map(|r| r.1).sum();
    assert_eq!(r["bad_sectors"], bad_bytes / 4096);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(sha256(&src).unwrap(), before, "the source changed");
    let s = std::fs::read(&src).unwrap();
    let d = std::fs::read(&dst).unwrap();
    for off in (0..SRC_SIZE).step_by(4096) {
        let (a, b) = (off as usize, off as usize + 4096);
        if bad.iter().any(|&(x, l)| off >= x && off < x + l) {
            assert!(
                d[a..b].iter().all(|&v| v == 0),
                "bad sector at {off} not zeroed"
            );
        } else {
            assert!(d[a..b] == s[a..b], "target sector at byte {off} differs");
        }
    }
    assert!(
        d[SRC_SIZE as usize..].iter().all(|&v| v == 0x77),
        "written past the source size"
    );
}
