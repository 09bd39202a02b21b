//! Images you can trust on other storage: the verify after writing of `image create` (and
//! `image copy`) re-reads what the storage holds, not what the page cache remembers; `image copy`
//! onto plain paths and ext4 on loop devices; chains that resolve through either copy.
//!
//! The storage that silently corrupts is an ext4 filesystem on a loop device whose backing file
//! is changed underneath, at the physical place of one image byte (found with `filefrag`),
//! after the image was written and fsynced and while its pages are still cached: a verify that
//! read the page cache would pass; one that reads the media finds the change. The job waits at
//! that moment through the debug-build hook `LIFEBOAT_TEST_PAUSE_BEFORE_VERIFY`. With the
//! image's pages also mapped by another process (a `python3` mmap, as an indexer or a backup
//! tool holds them), dropping the page cache does not drop them: only a verify that reads
//! around the cache (O_DIRECT) finds the change.
//!
//! Encrypted images: verified after writing with the job's key (every record's tag, CRC and
//! keyed hash); copied as ciphertext, verified as images with `--passphrase-file`, compared
//! byte for byte without it; a wrong passphrase refused before anything is written.
mod common;
use common::*;
use lifeboat::image::crypt::Keys;
use lifeboat::image::format::Kind;
use lifeboat::image::Image;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A 24 MiB source disk: incompressible data in some MiB, a pattern in others, zeros elsewhere.
fn source(t: &TempDir) -> PathBuf {
    let p = t.p("src.raw");
    let mut b = vec![0u8; 24 * MIB as usize];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for (c, chunk) in b.chunks_mut(MIB as usize).enumerate() {
        match c % 3 {
            0 => chunk.iter_mut().for_each(|v| *v = xorshift(&mut x) as u8),
            1 => chunk
                .iter_mut()
                .enumerate()
                .for_each(|(j, v)| *v = (j / 4096 + c) as u8),
            _ => {}
        }
    }
    std::fs::write(&p, &b).unwrap();
    p
}

/// An ext4 filesystem of `mib` MiB in a file of `t`, mounted (None, with a message, where
/// loop devices or mounting are unavailable).
fn ext4_store(t: &TempDir, mib: u64) -> Option<(PathBuf, Mounted)> {
    if !is_root() {
        eprintln!("skipping: needs root for loop devices and mounts");
        return None;
    }
    let f = t.p("store.ext4");
    zero_file(&f, mib * MIB);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&f));
    let m = Mounted::ext4_in(&f, t, 0, mib * MIB)?;
    Some((f, m))
}

/// Byte offset inside the filesystem's device of byte `off` of `file` (FIEMAP, via filefrag).
fn physical_offset(file: &Path, off: u64) -> u64 {
    let out = run(Command::new("filefrag").arg("-v").arg(file));
    let bs: u64 = out
        .split("blocks of ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no block size in {out}"));
    let want = off / bs;
    for l in out.lines() {
        // "   0:        0..     255:      34816..     35071:    256: ..."
        let f: Vec<&str> = l.split(':').map(str::trim).collect();
        if f.len() < 4 || f[0].parse::<u64>().is_err() {
            continue;
        }
        let range = |s: &str| -> Option<(u64, u64)> {
            let (a, b) = s.split_once("..")?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        };
        let (Some((la, lb)), Some((pa, _))) = (range(f[1]), range(f[2])) else {
            continue;
        };
        if (la..=lb).contains(&want) {
            return (pa + want - la) * bs + off % bs;
        }
    }
    panic!("byte {off} of {} is in no extent: {out}", file.display());
}

/// A byte inside the stored payload of the first stored chunk of the image at `img`: its offset
/// in the (first volume) file.
fn payload_byte(img: &Path) -> u64 {
    payload_byte_with(img, &Keys::none())
}

/// [`payload_byte`] of an image that may be encrypted (opened with `keys`): inside the
/// record's ciphertext.
fn payload_byte_with(img: &Path, keys: &Keys) -> u64 {
    let mut im = Image::open_with(img, keys).unwrap();
    let n = im.header.chunk_count();
    let e = (0..n)
        .map(|i| im.entry(i).unwrap())
        .find(|e| {
            matches!(e.kind, Kind::Raw | Kind::Lz4 | Kind::Zstd | Kind::Group) && e.volume == 1
        })
        .expect("a stored chunk");
    e.offset + e.len as u64 / 2
}

/// Flips byte `off` of `file` (an ext4 store's backing file), returning its old value.
fn flip(file: &Path, off: u64) -> u8 {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], off).unwrap();
    f.sync_all().unwrap();
    b[0]
}

/// Maps every page of `file` in another process (python3's mmap, pages faulted in) until
/// the returned child's stdin is closed: such pages stay in the page cache whatever
/// `POSIX_FADV_DONTNEED` asks.
fn map_pages(file: &Path) -> std::process::Child {
    use std::io::BufRead;
    const PY: &str = "import mmap, sys\n\
        f = open(sys.argv[1], 'rb')\n\
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n\
        sum(m[i] for i in range(0, len(m), 4096))\n\
        print('mapped', flush=True)\n\
        sys.stdin.read()\n";
    let mut c = Command::new("python3")
        .args(["-c", PY])
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "mapped",
        "python3 could not map {}",
        file.display()
    );
    c
}

/// Runs `lifeboat ARGS` paused before its verify after writing; once paused, flips on the
/// store's backing file `store` the byte of the written image `img` that `which` picks, checks
/// the image still reads as written through the page cache, and lets the job go on. With
/// `mapped`, the image's pages are mapped by another process meanwhile ([`map_pages`]).
fn corrupt_under_the_cache(
    t: &TempDir,
    args: &[&str],
    store: &Path,
    img: &Path,
    which: impl Fn(&Path) -> u64,
    mapped: bool,
) -> std::process::Output {
    let hook = t.p("hook");
    std::fs::create_dir_all(&hook).unwrap();
    let child = lifeboat_cmd()
        .args(args)
        .env("LIFEBOAT_TEST_PAUSE_BEFORE_VERIFY", &hook)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(600);
    while !hook.join("ready").exists() {
        assert!(Instant::now() < until, "the job never reached its verify");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pin = mapped.then(|| map_pages(img));
    let off = which(img);
    // The page cache holds what was written (the volumes are written around it with O_DIRECT
    // where the filesystem does that: one read through it puts the written byte there, as a
    // buffered writer would have left it).
    let mut b = [0u8; 1];
    std::fs::File::open(img)
        .unwrap()
        .read_exact_at(&mut b, off)
        .unwrap();
    let old = flip(store, physical_offset(img, off));
    assert_eq!(
        b[0], old,
        "the byte read before the flip is the written one"
    );
    // A verify reading the page cache would find nothing wrong.
    std::fs::File::open(img)
        .unwrap()
        .read_exact_at(&mut b, off)
        .unwrap();
    assert_eq!(
        b[0], old,
        "the image's pages were not cached: this test proves nothing"
    );
    std::fs::write(hook.join("go"), b"").unwrap();
    let o = child.wait_with_output().unwrap();
    if let Some(mut p) = pin {
        drop(p.stdin.take());
        let _ = p.wait();
    }
    o
}

#[test]
fn create_verifies_what_the_storage_returns_by_default() {
    let t = TempDir::new("verify-after-write");
    let src = source(&t);
    let want = sha256(&src);
    // On a plain path: verified (true), or skipped with --no-verify (null).
    let img = t.p("plain.lbi");
    let o = lifeboat(&["image", "create", s(&src), s(&img), "--json"]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["ok"], true, "{r}");
    let o = lifeboat(&[
        "image",
        "create",
        s(&src),
        s(&img),
        "--force",
        "--no-verify",
        "--json",
    ]);
    assert_exit(&o, 0);
    assert_eq!(json(&o)["verified"], serde_json::Value::Null);

    // On ext4 whose media changes under the written image: exit 5, not reported as good.
    let Some((store, m)) = ext4_store(&t, 96) else {
        return;
    };
    let img = m.mp.join("bad.lbi");
    let o = corrupt_under_the_cache(
        &t,
        &["image", "create", s(&src), s(&img), "--json"],
        &store,
        &img,
        payload_byte,
        false,
    );
    assert_exit(&o, 5);
    let r = json(&o);
    assert_eq!(r["verified"], false, "{r}");
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["verify_problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("CRC32 mismatch")),
        "{r}"
    );
    assert!(
        stderr(&o).contains("FAILED its verification"),
        "{}",
        stderr(&o)
    );
    assert_eq!(sha256(&src), want, "the source changed");
    drop(m);
}

/// Rewrites MiB `mib` of `disk` with new incompressible bytes (`seed`).
fn change(disk: &Path, mib: u64, seed: u64) {
    let b = xorshift_bytes(MIB as usize, seed | 1);
    let f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    f.write_all_at(&b, mib * MIB).unwrap();
}

/// Every file of `dir` with its sha256 (the images a copy reads must not change).
fn shas(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let h = sha256(&p);
            (p, h)
        })
        .collect();
    v.sort();
    v
}

/// Restores `img` into a new file of `len` bytes and returns its sha256.
fn restored(t: &TempDir, img: &Path, len: u64) -> String {
    let out = t.p("restored.raw");
    zero_file(&out, len);
    let o = lifeboat(&["image", "restore", s(img), s(&out), "--yes", "--json"]);
    assert_exit(&o, 0);
    let h = sha256(&out);
    std::fs::remove_file(&out).unwrap();
    h
}

/// A full image (split into 4 MiB volumes) and an incremental of a changed disk in `t/a`.
/// Returns (full, inc, sha256 of the disk at the full, at the incremental).
fn chain_in_a(t: &TempDir) -> (PathBuf, PathBuf, String, String) {
    let src = source(t);
    let a = t.p("a");
    std::fs::create_dir_all(&a).unwrap();
    let full = a.join("full.lbi");
    assert_exit(
        &lifeboat(&["image", "create", s(&src), s(&full), "--split", "4M"]),
        0,
    );
    let at_full = sha256(&src);
    change(&src, 5, 7);
    change(&src, 17, 9);
    let inc = a.join("inc.lbi");
    assert_exit(
        &lifeboat(&["image", "create", s(&src), s(&inc), "--parent", s(&full)]),
        0,
    );
    (full, inc, at_full, sha256(&src))
}

#[test]
fn a_chain_copied_elsewhere_restores_from_the_second_copy_alone() {
    let t = TempDir::new("copy-chain");
    let (full, inc, at_full, at_inc) = chain_in_a(&t);
    let size = std::fs::metadata(t.p("src.raw")).unwrap().len();
    assert!(
        Image::open(&full).unwrap().volume_paths().len() >= 3,
        "the full image is split"
    );
    let before = shas(&t.p("a"));
    let b = t.p("b");
    std::fs::create_dir_all(&b).unwrap();
    // The chain into a directory: every volume byte for byte, the same UUIDs, verified.
    let o = lifeboat(&[
        "image",
        "copy",
        s(&inc),
        &format!("{}/", s(&b)),
        "--chain",
        "--json",
    ]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["images"].as_array().unwrap().len(), 2, "{r}");
    for (p, h) in &before {
        assert_eq!(&sha256(p), h, "{} changed", p.display());
        assert_eq!(
            &sha256(&b.join(p.file_name().unwrap())),
            h,
            "copy of {}",
            p.display()
        );
    }
    assert_eq!(shas(&t.p("a")), before, "the images copied changed");
    let info = json(&lifeboat(&[
        "image",
        "info",
        s(&b.join("inc.lbi")),
        "--json",
    ]));
    assert_eq!(
        info["uuid"],
        json(&lifeboat(&["image", "info", s(&inc), "--json"]))["uuid"]
    );
    // Again: the parent is there already and is kept; the image itself exists (refused
    // without --force, nothing written), replaced with --force.
    let o = lifeboat(&["image", "copy", s(&inc), s(&b), "--chain", "--json"]);
    assert_exit(&o, 4);
    let o = lifeboat(&[
        "image",
        "copy",
        s(&inc),
        s(&b),
        "--chain",
        "--force",
        "--json",
    ]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert!(r["images"][0]["skipped"].is_string(), "{r}");
    assert_eq!(r["images"][1]["verified"], true, "{r}");

    // The first copy's full image gone: the second copy restores both points on its own.
    let aside = t.p("aside");
    std::fs::create_dir_all(&aside).unwrap();
    for v in Image::open(&full).unwrap().volume_paths() {
        std::fs::rename(&v, aside.join(v.file_name().unwrap())).unwrap();
    }
    assert_exit(&lifeboat(&["image", "verify", s(&inc)]), 5);
    assert_eq!(restored(&t, &b.join("inc.lbi"), size), at_inc);
    assert_eq!(restored(&t, &b.join("full.lbi"), size), at_full);

    // A parent copied under another name is found by its UUID beside the incremental.
    let c = t.p("c");
    std::fs::create_dir_all(&c).unwrap();
    let monday = c.join("monday.lbi");
    assert_exit(
        &lifeboat(&["image", "copy", s(&aside.join("full.lbi")), s(&monday)]),
        0,
    );
    assert_exit(&lifeboat(&["image", "copy", s(&inc), s(&c)]), 0);
    let v = json(&lifeboat(&[
        "image",
        "verify",
        s(&c.join("inc.lbi")),
        "--json",
    ]));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["chain"][1]["path"], s(&monday), "{v}");
    assert_eq!(restored(&t, &c.join("inc.lbi"), size), at_inc);
}

#[test]
fn copy_follows_the_output_rules() {
    let t = TempDir::new("copy-rules");
    let (full, _inc, _, _) = chain_in_a(&t);
    let before = shas(&t.p("a"));
    // Onto the image itself, through a hard link of it: refused by storage identity.
    let link = t.p("link.lbi");
    std::fs::hard_link(&full, &link).unwrap();
    let o = lifeboat(&["image", "copy", s(&full), s(&link), "--force"]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("the same file"), "{}", stderr(&o));
    // Onto another file: refused without --force; a directory of the name is refused always.
    let other = t.p("other.lbi");
    std::fs::write(&other, b"something else").unwrap();
    assert_exit(&lifeboat(&["image", "copy", s(&full), s(&other)]), 4);
    assert_eq!(std::fs::read(&other).unwrap(), b"something else");
    assert_exit(
        &lifeboat(&["image", "copy", s(&full), s(&other), "--force"]),
        0,
    );
    assert_eq!(sha256(&other), sha256(&full));
    assert_eq!(shas(&t.p("a")), before);
    // An incomplete image is not copied.
    let part = t.p("half.lbi.partial");
    std::fs::copy(&full, &part).unwrap();
    let o = lifeboat(&["image", "copy", s(&t.p("half.lbi")), s(&t.p("x.lbi"))]);
    assert_exit(&o, 5);
    assert!(!t.p("x.lbi").exists());
}

#[test]
fn copy_onto_storage_that_corrupts_is_caught() {
    let t = TempDir::new("copy-corrupt");
    let src = source(&t);
    let img = t.p("img.lbi");
    assert_exit(&lifeboat(&["image", "create", s(&src), s(&img)]), 0);
    let want = sha256(&img);
    // A writer that flips a byte (debug builds' hook): the read-back finds it; nothing is left.
    let at = payload_byte(&img);
    let dest = t.p("copy.lbi");
    let o = lifeboat_cmd()
        .args(["image", "copy", s(&img), s(&dest), "--json"])
        .env("LIFEBOAT_TEST_CORRUPT_WRITE", at.to_string())
        .output()
        .unwrap();
    assert_exit(&o, 5);
    let r = json(&o);
    assert_eq!(r["verified"], false, "{r}");
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["verify_problems"][0]
            .as_str()
            .is_some_and(|p| p.contains(&format!("first at byte {at}"))),
        "{r}"
    );
    assert!(!dest.exists() && !t.p("copy.lbi.partial").exists());
    // --no-verify does not look: the bad copy is kept, and `image verify` finds it.
    let o = lifeboat_cmd()
        .args(["image", "copy", s(&img), s(&dest), "--no-verify", "--json"])
        .env("LIFEBOAT_TEST_CORRUPT_WRITE", at.to_string())
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_eq!(json(&o)["verified"], serde_json::Value::Null);
    assert_exit(&lifeboat(&["image", "verify", s(&dest)]), 5);
    std::fs::remove_file(&dest).unwrap();

    // Storage whose media changes under the copy while its pages are still cached; then
    // also mapped by another process, so that only reading around the cache sees it.
    let Some((store, m)) = ext4_store(&t, 96) else {
        return;
    };
    let dest = m.mp.join("copy.lbi");
    for mapped in [false, true] {
        let o = corrupt_under_the_cache(
            &t,
            &["image", "copy", s(&img), s(&dest), "--json"],
            &store,
            &m.mp.join("copy.lbi.partial"),
            payload_byte,
            mapped,
        );
        eprintln!("the copy's pages mapped by another process: {mapped}");
        assert_exit(&o, 5);
        let r = json(&o);
        assert_eq!(r["verified"], false, "mapped {mapped}: {r}");
        assert!(
            r["verify_problems"][0]
                .as_str()
                .is_some_and(|p| p.contains("differs from")),
            "{r}"
        );
        assert!(!dest.exists(), "a copy that failed its verify got its name");
        std::fs::remove_file(t.p("hook/ready")).unwrap();
        std::fs::remove_file(t.p("hook/go")).unwrap();
    }
    assert_eq!(sha256(&img), want, "the image copied changed");
    drop(m);
}

/// An ext4 filesystem labelled `label` in a file of `t`, on a loop device: the partition a
/// `label=...:/path` names (None where loop devices are unavailable).
fn labelled_ext4(t: &TempDir, label: &str) -> Option<(PathBuf, Loop)> {
    if !is_root() {
        eprintln!("skipping: needs root for loop devices");
        return None;
    }
    let f = t.p(&format!("{label}.ext4"));
    zero_file(&f, 96 * MIB);
    run(Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            "-L",
            label,
        ])
        .arg(&f));
    let l = Loop::attach(&f)?;
    Some((f, l))
}

#[test]
fn copy_onto_a_partition_lifeboat_mounts_itself() {
    let t = TempDir::new("copy-store");
    let (_full, inc, _, at_inc) = chain_in_a(&t);
    let size = std::fs::metadata(t.p("src.raw")).unwrap().len();
    let before = shas(&t.p("a"));
    let label = format!("LBC{}", std::process::id() % 100_000);
    let Some((_f, lp)) = labelled_ext4(&t, &label) else {
        return;
    };
    let o = lifeboat(&[
        "image",
        "copy",
        s(&inc),
        &format!("label={label}:/second/"),
        "--chain",
        "--json",
    ]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(
        r["destination"],
        format!("label={label}:/second/inc.lbi"),
        "{r}"
    );
    assert_eq!(shas(&t.p("a")), before);
    // Lifeboat unmounted it; mounted here, the second copy restores on its own.
    let mp = t.p("m2");
    std::fs::create_dir_all(&mp).unwrap();
    run(Command::new("mount").arg(&lp.dev).arg(&mp));
    let h = restored(&t, &mp.join("second/inc.lbi"), size);
    let full_vols = std::fs::read_dir(mp.join("second")).unwrap().count();
    run(Command::new("umount").arg(&mp));
    assert_eq!(h, at_inc);
    assert!(
        full_vols >= 4,
        "every volume of the parent and the image: {full_vols}"
    );
    // The image's own partition is not a place for its copy: refused before anything is mounted.
    let o = lifeboat(&[
        "image",
        "copy",
        &format!("label={label}:/second/inc.lbi"),
        &format!("label={label}:/third/"),
    ]);
    assert_exit(&o, 4);
}

const PASS: &str = "a second copy passphrase";

/// `lifeboat ARGS` with a cheap KDF (Argon2id 64 KiB, one pass: these tests are about the
/// data path, not the KDF's cost).
fn lbk(args: &[&str]) -> std::process::Output {
    lifeboat_cmd()
        .args(args)
        .env("LIFEBOAT_KDF_PARAMS", "64,1,1")
        .output()
        .unwrap()
}

/// A passphrase file in `t`.
fn passfile(t: &TempDir, name: &str, text: &str) -> PathBuf {
    let p = t.p(name);
    std::fs::write(&p, format!("{text}\n")).unwrap();
    p
}

#[test]
fn an_encrypted_create_is_verified_after_writing_with_its_key() {
    let t = TempDir::new("verify-encrypted");
    let src = source(&t);
    let want = sha256(&src);
    let pw = passfile(&t, "pw", PASS);
    let img = t.p("enc.lbi");
    let o = lbk(&[
        "image",
        "create",
        s(&src),
        s(&img),
        "--encrypt",
        "--passphrase-file",
        s(&pw),
        "--json",
    ]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(r["encrypted"], true, "{r}");
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(
        r["verify_problems"].as_array().map(Vec::len),
        Some(0),
        "{r}"
    );
    assert_eq!(sha256(&src), want, "the source changed");
    // An incremental of it is verified after writing too (its parent opened with the same key).
    let inc = t.p("inc.lbi");
    change(&src, 4, 3);
    let o = lbk(&[
        "image",
        "create",
        s(&src),
        s(&inc),
        "--parent",
        s(&img),
        "--passphrase-file",
        s(&pw),
        "--json",
    ]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(
        (r["encrypted"].clone(), r["verified"].clone()),
        (true.into(), true.into()),
        "{r}"
    );

    // On ext4 whose media changes under the written image: the changed record does not
    // authenticate; exit 5, not reported as good.
    let Some((store, m)) = ext4_store(&t, 96) else {
        return;
    };
    let bad = m.mp.join("bad.lbi");
    let keys = Keys::passphrase(PASS.as_bytes());
    let o = corrupt_under_the_cache(
        &t,
        &[
            "image",
            "create",
            s(&src),
            s(&bad),
            "--encrypt",
            "--passphrase-file",
            s(&pw),
            "--json",
        ],
        &store,
        &bad,
        |p| payload_byte_with(p, &keys),
        false,
    );
    assert_exit(&o, 5);
    let r = json(&o);
    assert_eq!(r["verified"], false, "{r}");
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["verify_problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("does not authenticate")),
        "{r}"
    );
    drop(m);
}

/// Restores the encrypted `img` (passphrase file `pw`) into a new file of `len` bytes and
/// returns its sha256.
fn restored_enc(t: &TempDir, img: &Path, pw: &Path, len: u64) -> String {
    let out = t.p("restored.raw");
    zero_file(&out, len);
    let o = lbk(&[
        "image",
        "restore",
        s(img),
        s(&out),
        "--yes",
        "--passphrase-file",
        s(pw),
        "--json",
    ]);
    assert_exit(&o, 0);
    let h = sha256(&out);
    std::fs::remove_file(&out).unwrap();
    h
}

#[test]
fn an_encrypted_chain_copies_as_ciphertext_and_verifies_with_its_key() {
    let t = TempDir::new("copy-encrypted");
    let src = source(&t);
    let size = std::fs::metadata(&src).unwrap().len();
    let pw = passfile(&t, "pw", PASS);
    let a = t.p("a");
    std::fs::create_dir_all(&a).unwrap();
    let full = a.join("full.lbi");
    let create = |args: &[&str]| {
        let mut v = vec!["image", "create"];
        v.extend_from_slice(args);
        v.extend_from_slice(&["--passphrase-file", s(&pw)]);
        assert_exit(&lbk(&v), 0);
    };
    create(&[s(&src), s(&full), "--split", "4M", "--encrypt"]);
    change(&src, 5, 7);
    let inc = a.join("inc.lbi");
    create(&[s(&src), s(&inc), "--parent", s(&full)]);
    let at_inc = sha256(&src);
    let before = shas(&a);

    // With the passphrase: every volume byte for byte, and verified as images.
    let b = t.p("b");
    std::fs::create_dir_all(&b).unwrap();
    let o = lbk(&[
        "image",
        "copy",
        s(&inc),
        &format!("{}/", s(&b)),
        "--chain",
        "--verify",
        "--passphrase-file",
        s(&pw),
        "--json",
    ]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["verify_level"], "image", "{r}");
    assert_eq!(r["images"].as_array().unwrap().len(), 2, "{r}");
    for (p, h) in &before {
        assert_eq!(
            &sha256(&b.join(p.file_name().unwrap())),
            h,
            "copy of {}",
            p.display()
        );
    }
    assert_eq!(shas(&a), before, "the images copied changed");
    assert_eq!(restored_enc(&t, &b.join("inc.lbi"), &pw, size), at_inc);

    // Without it: copied all the same (the parent found by its UUID: its path is sealed) and
    // compared byte for byte only, which the report says.
    let c = t.p("c");
    std::fs::create_dir_all(&c).unwrap();
    let o = lbk(&["image", "copy", s(&inc), s(&c), "--chain", "--json"]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["verify_level"], "bytes", "{r}");
    assert_eq!(shas(&c).len(), before.len(), "{r}");
    for (p, h) in &before {
        assert_eq!(
            &sha256(&c.join(p.file_name().unwrap())),
            h,
            "copy of {}",
            p.display()
        );
    }
    // A destination that corrupts a byte is caught either way; the failed copy is removed.
    let at = payload_byte_with(&inc, &Keys::passphrase(PASS.as_bytes()));
    for with_key in [true, false] {
        let d = t.p(&format!("d-{with_key}"));
        std::fs::create_dir_all(&d).unwrap();
        let mut args = vec!["image", "copy", s(&inc), s(&d), "--json"];
        if with_key {
            args.extend_from_slice(&["--passphrase-file", s(&pw)]);
        }
        let o = lifeboat_cmd()
            .args(&args)
            .env("LIFEBOAT_KDF_PARAMS", "64,1,1")
            .env("LIFEBOAT_TEST_CORRUPT_WRITE", at.to_string())
            .output()
            .unwrap();
        assert_exit(&o, 5);
        let r = json(&o);
        assert_eq!(r["verified"], false, "{r}");
        assert!(
            r["verify_problems"][0]
                .as_str()
                .is_some_and(|p| p.contains(&format!("first at byte {at}"))),
            "{r}"
        );
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            0,
            "a failed copy was left"
        );
    }
    // A wrong passphrase: refused (exit 5) before anything is written.
    let wrong = passfile(&t, "wrong", "not the passphrase");
    let e = t.p("e");
    std::fs::create_dir_all(&e).unwrap();
    let o = lbk(&[
        "image",
        "copy",
        s(&inc),
        s(&e),
        "--chain",
        "--passphrase-file",
        s(&wrong),
    ]);
    assert_exit(&o, 5);
    assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_dir(&e).unwrap().count(),
        0,
        "something was written"
    );
    // A damaged image copied with its key: byte for byte the same, but not a good image.
    let damaged = t.p("damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    let dimg = damaged.join("full.lbi");
    for v in Image::open_with(&full, &Keys::locked())
        .unwrap()
        .volume_paths()
    {
        std::fs::copy(&v, damaged.join(v.file_name().unwrap())).unwrap();
    }
    let at = payload_byte_with(&dimg, &Keys::passphrase(PASS.as_bytes()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dimg)
        .unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 1], at).unwrap();
    let out = t.p("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = lbk(&[
        "image",
        "copy",
        s(&dimg),
        s(&out),
        "--passphrase-file",
        s(&pw),
        "--json",
    ]);
    assert_exit(&o, 5);
    let r = json(&o);
    assert_eq!(r["verified"], false, "{r}");
    assert!(
        r["verify_problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("does not authenticate")),
        "{r}"
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "a failed copy was left"
    );
}
