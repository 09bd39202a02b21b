//! The passphrase file under the storage-identity rule: no job writes over the file it read
//! its passphrase from — not under another name (a symlink, a hard link), not through a loop
//! device over it, not as a file written into the filesystem that holds a `PARTITION:/path`
//! passphrase file, not by a raw write to that partition — while an image written beside it
//! on the same partition still works. Every refusal is exit 4 naming the passphrase file, and
//! the file, the source and the image are unchanged (sha256). Needs root (loop devices, an
//! ext4 mount); skipped with a message otherwise.
use std::path::Path;
use std::process::Output;

mod common;
use common::{
    assert_exit, ext4_file, is_root, lifeboat_cheap_kdf, run, s, sha256, stderr, Loop, TempDir,
};
use std::process::Command;

/// `lifeboat image CMD EXTRA… --passphrase-file PW A B` (A: the source or image read, B: what
/// is written), with the cheap KDF.
fn job(cmd: &str, extra: &[&str], pw: &str, a: &str, b: &str) -> Output {
    let mut args = vec!["image", cmd];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--passphrase-file", pw, a, b]);
    lifeboat_cheap_kdf(&args)
}

#[track_caller]
fn refused_for_the_passphrase_file(o: &Output, what: &str) {
    assert_exit(o, 4);
    assert!(
        stderr(o).contains("the passphrase file"),
        "{what}: refused for another reason: {}",
        stderr(o)
    );
}

/// A 4 MiB source of a repeating pattern, its sha256.
fn source(dir: &TempDir) -> (std::path::PathBuf, String) {
    let src = dir.p("src.raw");
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, data).unwrap();
    let sha = sha256(&src);
    (src, sha)
}

#[test]
fn no_name_of_a_plain_passphrase_file_is_written() {
    let dir = TempDir::new("pwid-plain");
    let (src, src_sha) = source(&dir);
    // A passphrase file of 48 KiB (one long line): a loop device over it has room for a
    // partition table, so a refusal cannot be "the target is too small".
    let pw = dir.p("pw");
    let line: String = (0..48 << 10)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    std::fs::write(&pw, format!("{line}\n")).unwrap();
    let pw_sha = sha256(&pw);
    let img = dir.p("enc.lbi");
    let o = job("create", &["--encrypt"], s(&pw), s(&src), s(&img));
    assert_exit(&o, 0);
    let img_sha = sha256(&img);
    // A symlink to it, and a symlinked directory on the way.
    let link = dir.p("pw-symlink");
    std::os::unix::fs::symlink(&pw, &link).unwrap();
    let sub = dir.p("sub");
    std::os::unix::fs::symlink(dir.path(), &sub).unwrap();
    for target in [link.clone(), sub.join("pw")] {
        let o = job(
            "create",
            &["--encrypt", "--force"],
            s(&pw),
            s(&src),
            s(&target),
        );
        if target == link {
            // An output never replaces a symbolic link (whatever it points to): refused first.
            assert_exit(&o, 4);
        } else {
            refused_for_the_passphrase_file(&o, &format!("create onto {}", target.display()));
        }
        assert_eq!(sha256(&pw), pw_sha, "the passphrase file changed");
    }
    // A hard link: export and copy onto it.
    let hard = dir.p("pw-hard");
    std::fs::hard_link(&pw, &hard).unwrap();
    for cmd in ["export", "copy"] {
        let o = job(cmd, &["--force"], s(&hard), s(&img), s(&pw));
        refused_for_the_passphrase_file(&o, cmd);
        assert_eq!(sha256(&pw), pw_sha, "{cmd} changed the passphrase file");
    }
    // The passphrase file given through the symlink, the image written to the hard link.
    let o = job(
        "create",
        &["--encrypt", "--force"],
        s(&link),
        s(&src),
        s(&hard),
    );
    refused_for_the_passphrase_file(&o, "create onto the hard link");
    // A key slot rewrite of an "image" that is the passphrase file: refused before anything
    // is read as an image (the passphrase file is not one), so it stays as it was.
    let o = lifeboat_cheap_kdf(&["image", "add-key", s(&pw), "--passphrase-file", s(&pw)]);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(sha256(&pw), pw_sha, "add-key changed the passphrase file");
    if !is_root() {
        eprintln!("skipping the loop-device part: needs root");
    } else if let Some(lo) = Loop::attach(&pw) {
        // A raw restore onto a loop device over the passphrase file.
        let o = job("restore", &["--yes"], s(&pw), s(&img), &lo.dev);
        refused_for_the_passphrase_file(&o, "restore onto a loop device over it");
        // And the image's map file there.
        let o = job(
            "create",
            &["--encrypt", "--force", "--map", &lo.dev],
            s(&pw),
            s(&src),
            s(&dir.p("other.lbi")),
        );
        assert_exit(&o, 4);
        drop(lo);
    }
    assert_eq!(sha256(&pw), pw_sha, "the passphrase file changed");
    assert_eq!(sha256(&src), src_sha, "the source changed");
    assert_eq!(sha256(&img), img_sha, "the image changed");
    // The rule refuses only what touches the file: the same job elsewhere works.
    let o = job("copy", &[], s(&pw), s(&img), s(&dir.p("copy.lbi")));
    assert_exit(&o, 0);
}

/// An ext4 filesystem of 32 MiB in a file behind a loop device (which stands for a partition:
/// `DEVICE:/path` names a file on it), not mounted.
fn ext4_partition(dir: &TempDir) -> Option<Loop> {
    if !is_root() {
        eprintln!("skipping: needs root for loop devices and an ext4 mount");
        return None;
    }
    let fs = dir.p("part.ext4");
    ext4_file(&fs, 32);
    Loop::attach(&fs)
}

/// Mounts `dev` at `dir/m` for `f`, then unmounts it.
fn with_mounted<T>(dev: &str, dir: &TempDir, f: impl FnOnce(&Path) -> T) -> T {
    let mp = dir.p("m");
    std::fs::create_dir_all(&mp).unwrap();
    run(Command::new("mount").arg(dev).arg(&mp));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(mp.clone());
    f(&mp)
}

#[test]
fn a_passphrase_file_on_a_partition_is_kept_there() {
    let dir = TempDir::new("pwid-part");
    let (src, src_sha) = source(&dir);
    let Some(lo) = ext4_partition(&dir) else {
        return;
    };
    let dev = lo.dev.clone();
    // `loopN:/path`: the loop device by its kernel name, as a partition is named.
    let name = dev.trim_start_matches("/dev/").to_string();
    let shas = |dir: &TempDir| {
        with_mounted(&dev, dir, |m| {
            (
                sha256(&m.join("pw")),
                m.join("enc.lbi")
                    .exists()
                    .then(|| sha256(&m.join("enc.lbi"))),
            )
        })
    };
    with_mounted(&dev, &dir, |m| {
        std::fs::write(m.join("pw"), "correct horse battery staple\n").unwrap();
        std::fs::hard_link(m.join("pw"), m.join("pw-hard")).unwrap();
    });
    let (pw_sha, _) = shas(&dir);
    let pw_spec = format!("{name}:/pw");
    // An image beside it on the same partition: allowed.
    let img_spec = format!("{name}:/enc.lbi");
    let o = job("create", &["--encrypt"], &pw_spec, s(&src), &img_spec);
    assert_exit(&o, 0);
    let (_, img_sha) = shas(&dir);
    assert!(img_sha.is_some(), "no image was written beside the file");
    // A copy of it elsewhere (a copy within one partition is refused anyway).
    let plain = dir.p("plain.lbi");
    let o = job("copy", &[], &pw_spec, &img_spec, s(&plain));
    assert_exit(&o, 0);
    // Onto the file itself, or a hard link of it, on that partition: refused.
    for (cmd, target) in [
        ("create", format!("{name}:/pw")),
        ("create", format!("{name}:/pw-hard")),
        ("copy", format!("{name}:/pw")),
        ("copy", format!("{name}:/pw-hard")),
    ] {
        let o = match cmd {
            "create" => job(
                "create",
                &["--encrypt", "--force"],
                &pw_spec,
                s(&src),
                &target,
            ),
            _ => job("copy", &["--force"], &pw_spec, s(&plain), &target),
        };
        refused_for_the_passphrase_file(&o, &format!("{cmd} onto {target}"));
        assert_eq!(
            shas(&dir),
            (pw_sha.clone(), img_sha.clone()),
            "{cmd} onto {target}"
        );
    }
    // With the partition mounted here, a map file that is a hard link to it (the image
    // beside it, on that same partition).
    with_mounted(&dev, &dir, |m| {
        let o = job(
            "create",
            &["--encrypt", "--force", "--map", s(&m.join("pw-hard"))],
            &pw_spec,
            s(&src),
            &format!("{name}:/other.lbi"),
        );
        refused_for_the_passphrase_file(&o, "a map file over it");
        assert!(!m.join("other.lbi").exists(), "an image was written");
    });
    // A raw write to the partition holding it: a restore onto the device.
    let o = job("restore", &["--yes"], &pw_spec, s(&plain), &dev);
    refused_for_the_passphrase_file(&o, "restore onto the partition");
    assert_eq!(
        shas(&dir),
        (pw_sha, img_sha),
        "the partition's files changed"
    );
    assert_eq!(sha256(&src), src_sha, "the source changed");
}
