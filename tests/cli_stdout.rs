//! The CLI on a closed stdout (`lifeboat image info X | head -1` once `head` has gone): every
//! command's output is dropped quietly, never a panic (exit 101). A command that succeeded
//! exits 141 (128 + SIGPIPE, what a shell reports for a command stopped by SIGPIPE), a failed
//! one keeps its own exit code, and a job still runs to its end. The pipe is a real one whose
//! read end is closed before the command starts, so every write gets EPIPE whatever the
//! machine's speed. The source and the image are checked unchanged by sha256.
use std::process::{Output, Stdio};

mod common;
use common::{assert_exit, data_file, lifeboat, lifeboat_cmd, s, sha256, zero_file, Loop, TempDir};

/// `lifeboat ARGS` with stdout a pipe nobody reads (its read end closed), stderr captured.
fn closed_stdout(args: &[&str]) -> Output {
    let (r, w) = std::io::pipe().expect("pipe");
    drop(r);
    lifeboat_cmd()
        .args(args)
        .stdout(Stdio::from(w))
        .stderr(Stdio::piped())
        .output()
        .expect("run lifeboat")
}

/// Asserts `lifeboat ARGS` on a closed stdout exited `code` without a panic.
#[track_caller]
fn quiet(args: &[&str], code: i32) {
    let o = closed_stdout(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("panicked"),
        "lifeboat {args:?} panicked: {err}"
    );
    assert!(
        !err.contains("standard output"),
        "a closed pipe is not reported as a write error: {err}"
    );
    assert_eq!(
        o.status.code(),
        Some(code),
        "lifeboat {args:?}: {}, expected exit {code}; stderr:\n{err}",
        o.status
    );
}

#[test]
fn list_info_verify_and_errors_end_quietly_on_a_closed_stdout() {
    let t = TempDir::new("cli-stdout");
    let src = t.p("src.raw");
    data_file(&src, 8 << 20, 7);
    let src_sum = sha256(&src);
    let img = t.p("a.lbi");
    assert_exit(&lifeboat(&["image", "create", s(&src), s(&img)]), 0);
    let img_sum = sha256(&img);

    // Each prints on stdout with an open one (the closed pipe is what differs).
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["image", "info", s(&img)],
        &["image", "info", s(&img), "--json"],
        &["image", "verify", s(&img), "--json"],
    ] {
        let o = lifeboat(args);
        assert_exit(&o, 0);
        assert!(!o.stdout.is_empty(), "lifeboat {args:?} printed nothing");
        quiet(args, 141);
    }
    // Help (clap's own printing) succeeds as ever.
    quiet(&["image", "--help"], 0);
    // A failed command keeps its exit code; its `--json` error object is lost quietly.
    let missing = t.p("missing.lbi");
    let o = lifeboat(&["image", "info", s(&missing), "--json"]);
    let code = o.status.code().expect("exit code");
    assert_ne!(code, 0);
    quiet(&["image", "info", s(&missing), "--json"], code);
    let o = lifeboat(&["health", s(&src), "--json"]);
    assert_exit(&o, 2);
    quiet(&["health", s(&src), "--json"], 2);

    // A job runs to its end when its report cannot be printed: the image is complete.
    let img2 = t.p("b.lbi");
    quiet(&["image", "create", s(&src), s(&img2), "--json"], 141);
    assert_exit(&lifeboat(&["image", "verify", s(&img2)]), 0);

    assert_eq!(sha256(&src), src_sum, "the source changed");
    assert_eq!(sha256(&img), img_sum, "the image changed");
}

#[test]
fn health_ends_quietly_on_a_closed_stdout() {
    let t = TempDir::new("cli-stdout-health");
    let f = t.p("loop.img");
    zero_file(&f, 4 << 20);
    let Some(lo) = Loop::attach(&f) else { return };
    for json in [false, true] {
        let mut args = vec!["health", lo.dev.as_str()];
        if json {
            args.push("--json");
        }
        assert_exit(&lifeboat(&args), 0);
        quiet(&args, 141);
    }
}

/// `lifeboat ARGS` with stderr (and stdout, as with `2>&1 | head`) a pipe whose read end is
/// closed: progress lines, warnings and error messages are dropped, never a panic (exit 101)
/// nor a hang (`image create` hung there with `eprint!`: its progress thread panicked).
fn closed_stderr(args: &[&str]) -> Output {
    let (r, w) = std::io::pipe().expect("pipe");
    drop(r);
    let w2 = w.try_clone().expect("dup the pipe");
    let mut child = lifeboat_cmd()
        .args(args)
        .stdout(Stdio::from(w))
        .stderr(Stdio::from(w2))
        .spawn()
        .expect("run lifeboat");
    // A thread that panicked on its progress line used to leave the job waiting forever:
    // stopped after 5 minutes, that is a failure (killed by SIGKILL), not a hung test run.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while child.try_wait().expect("wait for lifeboat").is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("run lifeboat")
}

#[test]
fn jobs_and_errors_end_quietly_on_a_closed_stderr() {
    let t = TempDir::new("cli-stderr");
    let src = t.p("src.raw");
    data_file(&src, 8 << 20, 9);
    let src_sum = sha256(&src);
    // A job that prints its progress and summary on stderr runs to its end: the image is
    // complete and verifies (without --json it prints nothing on stdout: exit 0).
    let img = t.p("a.lbi");
    let o = closed_stderr(&["image", "create", s(&src), s(&img)]);
    assert_eq!(o.status.code(), Some(0), "image create: {}", o.status);
    assert_exit(&lifeboat(&["image", "verify", s(&img)]), 0);
    // An error message that cannot be said keeps the command's exit code.
    let missing = t.p("missing.lbi");
    let code = lifeboat(&["image", "info", s(&missing)])
        .status
        .code()
        .expect("exit code");
    assert_ne!(code, 0);
    assert_eq!(
        closed_stderr(&["image", "info", s(&missing)]).status.code(),
        Some(code)
    );
    // A clone's plan and progress (stderr) onto a file target.
    let dst = t.p("dst.raw");
    zero_file(&dst, 8 << 20);
    let o = closed_stderr(&["clone", s(&src), s(&dst), "--yes"]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(141)),
        "clone: {}",
        o.status
    );
    assert_eq!(
        sha256(&dst),
        src_sum,
        "the clone's target differs from its source"
    );
    assert_eq!(sha256(&src), src_sum, "the source changed");
}
