//! The only place the network code talks to the kernel through `unsafe` ioctls: an interface's
//! flags (up), its IPv4 address and netmask (`SIOCSIFADDR`, `SIOCSIFNETMASK`) and a default route
//! (`SIOCADDRT`). Each wrapper is a small, documented `unsafe` call on structures laid out as
//! `<linux/if.h>` and `<linux/route.h>` define them (their sizes are tested); everything above
//! it is safe Rust. Socket options (`SO_BINDTODEVICE`, `SO_BROADCAST`) go through nix's safe
//! wrappers and live in the DHCP transport.
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

/// `struct ifreq`: the interface name and a 24-byte union, used here as flags (a short at
/// offset 0) or a `struct sockaddr_in` (family, port, address).
#[repr(C)]
#[derive(Clone, Copy)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: [u8; 24],
}

/// `struct rtentry` from `<linux/route.h>` (only its routing fields are set).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

// From <linux/sockios.h>.
nix::ioctl_readwrite_bad!(siocgifflags, 0x8913, IfReq);
nix::ioctl_write_ptr_bad!(siocsifflags, 0x8914, IfReq);
nix::ioctl_write_ptr_bad!(siocsifaddr, 0x8916, IfReq);
nix::ioctl_write_ptr_bad!(siocsifnetmask, 0x891c, IfReq);
nix::ioctl_write_ptr_bad!(siocaddrt, 0x890b, RtEntry);

const RTF_UP: libc::c_ushort = 0x0001;
const RTF_GATEWAY: libc::c_ushort = 0x0002;

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// A socket to issue interface ioctls on (any AF_INET socket will do).
fn ctl_socket() -> io::Result<OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(errno)
}

fn ifreq(name: &str) -> io::Result<IfReq> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= libc::IFNAMSIZ || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name"),
        ));
    }
    let mut r = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: [0; 24],
    };
    for (d, s) in r.name.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    Ok(r)
}

/// The bytes of a `struct sockaddr_in` for `a` (port 0), as the first 16 bytes of a union.
fn sockaddr_in_bytes(a: Ipv4Addr) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    v[4..8].copy_from_slice(&a.octets());
    v
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let b = sockaddr_in_bytes(a);
    let mut s = libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data: [0; 14],
    };
    for (d, v) in s.sa_data.iter_mut().zip(&b[2..]) {
        *d = *v as libc::c_char;
    }
    s
}

/// Sets `IFF_UP` on interface `name` (the driver then starts negotiating a link).
pub fn set_up(name: &str) -> io::Result<()> {
    let fd = ctl_socket()?;
    let mut r = ifreq(name)?;
    // SAFETY: SIOCGIFFLAGS reads and writes one `struct ifreq`, which `r` is (size tested), a live local.
    unsafe { siocgifflags(fd.as_raw_fd(), &mut r) }.map_err(errno)?;
    let flags = i16::from_ne_bytes([r.data[0], r.data[1]]) | libc::IFF_UP as i16;
    r.data[..2].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: SIOCSIFFLAGS reads one `struct ifreq` through the pointer, a live local.
    unsafe { siocsifflags(fd.as_raw_fd(), &r) }.map_err(errno)?;
    Ok(())
}

/// Gives interface `name` the IPv4 address `addr` with netmask `mask`.
pub fn set_addr(name: &str, addr: Ipv4Addr, mask: Ipv4Addr) -> io::Result<()> {
    let fd = ctl_socket()?;
    let mut r = ifreq(name)?;
    r.data[..16].copy_from_slice(&sockaddr_in_bytes(addr));
    // SAFETY: SIOCSIFADDR reads one `struct ifreq` through the pointer, a live local.
    unsafe { siocsifaddr(fd.as_raw_fd(), &r) }.map_err(errno)?;
    let mut m = ifreq(name)?;
    m.data[..16].copy_from_slice(&sockaddr_in_bytes(mask));
    // SAFETY: SIOCSIFNETMASK reads one `struct ifreq` through the pointer, a live local.
    unsafe { siocsifnetmask(fd.as_raw_fd(), &m) }.map_err(errno)?;
    Ok(())
}

/// Removes interface `name`'s IPv4 address (SIOCSIFADDR with 0.0.0.0: the kernel deletes the
/// address and inserts none; with the last address gone, the routes through the interface go
/// too). Used before the console gives an interface another address.
pub fn clear_addr(name: &str) -> io::Result<()> {
    let fd = ctl_socket()?;
    let mut r = ifreq(name)?;
    r.data[..16].copy_from_slice(&sockaddr_in_bytes(Ipv4Addr::UNSPECIFIED));
    // SAFETY: SIOCSIFADDR reads one `struct ifreq` through the pointer, a live local.
    match unsafe { siocsifaddr(fd.as_raw_fd(), &r) } {
        Ok(_) | Err(nix::Error::EADDRNOTAVAIL) => Ok(()),
        Err(e) => Err(errno(e)),
    }
}

/// Adds the default route through `gateway` on interface `name` (an existing equal route is fine).
pub fn add_default_route(name: &str, gateway: Ipv4Addr) -> io::Result<()> {
    let fd = ctl_socket()?;
    let mut dev: Vec<libc::c_char> = ifreq(name)?.name.to_vec();
    dev.push(0);
    let rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr(gateway),
        rt_genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_flags: RTF_UP | RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: dev.as_mut_ptr(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: SIOCADDRT reads one `struct rtentry` (size tested) through the pointer, a live
    // local; its `rt_dev` points to `dev`, a NUL-terminated name that outlives the call.
    match unsafe { siocaddrt(fd.as_raw_fd(), &rt) } {
        Ok(_) | Err(nix::Error::EEXIST) => Ok(()),
        Err(e) => Err(errno(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structures_have_the_kernels_sizes() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
    }

    #[test]
    fn sockaddr_in_layout() {
        let b = sockaddr_in_bytes(Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), libc::AF_INET as u16);
        assert_eq!(&b[2..4], &[0, 0]);
        assert_eq!(&b[4..8], &[10, 0, 2, 15]);
        let s = sockaddr(Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(s.sa_family, libc::AF_INET as libc::sa_family_t);
        assert_eq!(s.sa_data[2] as u8, 192);
        assert_eq!(s.sa_data[5] as u8, 1);
    }

    #[test]
    fn bad_interface_names_are_refused() {
        assert!(ifreq("").is_err());
        assert!(ifreq("a-name-longer-than-15").is_err());
        assert!(ifreq("eth0").is_ok());
    }
}
