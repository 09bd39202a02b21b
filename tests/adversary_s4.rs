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
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for v in data[..8 << 20].iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *v = x as u8;
    }
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
