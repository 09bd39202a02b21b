//! Image engine end to end on the host: round trips on sample disks made with real tools
//! (sgdisk, mkfs.ext4 -d, mkfs.vfat + mcopy) checked by cmp/e2fsck/fsck.vfat, incremental
//! chains, corruption in every part of the file, split volumes, a simulated failing source,
//! and a property-tested round trip plus a no-panic mutation test of the reader.
use lifeboat::image::format::{self, HEADER_SIZE};
use lifeboat::image::{create, CreateOptions, SourceIdentity};
use lifeboat::io::BlockSource;
use lifeboat::jobs::{Cancel, NoProgress};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{
    assert_exit, is_root, json as json_of, lifeboat_cmd, s, sh, sha256 as sha, Loop, TempDir,
};

/// `lifeboat ARGS` with progress as `LIFEBOAT-PROGRESS` JSON lines on stderr.
fn lb(args: &[&str]) -> Output {
    lifeboat_cmd()
        .args(args)
        .env("LIFEBOAT_PROGRESS", "json")
        .output()
        .unwrap()
}

/// `lifeboat image create SRC IMG`, which must succeed.
fn create_ok(src: &Path, img: &Path) {
    assert_exit(&lb(&["image", "create", s(src), s(img)]), 0);
}

/// A 96 MiB GPT disk: ext4 (files from /usr/share, some random) + FAT (mcopy), free space with
/// old random data.
fn sample_disk(dir: &TempDir) -> PathBuf {
    let d = dir.p("disk.img");
    let c = dir.p("content");
    sh(&format!(
        "mkdir -p {c}/docs && cp -r /usr/share/doc/bash* /usr/share/doc/coreutils* {c}/docs/ 2>/dev/null; \
         head -c 2000000 /dev/urandom > {c}/random.bin; seq 1 200000 > {c}/numbers.txt; \
         truncate -s 96M {d} && \
         dd if=/dev/urandom of={d} bs=1M seek=90 count=4 conv=notrunc status=none && \
         sgdisk -n1:2048:+48M -t1:8300 -n2:0:+32M -t2:0700 {d} >/dev/null && \
         mkfs.ext4 -q -F -d {c} -E offset={o1} {d} 48M && \
         dd if=/dev/zero of={dir}/fat.img bs=1M count=32 status=none && mkfs.vfat -n LBTEST {dir}/fat.img >/dev/null && \
         mcopy -i {dir}/fat.img {c}/numbers.txt {c}/random.bin ::/ && \
         dd if={dir}/fat.img of={d} bs=1M seek=49 conv=notrunc status=none",
        c = s(&c),
        d = s(&d),
        dir = s(dir.path()),
        o1 = 2048 * 512,
    ));
    d
}

/// Checks the two partitions of a restored sample disk with the real fsck tools.
fn fsck_partitions(dir: &TempDir, disk: &Path) {
    sh(&format!(
        "dd if={d} of={t}/p1 bs=1M skip=1 count=48 status=none && e2fsck -fn {t}/p1 >/dev/null && \
         dd if={d} of={t}/p2 bs=1M skip=49 count=32 status=none && fsck.vfat -n {t}/p2 >/dev/null && \
         sgdisk -v {d} | grep -q 'No problems found' && rm -f {t}/p1 {t}/p2",
        d = s(disk),
        t = s(dir.path())
    ));
}

/// `--all-sectors`: the forensic copy, bit-exact including free space (used-block images are
/// tested in tests/image_used.rs).
#[test]
fn round_trip_create_verify_restore_export() {
    let t = TempDir::new("rt");
    let disk = sample_disk(&t);
    let before = sha(&disk);
    let img = t.p("full.lbi");
    let o = lb(&[
        "image",
        "create",
        s(&disk),
        s(&img),
        "--all-sectors",
        "--json",
    ]);
    assert_exit(&o, 0);
    let j = json_of(&o);
    assert_eq!(j["ok"], true);
    assert_eq!(j["disk_size_bytes"], 96 << 20);
    assert!(j["zero_chunks"].as_u64().unwrap() > 10, "{j}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("LIFEBOAT-PROGRESS"));
    assert_eq!(sha(&disk), before, "the source changed");
    assert!((j["image_bytes"].as_u64().unwrap()) < 40 << 20, "{j}");

    let o = lb(&["image", "verify", s(&img), "--json"]);
    assert_exit(&o, 0);
    assert_eq!(json_of(&o)["ok"], true);

    let o = lb(&["image", "info", s(&img), "--json"]);
    assert_exit(&o, 0);
    let i = json_of(&o);
    assert_eq!(i["complete"], true);
    assert_eq!(i["source"]["size_bytes"], 96 << 20);
    assert_eq!(i["media_hash"], j["media_hash"]);

    // export: bit-exact and sparse.
    let raw = t.p("export.raw");
    let o = lb(&["image", "export", s(&img), s(&raw), "--json"]);
    assert_exit(&o, 0);
    assert_eq!(sha(&raw), before);
    use std::os::unix::fs::MetadataExt;
    assert!(
        fs::metadata(&raw).unwrap().blocks() * 512 < 96 << 20,
        "export is not sparse"
    );
    // export refuses to overwrite.
    assert_exit(&lb(&["image", "export", s(&img), s(&raw)]), 4);

    // restore onto a file holding other data: bit-exact, filesystems clean.
    let target = t.p("target.img");
    sh(&format!("head -c 100663296 /dev/urandom > {}", s(&target)));
    let o = lb(&["image", "restore", s(&img), s(&target), "--yes", "--json"]);
    assert_exit(&o, 0);
    assert_eq!(json_of(&o)["media_hash_verified"], true);
    assert_eq!(sha(&target), before);
    fsck_partitions(&t, &target);

    // an existing image is not overwritten without --force; with --force it is replaced.
    assert_exit(&lb(&["image", "create", s(&disk), s(&img)]), 4);
    let o = lb(&["image", "create", s(&disk), s(&img), "--force", "--json"]);
    assert_exit(&o, 0);
    assert_ne!(json_of(&o)["uuid"], j["uuid"]);
    assert!(!t.p("full.lbi.partial").exists());
}

#[test]
fn incremental_chain_restores_every_point() {
    let t = TempDir::new("chain");
    let disk = sample_disk(&t);
    let full = t.p("full.lbi");
    let o = lb(&[
        "image",
        "create",
        s(&disk),
        s(&full),
        "--all-sectors",
        "--json",
    ]);
    assert_exit(&o, 0);
    let full_j = json_of(&o);
    let p0 = sha(&disk);
    fs::copy(&disk, t.p("state0")).unwrap();

    // Change 4 MiB in two places.
    sh(&format!(
        "dd if=/dev/urandom of={d} bs=1M seek=10 count=3 conv=notrunc status=none && \
         dd if=/dev/urandom of={d} bs=512 seek=140000 count=2048 conv=notrunc status=none",
        d = s(&disk)
    ));
    let p1 = sha(&disk);
    let inc1 = t.p("inc1.lbi");
    let o = lb(&[
        "image",
        "create",
        s(&disk),
        s(&inc1),
        "--parent",
        s(&full),
        "--all-sectors",
        "--json",
    ]);
    assert_exit(&o, 0);
    let j = json_of(&o);
    let size = j["image_bytes"].as_u64().unwrap();
    // Random data does not compress: the incremental is the change (4-5 MiB, chunk-aligned) plus the index.
    assert!(
        (4 << 20..6 << 20).contains(&size),
        "incremental is {size} bytes"
    );
    assert_eq!(j["parent_uuid"], full_j["uuid"]);
    assert!(j["unchanged_chunks"].as_u64().unwrap() > 10);

    // Second incremental on top of the first.
    sh(&format!(
        "dd if=/dev/urandom of={d} bs=1M seek=60 count=1 conv=notrunc status=none",
        d = s(&disk)
    ));
    let p2 = sha(&disk);
    let inc2 = t.p("inc2.lbi");
    let o = lb(&[
        "image",
        "create",
        s(&disk),
        s(&inc2),
        "--parent",
        s(&inc1),
        "--all-sectors",
        "--json",
    ]);
    assert_exit(&o, 0);
    assert!(json_of(&o)["image_bytes"].as_u64().unwrap() < 2 << 20);

    let o = lb(&["image", "verify", s(&inc2), "--json"]);
    assert_exit(&o, 0);
    assert_eq!(json_of(&o)["chain"].as_array().unwrap().len(), 3);
    let o = lb(&["image", "info", s(&inc2), "--json"]);
    assert_eq!(json_of(&o)["chain"].as_array().unwrap().len(), 3);

    for (img, want) in [(&full, &p0), (&inc1, &p1), (&inc2, &p2)] {
        let out = t.p("point.raw");
        let _ = fs::remove_file(&out);
        let o = lb(&["image", "export", s(img), s(&out)]);
        assert_exit(&o, 0);
        assert_eq!(&sha(&out), want, "restore point {}", img.display());
    }

    // A missing parent: clear error naming the file, non-zero exit, nothing written. (Moved out
    // of the directory: a parent renamed beside its child is still found, by its UUID.)
    fs::create_dir(t.p("aside")).unwrap();
    fs::rename(&inc1, t.p("aside/moved.lbi")).unwrap();
    let out = t.p("never.raw");
    let o = lb(&["image", "export", s(&inc2), s(&out), "--json"]);
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("inc1.lbi") && err.contains("missing"), "{err}");
    assert_eq!(json_of(&o)["ok"], false);
    assert!(!out.exists());
    let o = lb(&["image", "verify", s(&inc2)]);
    assert_ne!(o.status.code(), Some(0));

    // A wrong parent (another image under the parent's name): refused, names the file.
    fs::copy(&full, &inc1).unwrap();
    let o = lb(&["image", "restore", s(&inc2), s(&t.p("state0")), "--yes"]);
    assert_exit(&o, 5);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("inc1.lbi") && err.contains("not the parent"),
        "{err}"
    );
    assert_eq!(
        sha(&t.p("state0")),
        p0,
        "a refused restore wrote to the target"
    );
}

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
fn corruption_in_every_part_is_caught() {
    let t = TempDir::new("corrupt");
    let disk = t.p("disk.img");
    // 8 MiB of compressible but non-zero data.
    sh(&format!("seq 1 2000000 | head -c 8388608 > {}", s(&disk)));
    let img = t.p("good.lbi");
    create_ok(&disk, &img);
    let len = fs::metadata(&img).unwrap().len();
    let segtab = len - format::FOOTER_SIZE as u64 - format::SEGTAB_ENTRY as u64;
    // The index segment is right before the segment table: 8 entries.
    let seg_len = format::Segment::encoded_len(8, 0) as u64;
    let places = [
        ("header", 20u64),
        ("header text", 300),
        ("chunk data", HEADER_SIZE as u64 + 10),
        ("chunk data later", HEADER_SIZE as u64 + 5000),
        ("index segment", segtab - seg_len + 40),
        ("index hash", segtab - seg_len + 24 + 56 * 3 + 30),
        ("segment table", segtab + 3),
        ("footer", len - 100),
        ("footer crc", len - 2),
    ];
    for (what, off) in places {
        let bad = t.p("bad.lbi");
        fs::copy(&img, &bad).unwrap();
        flip(&bad, off);
        let o = lb(&["image", "verify", s(&bad), "--json"]);
        let code = o.status.code();
        assert!(
            code == Some(5),
            "flip in {what} at {off}: exit {code:?} {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let j = json_of(&o);
        assert_eq!(j["ok"], false, "{what}");
        // Export never produces a file from a damaged image.
        let out = t.p("out.raw");
        let o = lb(&["image", "export", s(&bad), s(&out)]);
        assert_ne!(
            o.status.code(),
            Some(0),
            "export of damaged {what} succeeded"
        );
        assert!(!out.exists());
        if what.starts_with("chunk data") {
            let msg = j["problems"][0].as_str().unwrap();
            assert!(msg.contains("disk bytes 0..1048576"), "{what}: {msg}");
        }
    }
    // Truncation at several points: an error, never a panic, never "complete".
    for cut in [0u64, 100, 600, len / 2, len - 1] {
        let bad = t.p("trunc.lbi");
        fs::copy(&img, &bad).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&bad)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let o = lb(&["image", "verify", s(&bad)]);
        assert!(
            matches!(o.status.code(), Some(1..=5)),
            "truncated at {cut}: {:?}",
            o.status
        );
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
        let o = lb(&["image", "info", s(&bad), "--json"]);
        assert_ne!(
            o.status.code(),
            Some(0),
            "info on a truncated image at {cut}"
        );
    }
    // A partial (interrupted) image says it is incomplete.
    let partial = t.p("part.lbi.partial");
    fs::copy(&img, &partial).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&partial)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let o = lb(&["image", "info", s(&t.p("part.lbi")), "--json"]);
    assert_exit(&o, 5);
    assert_eq!(json_of(&o)["complete"], false);
    let o = lb(&["image", "restore", s(&t.p("part.lbi")), s(&disk), "--yes"]);
    assert_exit(&o, 5);
    assert!(String::from_utf8_lossy(&o.stderr).contains("incomplete"));
}

#[test]
fn split_volumes_and_a_missing_volume() {
    let t = TempDir::new("split");
    let disk = t.p("disk.img");
    sh(&format!("head -c 20971520 /dev/urandom > {}", s(&disk)));
    let img = t.p("s.lbi");
    let o = lb(&[
        "image",
        "create",
        s(&disk),
        s(&img),
        "--split",
        "4M",
        "--json",
    ]);
    assert_exit(&o, 0);
    let j = json_of(&o);
    let vols = j["volumes"].as_array().unwrap();
    assert!(vols.len() >= 5, "{j}");
    for v in vols {
        assert!(fs::metadata(v.as_str().unwrap()).unwrap().len() <= 4 << 20);
    }
    assert_exit(&lb(&["image", "verify", s(&img)]), 0);
    let out = t.p("out.raw");
    assert_exit(&lb(&["image", "export", s(&img), s(&out)]), 0);
    assert_eq!(sha(&out), sha(&disk));
    // Missing middle volume and missing last volume: clear errors naming the volume.
    for k in ["002", &format!("{:03}", vols.len())] {
        let v = t.p(&format!("s.lbi.{k}"));
        fs::rename(&v, t.p("aside")).unwrap();
        let o = lb(&["image", "verify", s(&img)]);
        assert_ne!(o.status.code(), Some(0));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("s.lbi.{k}")) || err.contains("missing"),
            "{err}"
        );
        fs::rename(t.p("aside"), &v).unwrap();
    }
    // A volume from another image is named.
    let other = t.p("o.lbi");
    assert_exit(
        &lb(&["image", "create", s(&disk), s(&other), "--split", "4M"]),
        0,
    );
    fs::copy(t.p("o.lbi.002"), t.p("s.lbi.002")).unwrap();
    let o = lb(&["image", "verify", s(&img)]);
    assert_exit(&o, 5);
    assert!(String::from_utf8_lossy(&o.stderr).contains("another image"));
}

/// A disk in memory with unreadable sectors (EIO), like a failing drive.
struct FailingDisk {
    data: Vec<u8>,
    bad: Vec<(u64, u64)>,
}
impl BlockSource for FailingDisk {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn logical_block_size(&self) -> u32 {
        512
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let end = (offset + buf.len() as u64).min(self.size());
        if self.bad.iter().any(|&(s, l)| s < end && offset < s + l) {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        let n = (end - offset) as usize;
        buf[..n].copy_from_slice(&self.data[offset as usize..end as usize]);
        Ok(n)
    }
    fn name(&self) -> String {
        "failing-sim".into()
    }
}

#[test]
fn failing_source_records_unreadable_sectors() {
    let t = TempDir::new("failing");
    let mut data = vec![0u8; 6 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] | 1;
    }
    let bad = vec![
        (1_048_576 + 4096, 1024),
        (3 * 1_048_576 - 512, 1536),
        (5 << 20, 512),
    ];
    let src = FailingDisk {
        data: data.clone(),
        bad: bad.clone(),
    };
    let img = t.p("f.lbi");
    let rep = create(
        std::sync::Arc::new(src),
        &SourceIdentity::default(),
        &img,
        &CreateOptions::default(),
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(rep.bad_bytes, 1024 + 1536 + 512);
    assert_eq!(rep.bad_ranges, bad);
    let o = lb(&["image", "info", s(&img), "--json"]);
    let j = json_of(&o);
    assert_eq!(j["bad_bytes"], 3072);
    assert_eq!(j["bad_ranges"][1][0], 3 * 1_048_576 - 512);
    assert_exit(&lb(&["image", "verify", s(&img)]), 0);
    let out = t.p("out.raw");
    let o = lb(&["image", "export", s(&img), s(&out), "--json"]);
    assert_exit(&o, 0);
    assert_eq!(json_of(&o)["bad_bytes"], 3072);
    let got = fs::read(&out).unwrap();
    let mut want = data;
    for &(s, l) in &bad {
        want[s as usize..(s + l) as usize].fill(0);
    }
    assert!(
        got == want,
        "restored data differs from the readable source (zeros at bad sectors)"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, ..Default::default() })]
    /// Any disk content (runs of zeros, repeated and random bytes, odd sizes) round-trips exactly,
    /// and an incremental over a modified copy restores the modified copy.
    #[test]
    fn prop_round_trip(
        parts in proptest::collection::vec((0u8..3, 1usize..200_000, proptest::num::u8::ANY), 1..12),
        edit in 0usize..1_000_000,
    ) {
        let t = TempDir::new(&format!("prop-{}", edit));
        let mut data = Vec::new();
        for (kind, len, seed) in parts {
            match kind {
                0 => data.extend(std::iter::repeat_n(0u8, len)),
                1 => data.extend(std::iter::repeat_n(seed, len)),
                _ => data.extend((0..len).map(|i| ((i as u64).wrapping_mul(6_364_136_223_846_793_005).wrapping_add(seed as u64) >> 33) as u8)),
            }
        }
        let disk = t.p("d.img");
        fs::write(&disk, &data).unwrap();
        let src = lifeboat::io::Device::open(&disk, lifeboat::io::Access::Read).unwrap();
        let opts = CreateOptions { chunk_size: 64 << 10, threads: 2, ..Default::default() };
        let full = t.p("full.lbi");
        create(std::sync::Arc::new(src), &SourceIdentity::default(), &full, &opts, &NoProgress, &Cancel::new()).unwrap();
        let out = t.p("o.raw");
        lifeboat::image::export(&full, &out, false, &NoProgress, &Cancel::new()).unwrap();
        proptest::prop_assert!(fs::read(&out).unwrap() == data);
        // Incremental.
        let mut d2 = data.clone();
        let at = edit % d2.len();
        let n = (d2.len() - at).min(70_000);
        d2[at..at + n].iter_mut().for_each(|b| *b = b.wrapping_add(1));
        fs::write(&disk, &d2).unwrap();
        let src = lifeboat::io::Device::open(&disk, lifeboat::io::Access::Read).unwrap();
        let inc = t.p("inc.lbi");
        let o2 = CreateOptions { parent: Some(full.clone()), parent_hint: s(&full).into(), ..opts };
        create(std::sync::Arc::new(src), &SourceIdentity::default(), &inc, &o2, &NoProgress, &Cancel::new()).unwrap();
        lifeboat::image::export(&inc, &out, true, &NoProgress, &Cancel::new()).unwrap();
        proptest::prop_assert!(fs::read(&out).unwrap() == d2);
        let rep = lifeboat::image::verify(&inc, &NoProgress, &Cancel::new()).unwrap();
        proptest::prop_assert!(rep.ok, "{:?}", rep.problems);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
    /// Random damage anywhere in a valid image: the reader reports it and never panics.
    #[test]
    fn prop_mutated_images_never_panic(flips in proptest::collection::vec((proptest::num::u64::ANY, 1u8..=255), 1..6), cut in proptest::option::of(proptest::num::u64::ANY)) {
        use std::sync::OnceLock;
        static BASE: OnceLock<(TempDir, Vec<u8>)> = OnceLock::new();
        let (dir, bytes) = BASE.get_or_init(|| {
            let t = TempDir::new("mut-base");
            let mut data = vec![0u8; 3 << 20 | 4096];
            for (i, b) in data.iter_mut().enumerate().skip(100_000).take(1_500_000) {
                *b = (i % 251) as u8;
            }
            let disk = t.p("d.img");
            fs::write(&disk, &data).unwrap();
            let src = lifeboat::io::Device::open(&disk, lifeboat::io::Access::Read).unwrap();
            let opts = CreateOptions { chunk_size: 64 << 10, ..Default::default() };
            create(std::sync::Arc::new(src), &SourceIdentity::default(), &t.p("b.lbi"), &opts, &NoProgress, &Cancel::new()).unwrap();
            let b = fs::read(t.p("b.lbi")).unwrap();
            (t, b)
        });
        let mut m = bytes.clone();
        for (at, x) in &flips {
            let i = (*at % m.len() as u64) as usize;
            m[i] ^= x;
        }
        if let Some(c) = cut {
            m.truncate((c % m.len() as u64) as usize);
        }
        let p = dir.p(&format!("m-{}.lbi", std::thread::current().name().unwrap_or("x").len()));
        fs::write(&p, &m).unwrap();
        let r = lifeboat::image::verify(&p, &NoProgress, &Cancel::new());
        if let Ok(rep) = &r {
            // Flips that survive must have been caught as problems.
            proptest::prop_assert!(!rep.ok);
        }
        let _ = lifeboat::image::info(&p);
        let _ = fs::remove_file(&p);
    }
}

#[test]
fn restore_target_sizes_and_refusals() {
    let t = TempDir::new("targets");
    let disk = sample_disk(&t);
    let before = sha(&disk);
    let img = t.p("full.lbi");
    create_ok(&disk, &img);
    // Larger and smaller (but big enough for the partitions) targets: the GPT is fixed up.
    for (name, size) in [("big.img", "128M"), ("small.img", "84M")] {
        let tg = t.p(name);
        sh(&format!("truncate -s {size} {}", s(&tg)));
        let o = lb(&["image", "restore", s(&img), s(&tg), "--yes", "--json"]);
        assert_exit(&o, 0);
        let j = json_of(&o);
        assert_eq!(j["partition_table"]["fixed"], true, "{j}");
        sh(&format!(
            "sgdisk -v {} | grep -q 'No problems found'",
            s(&tg)
        ));
        // The partitions are intact.
        sh(&format!(
            "cmp -i 1048576 -n 83886080 {} {}",
            s(&tg),
            s(&disk)
        ));
        fsck_partitions(&t, &tg);
    }
    // Too small for the partitions: refused, untouched.
    let tiny = t.p("tiny.img");
    sh(&format!("truncate -s 70M {}", s(&tiny)));
    let o = lb(&["image", "restore", s(&img), s(&tiny), "--yes"]);
    assert_exit(&o, 4);
    assert!(fs::read(&tiny).unwrap().iter().all(|&b| b == 0));
    // No --yes without a terminal: refused.
    let tg = t.p("big.img");
    let o = lifeboat_cmd()
        .args(["image", "restore", s(&img), s(&tg)])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_exit(&o, 4);
    // The image itself as the target: refused.
    let o = lb(&["image", "restore", s(&img), s(&img), "--yes"]);
    assert_exit(&o, 4);
    assert_eq!(sha(&disk), before);
}

struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn image_on_the_disk_being_imaged_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root for loop devices");
        return;
    }
    let t = TempDir::new("selfstore");
    let f = t.p("fs.img");
    sh(&format!(
        "truncate -s 64M {f} && mkfs.ext4 -q -F {f}",
        f = s(&f)
    ));
    let Some(lo) = Loop::attach(&f) else {
        eprintln!("skipped: no loop device available");
        return;
    };
    let mp = t.p("mnt");
    fs::create_dir_all(&mp).unwrap();
    assert!(Command::new("mount")
        .args([&lo.dev, s(&mp)])
        .status()
        .unwrap()
        .success());
    let _m = Mounted(mp.clone());
    // (A mounted ext4 changes by itself, so only the refusal and the absence of a file are checked.)
    let o = lb(&["image", "create", &lo.dev, s(&mp.join("self.lbi"))]);
    assert_exit(&o, 4);
    assert!(String::from_utf8_lossy(&o.stderr).contains("would overwrite the source"));
    assert!(!mp.join("self.lbi").exists() && !mp.join("self.lbi.partial").exists());
}

#[test]
fn cancelled_create_leaves_only_a_marked_partial_file() {
    let t = TempDir::new("cancel");
    let disk = t.p("d.img");
    sh(&format!("seq 1 3000000 | head -c 16777216 > {}", s(&disk)));
    let src = lifeboat::io::Device::open(&disk, lifeboat::io::Access::Read).unwrap();
    let img = t.p("c.lbi");
    let cancel = Cancel::new();
    cancel.cancel();
    let e = create(
        std::sync::Arc::new(src),
        &SourceIdentity::default(),
        &img,
        &CreateOptions::default(),
        &NoProgress,
        &cancel,
    )
    .err()
    .unwrap();
    assert_eq!(e.kind, lifeboat::ErrorKind::Cancelled);
    assert!(
        !img.exists(),
        "a cancelled create must not leave a complete-looking image"
    );
    assert!(t.p("c.lbi.partial").exists());
    let o = lb(&["image", "info", s(&img), "--json"]);
    assert_exit(&o, 5);
    assert_eq!(json_of(&o)["complete"], false);
    let o = lb(&["image", "verify", s(&t.p("c.lbi.partial"))]);
    assert_exit(&o, 5);
    assert!(String::from_utf8_lossy(&o.stderr).contains("incomplete"));
}

/// Ctrl-C during `image create` (the CLI, a real SIGINT): the job stops, exit 130, no complete
/// image, the `.partial` is kept and `image info` reports it incomplete (exit 5), and the
/// source is unchanged. The source is a 16 GiB sparse file (16 MiB of data at the start), which
/// takes several seconds to image, so the signal lands mid-job.
#[test]
fn ctrl_c_during_create_leaves_a_marked_partial_and_exits_130() {
    use std::os::unix::fs::MetadataExt;
    let t = TempDir::new("sigint");
    let disk = t.p("big.img");
    sh(&format!(
        "truncate -s 16G {d} && head -c 16777216 /dev/urandom | dd of={d} conv=notrunc status=none",
        d = s(&disk)
    ));
    // The source: its data (sha256 of the written part) and its metadata (size, allocated
    // blocks, mtime, ctime: any write into the holes would change them).
    let head_sha = || {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("head -c 16777216 {} | sha256sum", s(&disk)))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let meta = || {
        let m = fs::metadata(&disk).unwrap();
        (
            m.len(),
            m.blocks(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime_nsec(),
        )
    };
    let (sha0, meta0) = (head_sha(), meta());
    let img = t.p("big.lbi");
    let partial = t.p("big.lbi.partial");
    // The free-space check would want room for 16 GiB (a disk without a filesystem is read
    // whole): this test is about the signal, on whatever disk the machine has.
    let child = lifeboat_cmd()
        .args(["image", "create", s(&disk), s(&img), "--ignore-free-space"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the job to be writing, then press "Ctrl-C".
    let start = std::time::Instant::now();
    while !partial.exists() && start.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(partial.exists(), "create never started writing");
    std::thread::sleep(std::time::Duration::from_millis(300));
    sh(&format!("kill -INT {}", child.id()));
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_exit(&o, 130);
    assert!(
        err.contains("cancelled") && err.contains("big.lbi.partial"),
        "{err}"
    );
    assert!(!img.exists(), "a cancelled create left a complete image");
    assert!(partial.exists(), "the .partial file must stay");
    let o = lb(&["image", "info", s(&img), "--json"]);
    assert_exit(&o, 5);
    assert_eq!(json_of(&o)["complete"], false);
    assert_eq!(head_sha(), sha0, "the source changed");
    assert_eq!(meta(), meta0, "the source changed");
}

/// An image of a 512-byte-sector GPT disk onto a 4Kn disk: refused (exit 4), the message names
/// both sector sizes and the way out, nothing written. An image without a partition table (a
/// whole-disk ext4) is a byte copy and is restored onto the same 4Kn disk.
#[test]
fn restore_onto_a_disk_with_another_sector_size() {
    if !is_root() {
        eprintln!("skipped: needs root for loop devices");
        return;
    }
    let t = TempDir::new("sector");
    let disk = t.p("disk.img");
    // A 512-byte-sector GPT disk (sgdisk on a file uses 512).
    sh(&format!(
        "truncate -s 64M {d} && sgdisk -n1:2048:+32M -t1:8300 {d} >/dev/null && \
         dd if=/dev/urandom of={d} bs=1M seek=1 count=8 conv=notrunc status=none",
        d = s(&disk)
    ));
    let before = sha(&disk);
    let img = t.p("gpt.lbi");
    create_ok(&disk, &img);
    let back = t.p("target4k.img");
    sh(&format!("truncate -s 64M {}", s(&back)));
    let Some(lo) = Loop::sectors_4k(&back) else {
        eprintln!("skipped: no loop device with 4096-byte sectors available");
        return;
    };
    let o = lb(&["image", "restore", s(&img), &lo.dev, "--yes", "--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_exit(&o, 4);
    assert!(
        err.contains("512-byte") && err.contains("4096-byte") && err.contains("image export"),
        "{err}"
    );
    assert_eq!(json_of(&o)["error"]["kind"], "refused");
    drop(lo);
    assert!(
        fs::read(&back).unwrap().iter().all(|&b| b == 0),
        "the refused target was written"
    );
    assert_eq!(sha(&disk), before);

    // No partition table: a whole-disk ext4 is copied byte for byte onto the 4Kn disk.
    let fsimg = t.p("fs.img");
    sh(&format!(
        "truncate -s 32M {f} && mkfs.ext4 -q -F -b 4096 -d /usr/share/doc/bash {f}",
        f = s(&fsimg)
    ));
    let fs_before = sha(&fsimg);
    let img2 = t.p("fs.lbi");
    create_ok(&fsimg, &img2);
    let back2 = t.p("target4k-2.img");
    sh(&format!("truncate -s 32M {}", s(&back2)));
    let Some(lo) = Loop::sectors_4k(&back2) else {
        eprintln!("skipped: no loop device with 4096-byte sectors available");
        return;
    };
    let o = lb(&["image", "restore", s(&img2), &lo.dev, "--yes"]);
    assert_exit(&o, 0);
    sh(&format!("cmp {} {}", lo.dev, s(&fsimg)));
    sh(&format!("e2fsck -fn {} >/dev/null", lo.dev));
    drop(lo);
    assert_eq!(sha(&fsimg), fs_before);
}

/// Ctrl-C during `image restore`: the job stops, exit 130, and the message says the target is
/// incomplete (with `--json`: one JSON error of kind "cancelled").
#[test]
fn ctrl_c_during_restore_exits_130_and_says_the_target_is_incomplete() {
    let t = TempDir::new("sigint-restore");
    let disk = t.p("src.img");
    sh(&format!(
        "truncate -s 4G {d} && head -c 8388608 /dev/urandom | dd of={d} conv=notrunc status=none",
        d = s(&disk)
    ));
    let img = t.p("src.lbi");
    create_ok(&disk, &img);
    let tg = t.p("target.img");
    sh(&format!("truncate -s 4G {}", s(&tg)));
    let child = lifeboat_cmd()
        .args(["image", "restore", s(&img), s(&tg), "--yes", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(250));
    sh(&format!("kill -INT {}", child.id()));
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_exit(&o, 130);
    assert!(err.contains("INCOMPLETE"), "{err}");
    let j = json_of(&o);
    assert_eq!(j["error"]["kind"], "cancelled", "{j}");
    assert_eq!(j["exit_code"], 130);
}

/// zstd images store consecutive stored chunks together (kind 6, one frame per group): every
/// member names the same payload, the footer counts it once, any member reads back at random,
/// and an entry whose group fields are wrong is reported, not trusted.
#[test]
fn zstd_groups_share_one_payload_and_read_back_at_random() {
    use lifeboat::image::format::{Compression, Kind, Segment};
    use lifeboat::image::reader::ImageSource;
    let t = TempDir::new("groups");
    let cs = 64usize << 10;
    let mut data = Vec::new();
    // Three batches of format::GROUP_CHUNKS chunks (the last one short by a 4 KiB tail).
    for c in 0..3 * format::GROUP_CHUNKS - 1 {
        let chunk: Vec<u8> = match c {
            5 => vec![0; cs],
            // Incompressible: still in a group with its neighbours.
            9 => (0..cs)
                .map(|i| ((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
                .collect(),
            _ => (0..cs).map(|i| ((i / 7 + c * 13) % 251) as u8).collect(),
        };
        data.extend(chunk);
    }
    data.extend(std::iter::repeat_n(7u8, 4096));
    let disk = t.p("d.img");
    fs::write(&disk, &data).unwrap();
    let src = lifeboat::io::Device::open(&disk, lifeboat::io::Access::Read).unwrap();
    let opts = CreateOptions {
        chunk_size: cs as u32,
        compress: Compression::Zstd(3),
        ..Default::default()
    };
    let img = t.p("g.lbi");
    create(
        std::sync::Arc::new(src),
        &SourceIdentity::default(),
        &img,
        &opts,
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();

    let mut im = lifeboat::image::Image::open(&img).unwrap();
    assert_ne!(im.header.incompat & format::FEAT_GROUPS, 0);
    let n = im.header.chunk_count();
    let entries: Vec<format::Entry> = (0..n).map(|i| im.entry(i).unwrap()).collect();
    assert_eq!(entries[5].kind, Kind::Zero);
    assert_eq!(entries[9].kind, Kind::Group, "{:?}", entries[9]);
    let mut payload = 0u64;
    let mut groups = 0;
    for (i, e) in entries.iter().enumerate() {
        match e.kind {
            Kind::Group => {
                assert!(e.members >= 2 && e.member < e.members, "chunk {i}: {e:?}");
                if e.member == 0 {
                    groups += 1;
                    payload += e.len as u64;
                } else {
                    let prev = entries[..i]
                        .iter()
                        .rev()
                        .find(|p| p.kind == Kind::Group)
                        .unwrap();
                    assert_eq!((prev.offset, prev.len, prev.crc), (e.offset, e.len, e.crc));
                    assert_eq!(prev.member + 1, e.member);
                }
            }
            Kind::Zero => {}
            _ => payload += e.len as u64,
        }
    }
    // Three batches of format::GROUP_CHUNKS chunks: a group in each.
    assert!(groups >= 3, "{groups} groups");
    assert_eq!(im.footer.payload_bytes, payload);
    assert!(
        lifeboat::image::verify(&img, &NoProgress, &Cancel::new())
            .unwrap()
            .ok
    );

    // Random access: any range, across members and groups, in any order.
    let reader = ImageSource::new(lifeboat::image::Chain::open(&img).unwrap());
    for &(off, len) in &[
        (20 * cs + 100, 3 * cs),
        (0, 10),
        (9 * cs - 5, 20),
        (4 * cs, cs),
        (22 * cs, cs + 4096),
    ] {
        let mut b = vec![0u8; len];
        assert_eq!(reader.read_at(&mut b, off as u64).unwrap(), len);
        assert!(b == data[off..off + len], "bytes {off}..{}", off + len);
    }

    // An entry whose group fields are wrong (a lone member; a member past the count), with a
    // valid segment CRC: verify reports the chunk.
    let r = im.segment_refs()[0];
    for (field, value) in [("members", 1u8), ("member", format::GROUP_CHUNKS as u8)] {
        let bad = t.p("bad.lbi");
        fs::copy(&img, &bad).unwrap();
        let mut b = vec![0u8; r.len as usize];
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&bad)
            .unwrap();
        f.read_exact_at(&mut b, r.offset).unwrap();
        let mut seg = Segment::decode(&b, &im.header, 0, n as usize).unwrap();
        let e = &mut seg.entries[9];
        if field == "members" {
            e.members = value;
        } else {
            e.member = value;
        }
        f.write_all_at(&seg.encode(), r.offset).unwrap();
        let rep = lifeboat::image::verify(&bad, &NoProgress, &Cancel::new()).unwrap();
        assert!(!rep.ok, "{field}");
        assert!(
            rep.problems
                .iter()
                .any(|p| p.contains("chunk 9 ") && p.contains("index entry is invalid")),
            "{field}: {:?}",
            rep.problems
        );
    }
}

/// Incrementals with zstd groups: the parent's chunks are grouped; in the incremental, the
/// changed chunks of a batch are grouped among themselves around unchanged (kind 3) ones, so a
/// group's members need not be neighbours. Every point of the chain restores exactly, verify
/// passes, and the source is unchanged.
#[test]
fn incrementals_group_the_changed_chunks_around_unchanged_ones() {
    use lifeboat::image::format::{Kind, GROUP_CHUNKS};
    let t = TempDir::new("groups-inc");
    let mib = 1usize << 20;
    // Two batches of chunks (GROUP_CHUNKS MiB each) that zstd halves (each 4 KiB's second half
    // repeats its first).
    let chunks = 2 * GROUP_CHUNKS;
    let mut data: Vec<u8> = (0..chunks * mib)
        .map(|i| ((i as u64 / 3).wrapping_mul(0x9e37_79b9) >> 13) as u8)
        .collect();
    for b in data.chunks_mut(4096) {
        let (x, y) = b.split_at_mut(2048);
        y.copy_from_slice(x);
    }
    let disk = t.p("d.img");
    fs::write(&disk, &data).unwrap();
    let full = t.p("full.lbi");
    assert_exit(
        &lb(&["image", "create", s(&disk), s(&full), "--all-sectors"]),
        0,
    );
    let kinds = |img: &Path| -> Vec<(Kind, u8, u8)> {
        let mut im = lifeboat::image::Image::open(img).unwrap();
        (0..im.header.chunk_count())
            .map(|i| {
                let e = im.entry(i).unwrap();
                (e.kind, e.member, e.members)
            })
            .collect()
    };
    assert!(
        kinds(&full).iter().all(|k| k.0 == Kind::Group),
        "{:?}",
        kinds(&full)
    );
    let p0 = sha(&disk);
    // Change chunks 5 and 7 (one unchanged chunk between them, in the first batch) and one of
    // the second batch.
    let lone = GROUP_CHUNKS + 4;
    for c in [5usize, 7, lone] {
        for (k, b) in data[c * mib..(c + 1) * mib].iter_mut().enumerate() {
            *b = b.wrapping_add(1 + (k % 3) as u8);
        }
    }
    fs::write(&disk, &data).unwrap();
    let p1 = sha(&disk);
    let inc = t.p("inc.lbi");
    let o = lb(&[
        "image",
        "create",
        s(&disk),
        s(&inc),
        "--parent",
        s(&full),
        "--all-sectors",
    ]);
    assert_exit(&o, 0);
    let k = kinds(&inc);
    assert_eq!(k[5], (Kind::Group, 0, 2), "{k:?}");
    assert_eq!(k[6].0, Kind::Parent, "{k:?}");
    assert_eq!(k[7], (Kind::Group, 1, 2), "{k:?}");
    // Alone among unchanged chunks of its batch: compressed on its own.
    assert_eq!(k[lone].0, Kind::Zstd, "{k:?}");
    assert_eq!(k.iter().filter(|x| x.0 == Kind::Parent).count(), chunks - 3);
    assert_exit(&lb(&["image", "verify", s(&inc)]), 0);
    for (img, want) in [(&full, &p0), (&inc, &p1)] {
        let out = t.p("out.raw");
        fs::write(&out, vec![0x55u8; chunks * mib]).unwrap();
        assert_exit(&lb(&["image", "restore", s(img), s(&out), "--yes"]), 0);
        assert_eq!(&sha(&out), want, "{}", img.display());
    }
    assert_eq!(sha(&disk), p1, "the source changed");
}
