//! Host tests of the GPT reader and fix-up against `sgdisk`: a partitioned image copied onto a
//! larger and a smaller file must verify clean with `sgdisk -v` after `gpt::fix_after_copy`.
use lifeboat::clone::gpt::{self, TableKind};
use lifeboat::io::{Access, BlockSource, Device};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{run as sh, Loop, TempDir};

fn sgdisk_clean(p: &Path) {
    let out = sh(Command::new("sgdisk").arg("-v").arg(p));
    assert!(
        out.contains("No problems found"),
        "sgdisk -v {}: {out}",
        p.display()
    );
}

/// A 64 MiB GPT image with partitions ending at 40 MiB.
fn make_source(dir: &Path) -> PathBuf {
    let p = dir.join("src.img");
    std::fs::File::create(&p)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    sh(Command::new("sgdisk")
        .args([
            "-n1:1MiB:+8MiB",
            "-t1:ef00",
            "-c1:EFI system",
            "-n2:0:+31MiB",
            "-t2:8300",
        ])
        .arg(&p));
    p
}

fn copy_onto(src: &Path, dst: &Path, size: u64) {
    let data = std::fs::read(src).unwrap();
    let n = (size as usize).min(data.len());
    std::fs::write(dst, &data[..n]).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(dst)
        .unwrap()
        .set_len(size)
        .unwrap();
}

#[test]
fn reads_what_sgdisk_wrote() {
    let dir = TempDir::new("gpt-read");
    let src = make_source(dir.path());
    let d = Device::open(&src, Access::Read).unwrap();
    let t = gpt::read(&d).unwrap();
    assert_eq!(t.kind, TableKind::Gpt);
    assert_eq!(t.partitions.len(), 2);
    assert_eq!(t.partitions[0].first_lba, 2048);
    assert_eq!(t.partitions[0].name, "EFI system");
    assert_eq!(
        t.partitions[0].type_id,
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    );
    assert_eq!(t.end_bytes(), 40 << 20);
    assert_eq!(t.min_disk_bytes(), Some((40 << 20) + 33 * 512));
}

#[test]
fn fixup_on_larger_and_smaller_targets_is_sgdisk_clean() {
    let dir = TempDir::new("gpt-fix");
    let src = make_source(dir.path());
    for (name, size) in [
        ("big.img", 96u64 << 20),
        ("small.img", 41 << 20),
        ("same.img", 64 << 20),
    ] {
        let dst = dir.p(name);
        copy_onto(&src, &dst, size);
        let dev = Device::open(&dst, Access::Write).unwrap();
        let r = gpt::fix_after_copy(&dev).unwrap();
        assert_eq!(r.fixed, size != 64 << 20, "{name}: {r:?}");
        drop(dev);
        sgdisk_clean(&dst);
        // The partitions are unchanged and a second fix-up has nothing to do.
        let dev = Device::open(&dst, Access::Write).unwrap();
        let t = gpt::read(&dev).unwrap();
        assert!(!t.used_backup);
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.end_bytes(), 40 << 20);
        assert!(!gpt::fix_after_copy(&dev).unwrap().fixed, "{name}");
    }
    // A damaged primary header: the table is read from the backup.
    let dst = dir.p("damaged.img");
    copy_onto(&src, &dst, 64 << 20);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&dst).unwrap();
        f.write_all_at(&[0u8; 512], 512).unwrap();
    }
    let dev = Device::open(&dst, Access::Read).unwrap();
    let t = gpt::read(&dev).unwrap();
    assert!(t.used_backup);
    assert_eq!(t.partitions.len(), 2);
}

#[test]
fn fixup_4096_byte_sectors() {
    let dir = TempDir::new("gpt-4k");
    let src = dir.p("src4k.img");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    // sgdisk on a file assumes 512-byte sectors; -l-less trick: use a loop device with 4096 sectors.
    let Some(lo) = Loop::sectors_4k(&src) else {
        return;
    };
    sh(Command::new("sgdisk")
        .args(["-n1:1MiB:+8MiB", "-n2:0:+20MiB"])
        .arg(&lo.dev));
    let d = Device::open(&lo.dev, Access::Read).unwrap();
    assert_eq!(d.logical_block_size(), 4096);
    let t = gpt::read(&d).unwrap();
    assert_eq!(t.sector_size, 4096);
    assert_eq!(t.end_bytes(), 29 << 20);
    drop(d);
    drop(lo);
    // The image file, read as a 512-byte file, still finds the 4096-byte GPT.
    let d = Device::open(&src, Access::Read).unwrap();
    let t = gpt::read(&d).unwrap();
    assert_eq!((t.kind, t.sector_size), (TableKind::Gpt, 4096));
}

/// A failing disk whose last sector is bad: with a good primary GPT the backup is never read,
/// and the whole planning analysis (table, layer probes at the end, filesystems) fails no
/// read at all; with a damaged primary the backup (at the last LBA) is tried, once. A disk
/// without a table fails the tail read once, however many probes look there.
#[test]
fn a_bad_last_sector_is_not_read_when_the_primary_gpt_is_good() {
    use lifeboat::rescue::SimDevice;
    let dir = TempDir::new("gpt-badtail");
    let src = make_source(dir.path());
    let sha = common::sha256(&src);
    let data = std::fs::read(&src).unwrap();
    let size = data.len() as u64;
    let failing = |d: Vec<u8>| SimDevice::new(d, 512).bad(size - 512, 512);

    let sim = failing(data.clone());
    let t = gpt::read(&sim).unwrap();
    assert_eq!(
        (t.kind, t.used_backup, t.partitions.len()),
        (TableKind::Gpt, false, 2)
    );
    assert_eq!(sim.failed_reads(), 0, "the backup GPT was read");
    let sim = failing(data.clone());
    let _ = lifeboat::fs::UsageMap::analyze(&sim);
    assert_eq!(
        sim.failed_reads(),
        0,
        "the analysis read the bad last sector"
    );

    // The primary header damaged: the backup is the table (here it is unreadable too, so
    // nothing is found), tried once by the table reader and never again by the analysis.
    let mut broken = data.clone();
    broken[512..1024].fill(0);
    let sim = failing(broken.clone());
    let _ = lifeboat::fs::UsageMap::analyze(&sim);
    assert_eq!(sim.failed_reads(), 1);
    // With a readable tail the backup is used.
    let t = gpt::read(&SimDevice::new(broken, 512)).unwrap();
    assert_eq!(
        (t.kind, t.used_backup, t.partitions.len()),
        (TableKind::Gpt, true, 2)
    );

    // No table at all, 4096-byte sectors, the last one bad: one failed read.
    let sim = SimDevice::new(SimDevice::pattern(16 << 20, 7), 4096).bad((16 << 20) - 4096, 4096);
    let _ = lifeboat::fs::UsageMap::analyze(&sim);
    assert_eq!(sim.failed_reads(), 1);
    assert_eq!(common::sha256(&src), sha);
}
