//! Untrusted inputs (issue 10's reproducers 6-11, 13-16): every file a user names (an image, a
//! parent, a split volume, a `--map`, a `PARTITION:/path`) may be missing, damaged, a FIFO, a
//! garbage file, or lead out of its partition. Each test runs the real binary, checks the exit
//! code and the message, and checks that the source and the image are unchanged (sha256).
//! `LIFEBOAT_TEST_BIN=/path/to/lifeboat` runs them against another build (main's, to see them
//! fail there).
mod common;

use common::{assert_exit, json, lifeboat_cmd, s, sh, sha256 as sha, stderr as err, TempDir, MIB};
use std::fs;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// `lifeboat ARGS` with stdin closed (no prompt can wait for an answer).
fn lb(args: &[&str]) -> Output {
    lifeboat_cmd()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run lifeboat")
}

/// Asserts the exit code, naming the case.
#[track_caller]
fn expect(o: &Output, want: i32, what: &str) {
    assert_eq!(o.status.code(), Some(want), "{what}: {}", err(o));
}

/// sha256 of every file in `dir` (name → hash), to check nothing there changed.
fn shas(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), sha(&e.path())))
        .collect();
    v.sort();
    v
}

/// `len` bytes of random data (incompressible: every chunk is stored raw, at a known place).
fn random_file(p: &Path, len: u64) {
    sh(&format!("head -c {len} /dev/urandom > {} && sync", s(p)));
}

#[track_caller]
fn create_ok(args: &[&str]) -> serde_json::Value {
    let mut a = vec!["image", "create"];
    a.extend_from_slice(args);
    a.push("--json");
    let o = lb(&a);
    assert_exit(&o, 0);
    json(&o)
}

// ---------------------------------------------------------------- 16: missing parts → exit 5

#[test]
fn missing_parent_or_volume_is_an_incomplete_image_exit_5() {
    let t = TempDir::new("missing");
    let disk = t.p("disk.img");
    random_file(&disk, 12 * MIB);
    let full = t.p("full.lbi");
    create_ok(&[s(&disk), s(&full)]);
    sh(&format!(
        "head -c 1048576 /dev/urandom | dd of={} bs=1M seek=3 conv=notrunc status=none",
        s(&disk)
    ));
    let inc = t.p("inc.lbi");
    create_ok(&[s(&disk), s(&inc), "--parent", s(&full)]);
    let disk_sha = sha(&disk);
    // The parent moved away: verify, info, restore and export all say what is missing, where
    // they looked, and exit 5 (an incomplete image), like a missing volume.
    let aside = t.p("aside");
    fs::create_dir(&aside).unwrap();
    fs::rename(&full, aside.join("full.lbi")).unwrap();
    let before = shas(t.path());
    let target = t.p("target.img");
    random_file(&target, 12 * MIB);
    let target_sha = sha(&target);
    for args in [
        vec!["image", "verify", s(&inc)],
        vec!["image", "restore", s(&inc), s(&target), "--yes"],
        vec!["image", "export", s(&inc), s(&t.p("out.raw"))],
    ] {
        let o = lb(&args);
        expect(&o, 5, &format!("{args:?} without its parent"));
        let e = err(&o);
        assert!(
            e.contains("parent") && e.contains("missing") && e.contains(s(&full)),
            "the message names the missing parent and where it was looked for: {e}"
        );
    }
    let o = lb(&["image", "info", s(&inc), "--json"]);
    expect(&o, 5, "info without the parent");
    let j = json(&o);
    assert!(
        j["chain_error"].as_str().unwrap_or("").contains(s(&full)),
        "{j}"
    );
    let o = lb(&["image", "verify", s(&inc), "--json"]);
    let j = json(&o);
    assert_eq!(j["error"]["kind"], "incomplete", "{j}");
    assert_eq!(
        sha(&target),
        target_sha,
        "a refused restore wrote to the target"
    );
    assert!(!t.p("out.raw").exists());
    let mut after = shas(t.path());
    after.retain(|(n, _)| n != "target.img");
    let mut before = before;
    before.retain(|(n, _)| n != "target.img");
    assert_eq!(before, after, "an image file changed");
    fs::rename(aside.join("full.lbi"), &full).unwrap();
    expect(
        &lb(&["image", "verify", s(&inc)]),
        0,
        "verify with the parent back",
    );

    // A split image with a volume missing (the middle one, the last one): exit 5 too, naming it.
    let split = t.p("split.lbi");
    let j = create_ok(&[s(&disk), s(&split), "--split", "4M"]);
    let nvol = j["volumes"].as_array().unwrap().len();
    assert!(nvol >= 3, "{j}");
    for k in [2, nvol] {
        let name = format!("split.lbi.{k:03}");
        let v = t.p(&name);
        fs::rename(&v, aside.join(&name)).unwrap();
        let snap = shas(t.path());
        for args in [
            vec!["image", "verify", s(&split)],
            vec!["image", "info", s(&split)],
            vec!["image", "restore", s(&split), s(&target), "--yes"],
            vec!["image", "export", s(&split), s(&t.p("out.raw"))],
        ] {
            let o = lb(&args);
            expect(&o, 5, &format!("{args:?} without volume {k}"));
            assert!(err(&o).contains(&name), "names {name}: {}", err(&o));
        }
        assert_eq!(shas(t.path()), snap, "a file changed");
        fs::rename(aside.join(&name), &v).unwrap();
    }
    expect(&lb(&["image", "verify", s(&split)]), 0, "all volumes back");
    assert_eq!(sha(&disk), disk_sha, "the source changed");
}

// ------------------------------------------------- 14: a damaged chunk mid-restore → INCOMPLETE

fn flip(p: &Path, off: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, off).unwrap();
}

#[test]
fn restore_stopped_by_a_damaged_chunk_says_the_target_is_incomplete() {
    let t = TempDir::new("damaged");
    let disk = t.p("disk.img");
    random_file(&disk, 8 * MIB);
    let disk_sha = sha(&disk);
    let img = t.p("d.lbi");
    create_ok(&[s(&disk), s(&img)]);
    // Random data is stored raw, chunk after chunk after the 512-byte header: damage chunk 5.
    flip(&img, 512 + 5 * MIB + 1000);
    let img_sha = sha(&img);
    let target = t.p("target.img");
    random_file(&target, 8 * MIB);
    let o = lb(&["image", "restore", s(&img), s(&target), "--yes", "--json"]);
    expect(&o, 5, "restore of a damaged image");
    let e = err(&o);
    assert!(e.contains("chunk 5"), "{e}");
    assert!(e.contains("INCOMPLETE"), "the target's state is said: {e}");
    assert!(e.contains(s(&target)) && e.contains("image verify"), "{e}");
    let j = json(&o);
    assert_eq!(j["target_state"], "incomplete", "{j}");
    assert_eq!(j["target"], s(&target), "{j}");
    assert!(j["written_bytes"].as_u64().unwrap() >= 5 * MIB, "{j}");
    assert_eq!(j["exit_code"], 5);
    assert_eq!(sha(&img), img_sha, "the image changed");
    assert_eq!(sha(&disk), disk_sha, "the source changed");

    // Damage in the very first chunk: nothing was written, and the message says so.
    let img0 = t.p("d0.lbi");
    create_ok(&[s(&disk), s(&img0)]);
    flip(&img0, 512 + 10);
    let target_sha = sha(&target);
    let o = lb(&["image", "restore", s(&img0), s(&target), "--yes", "--json"]);
    expect(&o, 5, "restore of an image damaged at chunk 0");
    assert!(err(&o).contains("unchanged"), "{}", err(&o));
    assert_eq!(json(&o)["target_state"], "unchanged");
    assert_eq!(sha(&target), target_sha, "the target changed");
}

// ------------------------------------------------------- 10: a FIFO where an image is expected

/// Runs `args`; fails if it does not end by itself within `secs`, or after one SIGTERM.
fn run_bounded(args: &[&str], secs: u64) -> Output {
    let mut child = lifeboat_cmd()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let start = Instant::now();
    let mut termed = false;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(secs) && !termed {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            termed = true;
        }
        if start.elapsed() > Duration::from_secs(secs + 5) {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "{args:?} still ran {}s after one SIGTERM (blocked?): {}",
                5,
                err(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    assert!(!termed, "{args:?} blocked until SIGTERM: {}", err(&o));
    o
}

#[test]
fn a_fifo_as_image_is_refused_at_once() {
    let t = TempDir::new("fifo");
    let disk = t.p("disk.img");
    random_file(&disk, 10 * MIB);
    let disk_sha = sha(&disk);
    let fifo = t.p("pipe.lbi");
    sh(&format!("mkfifo {}", s(&fifo)));
    let target = t.p("target.img");
    random_file(&target, 10 * MIB);
    let target_sha = sha(&target);
    let good = t.p("good.lbi");
    create_ok(&[s(&disk), s(&good)]);
    let good_sha = sha(&good);
    let (out, inc) = (t.p("out.raw"), t.p("inc.lbi"));
    let cases: Vec<Vec<&str>> = vec![
        vec!["image", "verify", s(&fifo)],
        vec!["image", "info", s(&fifo)],
        vec!["image", "restore", s(&fifo), s(&target), "--yes"],
        vec!["image", "export", s(&fifo), s(&out)],
        vec!["image", "create", s(&disk), s(&inc), "--parent", s(&fifo)],
    ];
    for args in &cases {
        let o = run_bounded(args, 10);
        expect(&o, 2, &format!("{args:?}"));
        assert!(err(&o).contains("FIFO"), "{args:?}: {}", err(&o));
    }
    // A FIFO as a split volume, as the `.partial` of an image: refused the same way.
    let split = t.p("split.lbi");
    create_ok(&[s(&disk), s(&split), "--split", "4M"]);
    fs::remove_file(t.p("split.lbi.002")).unwrap();
    sh(&format!("mkfifo {}", s(&t.p("split.lbi.002"))));
    let o = run_bounded(&["image", "verify", s(&split)], 10);
    expect(&o, 2, "a FIFO as volume 2");
    assert!(err(&o).contains("FIFO"), "{}", err(&o));
    // A character device and a socket-like node: the same refusal, nothing read from them.
    let o = run_bounded(&["image", "info", "/dev/zero"], 10);
    expect(&o, 2, "a character device as image");
    assert!(err(&o).contains("character device"), "{}", err(&o));
    assert!(!t.p("out.raw").exists() && !t.p("inc.lbi").exists());
    assert_eq!(sha(&target), target_sha, "the target changed");
    assert_eq!(sha(&disk), disk_sha, "the source changed");
    assert_eq!(sha(&good), good_sha, "the image changed");
}

/// One SIGTERM ends every image job that runs long enough to be signalled (exit 130).
#[test]
fn one_sigterm_ends_each_image_job() {
    let t = TempDir::new("sigterm");
    let disk = t.p("disk.img");
    // Large enough that each job is still running a moment after it starts.
    random_file(&disk, 384 * MIB);
    let disk_sha = sha(&disk);
    let img = t.p("big.lbi");
    create_ok(&[s(&disk), s(&img)]);
    let img_sha = sha(&img);
    let target = t.p("target.img");
    sh(&format!("truncate -s 384M {}", s(&target)));
    let (again, out) = (t.p("again.lbi"), t.p("out.raw"));
    let cases: Vec<Vec<&str>> = vec![
        vec!["image", "create", s(&disk), s(&again)],
        vec!["image", "verify", s(&img)],
        vec!["image", "restore", s(&img), s(&target), "--yes"],
        vec!["image", "export", s(&img), s(&out)],
    ];
    for args in &cases {
        let mut child = lifeboat_cmd()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("{args:?} did not end after one SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let o = child.wait_with_output().unwrap();
        // 130 after a clean stop; 0 only if it finished before the signal arrived.
        assert!(
            matches!(o.status.code(), Some(130) | Some(0)),
            "{args:?}: {:?} {}",
            o.status,
            err(&o)
        );
    }
    assert_eq!(sha(&disk), disk_sha, "the source changed");
    assert_eq!(sha(&img), img_sha, "the image changed");
}

// ------------------------------------ 15: a footer whose counts were changed (CRC recomputed)

/// Rewrites the footer of the (single-volume) image at `p` through `change`, with a valid CRC.
fn edit_footer(p: &Path, change: impl Fn(&mut lifeboat::image::format::Footer)) {
    use lifeboat::image::format::{Footer, FOOTER_SIZE};
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let at = f.metadata().unwrap().len() - FOOTER_SIZE as u64;
    let mut b = [0u8; FOOTER_SIZE];
    f.read_exact_at(&mut b, at).unwrap();
    let mut footer = Footer::decode(&b).unwrap().unwrap();
    change(&mut footer);
    f.write_all_at(&footer.encode(), at).unwrap();
}

#[test]
fn verify_cross_checks_every_footer_count_against_the_index() {
    let t = TempDir::new("footer");
    let disk = t.p("disk.img");
    // Random chunks (stored), zero chunks, compressible chunks.
    sh(&format!(
        "head -c 3145728 /dev/urandom > {d} && truncate -s 6M {d} && seq 1 300000 >> {d} && truncate -s 10M {d}",
        d = s(&disk)
    ));
    let disk_sha = sha(&disk);
    let img = t.p("f.lbi");
    create_ok(&[s(&disk), s(&img)]);
    let pristine = fs::read(&img).unwrap();
    expect(
        &lb(&["image", "verify", s(&img)]),
        0,
        "verify of the intact image",
    );
    type Edit = (&'static str, fn(&mut lifeboat::image::format::Footer));
    let edits: [Edit; 7] = [
        ("unreadable ranges", |f| f.bad_ranges += 2),
        ("unreadable bytes", |f| f.bad_bytes += 4096),
        ("payload bytes", |f| f.payload_bytes -= 1),
        ("stored chunks", |f| {
            f.stored_chunks -= 1;
            f.zero_chunks += 1
        }),
        ("zero chunks", |f| f.zero_chunks += 1),
        ("unchanged chunks", |f| f.parent_chunks += 1),
        ("unreadable", |f| {
            f.bad_ranges = 1;
            f.bad_bytes = 512
        }),
    ];
    for (what, change) in edits {
        fs::write(&img, &pristine).unwrap();
        edit_footer(&img, change);
        let edited = sha(&img);
        let o = lb(&["image", "verify", s(&img), "--json"]);
        expect(&o, 5, &format!("verify with the footer's {what} changed"));
        let j = json(&o);
        assert_eq!(j["ok"], false, "{j}");
        let probs = j["problems"].to_string();
        assert!(
            probs.contains("footer") && probs.contains(what),
            "{what}: {j}"
        );
        assert_eq!(sha(&img), edited, "verify changed the image");
    }
    assert_eq!(sha(&disk), disk_sha, "the source changed");
}

// --------------------------------------------- 6: a map of another clone is refused, not resumed

fn clone(args: &[&str]) -> Output {
    let mut a = vec!["clone"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--yes", "--json"]);
    lb(&a)
}

#[test]
fn a_map_of_another_clone_is_refused_before_anything_is_written() {
    let t = TempDir::new("map-other");
    // The earlier clone: a smaller, different disk.
    let (small, small_t) = (t.p("small.img"), t.p("small-target.img"));
    random_file(&small, 8 * MIB);
    common::zero_file(&small_t, 8 * MIB);
    let map = t.p("clone.map");
    let o = clone(&[s(&small), s(&small_t), "--map", s(&map)]);
    assert_exit(&o, 0);
    // ddrescue's own tool still reads the map (the record is a comment line).
    if Path::new("/usr/bin/ddrescuelog").exists() {
        let o = std::process::Command::new("ddrescuelog")
            .args(["-t", s(&map)])
            .output()
            .unwrap();
        assert!(o.status.success(), "ddrescuelog -t: {}", err(&o));
    }
    let map_sha = sha(&map);
    // Now a bigger, different disk with the same --map: refused (4), nothing written.
    let (src, tgt) = (t.p("src.img"), t.p("tgt.img"));
    random_file(&src, 12 * MIB);
    random_file(&tgt, 12 * MIB);
    let (src_sha, tgt_sha) = (sha(&src), sha(&tgt));
    let o = clone(&[s(&src), s(&tgt), "--map", s(&map)]);
    assert_exit(&o, 4);
    assert!(err(&o).contains("not of this clone"), "{}", err(&o));
    assert_eq!(json(&o)["error"]["kind"], "refused");
    // A different disk of the same size, the same source onto another target: refused too.
    let (other, other_t) = (t.p("other.img"), t.p("other-target.img"));
    random_file(&other, 8 * MIB);
    random_file(&other_t, 8 * MIB);
    let other_t_sha = sha(&other_t);
    assert_exit(&clone(&[s(&other), s(&small_t), "--map", s(&map)]), 4);
    assert_exit(&clone(&[s(&small), s(&other_t), "--map", s(&map)]), 4);
    assert_eq!(
        sha(&other_t),
        other_t_sha,
        "a refused clone wrote to its target"
    );
    assert_eq!(sha(&tgt), tgt_sha, "a refused clone wrote to its target");
    assert_eq!(sha(&src), src_sha, "the source changed");
    assert_eq!(sha(&map), map_sha, "the map changed");
    // The same clone again resumes from it (nothing left to copy) and the target is right.
    assert_exit(&clone(&[s(&small), s(&small_t), "--map", s(&map)]), 0);
    assert_eq!(sha(&small_t), sha(&small));

    // A map without a record (GNU ddrescue's): taken only when its size is this clone's.
    let dd = t.p("dd.map");
    fs::write(
        &dd,
        "# Mapfile. Created by GNU ddrescue version 1.27\n0x00000000     +               1\n0x00000000  0x00800000  +\n",
    )
    .unwrap();
    let o = clone(&[s(&src), s(&tgt), "--map", s(&dd)]);
    assert_exit(&o, 4);
    assert_eq!(sha(&tgt), tgt_sha, "a refused clone wrote to its target");
    let fresh_t = t.p("fresh.img");
    common::zero_file(&fresh_t, 8 * MIB);
    fs::write(
        &dd,
        "0x00000000     ?               1\n0x00000000  0x00800000  ?\n",
    )
    .unwrap();
    let o = clone(&[s(&small), s(&fresh_t), "--map", s(&dd)]);
    assert_exit(&o, 0);
    assert!(
        json(&o)["notes"].to_string().contains("records no source"),
        "{}",
        err(&o)
    );
    assert_eq!(sha(&fresh_t), sha(&small));
}

// ------------------------------------------------ 13: a --map that cannot be saved is checked first

#[test]
fn a_map_in_a_missing_directory_is_refused_before_the_copy() {
    let t = TempDir::new("map-dir");
    let (src, tgt) = (t.p("src.img"), t.p("tgt.img"));
    random_file(&src, 8 * MIB);
    random_file(&tgt, 8 * MIB);
    let (src_sha, tgt_sha) = (sha(&src), sha(&tgt));
    let missing = t.p("no/such/dir/clone.map");
    let o = clone(&[s(&src), s(&tgt), "--map", s(&missing)]);
    assert_exit(&o, 2);
    assert!(err(&o).contains("does not exist"), "{}", err(&o));
    assert_eq!(
        sha(&tgt),
        tgt_sha,
        "the target was written before the map was checked"
    );
    // A directory where access() says writable but no file can be created (an adversary's find:
    // the whole target was written, then the first map save failed).
    let o = clone(&[s(&src), s(&tgt), "--map", "/proc/self/fd/99"]);
    assert_exit(&o, 2);
    assert!(err(&o).contains("no file can be created"), "{}", err(&o));
    assert_eq!(
        sha(&tgt),
        tgt_sha,
        "the target was written before the map's directory was found unusable"
    );
    // The map may not be the target (or the source) itself.
    let o = clone(&[s(&src), s(&tgt), "--map", s(&tgt)]);
    assert_exit(&o, 4);
    let o = clone(&[s(&src), s(&tgt), "--map", s(&src)]);
    assert_exit(&o, 4);
    // A FIFO as map: refused without blocking.
    let fifo = t.p("fifo.map");
    sh(&format!("mkfifo {}", s(&fifo)));
    let o = run_bounded(&["clone", s(&src), s(&tgt), "--yes", "--map", s(&fifo)], 10);
    assert_exit(&o, 2);
    assert!(err(&o).contains("FIFO"), "{}", err(&o));
    assert_eq!(sha(&tgt), tgt_sha, "a refused clone wrote to its target");
    assert_eq!(sha(&src), src_sha, "the source changed");
}

// ------------------------------------ 11: a garbage --map: bounded memory, a few bytes quoted

#[test]
fn a_garbage_map_is_refused_with_bounded_memory_and_a_short_message() {
    let t = TempDir::new("map-garbage");
    let (src, tgt) = (t.p("src.img"), t.p("tgt.img"));
    random_file(&src, 4 * MIB);
    random_file(&tgt, 4 * MIB);
    let (src_sha, tgt_sha) = (sha(&src), sha(&tgt));
    // 100 MiB of NULs (sparse) and 2 GiB of NULs: no newline anywhere.
    for (name, len) in [("nul100m.map", 100 * MIB), ("nul2g.map", 2048 * MIB)] {
        let map = t.p(name);
        common::zero_file(&map, len);
        let map_sha_before = fs::metadata(&map).unwrap().len();
        let rss = t.p("rss");
        let cmd = lifeboat_cmd();
        let o = std::process::Command::new("/usr/bin/time")
            .args(["-f", "%M", "-o", s(&rss)])
            .arg(cmd.get_program())
            .args(["clone", s(&src), s(&tgt), "--yes", "--map", s(&map)])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_exit(&o, 5);
        let e = err(&o);
        assert!(
            e.len() < 1024,
            "{} bytes of stderr: {:?}...",
            e.len(),
            &e[..200.min(e.len())]
        );
        assert!(e.contains("\\x00") && e.contains("not a mapfile"), "{e}");
        let kib: u64 = fs::read_to_string(&rss)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(kib < 64 * 1024, "{name}: peak RSS {kib} KiB");
        assert_eq!(fs::metadata(&map).unwrap().len(), map_sha_before);
    }
    assert_eq!(sha(&tgt), tgt_sha, "the target was written");
    assert_eq!(sha(&src), src_sha, "the source changed");
}

// ---------------------- 7, 8, 9: images on a partition (`PARTITION:/path`), on a loop device

/// An ext4 filesystem in a file, attached to a loop device (so `label=LABEL` finds it), with
/// `dir/`, a symlink `inlink -> dir` that stays inside, `out -> OUTSIDE` (absolute, leaving the
/// filesystem) and `up -> ..`. `None` (with a message) where loop devices are unavailable.
struct Ext4Store {
    file: std::path::PathBuf,
    label: String,
    _lo: common::Loop,
}

fn ext4_store(t: &TempDir, name: &str, outside: &Path) -> Option<Ext4Store> {
    if !common::is_root() {
        eprintln!("skipping: not root (loop devices and mounts)");
        return None;
    }
    let label = format!("LB{name}{}", std::process::id() % 1_000_000);
    let content = t.p(&format!("{name}-content"));
    fs::create_dir_all(content.join("dir")).unwrap();
    std::os::unix::fs::symlink("dir", content.join("inlink")).unwrap();
    std::os::unix::fs::symlink(outside, content.join("out")).unwrap();
    std::os::unix::fs::symlink("..", content.join("up")).unwrap();
    let file = t.p(&format!("{name}.ext4"));
    sh(&format!(
        "truncate -s 48M {f} && mkfs.ext4 -q -F -L {label} -d {c} {f}",
        f = s(&file),
        c = s(&content)
    ));
    let lo = common::Loop::attach(&file)?;
    // Let udev and the kernel settle so the scan sees the filesystem.
    let _ = std::process::Command::new("udevadm").arg("settle").status();
    Some(Ext4Store {
        file,
        label,
        _lo: lo,
    })
}

impl Ext4Store {
    fn at(&self, inner: &str) -> String {
        format!("label={}:{inner}", self.label)
    }
    fn fsck(&self) {
        sh(&format!("e2fsck -fn {} >/dev/null", s(&self.file)));
    }
}

#[test]
fn images_on_a_partition_are_read_with_a_read_only_mount() {
    let t = TempDir::new("store-ro");
    let Some(st) = ext4_store(&t, "R", &t.p("outside")) else {
        return;
    };
    let disk = t.p("disk.img");
    random_file(&disk, 6 * MIB);
    let disk_sha = sha(&disk);
    create_ok(&[s(&disk), &st.at("/dir/full.lbi")]);
    st.fsck();
    // Everything that only reads: the filesystem (superblock, journal, every byte) unchanged.
    let fs_sha = sha(&st.file);
    let target = t.p("target.img");
    common::zero_file(&target, 6 * MIB);
    let out = t.p("out.raw");
    let full = st.at("/dir/full.lbi");
    for args in [
        vec!["image", "info", full.as_str()],
        vec!["image", "verify", full.as_str()],
        vec!["image", "restore", full.as_str(), s(&target), "--yes"],
        vec!["image", "export", full.as_str(), s(&out)],
    ] {
        let o = lb(&args);
        expect(&o, 0, &format!("{args:?}"));
        assert_eq!(
            sha(&st.file),
            fs_sha,
            "{args:?} wrote to the partition holding the image"
        );
    }
    assert_eq!(sha(&target), disk_sha);
    assert_eq!(sha(&out), disk_sha);
    // A parent on another partition is mounted read-only too.
    let Some(st2) = ext4_store(&t, "P", &t.p("outside")) else {
        return;
    };
    create_ok(&[s(&disk), &st2.at("/full.lbi")]);
    let p_sha = sha(&st2.file);
    let inc = t.p("inc.lbi");
    create_ok(&[s(&disk), s(&inc), "--parent", &st2.at("/full.lbi")]);
    assert_eq!(
        sha(&st2.file),
        p_sha,
        "--parent wrote to the partition holding the parent"
    );
    assert_eq!(sha(&disk), disk_sha, "the source changed");
}

#[test]
fn a_path_on_a_partition_stays_inside_it() {
    let t = TempDir::new("store-beneath");
    let outside = t.p("outside");
    fs::create_dir_all(&outside).unwrap();
    let Some(st) = ext4_store(&t, "B", &outside) else {
        return;
    };
    let disk = t.p("disk.img");
    random_file(&disk, 5 * MIB);
    let disk_sha = sha(&disk);
    let escaped = format!("/escaped-{}.lbi", std::process::id());
    // `..`: a usage error, nothing mounted or written.
    let fs_sha = sha(&st.file);
    let dotdot = st.at(&format!("/../../../..{escaped}"));
    let o = lb(&["image", "create", s(&disk), &dotdot]);
    expect(&o, 2, "a path with '..'");
    assert!(err(&o).contains(".."), "{}", err(&o));
    assert!(!Path::new(&escaped).exists(), "{escaped} was written");
    assert_eq!(sha(&st.file), fs_sha, "refused before mounting");
    // A symlink out of the filesystem (absolute, or `..`): refused, nothing written outside.
    for inner in ["/out/x.lbi", "/up/x.lbi", "/out/deeper/x.lbi"] {
        let o = lb(&["image", "create", s(&disk), &st.at(inner)]);
        expect(&o, 4, &format!("create at {inner}"));
        assert!(err(&o).contains("leads out of"), "{}", err(&o));
        let o = lb(&["image", "info", &st.at(inner)]);
        expect(&o, 4, &format!("info at {inner}"));
    }
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "written outside the partition"
    );
    assert!(!t.path().join("x.lbi").exists());
    // A symlink that stays inside is followed.
    create_ok(&[s(&disk), &st.at("/inlink/y.lbi")]);
    expect(
        &lb(&["image", "verify", &st.at("/dir/y.lbi")]),
        0,
        "the image via the real dir",
    );
    st.fsck();
    assert_eq!(sha(&disk), disk_sha, "the source changed");
}

#[test]
fn a_relative_or_empty_path_on_a_partition_is_a_usage_error() {
    let t = TempDir::new("store-rel");
    let disk = t.p("disk.img");
    random_file(&disk, 4 * MIB);
    let disk_sha = sha(&disk);
    for (arg, shown) in [
        ("label=ADVROOT:rel.lbi", "label=ADVROOT:/rel.lbi"),
        ("label=ADVROOT:", "label=ADVROOT:/"),
        ("sdz9:pc/x.lbi", "sdz9:/pc/x.lbi"),
    ] {
        let o = lifeboat_cmd()
            .args(["image", "create", s(&disk), arg])
            .current_dir(t.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        expect(&o, 2, arg);
        assert!(err(&o).contains(shown), "{arg}: {}", err(&o));
        let names: Vec<String> = fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["disk.img".to_string()],
            "{arg} wrote a file in the cwd"
        );
    }
    // A file in the cwd whose name has a ':' is written ./NAME.
    let o = lifeboat_cmd()
        .args(["image", "create", s(&disk), "./label=ADVROOT:rel.lbi"])
        .current_dir(t.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    expect(&o, 0, "./label=ADVROOT:rel.lbi");
    assert!(t.p("label=ADVROOT:rel.lbi").is_file());
    assert_eq!(sha(&disk), disk_sha, "the source changed");
}

// ------------------- the unattended contract: every clone/image job hands over its report object

#[test]
fn every_clone_and_image_job_hands_its_report_object_to_the_runner() {
    let t = TempDir::new("report");
    let disk = t.p("disk.img");
    random_file(&disk, 4 * MIB);
    let disk_sha = sha(&disk);
    let (img, tgt, raw) = (t.p("r.lbi"), t.p("tgt.img"), t.p("out.raw"));
    common::zero_file(&tgt, 4 * MIB);
    let rep = t.p("report.json");
    let run = |args: &[&str]| -> (Output, serde_json::Value) {
        let _ = fs::remove_file(&rep);
        let o = lifeboat_cmd()
            .args(args)
            .env("LIFEBOAT_REPORT", &rep)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = fs::read_to_string(&rep)
            .unwrap_or_else(|e| panic!("{args:?} handed no report ({e}): {}", err(&o)));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v.is_object(), "{args:?}: {v}");
        (o, v)
    };
    // Without --json: stdout is for a person (or empty), the report object is handed over.
    let (o, v) = run(&["clone", s(&disk), s(&tgt), "--yes"]);
    assert_exit(&o, 0);
    assert!(o.stdout.is_empty());
    assert_eq!(v["bad_ranges"], serde_json::json!([]), "{v}");
    assert_eq!(v["exit_code"], 0);
    let (o, v) = run(&["image", "create", s(&disk), s(&img)]);
    assert_exit(&o, 0);
    assert_eq!(v["disk_size_bytes"], 4 * MIB, "{v}");
    assert!(v["bad_ranges"].is_array(), "{v}");
    let (o, v) = run(&["image", "verify", s(&img)]);
    assert_exit(&o, 0);
    assert_eq!(v["ok"], true, "{v}");
    let (o, v) = run(&["image", "info", s(&img)]);
    assert_exit(&o, 0);
    assert!(!o.stdout.is_empty(), "info prints its text for a person");
    assert!(v["bad_ranges"].is_array() && v["uuid"].is_string(), "{v}");
    let (o, v) = run(&["image", "restore", s(&img), s(&tgt), "--yes"]);
    assert_exit(&o, 0);
    assert_eq!(v["media_hash_verified"], true, "{v}");
    let (o, v) = run(&["image", "export", s(&img), s(&raw)]);
    assert_exit(&o, 0);
    assert!(v["bad_ranges"].is_array(), "{v}");
    // With --json: the same object on stdout and handed over.
    let (o, v) = run(&["image", "verify", s(&img), "--json"]);
    assert_eq!(json(&o), v);
    // Failures: the error object (kind, message, exit code), a usage error included.
    let (o, v) = run(&["clone", s(&disk), s(&disk), "--yes"]);
    assert_exit(&o, 4);
    assert_eq!(v["ok"], false);
    assert_eq!(v["exit_code"], 4);
    assert_eq!(v["error"]["kind"], "refused", "{v}");
    let (o, v) = run(&["image", "create", s(&disk)]);
    assert_exit(&o, 2);
    assert_eq!(v["error"]["kind"], "invalid_input", "{v}");
    assert_eq!(v["exit_code"], 2);
    assert_eq!(sha(&disk), disk_sha, "the source changed");
}
