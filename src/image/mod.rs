//! Disk images: the `.lbi` format, create (full and incremental), verify, info, restore, export.
use crate::error::{Error, Result};

#[derive(clap::Subcommand, Debug)]
pub enum ImageCmd {
    /// Back a disk up into an image file.
    Create { source: String, image: String },
}

pub fn run(_a: ImageCmd) -> Result<i32> {
    Err(Error::unsupported("image: not implemented yet"))
}
