//! Entry point: PID 1 of the rescue environment when the kernel starts it as `/init`, otherwise
//! the `lifeboat` command-line tool; started as `modprobe` it answers the kernel's module
//! requests (`init::modprobe`). Children PID 1 starts (the unattended command, the UI) have
//! other process ids and the name `lifeboat`, so they are always the CLI.
fn main() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if lifeboat::init::modprobe::invoked_as(&argv0) {
        // The kernel's module requests in the environment (/sbin/modprobe -> /init).
        std::process::exit(lifeboat::init::modprobe::main(std::env::args_os().skip(1)));
    }
    if lifeboat::init::is_pid1(std::process::id(), &argv0) {
        lifeboat::init::pid1_main();
    }
    std::process::exit(lifeboat::cli::main(std::env::args_os()));
}
