//! The crate's error type: a small kind enum, the context of the failed operation
//! (what, which path, which byte offset) and the underlying cause. Edges (CLI, PID 1, TUI)
//! print it with that context; exit codes are derived from the kind.
//!
//! Display is the whole message for a person: what went wrong, the path/offset, and the cause
//! (the OS error, the JSON or ELF parser's words). So `source()` returns nothing: a caller that
//! walks the chain would print the cause twice. The cause stays reachable, typed, through
//! [`Error::cause`] and [`Error::raw_os_error`].
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What class of failure this is; decides the exit code and how the edges present it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// An operating-system I/O call failed.
    Io,
    /// The user asked for something malformed (bad selector, bad size, bad flag combination).
    InvalidInput,
    /// A device, file, image or parent that was named does not exist.
    NotFound,
    /// A safety rule refused the operation; nothing was written.
    Refused,
    /// Data on disk (an image, a map file) is damaged or inconsistent.
    Corrupt,
    /// The user cancelled.
    Cancelled,
    /// This build or this machine cannot do that.
    Unsupported,
    /// An image is incomplete: no footer (its creation was interrupted), or a part it needs is
    /// missing (a split volume, a parent of an incremental). Exit 5, like a damaged image.
    Incomplete,
    /// An encrypted image's key slots do not open with the passphrase (or recovery key) given.
    /// Exit 5, before anything is written.
    WrongPassphrase,
    /// A network share stopped answering in the middle of a job (a cable pulled, the server
    /// switched off): decided by the error number on a file inside the share's mount, never
    /// by text (see `net::lost`). Exit 1; the message says to reconnect and run the command
    /// again.
    NetworkLost,
}

/// Exit codes shared by every command (documented in the README).
pub mod exit {
    /// Everything done, nothing lost.
    pub const OK: i32 = 0;
    /// The job failed (I/O error, corrupt input...).
    pub const FAILED: i32 = 1;
    /// Usage error (bad arguments, unknown selector).
    pub const USAGE: i32 = 2;
    /// The job completed but some source sectors could not be read (a completed rescue).
    pub const PARTIAL: i32 = 3;
    /// A safety rule refused the job; nothing was written.
    pub const REFUSED: i32 = 4;
    /// Verification found a mismatch or corruption.
    pub const CORRUPT: i32 = 5;
    /// The user cancelled.
    pub const CANCELLED: i32 = 130;
    /// The job succeeded but its standard output was closed before everything was printed
    /// (`lifeboat list | head -1`): 128 + SIGPIPE, as a shell reports a command SIGPIPE
    /// stopped (`crate::out`).
    pub const STDOUT_CLOSED: i32 = 141;
}

/// The underlying cause of an [`Error`]: an OS error, or another library's error.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Lifeboat's library error: kind + context + cause. Display prints all of it (see the module
/// documentation); `source()` is `None` on purpose.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    /// What went wrong, in words a user can act on ("target is smaller than ...; pick a disk of at least ...").
    pub msg: String,
    /// The file or device the failed operation was on (only ever a path).
    pub path: Option<PathBuf>,
    pub offset: Option<u64>,
    /// What caused it (printed after the message).
    pub cause: Option<Cause>,
    /// Fields of the job's report that are known although the job failed (e.g. that a restore
    /// target is now incomplete); the CLI's `--json` error object carries them.
    pub report: Option<serde_json::Map<String, serde_json::Value>>,
}

impl std::error::Error for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)?;
        match (&self.path, self.offset) {
            (Some(p), Some(o)) => write!(f, " ({} at byte {o})", p.display())?,
            (Some(p), None) => write!(f, " ({})", p.display())?,
            (None, Some(o)) => write!(f, " (at byte {o})")?,
            (None, None) => {}
        }
        if let Some(c) = &self.cause {
            write!(f, ": {c}")?;
            // A cause's own causes (an io::Error wrapping a parser error...), each once.
            let mut next = c.source();
            while let Some(s) = next {
                write!(f, ": {s}")?;
                next = s.source();
            }
        }
        Ok(())
    }
}

impl Error {
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Self {
        Error {
            kind,
            msg: msg.into(),
            path: None,
            offset: None,
            cause: None,
            report: None,
        }
    }
    /// An I/O failure of `op` ("open", "read", "write", "fsync"...) on `path`.
    pub fn io(op: &str, path: impl AsRef<Path>, source: io::Error) -> Self {
        let kind = match source.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Io,
        };
        Error {
            kind,
            msg: format!("cannot {op}"),
            path: Some(path.as_ref().to_path_buf()),
            offset: None,
            cause: Some(Box::new(source)),
            report: None,
        }
    }
    /// An I/O failure of `op` that is not about a file ("start the reader thread", "read the
    /// answer from the terminal"): no path.
    pub fn os(op: &str, source: io::Error) -> Self {
        Error {
            cause: Some(Box::new(source)),
            ..Self::new(ErrorKind::Io, format!("cannot {op}"))
        }
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, msg)
    }
    pub fn refused(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Refused, msg)
    }
    pub fn corrupt(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, msg)
    }
    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, "cancelled by the user")
    }
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, msg)
    }
    pub fn incomplete(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Incomplete, msg)
    }
    /// Keeps `cause` (printed after the message) instead of formatting it into the message.
    pub fn caused_by(mut self, cause: impl Into<Cause>) -> Self {
        self.cause = Some(cause.into());
        self
    }
    /// Adds a field to the report printed with this error (`--json`).
    pub fn with_report(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.report
            .get_or_insert_with(Default::default)
            .insert(key.to_string(), value.into());
        self
    }
    /// The underlying cause, if any.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.cause.as_deref()
    }
    /// The OS error number of the cause, when it is an OS error.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.cause
            .as_deref()
            .and_then(|c| c.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error)
    }
    pub fn at_path(mut self, p: impl AsRef<Path>) -> Self {
        self.path = Some(p.as_ref().to_path_buf());
        self
    }
    pub fn at_offset(mut self, off: u64) -> Self {
        self.offset = Some(off);
        self
    }
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::InvalidInput | ErrorKind::NotFound => exit::USAGE,
            ErrorKind::Refused => exit::REFUSED,
            ErrorKind::Corrupt | ErrorKind::Incomplete | ErrorKind::WrongPassphrase => {
                exit::CORRUPT
            }
            ErrorKind::Cancelled => exit::CANCELLED,
            ErrorKind::Io | ErrorKind::Unsupported | ErrorKind::NetworkLost => exit::FAILED,
        }
    }
    /// A short machine-readable name of the kind, for JSON reports.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ErrorKind::Io => "io",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Refused => "refused",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Incomplete => "incomplete",
            ErrorKind::WrongPassphrase => "wrong_passphrase",
            ErrorKind::NetworkLost => "network_lost",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_carries_context() {
        let e =
            Error::io("read", "/dev/sda", io::Error::from_raw_os_error(libc::EIO)).at_offset(4096);
        let s = e.to_string();
        assert!(s.contains("cannot read"), "{s}");
        assert!(s.contains("/dev/sda at byte 4096"), "{s}");
        assert_eq!(e.exit_code(), exit::FAILED);
        assert_eq!(Error::refused("x").exit_code(), exit::REFUSED);
        assert_eq!(Error::incomplete("x").exit_code(), exit::CORRUPT);
    }

    #[test]
    fn cause_is_printed_once_and_kept_typed() {
        let e = Error::io(
            "open",
            "/dev/sdz",
            io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
        // Display carries the cause; source() does not repeat it.
        assert!(e
            .to_string()
            .ends_with(&io::Error::from_raw_os_error(libc::EACCES).to_string()));
        assert!(std::error::Error::source(&e).is_none());
        let j = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let e = Error::invalid("cannot read the job result").caused_by(j);
        assert!(e.to_string().contains("EOF"), "{e}");
        assert!(e.cause().is_some() && e.raw_os_error().is_none());
        let e = Error::os("start the reader thread", io::Error::other("no threads"));
        assert_eq!(e.path, None);
        assert_eq!(e.to_string(), "cannot start the reader thread: no threads");
    }
}
