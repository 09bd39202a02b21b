//! The rescue engine against simulated failing disks: bad sectors, bad regions, transient
//! errors, slow reads, 512 and 4096-byte sectors, cancellation and mapfile resume, plus a
//! property test: for any fault pattern the target equals the source outside the unreadable
//! sectors, those are zeros, and the map lists exactly them. Read counts: a failed read costs
//! seconds on a real drive, so the tests bound failed reads and the area a failure leaves to
//! sector-by-sector trimming; the rescue domain; counters in the map and the progress.
use lifeboat::jobs::{Cancel, NoProgress, Progress, ProgressSink};
use lifeboat::rescue::{self, ExtentMap, MemTarget, Options, SimDevice, Status};
use proptest::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::TempDir;

fn opts() -> Options {
    Options {
        cluster: 64 << 10,
        buffers: 4,
        min_skip: 16 << 10,
        tick: Duration::from_millis(5),
        ..Options::default()
    }
}

/// Runs a rescue of `sim` onto a target pre-filled with 0xAA; returns (target bytes, outcome).
fn rescue_sim(sim: SimDevice, o: &Options) -> (Arc<SimDevice>, Vec<u8>, rescue::Outcome) {
    let sim = Arc::new(sim);
    let size = sim.data().len();
    let dst = Arc::new(MemTarget::new(size, 0xAA));
    let out = rescue::run(
        sim.clone(),
        dst.clone(),
        ExtentMap::new(size as u64),
        o,
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    (sim, dst.take(), out)
}

/// Checks the rescue contract: target == source outside bad sectors, zeros in them, and the
/// bad ranges are exactly the permanently bad sectors.
fn check_contract(sim: &SimDevice, target: &[u8], out: &rescue::Outcome) {
    let lbs = 512.max(lifeboat::io::BlockSource::logical_block_size(sim) as usize);
    assert!(
        out.map.is_complete(),
        "map not complete: {:?}",
        out.map.extents()
    );
    let bad = out.map.ranges(Status::Bad);
    for s in (0..target.len()).step_by(lbs) {
        let e = (s + lbs).min(target.len());
        let in_bad = bad
            .iter()
            .any(|&(a, l)| (s as u64) >= a && (s as u64) < a + l);
        assert_eq!(
            in_bad,
            sim.is_bad(s as u64),
            "sector at byte {s}: map says bad={in_bad}"
        );
        if in_bad {
            assert!(
                target[s..e].iter().all(|&b| b == 0),
                "bad sector at {s} not zeroed"
            );
        } else {
            assert_eq!(
                &target[s..e],
                &sim.data()[s..e],
                "sector at byte {s} differs"
            );
        }
    }
}

#[test]
fn healthy_source_is_copied_exactly_and_verifies() {
    let data = SimDevice::pattern(3 << 20, 5);
    let (sim, t, out) = rescue_sim(SimDevice::new(data, 512), &opts());
    check_contract(&sim, &t, &out);
    assert_eq!(out.map.totals().finished, 3 << 20);
    let h = out.hashes.unwrap();
    let r = h
        .verify(
            &SimDevice::new(t, 512),
            &AtomicU64::new(0),
            &AtomicBool::new(false),
        )
        .unwrap();
    assert!(r.ok());
    assert_eq!(r.verified_bytes, 3 << 20);
}

#[test]
fn bad_sectors_regions_and_transients_512_and_4096() {
    for lbs in [512u32, 4096] {
        let l = lbs as u64;
        let data = SimDevice::pattern(4 << 20, lbs as u64);
        let sim = SimDevice::new(data, lbs)
            .bad(7 * l, l) // a single sector
            .bad(100 * 4096, 4096) // a 4 KiB block
            .bad(1 << 20, 300 * l) // a larger region
            .bad((4 << 20) - l, l) // the very last sector
            .transient(3 << 20, l, 1); // heals after one failed read
        let (sim, t, out) = rescue_sim(sim, &opts());
        check_contract(&sim, &t, &out);
        let expected_bad = l + 4096 + 300 * l + l;
        assert_eq!(out.map.totals().bad, expected_bad, "lbs {lbs}");
        // The verify pass agrees with what was written, zeros included.
        let h = out.hashes.unwrap();
        let r = h
            .verify(
                &SimDevice::new(t, lbs),
                &AtomicU64::new(0),
                &AtomicBool::new(false),
            )
            .unwrap();
        assert!(r.ok(), "lbs {lbs}: {r:?}");
    }
}

#[test]
fn transient_errors_recovered_by_retry() {
    // Fails the copy read, the trim read and the scrape read; the retry pass gets it.
    let data = SimDevice::pattern(1 << 20, 9);
    let sim = SimDevice::new(data, 512).transient(5000 / 512 * 512, 512, 2);
    let (sim, t, out) = rescue_sim(sim, &opts());
    check_contract(&sim, &t, &out);
    assert_eq!(out.map.totals().bad, 0);
    let h = out.hashes.unwrap();
    assert!(h
        .verify(
            &SimDevice::new(t, 512),
            &AtomicU64::new(0),
            &AtomicBool::new(false)
        )
        .unwrap()
        .ok());
}

#[test]
fn skip_grows_and_good_data_comes_first() {
    // A 1 MiB bad region inside 8 MiB: the copy pass must not read it sector by sector.
    let data = SimDevice::pattern(8 << 20, 3);
    let sim = SimDevice::new(data, 512).bad(2 << 20, 1 << 20);
    let o = Options {
        retries: 0,
        ..opts()
    };
    let (sim, t, out) = rescue_sim(sim, &o);
    check_contract(&sim, &t, &out);
    // 2048 bad sectors: trimming reads the two edges, scraping the 2046 in between once; the
    // good 7 MiB take ~112 cluster reads; skipping keeps failed large reads few.
    assert!(sim.reads() < 2048 + 200, "too many reads: {}", sim.reads());
}

struct Record(Mutex<Vec<Progress>>);
impl ProgressSink for Record {
    fn progress(&self, p: &Progress) {
        self.0.lock().unwrap().push(p.clone());
    }
}

#[test]
fn slow_reads_do_not_freeze_progress_and_cancel_resumes_from_the_map() {
    let data = SimDevice::pattern(2 << 20, 11);
    let sim = Arc::new(SimDevice::new(data.clone(), 512).slow(
        1 << 20,
        64 << 10,
        // Far longer than the bound below, so "cancel waited for the stalled read" is told apart
        // from a slow, loaded machine (this is not a timing test).
        Duration::from_secs(8),
    ));
    let dst = Arc::new(MemTarget::new(2 << 20, 0xAA));
    let dir = TempDir::new("rescue");
    let mapfile = dir.p("map");
    let o = Options {
        mapfile: Some(mapfile.clone()),
        command_line: "test".into(),
        ..opts()
    };
    let rec = Record(Mutex::new(vec![]));
    let cancel = Cancel::new();
    let c2 = cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        c2.cancel();
    });
    let t0 = std::time::Instant::now();
    let out = rescue::run(
        sim.clone(),
        dst.clone(),
        ExtentMap::new(2 << 20),
        &o,
        &rec,
        &cancel,
    )
    .unwrap();
    canceller.join().unwrap();
    assert!(out.cancelled);
    // Progress kept flowing while a read was stalled, and cancel returned without waiting for it.
    assert!(rec.0.lock().unwrap().len() >= 5, "progress froze");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "cancel waited for the stalled read"
    );
    let p = rec.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(p.map.as_ref().map(|m| m.len()), Some(256));
    assert_eq!(p.phase, "copying");
    // The saved map describes what is on the target; resuming finishes the job without
    // re-reading finished areas.
    let saved = ExtentMap::load(&mapfile, 2 << 20).unwrap();
    assert_eq!(saved, out.map);
    let done_before = saved.totals().finished;
    assert!(done_before > 0 && done_before < 2 << 20);
    let fresh = Arc::new(SimDevice::new(data.clone(), 512));
    let out2 = rescue::run(
        fresh.clone(),
        dst.clone(),
        saved,
        &o,
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    assert!(!out2.cancelled && out2.map.is_complete());
    assert_eq!(dst.take(), data);
    let reread = (2u64 << 20) - done_before;
    assert!(
        fresh.reads() <= reread.div_ceil(64 << 10) + 2,
        "re-read finished areas: {} reads",
        fresh.reads()
    );
}

/// Default engine sizes (1 MiB reads, 64 KiB near errors, 16 KiB probes) on a sim device.
fn default_opts() -> Options {
    Options {
        tick: Duration::from_millis(5),
        ..Options::default()
    }
}

#[test]
fn isolated_bad_sector_costs_few_failed_reads_and_little_trimming() {
    // One bad sector in the middle of a 1 MiB cluster, far from anything else.
    let data = SimDevice::pattern(8 << 20, 21);
    let bad = (3 << 20) + 300 * 1024;
    let sim = SimDevice::new(data, 512).bad(bad, 512);
    let (sim, t, out) = rescue_sim(sim, &default_opts());
    check_contract(&sim, &t, &out);
    assert_eq!(out.reads_total, sim.reads());
    assert_eq!(out.reads_failed, sim.failed_reads());
    // The 1 MiB read, the 16 KiB probe that holds the sector, the trim read of the sector
    // itself, one retry: GNU ddrescue -r1 fails its 64 KiB cluster, the trim read and the retry.
    eprintln!(
        "isolated: {} reads, {} failed",
        out.reads_total, out.reads_failed
    );
    assert_eq!(out.reads_failed, 4, "failed reads");
    // Trimming reads at most the 16 KiB probe sector by sector, not the 1 MiB read: 8 MiB in
    // 1 MiB reads, the probes up to the error, the skipped area in 64 KiB reads, 32 sectors.
    assert!(
        out.reads_total < 8 + 20 + 16 + 8 + 32 + 4,
        "{} reads",
        out.reads_total
    );
}

/// A memory target that counts its writes.
struct CountingTarget(MemTarget, AtomicU64);
impl rescue::RescueTarget for CountingTarget {
    fn write_at(&self, buf: &[u8], off: u64) -> lifeboat::error::Result<()> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.write_at(buf, off)
    }
    fn sync(&self) -> lifeboat::error::Result<()> {
        Ok(())
    }
}

#[test]
fn sector_by_sector_reads_reach_the_target_as_runs() {
    // Trimming reads the probe around each bad sector one sector at a time, and scraping a
    // bad region fails sector by sector: the target sees one write per run, not per sector.
    let data = SimDevice::pattern(8 << 20, 25);
    let sim = Arc::new(
        SimDevice::new(data.clone(), 512)
            .bad((2 << 20) + 5000 / 512 * 512, 512)
            .bad((5 << 20) + 4096, 64 << 10),
    );
    let dst = Arc::new(CountingTarget(
        MemTarget::new(8 << 20, 0xAA),
        AtomicU64::new(0),
    ));
    let out = rescue::run(
        sim.clone(),
        dst.clone(),
        ExtentMap::new(8 << 20),
        &default_opts(),
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    let t = dst.0.take();
    check_contract(&sim, &t, &out);
    let writes = dst.1.load(std::sync::atomic::Ordering::Relaxed);
    // 48 writes for 462 reads when this was written; one write per read would be over 300.
    assert!(
        writes < 60 && writes * 3 < out.reads_total,
        "{writes} writes for {} reads",
        out.reads_total
    );
}

#[test]
fn dead_region_is_not_read_more_often_than_ddrescue_would() {
    // A 1 MiB dead region: ddrescue (64 KiB clusters) fails ~16 cluster reads, 2 trim reads
    // and the 2046 remaining sectors once each in scraping, then once per retry pass.
    let data = SimDevice::pattern(16 << 20, 22);
    let sim = SimDevice::new(data, 512).bad(5 << 20, 1 << 20);
    let (sim, t, out) = rescue_sim(
        sim,
        &Options {
            retries: 1,
            ..default_opts()
        },
    );
    check_contract(&sim, &t, &out);
    eprintln!(
        "dead: {} reads, {} failed",
        out.reads_total, out.reads_failed
    );
    let sectors = 2048;
    assert!(
        out.reads_failed <= 16 + 2 + sectors + sectors,
        "{} failed reads",
        out.reads_failed
    );
    // Good data is read in large units: only the region itself is read sector by sector.
    assert!(
        out.reads_total < out.reads_failed + 100,
        "{} reads",
        out.reads_total
    );
}

#[test]
fn domain_limits_what_is_read_and_marks_the_rest_free() {
    let data = SimDevice::pattern(4 << 20, 23);
    let sim = Arc::new(SimDevice::new(data.clone(), 512).bad((1 << 20) + 4096, 512));
    let dst = Arc::new(MemTarget::new(4 << 20, 0xAA));
    let o = Options {
        domain: Some(vec![(3 << 20, 1 << 20), (1 << 20, 64 << 10)]),
        ..default_opts()
    };
    let out = rescue::run(
        sim.clone(),
        dst.clone(),
        ExtentMap::new(4 << 20),
        &o,
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    let t = dst.take();
    assert_eq!(out.map.ranges(Status::Bad), vec![((1 << 20) + 4096, 512)]);
    assert_eq!(
        out.map.ranges(Status::Finished),
        vec![
            (1 << 20, 4096),
            ((1 << 20) + 4608, (64 << 10) - 4608),
            (3 << 20, 1 << 20)
        ]
    );
    // Outside the domain: free (saved as ddrescue's non-tried, marked `# free`), not to do.
    assert_eq!(
        out.map.ranges(Status::Free),
        vec![
            (0, 1 << 20),
            ((1 << 20) + (64 << 10), (2 << 20) - (64 << 10))
        ]
    );
    assert!(out.map.ranges(Status::Untried).is_empty());
    assert!(out.map.is_complete());
    assert_eq!(&t[3 << 20..], &data[3 << 20..]);
    assert!(
        t[..1 << 20].iter().all(|&b| b == 0xAA),
        "read outside the domain"
    );
    assert!(t[2 << 20..3 << 20].iter().all(|&b| b == 0xAA));
}

#[test]
fn counters_reach_the_map_and_the_progress() {
    let data = SimDevice::pattern(2 << 20, 24);
    // Every read of the bad sector is held until a progress snapshot taken while it is held
    // (the reader's count includes it) has been recorded, so the snapshots show each phase it
    // is read in, on a machine of any speed (a slow read would only make that likely).
    let rec = Arc::new(Record(Mutex::new(vec![])));
    let seen = rec.clone();
    let sim = Arc::new(
        SimDevice::new(data, 512)
            .bad(1 << 20, 512)
            .on_read(move |n, off, len| {
                if off + len as u64 <= 1 << 20 || off >= (1 << 20) + 512 {
                    return;
                }
                let t = std::time::Instant::now();
                while !seen
                    .0
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|p| p.reads_total == Some(n + 1))
                {
                    // Only a broken engine (no progress while a read is stalled) waits this
                    // long; the asserts below then fail.
                    if t.elapsed() > Duration::from_secs(300) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }),
    );
    let dst = Arc::new(MemTarget::new(2 << 20, 0));
    let dir = TempDir::new("rescue-counters");
    let mapfile = dir.p("map");
    let o = Options {
        mapfile: Some(mapfile.clone()),
        command_line: "test".into(),
        ..default_opts()
    };
    let out = rescue::run(
        sim.clone(),
        dst,
        ExtentMap::new(2 << 20),
        &o,
        &*rec,
        &Cancel::new(),
    )
    .unwrap();
    let text = std::fs::read_to_string(&mapfile).unwrap();
    let line = format!(
        "# reads_total: {}  reads_failed: {}",
        out.reads_total, out.reads_failed
    );
    assert!(text.contains(&line), "{text}");
    assert_eq!(out.reads_failed, sim.failed_reads());
    assert!(out.reads_failed >= 3);
    let last = rec.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.reads_total, Some(out.reads_total));
    assert_eq!(last.reads_failed, Some(out.reads_failed));
    assert!(last.ms_since_good_read.is_some() && last.pass.is_some());
    let json = serde_json::to_value(&last).unwrap();
    assert_eq!(json["reads_failed"], out.reads_failed);
    // The retry pass was reported with its pass number.
    assert!(rec
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|p| p.phase == "retrying" && p.pass == Some(1)));
    // The saved map loads back as it was (pass column included).
    assert_eq!(ExtentMap::load(&mapfile, 2 << 20).unwrap(), out.map);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    #[test]
    fn any_fault_pattern_keeps_the_contract(
        lbs_4k in any::<bool>(),
        sectors in 64u64..700,
        faults in prop::collection::vec((0u64..700, 1u64..40, 0u32..4), 0..6),
    ) {
        let lbs: u64 = if lbs_4k { 4096 } else { 512 };
        let size = sectors * lbs;
        let mut sim = SimDevice::new(SimDevice::pattern(size as usize, sectors), lbs as u32);
        for (start, len, kind) in faults {
            let s = (start % sectors) * lbs;
            let l = len.min(sectors - start % sectors) * lbs;
            sim = if kind == 0 { sim.transient(s, l, 1 + (len as u32 % 3)) } else { sim.bad(s, l) };
        }
        let o = Options { cluster: 16 * lbs as usize, retries: 3, ..opts() };
        let (sim, t, out) = rescue_sim(sim, &o);
        check_contract(&sim, &t, &out);
        let h = out.hashes.unwrap();
        let r = h.verify(&SimDevice::new(t, lbs as u32), &AtomicU64::new(0), &AtomicBool::new(false)).unwrap();
        prop_assert!(r.ok());
    }
}
