//! Jobs: long-running clone/image/restore work reports progress through a [`ProgressSink`] and
//! checks a [`Cancel`] token. The same job code serves the CLI (progress on stderr), the
//! unattended runner (`LIFEBOAT-PROGRESS {json}` lines) and the TUI (events over a channel).
//! [`jobdir`] is the protocol of a job run detached from the console that started it.
pub mod jobdir;
pub mod threadcpu;

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A snapshot of a running job. Sent often; sinks throttle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// "clone", "image-create", "image-restore", "image-verify", "verify"...
    pub job: String,
    /// Phase name: "copying", "trimming", "scraping", "retrying", "verifying", "syncing"...
    pub phase: String,
    /// Bytes of the job's total that are finished (read successfully or given up as bad).
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// Bytes known unreadable so far.
    pub bad_bytes: u64,
    /// Bytes per second over the recent window.
    pub rate_bytes_per_sec: u64,
    /// Estimated seconds left, when it can be estimated.
    pub eta_secs: Option<u64>,
    /// Optional coarse map of the disk for display: one char per cell,
    /// '.' untried, '+' finished, '-' bad, '*' non-trimmed, '/' non-scraped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
    /// Rescue jobs: the current pass of the phase (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<u32>,
    /// Rescue jobs: reads issued to the source so far, and how many failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reads_total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reads_failed: Option<u64>,
    /// Rescue jobs: milliseconds since a read last returned data (a stalled drive shows here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms_since_good_read: Option<u64>,
}

impl Progress {
    pub fn new(job: &str, phase: &str, total_bytes: u64) -> Self {
        Progress {
            job: job.to_string(),
            phase: phase.to_string(),
            done_bytes: 0,
            total_bytes,
            bad_bytes: 0,
            rate_bytes_per_sec: 0,
            eta_secs: None,
            map: None,
            pass: None,
            reads_total: None,
            reads_failed: None,
            ms_since_good_read: None,
        }
    }
    pub fn percent(&self) -> f64 {
        if self.total_bytes == 0 {
            100.0
        } else {
            self.done_bytes as f64 * 100.0 / self.total_bytes as f64
        }
    }
}

/// Receives progress snapshots. Must be cheap: engines call it from their reporting thread.
pub trait ProgressSink: Send + Sync {
    fn progress(&self, p: &Progress);
}

/// Discards progress.
pub struct NoProgress;
impl ProgressSink for NoProgress {
    fn progress(&self, _p: &Progress) {}
}

/// Forwards progress over a channel (the TUI's job events).
pub struct ChannelSink(pub Mutex<mpsc::Sender<Progress>>);
impl ProgressSink for ChannelSink {
    fn progress(&self, p: &Progress) {
        if let Ok(tx) = self.0.lock() {
            let _ = tx.send(p.clone());
        }
    }
}

/// Progress on stderr, throttled: a human status line, or `LIFEBOAT-PROGRESS {json}` lines when
/// the environment variable `LIFEBOAT_PROGRESS=json` is set (the unattended runner sets it).
pub struct StderrSink {
    json: bool,
    every: Duration,
    /// When the last snapshot was printed, and its job and phase (a new phase is printed at
    /// once, so the stream shows when each phase began).
    last: Mutex<Option<(Instant, String, String)>>,
}

impl StderrSink {
    pub fn from_env() -> Self {
        let json = std::env::var("LIFEBOAT_PROGRESS")
            .map(|v| v == "json")
            .unwrap_or(false);
        StderrSink {
            json,
            every: Duration::from_millis(if json { 2000 } else { 500 }),
            last: Mutex::new(None),
        }
    }
    /// Prints the final snapshot regardless of throttling (and ends the human status line).
    pub fn finish(&self, p: &Progress) {
        self.emit(p);
        if !self.json {
            crate::errln!();
        }
    }
    /// Whether snapshot `p` is printed at `now` (and, if so, notes it): the first one, one a
    /// throttle interval after the last printed, or the first of a new job or phase.
    fn due(&self, now: Instant, p: &Progress) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref().is_some_and(|(t, job, phase)| {
            now.duration_since(*t) < self.every && *job == p.job && *phase == p.phase
        }) {
            return false;
        }
        *last = Some((now, p.job.clone(), p.phase.clone()));
        true
    }
    fn emit(&self, p: &Progress) {
        if self.json {
            let mut q = p.clone();
            // The console's job runner sets LIFEBOAT_PROGRESS_MAP=1 to get the coarse map too.
            if std::env::var_os("LIFEBOAT_PROGRESS_MAP").is_none() {
                q.map = None;
            }
            if let Ok(s) = serde_json::to_string(&q) {
                crate::out::err_raw(&format!("LIFEBOAT-PROGRESS {s}\n"));
            }
        } else {
            // The line's own controls raw, its text (file names) through the escaping writer.
            crate::out::err_raw("\r\x1b[K");
            crate::err!("{}", human_line(p));
        }
    }
}

impl ProgressSink for StderrSink {
    fn progress(&self, p: &Progress) {
        if self.due(Instant::now(), p) {
            self.emit(p);
        }
    }
}

/// One status line: "copying  42.0%  1.2 GiB / 2.9 GiB  180 MiB/s  ETA 0:09  bad 4 KiB", and
/// for a rescue the pass, the failed reads and, when the drive has returned no data for more
/// than 2 s, for how long.
pub fn human_line(p: &Progress) -> String {
    let eta = p
        .eta_secs
        .map(fmt_duration)
        .unwrap_or_else(|| "--:--".into());
    let mut s = format!(
        "{:<10} {:5.1}%  {} / {}  {}/s  ETA {}  bad {}",
        p.phase,
        p.percent(),
        fmt_bytes(p.done_bytes),
        fmt_bytes(p.total_bytes),
        fmt_bytes(p.rate_bytes_per_sec),
        eta,
        fmt_bytes(p.bad_bytes)
    );
    if let (Some(pass), Some(f), Some(t)) = (p.pass, p.reads_failed, p.reads_total) {
        s.push_str(&format!("  pass {pass}  failed reads {f}/{t}"));
    }
    if let Some(ms) = p.ms_since_good_read.filter(|&ms| ms > 2000) {
        s.push_str(&format!("  no data for {}", fmt_duration(ms / 1000)));
    }
    s
}

/// Binary-prefixed size: "512 B", "4.0 KiB", "1.5 GiB".
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// "h:mm:ss" or "m:ss".
pub fn fmt_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// A cancellation token shared between the UI/signal handler and a running job.
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);
impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Turns Ctrl-C (SIGINT) and SIGTERM into `cancel.cancel()` for a CLI job: the job stops at its
/// next check and cleans up (`what_happens` tells the person how, e.g. "the target is synced");
/// a second signal exits at once with code 130. The signals are blocked in the calling thread
/// and taken by a "signals" thread with sigwait, so call this before the job starts any thread
/// (threads inherit the mask; a thread without it would let the default action kill the process).
pub fn cancel_on_signals(cancel: &Cancel, what_happens: &'static str) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if set.thread_block().is_err() {
        return;
    }
    let c = cancel.clone();
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while set.wait().is_ok() {
                if AT_PROMPT.load(std::sync::atomic::Ordering::SeqCst) {
                    crate::errln!("\nlifeboat: cancelled; nothing was written");
                    exit_now(crate::error::exit::CANCELLED);
                }
                if c.is_cancelled() {
                    crate::errln!("\nlifeboat: stopped");
                    exit_now(crate::error::exit::CANCELLED);
                }
                crate::errln!(
                    "\nlifeboat: cancelling ({what_happens}; press Ctrl-C again to stop at once)"
                );
                c.cancel();
            }
        });
}

/// Set while a confirmation question waits for an answer: then one Ctrl-C (or SIGTERM) exits
/// at once with 130 (nothing has been written yet).
pub static AT_PROMPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

static EXIT_HOOKS: std::sync::Mutex<Vec<fn()>> = std::sync::Mutex::new(Vec::new());

/// Registers `f` to run before the process exits without unwinding (the second Ctrl-C), e.g. to
/// restore the read-only flags a guard set. Registering the same function twice runs it once.
pub fn before_exit(f: fn()) {
    if let Ok(mut h) = EXIT_HOOKS.lock() {
        if !h.iter().any(|g| std::ptr::fn_addr_eq(*g, f)) {
            h.push(f);
        }
    }
}

/// Runs the [`before_exit`] hooks, then exits with `code`.
pub fn exit_now(code: i32) -> ! {
    let hooks: Vec<fn()> = EXIT_HOOKS.lock().map(|h| h.clone()).unwrap_or_default();
    for f in hooks {
        f();
    }
    std::process::exit(code)
}

/// Measures a rate over a sliding window and derives an ETA.
pub struct RateMeter {
    window: Duration,
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl RateMeter {
    pub fn new(window: Duration) -> Self {
        RateMeter {
            window,
            samples: Default::default(),
        }
    }
    /// Records `done` bytes at `now`; returns (bytes/s, eta seconds for `total`).
    pub fn update(&mut self, now: Instant, done: u64, total: u64) -> (u64, Option<u64>) {
        self.samples.push_back((now, done));
        while self.samples.len() > 2 && now.duration_since(self.samples[0].0) > self.window {
            self.samples.pop_front();
        }
        let (t0, d0) = self.samples[0];
        let dt = now.duration_since(t0).as_secs_f64();
        if dt <= 0.0 || done < d0 {
            return (0, None);
        }
        let rate = (done - d0) as f64 / dt;
        let eta = if rate > 0.0 {
            Some(((total.saturating_sub(done)) as f64 / rate).ceil() as u64)
        } else {
            None
        };
        (rate as u64, eta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_throttled_but_a_new_phase_is_printed_at_once() {
        let sink = StderrSink {
            json: true,
            every: Duration::from_secs(2),
            last: Mutex::new(None),
        };
        let t = Instant::now();
        let copying = Progress::new("image-create", "copying", 100);
        let verifying = Progress::new("image-create", "verifying", 100);
        assert!(sink.due(t, &copying), "the first snapshot");
        assert!(!sink.due(t + Duration::from_millis(500), &copying));
        assert!(
            sink.due(t + Duration::from_millis(600), &verifying),
            "a new phase"
        );
        assert!(!sink.due(t + Duration::from_millis(700), &verifying));
        assert!(
            sink.due(t + Duration::from_millis(2700), &verifying),
            "after the interval"
        );
        let other = Progress::new("clone", "verifying", 100);
        assert!(
            sink.due(t + Duration::from_millis(2800), &other),
            "a new job"
        );
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(4096), "4.0 KiB");
        assert_eq!(fmt_bytes(3 << 30), "3.0 GiB");
        assert_eq!(fmt_duration(65), "1:05");
        assert_eq!(fmt_duration(3661), "1:01:01");
    }

    #[test]
    fn rate_and_eta() {
        let mut m = RateMeter::new(Duration::from_secs(10));
        let t = Instant::now();
        m.update(t, 0, 1000);
        let (r, eta) = m.update(t + Duration::from_secs(2), 200, 1000);
        assert_eq!(r, 100);
        assert_eq!(eta, Some(8));
    }

    #[test]
    fn cancel_is_shared() {
        let c = Cancel::new();
        let d = c.clone();
        d.cancel();
        assert!(c.is_cancelled());
    }
}
