//! The only place that talks to the kernel's block-device ioctls. Each wrapper is a small,
//! documented `unsafe` call; everything above it is safe Rust.
use std::io;
use std::os::fd::AsRawFd;

// From <linux/fs.h>.
nix::ioctl_read!(blk_getsize64, 0x12, 114, u64);
nix::ioctl_none!(blk_flsbuf, 0x12, 97);
nix::ioctl_read_bad!(blk_sszget, 0x1268, libc::c_int); // BLKSSZGET = _IO(0x12,104)
nix::ioctl_read_bad!(blk_pbszget, 0x127b, libc::c_uint); // BLKPBSZGET = _IO(0x12,123)
nix::ioctl_read_bad!(blk_roget, 0x125e, libc::c_int); // BLKROGET = _IO(0x12,94)
nix::ioctl_write_ptr_bad!(blk_roset, 0x125d, libc::c_int); // BLKROSET = _IO(0x12,93)
nix::ioctl_none_bad!(blk_rrpart, 0x125f); // BLKRRPART = _IO(0x12,95)

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Size in bytes of the block device open on `f`.
pub fn block_size_bytes(f: &impl AsRawFd) -> io::Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to a live local.
    unsafe { blk_getsize64(f.as_raw_fd(), &mut v) }.map_err(errno)?;
    Ok(v)
}

/// Logical sector size of the block device open on `f`.
pub fn logical_block_size(f: &impl AsRawFd) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points to a live local.
    unsafe { blk_sszget(f.as_raw_fd(), &mut v) }.map_err(errno)?;
    Ok(v as u32)
}

/// Physical sector size of the block device open on `f`.
pub fn physical_block_size(f: &impl AsRawFd) -> io::Result<u32> {
    let mut v: libc::c_uint = 0;
    // SAFETY: BLKPBSZGET writes one unsigned int through the pointer, which points to a live local.
    unsafe { blk_pbszget(f.as_raw_fd(), &mut v) }.map_err(errno)?;
    Ok(v)
}

/// Whether the kernel has the device marked read-only.
pub fn get_ro(f: &impl AsRawFd) -> io::Result<bool> {
    let mut v: libc::c_int = 0;
    // SAFETY: BLKROGET writes one int through the pointer, which points to a live local.
    unsafe { blk_roget(f.as_raw_fd(), &mut v) }.map_err(errno)?;
    Ok(v != 0)
}

/// Marks the device read-only (or writable) in the kernel: writes through any fd then fail with EPERM.
pub fn set_ro(f: &impl AsRawFd, ro: bool) -> io::Result<()> {
    let v: libc::c_int = ro as libc::c_int;
    // SAFETY: BLKROSET reads one int through the pointer, which points to a live local.
    unsafe { blk_roset(f.as_raw_fd(), &v) }.map_err(errno)?;
    Ok(())
}

/// Drops the device's buffer cache (so a verify pass reads the media, not memory).
pub fn flush_buffers(f: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: BLKFLSBUF takes no argument.
    unsafe { blk_flsbuf(f.as_raw_fd()) }.map_err(errno)?;
    Ok(())
}

/// Asks the kernel to re-read the partition table (after a clone or restore).
pub fn reread_partitions(f: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument.
    unsafe { blk_rrpart(f.as_raw_fd()) }.map_err(errno)?;
    Ok(())
}

/// `struct loop_info64` from <linux/loop.h>: what a loop device reads and where.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LoopInfo64 {
    /// st_dev of the backing file (the kernel's `huge_encode_dev`, as `stat` reports it).
    pub lo_device: u64,
    /// Inode number of the backing file.
    pub lo_inode: u64,
    pub lo_rdevice: u64,
    /// Byte offset into the backing file where the loop device starts.
    pub lo_offset: u64,
    /// Bytes of the backing file the loop device covers (0: up to the end of the file).
    pub lo_sizelimit: u64,
    pub lo_number: u32,
    pub lo_encrypt_type: u32,
    pub lo_encrypt_key_size: u32,
    pub lo_flags: u32,
    pub lo_file_name: [u8; 64],
    pub lo_crypt_name: [u8; 64],
    pub lo_encrypt_key: [u8; 32],
    pub lo_init: [u64; 2],
}

nix::ioctl_read_bad!(loop_get_status64, 0x4C05, LoopInfo64); // LOOP_GET_STATUS64

/// What the loop device open on `f` is backed by (ENXIO when no file is attached).
pub fn loop_status(f: &impl AsRawFd) -> io::Result<LoopInfo64> {
    // SAFETY: an all-zero LoopInfo64 is a valid value (plain integers and byte arrays).
    let mut v: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 writes one struct loop_info64 (same layout as LoopInfo64, 232
    // bytes) through the pointer, which points to a live local.
    unsafe { loop_get_status64(f.as_raw_fd(), &mut v) }.map_err(errno)?;
    Ok(v)
}
