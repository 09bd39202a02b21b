//! Adversarial tests for the commands that landed in session 3 (image serve, image mount,
//! image export to VM disks, NTFS stores): careless or hostile arguments are refused before
//! anything is attached, mounted or written.

mod common;

use common::*;

/// A small image of a file source, its source's sha256 checked unchanged.
fn small_image(dir: &TempDir) -> std::path::PathBuf {
    let src = dir.p("src.img");
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let before = sha256(&src);
    let img = dir.p("a.lbi");
    assert_exit(&lifeboat(&["image", "create", s(&src), s(&img)]), 0);
    assert_eq!(sha256(&src), before, "the source changed");
    img
}

#[test]
fn image_mount_refuses_a_directory_that_is_not_empty() {
    // Mounting over a directory that holds files hides them (and a user who typed the wrong
    // path, e.g. their home, sees it "emptied"): refused as a usage error before any helper.
    let dir = TempDir::new("adv3-mount");
    let img = small_image(&dir);
    let target = dir.p("full");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep.txt"), b"mine").unwrap();
    let o = lifeboat(&["image", "mount", s(&img), s(&target)]);
    assert_exit(&o, 2);
    let e = stderr(&o);
    assert!(e.contains("not empty"), "{e}");
    assert_eq!(std::fs::read(target.join("keep.txt")).unwrap(), b"mine");
}

#[test]
fn image_mount_refuses_a_mount_point_in_use() {
    // "/" is a mount point (and not empty); /proc's mount would be hidden too.
    let dir = TempDir::new("adv3-mount2");
    let img = small_image(&dir);
    for d in ["/", "/proc"] {
        let o = lifeboat(&["image", "mount", s(&img), d]);
        assert_exit(&o, 2);
    }
}
