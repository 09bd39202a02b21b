//! The adversary on a target filesystem that fills mid-write: a restore onto a file (with its
//! `--map` beside it) on a small ext4 filesystem that cannot hold the disk. The restore fails
//! (exit 1, the target reported incomplete), the image is unchanged, no half-written temporary
//! map is left, and the report says whether the map was saved (`map_saved`) — before, the
//! message said "the map records what is written" when its save had failed and there was no
//! map at all. Needs root, loop devices and ext4 mounts (skips with a message otherwise).
//! Decided on exit codes and JSON fields, never message text.
mod common;

use common::*;

#[test]
fn a_restore_that_fills_the_filesystem_of_its_target_and_map() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("adv-full-restore");
    let (_, img) = imaged_data_file(&dir, "src.raw", 40 * MIB, 5, "i.lbi");
    let img_sha = sha256(&img);
    let Some(m) = Mounted::new_ext4(&dir, 24) else {
        return;
    };
    let target = m.mp.join("T");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(40 * MIB)
        .unwrap();
    let map = m.mp.join("T.map");
    let o = lifeboat(&[
        "image",
        "restore",
        s(&img),
        s(&target),
        "--yes",
        "--json",
        "--map",
        s(&map),
    ]);
    assert_exit(&o, 1);
    let j = json(&o);
    assert_eq!(j["target_state"], "incomplete", "{j}");
    let saved = j["map_saved"]
        .as_bool()
        .unwrap_or_else(|| panic!("no map_saved in the report: {j}"));
    if saved {
        assert!(map.exists(), "map_saved but no map: {j}");
    }
    let left: Vec<String> = names(&m.mp)
        .into_iter()
        .filter(|n| n.contains("lifeboat-tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    assert_eq!(sha256(&img), img_sha, "the image changed");
}
