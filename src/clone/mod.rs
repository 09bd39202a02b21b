//! Disk-to-disk cloning: safety checks, the rescue-grade copy, verification and the partition
//! table fix-up for a target of another size.
pub mod gpt;
pub mod safety;

use crate::error::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct CloneArgs {
    pub source: String,
    pub target: String,
    /// Do not ask for confirmation (unattended runs).
    #[arg(long)]
    pub yes: bool,
    /// GNU ddrescue mapfile: resume from it, and keep it up to date.
    #[arg(long, value_name = "FILE")]
    pub map: Option<std::path::PathBuf>,
    /// Skip the verification pass.
    #[arg(long)]
    pub no_verify: bool,
    /// Print the final report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_a: CloneArgs) -> Result<i32> {
    Err(Error::unsupported("clone: not implemented yet"))
}
