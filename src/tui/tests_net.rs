//! The console's network screens: adding an SMB/NFS place from the image-location screen (the
//! password masked on screen and kept out of every command, spec and debug print; the place
//! checked in the background, listed with its free space, refused when too full), the job's
//! credentials, and the network settings screen (adapters, DHCP or a static address).
use super::app::{App, Command, Event, JobKind, NetField, Screen, ShareInfo};
use super::keys::Key;
use super::tests::{app, keys, render_buf, snapshot, text, usage};
use crate::jobs::jobdir::JobCredentials;
use crate::net::{NetConfig, Nic};
use std::net::Ipv4Addr;
use std::path::PathBuf;

const PASSWORD: &str = "s3cr3t pw#1";
const URL: &str = "smb://alice@nas.local/backups/pc";

/// Keys pressed one by one, every command they gave.
fn press(a: &mut App, ks: &[Key]) -> Vec<Command> {
    ks.iter().flat_map(|k| a.update(Event::Key(*k))).collect()
}

fn typed(a: &mut App, s: &str) -> Vec<Command> {
    s.chars()
        .flat_map(|c| a.update(Event::Key(Key::Char(c))))
        .collect()
}

/// A full image of sda: on the location screen with the source's plan read.
fn at_location() -> App {
    let mut a = app();
    keys(&mut a, &[Key::Enter, Key::Char('2'), Key::Enter]);
    assert_eq!(a.screen, Screen::Location);
    a.update(Event::Usage(PathBuf::from("/dev/sda"), Ok(usage())));
    a
}

/// Selects the "add a network place" row and opens it.
fn open_add(a: &mut App) {
    let i = a
        .places()
        .iter()
        .position(|p| p.kind == super::app::PlaceKind::AddNetwork)
        .expect("the add row is offered");
    a.loc.sel = i;
    keys(a, &[Key::Enter]);
    assert_eq!(a.screen, Screen::NetAdd);
}

fn assert_no_password(what: &str, s: &str) {
    assert!(
        !s.contains(PASSWORD) && !s.contains("s3cr3t"),
        "{what} shows the password: {s}"
    );
}

#[test]
fn a_network_place_is_added_with_a_masked_password_and_takes_the_image() {
    let mut a = at_location();
    open_add(&mut a);
    snapshot("net_add_empty_80x24", &a, 80, 24);
    // q and ? are text here.
    assert!(a.typing());
    assert!(typed(&mut a, URL).is_empty());
    // Enter on the URL of an SMB user asks for the password first.
    assert!(press(&mut a, &[Key::Enter]).is_empty());
    assert_eq!(a.net_form.field, NetField::Password);
    typed(&mut a, PASSWORD);
    let t = text(&snapshot("net_add_80x24", &a, 80, 24));
    assert_no_password("the screen", &t);
    assert!(t.contains(&"*".repeat(PASSWORD.len())), "{t}");
    assert_no_password("the state's debug print", &format!("{:?}", a.net_form));
    let cmds = press(&mut a, &[Key::Enter]);
    let [Command::CheckShare { url, login }] = &cmds[..] else {
        panic!("{cmds:?}")
    };
    assert_eq!(url, URL);
    let l = login.as_ref().unwrap();
    assert_eq!(
        (l.user.as_deref(), l.password.as_deref()),
        (Some("alice"), Some(PASSWORD))
    );
    assert_no_password("the command's debug print", &format!("{cmds:?}"));
    assert!(a.net_form.checking);
    snapshot("net_add_connecting_80x24", &a, 80, 24);
    // Keys wait while connecting.
    assert!(press(&mut a, &[Key::Enter, Key::Esc]).is_empty());
    assert_eq!(a.screen, Screen::NetAdd);
    // An answer for another URL is ignored.
    a.update(Event::ShareChecked(
        "smb://x/y".into(),
        Ok(ShareInfo {
            free_bytes: 1,
            what: "x".into(),
        }),
    ));
    assert_eq!(a.screen, Screen::NetAdd);
    a.update(Event::ShareChecked(
        URL.into(),
        Ok(ShareInfo {
            free_bytes: 700 << 30,
            what: "//nas.local/backups (SMB 3.1.1)".into(),
        }),
    ));
    assert_eq!(a.screen, Screen::Location);
    assert!(
        a.net_form.password.is_empty(),
        "the form forgot the password"
    );
    let places = a.places();
    let sel = &places[a.loc.sel];
    assert_eq!(sel.net().unwrap().url, URL);
    assert!(sel.refused.is_none());
    let t = text(&snapshot("location_network_80x24", &a, 80, 24));
    assert!(t.contains("700.0 GiB free"), "{t}");
    assert_no_password("the location screen", &t);
    keys(&mut a, &[Key::Enter]);
    assert!(text(&render_buf(&a, 80, 24)).contains("path in that network place"));
    // The encryption step: not encrypted (Enter on "No").
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.screen, Screen::Passphrase);
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.screen, Screen::Confirm);
    assert_eq!(
        a.image.as_deref(),
        Some("smb://alice@nas.local/backups/pc/lifeboat/WD-WCC2EAK80291.lbi")
    );
    let cmds = press(&mut a, &[Key::Enter]);
    let [Command::StartJob(spec)] = &cmds[..] else {
        panic!("{cmds:?}")
    };
    assert_eq!(
        spec.args,
        [
            "image",
            "create",
            "/dev/sda",
            "smb://alice@nas.local/backups/pc/lifeboat/WD-WCC2EAK80291.lbi",
            "--json"
        ]
    );
    assert_no_password("the job spec", &serde_json::to_string(spec).unwrap());
    // The job gets the typed login as a credentials file (written 0600 by jobdir), the
    // console's own --credentials location only when nothing was typed.
    let Some(JobCredentials::Text(file)) = a.job_credentials(Some("label=X:/c".into())) else {
        panic!("no typed credentials for the job")
    };
    let c = crate::net::cred::Credentials::parse(&file).unwrap();
    let l = c.find("nas.local", "backups", Some("alice")).unwrap();
    assert_eq!(l.password.as_deref(), Some(PASSWORD));
    // The console's own mounts use it while the flow lasts; a new flow forgets it.
    assert_eq!(a.typed_logins().len(), 1);
    assert_eq!(a.typed_logins()[0].0, "nas.local");
    a.update(Event::Key(Key::Char('q')));
    assert!(a.net_places.is_empty());
    assert!(a.typed_logins().is_empty());
}

#[test]
fn a_network_place_too_small_for_the_image_is_refused_before_the_job() {
    let mut a = at_location();
    let need = a.image_estimate().unwrap();
    open_add(&mut a);
    typed(&mut a, "nfs://filer/export/backups");
    // NFS: no password; Enter checks at once.
    let cmds = press(&mut a, &[Key::Enter]);
    assert_eq!(
        cmds,
        [Command::CheckShare {
            url: "nfs://filer/export/backups".into(),
            login: None
        }]
    );
    a.update(Event::ShareChecked(
        "nfs://filer/export/backups".into(),
        Ok(ShareInfo {
            free_bytes: need - 1,
            what: "filer:/export (NFS 4)".into(),
        }),
    ));
    assert_eq!(a.screen, Screen::Location);
    let places = a.places();
    let why = places[a.loc.sel].refused.clone().unwrap();
    assert!(why.starts_with("too full: "), "{why}");
    snapshot("location_network_too_full_80x24", &a, 80, 24);
    assert!(press(&mut a, &[Key::Enter]).is_empty());
    assert_eq!(a.screen, Screen::Location);
    assert_eq!(
        a.message.as_deref(),
        Some(format!("That network place cannot hold the image: {why}.").as_str())
    );
    // With nothing typed, the job gets the console's own credentials location.
    a.image = Some("sdc1:/x.lbi".into());
    assert_eq!(
        a.job_credentials(Some("label=KEYS:/lifeboat.cred".into())),
        Some(JobCredentials::From("label=KEYS:/lifeboat.cred".into()))
    );
    assert_eq!(a.job_credentials(None), None);
}

#[test]
fn a_failed_check_says_why_and_asks_for_the_password_again() {
    let mut a = at_location();
    open_add(&mut a);
    typed(&mut a, URL);
    press(&mut a, &[Key::Enter]);
    typed(&mut a, PASSWORD);
    press(&mut a, &[Key::Enter]);
    let why = "//nas.local/backups: access denied: the user name or password is wrong";
    a.update(Event::ShareChecked(URL.into(), Err(why.into())));
    assert_eq!(a.screen, Screen::NetAdd);
    assert!(!a.net_form.checking);
    assert!(a.net_form.password.is_empty());
    assert_eq!(a.net_form.field, NetField::Password);
    let t = text(&snapshot("net_add_failed_80x24", &a, 80, 24));
    assert!(t.contains("access denied"), "{t}");
    // Esc goes back to the list without a place.
    press(&mut a, &[Key::Esc]);
    assert_eq!(a.screen, Screen::Location);
    assert!(a.places().iter().all(|p| p.net().is_none()));
}

#[test]
fn bad_network_urls_are_refused_on_the_form() {
    for (url, want) in [
        ("ftp://host/x", "smb:// or nfs://"),
        ("nas/backups", "smb:// or nfs://"),
        ("smb://alice:pw@nas/backups", "may not carry a password"),
        ("smb://nas", "a share and a file name"),
        ("nfs://filer/", "an export"),
    ] {
        let mut a = at_location();
        open_add(&mut a);
        typed(&mut a, url);
        assert!(press(&mut a, &[Key::Enter]).is_empty(), "{url}");
        let e = a.net_form.error.clone().unwrap_or_default();
        assert!(e.contains(want), "{url}: {e}");
        assert!(!e.contains("x.lbi"), "{url}: {e}");
        assert_eq!(a.net_form.field, NetField::Url);
    }
    // An SMB user whose password the credentials file cannot carry as typed.
    let mut a = at_location();
    open_add(&mut a);
    typed(&mut a, URL);
    press(&mut a, &[Key::Enter]);
    typed(&mut a, " lead");
    assert!(press(&mut a, &[Key::Enter]).is_empty());
    assert!(a
        .net_form
        .error
        .as_deref()
        .unwrap()
        .contains("cannot start or end with a space"));
    assert!(a.net_form.password.is_empty());
}

#[test]
fn network_places_are_not_offered_to_the_file_browser() {
    let mut a = app();
    keys(&mut a, &[Key::Enter, Key::Char('6')]);
    assert_eq!(a.kind, JobKind::RestoreFiles);
    assert!(a
        .places()
        .iter()
        .all(|p| p.net().is_none() && p.kind != super::app::PlaceKind::AddNetwork));
    // Verify (the engine opens the image) offers them.
    let mut a = app();
    keys(&mut a, &[Key::Enter, Key::Char('5')]);
    assert!(a
        .places()
        .iter()
        .any(|p| p.kind == super::app::PlaceKind::AddNetwork));
}

fn nics() -> Vec<Nic> {
    vec![
        Nic {
            name: "enp3s0".into(),
            mac: Some("52:54:00:12:34:56".into()),
            up: true,
            carrier: Some(true),
            addrs: vec![(Ipv4Addr::new(192, 168, 1, 50), 24)],
        },
        Nic {
            name: "enx00e04c680001".into(),
            mac: Some("00:e0:4c:68:00:01".into()),
            up: true,
            carrier: Some(false),
            addrs: vec![],
        },
        Nic {
            name: "eno1".into(),
            mac: Some("3c:ec:ef:00:11:22".into()),
            up: false,
            carrier: None,
            addrs: vec![],
        },
    ]
}

#[test]
fn network_settings_show_adapters_and_apply_dhcp_or_a_static_address() {
    let mut a = at_location();
    let cmds = press(&mut a, &[Key::Char('n')]);
    assert_eq!(a.screen, Screen::Network);
    assert_eq!(cmds, [Command::ReadNet]);
    snapshot("network_reading_80x24", &a, 80, 24);
    a.update(Event::Nics(nics()));
    let t = text(&snapshot("network_80x24", &a, 80, 24));
    for want in [
        "enp3s0     cable connected    192.168.1.50/24",
        "NO CABLE / no link",
        "off (not started)",
    ] {
        assert!(t.contains(want), "{want}:\n{t}");
    }
    // d applies DHCP to the selected adapter (the second: no cable there).
    press(&mut a, &[Key::Down]);
    assert_eq!(
        press(&mut a, &[Key::Char('d')]),
        [Command::ConfigureNet(
            NetConfig::Dhcp,
            Some("enx00e04c680001".into())
        )]
    );
    assert!(a.net.applying);
    // Keys wait while applying.
    assert!(press(&mut a, &[Key::Char('d')]).is_empty());
    let cmds = a.update(Event::NetConfigured(Ok(
        "enp3s0 192.168.1.50/24 via 192.168.1.1, DNS 192.168.1.1 (DHCP from 192.168.1.1, lease 86400 s)".into(),
    )));
    assert_eq!(cmds, [Command::ReadNet]);
    a.update(Event::Nics(nics()));
    snapshot("network_configured_80x24", &a, 80, 24);
    // A static address: the syntax of lifeboat.net=, checked by the same parser.
    press(&mut a, &[Key::Char('s')]);
    assert!(a.typing());
    typed(&mut a, "10.0.0.5");
    assert!(press(&mut a, &[Key::Enter]).is_empty());
    assert!(
        a.message.as_deref().unwrap().contains("prefix length"),
        "{:?}",
        a.message
    );
    typed(&mut a, "/24,10.0.0.1,10.0.0.1");
    let cmds = press(&mut a, &[Key::Enter]);
    assert_eq!(
        cmds,
        [Command::ConfigureNet(
            NetConfig::parse("10.0.0.5/24,10.0.0.1,10.0.0.1").unwrap(),
            Some("enx00e04c680001".into())
        )]
    );
    a.update(Event::NetConfigured(Err(
        "no network cable connected: enp3s0 reports no link after 15 s".into(),
    )));
    let t = text(&snapshot("network_failed_80x24", &a, 80, 24));
    assert!(t.contains("Failed: no network cable"), "{t}");
    // Esc goes back where it was opened.
    press(&mut a, &[Key::Esc]);
    assert_eq!(a.screen, Screen::Location);
}
