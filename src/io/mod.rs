//! Raw disk access: opening block devices and disk-image files for reading or writing with
//! O_DIRECT where the kernel supports it, sector geometry, and the `BlockSource` trait that the
//! rescue, clone and image engines read through (real devices and simulated failing ones alike).
//! Every `unsafe` of the crate is here, in small commented wrappers: ioctls (`sys`, and the
//! kernel NBD client's in `nbd`), aligned
//! buffers (`buf`), and the child-process setup PID 1 runs before `exec` (`process`).
pub mod buf;
pub mod nbd;
pub mod open;
pub mod process;
pub mod sys;

pub use buf::{is_zero, AlignedBuf, IO_ALIGN};

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Something that can be read like a disk: fixed size, a logical sector size, positional reads
/// that may fail per sector (EIO) like a failing drive. Implemented by [`Device`] and by the
/// simulated devices used in tests.
pub trait BlockSource: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Logical sector size in bytes (512 or 4096): the unit of rescue and of O_DIRECT alignment.
    fn logical_block_size(&self) -> u32;
    /// Reads up to `buf.len()` bytes at `offset`. `buf` is `IO_ALIGN`-aligned and `offset` and
    /// `buf.len()` are multiples of the logical sector size, except possibly at the device end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// A human name for messages (path or model).
    fn name(&self) -> String;
}

/// How to open a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read-only, O_DIRECT if possible: sources.
    Read,
    /// Read-write, O_DIRECT if possible, never created or truncated: targets.
    Write,
}

/// An open block device or disk-image file.
pub struct Device {
    file: File,
    path: PathBuf,
    size: u64,
    lbs: u32,
    pbs: u32,
    is_block: bool,
    direct: bool,
}

impl Device {
    /// Opens `path` (a block device or a regular file). O_DIRECT is used when the filesystem or
    /// device allows it; otherwise the page cache is used (tmpfs, some FUSE mounts).
    pub fn open(path: impl AsRef<Path>, access: Access) -> Result<Device> {
        let path = path.as_ref();
        // Look before opening: opening a FIFO blocks until the other end opens, and opening
        // a character device can have effects of its own.
        if let Ok(md) = std::fs::metadata(path) {
            let ft = md.file_type();
            if !ft.is_file() && !ft.is_block_device() {
                return Err(Error::invalid(format!(
                    "{} is {}: a disk is a block device or a disk-image file",
                    path.display(),
                    open::file_kind(&ft)
                )));
            }
        }
        let open = |direct: bool| {
            let mut o = OpenOptions::new();
            o.read(true);
            if access == Access::Write {
                o.write(true);
            }
            let mut flags = libc::O_CLOEXEC;
            if direct {
                flags |= libc::O_DIRECT;
            }
            o.custom_flags(flags).open(path)
        };
        let (file, direct) = match open(true) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                (open(false).map_err(|e| Error::io("open", path, e))?, false)
            }
            Err(e) => return Err(Error::io("open", path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
        let is_block = meta.file_type().is_block_device();
        let (size, lbs, pbs) = if is_block {
            let size =
                sys::block_size_bytes(&file).map_err(|e| Error::io("get the size of", path, e))?;
            let lbs = sys::logical_block_size(&file).unwrap_or(512);
            let pbs = sys::physical_block_size(&file).unwrap_or(lbs);
            (size, lbs, pbs)
        } else if meta.file_type().is_file() {
            if direct && meta.len() % 512 != 0 {
                // A disk-image file whose size is not a whole number of sectors: O_DIRECT cannot
                // read or write its last partial sector, so use the page cache for this file.
                let file = open(false).map_err(|e| Error::io("open", path, e))?;
                return Ok(Device {
                    file,
                    path: path.to_path_buf(),
                    size: meta.len(),
                    lbs: 512,
                    pbs: 4096,
                    is_block: false,
                    direct: false,
                });
            }
            (meta.len(), 512, 4096)
        } else {
            return Err(Error::invalid(format!(
                "{} is neither a block device nor a disk-image file",
                path.display()
            )));
        };
        Ok(Device {
            file,
            path: path.to_path_buf(),
            size,
            lbs,
            pbs,
            is_block,
            direct,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The open file. For ioctls use the methods above and below (the only `unsafe` stays in
    /// `io::sys`).
    pub fn file(&self) -> &File {
        &self.file
    }
    pub fn is_block_device(&self) -> bool {
        self.is_block
    }
    /// Whether reads and writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }
    pub fn physical_block_size(&self) -> u32 {
        self.pbs
    }
    /// Overrides the logical sector size of a disk-image file (images of 4Kn disks).
    pub fn set_logical_block_size(&mut self, lbs: u32) {
        if !self.is_block {
            self.lbs = lbs;
        }
    }

    /// Writes all of `buf` at `offset` (retrying on EINTR and short writes).
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| Error::io("write", &self.path, e).at_offset(offset))
    }

    /// Flushes written data to stable storage.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("fsync", &self.path, e))
    }

    /// Whether the kernel has this block device marked read-only (`BLKROGET`); a disk-image
    /// file is never marked.
    pub fn is_read_only(&self) -> Result<bool> {
        if !self.is_block {
            return Ok(false);
        }
        sys::get_ro(&self.file).map_err(|e| Error::io("query the read-only flag of", &self.path, e))
    }

    /// Marks this block device read-only, or writable again, in the kernel (`BLKROSET`): while
    /// marked, writes through any file descriptor fail. Nothing to do for a disk-image file.
    pub fn set_read_only(&self, ro: bool) -> Result<()> {
        if !self.is_block {
            return Ok(());
        }
        let what = if ro {
            "mark read-only"
        } else {
            "clear the read-only flag of"
        };
        sys::set_ro(&self.file, ro).map_err(|e| Error::io(what, &self.path, e))
    }

    /// Asks the kernel to re-read this block device's partition table (`BLKRRPART`), after a
    /// clone or restore wrote a new one. Nothing to do for a disk-image file.
    pub fn reread_partitions(&self) -> Result<()> {
        if !self.is_block {
            return Ok(());
        }
        sys::reread_partitions(&self.file)
            .map_err(|e| Error::io("re-read the partition table of", &self.path, e))
    }

    /// The sysfs `queue` directory of this block device (its disk's, for a partition).
    fn sysfs_queue(&self) -> Option<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        if !self.is_block {
            return None;
        }
        let rdev = self.file.metadata().ok()?.rdev();
        let dev = PathBuf::from(format!(
            "/sys/dev/block/{}:{}",
            libc::major(rdev),
            libc::minor(rdev)
        ));
        let q = if dev.join("partition").exists() {
            dev.join("../queue")
        } else {
            dev.join("queue")
        };
        q.is_dir().then_some(q)
    }

    /// Whether this block device accepts discard (TRIM/UNMAP) requests: its
    /// `queue/discard_max_bytes` is above 0. False for a regular file and when unknown.
    pub fn supports_discard(&self) -> bool {
        self.sysfs_queue()
            .and_then(|q| std::fs::read_to_string(q.join("discard_max_bytes")).ok())
            .and_then(|t| t.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    }

    /// Discards `len` bytes at `offset` of this block device (`BLKDISCARD`). Does not promise
    /// what the range reads afterwards.
    pub fn discard(&self, offset: u64, len: u64) -> Result<()> {
        sys::discard(&self.file, offset, len)
            .map_err(|e| Error::io("discard (TRIM) a range of", &self.path, e).at_offset(offset))
    }

    /// Makes `len` bytes at `offset` read as zeros: `BLKZEROOUT` on a block device (the
    /// device's WRITE ZEROES when it has one), zeros written into a regular file.
    pub fn zero_out(&self, offset: u64, len: u64) -> Result<()> {
        if self.is_block {
            return sys::zero_out(&self.file, offset, len)
                .map_err(|e| Error::io("zero a range of", &self.path, e).at_offset(offset));
        }
        let zeros = AlignedBuf::new(len.min(1 << 20) as usize);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.write_all_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Drops cached pages of this device so the next reads come from the media.
    pub fn drop_cache(&self) -> Result<()> {
        if self.is_block {
            sys::flush_buffers(&self.file)
                .map_err(|e| Error::io("flush the buffer cache of", &self.path, e))
        } else {
            // SAFETY: posix_fadvise only reads its integer arguments; the fd is open for our lifetime.
            let rc = unsafe {
                libc::posix_fadvise(
                    std::os::fd::AsRawFd::as_raw_fd(&self.file),
                    0,
                    0,
                    libc::POSIX_FADV_DONTNEED,
                )
            };
            if rc != 0 {
                return Err(Error::io(
                    "drop the page cache of",
                    &self.path,
                    io::Error::from_raw_os_error(rc),
                ));
            }
            Ok(())
        }
    }
}

/// Makes the next reads of the regular file `f` (at `path`, for messages) come from its
/// storage rather than from memory: fsync (nothing dirty stays cached), then
/// `POSIX_FADV_DONTNEED` over the whole file, which drops its clean pages from the page cache.
/// How a verify after writing re-reads what the media holds.
pub fn drop_file_cache(f: &File, path: &Path) -> Result<()> {
    f.sync_all().map_err(|e| Error::io("fsync", path, e))?;
    nix::fcntl::posix_fadvise(
        std::os::fd::AsRawFd::as_raw_fd(f),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .map_err(|e| Error::io("drop the page cache of", path, e.into()))
}

/// Turns O_DIRECT on or off for the regular file open on `f` (`fcntl(F_SETFL)`): reads then
/// come from the storage, not the page cache, and must be aligned ([`IO_ALIGN`] covers every
/// logical sector size). EINVAL: the filesystem does not do direct I/O (tmpfs before Linux 6.6,
/// most FUSE filesystems).
pub fn set_direct(f: &File, on: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    let fl = OFlag::from_bits_truncate(fcntl(f.as_raw_fd(), FcntlArg::F_GETFL)?);
    let fl = if on {
        fl | OFlag::O_DIRECT
    } else {
        fl & !OFlag::O_DIRECT
    };
    fcntl(f.as_raw_fd(), FcntlArg::F_SETFL(fl))?;
    Ok(())
}

impl BlockSource for Device {
    fn size(&self) -> u64 {
        self.size
    }
    fn logical_block_size(&self) -> u32 {
        self.lbs
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

/// A fresh scratch directory for a unit test: `$TMPDIR/lifeboat-NAME-PID`, emptied first.
#[cfg(test)]
pub(crate) fn scratch_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lifeboat-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a scratch directory");
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_roundtrip() {
        let dir = std::env::temp_dir().join(format!("lifeboat-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("disk.img");
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        let d = Device::open(&p, Access::Write).unwrap();
        assert_eq!(d.size(), 1 << 20);
        let mut b = AlignedBuf::new(4096);
        b.iter_mut().enumerate().for_each(|(i, x)| *x = i as u8);
        d.write_all_at(&b, 8192).unwrap();
        d.sync().unwrap();
        let r = Device::open(&p, Access::Read).unwrap();
        let mut c = AlignedBuf::new(4096);
        assert_eq!(r.read_at(&mut c, 8192).unwrap(), 4096);
        assert_eq!(&c[..], &b[..]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_is_not_found() {
        let e = Device::open("/nonexistent/lifeboat", Access::Read)
            .err()
            .unwrap();
        assert_eq!(e.kind, crate::error::ErrorKind::NotFound);
    }
}
