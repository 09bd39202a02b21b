//! Power: PID 1's signals (SIGUSR2 = power off, SIGTERM/SIGINT = reboot, SIGPWR = power off)
//! and the shutdown sequence — stop every process, sync, unmount or remount read-only the
//! filesystems Lifeboat mounted, sync again, then reboot(2).
use super::console;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    PowerOff,
    Reboot,
}

const SIGNALS: [nix::sys::signal::Signal; 4] = [
    nix::sys::signal::Signal::SIGUSR2,
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGINT,
    nix::sys::signal::Signal::SIGPWR,
];

fn sigset() -> nix::sys::signal::SigSet {
    let mut s = nix::sys::signal::SigSet::empty();
    for sig in SIGNALS {
        s.add(sig);
    }
    s
}

/// Blocks the power signals in the calling thread (call first thing in PID 1, before any other
/// thread exists, so every thread inherits the mask; children get a clean mask from std).
pub fn block_signals() {
    let _ = sigset().thread_block();
}

/// Starts the thread that waits for the power signals.
pub fn start_signal_thread() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(|| loop {
            let r = std::panic::catch_unwind(|| sigset().wait());
            match r {
                Ok(Ok(sig)) => {
                    use nix::sys::signal::Signal::*;
                    let action = match sig {
                        SIGUSR2 | SIGPWR => Action::PowerOff,
                        _ => Action::Reboot,
                    };
                    shutdown(action, &format!("{sig} received"));
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        })?;
    // Ctrl-Alt-Del sends SIGINT to PID 1 instead of rebooting on the spot.
    let _ = nix::sys::reboot::set_cad_enabled(false);
    Ok(())
}

/// Other user-space processes still alive (kernel threads have an empty cmdline).
fn user_processes() -> usize {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|&pid| pid != 1 && pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| !c.is_empty())
                .unwrap_or(false)
        })
        .count()
}

fn sync() {
    nix::unistd::sync();
}

/// Filesystems on block devices, deepest mount point first.
fn block_mounts() -> Vec<String> {
    let mut v: Vec<String> = crate::devices::usage::system_mounts()
        .into_iter()
        .filter(|m| m.source.starts_with("/dev/") && m.mount_point != "/")
        .map(|m| m.mount_point)
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.len()));
    v
}

/// Set once a shutdown has begun: nothing is (re)started after that.
pub static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Stops everything and powers off or reboots (`why` goes to the log). Never returns.
pub fn shutdown(action: Action, why: &str) -> ! {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    use nix::mount::{umount2, MntFlags, MsFlags};
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    console::set_log_to_consoles(true);
    console::log(why);
    console::log(match action {
        Action::PowerOff => "powering off",
        Action::Reboot => "rebooting",
    });
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while user_processes() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if user_processes() > 0 {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(200));
    }
    sync();
    for mp in block_mounts() {
        if umount2(mp.as_str(), MntFlags::empty()).is_err() {
            let r = nix::mount::mount::<str, str, str, str>(
                None,
                mp.as_str(),
                None,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None,
            );
            if let Err(e) = r {
                console::warn(&format!("cannot unmount or remount read-only {mp}: {e}"));
            }
        }
    }
    sync();
    let mode = match action {
        Action::PowerOff => nix::sys::reboot::RebootMode::RB_POWER_OFF,
        Action::Reboot => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
    };
    console::drain(Duration::from_secs(3));
    let e = nix::sys::reboot::reboot(mode);
    console::alert(&format!(
        "reboot(2) failed: {e:?}; it is safe to switch the machine off"
    ));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
