//! The storage-identity reproducers of the safety issue: every way to reach a source or an image
//! under another name — hard links, loop devices with offsets over it, a filesystem inside it
//! mounted and written to, `--force` over a device node, an image as its own parent or export —
//! is refused (exit 4) with the source's and the image's sha256 unchanged, while the same jobs
//! onto unrelated storage still work. Root and loop devices are needed for most; where missing
//! the test prints why and skips. `LIFEBOAT_TEST_BIN=/path/to/lifeboat` runs them against another
//! binary (e.g. an older build, to see them fail).
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test (`LIFEBOAT_TEST_BIN` overrides: see `common::lifeboat_cmd`).
fn lb(args: &[&str]) -> Output {
    lifeboat(args)
}

/// A label nobody else's test uses at the same time (`label=` must match exactly one).
fn label() -> String {
    format!("ADVROOT{}", std::process::id() % 100_000)
}

/// S: a 96 MiB GPT disk-image file, p1 vfat (1..17 MiB), p2 ext4 labelled `label` (17..95 MiB),
/// every partition 4 KiB aligned, lazy initialisation off (so a mounted p2 writes nothing by itself).
fn disk_s(dir: &TempDir, label: &str) -> PathBuf {
    let p = dir.p("S");
    zero_file(&p, 96 * MIB);
    run(Command::new("sgdisk")
        .args([
            "-n1:1MiB:+16MiB",
            "-t1:ef00",
            "-n2:17MiB:+78MiB",
            "-t2:8300",
        ])
        .arg(&p));
    run(Command::new("mkfs.vfat")
        .args(["-F", "16", "--offset", "2048"])
        .arg(&p)
        .arg("16384"));
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", label])
        .args([
            "-E",
            &format!("offset={},lazy_itable_init=0,lazy_journal_init=0", 17 * MIB),
        ])
        .arg(&p)
        .arg(format!("{}k", 78 * 1024)));
    p
}

fn can_loop() -> bool {
    if !is_root() {
        eprintln!("skipping: needs root for loop devices");
        return false;
    }
    true
}

/// S's ext4 partition mounted (through a loop device with an offset), unmounted on drop.
struct Mounted {
    mp: PathBuf,
    _lp: Loop,
}
impl Mounted {
    fn ext4_of(s: &Path, dir: &TempDir) -> Option<Mounted> {
        let lp = Loop::attach_with(
            s,
            LoopOpts {
                offset: 17 * MIB,
                size_limit: Some(78 * MIB),
                ..Default::default()
            },
        )?;
        let mp = dir.p("m");
        std::fs::create_dir_all(&mp).unwrap();
        let o = Command::new("mount").arg(&lp.dev).arg(&mp).output().ok()?;
        if !o.status.success() {
            eprintln!(
                "skipping the mount part: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Some(Mounted { mp, _lp: lp })
    }
}
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mp).status();
    }
}

/// sha256 after flushing everything cached (a mounted filesystem's pages included).
fn synced_sha(p: &Path) -> String {
    run(&mut Command::new("sync"));
    sha256(p)
}

#[track_caller]
fn refused(o: &Output, what: &str) {
    assert_exit(o, 4);
    assert!(
        stderr(o).contains(what),
        "the refusal should mention {what:?}: {}",
        stderr(o)
    );
}

#[test]
fn repro1_hard_link_of_the_file_behind_a_loop_source() {
    if !can_loop() {
        return;
    }
    let dir = TempDir::new("id1");
    let sf = disk_s(&dir, &label());
    let h = dir.p("H");
    std::fs::hard_link(&sf, &h).unwrap();
    let before = sha256(&sf);
    let Some(a) = Loop::attach_with(
        &sf,
        LoopOpts {
            offset: MIB,
            ..Default::default()
        },
    ) else {
        return;
    };
    let o = lb(&["clone", &a.dev, s(&h), "--yes"]);
    refused(&o, "would overwrite the source");
    assert_eq!(sha256(&sf), before, "S changed");
    // A symlink and /proc/self/fd are still the same file.
    let l = dir.p("L");
    std::os::unix::fs::symlink(&h, &l).unwrap();
    refused(
        &lb(&["clone", &a.dev, s(&l), "--yes"]),
        "would overwrite the source",
    );
    assert_eq!(sha256(&sf), before, "S changed");
    // The control: an unrelated file of the same size is a fine target.
    let t = dir.p("T");
    zero_file(&t, 96 * MIB);
    let o = lb(&["clone", &a.dev, s(&t), "--yes", "--no-verify"]);
    assert_exit(&o, 0);
    assert_eq!(sha256(&sf), before, "S changed");
}

/// A small image `img.lbi` of a 8 MiB file with some data.
fn small_image(dir: &TempDir) -> PathBuf {
    let src = dir.p("small.img");
    let data: Vec<u8> = (0..8 * MIB as usize).map(|i| (i / 4096) as u8).collect();
    std::fs::write(&src, data).unwrap();
    let img = dir.p("img.lbi");
    assert_exit(&lb(&["image", "create", s(&src), s(&img)]), 0);
    img
}

#[test]
fn repro1_restore_onto_a_loop_over_a_hard_link_of_the_image() {
    if !can_loop() {
        return;
    }
    let dir = TempDir::new("id1r");
    let img = small_image(&dir);
    let h = dir.p("h.lbi");
    std::fs::hard_link(&img, &h).unwrap();
    let before = sha256(&img);
    let Some(l) = Loop::attach(&h) else { return };
    let o = lb(&["image", "restore", s(&img), &l.dev, "--yes"]);
    refused(&o, "would overwrite the image");
    assert_eq!(sha256(&img), before, "the image changed");
    assert_exit(&lb(&["image", "verify", s(&img)]), 0);
}

#[test]
fn repro2_two_loop_devices_over_one_file() {
    if !can_loop() {
        return;
    }
    let dir = TempDir::new("id2");
    let sf = disk_s(&dir, &label());
    let before = sha256(&sf);
    let Some(a) = Loop::attach(&sf) else { return };
    let Some(b) = Loop::attach_with(
        &sf,
        LoopOpts {
            offset: MIB,
            ..Default::default()
        },
    ) else {
        return;
    };
    let o = lb(&["clone", &b.dev, &a.dev, "--yes"]);
    refused(&o, "a loop device over bytes 1.0 MiB");
    assert_eq!(sha256(&sf), before, "S changed");
    // Either way round, and a loop over a byte range that only overlaps at its end.
    refused(
        &lb(&["clone", &a.dev, &b.dev, "--yes"]),
        "would overwrite the source",
    );
    let Some(c) = Loop::attach_with(
        &sf,
        LoopOpts {
            offset: 0,
            size_limit: Some(2 * MIB),
            ..Default::default()
        },
    ) else {
        return;
    };
    refused(
        &lb(&["clone", s(&sf), &c.dev, "--yes"]),
        "would overwrite the source",
    );
    assert_eq!(sha256(&sf), before, "S changed");
}

#[test]
fn repro3_targets_on_a_filesystem_inside_the_source() {
    if !can_loop() {
        return;
    }
    let dir = TempDir::new("id3");
    let lab = label();
    let sf = disk_s(&dir, &lab);
    let Some(m) = Mounted::ext4_of(&sf, &dir) else {
        return;
    };
    let t = m.mp.join("t.img");
    zero_file(&t, 96 * MIB);
    let before = synced_sha(&sf);
    let sp = s(&sf);
    refused(
        &lb(&["clone", sp, s(&t), "--yes"]),
        "would overwrite the source",
    );
    assert_eq!(synced_sha(&sf), before, "S changed (clone)");
    let x = m.mp.join("x.lbi");
    refused(
        &lb(&["image", "create", sp, s(&x)]),
        "would overwrite the source",
    );
    assert!(!x.exists());
    assert_eq!(synced_sha(&sf), before, "S changed (image create)");
    // The same through a relative path and through the partition's label (mounted already).
    let rel = lb_in(&dir, &["image", "create", sp, "m/x.lbi"]);
    refused(&rel, "would overwrite the source");
    let o = lb(&["image", "create", sp, &format!("label={lab}:/x.lbi")]);
    refused(&o, "would overwrite the source");
    assert!(!x.exists());
    assert_eq!(synced_sha(&sf), before, "S changed (image create label=)");
    // The control: another source's clone onto a file in the same filesystem works.
    let q = dir.p("Q");
    std::fs::write(&q, vec![7u8; 4 * MIB as usize]).unwrap();
    let t2 = m.mp.join("t2.img");
    zero_file(&t2, 4 * MIB);
    assert_exit(&lb(&["clone", s(&q), s(&t2), "--yes"]), 0);
    assert_eq!(std::fs::read(&t2).unwrap(), std::fs::read(&q).unwrap());
    drop(m);
}

/// `lifeboat ARGS` run in `dir`.
fn lb_in(dir: &TempDir, args: &[&str]) -> Output {
    lifeboat_cmd()
        .current_dir(dir.path())
        .args(args)
        .output()
        .expect("run lifeboat")
}
