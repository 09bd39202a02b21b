//! What the failing-disk benchmarks under QEMU share (`scripts/bench-rescue-vm`,
//! `scripts/bench-image-vm`): the 384 MiB source and its faults (the layout of
//! `examples/bench_rescue.rs`), one timed boot from QEMU's start to the guest's power-off with
//! QEMU's own read counters for the source, and console helpers.
use crate::qemu::{default_append, DiskSpec, SerialMode, VmSpec};
use crate::{Faults, Vm};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const SIZE: u64 = 384 * MIB;

/// The deterministic generator of examples/bench_rescue.rs (xorshift64*).
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The 384 MiB layout, exactly as `qemu_384()` in examples/bench_rescue.rs.
pub fn faults() -> Faults {
    let mut f = Faults::new().bad_bytes(200 * MIB + 12 * KIB, MIB);
    let mut r = Rng(0x5EED_0001);
    for _ in 0..40 {
        loop {
            let s = (MIB / 512 + r.below((SIZE - 2 * MIB) / 512)) * 512;
            if !(199 * MIB..202 * MIB).contains(&s) {
                f = f.bad_bytes(s, 512);
                break;
            }
        }
    }
    f.transient_sector((300 * MIB + 3 * 512) / 512)
}

pub fn pattern(size: u64) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    let mut x: u64 = 0x0DDB_A11C_0FFE_E001;
    for c in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    v
}

/// One timed run.
pub struct Run {
    pub tool: &'static str,
    pub secs: f64,
    /// QEMU start to the kernel starting /init (firmware, loading, kernel boot: the same kernel
    /// for both; polled, so within 50 ms).
    pub to_init: f64,
    /// QEMU's counters for the source: successful and failed read requests.
    pub dev_reads: u64,
    pub dev_failed: u64,
    /// The guest's console output.
    pub console: String,
    /// Each console line with the time it reached the host (seconds since QEMU's start; the
    /// console is polled every 50 ms, so within 50 ms of when it was printed).
    pub lines: Vec<(f64, String)>,
    /// Host CPU seconds QEMU used (user + system, all its threads) up to the guest's
    /// power-off, and up to the kernel starting /init: the work of the run, which a loaded
    /// host stretches out in wall time but hardly changes (0 where unknown).
    pub host_cpu: f64,
    pub host_cpu_at_init: f64,
}

/// User + system CPU seconds of process `pid` (all its threads) from `/proc/PID/stat`.
pub fn process_cpu_secs(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(close) = s.rfind(')') else {
        return 0.0;
    };
    let f: Vec<&str> = s[close + 1..].split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name), in the
    // kernel's USER_HZ ticks (100 per second).
    (t(11) + t(12)) as f64 / 100.0
}

/// QEMU's read counters of drive `drive` over QMP (`query-blockstats`): successful and failed
/// read requests as the device saw them.
pub fn blockstats(qmp: &Path, drive: &str) -> Result<(u64, u64), String> {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let mut s = UnixStream::connect(qmp).map_err(|e| format!("QMP {}: {e}", qmp.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let mut greeting = String::new();
    r.read_line(&mut greeting).map_err(|e| e.to_string())?;
    let mut line = String::new();
    let mut reply = |s: &mut UnixStream, cmd: &str| -> Result<Value, String> {
        s.write_all(cmd.as_bytes()).map_err(|e| e.to_string())?;
        loop {
            line.clear();
            if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("QMP closed".into());
            }
            let v: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
            if v.get("return").is_some() || v.get("error").is_some() {
                return Ok(v);
            }
        }
    };
    // After the greeting: capabilities negotiation, then the query.
    reply(&mut s, "{\"execute\":\"qmp_capabilities\"}\n")?;
    let v = reply(&mut s, "{\"execute\":\"query-blockstats\"}\n")?;
    let dev = v["return"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["device"] == drive))
        .ok_or(format!("no {drive} in query-blockstats: {v}"))?;
    let st = &dev["stats"];
    Ok((
        st["rd_operations"].as_u64().unwrap_or(0),
        st["failed_rd_operations"].as_u64().unwrap_or(0),
    ))
}

/// Drops `p` from the page cache (a cold source for every run).
pub fn evict(p: &Path) {
    let _ = Command::new("dd")
        .arg(format!("if={}", p.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status();
}

/// One timed boot of `initrd` with `params` and `disks` (the source must be drive `d0`): QEMU's
/// start to the guest's power-off (polled every 50 ms), the time /init started, and QEMU's
/// read counters for the source.
pub fn boot(
    tool: &'static str,
    kernel: &Path,
    initrd: &Path,
    params: &str,
    disks: Vec<DiskSpec>,
) -> Result<Run, String> {
    let mut spec = VmSpec::new(kernel, initrd, SerialMode::Terminal);
    spec.append = default_append(params);
    spec.disks = disks;
    // Stay after the guest powers off, to read the device counters; the time is taken when
    // the monitor first reports the shutdown (polled every 50 ms).
    spec.extra.push("-no-shutdown".into());
    let qmp =
        std::env::temp_dir().join(format!("lifeboat-bench-{}-{tool}.qmp", std::process::id()));
    spec.extra.push("-qmp".into());
    spec.extra
        .push(format!("unix:{},server=on,wait=off", qmp.display()));
    let vm = Vm::start(&format!("bench-{tool}"), spec)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(1800);
    let mut to_init = None;
    let mut cpu_at_init = 0.0;
    let mut lines = Vec::new();
    let mut seen = 0;
    loop {
        let out = vm.output();
        let now = vm.elapsed().as_secs_f64();
        if to_init.is_none() && String::from_utf8_lossy(&out).contains("Run /init as init") {
            to_init = Some(now);
            cpu_at_init = process_cpu_secs(vm.pid());
        }
        seen = stamp_lines(&out, seen, now, &mut lines);
        let st = vm.monitor("info status")?;
        if st.contains("shutdown") {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{tool}: no power-off after 30 min; see {}",
                vm.log_path().display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = vm.elapsed().as_secs_f64();
    let host_cpu = process_cpu_secs(vm.pid());
    let (dev_reads, dev_failed) = blockstats(&qmp, "d0")?;
    let out = vm.output();
    stamp_lines(&out, seen, secs, &mut lines);
    let console = String::from_utf8_lossy(&out).replace('\r', "");
    let _ = vm.monitor("quit");
    let _ = std::fs::remove_file(&qmp);
    Ok(Run {
        tool,
        secs,
        to_init: to_init.unwrap_or(0.0),
        dev_reads,
        dev_failed,
        console,
        lines,
        host_cpu,
        host_cpu_at_init: cpu_at_init,
    })
}

/// Adds the whole lines of `out` past byte `seen` to `lines`, stamped `now`; returns where the
/// next unfinished line starts.
fn stamp_lines(out: &[u8], seen: usize, now: f64, lines: &mut Vec<(f64, String)>) -> usize {
    let Some(rest) = out.get(seen..) else {
        return seen;
    };
    let Some(end) = rest.iter().rposition(|&b| b == b'\n') else {
        return seen;
    };
    for l in String::from_utf8_lossy(&rest[..end]).split('\n') {
        lines.push((now, l.trim_end_matches('\r').to_string()));
    }
    seen + end + 1
}

/// The milestones of a run's console, each with its time since QEMU's start: the kernel
/// starting /init, PID 1's boot steps done, the command started, the first progress line of
/// each phase (`LIFEBOAT-PROGRESS`'s `job`/`phase`), the command's end and result, power-off
/// begun, and QEMU seeing the power-off. What the breakdown of a run's time is read from.
pub fn timeline(run: &Run) -> Vec<(f64, String)> {
    let mut t = Vec::new();
    let mut phase = String::new();
    for (at, l) in &run.lines {
        let m = if l.contains("Run /init as init") {
            Some("kernel starts /init".to_string())
        } else if let Some(i) = l.find("lifeboat: up in ") {
            Some(format!("boot steps done ({})", &l[i + 10..]))
        } else if l.contains("lifeboat: running: ") {
            Some("command started".to_string())
        } else if let Some(i) = l.find("LIFEBOAT-PROGRESS ") {
            let v: Value = serde_json::from_str(l[i + 18..].trim()).unwrap_or(Value::Null);
            let p = format!(
                "{} {}",
                v["job"].as_str().unwrap_or("?"),
                v["phase"].as_str().unwrap_or("?")
            );
            (p != phase).then(|| {
                phase = p.clone();
                format!("first progress: {p}")
            })
        } else if let Some(i) = l.find("lifeboat: command finished") {
            Some(l[i + 10..].to_string())
        } else if l.contains("lifeboat: powering off") {
            Some("powering off (stop processes, sync, unmount)".to_string())
        } else {
            None
        };
        if let Some(m) = m {
            t.push((*at, m));
        }
    }
    t.push((run.secs, "QEMU sees the power-off".to_string()));
    t
}

/// A blank file of `size` bytes (sparse).
pub fn blank(p: &Path, size: u64) -> Result<(), String> {
    std::fs::write(p, b"").map_err(|e| e.to_string())?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .map_err(|e| e.to_string())?;
    f.set_len(size).map_err(|e| e.to_string())
}

/// The JSON after a console marker.
pub fn marker_json(console: &str, marker: &str) -> Option<Value> {
    console
        .lines()
        .rev()
        .find_map(|l| l.find(marker).map(|i| &l[i + marker.len()..]))
        .and_then(|j| serde_json::from_str(j.trim()).ok())
}

/// The text between two console markers.
pub fn between<'a>(console: &'a str, a: &str, b: &str) -> Option<&'a str> {
    let i = console.find(a)? + a.len();
    let j = console[i..].find(b)? + i;
    Some(&console[i..j])
}

/// The arguments both benchmarks share (`--runs N`, `--dir DIR`) and each one's own value
/// flags (`own`), in the order given; anything else is an error showing `usage`.
#[derive(Debug)]
pub struct Args {
    pub runs: usize,
    pub dir: PathBuf,
    pub own: Vec<(String, String)>,
}

impl Args {
    /// The value of own flag `flag`, if given (the last one wins).
    pub fn get(&self, flag: &str) -> Option<&str> {
        self.own
            .iter()
            .rev()
            .find(|(f, _)| f == flag)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `args` (without the program name): `--runs` (default 2), `--dir` (default
/// target/NAME) and the value flags in `own`.
pub fn parse_args(
    name: &str,
    own: &[&str],
    usage: &str,
    args: impl IntoIterator<Item = String>,
) -> Result<Args, String> {
    let mut o = Args {
        runs: 2,
        dir: crate::repo_root().join("target").join(name),
        own: Vec::new(),
    };
    let mut a = args.into_iter();
    while let Some(x) = a.next() {
        let mut val = || a.next().ok_or(format!("{x} needs a value"));
        match x.as_str() {
            "--runs" => o.runs = val()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--dir" => o.dir = PathBuf::from(val()?),
            f if own.contains(&f) => {
                let v = val()?;
                o.own.push((x.clone(), v));
            }
            _ => return Err(format!("unknown argument {x}; usage: {name} {usage}")),
        }
    }
    Ok(o)
}

/// The source every round reads: written once into `dir` (kept between invocations), its
/// blkdebug rules, its faults and its sha256 before any run.
pub struct Source {
    pub path: PathBuf,
    pub blkdebug: PathBuf,
    pub faults: Faults,
    pub sha256: String,
}

/// Makes `dir` and the source in it.
pub fn source(dir: &Path) -> Result<Source, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("src.img");
    let blkdebug = dir.join("blkdebug.conf");
    let faults = faults();
    faults.write(&blkdebug).map_err(|e| e.to_string())?;
    if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(SIZE) {
        std::fs::write(&path, pattern(SIZE)).map_err(|e| e.to_string())?;
    }
    let sha256 = crate::disks::sha256(&path).map_err(|e| e.to_string())?;
    Ok(Source {
        path,
        blkdebug,
        faults,
        sha256,
    })
}

/// `runs` rounds of the two `tools`, the order alternating so neither always runs on a warmer
/// machine; `one` runs one tool once. Each run is logged to stderr as `NAME: round ...`.
pub fn rounds(
    name: &str,
    runs: usize,
    tools: [&'static str; 2],
    mut one: impl FnMut(&'static str) -> Result<Run, String>,
) -> Result<Vec<Run>, String> {
    let mut out = Vec::new();
    for round in 0..runs {
        let order = if round % 2 == 0 {
            tools
        } else {
            [tools[1], tools[0]]
        };
        for tool in order {
            let r = one(tool)?;
            eprintln!(
                "{name}: round {} {:<9} {:6.1} s (/init at {:.1} s)  source reads {} (failed {})",
                round + 1,
                r.tool,
                r.secs,
                r.to_init,
                r.dev_reads + r.dev_failed,
                r.dev_failed
            );
            out.push(r);
        }
    }
    Ok(out)
}

/// The fastest run of `tool` (QEMU start to power-off).
pub fn best<'a>(runs: &'a [Run], tool: &str) -> &'a Run {
    runs.iter()
        .filter(|r| r.tool == tool)
        .min_by(|a, b| a.secs.total_cmp(&b.secs))
        .expect("at least one run of each tool")
}

/// The last run of `tool`.
pub fn last<'a>(runs: &'a [Run], tool: &str) -> &'a Run {
    runs.iter()
        .rev()
        .find(|r| r.tool == tool)
        .expect("at least one run of each tool")
}

/// The shortest time from /init to power-off of `tool`'s runs.
pub fn best_after_init(runs: &[Run], tool: &str) -> f64 {
    runs.iter()
        .filter(|r| r.tool == tool)
        .map(|r| r.secs - r.to_init)
        .fold(f64::INFINITY, f64::min)
}

/// `tool 12.3s, tool 11.9s, ...` for every run.
pub fn all_runs(runs: &[Run]) -> String {
    runs.iter()
        .map(|r| match r.host_cpu {
            c if c > 0.0 => format!(
                "{} {:.1}s (QEMU host CPU {:.1}s, {:.1}s after /init)",
                r.tool,
                r.secs,
                c,
                c - r.host_cpu_at_init
            ),
            _ => format!("{} {:.1}s", r.tool, r.secs),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `bad_ranges` of a Lifeboat JSON report as (start, length) pairs.
pub fn bad_ranges(out: &Value) -> Result<Vec<(u64, u64)>, String> {
    Ok(out["bad_ranges"]
        .as_array()
        .ok_or(format!("no bad_ranges: {out}"))?
        .iter()
        .map(|v| (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_shared_and_own_flags() {
        let a = parse_args(
            "b",
            &["--compress"],
            "",
            args(&["--runs", "3", "--compress", "lz4", "--dir", "/x"]),
        )
        .unwrap();
        assert_eq!(a.runs, 3);
        assert_eq!(a.dir, PathBuf::from("/x"));
        assert_eq!(a.get("--compress"), Some("lz4"));
        assert_eq!(a.get("--lifeboat"), None);
        let d = parse_args("b", &[], "", args(&[])).unwrap();
        assert_eq!(d.runs, 2);
        assert!(d.dir.ends_with("target/b"));
    }

    #[test]
    fn rejects_unknown_and_missing_values() {
        assert!(parse_args("b", &[], "USAGE", args(&["--what"]))
            .unwrap_err()
            .contains("USAGE"));
        assert!(parse_args("b", &["--x"], "", args(&["--x"]))
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse_args("b", &[], "", args(&["--runs", "two"])).is_err());
    }

    #[test]
    fn rounds_alternate_the_order() {
        let mut seen = Vec::new();
        let runs = rounds("t", 2, ["a", "b"], |tool| {
            seen.push(tool);
            Ok(Run {
                tool,
                secs: seen.len() as f64,
                to_init: 0.5,
                dev_reads: 0,
                dev_failed: 0,
                console: String::new(),
                lines: Vec::new(),
                host_cpu: 0.0,
                host_cpu_at_init: 0.0,
            })
        })
        .unwrap();
        assert_eq!(seen, ["a", "b", "b", "a"]);
        assert_eq!(best(&runs, "a").secs, 1.0);
        assert_eq!(last(&runs, "a").secs, 4.0);
        assert_eq!(best_after_init(&runs, "b"), 1.5);
        assert_eq!(all_runs(&runs), "a 1.0s, b 2.0s, b 3.0s, a 4.0s");
    }

    #[test]
    fn lines_are_stamped_when_whole_and_milestones_found() {
        let mut lines = Vec::new();
        let out = b"[ 1.0] Run /init as init process\r\nlifeboat: up in 900 ms (v)\r\nlifeb";
        let seen = stamp_lines(out, 0, 1.5, &mut lines);
        assert_eq!(lines.len(), 2);
        assert_eq!(&out[seen..], b"lifeb");
        let mut more = out.to_vec();
        more.extend_from_slice(
            b"oat: running: clone a b\n\
              LIFEBOAT-PROGRESS {\"job\":\"clone\",\"phase\":\"copying\"}\n\
              LIFEBOAT-PROGRESS {\"job\":\"clone\",\"phase\":\"copying\"}\n\
              LIFEBOAT-PROGRESS {\"job\":\"clone\",\"phase\":\"verifying\"}\n\
              lifeboat: command finished with exit code 3 in 4000 ms\n\
              lifeboat: powering off\n",
        );
        stamp_lines(&more, seen, 6.0, &mut lines);
        let run = Run {
            tool: "clone",
            secs: 7.0,
            to_init: 1.5,
            dev_reads: 0,
            dev_failed: 0,
            console: String::new(),
            lines,
            host_cpu: 0.0,
            host_cpu_at_init: 0.0,
        };
        let t: Vec<String> = timeline(&run).into_iter().map(|(_, m)| m).collect();
        assert_eq!(
            t,
            [
                "kernel starts /init",
                "boot steps done (up in 900 ms (v))",
                "command started",
                "first progress: clone copying",
                "first progress: clone verifying",
                "command finished with exit code 3 in 4000 ms",
                "powering off (stop processes, sync, unmount)",
                "QEMU sees the power-off"
            ]
        );
        assert_eq!(timeline(&run)[0].0, 1.5);
        assert_eq!(timeline(&run)[2].0, 6.0);
    }
}
