//! Lifeboat's QEMU test harness: boots the built kernel + initramfs under TCG with virtual
//! disks on every bus, reads the serial console, and lets tests check results from the host.
//! Modelled on danobi/vmtest: command lines are data (`qemu`), VMs are owned values (`vm`).
pub mod bench;
pub mod blkdebug;
pub mod check;
pub mod disks;
pub mod ganesha;
pub mod qemu;
pub mod samba;
pub mod tmp;
pub mod vm;

pub use blkdebug::Faults;
pub use qemu::{Bus, DiskSpec, Firmware, NetSpec, SerialMode, VmSpec};
pub use tmp::TempDir;
pub use vm::{Vm, READY, RESULT};

use std::path::PathBuf;

/// The repository root (the parent of this package).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// Where serial logs, QEMU command lines and timings go: `target/qemu-logs/`.
pub fn logs_dir() -> PathBuf {
    repo_root().join("target").join("qemu-logs")
}

/// The boot artefacts under test.
#[derive(Clone, Debug)]
pub struct Artefacts {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// `target/lifeboat/{vmlinuz,initramfs.img}`, or LIFEBOAT_TEST_KERNEL / LIFEBOAT_TEST_INITRD.
pub fn artefacts() -> Result<Artefacts, String> {
    let dir = repo_root().join("target").join("lifeboat");
    let kernel = std::env::var_os("LIFEBOAT_TEST_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("vmlinuz"));
    let initrd = std::env::var_os("LIFEBOAT_TEST_INITRD")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("initramfs.img"));
    for p in [&kernel, &initrd] {
        if !p.is_file() {
            return Err(format!(
                "{} is missing: run scripts/build first",
                p.display()
            ));
        }
    }
    Ok(Artefacts { kernel, initrd })
}

/// Quotes a Lifeboat command for `lifeboat.run="..."` on the kernel command line (which has
/// no escape for a double quote inside a quoted value).
pub fn run_param(args: &str) -> String {
    assert!(
        !args.contains('"'),
        "lifeboat.run cannot carry a double quote: {args}"
    );
    format!("lifeboat.run=\"{args}\"")
}
