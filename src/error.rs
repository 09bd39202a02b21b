//! The crate's error type: a small kind enum, the context of the failed operation
//! (what, which path, which byte offset) and the underlying cause. Edges (CLI, PID 1, TUI)
//! print it with that context; exit codes are derived from the kind.
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
}

/// Lifeboat's library error: kind + context + source.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    pub kind: ErrorKind,
    /// What went wrong, in words a user can act on ("target is smaller than ...; pick a disk of at least ...").
    pub msg: String,
    pub path: Option<PathBuf>,
    pub offset: Option<u64>,
    #[source]
    pub source: Option<io::Error>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)?;
        match (&self.path, self.offset) {
            (Some(p), Some(o)) => write!(f, " ({} at byte {o})", p.display())?,
            (Some(p), None) => write!(f, " ({})", p.display())?,
            (None, Some(o)) => write!(f, " (at byte {o})")?,
            (None, None) => {}
        }
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
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
            source: None,
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
            source: Some(source),
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
            ErrorKind::Corrupt => exit::CORRUPT,
            ErrorKind::Cancelled => exit::CANCELLED,
            ErrorKind::Io | ErrorKind::Unsupported => exit::FAILED,
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
    }
}
