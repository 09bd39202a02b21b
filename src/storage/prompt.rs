//! The one confirmation prompt of destructive CLI jobs (clone, image restore): without a
//! terminal the job is refused (exit 4: add `--yes`); otherwise the person must type `yes`. Any
//! other answer or end of input cancels with nothing written, and one Ctrl-C at the question
//! exits at once with 130 (the signal thread of [`crate::jobs::cancel_on_signals`] sees
//! [`crate::jobs::AT_PROMPT`]).
use crate::error::{Error, ErrorKind, Result};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::Ordering;

/// Asks "`question` Type 'yes' to overwrite `what`: " on stderr and reads the answer from stdin.
pub fn confirm(what: &str, question: &str) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::refused(format!(
            "refusing to overwrite {what} without confirmation: run in a terminal, or add --yes"
        )));
    }
    ask(what, question, &mut stdin.lock())
}

/// [`confirm`] reading the answer from `input` (tests).
pub fn ask(what: &str, question: &str, input: &mut dyn BufRead) -> Result<()> {
    let q = if question.is_empty() {
        String::new()
    } else {
        format!("{question} ")
    };
    crate::err!("{q}Type 'yes' to overwrite {what}: ");
    let _ = std::io::stderr().flush();
    crate::jobs::AT_PROMPT.store(true, Ordering::SeqCst);
    let mut line = String::new();
    let r = input.read_line(&mut line);
    crate::jobs::AT_PROMPT.store(false, Ordering::SeqCst);
    r.map_err(|e| Error::os("read the answer from the terminal", e))?;
    if line.trim().eq_ignore_ascii_case("yes") {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Cancelled,
            format!("not confirmed: nothing was written to {what}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_confirms() {
        ask("sdb", "", &mut &b"yes\n"[..]).unwrap();
        ask("sdb", "", &mut &b"YES\n"[..]).unwrap();
        for a in [&b"no\n"[..], b"", b"y\n"] {
            let e = ask("sdb", "Really?", &mut &a[..]).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Cancelled, "{e}");
        }
    }
}
