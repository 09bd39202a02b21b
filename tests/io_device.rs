//! `io::Device`'s ioctl methods on a real loop device (BLKROGET/BLKROSET/BLKRRPART) and their
//! no-op behaviour on a disk-image file.
mod common;
use common::{run, zero_file, Loop, TempDir, MIB};
use lifeboat::io::{Access, Device};
use std::process::Command;

fn getro(dev: &str) -> String {
    run(Command::new("blockdev").arg("--getro").arg(dev))
        .trim()
        .to_string()
}

#[test]
fn read_only_flag_and_partition_reread() {
    let dir = TempDir::new("io-device");
    let f = dir.p("disk.img");
    zero_file(&f, 8 * MIB);
    // A file: never marked read-only, the ioctls are no-ops.
    let d = Device::open(&f, Access::Write).unwrap();
    assert!(!d.is_read_only().unwrap());
    d.set_read_only(true).unwrap();
    d.reread_partitions().unwrap();
    // The file may be open with O_DIRECT: the buffer must be aligned like the engine's.
    d.write_all_at(&lifeboat::io::AlignedBuf::new(512), 0)
        .unwrap();
    drop(d);
    let Some(lo) = Loop::attach(&f) else {
        return;
    };
    let d = Device::open(&lo.dev, Access::Read).unwrap();
    assert!(!d.is_read_only().unwrap());
    d.set_read_only(true).unwrap();
    assert!(d.is_read_only().unwrap());
    assert_eq!(getro(&lo.dev), "1");
    let w = std::fs::OpenOptions::new()
        .write(true)
        .open(&lo.dev)
        .and_then(|f| std::os::unix::fs::FileExt::write_at(&f, &[1u8; 512], 0));
    assert!(w.is_err(), "a device marked read-only accepted a write");
    d.set_read_only(false).unwrap();
    assert_eq!(getro(&lo.dev), "0");
    // A loop device without partition scanning refuses BLKRRPART (EINVAL): the error names it.
    if let Err(e) = d.reread_partitions() {
        assert!(e.to_string().contains(&lo.dev), "{e}");
    }
    drop(d);
    drop(lo);
    assert!(std::fs::read(&f).unwrap().iter().all(|&b| b == 0));
}
