//! The adversary on the files a job writes beside its main output, named as `PARTITION:/path`
//! on the disk the job writes (restore's `--map` on a partition of the target: mounting it
//! read-write while the restore overwrites it would corrupt both), and on `image extract --to`
//! naming the image itself, a symlink to it, or the source disk's node: refused before anything
//! is mounted or written, the target, image and disks unchanged (sha256). Decided on exit codes,
//! never message text. Needs root and loop devices for the partition case (skips otherwise).
mod common;

use common::*;
use std::process::Command;

/// `image restore IMG TARGET --map label=L:/m.map` where L is an ext4 partition of TARGET (a
/// loop device at its offset in the target's file): refused (exit 4) before the partition is
/// mounted; the target unchanged.
#[test]
fn a_restore_map_on_a_partition_of_the_target() {
    if !is_root() {
        eprintln!("skipping: needs root (loop devices)");
        return;
    }
    let dir = TempDir::new("adv-side-map");
    let (_, img) = imaged_data_file(&dir, "src.img", 40 * MIB, 2, "a.lbi");
    let img_sha = sha256(&img);
    let tf = dir.p("target");
    zero_file(&tf, 40 * MIB);
    let lab = format!("ADVM{}", std::process::id() % 100_000);
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", &lab])
        .args(["-E", &format!("offset={}", 4 * MIB)])
        .arg(&tf)
        .arg(format!("{}k", 32 * 1024)));
    let Some(t) = Loop::attach(&tf) else { return };
    let Some(p) = Loop::partition(&tf, 4 * MIB, 32 * MIB) else {
        return;
    };
    let before = sha256(&tf);
    let seen = mount_lines(&p.dev);
    let o = lifeboat(&[
        "image",
        "restore",
        s(&img),
        &t.dev,
        "--yes",
        "--map",
        &format!("label={lab}:/m.map"),
        "--json",
    ]);
    assert_exit(&o, 4);
    let new: Vec<String> = mount_lines(&p.dev)
        .into_iter()
        .filter(|l| !seen.contains(l))
        .collect();
    assert!(
        new.is_empty(),
        "the target's partition was mounted: {new:?}"
    );
    assert_eq!(sha256(&tf), before, "the target was written");
    assert_eq!(sha256(&img), img_sha);
}

/// `image extract IMG /x --to T` where T is the image file, a symlink to it, or the device node
/// of a loop over the image's file: refused before the image is opened (exit 2, not a
/// folder), nothing created, the image unchanged.
#[test]
fn extract_to_the_image_itself() {
    let dir = TempDir::new("adv-side-extract");
    let (_, img) = imaged_data_file(&dir, "src.img", 4 * MIB, 3, "a.lbi");
    let img_sha = sha256(&img);
    let link = dir.p("link");
    std::os::unix::fs::symlink(&img, &link).unwrap();
    let lp = if is_root() { Loop::attach(&img) } else { None };
    let mut dests = vec![s(&img).to_string(), s(&link).to_string()];
    if let Some(l) = &lp {
        dests.push(l.dev.clone());
    }
    for to in &dests {
        let o = lifeboat(&["image", "extract", s(&img), "/x", "--to", to, "--json"]);
        let c = o.status.code();
        assert!(
            c == Some(2) || c == Some(1),
            "--to {to}: expected a refusal, got {c:?}: {}",
            stderr(&o)
        );
        assert_eq!(sha256(&img), img_sha, "--to {to}: the image changed");
    }
    drop(lp);
    assert_eq!(sha256(&img), img_sha);
}

/// A verify state and a restore map are saved through `NAME.lifeboat-tmp` (unlinked, written,
/// renamed over the state or map at every save). That name was never checked: `image verify
/// x.lifeboat-tmp --state x.json` deleted the image it verified (exit 0), and a passphrase
/// file named `st.lifeboat-tmp` beside `--state st` was deleted too. Refused (exit 4), both
/// files unchanged.
#[test]
fn the_temporary_name_of_a_state_or_map_file() {
    let dir = TempDir::new("adv-side-tmp");
    let src = dir.p("src.img");
    data_file(&src, 3 * MIB, 4);
    let before = sha256(&src);
    let img = dir.p("x.lifeboat-tmp");
    assert_exit(
        &lifeboat(&["image", "create", s(&src), s(&img), "--no-verify"]),
        0,
    );
    let img_sha = sha256(&img);
    let o = lifeboat(&["image", "verify", s(&img), "--state", s(&dir.p("x.json"))]);
    assert_exit(&o, 4);
    assert_eq!(sha256(&img), img_sha, "the image was deleted or changed");
    let target = dir.p("t.img");
    zero_file(&target, 3 * MIB);
    let o = lifeboat(&[
        "image",
        "restore",
        s(&img),
        s(&target),
        "--yes",
        "--map",
        s(&dir.p("x.map")),
    ]);
    assert_exit(&o, 4);
    assert_eq!(sha256(&img), img_sha, "the image was deleted or changed");
    // A passphrase file under the state's temporary name.
    let pw = dir.p("pw");
    std::fs::write(&pw, "pass phrase 9\n").unwrap();
    let enc = dir.p("e.lbi");
    assert_exit(
        &lifeboat(&[
            "image",
            "create",
            s(&src),
            s(&enc),
            "--encrypt",
            "--passphrase-file",
            s(&pw),
            "--no-verify",
        ]),
        0,
    );
    let kept = dir.p("st.lifeboat-tmp");
    std::fs::copy(&pw, &kept).unwrap();
    let o = lifeboat(&[
        "image",
        "verify",
        s(&enc),
        "--state",
        s(&dir.p("st")),
        "--passphrase-file",
        s(&kept),
    ]);
    assert_exit(&o, 4);
    assert_eq!(std::fs::read(&kept).unwrap(), b"pass phrase 9\n");
    assert_eq!(sha256(&src), before);
}
