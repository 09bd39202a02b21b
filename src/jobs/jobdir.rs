//! The shared job directory (`/run/lifeboat/job/`, or `$LIFEBOAT_JOB_DIR`): one job at a time
//! whichever console started it. A detached runner process (`lifeboat ui --run-job DIR`) starts
//! the engine command (`lifeboat clone ... --json`), turns its `LIFEBOAT-PROGRESS` lines into
//! `progress.json`, keeps its other stderr in `log`, and writes `result.json` with the exit code
//! and the engine's JSON report. Every console only reads these files, so a job survives a UI
//! crash and the other console follows it.
//!
//! Files: `lock` (runner pid; present while a job runs), `spec.json` (what runs),
//! `progress.json`, `log`, `map` (the engine's ddrescue mapfile), `cancel` (how many times
//! cancel was asked), `result.json`, `ack` (a console dismissed the result),
//! `passphrase` (an encrypted image's passphrase for the engine's `--passphrase-file`: mode
//! 0600, written by [`start_job`], removed by the runner when the engine ends and by the next
//! start; the passphrase itself is never on a command line or in `spec.json`),
//! `credentials` (mode 0600: a share's login typed into the console, in the credentials file's
//! format; the engine is pointed at it with `LIFEBOAT_CREDENTIALS` — a path, never the password
//! — and the runner removes it when the engine ends) or `credentials-from` (where the console
//! itself reads credentials, `--credentials`, handed on the same way).
//!
//! Cancel: a console only writes `cancel`; the runner, which is the engine's parent, polls it
//! and sends the engine one SIGINT per request (the first asks the engine to stop cleanly, a
//! second stops it at once). Only the parent signals, and only before it has reaped the engine,
//! so the signal can never reach another process that was given the engine's pid after it
//! ended (a console signalling a pid read from a file could).
//!
//! The directory is writable by its user only (checked by the console and the runner, refused
//! otherwise): the secrets and the command pass through it. Every file is written as a new
//! file, never through a symlink.
use crate::error::{Error, Result};
use crate::jobs::Progress;
use crate::rescue::ExtentMap;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Default job directory inside the rescue environment.
pub const DEFAULT_DIR: &str = "/run/lifeboat/job";
/// The file of the job directory holding the job's passphrase (see the module doc).
pub const PASSPHRASE_FILE: &str = "passphrase";
/// Longest stdout report kept from an engine (its one JSON value).
const MAX_REPORT: u64 = 4 << 20;
/// Longest line kept in `log`.
const MAX_LOG_LINE: usize = 2000;
/// Log lines kept in a snapshot for the screen.
const LOG_TAIL: usize = 6;

/// The job directory in use.
pub fn dir() -> PathBuf {
    std::env::var_os("LIFEBOAT_JOB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// What a job is: the command run and how the screens describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Unique per job (start time + console pid).
    pub id: String,
    /// "clone", "image-create", "image-incremental", "image-restore", "image-verify".
    pub kind: String,
    /// One line for the header: "Clone sda -> nvme0n1".
    pub title: String,
    /// Arguments after the program: `["clone", "/dev/sda", "/dev/nvme0n1", "--yes", "--json", ...]`.
    pub args: Vec<String>,
    /// Lines describing source, target, image (shown on progress and result screens).
    pub details: Vec<String>,
    /// Total bytes, when known in advance (for the progress screen before the first line).
    pub total_bytes: u64,
    /// What a clone copies of each source partition, one line each (filesystem, used bytes,
    /// mode), as the confirmation screen showed it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<String>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub exit_code: i32,
    /// Cancel was asked before the job ended.
    pub cancelled: bool,
    /// The engine's JSON report (its stdout), when it printed one.
    pub report: Option<serde_json::Value>,
    /// Why the runner itself failed (could not start the engine...).
    pub error: Option<String>,
    pub elapsed_secs: u64,
}

/// Everything a console shows about the current (or last) job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSnapshot {
    pub spec: JobSpec,
    pub progress: Option<Progress>,
    pub result: Option<JobResult>,
    /// The runner is alive.
    pub running: bool,
    pub cancel_requested: bool,
    /// A console dismissed the result.
    pub acked: bool,
    /// Coarse map from the engine's mapfile (when the progress line carries none).
    pub file_map: Option<String>,
    /// Last lines of the engine's stderr that were not progress.
    pub log_tail: Vec<String>,
}

impl JobSnapshot {
    /// Result, or a synthetic failure when the runner died without writing one.
    pub fn outcome(&self) -> Option<JobResult> {
        if let Some(r) = &self.result {
            return Some(r.clone());
        }
        if self.running {
            return None;
        }
        Some(JobResult {
            exit_code: crate::error::exit::FAILED,
            cancelled: self.cancel_requested,
            report: None,
            error: Some("the job stopped without a result (its runner was killed)".into()),
            elapsed_secs: 0,
        })
    }
    /// The map to draw: the progress line's, else the mapfile's.
    pub fn map(&self) -> Option<&str> {
        self.progress
            .as_ref()
            .and_then(|p| p.map.as_deref())
            .or(self.file_map.as_deref())
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> Option<T> {
    let mut s = String::new();
    fs::File::open(p)
        .ok()?
        .take(MAX_REPORT)
        .read_to_string(&mut s)
        .ok()?;
    serde_json::from_str(&s).ok()
}

/// Writes `data` to `dir/name` atomically (temp file + rename), so readers never see half a file.
/// The temporary file is always a new file: whatever had its name (a stale one, a symlink to a
/// file or a device) is removed, never followed or written.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(data).map_err(|e| Error::io("write", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, &dst).map_err(|e| Error::io("rename into place", &dst, e))
}

/// Creates the job directory (mode 0755, its missing parents too) and checks that nobody else
/// can write in it: owned by this process's user and writable by no group or other. Whoever can
/// write there could swap the passphrase file between its creation and the engine reading it,
/// plant the temporary names the console writes through, or write the spec the runner starts
/// as its user. Refused (exit 4) otherwise, before anything is written there.
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| Error::io("create the job directory", dir, e))?;
    let m = fs::metadata(dir).map_err(|e| Error::io("look at the job directory", dir, e))?;
    // This process's effective user: the owner of /proc/self.
    let me = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| Error::io("look at", "/proc/self", e))?;
    if !m.is_dir() || m.uid() != me || m.mode() & 0o022 != 0 {
        return Err(Error::refused(format!(
            "the job directory {} is {}: a job's passphrase, password and command go through \
             it, so only this user may write there. Nothing was written; make it owned by this \
             user with mode 0755 (or 0700), or set LIFEBOAT_JOB_DIR to such a directory",
            dir.display(),
            if !m.is_dir() {
                "not a directory".to_string()
            } else if m.uid() != me {
                format!("owned by user {}", m.uid())
            } else {
                format!("writable by others (mode {:o})", m.mode() & 0o7777)
            }
        ))
        .at_path(dir));
    }
    Ok(())
}

fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

fn read_pid(p: &Path) -> Option<i32> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Whether the job holding `dir/lock` is alive. A lock without a pid yet counts as alive for
/// a few seconds (the console is still starting the runner).
fn lock_alive(dir: &Path) -> bool {
    let lock = dir.join("lock");
    let Ok(meta) = fs::metadata(&lock) else {
        return false;
    };
    match read_pid(&lock) {
        Some(pid) => pid_alive(pid),
        None => meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age < Duration::from_secs(10)),
    }
}

/// Reads the job directory. None when no job was ever started there.
pub fn snapshot(dir: &Path) -> Option<JobSnapshot> {
    let spec: JobSpec = read_json(&dir.join("spec.json"))?;
    let progress: Option<Progress> = read_json(&dir.join("progress.json"));
    let result: Option<JobResult> = read_json(&dir.join("result.json"));
    let running = result.is_none() && lock_alive(dir);
    let file_map = if progress.as_ref().is_some_and(|p| p.map.is_some()) {
        None
    } else {
        file_map(&dir.join("map"), spec.total_bytes)
    };
    Some(JobSnapshot {
        spec,
        progress,
        result,
        running,
        cancel_requested: dir.join("cancel").exists(),
        acked: dir.join("ack").exists(),
        file_map,
        log_tail: log_tail(&dir.join("log")),
    })
}

/// Cells of the coarse map drawn from the engine's mapfile.
pub const MAP_CELLS: usize = 512;

/// The coarse map (see [`ExtentMap::coarse`]) of the engine's ddrescue mapfile for a copy of
/// `size` bytes, read with the rescue engine's own (bounded) parser; None when there is none
/// yet or it does not parse.
fn file_map(path: &Path, size: u64) -> Option<String> {
    if size == 0 || !path.exists() {
        return None;
    }
    ExtentMap::load(path, size)
        .ok()
        .map(|m| m.coarse(MAP_CELLS))
}

fn log_tail(p: &Path) -> Vec<String> {
    let Ok(mut f) = fs::File::open(p) else {
        return vec![];
    };
    use std::io::Seek;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(std::io::SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = Vec::new();
    let _ = f.take(16 * 1024).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// How a job finds the passwords of network shares (see the module documentation).
#[derive(Clone, PartialEq, Eq)]
pub enum JobCredentials {
    /// The credentials file's text, written to `DIR/credentials` (0600) for this job only.
    Text(String),
    /// A credentials location (`FILE` or `PARTITION:/path`), not a secret.
    From(String),
}

impl std::fmt::Debug for JobCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never the text: it holds a password.
            JobCredentials::Text(_) => write!(f, "Text(***)"),
            JobCredentials::From(s) => write!(f, "From({s:?})"),
        }
    }
}

/// The file a job's typed credentials are written to, and the file naming a location.
const CREDENTIALS: &str = "credentials";
const CREDENTIALS_FROM: &str = "credentials-from";

/// Starts `spec` in `dir`: takes the lock (refused while another job runs), clears the last
/// job's files, writes the spec and calls `launch` to start the runner, whose pid goes into the
/// lock. `launch` is [`launch_runner`] outside tests.
pub fn start(dir: &Path, spec: &JobSpec, launch: impl FnOnce(&Path) -> Result<u32>) -> Result<()> {
    start_job(dir, spec, None, None, launch)
}

/// [`start`], and with `secret` (an encrypted image's passphrase) written to
/// [`PASSPHRASE_FILE`] (mode 0600, a new file) for the engine's `--passphrase-file`.
pub fn start_with_secret(
    dir: &Path,
    spec: &JobSpec,
    secret: Option<&[u8]>,
    launch: impl FnOnce(&Path) -> Result<u32>,
) -> Result<()> {
    start_job(dir, spec, secret, None, launch)
}

/// [`start`] with the credentials the job's engine uses for network shares.
pub fn start_with(
    dir: &Path,
    spec: &JobSpec,
    creds: Option<&JobCredentials>,
    launch: impl FnOnce(&Path) -> Result<u32>,
) -> Result<()> {
    start_job(dir, spec, None, creds, launch)
}

/// [`start`] with an encrypted image's passphrase (`secret`) and the network shares'
/// credentials (`creds`), each in its own file of the job directory.
pub fn start_job(
    dir: &Path,
    spec: &JobSpec,
    secret: Option<&[u8]>,
    creds: Option<&JobCredentials>,
    launch: impl FnOnce(&Path) -> Result<u32>,
) -> Result<()> {
    private_dir(dir)?;
    let lock = dir.join("lock");
    if lock.exists() {
        if lock_alive(dir) && !dir.join("result.json").exists() {
            return Err(Error::refused(
                "another job is running (see its progress on this screen)",
            ));
        }
        let _ = fs::remove_file(&lock);
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
        .map_err(|e| {
            Error::refused("another console just started a job")
                .at_path(&lock)
                .caused_by(e)
        })?;
    for name in [
        "spec.json",
        "progress.json",
        "result.json",
        "pid",
        "cancel",
        "ack",
        "log",
        "map",
        "map.bak",
        PASSPHRASE_FILE,
        CREDENTIALS,
        CREDENTIALS_FROM,
    ] {
        let _ = fs::remove_file(dir.join(name));
    }
    if let Some(secret) = secret {
        if let Err(e) = write_secret(&dir.join(PASSPHRASE_FILE), secret) {
            let _ = fs::remove_file(&lock);
            return Err(e);
        }
    }
    let json = serde_json::to_vec_pretty(spec)
        .map_err(|e| Error::invalid("cannot encode the job spec").caused_by(e))?;
    let started = match creds {
        Some(JobCredentials::Text(t)) => write_secret(&dir.join(CREDENTIALS), t.as_bytes()),
        Some(JobCredentials::From(s)) => write_atomic(dir, CREDENTIALS_FROM, s.as_bytes()),
        None => Ok(()),
    }
    .and_then(|_| write_atomic(dir, "spec.json", &json))
    .and_then(|_| launch(dir));
    match started {
        Ok(pid) => {
            let _ = f.write_all(pid.to_string().as_bytes());
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&lock);
            let _ = fs::remove_file(dir.join("spec.json"));
            let _ = fs::remove_file(dir.join(PASSPHRASE_FILE));
            let _ = fs::remove_file(dir.join(CREDENTIALS));
            Err(e)
        }
    }
}

/// Writes `secret` into the new file `path`, readable and writable by its owner only from the
/// moment it exists (created with mode 0600, never replacing a file or following a link).
fn write_secret(path: &Path, secret: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io("create the job's private file", path, e))?;
    f.write_all(secret).and_then(|_| f.sync_all()).map_err(|e| {
        let _ = fs::remove_file(path);
        Error::io("write the job's private file", path, e)
    })
}

/// Starts the runner as a detached process of this binary (`ui --run-job DIR`; it makes itself
/// a session of its own), so neither a UI crash nor the terminal's signals stop the job.
pub fn launch_runner(dir: &Path) -> Result<u32> {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let child = Command::new(&exe)
        .arg("ui")
        .arg("--run-job")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io("start the job runner", &exe, e))?;
    let pid = child.id();
    // The runner is reaped by a thread so it never lingers as a zombie while this UI lives;
    // if the UI dies first, PID 1 reaps it.
    std::thread::spawn(move || {
        let mut c = child;
        let _ = c.wait();
    });
    Ok(pid)
}

/// Asks the running job to stop: counts one more request in `cancel`, which the runner polls
/// and answers with one SIGINT to the engine (see the module doc: a console never signals a
/// pid itself).
pub fn cancel(dir: &Path) -> Result<()> {
    let n = cancel_requests(dir);
    write_atomic(dir, "cancel", (n + 1).to_string().as_bytes())
}

/// How many times cancel was asked for the current job (0: never; a `cancel` file that is not
/// a count, as an older console wrote "1", counts as one). Read as a regular file only, never
/// through a symlink (one to a FIFO would block the runner).
fn cancel_requests(dir: &Path) -> u32 {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(f) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(dir.join("cancel"))
    else {
        return 0;
    };
    let mut s = String::new();
    if !f.metadata().is_ok_and(|m| m.is_file()) || f.take(32).read_to_string(&mut s).is_err() {
        return 1;
    }
    s.trim().parse().unwrap_or(1)
}

/// Marks the last result as seen (consoles then go back to the disks screen).
pub fn ack(dir: &Path) {
    let _ = write_atomic(dir, "ack", b"1");
}

/// The engine program: `$LIFEBOAT_JOB_PROGRAM` (tests, development) or this binary.
pub fn engine_program() -> PathBuf {
    std::env::var_os("LIFEBOAT_JOB_PROGRAM")
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

/// The runner (`lifeboat ui --run-job DIR`): runs the spec's engine command to its end and
/// writes `result.json`, then releases the lock. Returns the engine's exit code.
pub fn run_job(dir: &Path, program: &Path) -> Result<i32> {
    // A spec someone else could have written is never run.
    private_dir(dir)?;
    let spec: JobSpec = read_json(&dir.join("spec.json"))
        .ok_or_else(|| Error::not_found("no job spec").at_path(dir.join("spec.json")))?;
    let t0 = Instant::now();
    let res = run_engine(dir, program, &spec);
    // The engine read its passphrase when it started; no copy outlives it.
    let _ = fs::remove_file(dir.join(PASSPHRASE_FILE));
    // The typed password lives only as long as the job.
    let _ = fs::remove_file(dir.join(CREDENTIALS));
    let cancelled = dir.join("cancel").exists();
    let result = match res {
        Ok((code, report)) => JobResult {
            exit_code: if cancelled && code > 128 {
                crate::error::exit::CANCELLED
            } else {
                code
            },
            cancelled,
            report,
            error: None,
            elapsed_secs: t0.elapsed().as_secs(),
        },
        Err(e) => JobResult {
            exit_code: crate::error::exit::FAILED,
            cancelled,
            report: None,
            error: Some(e.to_string()),
            elapsed_secs: t0.elapsed().as_secs(),
        },
    };
    let code = result.exit_code;
    let json = serde_json::to_vec_pretty(&result)
        .map_err(|e| Error::invalid("cannot decode the job result").caused_by(e))?;
    let w = write_atomic(dir, "result.json", &json);
    let _ = fs::remove_file(dir.join("lock"));
    w?;
    Ok(code)
}

fn run_engine(
    dir: &Path,
    program: &Path,
    spec: &JobSpec,
) -> Result<(i32, Option<serde_json::Value>)> {
    let mut cmd = Command::new(program);
    cmd.args(&spec.args)
        .env("LIFEBOAT_PROGRESS", "json")
        .env("LIFEBOAT_PROGRESS_MAP", "1");
    // Where the engine reads share passwords: the console's typed login, else its own
    // --credentials location; a path either way, never the password itself.
    let typed = dir.join(CREDENTIALS);
    if typed.exists() {
        cmd.env("LIFEBOAT_CREDENTIALS", &typed);
    } else if let Ok(from) = fs::read_to_string(dir.join(CREDENTIALS_FROM)) {
        cmd.env("LIFEBOAT_CREDENTIALS", from.trim());
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("start the job", program, e))?;
    let stdout = child.stdout.take();
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = stdout {
            let mut o = o.take(MAX_REPORT);
            let _ = o.read_to_string(&mut s);
            // Drain anything beyond the cap so the engine never blocks on a full pipe.
            let _ = std::io::copy(&mut o.into_inner(), &mut std::io::sink());
        }
        s
    });
    // Appended to, never through a symlink (one to a disk would get the engine's stderr).
    let mut log = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir.join("log"))
            .ok()
    };
    let stderr = child.stderr.take();
    let err_dir = dir.to_path_buf();
    let err_thread = std::thread::spawn(move || {
        let Some(err) = stderr else { return };
        for line in BufReader::new(err).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches('\r');
            if let Some(json) = line.strip_prefix("LIFEBOAT-PROGRESS ") {
                if serde_json::from_str::<Progress>(json).is_ok() {
                    let _ = write_atomic(&err_dir, "progress.json", json.as_bytes());
                    continue;
                }
            }
            if let Some(l) = log.as_mut() {
                let cut: String = line.chars().take(MAX_LOG_LINE).collect();
                let _ = writeln!(l, "{cut}");
            }
        }
    });
    let status = wait_forwarding_cancel(dir, &mut child)
        .map_err(|e| Error::io("wait for the job", program, e))?;
    let _ = err_thread.join();
    let out = out_thread.join().unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok((code, parse_report(&out)))
}

/// How often the runner looks for a new cancel request while the engine runs.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// Waits for the engine to end, sending it one SIGINT for each new cancel request (see the
/// module doc). `try_wait` is the only place the engine is reaped, in this same thread: until
/// it has returned the exit status, the pid is the engine's (running, or a zombie no other
/// process can be given the pid of), so the signal goes to the engine or to nobody.
fn wait_forwarding_cancel(
    dir: &Path,
    child: &mut std::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    let mut sent = 0;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        // One signal a round: two sent at once could merge into one pending signal.
        if sent < cancel_requests(dir) {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            sent += 1;
        }
        std::thread::sleep(CANCEL_POLL);
    }
}

/// The engine's one JSON value (tolerates stray lines before it).
fn parse_report(out: &str) -> Option<serde_json::Value> {
    let t = out.trim();
    if t.is_empty() {
        return None;
    }
    serde_json::from_str(t).ok().or_else(|| {
        t.lines()
            .rev()
            .find_map(|l| serde_json::from_str(l.trim()).ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(tag: &str) -> PathBuf {
        crate::io::scratch_dir(&format!("tui-{tag}"))
    }

    fn spec() -> JobSpec {
        JobSpec {
            id: "t1".into(),
            kind: "clone".into(),
            title: "Clone sda -> sdb".into(),
            args: vec!["clone".into(), "/dev/sda".into(), "/dev/sdb".into()],
            details: vec![],
            total_bytes: 100,
            partitions: vec![],
        }
    }

    /// A typed login reaches the engine as a 0600 file named by LIFEBOAT_CREDENTIALS (not on
    /// its command line), and the file is gone once the job ended; a location is handed on as is.
    #[test]
    fn credentials_reach_the_engine_and_are_removed() {
        let d = tmpdir("creds");
        let jd = d.join("job");
        let eng = d.join("eng.sh");
        fs::write(
            &eng,
            "#!/bin/sh\n\
             echo \"args: $*\" >&2\n\
             echo \"from: $LIFEBOAT_CREDENTIALS\" >&2\n\
             stat -c 'mode: %a' \"$LIFEBOAT_CREDENTIALS\" >&2\n\
             sed -n 's/^password = /pw: /p' \"$LIFEBOAT_CREDENTIALS\" > \"$(dirname $0)/seen\"\n\
             echo '{\"ok\":true}'\n",
        )
        .unwrap();
        fs::set_permissions(&eng, fs::Permissions::from_mode(0o755)).unwrap();
        let text = "[nas/backups]\nuser = alice\npassword = pw one\n";
        let typed = JobCredentials::Text(text.into());
        assert_eq!(format!("{typed:?}"), "Text(***)");
        start_with(&jd, &spec(), Some(&typed), |_| Ok(std::process::id())).unwrap();
        let mode = fs::metadata(jd.join(CREDENTIALS))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(run_job(&jd, &eng).unwrap(), 0);
        assert!(
            !jd.join(CREDENTIALS).exists(),
            "the typed password outlived the job"
        );
        assert_eq!(fs::read_to_string(d.join("seen")).unwrap(), "pw: pw one\n");
        let log = fs::read_to_string(jd.join("log")).unwrap();
        assert!(
            log.contains(&format!("from: {}", jd.join(CREDENTIALS).display())),
            "{log}"
        );
        assert!(log.contains("mode: 600"), "{log}");
        assert!(!log.contains("pw one"), "{log}");
        assert!(!fs::read_to_string(jd.join("spec.json"))
            .unwrap()
            .contains("pw one"));

        let from = JobCredentials::From("label=KEYS:/lifeboat.cred".into());
        start_with(&jd, &spec(), Some(&from), |_| Ok(std::process::id())).unwrap();
        let _ = run_job(&jd, &eng);
        let log = fs::read_to_string(jd.join("log")).unwrap();
        assert!(log.contains("from: label=KEYS:/lifeboat.cred"), "{log}");
        // A job started without credentials gets none from the last one.
        start(&jd, &spec(), |_| Ok(std::process::id())).unwrap();
        assert!(!jd.join(CREDENTIALS_FROM).exists());
        fs::remove_dir_all(&d).unwrap();
    }

    /// A fake engine: prints a progress line and a report, exits 3.
    fn fake_engine(dir: &Path) -> PathBuf {
        let p = dir.join("fake-engine.sh");
        fs::write(
            &p,
            "#!/bin/sh\n\
             echo \"args: $*\" >&2\n\
             echo 'LIFEBOAT-PROGRESS {\"job\":\"clone\",\"phase\":\"copying\",\"done_bytes\":50,\"total_bytes\":100,\"bad_bytes\":512,\"rate_bytes_per_sec\":10,\"eta_secs\":5,\"map\":\"++-..\"}' >&2\n\
             echo \"progress=$LIFEBOAT_PROGRESS\" >&2\n\
             echo '{\"ok\":true,\"bad_ranges\":[[4096,512]]}'\n\
             exit 3\n",
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// Cancel never signals a pid read from a file: with the last engine gone and its pid
    /// now another process's (here a `sleep` named in a stale `pid` file, as an older runner
    /// wrote it), a cancel leaves that process alone. The process is then ended by SIGTERM:
    /// had the cancel's SIGINT reached it first, it would have died of SIGINT (a fatal
    /// signal's exit is decided when it is sent).
    #[test]
    fn cancel_never_signals_a_pid_from_a_file() {
        use std::os::unix::process::ExitStatusExt;
        let d = tmpdir("cancel-pid");
        let jd = d.join("job");
        start(&jd, &spec(), |_| Ok(std::process::id())).unwrap();
        let mut other = Command::new("sleep").arg("600").spawn().unwrap();
        fs::write(jd.join("pid"), other.id().to_string()).unwrap();
        cancel(&jd).unwrap();
        assert!(snapshot(&jd).unwrap().cancel_requested);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(other.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let st = other.wait().unwrap();
        assert_eq!(st.signal(), Some(libc::SIGTERM), "{st:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    /// The runner forwards each cancel request as one SIGINT to its engine: the first one the
    /// engine (a shell trapping SIGINT) counts and goes on, the second it ends on; the result
    /// says cancelled.
    #[test]
    fn the_runner_forwards_each_cancel_to_its_engine() {
        let d = tmpdir("cancel-fwd");
        let jd = d.join("job");
        let eng = d.join("eng.sh");
        let (ready, sigs) = (d.join("ready"), d.join("sigs"));
        fs::write(
            &eng,
            format!(
                "#!/bin/sh
                 n=0
                 trap 'n=$((n+1)); echo $n > {sigs}; [ $n -ge 2 ] && exit 7' INT
                 touch {ready}
                 while :; do sleep 0.05; done
",
                sigs = sigs.display(),
                ready = ready.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&eng, fs::Permissions::from_mode(0o755)).unwrap();
        start(&jd, &spec(), |_| Ok(std::process::id())).unwrap();
        let (jd2, eng2) = (jd.clone(), eng.clone());
        let runner = std::thread::spawn(move || run_job(&jd2, &eng2));
        // Waits (a minute at most: a stuck test, not a timing assert) for `f` to hold.
        let wait_for = |what: &str, f: &dyn Fn() -> bool| {
            let end = Instant::now() + Duration::from_secs(60);
            while !f() {
                assert!(Instant::now() < end, "{what} never happened");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_for("the engine start", &|| ready.exists());
        cancel(&jd).unwrap();
        wait_for("the first SIGINT", &|| {
            fs::read_to_string(&sigs).is_ok_and(|s| s.trim() == "1")
        });
        cancel(&jd).unwrap();
        assert_eq!(runner.join().unwrap().unwrap(), 7);
        assert_eq!(fs::read_to_string(&sigs).unwrap().trim(), "2");
        let r = snapshot(&jd).unwrap().result.unwrap();
        assert!(r.cancelled, "{r:?}");
        assert_eq!(r.exit_code, 7);
        fs::remove_dir_all(&d).unwrap();
    }

    /// Without a map on the progress line, the screen's map comes from the engine's mapfile,
    /// read by the rescue engine's parser for the job's size (worst state wins each cell).
    #[test]
    fn snapshot_reads_the_engine_mapfile() {
        let d = tmpdir("mapfile");
        let jd = d.join("job");
        let mut s = spec();
        s.total_bytes = 0x20000;
        start(&jd, &s, |_| Ok(std::process::id())).unwrap();
        assert_eq!(snapshot(&jd).unwrap().file_map, None, "no mapfile yet");
        fs::write(
            jd.join("map"),
            "# Mapfile. Created by GNU ddrescue version 1.27\n\
             # current_pos  current_status  current_pass\n\
             0x00010000     ?               1\n\
             #      pos        size  status\n\
             0x00000000  0x00008000  +\n\
             0x00008000  0x00000200  -\n\
             0x00008200  0x00007E00  *\n\
             0x00010000  0x00010000  ?\n",
        )
        .unwrap();
        let m = snapshot(&jd).unwrap().file_map.unwrap();
        assert_eq!(m.len(), MAP_CELLS);
        let q = MAP_CELLS / 4;
        assert!(m[..q].chars().all(|c| c == '+'), "{m}");
        assert!(m[q..q + 2].contains('-'), "{m}");
        assert!(m[q + 2..2 * q].chars().all(|c| c == '*'), "{m}");
        assert!(m[2 * q..].chars().all(|c| c == '.'), "{m}");
        // A map of another size (or not a map) draws nothing rather than something wrong.
        fs::write(jd.join("map"), "0 ?\n0 0x40000 +\n").unwrap();
        assert_eq!(snapshot(&jd).unwrap().file_map, None);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn runner_records_progress_log_and_result() {
        let d = tmpdir("runner");
        let eng = fake_engine(&d);
        let jd = d.join("job");
        start(&jd, &spec(), |_| Ok(std::process::id())).unwrap();
        // While the lock names a live process, a second job is refused.
        let e = start(&jd, &spec(), |_| Ok(1)).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Refused);
        let snap = snapshot(&jd).unwrap();
        assert!(snap.running);
        assert_eq!(snap.outcome(), None);

        assert_eq!(run_job(&jd, &eng).unwrap(), 3);
        let snap = snapshot(&jd).unwrap();
        assert!(!snap.running);
        assert!(!jd.join("lock").exists());
        let p = snap.progress.clone().unwrap();
        assert_eq!(
            (p.done_bytes, p.bad_bytes, p.phase.as_str()),
            (50, 512, "copying")
        );
        assert_eq!(snap.map(), Some("++-.."));
        let r = snap.result.clone().unwrap();
        assert_eq!(r.exit_code, 3);
        assert_eq!(r.report.unwrap()["bad_ranges"][0][0], 4096);
        assert!(snap
            .log_tail
            .iter()
            .any(|l| l == "args: clone /dev/sda /dev/sdb"));
        assert!(snap.log_tail.iter().any(|l| l == "progress=json"));
        assert!(!snap
            .log_tail
            .iter()
            .any(|l| l.contains("LIFEBOAT-PROGRESS")));

        // A finished job does not block the next one; its files are cleared.
        start(&jd, &spec(), |_| Ok(std::process::id())).unwrap();
        let snap = snapshot(&jd).unwrap();
        assert!(snap.running && snap.progress.is_none() && snap.result.is_none());
        let _ = fs::remove_dir_all(&d);
    }

    /// An encrypted image's passphrase: a mode-0600 file the engine reads through
    /// `--passphrase-file`, gone once the engine ended; never in spec.json; a failed launch
    /// leaves none behind; the next start replaces a stale one.
    #[test]
    fn the_passphrase_file_lives_only_while_the_engine_runs() {
        use std::os::unix::fs::MetadataExt;
        let d = tmpdir("secret");
        let jd = d.join("job");
        let pw = jd.join(PASSPHRASE_FILE);
        // The engine copies what it reads from the file into its report.
        let eng = d.join("engine.sh");
        fs::write(
            &eng,
            "#!/bin/sh
printf '{\"read\":\"%s\"}' \"$(cat \"$2\")\"\n",
        )
        .unwrap();
        fs::set_permissions(&eng, fs::Permissions::from_mode(0o755)).unwrap();
        let mut s = spec();
        s.args = vec![
            "--passphrase-file".into(),
            pw.to_string_lossy().into_owned(),
        ];
        let secret = b"pass phrase";
        // A failed launch removes it.
        let e = start_with_secret(&jd, &s, Some(secret), |_| Err(Error::unsupported("no")));
        assert!(e.is_err());
        assert!(!pw.exists());
        // A stale file (a runner killed) is replaced, not appended to or kept.
        fs::write(&pw, "old").unwrap();
        start_with_secret(&jd, &s, Some(secret), |_| Ok(std::process::id())).unwrap();
        let meta = fs::symlink_metadata(&pw).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(fs::read(&pw).unwrap(), secret);
        let spec_json = fs::read_to_string(jd.join("spec.json")).unwrap();
        assert!(!spec_json.contains("pass phrase"));
        assert_eq!(run_job(&jd, &eng).unwrap(), 0);
        let r = snapshot(&jd).unwrap().result.unwrap();
        assert_eq!(r.report.unwrap()["read"], "pass phrase");
        assert!(!pw.exists(), "the runner removes the passphrase file");
        // A job without a secret has no file.
        start(&jd, &spec(), |_| Ok(std::process::id())).unwrap();
        assert!(!pw.exists());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn dead_runner_is_reported_and_lock_is_stale() {
        let d = tmpdir("dead");
        // A pid that cannot exist.
        start(&d, &spec(), |_| Ok(0x3fff_fff0)).unwrap();
        let snap = snapshot(&d).unwrap();
        assert!(!snap.running);
        let o = snap.outcome().unwrap();
        assert_eq!(o.exit_code, 1);
        assert!(o.error.unwrap().contains("without a result"));
        start(&d, &spec(), |_| Ok(std::process::id())).expect("stale lock is taken over");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn failed_launch_releases_the_lock() {
        let d = tmpdir("launchfail");
        let e = start(&d, &spec(), |_| Err(Error::unsupported("no runner"))).unwrap_err();
        assert!(e.to_string().contains("no runner"));
        assert!(!d.join("lock").exists());
        assert!(snapshot(&d).is_none());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_engine_is_a_result_not_a_hang() {
        let d = tmpdir("noengine");
        start(&d, &spec(), |_| Ok(std::process::id())).unwrap();
        assert_eq!(run_job(&d, Path::new("/nonexistent/lifeboat")).unwrap(), 1);
        let r = snapshot(&d).unwrap().result.unwrap();
        assert!(r.error.unwrap().contains("start the job"));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn report_parsing_tolerates_noise() {
        assert_eq!(parse_report("  \n"), None);
        assert_eq!(parse_report("{\"a\":1}\n").unwrap()["a"], 1);
        assert_eq!(parse_report("noise\n{\"a\":2}\n").unwrap()["a"], 2);
    }
}
