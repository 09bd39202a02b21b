//! Builds the initramfs: a reproducible newc cpio with the Lifeboat binary as /init, the kernel
//! modules real PCs need (with their dependency closure) and an alias index, gzip-compressed.
use crate::error::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct MkArgs {}

pub fn run(_a: MkArgs) -> Result<i32> {
    Err(Error::unsupported("mkinitramfs: not implemented yet"))
}
