//! Image create reads a failing source through the rescue engine, like clone: on the same
//! simulated fault patterns (rescue::sim) it reports exactly the bad ranges clone reports, with
//! the same failed reads, and the image holds exactly the bytes clone wrote (zeros at
//! unreadable sectors) — also when more chunks are touched by errors than the feed keeps in
//! memory (their good bytes are read again, never their bad ones).
use lifeboat::image::{create, CreateOptions, SourceIdentity};
use lifeboat::jobs::{Cancel, NoProgress};
use lifeboat::rescue::{self, ExtentMap, MemTarget, SimDevice, Status};
use std::sync::Arc;

mod common;
use common::TempDir;

const MIB: u64 = 1 << 20;

/// A fault pattern: permanent bad `(start, len)` ranges and transient ones `(start, len, times)`.
struct Pattern {
    name: &'static str,
    size: u64,
    lbs: u32,
    bad: Vec<(u64, u64)>,
    transient: Vec<(u64, u64, u32)>,
}

fn sim(p: &Pattern, seed: u64) -> SimDevice {
    let mut d = SimDevice::new(SimDevice::pattern(p.size as usize, seed), p.lbs);
    for &(s, l) in &p.bad {
        d = d.bad(s, l);
    }
    for &(s, l, n) in &p.transient {
        d = d.transient(s, l, n);
    }
    d
}

fn patterns() -> Vec<Pattern> {
    let scattered: Vec<(u64, u64)> = (0..40u64)
        .map(|k| (MIB + k * 1_187_840 + (k % 7) * 4096, 512))
        .collect();
    vec![
        Pattern {
            name: "single sectors, a 4 KiB block, a 128 KiB region, a transient",
            size: 24 * MIB,
            lbs: 512,
            bad: vec![
                (3 * MIB + 512, 512),
                (5 * MIB + 8192, 4096),
                (9 * MIB - 64 * 1024, 128 * 1024),
                (20 * MIB + 77 * 512, 512),
            ],
            transient: vec![(12 * MIB + 4096, 512, 1)],
        },
        Pattern {
            name: "a 1 MiB dead region and 40 scattered sectors (more chunks than the cache)",
            size: 56 * MIB,
            lbs: 512,
            bad: {
                let mut v = scattered;
                v.push((30 * MIB + 300 * 1024, MIB));
                v.sort_unstable();
                v
            },
            transient: vec![(7 * MIB + 512, 512, 2)],
        },
        Pattern {
            name: "4096-byte sectors, the last sector bad",
            size: 16 * MIB,
            lbs: 4096,
            bad: vec![
                (2 * MIB, 4096),
                (6 * MIB + 12288, 3 * 4096),
                (16 * MIB - 4096, 4096),
            ],
            transient: vec![],
        },
    ]
}

/// Failed reads of the used-block analysis (partition table, backup GPT) before imaging.
fn probe_failures(p: &Pattern, seed: u64) -> u64 {
    let s = sim(p, seed);
    let _ = lifeboat::fs::UsageMap::analyze(&s);
    s.failed_reads()
}

fn clone_of(p: &Pattern, seed: u64) -> (Vec<u8>, rescue::Outcome) {
    let src = Arc::new(sim(p, seed));
    let dst = Arc::new(MemTarget::new(p.size as usize, 0xAA));
    let out = rescue::run(
        src,
        dst.clone(),
        ExtentMap::new(p.size),
        &rescue::Options::default(),
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    (dst.take(), out)
}

fn check_image_equals_clone(p: &Pattern, chunk_size: u32, seed: u64) {
    let t = TempDir::new(&format!("imgresc-{seed}"));
    let (cloned, out) = clone_of(p, seed);
    assert!(out.map.is_complete(), "{}", p.name);
    let clone_bad = out.map.ranges(Status::Bad);
    let src = Arc::new(sim(p, seed));
    let img = t.p("r.lbi");
    let opts = CreateOptions {
        chunk_size,
        ..Default::default()
    };
    let rep = create(
        src.clone(),
        &SourceIdentity::default(),
        &img,
        &opts,
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(
        rep.bad_ranges, clone_bad,
        "{}: bad ranges differ from clone's",
        p.name
    );
    assert_eq!(rep.bad_bytes, clone_bad.iter().map(|r| r.1).sum::<u64>());
    assert_eq!(
        rep.reads_failed, out.reads_failed,
        "{}: image create failed more (or fewer) reads than clone",
        p.name
    );
    assert_eq!(rep.reread_failed_bytes, 0, "{}", p.name);
    // Re-reads touched only good sectors: the device saw no more failed reads than clone's
    // (besides those of the partition-table probe before the job, which clone makes too).
    assert_eq!(
        src.failed_reads(),
        out.reads_failed + probe_failures(p, seed),
        "{}",
        p.name
    );
    let v = lifeboat::image::verify(&img, &NoProgress, &Cancel::new()).unwrap();
    assert!(v.ok, "{}: {:?}", p.name, v.problems);
    let raw = t.p("r.raw");
    lifeboat::image::export(&img, &raw, false, &NoProgress, &Cancel::new()).unwrap();
    let got = std::fs::read(&raw).unwrap();
    assert!(
        got == cloned,
        "{}: the image's bytes differ from the clone's",
        p.name
    );
}

#[test]
fn image_create_reports_the_bad_ranges_clone_reports() {
    for (k, p) in patterns().iter().enumerate() {
        check_image_equals_clone(p, 1 << 20, 11 + k as u64);
    }
}

#[test]
fn small_chunks_assemble_from_engine_reads() {
    // 64 KiB chunks: one 1 MiB engine read completes sixteen chunks.
    let p = &patterns()[0];
    check_image_equals_clone(p, 64 << 10, 5);
}

#[test]
fn chunks_beyond_the_cache_are_read_again_from_good_sectors_only() {
    let p = &patterns()[1];
    let t = TempDir::new("imgresc-reread");
    let src = Arc::new(sim(p, 3));
    let rep = create(
        src.clone(),
        &SourceIdentity::default(),
        &t.p("x.lbi"),
        &CreateOptions::default(),
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    assert!(
        rep.reread_bytes > 0,
        "41 chunks with errors and a cache of {}: some must have been read again",
        lifeboat::image::feed::CACHE_CHUNKS
    );
    assert_eq!(rep.reread_failed_bytes, 0);
    assert_eq!(src.failed_reads(), rep.reads_failed + probe_failures(p, 3));
}
