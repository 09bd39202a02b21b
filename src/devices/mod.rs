//! Disk discovery through sysfs: every whole disk, its identity and its partitions, and the
//! selectors (`/dev/sda`, `sda`, `serial=X`, `label=L`, `uuid=U`, a file) every command uses.
use crate::error::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run_list(_a: ListArgs) -> Result<i32> {
    Err(Error::unsupported("list: not implemented yet"))
}
