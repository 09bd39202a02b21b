//! Entry point: PID 1 of the rescue environment when the kernel starts it (process id 1),
//! otherwise the `lifeboat` command-line tool. Children PID 1 starts (the unattended command, the
//! UI) have other process ids, so they are always the CLI.
fn main() {
    if std::process::id() == 1 {
        lifeboat::init::pid1_main();
    }
    std::process::exit(lifeboat::cli::main(std::env::args_os()));
}
