//! Adversarial tests for what landed in session 4 (image copy with --chain and its verify after
//! writing, netboot inputs): careless or hostile arguments never destroy an image a chain needs,
//! never write to a source, and a report never says a copy is good when it is not. Every
//! source and image read is checked unchanged by sha256.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// A 16 MiB source disk (random first half, zeros after) and a full image of it in `dir/a/`,
/// then a 1 MiB change and an incremental `inc.lbi` on top. Returns (source, full, inc).
fn chain(dir: &TempDir) -> (PathBuf, PathBuf, PathBuf) {
    use std::os::unix::fs::FileExt;
    let src = dir.p("src.raw");
    let mut data = vec![0u8; 16 << 20];
    data[..8 << 20].copy_from_slice(&xorshift_bytes(8 << 20, 0x9e37_79b9_7f4a_7c15));
    std::fs::write(&src, &data).unwrap();
    let a = dir.p("a");
    std::fs::create_dir(&a).unwrap();
    let full = a.join("full.lbi");
    let before = sha256(&src);
    assert_exit(
        &lifeboat(&["image", "create", "--all-sectors", s(&src), s(&full)]),
        0,
    );
    assert_eq!(sha256(&src), before, "the source changed");
    let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    f.write_all_at(&[0x5a; 1 << 20], 9 << 20).unwrap();
    drop(f);
    let inc = a.join("inc.lbi");
    let before = sha256(&src);
    assert_exit(
        &lifeboat(&[
            "image",
            "create",
            "--all-sectors",
            "--parent",
            s(&full),
            s(&src),
            s(&inc),
        ]),
        0,
    );
    assert_eq!(sha256(&src), before, "the source changed");
    (src, full, inc)
}

/// The sha256 of every file in `dir` (name order).
fn shas(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.into_iter().map(|p| (p.clone(), sha256(&p))).collect()
}

#[test]
fn copy_without_chain_never_replaces_a_parent_of_the_image() {
    // `image copy inc.lbi full.lbi --force` beside the parent full.lbi replaced the parent with
    // a copy of the incremental (exit 0, "verified"): the image's chain was destroyed.
    let dir = TempDir::new("adv4-parent");
    let (_src, full, inc) = chain(&dir);
    let a = full.parent().unwrap();
    let before = shas(a);
    let o = lifeboat(&["image", "copy", "--force", s(&inc), s(&full)]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("parent"), "{}", stderr(&o));
    // Through another name of the same directory, too.
    let other = dir.p("a/../a/full.lbi");
    let o = lifeboat(&["image", "copy", "--force", s(&inc), s(&other)]);
    assert_exit(&o, 4);
    assert_eq!(shas(a), before, "an image of the chain changed");
    // The chain still restores.
    assert_exit(&lifeboat(&["image", "verify", s(&inc)]), 0);
}

#[test]
fn chain_copy_refuses_a_destination_named_like_a_parent() {
    // `image copy inc.lbi b/full.lbi --chain`: the parent full.lbi goes to b/full.lbi, then
    // the incremental went there too, replacing it (no --force needed: nothing was there when
    // checked), and the report said both were copied and verified.
    let dir = TempDir::new("adv4-names");
    let (_src, full, inc) = chain(&dir);
    let a = full.parent().unwrap();
    let before = shas(a);
    let b = dir.p("b");
    std::fs::create_dir(&b).unwrap();
    let o = lifeboat(&["image", "copy", "--chain", s(&inc), s(&b.join("full.lbi"))]);
    assert_exit(&o, 4);
    assert!(
        std::fs::read_dir(&b).unwrap().next().is_none(),
        "something was written"
    );
    // With the parent already there (kept, not copied), --force must not replace it either.
    assert_exit(&lifeboat(&["image", "copy", s(&full), s(&b)]), 0);
    let kept = sha256(&b.join("full.lbi"));
    let o = lifeboat(&[
        "image",
        "copy",
        "--chain",
        "--force",
        s(&inc),
        s(&b.join("full.lbi")),
    ]);
    assert_exit(&o, 4);
    assert_eq!(
        sha256(&b.join("full.lbi")),
        kept,
        "the parent's copy changed"
    );
    assert_eq!(shas(a), before, "an image of the chain changed");
    // The right name works and the copy restores through its parent's copy.
    assert_exit(&lifeboat(&["image", "copy", "--chain", s(&inc), s(&b)]), 0);
    assert_exit(&lifeboat(&["image", "verify", s(&b.join("inc.lbi"))]), 0);
    assert_eq!(shas(a), before, "an image of the chain changed");
}

#[test]
fn no_job_writes_over_its_passphrase_file() {
    // `image create SRC pw --encrypt --passphrase-file pw --force` replaced the passphrase file
    // with the image it encrypts (exit 0): the only written copy of the key was gone. A copy or
    // an export onto it with --force did the same.
    let dir = TempDir::new("adv4-pw");
    let src = dir.p("src.raw");
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let src_sha = sha256(&src);
    let pw = dir.p("pw");
    std::fs::write(&pw, "correct horse battery\n").unwrap();
    let pw_sha = sha256(&pw);
    let o = lifeboat(&[
        "image",
        "create",
        "--encrypt",
        "--passphrase-file",
        s(&pw),
        "--force",
        s(&src),
        s(&pw),
    ]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("passphrase file"), "{}", stderr(&o));
    assert_eq!(sha256(&pw), pw_sha, "the passphrase file changed");
    let img = dir.p("enc.lbi");
    assert_exit(
        &lifeboat(&[
            "image",
            "create",
            "--encrypt",
            "--passphrase-file",
            s(&pw),
            s(&src),
            s(&img),
        ]),
        0,
    );
    let img_sha = sha256(&img);
    for args in [
        vec![
            "image",
            "copy",
            "--force",
            "--passphrase-file",
            s(&pw),
            s(&img),
            s(&pw),
        ],
        vec![
            "image",
            "export",
            "--force",
            "--passphrase-file",
            s(&pw),
            s(&img),
            s(&pw),
        ],
    ] {
        let o = lifeboat(&args);
        assert_exit(&o, 4);
        assert_eq!(sha256(&pw), pw_sha, "{args:?} changed the passphrase file");
    }
    // Through a hard link too.
    let link = dir.p("pw-link");
    std::fs::hard_link(&pw, &link).unwrap();
    let o = lifeboat(&[
        "image",
        "copy",
        "--force",
        "--passphrase-file",
        s(&pw),
        s(&img),
        s(&link),
    ]);
    assert_exit(&o, 4);
    assert_eq!(sha256(&pw), pw_sha, "the passphrase file changed");
    assert_eq!(sha256(&img), img_sha, "the image changed");
    assert_eq!(sha256(&src), src_sha, "the source changed");
}

/// Runs `image copy ARGS --json` paused before its verify (the debug-build hook
/// `LIFEBOAT_TEST_PAUSE_BEFORE_VERIFY`), does `meddle` to the destination then, and returns
/// the command's output.
fn copy_meddled(dir: &TempDir, args: &[&str], meddle: impl FnOnce()) -> std::process::Output {
    let pause = dir.p("pause");
    std::fs::create_dir_all(&pause).unwrap();
    let mut cmd = lifeboat_cmd();
    cmd.args(["image", "copy", "--json"])
        .args(args)
        .env("LIFEBOAT_TEST_PAUSE_BEFORE_VERIFY", &pause)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // No deadline of our own: the hook itself gives up after 10 minutes.
    while !pause.join("ready").exists() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    meddle();
    std::fs::write(pause.join("go"), b"").unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_copy_read_back_shorter_is_a_failed_verify_not_a_damaged_image() {
    // A destination that kept fewer bytes than written: the copy said "the image volume became
    // shorter while it was copied" (blaming the image) with verified null; it is the copy's
    // verify that failed (verified false, the problem named), and nothing stays behind.
    let dir = TempDir::new("adv4-short");
    let (_src, full, _inc) = chain(&dir);
    let a = full.parent().unwrap();
    let before = shas(a);
    let b = dir.p("b");
    std::fs::create_dir(&b).unwrap();
    let part = b.join("full.lbi.partial");
    let o = copy_meddled(&dir, &[s(&full), s(&b)], || {
        let f = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - 100).unwrap();
    });
    assert_exit(&o, 5);
    let j = json(&o);
    assert_eq!(j["verified"], false, "{j}");
    assert!(
        j["verify_problems"][0]
            .as_str()
            .unwrap()
            .contains("not the"),
        "{j}"
    );
    assert!(
        std::fs::read_dir(&b).unwrap().next().is_none(),
        "the failed copy stayed"
    );
    assert_eq!(shas(a), before, "the image changed");
}

#[test]
fn a_volume_replaced_by_a_link_to_the_image_is_not_read_back_as_the_copy() {
    // The verify opened each copy by name: a .partial replaced meanwhile by a symlink to the
    // image's own volume read back as the image (verified true) and was renamed into the copy,
    // which was then only a link to the first copy.
    let dir = TempDir::new("adv4-link");
    let src = dir.p("src.raw");
    let data = xorshift_bytes(12 << 20, 0x2545_f491_4f6c_dd1d);
    std::fs::write(&src, &data).unwrap();
    let a = dir.p("a");
    std::fs::create_dir(&a).unwrap();
    let img = a.join("split.lbi");
    assert_exit(
        &lifeboat(&[
            "image",
            "create",
            "--all-sectors",
            "--compress",
            "lz4",
            "--split",
            "4M",
            s(&src),
            s(&img),
        ]),
        0,
    );
    assert!(a.join("split.lbi.002").exists(), "no second volume");
    let before = shas(&a);
    let b = dir.p("b");
    std::fs::create_dir(&b).unwrap();
    let part = b.join("split.lbi.002.partial");
    let o = copy_meddled(&dir, &[s(&img), s(&b)], || {
        std::fs::remove_file(&part).unwrap();
        std::os::unix::fs::symlink(a.join("split.lbi.002"), &part).unwrap();
    });
    assert_exit(&o, 5);
    assert!(
        std::fs::read_dir(&b).unwrap().next().is_none(),
        "the copy stayed: {:?}",
        std::fs::read_dir(&b).unwrap().collect::<Vec<_>>()
    );
    assert_eq!(shas(&a), before, "the image changed");
}
