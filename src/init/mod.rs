//! PID 1: brings the machine up (mounts, drivers, devices), runs an unattended job from the
//! kernel command line or starts the UI, reaps orphans, and powers off or reboots on request.
//! It never exits and never lets a panic end it: every part runs under `catch_unwind`.
pub mod cmdline;
pub mod console;
pub mod modparams;
pub mod modprobe;
pub mod modules;
pub mod power;
pub mod powerbutton;
pub mod reaper;
pub mod runner;
pub mod steps;
pub mod supervisor;
pub mod uevent;

use cmdline::{Params, Then};
use std::time::{Duration, Instant};

/// Logs panics to the kernel log and the consoles (the default hook's stderr may be nowhere).
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current().name().unwrap_or("?").to_string();
        console::alert(&format!("PID 1 caught a panic in thread {thread}: {info}"));
    }));
}

/// Milliseconds since the kernel started (from /proc/uptime), or since PID 1 started.
fn boot_ms(started: Instant) -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or_else(|| started.elapsed().as_millis() as u64)
}

/// The `LIFEBOAT-READY` JSON.
pub fn ready_json(
    boot_ms: u64,
    disks: &[crate::devices::Disk],
    consoles: &[console::Console],
) -> serde_json::Value {
    let boot_media =
        crate::devices::bootmedia::detect_in(disks).map(|b| b.serial.unwrap_or(b.disk));
    ready_fields(boot_ms, disks, boot_media, consoles)
}

fn ready_fields(
    boot_ms: u64,
    disks: &[crate::devices::Disk],
    boot_media: Option<String>,
    consoles: &[console::Console],
) -> serde_json::Value {
    serde_json::json!({
        "version": crate::VERSION,
        "boot_ms": boot_ms,
        "devices": disks.len(),
        "disks": disks.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
        "boot_media": boot_media,
        "consoles": consoles.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
    })
}

/// The READY JSON under its own panic guard: a disk scan (or boot-medium probe) that fails or
/// panics is reported through `warn` and counts as no disks, so READY is still announced and
/// the consoles still get their UI.
fn ready_guarded(
    boot_ms: u64,
    consoles: &[console::Console],
    scan: &dyn Fn() -> crate::Result<Vec<crate::devices::Disk>>,
    warn: &dyn Fn(&str),
) -> serde_json::Value {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let disks = scan().unwrap_or_else(|e| {
            warn(&format!("device scan failed: {e}"));
            Vec::new()
        });
        ready_json(boot_ms, &disks, consoles)
    }));
    r.unwrap_or_else(|_| {
        warn("the device scan panicked: READY lists no disks; the console starts anyway");
        ready_fields(boot_ms, &[], None, consoles)
    })
}

/// Waits until every `lifeboat.wait` selector names a present disk (or the timeout passes).
fn wait_for_disks(p: &Params) -> crate::Result<()> {
    if p.wait.is_empty() {
        return Ok(());
    }
    let timeout = Duration::from_secs(p.wait_timeout.unwrap_or(120));
    console::announce(&format!(
        "LIFEBOAT-WAITING {}",
        serde_json::json!({"selectors": p.wait, "timeout_s": timeout.as_secs()})
    ));
    let t0 = Instant::now();
    loop {
        let missing: Vec<&String> = p
            .wait
            .iter()
            .filter(|s| crate::devices::resolve(s).is_err())
            .collect();
        if missing.is_empty() {
            console::log(&format!(
                "waited {} ms for {}",
                t0.elapsed().as_millis(),
                p.wait.join(" ")
            ));
            return Ok(());
        }
        if t0.elapsed() >= timeout {
            let list = missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            return Err(crate::Error::not_found(format!(
                "lifeboat.wait: {list} did not appear within {} s; attach the disk or raise lifeboat.wait_timeout",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The interactive environment: READY on every console, a supervised UI on each.
fn interactive(p: &Params, started: Instant) {
    let consoles = console::active();
    let ready = ready_guarded(
        boot_ms(started),
        &consoles,
        &crate::devices::scan_system,
        &console::warn,
    );
    console::announce(&format!("LIFEBOAT-READY {ready}"));
    console::set_log_to_consoles(false);
    supervisor::start(&consoles, p.console);
}

fn unattended(p: &Params, args: &str) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match wait_for_disks(p) {
        Ok(()) => {
            runner::run_and_report(args);
        }
        Err(e) => {
            console::alert(&e.to_string());
            let o = runner::Outcome {
                exit_code: e.exit_code(),
                ..runner::Outcome::default()
            };
            let mut v = runner::result_json(args, &[], &o);
            v["output"] = runner::failure_output(args, &e);
            console::announce(&runner::result_line(&v));
        }
    }));
    if r.is_err() {
        console::alert("the unattended runner panicked");
    }
}

fn main_body(started: Instant) {
    let mut boot = steps::Boot {
        params: Params::default(),
        loader: None,
        started,
    };
    steps::run_all(&mut boot);
    uevent::BOOTED.store(true, std::sync::atomic::Ordering::SeqCst);
    console::log(&format!(
        "up in {} ms ({})",
        boot_ms(started),
        crate::VERSION
    ));
    let p = boot.params.clone();
    match p.run.clone() {
        Some(args) => {
            unattended(&p, &args);
            match p.then_or_default() {
                Then::PowerOff => {
                    power::shutdown(power::Action::PowerOff, "lifeboat.then=poweroff")
                }
                Then::Reboot => power::shutdown(power::Action::Reboot, "lifeboat.then=reboot"),
                Then::Stay => interactive(&p, started),
            }
        }
        None => interactive(&p, started),
    }
}

/// Whether this process is the environment's PID 1: process id 1, unless it was started by the
/// name `lifeboat` (a container whose first process is `lifeboat list` wants the CLI). The kernel
/// starts the initramfs's `/init`; children of PID 1 have other process ids.
pub fn is_pid1(pid: u32, argv0: &std::ffi::OsStr) -> bool {
    let base = std::path::Path::new(argv0).file_name().unwrap_or_default();
    pid == 1 && base != "lifeboat"
}

/// PID 1's entry point. Never returns.
pub fn pid1_main() -> ! {
    let started = Instant::now();
    // Before any thread exists, so every thread inherits the mask.
    power::block_signals();
    install_panic_hook();
    std::env::set_var("PATH", "/bin:/sbin:/usr/bin:/usr/sbin");
    std::env::set_var("HOME", "/root");
    if std::panic::catch_unwind(|| main_body(started)).is_err() {
        console::alert(
            "PID 1's main sequence panicked; staying up (reaper and power signals still work)",
        );
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid1_decision() {
        use std::ffi::OsStr;
        assert!(is_pid1(1, OsStr::new("/init")));
        assert!(is_pid1(1, OsStr::new("")));
        assert!(!is_pid1(1, OsStr::new("lifeboat")));
        assert!(!is_pid1(1, OsStr::new("/usr/bin/lifeboat")));
        assert!(!is_pid1(2, OsStr::new("/init")));
        assert!(!is_pid1(4242, OsStr::new("lifeboat")));
    }

    #[test]
    fn ready_has_the_contract_fields() {
        let cons = console::parse_active("tty0 ttyS0");
        let v = ready_json(1234, &[], &cons);
        for k in [
            "version",
            "boot_ms",
            "devices",
            "disks",
            "boot_media",
            "consoles",
        ] {
            assert!(v.get(k).is_some(), "{k} missing: {v}");
        }
        assert_eq!(v["consoles"], serde_json::json!(["tty0", "ttyS0"]));
        assert_eq!(v["devices"], 0);
        assert_eq!(v["boot_ms"], 1234);
    }

    /// A disk scan that panics (or fails) still gives READY, with no disks, and a warning; the
    /// panic does not reach `interactive`, which goes on to start the UI.
    #[test]
    fn ready_survives_a_panicking_scan() {
        let cons = console::parse_active("ttyS0");
        let warned = std::cell::RefCell::new(Vec::<String>::new());
        let warn = |m: &str| warned.borrow_mut().push(m.to_string());
        let v = ready_guarded(7, &cons, &|| panic!("scan exploded"), &warn);
        assert_eq!(v["devices"], 0);
        assert_eq!(v["boot_media"], serde_json::Value::Null);
        assert_eq!(v["consoles"], serde_json::json!(["ttyS0"]));
        assert!(
            warned.borrow()[0].contains("panicked"),
            "{:?}",
            warned.borrow()
        );
        let v = ready_guarded(7, &cons, &|| Err(crate::Error::not_found("no /sys")), &warn);
        assert_eq!(v["devices"], 0);
        assert!(
            warned.borrow()[1].contains("no /sys"),
            "{:?}",
            warned.borrow()
        );
        let disks = crate::devices::fixtures::machine();
        let n = disks.len();
        let v = ready_guarded(7, &cons, &|| Ok(disks.clone()), &warn);
        assert_eq!(v["devices"], n);
        assert_eq!(warned.borrow().len(), 2);
    }
}
