//! What a job reads of its source before the copy starts ("planning reads"): the partition
//! table, and each filesystem's superblock and allocation map. On a failing disk every read
//! may cost seconds, so each planning byte is read once: the clone's table read is the one
//! the used-block analysis uses, and the domain is made from the analysis's own result.
//! Checked in-process on a recording source (no byte read twice) and end to end on a loop
//! device (read requests counted in `/sys/block/loopN/stat`).
use lifeboat::clone::gpt;
use lifeboat::fs::{Mode, UsageMap};
use lifeboat::io::BlockSource;
use lifeboat::rescue::sim::SimDevice;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

mod common;
use common::usedfs::{have, random_file};
use common::{assert_exit, json, lifeboat, s, sh, sha256, Loop, Recorder, TempDir, MIB};

/// A 72 MiB GPT disk of old random data: ext4 with 1 KiB blocks (three groups, flex_bg, few
/// inodes, a deleted file: free blocks lie near the bitmaps),
/// FAT16, NTFS and exFAT, each holding a few files.
fn sample_disk(t: &TempDir) -> PathBuf {
    let disk = t.p("disk.img");
    random_file(&disk, 72 * MIB, 3);
    let parts: [(u64, &str, &str); 4] = [
        (24, "8300", "mkfs.ext4 -q -F -b 1024 -N 96 -E nodiscard"),
        (16, "0700", "mkfs.vfat -F 16"),
        (16, "0700", "mkfs.ntfs -Q -F -q"),
        (8, "0700", "mkfs.exfat"),
    ];
    let mut sg = String::from("sgdisk");
    let mut at = MIB;
    for (k, (mib, ty, _)) in parts.iter().enumerate() {
        sg += &format!(
            " -n {n}:{}:{} -t {n}:{ty}",
            at / 512,
            (at + mib * MIB) / 512 - 1,
            n = k + 1
        );
        at += mib * MIB;
    }
    sh(&format!("{sg} {} >/dev/null", s(&disk)));
    let file = t.p("f");
    random_file(&file, 300 << 10, 9);
    let mut at = MIB;
    for (k, (mib, _, mkfs)) in parts.iter().enumerate() {
        let img = t.p(&format!("p{k}"));
        random_file(&img, mib * MIB, 20 + k as u64);
        let (i, f) = (s(&img), s(&file));
        sh(&format!("{mkfs} {i} >/dev/null 2>&1"));
        match k {
            // Two files, the first deleted: free blocks right after the inode tables.
            0 => sh(&format!(
                "printf 'write {f} f\\nwrite {f} g\\nrm f\\n' | debugfs -w -f - {i} >/dev/null 2>&1"
            )),
            1 => sh(&format!(
                "mcopy -i {i} {f} ::/f && mcopy -i {i} {f} ::/g && mdel -i {i} ::/f"
            )),
            // A file written and the next one's place... ntfsprogs cannot delete: a small file,
            // placed after the metadata.
            2 => sh(&format!(
                "head -c 4096 {f} > {f}.small && ntfscp -q {i} {f}.small f"
            )),
            _ => String::new(),
        };
        sh(&format!(
            "dd if={i} of={} bs=1M seek={} conv=notrunc status=none",
            s(&disk),
            at / MIB
        ));
        std::fs::remove_file(&img).unwrap();
        at += mib * MIB;
    }
    disk
}

/// The reads of `log` that overlap an earlier one (none when every byte was read once).
fn overlaps(log: &[(u64, u64)]) -> Vec<((u64, u64), (u64, u64))> {
    let mut v = log.to_vec();
    v.sort_unstable();
    let mut out = Vec::new();
    let mut last: Option<(u64, u64)> = None;
    for r in v {
        if let Some(l) = last {
            if r.0 < l.0 + l.1 {
                out.push((l, r));
            }
        }
        if last.is_none_or(|l| r.0 + r.1 > l.0 + l.1) {
            last = Some(r);
        }
    }
    out
}

fn tools() -> bool {
    have(&[
        "sgdisk",
        "mkfs.ext4",
        "debugfs",
        "mkfs.vfat",
        "mcopy",
        "mkfs.ntfs",
        "ntfscp",
        "mkfs.exfat",
    ])
}

/// Clone's planning (the table, then the analysis and domain from it) and image create's
/// (the analysis, then the used ranges) read no byte of the source twice.
#[test]
fn every_planning_byte_is_read_once() {
    if !tools() {
        return;
    }
    let t = TempDir::new("plan-once");
    let disk = sample_disk(&t);
    let data = std::fs::read(&disk).unwrap();
    let size = data.len() as u64;
    let rec = Recorder {
        sim: SimDevice::new(data, 512),
        log: Mutex::new(Vec::new()),
    };
    // As clone plans.
    let table = gpt::read(&rec).ok();
    let mut u = UsageMap::analyze_with(&rec, table.as_ref());
    let modes: Vec<_> = u.partitions.iter().map(|p| p.mode).collect();
    assert_eq!(modes, vec![Mode::UsedBlocks; 4], "{:?}", u.partitions);
    let d = u.domain(size, 512).expect("a used-blocks domain");
    assert!(d.bytes < size / 2, "{d:?}");
    let log = std::mem::take(&mut *rec.log.lock().unwrap());
    assert!(
        overlaps(&log).is_empty(),
        "clone's planning read these bytes twice: {:?}\nall reads: {log:?}",
        overlaps(&log)
    );
    // As image create (and the console) plan.
    let u2 = UsageMap::analyze(&rec);
    let used: Vec<_> = u2.extents().collect();
    let log = std::mem::take(&mut *rec.log.lock().unwrap());
    assert!(
        overlaps(&log).is_empty(),
        "image create's planning read these bytes twice: {:?}\nall reads: {log:?}",
        overlaps(&log)
    );
    assert_eq!(u2.partitions, {
        // Before domain() turned used_bytes into the domain's sector-aligned bytes.
        UsageMap::analyze(&rec).partitions
    });
    // The domain holds exactly the analysis's used ranges (512-byte aligned already).
    let ranges: Vec<(u64, u64)> = used.iter().map(|&(a, e)| (a, e - a)).collect();
    assert_eq!(d.ranges, ranges);
}

/// The loop-device tests count every read of their device: one at a time (another test's
/// `lifeboat clone` scans every disk, this test's too).
static LOOPS: Mutex<()> = Mutex::new(());

/// How many times a loop-device count is taken at most. The kernel counts every process's
/// reads of the device, and other processes do read it: any `lifeboat` started elsewhere on
/// the machine (another test binary, another checkout's tests) scans every block device and
/// probes it, as does udev's blkid. Those reads only ever add to the count, so the smallest of
/// a few counts is this job's own (all it takes is one round nobody else read in) — and a
/// job that reads too much reads too much in every round, so the test still fails then.
const ROUNDS: usize = 4;

/// Runs `measure` (a count of this test's own reads, plus whatever others read meanwhile)
/// until `ok` holds for a count or [`ROUNDS`] rounds were taken, and returns the smallest
/// count (with all counts, for the message).
fn least_of_rounds<T: Ord + Copy + std::fmt::Debug>(
    mut measure: impl FnMut() -> T,
    ok: impl Fn(T) -> bool,
) -> (T, Vec<T>) {
    let mut all = Vec::new();
    for _ in 0..ROUNDS {
        let n = measure();
        all.push(n);
        if ok(n) {
            break;
        }
    }
    (*all.iter().min().unwrap(), all)
}

fn loop_name(dev: &str) -> &str {
    Path::new(dev).file_name().unwrap().to_str().unwrap()
}

/// (read requests completed, sectors read) of a block device, from `/sys/block/NAME/stat`.
fn reads(dev: &str) -> (u64, u64) {
    let st = std::fs::read_to_string(format!("/sys/block/{}/stat", loop_name(dev))).unwrap();
    let f: Vec<u64> = st.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (f[0], f[2])
}

/// Waits for udev's own probe of a new loop device, then drops its page cache, so what is
/// counted afterwards is ours.
fn quiet(dev: &str) {
    let _ = std::process::Command::new("udevadm").arg("settle").status();
    sh(&format!("blockdev --flushbufs {dev}"));
}

/// What clone's planning reads of `disk`, in-process through a recording source (bytes).
fn recorded_planning_bytes(disk: &Path) -> u64 {
    let rec = Recorder {
        sim: SimDevice::new(std::fs::read(disk).unwrap(), 512),
        log: Mutex::new(Vec::new()),
    };
    let table = gpt::read(&rec).ok();
    let size = rec.size();
    let _ = UsageMap::analyze_with(&rec, table.as_ref()).domain(size, 512);
    let log = rec.log.lock().unwrap();
    log.iter().map(|r| r.1).sum()
}

/// A clone's planning reads, counted by the kernel on a loop device: the device scan's probes,
/// the table and the maps. The rescue engine reads exactly the domain (`bytes_copied`, no
/// read fails); everything else the device saw is planning, and it is what the in-process
/// recording reads plus the device scan's probes (the first 1 KiB for the table, the first
/// 68 KiB for a filesystem on the whole disk, four sectors at the end for RAID signatures),
/// no more. Sectors are counted, not requests: the
/// kernel splits a request at 128 pages, so the request count depends on how the buffer lies
/// in memory. Before each planning byte was read once, this disk's planning read about
/// 2.6 MiB (the table twice, each partition's first 256 KiB twice, maps in 256 KiB windows,
/// buffered probes with the kernel's read-ahead).
#[test]
fn clone_planning_reads_on_a_loop_device() {
    if !tools() {
        return;
    }
    let _one = LOOPS.lock().unwrap_or_else(|p| p.into_inner());
    let t = TempDir::new("plan-loop");
    let disk = sample_disk(&t);
    let before = sha256(&disk);
    let recorded = recorded_planning_bytes(&disk);
    let target = t.p("target.img");
    random_file(&target, 72 * MIB, 4);
    let Some(lo) = Loop::attach(&disk) else {
        return;
    };
    // The table (1 KiB), a whole-disk filesystem probe (68 KiB), and the layer signatures at
    // the disk's end (devices::layers: IMSM's anchor for 512- and 4096-byte sectors, md 1.0 and
    // 0.90 places): at most four sectors.
    let probes = 1024 + 0x11000 + 4 * 512;
    let bound = recorded + probes;
    let mut last_report = serde_json::Value::Null;
    let (planning, rounds) = least_of_rounds(
        || {
            quiet(&lo.dev);
            let (r0, s0) = reads(&lo.dev);
            let o = lifeboat(&[
                "clone",
                &lo.dev,
                s(&target),
                "--yes",
                "--no-verify",
                "--json",
            ]);
            let (r1, s1) = reads(&lo.dev);
            assert_exit(&o, 0);
            let rep = json(&o);
            for p in rep["partitions"].as_array().unwrap() {
                assert_eq!(p["mode"], "used_blocks", "{rep}");
            }
            let engine = rep["bytes_copied"].as_u64().unwrap();
            let all = (s1 - s0) * 512;
            let planning = all.saturating_sub(engine);
            println!(
                "read {all} bytes in {} requests: {engine} by the rescue engine ({} reads), \
                 {planning} planning ({recorded} recorded in-process)",
                r1 - r0,
                rep["reads_total"]
            );
            last_report = rep;
            planning
        },
        |planning| planning <= bound,
    );
    assert!(
        planning <= bound,
        "planning read {planning} bytes (the least of {rounds:?}), more than the {recorded} the \
         analysis reads plus the device scan's {probes}: {last_report}"
    );
    drop(lo);
    assert_eq!(sha256(&disk), before, "the source changed");
}

/// The device scan's probe reads exactly what it looks at: a superblock probe of an ext4
/// partition is its first 68 KiB, with O_DIRECT, not a buffered read the kernel extends with
/// read-ahead (on a failing disk, sectors nobody asked for).
#[test]
fn device_probes_read_no_more_than_they_look_at() {
    if !have(&["mkfs.ext4", "blockdev"]) {
        return;
    }
    let _one = LOOPS.lock().unwrap_or_else(|p| p.into_inner());
    let t = TempDir::new("plan-probe");
    let img = t.p("fs.img");
    random_file(&img, 8 * MIB, 5);
    sh(&format!(
        "mkfs.ext4 -q -F -E nodiscard {} >/dev/null",
        s(&img)
    ));
    let before = sha256(&img);
    let Some(lo) = Loop::attach(&img) else {
        return;
    };
    // Plenty of read-ahead, as on a real disk.
    sh(&format!("blockdev --setra 256 {}", lo.dev));
    let (read, rounds) = least_of_rounds(
        || {
            quiet(&lo.dev);
            let (r0, s0) = reads(&lo.dev);
            let fs = lifeboat::devices::probe_fs(Path::new(&lo.dev)).expect("ext4 found");
            let (r1, s1) = reads(&lo.dev);
            assert_eq!(fs.fs_type, "ext4");
            println!(
                "the probe read {} bytes in {} requests",
                (s1 - s0) * 512,
                r1 - r0
            );
            (s1 - s0) * 512
        },
        |read| read == 0x11000,
    );
    assert_eq!(
        read, 0x11000,
        "the probe read {read} bytes (the least of {rounds:?}), it looks at 68 KiB"
    );
    drop(lo);
    assert_eq!(sha256(&img), before, "the source changed");
}

/// The reads the allocation map of partition `p` makes by itself (a fresh reader: no cache of
/// the probe's), in order.
fn map_reads(data: &[u8], p: &lifeboat::fs::PartitionUsage) -> Vec<(u64, u64)> {
    use lifeboat::fs::{self, Region, UsedMap};
    let rec = Recorder {
        sim: SimDevice::new(data.to_vec(), 512),
        log: Mutex::new(Vec::new()),
    };
    let r = Region::new(&rec, p.start_bytes, p.size_bytes);
    let mut m: Box<dyn UsedMap> = match p.filesystem.as_deref() {
        Some("ext4") => Box::new(fs::ext::open(r).unwrap()),
        Some("vfat") => Box::new(fs::fat::open(r).unwrap()),
        Some("ntfs") => Box::new(fs::ntfs::open(r).unwrap()),
        Some("exfat") => Box::new(fs::exfat::open(r).unwrap()),
        other => panic!("{other:?}"),
    };
    fs::collect(&mut *m).unwrap();
    drop(m);
    let log = rec.log.lock().unwrap().clone();
    log
}

/// A bad sector in free space beside a filesystem's metadata (within the 256 KiB its map once
/// read at a time, or the probe's 68 KiB) does not fail the map: the metadata is read exactly.
/// A bad sector inside the metadata still makes that partition all sectors, with the reason,
/// and only that one. For each partition the metadata is the map's own last read (the ext4
/// bitmaps, the second FAT, NTFS's `$Bitmap`, exFAT's allocation bitmap).
#[test]
fn a_bad_sector_beside_a_bitmap_does_not_fail_the_map() {
    if !tools() {
        return;
    }
    let t = TempDir::new("plan-beside");
    let disk = sample_disk(&t);
    let data = std::fs::read(&disk).unwrap();
    let size = data.len() as u64;
    let clean = UsageMap::analyze(&SimDevice::new(data.clone(), 512));
    let used: Vec<(u64, u64)> = clean.extents().collect();
    let is_free = |a: u64| !used.iter().any(|r| a < r.1 && a + 512 > r.0);
    let plan = |sim: &SimDevice| {
        let table = gpt::read(sim).ok();
        let mut u = UsageMap::analyze_with(sim, table.as_ref());
        let d = u.domain(size, 512).expect("a used-blocks domain");
        (u, d)
    };
    let mut tested = Vec::new();
    for (k, p) in clean.partitions.iter().enumerate() {
        let (ps, pe) = (p.start_bytes, p.start_bytes + p.size_bytes);
        let fs = p.filesystem.clone().unwrap();
        // The map's last read with a free sector after it, where a 256 KiB window from it
        // reached.
        let reads = map_reads(&data, p);
        let (meta, beside) = reads
            .iter()
            .rev()
            .find_map(|&m| {
                (m.0 + m.1..(m.0 + (256 << 10)).min(pe))
                    .step_by(512)
                    .find(|&a| is_free(a))
                    .map(|f| (m, f))
            })
            .unwrap_or_else(|| panic!("{fs}: no free sector beside any of {reads:?}"));
        // Beside: every partition still by used blocks, and the bad sector is not copied.
        let (u, d) = plan(&SimDevice::new(data.clone(), 512).bad(beside, 512));
        for q in &u.partitions {
            assert_eq!(
                q.mode,
                Mode::UsedBlocks,
                "{fs}: a bad sector at {beside} beside its metadata {meta:?} failed partition \
                 {}: {:?}",
                q.number,
                q.reason
            );
        }
        assert_eq!(
            d.bytes_in(beside, beside + 512),
            0,
            "{fs}: free sector copied"
        );
        // Inside: that partition all sectors, with the reason; the others by used blocks.
        let (u, d) = plan(&SimDevice::new(data.clone(), 512).bad(meta.0, 512));
        for (j, q) in u.partitions.iter().enumerate() {
            if j == k {
                assert_eq!(q.mode, Mode::AllSectors, "{fs}: bad at {}: {q:?}", meta.0);
                let why = q.reason.as_deref().unwrap_or_default();
                assert!(why.contains("read filesystem metadata"), "{fs}: {why}");
                assert_eq!(d.bytes_in(ps, pe), pe - ps, "{fs}: not copied whole");
            } else {
                assert_eq!(q.mode, Mode::UsedBlocks, "{fs} bad: partition {q:?}");
            }
        }
        tested.push(fs);
    }
    assert_eq!(
        tested,
        ["ext4", "vfat", "ntfs", "exfat"],
        "not every map was tested"
    );
}
