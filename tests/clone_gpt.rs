//! Host tests of the GPT reader and fix-up against `sgdisk`: a partitioned image copied onto a
//! larger and a smaller file must verify clean with `sgdisk -v` after `gpt::fix_after_copy`.
use lifeboat::clone::gpt::{self, TableKind};
use lifeboat::io::{Access, BlockSource, Device};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lifeboat-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sh(cmd: &mut Command) -> String {
    let o = cmd.output().expect("run tool");
    let s = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{cmd:?} failed: {s}");
    s
}

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
    let dir = tmpdir("gpt-read");
    let src = make_source(&dir);
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
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fixup_on_larger_and_smaller_targets_is_sgdisk_clean() {
    let dir = tmpdir("gpt-fix");
    let src = make_source(&dir);
    for (name, size) in [
        ("big.img", 96u64 << 20),
        ("small.img", 41 << 20),
        ("same.img", 64 << 20),
    ] {
        let dst = dir.join(name);
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
    let dst = dir.join("damaged.img");
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
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fixup_4096_byte_sectors() {
    let dir = tmpdir("gpt-4k");
    let src = dir.join("src4k.img");
    std::fs::File::create(&src)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    // sgdisk on a file assumes 512-byte sectors; -l-less trick: use a loop device with 4096 sectors.
    let out = Command::new("losetup")
        .args(["--find", "--show", "--sector-size", "4096"])
        .arg(&src)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "skipping: no loop devices here: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let lo = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let res = std::panic::catch_unwind(|| {
        sh(Command::new("sgdisk")
            .args(["-n1:1MiB:+8MiB", "-n2:0:+20MiB"])
            .arg(&lo));
        let d = Device::open(&lo, Access::Read).unwrap();
        assert_eq!(d.logical_block_size(), 4096);
        let t = gpt::read(&d).unwrap();
        assert_eq!(t.sector_size, 4096);
        assert_eq!(t.end_bytes(), 29 << 20);
    });
    let _ = Command::new("losetup").arg("-d").arg(&lo).status();
    res.unwrap();
    // The image file, read as a 512-byte file, still finds the 4096-byte GPT.
    let d = Device::open(&src, Access::Read).unwrap();
    let t = gpt::read(&d).unwrap();
    assert_eq!((t.kind, t.sector_size), (TableKind::Gpt, 4096));
    std::fs::remove_dir_all(&dir).unwrap();
}
