//! The console and encrypted images: the "Encrypt" choice of a new image with its passphrase
//! typed twice; the passphrase of an encrypted image asked for a restore, a verify, "restore
//! files" and an incremental (its parent), tried in the background before anything starts (a
//! wrong one said and asked again); the job's command line naming only the job directory's
//! passphrase file; the passphrase never drawn, never in a command's `Debug`, never in the
//! job's spec. Snapshots of each screen.
use super::app::{App, Command, Event, JobKind, PassCheck, PassField, Screen};
use super::keys::Key;
use super::tests::{app, keys, render_buf, snapshot, text, type_str};

const SECRET: &str = "correct horse battery";
const IMG: &str = "sdc1:/lifeboat/pc.lbi";

/// What must never show the passphrase: the screen at two sizes.
fn assert_hidden(a: &App) {
    for (w, h) in [(80, 24), (120, 40)] {
        let t = text(&render_buf(a, w, h));
        assert!(!t.contains("horse"), "the passphrase is on screen:\n{t}");
    }
}

/// A full image of sda onto sdc1, up to the passphrase step.
fn to_encrypt_choice() -> App {
    let mut a = app();
    keys(
        &mut a,
        &[
            Key::Enter,
            Key::Char('2'),
            Key::Enter,
            Key::Enter,
            Key::Enter,
        ],
    );
    assert_eq!(a.screen, Screen::Passphrase);
    assert_eq!(a.pass.field, PassField::Choice);
    a
}

#[test]
fn encrypted_full_image_asks_twice_and_names_only_the_file() {
    let mut a = to_encrypt_choice();
    keys(&mut a, &[Key::Down]);
    assert!(a.pass.encrypt);
    // Choosing "Yes" goes to the passphrase field; letters are text there ('q' does not quit).
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.pass.field, PassField::First);
    assert!(a.typing());
    type_str(&mut a, SECRET);
    snapshot("passphrase_new_80x24", &a, 80, 24);
    assert_hidden(&a);
    // Enter on an empty second field: asked for it.
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.pass.field, PassField::Second);
    // A different second passphrase: both asked again, nothing kept.
    type_str(&mut a, "correct horse batteyr");
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.screen, Screen::Passphrase);
    assert_eq!(a.pass.field, PassField::First);
    assert!(a.pass.first.is_empty() && a.pass.second.is_empty());
    assert!(a.message.as_ref().unwrap().contains("differ"));
    assert!(a.secret.is_none());
    // Backspace takes the last character (a typo fixed).
    type_str(&mut a, SECRET);
    type_str(&mut a, "x");
    keys(&mut a, &[Key::Backspace, Key::Enter]);
    type_str(&mut a, SECRET);
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.screen, Screen::Confirm);
    assert_eq!(a.secret.as_ref().unwrap().bytes(), SECRET.as_bytes());
    snapshot("confirm_image_create_encrypted_80x24", &a, 80, 24);
    assert_hidden(&a);
    let cmds = a.update(Event::Key(Key::Enter));
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
            "--encrypt",
            "--passphrase-file",
            "/run/lifeboat/job/passphrase",
            "--json"
        ]
    );
    // Neither the spec (written to spec.json) nor any command's Debug holds the passphrase.
    let json = serde_json::to_string(spec).unwrap();
    assert!(!json.contains("horse"));
    assert!(!format!("{cmds:?}").contains("horse"));
    assert!(!format!("{:?}", a.pass).contains("horse"));
    // The event loop hands the secret to the job, then the console forgets it.
    assert!(a.secret.is_some());
    a.forget_secret();
    assert!(a.secret.is_none());
}

#[test]
fn going_back_from_the_passphrase_forgets_it() {
    let mut a = to_encrypt_choice();
    keys(&mut a, &[Key::Char('y'), Key::Enter]);
    type_str(&mut a, SECRET);
    keys(&mut a, &[Key::Enter]);
    type_str(&mut a, SECRET);
    keys(&mut a, &[Key::Enter, Key::Esc]);
    // Back from the confirmation: the passphrase is asked again.
    assert_eq!(a.screen, Screen::Passphrase);
    assert!(a.secret.is_none());
    assert!(a.pass.first.is_empty());
    // "No" now: a plain image, no passphrase file.
    keys(&mut a, &[Key::BackTab, Key::Char('n'), Key::Enter]);
    assert_eq!(a.screen, Screen::Confirm);
    let spec = a.job_spec().unwrap();
    assert!(!spec
        .args
        .iter()
        .any(|x| x.contains("passphrase") || x == "--encrypt"));
}

/// Selects sdc1 on the location screen and goes to its path field (network places, when the
/// job offers them, follow the partitions: the row is found by name).
fn pick_sdc1(a: &mut App) {
    a.loc.sel = a
        .places()
        .iter()
        .position(|p| p.part().is_some_and(|p| p.name == "sdc1"))
        .unwrap();
    keys(a, &[Key::Enter]);
}

/// Job `key` of the menu with the image `pc.lbi` on sdc1, up to its passphrase step; the
/// header says it is encrypted.
fn to_encrypted_image(key: char) -> App {
    let mut a = app();
    keys(&mut a, &[Key::Enter, Key::Char(key)]);
    pick_sdc1(&mut a);
    type_str(&mut a, "pc.lbi");
    let cmds = a.update(Event::Key(Key::Enter));
    assert_eq!(a.screen, Screen::Passphrase);
    assert_eq!(cmds, [Command::ProbeImage(IMG.into())]);
    snapshot_once(&a, key);
    let cmds = a.update(Event::Probed(IMG.into(), Ok(true)));
    assert!(cmds.is_empty());
    assert_eq!(a.screen, Screen::Passphrase);
    a
}

fn snapshot_once(a: &App, key: char) {
    if key == '4' {
        snapshot("passphrase_reading_80x24", a, 80, 24);
    }
}

/// Types the passphrase and sends it to be tried: the command asks for the check.
fn submit(a: &mut App, s: &str) {
    type_str(a, s);
    let cmds = a.update(Event::Key(Key::Enter));
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    let Command::CheckPassphrase { image, secret } = &cmds[0] else {
        panic!("{cmds:?}")
    };
    assert_eq!(image, IMG);
    assert_eq!(secret.bytes(), s.as_bytes());
    assert!(!format!("{cmds:?}").contains(s));
    assert!(a.pass.checking);
}

#[test]
fn restore_of_an_encrypted_image_checks_the_passphrase_first() {
    let mut a = to_encrypted_image('4');
    assert_eq!(a.kind, JobKind::Restore);
    snapshot("passphrase_image_80x24", &a, 80, 24);
    submit(&mut a, "wrong words");
    snapshot("passphrase_checking_80x24", &a, 80, 24);
    // Keys while checking do not change the field.
    keys(&mut a, &[Key::Char('z')]);
    assert!(a.pass.checking);
    // Wrong: said plainly, asked again, nothing started.
    let cmds = a.update(Event::PassphraseChecked(IMG.into(), PassCheck::Wrong));
    assert!(cmds.is_empty());
    assert_eq!(a.screen, Screen::Passphrase);
    assert!(a.message.as_ref().unwrap().starts_with("Wrong passphrase"));
    assert!(a.pass.first.is_empty());
    snapshot("passphrase_wrong_80x24", &a, 80, 24);
    // A late answer for another image is ignored.
    submit(&mut a, SECRET);
    assert_hidden(&a);
    a.update(Event::PassphraseChecked(
        "sdb1:/x.lbi".into(),
        PassCheck::Opens,
    ));
    assert_eq!(a.screen, Screen::Passphrase);
    a.update(Event::PassphraseChecked(IMG.into(), PassCheck::Opens));
    assert_eq!(a.screen, Screen::Target);
    keys(&mut a, &[Key::Home, Key::Enter]);
    type_str(&mut a, "sda");
    let cmds = a.update(Event::Key(Key::Enter));
    let Command::StartJob(spec) = &cmds[0] else {
        panic!("{cmds:?}")
    };
    assert_eq!(
        spec.args,
        [
            "image",
            "restore",
            IMG,
            "/dev/sda",
            "--yes",
            "--passphrase-file",
            "/run/lifeboat/job/passphrase",
            "--json"
        ]
    );
    assert_eq!(a.secret.as_ref().unwrap().bytes(), SECRET.as_bytes());
    // Back from the target screen: the passphrase step again, asked afresh.
    let mut b = to_encrypted_image('4');
    submit(&mut b, SECRET);
    b.update(Event::PassphraseChecked(IMG.into(), PassCheck::Opens));
    keys(&mut b, &[Key::Esc]);
    assert_eq!(b.screen, Screen::Passphrase);
    assert!(b.secret.is_none());
}

#[test]
fn verify_and_restore_files_of_an_encrypted_image() {
    let mut a = to_encrypted_image('5');
    submit(&mut a, SECRET);
    a.update(Event::PassphraseChecked(IMG.into(), PassCheck::Opens));
    assert_eq!(a.screen, Screen::Confirm);
    let spec = a.job_spec().unwrap();
    assert_eq!(
        spec.args,
        [
            "image",
            "verify",
            IMG,
            "--passphrase-file",
            "/run/lifeboat/job/passphrase",
            "--json"
        ]
    );
    // Restore files: the browser's mount gets the passphrase (in memory), the job its file.
    let mut a = to_encrypted_image('6');
    submit(&mut a, SECRET);
    let cmds = a.update(Event::PassphraseChecked(IMG.into(), PassCheck::Opens));
    assert_eq!(a.screen, Screen::Browse);
    let [Command::OpenImage { image, secret, .. }] = &cmds[..] else {
        panic!("{cmds:?}")
    };
    assert_eq!(image, IMG);
    assert_eq!(secret.as_ref().unwrap().bytes(), SECRET.as_bytes());
    // A failure to read the image is said; the step stays.
    let mut a = to_encrypted_image('5');
    submit(&mut a, SECRET);
    a.update(Event::PassphraseChecked(
        IMG.into(),
        PassCheck::Failed("volume 2 is missing".into()),
    ));
    assert_eq!(a.screen, Screen::Passphrase);
    assert!(a.message.as_ref().unwrap().contains("volume 2 is missing"));
}

#[test]
fn an_unreadable_image_stops_at_the_passphrase_step() {
    let mut a = app();
    keys(&mut a, &[Key::Enter, Key::Char('5')]);
    pick_sdc1(&mut a);
    type_str(&mut a, "pc.lbi");
    a.update(Event::Key(Key::Enter));
    a.update(Event::Probed(
        IMG.into(),
        Err("cannot open the image: no such file".into()),
    ));
    assert_eq!(a.screen, Screen::Passphrase);
    assert!(a.message.as_ref().unwrap().contains("no such file"));
    // Esc back to the location, a new name: read again.
    keys(&mut a, &[Key::Esc]);
    assert_eq!(a.screen, Screen::Location);
}

#[test]
fn an_incremental_asks_the_passphrase_of_its_encrypted_parent() {
    let mut a = app();
    keys(
        &mut a,
        &[Key::Enter, Key::Char('3'), Key::Enter, Key::Enter],
    );
    type_str(&mut a, "/lifeboat/full.lbi");
    let cmds = a.update(Event::Key(Key::Enter));
    let parent = "sdc1:/lifeboat/full.lbi";
    assert_eq!(cmds, [Command::ProbeImage(parent.into())]);
    a.update(Event::Probed(parent.into(), Ok(true)));
    type_str(&mut a, SECRET);
    let cmds = a.update(Event::Key(Key::Enter));
    assert!(matches!(&cmds[..], [Command::CheckPassphrase { image, .. }] if image == parent));
    a.update(Event::PassphraseChecked(parent.into(), PassCheck::Opens));
    assert_eq!(a.screen, Screen::Confirm);
    let spec = a.job_spec().unwrap();
    // An incremental of an encrypted parent is encrypted with its key: no --encrypt.
    assert_eq!(
        spec.args[4..],
        [
            "--parent",
            parent,
            "--passphrase-file",
            "/run/lifeboat/job/passphrase",
            "--json"
        ]
    );
}
