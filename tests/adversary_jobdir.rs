//! The adversary on the console's job directory (`/run/lifeboat/job`, `LIFEBOAT_JOB_DIR`): the
//! files that carry secrets to a detached job (`passphrase`, `credentials`, written by
//! `jobdir::write_secret`) and every other file the console and the runner write there. Names
//! taken beforehand by symlinks, hard links, FIFOs and directories; a job directory someone else
//! can write; secrets looked for in every file of the directory after real jobs (an encrypted
//! image made through the runner, a wrong passphrase, a share password). Decided on error kinds
//! and exit codes, never on message text. Every source read is checked unchanged by sha256.
mod common;

use common::*;
use lifeboat::error::ErrorKind;
use lifeboat::jobs::jobdir::{self, JobCredentials, JobSpec, PASSPHRASE_FILE};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn spec(args: &[&str]) -> JobSpec {
    JobSpec {
        id: "adv".into(),
        kind: "image-create".into(),
        title: "adversary".into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        details: vec![],
        total_bytes: 0,
        partitions: vec![],
    }
}

/// A private job directory (as the console makes it): `dir/job`, mode 0700.
fn private_job_dir(dir: &TempDir) -> PathBuf {
    let jd = dir.p("job");
    std::fs::create_dir(&jd).unwrap();
    std::fs::set_permissions(&jd, std::fs::Permissions::from_mode(0o700)).unwrap();
    jd
}

/// A launch that starts nothing (the test runs the runner itself): this process's pid.
fn no_launch(_: &Path) -> lifeboat::Result<u32> {
    Ok(std::process::id())
}

/// Every regular file under `dir` (recursively) that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p);
            } else if m.is_file() {
                let b = std::fs::read(&p).unwrap();
                if b.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p);
                }
            }
        }
    }
    hits
}

/// `lifeboat ui --run-job DIR` (the runner as the console starts it), with `engine` as the
/// engine program when given (else the lifeboat binary itself).
fn run_job(jd: &Path, engine: Option<&Path>) -> std::process::Output {
    let mut c = lifeboat_cmd();
    c.args(["ui", "--run-job"]).arg(jd);
    if let Some(e) = engine {
        c.env("LIFEBOAT_JOB_PROGRAM", e);
    }
    c.output().expect("run the job runner")
}

/// A fake engine that leaves `ran` next to itself when started.
fn marker_engine(dir: &TempDir) -> (PathBuf, PathBuf) {
    let eng = dir.p("engine.sh");
    let ran = dir.p("ran");
    std::fs::write(
        &eng,
        format!(
            "#!/bin/sh\ntouch '{}'\necho 'LIFEBOAT-PROGRESS {{\"job\":\"clone\",\"phase\":\"copying\",\"done_bytes\":1,\"total_bytes\":2,\"bad_bytes\":0,\"rate_bytes_per_sec\":1,\"eta_secs\":1}}' >&2\necho 'a log line' >&2\necho '{{\"ok\":true}}'\n",
            ran.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&eng, std::fs::Permissions::from_mode(0o755)).unwrap();
    (eng, ran)
}

/// A job directory other users can write (mode 0777, or owned by another user): whoever can
/// write there can swap the passphrase file for one of their own between its creation and the
/// engine reading it (the image is then encrypted with a passphrase they know), plant
/// `.spec.json.tmp` as a symlink to any file (the console, root, overwrote it with the spec) or
/// write `spec.json` (the runner runs its command as root). Refused (exit 4) before any secret is
/// written or any command run.
#[test]
fn a_job_directory_others_can_write_is_refused() {
    if !is_root() {
        eprintln!("skipping: needs root (chown of the job directory)");
        return;
    }
    let dir = TempDir::new("adv-jd-shared");
    let (eng, ran) = marker_engine(&dir);
    let victim = dir.p("victim");
    std::fs::write(&victim, b"precious").unwrap();
    for (tag, mode, owner) in [("world", 0o777, 0u32), ("other", 0o755, 65534u32)] {
        let jd = dir.p(tag);
        std::fs::create_dir(&jd).unwrap();
        std::fs::set_permissions(&jd, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&jd, Some(owner), Some(owner)).unwrap();
        // What the other user planted beforehand.
        std::os::unix::fs::symlink(&victim, jd.join(".spec.json.tmp")).unwrap();
        let e = jobdir::start_job(&jd, &spec(&["x"]), Some(b"pass words"), None, no_launch)
            .expect_err("a shared job directory was used");
        assert_eq!(e.kind, ErrorKind::Refused, "{tag}: {e}");
        assert!(
            !jd.join(PASSPHRASE_FILE).exists(),
            "{tag}: a secret was written"
        );
        assert!(!jd.join("lock").exists(), "{tag}: the lock was left");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{tag}");
        // The runner on such a directory runs nothing it finds there.
        std::fs::write(
            jd.join("spec.json"),
            serde_json::to_vec(&spec(&["clone"])).unwrap(),
        )
        .unwrap();
        let o = run_job(&jd, Some(&eng));
        assert_exit(&o, 4);
        assert!(!ran.exists(), "{tag}: the runner ran a planted spec");
        assert!(!jd.join("result.json").exists(), "{tag}");
    }
    // A directory made by the console itself is private to it.
    let made = dir.p("made/job");
    jobdir::start_job(&made, &spec(&["x"]), None, None, no_launch).unwrap();
    let m = std::fs::metadata(&made).unwrap();
    assert_eq!(m.uid(), nix_euid());
    assert_eq!(
        m.mode() & 0o022,
        0,
        "the job directory is writable by others"
    );
}

fn nix_euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap()
        .parse()
        .unwrap()
}

/// Puts something at a path.
type Plant<'a> = Box<dyn Fn(&Path) + 'a>;

/// The secret files' names taken beforehand: a symlink to a file (and to the source's device
/// node), a hard link of a file, a FIFO. The secret goes into a new 0600 file of its own; what
/// the old name pointed at is untouched; nothing blocks on the FIFO. A directory in the way
/// refuses the start and releases the lock.
#[test]
fn secret_file_names_taken_beforehand() {
    let dir = TempDir::new("adv-jd-names");
    let victim = dir.p("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let src = dir.p("src.img");
    data_file(&src, 2 * MIB, 3);
    let lp = if is_root() { Loop::attach(&src) } else { None };
    let before = sha256(&src);
    let mut planted: Vec<(&str, Plant)> = vec![
        (
            "symlink to a file",
            Box::new(|p: &Path| std::os::unix::fs::symlink(dir.p("victim"), p).unwrap()),
        ),
        (
            "hard link of a file",
            Box::new(|p: &Path| std::fs::hard_link(dir.p("victim"), p).unwrap()),
        ),
        (
            "FIFO",
            Box::new(|p: &Path| {
                run(Command::new("mkfifo").arg(p));
            }),
        ),
    ];
    if let Some(l) = &lp {
        let dev = PathBuf::from(&l.dev);
        planted.push((
            "symlink to the source's device node",
            Box::new(move |p: &Path| std::os::unix::fs::symlink(&dev, p).unwrap()),
        ));
    }
    for name in [PASSPHRASE_FILE, "credentials"] {
        for (what, plant) in &planted {
            let td = TempDir::new("adv-jd-n");
            let jd = private_job_dir(&td);
            plant(&jd.join(name));
            let creds = JobCredentials::Text("[nas/x]\nuser = u\npassword = pw secret\n".into());
            let (secret, c) = if name == PASSPHRASE_FILE {
                (Some(&b"pass words"[..]), None)
            } else {
                (None, Some(&creds))
            };
            jobdir::start_job(&jd, &spec(&["x"]), secret, c, no_launch)
                .unwrap_or_else(|e| panic!("{name} as a {what}: {e}"));
            let p = jd.join(name);
            let m = std::fs::symlink_metadata(&p).unwrap();
            assert!(m.is_file(), "{name} as a {what}: not a regular file now");
            assert_eq!(m.mode() & 0o7777, 0o600, "{name} as a {what}");
            assert_eq!(m.nlink(), 1, "{name} as a {what}: shares its inode");
            let want: &[u8] = if name == PASSPHRASE_FILE {
                b"pass words"
            } else {
                b"[nas/x]\nuser = u\npassword = pw secret\n"
            };
            assert_eq!(std::fs::read(&p).unwrap(), want, "{name} as a {what}");
            assert_eq!(
                std::fs::read(&victim).unwrap(),
                b"precious",
                "{name} as a {what}"
            );
            assert_eq!(
                sha256(&src),
                before,
                "{name} as a {what}: the source changed"
            );
        }
        // A directory where the file goes: refused, nothing left behind, lock released.
        let td = TempDir::new("adv-jd-d");
        let jd = private_job_dir(&td);
        std::fs::create_dir(jd.join(name)).unwrap();
        std::fs::write(jd.join(name).join("keep"), b"k").unwrap();
        let creds = JobCredentials::Text("[nas/x]\npassword = pw\n".into());
        let r = if name == PASSPHRASE_FILE {
            jobdir::start_job(&jd, &spec(&["x"]), Some(b"pw"), None, no_launch)
        } else {
            jobdir::start_job(&jd, &spec(&["x"]), None, Some(&creds), no_launch)
        };
        assert!(r.is_err(), "{name} as a directory: started");
        assert!(!jd.join("lock").exists(), "{name}: the lock was left");
        assert!(!jd.join("spec.json").exists(), "{name}: a spec was left");
        assert_eq!(std::fs::read(jd.join(name).join("keep")).unwrap(), b"k");
    }
    drop(lp);
    assert_eq!(sha256(&src), before);
}

/// A failed start (the runner cannot be launched) leaves neither secret behind.
#[test]
fn a_failed_start_leaves_no_secret() {
    let dir = TempDir::new("adv-jd-fail");
    let jd = private_job_dir(&dir);
    let creds = JobCredentials::Text("[nas/x]\npassword = pw secret\n".into());
    let r = jobdir::start_job(
        &jd,
        &spec(&["x"]),
        Some(b"pass words"),
        Some(&creds),
        |_| Err(lifeboat::Error::unsupported("no runner")),
    );
    assert_eq!(r.unwrap_err().kind, ErrorKind::Unsupported);
    assert!(files_containing(&jd, b"pass words").is_empty());
    assert!(files_containing(&jd, b"pw secret").is_empty());
    assert!(!jd.join("lock").exists());
}

/// The other files the console and the runner write in the job directory, their names taken
/// beforehand by symlinks to a file that must not change (as a stale entry or another writer
/// could leave them): the spec's and the progress's temporary names, the pid, the log, cancel,
/// ack. None is followed.
#[test]
fn job_files_never_follow_a_symlink() {
    let dir = TempDir::new("adv-jd-links");
    let (eng, ran) = marker_engine(&dir);
    let victim = dir.p("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let jd = private_job_dir(&dir);
    let link = |n: &str| {
        let p = jd.join(n);
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(&victim, p).unwrap();
    };
    link(".spec.json.tmp");
    jobdir::start_job(&jd, &spec(&["x"]), None, None, no_launch).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "spec tmp");
    assert_eq!(jobdir::snapshot(&jd).unwrap().spec.args, vec!["x"]);
    for n in [".progress.json.tmp", ".pid.tmp", ".result.json.tmp", "log"] {
        link(n);
    }
    let o = run_job(&jd, Some(&eng));
    assert_exit(&o, 0);
    assert!(ran.exists());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "runner files");
    let snap = jobdir::snapshot(&jd).unwrap();
    assert_eq!(snap.result.unwrap().exit_code, 0);
    assert_eq!(snap.progress.unwrap().done_bytes, 1);
    for n in ["cancel", "ack", ".cancel.tmp", ".ack.tmp"] {
        link(n);
    }
    let _ = jobdir::cancel(&jd);
    jobdir::ack(&jd);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "cancel / ack");
}

/// An encrypted image made through the runner exactly as the console starts it, then a job
/// given a wrong passphrase: the passphrase reaches the engine (the image opens with it), and is
/// in no file of the job directory afterwards — not the spec, the log, the progress, the result
/// — nor on any command line; the passphrase file is gone when the job ended.
#[test]
fn the_passphrase_is_in_no_job_file_and_gone_after_the_job() {
    let dir = TempDir::new("adv-jd-crypt");
    let jd = private_job_dir(&dir);
    let src = dir.p("src.img");
    data_file(&src, 4 * MIB, 9);
    let before = sha256(&src);
    let img = dir.p("out.lbi");
    let pw = jd.join(PASSPHRASE_FILE);
    let secret = b"correct horse 6 battery";
    let sp = spec(&[
        "image",
        "create",
        s(&src),
        s(&img),
        "--encrypt",
        "--passphrase-file",
        s(&pw),
        "--json",
    ]);
    jobdir::start_job(&jd, &sp, Some(secret), None, no_launch).unwrap();
    assert!(!std::fs::read_to_string(jd.join("spec.json"))
        .unwrap()
        .contains("correct horse"));
    let o = run_job(&jd, None);
    assert_exit(&o, 0);
    let r = jobdir::snapshot(&jd).unwrap().result.unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert!(!pw.exists(), "the passphrase file outlived the job");
    assert_eq!(
        files_containing(&jd, b"correct horse"),
        Vec::<PathBuf>::new()
    );
    assert_eq!(files_containing(&jd, b"battery"), Vec::<PathBuf>::new());
    // The image is encrypted with exactly that passphrase.
    let pf = dir.p("pf");
    std::fs::write(&pf, secret).unwrap();
    assert_exit(
        &lifeboat(&["image", "verify", s(&img), "--passphrase-file", s(&pf)]),
        0,
    );
    // A wrong passphrase: refused by the image, and said nowhere.
    let s2 = spec(&[
        "image",
        "verify",
        s(&img),
        "--passphrase-file",
        s(&pw),
        "--json",
    ]);
    jobdir::start_job(&jd, &s2, Some(b"wrong staple 7 guess"), None, no_launch).unwrap();
    let o = run_job(&jd, None);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let r = jobdir::snapshot(&jd).unwrap().result.unwrap();
    assert_eq!(r.exit_code, 5);
    assert_eq!(
        r.report.as_ref().and_then(|v| v["error"]["kind"].as_str()),
        Some("wrong_passphrase"),
        "{r:?}"
    );
    assert!(!pw.exists());
    assert_eq!(files_containing(&jd, b"staple 7"), Vec::<PathBuf>::new());
    assert_eq!(sha256(&src), before, "the source changed");
}

/// A share password typed into the console reaches a job through `credentials`; the share
/// hangs up (a listener that closes every connection): the job fails, and the password is in no file of
/// the job directory, and the credentials file is gone.
#[test]
fn a_typed_share_password_is_in_no_job_file() {
    if !is_root() {
        eprintln!("skipping: needs root (a cifs mount is tried)");
        return;
    }
    let dir = TempDir::new("adv-jd-smb");
    let jd = private_job_dir(&dir);
    let src = dir.p("src.img");
    data_file(&src, 2 * MIB, 4);
    let before = sha256(&src);
    // Something answers on the port (and hangs up), so the job goes as far as the mount
    // itself, whose options carry the password.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    let creds = JobCredentials::Text(
        "[127.0.0.1/share]\nuser = alice\npassword = hunter2 typed pw\n".into(),
    );
    let url = format!("smb://alice@127.0.0.1:{port}/share/x.lbi");
    let sp = spec(&["image", "create", s(&src), &url, "--json"]);
    jobdir::start_job(&jd, &sp, None, Some(&creds), no_launch).unwrap();
    let o = run_job(&jd, None);
    let r = jobdir::snapshot(&jd).unwrap().result.unwrap();
    assert_ne!(r.exit_code, 0, "{r:?} {}", stderr(&o));
    assert!(!jd.join("credentials").exists());
    assert_eq!(files_containing(&jd, b"hunter2"), Vec::<PathBuf>::new());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("hunter2"));
    assert_eq!(sha256(&src), before);
}
