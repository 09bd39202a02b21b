//! The technician's console (ratatui + crossterm).
use crate::error::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct UiArgs {}

pub fn run(_a: UiArgs) -> Result<i32> {
    Err(Error::unsupported("ui: not implemented yet"))
}
