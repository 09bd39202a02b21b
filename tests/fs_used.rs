//! Used-block maps (src/fs) against filesystems made by the real tools on files pre-filled with
//! random data, with files added by debugfs / mcopy / ntfscp. The referee is partclone's
//! domain log (`partclone.<fs> -D`), which lists exactly the blocks partclone would copy; a
//! whole GPT disk checks the partition-level plan, the fallbacks and the streamed extents.
use lifeboat::fs::{self, Mode, Range, Region, UsageMap};
use lifeboat::io::{Access, BlockSource, Device};
use lifeboat::rescue::sim::SimDevice;
use std::fs as stdfs;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::usedfs::{self, dumpe2fs_referee, minus, mtools_referee, referee};
use common::{sh, TempDir};

fn have(tool: &str) -> bool {
    usedfs::have(&[tool])
}

/// A file of `mib` MiB of deterministic random bytes (old data in the free space).
fn random_file(p: &Path, mib: u64, seed: u64) {
    usedfs::random_file(p, mib << 20, seed)
}

fn total(v: &[Range]) -> u64 {
    v.iter().map(|r| r.1 - r.0).sum()
}

/// Our map of the filesystem filling `img`, from the filesystem-specific opener.
fn ours(kind: &str, img: &Path) -> Vec<Range> {
    let dev = Device::open(img, Access::Read).unwrap();
    let r = Region::new(&dev, 0, dev.size());
    let mut m: Box<dyn fs::UsedMap> = match kind {
        "ext" => Box::new(fs::ext::open(r).unwrap()),
        "fat" => Box::new(fs::fat::open(r).unwrap()),
        "exfat" => Box::new(fs::exfat::open(r).unwrap()),
        "ntfs" => Box::new(fs::ntfs::open(r).unwrap()),
        _ => unreachable!(),
    };
    fs::collect(&mut *m).unwrap()
}

/// Our map must cover every byte partclone copies (never lose data) and add at most `slack`
/// bytes beyond it (what we copy in addition: the partition tail after the filesystem, and
/// for some filesystems the system areas partclone leaves out).
fn check_against_referee(fs: &str, kind: &str, img: &Path, dir: &TempDir, slack: u64) {
    let theirs = match fs {
        "dumpe2fs" => dumpe2fs_referee(img),
        "mtools" => mtools_referee(img),
        _ => referee(fs, img, dir),
    };
    assert!(
        !theirs.is_empty(),
        "{fs}: partclone reported no used blocks"
    );
    let mine = ours(kind, img);
    let missing = minus(&theirs, &mine);
    assert!(
        missing.is_empty(),
        "{fs}: our map misses bytes partclone copies: {missing:x?}\nours {mine:x?}\ntheirs {theirs:x?}"
    );
    let extra = minus(&mine, &theirs);
    assert!(
        total(&extra) <= slack,
        "{fs}: our map has {} bytes partclone does not copy (allowed {slack}): {extra:x?}",
        total(&extra)
    );
    println!(
        "{fs} {}: ours {} bytes, partclone {} bytes, extra {}",
        img.display(),
        total(&mine),
        total(&theirs),
        total(&extra)
    );
}

/// Files with random contents to copy into filesystems.
fn payload(dir: &TempDir) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for (i, kib) in [3u64, 700, 5000, 12].iter().enumerate() {
        let p = dir.p(&format!("file{i}.bin"));
        stdfs::write(
            &p,
            SimDevice::pattern((kib * 1024) as usize, 100 + i as u64),
        )
        .unwrap();
        v.push(p);
    }
    v
}

fn ext_case(name: &str, mkfs: &str, delete_one: bool) {
    if !have("mkfs.ext4") || !have("debugfs") || !have("partclone.ext4") {
        println!("skipped: e2fsprogs or partclone missing");
        return;
    }
    let d = TempDir::new(name);
    let img = d.p("fs.img");
    random_file(&img, 96, 7);
    sh(&format!(
        "{mkfs} -q -F -E nodiscard {} >/dev/null",
        img.display()
    ));
    let files = payload(&d);
    let mut cmds = String::from("mkdir /dir\n");
    for (i, f) in files.iter().enumerate() {
        cmds += &format!("write {} /dir/f{i}\n", f.display());
    }
    if delete_one {
        cmds += "rm /dir/f2\n";
    }
    stdfs::write(d.p("cmds"), cmds).unwrap();
    sh(&format!(
        "debugfs -w -f {} {} >/dev/null 2>&1",
        d.p("cmds").display(),
        img.display()
    ));
    sh(&format!("e2fsck -fn {} >/dev/null", img.display()));
    if !mkfs.contains("bigalloc") {
        check_against_referee("ext4", "ext", &img, &d, 0);
    }
    check_against_referee("dumpe2fs", "ext", &img, &d, 0);
}

#[test]
fn ext4_default_64bit_flex_bg_metadata_csum() {
    ext_case("ext4", "mkfs.ext4 -O 64bit,flex_bg,metadata_csum", false);
    ext_case("ext4-4k", "mkfs.ext4 -b 4096 -g 8192", true);
}

#[test]
fn ext4_without_64bit_flex_bg_metadata_csum() {
    ext_case(
        "ext4old",
        "mkfs.ext4 -O ^64bit,^flex_bg,^metadata_csum,uninit_bg",
        true,
    );
}

#[test]
fn ext4_bigalloc() {
    ext_case("ext4big", "mkfs.ext4 -O bigalloc -C 16384", true);
}

#[test]
fn ext4_meta_bg_1k_blocks() {
    ext_case(
        "ext4meta",
        "mkfs.ext4 -b 1024 -O meta_bg,^resize_inode",
        false,
    );
}

#[test]
fn ext2_and_ext3() {
    ext_case("ext2", "mkfs.ext2", true);
    ext_case("ext3", "mkfs.ext3", false);
}

fn fat_case(bits: u32, mib: u64, extra: &str) {
    if !have("mkfs.vfat") || !have("mcopy") || !have("partclone.fat") {
        println!("skipped: dosfstools, mtools or partclone missing");
        return;
    }
    let d = TempDir::new(&format!("fat{bits}"));
    let img = d.p("fs.img");
    random_file(&img, mib, 11);
    sh(&format!(
        "mkfs.vfat -F {bits} {extra} {} >/dev/null",
        img.display()
    ));
    let files = payload(&d);
    let small: Vec<_> = if bits == 12 {
        files
            .iter()
            .filter(|f| stdfs::metadata(f).unwrap().len() < 1 << 20)
            .collect()
    } else {
        files.iter().collect()
    };
    sh(&format!("mmd -i {} ::/dir", img.display()));
    for f in &small {
        sh(&format!(
            "mcopy -i {} {} ::/dir/",
            img.display(),
            f.display()
        ));
    }
    sh(&format!(
        "mdel -i {} ::/dir/{}",
        img.display(),
        small[0].file_name().unwrap().to_string_lossy()
    ));
    sh(&format!("fsck.vfat -n {} >/dev/null", img.display()));
    // Our map also covers the sectors after the last cluster (not the filesystem's to judge).
    let tail = {
        let m = ours("fat", &img);
        let end = stdfs::metadata(&img).unwrap().len();
        m.last()
            .filter(|l| l.1 == end)
            .map(|l| l.1 - l.0)
            .unwrap_or(0)
            .min(64 << 10)
    };
    check_against_referee("mtools", "fat", &img, &d, tail);
    if bits != 12 {
        check_against_referee("fat", "fat", &img, &d, 0);
    }
}

#[test]
fn fat12_fat16_fat32() {
    fat_case(12, 4, "");
    fat_case(16, 48, "");
    fat_case(32, 96, "-S 512 -s 1");
}

#[test]
fn exfat_fresh() {
    if !have("mkfs.exfat") || !have("partclone.exfat") {
        println!("skipped: exfatprogs or partclone missing");
        return;
    }
    let d = TempDir::new("exfat");
    let img = d.p("fs.img");
    random_file(&img, 64, 13);
    sh(&format!("mkfs.exfat {} >/dev/null", img.display()));
    check_against_referee("exfat", "exfat", &img, &d, 0);
}

#[test]
fn ntfs_with_files() {
    if !have("mkntfs") || !have("ntfscp") || !have("partclone.ntfs") {
        println!("skipped: ntfs-3g or partclone missing");
        return;
    }
    let d = TempDir::new("ntfs");
    let img = d.p("fs.img");
    random_file(&img, 96, 17);
    sh(&format!("mkntfs -F -Q -q {}", img.display()));
    for (i, f) in payload(&d).iter().enumerate() {
        sh(&format!(
            "ntfscp -q {} {} f{i}.bin",
            img.display(),
            f.display()
        ));
    }
    sh(&format!("ntfsfix -n {} >/dev/null", img.display()));
    // We also keep the last sector of the partition: the backup boot sector, which partclone skips.
    check_against_referee("ntfs", "ntfs", &img, &d, 4096);
}

/// A GPT disk of old random data: FAT32 ESP, NTFS, ext4, a partition of random bytes, free
/// space; the plan names each filesystem, falls back where it must, and the streamed extents
/// are exactly the gaps plus each filesystem's map.
#[test]
fn whole_disk_plan_and_fallbacks() {
    for t in ["sgdisk", "mkfs.vfat", "mkntfs", "mkfs.ext4", "debugfs"] {
        if !have(t) {
            println!("skipped: {t} missing");
            return;
        }
    }
    let d = TempDir::new("disk");
    let disk = d.p("disk.img");
    random_file(&disk, 200, 21);
    sh(&format!(
        "sgdisk -n 1:2048:+40M -t 1:ef00 -n 2:0:+48M -t 2:0700 -n 3:0:+64M -t 3:8300 \
         -n 4:0:+8M -t 4:8300 {} >/dev/null",
        disk.display()
    ));
    let mib = |n: u64| n << 20;
    let starts = [mib(1), mib(41), mib(89), mib(153)];
    let sizes = [mib(40), mib(48), mib(64), mib(8)];
    let files = payload(&d);
    // Each filesystem made in its own file (old random data too), then put in place.
    let part = |k: usize, mkfs: &dyn Fn(&Path)| {
        let f = d.p(&format!("p{k}.img"));
        random_file(&f, sizes[k] >> 20, 30 + k as u64);
        mkfs(&f);
        sh(&format!(
            "dd if={} of={} bs=1M seek={} conv=notrunc status=none",
            f.display(),
            disk.display(),
            starts[k] >> 20
        ));
        f
    };
    let p1 = part(0, &|f| {
        sh(&format!(
            "mkfs.vfat -F 32 -S 512 -s 1 {} >/dev/null",
            f.display()
        ));
        sh(&format!(
            "mcopy -i {} {} ::/",
            f.display(),
            files[2].display()
        ));
    });
    let p2 = part(1, &|f| {
        sh(&format!("mkntfs -F -Q -q {}", f.display()));
        sh(&format!(
            "ntfscp -q {} {} big.bin",
            f.display(),
            files[2].display()
        ));
    });
    let p3 = part(2, &|f| {
        sh(&format!("mkfs.ext4 -q -F -E nodiscard {}", f.display()));
        sh(&format!(
            "debugfs -w -R 'write {} big' {} >/dev/null 2>&1",
            files[2].display(),
            f.display()
        ));
    });
    let dev = Device::open(&disk, Access::Read).unwrap();
    let plan = UsageMap::analyze(&dev);
    let fsnames: Vec<_> = plan
        .partitions
        .iter()
        .map(|p| p.filesystem.clone())
        .collect();
    assert_eq!(
        fsnames,
        vec![
            Some("vfat".into()),
            Some("ntfs".into()),
            Some("ext4".into()),
            None
        ]
    );
    let modes: Vec<_> = plan.partitions.iter().map(|p| p.mode).collect();
    assert_eq!(
        modes,
        vec![
            Mode::UsedBlocks,
            Mode::UsedBlocks,
            Mode::UsedBlocks,
            Mode::AllSectors
        ]
    );
    assert_eq!(
        plan.partitions[3].reason.as_deref(),
        Some("no known filesystem")
    );
    // Expected: the disk minus the partitions, plus each filesystem's own map, plus partition 4.
    let mut expect: Vec<Range> = minus(
        &[(0, plan.disk_size)],
        &starts
            .iter()
            .zip(sizes)
            .map(|(&s, l)| (s, s + l))
            .collect::<Vec<_>>(),
    );
    for (k, (kind, f)) in [("fat", &p1), ("ntfs", &p2), ("ext", &p3)]
        .iter()
        .enumerate()
    {
        expect.extend(
            ours(kind, f)
                .iter()
                .map(|r| (r.0 + starts[k], r.1 + starts[k])),
        );
    }
    expect.push((starts[3], starts[3] + sizes[3]));
    expect.sort_unstable();
    let mut merged: Vec<Range> = Vec::new();
    for (s, e) in expect {
        match merged.last_mut() {
            Some(l) if s <= l.1 => l.1 = l.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let got: Vec<Range> = plan.extents().collect();
    assert_eq!(got, merged);
    assert_eq!(total(&got), plan.used_bytes);
    assert!(plan.used_bytes < plan.disk_size / 2, "{plan:?}");
    println!("{}", serde_json::to_string_pretty(&plan).unwrap());

    // Fallbacks: an ext4 journal that needs recovery; an unreadable ext4 bitmap (simulated).
    sh(&format!(
        "debugfs -w -R 'feature needs_recovery' {} >/dev/null 2>&1",
        p3.display()
    ));
    sh(&format!(
        "dd if={} of={} bs=1M seek={} conv=notrunc status=none",
        p3.display(),
        disk.display(),
        starts[2] >> 20
    ));
    let plan = UsageMap::analyze(&Device::open(&disk, Access::Read).unwrap());
    assert_eq!(plan.partitions[2].mode, Mode::AllSectors);
    assert!(
        plan.partitions[2]
            .reason
            .as_deref()
            .unwrap()
            .contains("needs recovery"),
        "{:?}",
        plan.partitions[2]
    );
    assert_eq!(plan.partitions[2].used_bytes, sizes[2]);
    sh(&format!(
        "debugfs -w -R 'feature -needs_recovery' {} >/dev/null 2>&1",
        p3.display()
    ));
    let o = Command::new("dumpe2fs").arg(&p3).output().unwrap();
    let bitmap_block: u64 = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("Block bitmap at "))
        .nth(3)
        .and_then(|l| {
            l.trim_start()["Block bitmap at ".len()..]
                .split_whitespace()
                .next()
                .map(|x| x.parse().unwrap())
        })
        .unwrap();
    let bs = 1024; // mkfs.ext4's "small" type on 64 MiB
    let mut data = stdfs::read(&disk).unwrap();
    let img3 = stdfs::read(&p3).unwrap();
    data[starts[2] as usize..(starts[2] + sizes[2]) as usize].copy_from_slice(&img3);
    let sim = SimDevice::new(data, 512).bad(starts[2] + bitmap_block * bs, 512);
    let plan = UsageMap::analyze(&sim);
    assert_eq!(
        plan.partitions[2].mode,
        Mode::AllSectors,
        "{:?}",
        plan.partitions[2]
    );
    assert!(plan.partitions[2]
        .reason
        .as_deref()
        .unwrap()
        .contains("cannot read"));
    assert_eq!(plan.partitions[0].mode, Mode::UsedBlocks);
    let got: Vec<Range> = plan.extents().collect();
    assert_eq!(total(&got), plan.used_bytes);
}

/// A filesystem on the whole disk (no partition table) is mapped as partition 0.
#[test]
fn superfloppy() {
    if !have("mkfs.vfat") {
        println!("skipped: dosfstools missing");
        return;
    }
    let d = TempDir::new("floppy");
    let img = d.p("stick.img");
    random_file(&img, 48, 5);
    sh(&format!("mkfs.vfat -F 16 {} >/dev/null", img.display()));
    let dev = Device::open(&img, Access::Read).unwrap();
    let plan = UsageMap::analyze(&dev);
    assert_eq!(plan.partitions.len(), 1);
    assert_eq!(plan.partitions[0].number, 0);
    assert_eq!(plan.partitions[0].mode, Mode::UsedBlocks);
    assert_eq!(plan.outside_bytes, 0);
    let got: Vec<Range> = plan.extents().collect();
    assert_eq!(got, ours("fat", &img));
}
