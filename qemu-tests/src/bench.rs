//! What the failing-disk benchmarks under QEMU share (`scripts/bench-rescue-vm`,
//! `scripts/bench-image-vm`): the 384 MiB source and its faults (the layout of
//! `examples/bench_rescue.rs`), one timed boot from QEMU's start to the guest's power-off with
//! QEMU's own read counters for the source, and console helpers.
use crate::qemu::{default_append, DiskSpec, SerialMode, VmSpec};
use crate::{Faults, Vm};
use serde_json::Value;
use std::path::Path;
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
    loop {
        if to_init.is_none() && String::from_utf8_lossy(&vm.output()).contains("Run /init as init")
        {
            to_init = Some(vm.elapsed().as_secs_f64());
        }
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
    let (dev_reads, dev_failed) = blockstats(&qmp, "d0")?;
    let console = String::from_utf8_lossy(&vm.output()).replace('\r', "");
    let _ = vm.monitor("quit");
    let _ = std::fs::remove_file(&qmp);
    Ok(Run {
        tool,
        secs,
        to_init: to_init.unwrap_or(0.0),
        dev_reads,
        dev_failed,
        console,
    })
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
