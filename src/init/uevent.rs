//! Kernel uevents (netlink `NETLINK_KOBJECT_UEVENT`): a listener thread that loads the driver of
//! every device added after boot (a USB disk plugged in later), logs disks coming and going, and
//! counts events so the boot can wait for the device storm to settle.
use super::console;
use super::modules::Loader;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// One kernel event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub env: HashMap<String, String>,
}

impl Uevent {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.env.get(k).map(String::as_str)
    }
}

/// Parses a kernel uevent datagram: `action@devpath\0KEY=VALUE\0...`. Messages from udev
/// (`libudev\0` header) and malformed ones give None.
pub fn parse(buf: &[u8]) -> Option<Uevent> {
    let mut parts = buf.split(|&b| b == 0).filter(|p| !p.is_empty());
    let head = std::str::from_utf8(parts.next()?).ok()?;
    let (action, devpath) = head.split_once('@')?;
    let mut env = HashMap::new();
    for p in parts {
        let s = String::from_utf8_lossy(p);
        if let Some((k, v)) = s.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
    Some(Uevent {
        action: env
            .get("ACTION")
            .cloned()
            .unwrap_or_else(|| action.to_string()),
        devpath: env
            .get("DEVPATH")
            .cloned()
            .unwrap_or_else(|| devpath.to_string()),
        env,
    })
}

/// Events received so far.
pub static EVENTS: AtomicU64 = AtomicU64::new(0);
/// Events being handled right now (a module load in progress).
pub static BUSY: AtomicUsize = AtomicUsize::new(0);
/// Set once the boot has settled: disks that come and go are then announced.
pub static BOOTED: AtomicBool = AtomicBool::new(false);

/// Whether an event says devices are still appearing (what the boot's settle waits out): every
/// event but a kernel module's own (`SUBSYSTEM=module`: a module loaded or removed), so the
/// filesystem modules loaded in the background during the settle do not prolong it.
pub fn counts_for_settle(ev: &Uevent) -> bool {
    ev.get("SUBSYSTEM") != Some("module")
}

/// Handles one event: loads drivers for `add` with a MODALIAS, logs whole disks.
pub fn handle(loader: Option<&Loader>, ev: &Uevent) {
    if ev.action == "add" {
        if let (Some(l), Some(alias)) = (loader, ev.get("MODALIAS")) {
            let loaded = l.load_for_alias(alias);
            if !loaded.is_empty() {
                console::kmsg(
                    6,
                    &format!("uevent {}: loaded {}", ev.devpath, loaded.join(" ")),
                );
            }
        }
    }
    if ev.get("SUBSYSTEM") == Some("block") && ev.get("DEVTYPE") == Some("disk") {
        let name = ev.get("DEVNAME").unwrap_or("?");
        let msg = match ev.action.as_str() {
            "add" => format!("hotplug: disk {name} added ({})", ev.devpath),
            "remove" => format!("hotplug: disk {name} removed"),
            _ => return,
        };
        if BOOTED.load(Ordering::SeqCst) {
            console::log(&msg);
        } else {
            console::kmsg(6, &msg);
        }
    }
}

/// Opens the netlink socket and starts the listener thread.
pub fn start(loader: Option<&'static Loader>) -> crate::Result<()> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag, SockProtocol,
        SockType,
    };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .map_err(|e| crate::Error::os("open the uevent (netlink) socket", e.into()))?;
    // A boot on a big machine sends thousands of events at once: a large buffer avoids ENOBUFS.
    if setsockopt(&fd, sockopt::RcvBufForce, &(8 << 20)).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &(8 << 20));
    }
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &NetlinkAddr::new(0, 1),
    )
    .map_err(|e| crate::Error::os("bind the uevent (netlink) socket", e.into()))?;
    std::thread::Builder::new()
        .name("uevent".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    match nix::sys::socket::recv(
                        std::os::fd::AsRawFd::as_raw_fd(&fd),
                        &mut buf,
                        nix::sys::socket::MsgFlags::empty(),
                    ) {
                        Ok(n) => {
                            let ev = parse(&buf[..n]);
                            if ev.as_ref().is_none_or(counts_for_settle) {
                                EVENTS.fetch_add(1, Ordering::SeqCst);
                            }
                            if let Some(ev) = ev {
                                BUSY.fetch_add(1, Ordering::SeqCst);
                                handle(loader, &ev);
                                BUSY.fetch_sub(1, Ordering::SeqCst);
                            }
                        }
                        Err(nix::errno::Errno::ENOBUFS) => {
                            // Events were lost: catch up by scanning every device again.
                            console::kmsg(4, "uevent queue overflowed; rescanning devices");
                            if let Some(l) = loader {
                                BUSY.fetch_add(1, Ordering::SeqCst);
                                super::modules::coldplug(
                                    l,
                                    std::path::Path::new("/sys/devices"),
                                    3,
                                );
                                BUSY.fetch_sub(1, Ordering::SeqCst);
                            }
                        }
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }));
                if r.is_err() {
                    BUSY.store(0, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .map_err(|e| crate::Error::os("start the uevent thread", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_messages() {
        let m = b"add@/devices/pci0000:00/0000:00:04.0/usb1/1-1\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:04.0/usb1/1-1\0SUBSYSTEM=usb\0MODALIAS=usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00\0SEQNUM=1234\0";
        let ev = parse(m).unwrap();
        assert_eq!(ev.action, "add");
        assert_eq!(ev.devpath, "/devices/pci0000:00/0000:00:04.0/usb1/1-1");
        assert_eq!(ev.get("SUBSYSTEM"), Some("usb"));
        assert_eq!(
            ev.get("MODALIAS"),
            Some("usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00")
        );
        assert_eq!(ev.get("SEQNUM"), Some("1234"));
        assert!(parse(b"").is_none());
        assert!(parse(b"garbage\0A=b\0").is_none());
        let bare = parse(b"remove@/devices/x").unwrap();
        assert_eq!(bare.action, "remove");
        assert_eq!(bare.devpath, "/devices/x");
    }

    #[test]
    fn module_events_do_not_hold_up_the_settle() {
        assert!(counts_for_settle(
            &parse(b"add@/devices/pci0000:00/0000:00:03.0/nvme/nvme0/nvme0n1\0SUBSYSTEM=block\0")
                .unwrap()
        ));
        assert!(!counts_for_settle(
            &parse(b"add@/module/ext4\0ACTION=add\0DEVPATH=/module/ext4\0SUBSYSTEM=module\0")
                .unwrap()
        ));
        assert!(counts_for_settle(&parse(b"add@/devices/x").unwrap()));
    }
}
