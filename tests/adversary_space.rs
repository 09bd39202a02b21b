//! The adversary on the free-space rule (`image create` / `image copy`, `--ignore-free-space`)
//! and on what is left where a destination fills mid-write: the flag never skips the
//! storage-identity rule (a destination inside the source's own mounted filesystem), a file
//! planted under the unfinished image's name does not talk the check into a job that cannot
//! fit, and a copy or an export that fills its filesystem fails (never exit 0), leaves no
//! file under the final name, and changes neither the source nor the image read. Needs root,
//! loop devices and ext4 mounts (skips with a message otherwise); every source and image read
//! is checked unchanged by sha256. Decided on exit codes and JSON fields, never message text.
mod common;

use common::*;
use std::process::Command;

/// `--ignore-free-space` skips the free-space check only: an image written into the source's
/// own filesystem (mounted from the source file through a loop device at its offset) is still
/// refused by the identity rule (exit 4, and not as "not enough room": no `free_bytes`), with
/// the source given as its file and as a loop device over the whole file; nothing is created
/// there.
#[test]
fn ignore_free_space_never_skips_the_identity_rule() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("adv-sp-ident");
    let sf = source_with_ext4(&dir);
    let Some(m) = Mounted::ext4_in(&sf, &dir, 4 * MIB, 32 * MIB) else {
        return;
    };
    let Some(whole) = Loop::attach(&sf) else {
        return;
    };
    // No access-time updates (a directory listed would change the source's bytes), and the
    // comparison starts now (mounting wrote the filesystem's state).
    run(Command::new("mount")
        .args(["-o", "remount,noatime"])
        .arg(&m.mp));
    run(&mut Command::new("sync"));
    let before = sha256(&sf);
    let inside = m.mp.join("in.lbi");
    for src in [s(&sf), whole.dev.as_str()] {
        for flag in [None, Some("--ignore-free-space")] {
            let mut args = vec!["image", "create", src, s(&inside), "--json"];
            args.extend(flag);
            let o = lifeboat(&args);
            assert_exit(&o, 4);
            let j = json(&o);
            assert!(
                j.get("free_bytes").is_none(),
                "refused for room, not identity: {j}"
            );
            assert_eq!(names(&m.mp), Vec::<String>::new(), "{src} {flag:?}");
            run(&mut Command::new("sync"));
            assert_eq!(sha256(&sf), before, "the source changed ({src} {flag:?})");
        }
    }
    drop(whole);
    drop(m);
}

/// A file planted under the unfinished image's name (`X.lbi.partial`, a sparse file of 4 GiB
/// holding nothing, and no journal: not an unfinished run of this image) was counted as "already
/// written", so the check let a job start that cannot fit. It must be refused (exit 4) as if the
/// file were not there, and the file left as it was.
#[test]
fn a_sparse_partial_does_not_talk_the_check_round() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("adv-sp-sparse");
    let Some(m) = Mounted::new_ext4(&dir, 16) else {
        return;
    };
    let src = dir.p("src.img");
    data_file(&src, 24 * MIB, 7);
    let before = sha256(&src);
    let img = m.mp.join("X.lbi");
    let partial = m.mp.join("X.lbi.partial");
    std::fs::File::create(&partial)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    let o = lifeboat(&["image", "create", s(&src), s(&img), "--json"]);
    assert_exit(&o, 4);
    let j = json(&o);
    let need = j["needed_bytes"].as_u64().unwrap();
    assert!(
        need >= 24 * MIB,
        "the planted file was counted as written: {j}"
    );
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 4 << 30);
    assert_eq!(names(&m.mp), ["X.lbi.partial"]);
    assert_eq!(sha256(&src), before);
}

/// An image copy and a raw export onto a filesystem too small for them (the copy with
/// `--ignore-free-space`): both fail (exit 1 — never 0), no file has the final name, nothing
/// half-written is left (the copy's `.partial` volumes and the export's are removed), the image read is unchanged, and the
/// filesystem is consistent (`e2fsck -fn`).
#[test]
fn a_copy_and_an_export_that_fill_their_filesystem() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("adv-sp-fill");
    let src = dir.p("src.img");
    data_file(&src, 24 * MIB, 8);
    let before = sha256(&src);
    let img = dir.p("a.lbi");
    assert_exit(
        &lifeboat(&["image", "create", s(&src), s(&img), "--no-verify"]),
        0,
    );
    let img_sha = sha256(&img);
    let Some(m) = Mounted::new_ext4(&dir, 16) else {
        return;
    };
    let copy = m.mp.join("c.lbi");
    let o = lifeboat(&[
        "image",
        "copy",
        s(&img),
        s(&copy),
        "--ignore-free-space",
        "--json",
    ]);
    assert_exit(&o, 1);
    assert!(!copy.exists(), "a copy that did not fit has the final name");
    let left = names(&m.mp);
    assert_eq!(
        left,
        Vec::<String>::new(),
        "the failed copy left files behind"
    );
    let raw = m.mp.join("out.raw");
    let o = lifeboat(&["image", "export", s(&img), s(&raw), "--json"]);
    assert_exit(&o, 1);
    assert!(
        !raw.exists(),
        "an export that did not fit has the final name"
    );
    assert_eq!(
        names(&m.mp),
        left,
        "the failed export left a file behind: {:?}",
        names(&m.mp)
    );
    assert_eq!(sha256(&img), img_sha, "the image read changed");
    assert_eq!(sha256(&src), before);
    let store = dir.p("store.img");
    drop(m);
    run(Command::new("e2fsck").arg("-fn").arg(&store));
}
