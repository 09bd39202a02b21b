//! The rescue engine's checkpoints: a run started from any checkpoint's map and resume point
//! hands the target exactly the pieces the uninterrupted run handed it after that checkpoint,
//! in the same order (what makes a resumed `image create` byte-identical), in every phase.
use lifeboat::error::Result;
use lifeboat::jobs::{Cancel, NoProgress};
use lifeboat::rescue::{self, engine::ResumePoint, ExtentMap, Options, RescueTarget, SimDevice};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Data(u64, u64),
    Bad(u64, u64),
}

/// Records the pieces and the checkpoints (with the number of pieces before each).
#[derive(Default)]
struct Recorder {
    evs: Mutex<Vec<Ev>>,
    cps: Mutex<Vec<(usize, ExtentMap, ResumePoint)>>,
}

impl RescueTarget for Recorder {
    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        self.evs
            .lock()
            .unwrap()
            .push(Ev::Data(off, buf.len() as u64));
        Ok(())
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn write_bad(&self, off: u64, len: u64, _zeros: &[u8]) -> Result<()> {
        self.evs.lock().unwrap().push(Ev::Bad(off, len));
        Ok(())
    }
    fn checkpoint(&self, map: &ExtentMap, at: ResumePoint) -> Result<()> {
        let n = self.evs.lock().unwrap().len();
        self.cps.lock().unwrap().push((n, map.clone(), at));
        Ok(())
    }
}

fn disk() -> SimDevice {
    const MIB: u64 = 1 << 20;
    let mut d = SimDevice::new(SimDevice::pattern(40 << 20, 9), 512);
    for k in 0..25u64 {
        d = d.bad(MIB + k * 1_500_000 / 512 * 512, 512);
    }
    d.bad(20 * MIB + 4096, 3 * MIB / 2)
        .bad(33 * MIB, 64 << 10)
        .bad(40 * MIB - 512, 512)
}

fn run(map: ExtentMap, resume: Option<ResumePoint>, every: Duration) -> Arc<Recorder> {
    let rec = Arc::new(Recorder::default());
    let o = Options {
        checkpoints: true,
        save_every: every,
        tick: Duration::from_millis(1),
        resume,
        retries: 2,
        buffers: 2,
        ..Options::default()
    };
    let out = rescue::run(
        Arc::new(disk()),
        rec.clone(),
        map,
        &o,
        &NoProgress,
        &Cancel::new(),
    )
    .unwrap();
    assert!(out.map.is_complete());
    rec
}

#[test]
fn a_run_resumed_at_any_checkpoint_goes_on_exactly_like_the_uninterrupted_one() {
    // Checkpoints as often as the reader reaches a calm point.
    let full = run(ExtentMap::new(40 << 20), None, Duration::ZERO);
    let evs = full.evs.lock().unwrap().clone();
    let cps = full.cps.lock().unwrap().clone();
    let phases: std::collections::BTreeSet<char> = cps.iter().map(|c| c.2.phase).collect();
    for p in ['?', '*', '/', '-', '+'] {
        assert!(
            phases.contains(&p),
            "no checkpoint in phase {p}: {phases:?}"
        );
    }
    assert!(cps.len() > 20, "{} checkpoints", cps.len());
    // Every checkpoint would do; a spread of them keeps the test short.
    let step = (cps.len() / 24).max(1);
    for (n, map, at) in cps.iter().step_by(step).chain(cps.last()) {
        let resumed = run(map.clone(), Some(*at), Duration::from_secs(3600));
        let got = resumed.evs.lock().unwrap().clone();
        assert!(
            got == evs[*n..],
            "resumed at {at:?} (after {n} pieces): the pieces differ from the uninterrupted run's"
        );
    }
}
