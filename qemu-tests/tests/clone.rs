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

/// Boots a VM named `name` that clones `src` (virtio-blk behind blkdebug with `faults`) onto
/// `dst` (NVMe), both disks with logical and physical block size `lbs` if given (QEMU's 512
/// otherwise), serials `NAME-SRC` and `NAME-DST` (NAME upper-cased); returns its
/// `LIFEBOAT-RESULT`.
fn clone_in_vm(
    t: &TempDir,
    name: &str,
    src: &Path,
    dst: &Path,
    faults: &Faults,
    lbs: Option<u32>,
) -> Value {
    let cfg = t.join("blkdebug.conf");
    faults.write(&cfg).unwrap();
    let (s, d) = (
        format!("{}-SRC", name.to_uppercase()),
        format!("{}-DST", name.to_uppercase()),
    );
    let mut disks = vec![
        DiskSpec::new(src, Bus::Virtio, &s).blkdebug(&cfg),
        DiskSpec::new(dst, Bus::Nvme, &d),
    ];
    if let Some(lbs) = lbs {
        disks = disks.into_iter().map(|d| d.block_size(lbs, lbs)).collect();
    }
    let mut vm = Vm::boot(
        name,
        &run_param(&format!("clone serial={s} serial={d} --yes --json")),
        disks,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    vm.wait_result(Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("{e}"))
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
    let before = sha256(&src).unwrap();
    let res = clone_in_vm(&t, "clone", &src, &dst, &faults, None);
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
    let before = sha256(&src).unwrap();
    let res = clone_in_vm(&t, "clone4k", &src, &dst, &faults, Some(4096));
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

/// Runs `sh -c script` on the host and returns its stdout (panics on failure).
fn sh(script: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Issue 11 in the booted environment: a used-blocks clone of a failing disk. The source holds
/// an ext4 partition (made on old random data) with one file; blkdebug fails one sector of the
/// file's data and one in the filesystem's free space. The clone exits 3 reporting exactly the
/// used one (the free one is never read); the host checks the partition report, that the
/// target's free space keeps its old bytes, the copied file data, `e2fsck -fn` and `sgdisk -v`
/// on the target, and the unchanged source.
#[test]
fn clone_used_blocks_never_reads_bad_free_space() {
    let t = TempDir::new("cloneused").unwrap();
    let (src, dst, part, file) = (
        t.join("src.img"),
        t.join("dst.img"),
        t.join("p1.img"),
        t.join("file.bin"),
    );
    let old = pattern(SRC_SIZE);
    std::fs::write(&src, &old).unwrap();
    sgdisk(&["-n1:1MiB:+40MiB", "-t1:8300"], &src);
    std::fs::write(&part, &old[..(40 * MIB) as usize]).unwrap();
    std::fs::write(&file, &old[(4 * MIB) as usize..(10 * MIB) as usize]).unwrap();
    let (p, f) = (part.display(), file.display());
    sh(&format!(
        "mkfs.ext4 -q -F -b 4096 -E nodiscard {p} && debugfs -w -R 'write {f} f' {p} >/dev/null 2>&1"
    ));
    // The file's blocks (debugfs) and the free blocks (dumpe2fs), in 4 KiB units.
    let blocks: Vec<u64> = sh(&format!("debugfs -R 'blocks f' {p} 2>/dev/null"))
        .split_whitespace()
        .map(|b| b.parse().unwrap())
        .collect();
    assert!(blocks.len() > 1000, "{blocks:?}");
    let free: (u64, u64) = sh(&format!("dumpe2fs {p} 2>/dev/null"))
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Free blocks: "))
        .flat_map(|l| l.split(", ").map(str::to_string).collect::<Vec<_>>())
        .filter_map(|r| {
            let (a, b) = r.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .max_by_key(|&(a, b): &(u64, u64)| b - a)
        .unwrap();
    assert!(free.1 - free.0 > 64, "{free:?}");
    sh(&format!(
        "dd if={p} of={} bs=1M seek=1 conv=notrunc status=none",
        src.display()
    ));
    let used_bad = MIB + blocks[blocks.len() / 2] * 4096 + 1024;
    let free_block = (free.0 + free.1) / 2;
    let free_bad = MIB + free_block * 4096 + 2048;
    std::fs::write(&dst, vec![0x77u8; DST_SIZE as usize]).unwrap();
    let faults = Faults::new()
        .bad_bytes(used_bad, 512)
        .bad_bytes(free_bad, 512);
    let before = sha256(&src).unwrap();
    let res = clone_in_vm(&t, "cloneused", &src, &dst, &faults, None);
    let r = &res["output"];
    assert_eq!(res["exit_code"], 3, "{res}");
    assert_eq!(r["bad_ranges"], serde_json::json!([[used_bad, 512]]), "{r}");
    assert_eq!(r["verified"], true, "{r}");
    let p0 = &r["partitions"][0];
    assert_eq!(p0["filesystem"], "ext4", "{r}");
    assert_eq!(p0["mode"], "used_blocks", "{r}");
    let used = r["used_bytes"].as_u64().unwrap();
    assert!(used < SRC_SIZE / 2, "{r}");
    assert_eq!(r["bytes_copied"].as_u64().unwrap() + 512, used, "{r}");
    // Host checks: the source unchanged; the free block keeps the target's old bytes; the used
    // bytes are the source's (zeros at the bad sector); the filesystem and the table are clean.
    assert_eq!(sha256(&src).unwrap(), before, "the source changed");
    let d = std::fs::read(&dst).unwrap();
    let fb = (MIB + free_block * 4096) as usize;
    assert!(
        d[fb..fb + 4096].iter().all(|&b| b == 0x77),
        "free space written"
    );
    let s = std::fs::read(&src).unwrap();
    for &b in &blocks {
        let a = (MIB + b * 4096) as usize;
        if (a as u64..a as u64 + 4096).contains(&used_bad) {
            let o = (used_bad as usize) - a;
            assert!(d[a + o..a + o + 512].iter().all(|&x| x == 0));
            assert_eq!(d[a..a + o], s[a..a + o]);
        } else {
            assert!(d[a..a + 4096] == s[a..a + 4096], "file block {b} differs");
        }
    }
    let v = sgdisk(&["-v"], &dst);
    assert!(v.contains("No problems found"), "sgdisk -v: {v}");
    sh(&format!(
        "dd if={} of={p} bs=1M skip=1 count=40 status=none && e2fsck -fn {p} >/dev/null",
        dst.display()
    ));
}
