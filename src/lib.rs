//! Lifeboat: a bootable rescue environment that clones and images disks outside the installed OS.
//! The same library serves the PID 1 boot path, the command-line tool and the TUI.
// The CLI prints through `out::write` (`outln!`), which survives a closed stdout.
#![warn(clippy::print_stdout)]
// Text for a person on stderr goes through `errln!`, which escapes controls from hostile names.
#![warn(clippy::print_stderr)]
pub mod cli;
pub mod clone;
pub mod devices;
pub mod error;
pub mod fs;
pub mod health;
pub mod image;
pub mod init;
pub mod initramfs;
pub mod io;
pub mod jobs;
pub mod kcmdline;
pub mod modindex;
pub mod net;
pub mod out;
pub mod rescue;
pub mod s3;
pub mod serve;
pub mod storage;
pub mod tui;

pub use error::{Error, ErrorKind, Result};

/// Version string: crate version plus the git revision it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("LIFEBOAT_GIT_REV"),
    ")"
);
