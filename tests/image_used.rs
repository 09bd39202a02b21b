//! Used-block images end to end on a reused disk: old random data everywhere, then GPT + FAT32,
//! NTFS, ext4 and exFAT made by the real tools with files added (and some deleted). Create reads
//! only used blocks and records the rest as unallocated; restore onto a target full of *other*
//! random data leaves its free space alone (or zeroes it with --zero-free); every filesystem is
//! clean by its own checker and its used bytes — as partclone's domain log lists them — equal the
//! source's. Incrementals record chunks that became free; a version 1 image still reads.
mod common;

use common::usedfs::{have, random_file, referee};
use common::{assert_exit, json, lifeboat, s, sh, sha256, TempDir, MIB};
use lifeboat::image::format::{Footer, Header, FOOTER_SIZE, HEADER_SIZE, SEGTAB_ENTRY};
use lifeboat::rescue::sim::SimDevice;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// (start, size, partclone fs name, fsck command) of each partition.
const PARTS: [(u64, u64, &str, &str); 4] = [
    (MIB, 40 * MIB, "fat", "fsck.vfat -n"),
    (41 * MIB, 48 * MIB, "ntfs", "ntfsfix -n"),
    (89 * MIB, 64 * MIB, "ext4", "e2fsck -fn"),
    (153 * MIB, 32 * MIB, "exfat", "fsck.exfat -n"),
];
const DISK: u64 = 200 * MIB;

/// The reused sample disk (see the module doc).
fn reused_disk(t: &TempDir) -> std::path::PathBuf {
    let disk = t.p("disk.img");
    random_file(&disk, DISK, 1);
    sh(&format!(
        "sgdisk -n 1:2048:+40M -t 1:ef00 -n 2:0:+48M -t 2:0700 -n 3:0:+64M -t 3:8300 \
         -n 4:0:+32M -t 4:0700 {} >/dev/null",
        s(&disk)
    ));
    for (k, kib) in [3000u64, 700, 9000, 64].iter().enumerate() {
        random_file(&t.p(&format!("f{k}")), kib * 1024, 50 + k as u64);
    }
    let f = |k: usize| s(&t.p(&format!("f{k}"))).to_string();
    for (k, &(start, size, _, _)) in PARTS.iter().enumerate() {
        let p = t.p(&format!("p{k}"));
        random_file(&p, size, 10 + k as u64);
        let p = s(&p);
        match k {
            0 => sh(&format!(
                "mkfs.vfat -F 32 -S 512 -s 1 {p} >/dev/null && mcopy -i {p} {} {} {} ::/ && mdel -i {p} ::/f0",
                f(0),
                f(1),
                f(2)
            )),
            1 => sh(&format!(
                "mkntfs -F -Q -q {p} && ntfscp -q {p} {} a.bin && ntfscp -q {p} {} b.bin",
                f(2),
                f(1)
            )),
            2 => sh(&format!(
                "mkfs.ext4 -q -F -E nodiscard {p} && debugfs -w -R 'write {} big' {p} >/dev/null 2>&1 && \
                 debugfs -w -R 'write {} small' {p} >/dev/null 2>&1 && \
                 debugfs -w -R 'write {} gone' {p} >/dev/null 2>&1 && \
                 debugfs -w -R 'rm gone' {p} >/dev/null 2>&1",
                f(2),
                f(3),
                f(0)
            )),
            _ => sh(&format!("mkfs.exfat {p} >/dev/null")),
        };
        sh(&format!(
            "dd if={p} of={} bs=1M seek={} conv=notrunc status=none",
            s(&disk),
            start / MIB
        ));
    }
    disk
}

/// partclone's used ranges of partition `k` of `disk` (its domain log).
fn used_ranges(t: &TempDir, disk: &Path, k: usize) -> Vec<(u64, u64)> {
    let (start, size, fs_name, _) = PARTS[k];
    let part = t.p("part.tmp");
    sh(&format!(
        "dd if={} of={} bs=1M skip={} count={} status=none",
        s(disk),
        s(&part),
        start / MIB,
        size / MIB
    ));
    let v: Vec<(u64, u64)> = referee(fs_name, &part, t)
        .into_iter()
        .map(|(a, e)| (start + a, start + e))
        .collect();
    assert!(!v.is_empty());
    v
}

/// Every partition is clean by its own checker.
fn fsck_all(t: &TempDir, disk: &Path) {
    sh(&format!(
        "sgdisk -v {} | grep -q 'No problems found'",
        s(disk)
    ));
    for &(start, size, _, fsck) in &PARTS {
        let part = t.p("check.tmp");
        sh(&format!(
            "dd if={} of={} bs=1M skip={} count={} status=none && {fsck} {} >/dev/null 2>&1",
            s(disk),
            s(&part),
            start / MIB,
            size / MIB,
            s(&part)
        ));
    }
}

/// The used bytes of every filesystem are equal on `a` and `b`.
fn used_equal(t: &TempDir, a: &Path, b: &Path) {
    let (fa, fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    for k in 0..PARTS.len() {
        for (s0, e0) in used_ranges(t, a, k) {
            let mut x = vec![0u8; (e0 - s0) as usize];
            let mut y = vec![0u8; (e0 - s0) as usize];
            fa.read_exact_at(&mut x, s0).unwrap();
            fb.read_exact_at(&mut y, s0).unwrap();
            assert!(x == y, "partition {} bytes {s0}..{e0} differ", k + 1);
        }
    }
}

fn read_at(p: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fs::File::open(p)
        .unwrap()
        .read_exact_at(&mut v, off)
        .unwrap();
    v
}

#[test]
fn used_blocks_create_restore_incremental() {
    if !have(&[
        "sgdisk",
        "mkfs.vfat",
        "mkntfs",
        "ntfscp",
        "mkfs.ext4",
        "debugfs",
        "mkfs.exfat",
        "partclone.ntfs",
    ]) {
        return;
    }
    let t = TempDir::new("used");
    let disk = reused_disk(&t);
    let before = sha256(&disk);

    // Create: only used blocks.
    let img = t.p("used.lbi");
    let o = lifeboat(&["image", "create", s(&disk), s(&img), "--json"]);
    assert_exit(&o, 0);
    let j = json(&o);
    assert_eq!(sha256(&disk), before, "the source changed");
    let parts = j["partitions"].as_array().unwrap();
    let names: Vec<&str> = parts
        .iter()
        .map(|p| p["filesystem"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vfat", "ntfs", "ext4", "exfat"], "{j}");
    assert!(parts.iter().all(|p| p["mode"] == "used_blocks"), "{j}");
    let unalloc = j["unallocated_chunks"].as_u64().unwrap();
    assert!(unalloc > 100, "{j}");
    // Random data does not compress: the image is about the used bytes, far below the disk.
    let used = j["used_bytes"].as_u64().unwrap();
    let size = j["image_bytes"].as_u64().unwrap();
    assert!(used < DISK / 3, "{j}");
    assert!(size < used + 4 * MIB, "image {size} for {used} used bytes");

    // The same disk in --all-sectors mode stores everything (the old random data too).
    let all = t.p("all.lbi");
    let o = lifeboat(&[
        "image",
        "create",
        s(&disk),
        s(&all),
        "--all-sectors",
        "--json",
    ]);
    assert_exit(&o, 0);
    let ja = json(&o);
    assert_eq!(ja["unallocated_chunks"], 0);
    assert!(ja["partitions"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("--all-sectors"));
    assert!(ja["image_bytes"].as_u64().unwrap() > DISK * 7 / 10, "{ja}");

    let o = lifeboat(&["image", "verify", s(&img), "--json"]);
    assert_exit(&o, 0);
    let o = lifeboat(&["image", "info", s(&img), "--json"]);
    assert_exit(&o, 0);
    let i = json(&o);
    assert_eq!(i["format_version"], 2);
    assert_eq!(i["used_blocks"], true);
    assert_eq!(i["unallocated_chunks"], unalloc);
    assert_eq!(i["partitions"][2]["filesystem"], "ext4");
    assert_eq!(i["partitions"][2]["used_bytes"], parts[2]["used_bytes"]);

    // Restore onto a target full of other random data: its free space keeps its old bytes.
    let target = t.p("target.img");
    random_file(&target, DISK, 99);
    let o = lifeboat(&["image", "restore", s(&img), s(&target), "--yes", "--json"]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(r["media_hash_verified"], true);
    assert_eq!(r["unallocated_bytes"].as_u64().unwrap(), unalloc * MIB);
    fsck_all(&t, &target);
    used_equal(&t, &disk, &target);
    // The ext4 partition's last MiB is free: left as the target had it.
    let free_at = PARTS[2].0 + PARTS[2].1 - MIB;
    assert_eq!(
        read_at(&target, free_at, 4096),
        SimDevice::pattern(DISK as usize, 99)[free_at as usize..free_at as usize + 4096]
    );

    // --zero-free writes zeros there instead.
    let target2 = t.p("target2.img");
    random_file(&target2, DISK, 98);
    let o = lifeboat(&[
        "image",
        "restore",
        s(&img),
        s(&target2),
        "--yes",
        "--zero-free",
        "--json",
    ]);
    assert_exit(&o, 0);
    assert_eq!(json(&o)["unallocated_bytes"], 0);
    assert!(read_at(&target2, free_at, 4096).iter().all(|&b| b == 0));
    fsck_all(&t, &target2);

    // Export: sparse, the used data equal, free blocks zero (deleted data not leaked): the
    // deleted ext4 file's old contents appear nowhere in the export.
    let raw = t.p("export.raw");
    let o = lifeboat(&["image", "export", s(&img), s(&raw), "--json"]);
    assert_exit(&o, 0);
    use std::os::unix::fs::MetadataExt;
    assert!(fs::metadata(&raw).unwrap().blocks() * 512 < DISK / 2);
    used_equal(&t, &disk, &raw);
    let gone = fs::read(t.p("f0")).unwrap();
    let needle = &gone[100_000..100_064];
    let ext = read_at(&raw, PARTS[2].0, PARTS[2].1 as usize);
    assert!(
        !ext.windows(64).any(|w| w == needle),
        "a deleted file's data leaked into the image"
    );
    let src_ext = read_at(&disk, PARTS[2].0, PARTS[2].1 as usize);
    assert!(
        src_ext.windows(64).any(|w| w == needle),
        "the test's deleted file is not on the source: the leak check would prove nothing"
    );

    // Incremental: delete the big ext4 file; its chunks become unallocated, not changed data.
    let p2 = t.p("p2");
    sh(&format!(
        "dd if={} of={} bs=1M skip={} count={} status=none && debugfs -w -R 'rm big' {} >/dev/null 2>&1 && \
         dd if={} of={} bs=1M seek={} conv=notrunc status=none",
        s(&disk),
        s(&p2),
        PARTS[2].0 / MIB,
        PARTS[2].1 / MIB,
        s(&p2),
        s(&p2),
        s(&disk),
        PARTS[2].0 / MIB
    ));
    let inc = t.p("inc.lbi");
    let o = lifeboat(&[
        "image",
        "create",
        s(&disk),
        s(&inc),
        "--parent",
        s(&img),
        "--json",
    ]);
    assert_exit(&o, 0);
    let ji = json(&o);
    assert!(
        ji["unallocated_chunks"].as_u64().unwrap() >= unalloc + 7,
        "{ji}"
    );
    assert!(ji["image_bytes"].as_u64().unwrap() < 3 * MIB, "{ji}");
    let o = lifeboat(&["image", "verify", s(&inc), "--json"]);
    assert_exit(&o, 0);
    let target3 = t.p("target3.img");
    random_file(&target3, DISK, 97);
    let o = lifeboat(&["image", "restore", s(&inc), s(&target3), "--yes", "--json"]);
    assert_exit(&o, 0);
    fsck_all(&t, &target3);
    used_equal(&t, &disk, &target3);
}

/// An image in version 1 layout (no usage record, version 1 header) still verifies and exports.
#[test]
fn version_one_image_still_reads() {
    let t = TempDir::new("v1");
    let disk = t.p("disk.img");
    random_file(&disk, 8 * MIB, 3);
    let img = t.p("v2.lbi");
    assert_exit(
        &lifeboat(&[
            "image",
            "create",
            s(&disk),
            s(&img),
            "--all-sectors",
            "--compress",
            "lz4",
        ]),
        0,
    );
    // Rewrite it as version 1: drop the usage record before the segment table.
    let b = fs::read(&img).unwrap();
    let mut f = Footer::decode(&b[b.len() - FOOTER_SIZE..])
        .unwrap()
        .unwrap();
    let ul = f.usage_len as usize;
    assert!(ul > 0);
    let tab_at = f.segtab_offset as usize;
    let tab = b[tab_at..tab_at + f.segments as usize * SEGTAB_ENTRY].to_vec();
    let mut h = Header::decode(&b[..HEADER_SIZE]).unwrap();
    h.version = 1;
    f.usage_len = 0;
    f.segtab_offset -= ul as u64;
    let mut v1 = h.encode().to_vec();
    v1.extend_from_slice(&b[HEADER_SIZE..tab_at - ul]);
    v1.extend_from_slice(&tab);
    v1.extend_from_slice(&f.encode());
    let old = t.p("v1.lbi");
    fs::write(&old, v1).unwrap();
    let o = lifeboat(&["image", "verify", s(&old), "--json"]);
    assert_exit(&o, 0);
    let o = lifeboat(&["image", "info", s(&old), "--json"]);
    assert_eq!(json(&o)["format_version"], 1);
    let raw = t.p("v1.raw");
    assert_exit(&lifeboat(&["image", "export", s(&old), s(&raw)]), 0);
    assert_eq!(sha256(&raw), sha256(&disk));
}

/// `--compress zstd[:LEVEL]`: a smaller image that verifies and exports bit-exact; a bad
/// method is a usage error.
#[test]
fn zstd_payloads_round_trip() {
    let t = TempDir::new("zstd");
    let disk = t.p("disk.img");
    // Compressible content: text-like lines, with a random stretch (stored raw).
    let mut data: Vec<u8> = (0..16 * MIB)
        .map(|i| b"lifeboat zstd chunk payload line\n"[(i % 33) as usize] ^ ((i / 4096) as u8 & 3))
        .collect();
    data[(4 * MIB) as usize..(5 * MIB) as usize]
        .copy_from_slice(&SimDevice::pattern(MIB as usize, 8));
    fs::write(&disk, &data).unwrap();
    let (lz, zs) = (t.p("lz4.lbi"), t.p("zstd.lbi"));
    let o = lifeboat(&[
        "image",
        "create",
        s(&disk),
        s(&lz),
        "--compress",
        "lz4",
        "--json",
    ]);
    assert_exit(&o, 0);
    let lz_bytes = json(&o)["image_bytes"].as_u64().unwrap();
    let o = lifeboat(&[
        "image",
        "create",
        s(&disk),
        s(&zs),
        "--compress",
        "zstd:9",
        "--json",
    ]);
    assert_exit(&o, 0);
    let zs_bytes = json(&o)["image_bytes"].as_u64().unwrap();
    assert!(zs_bytes < lz_bytes, "zstd {zs_bytes} vs lz4 {lz_bytes}");
    assert_exit(&lifeboat(&["image", "verify", s(&zs)]), 0);
    let raw = t.p("zstd.raw");
    assert_exit(&lifeboat(&["image", "export", s(&zs), s(&raw)]), 0);
    assert_eq!(sha256(&raw), sha256(&disk));
    for bad in ["zstd:0", "zstd:20", "gzip"] {
        let o = lifeboat(&[
            "image",
            "create",
            s(&disk),
            s(&t.p("bad.lbi")),
            "--compress",
            bad,
        ]);
        assert_exit(&o, 2);
    }
}

/// A failing source in used-blocks mode: a bad sector in used data is rescued and reported
/// exactly; one in free space is never read (not reported, no retries) — in a chunk that is
/// mostly used (one whole-chunk read fails, then the used ranges are read one by one) and in a
/// chunk with no used block at all.
#[test]
fn failing_source_bad_sectors_in_free_space_are_never_read() {
    use lifeboat::fs::UsageMap;
    use lifeboat::image::{create, CreateOptions, SourceIdentity};
    use lifeboat::jobs::{Cancel, NoProgress};
    if !have(&["sgdisk", "mkfs.ext4", "debugfs"]) {
        return;
    }
    let t = TempDir::new("used-bad");
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
    let plain = SimDevice::new(data.clone(), 512);
    let plan = UsageMap::analyze(&plain);
    assert_eq!(plan.partitions[0].mode, lifeboat::fs::Mode::UsedBlocks);
    let used: Vec<(u64, u64)> = plan.extents().collect();
    let is_used = |a: u64| used.iter().any(|r| a >= r.0 && a < r.1);
    // A used sector inside the 6 MiB file's data, and a free sector in a chunk that is mostly
    // used (same chunk, if there is one), and a free sector in a chunk with no used block.
    let chunk_used = |c: u64| {
        used.iter()
            .map(|r| r.1.min((c + 1) * MIB).saturating_sub(r.0.max(c * MIB)))
            .sum::<u64>()
    };
    let busy = (1..64u64)
        .find(|&c| chunk_used(c) >= MIB / 2 && chunk_used(c) < MIB)
        .expect("a chunk that is mostly but not all used");
    let used_bad = (busy * MIB..(busy + 1) * MIB)
        .step_by(512)
        .find(|&a| is_used(a) && is_used(a + 511))
        .unwrap();
    let free_bad_busy = (busy * MIB..(busy + 1) * MIB)
        .step_by(512)
        .find(|&a| !is_used(a) && !is_used(a + 511))
        .unwrap();
    let empty = (1..64u64)
        .find(|&c| chunk_used(c) == 0)
        .expect("an empty chunk");
    let free_bad_empty = empty * MIB + 4096;
    let src = SimDevice::new(data, 512)
        .bad(used_bad, 512)
        .bad(free_bad_busy, 512)
        .bad(free_bad_empty, 512);
    let img = t.p("bad.lbi");
    let rep = create(
        std::sync::Arc::new(src),
        &SourceIdentity::default(),
        &img,
        &CreateOptions::default(),
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(rep.bad_ranges, vec![(used_bad, 512)], "{rep:?}");
    assert_eq!(rep.bad_bytes, 512);
    assert_exit(&lifeboat(&["image", "verify", s(&img)]), 0);
}
