//! Used-block clones end to end. One reused GPT disk (old random data everywhere) holds a
//! filesystem of every kind the maps know, made by the real tools with files added (and one
//! deleted): ext4 with and without 64bit/flex_bg/metadata_csum, ext4 bigalloc, ext2, ext3, FAT12,
//! FAT16, FAT32, exFAT, NTFS; a gap of old data between two partitions. It is cloned onto a
//! target full of *other* random data: every filesystem is clean by its own checker, partclone's
//! image of each (or, where partclone cannot read it, e2fsprogs' / mtools' used ranges and their
//! bytes) is the same for source and copy, the target's free space keeps its old bytes,
//! `sgdisk -v` is clean, the source is unchanged; `--all-sectors` copies every byte; the map
//! marks the free areas and a map of the other mode is refused. On a simulated failing disk, bad
//! sectors in free space are never read and one in used data is rescued and reported exactly.
mod common;

use common::usedfs::{dumpe2fs_referee, have, mtools_referee, random_file, referee};
use common::{assert_exit, json, lifeboat, run, s, sh, sha256, Recorder, TempDir, MIB};
use lifeboat::fs::{Mode, UsageMap};
use lifeboat::io::{Access, BlockSource, Device};
use lifeboat::jobs::{Cancel, NoProgress};
use lifeboat::rescue::{self, sim::SimDevice, ExtentMap, MemTarget, Status};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Who says which bytes of a filesystem are used.
#[derive(Clone, Copy)]
enum Referee {
    /// partclone's image (`partclone.<fs> -c`) of source and copy must be identical.
    Partclone(&'static str),
    /// e2fsprogs' used ranges (bigalloc, which partclone cannot read); their bytes compared.
    Dumpe2fs,
    /// mtools' used ranges (FAT12, whose tables partclone misreads); their bytes compared.
    Mtools,
}

struct Part {
    mib: u64,
    gpt_type: &'static str,
    mkfs: &'static str,
    /// How files go in: "ext" (debugfs), "fat" (mcopy), "ntfs" (ntfscp), "" (none).
    fill: &'static str,
    fsck: &'static str,
    fs_type: &'static str,
    referee: Referee,
}

const fn part(
    mib: u64,
    gpt_type: &'static str,
    mkfs: &'static str,
    fill: &'static str,
    fsck: &'static str,
    fs_type: &'static str,
    referee: Referee,
) -> Part {
    Part {
        mib,
        gpt_type,
        mkfs,
        fill,
        fsck,
        fs_type,
        referee,
    }
}

const E2FSCK: &str = "e2fsck -fn";
const FSCK_VFAT: &str = "fsck.vfat -n";
const PARTS: [Part; 10] = [
    part(
        24,
        "8300",
        "mkfs.ext4 -q -F -E nodiscard -O 64bit,flex_bg,metadata_csum",
        "ext",
        E2FSCK,
        "ext4",
        Referee::Partclone("ext4"),
    ),
    part(
        24,
        "8300",
        "mkfs.ext4 -q -F -E nodiscard -O ^64bit,^flex_bg,^metadata_csum,uninit_bg",
        "ext",
        E2FSCK,
        "ext4",
        Referee::Partclone("ext4"),
    ),
    part(
        24,
        "8300",
        "mkfs.ext4 -q -F -E nodiscard -O bigalloc -C 16384",
        "ext",
        E2FSCK,
        "ext4",
        Referee::Dumpe2fs,
    ),
    part(
        16,
        "8300",
        "mkfs.ext2 -q -F -E nodiscard",
        "ext",
        E2FSCK,
        "ext2",
        Referee::Partclone("ext2"),
    ),
    part(
        16,
        "8300",
        "mkfs.ext3 -q -F -E nodiscard",
        "ext",
        E2FSCK,
        "ext3",
        Referee::Partclone("ext3"),
    ),
    part(
        4,
        "0700",
        "mkfs.vfat -F 12",
        "fat",
        FSCK_VFAT,
        "vfat",
        Referee::Mtools,
    ),
    part(
        20,
        "0700",
        "mkfs.vfat -F 16",
        "fat",
        FSCK_VFAT,
        "vfat",
        Referee::Partclone("fat"),
    ),
    part(
        40,
        "ef00",
        "mkfs.vfat -F 32 -S 512 -s 1",
        "fat",
        FSCK_VFAT,
        "vfat",
        Referee::Partclone("fat"),
    ),
    part(
        16,
        "0700",
        "mkfs.exfat",
        "",
        "fsck.exfat -n",
        "exfat",
        Referee::Partclone("exfat"),
    ),
    part(
        24,
        "0700",
        "mkntfs -F -Q -q",
        "ntfs",
        "ntfsfix -n",
        "ntfs",
        Referee::Partclone("ntfs"),
    ),
];
/// A gap of old data is left after this partition (index), before the next.
const GAP_AFTER: usize = 4;
const DISK: u64 = 232 * MIB;

/// (start, size) in bytes of every partition of the sample disk.
fn layout() -> Vec<(u64, u64)> {
    let mut at = MIB;
    PARTS
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let r = (at, p.mib * MIB);
            at += p.mib * MIB + if k == GAP_AFTER { 2 * MIB } else { 0 };
            r
        })
        .collect()
}

/// The reused sample disk (see the module documentation).
fn reused_disk(t: &TempDir) -> PathBuf {
    let disk = t.p("disk.img");
    random_file(&disk, DISK, 1);
    let mut sg = String::from("sgdisk");
    for (k, ((start, size), p)) in layout().iter().zip(&PARTS).enumerate() {
        sg += &format!(
            " -n {n}:{}:{} -t {n}:{}",
            start / 512,
            (start + size) / 512 - 1,
            p.gpt_type,
            n = k + 1
        );
    }
    sh(&format!("{sg} {} >/dev/null", s(&disk)));
    let files: Vec<PathBuf> = [3u64, 700, 2500, 12, 300]
        .iter()
        .enumerate()
        .map(|(i, kib)| {
            let f = t.p(&format!("f{i}"));
            random_file(&f, kib * 1024, 50 + i as u64);
            f
        })
        .collect();
    for (k, ((start, size), p)) in layout().iter().zip(&PARTS).enumerate() {
        let img = t.p(&format!("p{k}"));
        random_file(&img, *size, 10 + k as u64);
        let i = s(&img);
        sh(&format!("{} {i} >/dev/null 2>&1", p.mkfs));
        // FAT12 here is 4 MiB: only the small files.
        let fit: Vec<&PathBuf> = files
            .iter()
            .filter(|f| p.mib > 4 || fs::metadata(f).unwrap().len() < MIB)
            .collect();
        match p.fill {
            "ext" => {
                let mut cmds = String::from("mkdir /dir\n");
                for (j, f) in fit.iter().enumerate() {
                    cmds += &format!("write {} /dir/f{j}\n", s(f));
                }
                cmds += "rm /dir/f1\n";
                fs::write(t.p("cmds"), cmds).unwrap();
                sh(&format!(
                    "debugfs -w -f {} {i} >/dev/null 2>&1",
                    s(&t.p("cmds"))
                ));
            }
            "fat" => {
                sh(&format!("mmd -i {i} ::/dir"));
                for f in &fit {
                    sh(&format!("mcopy -i {i} {} ::/dir/", s(f)));
                }
                sh(&format!("mdel -i {i} ::/dir/f1"));
            }
            "ntfs" => {
                for (j, f) in fit.iter().enumerate() {
                    sh(&format!("ntfscp -q {i} {} f{j}.bin", s(f)));
                }
            }
            _ => {}
        }
        sh(&format!(
            "dd if={i} of={} bs=1M seek={} conv=notrunc status=none",
            s(&disk),
            start / MIB
        ));
        fs::remove_file(&img).unwrap();
    }
    disk
}

fn read_at(p: &Path, off: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    fs::File::open(p)
        .unwrap()
        .read_exact_at(&mut v, off)
        .unwrap();
    v
}

/// Partition `k` of `disk` as a file of its own (the tools take files).
fn extract(t: &TempDir, disk: &Path, k: usize, name: &str) -> PathBuf {
    let (start, size) = layout()[k];
    let out = t.p(name);
    sh(&format!(
        "dd if={} of={} bs=1M skip={} count={} status=none",
        s(disk),
        s(&out),
        start / MIB,
        size / MIB
    ));
    out
}

/// The filesystems `which` (indexes of [`PARTS`]) of `copy` are clean and hold the same used
/// blocks as on `src`; the GPT is clean.
fn referees(t: &TempDir, src: &Path, copy: &Path, which: &[usize]) {
    let v = run(Command::new("sgdisk").arg("-v").arg(copy));
    assert!(v.contains("No problems found"), "sgdisk -v: {v}");
    for &k in which {
        let p = &PARTS[k];
        let a = extract(t, src, k, "a.part");
        let b = extract(t, copy, k, "b.part");
        sh(&format!("{} {} >/dev/null 2>&1", p.fsck, s(&b)));
        let ranges = match p.referee {
            Referee::Partclone(fs_name) => {
                for (f, img) in [(&a, "a.pc"), (&b, "b.pc")] {
                    let _ = fs::remove_file(t.p(img));
                    sh(&format!(
                        "partclone.{fs_name} -c -q -s {} -o {} >/dev/null 2>&1",
                        s(f),
                        s(&t.p(img))
                    ));
                }
                run(Command::new("cmp").arg(t.p("a.pc")).arg(t.p("b.pc")));
                // partclone's used ranges are the same on both (its image says so); compare
                // their bytes as well.
                referee(fs_name, &a, t)
            }
            Referee::Dumpe2fs => {
                assert_eq!(dumpe2fs_referee(&a), dumpe2fs_referee(&b), "partition {k}");
                dumpe2fs_referee(&a)
            }
            Referee::Mtools => {
                assert_eq!(mtools_referee(&a), mtools_referee(&b), "partition {k}");
                mtools_referee(&a)
            }
        };
        assert!(!ranges.is_empty());
        let (x, y) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
        for (s0, e0) in ranges {
            let (s0, e0) = (s0 as usize, (e0 as usize).min(x.len()));
            assert!(
                x[s0..e0] == y[s0..e0],
                "partition {}: bytes {s0}..{e0} differ",
                k + 1
            );
        }
    }
}

/// The used-blocks domain of `disk` as the library computes it, and its free ranges.
fn free_ranges(disk: &Path) -> Vec<(u64, u64)> {
    let dev = Device::open(disk, Access::Read).unwrap();
    let mut u = UsageMap::analyze(&dev);
    let d = u.domain(dev.size(), 512).expect("a used-blocks domain");
    d.free(dev.size())
}

#[test]
fn used_blocks_clone_of_every_filesystem() {
    if !have(&[
        "sgdisk",
        "mkfs.ext4",
        "debugfs",
        "mkfs.vfat",
        "mcopy",
        "mkfs.exfat",
        "mkntfs",
        "ntfscp",
        "partclone.ext4",
        "partclone.fat",
        "partclone.exfat",
        "partclone.ntfs",
        "fsck.exfat",
        "ntfsfix",
        "ddrescuelog",
    ]) {
        return;
    }
    let t = TempDir::new("clone-used");
    let disk = reused_disk(&t);
    let before = sha256(&disk);
    let target = t.p("target.img");
    random_file(&target, DISK, 99);
    let map = t.p("clone.map");
    let o = lifeboat(&[
        "clone",
        s(&disk),
        s(&target),
        "--yes",
        "--map",
        s(&map),
        "--json",
    ]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(sha256(&disk), before, "the source changed");
    let parts = r["partitions"].as_array().unwrap();
    let names: Vec<&str> = parts
        .iter()
        .map(|p| p["filesystem"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = PARTS.iter().map(|p| p.fs_type).collect();
    assert_eq!(names, want, "{r}");
    for p in parts {
        assert_eq!(p["mode"], "used_blocks", "{p}");
        assert!(p["reason"].is_null(), "{p}");
        assert!(
            p["used_bytes"].as_u64().unwrap() < p["size_bytes"].as_u64().unwrap(),
            "{p}"
        );
    }
    let used = r["used_bytes"].as_u64().unwrap();
    assert!(used < DISK / 2, "{r}");
    assert_eq!(r["bytes_copied"], used);
    assert_eq!(r["size_bytes"], DISK);
    assert_eq!(r["verified"], true);
    assert_eq!(r["verified_bytes"], used);
    let stderr = common::stderr(&o);
    assert!(stderr.contains("partition 10: ntfs,"), "{stderr}");
    assert!(stderr.contains("used blocks"), "{stderr}");

    referees(&t, &disk, &target, &(0..PARTS.len()).collect::<Vec<_>>());
    // Free space keeps the target's old bytes (and the free areas are most of the disk).
    let free = free_ranges(&disk);
    let old = SimDevice::pattern(DISK as usize, 99);
    let freeb: u64 = free.iter().map(|r| r.1).sum();
    assert_eq!(freeb, DISK - used);
    for &(a, l) in &free {
        assert!(
            read_at(&target, a, l) == old[a as usize..(a + l) as usize],
            "free bytes {a}+{l} were written"
        );
    }
    // The gap between partitions 5 and 6 (old data, outside partitions) was copied.
    let (s5, z5) = layout()[GAP_AFTER];
    assert_eq!(
        read_at(&target, s5 + z5, 2 * MIB),
        read_at(&disk, s5 + z5, 2 * MIB)
    );

    // The map covers the whole disk; GNU ddrescuelog reads it; free areas are marked.
    let text = fs::read_to_string(&map).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.ends_with("?  # free")).count(),
        free.len()
    );
    let dl = run(Command::new("ddrescuelog").arg("-t").arg(&map));
    assert!(dl.contains("bad-sector:        0 B"), "{dl}");
    let m = ExtentMap::load(&map, DISK).unwrap();
    assert_eq!(m.ranges(Status::Free), free);
    assert!(m.is_complete());
    // A finished map is not resumed (the target may have changed since): the clone copies the
    // used blocks again, with a note; a resume with --all-sectors is refused (exit 4) with what
    // to do, and writes nothing.
    let o = lifeboat(&[
        "clone",
        s(&disk),
        s(&target),
        "--yes",
        "--map",
        s(&map),
        "--json",
    ]);
    assert_exit(&o, 0);
    assert!(json(&o)["reads_total"].as_u64().unwrap() > 0);
    assert!(
        json(&o)["notes"]
            .to_string()
            .contains("records a clone that finished"),
        "{}",
        json(&o)
    );
    let tsha = sha256(&target);
    let o = lifeboat(&[
        "clone",
        s(&disk),
        s(&target),
        "--yes",
        "--all-sectors",
        "--map",
        s(&map),
        "--json",
    ]);
    assert_exit(&o, 4);
    let e = json(&o);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("run without --all-sectors"),
        "{e}"
    );
    assert_eq!(sha256(&target), tsha);

    // --all-sectors: every byte, as before used blocks.
    let all = t.p("all.img");
    random_file(&all, DISK, 98);
    let o = lifeboat(&[
        "clone",
        s(&disk),
        s(&all),
        "--yes",
        "--all-sectors",
        "--no-verify",
        "--json",
    ]);
    assert_exit(&o, 0);
    let ra = json(&o);
    assert_eq!(ra["used_bytes"], DISK);
    assert_eq!(ra["bytes_copied"], DISK);
    assert!(ra["partitions"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("--all-sectors"));
    assert_eq!(ra["partitions"][0]["filesystem"], "ext4");
    assert_eq!(sha256(&all), before);
    fs::remove_file(&all).unwrap();

    // A larger target: the GPT is moved to its end, the filesystems are intact.
    let big = t.p("big.img");
    random_file(&big, DISK + 16 * MIB, 97);
    let o = lifeboat(&["clone", s(&disk), s(&big), "--yes", "--json"]);
    assert_exit(&o, 0);
    let rb = json(&o);
    assert_eq!(rb["partition_table_fixed"], true);
    assert_eq!(rb["used_bytes"], used);
    referees(&t, &disk, &big, &[0, 9]);
    assert_eq!(sha256(&disk), before, "the source changed");
}

/// The rescue domain on a failing ext4 disk: bad sectors in free space are never read (no read
/// of the copy touches free space at all), a bad sector in used data is rescued and reported
/// exactly, the target's free space keeps its bytes and the verify pass covers the domain.
#[test]
fn failing_source_bad_sectors_in_free_space_are_never_read() {
    if !have(&["sgdisk", "mkfs.ext4", "debugfs"]) {
        return;
    }
    let t = TempDir::new("clone-used-bad");
    let disk = t.p("disk.img");
    random_file(&disk, 64 * MIB, 4);
    let p = t.p("p1");
    random_file(&p, 48 * MIB, 5);
    random_file(&t.p("f"), 6 * MIB, 6);
    sh(&format!(
        "sgdisk -n 1:2048:+48M {d} >/dev/null && mkfs.ext4 -q -F -E nodiscard {p} && \
         debugfs -w -R 'write {f} f' {p} >/dev/null 2>&1 && \
         dd if={p} of={d} bs=1M seek=1 conv=notrunc status=none",
        d = s(&disk),
        p = s(&p),
        f = s(&t.p("f"))
    ));
    let data = fs::read(&disk).unwrap();
    let size = data.len() as u64;
    let plain = SimDevice::new(data.clone(), 512);
    let mut u = UsageMap::analyze(&plain);
    assert_eq!(u.partitions[0].mode, Mode::UsedBlocks);
    let d = u.domain(size, 512).unwrap();
    let inside = |a: u64| d.ranges.iter().any(|r| a >= r.0 && a < r.0 + r.1);
    // A bad sector in the file's data, two in free space inside the ext4 partition (one right
    // after a used range, one far from any).
    let file = d
        .ranges
        .iter()
        .filter(|r| r.0 >= MIB && r.0 + r.1 <= 49 * MIB)
        .max_by_key(|r| r.1)
        .unwrap();
    assert!(file.1 >= MIB, "{file:?}");
    let used_bad = (file.0 + file.1 / 2) / 512 * 512;
    let r = d
        .ranges
        .iter()
        .find(|r| r.0 > 2 * MIB && r.0 + r.1 < 48 * MIB)
        .unwrap();
    let free_near = r.0 + r.1;
    assert!(!inside(free_near));
    let free_far = (40 * MIB..49 * MIB)
        .step_by(MIB as usize)
        .find(|&a| (a..a + MIB).step_by(512).all(|x| !inside(x)))
        .expect("a free MiB");
    let src = Arc::new(Recorder {
        sim: SimDevice::new(data.clone(), 512)
            .bad(used_bad, 512)
            .bad(free_near, 512)
            .bad(free_far + 4096, 512),
        log: Mutex::new(Vec::new()),
    });
    // The plan is read through the failing source too.
    let mut u2 = UsageMap::analyze(src.as_ref());
    let d2 = u2.domain(size, 512).unwrap();
    assert_eq!(d2, d);
    src.log.lock().unwrap().clear();
    let dst = Arc::new(MemTarget::new(size as usize, 0xAA));
    let opts = rescue::Options {
        domain: Some(d.ranges.clone()),
        ..Default::default()
    };
    let out = rescue::run(
        src.clone(),
        dst.clone(),
        ExtentMap::new(size),
        &opts,
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(out.map.ranges(Status::Bad), vec![(used_bad, 512)]);
    assert_eq!(out.map.ranges(Status::Free), d.free(size));
    for &(a, l) in src.log.lock().unwrap().iter() {
        assert!(
            d.ranges.iter().any(|r| a >= r.0 && a + l <= r.0 + r.1),
            "read {a}+{l} reaches outside the domain"
        );
    }
    assert_eq!(out.reads_failed, src.sim.failed_reads());
    let got = dst.take();
    for &(a, l) in &d.free(size) {
        assert!(got[a as usize..(a + l) as usize].iter().all(|&b| b == 0xAA));
    }
    for &(a, l) in &d.ranges {
        let (a, e) = (a as usize, (a + l) as usize);
        if (used_bad as usize) >= a && (used_bad as usize) < e {
            continue;
        }
        assert!(got[a..e] == data[a..e], "used bytes {a}..{e} differ");
    }
    // The verify pass compares exactly the domain.
    let h = out.hashes.unwrap();
    let v = h
        .verify(
            &SimDevice::new(got, 512),
            &Default::default(),
            &Default::default(),
        )
        .unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.verified_bytes, d.bytes);
}
