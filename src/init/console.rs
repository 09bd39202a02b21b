//! PID 1's output: the kernel's active consoles (`/sys/class/tty/console/active`), whole lines
//! written to every one of them with `\r\n` (serial lines need the carriage return), and the log
//! that goes to `/dev/kmsg` and, until the UI owns the screens, to the consoles.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// One console the kernel prints on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Console {
    /// The kernel's name, e.g. `ttyS0`, `tty0`.
    pub name: String,
    /// The device to open for it: `/dev/ttyS0`; for `tty0` (the current VT) `/dev/tty1`.
    pub dev: String,
    /// A serial line (not a virtual terminal).
    pub serial: bool,
}

impl Console {
    pub fn from_name(name: &str) -> Console {
        let vt = name == "tty0"
            || name
                .strip_prefix("tty")
                .is_some_and(|n| n.parse::<u32>().is_ok());
        let dev = if name == "tty0" {
            "/dev/tty1".to_string()
        } else {
            format!("/dev/{name}")
        };
        Console {
            name: name.to_string(),
            dev,
            serial: !vt,
        }
    }
    /// TERM for a program on this console.
    pub fn term(&self) -> &'static str {
        if self.serial {
            "xterm"
        } else {
            "linux"
        }
    }
}

/// Parses `/sys/class/tty/console/active` ("tty0 ttyS0"); duplicates dropped, order kept.
pub fn parse_active(text: &str) -> Vec<Console> {
    let mut out: Vec<Console> = Vec::new();
    for n in text.split_whitespace() {
        let c = Console::from_name(n);
        if !out.iter().any(|o| o.dev == c.dev) {
            out.push(c);
        }
    }
    out
}

/// The consoles the kernel currently prints on.
pub fn active() -> Vec<Console> {
    std::fs::read_to_string("/sys/class/tty/console/active")
        .map(|t| parse_active(&t))
        .unwrap_or_default()
}

struct Outputs {
    files: Vec<(String, File)>,
    opened: bool,
}

static OUT: Mutex<Outputs> = Mutex::new(Outputs {
    files: Vec::new(),
    opened: false,
});
static LOG_TO_CONSOLES: AtomicBool = AtomicBool::new(true);

fn open_wo(path: &str) -> Option<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .ok()
}

fn with_outputs(f: impl FnOnce(&mut Vec<(String, File)>)) {
    let mut g = OUT.lock().unwrap_or_else(|p| p.into_inner());
    if !g.opened || g.files.is_empty() {
        let mut files = Vec::new();
        for c in active() {
            if let Some(fh) = open_wo(&c.dev) {
                files.push((c.dev.clone(), fh));
            }
        }
        if files.is_empty() {
            if let Some(fh) = open_wo("/dev/console") {
                files.push(("/dev/console".into(), fh));
            }
        }
        // Opening succeeds only once /sys and /dev are mounted; until then retry each time.
        g.opened = !files.is_empty() && std::path::Path::new("/sys/class").exists();
        g.files = files;
    }
    f(&mut g.files);
}

/// Forgets the opened consoles (after the console list may have changed).
pub fn reopen() {
    let mut g = OUT.lock().unwrap_or_else(|p| p.into_inner());
    g.files.clear();
    g.opened = false;
}

/// `\n` → `\r\n` (a `\r\n` already present stays as it is).
pub fn crlf(s: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 16);
    let mut prev = 0u8;
    for &b in s {
        if b == b'\n' && prev != b'\r' {
            v.push(b'\r');
        }
        v.push(b);
        prev = b;
    }
    v
}

/// Writes raw bytes (newlines turned into `\r\n`) to every console, as one write per console.
pub fn write_all_consoles(bytes: &[u8]) {
    let data = crlf(bytes);
    let mut any = false;
    with_outputs(|files| {
        for (_, f) in files.iter_mut() {
            any |= f.write_all(&data).is_ok();
        }
    });
    if !any {
        // Nothing opened yet (very early): the kernel gave PID 1 /dev/console as stderr.
        let _ = std::io::stderr().write_all(&data);
    }
}

/// Waits (at most `timeout`) until everything written to the consoles has left the machine: a
/// serial line transmits from a kernel buffer, and powering off first would lose the last lines.
pub fn drain(timeout: std::time::Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            with_outputs(|files| {
                for (_, f) in files.iter() {
                    let _ = nix::sys::termios::tcdrain(f);
                }
            });
            let _ = tx.send(());
        });
    if spawned.is_ok() {
        let _ = rx.recv_timeout(timeout);
    }
}

/// Prints one whole line on every console (markers such as `LIFEBOAT-RESULT`).
pub fn announce(line: &str) {
    let mut s = line.trim_end_matches(['\r', '\n']).to_string();
    s.push('\n');
    write_all_consoles(s.as_bytes());
}

/// Stops copying log lines to the consoles (the UI owns them now); /dev/kmsg still gets them.
pub fn set_log_to_consoles(on: bool) {
    LOG_TO_CONSOLES.store(on, Ordering::SeqCst);
}

/// Writes `msg` to the kernel log (`/dev/kmsg`) at `level` (syslog: 3 err, 4 warning, 6 info).
/// Kernel-log lines written before /dev was mounted, replayed once /dev/kmsg opens.
static EARLY_KMSG: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn kmsg(level: u8, msg: &str) {
    let lines = msg.lines().map(|l| format!("<{level}>lifeboat: {l}"));
    let mut early = EARLY_KMSG.lock().unwrap_or_else(|p| p.into_inner());
    match open_wo("/dev/kmsg") {
        Some(mut f) => {
            for l in early.drain(..).chain(lines) {
                let _ = f.write_all(l.as_bytes());
            }
        }
        None => {
            for l in lines {
                if early.len() < 256 {
                    early.push(l);
                }
            }
        }
    }
}

/// The init log: kernel log always, consoles until the UI starts.
pub fn log(msg: &str) {
    kmsg(6, msg);
    if LOG_TO_CONSOLES.load(Ordering::SeqCst) {
        announce(&format!("lifeboat: {msg}"));
    }
}

/// A warning: like `log`, at warning level.
pub fn warn(msg: &str) {
    kmsg(4, msg);
    if LOG_TO_CONSOLES.load(Ordering::SeqCst) {
        announce(&format!("lifeboat: warning: {msg}"));
    }
}

/// An error that must be seen even when the UI owns the consoles (e.g. a panic in PID 1).
pub fn alert(msg: &str) {
    kmsg(3, msg);
    announce(&format!("lifeboat: ERROR: {msg}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_consoles() {
        let c = parse_active("tty0 ttyS0\n");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].dev, "/dev/tty1");
        assert!(!c[0].serial);
        assert_eq!(c[0].term(), "linux");
        assert_eq!(c[1].dev, "/dev/ttyS0");
        assert!(c[1].serial);
        assert_eq!(c[1].term(), "xterm");
        assert_eq!(parse_active("ttyS0 ttyS0").len(), 1);
        assert!(parse_active("").is_empty());
        assert!(Console::from_name("ttyUSB0").serial);
        assert!(!Console::from_name("tty3").serial);
    }

    #[test]
    fn crlf_conversion() {
        assert_eq!(crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc");
        assert_eq!(crlf(b"\n\n"), b"\r\n\r\n");
    }
}
