//! The adversary on outputs that alias a source through a filesystem the storage-identity rule
//! did not see into: btrfs (its files carry a device number of their own per subvolume, the top
//! one too, which the mount table never shows; one filesystem may span several devices) and FUSE
//! filesystems mounted straight from an image file (`ntfs-3g FILE DIR`: the mount's source is a
//! regular file, not a block device). An image written there is written into the source. Each
//! job must be refused (exit 4) before anything is created, the source unchanged (sha256). Needs
//! root, loop devices, a btrfs-capable kernel and `mkfs.btrfs` / `mkntfs` + `ntfs-3g` (each case
//! skips with a message where its tools are missing). Decided on exit codes and JSON fields,
//! never message text.
mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: {tool} is not installed");
    }
    ok
}

/// `mount OPTS DEV DIR`; unmounted on drop. `None` (with a message) where the kernel refuses.
struct Mount(std::path::PathBuf);
impl Mount {
    fn new(args: &[&str], mp: &Path) -> Option<Mount> {
        std::fs::create_dir_all(mp).unwrap();
        let o = Command::new("mount").args(args).arg(mp).output().unwrap();
        if !o.status.success() {
            eprintln!(
                "skipping: mount {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Some(Mount(mp.to_path_buf()))
    }
}
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn synced_sha(p: &Path) -> String {
    run(&mut Command::new("sync"));
    sha256(p)
}

/// `image create SRC OUT` (with `--ignore-free-space`, so only the identity rule can refuse):
/// exit 4, not for room, and OUT not created.
#[track_caller]
fn create_refused(src: &str, out: &Path) {
    let o = lifeboat(&[
        "image",
        "create",
        src,
        s(out),
        "--ignore-free-space",
        "--no-verify",
        "--json",
    ]);
    assert_exit(&o, 4);
    let j = json(&o);
    assert!(j.get("free_bytes").is_none(), "refused for room: {j}");
    assert!(!out.exists(), "{} was created", out.display());
    let partial = out.with_extension("lbi.partial");
    assert!(!partial.exists(), "{} was created", partial.display());
}

/// A btrfs filesystem in the source file, mounted through a loop device: an image written into
/// it (its top subvolume or a nested one), with the source named as its file or as the loop
/// device, was written into the source — btrfs's per-subvolume device numbers are not in the
/// mount table, so the resolver found no storage under the output at all. A clone onto a loop
/// device over a file in it likewise.
#[test]
fn an_output_on_btrfs_inside_the_source() {
    if !root_or_skip() || !have("mkfs.btrfs") {
        return;
    }
    let dir = TempDir::new("adv-al-btrfs");
    let sf = dir.p("src.img");
    zero_file(&sf, 128 * MIB);
    run(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&sf));
    let Some(lp) = Loop::attach(&sf) else { return };
    let mp = dir.p("m");
    let Some(m) = Mount::new(&["-o", "noatime", &lp.dev], &mp) else {
        return;
    };
    run(Command::new("btrfs")
        .args(["-q", "subvolume", "create"])
        .arg(mp.join("sub")));
    // A clone target: a loop device over a file in the nested subvolume (on main the clone
    // completed, writing the source through its own filesystem).
    let lf = mp.join("sub/target.img");
    std::fs::File::create(&lf)
        .unwrap()
        .set_len(160 * MIB)
        .unwrap();
    let Some(tl) = Loop::attach(&lf) else { return };
    let before = synced_sha(&sf);
    for src in [s(&sf), lp.dev.as_str()] {
        for out in [mp.join("top.lbi"), mp.join("sub/nested.lbi")] {
            create_refused(src, &out);
        }
        assert_exit(&lifeboat(&["clone", src, &tl.dev, "--yes"]), 4);
    }
    drop(tl);
    // (Before unmounting: unmounting may write the filesystem's state.)
    assert_eq!(synced_sha(&sf), before, "the source changed");
    drop(m);
    drop(lp);
}

/// A btrfs filesystem over two devices (RAID1), mounted by the first: an image written into it
/// is written onto the second too, so imaging the second device into it must be refused.
#[test]
fn an_output_on_a_btrfs_that_also_spans_the_source() {
    if !root_or_skip() || !have("mkfs.btrfs") {
        return;
    }
    let dir = TempDir::new("adv-al-btrfs2");
    let (fa, fb) = (dir.p("a.img"), dir.p("b.img"));
    zero_file(&fa, 128 * MIB);
    zero_file(&fb, 128 * MIB);
    let (Some(a), Some(b)) = (Loop::attach(&fa), Loop::attach(&fb)) else {
        return;
    };
    run(Command::new("mkfs.btrfs").args(["-q", "-f", "-d", "raid1", "-m", "raid1", &a.dev, &b.dev]));
    let mp = dir.p("m");
    let Some(m) = Mount::new(&["-o", "noatime", &a.dev], &mp) else {
        return;
    };
    let before = synced_sha(&fb);
    create_refused(&b.dev, &mp.join("x.lbi"));
    create_refused(s(&fb), &mp.join("y.lbi"));
    assert_eq!(synced_sha(&fb), before, "the source changed");
    drop(m);
    drop((a, b));
}

/// `ntfs-3g SRC.img DIR` mounts an NTFS filesystem straight from the source file (a FUSE mount
/// whose source is that file, no loop device): an image written into DIR is written into the
/// source file.
#[test]
fn an_output_on_a_fuse_filesystem_mounted_from_the_source_file() {
    if !root_or_skip() || !have("mkntfs") || !have("ntfs-3g") {
        return;
    }
    let dir = TempDir::new("adv-al-fuse");
    let sf = dir.p("src.img");
    zero_file(&sf, 32 * MIB);
    run(Command::new("mkntfs").args(["-q", "-F", "-f"]).arg(&sf));
    let mp = dir.p("m");
    std::fs::create_dir(&mp).unwrap();
    let o = Command::new("ntfs-3g").arg(&sf).arg(&mp).output().unwrap();
    if !o.status.success() {
        eprintln!("skipping: ntfs-3g: {}", String::from_utf8_lossy(&o.stderr));
        return;
    }
    let m = Mount(mp.clone());
    let before = synced_sha(&sf);
    create_refused(s(&sf), &mp.join("x.lbi"));
    // Through a symlink to the source and a loop device over it: the same file.
    let link = dir.p("link.img");
    std::os::unix::fs::symlink(&sf, &link).unwrap();
    create_refused(s(&link), &mp.join("y.lbi"));
    if let Some(lp) = Loop::attach_with(
        &sf,
        LoopOpts {
            read_only: true,
            ..Default::default()
        },
    ) {
        create_refused(&lp.dev, &mp.join("z.lbi"));
    }
    assert_eq!(synced_sha(&sf), before, "the source changed");
    drop(m);
}

/// An output named by a symbolic link: the finished file was renamed over the name, replacing
/// the link itself — `image export IMG /dev/stdout --force` replaced `/dev/stdout` in `/dev` with
/// a file of the disk's size — and a dangling link was replaced even without `--force`. Export,
/// create and copy must refuse (exit 4) and leave the links, the files they point to, the
/// source and the image as they were.
#[test]
fn an_output_named_by_a_symlink_is_refused_not_replaced() {
    use std::os::unix::fs::symlink;
    let dir = TempDir::new("adv-al-link");
    let (src, img) = imaged_data_file(&dir, "src.raw", 4 * MIB, 9, "i.lbi");
    let (src_sha, img_sha) = (sha256(&src), sha256(&img));
    let real = dir.p("real");
    std::fs::write(&real, b"keep me").unwrap();
    let link = dir.p("link");
    symlink(&real, &link).unwrap();
    let dangling = dir.p("dangling");
    let nothere = dir.p("nothere");
    symlink(&nothere, &dangling).unwrap();
    // As /dev/stdout is: a link to this process's standard output, here a file.
    let stdout_link = dir.p("stdout");
    symlink("/proc/self/fd/1", &stdout_link).unwrap();
    let out_file = dir.p("out.txt");
    let check = |args: &[&str]| {
        let o = lifeboat_cmd()
            .args(args)
            .stdout(std::fs::File::create(&out_file).unwrap())
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(4), "{args:?}: {}", stderr(&o));
        for (l, to) in [
            (&link, real.as_path()),
            (&dangling, nothere.as_path()),
            (&stdout_link, Path::new("/proc/self/fd/1")),
        ] {
            let md = std::fs::symlink_metadata(l).unwrap();
            assert!(
                md.file_type().is_symlink(),
                "{args:?} replaced {}",
                l.display()
            );
            assert_eq!(std::fs::read_link(l).unwrap(), to);
        }
        assert_eq!(std::fs::read(&real).unwrap(), b"keep me", "{args:?}");
        assert!(!nothere.exists(), "{args:?} created the link's target");
        assert_eq!(std::fs::metadata(&out_file).unwrap().len(), 0, "{args:?}");
    };
    for out in [&link, &dangling, &stdout_link] {
        check(&["image", "export", s(&img), s(out), "--force"]);
        check(&["image", "create", s(&src), s(out), "--force", "--no-verify"]);
        check(&["image", "copy", s(&img), s(out), "--force"]);
    }
    check(&["image", "export", s(&img), s(&dangling)]);
    check(&["image", "create", s(&src), s(&dangling), "--no-verify"]);
    assert_eq!(sha256(&src), src_sha, "the source changed");
    assert_eq!(sha256(&img), img_sha, "the image changed");
}

/// Bind mounts (held on main; no test covered them): the source file bind-mounted over another
/// file's name (as the source, a clone target, an output), and a directory of the source's own
/// mounted filesystem bind-mounted elsewhere (an output in it): each refused, exit 4, the
/// source unchanged.
#[test]
fn bind_mounts_of_the_source_and_of_its_filesystem() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("adv-al-bind");
    let sf = source_with_ext4(&dir);
    let Some(m) = Mounted::ext4_in(&sf, &dir, 4 * MIB, 32 * MIB) else {
        return;
    };
    run(Command::new("mount")
        .args(["-o", "remount,noatime"])
        .arg(&m.mp));
    std::fs::create_dir(m.mp.join("d")).unwrap();
    // The source's own directory, seen elsewhere.
    let Some(bd) = Mount::new(&["--bind", s(&m.mp.join("d"))], &dir.p("bd")) else {
        return;
    };
    // The source file, under another file's name.
    let other = dir.p("other.img");
    zero_file(&other, 4096);
    let o = Command::new("mount")
        .arg("--bind")
        .arg(&sf)
        .arg(&other)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let bf = Mount(other.clone());
    let before = synced_sha(&sf);
    create_refused(s(&sf), &bd.0.join("x.lbi"));
    create_refused(s(&other), &m.mp.join("y.lbi"));
    create_refused(s(&other), &bd.0.join("z.lbi"));
    let o = lifeboat(&[
        "image",
        "create",
        s(&sf),
        s(&other),
        "--force",
        "--no-verify",
    ]);
    assert_exit(&o, 4);
    assert_exit(&lifeboat(&["clone", s(&sf), s(&other), "--yes"]), 4);
    assert_exit(&lifeboat(&["clone", s(&other), s(&sf), "--yes"]), 4);
    assert_eq!(synced_sha(&sf), before, "the source changed");
    drop(bf);
    drop(bd);
    drop(m);
}
