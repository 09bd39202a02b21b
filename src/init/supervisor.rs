//! The UI supervisor: one `lifeboat ui --tty /dev/<console>` per active console, each in its own
//! session with the console as controlling terminal, restarted (after resetting the terminal)
//! whenever it exits or dies, with a growing back-off when it keeps failing.
use super::console::{self, Console};
use super::reaper;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Back-off after a UI that ran for `ran`: reset after a long run, else doubled up to 30 s.
pub fn next_backoff(prev: Duration, ran: Duration) -> Duration {
    if ran >= Duration::from_secs(60) {
        Duration::from_secs(1)
    } else {
        (prev * 2).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }
}

fn open_tty(dev: &str) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(dev)
}

/// Puts the terminal back in a sane state (a crashed UI may leave raw mode / alternate screen).
pub fn reset_terminal(tty: &File) {
    use nix::sys::termios::{tcgetattr, tcsetattr, InputFlags, LocalFlags, OutputFlags, SetArg};
    if let Ok(mut t) = tcgetattr(tty) {
        t.input_flags |= InputFlags::ICRNL | InputFlags::IXON;
        t.output_flags |= OutputFlags::OPOST | OutputFlags::ONLCR;
        t.local_flags |= LocalFlags::ICANON
            | LocalFlags::ECHO
            | LocalFlags::ECHOE
            | LocalFlags::ISIG
            | LocalFlags::IEXTEN;
        let _ = tcsetattr(tty, SetArg::TCSANOW, &t);
    }
    // Leave the alternate screen, show the cursor, reset attributes, clear.
    let mut w = tty;
    let _ = w.write_all(b"\x1b[?1049l\x1b[?25h\x1b[0m\x1b[H\x1b[2J");
}

/// Supervises the UI on `con` forever.
pub fn supervise(con: Console, size: Option<(u16, u16)>) -> ! {
    let mut backoff = Duration::from_secs(1);
    loop {
        if super::power::SHUTTING_DOWN.load(std::sync::atomic::Ordering::SeqCst) {
            // The machine is going down: do not start a UI that would only be killed.
            std::thread::sleep(Duration::from_secs(3600));
            continue;
        }
        let started = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_once(&con, size)));
        let msg = match r {
            Ok(Ok(exit)) => format!("ui on {} ended ({})", con.dev, exit.describe()),
            Ok(Err(e)) => format!("ui on {}: {e}", con.dev),
            Err(_) => format!("ui supervisor on {} panicked", con.dev),
        };
        if super::power::SHUTTING_DOWN.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        backoff = next_backoff(backoff, started.elapsed());
        let note = format!("{msg}; restarting in {} s", backoff.as_secs());
        console::kmsg(4, &note);
        // Say it on the console itself too: the technician looking at it must know what happens.
        if let Ok(mut tty) = open_tty(&con.dev) {
            let _ = tty.write_all(format!("\r\nlifeboat: {note}\r\n").as_bytes());
        }
        std::thread::sleep(backoff);
    }
}

fn run_once(con: &Console, size: Option<(u16, u16)>) -> std::io::Result<reaper::Exit> {
    let tty = open_tty(&con.dev)?;
    reset_terminal(&tty);
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("lifeboat")
        .args(["ui", "--tty", &con.dev])
        .env("TERM", con.term())
        .current_dir("/")
        .stdin(Stdio::from(tty.try_clone()?))
        .stdout(Stdio::from(tty.try_clone()?))
        .stderr(Stdio::from(tty.try_clone()?));
    if let Some((c, r)) = size {
        cmd.env("LIFEBOAT_CONSOLE", format!("{c}x{r}"));
    }
    crate::io::process::new_session_on_stdin(&mut cmd);
    let child = reaper::spawn(&mut cmd)?;
    let _ = tty.as_raw_fd();
    Ok(reaper::wait(child.id() as i32))
}

/// Starts one supervisor thread per console.
pub fn start(consoles: &[Console], size: Option<(u16, u16)>) {
    for c in consoles {
        let c = c.clone();
        let name = format!("ui-{}", c.name);
        if let Err(e) = std::thread::Builder::new()
            .name(name)
            .spawn(move || supervise(c, size))
        {
            console::alert(&format!("cannot start the UI supervisor: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_resets() {
        let s = Duration::from_secs;
        assert_eq!(next_backoff(s(1), s(0)), s(2));
        assert_eq!(next_backoff(s(16), s(1)), s(30));
        assert_eq!(next_backoff(s(30), s(5)), s(30));
        assert_eq!(next_backoff(s(30), s(120)), s(1));
    }
}
