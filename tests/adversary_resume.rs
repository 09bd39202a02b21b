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

/// A create stopped by a full target (12 MiB ext4, 16 MiB of random data): deterministic, it
/// leaves `x.lbi.partial` and its journal at the first checkpoint. Returns the source and
/// the directory (with room) the two files were moved to; None where no ext4 can be mounted.
fn stopped_create(t: &TempDir) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    if !is_root() {
        eprintln!("skipping: needs root (a loop-mounted ext4 to fill)");
        return None;
    }
    let src = t.p("src.img");
    data_file(&src, 16 * MIB, 11);
    let fs = t.p("store.img");
    zero_file(&fs, 12 * MIB);
    run(std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&fs));
    let m = Mounted::ext4_in(&fs, t, 0, 12 * MIB)?;
    let o = lifeboat(&[
        "image",
        "create",
        "--all-sectors",
        "--ignore-free-space",
        s(&src),
        s(&m.mp.join("x.lbi")),
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    let dir = t.p("resume");
    std::fs::create_dir(&dir).unwrap();
    for n in ["x.lbi.partial", "x.lbi.partial.journal"] {
        std::fs::copy(m.mp.join(n), dir.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    Some((src, dir))
}

/// The journal's header (hex) and the unfinished volume's header, both patched by `patch`
/// (the header's CRC32 recomputed): the volume still agrees with its journal.
fn patch_resumed_header(dir: &Path, patch: impl Fn(&mut [u8])) {
    let jp = dir.join("x.lbi.partial.journal");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&jp).unwrap()).unwrap();
    let hex = j["header"].as_str().unwrap().to_string();
    let mut h: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    patch(&mut h);
    let c = crc32fast::hash(&h[..508]);
    h[508..512].copy_from_slice(&c.to_le_bytes());
    j["header"] = h
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into();
    std::fs::write(&jp, serde_json::to_vec(&j).unwrap()).unwrap();
    use std::os::unix::fs::FileExt;
    let v = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("x.lbi.partial"))
        .unwrap();
    v.write_all_at(&h, 0).unwrap();
}

/// A journal whose settings are this job's but whose header (and the volume's, made to agree)
/// says the disk is 8 MiB, not 16. Before, the resumed create finished an image of the first
/// 8 MiB, passed its own verify and reported a complete 16 MiB image (exit 0). Now the journal
/// is refused as damaged (exit 5), nothing finished; without the tampering the same files
/// resume to an image that exports to the source.
#[test]
fn a_journal_whose_header_is_not_its_settings() {
    let t = TempDir::new("adv-journal");
    let Some((src, dir)) = stopped_create(&t) else {
        return;
    };
    let src_sha = sha256(&src);
    let keep = t.p("keep");
    std::fs::create_dir(&keep).unwrap();
    for n in ["x.lbi.partial", "x.lbi.partial.journal"] {
        std::fs::copy(dir.join(n), keep.join(n)).unwrap();
    }
    patch_resumed_header(&dir, |h| {
        h[96..104].copy_from_slice(&(8 * MIB).to_le_bytes())
    });
    let img = dir.join("x.lbi");
    let create = |img: &Path| {
        lifeboat(&[
            "image",
            "create",
            "--all-sectors",
            "--json",
            s(&src),
            s(img),
        ])
    };
    let o = create(&img);
    assert_exit(&o, 5);
    assert_eq!(json(&o)["error"]["kind"], "corrupt");
    assert!(
        !img.exists(),
        "an image was finished from the damaged journal"
    );
    assert!(dir.join("x.lbi.partial.journal").exists());

    // The untouched files resume to the source's image.
    let img = keep.join("x.lbi");
    let o = create(&img);
    assert_exit(&o, 0);
    assert!(!json(&o)["resumed_from"].is_null(), "not resumed");
    let raw = t.p("export.raw");
    assert_exit(&lifeboat(&["image", "export", s(&img), s(&raw)]), 0);
    assert_eq!(sha256(&raw), src_sha);
    assert_eq!(sha256(&src), src_sha);
}

/// A verify `--state` of this very image (same files) whose position is past the image's end
/// (chain image 7 of 1, or chunk 2^40 of 4). Before, the resumed verify took every payload as
/// checked and reported the image sound (exit 0) without reading one; now the state is
/// refused as damaged (exit 5) and the image is never called sound from it.
#[test]
fn a_verify_state_pointing_past_the_end() {
    let t = TempDir::new("adv-vstate");
    let src = t.p("src.img");
    data_file(&src, 4 * MIB, 13);
    let src_sha = sha256(&src);
    let img = t.p("full.lbi");
    assert_exit(
        &lifeboat(&["image", "create", "--all-sectors", s(&src), s(&img)]),
        0,
    );
    let st = t.p("verify.state");
    let verify = || lifeboat(&["image", "verify", "--json", "--state", s(&st), s(&img)]);
    assert_exit(&verify(), 0);
    let done: serde_json::Value = serde_json::from_slice(&std::fs::read(&st).unwrap()).unwrap();
    for (image, next) in [(7u64, 0u64), (0, 1 << 40), (1, 3)] {
        let mut v = done.clone();
        v["complete"] = false.into();
        v["image"] = image.into();
        v["next_chunk"] = next.into();
        std::fs::write(&st, serde_json::to_vec(&v).unwrap()).unwrap();
        let o = verify();
        assert_exit(&o, 5);
        assert_eq!(
            json(&o)["error"]["kind"],
            "corrupt",
            "image {image} chunk {next}"
        );
    }
    // The state of a verify that stopped half way still resumes.
    let mut v = done.clone();
    v["complete"] = false.into();
    v["image"] = 0.into();
    v["next_chunk"] = 2.into();
    std::fs::write(&st, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = verify();
    assert_exit(&o, 0);
    assert_eq!(sha256(&src), src_sha);
}
