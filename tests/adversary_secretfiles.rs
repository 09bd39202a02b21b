//! The adversary on the small files a job reads its secrets and settings from: the credentials
//! file (`--credentials`, `LIFEBOAT_CREDENTIALS`) and the S3 store's CA file (`s3_ca_file`),
//! each a path or `PARTITION:/path`. Not a regular file (a FIFO would block the job for ever, a
//! device node is a disk, not a file): refused without blocking, exit 2. On a partition of the
//! source: refused, exit 4, nothing mounted (a source is never mounted). Every source is checked
//! unchanged by sha256. Decided on exit codes, never message text.
mod common;

use common::*;
use std::process::{Command, Output, Stdio};

/// Runs lifeboat with `args` and `env`; a run still going after 10 minutes is a hang (killed,
/// and the test fails): never a measure of speed.
fn lb_bounded(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = lifeboat_cmd();
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c.spawn().expect("run lifeboat");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx
            .recv_timeout(std::time::Duration::from_secs(600))
            .is_err()
        {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    });
    let o = child.wait_with_output().unwrap();
    let _ = tx.send(());
    assert!(
        o.status.code().is_some(),
        "lifeboat {args:?} hung (killed): {}",
        stderr(&o)
    );
    o
}

/// A credentials file and an S3 CA file that are FIFOs (nobody writes them), and a credentials
/// file that is the source's own device node: each refused at once (exit 2), nothing blocks;
/// the source is unchanged.
#[test]
fn credentials_and_ca_files_that_are_not_regular_files() {
    let dir = TempDir::new("adv-sf-fifo");
    let src = dir.p("src.img");
    data_file(&src, 2 * MIB, 1);
    let before = sha256(&src);
    let fifo = dir.p("cred.fifo");
    run(Command::new("mkfifo").arg(&fifo));
    // The credentials file a FIFO: by --credentials and by LIFEBOAT_CREDENTIALS.
    let o = lb_bounded(
        &[
            "--credentials",
            s(&fifo),
            "image",
            "create",
            s(&src),
            "s3://bucket/x.lbi",
        ],
        &[],
    );
    assert_exit(&o, 2);
    let o = lb_bounded(
        &["image", "create", s(&src), "s3://bucket/x.lbi"],
        &[("LIFEBOAT_CREDENTIALS", s(&fifo))],
    );
    assert_exit(&o, 2);
    // The CA file a FIFO.
    let ca = dir.p("ca.fifo");
    run(Command::new("mkfifo").arg(&ca));
    let cred = dir.p("cred");
    std::fs::write(
        &cred,
        format!(
            "s3_endpoint = https://127.0.0.1:1\ns3_access_key = AK\ns3_secret_key = SK\n\
             s3_ca_file = {}\n",
            ca.display()
        ),
    )
    .unwrap();
    let o = lb_bounded(
        &[
            "--credentials",
            s(&cred),
            "image",
            "create",
            s(&src),
            "s3://bucket/x.lbi",
        ],
        &[],
    );
    assert_exit(&o, 2);
    // The source's own device node as the credentials file.
    if is_root() {
        if let Some(l) = Loop::attach(&src) {
            let o = lb_bounded(
                &[
                    "--credentials",
                    &l.dev,
                    "image",
                    "create",
                    &l.dev,
                    "s3://bucket/x.lbi",
                ],
                &[],
            );
            assert_exit(&o, 2);
        }
    }
    assert_eq!(sha256(&src), before);
}

/// The credentials file (holding `s3_ca_file`, itself on the same partition) on an ext4
/// partition of the source, its journal needing recovery (as after a crash: a read-only mount
/// without `noload` would replay it, writing the source): an image of that disk to an S3 store
/// is refused (exit 4) before anything is mounted: they were read by mounting the source's
/// partition read-only (twice, the credentials and the CA file), against the rule that a source
/// is never mounted. The source is unchanged.
#[test]
fn credentials_and_ca_on_a_partition_of_the_source() {
    if !root_or_skip() {
        return;
    }
    let dir = TempDir::new("adv-sf-srcpart");
    let sf = source_with_ext4(&dir);
    let lab = format!("ADVC{}", std::process::id() % 100_000);
    run(Command::new("e2label")
        .arg(format!("{}?offset={}", s(&sf), 4 * MIB))
        .arg(&lab));
    // The files, written through debugfs (no mount), then the journal marked as needing
    // recovery.
    let cred = dir.p("cred");
    std::fs::write(
        &cred,
        "s3_endpoint = https://127.0.0.1:1\ns3_access_key = AK\ns3_secret_key = SK\n\
         s3_ca_file = label=LABEL:/ca.pem\n"
            .replace("LABEL", &lab),
    )
    .unwrap();
    let ca = dir.p("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let part = format!("{}?offset={}", s(&sf), 4 * MIB);
    run(Command::new("debugfs")
        .arg("-w")
        .arg(&part)
        .args(["-R", &format!("write {} cred", s(&cred))]));
    run(Command::new("debugfs")
        .arg("-w")
        .arg(&part)
        .args(["-R", &format!("write {} ca.pem", s(&ca))]));
    run(Command::new("debugfs")
        .arg("-w")
        .arg(&part)
        .args(["-R", "feature needs_recovery"]));
    let Some(a) = Loop::attach(&sf) else { return };
    let Some(p) = Loop::partition(&sf, 4 * MIB, 32 * MIB) else {
        return;
    };
    let before = sha256(&sf);
    let mounted_before = mount_lines(&p.dev);
    let o = lb_bounded(
        &[
            "--credentials",
            &format!("label={lab}:/cred"),
            "image",
            "create",
            &a.dev,
            "s3://bucket/x.lbi",
            "--json",
        ],
        &[],
    );
    // Refused: a source is never mounted, not even read-only to read a file.
    assert_exit(&o, 4);
    run(&mut Command::new("sync"));
    assert_eq!(sha256(&sf), before, "the source changed");
    let mounted: Vec<String> = mount_lines(&p.dev)
        .into_iter()
        .filter(|l| !mounted_before.contains(l))
        .collect();
    assert!(
        mounted.is_empty(),
        "the source's partition was mounted: {mounted:?}"
    );
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains(&p.dev),
        "the source's partition is still mounted"
    );
    // The same for a passphrase file there (an encrypted image to a plain file).
    let o = lb_bounded(
        &[
            "image",
            "create",
            &a.dev,
            s(&dir.p("x.lbi")),
            "--encrypt",
            "--passphrase-file",
            &format!("label={lab}:/cred"),
            "--json",
        ],
        &[],
    );
    assert_exit(&o, 4);
    assert!(!dir.p("x.lbi").exists() && !dir.p("x.lbi.partial").exists());
    let mounted: Vec<String> = mount_lines(&p.dev)
        .into_iter()
        .filter(|l| !mounted_before.contains(l))
        .collect();
    assert!(
        mounted.is_empty(),
        "the source's partition was mounted: {mounted:?}"
    );
    run(&mut Command::new("sync"));
    assert_eq!(sha256(&sf), before, "the source changed");
}
