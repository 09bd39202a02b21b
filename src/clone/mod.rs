//! Disk-to-disk cloning: safety checks, the rescue-grade copy, verification and the partition
//! table fix-up for a target of another size.
use crate::error::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct CloneArgs {
    pub source: String,
    pub target: String,
    #[arg(long)]
    pub yes: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(_a: CloneArgs) -> Result<i32> {
    Err(Error::unsupported("clone: not implemented yet"))
}
