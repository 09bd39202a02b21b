//! Disk images: the `.lbi` format, create (full and incremental), verify, info, restore, export,
//! and the `lifeboat image ...` commands (their runners are in `cmd`).
mod ahead;
pub(crate) mod cmd;
mod cmd_copy;
pub mod cmd_keys;
pub(crate) mod cmd_restore;
pub mod copy;
pub mod create;
pub mod crypt;
mod dio;
pub mod feed;
pub mod format;
pub mod journal;
pub mod ops;
mod pack;
pub mod reader;
pub mod resume;
pub mod space;
pub mod store;
pub mod store_ntfs;
mod treehash;
pub mod verify;
pub mod vmdisk;
mod volumes;
mod writer;

pub use cmd::run;
pub use create::{create, CreateOptions, CreateReport, SourceIdentity};
pub use ops::{export, info, verify, InfoReport, RestoreReport, VerifyReport};
pub use reader::{Chain, Image};
pub use store::{Mode, Store, StoreLocation};

use crate::error::{Error, Result};

#[derive(clap::Subcommand, Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageCmd {
    /// Back a disk up into an image file (IMAGE may be PARTITION:/path, e.g. label=BACKUPS:/pc/full.lbi).
    Create {
        /// The disk to image (sda, /dev/sda, serial=..., a disk-image file).
        source: String,
        /// The image file to write.
        image: String,
        /// Make an incremental image: store only what changed since this image.
        #[arg(long)]
        parent: Option<String>,
        /// Write volumes of at most SIZE bytes (suffixes K, M, G, T; e.g. 4G for FAT32).
        #[arg(long, value_name = "SIZE")]
        split: Option<String>,
        /// Replace an existing image of the same name (only once the new one is complete).
        #[arg(long)]
        force: bool,
        #[arg(long, help = crate::fs::ALL_SECTORS_HELP)]
        all_sectors: bool,
        /// Chunk compression: zstd:LEVEL (1-19; default zstd:2, higher is smaller and slower;
        /// zstd:3 stores ~3 % less for ~1.4x the CPU), zstd (level 3) or lz4 (least CPU).
        #[arg(long, value_name = "METHOD")]
        compress: Option<String>,
        /// Also keep the rescue engine's map here (GNU ddrescue's mapfile format, saved at every
        /// checkpoint; `ddrescuelog` reads it). An interrupted create resumes by itself from
        /// its `.partial` and journal, with or without it.
        #[arg(long, value_name = "FILE")]
        map: Option<std::path::PathBuf>,
        /// Encrypt the image (AES-256-GCM on a CPU with AES-NI, else XChaCha20-Poly1305; the
        /// passphrase is asked twice on the terminal, or read from --passphrase-file). An
        /// incremental of an encrypted image always is, with its parent's cipher.
        #[arg(long)]
        encrypt: bool,
        /// With --encrypt: keep the source's model and serial readable without the passphrase
        /// (by default an encrypted image hides them).
        #[arg(long, requires = "encrypt")]
        clear_identity: bool,
        #[arg(long, value_name = "FILE", help = PASSPHRASE_FILE_HELP)]
        passphrase_file: Option<String>,
        /// Do not read the finished image back from its storage to check it (by default every
        /// CRC and hash is checked in what the storage returns, its page cache dropped first).
        #[arg(long)]
        no_verify: bool,
        /// Start even when the free space where the image goes is less than the image may
        /// need (by default a full image is refused then, exit 4, before anything is written:
        /// the bound is the source's used bytes plus the index, as the console shows it).
        #[arg(long)]
        ignore_free_space: bool,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Write an image (and its parents) back onto a disk.
    Restore {
        image: String,
        /// The disk to overwrite.
        target: String,
        /// Do not ask for confirmation (also allows restoring onto the image's own source disk).
        #[arg(long)]
        yes: bool,
        /// Write zeros where the image holds no used block (by default the target's free space
        /// keeps its old bytes there).
        #[arg(long)]
        zero_free: bool,
        /// Discard (TRIM) the target where the image holds no used block, when the target
        /// supports it (SSDs, thin volumes): faster and kinder to an SSD than leaving old data;
        /// those bytes then read as whatever the device returns (use --zero-free for zeros).
        #[arg(long, conflicts_with = "zero_free")]
        discard: bool,
        /// Mapfile of what is written on the target (GNU ddrescue's format): resume an
        /// interrupted restore from it, and keep it up to date.
        #[arg(long, value_name = "FILE")]
        map: Option<std::path::PathBuf>,
        #[arg(long, value_name = "FILE", help = PASSPHRASE_FILE_HELP)]
        passphrase_file: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check every checksum, the whole-media hash and the parent chain.
    Verify {
        image: String,
        /// Keep the verify's progress in FILE (saved every few seconds and when stopped), and
        /// resume an interrupted verify of the same image from it.
        #[arg(long, value_name = "FILE")]
        state: Option<std::path::PathBuf>,
        #[arg(long, value_name = "FILE", help = PASSPHRASE_FILE_HELP)]
        passphrase_file: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Copy an image (every volume; with --chain every parent it needs) to another location,
    /// byte for byte (the copy keeps the image's UUID), read back from there and checked.
    Copy {
        image: String,
        /// Where the copy goes: a file, a directory (the image's file name is kept), or
        /// PARTITION:/path (e.g. label=SECOND:/pc/ or label=SECOND:/pc/full.lbi).
        dest: String,
        /// Also copy every parent the image needs into DEST's directory, under their own file
        /// names (a parent already there, the same image, is kept).
        #[arg(long)]
        chain: bool,
        /// Read the copy back from the destination's storage (page cache dropped) and check
        /// every byte, CRC and hash before it gets its name: the default.
        #[arg(long, conflicts_with = "no_verify")]
        verify: bool,
        /// Skip that check.
        #[arg(long)]
        no_verify: bool,
        /// Replace an existing file at the destination.
        #[arg(long)]
        force: bool,
        /// Start even when the destination's free space is less than the volumes to copy (by
        /// default refused, exit 4, before anything is written).
        #[arg(long)]
        ignore_free_space: bool,
        /// An encrypted image is copied as it is (ciphertext); its passphrase is needed to
        /// verify the copy as an image (without one, the copy is only compared byte for byte).
        #[arg(long, value_name = "FILE", help = PASSPHRASE_FILE_HELP)]
        passphrase_file: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Describe an image: source disk, date, sizes, unreadable areas, parent and chain.
    Info {
        image: String,
        #[arg(long, value_name = "FILE", help = PASSPHRASE_FILE_HELP)]
        passphrase_file: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Serve the disk as it was at this image over NBD (qemu-img, qemu-nbd, nbd-client, a VM),
    /// without restoring it: read-only, or writes into --writable-overlay FILE.
    Serve(crate::serve::ServeArgs),
    /// Mount one partition of the disk as it was at this image, read-only, through the
    /// kernel's NBD client (a helper process keeps serving it until `image umount`).
    Mount(crate::serve::attach::MountArgs),
    /// Unmount an image mounted by `image mount` and detach its NBD device.
    Umount(crate::serve::attach::UmountArgs),
    /// List a directory of one partition of the disk as it was at this image (mounted
    /// read-only for the listing).
    Ls(crate::serve::extract::LsArgs),
    /// Copy files and folders out of one partition of the disk as it was at this image into
    /// a folder (nothing there is replaced), without restoring the disk.
    Extract(crate::serve::extract::ExtractArgs),
    /// Write the disk as a file: raw (sparse where the disk was zero), or a VM disk (qcow2,
    /// vhd, vhdx, vmdk) so the old PC boots as a virtual machine.
    Export {
        image: String,
        raw: String,
        /// raw (default), qcow2, vhd (dynamic), vhdx (dynamic) or vmdk (monolithic sparse).
        #[arg(long, value_name = "FORMAT")]
        format: Option<String>,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
        #[arg(long, value_name = "FILE", help = PASSPHRASE_FILE_HELP)]
        passphrase_file: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Add a recovery key to an encrypted image's free key slot (printed, or written to --output);
    /// with --chain to every image of its chain.
    AddKey {
        image: String,
        /// Write the recovery key to FILE (a new file, readable by its owner only) instead of
        /// printing it.
        #[arg(long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
        /// Add the same recovery key to every image of the chain (the image and its parents);
        /// each needs a free slot, checked before anything is written.
        #[arg(long)]
        chain: bool,
        #[arg(long, value_name = "FILE", help = PASSPHRASE_FILE_HELP)]
        passphrase_file: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove key slot N (1 or 2) of an encrypted image (with --chain of every image of its
    /// chain); the last one is never removed.
    RemoveKey {
        image: String,
        #[arg(long, value_name = "N")]
        slot: u32,
        /// Remove slot N from every image of the chain (the image and its parents); in each
        /// it must be in use and not the last, checked before anything is written.
        #[arg(long)]
        chain: bool,
        #[arg(long, value_name = "FILE", help = PASSPHRASE_FILE_HELP)]
        passphrase_file: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// Help of every `--passphrase-file`.
pub(crate) const PASSPHRASE_FILE_HELP: &str =
    "Read the passphrase (or a recovery key) of an encrypted \
image from FILE (may be PARTITION:/path) instead of asking on the terminal; one trailing \
newline is ignored. Never give it on the command line.";

/// Parses "4G", "4GiB", "100M", "512K", "4000000000" (binary multiples).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let unit = t[digits.len()..].trim().to_ascii_uppercase();
    let n: u64 = digits
        .parse()
        .map_err(|_| Error::invalid(format!("bad size {s:?}: use e.g. 4G, 700M, 4000000000")))?;
    let mul: u64 = match unit.as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => {
            return Err(Error::invalid(format!(
                "bad size unit in {s:?}: use K, M, G or T"
            )))
        }
    };
    n.checked_mul(mul)
        .ok_or_else(|| Error::invalid(format!("size {s:?} is too large")))
}

/// The identity items of an image location before anything is mounted: for
/// `PARTITION:/path` the partition (mounting it writes to it: journal, superblock), else the
/// plain path. `written` for create/export outputs.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("700MiB").unwrap(), 700 << 20);
        assert_eq!(parse_size("1234").unwrap(), 1234);
        assert!(parse_size("4X").is_err());
        assert!(parse_size("").is_err());
    }
}
