//! A running QEMU guest owned by a test: spawned from a `VmSpec`, killed on drop on every path
//! (timeouts, panics, a killed test process via PDEATHSIG), its serial console streamed to a log
//! and searchable for marker lines, writable for key presses, and dumped when a test fails.
use crate::qemu::{self, SerialMode, VmSpec};
use crate::tmp::TempDir;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Serial output kept in memory for matching; older bytes are dropped beyond this.
const MAX_BUFFER: usize = 64 << 20;
/// Lines of serial log printed when a test fails.
const DUMP_LINES: usize = 200;

/// The marker PID 1 prints once an unattended command has finished.
pub const RESULT: &str = "LIFEBOAT-RESULT ";
/// The marker PID 1 prints once the interactive environment is up.
pub const READY: &str = "LIFEBOAT-READY ";

#[derive(Default)]
struct SerialBuf {
    /// Bytes from absolute offset `base` on.
    data: Vec<u8>,
    base: usize,
    eof: bool,
}

type Shared = Arc<(Mutex<SerialBuf>, Condvar)>;

/// A booted guest. Dropping it kills QEMU.
pub struct Vm {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    shared: Shared,
    reader: Option<JoinHandle<()>>,
    /// Absolute offset up to which lines were consumed by `wait_*`.
    cursor: usize,
    log: PathBuf,
    stderr_log: PathBuf,
    monitor: Option<PathBuf>,
    started: Instant,
    exited: Option<ExitStatus>,
    /// The serial tail was already printed (by `fail`): Drop need not print it again.
    dumped: std::cell::Cell<bool>,
    _tmp: TempDir,
}

/// Timeouts scale with LIFEBOAT_QEMU_TIMEOUT_SCALE (e.g. 3 on a slow CI machine).
pub fn scaled(d: Duration) -> Duration {
    let f: f64 = std::env::var("LIFEBOAT_QEMU_TIMEOUT_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|f: &f64| *f > 0.0)
        .unwrap_or(1.0);
    d.mul_f64(f)
}

/// How many times a guest whose kernel hung before /init is booted again.
const BOOT_RETRIES: u32 = 2;
/// Past this (scaled), the boot watch gives up and leaves the guest to the test's own timeouts.
const BOOT_WATCH_MAX: Duration = Duration::from_secs(600);

/// How the kernel's part of a boot ended, as the serial console shows it.
#[derive(Debug, PartialEq, Eq)]
enum KernelBoot {
    /// /init runs (the kernel said so, or Lifeboat's PID 1 spoke).
    InitRuns,
    /// QEMU exited first: the test sees that itself.
    Exited,
    /// No byte on the console for the stall time, /init not reached.
    Stalled,
    /// Still printing, /init not reached after `BOOT_WATCH_MAX`: the test's timeouts decide.
    GaveUp,
}

/// Says `msg` (one line, with its newline) straight to fd 2, so it shows even when the test
/// harness captures output, and appends it to `target/qemu-logs/timings.txt`, which
/// `scripts/test` prints at the end.
fn say(msg: &str) {
    let _ = std::io::stderr().write_all(msg.as_bytes());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(crate::logs_dir().join("timings.txt"))
    {
        let _ = f.write_all(msg.as_bytes());
    }
}

/// Whether the console text shows that /init is running: the kernel's own line, or the first
/// words of Lifeboat's PID 1 (in case the kernel's line is filtered by a log level).
fn init_runs(console: &[u8]) -> bool {
    [
        &b"Run /init as init process"[..],
        b"lifeboat: ",
        b"LIFEBOAT-",
    ]
    .iter()
    .any(|m| console.windows(m.len()).any(|w| w == *m))
}

/// How long a silent kernel may take before /init runs, if the boot watch applies (a guest
/// that boots a kernel directly, with `boot_stall` set).
fn boot_watch(spec: &VmSpec) -> Option<Duration> {
    spec.kernel.as_ref().and(spec.boot_stall).map(scaled)
}

impl Vm {
    /// Spawns QEMU for `spec` (its serial mode is replaced by a pipe logged to
    /// `target/qemu-logs/<name>.log`, and a monitor socket is added).
    ///
    /// A directly booted kernel is watched until /init runs: QEMU's TCG on a loaded machine now
    /// and then hangs a guest kernel in early boot (CI saw one stop printing at 1.17 s, in the
    /// network hash-table setup, for 240 s). Such a guest is killed and booted again, at most
    /// `BOOT_RETRIES` times (`spec.boot_stall` says how long a silence means hung), with the hung console kept as `<name>.hung-<n>.log`. Nothing of
    /// Lifeboat has run at that point (the kernel only read partition tables), so a retry cannot
    /// hide a Lifeboat fault; once /init runs, a hang is the test's to report.
    pub fn start(name: &str, spec: VmSpec) -> Result<Vm, String> {
        let watch = boot_watch(&spec);
        let mut attempt = 0;
        loop {
            let mut vm = Vm::spawn(name, spec.clone())?;
            let Some(stall) = watch else {
                return Ok(vm);
            };
            match vm.watch_kernel_boot(stall, scaled(BOOT_WATCH_MAX)) {
                KernelBoot::InitRuns | KernelBoot::Exited | KernelBoot::GaveUp => return Ok(vm),
                KernelBoot::Stalled => {
                    let secs = vm.elapsed().as_secs_f64();
                    vm.kill();
                    attempt += 1;
                    let kept = vm.log.with_file_name(format!("{name}.hung-{attempt}.log"));
                    let _ = std::fs::rename(&vm.log, &kept);
                    let msg = format!(
                        "{name}: the guest kernel printed nothing for {:.0} s before /init \
                         (hung after {secs:.1} s; console kept in {}){}\n",
                        stall.as_secs_f64(),
                        kept.display(),
                        if attempt <= BOOT_RETRIES {
                            "; booting it again"
                        } else {
                            ""
                        }
                    );
                    say(&msg);
                    if attempt > BOOT_RETRIES {
                        vm.dumped.set(true);
                        return Err(format!(
                            "{}{}",
                            msg.trim_end(),
                            std::fs::read_to_string(&kept)
                                .map(|t| {
                                    let lines: Vec<&str> = t.lines().collect();
                                    let from = lines.len().saturating_sub(40);
                                    format!("\n---- last lines ----\n{}", lines[from..].join("\n"))
                                })
                                .unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }

    /// Waits until the console shows /init running, QEMU exits, the console stays silent for
    /// `stall`, or `max` has passed, whichever comes first. Consumes no lines.
    fn watch_kernel_boot(&self, stall: Duration, max: Duration) -> KernelBoot {
        let (lock, cv) = &*self.shared;
        let end = Instant::now() + max;
        let mut seen = 0usize;
        let mut quiet_since = Instant::now();
        let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Search only the new bytes (plus a marker's length of overlap).
            let total = g.base + g.data.len();
            if total != seen {
                let from = seen.saturating_sub(g.base).saturating_sub(32);
                if init_runs(&g.data[from..]) {
                    return KernelBoot::InitRuns;
                }
                seen = total;
                quiet_since = Instant::now();
            }
            if g.eof {
                return KernelBoot::Exited;
            }
            let now = Instant::now();
            if now >= end {
                return KernelBoot::GaveUp;
            }
            if now >= quiet_since + stall {
                return KernelBoot::Stalled;
            }
            let wake = (quiet_since + stall).min(end);
            g = cv
                .wait_timeout(g, wake - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Spawns QEMU for `spec` once (see [`Vm::start`]).
    fn spawn(name: &str, mut spec: VmSpec) -> Result<Vm, String> {
        let logs = crate::logs_dir();
        std::fs::create_dir_all(&logs)
            .map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
        let log = logs.join(format!("{name}.log"));
        let stderr_log = logs.join(format!("{name}.qemu-stderr.log"));
        let _ = std::fs::remove_file(&log);
        let tmp = TempDir::new(&format!("vm-{name}")).map_err(|e| format!("temp dir: {e}"))?;
        spec.serial = SerialMode::Pipe { log: log.clone() };
        if spec.monitor.is_none() {
            spec.monitor = Some(tmp.join("monitor.sock"));
        }
        let args = qemu::argv(&spec)?;
        let line = qemu::shell_line(&spec.qemu, &args);
        let _ = std::fs::write(logs.join(format!("{name}.cmd")), format!("{line}\n"));
        let stderr_file = std::fs::File::create(&stderr_log)
            .map_err(|e| format!("cannot create {}: {e}", stderr_log.display()))?;
        let mut cmd = Command::new(&spec.qemu);
        cmd.args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr_file);
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
        // async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                // QEMU dies with the test (thread) that spawned it, even on SIGKILL of the test.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start {} ({e}); run scripts/setup to install QEMU",
                spec.qemu
            )
        })?;
        let started = Instant::now();
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let shared: Shared = Arc::new((Mutex::new(SerialBuf::default()), Condvar::new()));
        let sh = shared.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                let n = match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => 0,
                    Ok(n) => n,
                };
                let (lock, cv) = &*sh;
                let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
                if n == 0 {
                    g.eof = true;
                    cv.notify_all();
                    return;
                }
                g.data.extend_from_slice(&buf[..n]);
                if g.data.len() > MAX_BUFFER {
                    let drop = g.data.len() - MAX_BUFFER / 2;
                    g.data.drain(..drop);
                    g.base += drop;
                }
                cv.notify_all();
            }
        });
        Ok(Vm {
            name: name.to_string(),
            child,
            stdin,
            shared,
            reader: Some(reader),
            cursor: 0,
            log,
            stderr_log,
            monitor: spec.monitor.clone(),
            started,
            exited: None,
            dumped: std::cell::Cell::new(false),
            _tmp: tmp,
        })
    }

    /// Boots the built artefacts with the harness defaults, `params` appended to the kernel
    /// command line, and `disks`.
    pub fn boot(name: &str, params: &str, disks: Vec<qemu::DiskSpec>) -> Result<Vm, String> {
        let a = crate::artefacts()?;
        let mut spec = VmSpec::new(&a.kernel, &a.initrd, SerialMode::Terminal);
        spec.append = qemu::default_append(params);
        spec.disks = disks;
        Vm::start(name, spec)
    }

    /// [`Vm::boot`] with a network card on `net` (QEMU user networking).
    pub fn boot_net(
        name: &str,
        params: &str,
        disks: Vec<qemu::DiskSpec>,
        net: &qemu::NetSpec,
    ) -> Result<Vm, String> {
        let a = crate::artefacts()?;
        let mut spec = VmSpec::new(&a.kernel, &a.initrd, SerialMode::Terminal);
        spec.append = qemu::default_append(params);
        spec.disks = disks;
        spec.extra = qemu::net_args(net);
        Vm::start(name, spec)
    }

    /// Boots through a firmware (no direct kernel boot): the firmware finds a boot loader on
    /// `disks` (the one with the lowest `bootindex`) or on the devices `extra` adds (a CD).
    pub fn boot_firmware(
        name: &str,
        fw: &qemu::Firmware,
        disks: Vec<qemu::DiskSpec>,
        extra: Vec<String>,
    ) -> Result<Vm, String> {
        let mut spec = VmSpec::new(Path::new(""), Path::new(""), SerialMode::Terminal);
        spec.kernel = None;
        spec.initrd = None;
        spec.disks = disks;
        spec.extra = qemu::firmware_args(fw);
        spec.extra.extend(extra);
        Vm::start(name, spec)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    /// Time since QEMU was started.
    /// QEMU's process id on the host.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for the next line (after those already consumed) for which `pred` holds.
    pub fn wait_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + scaled(timeout);
        let shared = self.shared.clone();
        let (lock, cv) = &*shared;
        let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.cursor < g.base {
                self.cursor = g.base;
            }
            while let Some(nl) = g.data[self.cursor - g.base..]
                .iter()
                .position(|&b| b == b'\n')
            {
                let start = self.cursor - g.base;
                let raw = String::from_utf8_lossy(&g.data[start..start + nl]).into_owned();
                self.cursor += nl + 1;
                let line = raw.trim_end_matches('\r');
                if pred(line) {
                    return Ok(line.to_string());
                }
            }
            if g.eof {
                drop(g);
                let status = self
                    .wait_exit(Duration::from_secs(5))
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                return Err(format!(
                    "{}: QEMU exited ({status}) after {:.1} s before {what} appeared",
                    self.name,
                    self.elapsed().as_secs_f64()
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "{}: timed out after {:.1} s waiting for {what}",
                    self.name,
                    self.elapsed().as_secs_f64()
                ));
            }
            g = cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits for a line containing `marker` (e.g. `RESULT`) and parses the JSON after it.
    pub fn wait_marker(&mut self, marker: &str, timeout: Duration) -> Result<Value, String> {
        let line = self.wait_line(&format!("`{}`", marker.trim()), timeout, |l| {
            l.contains(marker)
        })?;
        let json = line.split_once(marker).map(|(_, j)| j.trim()).unwrap_or("");
        serde_json::from_str(json)
            .map_err(|e| format!("{}: bad JSON after {marker:?} ({e}): {line}", self.name))
    }

    /// Waits for the `LIFEBOAT-RESULT` line and reports the boot-to-result time.
    pub fn wait_result(&mut self, timeout: Duration) -> Result<Value, String> {
        let v = self.wait_marker(RESULT, timeout)?;
        self.report_time("boot-to-result", &v);
        Ok(v)
    }

    /// Waits for the `LIFEBOAT-READY` line and reports the boot-to-ready time.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Value, String> {
        let v = self.wait_marker(READY, timeout)?;
        self.report_time("boot-to-ready", &v);
        Ok(v)
    }

    fn report_time(&self, what: &str, v: &Value) {
        let guest = v
            .get("boot_ms")
            .and_then(Value::as_u64)
            .map(|ms| format!(", guest boot_ms {ms}"))
            .unwrap_or_default();
        let msg = format!(
            "{}: {what}: {:.1} s{guest}\n",
            self.name,
            self.elapsed().as_secs_f64()
        );
        say(&msg);
    }

    /// Sends bytes to the serial console (keys for the UI, lines for a shell).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("serial input closed")?;
        stdin
            .write_all(bytes)
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("{}: serial write: {e}", self.name))
    }

    /// Everything the guest printed so far (bounded: the last tens of MiB).
    pub fn output(&self) -> Vec<u8> {
        let (lock, _) = &*self.shared;
        lock.lock().unwrap_or_else(|p| p.into_inner()).data.clone()
    }

    /// Waits (at most `timeout`) until the serial reader has seen the pipe's end: QEMU has exited,
    /// but its last lines (the guest's words just before power-off) may still sit in the pipe, and
    /// on a loaded machine the reader thread gets to them only later.
    fn wait_serial_eof(&self, timeout: Duration) {
        let (lock, cv) = &*self.shared;
        let deadline = Instant::now() + timeout;
        let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
        while !g.eof {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            g = match cv.wait_timeout(g, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Waits for QEMU to exit by itself (guest poweroff; `-no-reboot` turns reboot into exit).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        if let Some(s) = self.exited {
            return Ok(s);
        }
        let deadline = Instant::now() + scaled(timeout);
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.exited = Some(s);
                    self.wait_serial_eof(Duration::from_secs(10));
                    return Ok(s);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Ok(None) => {
                    return Err(format!(
                        "{}: QEMU still running after {:.1} s",
                        self.name,
                        timeout.as_secs_f64()
                    ))
                }
                Err(e) => return Err(format!("{}: waiting for QEMU: {e}", self.name)),
            }
        }
    }

    /// Runs a human-monitor command (e.g. `screendump /tmp/x.ppm`) and returns its output.
    pub fn monitor(&self, command: &str) -> Result<String, String> {
        use std::os::unix::net::UnixStream;
        let sock = self.monitor.as_ref().ok_or("no monitor socket")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match UnixStream::connect(sock) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => return Err(format!("monitor {}: {e}", sock.display())),
            }
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let read_prompt = |s: &mut UnixStream| -> Result<String, String> {
            let mut out = Vec::new();
            let mut b = [0u8; 4096];
            while !out.ends_with(b"(qemu) ") {
                let n = s.read(&mut b).map_err(|e| format!("monitor read: {e}"))?;
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&b[..n]);
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        };
        read_prompt(&mut s)?;
        s.write_all(format!("{command}\n").as_bytes())
            .map_err(|e| format!("monitor write: {e}"))?;
        let out = read_prompt(&mut s)?;
        Ok(out.trim_end_matches("(qemu) ").to_string())
    }

    /// The last `n` lines of the serial log and QEMU's stderr, for failure reports.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read(&self.log)
            .ok()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| self.output());
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(n);
        let mut out = format!(
            "---- last {} lines of the serial log {} ----\n",
            lines.len() - from,
            self.log.display()
        );
        for l in &lines[from..] {
            out.push_str(l.trim_end_matches('\r'));
            out.push('\n');
        }
        let err = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        if !err.trim().is_empty() {
            out.push_str(&format!(
                "---- QEMU stderr {} ----\n{err}",
                self.stderr_log.display()
            ));
        }
        out.push_str("---- end ----\n");
        out
    }

    /// Panics with `msg` and the serial log tail (the Drop dump is then skipped as redundant).
    pub fn fail(&self, msg: &str) -> ! {
        self.dumped.set(true);
        panic!("{msg}\n{}", self.tail(DUMP_LINES))
    }

    /// Unwraps `r`, or fails the test with the error and the serial log tail.
    pub fn check<T>(&self, r: Result<T, String>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(&e),
        }
    }

    /// Kills QEMU now (idempotent).
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        self.stdin = None;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() && !self.dumped.get() {
            let msg = format!(
                "{}: test failed; serial log follows\n{}",
                self.name,
                self.tail(DUMP_LINES)
            );
            let _ = std::io::stderr().write_all(msg.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_runs_on_the_kernels_line_or_lifeboats_first_words() {
        assert!(init_runs(b"[    2.6] Run /init as init process\r\n"));
        assert!(init_runs(b"lifeboat: up in 5090 ms\n"));
        assert!(init_runs(b"LIFEBOAT-WAITING {}\n"));
        assert!(!init_runs(
            b"[    1.17] IP idents hash table entries: 16384\n"
        ));
        assert!(!init_runs(b"Run /init as init"));
        assert!(!init_runs(b""));
    }

    #[test]
    fn the_boot_watch_is_for_direct_kernel_boots_with_a_stall_time() {
        let mut spec = VmSpec::new(Path::new("/k"), Path::new("/i"), SerialMode::Terminal);
        assert!(boot_watch(&spec).is_some());
        spec.boot_stall = None;
        assert_eq!(boot_watch(&spec), None);
        spec.boot_stall = Some(Duration::from_secs(3));
        spec.kernel = None;
        assert_eq!(boot_watch(&spec), None);
    }
}
