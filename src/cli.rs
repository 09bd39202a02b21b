//! The command-line surface: parses arguments, dispatches to each domain's command, and turns
//! errors into a message with context, a JSON error object when `--json` was asked, and an exit code.
use crate::error::{exit, Error};
use clap::{CommandFactory, Parser, Subcommand};
use std::ffi::OsString;

#[derive(Parser, Debug)]
#[command(name = "lifeboat", version = crate::VERSION, about = "Clone and image disks, rescue failing drives.")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
    /// Where the passwords of smb:// locations are (FILE or PARTITION:/path; see the README's
    /// "Network locations"); by default `lifeboat.credentials=` on the kernel command line, or
    /// /lifeboat.cred on the Lifeboat stick.
    #[arg(long, global = true, value_name = "FILE")]
    pub credentials: Option<String>,
    /// List eMMC hardware boot partitions (mmcblk0boot0, mmcblk0boot1) as disks of their own,
    /// so they can be cloned or imaged; without it they are only named under their card.
    #[arg(long, global = true)]
    pub mmc_boot_partitions: bool,
}

/// Every subcommand's arguments derive `Clone, PartialEq, serde::Serialize` besides clap's
/// traits: [`to_argv`] renders them back into a command line (how the console starts jobs).
#[derive(Subcommand, Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
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
    /// Images in an S3-compatible store (s3://BUCKET/DIR): list, delete, gc.
    #[command(subcommand)]
    Store(crate::s3::cmd::StoreCmd),
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
            if code != exit::OK {
                let msg = e.render().to_string();
                hand_report(&error_report(&Error::invalid(msg.trim())));
            }
            return code;
        }
    };
    crate::net::cred::set_override(cli.credentials);
    crate::devices::set_mmc_boot_as_disks(cli.mmc_boot_partitions);
    let res = match cli.cmd {
        Cmd::List(a) => crate::devices::run_list(a),
        Cmd::Health(a) => crate::health::run(a),
        Cmd::Clone(a) => crate::clone::run(a),
        Cmd::Image(a) => crate::image::run(a),
        Cmd::Store(a) => crate::s3::cmd::run_store(a),
        Cmd::Ui(a) => crate::tui::run(a),
        Cmd::Mkinitramfs(a) => crate::initramfs::run(a),
    };
    match res {
        Ok(code) => crate::out::exit_code(code),
        Err(e) => report_error(&e, json),
    }
}

/// Prints an error for a person (stderr) and, with `--json`, as one JSON object on stdout.
/// The unattended runner gets the JSON object either way ([`hand_report`]).
pub fn report_error(e: &Error, json: bool) -> i32 {
    crate::errln!("lifeboat: error: {e}");
    let v = error_report(e);
    hand_report(&v);
    if json {
        crate::out::json_line(&v);
    }
    e.exit_code()
}

/// The environment variable by which the unattended runner asks for the job's report: a file
/// path that receives the report object (the one `--json` prints), with or without `--json`.
pub const REPORT_ENV: &str = "LIFEBOAT_REPORT";

/// Prints the job's report object on stdout when `json`, and hands it to the unattended runner
/// either way. Every clone and image command reports through here (failures through
/// [`report_error`]).
pub fn emit_report<T: serde::Serialize>(rep: &T, json: bool) {
    let v = serde_json::to_value(rep).unwrap_or_else(|e| {
        error_report(
            &Error::new(crate::error::ErrorKind::Io, "cannot encode the report").caused_by(e),
        )
    });
    hand_report(&v);
    if json {
        crate::out::json_line(&v);
    }
}

/// Writes `v` to the file named by [`REPORT_ENV`], when the runner set it.
pub fn hand_report(v: &serde_json::Value) {
    let Some(path) = std::env::var_os(REPORT_ENV) else {
        return;
    };
    if let Err(e) = std::fs::write(&path, v.to_string()) {
        crate::errln!(
            "lifeboat: warning: cannot hand the report to the runner ({}): {e}",
            std::path::Path::new(&path).display()
        );
    }
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

/// The arguments (without argv[0]) that parse back into `cmd`: how the console and anything
/// else that starts a job writes its command line. Flag names come from the clap definitions
/// (one definition of each flag), values from the fields; positionals first, then the flags in
/// declaration order. A field type without a rendering here (a new kind of argument) panics in
/// the round-trip tests, never silently drops a flag.
pub fn to_argv(cmd: &Cmd) -> Vec<String> {
    let value = serde_json::to_value(cmd).expect("CLI arguments serialize");
    let mut out = Vec::new();
    render(&Cli::command(), value, &mut out);
    out
}

/// Parses a job's arguments (as [`to_argv`] wrote them) back into the command.
pub fn parse_argv(args: &[String]) -> Option<Cmd> {
    let argv = std::iter::once("lifeboat").chain(args.iter().map(String::as_str));
    Cli::try_parse_from(argv).ok().map(|c| c.cmd)
}

/// Appends the arguments of `value` (a serialized subcommand or argument struct) for `cmd`.
fn render(cmd: &clap::Command, value: serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    // A subcommand enum serializes as {"name": fields} (a unit variant as "name").
    let sub = match &value {
        Value::Object(m) if m.len() == 1 && cmd.has_subcommands() => {
            let (k, v) = m.iter().next().expect("one entry");
            Some((k.clone(), v.clone()))
        }
        Value::String(s) if cmd.has_subcommands() => Some((s.clone(), Value::Null)),
        _ => None,
    };
    if let Some((name, inner)) = sub {
        let sc = cmd
            .find_subcommand(&name)
            .unwrap_or_else(|| panic!("no subcommand {name:?} in {}", cmd.get_name()));
        out.push(name);
        render(sc, inner, out);
        return;
    }
    let fields = match value {
        Value::Object(m) => m,
        Value::Null => Default::default(),
        v => panic!("{}: arguments must be a struct, got {v}", cmd.get_name()),
    };
    let field = |id: &str| fields.get(id).cloned().unwrap_or(Value::Null);
    let text = |id: &str, v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => panic!("{}: argument {id} has no rendering for {v}", cmd.get_name()),
    };
    let positionals: Vec<String> = cmd
        .get_positionals()
        .flat_map(|a| {
            let id = a.get_id().as_str();
            match field(id) {
                Value::Null => vec![],
                Value::Array(vs) => vs.iter().map(|v| text(id, v)).collect(),
                v => vec![text(id, &v)],
            }
        })
        .collect();
    let mut flags = Vec::new();
    for a in cmd.get_arguments().filter(|a| !a.is_positional()) {
        let id = a.get_id().as_str();
        let Some(long) = a.get_long() else {
            assert!(
                field(id).is_null(),
                "{}: argument {id} has no long name",
                cmd.get_name()
            );
            continue;
        };
        let mut push = |v: &Value| {
            let v = text(id, v);
            // A value that looks like a flag stays attached to its option.
            if v.starts_with('-') {
                flags.push(format!("--{long}={v}"));
            } else {
                flags.push(format!("--{long}"));
                flags.push(v);
            }
        };
        match field(id) {
            Value::Null | Value::Bool(false) => {}
            Value::Bool(true) => flags.push(format!("--{long}")),
            Value::Array(vs) => vs.iter().for_each(&mut push),
            v => push(&v),
        }
    }
    if positionals.iter().any(|p| p.starts_with('-')) {
        // Flags first, then `--`: a positional that starts with '-' is not read as a flag.
        out.extend(flags);
        out.push("--".into());
        out.extend(positionals);
    } else {
        out.extend(positionals);
        out.extend(flags);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clone::CloneArgs;
    use crate::image::ImageCmd;
    use proptest::prelude::*;

    fn round_trip(cmd: Cmd) {
        let argv = to_argv(&cmd);
        assert_eq!(parse_argv(&argv), Some(cmd.clone()), "argv {argv:?}");
    }

    fn clone(source: &str, target: &str, flags: bool, map: Option<&str>) -> Cmd {
        Cmd::Clone(CloneArgs {
            source: source.into(),
            target: target.into(),
            yes: flags,
            map: map.map(Into::into),
            no_verify: flags,
            all_sectors: flags,
            json: !flags,
        })
    }

    #[test]
    fn argv_reads_like_a_command_line() {
        let c = Cmd::Clone(CloneArgs {
            source: "/dev/sda".into(),
            target: "serial=X 1".into(),
            yes: true,
            map: Some("/run/lifeboat/job/map".into()),
            no_verify: false,
            all_sectors: true,
            json: true,
        });
        assert_eq!(
            to_argv(&c),
            [
                "clone",
                "/dev/sda",
                "serial=X 1",
                "--yes",
                "--map",
                "/run/lifeboat/job/map",
                "--all-sectors",
                "--json"
            ]
        );
        round_trip(c);
        let c = Cmd::Image(ImageCmd::Verify {
            image: "-odd.lbi".into(),
            state: None,
            passphrase_file: None,
            json: true,
        });
        assert_eq!(to_argv(&c), ["image", "verify", "--json", "--", "-odd.lbi"]);
        round_trip(c);
    }

    #[test]
    fn every_job_command_round_trips() {
        round_trip(clone("sda", "sdb", false, None));
        round_trip(clone("sda", "sdb", true, Some("-m")));
        for (parent, split) in [(None, None), (Some("sdc1:/p.lbi"), Some("4G"))] {
            for force in [false, true] {
                round_trip(Cmd::Image(ImageCmd::Create {
                    source: "/dev/sda".into(),
                    image: "label=B:/x.lbi".into(),
                    parent: parent.map(Into::into),
                    split: split.map(Into::into),
                    force,
                    all_sectors: force,
                    compress: split.map(|_| "zstd:5".into()),
                    map: parent.map(|_| "/tmp/c.map".into()),
                    encrypt: force,
                    clear_identity: force && parent.is_some(),
                    passphrase_file: parent.map(|_| "label=K:/pw".into()),
                    no_verify: force,
                    ignore_free_space: force,
                    json: !force,
                }));
            }
        }
        for flag in [false, true] {
            round_trip(Cmd::Image(ImageCmd::Copy {
                image: "label=A:/pc/inc.lbi".into(),
                dest: "label=SECOND:/pc/".into(),
                chain: flag,
                verify: flag,
                no_verify: false,
                force: !flag,
                ignore_free_space: flag,
                passphrase_file: flag.then(|| "label=K:/pw".into()),
                json: flag,
            }));
        }
        round_trip(Cmd::Image(ImageCmd::Restore {
            image: "a.lbi".into(),
            target: "/dev/sdb".into(),
            yes: true,
            zero_free: true,
            discard: false,
            map: Some("r.map".into()),
            passphrase_file: Some("/root/pw".into()),
            json: true,
        }));
        round_trip(Cmd::Image(ImageCmd::Verify {
            image: "a.lbi".into(),
            state: Some("v.state".into()),
            passphrase_file: None,
            json: false,
        }));
        round_trip(Cmd::Image(ImageCmd::Info {
            image: "a.lbi".into(),
            passphrase_file: None,
            json: false,
        }));
        for format in [None, Some("vhdx".to_string())] {
            let passphrase_file = format.as_ref().map(|_| "pw".into());
            round_trip(Cmd::Image(ImageCmd::Export {
                image: "a.lbi".into(),
                raw: "a.raw".into(),
                format,
                force: true,
                passphrase_file,
                json: true,
            }));
        }
        for sock in [None, Some("/run/s.sock")] {
            round_trip(Cmd::Image(ImageCmd::Serve(crate::serve::ServeArgs {
                image: "label=B:/a.lbi".into(),
                listen: sock.is_none().then(|| "0.0.0.0:10809".into()),
                socket: sock.map(Into::into),
                writable_overlay: sock.map(|_| "o.ovl".into()),
                cache: sock.map(|_| "16M".into()),
                max_clients: sock.map(|_| 3),
                passphrase_file: sock.map(|_| "label=K:/pw".into()),
                json: sock.is_some(),
            })));
        }
        round_trip(Cmd::Image(ImageCmd::Mount(
            crate::serve::attach::MountArgs {
                image: "a.lbi".into(),
                dir: "/mnt/a".into(),
                partition: Some(2),
                passphrase_file: Some("/root/pw".into()),
                json: true,
                attached: false,
                secret_on_stdin: false,
            },
        )));
        round_trip(Cmd::Image(ImageCmd::Umount(
            crate::serve::attach::UmountArgs {
                dir: "/mnt/a".into(),
                json: false,
            },
        )));
        round_trip(Cmd::Image(ImageCmd::Ls(crate::serve::extract::LsArgs {
            image: "label=B:/a.lbi".into(),
            path: Some("/home/ann".into()),
            partition: Some(2),
            passphrase_file: Some("pw".into()),
            json: true,
        })));
        round_trip(Cmd::Image(ImageCmd::Extract(
            crate::serve::extract::ExtractArgs {
                image: "label=B:/a.lbi".into(),
                paths: vec!["/home/ann/a letter.odt".into(), "/etc".into()],
                to: "label=USB:/restored".into(),
                partition: None,
                passphrase_file: None,
                json: true,
            },
        )));
        round_trip(Cmd::Image(ImageCmd::AddKey {
            image: "a.lbi".into(),
            output: Some("/media/k".into()),
            chain: true,
            passphrase_file: Some("pw".into()),
            json: true,
        }));
        round_trip(Cmd::Image(ImageCmd::RemoveKey {
            image: "a.lbi".into(),
            slot: 2,
            chain: false,
            passphrase_file: None,
            json: false,
        }));
        round_trip(Cmd::List(crate::devices::ListArgs { json: true }));
        round_trip(Cmd::Health(crate::health::HealthArgs {
            disk: "serial=X".into(),
            json: true,
        }));
        round_trip(Cmd::Mkinitramfs(crate::initramfs::MkArgs {
            init: "/b".into(),
            modules_dir: Some("/lib/modules/6".into()),
            list: Some("l".into()),
            out: "o".into(),
            compression: crate::initramfs::Compression::Gzip,
            files: vec!["a:/a".into(), "-b:/b".into()],
            sysroot: Some("/s".into()),
            programs: vec!["/bin/ntfs-3g".into()],
        }));
    }

    proptest! {
        /// Any text in any argument (spaces, quotes, leading dashes, `=`, unicode) survives.
        #[test]
        fn any_values_round_trip(
            s in "[^\\x00]{0,12}",
            t in "[^\\x00]{0,12}",
            // (clap refuses an empty path: `--map ""` is not a command line to render)
            m in proptest::option::of("[^\\x00]{1,12}"),
            flags in any::<bool>(),
        ) {
            let c = clone(&s, &t, flags, m.as_deref());
            let argv = to_argv(&c);
            prop_assert_eq!(parse_argv(&argv), Some(c), "argv {:?}", argv);
        }
    }
}
