//! The kernel's NBD client (`/dev/nbdN`, module `nbd`) driven through its ioctls: hand it one
//! end of a connected socket whose other end a server in this process answers, give it the
//! size and flags, and run it (`NBD_DO_IT` blocks until it is disconnected). The ioctl numbers
//! are `_IO(0xab, n)` from `<linux/nbd.h>`. Each wrapper is a small, documented `unsafe` call.
use std::io;
use std::os::fd::AsRawFd;

nix::ioctl_write_int_bad!(nbd_set_sock, 0xab00);
nix::ioctl_write_int_bad!(nbd_set_blksize, 0xab01);
nix::ioctl_none_bad!(nbd_do_it, 0xab03);
nix::ioctl_none_bad!(nbd_clear_sock, 0xab04);
nix::ioctl_write_int_bad!(nbd_set_size_blocks, 0xab07);
nix::ioctl_none_bad!(nbd_disconnect, 0xab08);
nix::ioctl_write_int_bad!(nbd_set_timeout, 0xab09);
nix::ioctl_write_int_bad!(nbd_set_flags, 0xab0a);

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Configures the NBD device open on `dev` to talk over `sock` (a connected stream socket) to
/// an export of `blocks` blocks of `block_size` bytes with the transmission `flags`.
pub fn configure(
    dev: &impl AsRawFd,
    sock: &impl AsRawFd,
    block_size: u32,
    blocks: u64,
    flags: u16,
    timeout_secs: u32,
) -> io::Result<()> {
    let d = dev.as_raw_fd();
    // SAFETY: these NBD ioctls take their argument by value (an fd or a number); `d` is an
    // open /dev/nbdN and `sock` an open socket for the duration of the calls.
    unsafe {
        nbd_clear_sock(d).map_err(errno)?;
        nbd_set_blksize(d, block_size as _).map_err(errno)?;
        nbd_set_size_blocks(d, blocks as _).map_err(errno)?;
        nbd_set_flags(d, flags as _).map_err(errno)?;
        nbd_set_timeout(d, timeout_secs as _).map_err(errno)?;
        nbd_set_sock(d, sock.as_raw_fd() as _).map_err(errno)?;
    }
    Ok(())
}

/// Runs the device: returns when it is disconnected ([`disconnect`] from another thread or
/// process, or the socket closed).
pub fn run(dev: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: NBD_DO_IT takes no argument; `dev` is an open, configured /dev/nbdN.
    unsafe { nbd_do_it(dev.as_raw_fd()) }.map_err(errno)?;
    Ok(())
}

/// Asks a running device to disconnect (its `run` returns), then forgets its socket.
pub fn disconnect(dev: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: NBD_DISCONNECT and NBD_CLEAR_SOCK take no argument; `dev` is an open /dev/nbdN.
    unsafe {
        nbd_disconnect(dev.as_raw_fd()).map_err(errno)?;
        let _ = nbd_clear_sock(dev.as_raw_fd());
    }
    Ok(())
}
