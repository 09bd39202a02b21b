//! The adversary's hostile images: small real images made by `lifeboat image create` from a
//! file, then patched where the format lets a field claim more than the file holds or more
//! than a rescue environment that lives in RAM can give (memory, time). Each command must
//! answer with a damaged-image error (exit 5, kind `corrupt`) naming what is wrong, within a
//! bounded address space (`ulimit -v`: an allocation of what a field says aborts the process
//! there instead of filling the test machine's memory), and write nothing. Each test failed
//! on the commit before its fix. `LIFEBOAT_TEST_BIN` runs them against another binary.
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Address space each command runs in (KiB): far above what a verify of these small images
/// needs, far below what the hostile fields ask for.
const AS_LIMIT_KIB: u64 = 1536 << 10;

/// `lifeboat ARGS` in an address space of [`AS_LIMIT_KIB`] (an allocation beyond it fails,
/// which aborts a Rust process: the test sees a signal, not exit 5).
fn lb_bounded(args: &[&str]) -> Output {
    let bin = lifeboat_cmd().get_program().to_owned();
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {AS_LIMIT_KIB} && exec \"$0\" \"$@\""))
        .arg(bin)
        .args(args)
        .env("LIFEBOAT_KDF_PARAMS", CHEAP_KDF)
        .output()
        .expect("run lifeboat")
}

/// Asserts a damaged-image answer: exit 5 and, in the `--json` error object, kind `corrupt`.
#[track_caller]
fn assert_corrupt(o: &Output) {
    assert_exit(o, 5);
    let j = json(o);
    assert_eq!(j["error"]["kind"], "corrupt", "{j}");
}

fn patch_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the header's CRC32 (bytes 0..508, stored at 508).
fn fix_header_crc(b: &mut [u8]) {
    let c = crc32fast::hash(&b[..508]);
    patch_u32(b, 508, c);
}

/// A 4 MiB source and an encrypted image of it (passphrase file `pw`).
fn encrypted_image(t: &TempDir) -> (PathBuf, PathBuf, PathBuf) {
    let src = t.p("src.img");
    data_file(&src, 4 * MIB, 7);
    let pw = t.p("pw");
    std::fs::write(&pw, "hostile images\n").unwrap();
    let img = t.p("enc.lbi");
    let o = lb_bounded(&[
        "image",
        "create",
        "--all-sectors",
        "--encrypt",
        "--passphrase-file",
        s(&pw),
        s(&src),
        s(&img),
    ]);
    assert_exit(&o, 0);
    (src, img, pw)
}

/// Sets key slot `slot` (1 or 2)'s Argon2id memory (KiB) and passes in the image's header.
fn set_kdf(img: &Path, slot: usize, m_kib: u32, passes: u32) {
    let mut b = std::fs::read(img).unwrap();
    let at = 260 + (slot - 1) * 80;
    assert_eq!(b[at], 1, "slot {slot} is a passphrase slot");
    patch_u32(&mut b, at + 4, m_kib);
    patch_u32(&mut b, at + 8, passes);
    fix_header_crc(&mut b);
    std::fs::write(img, b).unwrap();
}

/// A key slot asking Argon2id for 4 GiB of memory (what the header's decoder let through) or
/// for 1000 passes: before, the first was allocated (an abort in a bounded address space, the
/// OOM killer in a rescue environment of a few GiB), the second ran (at 256 MiB, > 5 minutes a
/// slot) before the slot was found not to open. Now neither is derived: exit 5, kind corrupt,
/// naming the slot; the image, the target and the source unchanged.
#[test]
fn key_slots_asking_for_gigabytes_or_thousands_of_passes() {
    let t = TempDir::new("adv-kdf");
    let (src, img, pw) = encrypted_image(&t);
    let src_sha = sha256(&src);
    for (m_kib, passes) in [(4u32 << 20, 1u32), (1024, 1000), (256 << 10, 65)] {
        let bad = t.p("bad.lbi");
        std::fs::copy(&img, &bad).unwrap();
        set_kdf(&bad, 1, m_kib, passes);
        let bad_sha = sha256(&bad);
        let target = t.p("target.img");
        zero_file(&target, 4 * MIB);
        let target_sha = sha256(&target);
        for cmd in [
            vec!["image", "info", "--json"],
            vec!["image", "verify", "--json"],
        ] {
            let mut a = cmd.clone();
            a.extend(["--passphrase-file", s(&pw), s(&bad)]);
            let o = lb_bounded(&a);
            assert_corrupt(&o);
            assert!(stderr(&o).contains("key slot 1"), "{}", stderr(&o));
        }
        let o = lb_bounded(&[
            "image",
            "restore",
            "--json",
            "--yes",
            "--passphrase-file",
            s(&pw),
            s(&bad),
            s(&target),
        ]);
        assert_corrupt(&o);
        assert_eq!(sha256(&target), target_sha, "the target was written");
        assert_eq!(sha256(&bad), bad_sha, "the image was written");
    }
    assert_eq!(sha256(&src), src_sha);
}

/// A damaged slot 1 does not lock the image when slot 2 still opens: a recovery key added
/// before the damage opens it, and the damaged slot is never derived.
#[test]
fn a_costly_slot_leaves_the_other_slot_usable() {
    let t = TempDir::new("adv-kdf2");
    let (_src, img, pw) = encrypted_image(&t);
    let key = t.p("recovery.key");
    let o = lb_bounded(&[
        "image",
        "add-key",
        "--passphrase-file",
        s(&pw),
        "--output",
        s(&key),
        s(&img),
    ]);
    assert_exit(&o, 0);
    set_kdf(&img, 1, 4 << 20, 1000);
    let o = lb_bounded(&["image", "verify", "--passphrase-file", s(&key), s(&img)]);
    assert_exit(&o, 0);
}

/// A 4 MiB source and an image of it, every sector read.
fn plain_image(t: &TempDir) -> (PathBuf, PathBuf) {
    let src = t.p("src.img");
    data_file(&src, 4 * MIB, 3);
    let img = t.p("full.lbi");
    let o = lb_bounded(&["image", "create", "--all-sectors", s(&src), s(&img)]);
    assert_exit(&o, 0);
    (src, img)
}

/// Writes `out`: the header of `img` with the disk size, chunk size and chunks per segment
/// given (feature flags cleared), `data` bytes of hole after it, the segment table (`tab`,
/// then zeros up to the length its segment count needs), and `img`'s footer made to match
/// (segment and chunk counts, table offset and the CRC32 of `tab`, no usage record). The file
/// is sparse: a few KiB on disk, whatever its length.
fn forged(img: &Path, out: &Path, disk: u64, chunk: u32, seg_chunks: u32, data: u64, tab: &[u8]) {
    let b = std::fs::read(img).unwrap();
    let mut h = b[..512].to_vec();
    h[96..104].copy_from_slice(&disk.to_le_bytes());
    patch_u32(&mut h, 108, chunk);
    patch_u32(&mut h, 112, seg_chunks);
    patch_u32(&mut h, 16, 0);
    fix_header_crc(&mut h);
    let chunks = disk.div_ceil(chunk as u64);
    let segments = chunks.div_ceil(seg_chunks as u64);
    let mut f = b[b.len() - 160..].to_vec();
    patch_u32(&mut f, 28, segments as u32);
    f[32..40].copy_from_slice(&(512 + data).to_le_bytes());
    patch_u32(&mut f, 40, crc32fast::hash(tab));
    f[48..56].copy_from_slice(&chunks.to_le_bytes());
    patch_u32(&mut f, 152, 0);
    let c = crc32fast::hash(&f[..156]);
    patch_u32(&mut f, 156, c);
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(out).unwrap();
    file.write_all_at(&h, 0).unwrap();
    file.write_all_at(tab, 512 + data).unwrap();
    file.write_all_at(&f, 512 + data + segments * 24).unwrap();
}

/// What tells a file was written without reading all of a huge sparse one: its length, its
/// modification time and its first and last 64 KiB.
fn fingerprint(p: &Path) -> (u64, std::time::SystemTime, Vec<u8>) {
    use std::os::unix::fs::FileExt;
    let md = std::fs::metadata(p).unwrap();
    let f = std::fs::File::open(p).unwrap();
    let n = md.len().min(65536);
    let mut b = vec![0u8; 2 * n as usize];
    f.read_exact_at(&mut b[..n as usize], 0).unwrap();
    f.read_exact_at(&mut b[n as usize..], md.len() - n).unwrap();
    (md.len(), md.modified().unwrap(), b)
}

/// Every reading command on `bad` answers "damaged" (exit 5, kind corrupt) within the bounded
/// address space, writing nothing: not the image, not a restore target, not an export.
#[track_caller]
fn all_refuse(t: &TempDir, src: &Path, bad: &Path) {
    let bad_print = fingerprint(bad);
    let target = t.p("target.img");
    zero_file(&target, 4 * MIB);
    let target_sha = sha256(&target);
    let export = t.p("export.raw");
    for args in [
        vec!["image", "info", "--json", s(bad)],
        vec!["image", "verify", "--json", s(bad)],
        vec!["image", "export", "--json", s(bad), s(&export)],
        vec!["image", "restore", "--json", "--yes", s(bad), s(&target)],
        vec![
            "image",
            "create",
            "--json",
            "--all-sectors",
            "--parent",
            s(bad),
            s(src),
            s(&t.p("child.lbi")),
        ],
    ] {
        let o = lb_bounded(&args);
        assert_corrupt(&o);
    }
    assert_eq!(sha256(&target), target_sha, "the target was written");
    assert!(fingerprint(bad) == bad_print, "the image was written");
    assert!(!export.exists(), "an export was left");
    assert!(!t.p("child.lbi").exists() && !t.p("child.lbi.partial").exists());
}

/// A header claiming a 4 TiB disk in 64 KiB chunks, one per index segment: 2^26 segments, a
/// 1.5 GiB segment table, in a sparse file of a few KiB. Before, opening the image allocated
/// and read the whole table (1.5 GiB of RSS for `image info`; an abort here); now the header
/// is refused (more segments than an image can have).
#[test]
fn a_segment_table_of_gigabytes_in_a_sparse_file() {
    let t = TempDir::new("adv-segtab");
    let (src, img) = plain_image(&t);
    let src_sha = sha256(&src);
    let n: u64 = 1 << 26;
    let bad = t.p("bad.lbi");
    forged(&img, &bad, n * 65536, 65536, 1, 0, &[0u8; 24]);
    assert_eq!(std::fs::metadata(&bad).unwrap().len(), 512 + n * 24 + 160);
    all_refuse(&t, &src, &bad);
    assert_eq!(sha256(&src), src_sha);
}

/// One index segment of 3.75 GiB (16 MiB chunks, 65536 chunks per segment: the format's
/// bound on a segment's length reaches 4 GiB), the file sparse. Before, reading the index
/// allocated it whole (1 GiB of RSS at 1 GiB; an abort here); now the segment table entry is
/// refused (longer than any segment a reader loads).
#[test]
fn an_index_segment_of_gigabytes_in_a_sparse_file() {
    let t = TempDir::new("adv-seglen");
    let (src, img) = plain_image(&t);
    let src_sha = sha256(&src);
    let len: u32 = 0xf000_0000;
    let mut tab = Vec::new();
    tab.extend_from_slice(&512u64.to_le_bytes());
    tab.extend_from_slice(&1u16.to_le_bytes());
    tab.extend_from_slice(&[0, 0]);
    tab.extend_from_slice(&len.to_le_bytes());
    tab.extend_from_slice(&0u64.to_le_bytes());
    let bad = t.p("bad.lbi");
    forged(&img, &bad, 4 * MIB, 16 << 20, 65536, len as u64, &tab);
    all_refuse(&t, &src, &bad);
    assert_eq!(sha256(&src), src_sha);
}

/// The cipher id of an encrypted image (header byte 256, under the header's CRC only; the
/// header digest every record is bound to covers it) switched to the other cipher Lifeboat
/// knows, the CRC made to match: the image is damaged (exit 5, kind corrupt), whichever
/// cipher it was made with — never read with the other cipher's key or nonces. (This held
/// when AES-256-GCM arrived; kept as a guard for the next cipher.)
#[test]
fn a_switched_cipher_id_is_damage() {
    let t = TempDir::new("adv-cipher");
    let src = t.p("src.img");
    data_file(&src, 4 * MIB, 17);
    let src_sha = sha256(&src);
    let pw = t.p("pw");
    std::fs::write(&pw, "switched ciphers\n").unwrap();
    for (name, id, other) in [("aes-256-gcm", 2u8, 1u8), ("xchacha20-poly1305", 1, 2)] {
        let img = t.p(&format!("{name}.lbi"));
        let o = lifeboat_cmd()
            .args([
                "image",
                "create",
                "--all-sectors",
                "--encrypt",
                "--passphrase-file",
            ])
            .args([s(&pw), s(&src), s(&img)])
            .env("LIFEBOAT_KDF_PARAMS", CHEAP_KDF)
            .env("LIFEBOAT_CIPHER", name)
            .output()
            .unwrap();
        assert_exit(&o, 0);
        let mut b = std::fs::read(&img).unwrap();
        assert_eq!(b[256], id, "{name} is cipher id {id}");
        b[256] = other;
        fix_header_crc(&mut b);
        std::fs::write(&img, &b).unwrap();
        for cmd in ["info", "verify"] {
            let o = lb_bounded(&["image", cmd, "--json", "--passphrase-file", s(&pw), s(&img)]);
            assert_corrupt(&o);
        }
    }
    assert_eq!(sha256(&src), src_sha);
}
