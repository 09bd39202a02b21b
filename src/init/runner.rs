//! The unattended runner: `lifeboat.run="ARGS"` runs `lifeboat ARGS` as a child (exactly as on a
//! host), streams its stderr (progress) to the consoles live, captures and echoes its stdout, and
//! prints one `LIFEBOAT-RESULT {json}` line on every console.
use super::{cmdline, console, reaper};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The most stdout kept for the result (the rest is still echoed to the consoles).
const MAX_CAPTURE: usize = 64 << 20;

/// What the command did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub duration_ms: u64,
}

/// The `LIFEBOAT-RESULT` JSON for `command` (the ARGS string) and its outcome.
pub fn result_json(command: &str, argv: &[String], o: &Outcome) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let output = if argv.iter().any(|a| a == "--json") {
        serde_json::from_str::<serde_json::Value>(text.trim())
            .unwrap_or(serde_json::Value::String(text))
    } else {
        serde_json::Value::String(text)
    };
    serde_json::json!({
        "ok": o.exit_code == 0,
        "exit_code": o.exit_code,
        "command": command,
        "output": output,
        "duration_ms": o.duration_ms,
        "version": crate::VERSION,
    })
}

/// The single result line (serde_json never emits a raw newline inside a value).
pub fn result_line(v: &serde_json::Value) -> String {
    format!("LIFEBOAT-RESULT {v}")
}

/// Copies `r` to the consoles whole lines at a time; returns what it read when `keep`.
fn pump(mut r: impl Read, keep: bool) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
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
        if keep {
            if kept.len() + n <= MAX_CAPTURE {
                kept.extend_from_slice(chunk);
            } else {
                truncated = true;
            }
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

/// Runs `lifeboat ARGV` and returns its outcome; errors starting it become exit code 1.
pub fn run_command(argv: &[String]) -> Outcome {
    let t0 = Instant::now();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("lifeboat")
        .args(argv)
        .env("LIFEBOAT_PROGRESS", "json")
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
                stdout: Vec::new(),
                duration_ms: t0.elapsed().as_millis() as u64,
            };
        }
    };
    let pid = child.id() as i32;
    let (tx_out, rx_out) = mpsc::channel();
    let (tx_err, rx_err) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            let _ = tx_out.send(pump(out, true));
        });
    }
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            let _ = tx_err.send(pump(err, false));
        });
    }
    let exit = reaper::wait(pid);
    // The pipes close when the command exits (unless it left a background process holding
    // them): give the pumps a moment to drain, never hang on them.
    let (stdout, truncated) = rx_out
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    let _ = rx_err.recv_timeout(Duration::from_secs(2));
    if truncated {
        console::warn(&format!(
            "the command printed more than {MAX_CAPTURE} bytes; the result keeps the first part"
        ));
    }
    Outcome {
        exit_code: exit.code(),
        stdout,
        duration_ms: t0.elapsed().as_millis() as u64,
    }
}

/// Runs the `lifeboat.run` command line `args` and prints its result line.
pub fn run_and_report(args: &str) -> Outcome {
    let argv = match cmdline::shell_split(args) {
        Ok(v) => v,
        Err(e) => {
            let o = Outcome {
                exit_code: e.exit_code(),
                stdout: Vec::new(),
                duration_ms: 0,
            };
            console::alert(&format!("lifeboat.run: {e}"));
            let mut v = result_json(args, &[], &o);
            v["output"] = serde_json::Value::String(e.to_string());
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
        };
        let b = result_json("list --json", &argv, &bad);
        assert_eq!(b["ok"], false);
        assert_eq!(b["output"], "not json");
        let line = result_line(&b);
        assert!(line.starts_with("LIFEBOAT-RESULT {"));
        assert!(!line.contains('\n'));
    }
}
