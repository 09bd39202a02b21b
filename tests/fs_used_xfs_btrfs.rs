//! XFS and btrfs used-block maps (src/fs/xfs.rs, src/fs/btrfs.rs) against filesystems made by
//! the real tools on files pre-filled with random data (files added with `mkfs.xfs -p` /
//! `mkfs.btrfs --rootdir`, and, where this host can mount them, changed and deleted through the
//! kernel). Referees: partclone's domain log (`partclone.<fs> -D`: every block it copies must be
//! in our map), `xfs_db freesp` (our used bytes are exactly the filesystem minus its free
//! extents), `xfs_logprint` (clean or dirty log), and an image of a GPT disk restored onto a
//! target of other random data: `xfs_repair -n` / `btrfs check --readonly` clean on the copy,
//! the used bytes equal, the source unchanged.
use lifeboat::fs::{self, Mode, Range, Region, UsageMap};
use lifeboat::io::{Access, BlockSource, Device};
use lifeboat::rescue::sim::SimDevice;
use std::fs as stdfs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{assert_exit, json, lifeboat, s, sh, sha256, Mounted, TempDir, MIB};

/// mkfs.xfs refuses filesystems under 300 MB unless it believes it runs under fstests.
const XFS_SMALL: &str = "QA_CHECK_FS=1 TEST_DIR=/tmp TEST_DEV=lifeboat";

fn have(tools: &[&str]) -> bool {
    for t in tools {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            println!("skipped: {t} missing");
            return false;
        }
    }
    true
}

fn random_file(p: &Path, len: u64, seed: u64) {
    stdfs::write(p, SimDevice::pattern(len as usize, seed)).unwrap();
}

fn total(v: &[Range]) -> u64 {
    v.iter().map(|r| r.1 - r.0).sum()
}

/// Ranges of `a` not covered by `b` (both sorted, coalesced).
fn minus(a: &[Range], b: &[Range]) -> Vec<Range> {
    let mut out = Vec::new();
    for &(s, e) in a {
        let mut pos = s;
        for &(bs, be) in b {
            if be <= pos || bs >= e {
                continue;
            }
            if bs > pos {
                out.push((pos, bs));
            }
            pos = pos.max(be);
        }
        if pos < e {
            out.push((pos, e));
        }
    }
    out
}

/// partclone's used ranges of the filesystem in `img` (its domain log, '+' lines), coalesced.
fn partclone(fs: &str, img: &Path, dir: &TempDir) -> Vec<Range> {
    let dom = dir.p(&format!("{fs}.domain"));
    let _ = stdfs::remove_file(&dom);
    sh(&format!(
        "partclone.{fs} -D -q -s {} -o {} >/dev/null 2>&1",
        s(img),
        s(&dom)
    ));
    let mut v: Vec<Range> = Vec::new();
    for l in stdfs::read_to_string(&dom).unwrap().lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if l.starts_with('#') || f.len() != 3 || f[2] != "+" {
            continue;
        }
        let n = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16).unwrap();
        let (st, len) = (n(f[0]), n(f[1]));
        match v.last_mut() {
            Some(last) if last.1 == st => last.1 += len,
            _ => v.push((st, st + len)),
        }
    }
    assert!(!v.is_empty(), "partclone.{fs} listed no used blocks");
    v
}

/// Our map of the filesystem filling `img`.
fn ours(kind: &str, img: &Path) -> lifeboat::error::Result<Vec<Range>> {
    let dev = Device::open(img, Access::Read).unwrap();
    let r = Region::new(&dev, 0, dev.size());
    let mut m: Box<dyn fs::UsedMap> = match kind {
        "xfs" => Box::new(fs::xfs::open(r)?),
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
    let d = TempDir::new("xfs5");
    let img = mkfs_xfs(&d, "", 41);
    check_xfs(&img, &d);
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

/// A GPT disk of old random data with an XFS partition: the plan maps it, an image restored
/// onto a target of other random data gives a clean filesystem with the same used bytes, and
/// the source is unchanged.
#[test]
fn xfs_image_round_trip() {
    if !have(&["sgdisk", "mkfs.xfs", "xfs_repair", "partclone.xfs"]) {
        return;
    }
    let d = TempDir::new("xfsimg");
    let disk = d.p("disk.img");
    let (start, size) = (MIB, 64 * MIB);
    let total_len = 80 * MIB;
    random_file(&disk, total_len, 51);
    sh(&format!(
        "sgdisk -n 1:2048:+64M -t 1:8300 {} >/dev/null",
        s(&disk)
    ));
    let p = mkfs_xfs(&d, "", 52);
    sh(&format!(
        "dd if={} of={} bs=1M seek=1 conv=notrunc status=none",
        s(&p),
        s(&disk)
    ));
    let before = sha256(&disk);
    let dev = Device::open(&disk, Access::Read).unwrap();
    let plan = UsageMap::analyze(&dev);
    assert_eq!(plan.partitions[0].filesystem.as_deref(), Some("xfs"));
    assert_eq!(plan.partitions[0].mode, Mode::UsedBlocks, "{plan:?}");
    let mine = ours("xfs", &p).unwrap();
    assert_eq!(plan.partitions[0].used_bytes, total(&mine));
    drop(dev);

    let img = d.p("x.lbi");
    let o = lifeboat(&["image", "create", s(&disk), s(&img), "--json"]);
    assert_exit(&o, 0);
    let j = json(&o);
    assert_eq!(j["partitions"][0]["mode"], "used_blocks", "{j}");
    assert_eq!(sha256(&disk), before, "the source changed");
    let target = d.p("target.img");
    random_file(&target, total_len, 53);
    let o = lifeboat(&["image", "restore", s(&img), s(&target), "--yes", "--json"]);
    assert_exit(&o, 0);
    let copy = d.p("copy.img");
    sh(&format!(
        "dd if={} of={} bs=1M skip=1 count=64 status=none && xfs_repair -n {} >/dev/null 2>&1",
        s(&target),
        s(&copy),
        s(&copy)
    ));
    let (a, b) = (
        stdfs::File::open(&p).unwrap(),
        stdfs::File::open(&copy).unwrap(),
    );
    for (s0, e0) in partclone("xfs", &p, &d) {
        let mut x = vec![0u8; (e0 - s0) as usize];
        let mut y = vec![0u8; (e0 - s0) as usize];
        a.read_exact_at(&mut x, s0).unwrap();
        b.read_exact_at(&mut y, s0).unwrap();
        assert!(x == y, "bytes {s0}..{e0} differ on the copy");
    }
    // A whole free MiB of the copy kept the target's old data (not read, not written).
    let free = xfs_free(&p);
    let big = free.iter().max_by_key(|r| r.1 - r.0).unwrap();
    let at = (start + big.0).next_multiple_of(MIB);
    assert!(at + MIB <= start + big.1 && big.1 <= size);
    let mut x = vec![0u8; MIB as usize];
    stdfs::File::open(&target)
        .unwrap()
        .read_exact_at(&mut x, at)
        .unwrap();
    let old = SimDevice::pattern(total_len as usize, 53);
    assert!(
        x == old[at as usize..][..MIB as usize],
        "free space of the target was written"
    );
}
