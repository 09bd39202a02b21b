//! The CLI's standard output: every line a command prints for its caller (tables, `--json`
//! reports, file lists) goes through [`outln!`](crate::outln) / [`out!`](crate::out), never
//! `println!`, which panics (exit 101) when stdout is a pipe whose reader went away
//! (`lifeboat image info X | head -1`).
//!
//! A closed stdout is not a failure of the job: the rest of the output is dropped quietly, the
//! command runs to its end (its guards restore what they changed) and an otherwise successful
//! command exits [`exit::STDOUT_CLOSED`] (141, what a shell reports for a command stopped by
//! SIGPIPE, so `set -o pipefail` still sees that output was lost); a command that failed keeps
//! its own exit code. SIGPIPE itself stays ignored (Rust's default): its default action would
//! kill `image serve` whenever an NBD client hangs up. Any other write error (a full disk behind
//! `>`) is said once on stderr and makes an otherwise successful command exit 1.
//!
//! Standard error (progress, warnings, error messages) goes through [`errln!`](crate::errln) /
//! [`err!`](crate::err), never `eprintln!`, which panics when stderr is gone too
//! (`lifeboat image create ... 2>&1 | head`, a closed `2>&-`): what cannot be said there is
//! dropped, and the job goes on to its end and its exit code.
use crate::error::exit;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

const OPEN: u8 = 0;
const CLOSED: u8 = 1;
const FAILED: u8 = 2;

/// What happened to stdout so far (one process, one stdout).
static STATE: AtomicU8 = AtomicU8::new(OPEN);

/// Writes `args` (and a newline when `newline`) to stdout and flushes it; after a failed
/// write, nothing more is written.
pub fn write(args: std::fmt::Arguments, newline: bool) {
    if STATE.load(Ordering::Relaxed) != OPEN {
        return;
    }
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| o.flush());
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STATE.store(CLOSED, Ordering::Relaxed);
        } else {
            STATE.store(FAILED, Ordering::Relaxed);
            let _ = writeln!(
                std::io::stderr(),
                "lifeboat: warning: cannot write to standard output: {e}"
            );
        }
    }
}

/// Writes `args` (and a newline when `newline`) to stderr; a failed write is ignored (there is
/// nowhere left to report it).
pub fn ewrite(args: std::fmt::Arguments, newline: bool) {
    let mut e = std::io::stderr().lock();
    let _ = e
        .write_fmt(args)
        .and_then(|()| if newline { e.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| e.flush());
}

/// The process's exit code for a command that returned `code`: `code`, except that a
/// successful command whose output was lost exits [`exit::STDOUT_CLOSED`] (stdout closed) or
/// [`exit::FAILED`] (another write error).
pub fn exit_code(code: i32) -> i32 {
    match (code, STATE.load(Ordering::Relaxed)) {
        (exit::OK, CLOSED) => exit::STDOUT_CLOSED,
        (exit::OK, FAILED) => exit::FAILED,
        _ => code,
    }
}

/// `println!` for the CLI's stdout: a closed stdout ends the output quietly (see [`crate::out`]).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::out::write(format_args!(""), true)
    };
    ($($t:tt)*) => {
        $crate::out::write(format_args!($($t)*), true)
    };
}

/// `print!` for the CLI's stdout: a closed stdout ends the output quietly (see [`crate::out`]).
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => {
        $crate::out::write(format_args!($($t)*), false)
    };
}

/// `eprintln!` that never panics: a closed stderr drops the line (see [`crate::out`]).
#[macro_export]
macro_rules! errln {
    () => {
        $crate::out::ewrite(format_args!(""), true)
    };
    ($($t:tt)*) => {
        $crate::out::ewrite(format_args!($($t)*), true)
    };
}

/// `eprint!` that never panics: a closed stderr drops the text (see [`crate::out`]).
#[macro_export]
macro_rules! err {
    ($($t:tt)*) => {
        $crate::out::ewrite(format_args!($($t)*), false)
    };
}
