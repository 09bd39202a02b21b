//! Hostile names on the console: a disk's model, serial and labels (a USB device reports any
//! bytes) and the file names of an imaged filesystem, holding terminal controls. ratatui hands
//! every cell's text to the terminal as it is, so the screens must hold no control at all: the
//! names are shown escaped (`\x1b[2J`), the disk still on its own row.
use super::app::{Event, OpenedImage, Screen};
use super::keys::Key;
use super::tests::{app, keys, render_buf, snapshot, type_str};
use crate::devices::fixtures::{disk, machine, part};
use crate::serve::extract::LsEntry;
use ratatui::buffer::Buffer;
use std::path::PathBuf;

const HOSTILE: &str = "\x1b[2J\x1b]0;t\x07\r\n\u{9b}1m\u{7f}\u{202e}";

/// The characters of the screen that would reach the terminal as controls.
fn controls(buf: &Buffer) -> Vec<(u16, u16, String)> {
    let a = buf.area;
    let mut v = Vec::new();
    for y in 0..a.height {
        for x in 0..a.width {
            let s = buf[(x, y)].symbol();
            if s.chars().any(crate::out::unsafe_char) {
                v.push((x, y, s.to_string()));
            }
        }
    }
    v
}

fn hostile_machine() -> Vec<crate::devices::Disk> {
    let mut m = machine();
    let mut usb = disk(
        "sdx",
        32 << 30,
        vec![part(
            "sdx1",
            1 << 20,
            31 << 30,
            "exfat",
            &format!("L{HOSTILE}"),
        )],
    );
    usb.transport = "usb".into();
    usb.removable = true;
    usb.model = Some(format!("WDC WD5000AAKX{HOSTILE}"));
    usb.vendor = Some(format!("V{HOSTILE}"));
    usb.serial = Some(format!("WD-WCC2EAK80291{HOSTILE}"));
    usb.label = Some(format!("D{HOSTILE}"));
    m.push(usb);
    m
}

#[test]
fn hostile_disk_strings_are_escaped_on_every_screen() {
    let mut a = app();
    a.update(Event::Disks(Ok(hostile_machine())));
    for (w, h) in [(80, 24), (120, 40), (200, 50)] {
        let b = render_buf(&a, w, h);
        assert_eq!(controls(&b), vec![], "disks {w}x{h}");
    }
    snapshot("disks_hostile_names_120x40", &a, 120, 40);
    // Every screen the disk's strings reach, selected: the disks list, the clone flow.
    for _ in 0..12 {
        keys(&mut a, &[Key::Down]);
        let b = render_buf(&a, 120, 40);
        assert_eq!(controls(&b), vec![], "disks, moved down");
    }
    keys(&mut a, &[Key::Enter]);
    for k in [Key::Char('1'), Key::Enter, Key::Enter, Key::Enter] {
        keys(&mut a, &[k]);
        let b = render_buf(&a, 120, 40);
        assert_eq!(controls(&b), vec![], "after {k:?} on {:?}", a.screen);
    }
}

#[test]
fn hostile_file_names_are_escaped_in_the_browser() {
    let mut a = app();
    // Menu item 6 (restore files), the image on sdc1, opened, its top folder listed.
    keys(&mut a, &[Key::Enter, Key::Char('6')]);
    keys(
        &mut a,
        &[Key::Down, Key::Down, Key::Down, Key::Down, Key::Enter],
    );
    type_str(&mut a, "pc.lbi");
    a.update(Event::Key(Key::Enter));
    a.update(Event::Probed("sdc1:/lifeboat/pc.lbi".into(), Ok(false)));
    assert_eq!(a.screen, Screen::Browse);
    a.update(Event::ImageOpened(
        None,
        Ok(OpenedImage {
            root: PathBuf::from("/run/lifeboat/mnt/image-7-0"),
            partition: 2,
            filesystem: "ext4".into(),
            partitions: vec![1, 2],
            size_bytes: 20 << 30,
            free_bytes: 12 << 30,
        }),
    ));
    let e = |name: String, kind: &'static str, target: Option<String>| LsEntry {
        name,
        kind,
        size_bytes: 1,
        mode: 0o644,
        mtime: 1_700_000_000,
        link_target: target,
    };
    a.update(Event::Listing(
        "/".into(),
        Ok(vec![
            e(format!("a{HOSTILE}"), "file", None),
            e(format!("d{HOSTILE}"), "dir", None),
            e("l".into(), "symlink", Some(format!("t{HOSTILE}"))),
        ]),
    ));
    let b = render_buf(&a, 120, 30);
    assert_eq!(controls(&b), vec![]);
    snapshot("browse_hostile_names_120x30", &a, 120, 30);
    // Marking keeps the real name (the extract job gets the path as it is in the image).
    keys(&mut a, &[Key::Char(' ')]);
    assert!(
        a.browse.marked.contains(&format!("/a{HOSTILE}")),
        "{:?}",
        a.browse.marked
    );
}
