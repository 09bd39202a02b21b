//! Resuming interrupted image jobs on the host: a restore cut off part way (by a simulated
//! power cut that leaves a torn, unrecorded write, and by a real SIGKILL) continues with
//! `--map` and ends byte-identical to an uninterrupted restore of the same image (used-blocks
//! image: the target's free space keeps its old bytes either way); the map of another image or
//! another target is refused with exit 4 and the target unchanged. A verify stopped part way
//! (cancelled, and killed with SIGKILL) resumes from its `--state` and still finds damage both
//! before the point where it stopped (recorded by the first run) and after it, and the state of
//! another image is refused.
use lifeboat::devices::Selected;
use lifeboat::error::{Error, ErrorKind, Result};
use lifeboat::image::format::uuid_str;
use lifeboat::image::format::Kind;
use lifeboat::image::ops::{stream_resumable, RestoreSink};
use lifeboat::image::resume::{restore_origin, RestoreMap};
use lifeboat::image::Image;
use lifeboat::jobs::{Cancel, NoProgress, Progress, ProgressSink};
use lifeboat::rescue::{ExtentMap, Status};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::{
    assert_exit, json, lifeboat as lb, lifeboat_cmd, s, sh, sha256, stderr, Loop, TempDir, MIB,
};

/// A 64 MiB GPT disk pre-filled with random "old data": one ext4 partition with files (so the
/// image has stored, zero and unallocated chunks).
fn used_disk(t: &TempDir) -> PathBuf {
    let d = t.p("disk.img");
    let c = t.p("content");
    sh(&format!(
        "mkdir -p {c} && head -c 12000000 /dev/urandom > {c}/a.bin && seq 1 300000 > {c}/n.txt && \
         head -c 67108864 /dev/urandom > {d} && \
         sgdisk -n1:2048:+56M -t1:8300 {d} >/dev/null && \
         mkfs.ext4 -q -F -d {c} -E offset={o} {d} 56M",
        c = s(&c),
        d = s(&d),
        o = 2048 * 512
    ));
    d
}

/// A target file of `len` bytes filled with 0x55 (its own "old data").
fn old_target(p: &Path, len: u64) {
    std::fs::write(p, vec![0x55u8; len as usize]).unwrap();
}

/// A sink that writes `left` chunks, then "loses power": the next chunk lands half written
/// (torn, never recorded) and nothing can be synced any more, so the map keeps its last save.
struct PowerCut {
    file: std::fs::File,
    left: usize,
    cut: bool,
}

impl RestoreSink for PowerCut {
    fn write_chunk(&mut self, data: &[u8], off: u64, _zero: bool) -> Result<u64> {
        if self.left == 0 {
            self.cut = true;
            let torn = vec![0xEEu8; data.len() / 2];
            self.file.write_all_at(&torn, off).unwrap();
            return Err(Error::new(ErrorKind::Io, "simulated power cut"));
        }
        self.left -= 1;
        self.file.write_all_at(data, off).unwrap();
        Ok(data.len() as u64)
    }
    fn flush(&mut self) -> Result<()> {
        if self.cut {
            return Err(Error::new(ErrorKind::Io, "no power"));
        }
        self.file
            .sync_all()
            .map_err(|e| Error::io("fsync", "target", e))
    }
}

fn finished(map: &Path, len: u64) -> u64 {
    ExtentMap::load(map, len).map_or(0, |m| m.totals().finished)
}

#[test]
fn interrupted_restore_resumes_with_map_byte_identical() {
    let t = TempDir::new("restore-resume");
    let disk = used_disk(&t);
    let size = 64 * MIB;
    let img = t.p("disk.lbi");
    assert_exit(&lb(&["image", "create", s(&disk), s(&img)]), 0);
    let info = json(&lb(&["image", "info", s(&img), "--json"]));
    assert!(info["unallocated_chunks"].as_u64().unwrap() > 0, "{info}");
    // zstd groups (several chunks in one frame) among them: the resumed restore starts inside
    // one or after one.
    let mut im = Image::open(&img).unwrap();
    let grouped = (0..im.header.chunk_count())
        .filter(|&i| im.entry(i).unwrap().kind == Kind::Group)
        .count();
    assert!(grouped >= 4, "{grouped} chunks in groups");
    // The reference: an uninterrupted restore onto old data.
    let want = t.p("want.img");
    old_target(&want, size);
    let o = lb(&["image", "restore", s(&img), s(&want), "--yes", "--json"]);
    assert_exit(&o, 0);
    let full = json(&o);
    let want_sha = sha256(&want);

    // 1. A power cut after 9 chunks, with the map saved after every chunk.
    let tg = t.p("target.img");
    old_target(&tg, size);
    let map = t.p("restore.map");
    let h = Image::open(&img).unwrap().header;
    let origin = restore_origin(
        &uuid_str(&h.uuid),
        h.disk_size,
        s(&img),
        lifeboat::clone::resume::storage_id(&Selected::File(tg.clone()), size),
    );
    let mut notes = vec![];
    let mut rmap = RestoreMap::open(&map, &origin, size, "test", &mut notes).unwrap();
    rmap.set_save_every(Duration::ZERO);
    let mut sink = PowerCut {
        file: std::fs::OpenOptions::new().write(true).open(&tg).unwrap(),
        left: 9,
        cut: false,
    };
    let e = stream_resumable(
        &img,
        &mut sink,
        "image-restore",
        &tg,
        &NoProgress,
        &Cancel::new(),
        Some(&mut rmap),
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("power cut"), "{e}");
    let before = finished(&map, size);
    assert_eq!(before, 9 * MIB, "the map records exactly the synced chunks");
    assert_ne!(sha256(&tg), want_sha);
    // The same restore with --map continues and ends identical.
    let o = lb(&[
        "image",
        "restore",
        s(&img),
        s(&tg),
        "--yes",
        "--map",
        s(&map),
        "--json",
    ]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(r["resumed_bytes"], before, "{r}");
    assert_eq!(
        r["written_bytes"].as_u64().unwrap(),
        full["written_bytes"].as_u64().unwrap() - before,
        "{r}"
    );
    assert_eq!(r["media_hash_verified"], true);
    assert!(stderr(&o).contains("Resuming"), "{}", stderr(&o));
    assert_eq!(sha256(&tg), want_sha, "resumed restore differs");
    // GNU ddrescue's own tool reads the map.
    sh(&format!("ddrescuelog -t {} >/dev/null", s(&map)));

    // 2. The map of this restore, given for another target or another image: refused, exit 4,
    // nothing written.
    let other = t.p("other.img");
    old_target(&other, size);
    let osha = sha256(&other);
    let o = lb(&[
        "image",
        "restore",
        s(&img),
        s(&other),
        "--yes",
        "--map",
        s(&map),
        "--json",
    ]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("not of this restore"), "{}", stderr(&o));
    assert_eq!(sha256(&other), osha);
    let img2 = t.p("again.lbi");
    assert_exit(&lb(&["image", "create", s(&disk), s(&img2)]), 0);
    let o = lb(&[
        "image",
        "restore",
        s(&img2),
        s(&tg),
        "--yes",
        "--map",
        s(&map),
        "--json",
    ]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("the image with UUID"), "{}", stderr(&o));
    assert_eq!(sha256(&tg), want_sha);

    // 3. A real SIGKILL part way (the map saved after every chunk, so the kill lands mid-job).
    let tk = t.p("killed.img");
    old_target(&tk, size);
    let mk = t.p("killed.map");
    let mut child = lifeboat_cmd()
        .args([
            "image",
            "restore",
            s(&img),
            s(&tk),
            "--yes",
            "--map",
            s(&mk),
        ])
        .env("LIFEBOAT_MAP_INTERVAL", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while finished(&mk, size) < 4 * MIB {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before it could be killed"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = finished(&mk, size);
    assert!(at_kill < size, "killed after the end");
    let o = lb(&[
        "image",
        "restore",
        s(&img),
        s(&tk),
        "--yes",
        "--map",
        s(&mk),
        "--json",
    ]);
    assert_exit(&o, 0);
    assert!(json(&o)["resumed_bytes"].as_u64().unwrap() >= at_kill);
    assert_eq!(
        sha256(&tk),
        want_sha,
        "restore resumed after SIGKILL differs"
    );
    // A finished map is not resumed (the target may have changed since): restored in full
    // again, to the same result (tests/adversary_used has a target changed in between).
    let o = lb(&[
        "image",
        "restore",
        s(&img),
        s(&tk),
        "--yes",
        "--map",
        s(&mk),
        "--json",
    ]);
    assert_exit(&o, 0);
    assert_eq!(json(&o)["resumed_bytes"], 0);
    assert_eq!(json(&o)["written_bytes"], full["written_bytes"]);
    assert!(
        stderr(&o).contains("records a restore that finished"),
        "{}",
        stderr(&o)
    );
    assert_eq!(sha256(&tk), want_sha);
    let m = ExtentMap::load(&mk, size).unwrap();
    assert!(m.ranges(Status::Untried).iter().all(|&(_, l)| l % MIB == 0));
}

/// Cancels the job once its progress passes `at` bytes.
struct CancelAt {
    cancel: Cancel,
    at: u64,
}
impl ProgressSink for CancelAt {
    fn progress(&self, p: &Progress) {
        if p.done_bytes >= self.at {
            self.cancel.cancel();
        }
    }
}

/// Flips one byte of the payload of the first stored chunk at or after `from`; returns the
/// chunks that payload holds (one, or every member of a zstd group).
fn damage_stored_chunk(img: &Path, from: u64) -> Vec<u64> {
    let mut im = Image::open(img).unwrap();
    let n = im.header.chunk_count();
    let i = (from..n)
        .find(|&i| {
            matches!(
                im.entry(i).unwrap().kind,
                Kind::Raw | Kind::Lz4 | Kind::Zstd | Kind::Group
            )
        })
        .expect("a stored chunk");
    let e = im.entry(i).unwrap();
    let hit: Vec<u64> = (0..n)
        .filter(|&j| {
            let x = im.entry(j).unwrap();
            x.kind == e.kind && (x.volume, x.offset) == (e.volume, e.offset)
        })
        .collect();
    let off = e.offset + 7;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, off).unwrap();
    hit
}

/// Stops a verify of `img` with `state` after `at` bytes (as a Ctrl-C would).
fn interrupted_verify(img: &Path, state: &Path, at: u64) {
    let cancel = Cancel::new();
    let sink = CancelAt {
        cancel: cancel.clone(),
        at,
    };
    let e = lifeboat::image::ops::verify_resumable(img, &sink, &cancel, Some(state)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Cancelled, "{e}");
}

#[test]
fn interrupted_verify_resumes_from_its_state_and_still_covers_everything() {
    let t = TempDir::new("verify-resume");
    let disk = used_disk(&t);
    let img = t.p("disk.lbi");
    assert_exit(&lb(&["image", "create", s(&disk), s(&img)]), 0);
    let chunks = Image::open(&img).unwrap().header.chunk_count();

    // 1. An intact image: stopped at 20 MiB, resumed: OK, the earlier part not read again.
    let st = t.p("verify.state");
    interrupted_verify(&img, &st, 20 * MIB);
    let o = lb(&["image", "verify", s(&img), "--state", s(&st), "--json"]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["chunks_checked"], chunks);
    let resumed = r["resumed_chunks"].as_u64().unwrap();
    assert!((19..=21).contains(&resumed), "{r}");
    // Run again with the finished state: a new verify from the beginning, with a note.
    let r = json(&lb(&[
        "image",
        "verify",
        s(&img),
        "--state",
        s(&st),
        "--json",
    ]));
    assert_eq!(r["resumed_chunks"], 0, "{r}");
    assert!(r["notes"][0].as_str().unwrap().contains("finished"), "{r}");

    // 2. Damage before the stop (found by the first run, not read again) and after it (found
    // by the resumed run): both in the final verdict.
    let bad = t.p("bad.lbi");
    std::fs::copy(&img, &bad).unwrap();
    let early = damage_stored_chunk(&bad, 2);
    assert!(early[0] < 16, "a stored chunk early in the disk: {early:?}");
    // A zstd group holds up to GROUP_CHUNKS stored chunks, unallocated ones in between left
    // out: the group of chunk 40 may begin before it, but after the early group.
    let late = damage_stored_chunk(&bad, 40);
    assert!(
        late[0] > *early.last().unwrap() && late.iter().any(|&c| c >= 40),
        "{early:?} {late:?}"
    );
    let st2 = t.p("bad.state");
    interrupted_verify(&bad, &st2, 20 * MIB);
    let o = lb(&["image", "verify", s(&bad), "--state", s(&st2), "--json"]);
    assert_exit(&o, 5);
    let r = json(&o);
    assert!(r["resumed_chunks"].as_u64().unwrap() > early[0], "{r}");
    let probs = r["problems"].to_string();
    for i in early.iter().chain(&late) {
        assert!(probs.contains(&format!("chunk {i} ")), "chunk {i}: {r}");
    }
    assert_eq!(r["problem_count"], (early.len() + late.len()) as u64, "{r}");

    // 3. The state of another copy of the same image (bad.lbi is a copy of img): its payloads
    // were not read, so the verify starts again, with a note. The state of another image:
    // refused, exit 4.
    let st_copy = t.p("copy.state");
    interrupted_verify(&bad, &st_copy, 20 * MIB);
    let o = lb(&["image", "verify", s(&img), "--state", s(&st_copy), "--json"]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(r["resumed_chunks"], 0, "{r}");
    assert!(
        r["notes"][0].as_str().unwrap().contains("another copy"),
        "{r}"
    );
    let other = t.p("other.lbi");
    assert_exit(&lb(&["image", "create", s(&disk), s(&other)]), 0);
    let st_other = t.p("other.state");
    interrupted_verify(&other, &st_other, 20 * MIB);
    let o = lb(&[
        "image",
        "verify",
        s(&img),
        "--state",
        s(&st_other),
        "--json",
    ]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("another image"), "{}", stderr(&o));

    // 4. A real SIGKILL (state saved after every chunk), then the same command resumes.
    let st3 = t.p("killed.state");
    let mut child = lifeboat_cmd()
        .args(["image", "verify", s(&img), "--state", s(&st3)])
        .env("LIFEBOAT_MAP_INTERVAL", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let next = |p: &Path| -> u64 {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["next_chunk"].as_u64())
            .unwrap_or(0)
    };
    let start = Instant::now();
    while next(&st3) < 8 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the verify ended before it could be killed"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let o = lb(&["image", "verify", s(&img), "--state", s(&st3), "--json"]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert!(r["resumed_chunks"].as_u64().unwrap() >= 8, "{r}");
    assert_eq!(r["ok"], true);
}

/// An ext4 filesystem labelled `label` in a file, on a loop device (the partition a
/// `label=...:/path` names), holding the files of `dir` when given.
fn ext4_loop(t: &TempDir, name: &str, label: &str, dir: Option<&Path>) -> Option<(PathBuf, Loop)> {
    let f = t.p(name);
    let d = dir.map_or(String::new(), |d| format!("-d {}", s(d)));
    sh(&format!(
        "truncate -s 64M {f} && mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 -L {label} {d} {f}",
        f = s(&f)
    ));
    let l = Loop::attach(&f)?;
    Some((f, l))
}

/// A restore's map on a store partition Lifeboat mounts itself (`--map label=L:/dir/r.map`,
/// how the environment keeps a map across a reboot): written there, unmounted afterwards; on the
/// image's own partition (mounted read-only for the restore) it is refused.
#[test]
fn restore_map_on_a_store_partition() {
    let t = TempDir::new("restore-map-store");
    let disk = used_disk(&t);
    let store_dir = t.p("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    let img = store_dir.join("disk.lbi");
    assert_exit(&lb(&["image", "create", s(&disk), s(&img)]), 0);
    let pid = std::process::id() % 100_000;
    let (maps_lab, img_lab) = (format!("LBM{pid}"), format!("LBI{pid}"));
    let Some((maps, ml)) = ext4_loop(&t, "maps.fs", &maps_lab, None) else {
        return;
    };
    let Some((_store, sl)) = ext4_loop(&t, "store.fs", &img_lab, Some(&store_dir)) else {
        return;
    };
    let tg = t.p("target.img");
    old_target(&tg, 64 * MIB);
    let at_img = format!("label={img_lab}:/disk.lbi");
    // On the image's partition: refused before anything is written.
    let tsha = sha256(&tg);
    let o = lb(&[
        "image",
        "restore",
        &at_img,
        s(&tg),
        "--yes",
        "--map",
        &format!("label={img_lab}:/r.map"),
    ]);
    assert_exit(&o, 4);
    assert_eq!(sha256(&tg), tsha);
    // On its own store partition: kept there, and unmounted at the end.
    let o = lb(&[
        "image",
        "restore",
        &at_img,
        s(&tg),
        "--yes",
        "--json",
        "--map",
        &format!("label={maps_lab}:/maps/r.map"),
    ]);
    assert_exit(&o, 0);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(&format!("{} ", ml.dev)) && !mounts.contains(&format!("{} ", sl.dev)),
        "left mounted: {mounts}"
    );
    let text = sh(&format!(
        "debugfs -R 'cat /maps/r.map' {} 2>/dev/null",
        s(&maps)
    ));
    assert!(text.contains("# Lifeboat origin:"), "{text}");
    // Read from there again: the map of a finished restore is not resumed (the target may
    // have changed since), the restore is done in full again, with a note.
    let o = lb(&[
        "image",
        "restore",
        &at_img,
        s(&tg),
        "--yes",
        "--json",
        "--map",
        &format!("label={maps_lab}:/maps/r.map"),
    ]);
    assert_exit(&o, 0);
    assert_eq!(json(&o)["resumed_bytes"], 0);
    assert!(json(&o)["written_bytes"].as_u64().unwrap() > 0);
    assert!(
        json(&o)["notes"]
            .to_string()
            .contains("records a restore that finished"),
        "{}",
        json(&o)
    );
}
