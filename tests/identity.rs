//! The storage-identity reproducers of the safety issue: every way to reach a source or an image
//! under another name — hard links, loop devices with offsets over it, a filesystem inside it
//! mounted and written to, `--force` over a device node, an image as its own parent or export —
//! is refused (exit 4) with the source's and the image's sha256 unchanged, while the same jobs
//! onto unrelated storage still work. Root and loop devices are needed for most; where missing
//! the test prints why and skips. `LIFEBOAT_TEST_BIN=/path/to/lifeboat` runs them against another
//! binary (e.g. an older build, to see them fail).
mod common;

use common::lifeboat as lb;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test (`LIFEBOAT_TEST_BIN` overrides: see `common::lifeboat_cmd`).
/// A label nobody else's test uses at the same time (`label=` must match exactly one): the
/// process id and a per-call counter (tests of this file run in parallel).
fn label() -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("ADVROOT{}x{n}", std::process::id() % 10_000)
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
    let Some(a) = Loop::from_offset(&sf, MIB) else {
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
    let Some(b) = Loop::from_offset(&sf, MIB) else {
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
    let Some(c) = Loop::partition(&sf, 0, 2 * MIB) else {
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
    let Some(m) = Mounted::ext4_in(&sf, &dir, 17 * MIB, 78 * MIB) else {
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
    // A raw write to any byte under the mounted filesystem (a loop over S) is refused too.
    let q0 = dir.p("Q0");
    std::fs::write(&q0, vec![5u8; 4 * MIB as usize]).unwrap();
    if let Some(whole) = Loop::attach(&sf) {
        let o = lb(&["clone", s(&q0), &whole.dev, "--yes"]);
        refused(&o, "would overwrite the mounted filesystem");
    }
    assert_eq!(
        synced_sha(&sf),
        before,
        "S changed (raw write under the mount)"
    );
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

#[test]
fn repro4_force_replaces_regular_files_only() {
    let dir = TempDir::new("id4");
    let src = dir.p("src.img");
    std::fs::write(&src, vec![3u8; 4 * MIB as usize]).unwrap();
    let img = small_image(&dir);
    let img_sha = sha256(&img);
    let fifo = dir.p("fifo");
    run(Command::new("mkfifo").arg(&fifo));
    let mut outs: Vec<String> = vec![s(&fifo).into(), s(dir.path()).into()];
    // A node like /dev/full, but private: an old binary under test replaces it with a file.
    let full = dir.p("full");
    if Command::new("mknod")
        .arg(&full)
        .args(["c", "1", "7"])
        .status()
        .is_ok_and(|s| s.success())
    {
        outs.push(s(&full).into());
    }
    let back = dir.p("back.img");
    zero_file(&back, 8 * MIB);
    let lo = if can_loop() {
        Loop::attach(&back)
    } else {
        None
    };
    if let Some(l) = &lo {
        outs.push(l.dev.clone());
    }
    for out in &outs {
        let kind_before = std::fs::metadata(out).unwrap().file_type();
        let o = lb(&["image", "create", s(&src), out, "--force"]);
        refused(&o, "replaces regular files only");
        let o = lb(&["image", "export", s(&img), out, "--force"]);
        refused(&o, "replaces regular files only");
        assert_eq!(
            std::fs::metadata(out).unwrap().file_type(),
            kind_before,
            "{out} replaced"
        );
    }
    assert!(!dir.p("full.partial").exists());
    assert_eq!(
        sha256(&back),
        sha256_of_zeros(8 * MIB),
        "the loop device was written"
    );
    assert_eq!(sha256(&img), img_sha, "the image changed");
    // A regular file is replaced with --force (the control).
    let old = dir.p("old.lbi");
    std::fs::write(&old, b"old").unwrap();
    assert_exit(&lb(&["image", "create", s(&src), s(&old), "--force"]), 0);
    assert_exit(&lb(&["image", "verify", s(&old)]), 0);
}

fn sha256_of_zeros(len: u64) -> String {
    let dir = TempDir::new("zeros");
    let z = dir.p("z");
    zero_file(&z, len);
    sha256(&z)
}

#[test]
fn repro5_an_image_is_never_its_own_parent() {
    let dir = TempDir::new("id5");
    let img = small_image(&dir);
    let src = dir.p("small.img");
    let before = sha256(&img);
    let o = lb(&[
        "image",
        "create",
        s(&src),
        s(&img),
        "--parent",
        s(&img),
        "--force",
    ]);
    refused(&o, "would overwrite the parent image");
    assert_eq!(sha256(&img), before, "the only full image changed");
    // Nor, through a hard link, a parent's parent.
    let inc = dir.p("inc.lbi");
    assert_exit(
        &lb(&["image", "create", s(&src), s(&inc), "--parent", s(&img)]),
        0,
    );
    let inc_sha = sha256(&inc);
    let h = dir.p("h.lbi");
    std::fs::hard_link(&img, &h).unwrap();
    let o = lb(&[
        "image",
        "create",
        s(&src),
        s(&h),
        "--parent",
        s(&inc),
        "--force",
    ]);
    refused(&o, "would overwrite the parent image");
    assert_eq!(sha256(&img), before);
    assert_eq!(sha256(&inc), inc_sha);
    assert_exit(&lb(&["image", "verify", s(&inc)]), 0);
}

#[test]
fn repro17_export_never_over_the_image_chain() {
    let dir = TempDir::new("id17");
    let img = small_image(&dir);
    let before = sha256(&img);
    let o = lb(&["image", "export", s(&img), s(&img), "--force"]);
    refused(&o, "would overwrite the image");
    // Over a parent of the exported incremental, too.
    let src = dir.p("small.img");
    let inc = dir.p("inc.lbi");
    assert_exit(
        &lb(&["image", "create", s(&src), s(&inc), "--parent", s(&img)]),
        0,
    );
    let o = lb(&["image", "export", s(&inc), s(&img), "--force"]);
    refused(&o, "would overwrite the parent image");
    assert_eq!(sha256(&img), before, "the image changed");
    assert_exit(&lb(&["image", "verify", s(&inc)]), 0);
}

#[test]
fn repro12_partition_table_onto_another_sector_size() {
    if !can_loop() {
        return;
    }
    let dir = TempDir::new("id12");
    let sf = disk_s(&dir, &label());
    let before = sha256(&sf);
    let back = dir.p("t4k.img");
    zero_file(&back, 96 * MIB);
    let Some(t) = Loop::sectors_4k(&back) else {
        return;
    };
    let o = lb(&["clone", s(&sf), &t.dev, "--yes"]);
    refused(&o, "partition table for 512-byte sectors");
    assert_eq!(
        sha256(&back),
        sha256_of_zeros(96 * MIB),
        "the refused target was written"
    );
    // The same rule for restore.
    let img = dir.p("s.lbi");
    assert_exit(&lb(&["image", "create", s(&sf), s(&img)]), 0);
    let o = lb(&["image", "restore", s(&img), &t.dev, "--yes"]);
    refused(&o, "partition table for 512-byte sectors");
    assert_eq!(
        sha256(&back),
        sha256_of_zeros(96 * MIB),
        "the refused target was written"
    );
    // Without a partition table: a byte copy, allowed with a note.
    let fs = dir.p("fs.img");
    zero_file(&fs, 32 * MIB);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&fs));
    let fs_sha = sha256(&fs);
    let o = lb(&["clone", s(&fs), &t.dev, "--yes"]);
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("byte for byte"), "{}", stderr(&o));
    drop(t);
    let copy = std::fs::read(&back).unwrap();
    assert_eq!(&copy[..32 * MIB as usize], &std::fs::read(&fs).unwrap()[..]);
    assert_eq!(sha256(&fs), fs_sha);
    assert_eq!(sha256(&sf), before, "S changed");
}

#[test]
fn repro18_restore_onto_a_smaller_target_reports_what_fits() {
    let dir = TempDir::new("id18");
    // A 64 MiB GPT disk whose one partition ends at 33 MiB.
    let d = dir.p("d.img");
    zero_file(&d, 64 * MIB);
    run(Command::new("sgdisk")
        .args(["-n1:1MiB:+32MiB", "-t1:8300"])
        .arg(&d));
    let img = dir.p("d.lbi");
    assert_exit(&lb(&["image", "create", s(&d), s(&img)]), 0);
    let before = sha256(&img);
    let t = dir.p("t.img");
    zero_file(&t, 40 * MIB);
    let o = lb(&["image", "restore", s(&img), s(&t), "--yes", "--json"]);
    assert_exit(&o, 0);
    let r = json(&o);
    let written = r["written_bytes"].as_u64().unwrap();
    assert!(
        written <= 40 * MIB,
        "written_bytes {written} > the 40 MiB target: {r}"
    );
    assert_eq!(written, 40 * MIB, "{r}");
    assert_eq!(std::fs::metadata(&t).unwrap().len(), 40 * MIB);
    assert_eq!(sha256(&img), before);
}

#[test]
fn repro19_permission_denied_is_not_write_protection() {
    if !is_root() {
        eprintln!("skipping: needs root to run the job as another user");
        return;
    }
    let dir = TempDir::new("id19");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let src = dir.p("src.img");
    std::fs::write(&src, vec![1u8; MIB as usize]).unwrap();
    let t = dir.p("t.img");
    zero_file(&t, MIB);
    std::fs::set_permissions(&t, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let bin = std::env::var("LIFEBOAT_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_lifeboat").into());
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", &bin])
        .args(["clone", s(&src), s(&t), "--yes"])
        .output();
    let Ok(o) = o else {
        eprintln!("skipping: setpriv is not available");
        return;
    };
    let e = stderr(&o);
    assert!(e.contains("permission denied"), "{e}");
    assert!(!e.contains("write protection"), "{e}");
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(sha256(&t), sha256_of_zeros(MIB));
}

/// Runs `lifeboat ARGS` with a pseudo-terminal as stdin/stdout/stderr, waits for the
/// confirmation question, sends one SIGINT and returns the exit code and what it printed.
fn interrupt_at_the_prompt(args: &[&str]) -> (Option<i32>, String) {
    use std::io::Read;
    use std::os::fd::OwnedFd;
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave: OwnedFd = pty.slave;
    let mut child = lifeboat_cmd()
        .args(args)
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .expect("run lifeboat");
    let mut master = std::fs::File::from(pty.master);
    let mut seen = String::new();
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    // The master is read with a poll timeout so a binary that never asks does not hang the test.
    while !seen.contains("Type 'yes'") && t0.elapsed() < std::time::Duration::from_secs(60) {
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&master),
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut fds, 500u16).unwrap_or(0) > 0 {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
    }
    if seen.contains("Type 'yes'") {
        std::thread::sleep(std::time::Duration::from_millis(200));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (st.code(), seen);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, seen);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn one_ctrl_c_at_the_confirmation_prompt_exits_130() {
    let dir = TempDir::new("prompt");
    let src = dir.p("src.img");
    std::fs::write(&src, vec![9u8; 4 * MIB as usize]).unwrap();
    let t = dir.p("t.img");
    zero_file(&t, 4 * MIB);
    let (code, seen) = interrupt_at_the_prompt(&["clone", s(&src), s(&t)]);
    assert_eq!(code, Some(130), "clone: {seen}");
    assert_eq!(
        sha256(&t),
        sha256_of_zeros(4 * MIB),
        "the target was written"
    );
    // The same prompt for restore.
    let img = small_image(&dir);
    let t8 = dir.p("t8.img");
    zero_file(&t8, 8 * MIB);
    let (code, seen) = interrupt_at_the_prompt(&["image", "restore", s(&img), s(&t8)]);
    assert_eq!(code, Some(130), "restore: {seen}");
    assert_eq!(
        sha256(&t8),
        sha256_of_zeros(8 * MIB),
        "the target was written"
    );
}

/// The kernel's read-only flag of a block device (`/sys/class/block/NAME/ro`).
fn ro_flag(dev: &str) -> String {
    let name = dev.trim_start_matches("/dev/");
    std::fs::read_to_string(format!("/sys/class/block/{name}/ro"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The partitions the kernel found on a loop device (names like `loop3p1`).
fn partitions_of(dev: &str) -> Vec<String> {
    let name = dev.trim_start_matches("/dev/");
    let mut v: Vec<String> = std::fs::read_dir(format!("/sys/class/block/{name}"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(name) && n != name)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn the_read_only_guard_holds_disk_partitions_and_whole_disk_and_restores_them() {
    if !can_loop() {
        return;
    }
    let dir = TempDir::new("guard");
    let sf = disk_s(&dir, &label());
    let Some(l) = Loop::attach_with(
        &sf,
        LoopOpts {
            partscan: true,
            ..Default::default()
        },
    ) else {
        return;
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let parts = partitions_of(&l.dev);
    let with_nodes: Vec<String> = parts
        .iter()
        .filter(|p| Path::new(&format!("/dev/{p}")).exists())
        .cloned()
        .collect();
    {
        let g = lifeboat::storage::ReadOnlyGuard::new(&[PathBuf::from(&l.dev)]).unwrap();
        assert_eq!(ro_flag(&l.dev), "1");
        for p in &with_nodes {
            assert_eq!(ro_flag(p), "1", "{p} not held read-only: {g:?}");
        }
    }
    assert_eq!(ro_flag(&l.dev), "0");
    for p in &parts {
        assert_eq!(ro_flag(p), "0", "{p} not restored");
    }
    // A partition as the source: its whole disk is held too.
    if let Some(p1) = with_nodes.first() {
        let g =
            lifeboat::storage::ReadOnlyGuard::new(&[PathBuf::from(format!("/dev/{p1}"))]).unwrap();
        assert_eq!(ro_flag(p1), "1");
        assert_eq!(
            ro_flag(&l.dev),
            "1",
            "the whole disk of {p1} is writable: {g:?}"
        );
        drop(g);
        assert_eq!(ro_flag(&l.dev), "0");
    } else {
        eprintln!("(no partition nodes under /dev: the partition-source part is skipped)");
    }
    // A panic unwinds through the guard: restored.
    let dev = l.dev.clone();
    let r = std::panic::catch_unwind(move || {
        let _g = lifeboat::storage::ReadOnlyGuard::new(&[PathBuf::from(&dev)]).unwrap();
        assert_eq!(ro_flag(&dev), "1");
        panic!("a job fails half-way");
    });
    assert!(r.is_err());
    assert_eq!(ro_flag(&l.dev), "0", "not restored after a panic");
    // Two Ctrl-C during a clone (the second exits at once): restored too.
    let t = dir.p("t.img");
    zero_file(&t, 96 * MIB);
    let mut child = lifeboat_cmd()
        .args(["clone", &l.dev, s(&t), "--yes"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while ro_flag(&l.dev) != "1" && t0.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    for _ in 0..2 {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let st = child.wait().unwrap();
    assert_ne!(st.code(), Some(4), "the clone was refused");
    assert_eq!(ro_flag(&l.dev), "0", "not restored after two Ctrl-C ({st})");
    for p in &parts {
        assert_eq!(ro_flag(p), "0", "{p} not restored after two Ctrl-C");
    }
}

#[test]
fn restore_onto_the_storage_of_the_images_partition_is_refused_before_mounting() {
    if !can_loop() {
        return;
    }
    let dir = TempDir::new("idstore");
    let lab = label();
    let sf = disk_s(&dir, &lab);
    let Some(p) = Loop::partition(&sf, 17 * MIB, 78 * MIB) else {
        return;
    };
    let src = dir.p("small.img");
    std::fs::write(&src, vec![4u8; 4 * MIB as usize]).unwrap();
    let at = format!("label={lab}:/r.lbi");
    assert_exit(&lb(&["image", "create", s(&src), &at]), 0);
    let before = sha256(&sf);
    // A loop over the whole file S holds the image's partition: refused before any mount.
    let Some(a) = Loop::attach(&sf) else { return };
    let o = lb(&["image", "restore", &at, &a.dev, "--yes"]);
    refused(&o, "would overwrite the image's partition");
    assert_eq!(sha256(&sf), before, "S changed");
    drop(p);
}
