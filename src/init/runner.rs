//! The unattended runner: `lifeboat.run="ARGS"` runs `lifeboat ARGS` as a child (exactly as on a
//! host), streams its stderr (progress) to the consoles live, captures and echoes its stdout, and
//! prints one `LIFEBOAT-RESULT {json}` line on every console.
//!
//! For clone and image jobs `output` is always the job's report object (`bad_ranges`, ...; on
//! failure `ok: false` with the error), with or without `--json`: the command hands it over in a
//! file named by `LIFEBOAT_REPORT` ([`crate::cli::REPORT_ENV`]). `summary` holds what it said
//! for a person (its stderr lines other than progress, and its stdout when that was text).
use super::{cmdline, console, reaper};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The most stdout kept for the result (the rest is still echoed to the consoles).
const MAX_CAPTURE: usize = 64 << 20;
/// The most of the command's human stderr kept for `summary` (its last lines).
const MAX_SUMMARY: usize = 16 << 10;
/// The most of a report file read.
const MAX_REPORT: u64 = 64 << 20;

/// What the command did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub duration_ms: u64,
    /// The report object the command handed over (`LIFEBOAT_REPORT`), if it did.
    pub report: Option<Vec<u8>>,
    /// The last of its stderr lines that were not progress.
    pub log: Vec<u8>,
}

/// Whether `argv` runs a job whose `output` must be its report object (clone, image).
fn is_job(argv: &[String]) -> bool {
    matches!(argv.first().map(String::as_str), Some("clone" | "image"))
}

/// `output` for a command that could not be run at all (`args` unparsable, no disks): for a
/// clone or image job the error's report object, else its message.
pub fn failure_output(args: &str, e: &crate::Error) -> serde_json::Value {
    let first: Vec<String> = args
        .split_whitespace()
        .take(1)
        .map(str::to_string)
        .collect();
    if is_job(&first) {
        crate::cli::error_report(e)
    } else {
        serde_json::Value::String(e.to_string())
    }
}

/// The `LIFEBOAT-RESULT` JSON for `command` (the ARGS string) and its outcome.
pub fn result_json(command: &str, argv: &[String], o: &Outcome) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let json_flag = argv.iter().any(|a| a == "--json");
    let stdout_json = json_flag
        .then(|| serde_json::from_str::<serde_json::Value>(text.trim()).ok())
        .flatten();
    let handed = o
        .report
        .as_deref()
        .and_then(|r| serde_json::from_slice::<serde_json::Value>(r).ok())
        .filter(|v| v.is_object());
    let output = if is_job(argv) {
        handed.or(stdout_json).unwrap_or_else(|| {
            // It died before reporting (killed, crashed): still an object saying so.
            serde_json::json!({
                "ok": false,
                "error": {
                    "kind": "failed",
                    "message": format!(
                        "the command ended (exit code {}) without a report; see summary",
                        o.exit_code
                    ),
                },
                "exit_code": o.exit_code,
            })
        })
    } else {
        stdout_json.unwrap_or(serde_json::Value::String(text.clone()))
    };
    let mut summary = String::from_utf8_lossy(&o.log).into_owned();
    if !json_flag && !text.is_empty() {
        summary.push_str(&text);
    }
    serde_json::json!({
        "ok": o.exit_code == 0,
        "exit_code": o.exit_code,
        "command": command,
        "output": output,
        "summary": summary,
        "duration_ms": o.duration_ms,
        "version": crate::VERSION,
    })
}

/// The single result line (serde_json never emits a raw newline inside a value; names in it
/// with C1 or bidi controls are written as `\uXXXX`, see [`crate::out::json_text`]).
pub fn result_line(v: &serde_json::Value) -> String {
    format!("LIFEBOAT-RESULT {}", crate::out::json_text(&v.to_string()))
}

/// What [`pump`] keeps of what it copies.
#[derive(Clone, Copy, PartialEq)]
enum Keep {
    /// Everything, up to [`MAX_CAPTURE`] (stdout).
    All,
    /// The last [`MAX_SUMMARY`] bytes of lines that are not `LIFEBOAT-PROGRESS` (stderr).
    HumanTail,
}

/// Keeps the human lines of `chunk` (whole lines, progress lines dropped), the last
/// [`MAX_SUMMARY`] bytes of them.
fn keep_human(kept: &mut Vec<u8>, line_buf: &mut Vec<u8>, chunk: &[u8]) {
    for &b in chunk {
        if line_buf.len() < 4096 {
            line_buf.push(b);
        }
        if b == b'\n' {
            // Progress lines may be redrawn with \r; take the text after the last one.
            let start = line_buf
                .iter()
                .rposition(|&c| c == b'\r')
                .map(|i| i + 1)
                .unwrap_or(0);
            let line = &line_buf[start..];
            if !line.starts_with(b"LIFEBOAT-PROGRESS")
                && line.iter().any(|c| !c.is_ascii_whitespace())
            {
                kept.extend_from_slice(line);
            }
            line_buf.clear();
        }
    }
    if kept.len() > MAX_SUMMARY {
        let cut = kept.len() - MAX_SUMMARY;
        kept.drain(..cut);
    }
}

/// Copies `r` to the consoles whole lines at a time; returns what it kept (see [`Keep`]).
fn pump(mut r: impl Read, keep: Keep) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut line_buf = Vec::new();
    let mut truncated = false;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buf[..n];
        match keep {
            Keep::All if kept.len() + n <= MAX_CAPTURE => kept.extend_from_slice(chunk),
            Keep::All => truncated = true,
            Keep::HumanTail => keep_human(&mut kept, &mut line_buf, chunk),
        }
        pending.extend_from_slice(chunk);
        if let Some(last_nl) = pending.iter().rposition(|&b| b == b'\n') {
            console::write_all_consoles(&pending[..=last_nl]);
            pending.drain(..=last_nl);
        } else if pending.len() > 4096 {
            console::write_all_consoles(&pending);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        pending.push(b'\n');
        console::write_all_consoles(&pending);
    }
    (kept, truncated)
}

/// A fresh path for the command's report file (under /run/lifeboat, a tmpfs in the environment).
fn report_path() -> std::path::PathBuf {
    let dir = std::path::Path::new("/run/lifeboat");
    let _ = std::fs::create_dir_all(dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    dir.join(format!("report-{}-{nanos}.json", std::process::id()))
}

/// Reads (at most [`MAX_REPORT`] bytes of) and removes the report file, if the command wrote one.
fn take_report(path: &std::path::Path) -> Option<Vec<u8>> {
    let f = std::fs::File::open(path).ok()?;
    let mut v = Vec::new();
    let r = f.take(MAX_REPORT).read_to_end(&mut v);
    let _ = std::fs::remove_file(path);
    r.ok().map(|_| v)
}

/// Runs `lifeboat ARGV` and returns its outcome; errors starting it become exit code 1.
pub fn run_command(argv: &[String]) -> Outcome {
    let t0 = Instant::now();
    let report = report_path();
    let _ = std::fs::remove_file(&report);
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("lifeboat")
        .args(argv)
        .env("LIFEBOAT_PROGRESS", "json")
        .env(crate::cli::REPORT_ENV, &report)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match reaper::spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => {
            console::alert(&format!("cannot start the command: {e}"));
            return Outcome {
                exit_code: 1,
                duration_ms: t0.elapsed().as_millis() as u64,
                log: format!("cannot start the command: {e}\n").into_bytes(),
                ..Outcome::default()
            };
        }
    };
    let pid = child.id() as i32;
    let (tx_out, rx_out) = mpsc::channel();
    let (tx_err, rx_err) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            let _ = tx_out.send(pump(out, Keep::All));
        });
    }
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            let _ = tx_err.send(pump(err, Keep::HumanTail));
        });
    }
    let exit = reaper::wait(pid);
    // The pipes close when the command exits (unless it left a background process holding
    // them): give the pumps a moment to drain, never hang on them.
    let (stdout, truncated) = rx_out
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    let (log, _) = rx_err
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    if truncated {
        console::warn(&format!(
            "the command printed more than {MAX_CAPTURE} bytes; the result keeps the first part"
        ));
    }
    Outcome {
        exit_code: exit.code(),
        stdout,
        duration_ms: t0.elapsed().as_millis() as u64,
        report: take_report(&report),
        log,
    }
}

/// Runs the `lifeboat.run` command line `args` and prints its result line.
pub fn run_and_report(args: &str) -> Outcome {
    let argv = match cmdline::shell_split(args) {
        Ok(v) => v,
        Err(e) => {
            let o = Outcome {
                exit_code: e.exit_code(),
                ..Outcome::default()
            };
            console::alert(&format!("lifeboat.run: {e}"));
            let mut v = result_json(args, &[], &o);
            v["output"] = failure_output(args, &e);
            console::announce(&result_line(&v));
            return o;
        }
    };
    console::log(&format!("running: lifeboat {args}"));
    let o = run_command(&argv);
    console::log(&format!(
        "command finished with exit code {} in {} ms",
        o.exit_code, o.duration_ms
    ));
    console::announce(&result_line(&result_json(args, &argv, &o)));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_output_is_parsed_only_with_json_flag() {
        let o = Outcome {
            exit_code: 0,
            stdout: b"{\"devices\":[]}\n".to_vec(),
            duration_ms: 5,
            ..Outcome::default()
        };
        let argv: Vec<String> = vec!["list".into(), "--json".into()];
        let v = result_json("list --json", &argv, &o);
        assert_eq!(v["ok"], true);
        assert_eq!(v["exit_code"], 0);
        assert_eq!(v["command"], "list --json");
        assert_eq!(v["output"]["devices"], serde_json::json!([]));
        assert_eq!(v["duration_ms"], 5);
        assert!(v["version"].as_str().is_some());
        let t = result_json("list", &argv[..1], &o);
        assert_eq!(t["output"], "{\"devices\":[]}\n");
        let bad = Outcome {
            exit_code: 2,
            stdout: b"not json".to_vec(),
            duration_ms: 1,
            ..Outcome::default()
        };
        let b = result_json("list --json", &argv, &bad);
        assert_eq!(b["ok"], false);
        assert_eq!(b["output"], "not json");
        let line = result_line(&b);
        assert!(line.starts_with("LIFEBOAT-RESULT {"));
        assert!(!line.contains('\n'));
    }

    #[test]
    fn clone_and_image_jobs_always_give_their_report_object() {
        let report = br#"{"ok":true,"bad_ranges":[[4096,512]],"exit_code":3}"#.to_vec();
        // Without --json: stdout is text for a person; output is still the report object.
        let o = Outcome {
            exit_code: 3,
            stdout: b"Image        x.lbi\nUUID         ...\n".to_vec(),
            report: Some(report.clone()),
            log: b"clone a -> b: 4 MiB copied\n".to_vec(),
            ..Outcome::default()
        };
        let argv: Vec<String> = ["clone", "a", "b", "--yes"].map(String::from).to_vec();
        let v = result_json("clone a b --yes", &argv, &o);
        assert_eq!(v["output"]["bad_ranges"], serde_json::json!([[4096, 512]]));
        let summary = v["summary"].as_str().unwrap();
        assert!(
            summary.contains("4 MiB copied") && summary.contains("UUID"),
            "{v}"
        );
        // With --json the same object (handed over, or printed).
        let mut argv_j = argv.clone();
        argv_j.push("--json".into());
        let oj = Outcome {
            stdout: report.clone(),
            report: None,
            ..o.clone()
        };
        assert_eq!(
            result_json("clone a b --yes --json", &argv_j, &oj)["output"]["bad_ranges"],
            serde_json::json!([[4096, 512]])
        );
        // Killed before reporting: an object saying so, with the exit code.
        let dead = Outcome {
            exit_code: 137,
            ..Outcome::default()
        };
        let img: Vec<String> = ["image", "verify", "x.lbi"].map(String::from).to_vec();
        let v = result_json("image verify x.lbi", &img, &dead);
        assert_eq!(v["output"]["ok"], false);
        assert_eq!(v["output"]["exit_code"], 137);
        // A job that could not start at all: the error object too; other commands keep text.
        let e = crate::Error::not_found("no disk matches serial=X");
        assert_eq!(failure_output("clone serial=X y --yes", &e)["ok"], false);
        assert!(failure_output("list --json", &e).is_string());
    }

    #[test]
    fn the_summary_keeps_human_lines_not_progress() {
        let mut kept = Vec::new();
        let mut line = Vec::new();
        keep_human(
            &mut kept,
            &mut line,
            b"LIFEBOAT-PROGRESS {\"job\":\"clone\"}\nclone a -> b: done\n\rcopying 5%\rresult: ok\nLIFEBOAT-PRO",
        );
        keep_human(&mut kept, &mut line, b"GRESS {}\n");
        assert_eq!(
            String::from_utf8_lossy(&kept),
            "clone a -> b: done\nresult: ok\n"
        );
        let big = vec![b'x'; 1000];
        for _ in 0..40 {
            keep_human(&mut kept, &mut line, &big);
            keep_human(&mut kept, &mut line, b"\n");
        }
        assert!(kept.len() <= MAX_SUMMARY);
    }
}
