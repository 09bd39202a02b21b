//! The "restore files" flow of the console: pick the image, browse a partition of it (mounted
//! by the event loop: here its events are fed by hand), mark files and folders, pick the
//! destination, confirm; the job's command line; stale events ignored; snapshots of each screen
//! and of the result of a copy with a damaged file.
use super::app::{App, Command, Event, JobKind, OpenedImage, Screen};
use super::keys::Key;
use super::tests::{app, job, keys, render_buf, snapshot, text, type_str};
use crate::jobs::jobdir::JobResult;
use crate::serve::extract::LsEntry;
use std::path::PathBuf;

fn entry(name: &str, kind: &'static str, size: u64) -> LsEntry {
    LsEntry {
        name: name.into(),
        kind,
        size_bytes: size,
        mode: if kind == "dir" { 0o755 } else { 0o644 },
        mtime: 1_700_000_000,
        link_target: (kind == "symlink").then(|| "/usr/share/doc".into()),
    }
}

fn opened(partition: u32) -> OpenedImage {
    OpenedImage {
        root: PathBuf::from("/run/lifeboat/mnt/image-7-0"),
        partition,
        filesystem: "ext4".into(),
        partitions: vec![1, 2],
        size_bytes: 20 << 30,
        free_bytes: 12 << 30,
    }
}

fn list(path: &str) -> Command {
    Command::ListDir {
        root: PathBuf::from("/run/lifeboat/mnt/image-7-0"),
        path: path.into(),
    }
}

/// Menu item 6, the image on sdc1, up to the browser.
fn to_browser() -> (App, Vec<Command>) {
    let mut a = app();
    keys(&mut a, &[Key::Enter, Key::Char('6')]);
    assert_eq!(a.kind, JobKind::RestoreFiles);
    assert_eq!(a.screen, Screen::Location);
    // sdc1 is the fifth place (sda1, sda3, sda4, sdb1, sdc1).
    keys(
        &mut a,
        &[Key::Down, Key::Down, Key::Down, Key::Down, Key::Enter],
    );
    type_str(&mut a, "pc.lbi");
    let cmds = a.update(Event::Key(Key::Enter));
    // Its header is read first: not encrypted, so the passphrase step passes by itself.
    assert_eq!(a.screen, Screen::Passphrase);
    assert_eq!(cmds, [Command::ProbeImage("sdc1:/lifeboat/pc.lbi".into())]);
    let cmds = a.update(Event::Probed("sdc1:/lifeboat/pc.lbi".into(), Ok(false)));
    (a, cmds)
}

#[test]
fn restore_files_flow() {
    let (mut a, cmds) = to_browser();
    assert_eq!(a.screen, Screen::Browse);
    assert_eq!(a.image.as_deref(), Some("sdc1:/lifeboat/pc.lbi"));
    assert_eq!(
        cmds,
        [Command::OpenImage {
            image: "sdc1:/lifeboat/pc.lbi".into(),
            partition: None,
            secret: None,
        }]
    );
    assert!(a.browsing());
    snapshot("browse_opening_80x24", &a, 80, 24);
    // The partition opened: the top directory is listed.
    let c = a.update(Event::ImageOpened(None, Ok(opened(2))));
    assert_eq!(c, [list("/")]);
    // A listing of another directory (a late answer) is ignored.
    a.update(Event::Listing(
        "/tmp".into(),
        Ok(vec![entry("x", "file", 1)]),
    ));
    assert!(a.browse.entries.is_none());
    a.update(Event::Listing(
        "/".into(),
        Ok(vec![
            entry("doc", "symlink", 0),
            entry("etc", "dir", 0),
            entry("home", "dir", 0),
            entry("swapfile", "file", 2 << 30),
        ]),
    ));
    // Mark /etc (Space moves on), open /home.
    keys(&mut a, &[Key::Down, Key::Char(' ')]);
    assert_eq!(a.browse.sel, 2);
    let c = a.update(Event::Key(Key::Enter));
    assert_eq!(c, [list("/home")]);
    assert_eq!(a.browse.cwd, "/home");
    a.update(Event::Listing(
        "/home".into(),
        Ok(vec![entry("ann", "dir", 0)]),
    ));
    let c = a.update(Event::Key(Key::Right));
    assert_eq!(c, [list("/home/ann")]);
    a.update(Event::Listing(
        "/home/ann".into(),
        Ok(vec![
            entry("Photos", "dir", 0),
            entry("letter.odt", "file", 48_213),
            entry("notes.txt", "file", 912),
        ]),
    ));
    // Enter on a file marks it; Space on a folder marks the folder (not opened).
    keys(&mut a, &[Key::Char(' '), Key::Enter]);
    assert_eq!(
        a.browse.marked.iter().collect::<Vec<_>>(),
        ["/etc", "/home/ann/Photos", "/home/ann/letter.odt"]
    );
    snapshot("browse_80x24", &a, 80, 24);
    // Unmark the letter; back up one folder.
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.browse.marked.len(), 2);
    let c = a.update(Event::Key(Key::Left));
    assert_eq!(c, [list("/home")]);
    // c goes on to the destination (on another disk than the image's by default).
    keys(&mut a, &[Key::Char('c')]);
    assert_eq!(a.screen, Screen::Dest);
    assert!(a.browsing());
    assert_eq!(a.dest_loc.path, "/restored");
    snapshot("dest_80x24", &a, 80, 24);
    // The USB stick's partition (sdb1), the folder as offered.
    keys(&mut a, &[Key::Home, Key::Down, Key::Down, Key::Down]);
    keys(&mut a, &[Key::Enter]);
    assert!(a.typing());
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.screen, Screen::Confirm);
    assert_eq!(a.dest.as_deref(), Some("sdb1:/restored"));
    // The image location was not touched by the destination's keys.
    assert_eq!(a.image.as_deref(), Some("sdc1:/lifeboat/pc.lbi"));
    assert_eq!(a.loc.path, "/lifeboat/pc.lbi");
    snapshot("confirm_restore_files_80x24", &a, 80, 24);
    let spec = a.job_spec().unwrap();
    assert_eq!(spec.kind, "image-extract");
    assert_eq!(
        spec.args,
        [
            "image",
            "extract",
            "sdc1:/lifeboat/pc.lbi",
            "/etc",
            "/home/ann/Photos",
            "--to",
            "sdb1:/restored",
            "--partition",
            "2",
            "--json"
        ]
    );
    let c = a.update(Event::Key(Key::Enter));
    assert!(matches!(c.as_slice(), [Command::StartJob(_)]), "{c:?}");
    assert_eq!(a.screen, Screen::Progress);
    assert!(!a.browsing(), "the browser's mount must go");
}

#[test]
fn browser_refusals_partitions_and_back() {
    let (mut a, _) = to_browser();
    // Nothing marked: c says what to do.
    a.update(Event::ImageOpened(None, Ok(opened(1))));
    a.update(Event::Listing("/".into(), Ok(vec![entry("a", "file", 1)])));
    keys(&mut a, &[Key::Char('c')]);
    assert_eq!(a.screen, Screen::Browse);
    assert!(a.message.as_deref().unwrap_or("").contains("Space"));
    // Tab opens the next partition; marks belong to a partition and go.
    keys(&mut a, &[Key::Char(' ')]);
    let c = a.update(Event::Key(Key::Tab));
    assert_eq!(
        c,
        [Command::OpenImage {
            image: "sdc1:/lifeboat/pc.lbi".into(),
            partition: Some(2),
            secret: None,
        }]
    );
    assert!(a.browse.marked.is_empty());
    // An answer for the partition asked before is ignored.
    a.update(Event::ImageOpened(Some(1), Ok(opened(1))));
    assert!(a.browse.opened.is_none());
    // Opening fails: the reason is shown.
    a.update(Event::ImageOpened(
        Some(2),
        Err("no filesystem Lifeboat knows on partition 2 of the image".into()),
    ));
    let t = text(&render_buf(&a, 80, 24));
    assert!(t.contains("no filesystem Lifeboat knows"), "{t}");
    // Esc: back to the image's location, the browser forgotten (the event loop unmounts).
    keys(&mut a, &[Key::Esc]);
    assert_eq!(a.screen, Screen::Location);
    assert!(!a.browsing());
    assert!(a.browse.opened.is_none());
}

#[test]
fn result_of_a_copy_with_a_damaged_file() {
    let mut a = app();
    let mut j = job(false);
    j.spec.kind = JobKind::RestoreFiles.job_name().into();
    j.spec.title = "Restore files from sdc1:/lifeboat/pc.lbi".into();
    j.spec.details = vec![
        "Image:  sdc1:/lifeboat/pc.lbi".into(),
        "Files:  2 item(s) of partition 2".into(),
        "Into:   sdb1:/restored".into(),
    ];
    j.result = Some(JobResult {
        exit_code: 5,
        cancelled: false,
        report: Some(serde_json::json!({
            "ok": false, "image": "sdc1:/lifeboat/pc.lbi", "partition": 2, "filesystem": "ext4",
            "destination": "sdb1:/restored", "files": 41, "dirs": 3, "symlinks": 0,
            "bytes": 73_400_320u64,
            "renamed": [{"path": "/etc", "dest": "etc (2)"}],
            "errors": [{"path": "/home/ann/Photos/2019/IMG_0412.JPG", "side": "read",
                        "message": "read: Input/output error (os error 5)", "errno": 5}],
            "errors_total": 1, "skipped": [], "notes": [], "stopped": null, "exit_code": 5
        })),
        error: None,
        elapsed_secs: 14,
    });
    a.update(Event::Job(Some(j)));
    assert_eq!(a.screen, Screen::Result);
    snapshot("result_restore_files_damaged_80x24", &a, 80, 24);
}
