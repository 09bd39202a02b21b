//! NTFS partitions as image stores (through the host's ntfs-3g, as the environment does through
//! its own): an image created onto an NTFS volume found by `label=`, then verified and restored
//! from it; the volume checked by the real tools afterwards (`ntfsfix -n` clean, the image read
//! out with `ntfscat` verifies on its own) and left unmounted with no ntfs-3g serving it; a
//! volume that Windows left hibernated (hiberfil.sys starting with `hibr`) or marked dirty is
//! refused for writing (exit 4, its bytes unchanged) and still read; an NTFS partition inside
//! the source is refused by the identity rule; a cancelled create leaves the volume unmounted
//! and clean. Needs root, loop devices, FUSE and ntfs-3g (mkntfs, ntfsfix, ntfscat): each test
//! prints why and skips where one is missing. Every test checks the source's sha256 unchanged.
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A label nobody else's test uses at the same time (`label=` must match exactly one).
fn label(tag: &str) -> String {
    format!("NT{tag}{}", std::process::id() % 100_000)
}

/// Whether this machine can run the tests: root, ntfs-3g and its tools, /dev/fuse.
fn can_ntfs() -> bool {
    if !is_root() {
        eprintln!("skipping: needs root for loop devices and FUSE mounts");
        return false;
    }
    for t in ["ntfs-3g", "mkntfs", "ntfsfix", "ntfscat"] {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipping: {t} is missing (apt-get install ntfs-3g)");
            return false;
        }
    }
    if !Path::new("/dev/fuse").exists() {
        eprintln!("skipping: /dev/fuse is missing (no FUSE in this kernel)");
        return false;
    }
    true
}

/// A `len`-byte file holding a fresh NTFS labelled `lab`.
fn ntfs_file(dir: &TempDir, name: &str, lab: &str, len: u64) -> PathBuf {
    let p = dir.p(name);
    zero_file(&p, len);
    run(Command::new("mkntfs").args(["-F", "-Q", "-L", lab]).arg(&p));
    p
}

/// A 48 MiB source disk-image file: 8 MiB of random data at 4 MiB, the rest zeros.
fn source(dir: &TempDir) -> PathBuf {
    let p = dir.p("src.img");
    zero_file(&p, 48 * MIB);
    run(Command::new("dd")
        .args([
            "if=/dev/urandom",
            "bs=1M",
            "count=8",
            "seek=4",
            "conv=notrunc,fsync",
        ])
        .arg(format!("of={}", s(&p)))
        .arg("status=none"));
    p
}

/// Whether anything is still mounted from `dev` (by the device name ntfs-3g gives as source).
fn mounted(dev: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|t| t.split(' ').nth(1) == Some(dev))
        })
}

/// Whether an ntfs-3g process serves `dev`.
fn ntfs3g_running(dev: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| {
            let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"ntfs-3g")) && args.contains(&dev.as_bytes())
        })
}

/// `ntfsfix -n` (no changes) finds the volume clean.
fn ntfs_clean(dev: &str) {
    let o = Command::new("ntfsfix").arg("-n").arg(dev).output().unwrap();
    assert!(
        o.status.success(),
        "ntfsfix -n {dev}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn create_verify_restore_on_ntfs_by_label() {
    if !can_ntfs() {
        return;
    }
    let dir = TempDir::new("ntfs1");
    let lab = label("A");
    let vol = ntfs_file(&dir, "vol.img", &lab, 160 * MIB);
    let Some(lp) = Loop::attach(&vol) else {
        return;
    };
    let src = source(&dir);
    let before = sha256(&src);
    let at = format!("label={lab}:/backups/pc/full.lbi");
    let o = lifeboat(&["image", "create", s(&src), &at, "--json"]);
    assert_exit(&o, 0);
    assert_eq!(sha256(&src), before, "the source changed");
    assert!(!mounted(&lp.dev), "the NTFS store is still mounted");
    assert!(!ntfs3g_running(&lp.dev), "ntfs-3g still runs");
    ntfs_clean(&lp.dev);
    // Read out by the real tool, the image verifies on its own.
    let out = dir.p("out.lbi");
    let cat = Command::new("ntfscat")
        .arg(&lp.dev)
        .arg("backups/pc/full.lbi")
        .output()
        .unwrap();
    assert!(cat.status.success(), "ntfscat: {}", stderr_of(&cat));
    std::fs::write(&out, &cat.stdout).unwrap();
    assert_exit(&lifeboat(&["image", "verify", s(&out)]), 0);
    // Verify and restore from the NTFS store itself (mounted read-only): the volume unchanged.
    let vol_sha = sha256(&vol);
    assert_exit(&lifeboat(&["image", "verify", &at]), 0);
    let t = dir.p("t.img");
    zero_file(&t, 48 * MIB);
    assert_exit(&lifeboat(&["image", "restore", &at, s(&t), "--yes"]), 0);
    assert_eq!(sha256(&t), before, "the restore differs from the source");
    assert_eq!(sha256(&vol), vol_sha, "reading changed the NTFS volume");
    assert!(!mounted(&lp.dev) && !ntfs3g_running(&lp.dev));
    ntfs_clean(&lp.dev);
    assert_eq!(sha256(&src), before, "the source changed");
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn hibernated_volume_refused_for_writing_and_still_read() {
    if !can_ntfs() {
        return;
    }
    let dir = TempDir::new("ntfs2");
    let lab = label("H");
    let vol = ntfs_file(&dir, "vol.img", &lab, 96 * MIB);
    let Some(lp) = Loop::attach(&vol) else {
        return;
    };
    let src = source(&dir);
    let before = sha256(&src);
    // An image first, then Windows "hibernates": hiberfil.sys starting with "hibr".
    let at = format!("label={lab}:/full.lbi");
    assert_exit(&lifeboat(&["image", "create", s(&src), &at]), 0);
    let mp = dir.p("m");
    std::fs::create_dir_all(&mp).unwrap();
    run(Command::new("ntfs-3g").arg(&lp.dev).arg(&mp));
    let mut hib = b"hibr".to_vec();
    hib.resize(64 << 10, 0);
    let w = std::fs::write(mp.join("hiberfil.sys"), &hib);
    run(Command::new("umount").arg(&mp));
    w.unwrap();
    let vol_sha = sha256(&vol);
    let o = lifeboat(&[
        "image",
        "create",
        s(&src),
        &format!("label={lab}:/second.lbi"),
        "--json",
    ]);
    assert_exit(&o, 4);
    let e = stderr_of(&o);
    assert!(
        e.contains("hibernated") && e.contains("Fast Startup"),
        "{e}"
    );
    assert!(e.contains("shut it down fully"), "{e}");
    assert_eq!(
        sha256(&vol),
        vol_sha,
        "the refused create wrote to the volume"
    );
    assert!(!mounted(&lp.dev) && !ntfs3g_running(&lp.dev));
    // Reading it is fine (read-only), and writes nothing either.
    assert_exit(&lifeboat(&["image", "verify", &at]), 0);
    assert_eq!(sha256(&vol), vol_sha, "verify wrote to the volume");
    assert_eq!(sha256(&src), before, "the source changed");
}

#[test]
fn dirty_volume_refused_for_writing() {
    if !can_ntfs() {
        return;
    }
    let dir = TempDir::new("ntfs3");
    let lab = label("D");
    let vol = ntfs_file(&dir, "vol.img", &lab, 64 * MIB);
    // ntfsfix schedules a chkdsk: it sets the volume's dirty flag.
    run(Command::new("ntfsfix").arg(&vol));
    let Some(lp) = Loop::attach(&vol) else {
        return;
    };
    let src = source(&dir);
    let before = sha256(&src);
    let vol_sha = sha256(&vol);
    let o = lifeboat(&["image", "create", s(&src), &format!("label={lab}:/x.lbi")]);
    assert_exit(&o, 4);
    let e = stderr_of(&o);
    assert!(e.contains("marked dirty") && e.contains("chkdsk"), "{e}");
    assert_eq!(
        sha256(&vol),
        vol_sha,
        "the refused create wrote to the volume"
    );
    assert!(!mounted(&lp.dev) && !ntfs3g_running(&lp.dev));
    assert_eq!(sha256(&src), before, "the source changed");
}

/// The identity rule holds for an NTFS store: an NTFS partition inside the source (a loop
/// device over its bytes, as the kernel's partition would be) is refused before anything is
/// mounted or written.
#[test]
fn ntfs_partition_inside_the_source_is_refused() {
    if !can_ntfs() {
        return;
    }
    let dir = TempDir::new("ntfs4");
    let lab = label("S");
    // The source: 96 MiB, an NTFS "partition" at 16..80 MiB.
    let src = dir.p("S");
    zero_file(&src, 96 * MIB);
    run(Command::new("sgdisk")
        .args(["-n1:16MiB:+64MiB", "-t1:0700"])
        .arg(&src));
    let Some(part) = Loop::partition(&src, 16 * MIB, 64 * MIB) else {
        return;
    };
    run(Command::new("mkntfs")
        .args(["-F", "-Q", "-L", &lab])
        .arg(&part.dev));
    run(&mut Command::new("sync"));
    let before = sha256(&src);
    let o = lifeboat(&["image", "create", s(&src), &format!("label={lab}:/x.lbi")]);
    assert_exit(&o, 4);
    let e = stderr_of(&o);
    assert!(e.contains("would overwrite the source"), "{e}");
    assert!(!mounted(&part.dev) && !ntfs3g_running(&part.dev));
    assert_eq!(sha256(&src), before, "the source changed");
}

/// SIGINT while creating onto NTFS: the job stops (130) or had already finished (0); either
/// way the volume is unmounted, ntfs-3g has exited and the volume is clean. A cancelled job's
/// `.partial` is on the volume, readable by ntfscat.
#[test]
fn cancelled_create_leaves_the_volume_unmounted_and_clean() {
    if !can_ntfs() {
        return;
    }
    let dir = TempDir::new("ntfs5");
    let lab = label("C");
    let vol = ntfs_file(&dir, "vol.img", &lab, 400 * MIB);
    let Some(lp) = Loop::attach(&vol) else {
        return;
    };
    // Random data does not compress: the create has real work to do.
    let src = dir.p("src.img");
    zero_file(&src, 256 * MIB);
    run(Command::new("dd")
        .args([
            "if=/dev/urandom",
            "bs=1M",
            "count=256",
            "conv=notrunc,fsync",
        ])
        .arg(format!("of={}", s(&src)))
        .arg("status=none"));
    let before = sha256(&src);
    let mut child = lifeboat_cmd()
        .args(["image", "create", s(&src), &format!("label={lab}:/c.lbi")])
        .env("LIFEBOAT_PROGRESS", "json")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first progress line: the store is mounted and the job writes.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        if n == 0 || line.starts_with("LIFEBOAT-PROGRESS") {
            break;
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut err, &mut rest);
    let st = child.wait().unwrap();
    let code = st.code();
    eprintln!("the create exited with {st}");
    assert!(
        code == Some(130) || code == Some(0),
        "exit {st}: {line}{rest}"
    );
    assert!(!mounted(&lp.dev), "the NTFS store is still mounted");
    assert!(!ntfs3g_running(&lp.dev), "ntfs-3g still runs");
    ntfs_clean(&lp.dev);
    let name = if code == Some(130) {
        "c.lbi.partial"
    } else {
        "c.lbi"
    };
    let cat = Command::new("ntfscat")
        .arg(&lp.dev)
        .arg(name)
        .output()
        .unwrap();
    assert!(cat.status.success(), "ntfscat {name}: {}", stderr_of(&cat));
    assert!(!cat.stdout.is_empty());
    assert_eq!(sha256(&src), before, "the source changed");
}

/// An image that does not fit: refused before it starts (exit 4, nothing written); started
/// anyway (`--ignore-free-space`), the job fails (exit 1) saying "target full", the unfinished
/// `.partial` is kept (as after any failure: it can be resumed), the volume is unmounted and
/// clean.
#[test]
fn a_full_ntfs_store_says_target_full() {
    if !can_ntfs() {
        return;
    }
    let dir = TempDir::new("ntfs6");
    let lab = label("F");
    let vol = ntfs_file(&dir, "vol.img", &lab, 16 * MIB);
    let Some(lp) = Loop::attach(&vol) else {
        return;
    };
    // 32 MiB of random data cannot fit in a 16 MiB volume.
    let src = dir.p("src.img");
    zero_file(&src, 48 * MIB);
    run(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=32", "conv=notrunc,fsync"])
        .arg(format!("of={}", s(&src)))
        .arg("status=none"));
    let before = sha256(&src);
    // Checked first: refused before anything is written (exit 4, the volume left clean).
    let o = lifeboat(&[
        "image",
        "create",
        s(&src),
        &format!("label={lab}:/full.lbi"),
        "--json",
    ]);
    assert_exit(&o, 4);
    assert!(json(&o)["needed_bytes"].as_u64() > json(&o)["free_bytes"].as_u64());
    assert!(!mounted(&lp.dev) && !ntfs3g_running(&lp.dev));
    let ls = Command::new("ntfsls").arg(&lp.dev).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ls.stdout).contains("full.lbi"),
        "the refused create wrote"
    );
    // Started anyway, the job fills the volume and stops.
    let o = lifeboat(&[
        "image",
        "create",
        s(&src),
        &format!("label={lab}:/full.lbi"),
        "--ignore-free-space",
        "--json",
    ]);
    assert_exit(&o, 1);
    let e = stderr_of(&o);
    assert!(e.contains("target full"), "{e}");
    let j = json(&o);
    assert_eq!(j["target_full"], true, "{j}");
    assert!(!mounted(&lp.dev) && !ntfs3g_running(&lp.dev));
    ntfs_clean(&lp.dev);
    let ls = Command::new("ntfsls").arg(&lp.dev).output().unwrap();
    let names = String::from_utf8_lossy(&ls.stdout);
    assert!(names.lines().any(|l| l == "full.lbi.partial"), "{names}");
    assert!(!names.lines().any(|l| l == "full.lbi"), "{names}");
    assert_eq!(sha256(&src), before, "the source changed");
}
