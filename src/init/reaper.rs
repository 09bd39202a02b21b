//! The one place PID 1 calls `waitpid`: a thread reaps every child and orphan, and hands the
//! exit status of the children PID 1 started itself (the runner's command, the UI on each
//! console) to whoever waits for them, so reaping orphans never steals a status.
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell convention: the exit code, or 128 + signal number.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
    pub fn describe(self) -> String {
        match self {
            Exit::Code(c) => format!("exit code {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
        }
    }
}

#[derive(Default)]
struct Registry {
    watched: HashSet<i32>,
    exited: HashMap<i32, Exit>,
}

static REG: Mutex<Option<Registry>> = Mutex::new(None);
static CV: Condvar = Condvar::new();

fn with_reg<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut g = REG.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(Registry::default))
}

/// Spawns `cmd` and registers the child so its exit status is kept for [`wait`]. The registry
/// lock is held across the spawn: the reaper cannot file the status as an orphan's.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    crate::io::process::clear_signal_mask(cmd);
    let mut g = REG.lock().unwrap_or_else(|p| p.into_inner());
    let reg = g.get_or_insert_with(Registry::default);
    // std's spawn may `wait` for a child whose exec failed and asserts on the result; the
    // reaper can race it, so a panic there is turned into an error.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cmd.spawn()));
    match r {
        Ok(Ok(c)) => {
            reg.watched.insert(c.id() as i32);
            Ok(c)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other(
            "spawning the child panicked (exec failed)",
        )),
    }
}

/// Waits for a child started with [`spawn`] (never use `Child::wait` in PID 1).
pub fn wait(pid: i32) -> Exit {
    let mut g = REG.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let reg = g.get_or_insert_with(Registry::default);
        if let Some(e) = reg.exited.remove(&pid) {
            reg.watched.remove(&pid);
            return e;
        }
        g = CV
            .wait_timeout(g, Duration::from_secs(1))
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// The status of a child started with [`spawn`], if it has ended.
pub fn try_wait(pid: i32) -> Option<Exit> {
    with_reg(|reg| {
        let e = reg.exited.remove(&pid);
        if e.is_some() {
            reg.watched.remove(&pid);
        }
        e
    })
}

fn record(pid: i32, e: Exit) {
    with_reg(|reg| {
        if reg.watched.contains(&pid) {
            reg.exited.insert(pid, e);
        }
    });
    CV.notify_all();
}

/// Reaps children forever (run on its own thread).
pub fn reap_forever() -> ! {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use nix::unistd::Pid;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(pid, code)) => record(pid.as_raw(), Exit::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => record(pid.as_raw(), Exit::Signal(sig as i32)),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            // No children right now: look again shortly.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Starts the reaper thread (restarted if it ever panics).
pub fn start() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(|| loop {
            let _ = std::panic::catch_unwind(|| reap_forever());
            std::thread::sleep(Duration::from_millis(100));
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Exit::Code(3).code(), 3);
        assert_eq!(Exit::Signal(9).code(), 137);
        assert!(Exit::Signal(9).describe().contains("signal 9"));
    }

    #[test]
    fn children_start_with_no_blocked_signals() {
        // Like PID 1: power signals blocked in the spawning thread.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = nix::sys::signal::SigSet::empty();
            s.add(nix::sys::signal::Signal::SIGTERM);
            s.add(nix::sys::signal::Signal::SIGINT);
            s.thread_block().unwrap();
            let mut cmd = Command::new("grep");
            cmd.args(["SigBlk", "/proc/self/status"])
                .stdout(std::process::Stdio::piped());
            // No reaper thread runs in the tests, so std's own wait works here.
            let out = spawn(&mut cmd).unwrap().wait_with_output().unwrap();
            tx.send(String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap();
        });
        let line = rx.recv().unwrap();
        assert_eq!(line.trim(), "SigBlk:\t0000000000000000", "{line:?}");
    }

    #[test]
    fn watched_status_is_kept_orphans_are_dropped() {
        // Without the reaper thread running (it would reap the test harness's other children),
        // exercise the registry directly.
        with_reg(|r| {
            r.watched.insert(-42);
        });
        record(-42, Exit::Code(7));
        record(-43, Exit::Code(1));
        assert_eq!(try_wait(-43), None);
        assert_eq!(wait(-42), Exit::Code(7));
        assert_eq!(try_wait(-42), None);
    }
}
