//! The free-space rule of `image create` and `image copy` on a small ext4 filesystem (a loop
//! device, mounted): a full image that may not fit is refused before anything is written (exit
//! 4, both figures and `--ignore-free-space` in the message, `free_bytes` / `needed_bytes` in
//! the JSON, nothing new in the directory); with the flag the job runs, fills the filesystem and
//! ends as a full target always did (exit 1, `target_full`, the `.partial` and journal kept); a
//! rerun without the flag counts what that `.partial` holds and is still refused, touching
//! nothing; an image that fits is written. `df` is the referee of the free figure. A copy that
//! does not fit is refused the same way. The console's figure of an unmounted ext4 (its bitmaps
//! and reserves) equals the CLI's of it mounted (statvfs). Needs root and loop devices (skips with a message
//! otherwise); every test checks the source's sha256 unchanged.
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A 32 MiB ext4 filesystem in a file, mounted (through a loop device) at `dir/m`.
fn small_ext4(dir: &TempDir) -> Option<Mounted> {
    if !root_or_skip() {
        return None;
    }
    Mounted::new_ext4(dir, 32)
}

/// A 48 MiB disk-image file without a filesystem Lifeboat maps (so every sector is read):
/// `random_mib` MiB of random data at 4 MiB, the rest zeros.
fn random_source(dir: &TempDir, random_mib: u32) -> PathBuf {
    let p = dir.p("src.img");
    zero_file(&p, 48 * MIB);
    run(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "seek=4", "conv=notrunc,fsync"])
        .arg(format!("count={random_mib}"))
        .arg(format!("of={}", s(&p)))
        .arg("status=none"));
    p
}

/// `df`'s figure of bytes available in the filesystem holding `dir`.
fn df_avail(dir: &Path) -> u64 {
    run(Command::new("df").args(["-B1", "--output=avail"]).arg(dir))
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The console reads an unmounted partition's free space from its own bitmaps and superblock,
/// the CLI by statvfs where the image goes: both figures go through one rule (ext's blocks
/// reserved for root do not count), so the same filesystem gets the same figure, which is
/// df's "Avail".
#[test]
fn the_console_and_the_cli_read_the_same_free_figure() {
    let dir = TempDir::new("space0");
    if !root_or_skip() {
        return;
    }
    let f = dir.p("store.img");
    ext4_file(&f, 32);
    let dev = lifeboat::io::Device::open(&f, lifeboat::io::Access::Read).unwrap();
    let room = lifeboat::image::space::room_of(&dev).unwrap();
    drop(dev);
    assert!(room.reserved > 0, "{room:?}");
    let console = room.for_image();
    let Some(m) = Mounted::ext4_in(&f, &dir, 0, 32 * MIB) else {
        return;
    };
    let cli = lifeboat::image::space::free_at(&m.mp).unwrap();
    assert_eq!(console, cli, "bitmaps {room:?} vs statvfs");
    assert_eq!(cli, df_avail(&m.mp));
}

#[test]
fn an_image_that_may_not_fit_is_refused_before_anything_is_written() {
    let dir = TempDir::new("space1");
    let Some(m) = small_ext4(&dir) else { return };
    let src = random_source(&dir, 40);
    let before = sha256(&src);
    let img = m.mp.join("full.lbi");

    // Refused: exit 4, both figures and the flag, nothing written.
    let o = lifeboat(&["image", "create", s(&src), s(&img), "--json"]);
    assert_exit(&o, 4);
    let j = json(&o);
    let free = j["free_bytes"].as_u64().unwrap();
    let need = j["needed_bytes"].as_u64().unwrap();
    // The bound of a 48 MiB disk read whole: 48 MiB + 64 bytes a chunk + 2 MiB.
    assert_eq!(need, 48 * MIB + 48 * 64 + 2 * MIB, "{j}");
    // statvfs's figure is df's (nothing else writes to this filesystem).
    assert_eq!(free, df_avail(&m.mp), "{j}");
    assert!(free < need);
    let msg = j["error"]["message"].as_str().unwrap();
    for w in [
        format!("{free} bytes"),
        format!("{need} bytes"),
        "--ignore-free-space".into(),
        "nothing was written".into(),
    ] {
        assert!(msg.contains(&w), "{w:?} not in {msg}");
    }
    assert!(names(&m.mp).is_empty(), "{:?}", names(&m.mp));

    // With the flag: the job runs until the filesystem is full and stops as before.
    let o = lifeboat(&[
        "image",
        "create",
        s(&src),
        s(&img),
        "--ignore-free-space",
        "--json",
    ]);
    assert_exit(&o, 1);
    let j = json(&o);
    assert_eq!(j["target_full"], true, "{j}");
    assert!(stderr(&o).contains("target full"), "{}", stderr(&o));
    assert_eq!(
        names(&m.mp),
        ["full.lbi.partial", "full.lbi.partial.journal"],
        "the unfinished image and its journal are kept"
    );
    let partial = m.mp.join("full.lbi.partial");
    let partial_sha = sha256(&partial);
    let o = lifeboat(&["image", "info", s(&img)]);
    assert_exit(&o, 5);
    assert!(stderr(&o).contains("INCOMPLETE"), "{}", stderr(&o));

    // The same command without the flag: what the .partial holds is counted, the rest still
    // does not fit; refused, the unfinished image untouched.
    let o = lifeboat(&["image", "create", s(&src), s(&img), "--json"]);
    assert_exit(&o, 4);
    let j = json(&o);
    let held = std::fs::metadata(&partial).unwrap().len();
    assert_eq!(j["needed_bytes"].as_u64().unwrap(), need - held, "{j}");
    assert!(j["error"]["message"]
        .as_str()
        .unwrap()
        .contains("the rest of the image"));
    assert_eq!(
        sha256(&partial),
        partial_sha,
        "the refused run changed the .partial"
    );
    assert_eq!(
        names(&m.mp),
        ["full.lbi.partial", "full.lbi.partial.journal"]
    );
    assert_eq!(sha256(&src), before, "the source changed");
}

#[test]
fn an_image_that_fits_is_written_and_a_copy_that_does_not_is_refused() {
    let dir = TempDir::new("space2");
    let Some(m) = small_ext4(&dir) else { return };
    // An ext4 source with 4 MiB in one file: its bound is far below the 32 MiB store.
    let files = dir.p("files");
    std::fs::create_dir_all(&files).unwrap();
    run(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=4", "status=none"])
        .arg(format!("of={}", s(&files.join("data.bin")))));
    let src = dir.p("ext4src.img");
    zero_file(&src, 48 * MIB);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&files)
        .arg(&src));
    let before = sha256(&src);
    let img = m.mp.join("small.lbi");
    let o = lifeboat(&["image", "create", s(&src), s(&img), "--json"]);
    assert_exit(&o, 0);
    assert_eq!(json(&o)["verified"], true);
    assert_eq!(sha256(&src), before, "the source changed");

    // A copy of a 40 MiB image of random data into the same filesystem: refused, nothing there.
    let rnd = random_source(&dir, 40);
    let rnd_before = sha256(&rnd);
    let big = dir.p("big.lbi");
    let o = lifeboat(&["image", "create", s(&rnd), s(&big), "--json"]);
    assert_exit(&o, 0);
    let big_len = std::fs::metadata(&big).unwrap().len();
    let into = m.mp.join("pc");
    std::fs::create_dir_all(&into).unwrap();
    let o = lifeboat(&[
        "image",
        "copy",
        s(&big),
        &format!("{}/", s(&into)),
        "--json",
    ]);
    assert_exit(&o, 4);
    let j = json(&o);
    assert_eq!(j["needed_bytes"].as_u64(), Some(big_len), "{j}");
    assert_eq!(j["free_bytes"].as_u64(), Some(df_avail(&into)), "{j}");
    assert!(names(&into).is_empty(), "{:?}", names(&into));
    // With the flag the copy runs out of room and removes its unfinished part.
    let o = lifeboat(&[
        "image",
        "copy",
        s(&big),
        &format!("{}/", s(&into)),
        "--ignore-free-space",
        "--json",
    ]);
    assert_exit(&o, 1);
    assert!(names(&into).is_empty(), "{:?}", names(&into));
    assert_eq!(names(&m.mp), ["pc", "small.lbi"]);
    let o = lifeboat(&["image", "verify", s(&img)]);
    assert_exit(&o, 0);
    assert_eq!(sha256(&rnd), rnd_before, "the source changed");
}
