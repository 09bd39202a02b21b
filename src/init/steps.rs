//! The boot steps PID 1 runs in order, as a table: each has a name and says what it does; a
//! failed step is logged and the boot goes on.
use super::{console, modules, uevent};
use crate::error::{Error, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// What the steps share.
pub struct Boot {
    pub params: super::cmdline::Params,
    pub loader: Option<&'static modules::Loader>,
    pub started: Instant,
}

/// One boot step.
pub struct Step {
    pub name: &'static str,
    pub what: &'static str,
    pub run: fn(&mut Boot) -> Result<String>,
}

/// The boot, in order.
pub const STEPS: &[Step] = &[
    Step {
        name: "proc",
        what: "mount proc on /proc",
        run: |_| mount("proc", "/proc", "proc", ""),
    },
    Step {
        name: "sys",
        what: "mount sysfs on /sys",
        run: |_| mount("sysfs", "/sys", "sysfs", ""),
    },
    Step {
        name: "dev",
        what: "mount devtmpfs on /dev",
        run: |_| mount("devtmpfs", "/dev", "devtmpfs", "mode=0755"),
    },
    Step {
        name: "devpts",
        what: "mount devpts on /dev/pts",
        run: |_| {
            mount(
                "devpts",
                "/dev/pts",
                "devpts",
                "gid=5,mode=620,ptmxmode=000",
            )
        },
    },
    Step {
        name: "shm",
        what: "mount a tmpfs on /dev/shm",
        run: |_| mount("tmpfs", "/dev/shm", "tmpfs", "mode=1777"),
    },
    Step {
        name: "run",
        what: "mount a tmpfs on /run",
        run: |_| mount("tmpfs", "/run", "tmpfs", "mode=0755"),
    },
    Step {
        name: "tmp",
        what: "mount a tmpfs on /tmp",
        run: |_| mount("tmpfs", "/tmp", "tmpfs", "mode=1777"),
    },
    Step {
        name: "dev-links",
        what: "create /dev/fd, /dev/stdin, /dev/stdout, /dev/stderr",
        run: |_| dev_links(),
    },
    Step {
        name: "params",
        what: "read the kernel command line",
        run: read_params,
    },
    Step {
        name: "loglevel",
        what: "lower the console log level so kernel messages do not break the screen",
        run: loglevel,
    },
    Step {
        name: "hostname",
        what: "set the host name",
        run: |_| write_file("/proc/sys/kernel/hostname", "lifeboat").map(|_| "lifeboat".into()),
    },
    Step {
        name: "command",
        what: "install /bin/lifeboat (the environment's command)",
        run: |_| install_command(),
    },
    Step {
        name: "reaper",
        what: "start the child reaper",
        run: |_| {
            super::reaper::start()
                .map(|_| String::new())
                .map_err(|e| Error::os("start the reaper thread", e))
        },
    },
    Step {
        name: "signals",
        what: "start the power signal handler (SIGUSR2 off, SIGTERM reboot)",
        run: |_| {
            super::power::start_signal_thread()
                .map(|_| String::new())
                .map_err(|e| Error::os("start the signal thread", e))
        },
    },
    Step {
        name: "modules",
        what: "read the kernel module indexes",
        run: read_modules,
    },
    Step {
        name: "modprobe",
        what: "answer the kernel's module requests (/sbin/modprobe is this binary)",
        run: |_| super::modprobe::install(),
    },
    Step {
        name: "fs-modules",
        what: "load the filesystem drivers of image stores in the background",
        run: start_fs_modules,
    },
    Step {
        name: "entropy",
        what: "initialise the kernel's random generator in the background",
        run: start_entropy,
    },
    Step {
        name: "uevents",
        what: "start the uevent listener (drivers for hot-plugged devices)",
        run: |b| uevent::start(b.loader).map(|_| String::new()),
    },
    Step {
        name: "coldplug",
        what: "load drivers for the hardware present",
        run: coldplug,
    },
    Step {
        name: "settle",
        what: "wait until disks stop appearing",
        run: settle,
    },
    Step {
        name: "module-params",
        what: "read back the module parameters given on the kernel command line",
        run: module_params,
    },
    Step {
        name: "power-button",
        what: "power off cleanly when the power button is pressed",
        run: |_| super::powerbutton::start(),
    },
];

/// Runs every step; panics and errors are logged, never fatal.
pub fn run_all(boot: &mut Boot) {
    for s in STEPS {
        let t = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (s.run)(boot)));
        let ms = t.elapsed().as_millis();
        match r {
            Ok(Ok(detail)) => {
                let d = if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                };
                console::kmsg(6, &format!("step {} ({}) ok in {ms} ms{d}", s.name, s.what));
            }
            Ok(Err(e)) => console::warn(&format!(
                "step {} ({}) failed: {e}; continuing",
                s.name, s.what
            )),
            Err(_) => console::warn(&format!(
                "step {} ({}) panicked; continuing",
                s.name, s.what
            )),
        }
    }
}

fn write_file(path: &str, s: &str) -> Result<()> {
    std::fs::write(path, s).map_err(|e| Error::io("write", path, e))
}

fn mount(src: &str, target: &str, fstype: &str, data: &str) -> Result<String> {
    use nix::mount::MsFlags;
    std::fs::create_dir_all(target).map_err(|e| Error::io("create the mount point", target, e))?;
    let flags = match fstype {
        "proc" | "sysfs" => MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        "devtmpfs" => MsFlags::MS_NOSUID,
        "devpts" => MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        _ => MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    };
    let data = if data.is_empty() { None } else { Some(data) };
    match nix::mount::mount(Some(src), target, Some(fstype), flags, data) {
        Ok(()) => Ok(String::new()),
        // Already mounted (e.g. the kernel mounted devtmpfs itself).
        Err(nix::errno::Errno::EBUSY) => Ok("already mounted".into()),
        Err(e) => Err(Error::io(&format!("mount {fstype}"), target, e.into())),
    }
}

fn dev_links() -> Result<String> {
    for (link, to) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        match std::os::unix::fs::symlink(to, link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create the symlink", link, e)),
        }
    }
    Ok(String::new())
}

fn read_params(b: &mut Boot) -> Result<String> {
    let c = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| Error::io("read", "/proc/cmdline", e))?;
    b.params = super::cmdline::Params::parse(&c);
    for w in &b.params.warnings {
        console::warn(&format!("kernel command line: {w}"));
    }
    Ok(c.trim().to_string())
}

fn loglevel(b: &mut Boot) -> Result<String> {
    if let Some(l) = b.params.loglevel {
        return Ok(format!("keeping loglevel={l} from the command line"));
    }
    // console_loglevel 1 (only emergencies), default message level 4, minimum 1, boot default 7.
    write_file("/proc/sys/kernel/printk", "1 4 1 7").map(|_| "1 4 1 7".into())
}

fn install_command() -> Result<String> {
    std::fs::create_dir_all("/bin").map_err(|e| Error::io("create", "/bin", e))?;
    match std::os::unix::fs::symlink("/init", "/bin/lifeboat") {
        Ok(()) => Ok(String::new()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(String::new()),
        Err(e) => Err(Error::io("create the symlink", "/bin/lifeboat", e)),
    }
}

fn read_modules(b: &mut Boot) -> Result<String> {
    let l = modules::Loader::system()?;
    b.loader = Some(l);
    Ok(format!(
        "{} modules, {} aliases in {}",
        l.index.deps.len(),
        l.index.aliases.len(),
        l.index.dir.display()
    ))
}

fn coldplug(b: &mut Boot) -> Result<String> {
    let l = b
        .loader
        .ok_or_else(|| Error::not_found("no module index; drivers not loaded"))?;
    let loaded = modules::coldplug(l, Path::new("/sys/devices"), 6);
    Ok(format!("{} modules: {}", loaded.len(), loaded.join(" ")))
}

/// Reads one byte of `/dev/random` in a thread of its own, so that the kernel's random
/// generator is initialised while the boot waits for disks to settle rather than in the first
/// job that asks for random bytes (an image's UUID, an encryption key, a DHCP transaction). On a
/// machine without a hardware random source (no RDRAND, no virtio-rng: old PCs, QEMU's default
/// CPU) the kernel then gathers timing jitter for a second or more (`try_to_generate_entropy`,
/// run by whoever waits: a read of `/dev/urandom` before that runs it too); doing it here takes
/// it off every job's clock. Never waited for: the boot goes on at once.
///
/// Started before the drivers' coldplug, in the idle scheduling class: the kernel's jitter loop
/// keeps its thread runnable, and beside the coldplug at normal priority it would slow the
/// drivers' loading down; idle, it uses the time the drivers wait (AHCI's port probes). A job
/// that asks for random bytes before it is done runs the loop itself, at the job's priority.
/// Skipped for a command that never asks ([`may_need_random`]): a clone on two emulated CPUs
/// lost CPU to it while it copied, once the settle no longer waited a second.
fn start_entropy(b: &mut Boot) -> Result<String> {
    if !may_need_random(b.params.run.as_deref()) {
        return Ok("not needed by the command".into());
    }
    let t0 = Instant::now();
    std::thread::Builder::new()
        .name("entropy".into())
        .spawn(move || {
            use std::io::Read;
            let _ = crate::io::sys::idle_priority_this_thread();
            let mut b = [0u8; 1];
            let r = std::fs::File::open("/dev/random").and_then(|mut f| f.read_exact(&mut b));
            let ms = t0.elapsed().as_millis();
            match r {
                Ok(()) => console::kmsg(
                    6,
                    &format!("the kernel's random generator was ready after {ms} ms"),
                ),
                Err(e) => {
                    console::kmsg(4, &format!("reading /dev/random failed after {ms} ms: {e}"))
                }
            }
        })
        .map(|_| String::new())
        .map_err(|e| Error::os("start the entropy thread", e))
}

/// The filesystems an image store on a local partition can have, whose kernel modules are
/// loaded in the background while the boot waits for the disks to settle (NTFS goes through
/// FUSE, loaded by `image::store_ntfs` when it is needed).
pub const STORE_FILESYSTEMS: &[&str] = &["ext4", "vfat", "exfat"];

/// Whether the unattended command `run` (`lifeboat.run`; None: the console, where any job may
/// be chosen) may mount an image store: the `image` commands.
pub fn may_mount_a_store(run: Option<&str>) -> bool {
    run.is_none_or(|r| r.split_whitespace().next() == Some("image"))
}

/// Whether the unattended command `run` (None: the console, where any job may be chosen) may
/// ask the kernel for random bytes: every command but a clone and the read-only listings (an
/// image's identifier and keys, a DHCP transaction, an S3 request all do).
pub fn may_need_random(run: Option<&str>) -> bool {
    !matches!(
        run.and_then(|r| r.split_whitespace().next()),
        Some("clone" | "list" | "health")
    )
}

/// Loads the modules of [`STORE_FILESYSTEMS`] in a thread of their own, so that mounting an
/// image store does not wait for them (under QEMU's TCG the ext4 module alone took ~1.1 s of
/// an image create's start; the settle that follows waits at least a second for nothing).
/// Started before the drivers' coldplug, on the other CPU beside it: started after it, beside
/// the settle and the entropy thread's jitter loop, the image create job still waited ~0.4 s
/// for ext4 at its mount (QEMU TCG, 2 vCPUs, `threadcpu` step marks).
/// Skipped for a command that mounts no store (clone, list). A job that mounts while a module
/// is still loading waits for it (`modules::load_fs_module`). Never waited for here.
fn start_fs_modules(b: &mut Boot) -> Result<String> {
    if !may_mount_a_store(b.params.run.as_deref()) {
        return Ok("not needed by the command".into());
    }
    let l = b
        .loader
        .ok_or_else(|| Error::not_found("no module index; filesystem drivers not loaded"))?;
    // Jobs wait while this marker exists instead of loading the same modules beside it.
    let marker = Path::new(modules::FS_MODULES_LOADING);
    if let Some(d) = marker.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let _ = std::fs::write(marker, b"");
    std::thread::Builder::new()
        .name("fs-modules".into())
        .spawn(move || {
            struct Done;
            impl Drop for Done {
                // Also when a load panics: a job must never wait for a thread that is gone.
                fn drop(&mut self) {
                    let _ = std::fs::remove_file(modules::FS_MODULES_LOADING);
                }
            }
            let _done = Done;
            let t0 = Instant::now();
            let mut done = Vec::new();
            for fs in STORE_FILESYSTEMS {
                match l.load_by_name(fs) {
                    Ok(v) => done.extend(v),
                    Err(e) => console::kmsg(4, &format!("filesystem module {fs}: {e}")),
                }
            }
            console::kmsg(
                6,
                &format!(
                    "filesystem modules loaded in the background in {} ms: {}",
                    t0.elapsed().as_millis(),
                    done.join(" ")
                ),
            );
        })
        .map(|_| STORE_FILESYSTEMS.join(" "))
        .map_err(|e| {
            let _ = std::fs::remove_file(marker);
            Error::os("start the filesystem module thread", e)
        })
}

/// Each `module.param=` of the command line read back from `/sys/module` once the drivers are
/// in, one console line each (a misspelt or unused one is seen, not silently ignored).
fn module_params(_: &mut Boot) -> Result<String> {
    let cmd = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| Error::io("read the kernel command line", "/proc/cmdline", e))?;
    let checks = super::modparams::check(&cmd, Path::new("/sys/module"));
    for c in &checks {
        console::log(&super::modparams::describe(c));
    }
    let ok = checks
        .iter()
        .filter(|c| c.state == super::modparams::State::InEffect)
        .count();
    Ok(format!("{ok} of {} in effect", checks.len()))
}

/// Whole disks and partitions the kernel has now.
fn block_count() -> usize {
    std::fs::read_dir("/sys/class/block")
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// A USB mass-storage interface whose disk has not shown up yet (usb-storage waits
/// `delay_use` seconds before scanning).
fn usb_storage_pending() -> bool {
    for drv in [
        "/sys/bus/usb/drivers/usb-storage",
        "/sys/bus/usb/drivers/uas",
    ] {
        let Ok(rd) = std::fs::read_dir(drv) else {
            continue;
        };
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if !n.contains(':') {
                continue;
            }
            let Ok(dir) = std::fs::canonicalize(e.path()) else {
                continue;
            };
            if !crate::devices::controllers::has_block_below(&dir, 8) {
                return true;
            }
        }
    }
    false
}

/// How long the disks must stay the same before the boot goes on, when a bus that finds its
/// disks late is there ([`late_disks_from`]).
const QUIET_LATE_BUS: Duration = Duration::from_millis(1000);
/// The same when every disk controller present finds its disks while its driver loads.
const QUIET: Duration = Duration::from_millis(300);

/// Storage drivers whose disks all exist when their module's init returns: the kernel waits for
/// the async probes a module's init schedules (`async_synchronize_full` in `do_init_module`),
/// and these find their disks there — AHCI and the PATA drivers probe their ports, virtio-blk
/// adds its disk in its probe (a virtio PCI function's driver is `virtio-pci`, its disk driver
/// then loads from the virtio device's own uevent). NVMe's namespace scan runs after the
/// controller is live: [`nvme_not_live`] waits for that, the quiet time for the scan.
const DISKS_AT_LOAD: &[&str] = &["ahci", "nvme", "virtio-pci", "ata_piix", "ata_generic"];

/// Why disks may still appear after the device storm has calmed, under `sys` (`/sys`): a USB
/// host (ports enumerate with debounce delays, usb-storage then waits `delay_use`), an SD/MMC
/// host, or a PCI disk controller whose driver finds disks later (SAS HBAs report devices from
/// firmware events). None when every controller present is in [`DISKS_AT_LOAD`].
fn late_disks_from(sys: &Path) -> Option<String> {
    let has_entries = |d: &str, prefix: &str| {
        std::fs::read_dir(sys.join(d)).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
        })
    };
    if has_entries("bus/usb/devices", "usb") {
        return Some("a USB host controller".into());
    }
    if has_entries("class/mmc_host", "mmc") {
        return Some("an SD/MMC host".into());
    }
    let rd = std::fs::read_dir(sys.join("bus/pci/devices")).ok()?;
    for e in rd.flatten() {
        let class = std::fs::read_to_string(e.path().join("class")).unwrap_or_default();
        let class = u32::from_str_radix(class.trim().trim_start_matches("0x"), 16).unwrap_or(0);
        if class >> 16 != 0x01 {
            continue;
        }
        // Unbound: it gives no disk at all (the Disks screen says so), now or later.
        let Ok(drv) = std::fs::read_link(e.path().join("driver")) else {
            continue;
        };
        let drv = drv
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !DISKS_AT_LOAD.contains(&drv.as_str()) {
            return Some(format!(
                "{} (driver {drv})",
                e.file_name().to_string_lossy()
            ));
        }
    }
    None
}

/// An NVMe controller under `sys` that is not live yet (resetting, connecting): its namespaces
/// are scanned only once it is.
fn nvme_not_live(sys: &Path) -> bool {
    std::fs::read_dir(sys.join("class/nvme")).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            std::fs::read_to_string(e.path().join("state")).is_ok_and(|s| {
                let s = s.trim();
                s != "live" && s != "dead" && s != "deleting"
            })
        })
    })
}

fn settle(b: &mut Boot) -> Result<String> {
    let max = Duration::from_secs(b.params.settle.unwrap_or(15));
    let sys = Path::new("/sys");
    let late = late_disks_from(sys);
    let quiet = if late.is_some() {
        QUIET_LATE_BUS
    } else {
        QUIET
    };
    let t0 = Instant::now();
    let snap = || {
        (
            uevent::EVENTS.load(std::sync::atomic::Ordering::SeqCst),
            block_count(),
        )
    };
    let mut last = snap();
    let mut last_change = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = snap();
        let busy = uevent::BUSY.load(std::sync::atomic::Ordering::SeqCst) > 0
            || usb_storage_pending()
            || nvme_not_live(sys);
        if now != last || busy {
            last = now;
            last_change = Instant::now();
        }
        if last_change.elapsed() >= quiet {
            return Ok(format!(
                "{} block devices after {} ms (quiet for {} ms{})",
                now.1,
                t0.elapsed().as_millis(),
                quiet.as_millis(),
                late.as_ref()
                    .map(|w| format!(": disks may come late from {w}"))
                    .unwrap_or_default()
            ));
        }
        if t0.elapsed() >= max {
            console::warn(&format!(
                "devices still appearing after {} s; going on (lifeboat.settle=SECS waits longer)",
                max.as_secs()
            ));
            return Ok(format!("{} block devices (gave up waiting)", now.1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn steps_are_named_and_described() {
        let mut names = std::collections::HashSet::new();
        for s in STEPS {
            assert!(!s.name.is_empty() && !s.what.is_empty());
            assert!(names.insert(s.name), "duplicate step {}", s.name);
        }
        let pos = |n: &str| STEPS.iter().position(|s| s.name == n).unwrap();
        assert!(pos("proc") < pos("params"));
        assert!(
            pos("uevents") < pos("coldplug"),
            "listen before coldplug so nothing is missed"
        );
        assert!(pos("coldplug") < pos("settle"));
        assert!(
            pos("entropy") < pos("coldplug"),
            "the random generator starts while the drivers load and the boot waits, not after"
        );
        assert!(
            pos("modprobe") < pos("fs-modules") && pos("fs-modules") < pos("coldplug"),
            "the filesystem modules load beside the drivers and the settle (their own \
             module requests find /sbin/modprobe)"
        );
        assert!(
            pos("settle") < pos("module-params"),
            "read back once the drivers are in"
        );
        assert!(
            pos("proc") < pos("modprobe") && pos("modprobe") < pos("coldplug"),
            "the kernel's own module requests during coldplug find /sbin/modprobe"
        );
    }

    /// A fake `/sys` with PCI functions (class, driver) and the given extra directories.
    fn fake_sys(name: &str, pci: &[(&str, &str, Option<&str>)], dirs: &[&str]) -> PathBuf {
        let t = std::env::temp_dir().join(format!("lb-settle-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        for (addr, class, drv) in pci {
            let d = t.join("bus/pci/devices").join(addr);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("class"), format!("{class}\n")).unwrap();
            if let Some(drv) = drv {
                let target = t.join("bus/pci/drivers").join(drv);
                std::fs::create_dir_all(&target).unwrap();
                std::os::unix::fs::symlink(&target, d.join("driver")).unwrap();
            }
        }
        for d in dirs {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        t
    }

    #[test]
    fn the_quiet_time_is_short_only_when_no_controller_finds_disks_late() {
        // QEMU's q35 with virtio-blk and NVMe, as the CI pipelines boot it.
        let vm = fake_sys(
            "vm",
            &[
                ("0000:00:1f.2", "0x010601", Some("ahci")),
                ("0000:00:02.0", "0x010000", Some("virtio-pci")),
                ("0000:00:03.0", "0x010802", Some("nvme")),
                ("0000:00:1f.3", "0x0c0500", Some("i801_smbus")),
                // A RAID controller nothing drives gives no disk, now or later.
                ("0000:00:05.0", "0x010400", None),
            ],
            &["class/nvme/nvme0"],
        );
        assert_eq!(late_disks_from(&vm), None);
        // A PC: USB is there.
        let pc = fake_sys(
            "pc",
            &[("0000:00:17.0", "0x010601", Some("ahci"))],
            &["bus/usb/devices/usb1", "bus/usb/devices/1-0:1.0"],
        );
        assert!(late_disks_from(&pc).unwrap().contains("USB"));
        // A SAS HBA reports its disks from firmware events.
        let sas = fake_sys("sas", &[("0000:00:04.0", "0x010700", Some("mpt3sas"))], &[]);
        assert!(late_disks_from(&sas).unwrap().contains("mpt3sas"));
        let mmc = fake_sys("mmc", &[], &["class/mmc_host/mmc0"]);
        assert!(late_disks_from(&mmc).unwrap().contains("SD/MMC"));
        for t in [vm, pc, sas, mmc] {
            std::fs::remove_dir_all(t).unwrap();
        }
    }

    #[test]
    fn an_nvme_controller_not_yet_live_holds_the_settle() {
        let t = fake_sys("nvme", &[], &["class/nvme/nvme0", "class/nvme/nvme1"]);
        std::fs::write(t.join("class/nvme/nvme0/state"), "live\n").unwrap();
        std::fs::write(t.join("class/nvme/nvme1/state"), "connecting\n").unwrap();
        assert!(nvme_not_live(&t));
        std::fs::write(t.join("class/nvme/nvme1/state"), "live\n").unwrap();
        assert!(!nvme_not_live(&t));
        // A controller that failed never gets namespaces: no reason to wait for it.
        std::fs::write(t.join("class/nvme/nvme1/state"), "dead\n").unwrap();
        assert!(!nvme_not_live(&t));
        std::fs::remove_dir_all(t).unwrap();
        assert!(!nvme_not_live(Path::new("/nonexistent-sys")));
    }

    #[test]
    fn random_warmed_up_only_for_commands_that_may_ask() {
        assert!(may_need_random(None));
        assert!(may_need_random(Some(
            "image create serial=A label=S:/b.lbi"
        )));
        assert!(may_need_random(Some("net up")));
        assert!(!may_need_random(Some(
            "clone serial=A serial=B --yes --json"
        )));
        assert!(!may_need_random(Some(" list --json")));
        assert!(!may_need_random(Some("health serial=A")));
    }

    #[test]
    fn store_modules_only_for_commands_that_may_mount_one() {
        assert!(may_mount_a_store(None));
        assert!(may_mount_a_store(Some(
            "image create serial=A label=S:/b.lbi --json"
        )));
        assert!(may_mount_a_store(Some("  image restore x y")));
        assert!(!may_mount_a_store(Some("clone serial=A serial=B --yes")));
        assert!(!may_mount_a_store(Some("list --json")));
        assert!(!may_mount_a_store(Some("imagex")));
    }

    #[test]
    fn block_below_search() {
        let t = std::env::temp_dir().join(format!("lb-blk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(t.join("1-1:1.0/host0/target0:0:0/0:0:0:0")).unwrap();
        assert!(!crate::devices::controllers::has_block_below(
            &t.join("1-1:1.0"),
            8
        ));
        std::fs::create_dir_all(t.join("1-1:1.0/host0/target0:0:0/0:0:0:0/block/sda")).unwrap();
        assert!(crate::devices::controllers::has_block_below(
            &t.join("1-1:1.0"),
            8
        ));
        assert!(!crate::devices::controllers::has_block_below(
            &t.join("1-1:1.0"),
            2
        ));
        std::fs::remove_dir_all(&t).unwrap();
    }
}
