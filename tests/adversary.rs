//! The adversary's findings: ways a hostile or confused user got Lifeboat to write a source,
//! destroy an image or replace a device node although the storage-identity rule was in place —
//! names the job writes that were never checked (the map's temporary file, split volumes, the
//! `.partial` names, stale volumes of an older image), links and dangling symlinks behind those
//! names, and loop devices whose backing node is gone. Each test failed on the commit before its
//! fix; each checks the sha256 of every source and image before and after. Tests that need root,
//! loop devices or mounts print why and skip where those are missing. `LIFEBOAT_TEST_BIN` runs
//! them against another binary (see `common::lifeboat_cmd`).
mod common;

use common::lifeboat as lb;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The sha256 of each path (after `sync`), or "missing".
fn shas(paths: &[&Path]) -> Vec<String> {
    run(&mut Command::new("sync"));
    paths
        .iter()
        .map(|p| {
            if p.exists() {
                sha256(p)
            } else {
                "missing".into()
            }
        })
        .collect()
}

fn root_or_skip() -> bool {
    if !is_root() {
        eprintln!("skipping: needs root (loop devices, mounts, device nodes)");
        return false;
    }
    true
}

#[track_caller]
fn ok_or_refused(o: &Output) {
    let c = o.status.code();
    assert!(
        c == Some(0) || c == Some(4),
        "expected done (0) or refused (4), got {:?}: {}",
        c,
        stderr(o)
    );
}

/// The map is saved through a temporary file next to it. That name was never checked and was
/// opened with `File::create`: a hard link (or symlink) of the source there truncated the source
/// and wrote the map into it, exit 0.
#[test]
fn the_maps_temporary_name_linked_to_the_source() {
    for how in ["hard link", "symlink"] {
        let dir = TempDir::new("adv-maptmp");
        let src = dir.p("S");
        data_file(&src, 4 * MIB, 1);
        let t = dir.p("T");
        zero_file(&t, 4 * MIB);
        let m = dir.p("M");
        let tmp = dir.p("M.lifeboat-tmp");
        if how == "hard link" {
            std::fs::hard_link(&src, &tmp).unwrap();
        } else {
            std::os::unix::fs::symlink(&src, &tmp).unwrap();
        }
        let before = shas(&[&src]);
        let o = lb(&["clone", s(&src), s(&t), "--yes", "--map", s(&m)]);
        ok_or_refused(&o);
        assert_eq!(shas(&[&src]), before, "the source changed ({how})");
        if o.status.code() == Some(0) {
            assert_eq!(std::fs::read(&t).unwrap(), std::fs::read(&src).unwrap());
            assert!(m.is_file(), "the map was not saved");
        }
    }
}

/// Split volumes 2.. were created with `O_CREAT|O_TRUNC` under names nobody checked: a hard
/// link of the source named `X.lbi.002.partial` truncated the source.
#[test]
fn a_split_volumes_partial_name_linked_to_the_source() {
    for how in ["hard link", "symlink"] {
        let dir = TempDir::new("adv-volpart");
        let src = dir.p("S");
        data_file(&src, 12 * MIB, 2);
        let x = dir.p("X.lbi");
        let v2 = dir.p("X.lbi.002.partial");
        if how == "hard link" {
            std::fs::hard_link(&src, &v2).unwrap();
        } else {
            std::os::unix::fs::symlink(&src, &v2).unwrap();
        }
        let before = shas(&[&src]);
        let o = lb(&["image", "create", s(&src), s(&x), "--split", "4M"]);
        ok_or_refused(&o);
        assert_eq!(shas(&[&src]), before, "the source changed ({how})");
        if o.status.code() == Some(0) {
            assert_exit(&lb(&["image", "verify", s(&x)]), 0);
        }
    }
}

/// `X.partial` (image create) or `OUT.partial` (export) that is a hard link of another image
/// was truncated and overwritten: that image was destroyed, exit 0.
#[test]
fn a_partial_name_hard_linked_to_another_image() {
    let dir = TempDir::new("adv-partlink");
    let src = dir.p("S");
    data_file(&src, 4 * MIB, 3);
    let img = dir.p("img.lbi");
    assert_exit(&lb(&["image", "create", s(&src), s(&img)]), 0);
    let other = dir.p("other.lbi");
    std::fs::copy(&img, &other).unwrap();
    let keep: [&Path; 3] = [&src, &img, &other];
    let before = shas(&keep);
    std::fs::hard_link(&other, dir.p("N.lbi.partial")).unwrap();
    let o = lb(&["image", "create", s(&src), s(&dir.p("N.lbi"))]);
    ok_or_refused(&o);
    assert_eq!(shas(&keep), before, "image create through N.lbi.partial");
    std::fs::hard_link(&other, dir.p("out.raw.partial")).unwrap();
    let o = lb(&["image", "export", s(&img), s(&dir.p("out.raw"))]);
    ok_or_refused(&o);
    assert_eq!(shas(&keep), before, "image export through out.raw.partial");
    assert_exit(&lb(&["image", "verify", s(&other)]), 0);
}

/// After writing image X, files named X.002, X.003 … were deleted as "stale volumes of an
/// older image" whatever they were, and split volumes were renamed over whatever had their
/// name: the parent image (named Q.002 for the new Q), an unrelated image R.002, the source
/// itself (Y.lbi.002 imaged into Y.lbi) and a device node were destroyed, exit 0.
#[test]
fn files_named_like_volumes_are_not_removed_or_replaced() {
    let dir = TempDir::new("adv-stale");
    let src = dir.p("S");
    data_file(&src, 12 * MIB, 4);
    let img = dir.p("img.lbi");
    assert_exit(&lb(&["image", "create", s(&src), s(&img)]), 0);

    // The parent, named like the new image's second volume.
    let q2 = dir.p("Q.002");
    std::fs::copy(&img, &q2).unwrap();
    let before = shas(&[&src, &q2]);
    let q = dir.p("Q");
    let o = lb(&["image", "create", s(&src), s(&q), "--parent", s(&q2)]);
    ok_or_refused(&o);
    assert_eq!(shas(&[&src, &q2]), before, "the parent Q.002");
    if o.status.code() == Some(0) {
        assert_exit(&lb(&["image", "verify", s(&q)]), 0);
    }

    // An unrelated image named R.002; and the same with --split, where volume 2 is renamed.
    for split in [None, Some("4M")] {
        let r2 = dir.p("R.002");
        std::fs::copy(&img, &r2).unwrap();
        let before = shas(&[&src, &r2]);
        let r = dir.p("R");
        let _ = std::fs::remove_file(&r);
        let mut args = vec!["image", "create", s(&src), s(&r)];
        args.extend(split.iter().flat_map(|x| ["--split", *x]));
        ok_or_refused(&lb(&args));
        assert_eq!(shas(&[&src, &r2]), before, "R.002 (split {split:?})");
        assert_exit(&lb(&["image", "verify", s(&r2)]), 0);
    }

    // The source itself named like a volume of the new image.
    let y2 = dir.p("Y.lbi.002");
    std::fs::copy(&src, &y2).unwrap();
    let before = shas(&[&y2]);
    ok_or_refused(&lb(&["image", "create", s(&y2), s(&dir.p("Y.lbi"))]));
    assert_eq!(shas(&[&y2]), before, "the source Y.lbi.002");

    // A device node where a split volume goes.
    if root_or_skip() {
        let x2 = dir.p("X.lbi.002");
        run(Command::new("mknod").arg(&x2).args(["c", "1", "3"]));
        let o = lb(&[
            "image",
            "create",
            s(&src),
            s(&dir.p("X.lbi")),
            "--split",
            "4M",
        ]);
        ok_or_refused(&o);
        use std::os::unix::fs::FileTypeExt;
        let ft = std::fs::symlink_metadata(&x2).unwrap().file_type();
        assert!(ft.is_char_device(), "X.lbi.002 is no longer a device node");
    }
}

/// A dangling symlink `D.lbi.partial -> m/inside.lbi`, m the source's own mounted filesystem:
/// it resolved as "a new file next to the symlink" but the open followed it and created the
/// image inside the source.
#[test]
fn a_dangling_partial_symlink_into_the_sources_filesystem() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("adv-dangle");
    let sf = source_with_ext4(&dir);
    let Some(m) = Mounted::ext4_in(&sf, &dir, 4 * MIB, 32 * MIB) else {
        return;
    };
    let inside = m.mp.join("inside.lbi");
    std::os::unix::fs::symlink(&inside, dir.p("D.lbi.partial")).unwrap();
    std::os::unix::fs::symlink(m.mp.join("inside.raw"), dir.p("E.raw.partial")).unwrap();
    let before = shas(&[&sf]);
    let o = lb(&["image", "create", s(&sf), s(&dir.p("D.lbi"))]);
    ok_or_refused(&o);
    assert!(!inside.exists(), "the image was written inside the source");
    assert_eq!(shas(&[&sf]), before, "the source changed");
    // (Unmounting writes the filesystem's clean state, so the comparison is made before.)
    drop(m);
}

/// A loop device B over a device node of loop A (A over the source's file) whose node was then
/// deleted: sysfs says "… (deleted)", so B was taken for a loop over some file and writing B
/// (which writes the source's file through A) was allowed.
#[test]
fn a_loop_over_a_deleted_node_of_a_loop_over_the_source() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("adv-delnode");
    let f = dir.p("F");
    data_file(&f, 8 * MIB, 6);
    let Some(a) = Loop::attach(&f) else { return };
    let node = dir.p("nodeA");
    run(Command::new("cp").arg("-a").arg(&a.dev).arg(&node));
    let Some(b) = Loop::from_offset(&node, MIB) else {
        return;
    };
    std::fs::remove_file(&node).unwrap();
    let Some(c) = Loop::partition(&f, 0, 4 * MIB) else {
        return;
    };
    let before = shas(&[&f]);
    let o = lb(&["clone", &c.dev, &b.dev, "--yes"]);
    assert_exit(&o, 4);
    assert!(
        stderr(&o).contains("would overwrite the source"),
        "{}",
        stderr(&o)
    );
    assert_eq!(shas(&[&f]), before, "the source's file changed");
    // The same onto the file itself named through A.
    let o = lb(&["clone", s(&f), &b.dev, "--yes"]);
    assert_exit(&o, 4);
    assert!(
        stderr(&o).contains("would overwrite the source"),
        "{}",
        stderr(&o)
    );
    assert_eq!(shas(&[&f]), before, "the source's file changed");
}

/// An overlay whose upper directory is on the source's own mounted filesystem: a file on the
/// overlay has a virtual device number (one per layer), so it resolved to nothing and an image
/// or a clone written there went into the source.
#[test]
fn a_target_on_an_overlay_whose_upper_layer_is_in_the_source() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("adv-overlay");
    let sf = source_with_ext4(&dir);
    let Some(m) = Mounted::ext4_in(&sf, &dir, 4 * MIB, 32 * MIB) else {
        return;
    };
    for d in ["upper", "work"] {
        std::fs::create_dir(m.mp.join(d)).unwrap();
    }
    let up = m.mp.join("upper/u.img");
    data_file(&up, 4 * MIB, 8);
    let before_u = shas(&[&up]); // (the first read sets its atime: in the source, so before)
    let (lower, o) = (dir.p("lower"), dir.p("o"));
    std::fs::create_dir(&lower).unwrap();
    std::fs::create_dir(&o).unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        s(&lower),
        s(&m.mp.join("upper")),
        s(&m.mp.join("work"))
    );
    let mo = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&o)
        .output()
        .unwrap();
    if !mo.status.success() {
        eprintln!("skipping: cannot mount an overlay: {}", stderr(&mo));
        return;
    }
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _uo = Umount(o.clone());
    let t = o.join("t.img");
    zero_file(&t, 40 * MIB);
    let before = shas(&[&sf]);
    let o1 = lb(&["clone", s(&sf), s(&t), "--yes", "--no-verify"]);
    assert_exit(&o1, 4);
    assert!(stderr(&o1).contains("overlay"), "{}", stderr(&o1));
    assert_eq!(shas(&[&sf]), before, "clone onto the overlay");
    let o2 = lb(&["image", "create", s(&sf), s(&o.join("x.lbi"))]);
    assert_exit(&o2, 4);
    assert_eq!(shas(&[&sf]), before, "image create onto the overlay");
    // A file of the upper layer is the same file as its name on the overlay.
    let o3 = lb(&["clone", s(&up), s(&o.join("u.img")), "--yes"]);
    assert_exit(&o3, 4);
    assert_eq!(
        shas(&[&sf]),
        before,
        "clone of the upper file onto its overlay name"
    );
    assert_eq!(shas(&[&up]), before_u);
    // The control: another source may be imaged onto the overlay.
    let q = dir.p("Q");
    data_file(&q, MIB, 7);
    assert_exit(&lb(&["image", "create", s(&q), s(&o.join("q.lbi"))]), 0);
}

/// `image create X.lbi.002 X.lbi --force`: the source is a volume of the image being replaced,
/// and replacing an image removes (or renames over) its old volumes — the source was deleted,
/// exit 0. The same for a parent that is such a volume's image.
#[test]
fn the_source_is_a_volume_of_the_image_being_replaced() {
    let dir = TempDir::new("adv-oldvol");
    let q = dir.p("Q");
    data_file(&q, 12 * MIB, 9);
    let x = dir.p("X.lbi");
    assert_exit(&lb(&["image", "create", s(&q), s(&x), "--split", "4M"]), 0);
    let v2 = dir.p("X.lbi.002");
    let v3 = dir.p("X.lbi.003");
    assert!(v2.is_file() && v3.is_file(), "expected at least 3 volumes");
    let keep: [&Path; 3] = [&x, &v2, &v3];
    let before = shas(&keep);
    for split in [None, Some("4M")] {
        let mut args = vec!["image", "create", s(&v2), s(&x), "--force"];
        args.extend(split.iter().flat_map(|x| ["--split", *x]));
        let o = lb(&args);
        assert_exit(&o, 4);
        assert!(
            stderr(&o).contains("the image being replaced"),
            "{}",
            stderr(&o)
        );
        assert_eq!(shas(&keep), before, "split {split:?}");
    }
    // The control: replacing the image from another source removes its old volumes.
    assert_exit(&lb(&["image", "create", s(&q), s(&x), "--force"]), 0);
    assert!(!v2.exists() && !v3.exists(), "stale volumes were left");
    assert_exit(&lb(&["image", "verify", s(&x)]), 0);
}

/// `image create SRC new.lbi --parent label=X:/p.lbi` where partition X is part of the source:
/// the source's partition was mounted (read-only) to look for the parent. A source is never
/// mounted; refused before anything is mounted.
#[test]
fn a_parent_on_the_sources_own_partition_is_not_mounted() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("adv-parentpart");
    let sf = source_with_ext4(&dir);
    let lab = format!("ADVP{}", std::process::id() % 100_000);
    run(Command::new("e2label")
        .arg(format!("{}?offset={}", s(&sf), 4 * MIB))
        .arg(&lab));
    let Some(a) = Loop::attach(&sf) else { return };
    let Some(_p) = Loop::partition(&sf, 4 * MIB, 32 * MIB) else {
        return;
    };
    let before = shas(&[&sf]);
    let out = dir.p("new.lbi");
    let o = lb(&[
        "image",
        "create",
        &a.dev,
        s(&out),
        "--parent",
        &format!("label={lab}:/p.lbi"),
    ]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("never mounted"), "{}", stderr(&o));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&_p.dev),
        "the source's partition is mounted"
    );
    assert_eq!(shas(&[&sf]), before);
}

/// The map is saved many times during a clone. Its directory named through a symlink that is
/// switched (a moment after the start) to a directory in the source's own mounted filesystem:
/// the saves followed the new symlink and wrote the map into the source. A race, but with the
/// whole job as its window; the map is now always saved under the name that was checked.
#[test]
fn the_maps_directory_switched_during_the_job() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("adv-mapswap");
    let sf = source_with_ext4(&dir);
    let Some(m) = Mounted::ext4_in(&sf, &dir, 4 * MIB, 32 * MIB) else {
        return;
    };
    let safe = dir.p("safe");
    std::fs::create_dir(&safe).unwrap();
    let md = dir.p("md");
    std::os::unix::fs::symlink(&safe, &md).unwrap();
    let t = dir.p("T");
    zero_file(&t, 40 * MIB);
    let before = shas(&[&sf]);
    let child = lifeboat_cmd()
        .args(["clone", s(&sf), s(&t), "--yes", "--map"])
        .arg(md.join("M"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(30));
    let tmp = dir.p("md.new");
    std::os::unix::fs::symlink(&m.mp, &tmp).unwrap();
    std::fs::rename(&tmp, &md).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(shas(&[&sf]), before, "the source changed: {}", stderr(&o));
    // Refused when the switch came before the check (a slow start), else done with the map
    // where it was checked.
    ok_or_refused(&o);
    if o.status.code() == Some(0) {
        assert!(
            safe.join("M").is_file(),
            "the map is not where it was checked"
        );
    }
}

/// As for the map: split volumes are opened all along the job and renamed at its end. The image's
/// directory named through a symlink switched a moment after the start to a directory in the
/// source's own filesystem sent volumes 2.. into the source.
#[test]
fn the_images_directory_switched_during_a_split_create() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("adv-volswap");
    // 40 MiB of data (about ten 4 MiB volumes), then an ext4 filesystem.
    let sf = dir.p("S");
    data_file(&sf, 40 * MIB, 10);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&sf)
        .unwrap()
        .set_len(72 * MIB)
        .unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-E"])
        .arg(format!(
            "offset={},lazy_itable_init=0,lazy_journal_init=0",
            40 * MIB
        ))
        .arg(&sf)
        .arg(format!("{}k", 32 * 1024)));
    let Some(m) = Mounted::ext4_in(&sf, &dir, 40 * MIB, 32 * MIB) else {
        return;
    };
    let safe = dir.p("safe");
    std::fs::create_dir(&safe).unwrap();
    let md = dir.p("md");
    std::os::unix::fs::symlink(&safe, &md).unwrap();
    let before = shas(&[&sf]);
    let child = lifeboat_cmd()
        .args(["image", "create", s(&sf)])
        .arg(md.join("X.lbi"))
        .args(["--split", "4M"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let tmp = dir.p("md.new");
    std::os::unix::fs::symlink(&m.mp, &tmp).unwrap();
    std::fs::rename(&tmp, &md).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(shas(&[&sf]), before, "the source changed: {}", stderr(&o));
    ok_or_refused(&o);
    if o.status.code() == Some(0) {
        assert_exit(&lb(&["image", "verify", s(&safe.join("X.lbi"))]), 0);
    }
}

/// A clone target named through a symlink flipped all the time between a harmless file and the
/// source's file: the path was checked, then opened again by name, so some runs wrote the
/// source. The target is now pinned when checked and that object is opened (a race; many runs).
#[test]
fn a_target_symlink_flipped_between_check_and_open() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("adv-flip");
    let sf = dir.p("S");
    data_file(&sf, 8 * MIB, 11);
    let t = dir.p("T");
    zero_file(&t, 7 * MIB);
    // The source: bytes 1 MiB.. of S (so a copy onto S itself would change it).
    let Some(c) = Loop::from_offset(&sf, MIB) else {
        return;
    };
    let link = dir.p("tl");
    std::os::unix::fs::symlink(&t, &link).unwrap();
    let before = shas(&[&sf]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, sf, t, link, tmp) = (
            stop.clone(),
            sf.clone(),
            t.clone(),
            link.clone(),
            dir.p("tl.n"),
        );
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for to in [&sf, &t] {
                    let _ = std::fs::remove_file(&tmp);
                    std::os::unix::fs::symlink(to, &tmp).unwrap();
                    std::fs::rename(&tmp, &link).unwrap();
                }
            }
        })
    };
    for _ in 0..30 {
        let o = lb(&["clone", &c.dev, s(&link), "--yes", "--no-verify"]);
        ok_or_refused(&o);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    assert_eq!(shas(&[&sf]), before, "the source changed");
}
