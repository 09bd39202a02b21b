//! The adversary's resumes: state left on disk by an interrupted job (restore's `--map`,
//! create's `.partial` and journal) that says more than is true — a range finished that the
//! target does not hold, a journal whose header is not its settings' — must never give a wrong
//! result silently: the job redoes the work (and the result is byte-identical) or fails. Each
//! test failed on the commit before its fix. `LIFEBOAT_TEST_BIN` runs them against another
//! binary.
mod common;

use common::*;
use std::path::Path;

/// Rewrites the restore map at `map` (GNU ddrescue's format, Lifeboat's comment lines kept) as
/// an interrupted restore's: phase `?`, `[0, done)` written (`+`), the rest of `size` not yet.
fn interrupted_map(map: &Path, done: u64, size: u64) {
    let text = std::fs::read_to_string(map).unwrap();
    let mut out = String::new();
    for l in text.lines() {
        if !l.starts_with('#') {
            break;
        }
        if l.starts_with("#      pos") {
            break;
        }
        out.push_str(l);
        out.push('\n');
    }
    assert!(
        out.contains("origin"),
        "the map names what it is of: {text}"
    );
    out.push_str(&format!("{done:#010x}     ?               1\n"));
    out.push_str("#      pos        size  status\n");
    out.push_str(&format!("0x00000000  {done:#010x}  +\n"));
    if done < size {
        out.push_str(&format!("{done:#010x}  {:#010x}  ?\n", size - done));
    }
    std::fs::write(map, out).unwrap();
}

/// Overwrites `target` in place (same inode, so the map's target identity still matches) with
/// other bytes.
fn scribble(target: &Path, len: u64, seed: u8) {
    let other = target.with_extension("other");
    data_file(&other, len, seed);
    run(std::process::Command::new("dd")
        .arg(format!("if={}", other.display()))
        .arg(format!("of={}", target.display()))
        .args(["bs=1M", "conv=notrunc,fsync", "status=none"]));
    std::fs::remove_file(other).unwrap();
}

/// An interrupted restore's map says the first half of the target is written, but the target
/// was overwritten since (another restore, another tool — the map's identity check cannot
/// tell: same file, same size). Before, the resumed restore skipped that half, reported
/// success with the media hash "verified" (from the index hashes of chunks it never looked
/// at), and left a target that is not the image. Now the chunks the map has as written are
/// read back and checked against their index hashes: those that differ are restored again,
/// and the target equals the source. A target that does hold them is not written again.
#[test]
fn a_restore_map_saying_more_than_the_target_holds() {
    let t = TempDir::new("adv-rmap");
    let size = 8 * MIB;
    let src = t.p("src.img");
    data_file(&src, size, 5);
    let src_sha = sha256(&src);
    let img = t.p("full.lbi");
    assert_exit(
        &lifeboat(&["image", "create", "--all-sectors", s(&src), s(&img)]),
        0,
    );
    let target = t.p("target.img");
    zero_file(&target, size);
    let map = t.p("restore.map");
    let restore = || {
        lifeboat(&[
            "image",
            "restore",
            "--yes",
            "--json",
            "--map",
            s(&map),
            s(&img),
            s(&target),
        ])
    };
    let o = restore();
    assert_exit(&o, 0);
    assert_eq!(sha256(&target), src_sha);

    // The map of a restore interrupted half way; the target changed since.
    interrupted_map(&map, size / 2, size);
    scribble(&target, size, 9);
    let o = restore();
    assert_exit(&o, 0);
    let j = json(&o);
    assert_eq!(
        sha256(&target),
        src_sha,
        "the resumed restore left a wrong target: {j}"
    );
    assert_eq!(j["resumed_bytes"], 0, "{j}");
    assert_eq!(j["written_bytes"], size, "{j}");
    assert_eq!(j["notes"].as_array().map(|n| n.len()), Some(1), "{j}");

    // The same map over a target that does hold the first half: only the rest is written.
    interrupted_map(&map, size / 2, size);
    let o = restore();
    assert_exit(&o, 0);
    let j = json(&o);
    assert_eq!(sha256(&target), src_sha);
    assert_eq!(j["resumed_bytes"], size / 2, "{j}");
    assert_eq!(j["written_bytes"], size / 2, "{j}");
    assert_eq!(sha256(&src), src_sha);
}
