//! XFS and btrfs used-block maps (src/fs/xfs.rs, src/fs/btrfs.rs) against filesystems made by
//! the real tools on files pre-filled with random data (files added with `mkfs.xfs -p` /
//! `mkfs.btrfs --rootdir`, and, where this host can mount them, changed and deleted through the
//! kernel). Referees: `xfs_db freesp` (our XFS map is exactly the filesystem minus its free
//! extents), btrfs-progs' `dump-tree` (our btrfs map is exactly every extent item on every
//! stripe of its chunk), partclone's domain log (`partclone.<fs> -D`: every block it copies is in
//! our map, or — btrfs — free space it over-marks, for reasons listed at [`check_btrfs`]),
//! `xfs_logprint` (clean or dirty log), and a GPT disk imaged and restored, and cloned, onto a
//! target of other random data: `xfs_repair -n` / `btrfs check --readonly --check-data-csum`
//! clean on the copy, the used bytes equal, the free space untouched, the source unchanged.
use lifeboat::fs::{self, Mode, Range, Region, UsageMap};
use lifeboat::io::{Access, BlockSource, Device};
use lifeboat::rescue::sim::SimDevice;
use std::fs as stdfs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::usedfs::{have, minus, random_file, referee};
use common::{assert_exit, json, lifeboat, run, s, sh, sha256, Mounted, TempDir, MIB};

/// mkfs.xfs refuses filesystems under 300 MB unless it believes it runs under fstests.
const XFS_SMALL: &str = "QA_CHECK_FS=1 TEST_DIR=/tmp TEST_DEV=lifeboat";

fn total(v: &[Range]) -> u64 {
    v.iter().map(|r| r.1 - r.0).sum()
}

/// partclone's used ranges of the filesystem in `img` (its domain log), never empty.
fn partclone(fs: &str, img: &Path, dir: &TempDir) -> Vec<Range> {
    let v = referee(fs, img, dir);
    assert!(!v.is_empty(), "partclone.{fs} listed no used blocks");
    v
}

/// Our map of the filesystem filling `img`.
fn ours(kind: &str, img: &Path) -> lifeboat::error::Result<Vec<Range>> {
    ours_on(kind, &Device::open(img, Access::Read).unwrap())
}

/// Our map of the filesystem filling `src` (a file, or a simulated failing disk).
fn ours_on(kind: &str, src: &dyn BlockSource) -> lifeboat::error::Result<Vec<Range>> {
    let r = Region::new(src, 0, src.size());
    let mut m: Box<dyn fs::UsedMap> = match kind {
        "xfs" => Box::new(fs::xfs::open(r)?),
        "btrfs" => Box::new(fs::btrfs::open(r)?),
        _ => unreachable!(),
    };
    fs::collect(&mut *m)
}

/// Our map covers every byte partclone copies and adds at most `slack` bytes.
fn check_partclone(fs: &str, img: &Path, dir: &TempDir, slack: u64) -> Vec<Range> {
    let theirs = partclone(fs, img, dir);
    let mine = ours(fs, img).unwrap();
    let missing = minus(&theirs, &mine);
    assert!(
        missing.is_empty(),
        "{fs}: our map misses bytes partclone copies: {missing:x?}\nours {mine:x?}"
    );
    let extra = minus(&mine, &theirs);
    println!(
        "{fs}: ours {} bytes, partclone {} bytes, extra {}: {extra:x?}",
        total(&mine),
        total(&theirs),
        total(&extra)
    );
    assert!(
        total(&extra) <= slack,
        "{fs}: {} extra bytes",
        total(&extra)
    );
    mine
}

/// A field of `xfs_db -r -c 'sb 0' -c 'p NAME'`.
fn xfs_sb(img: &Path, name: &str) -> u64 {
    let o = sh(&format!("xfs_db -r -c 'sb 0' -c 'p {name}' {}", s(img)));
    o.trim()
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("xfs_db: {o}"))
}

/// The active AGFL entries of AG `ag` (blocks XFS keeps for its B-trees, not free space).
fn xfs_agfl(img: &Path, ag: u64) -> Vec<u64> {
    let o = sh(&format!(
        "xfs_db -r -c 'agf {ag}' -c 'p flfirst flcount' -c 'agfl {ag}' -c 'p bno' {}",
        s(img)
    ));
    let field = |n: &str| -> u64 {
        o.lines()
            .find_map(|l| l.strip_prefix(&format!("{n} = ")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (first, count) = (field("flfirst"), field("flcount"));
    let list = o.lines().find(|l| l.starts_with("bno[")).unwrap();
    let entries: Vec<&str> = list.split(" = ").nth(1).unwrap().split(' ').collect();
    (0..count)
        .map(|k| {
            let e = entries[((first + k) % entries.len() as u64) as usize];
            e.split(':').nth(1).unwrap().parse().unwrap()
        })
        .collect()
}

/// xfs_db's free extents of every AG (`freesp -d`, which also lists the AGFL's blocks: those
/// are left out), as byte ranges.
fn xfs_free(img: &Path) -> Vec<Range> {
    let bs = xfs_sb(img, "blocksize");
    let agblocks = xfs_sb(img, "agblocks");
    let agfl: Vec<Vec<u64>> = (0..xfs_sb(img, "agcount"))
        .map(|ag| xfs_agfl(img, ag))
        .collect();
    let mut v = Vec::new();
    let o = sh(&format!("xfs_db -r -c 'freesp -d' {}", s(img)));
    for l in o.lines() {
        // "   agno    agbno      len"
        let f: Vec<u64> = l.split_whitespace().map_while(|x| x.parse().ok()).collect();
        if f.len() != 3 || l.split_whitespace().count() != 3 {
            continue;
        }
        if f[2] == 1 && agfl[f[0] as usize].contains(&f[1]) {
            continue;
        }
        let start = (f[0] * agblocks + f[1]) * bs;
        v.push((start, start + f[2] * bs));
    }
    v.sort_unstable();
    v
}

/// Files with random contents to put into filesystems; returns (dir with them, paths).
fn payload(dir: &TempDir) -> (PathBuf, Vec<PathBuf>) {
    let root = dir.p("root");
    stdfs::create_dir_all(root.join("sub")).unwrap();
    let mut v = Vec::new();
    for (i, kib) in [3u64, 700, 5000, 12, 2100].iter().enumerate() {
        let p = if i % 2 == 0 {
            root.join(format!("f{i}.bin"))
        } else {
            root.join("sub").join(format!("f{i}.bin"))
        };
        stdfs::write(
            &p,
            SimDevice::pattern((kib * 1024) as usize, 200 + i as u64),
        )
        .unwrap();
        v.push(p);
    }
    (root, v)
}

/// A `mkfs.xfs -p` prototype file holding the payload tree.
fn xfs_proto(dir: &TempDir, root: &Path) -> PathBuf {
    let mut p = String::from("/dev/null\n0 0\nd--755 0 0\n");
    let mut entries: Vec<_> = stdfs::read_dir(root).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().to_string();
        if e.path().is_dir() {
            p += &format!("{name} d--755 0 0\n");
            for f in stdfs::read_dir(e.path()).unwrap() {
                let f = f.unwrap();
                p += &format!(
                    "{} ---644 0 0 {}\n",
                    f.file_name().to_string_lossy(),
                    s(&f.path())
                );
            }
            p += "$\n";
        } else {
            p += &format!("{name} ---644 0 0 {}\n", s(&e.path()));
        }
    }
    p += "$\n";
    let f = dir.p("proto");
    stdfs::write(&f, p).unwrap();
    f
}

/// Our XFS map equals xfs_db's view (the filesystem minus its free extents, plus the partition
/// tail) and covers partclone's.
fn check_xfs(img: &Path, d: &TempDir) {
    sh(&format!("xfs_repair -n {} >/dev/null 2>&1", s(img)));
    // AGFL blocks (4 per AG, 16 KiB each here) are not free space to XFS; partclone skips them.
    let agcount = xfs_sb(img, "agcount");
    let bs = xfs_sb(img, "blocksize");
    let mine = check_partclone("xfs", img, d, agcount * 8 * bs);
    let fs_end = xfs_sb(img, "dblocks") * bs;
    let mut expect = minus(&[(0, fs_end)], &xfs_free(img));
    let len = stdfs::metadata(img).unwrap().len();
    if fs_end < len {
        match expect.last_mut() {
            Some(l) if l.1 == fs_end => l.1 = len,
            _ => expect.push((fs_end, len)),
        }
    }
    assert_eq!(
        mine, expect,
        "our map is not the filesystem minus xfs_db's free extents"
    );
}

fn mkfs_xfs(d: &TempDir, opts: &str, seed: u64) -> PathBuf {
    let img = d.p("xfs.img");
    random_file(&img, 64 * MIB, seed);
    let (root, _) = payload(d);
    let proto = xfs_proto(d, &root);
    sh(&format!(
        "{XFS_SMALL} mkfs.xfs -q -f -K -d agcount=4 {opts} -p {} {}",
        s(&proto),
        s(&img)
    ));
    img
}

#[test]
fn xfs_v5_with_files() {
    if !have(&["mkfs.xfs", "xfs_db", "xfs_repair", "partclone.xfs"]) {
        return;
    }
    for opts in ["", "-m rmapbt=1 -b size=2048"] {
        let d = TempDir::new("xfs5");
        let img = mkfs_xfs(&d, opts, 41);
        check_xfs(&img, &d);
    }
}

#[test]
fn xfs_v4_with_files() {
    if !have(&["mkfs.xfs", "xfs_db", "xfs_repair", "partclone.xfs"]) {
        return;
    }
    let d = TempDir::new("xfs4");
    let img = mkfs_xfs(&d, "-m crc=0 -b size=1024", 42);
    check_xfs(&img, &d);
}

/// `xfs_logprint -t`'s verdict on the log: true for clean.
fn logprint_clean(img: &Path) -> bool {
    let o = Command::new("xfs_logprint")
        .arg("-t")
        .arg(img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("state: <"), "xfs_logprint: {text}");
    text.contains("state: <CLEAN>")
}

/// Changed through the kernel (where this host mounts XFS): files deleted and overwritten, the
/// log cycled past its end by many small transactions; then a shut-down filesystem whose log
/// needs recovery is refused, as xfs_logprint and xfs_repair see it.
#[test]
fn xfs_changed_by_the_kernel_and_dirty_log() {
    if !have(&[
        "mkfs.xfs",
        "xfs_db",
        "xfs_repair",
        "xfs_io",
        "xfs_logprint",
        "partclone.xfs",
    ]) {
        return;
    }
    let d = TempDir::new("xfsk");
    let img = mkfs_xfs(&d, "", 43);
    let len = 64 * MIB;
    {
        let Some(m) = Mounted::ext4_in(&img, &d, 0, len) else {
            return;
        };
        let mp = s(&m.mp);
        sh(&format!(
            "rm {mp}/f2.bin && dd if=/dev/urandom of={mp}/sub/f1.bin bs=64k count=20 conv=notrunc status=none && \
             for r in 1 2; do mkdir {mp}/many && (cd {mp}/many && seq 1 8000 | xargs touch) && \
             rm -r {mp}/many; done && dd if=/dev/urandom of={mp}/new.bin bs=1M count=3 status=none"
        ));
    }
    assert!(logprint_clean(&img));
    // The log went past its end (cycle 2): its head is found by the cycle numbers' split.
    let o = sh(&format!("xfs_logprint -d {} 2>/dev/null || true", s(&img)));
    assert!(o.contains("Cycle 2"), "the log did not wrap");
    check_xfs(&img, &d);
    {
        let Some(m) = Mounted::ext4_in(&img, &d, 0, len) else {
            return;
        };
        let mp = s(&m.mp);
        sh(&format!(
            "dd if=/dev/urandom of={mp}/late.bin bs=1M count=2 status=none && rm {mp}/f0.bin && \
             xfs_io -x -c 'shutdown -f' {mp}"
        ));
    }
    assert!(!logprint_clean(&img), "the test did not leave a dirty log");
    let e = ours("xfs", &img).unwrap_err();
    assert!(e.to_string().contains("log needs recovery"), "{e}");
    let o = Command::new("xfs_repair")
        .arg("-n")
        .arg(&img)
        .output()
        .unwrap();
    assert!(!o.status.success(), "xfs_repair -n agrees the log is dirty");
}

/// Compares `ranges` (relative to the filesystem) of `a` and `b` (whole disks, the filesystem
/// at `start`).
fn same_bytes(a: &Path, b: &Path, start: u64, ranges: &[Range], what: &str) {
    let (fa, fb) = (stdfs::File::open(a).unwrap(), stdfs::File::open(b).unwrap());
    for &(s0, e0) in ranges {
        let mut x = vec![0u8; (e0 - s0) as usize];
        let mut y = vec![0u8; (e0 - s0) as usize];
        fa.read_exact_at(&mut x, start + s0).unwrap();
        fb.read_exact_at(&mut y, start + s0).unwrap();
        assert!(x == y, "{what}: bytes {s0}..{e0} differ on the copy");
    }
}

/// A whole MiB of `free` (relative to `start`) on `target` still holds its old random data
/// (seed `seed`, length `len`): restore neither read nor wrote it.
fn kept_old_data(target: &Path, start: u64, free: &[Range], len: u64, seed: u64) {
    let at = free
        .iter()
        .map(|r| ((start + r.0).next_multiple_of(MIB), start + r.1))
        .find(|(a, e)| a + MIB <= *e)
        .expect("a free MiB")
        .0;
    let mut x = vec![0u8; MIB as usize];
    stdfs::File::open(target)
        .unwrap()
        .read_exact_at(&mut x, at)
        .unwrap();
    let old = SimDevice::pattern(len as usize, seed);
    assert!(
        x == old[at as usize..][..MIB as usize],
        "free space of the target at {at} was written"
    );
}

/// Where the XFS and btrfs partitions of [`xb_disk`] lie, and the disk's length.
const XB: (u64, u64, u64, u64, u64) = (MIB, 64 * MIB, 65 * MIB, 160 * MIB, 240 * MIB);
/// The seed of the old random data on the copies' targets.
const XB_TARGET_SEED: u64 = 53;

/// The tools the XFS + btrfs disk and its referees need.
fn xb_tools() -> bool {
    have(&[
        "sgdisk",
        "mkfs.xfs",
        "xfs_repair",
        "partclone.xfs",
        "mkfs.btrfs",
        "btrfs",
    ])
}

/// A GPT disk of old random data with an XFS and a btrfs partition (DUP metadata), each made
/// over old data with files; the plan maps both. Returns the disk and the two filesystems'
/// images (as made, before they were copied into place).
fn xb_disk(d: &TempDir) -> (PathBuf, PathBuf, PathBuf) {
    let (xs, _, bs, _, total_len) = XB;
    let disk = d.p("disk.img");
    random_file(&disk, total_len, 51);
    sh(&format!(
        "sgdisk -n 1:2048:+64M -t 1:8300 -n 2:0:+160M -t 2:8300 {} >/dev/null",
        s(&disk)
    ));
    let px = mkfs_xfs(d, "", 52);
    let pb = mkfs_btrfs(d, "-m dup", 54, 160 * MIB);
    for (p, at) in [(&px, xs), (&pb, bs)] {
        sh(&format!(
            "dd if={} of={} bs=1M seek={} conv=notrunc status=none",
            s(p),
            s(&disk),
            at / MIB
        ));
    }
    let dev = Device::open(&disk, Access::Read).unwrap();
    let plan = UsageMap::analyze(&dev);
    let names: Vec<_> = plan
        .partitions
        .iter()
        .map(|p| p.filesystem.clone())
        .collect();
    assert_eq!(names, [Some("xfs".to_string()), Some("btrfs".to_string())]);
    assert!(
        plan.partitions.iter().all(|p| p.mode == Mode::UsedBlocks),
        "{plan:?}"
    );
    let (mx, mb) = (ours("xfs", &px).unwrap(), ours("btrfs", &pb).unwrap());
    assert_eq!(plan.partitions[0].used_bytes, total(&mx));
    assert_eq!(plan.partitions[1].used_bytes, total(&mb));
    (disk, px, pb)
}

/// A copy of [`xb_disk`] onto a target of other old random data, by used blocks: xfs_repair
/// and btrfs check (data checksums included) find both filesystems clean, the used bytes are
/// the source's (partclone's and dump-tree's lists), and free space kept the target's bytes.
fn check_xb_copy(d: &TempDir, disk: &Path, px: &Path, pb: &Path, target: &Path) {
    let (xs, xl, bs, bl, total_len) = XB;
    let (cx, cb) = (d.p("copy-x.img"), d.p("copy-b.img"));
    sh(&format!(
        "dd if={t} of={x} bs=1M skip=1 count=64 status=none && xfs_repair -n {x} >/dev/null 2>&1 && \
         dd if={t} of={b} bs=1M skip=65 count=160 status=none && \
         btrfs check --readonly --check-data-csum {b} >/dev/null 2>&1",
        t = s(target),
        x = s(&cx),
        b = s(&cb)
    ));
    same_bytes(disk, target, xs, &partclone("xfs", px, d), "xfs");
    let (used_b, _) = btrfs_referee(pb);
    same_bytes(disk, target, bs, &used_b, "btrfs");
    let mb = ours("btrfs", pb).unwrap();
    kept_old_data(target, xs, &xfs_free(px), total_len, XB_TARGET_SEED);
    kept_old_data(
        target,
        bs,
        &minus(&[(0, bl)], &mb),
        total_len,
        XB_TARGET_SEED,
    );
    assert!(xl + xs <= bs);
}

/// [`xb_disk`] imaged and restored onto a target of other random data gives filesystems that
/// xfs_repair and btrfs check find clean, with the same used bytes, free space untouched, and
/// the source unchanged.
#[test]
fn xfs_and_btrfs_image_round_trip() {
    if !xb_tools() {
        return;
    }
    let d = TempDir::new("xbimg");
    let (disk, px, pb) = xb_disk(&d);
    let before = sha256(&disk);
    let img = d.p("x.lbi");
    let o = lifeboat(&["image", "create", s(&disk), s(&img), "--json"]);
    assert_exit(&o, 0);
    let j = json(&o);
    assert_eq!(j["partitions"][0]["mode"], "used_blocks", "{j}");
    assert_eq!(j["partitions"][1]["mode"], "used_blocks", "{j}");
    assert_eq!(sha256(&disk), before, "the source changed");
    let target = d.p("target.img");
    random_file(&target, XB.4, XB_TARGET_SEED);
    let o = lifeboat(&["image", "restore", s(&img), s(&target), "--yes", "--json"]);
    assert_exit(&o, 0);
    check_xb_copy(&d, &disk, &px, &pb, &target);
}

/// [`xb_disk`] cloned by used blocks (the default) onto a target of other random data: both
/// partitions are copied by their maps, the verify pass compares the copied domain, xfs_repair
/// and btrfs check find the copies clean with the source's used bytes, the target's free space
/// keeps its old bytes, and the source is unchanged.
#[test]
fn xfs_and_btrfs_clone_by_used_blocks() {
    if !xb_tools() {
        return;
    }
    let d = TempDir::new("xbclone");
    let (disk, px, pb) = xb_disk(&d);
    let before = sha256(&disk);
    let target = d.p("target.img");
    random_file(&target, XB.4, XB_TARGET_SEED);
    let o = lifeboat(&["clone", s(&disk), s(&target), "--yes", "--json"]);
    assert_exit(&o, 0);
    let j = json(&o);
    assert_eq!(j["partitions"][0]["filesystem"], "xfs", "{j}");
    assert_eq!(j["partitions"][1]["filesystem"], "btrfs", "{j}");
    assert_eq!(j["partitions"][0]["mode"], "used_blocks", "{j}");
    assert_eq!(j["partitions"][1]["mode"], "used_blocks", "{j}");
    assert_eq!(j["verified"], true, "{j}");
    let used = j["used_bytes"].as_u64().unwrap();
    assert!(used < XB.4 / 2, "the clone copied {used} bytes: {j}");
    assert_eq!(j["verified_bytes"].as_u64(), Some(used), "{j}");
    assert_eq!(sha256(&disk), before, "the source changed");
    let v = run(Command::new("sgdisk").arg("-v").arg(&target));
    assert!(v.contains("No problems found"), "sgdisk -v: {v}");
    check_xb_copy(&d, &disk, &px, &pb, &target);
}

/// A btrfs made by `mkfs.btrfs --rootdir` over old random data.
fn mkfs_btrfs(d: &TempDir, opts: &str, seed: u64, len: u64) -> PathBuf {
    let img = d.p("btrfs.img");
    random_file(&img, len, seed);
    let (root, _) = payload(d);
    sh(&format!(
        "mkfs.btrfs -q -f -K {opts} --rootdir {} {} >/dev/null 2>&1",
        s(&root),
        s(&img)
    ));
    // mkfs.btrfs grows a file too small for its profiles: the tests want it as made.
    assert_eq!(
        stdfs::metadata(&img).unwrap().len(),
        len,
        "mkfs.btrfs resized"
    );
    img
}

/// A number after `name ` in `line`.
fn field(line: &str, name: &str) -> Option<u64> {
    let mut w = line.split_whitespace();
    while let Some(x) = w.next() {
        if x == name {
            return w.next()?.parse().ok();
        }
    }
    None
}

/// A chunk as `dump-tree -t chunk` shows it: (logical, length, physical stripes).
type Chunk = (u64, u64, Vec<u64>);

/// The chunks (single and DUP only) and the device's size, from btrfs-progs.
fn btrfs_chunks(img: &Path) -> (Vec<Chunk>, u64) {
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut dev_bytes = 0;
    for l in sh(&format!(
        "btrfs inspect-internal dump-tree -t chunk {}",
        s(img)
    ))
    .lines()
    {
        if l.contains("CHUNK_ITEM") {
            let logical = l
                .split("CHUNK_ITEM ")
                .nth(1)
                .unwrap()
                .split(')')
                .next()
                .unwrap();
            chunks.push((logical.parse().unwrap(), 0, vec![]));
        } else if let (Some(len), Some(c)) = (field(l, "length"), chunks.last_mut()) {
            assert!(l.contains("|single") || l.contains("|DUP"), "{l}");
            c.1 = len;
        } else if let (Some(off), Some(c)) = (field(l, "offset"), chunks.last_mut()) {
            if l.trim_start().starts_with("stripe") {
                c.2.push(off);
            }
        } else if let Some(t) = field(l, "total_bytes") {
            dev_bytes = t;
        }
    }
    (chunks, dev_bytes)
}

/// btrfs-progs' view: every EXTENT_ITEM / METADATA_ITEM of `dump-tree -t extent`, mapped to
/// every physical stripe with the chunks of `dump-tree -t chunk` (single, DUP), plus the first
/// MiB, the superblock mirror at 64 MiB and the device's tail. Also returns each stripe.
fn btrfs_referee(img: &Path) -> (Vec<Range>, Vec<Range>) {
    let nodesize: u64 = sh(&format!("btrfs inspect-internal dump-super {}", s(img)))
        .lines()
        .find_map(|l| field(l, "nodesize"))
        .unwrap();
    let (chunks, dev_bytes) = btrfs_chunks(img);
    let mut used: Vec<Range> = vec![(0, MIB), (64 * MIB, 64 * MIB + 4096)];
    for l in sh(&format!(
        "btrfs inspect-internal dump-tree -t extent {}",
        s(img)
    ))
    .lines()
    {
        let Some(k) = l.split(" key (").nth(1) else {
            continue;
        };
        let f: Vec<&str> = k.split([' ', ')']).collect();
        let len = match f[1] {
            "EXTENT_ITEM" => f[2].parse::<u64>().unwrap(),
            "METADATA_ITEM" => nodesize,
            _ => continue,
        };
        let a: u64 = f[0].parse().unwrap();
        let c = chunks.iter().find(|c| a >= c.0 && a < c.0 + c.1).unwrap();
        for p in &c.2 {
            used.push((p + a - c.0, p + a - c.0 + len));
        }
    }
    let end = stdfs::metadata(img).unwrap().len();
    if dev_bytes < end {
        used.push((dev_bytes, end));
    }
    used.sort_unstable();
    let mut merged: Vec<Range> = Vec::new();
    for (a, b) in used {
        match merged.last_mut() {
            Some(l) if a <= l.1 => l.1 = l.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let mut stripes: Vec<Range> = chunks
        .iter()
        .flat_map(|c| c.2.iter().map(move |p| (*p, p + c.1)))
        .collect();
    stripes.sort_unstable();
    (merged, stripes)
}

/// Our btrfs map equals btrfs-progs' view; everything partclone copies is in it, or is free
/// space partclone over-marks (it rounds to 16 KiB nodes, marks a mapped tree block and csum
/// item through to the end of its chunk, and 16 KiB at each superblock mirror).
fn check_btrfs(img: &Path, d: &TempDir) -> Vec<Range> {
    sh(&format!(
        "btrfs check --readonly {} >/dev/null 2>&1",
        s(img)
    ));
    let mine = ours("btrfs", img).unwrap();
    let (expect, stripes) = btrfs_referee(img);
    assert!(
        mine == expect,
        "our map differs from btrfs-progs' extent tree:\nours   {mine:x?}\ntheirs {expect:x?}"
    );
    let theirs = partclone("btrfs", img, d);
    let mut excused = stripes.clone();
    excused.push((64 * MIB, 64 * MIB + (16 << 10)));
    excused.sort_unstable();
    let unexplained = minus(&minus(&theirs, &mine), &excused);
    assert!(
        unexplained.is_empty(),
        "partclone copies bytes outside our map and every chunk: {unexplained:x?}"
    );
    println!(
        "btrfs: ours {} bytes, partclone {} bytes, partclone over-marks {} bytes of free chunk space, ours beyond partclone {}",
        total(&mine),
        total(&theirs),
        total(&minus(&theirs, &mine)),
        total(&minus(&mine, &theirs))
    );
    mine
}

#[test]
fn btrfs_single_and_dup() {
    if !have(&["mkfs.btrfs", "btrfs", "partclone.btrfs"]) {
        return;
    }
    // DUP data needs 229 MiB at least. Non-skinny metadata: tree blocks are EXTENT_ITEMs.
    let cases = [
        ("-m single -d single", 160),
        ("-m dup", 160),
        ("-m dup -d dup", 232),
        ("-O ^skinny-metadata -n 4096", 160),
        ("-n 65536", 160),
    ];
    for (k, (opts, mib)) in cases.iter().enumerate() {
        let d = TempDir::new("btrfs");
        let img = mkfs_btrfs(&d, opts, 60 + k as u64, mib * MIB);
        println!("mkfs.btrfs {opts}");
        check_btrfs(&img, &d);
    }
}

/// Changed through the kernel (where this host mounts btrfs): files deleted, overwritten and
/// added, so new chunks sit at physical offsets other than their logical ones; then a copy
/// taken right after an fsync, whose log tree needs replay, is refused.
#[test]
fn btrfs_changed_by_the_kernel_and_log_tree() {
    if !have(&["mkfs.btrfs", "btrfs", "partclone.btrfs"]) {
        return;
    }
    let d = TempDir::new("btrfsk");
    let img = mkfs_btrfs(&d, "-m dup", 70, 160 * MIB);
    let len = 160 * MIB;
    {
        let Some(m) = Mounted::ext4_in(&img, &d, 0, len) else {
            return;
        };
        let mp = s(&m.mp);
        // Compressed extents in z/ (their on-disk size is what the extent tree holds).
        sh(&format!(
            "mkdir {mp}/z && btrfs property set {mp}/z compression zstd && \
             yes lifeboat | head -c 3000000 > {mp}/z/z.txt && \
             rm {mp}/f2.bin && dd if=/dev/urandom of={mp}/sub/f1.bin bs=64k count=20 conv=notrunc status=none && \
             dd if=/dev/urandom of={mp}/new.bin bs=1M count=24 status=none && \
             mkdir {mp}/many && (cd {mp}/many && seq 1 2000 | xargs touch) && sync && rm {mp}/new.bin && \
             dd if=/dev/urandom of={mp}/new2.bin bs=1M count=6 status=none"
        ));
    }
    let sup = sh(&format!("btrfs inspect-internal dump-super {}", s(&img)));
    assert!(
        sup.contains("COMPRESS_ZSTD"),
        "no compressed extents: {sup}"
    );
    check_btrfs(&img, &d);
    let snap = d.p("snap.img");
    {
        let Some(m) = Mounted::ext4_in(&img, &d, 0, len) else {
            return;
        };
        sh(&format!(
            "dd if=/dev/urandom of={}/late.bin bs=64k count=4 conv=fsync status=none && cp {} {}",
            s(&m.mp),
            s(&img),
            s(&snap)
        ));
    }
    let o = sh(&format!("btrfs inspect-internal dump-super {}", s(&snap)));
    assert!(
        o.lines()
            .any(|l| l.starts_with("log_root\t") && field(l, "log_root") != Some(0)),
        "the copy has no log tree: {o}"
    );
    let e = ours("btrfs", &snap).unwrap_err();
    assert!(e.to_string().contains("log tree needs replay"), "{e}");
}

/// A failing disk: bad sectors in btrfs free space are never read; an unreadable sector in the
/// first copy of a DUP tree block is read from the second copy (as the kernel would), and the
/// map is unchanged; a tree block whose copies both
/// fail their checksum makes the map fail (the partition is then copied whole).
#[test]
fn btrfs_bad_first_copy_and_corrupt_tree_block() {
    if !have(&["mkfs.btrfs", "btrfs"]) {
        return;
    }
    let d = TempDir::new("btrfsbad");
    let img = mkfs_btrfs(&d, "-m dup", 80, 160 * MIB);
    let (expect, _) = btrfs_referee(&img);
    // The extent tree's root block ("leaf N" or "node N" on the line after its title).
    let dump = sh(&format!(
        "btrfs inspect-internal dump-tree -t extent {}",
        s(&img)
    ));
    let root: u64 = dump
        .lines()
        .find_map(|l| l.strip_prefix("leaf ").or_else(|| l.strip_prefix("node ")))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let (chunks, _) = btrfs_chunks(&img);
    let c = chunks
        .iter()
        .find(|c| root >= c.0 && root < c.0 + c.1)
        .unwrap();
    assert_eq!(c.2.len(), 2, "metadata is not DUP");
    let copies: Vec<u64> = c.2.iter().map(|p| p + root - c.0).collect();
    let data = stdfs::read(&img).unwrap();
    // Unreadable sectors all over the free space are never read: the map is unchanged.
    let mut sim = SimDevice::new(data.clone(), 512);
    for r in minus(&[(0, 160 * MIB)], &expect) {
        sim = sim
            .bad(r.0, 512)
            .bad(r.1 - 512, 512)
            .bad(((r.0 + r.1) / 2) & !511, 512);
    }
    assert!(ours_on("btrfs", &sim).unwrap() == expect);
    let sim = SimDevice::new(data.clone(), 512).bad(copies[0] + 4096, 512);
    assert!(ours_on("btrfs", &sim).unwrap() == expect);
    let mut bad = data;
    for p in &copies {
        bad[*p as usize + 200] ^= 0x55;
    }
    let e = ours_on("btrfs", &SimDevice::new(bad, 512)).unwrap_err();
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
}

/// Two devices: refused, saying so (the other device holds part of the filesystem); so is a
/// checksum type other than CRC32C.
#[test]
fn btrfs_two_devices_and_xxhash_are_refused() {
    if !have(&["mkfs.btrfs"]) {
        return;
    }
    let d = TempDir::new("btrfs2");
    let (a, b) = (d.p("a.img"), d.p("b.img"));
    random_file(&a, 160 * MIB, 81);
    random_file(&b, 160 * MIB, 82);
    sh(&format!(
        "mkfs.btrfs -q -f -K -d single -m raid1 {} {} >/dev/null 2>&1",
        s(&a),
        s(&b)
    ));
    let e = ours("btrfs", &a).unwrap_err();
    assert!(e.to_string().contains("spanning 2 devices"), "{e}");
    sh(&format!(
        "mkfs.btrfs -q -f -K --csum xxhash {} >/dev/null 2>&1",
        s(&b)
    ));
    let e = ours("btrfs", &b).unwrap_err();
    assert!(e.to_string().contains("checksum type xxhash64"), "{e}");
}

/// A failing disk: bad sectors in XFS free space are never read; a free-space tree block that
/// fails its CRC, or is unreadable, makes the map fail (never a guess).
#[test]
fn xfs_corrupt_or_unreadable_free_space_tree() {
    if !have(&["mkfs.xfs", "xfs_db"]) {
        return;
    }
    let d = TempDir::new("xfsbad");
    let img = mkfs_xfs(&d, "", 44);
    let root = {
        let o = sh(&format!("xfs_db -r -c 'agf 1' -c 'p bnoroot' {}", s(&img)));
        o.trim().rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    let at = (xfs_sb(&img, "agblocks") + root) * xfs_sb(&img, "blocksize");
    let data = stdfs::read(&img).unwrap();
    // Unreadable sectors all over the free space are never read: the map is unchanged.
    let mut sim = SimDevice::new(data.clone(), 512);
    for r in xfs_free(&img) {
        sim = sim
            .bad(r.0, 512)
            .bad(r.1 - 512, 512)
            .bad(((r.0 + r.1) / 2) & !511, 512);
    }
    assert!(ours_on("xfs", &sim).unwrap() == ours("xfs", &img).unwrap());
    let e = ours_on("xfs", &SimDevice::new(data.clone(), 512).bad(at, 512)).unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
    let mut bad = data;
    bad[at as usize + 100] ^= 0x55;
    let e = ours_on("xfs", &SimDevice::new(bad, 512)).unwrap_err();
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
}
