//! Resuming interrupted image jobs on the host: a restore cut off part way (by a simulated
//! power cut that leaves a torn, unrecorded write, and by a real SIGKILL) continues with
//! `--map` and ends byte-identical to an uninterrupted restore of the same image (used-blocks
//! image: the target's free space keeps its old bytes either way); the map of another image or
//! another target is refused with exit 4 and the target unchanged.
use lifeboat::devices::Selected;
use lifeboat::error::{Error, ErrorKind, Result};
use lifeboat::image::format::uuid_str;
use lifeboat::image::ops::{stream_resumable, RestoreSink};
use lifeboat::image::resume::{restore_origin, RestoreMap};
use lifeboat::image::Image;
use lifeboat::jobs::{Cancel, NoProgress};
use lifeboat::rescue::{ExtentMap, Status};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

mod common;
use common::{assert_exit, json, lifeboat_cmd, s, sh, sha256, stderr, TempDir, MIB};

fn lb(args: &[&str]) -> Output {
    lifeboat_cmd().args(args).output().unwrap()
}

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
    // A finished map resumes to the same result again (nothing left but the free space).
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
    assert_eq!(json(&o)["written_bytes"], 0);
    assert_eq!(sha256(&tk), want_sha);
    let m = ExtentMap::load(&mk, size).unwrap();
    assert!(m.ranges(Status::Untried).iter().all(|&(_, l)| l % MIB == 0));
}
