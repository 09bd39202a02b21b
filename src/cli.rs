//! The command-line surface: parses arguments, dispatches to each domain's command, and turns
//! errors into a message with context, a JSON error object when `--json` was asked, and an exit code.
use crate::error::{exit, Error};
use clap::{Parser, Subcommand};
use std::ffi::OsString;

#[derive(Parser, Debug)]
#[command(name = "lifeboat", version = crate::VERSION, about = "Clone and image disks, rescue failing drives.")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List every disk with its partitions, filesystems and identity.
    List(crate::devices::ListArgs),
    /// Read a disk's health (ATA SMART or the NVMe health log): ok, worn, failing or unknown.
    Health(crate::health::HealthArgs),
    /// Copy a whole disk onto another, exactly, surviving bad sectors.
    Clone(crate::clone::CloneArgs),
    /// Create, verify, inspect, restore and export disk images.
    #[command(subcommand)]
    Image(crate::image::ImageCmd),
    /// Start the interactive console (the technician's UI).
    Ui(crate::tui::UiArgs),
    /// Build an initramfs (used by scripts/build).
    #[command(hide = true)]
    Mkinitramfs(crate::initramfs::MkArgs),
}

/// Runs the CLI on `args` (argv including argv[0]) and returns the process exit code.
pub fn main<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    let args: Vec<OsString> = args.into_iter().collect();
    let json = args.iter().any(|a| a == "--json");
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    let res = match cli.cmd {
        Cmd::List(a) => crate::devices::run_list(a),
        Cmd::Health(a) => crate::health::run(a),
        Cmd::Clone(a) => crate::clone::run(a),
        Cmd::Image(a) => crate::image::run(a),
        Cmd::Ui(a) => crate::tui::run(a),
        Cmd::Mkinitramfs(a) => crate::initramfs::run(a),
    };
    match res {
        Ok(code) => code,
        Err(e) => report_error(&e, json),
    }
}

/// Prints an error for a person (stderr) and, with `--json`, as one JSON object on stdout.
pub fn report_error(e: &Error, json: bool) -> i32 {
    eprintln!("lifeboat: error: {e}");
    if json {
        println!("{}", error_report(e));
    }
    e.exit_code()
}

/// The JSON object of a failed job: `ok: false`, what the job knew when it failed (the
/// error's report fields, e.g. a restore's `target_state`), the error, the exit code.
pub fn error_report(e: &Error) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("ok".into(), false.into());
    if let Some(r) = &e.report {
        m.extend(r.clone());
    }
    m.insert(
        "error".into(),
        serde_json::json!({ "kind": e.kind_name(), "message": e.to_string() }),
    );
    m.insert("exit_code".into(), e.exit_code().into());
    serde_json::Value::Object(m)
}
