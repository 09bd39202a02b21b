//! Simulated-device benchmark of the rescue engine against a model of GNU ddrescue's algorithm
//! (1.27, `-d -rN`, default options) on the same fault patterns. Run by `scripts/bench-rescue`;
//! not a test.
//!
//! Each pattern is a `SimDevice` with a cost model and a *simulated* clock (no sleeping): every
//! read costs a command overhead, transfer time per MiB, a seek when it does not continue the
//! previous read, and seconds when it fails (a drive's internal retries). Lifeboat's engine runs
//! for real against the device (a discarding target); the ddrescue model issues the reads
//! ddrescue would issue. Printed per pattern and algorithm: reads that failed, reads in all,
//! simulated time under two cost models (a hard disk and the QEMU/blkdebug VM, where a failed
//! read is cheap), the bytes left bad, and ratios against ddrescue -r3. Both must end with the
//! same bad ranges; the benchmark fails loudly if they differ.
//!
//! The ddrescue model follows the published algorithm (manual, "Algorithm") and the behaviour
//! of its source: 64 KiB clusters; copying in up to five passes (1 forwards with a skip that
//! starts at max(size/100000, 64 KiB) rounded up to 64 KiB, doubles up to max(that, size/100)
//! and resets on good data or when the next block is elsewhere; 2 backwards, skipping the rest
//! of a non-tried block at its first error; 3 forwards and 4 backwards over non-tried blocks
//! next to finished ones; 5 forwards without skipping); a failed read of more than one sector
//! marks the whole block non-trimmed, of one sector bad; trimming from the leading edge of each
//! non-trimmed block, then the trailing edge, an edge next to a bad sector counting as trimmed;
//! scraping forwards; N retry passes over bad sectors, alternating direction. Slow-area
//! detection is off by default in ddrescue (no `--min-read-rate`), so it is not modelled.
use lifeboat::error::Result;
use lifeboat::io::BlockSource;
use lifeboat::jobs::{Cancel, NoProgress};
use lifeboat::rescue::{self, Cost, ExtentMap, Options, RescueTarget, SimDevice, Status};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Discards what it is given (the benchmark counts reads, not writes).
struct Discard;
impl RescueTarget for Discard {
    fn write_at(&self, _buf: &[u8], _off: u64) -> Result<()> {
        Ok(())
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

/// A fault pattern: permanent bad byte ranges and sectors that fail once.
struct Pattern {
    name: &'static str,
    size: u64,
    lbs: u32,
    bad: Vec<(u64, u64)>,
    transient: Vec<u64>,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn patterns() -> Vec<Pattern> {
    let mut v = Vec::new();
    // The QEMU measurement's layout (scripts/bench-rescue-vm builds the same one): 384 MiB,
    // a 1 MiB dead region, 40 scattered bad sectors, one transient sector.
    v.push(qemu_384());
    let mut r = Rng(0x5EED_0002);
    v.push(Pattern {
        name: "scattered 1 GiB: 200 single sectors",
        size: GIB,
        lbs: 512,
        bad: (0..200).map(|_| (r.below(GIB / 512) * 512, 512)).collect(),
        transient: vec![],
    });
    v.push(Pattern {
        name: "large dead region: 64 MiB in 1 GiB",
        size: GIB,
        lbs: 512,
        bad: vec![(300 * MIB + 7 * 512, 64 * MIB)],
        transient: vec![],
    });
    let mut r = Rng(0x5EED_0004);
    v.push(Pattern {
        name: "scratch: 120 clusters of 1-64 sectors in 48 MiB",
        size: GIB,
        lbs: 512,
        bad: (0..120)
            .map(|_| {
                (
                    600 * MIB + r.below(48 * MIB / 512) * 512,
                    (1 + r.below(64)) * 512,
                )
            })
            .collect(),
        transient: vec![],
    });
    let mut r = Rng(0x5EED_0005);
    v.push(Pattern {
        name: "4Kn: 100 scattered 4 KiB sectors + 4 MiB dead in 1 GiB",
        size: GIB,
        lbs: 4096,
        bad: (0..100)
            .map(|_| (r.below(GIB / 4096) * 4096, 4096))
            .chain(std::iter::once((700 * MIB, 4 * MIB)))
            .collect(),
        transient: vec![],
    });
    v
}

/// The 384 MiB layout shared with the VM benchmark (same generator and seed there).
fn qemu_384() -> Pattern {
    let size = 384 * MIB;
    let mut bad = vec![(200 * MIB + 12 * KIB, MIB)];
    let mut r = Rng(0x5EED_0001);
    for _ in 0..40 {
        // Sectors in the data area, clear of the first MiB and the dead region.
        loop {
            let s = (MIB / 512 + r.below((size - 2 * MIB) / 512)) * 512;
            if !(199 * MIB..202 * MIB).contains(&s) {
                bad.push((s, 512));
                break;
            }
        }
    }
    Pattern {
        name: "QEMU layout: 384 MiB, 1 MiB dead, 40 sectors, 1 transient",
        size,
        lbs: 512,
        bad,
        transient: vec![300 * MIB + 3 * 512],
    }
}

fn device(p: &Pattern, cost: Cost) -> SimDevice {
    let mut d = SimDevice::zeros(p.size, p.lbs).costs(cost);
    for &(a, l) in &p.bad {
        d = d.bad(a, l);
    }
    for &t in &p.transient {
        d = d.transient(t, p.lbs as u64, 1);
    }
    d
}

/// What one algorithm did on one pattern.
struct Run {
    failed: u64,
    total: u64,
    sim: Duration,
    bad: Vec<(u64, u64)>,
}

fn run_lifeboat(p: &Pattern, cost: Cost, retries: u32) -> Run {
    let dev = Arc::new(device(p, cost));
    let o = Options {
        retries,
        hash: false,
        tick: Duration::from_millis(20),
        ..Options::default()
    };
    let out = rescue::run(
        dev.clone(),
        Arc::new(Discard),
        ExtentMap::new(p.size),
        &o,
        &NoProgress,
        &Cancel::new(),
    )
    .expect("rescue run");
    assert_eq!(out.reads_failed, dev.failed_reads());
    Run {
        failed: dev.failed_reads(),
        total: dev.reads(),
        sim: dev.sim_time(),
        bad: out.map.ranges(Status::Bad),
    }
}

/// The model of GNU ddrescue (see the module documentation).
struct Ddrescue<'a> {
    dev: &'a SimDevice,
    map: ExtentMap,
    hardbs: u64,
    softbs: u64,
    skipbs: u64,
    max_skipbs: u64,
    buf: Vec<u8>,
}

impl<'a> Ddrescue<'a> {
    fn new(dev: &'a SimDevice) -> Ddrescue<'a> {
        let size = dev.size();
        let hardbs = dev.logical_block_size() as u64;
        let softbs = (64 * KIB / hardbs).max(1) * hardbs;
        let up = |x: u64, a: u64| x.div_ceil(a) * a;
        let skipbs = up((size / 100_000).max(64 * KIB), 64 * KIB);
        let max_skipbs = up(skipbs.max(size / 100), hardbs);
        Ddrescue {
            dev,
            map: ExtentMap::new(size),
            hardbs,
            softbs,
            skipbs: up(skipbs, hardbs),
            max_skipbs,
            buf: vec![0; softbs as usize],
        }
    }

    /// Reads `[pos, pos+len)`; on failure marks it `on_error` (bad when one sector).
    fn read(&mut self, pos: u64, len: u64, on_error: Status) -> bool {
        match self.dev.read_at(&mut self.buf[..len as usize], pos) {
            Ok(_) => {
                self.map.set(pos, len, Status::Finished);
                true
            }
            Err(_) => {
                let st = if len > self.hardbs {
                    on_error
                } else {
                    Status::Bad
                };
                self.map.set(pos, len, st);
                false
            }
        }
    }

    fn ext(&self) -> Vec<(u64, u64, Status)> {
        self.map
            .extents()
            .iter()
            .map(|e| (e.pos, e.end(), e.status))
            .collect()
    }

    /// ddrescue's find_chunk: the first block of `st` at or after `pos` (optionally only one
    /// right after a finished block), at most `size` long, its end aligned down to `align`
    /// unless it is the block's end. Returns (found any, chunk).
    fn find(
        &self,
        pos: u64,
        size: u64,
        st: Status,
        align: u64,
        after_fin: bool,
    ) -> (bool, Option<(u64, u64)>) {
        let e = self.ext();
        let mut found = false;
        for (i, &(a, end, s)) in e.iter().enumerate() {
            if end <= pos || s != st {
                continue;
            }
            found = true;
            if after_fin && i > 0 && e[i - 1].2 != Status::Finished {
                continue;
            }
            let p = pos.max(a);
            let mut c_end = (p + size).min(end);
            if c_end != end {
                let rest = c_end % align;
                if c_end - p > rest {
                    c_end -= rest;
                }
            }
            return (found, Some((p, c_end)));
        }
        (found, None)
    }

    /// ddrescue's rfind_chunk: the last block of `st` ending at or before `end`, at most
    /// `size` long, its start aligned up to `align` unless it is the block's start.
    fn rfind(
        &self,
        end: u64,
        size: u64,
        st: Status,
        align: u64,
        before_fin: bool,
    ) -> (bool, Option<(u64, u64)>) {
        let e = self.ext();
        let mut found = false;
        for i in (0..e.len()).rev() {
            let (a, b_end, s) = e[i];
            if a >= end || s != st {
                continue;
            }
            found = true;
            if before_fin && i + 1 < e.len() && e[i + 1].2 != Status::Finished {
                continue;
            }
            let ce = end.min(b_end);
            let mut cp = ce.saturating_sub(size).max(a);
            if cp != a {
                let disp = align - cp % align;
                if disp < align && disp < ce - cp {
                    cp += disp;
                }
            }
            return (found, Some((cp, ce)));
        }
        (found, None)
    }

    fn fcopy(&mut self, pass: u32) -> bool {
        let after_fin = pass == 3 || pass == 4;
        let mut pos = 0;
        let mut eskip = self.skipbs;
        let mut any = false;
        loop {
            let (found, c) = self.find(pos, self.softbs, Status::Untried, self.softbs, after_fin);
            any |= found;
            let Some((a, e)) = c else { break };
            if pos != a {
                eskip = self.skipbs;
            }
            pos = e;
            let ok = self.read(a, e - a, Status::NonTrimmed);
            if !ok && pass == 1 {
                // (Forwards passes 3 and 5 do not skip: ddrescue asks find_chunk for a block of
                // size -1 there, which it refuses.)
                let want = eskip;
                eskip = if eskip <= self.max_skipbs / 2 {
                    eskip * 2
                } else {
                    self.max_skipbs
                };
                if let (_, Some((sa, se))) =
                    self.find(pos, want, Status::Untried, self.hardbs, false)
                {
                    if sa == pos {
                        pos = se;
                    }
                }
            } else if ok {
                eskip = self.skipbs;
            }
        }
        any
    }

    fn rcopy(&mut self, pass: u32) -> bool {
        let before_fin = pass == 3 || pass == 4;
        let mut end = self.map.size();
        let mut any = false;
        loop {
            let (found, c) = self.rfind(end, self.softbs, Status::Untried, self.softbs, before_fin);
            any |= found;
            let Some((a, e)) = c else { break };
            end = a;
            let ok = self.read(a, e - a, Status::NonTrimmed);
            if !ok && pass <= 4 && end > 0 {
                // Passes 2 and 4 skip the rest of the block at the first error.
                if let (_, Some((sa, se))) =
                    self.rfind(end, u64::MAX / 4, Status::Untried, self.hardbs, false)
                {
                    if se == end {
                        end = sa;
                    }
                }
            }
        }
        any
    }

    fn trim(&mut self) {
        let h = self.hardbs;
        while let Some((a, l)) = self.map.next_with(Status::NonTrimmed, 0) {
            let e = a + l;
            let lbad = a > 0 && self.map.status_at(a - 1) == Some(Status::Bad);
            let rbad = self.map.status_at(e) == Some(Status::Bad);
            if lbad && rbad {
                self.map.set(a, l, Status::NonScraped);
                continue;
            }
            let (mut pos, mut end) = (a, e);
            let mut err = lbad;
            while pos < end && !err {
                let mut be = pos + h.min(end - pos);
                if be != end && be % h != 0 && be - pos > be % h {
                    be -= be % h;
                }
                let p = pos;
                pos = be;
                err = !self.read(p, be - p, Status::Bad);
            }
            err = rbad;
            while pos < end && !err {
                let size = h.min(end - pos);
                let mut bp = end - size;
                if bp != pos {
                    let disp = h - bp % h;
                    if disp < h && disp < size {
                        bp += disp;
                    }
                }
                let be = end;
                end = bp;
                err = !self.read(bp, be - bp, Status::Bad);
            }
            if pos < end && self.map.status_at(end - 1) == Some(Status::NonTrimmed) {
                let (na, nl) = self.map.prev_with(Status::NonTrimmed, end).unwrap();
                self.map.set(na, nl, Status::NonScraped);
            }
        }
    }

    fn scrape(&mut self) {
        while let Some((a, l)) = self.map.next_with(Status::NonScraped, 0) {
            let mut p = a;
            while p < a + l {
                let n = self.hardbs.min(a + l - p);
                self.read(p, n, Status::Bad);
                p += n;
            }
        }
    }

    fn retry(&mut self, forward: bool) {
        let bad = self.map.ranges(Status::Bad);
        let mut sectors: Vec<(u64, u64)> = Vec::new();
        for (a, l) in bad {
            let mut p = a;
            while p < a + l {
                let n = self.hardbs.min(a + l - p);
                sectors.push((p, n));
                p += n;
            }
        }
        if !forward {
            sectors.reverse();
        }
        for (p, n) in sectors {
            self.read(p, n, Status::Bad);
        }
    }

    fn run(mut self, retries: u32) -> Vec<(u64, u64)> {
        let mut forward = true;
        for pass in 1..=5 {
            let any = if forward {
                self.fcopy(pass)
            } else {
                self.rcopy(pass)
            };
            if !any {
                break;
            }
            forward = !forward;
        }
        self.trim();
        self.scrape();
        let mut forward = true;
        for _ in 0..retries {
            if self.map.next_with(Status::Bad, 0).is_none() {
                break;
            }
            self.retry(forward);
            forward = !forward;
        }
        self.map.ranges(Status::Bad)
    }
}

fn run_ddrescue(p: &Pattern, cost: Cost, retries: u32) -> Run {
    let dev = device(p, cost);
    let bad = Ddrescue::new(&dev).run(retries);
    Run {
        failed: dev.failed_reads(),
        total: dev.reads(),
        sim: dev.sim_time(),
        bad,
    }
}

/// A hard disk: 0.1 ms per command, 150 MB/s, 8 ms per seek, 3 s per failed read.
fn hdd() -> Cost {
    Cost {
        per_read: Duration::from_micros(100),
        per_mib: Duration::from_micros(7_000),
        seek: Duration::from_millis(8),
        failed: Duration::from_secs(3),
    }
}

/// The QEMU TCG VM with blkdebug (a failed read is as cheap as a good one): ~0.3 ms per
/// command, ~3 ms per MiB, no seeks.
fn vm() -> Cost {
    Cost {
        per_read: Duration::from_micros(300),
        per_mib: Duration::from_micros(3_000),
        seek: Duration::ZERO,
        failed: Duration::from_micros(300),
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 3600.0 {
        format!("{:.2} h", s / 3600.0)
    } else {
        format!("{s:.1} s")
    }
}

fn main() {
    let only: Option<String> = std::env::args().nth(1);
    println!("Simulated failing disks: Lifeboat's rescue engine vs a model of GNU ddrescue 1.27 (-d -rN).");
    println!("HDD cost model: {:?}", hdd());
    println!("VM cost model:  {:?}", vm());
    println!("Ratios are against ddrescue -r3 (the reference run of issue 12); lower is better.\n");
    for p in patterns() {
        if let Some(o) = &only {
            if !p.name.contains(o.as_str()) {
                continue;
            }
        }
        let t0 = Instant::now();
        let bad_bytes: u64 = {
            let mut m = ExtentMap::new(p.size);
            for &(a, l) in &p.bad {
                let s = a / p.lbs as u64 * p.lbs as u64;
                m.set(
                    s,
                    (a + l).div_ceil(p.lbs as u64) * p.lbs as u64 - s,
                    Status::Bad,
                );
            }
            m.totals().bad
        };
        println!("== {} ({} bad bytes)", p.name, bad_bytes);
        println!(
            "{:<22} {:>12} {:>10} {:>12} {:>10} {:>12} {:>10} {:>10}",
            "algorithm", "failed reads", "ratio", "reads", "HDD time", "ratio", "VM time", "ratio"
        );
        let runs: Vec<(String, Run, Run)> = vec![
            (
                "ddrescue -r3".into(),
                run_ddrescue(&p, hdd(), 3),
                run_ddrescue(&p, vm(), 3),
            ),
            (
                "ddrescue -r1".into(),
                run_ddrescue(&p, hdd(), 1),
                run_ddrescue(&p, vm(), 1),
            ),
            (
                "lifeboat (retries 1)".into(),
                run_lifeboat(&p, hdd(), 1),
                run_lifeboat(&p, vm(), 1),
            ),
            (
                "lifeboat (retries 3)".into(),
                run_lifeboat(&p, hdd(), 3),
                run_lifeboat(&p, vm(), 3),
            ),
        ];
        let (rf, rh, rv) = (runs[0].1.failed, runs[0].1.sim, runs[0].2.sim);
        for (name, h, v) in &runs {
            println!(
                "{:<22} {:>12} {:>9.2}x {:>12} {:>10} {:>11.2}x {:>10} {:>9.2}x",
                name,
                h.failed,
                h.failed as f64 / rf.max(1) as f64,
                h.total,
                secs(h.sim),
                h.sim.as_secs_f64() / rh.as_secs_f64().max(1e-9),
                secs(v.sim),
                v.sim.as_secs_f64() / rv.as_secs_f64().max(1e-9),
            );
            assert_eq!(
                h.failed, v.failed,
                "{name}: the cost model changed the reads"
            );
            assert_eq!(
                h.bad, runs[0].1.bad,
                "{name} and ddrescue -r3 disagree on the bad ranges of {}",
                p.name
            );
            let b: u64 = h.bad.iter().map(|r| r.1).sum();
            assert_eq!(b, bad_bytes, "{name}: bad bytes");
        }
        println!(
            "(same bad ranges from every algorithm; {:.1} s real)\n",
            t0.elapsed().as_secs_f64()
        );
    }
}
