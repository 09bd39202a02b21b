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
nix::ioctl_write_ptr_bad!(blk_discard, 0x1277, [u64; 2]); // BLKDISCARD = _IO(0x12,119)
nix::ioctl_write_ptr_bad!(blk_zeroout, 0x127f, [u64; 2]); // BLKZEROOUT = _IO(0x12,127)

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

/// Discards (TRIMs, unmaps) `len` bytes at `start` of the block device open on `f`
/// (`BLKDISCARD`; both multiples of the logical sector size). What the range reads afterwards
/// is up to the device: zeros, the old data or anything else.
pub fn discard(f: &impl AsRawFd, start: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [start, len];
    // SAFETY: BLKDISCARD reads two u64 (start, length) through the pointer, which points to a
    // live local; the device must be open for writing (the kernel checks).
    unsafe { blk_discard(f.as_raw_fd(), &range) }.map_err(errno)?;
    Ok(())
}

/// Zeroes `len` bytes at `start` of the block device open on `f` (`BLKZEROOUT`): with the
/// device's WRITE ZEROES command when it has one, else the kernel writes zero pages. Afterwards
/// the range reads as zeros.
pub fn zero_out(f: &impl AsRawFd, start: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [start, len];
    // SAFETY: BLKZEROOUT reads two u64 (start, length) through the pointer, which points to a
    // live local; the device must be open for writing (the kernel checks).
    unsafe { blk_zeroout(f.as_raw_fd(), &range) }.map_err(errno)?;
    Ok(())
}

/// Starts writeback of the dirty pages of `len` bytes at `start` of the file open on `f`
/// without waiting for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): a long write then reaches
/// the disk while it goes on, instead of all at its closing fsync. Advisory: some filesystems
/// (FUSE, network ones) answer EINVAL or ENOSYS, which callers may ignore.
pub fn start_writeback(f: &impl AsRawFd, start: u64, len: u64) -> io::Result<()> {
    // SAFETY: sync_file_range only reads its integer arguments; `f` is an open descriptor for
    // the duration of the call.
    let rc = unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            start as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
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

// ---- Pass-through commands for drive health (SMART) ----

/// `struct sg_io_hdr` from <scsi/sg.h> (interface 'S'), the argument of SG_IO.
#[repr(C)]
struct SgIoHdr {
    interface_id: libc::c_int,
    dxfer_direction: libc::c_int,
    cmd_len: libc::c_uchar,
    mx_sb_len: libc::c_uchar,
    iovec_count: libc::c_ushort,
    dxfer_len: libc::c_uint,
    dxferp: *mut libc::c_void,
    cmdp: *const libc::c_uchar,
    sbp: *mut libc::c_uchar,
    timeout: libc::c_uint,
    flags: libc::c_uint,
    pack_id: libc::c_int,
    usr_ptr: *mut libc::c_void,
    status: libc::c_uchar,
    masked_status: libc::c_uchar,
    msg_status: libc::c_uchar,
    sb_len_wr: libc::c_uchar,
    host_status: libc::c_ushort,
    driver_status: libc::c_ushort,
    resid: libc::c_int,
    duration: libc::c_uint,
    info: libc::c_uint,
}

// SG_IO = 0x2285 (<scsi/sg.h>); SG_DXFER_FROM_DEV = -3.
nix::ioctl_readwrite_bad!(sg_io, 0x2285, SgIoHdr);
const SG_DXFER_FROM_DEV: libc::c_int = -3;

/// What a SCSI command sent with [`scsi_read`] came back with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScsiOutcome {
    /// SCSI status (0 GOOD, 2 CHECK CONDITION).
    pub status: u8,
    /// Host adapter status (3 = DID_TIME_OUT).
    pub host_status: u16,
    /// Driver status (low nibble 6 = DRIVER_TIMEOUT).
    pub driver_status: u16,
    /// The sense data the device returned (empty when none).
    pub sense: Vec<u8>,
    /// Bytes requested but not transferred.
    pub resid: i32,
}

/// Sends one SCSI command (`cdb`) that reads `buf.len()` bytes from the device open on `f`
/// (SG_IO on the block device: works on sd disks, libata translates ATA PASS-THROUGH).
/// `timeout_ms` bounds the command in the kernel. Errors are the ioctl's own (ENOTTY: the
/// device takes no SCSI commands; EPERM: needs CAP_SYS_RAWIO).
pub fn scsi_read(
    f: &impl AsRawFd,
    cdb: &[u8],
    buf: &mut [u8],
    timeout_ms: u32,
) -> io::Result<ScsiOutcome> {
    let mut sense = [0u8; 64];
    let mut hdr = SgIoHdr {
        interface_id: b'S' as libc::c_int,
        dxfer_direction: SG_DXFER_FROM_DEV,
        cmd_len: cdb.len() as libc::c_uchar,
        mx_sb_len: sense.len() as libc::c_uchar,
        iovec_count: 0,
        dxfer_len: buf.len() as libc::c_uint,
        dxferp: buf.as_mut_ptr().cast(),
        cmdp: cdb.as_ptr(),
        sbp: sense.as_mut_ptr(),
        timeout: timeout_ms,
        flags: 0,
        pack_id: 0,
        usr_ptr: std::ptr::null_mut(),
        status: 0,
        masked_status: 0,
        msg_status: 0,
        sb_len_wr: 0,
        host_status: 0,
        driver_status: 0,
        resid: 0,
        duration: 0,
        info: 0,
    };
    // SAFETY: every pointer in `hdr` points to a live buffer of the stated length (`cdb`,
    // `buf`, `sense`) that outlives the call; SG_IO is synchronous, so the kernel no longer
    // touches them when it returns, and it writes only the output fields of `hdr`.
    unsafe { sg_io(f.as_raw_fd(), &mut hdr) }.map_err(errno)?;
    let n = usize::from(hdr.sb_len_wr).min(sense.len());
    Ok(ScsiOutcome {
        status: hdr.status,
        host_status: hdr.host_status,
        driver_status: hdr.driver_status,
        sense: sense[..n].to_vec(),
        resid: hdr.resid,
    })
}

/// `struct nvme_passthru_cmd` (= `nvme_admin_cmd`) from <linux/nvme_ioctl.h>, 72 bytes.
#[repr(C)]
pub struct NvmePassthruCmd {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    result: u32,
}

// NVME_IOCTL_ADMIN_CMD = _IOWR('N', 0x41, struct nvme_admin_cmd).
nix::ioctl_readwrite!(nvme_ioctl_admin_cmd, b'N', 0x41, NvmePassthruCmd);

/// Sends one NVMe admin command that reads `buf.len()` bytes (e.g. Get Log Page) to the
/// controller of the device open on `f` (a namespace block device works). Returns the NVMe
/// status field (0 = success); errors are the ioctl's own (ENOTTY: not NVMe; EACCES: needs
/// CAP_SYS_ADMIN).
pub fn nvme_admin_read(
    f: &impl AsRawFd,
    opcode: u8,
    nsid: u32,
    cdw10: u32,
    cdw11: u32,
    buf: &mut [u8],
    timeout_ms: u32,
) -> io::Result<u32> {
    let mut cmd = NvmePassthruCmd {
        opcode,
        flags: 0,
        rsvd1: 0,
        nsid,
        cdw2: 0,
        cdw3: 0,
        metadata: 0,
        addr: buf.as_mut_ptr() as u64,
        metadata_len: 0,
        data_len: buf.len() as u32,
        cdw10,
        cdw11,
        cdw12: 0,
        cdw13: 0,
        cdw14: 0,
        cdw15: 0,
        timeout_ms,
        result: 0,
    };
    // SAFETY: `addr`/`data_len` describe `buf`, which is live and writable for the whole
    // (synchronous) call; no metadata buffer is passed; the kernel writes only `result` in `cmd`.
    let rc = unsafe { nvme_ioctl_admin_cmd(f.as_raw_fd(), &mut cmd) }.map_err(errno)?;
    Ok(rc as u32)
}

/// Puts the calling thread in the kernel's idle scheduling class (`SCHED_IDLE`): it runs only
/// on CPU time no other thread wants, so background work beside a job never slows the job.
pub fn idle_priority_this_thread() -> io::Result<()> {
    // SAFETY: sched_param is plain integers (its fields differ between libcs), so all zeros is
    // a valid value: priority 0, the one SCHED_IDLE takes; sched_setscheduler reads it through
    // the pointer, which points to a live local; pid 0 is the calling thread.
    let rc = unsafe {
        let p: libc::sched_param = std::mem::zeroed();
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &p)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pass_through_structs_match_the_kernel_abi() {
        // sizeof(struct sg_io_hdr) on 64-bit Linux is 88; struct nvme_passthru_cmd is 72.
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<super::SgIoHdr>(), 88);
        assert_eq!(std::mem::size_of::<super::NvmePassthruCmd>(), 72);
    }
}
