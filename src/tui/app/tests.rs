//! Unit tests of the console's flows: keys in, screens and commands out.
use super::*;
use crate::devices::fixtures::machine;

fn app() -> App {
    let mut a = App::new(true, "t".into(), "/run/lifeboat/job".into());
    a.update(Event::Disks(Ok(machine())));
    a
}

fn keys(a: &mut App, ks: &[Key]) -> Vec<Command> {
    ks.iter().flat_map(|k| a.update(Event::Key(*k))).collect()
}

fn typed(a: &mut App, s: &str) -> Vec<Command> {
    s.chars()
        .flat_map(|c| a.update(Event::Key(Key::Char(c))))
        .collect()
}

#[test]
fn clone_flow_removes_source_and_requires_typing_the_target() {
    let mut a = app();
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.screen, Screen::Menu);
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.screen, Screen::Source);
    assert_eq!(a.pick_sel, 0);
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.screen, Screen::Target);
    let t = a.targets();
    assert!(
        t.iter().all(|(d, _)| d.name != "sda"),
        "source removed from targets"
    );
    let names: Vec<_> = t
        .iter()
        .map(|(d, r)| (d.name.as_str(), r.is_some()))
        .collect();
    assert_eq!(
        names,
        vec![("nvme0n1", false), ("sdb", true), ("sdc", true)]
    );
    // The refused USB boot stick cannot be picked.
    keys(&mut a, &[Key::Char('j'), Key::Enter]);
    assert_eq!(a.screen, Screen::Target);
    assert!(a.message.as_ref().unwrap().contains("boot disk"));
    keys(&mut a, &[Key::Char('k'), Key::Enter]);
    assert_eq!(a.screen, Screen::Confirm);
    assert_eq!(a.target.as_ref().unwrap().name, "nvme0n1");
    // Enter without typing, or with a wrong name, does nothing.
    assert!(keys(&mut a, &[Key::Enter]).is_empty());
    typed(&mut a, "nvme0n");
    assert!(keys(&mut a, &[Key::Enter]).is_empty());
    assert!(a.message.as_ref().unwrap().contains("nvme0n1"));
    typed(&mut a, "1");
    let cmds = keys(&mut a, &[Key::Enter]);
    let Command::StartJob(spec) = &cmds[0] else {
        panic!("{cmds:?}")
    };
    assert_eq!(
        spec.args,
        [
            "clone",
            "/dev/sda",
            "/dev/nvme0n1",
            "--yes",
            "--map",
            "/run/lifeboat/job/map",
            "--json"
        ]
    );
    assert_eq!(a.screen, Screen::Progress);
}

#[test]
fn q_and_question_mark_are_text_while_typing() {
    let mut a = app();
    keys(&mut a, &[Key::Enter, Key::Enter, Key::Enter, Key::Enter]);
    assert_eq!(a.screen, Screen::Confirm);
    typed(&mut a, "q?");
    assert_eq!(a.typed, "q?");
    assert_eq!(a.overlay, Overlay::None);
    keys(&mut a, &[Key::Backspace, Key::Backspace, Key::Esc]);
    assert_eq!(a.screen, Screen::Target);
    keys(&mut a, &[Key::Esc, Key::Esc]);
    assert_eq!(a.screen, Screen::Menu);
}

#[test]
fn help_and_quit_ask() {
    let mut a = app();
    keys(&mut a, &[Key::Char('?')]);
    assert_eq!(a.overlay, Overlay::Help);
    keys(&mut a, &[Key::Esc]);
    assert_eq!(a.overlay, Overlay::None);
    assert!(keys(&mut a, &[Key::Char('q'), Key::Char('n')]).is_empty());
    assert_eq!(
        keys(&mut a, &[Key::Char('q'), Key::Char('y')]),
        vec![Command::Quit]
    );
}

fn snap(running: bool, result: Option<i32>) -> JobSnapshot {
    JobSnapshot {
        spec: JobSpec {
            id: "j1".into(),
            kind: "clone".into(),
            title: "Clone sda -> nvme0n1".into(),
            args: vec![],
            details: vec![],
            total_bytes: 100,
            partitions: vec![],
        },
        progress: None,
        result: result.map(|c| crate::jobs::jobdir::JobResult {
            exit_code: c,
            cancelled: false,
            report: None,
            error: None,
            elapsed_secs: 1,
        }),
        running,
        cancel_requested: false,
        acked: false,
        file_map: None,
        log_tail: vec![],
    }
}

#[test]
fn other_console_follows_and_cancel_asks_once() {
    let mut a = app();
    a.update(Event::Job(Some(snap(true, None))));
    assert_eq!(a.screen, Screen::Progress);
    // q does not leave a running job.
    keys(&mut a, &[Key::Char('q')]);
    assert_eq!(a.screen, Screen::Progress);
    assert!(keys(&mut a, &[Key::Char('c'), Key::Char('n')]).is_empty());
    assert_eq!(
        keys(&mut a, &[Key::Char('c'), Key::Char('y')]),
        vec![Command::CancelJob]
    );
    a.update(Event::Job(Some(snap(false, Some(0)))));
    assert_eq!(a.screen, Screen::Result);
    assert!(keys(&mut a, &[Key::Char('x')]).is_empty());
    assert_eq!(keys(&mut a, &[Key::Char('p')]), vec![Command::PowerOff]);
    assert_eq!(keys(&mut a, &[Key::Char('r')]), vec![Command::Reboot]);
    assert_eq!(keys(&mut a, &[Key::Char('n')]), vec![Command::AckResult]);
    assert_eq!(a.screen, Screen::Menu);
}

#[test]
fn restore_flow_uses_partition_image_and_refuses_its_disk() {
    let mut a = app();
    keys(&mut a, &[Key::Enter, Key::Char('4')]);
    assert_eq!(a.screen, Screen::Location);
    let places = a.places();
    // sda1, sda3, sda4, sdb1, sdc1 have filesystems; then "add a network place" and the host
    // path entry.
    assert_eq!(places.len(), 7);
    assert_eq!(places[5].kind, PlaceKind::AddNetwork);
    // Pick sdc1 (index 4), type the path.
    keys(&mut a, &[Key::Char('G'), Key::Up, Key::Up, Key::Enter]);
    assert_eq!(a.loc.field, LocField::Path);
    typed(&mut a, "pc.lbi");
    let cmds = keys(&mut a, &[Key::Enter]);
    // The image's header is read; not encrypted: the passphrase step passes by itself.
    assert_eq!(a.screen, Screen::Passphrase);
    assert_eq!(cmds, [Command::ProbeImage("sdc1:/lifeboat/pc.lbi".into())]);
    a.update(Event::Probed("sdc1:/lifeboat/pc.lbi".into(), Ok(false)));
    assert_eq!(a.screen, Screen::Target);
    assert_eq!(a.image.as_deref(), Some("sdc1:/lifeboat/pc.lbi"));
    let t = a.targets();
    let sdc = t.iter().find(|(d, _)| d.name == "sdc").unwrap();
    assert_eq!(sdc.1.as_deref(), Some("it holds the image"));
    keys(&mut a, &[Key::Home, Key::Enter]);
    assert_eq!(a.target.as_ref().unwrap().name, "sda");
    typed(&mut a, "sda");
    let cmds = keys(&mut a, &[Key::Enter]);
    let Command::StartJob(spec) = &cmds[0] else {
        panic!()
    };
    assert_eq!(
        spec.args,
        [
            "image",
            "restore",
            "sdc1:/lifeboat/pc.lbi",
            "/dev/sda",
            "--yes",
            "--json"
        ]
    );
    // The console's command line is the CLI's own: it parses back into the same command.
    assert_eq!(
        crate::cli::parse_argv(&spec.args),
        Some(crate::cli::Cmd::Image(crate::image::ImageCmd::Restore {
            image: "sdc1:/lifeboat/pc.lbi".into(),
            target: "/dev/sda".into(),
            yes: true,
            zero_free: false,
            discard: false,
            map: None,
            passphrase_file: None,
            json: true,
        }))
    );
}

#[test]
fn image_create_refuses_the_source_disk_and_needs_no_typing() {
    let mut a = app();
    keys(&mut a, &[Key::Enter, Key::Char('2'), Key::Enter]);
    assert_eq!(a.screen, Screen::Location);
    let places = a.places();
    assert!(places[0].refused.is_some(), "sda1 is on the source");
    // Selection starts on the first usable place: sdc1 (sdb1 is the boot stick).
    assert_eq!(places[a.loc.sel].part().unwrap().name, "sdc1");
    keys(&mut a, &[Key::Enter, Key::Enter]);
    // "Encrypt?" No is the default.
    assert_eq!(a.screen, Screen::Passphrase);
    assert!(!a.pass.encrypt);
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.screen, Screen::Confirm);
    let cmds = keys(&mut a, &[Key::Enter]);
    let Command::StartJob(spec) = &cmds[0] else {
        panic!("{cmds:?}")
    };
    assert_eq!(
        spec.args,
        [
            "image",
            "create",
            "/dev/sda",
            "sdc1:/lifeboat/WD-WCC2EAK80291.lbi",
            "--json"
        ]
    );
}

#[test]
fn incremental_needs_a_parent() {
    let mut a = app();
    keys(
        &mut a,
        &[Key::Enter, Key::Char('3'), Key::Enter, Key::Enter],
    );
    assert_eq!(a.loc.field, LocField::Parent);
    keys(&mut a, &[Key::Tab, Key::Enter]);
    assert!(a.message.as_ref().unwrap().contains("parent"));
    typed(&mut a, "/lifeboat/full.lbi");
    let cmds = keys(&mut a, &[Key::Enter]);
    // The parent's header is read (an encrypted parent needs its passphrase).
    assert_eq!(
        cmds,
        [Command::ProbeImage("sdc1:/lifeboat/full.lbi".into())]
    );
    a.update(Event::Probed("sdc1:/lifeboat/full.lbi".into(), Ok(false)));
    assert_eq!(a.screen, Screen::Confirm);
    let cmds = keys(&mut a, &[Key::Enter]);
    let Command::StartJob(spec) = &cmds[0] else {
        panic!("{cmds:?}")
    };
    assert_eq!(
        spec.args[4..6],
        [
            "--parent".to_string(),
            "sdc1:/lifeboat/full.lbi".to_string()
        ]
    );
}

#[test]
fn in_use_disks_are_refused_targets() {
    let mut a = app();
    let mut m = std::collections::BTreeMap::new();
    m.insert(
        "nvme0n1".to_string(),
        vec!["nvme0n1 is used as swap".to_string()],
    );
    a.update(Event::InUse(m));
    keys(&mut a, &[Key::Enter, Key::Enter, Key::Enter]);
    let t = a.targets();
    assert_eq!(t[0].1.as_deref(), Some("nvme0n1 is used as swap"));
    keys(&mut a, &[Key::Home, Key::Enter]);
    assert_eq!(a.screen, Screen::Target);
}

#[test]
fn removed_source_sends_the_flow_back() {
    let mut a = app();
    keys(&mut a, &[Key::Enter, Key::Enter, Key::Enter]);
    assert_eq!(a.screen, Screen::Target);
    let rest: Vec<Disk> = machine().into_iter().filter(|d| d.name != "sda").collect();
    a.update(Event::Disks(Ok(rest)));
    assert_eq!(a.screen, Screen::Source);
    assert!(a.message.as_ref().unwrap().contains("removed"));
}
