//! Encrypted images end to end: full and incremental round trips (restore and export equal the
//! source, which is unchanged), no 4 KiB block of a patterned disk anywhere in the encrypted
//! files (while an unencrypted image of the same disk does show them: the search can fail),
//! every single-byte change of a small encrypted image caught by verify, a wrong passphrase
//! refused with nothing written (verify, restore, export, an incremental, a resumed create), and
//! key slots added and removed. The KDF runs with cheap parameters (`LIFEBOAT_KDF_PARAMS`).
use lifeboat::image::crypt::Keys;
use lifeboat::jobs::{Cancel, NoProgress};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{assert_exit, json, lifeboat_cmd, s, sha256, stderr, xorshift, TempDir, CHEAP_KDF};

const PASS: &str = "correct horse battery staple";
const BLOCK: usize = 4096;

/// The cipher of new images in these tests unless one says otherwise (what this CPU gets by
/// default when it has AES-NI), and the other one (images made before AES-256-GCM existed).
const GCM: &str = "aes-256-gcm";
const XCHACHA: &str = "xchacha20-poly1305";

/// `lifeboat ARGS` with the cheap KDF, new images sealed with AES-256-GCM.
fn lb(args: &[&str]) -> Output {
    lb_in(GCM, args)
}

/// `lifeboat ARGS` with the cheap KDF, new images sealed with `cipher`.
fn lb_in(cipher: &str, args: &[&str]) -> Output {
    lifeboat_cmd()
        .args(args)
        .env("LIFEBOAT_KDF_PARAMS", CHEAP_KDF)
        .env("LIFEBOAT_CIPHER", cipher)
        .output()
        .unwrap()
}

/// The arguments of an encrypted create: `image create SRC IMG --encrypt --passphrase-file PW`
/// and then `extra`.
fn enc_create<'a>(src: &'a Path, img: &'a Path, pw: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "image",
        "create",
        s(src),
        s(img),
        "--encrypt",
        "--passphrase-file",
        s(pw),
    ];
    a.extend_from_slice(extra);
    a
}

/// A disk of `mib` MiB made of 4 KiB blocks, each starting with its own tag
/// (`LBPATTERN-<n>-`): in every fourth MiB the rest of each block is pseudo-random (stored raw:
/// incompressible), in the others repeated text (compressed), and one MiB in eight is zeros.
fn pattern_disk(path: &Path, mib: usize, seed: u64) -> Vec<u8> {
    let mut d = vec![0u8; mib << 20];
    let mut x = seed | 1;
    for (n, b) in d.chunks_mut(BLOCK).enumerate() {
        let chunk = (n * BLOCK) >> 20;
        if chunk % 8 == 5 {
            continue;
        }
        let tag = format!("LBPATTERN-{seed}-{n:08}-");
        b[..tag.len()].copy_from_slice(tag.as_bytes());
        if chunk % 4 == 1 {
            for w in b[tag.len()..].chunks_mut(8) {
                let r = xorshift(&mut x).to_le_bytes();
                w.copy_from_slice(&r[..w.len()]);
            }
        } else {
            let text = format!("block {n} of a test disk, seed {seed}; ");
            for (k, c) in b[tag.len()..].iter_mut().enumerate() {
                *c = text.as_bytes()[k % text.len()];
            }
        }
    }
    std::fs::write(path, &d).unwrap();
    d
}

/// `image export IMAGE OUT --passphrase-file PW`, asserting it succeeded.
#[track_caller]
fn export(image: &Path, out: &Path, pw: &Path) {
    assert_exit(
        &lb(&[
            "image",
            "export",
            s(image),
            s(out),
            "--passphrase-file",
            s(pw),
        ]),
        0,
    );
}

/// Exports the encrypted `image` (with `pw`) into `t`'s `out.raw` and asserts it holds
/// exactly `data`.
#[track_caller]
fn assert_exports(t: &TempDir, image: &Path, pw: &Path, data: &[u8], what: &str) {
    let raw = t.p("out.raw");
    export(image, &raw, pw);
    assert!(std::fs::read(&raw).unwrap() == data, "{what}");
}

fn passfile(t: &TempDir, name: &str, text: &str) -> PathBuf {
    let p = t.p(name);
    std::fs::write(&p, format!("{text}\n")).unwrap();
    p
}

/// The tagged 4 KiB blocks of `disk` (all but zeros and the few a test overwrote) found
/// anywhere in `file`, at any byte offset: each `LBPATTERN-` tag found in the file is compared
/// with the blocks.
fn blocks_found_in(disk: &[u8], file: &[u8]) -> usize {
    let blocks: HashSet<&[u8]> = disk
        .chunks(BLOCK)
        .filter(|b| b.starts_with(b"LBPATTERN-"))
        .collect();
    assert!(
        blocks.len() * BLOCK * 10 > disk.len() * 8,
        "too few tagged blocks"
    );
    let mut found = 0;
    for at in 0..file.len().saturating_sub(BLOCK - 1) {
        if file[at] == b'L'
            && file[at..].starts_with(b"LBPATTERN-")
            && blocks.contains(&file[at..at + BLOCK])
        {
            found += 1;
        }
    }
    found
}

#[test]
fn encrypted_full_and_incremental_round_trip_and_hide_every_block() {
    round_trip(GCM, XCHACHA);
}

/// An image of the cipher written before AES-256-GCM existed still restores, and its
/// incremental keeps its cipher even where new images get the other one.
#[test]
fn an_xchacha20_poly1305_image_round_trips_and_its_incremental_keeps_its_cipher() {
    round_trip(XCHACHA, GCM);
}

/// The round trip of a full image sealed with `cipher` and of its incremental, made where new
/// images would get `other`.
fn round_trip(cipher: &str, other: &str) {
    let t = TempDir::new(&format!("crypt-rt-{cipher}"));
    let disk = t.p("disk.img");
    let data = pattern_disk(&disk, 24, 1);
    let sha = sha256(&disk);
    let pw = passfile(&t, "pw", PASS);
    let full = t.p("full.lbi");
    let o = lb_in(cipher, &enc_create(&disk, &full, &pw, &["--json"]));
    assert_exit(&o, 0);
    let j = json(&o);
    assert_eq!(j["encrypted"], true, "{j}");
    assert_eq!(sha256(&disk), sha, "the source changed");

    // No block of the disk is in the encrypted file; an unencrypted image of the same disk
    // does hold its incompressible blocks as they are (the search finds what is there).
    let enc = std::fs::read(&full).unwrap();
    assert_eq!(
        blocks_found_in(&data, &enc),
        0,
        "a disk block is readable in the image"
    );
    let clear = t.p("clear.lbi");
    assert_exit(&lb_in(cipher, &["image", "create", s(&disk), s(&clear)]), 0);
    assert!(blocks_found_in(&data, &std::fs::read(&clear).unwrap()) > 100);
    // Equal plaintext does not show: the index of the clear image holds plain BLAKE3 hashes,
    // the encrypted one keyed ones (none of a chunk's plain hash appears in it).
    let h0 = blake3::hash(&data[..1 << 20]);
    assert!(std::fs::read(&clear)
        .unwrap()
        .windows(32)
        .any(|w| w == h0.as_bytes()));
    assert!(!enc.windows(32).any(|w| w == h0.as_bytes()));

    // verify, info, export and restore with the passphrase.
    let o = lb_in(
        cipher,
        &[
            "image",
            "verify",
            s(&full),
            "--passphrase-file",
            s(&pw),
            "--json",
        ],
    );
    assert_exit(&o, 0);
    assert_eq!(json(&o)["ok"], true);
    let o = lb_in(
        cipher,
        &[
            "image",
            "info",
            s(&full),
            "--passphrase-file",
            s(&pw),
            "--json",
        ],
    );
    assert_exit(&o, 0);
    let i = json(&o);
    assert_eq!(i["encryption"]["cipher"], cipher);
    assert_eq!(i["encryption"]["key_slots"][0]["kind"], "passphrase");
    assert_eq!(
        i["encryption"]["key_slots"][0]["argon2id"]["memory_kib"],
        64
    );
    assert_eq!(i["source"]["name"], s(&disk), "the sealed source name");
    assert_eq!(i["media_hash"], j["media_hash"]);
    // The source name is not in the file in clear.
    assert!(!enc
        .windows(s(&disk).len())
        .any(|w| w == s(&disk).as_bytes()));
    let raw = t.p("export.raw");
    assert_exit(
        &lb_in(
            cipher,
            &[
                "image",
                "export",
                s(&full),
                s(&raw),
                "--passphrase-file",
                s(&pw),
            ],
        ),
        0,
    );
    assert_eq!(sha256(&raw), sha);
    let target = t.p("target.img");
    std::fs::write(&target, vec![0x5Au8; data.len()]).unwrap();
    assert_exit(
        &lb_in(
            cipher,
            &[
                "image",
                "restore",
                s(&full),
                s(&target),
                "--yes",
                "--passphrase-file",
                s(&pw),
            ],
        ),
        0,
    );
    assert_eq!(sha256(&target), sha);

    // An incremental after changes: encrypted with the parent's key without being asked to.
    let mut changed = data.clone();
    changed[3 << 20..(3 << 20) + 9000].fill(0xEE);
    changed[(17 << 20) + 4096..(17 << 20) + 8192].copy_from_slice(&data[..4096]);
    std::fs::write(&disk, &changed).unwrap();
    let sha2 = sha256(&disk);
    let inc = t.p("inc.lbi");
    let o = lb_in(
        other,
        &[
            "image",
            "create",
            s(&disk),
            s(&inc),
            "--parent",
            s(&full),
            "--passphrase-file",
            s(&pw),
            "--json",
        ],
    );
    assert_exit(&o, 0);
    let ij = json(&o);
    assert_eq!(ij["encrypted"], true);
    assert_eq!(ij["stored_chunks"], 2, "{ij}");
    assert!(ij["unchanged_chunks"].as_u64().unwrap() >= 18, "{ij}");
    assert_eq!(sha256(&disk), sha2, "the source changed");
    assert_eq!(
        blocks_found_in(&changed, &std::fs::read(&inc).unwrap()),
        0,
        "a disk block is readable in the incremental"
    );
    let o = lb_in(
        cipher,
        &[
            "image",
            "verify",
            s(&inc),
            "--passphrase-file",
            s(&pw),
            "--json",
        ],
    );
    assert_exit(&o, 0);
    assert_eq!(json(&o)["chain"].as_array().unwrap().len(), 2);
    let o = lb_in(
        cipher,
        &[
            "image",
            "info",
            s(&inc),
            "--passphrase-file",
            s(&pw),
            "--json",
        ],
    );
    assert_exit(&o, 0);
    assert_eq!(
        json(&o)["encryption"]["cipher"],
        cipher,
        "the incremental's cipher"
    );
    assert_exit(
        &lb_in(
            cipher,
            &[
                "image",
                "restore",
                s(&inc),
                s(&target),
                "--yes",
                "--passphrase-file",
                s(&pw),
            ],
        ),
        0,
    );
    assert_eq!(sha256(&target), sha2);
    // The restore map of an encrypted image: a second run finds everything written.
    let map = t.p("restore.map");
    for _ in 0..2 {
        let o = lb_in(
            cipher,
            &[
                "image",
                "restore",
                s(&inc),
                s(&target),
                "--yes",
                "--map",
                s(&map),
                "--passphrase-file",
                s(&pw),
                "--json",
            ],
        );
        assert_exit(&o, 0);
    }
    assert_eq!(sha256(&target), sha2);
    // An unencrypted parent cannot have an encrypted incremental.
    let o = lb_in(
        cipher,
        &enc_create(&disk, &t.p("bad.lbi"), &pw, &["--parent", s(&clear)]),
    );
    assert_exit(&o, 2);
    assert!(!t.p("bad.lbi.partial").exists());
}

/// A small encrypted image (a few KiB: three stored chunks, a zero one), every byte of it
/// changed in turn: verify reports each change.
#[test]
fn every_single_byte_change_is_detected() {
    flips(GCM);
}

#[test]
fn every_single_byte_change_of_an_xchacha20_poly1305_image_is_detected() {
    flips(XCHACHA);
}

fn flips(cipher: &str) {
    let t = TempDir::new(&format!("crypt-flip-{cipher}"));
    let disk = t.p("small.img");
    let mut d = vec![0u8; 4 << 20];
    for (k, c) in d.iter_mut().enumerate() {
        let chunk = k >> 20;
        if chunk != 2 {
            *c = b"flip test "[k % 10] ^ chunk as u8;
        }
    }
    std::fs::write(&disk, &d).unwrap();
    let sha = sha256(&disk);
    let pw = passfile(&t, "pw", PASS);
    let img = t.p("small.lbi");
    assert_exit(&lb_in(cipher, &enc_create(&disk, &img, &pw, &[])), 0);
    assert_eq!(sha256(&disk), sha, "the source changed");
    Keys::set_global(Keys::passphrase(PASS.as_bytes()));
    let verify = |p: &Path| {
        lifeboat::image::verify(p, &NoProgress, &Cancel::new())
            .map(|r| r.ok)
            .unwrap_or(false)
    };
    assert!(verify(&img), "the untouched image does not verify");
    let orig = std::fs::read(&img).unwrap();
    assert!(orig.len() < 16 << 10, "{} bytes: not small", orig.len());
    let mut missed = Vec::new();
    for at in 0..orig.len() {
        let mut b = orig.clone();
        b[at] ^= 0x01;
        std::fs::write(&img, &b).unwrap();
        if verify(&img) {
            missed.push(at);
        }
    }
    std::fs::write(&img, &orig).unwrap();
    assert!(verify(&img));
    assert!(
        missed.is_empty(),
        "{} of {} single-byte changes not detected, at {:?}",
        missed.len(),
        orig.len(),
        &missed[..missed.len().min(20)]
    );
}

#[test]
fn wrong_passphrase_is_refused_before_anything_is_written() {
    let t = TempDir::new("crypt-wrong");
    let disk = t.p("disk.img");
    let data = pattern_disk(&disk, 8, 3);
    let sha = sha256(&disk);
    let pw = passfile(&t, "pw", PASS);
    let bad = passfile(&t, "bad", "correct horse battery stapler");
    let full = t.p("full.lbi");
    assert_exit(&lb(&enc_create(&disk, &full, &pw, &[])), 0);
    let wrong = |o: &Output| {
        assert_exit(o, 5);
        assert!(stderr(o).contains("wrong passphrase"), "{}", stderr(o));
    };
    let o = lb(&[
        "image",
        "verify",
        s(&full),
        "--passphrase-file",
        s(&bad),
        "--json",
    ]);
    wrong(&o);
    assert_eq!(json(&o)["error"]["kind"], "wrong_passphrase");
    wrong(&lb(&[
        "image",
        "info",
        s(&full),
        "--passphrase-file",
        s(&bad),
    ]));
    // restore: the target keeps its bytes.
    let target = t.p("target.img");
    std::fs::write(&target, vec![0x33u8; data.len()]).unwrap();
    let tsha = sha256(&target);
    wrong(&lb(&[
        "image",
        "restore",
        s(&full),
        s(&target),
        "--yes",
        "--passphrase-file",
        s(&bad),
    ]));
    assert_eq!(sha256(&target), tsha, "a refused restore wrote");
    // export: no file.
    let raw = t.p("out.raw");
    wrong(&lb(&[
        "image",
        "export",
        s(&full),
        s(&raw),
        "--passphrase-file",
        s(&bad),
    ]));
    assert!(!raw.exists() && !t.p("out.raw.partial").exists());
    // an incremental: nothing created.
    let inc = t.p("inc.lbi");
    wrong(&lb(&[
        "image",
        "create",
        s(&disk),
        s(&inc),
        "--parent",
        s(&full),
        "--passphrase-file",
        s(&bad),
    ]));
    assert!(!inc.exists() && !t.p("inc.lbi.partial").exists());
    assert!(!t.p("inc.lbi.partial.journal").exists());
    // key slots: unchanged.
    let hsha = sha256(&full);
    wrong(&lb(&[
        "image",
        "add-key",
        s(&full),
        "--passphrase-file",
        s(&bad),
    ]));
    assert_eq!(sha256(&full), hsha);
    assert_eq!(sha256(&disk), sha, "the source changed");
}

/// `cmd` run under util-linux's `prlimit` with RLIMIT_FSIZE `bytes` (and no core dump): the
/// kernel stops it with SIGXFSZ at its first write past `bytes` of a file, as a power loss
/// would stop it at that point of its output, whatever the machine's speed.
fn file_size_limited(cmd: &std::process::Command, bytes: u64) -> std::process::Command {
    let mut c = std::process::Command::new("prlimit");
    c.arg(format!("--fsize={bytes}"))
        .args(["--core=0", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
}

/// A new encrypted image's first journal follows its key slot, not the engine's next timed
/// checkpoint: a create that reads its whole disk before that checkpoint (a small disk with
/// the default 5 s; here any disk, with the interval made an hour), stopped three quarters of
/// the way through its `.partial`, resumes from its journal and gives the source's bytes.
#[test]
fn an_encrypted_create_stopped_before_its_first_timed_checkpoint_resumes() {
    let t = TempDir::new("crypt-first-journal");
    let disk = t.p("disk.img");
    let data = pattern_disk(&disk, 32, 5);
    let sha = sha256(&disk);
    let pw = passfile(&t, "pw", PASS);
    let img = t.p("f.lbi");
    let create = || {
        let mut c = lifeboat_cmd();
        c.args(enc_create(&disk, &img, &pw, &["--json"]))
            .env("LIFEBOAT_KDF_PARAMS", CHEAP_KDF)
            .env("LIFEBOAT_CIPHER", GCM)
            .env("LIFEBOAT_CHECKPOINT_SECS", "3600");
        c
    };
    assert_exit(&create().output().unwrap(), 0);
    let whole = std::fs::metadata(&img).unwrap().len();
    std::fs::remove_file(&img).unwrap();
    let st = file_size_limited(&create(), whole * 3 / 4)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run prlimit (util-linux)");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(25), "not stopped by SIGXFSZ: {st:?}");
    assert!(
        t.p("f.lbi.partial.journal").exists(),
        "no journal after 3/4 of the image: the first one waited for a timed checkpoint"
    );
    let o = create().output().unwrap();
    assert_exit(&o, 0);
    let r = json(&o);
    assert!(!r["resumed_from"].is_null(), "it did not resume: {r}");
    assert_exports(&t, &img, &pw, &data, "the resumed image differs");
    assert_eq!(sha256(&disk), sha, "the source changed");
}

/// An encrypted create killed part way resumes from its `.partial` and journal given the
/// passphrase; with a wrong one nothing of the unfinished image changes.
#[test]
fn an_interrupted_encrypted_create_resumes_only_with_its_passphrase() {
    let t = TempDir::new("crypt-resume");
    let disk = t.p("disk.img");
    let data = pattern_disk(&disk, 64, 4);
    let sha = sha256(&disk);
    let pw = passfile(&t, "pw", PASS);
    let bad = passfile(&t, "bad", "not it");
    let img = t.p("r.lbi");
    let partial = t.p("r.lbi.partial");
    let journal = t.p("r.lbi.partial.journal");
    let create = |pass: &Path| {
        let mut c = lifeboat_cmd();
        c.args(enc_create(&disk, &img, pass, &["--json"]))
            .env("LIFEBOAT_KDF_PARAMS", CHEAP_KDF)
            .env("LIFEBOAT_CIPHER", GCM)
            .env("LIFEBOAT_CHECKPOINT_SECS", "0");
        c
    };
    // Stopped at a fixed size of its `.partial`, not by a timer (a fast machine finished every
    // create before a poll could kill it): RLIMIT_FSIZE, set by util-linux's `prlimit`, kills the
    // create with SIGXFSZ at its first write past 4 MiB of the ~8.5 MiB image, as a power loss
    // would, with its journal and checkpoints as they are at that moment. A zero checkpoint
    // interval checkpoints at every calm point, so the first journal (which for a new encrypted
    // image waits for the key slot) exists long before 4 MiB: with a 5 ms interval the engine
    // handed its last chunk on before its first checkpoint, and no journal ever appeared.
    let stopped_at_4_mib = |pass: &Path| file_size_limited(&create(pass), 4 << 20);
    let mut interrupted = false;
    for _ in 0..3 {
        let _ = std::fs::remove_file(&img);
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(&journal);
        let st = stopped_at_4_mib(&pw)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run prlimit (util-linux)");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(25), "not stopped by SIGXFSZ: {st:?}");
        // The key slot is derived beside the first writes; the journal waits for it.
        if partial.exists() && journal.exists() {
            interrupted = true;
            break;
        }
    }
    assert!(
        interrupted,
        "three creates stopped at 4 MiB left no .partial with a journal"
    );
    let (psha, jsha) = (sha256(&partial), sha256(&journal));
    let o = create(&bad).output().unwrap();
    assert_exit(&o, 5);
    assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
    assert_eq!(sha256(&partial), psha, "a refused resume changed the image");
    assert_eq!(
        sha256(&journal),
        jsha,
        "a refused resume changed the journal"
    );
    let o = create(&pw).output().unwrap();
    assert_exit(&o, 0);
    assert!(!json(&o)["resumed_from"].is_null(), "it did not resume");
    // AES-256-GCM: the resumed run is run 1, so the tail it wrote (and every record after the
    // checkpoint) has a nonce no record of run 0 had: run 1, its volume, its offset, zeros.
    let im = lifeboat::image::Image::open_with(&img, &Keys::passphrase(PASS.as_bytes())).unwrap();
    let at = im.footer.segtab_offset - im.footer.usage_len as u64;
    let file = std::fs::read(&img).unwrap();
    let mut want = [0u8; 24];
    want[0] = 1;
    want[4] = 1;
    want[6..12].copy_from_slice(&at.to_le_bytes()[..6]);
    assert_eq!(
        &file[at as usize..at as usize + 24],
        &want,
        "the tail's nonce"
    );
    assert_exports(&t, &img, &pw, &data, "the resumed image differs");
    assert_eq!(sha256(&disk), sha, "the source changed");
}

/// A new image's key slot is derived beside the data path: whenever the KDF finishes — here
/// made to finish long after the first volumes were written (a debug-build delay) — every
/// volume ends up with the same slot, the image opens with the passphrase only, and a create
/// stopped before the slot exists leaves no journal, so the same command starts it again.
#[test]
fn a_slow_kdf_slot_reaches_every_volume_written_before_it() {
    let t = TempDir::new("crypt-slow-kdf");
    let disk = t.p("disk.img");
    let data = pattern_disk(&disk, 40, 6);
    let sha = sha256(&disk);
    let pw = passfile(&t, "pw", PASS);
    let img = t.p("slow.lbi");
    let create = |delay_ms: &str| {
        let mut c = lifeboat_cmd();
        c.args(enc_create(
            &disk,
            &img,
            &pw,
            &["--split", "4M", "--compress", "lz4", "--json"],
        ))
        .env("LIFEBOAT_KDF_PARAMS", CHEAP_KDF)
        .env("LIFEBOAT_TEST_KDF_DELAY_MS", delay_ms);
        c
    };
    // Killed while the slot is still being made: no journal, nothing to resume.
    let mut child = create("600000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let partial = t.p("slow.lbi.partial");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !partial.exists() {
        assert!(std::time::Instant::now() < deadline, "no volume appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !t.p("slow.lbi.partial.journal").exists(),
        "a journal was saved before the key slot was written"
    );
    // Again, the slot ready after 3 s: the create starts over and finishes.
    let o = create("3000").output().unwrap();
    assert_exit(&o, 0);
    let j = json(&o);
    assert!(j["resumed_from"].is_null(), "{j}");
    assert_eq!(j["verified"], true, "{j}");
    let vols: Vec<PathBuf> = j["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| PathBuf::from(v.as_str().unwrap()))
        .collect();
    assert!(vols.len() >= 2, "{vols:?}");
    let slot1 = |p: &Path| {
        let b = std::fs::read(p).unwrap();
        b[260..340].to_vec()
    };
    let first = slot1(&vols[0]);
    assert!(first.iter().any(|&b| b != 0), "volume 1 has no key slot");
    for v in &vols[1..] {
        assert_eq!(slot1(v), first, "{} has another key slot", v.display());
    }
    assert_exports(&t, &img, &pw, &data, "the image differs from the disk");
    let bad = passfile(&t, "bad", "not it");
    assert_exit(
        &lb(&["image", "verify", s(&img), "--passphrase-file", s(&bad)]),
        5,
    );
    assert_eq!(sha256(&disk), sha, "the source changed");
}

#[test]
fn key_slots_are_added_and_removed_but_never_the_last() {
    let t = TempDir::new("crypt-slots");
    let disk = t.p("disk.img");
    pattern_disk(&disk, 40, 5);
    let pw = passfile(&t, "pw", PASS);
    let img = t.p("k.lbi");
    assert_exit(&lb(&enc_create(&disk, &img, &pw, &["--split", "4M"])), 0);
    // A recovery key, printed.
    let o = lb(&[
        "image",
        "add-key",
        s(&img),
        "--passphrase-file",
        s(&pw),
        "--json",
    ]);
    assert_exit(&o, 0);
    let j = json(&o);
    assert_eq!(j["slot"], 2);
    let rk = j["recovery_key"].as_str().unwrap().to_string();
    assert!(rk.starts_with("lbrk-") && rk.len() == 5 + 64 + 7, "{rk}");
    let rkf = passfile(&t, "rk", &rk);
    let slots = |pass: &Path| {
        let o = lb(&[
            "image",
            "info",
            s(&img),
            "--passphrase-file",
            s(pass),
            "--json",
        ]);
        assert_exit(&o, 0);
        json(&o)["encryption"]["key_slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kind"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(slots(&rkf), ["passphrase", "recovery_key"]);
    assert_eq!(slots(&pw), ["passphrase", "recovery_key"]);
    // Both slots in use: refused, the image unchanged.
    let before = sha256(&img);
    let out = t.p("second.key");
    assert_exit(
        &lb(&[
            "image",
            "add-key",
            s(&img),
            "--passphrase-file",
            s(&pw),
            "--output",
            s(&out),
        ]),
        4,
    );
    assert_eq!(sha256(&img), before);
    assert!(!out.exists());
    // The passphrase slot removed with the recovery key: the passphrase no longer opens it.
    assert_exit(
        &lb(&[
            "image",
            "remove-key",
            s(&img),
            "--slot",
            "1",
            "--passphrase-file",
            s(&rkf),
        ]),
        0,
    );
    let o = lb(&["image", "verify", s(&img), "--passphrase-file", s(&pw)]);
    assert_exit(&o, 5);
    assert_eq!(slots(&rkf), ["recovery_key"]);
    // The last slot stays.
    assert_exit(
        &lb(&[
            "image",
            "remove-key",
            s(&img),
            "--slot",
            "2",
            "--passphrase-file",
            s(&rkf),
        ]),
        4,
    );
    // A new recovery key written to a file (into the free slot 1); both keys open every volume.
    assert_exit(
        &lb(&[
            "image",
            "add-key",
            s(&img),
            "--passphrase-file",
            s(&rkf),
            "--output",
            s(&out),
        ]),
        0,
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    for key in [&out, &rkf] {
        let o = lb(&[
            "image",
            "verify",
            s(&img),
            "--passphrase-file",
            s(key),
            "--json",
        ]);
        assert_exit(&o, 0);
    }
    assert!(
        t.p("k.lbi.002").exists(),
        "the image should have several volumes"
    );
}

#[test]
fn chain_key_slots_are_added_and_removed_on_every_image() {
    let t = TempDir::new("crypt-chain-slots");
    let disk = t.p("disk.img");
    let d = pattern_disk(&disk, 16, 11);
    let src_sha = sha256(&disk);
    let pw = passfile(&t, "pw", PASS);
    let full = t.p("full.lbi");
    let inc = t.p("inc.lbi");
    let inc2 = t.p("inc2.lbi");
    let create = |out: &Path, parent: Option<&Path>| {
        let mut a = vec![
            "image",
            "create",
            s(&disk),
            s(out),
            "--passphrase-file",
            s(&pw),
        ];
        match parent {
            Some(p) => a.extend_from_slice(&["--parent", s(p)]),
            None => a.push("--encrypt"),
        }
        assert_exit(&lb(&a), 0);
    };
    create(&full, None);
    assert_eq!(sha256(&disk), src_sha, "the source changed");
    // The disk changes between the images, so each holds chunks of its own.
    let mut changed = d.clone();
    changed[5 << 20..(5 << 20) + 4096].fill(0x5a);
    std::fs::write(&disk, &changed).unwrap();
    let changed_sha = sha256(&disk);
    create(&inc, Some(&full));
    create(&inc2, Some(&inc));
    assert_eq!(sha256(&disk), changed_sha, "the source changed");
    let kinds = |img: &Path, key: &Path| -> Option<Vec<String>> {
        let o = lb(&[
            "image",
            "info",
            s(img),
            "--passphrase-file",
            s(key),
            "--json",
        ]);
        (o.status.code() == Some(0)).then(|| {
            json(&o)["encryption"]["key_slots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| format!("{}:{}", k["slot"], k["kind"].as_str().unwrap()))
                .collect()
        })
    };
    // Without --chain only the named image gets the key: its parents do not open with it.
    let o = lb(&[
        "image",
        "add-key",
        s(&inc2),
        "--passphrase-file",
        s(&pw),
        "--json",
    ]);
    assert_exit(&o, 0);
    let one = passfile(&t, "rk-one", json(&o)["recovery_key"].as_str().unwrap());
    assert_eq!(
        kinds(&inc2, &pw).unwrap(),
        ["1:passphrase", "2:recovery_key"]
    );
    // …so the chain cannot be read with it (what --chain is for).
    assert!(
        kinds(&inc2, &one).is_none(),
        "inc2's chain opens with a key of inc2 only"
    );
    assert!(
        kinds(&full, &one).is_none(),
        "the parent opens with a key it was not given"
    );
    // --chain on inc2 now: its slot 2 is taken, so nothing at all is written.
    let shas = || [&full, &inc, &inc2].map(|p| sha256(p));
    let before = shas();
    let o = lb(&[
        "image",
        "add-key",
        "--chain",
        s(&inc2),
        "--passphrase-file",
        s(&pw),
    ]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("inc2.lbi"), "{}", stderr(&o));
    assert_eq!(shas(), before, "a refused --chain changed an image");
    // On inc (inc and full): one key for both, written to a file; inc2 untouched.
    let out = t.p("chain.key");
    let o = lb(&[
        "image",
        "add-key",
        "--chain",
        s(&inc),
        "--passphrase-file",
        s(&pw),
        "--output",
        s(&out),
        "--json",
    ]);
    assert_exit(&o, 0);
    let j = json(&o);
    let names: Vec<String> = j["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let p = Path::new(c["image"].as_str().unwrap());
            p.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    assert_eq!(names, ["inc.lbi", "full.lbi"]);
    assert_eq!(
        sha256(&inc2),
        before[2],
        "an image outside the chain changed"
    );
    for img in [&full, &inc] {
        assert_eq!(
            kinds(img, &out).unwrap(),
            ["1:passphrase", "2:recovery_key"]
        );
        assert_exit(
            &lb(&["image", "verify", s(img), "--passphrase-file", s(&out)]),
            0,
        );
    }
    // The recovery key restores inc (read through full) equal to the changed disk.
    let back = t.p("back.raw");
    export(&inc, &back, &out);
    assert_eq!(std::fs::read(&back).unwrap(), changed);
    // remove-key --chain: slot 1 (the passphrase) of inc and full, with the recovery key.
    let o = lb(&[
        "image",
        "remove-key",
        "--chain",
        s(&inc),
        "--slot",
        "1",
        "--passphrase-file",
        s(&out),
        "--json",
    ]);
    assert_exit(&o, 0);
    assert_eq!(json(&o)["chain"].as_array().unwrap().len(), 2);
    for img in [&full, &inc] {
        assert_eq!(kinds(img, &out).unwrap(), ["2:recovery_key"]);
        assert!(
            kinds(img, &pw).is_none(),
            "the passphrase still opens {}",
            img.display()
        );
    }
    let before = shas();
    for (slot, code) in [
        // The last slot of every image stays: nothing is written.
        ("2", 4),
        // An empty slot in one image of the chain: refused before any is changed.
        ("1", 2),
    ] {
        let o = lb(&[
            "image",
            "remove-key",
            "--chain",
            s(&inc),
            "--slot",
            slot,
            "--passphrase-file",
            s(&out),
        ]);
        assert_exit(&o, code);
        assert_eq!(shas(), before, "remove-key --slot {slot}");
    }
    assert_eq!(sha256(&disk), changed_sha, "the source changed");
}

/// What the console does before a job on an encrypted image (`cmd_keys::probe_encrypted`:
/// the header read without a key; `cmd_keys::try_passphrase`: a wrong passphrase told apart
/// by its kind), and `image serve --passphrase-file`: the served disk equals the source read
/// by qemu-img through NBD; a wrong passphrase file is exit 5 before the server listens. The
/// source and the image are unchanged.
#[test]
fn the_consoles_passphrase_checks_and_serve_with_a_passphrase_file() {
    use lifeboat::image::cmd_keys::{probe_encrypted, try_passphrase};
    let t = TempDir::new("crypt-console");
    let disk = t.p("disk.img");
    pattern_disk(&disk, 8, 5);
    let sha = sha256(&disk);
    let pw = passfile(&t, "pw", PASS);
    let bad = passfile(&t, "bad", "Correct horse battery staple");
    let enc = t.p("enc.lbi");
    let plain = t.p("plain.lbi");
    let create = |img: &Path, extra: &[&str]| {
        let mut a = vec!["image", "create", s(&disk), s(img), "--no-verify"];
        a.extend_from_slice(extra);
        assert_exit(&lb(&a), 0);
    };
    create(&enc, &["--encrypt", "--passphrase-file", s(&pw)]);
    create(&plain, &[]);
    let img_sha = sha256(&enc);
    assert!(probe_encrypted(s(&enc)).unwrap());
    assert!(!probe_encrypted(s(&plain)).unwrap());
    let e = probe_encrypted(s(&t.p("none.lbi"))).unwrap_err();
    assert_eq!(e.kind, lifeboat::ErrorKind::NotFound, "{e}");
    let e = try_passphrase(s(&enc), b"Correct horse battery staple").unwrap_err();
    assert_eq!(e.kind, lifeboat::ErrorKind::WrongPassphrase, "{e}");
    try_passphrase(s(&enc), PASS.as_bytes()).unwrap();

    // serve: a wrong passphrase file ends it (exit 5) without listening.
    let sock = t.p("nbd.sock");
    let o = lb(&[
        "image",
        "serve",
        s(&enc),
        "--socket",
        s(&sock),
        "--passphrase-file",
        s(&bad),
        "--json",
    ]);
    assert_exit(&o, 5);
    assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
    assert!(!sock.exists());
    if std::process::Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP the served read: qemu-img is not installed");
    } else {
        use std::io::BufRead;
        let mut child = lifeboat_cmd()
            .args(["image", "serve", s(&enc), "--socket", s(&sock)])
            .args(["--passphrase-file", s(&pw), "--json"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let report: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let o = child.wait_with_output().unwrap();
                panic!(
                    "serve did not start: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        };
        let uri = report["uri"].as_str().unwrap().to_string();
        let o = std::process::Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw", s(&disk), &uri])
            .output()
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_exit(&o, 0);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Images are identical"),
            "{o:?}"
        );
    }
    assert_eq!(sha256(&disk), sha);
    assert_eq!(sha256(&enc), img_sha);
}

/// A recovery key added to an incremental alone opens it but not its parent: `info` still
/// describes the incremental and names the parent that does not open (exit 5, as for any
/// broken chain); `verify` refuses with "wrong passphrase" naming the parent (exit 5).
#[test]
fn an_incrementals_parent_that_its_key_does_not_open_is_named() {
    let t = TempDir::new("crypt-parent-key");
    let disk = t.p("disk.img");
    let data = pattern_disk(&disk, 4, 9);
    let sha = sha256(&disk);
    let pw = passfile(&t, "pw", PASS);
    let (full, inc) = (t.p("full.lbi"), t.p("inc.lbi"));
    let enc = ["--passphrase-file", s(&pw)];
    assert_exit(&lb(&enc_create(&disk, &full, &pw, &[])), 0);
    let mut changed = data.clone();
    changed[1 << 20..(1 << 20) + 4096].fill(0x77);
    std::fs::write(&disk, &changed).unwrap();
    let sha2 = sha256(&disk);
    assert_exit(
        &lb(&[
            &["image", "create", s(&disk), s(&inc), "--parent", s(&full)],
            &enc[..],
        ]
        .concat()),
        0,
    );
    let o = lb(&[&["image", "add-key", s(&inc), "--json"], &enc[..]].concat());
    assert_exit(&o, 0);
    let rk = passfile(&t, "rk", json(&o)["recovery_key"].as_str().unwrap());
    let o = lb(&[
        "image",
        "info",
        s(&inc),
        "--passphrase-file",
        s(&rk),
        "--json",
    ]);
    // The incremental is described (exit 5: its chain is broken), its parent named.
    assert_exit(&o, 5);
    assert_eq!(json(&o)["encryption"]["cipher"], GCM);
    let err = json(&o)["chain_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("wrong passphrase for the parent image") && err.contains(s(&full)),
        "{err}"
    );
    let o = lb(&["image", "verify", s(&inc), "--passphrase-file", s(&rk)]);
    assert_exit(&o, 5);
    assert!(stderr(&o).contains(s(&full)), "{}", stderr(&o));
    // With the passphrase both open.
    let o = lb(&[&["image", "verify", s(&inc), "--json"], &enc[..]].concat());
    assert_exit(&o, 0);
    assert_eq!(sha256(&disk), sha2, "the source changed");
    assert_ne!(sha, sha2);
}
