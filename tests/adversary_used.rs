//! Adversarial cases for used-block mode (issue 11): layouts made by the real tools on disks
//! pre-filled with random data, where a map that called a used block free would silently lose
//! user data in a backup that "succeeded". Each case images the disk in used-blocks mode,
//! restores it onto a target full of *other* random data, and referees the copy with the
//! filesystem's own tools (file contents through mtools / debugfs, fsck clean), or checks that
//! the partition fell back to all sectors with a reason. The source's sha256 never changes.
//! Resume (issue 12): the `--map` of a clone or restore that finished is not "resumed" into a
//! job that writes nothing.
mod common;

use common::usedfs::{have, random_file};
use common::{assert_exit, json, lifeboat, s, sh, sha256, TempDir, MIB};
use std::fs;
use std::path::{Path, PathBuf};

/// Files of random bytes named f0.. in `t`, of the given sizes in KiB.
fn payload(t: &TempDir, kib: &[u64]) -> Vec<PathBuf> {
    kib.iter()
        .enumerate()
        .map(|(k, n)| {
            let p = t.p(&format!("f{k}"));
            random_file(&p, n * 1024, 500 + k as u64);
            p
        })
        .collect()
}

/// Images `disk` in used-blocks mode and restores it onto a file of other random data; returns
/// the restored copy and the create report. The source must be unchanged.
fn round_trip(t: &TempDir, disk: &Path) -> (PathBuf, serde_json::Value) {
    let before = sha256(disk);
    let img = t.p("copy.lbi");
    let _ = fs::remove_file(&img);
    let o = lifeboat(&["image", "create", s(disk), s(&img), "--json"]);
    assert_exit(&o, 0);
    let rep = json(&o);
    assert_eq!(sha256(disk), before, "the source changed");
    let target = t.p("restored.img");
    random_file(&target, fs::metadata(disk).unwrap().len(), 4242);
    let o = lifeboat(&["image", "restore", s(&img), s(&target), "--yes", "--json"]);
    assert_exit(&o, 0);
    (target, rep)
}

/// A FAT32 writer and reader for what mtools refuses to touch (a FAT32 by its BPB with fewer
/// than 65525 clusters: mtools goes by the count): `put IMG OFFSET NAME FILE FIRST_CLUSTER`
/// stores FILE contiguously from FIRST_CLUSTER with its chain in every FAT and an entry in the
/// root directory; `get IMG OFFSET NAME` prints the file by following its chain.
const FAT32_PY: &str = r#"
import struct, sys
mode, img, off = sys.argv[1], sys.argv[2], int(sys.argv[3])
f = open(img, 'r+b' if mode == 'put' else 'rb')
f.seek(off)
b = f.read(512)
bps, = struct.unpack_from('<H', b, 11)
spc, nf = b[13], b[16]
res, = struct.unpack_from('<H', b, 14)
fatsz, = struct.unpack_from('<I', b, 36)
root, = struct.unpack_from('<I', b, 44)
fsinfo, = struct.unpack_from('<H', b, 48)
data = (res + nf * fatsz) * bps
cs = bps * spc
def at(c): return off + data + (c - 2) * cs
def fat_set(c, v):
    for k in range(nf):
        f.seek(off + (res + k * fatsz) * bps + 4 * c)
        f.write(struct.pack('<I', v))
def fat_get(c):
    f.seek(off + res * bps + 4 * c)
    return struct.unpack('<I', f.read(4))[0] & 0x0FFFFFFF
name = sys.argv[4].upper().encode().ljust(11)[:11]
f.seek(at(root))
d = f.read(cs)
if mode == 'put':
    local, first = sys.argv[5], int(sys.argv[6])
    content = open(local, 'rb').read()
    n = max(1, -(-len(content) // cs))
    for i in range(n):
        fat_set(first + i, first + i + 1 if i < n - 1 else 0x0FFFFFFF)
    f.seek(at(first))
    f.write(content + b'\0' * (n * cs - len(content)))
    o = next(o for o in range(0, cs, 32) if d[o] in (0, 0xE5))
    ent = name + bytes([0x20, 0, 0]) + bytes(6) + struct.pack('<H', first >> 16) + bytes(4) \
        + struct.pack('<H', first & 0xFFFF) + struct.pack('<I', len(content))
    f.seek(at(root) + o)
    f.write(ent)
    f.seek(off + fsinfo * bps + 488)
    f.write(struct.pack('<II', 0xFFFFFFFF, 0xFFFFFFFF))
else:
    o = next(o for o in range(0, cs, 32) if d[o:o + 11] == name)
    c = struct.unpack_from('<H', d, o + 20)[0] << 16 | struct.unpack_from('<H', d, o + 26)[0]
    size, = struct.unpack_from('<I', d, o + 28)
    out = b''
    while len(out) < size:
        f.seek(at(c))
        out += f.read(cs)
        c = fat_get(c)
    sys.stdout.buffer.write(out[:size])
"#;

/// mkfs.fat makes FAT32 (by its BPB: the 16-bit FAT size is 0) with fewer than 65525 clusters
/// when asked (`-F 32` on a small partition, a warning only); Linux and dosfstools go by the BPB,
/// so it is a FAT32 whatever its cluster count. Read as FAT16 (by cluster count alone), its
/// 32-bit entries were taken for pairs of 16-bit ones and most file clusters came out free.
#[test]
fn fat32_with_few_clusters_is_read_as_fat32() {
    if !have(&["mkfs.vfat", "fsck.vfat", "python3"]) {
        return;
    }
    let t = TempDir::new("adv-fat32small");
    let py = t.p("fat32.py");
    fs::write(&py, FAT32_PY).unwrap();
    let disk = t.p("stick.img");
    random_file(&disk, 20 * MIB, 31);
    sh(&format!("mkfs.vfat -F 32 {} >/dev/null 2>&1", s(&disk)));
    let files = payload(&t, &[700, 3000, 4000]);
    // Spread over the heap (40298 clusters of 512 bytes).
    for (f, first) in files.iter().zip([100u64, 9000, 30000]) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        sh(&format!(
            "python3 {} put {} 0 {name} {} {first}",
            s(&py),
            s(&disk),
            s(f)
        ));
    }
    sh(&format!("fsck.vfat -n {} >/dev/null 2>&1", s(&disk)));
    let (copy, rep) = round_trip(&t, &disk);
    assert_eq!(rep["partitions"][0]["filesystem"], "vfat", "{rep}");
    sh(&format!("fsck.vfat -n {} >/dev/null 2>&1", s(&copy)));
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let out = t.p("got");
        sh(&format!(
            "python3 {} get {} 0 {name} > {}",
            s(&py),
            s(&copy),
            s(&out)
        ));
        assert!(
            fs::read(&out).unwrap() == fs::read(f).unwrap(),
            "file {name} differs after restore: used-blocks mode lost its data ({rep})"
        );
    }
}

/// `dd` helpers: bytes `[off, off+len)` of `disk` into the file `part`, and back.
fn extract(disk: &Path, part: &Path, off: u64, len: u64) {
    sh(&format!(
        "dd if={} of={} bs=1M skip={} count={} status=none iflag=skip_bytes,count_bytes",
        s(disk),
        s(part),
        off,
        len
    ));
}
fn put_back(disk: &Path, part: &Path, off: u64) {
    sh(&format!(
        "dd if={} of={} bs=1M seek={} conv=notrunc status=none oflag=seek_bytes",
        s(part),
        s(disk),
        off
    ));
}

/// A disk relabelled from GPT to MBR by a tool that writes only the MBR (busybox fdisk, an old
/// fdisk, `sfdisk --wipe never`): the old GPT is still valid but Linux and Windows ignore it
/// (no protective MBR) and use the MBR. Here the MBR's one partition holds a new ext4 with a big
/// file; the stale GPT's second partition starts on an old ext4 whose superblock and bitmaps
/// survived in the new filesystem's free space. Read by the stale GPT, the old bitmaps decided
/// which bytes of the new file were kept: most of them were not.
#[test]
fn stale_gpt_behind_an_mbr_is_not_trusted() {
    if !have(&["sgdisk", "sfdisk", "mkfs.ext4", "debugfs", "e2fsck"]) {
        return;
    }
    let t = TempDir::new("adv-stalegpt");
    let disk = t.p("disk.img");
    random_file(&disk, 64 * MIB, 41);
    sh(&format!(
        "sgdisk -n 1:2048:+46M -n 2:0:0 {} >/dev/null",
        s(&disk)
    ));
    // The old filesystem of GPT partition 2 (at 47 MiB), with a file.
    let old = t.p("old.img");
    random_file(&old, 16 * MIB, 42);
    let f = payload(&t, &[300, 48 << 10]);
    sh(&format!(
        "mkfs.ext4 -q -F -O ^has_journal -E nodiscard {o} && \
         debugfs -w -R 'write {} oldfile' {o} >/dev/null 2>&1",
        s(&f[0]),
        o = s(&old)
    ));
    put_back(&disk, &old, 47 * MIB);
    // The new label: one MBR partition from 1 MiB to the end; the GPT is left behind.
    sh(&format!(
        "printf 'label: dos\\nstart=2048, type=83\\n' | sfdisk -q --wipe never {}",
        s(&disk)
    ));
    // The new ext4 over the old one; its big file fills the old one's free space but not its
    // superblock, descriptors and bitmaps (the first 256 KiB, kept out of the allocation).
    let new = t.p("new.img");
    extract(&disk, &new, MIB, 63 * MIB);
    let keep = 46 * 1024; // the old filesystem's first block, in the new one's 1 KiB blocks
    let cmds = t.p("cmds");
    fs::write(
        &cmds,
        format!(
            "setb {keep} 256\nwrite {} big\nfreeb {keep} 256\n",
            s(&f[1])
        ),
    )
    .unwrap();
    sh(&format!(
        "mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=1 {n} && \
         debugfs -w -f {} {n} >/dev/null 2>&1 && e2fsck -fn {n} >/dev/null",
        s(&cmds),
        n = s(&new)
    ));
    put_back(&disk, &new, MIB);
    let (copy, rep) = round_trip(&t, &disk);
    for p in rep["partitions"].as_array().unwrap() {
        assert_eq!(p["mode"], "all_sectors", "{rep}");
        assert!(
            p["reason"]
                .as_str()
                .unwrap()
                .contains("without a protective entry"),
            "{rep}"
        );
    }
    extract(&copy, &new, MIB, 63 * MIB);
    sh(&format!("e2fsck -fn {} >/dev/null", s(&new)));
    let got = t.p("got");
    sh(&format!(
        "debugfs -R 'dump big {}' {} >/dev/null 2>&1",
        s(&got),
        s(&new)
    ));
    assert!(
        fs::read(&got).unwrap() == fs::read(&f[1]).unwrap(),
        "the new filesystem's file differs after restore: the stale GPT decided what was kept ({rep})"
    );
}

/// Overlapping partitions make the whole disk all sectors, and the report lists every
/// partition with that reason (it listed none, so nobody could tell why the image was big).
#[test]
fn overlapping_partitions_say_why() {
    use lifeboat::fs::{Mode, UsageMap};
    use lifeboat::io::{Access, BlockSource, Device};
    if !have(&["mkfs.ext4"]) {
        return;
    }
    let t = TempDir::new("adv-overlap");
    let disk = t.p("disk.img");
    random_file(&disk, 48 * MIB, 43);
    let p = t.p("p.img");
    random_file(&p, 32 * MIB, 44);
    sh(&format!("mkfs.ext4 -q -F -E nodiscard {}", s(&p)));
    put_back(&disk, &p, MIB);
    // MBR: 1 = 1..33 MiB (Linux), 2 = 16..40 MiB (FAT32 LBA) over it.
    let mut mbr = vec![0u8; 512];
    for (i, (ty, start, len)) in [(0x83u8, 2048u32, 65536u32), (0x0C, 32768, 49152)]
        .iter()
        .enumerate()
    {
        let e = 446 + 16 * i;
        mbr[e + 4] = *ty;
        mbr[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
        mbr[e + 12..e + 16].copy_from_slice(&len.to_le_bytes());
    }
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.write_all_at(&mbr, 0).unwrap();
    }
    let dev = Device::open(&disk, Access::Read).unwrap();
    let plan = UsageMap::analyze(&dev);
    assert_eq!(plan.partitions.len(), 2, "{plan:?}");
    for p in &plan.partitions {
        assert_eq!(p.mode, Mode::AllSectors);
        assert!(p.reason.as_deref().unwrap().contains("overlap"), "{p:?}");
    }
    assert_eq!(plan.used_bytes, dev.size());
    assert_eq!(plan.outside_bytes, dev.size() - 39 * MIB);
    assert_eq!(plan.extents().collect::<Vec<_>>(), vec![(0, dev.size())]);
}

/// A restore with `--map` that finished, then the same command again later (to undo what was
/// done on the disk since: shell history, a habit, the same map name): the map of a *finished*
/// restore is not something to resume. It was taken as one: every chunk was marked written, so
/// nothing was written, the report said ok and "media hash verified" (from the index), and the
/// target kept its changes.
#[test]
fn a_finished_restore_map_does_not_skip_a_new_restore() {
    if !have(&["mkfs.ext4"]) {
        return;
    }
    let t = TempDir::new("adv-rerestore");
    let disk = t.p("disk.img");
    random_file(&disk, 32 * MIB, 45);
    let content = t.p("content");
    fs::create_dir(&content).unwrap();
    random_file(&content.join("a.bin"), 6 * MIB, 46);
    sh(&format!(
        "mkfs.ext4 -q -F -E nodiscard -d {} {}",
        s(&content),
        s(&disk)
    ));
    let img = t.p("disk.lbi");
    assert_exit(&lifeboat(&["image", "create", s(&disk), s(&img)]), 0);
    let target = t.p("target.img");
    random_file(&target, 32 * MIB, 47);
    let map = t.p("restore.map");
    let restore = || {
        lifeboat(&[
            "image",
            "restore",
            s(&img),
            s(&target),
            "--map",
            s(&map),
            "--yes",
            "--json",
        ])
    };
    assert_exit(&restore(), 0);
    let restored = sha256(&target);
    // The disk is used (and damaged) after the restore...
    random_file(&t.p("junk"), 4 * MIB, 48);
    put_back(&target, &t.p("junk"), 0);
    assert_ne!(sha256(&target), restored);
    // ...and restored again with the same command.
    let o = restore();
    assert_exit(&o, 0);
    assert_eq!(
        sha256(&target),
        restored,
        "the second restore wrote nothing: {}",
        json(&o)
    );
    assert_eq!(json(&o)["resumed_bytes"], 0, "{}", json(&o));
}

/// The same for a clone: the map of a clone that finished with every byte read, given again to
/// clone onto the same target later, wrote nothing and reported "verified: OK" and "complete"
/// while the target kept its changes.
#[test]
fn a_finished_clone_map_does_not_skip_a_new_clone() {
    let t = TempDir::new("adv-reclone");
    let src = t.p("src.img");
    let tgt = t.p("tgt.img");
    random_file(&src, 8 * MIB, 49);
    random_file(&tgt, 8 * MIB, 50);
    let map = t.p("clone.map");
    let clone = || {
        lifeboat(&[
            "clone",
            s(&src),
            s(&tgt),
            "--map",
            s(&map),
            "--yes",
            "--json",
        ])
    };
    let before = sha256(&src);
    assert_exit(&clone(), 0);
    assert_eq!(sha256(&tgt), before);
    random_file(&t.p("junk"), MIB, 51);
    put_back(&tgt, &t.p("junk"), 3 * MIB);
    let o = clone();
    assert_exit(&o, 0);
    assert_eq!(sha256(&src), before, "the source changed");
    assert_eq!(
        sha256(&tgt),
        before,
        "the second clone left the target changed: {}",
        json(&o)
    );
}

/// A FAT volume that was not cleanly unmounted (a crash, a yanked stick): a file's directory
/// entry already names its clusters but the FAT does not have them yet. Its dirty flag (Linux:
/// the boot sector's state bit; Windows: FAT entry 1's clean-shutdown bit) must make it all
/// sectors; read by its FAT, the file's clusters were not copied.
#[test]
fn dirty_fat_is_copied_whole() {
    if !have(&["mkfs.vfat", "mcopy", "mshowfat", "python3"]) {
        return;
    }
    for (bits, dirty) in [
        (16, "linux"),
        (16, "windows"),
        (32, "linux"),
        (32, "windows"),
    ] {
        let t = TempDir::new("adv-dirtyfat");
        let disk = t.p("stick.img");
        random_file(&disk, 40 * MIB, 52);
        sh(&format!("mkfs.vfat -F {bits} {} >/dev/null", s(&disk)));
        let f = payload(&t, &[300, 2000]);
        for p in &f {
            sh(&format!("mcopy -i {} {} ::/", s(&disk), s(p)));
        }
        // f1's chain, then the crash: its FAT entries never written, the flag left set.
        let chain = sh(&format!("mshowfat -i {} ::/f1", s(&disk)));
        let (a, b) = chain
            .split('<')
            .nth(1)
            .and_then(|x| x.trim().trim_end_matches('>').split_once('-'))
            .map(|(a, b)| (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()))
            .unwrap_or_else(|| panic!("one run expected: {chain}"));
        sh(&format!(
            r#"python3 - {img} <<'PY'
import struct, sys
f = open(sys.argv[1], 'r+b')
b = f.read(512)
bps, res, nf = struct.unpack_from('<H', b, 11)[0], struct.unpack_from('<H', b, 14)[0], b[16]
fatsz = struct.unpack_from('<H', b, 22)[0] or struct.unpack_from('<I', b, 36)[0]
w = 4 if {bits} == 32 else 2
for k in range(nf):
    base = (res + k * fatsz) * bps
    for c in range({a}, {b} + 1):
        f.seek(base + w * c); f.write(bytes(w))
    if '{dirty}' == 'windows':
        f.seek(base + w); e = int.from_bytes(f.read(w), 'little')
        f.seek(base + w); f.write((e & ~(0x8000 if w == 2 else 0x08000000)).to_bytes(w, 'little'))
if '{dirty}' == 'linux':
    f.seek(65 if {bits} == 32 else 37); f.write(b'\x01')
PY"#,
            img = s(&disk)
        ));
        let (copy, rep) = round_trip(&t, &disk);
        let p = &rep["partitions"][0];
        assert_eq!(p["mode"], "all_sectors", "FAT{bits} {dirty}: {rep}");
        assert!(
            p["reason"]
                .as_str()
                .unwrap()
                .contains("not cleanly unmounted"),
            "{rep}"
        );
        assert_eq!(
            sha256(&copy),
            sha256(&disk),
            "FAT{bits} {dirty}: the copy differs"
        );
    }
}

/// An ext4 block bitmap damaged so that its free count still agrees (a used block's bit
/// cleared, a free block's bit set): the kernel refuses it by its metadata_csum checksum; read
/// as it was, the file's block was not copied.
#[test]
fn ext4_bitmap_failing_its_checksum_is_not_trusted() {
    if !have(&["mkfs.ext4", "debugfs", "dumpe2fs", "python3"]) {
        return;
    }
    let t = TempDir::new("adv-extcsum");
    let disk = t.p("disk.img");
    random_file(&disk, 32 * MIB, 53);
    let content = t.p("content");
    fs::create_dir(&content).unwrap();
    random_file(&content.join("a.bin"), 3 * MIB, 54);
    sh(&format!(
        "mkfs.ext4 -q -F -b 4096 -O metadata_csum -E nodiscard -d {} {}",
        s(&content),
        s(&disk)
    ));
    let out = |c: &str| sh(&format!("{c} 2>/dev/null"));
    let bitmap: u64 = out(&format!("dumpe2fs {}", s(&disk)))
        .lines()
        .find_map(|l| l.trim().strip_prefix("Block bitmap at "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let used: u64 = out(&format!("debugfs -R 'bmap /a.bin 100' {}", s(&disk)))
        .trim()
        .parse()
        .unwrap();
    let free = 8000u64;
    assert!(out(&format!("debugfs -R 'testb {free}' {}", s(&disk))).contains("not in use"));
    sh(&format!(
        r#"python3 - {img} <<'PY'
import sys
f = open(sys.argv[1], 'r+b')
def flip(bit):
    f.seek({bitmap} * 4096 + bit // 8); b = f.read(1)[0]
    f.seek({bitmap} * 4096 + bit // 8); f.write(bytes([b ^ (1 << (bit % 8))]))
flip({used}); flip({free})
PY"#,
        img = s(&disk)
    ));
    let (copy, rep) = round_trip(&t, &disk);
    let got = t.p("got");
    sh(&format!(
        "debugfs -c -R 'dump /a.bin {}' {} >/dev/null 2>&1",
        s(&got),
        s(&copy)
    ));
    assert!(
        fs::read(&got).unwrap() == fs::read(content.join("a.bin")).unwrap(),
        "a.bin differs after restore: the damaged bitmap decided what was kept ({rep})"
    );
    let p = &rep["partitions"][0];
    assert_eq!(p["mode"], "all_sectors", "{rep}");
    assert!(p["reason"].as_str().unwrap().contains("checksum"), "{rep}");
}

/// A source whose reads touching `[start, end)` fail the first time and read well after: a
/// flaky disk under the allocation map's one read (the analysis).
struct FlakyOnce {
    dev: lifeboat::io::Device,
    range: (u64, u64),
    reads: std::sync::atomic::AtomicU32,
}

impl lifeboat::io::BlockSource for FlakyOnce {
    fn size(&self) -> u64 {
        self.dev.size()
    }
    fn logical_block_size(&self) -> u32 {
        self.dev.logical_block_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let end = offset + buf.len() as u64;
        if offset < self.range.1 && end > self.range.0 {
            let n = self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
        }
        self.dev.read_at(buf, offset)
    }
    fn name(&self) -> String {
        "flaky".into()
    }
}

/// An ext4 block bitmap whose read fails while imaging: the partition is copied whole (nothing
/// lost) and the report and the image's usage record say "all sectors" with the reason. (Once
/// the map was read twice, in the analysis and again while streaming, and a failure on the
/// second read left the report saying "used blocks" with no reason; now the analysis reads it
/// once and decides there, and the bitmap's sectors are read again only as data.)
#[test]
fn a_map_failing_while_imaging_is_reported() {
    use lifeboat::image::{create, CreateOptions, SourceIdentity};
    use lifeboat::io::{Access, BlockSource, Device};
    use lifeboat::jobs::{Cancel, NoProgress};
    if !have(&["mkfs.ext4", "dumpe2fs"]) {
        return;
    }
    let t = TempDir::new("adv-flakymap");
    let disk = t.p("disk.img");
    random_file(&disk, 16 * MIB, 55);
    // Group 1's bitmap lies alone, 8 MiB in: the map reads it once, while analysing (then the
    // rescue engine reads it as data).
    sh(&format!(
        "mkfs.ext4 -q -F -b 1024 -O ^flex_bg -E nodiscard {}",
        s(&disk)
    ));
    let bitmap: u64 = sh(&format!("dumpe2fs {} 2>/dev/null", s(&disk)))
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Block bitmap at "))
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let src = std::sync::Arc::new(FlakyOnce {
        dev: Device::open(&disk, Access::Read).unwrap(),
        range: (bitmap * 1024, bitmap * 1024 + 1024),
        reads: 0.into(),
    });
    let size = src.size();
    let img = t.p("flaky.lbi");
    let rep = create(
        src,
        &SourceIdentity::default(),
        &img,
        &CreateOptions::default(),
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    let p = &rep.partitions[0];
    assert_eq!(p.mode, lifeboat::fs::Mode::AllSectors, "{rep:?}");
    assert!(
        p.reason
            .as_deref()
            .unwrap()
            .contains("read filesystem metadata"),
        "{rep:?}"
    );
    // The map's one read failed; the engine read the sectors again, as data, and they read.
    assert_eq!(rep.bad_bytes, 0, "{rep:?}");
    assert_eq!(rep.used_bytes, size, "{rep:?}");
    assert_eq!(rep.unallocated_chunks, 0, "{rep:?}");
    let o = lifeboat(&["image", "info", s(&img), "--json"]);
    assert_exit(&o, 0);
    assert_eq!(json(&o)["partitions"][0]["mode"], "all_sectors");
}
