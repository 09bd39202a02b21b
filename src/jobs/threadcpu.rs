//! Where a job's CPU time goes, thread by thread: with `LIFEBOAT_THREAD_CPU=1` in the
//! environment (on the kernel command line in the Lifeboat environment: the kernel hands
//! `NAME=value` words without a dot to PID 1, whose jobs inherit them), a sampler thread reads
//! `/proc/self/task/*/stat` and the machine's `/proc/stat` every [`STEP`] while the job runs and
//! prints, when it is stopped, each thread's CPU seconds and a timeline of what ran in each
//! window (per thread name: CPU % of one CPU; the machine: busy % of all CPUs). A diagnostic
//! for benchmarks (`scripts/bench-image-vm` asks for it): it says whether threads that should
//! run side by side do, without a profiler in the rescue environment. Off, it costs nothing.
//! The job may also name its steps as it reaches them ([`mark`]): printed with their times
//! since the sampler started.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The environment variable that turns the sampler on.
pub const ENV: &str = "LIFEBOAT_THREAD_CPU";
/// Sampling period.
const STEP: Duration = Duration::from_millis(100);
/// Timeline windows: this many samples each.
const WINDOW: usize = 5;
/// The kernel's clock ticks per second in `/proc` (USER_HZ: 100 on every Linux ABI Lifeboat
/// runs on).
const TICKS: f64 = 100.0;

/// Whether a sampler runs (only then [`mark`] records anything).
static ON: AtomicBool = AtomicBool::new(false);
/// The steps [`mark`] recorded.
static MARKS: Mutex<Vec<(Instant, &'static str)>> = Mutex::new(Vec::new());

/// Records that the job reached step `what` now (when a sampler runs; otherwise nothing).
pub fn mark(what: &'static str) {
    if ON.load(Ordering::Relaxed) {
        MARKS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((Instant::now(), what));
    }
}

/// The steps recorded since `t0`: `lifeboat: LABEL steps: 0.12 s what (+0.12), ...`.
fn marks_line(label: &str, t0: Instant) -> String {
    let m = MARKS.lock().unwrap_or_else(|e| e.into_inner());
    let mut prev = t0;
    let parts: Vec<String> = m
        .iter()
        .filter(|(t, _)| *t >= t0)
        .map(|&(t, what)| {
            let s = format!(
                "{:.2} {what} (+{:.2})",
                (t - t0).as_secs_f64(),
                (t - prev).as_secs_f64()
            );
            prev = t;
            s
        })
        .collect();
    if parts.is_empty() {
        return String::new();
    }
    format!("lifeboat: {label} steps (s): {}\n", parts.join(", "))
}

/// A running sampler; [`stop`](Self::stop) prints its findings on stderr.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<String>>,
}

/// One thread's `(name, user + system ticks)` from a `stat` line (the name may hold spaces
/// and parentheses: it ends at the last `)`).
pub fn parse_task_stat(s: &str) -> Option<(String, u64)> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let name = s.get(open + 1..close)?.to_string();
    let f: Vec<&str> = s.get(close + 1..)?.split_whitespace().collect();
    // Fields after the name: state is field 3 of the line, utime 14, stime 15.
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some((name, ut + st))
}

/// The machine's `(busy, total)` ticks over all CPUs from `/proc/stat`'s first line.
pub fn parse_proc_stat(s: &str) -> Option<(u64, u64)> {
    let l = s.lines().next()?;
    let v: Vec<u64> = l
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Every thread of this process: tid → (name, ticks).
fn tasks() -> BTreeMap<u32, (String, u64)> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(x) = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .as_deref()
            .and_then(parse_task_stat)
        {
            out.insert(tid, x);
        }
    }
    out
}

fn machine() -> (u64, u64) {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .as_deref()
        .and_then(parse_proc_stat)
        .unwrap_or((0, 0))
}

impl Sampler {
    /// Starts a sampler when [`ENV`] is set (to anything but `0` or empty); `label` names the
    /// job in what it prints.
    pub fn from_env(label: &str) -> Option<Sampler> {
        let on = std::env::var(ENV).is_ok_and(|v| !v.is_empty() && v != "0");
        on.then(|| Sampler::start(label))
    }

    fn start(label: &str) -> Sampler {
        ON.store(true, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let label = label.to_string();
        let handle = std::thread::Builder::new()
            .name("cpu-sampler".into())
            .spawn(move || sample(&label, &s))
            .ok();
        Sampler { stop, handle }
    }

    /// Stops sampling and prints the findings on stderr.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            // Out of its sleep at once: the job ends now, not up to a step later.
            h.thread().unpark();
            if let Ok(s) = h.join() {
                crate::err!("{s}");
            }
        }
    }
}

fn sample(label: &str, stop: &AtomicBool) -> String {
    let t0 = Instant::now();
    let me = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok());
    // tid → (name, ticks at start, ticks last seen).
    let mut seen: BTreeMap<u32, (String, u64, u64)> = BTreeMap::new();
    for (tid, (n, t)) in tasks() {
        seen.insert(tid, (n, t, t));
    }
    let mut lines = Vec::new();
    let mut win_start: BTreeMap<u32, u64> = seen.iter().map(|(k, v)| (*k, v.2)).collect();
    let mut m_start = machine();
    let mut w_t = t0;
    let mut n = 0;
    loop {
        let done = stop.load(Ordering::SeqCst);
        if !done {
            // Woken early by `stop` (a spurious wake-up only makes a shorter sample).
            std::thread::park_timeout(STEP);
        }
        for (tid, (name, t)) in tasks() {
            let e = seen.entry(tid).or_insert((name.clone(), 0, 0));
            e.0 = name;
            e.2 = t;
        }
        n += 1;
        if n % WINDOW == 0 || done {
            let secs = w_t.elapsed().as_secs_f64().max(1e-3);
            let m = machine();
            let busy = m.0.saturating_sub(m_start.0) as f64
                / m.1.saturating_sub(m_start.1).max(1) as f64
                * 100.0;
            let mut by: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for (tid, (name, _, last)) in &seen {
                if Some(*tid) == me {
                    continue;
                }
                let d = last.saturating_sub(win_start.get(tid).copied().unwrap_or(0));
                if d > 0 {
                    by.entry(name.as_str())
                        .or_default()
                        .push(d as f64 / TICKS / secs * 100.0);
                }
            }
            let parts: Vec<String> = by
                .iter()
                .map(|(k, v)| {
                    let p: Vec<String> = v.iter().map(|x| format!("{x:.0}")).collect();
                    format!("{k} {}", p.join("/"))
                })
                .collect();
            lines.push(format!(
                "lifeboat: {label} cpu {:6.1}-{:6.1} s: machine {busy:3.0}% | {}\n",
                (w_t - t0).as_secs_f64(),
                t0.elapsed().as_secs_f64(),
                parts.join(", ")
            ));
            win_start = seen.iter().map(|(k, v)| (*k, v.2)).collect();
            m_start = m;
            w_t = Instant::now();
        }
        if done {
            break;
        }
    }
    let mut out = String::new();
    let mut totals: Vec<String> = Vec::new();
    for (tid, (name, first, last)) in &seen {
        if Some(*tid) == me || last == first {
            continue;
        }
        totals.push(format!(
            "{name}[{tid}] {:.2}",
            last.saturating_sub(*first) as f64 / TICKS
        ));
    }
    out.push_str(&format!(
        "lifeboat: {label} thread CPU seconds over {:.1} s: {}\n",
        t0.elapsed().as_secs_f64(),
        totals.join(", ")
    ));
    for l in lines {
        out.push_str(&l);
    }
    out.push_str(&marks_line(label, t0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let l = "1234 (image pack) R 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 1 0 5 6 7";
        assert_eq!(parse_task_stat(l), Some(("image pack".into(), 281)));
        assert_eq!(parse_task_stat("garbage"), None);
        let s = "cpu  100 5 50 800 45 1 2 3 0 0\ncpu0 1 2 3\n";
        assert_eq!(parse_proc_stat(s), Some((161, 1006)));
    }

    #[test]
    fn marks_are_kept_only_while_a_sampler_runs() {
        mark("before");
        let t0 = Instant::now();
        assert_eq!(marks_line("x", t0), "");
        ON.store(true, Ordering::Relaxed);
        mark("step one");
        mark("step two");
        let l = marks_line("job", t0);
        assert!(l.starts_with("lifeboat: job steps (s): 0.0"), "{l}");
        assert!(
            l.contains(" step one (+") && l.contains(" step two (+0.00)"),
            "{l}"
        );
        assert!(!l.contains("before"), "{l}");
    }

    #[test]
    fn own_threads_are_read() {
        // This process's own threads: the test thread has a stat line with a name.
        let t = tasks();
        assert!(!t.is_empty());
        assert!(t.values().all(|(n, _)| !n.is_empty()));
    }
}
