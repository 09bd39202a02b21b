//! Entry point: PID 1 of the rescue environment when started as `/init`, otherwise the
//! `lifeboat` command-line tool.
fn main() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let base = std::path::Path::new(&argv0).file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if std::process::id() == 1 || base == "init" {
        lifeboat::init::pid1_main();
    }
    std::process::exit(lifeboat::cli::main(std::env::args_os()));
}
