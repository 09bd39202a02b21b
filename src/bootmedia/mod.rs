//! Recognising the disk Lifeboat booted from, so it is reported and never offered as a target.

/// The attached disk Lifeboat booted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootMedia {
    /// Kernel name of the whole disk, e.g. `sdb`.
    pub disk: String,
    /// That disk's serial, when the kernel exposes one.
    pub serial: Option<String>,
}

/// Which attached disk Lifeboat booted from, if it can tell (None on a host or when unknown).
pub fn detect() -> Option<BootMedia> {
    None
}
