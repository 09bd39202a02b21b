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
//! # Hostile names
//!
//! Much of what the CLI prints for a person comes from media and devices it does not trust:
//! file names and link targets of imaged filesystems, partition and filesystem labels, the
//! model, vendor and serial a USB device reports, SMART/NVMe strings, S3 keys. A name holding
//! `ESC [ 2 J`, `\r`, a C1 control such as U+009B (CSI on the Linux console) or a bidi override
//! (U+202E) could rewrite the terminal or make one disk look like another. This module owns the
//! rule: [`unsafe_char`] says which characters never reach a terminal raw, and they are shown
//! as visible escapes (`\x1b`, `\u{9b}`, `\u{202e}`); everything else (ordinary Unicode) is
//! shown as it is.
//!
//! - Text for a person ([`outln!`](crate::outln), [`out!`](crate::out) on stdout,
//!   [`errln!`](crate::errln), [`err!`](crate::err) on stderr) passes through [`text`] on its
//!   way out: line breaks and tabs stay, every other unsafe character is escaped. No call site
//!   can forget it.
//! - A field that must stay on one line (a name in a list, a table cell) is wrapped in
//!   [`Shown`] (or [`shown`]), which escapes line breaks and tabs too.
//! - Machine output keeps every value exactly: [`json_line`] (`--json` reports on stdout;
//!   serde_json escapes C0 controls, [`json_text`] the other unsafe characters as `\uXXXX`)
//!   and [`err_raw`] (the `LIFEBOAT-PROGRESS` lines, which hold no names, and the progress
//!   line's own `\r ESC[K`).
//!
//! Standard error (progress, warnings, error messages) goes through [`errln!`](crate::errln) /
//! [`err!`](crate::err), never `eprintln!`, which panics when stderr is gone too
//! (`lifeboat image create ... 2>&1 | head`, a closed `2>&-`): what cannot be said there is
//! dropped, and the job goes on to its end and its exit code.
use crate::error::exit;
use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

const OPEN: u8 = 0;
const CLOSED: u8 = 1;
const FAILED: u8 = 2;

/// What happened to stdout so far (one process, one stdout).
static STATE: AtomicU8 = AtomicU8::new(OPEN);

/// Whether `c` must never reach a terminal raw: C0 controls, DEL and C1 controls (U+0080 to
/// U+009F; U+009B is CSI on the Linux console even in UTF-8 mode), the bidi embeddings,
/// overrides, isolates and marks (U+202E turns the rest of a line around), the invisible
/// zero-width characters, the BOM, and the Unicode line and paragraph separators.
pub fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// `s` with every character of the class `escape` picks shown as a visible escape: `\x1b` for
/// an ASCII control, `\u{9b}` / `\u{202e}` for the rest. Borrowed when nothing needs it.
fn escape_if(s: &str, escape: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(&escape) {
        return Cow::Borrowed(s);
    }
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !escape(c) {
            o.push(c);
        } else if c.is_ascii() {
            o.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            o.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(o)
}

/// One field for a person, on one line: every [`unsafe_char`] escaped, line breaks and tabs
/// included ("a\nb" is shown as `a\x0ab`).
pub fn shown(s: &str) -> Cow<'_, str> {
    escape_if(s, unsafe_char)
}

/// Text for a person, as the output writers pass it on: line breaks and tabs stay, every
/// other [`unsafe_char`] is escaped.
pub fn text(s: &str) -> Cow<'_, str> {
    escape_if(s, |c| c != '\n' && c != '\t' && unsafe_char(c))
}

/// A value displayed as [`shown`] displays its text (`format!("{}", Shown(path.display()))`).
pub struct Shown<T>(pub T);

impl<T: fmt::Display> fmt::Display for Shown<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.to_string();
        f.pad(&shown(&s))
    }
}

/// The text of `args`, through [`text`].
fn human(args: fmt::Arguments) -> String {
    match args.as_str() {
        Some(s) => text(s).into_owned(),
        None => {
            let s = args.to_string();
            match text(&s) {
                Cow::Borrowed(_) => s,
                Cow::Owned(o) => o,
            }
        }
    }
}

/// Writes text for a person (through [`text`]; a newline after it when `newline`) to stdout.
pub fn write(args: fmt::Arguments, newline: bool) {
    write_bytes(human(args).as_bytes(), newline);
}

/// Writes machine output (a `--json` report or value) to stdout, with a newline: the same
/// values exactly, through [`json_text`].
pub fn json_line(v: impl fmt::Display) {
    write_bytes(json_text(&v.to_string()).as_bytes(), true);
}

/// JSON text `j` (serde_json's) with the [`unsafe_char`]s it leaves raw inside strings — C1
/// controls (U+009B is CSI on the Linux console, where the unattended runner copies these
/// lines), DEL, bidi and zero-width controls — written as `\uXXXX` escapes. serde_json
/// already escapes C0 controls; outside strings JSON holds only ASCII punctuation, digits,
/// letters and white space, so every value parses back exactly the same.
pub fn json_text(j: &str) -> Cow<'_, str> {
    let escape = |c: char| c != '\n' && c != '\t' && c != '\r' && unsafe_char(c);
    if !j.chars().any(escape) {
        return Cow::Borrowed(j);
    }
    let mut o = String::with_capacity(j.len() + 12);
    for c in j.chars() {
        if escape(c) {
            // Every unsafe character is in the Basic Multilingual Plane: one \uXXXX.
            o.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            o.push(c);
        }
    }
    Cow::Owned(o)
}

/// Writes text for a person (through [`text`]; a newline after it when `newline`) to stderr.
/// A failed write to stderr is ignored (there is nowhere left to say it).
pub fn write_err(args: fmt::Arguments, newline: bool) {
    let mut s = human(args);
    if newline {
        s.push('\n');
    }
    let _ = std::io::stderr().lock().write_all(s.as_bytes());
}

/// Writes `s` to stderr exactly: machine lines (`LIFEBOAT-PROGRESS {json}`) and the progress
/// line's own terminal controls, never text from elsewhere.
pub fn err_raw(s: &str) {
    let _ = std::io::stderr().lock().write_all(s.as_bytes());
}

/// Writes `b` (and a newline when `newline`) to stdout and flushes it; after a failed write,
/// nothing more is written.
fn write_bytes(b: &[u8], newline: bool) {
    if STATE.load(Ordering::Relaxed) != OPEN {
        return;
    }
    let mut o = std::io::stdout().lock();
    let r = o
        .write_all(b)
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

/// `eprintln!` that never panics (a closed stderr drops the line) and escapes the controls of
/// hostile names (see [`crate::out`]).
#[macro_export]
macro_rules! errln {
    () => {
        $crate::out::write_err(format_args!(""), true)
    };
    ($($t:tt)*) => {
        $crate::out::write_err(format_args!($($t)*), true)
    };
}

/// `eprint!` that never panics (a closed stderr drops the text) and escapes the controls of
/// hostile names (see [`crate::out`]).
#[macro_export]
macro_rules! err {
    ($($t:tt)*) => {
        $crate::out::write_err(format_args!($($t)*), false)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi_but_not_ordinary_unicode() {
        assert_eq!(shown("plain Grüße 日本 ✓"), "plain Grüße 日本 ✓");
        assert!(matches!(shown("plain"), Cow::Borrowed(_)));
        assert_eq!(shown("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(shown("t\x1b]0;title\x07"), "t\\x1b]0;title\\x07");
        assert_eq!(shown("c\rOVER"), "c\\x0dOVER");
        assert_eq!(shown("d\u{202e}txt.exe"), "d\\u{202e}txt.exe");
        assert_eq!(shown("e\nf\tg"), "e\\x0af\\x09g");
        assert_eq!(shown("\u{9b}31m\u{7f}\u{85}"), "\\u{9b}31m\\x7f\\u{85}");
        assert_eq!(
            shown("\u{200b}\u{2066}\u{feff}\u{2028}"),
            "\\u{200b}\\u{2066}\\u{feff}\\u{2028}"
        );
        // Text keeps its line structure; the controls inside lines go.
        assert_eq!(text("a\tb\nc\x1b[Kd\r\n"), "a\tb\nc\\x1b[Kd\\x0d\n");
    }

    #[test]
    fn json_text_escapes_what_serde_leaves_raw_and_keeps_the_values() {
        let v = serde_json::json!({
            "name": "a\x1b[2J\r\n\u{9b}31m\u{7f}\u{202e}txt.exe Grüße",
            "list": ["\u{2066}x\u{2069}", "plain"],
        });
        for j in [v.to_string(), serde_json::to_string_pretty(&v).unwrap()] {
            // serde_json escapes C0 controls itself, not C1, DEL or bidi controls.
            assert!(!j.contains('\x1b') && !j.contains('\r'));
            assert!(j.contains('\u{9b}') && j.contains('\u{202e}'));
            let t = json_text(&j);
            assert!(!t.chars().any(|c| c != '\n' && unsafe_char(c)), "{t}");
            assert!(t.contains("\\u009b31m\\u007f\\u202etxt.exe Grüße"), "{t}");
            let back: serde_json::Value = serde_json::from_str(&t).unwrap();
            assert_eq!(back, v);
        }
        assert!(matches!(json_text("{\"a\":\"b\"}"), Cow::Borrowed(_)));
    }

    #[test]
    fn shown_pads_like_the_value() {
        assert_eq!(format!("[{:<6}]", Shown("a\x07")), "[a\\x07 ]");
        assert_eq!(
            format!("{}", Shown(std::path::Path::new("/x/\x1bq").display())),
            "/x/\\x1bq"
        );
    }
}
