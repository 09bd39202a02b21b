//! Snapshot tests: every screen and state drawn with ratatui's TestBackend at 80x24 (and some
//! larger), compared with the expected text in `src/tui/snapshots/NAME.txt`. A mismatch fails
//! and writes `NAME.txt.new`; `UPDATE_SNAPSHOTS=1 cargo test tui::` rewrites the expected files.
//!
//! Why not `insta`: this harness is forty lines and does one thing insta would not, the check
//! that every glyph is in the Linux console font; the expected screens stay plain `.txt` files
//! a reviewer reads in a diff as the screen itself. insta's review tool (`cargo insta review`)
//! and inline snapshots would save little here, and cost a dependency tree (insta, similar,
//! console, ...) plus a second tool to install for a workflow `UPDATE_SNAPSHOTS=1` already
//! covers. Revisit if snapshots multiply beyond the TUI.
use super::app::{usage_line, App, Command, Event, JobKind, Overlay, Screen, SourceUsage};
use super::keys::Key;
use crate::devices::fixtures::{disk, machine, part};
use crate::jobs::jobdir::{JobResult, JobSnapshot, JobSpec};
use crate::jobs::Progress;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use ratatui::Terminal;
use std::path::PathBuf;

pub(super) fn render_buf(app: &App, w: u16, h: u16) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| super::view::draw(f, app)).unwrap();
    t.backend().buffer().clone()
}

pub(super) fn text(buf: &Buffer) -> String {
    let a = buf.area;
    let mut out = String::new();
    for y in 0..a.height {
        let mut line = String::new();
        for x in 0..a.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(super) fn snapshot(name: &str, app: &App, w: u16, h: u16) -> Buffer {
    let buf = render_buf(app, w, h);
    let got = text(&buf);
    // Only glyphs the Linux console font has: ASCII, box drawing, block shades, arrows.
    for c in got.chars() {
        let ok = c.is_ascii() || ('\u{2500}'..='\u{257f}').contains(&c) || "█▓▒░↑↓←→".contains(c);
        assert!(
            ok,
            "{name}: glyph {c:?} (U+{:04X}) is not in the console font",
            c as u32
        );
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/tui/snapshots");
    let path = dir.join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &got).unwrap();
        return buf;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    if want != got {
        let _ = std::fs::write(dir.join(format!("{name}.txt.new")), &got);
        panic!(
            "snapshot {name} differs ({}):\n--- expected\n{want}\n--- got\n{got}",
            path.display()
        );
    }
    buf
}

pub(super) fn app() -> App {
    let mut a = App::new(true, "t".into(), "/run/lifeboat/job".into());
    a.update(Event::Disks(Ok(machine())));
    a
}

pub(super) fn keys(a: &mut App, ks: &[Key]) {
    for k in ks {
        a.update(Event::Key(*k));
    }
}

pub(super) fn type_str(a: &mut App, s: &str) {
    for c in s.chars() {
        a.update(Event::Key(Key::Char(c)));
    }
}

/// Finds `needle` on screen and returns the foreground colour of its first cell.
fn fg_of(buf: &Buffer, needle: &str) -> Option<Color> {
    let a = buf.area;
    for y in 0..a.height {
        let line: String = (0..a.width)
            .map(|x| buf[(x, y)].symbol().chars().next().unwrap_or(' '))
            .collect();
        if let Some(i) = line.find(needle) {
            let x = line[..i].chars().count() as u16;
            return Some(buf[(x, y)].fg);
        }
    }
    None
}

#[test]
fn disks_screen() {
    let mut a = app();
    snapshot("disks_80x24", &a, 80, 24);
    keys(&mut a, &[Key::Down, Key::Down]);
    snapshot("disks_boot_medium_80x24", &a, 80, 24);
    snapshot("disks_120x40", &a, 120, 40);
}

#[test]
fn disks_screen_states() {
    let a = App::new(false, "t".into(), "/tmp/j".into());
    snapshot("disks_scanning", &a, 80, 24);
    let mut a = App::new(false, "t".into(), "/tmp/j".into());
    a.update(Event::Disks(Ok(vec![])));
    snapshot("disks_none", &a, 80, 24);
    a.update(Event::Disks(Err(
        "cannot read the block device list (/sys/block): No such file or directory".into(),
    )));
    snapshot("disks_scan_error", &a, 80, 24);
    // Many partitions and many disks still fit at 80x24.
    let parts = (1..=12)
        .map(|i| {
            part(
                &format!("sda{i}"),
                i << 20,
                1 << 20,
                "ext4",
                &format!("part{i}"),
            )
        })
        .collect();
    let mut disks = vec![disk("sda", 32 << 30, parts)];
    disks.extend((0..12).map(|i| disk(&format!("vd{}", (b'a' + i) as char), 1 << 30, vec![])));
    a.update(Event::Disks(Ok(disks)));
    snapshot("disks_many_80x24", &a, 80, 24);
}

#[test]
fn layered_storage_named() {
    use crate::devices::layers::Role;
    let mut win = disk(
        "sda",
        256 << 30,
        vec![
            part("sda1", 1 << 20, 100 << 20, "vfat", "EFI"),
            part("sda2", 101 << 20, 200 << 30, "BitLocker", ""),
            part(
                "sda3",
                (101 << 20) + (200 << 30),
                50 << 30,
                "LVM2_member",
                "",
            ),
        ],
    );
    win.partitions[1].role = Some(Role::BitlockerVolume);
    win.partitions[2].role = Some(Role::LvmPhysicalVolume);
    let mut rst = disk("sdb", 1000 << 30, vec![]);
    rst.fs_type = Some("isw_raid_member".into());
    rst.role = Some(Role::ImsmRaidMember);
    let mut a = App::new(true, "t".into(), "/run/lifeboat/job".into());
    a.update(Event::Disks(Ok(vec![win, rst])));
    let buf = snapshot("disks_layers_80x24", &a, 80, 24);
    assert_eq!(
        fg_of(&buf, "BitLocker: copied whole; recovery key needed"),
        Some(Color::Yellow)
    );
    // A long type name (LVM2_member, 11 characters) widens the filesystem column instead of
    // pushing its row's size out of line with the others.
    let t = text(&buf);
    let ends: Vec<usize> = ["100.0 MiB", "200.0 GiB", "50.0 GiB"]
        .iter()
        .map(|sz| {
            let line = t.lines().find(|l| l.contains(sz)).unwrap();
            line.find(sz).unwrap() + sz.len()
        })
        .collect();
    assert!(ends.windows(2).all(|w| w[0] == w[1]), "{ends:?}\n{t}");
    keys(&mut a, &[Key::Down]);
    let t = text(&render_buf(&a, 80, 24));
    assert!(
        t.contains("Intel RST RAID member: copied whole; clone every member"),
        "{t}"
    );
}

/// `b` on the Disks screen lists an eMMC card's boot partitions as disks of their own; one is
/// then cloned like any disk, and the job's command line carries `--mmc-boot-partitions` so
/// the job's own scan finds it.
#[test]
fn emmc_boot_partitions_as_disks_on_b() {
    let boot = |n: &str| crate::devices::MmcBootPartition {
        name: n.to_string(),
        path: PathBuf::from(format!("/dev/{n}")),
        dev: "179:8".into(),
        size_bytes: 4 << 20,
        read_only: true,
    };
    let mut card = disk("mmcblk0", 29 << 30, vec![]);
    card.transport = "mmc".into();
    card.mmc_boot_partitions = vec![boot("mmcblk0boot0"), boot("mmcblk0boot1")];
    let sdb = disk("sdb", 64 << 30, vec![]);
    let mut a = App::new(true, "t".into(), "/run/lifeboat/job".into());
    a.update(Event::Disks(Ok(vec![card.clone(), sdb.clone()])));
    assert!(text(&render_buf(&a, 80, 24)).contains("b  eMMC boot parts"));
    assert_eq!(
        a.update(Event::Key(Key::Char('b'))),
        vec![Command::MmcBootAsDisks(true)]
    );
    assert!(a.mmc_boot_as_disks);
    // The next scan lists them as disks (as `devices::scan` does with the option on).
    let as_disk = |n: &str| {
        let mut d = disk(n, 4 << 20, vec![]);
        d.transport = "mmc".into();
        d.read_only = true;
        d.model = None;
        d.serial = None;
        d.note = Some(format!(
            "eMMC hardware boot partition of mmcblk0 (firmware or a boot loader lives here on \
             many boards): a separate device, not part of mmcblk0, so a clone or image of \
             mmcblk0 does not include it. It is read-only until `echo 0 > \
             /sys/block/{n}/force_ro` (needed only to write it, as a target)."
        ));
        d
    };
    a.update(Event::Disks(Ok(vec![
        card,
        as_disk("mmcblk0boot0"),
        as_disk("mmcblk0boot1"),
        sdb,
    ])));
    keys(&mut a, &[Key::Down]);
    snapshot("disks_emmc_boot_80x24", &a, 80, 24);
    // Clone mmcblk0boot0 onto sdb.
    keys(&mut a, &[Key::Enter, Key::Enter]);
    assert_eq!(a.screen, Screen::Source);
    while a.pick_sel > 1 {
        keys(&mut a, &[Key::Up]);
    }
    while a.pick_sel < 1 {
        keys(&mut a, &[Key::Down]);
    }
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.source.as_ref().unwrap().name, "mmcblk0boot0");
    let t = a.targets();
    let sdb_at = t.iter().position(|(d, _)| d.name == "sdb").unwrap();
    while a.pick_sel > sdb_at {
        keys(&mut a, &[Key::Up]);
    }
    while a.pick_sel < sdb_at {
        keys(&mut a, &[Key::Down]);
    }
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.screen, Screen::Confirm, "{:?}", a.message);
    type_str(&mut a, "sdb");
    let cmds = a.update(Event::Key(Key::Enter));
    let Some(Command::StartJob(spec)) = cmds.first() else {
        panic!("{cmds:?} {:?}", a.message)
    };
    assert_eq!(
        spec.args[..4],
        [
            "--mmc-boot-partitions",
            "clone",
            "/dev/mmcblk0boot0",
            "/dev/sdb"
        ]
    );
    assert!(matches!(
        crate::cli::parse_argv(&spec.args),
        Some(crate::cli::Cmd::Clone(c)) if c.source == "/dev/mmcblk0boot0"
    ));
    // Back under their card: jobs no longer get the flag.
    let mut b = App::new(true, "t".into(), "/run/lifeboat/job".into());
    b.mmc_boot_as_disks = true;
    b.update(Event::Disks(Ok(vec![disk("sda", 8 << 30, vec![])])));
    assert_eq!(
        b.update(Event::Key(Key::Char('b'))),
        vec![Command::MmcBootAsDisks(false)]
    );
    // No eMMC at all: `b` says so and changes nothing.
    assert!(b.update(Event::Key(Key::Char('b'))).is_empty());
    assert!(!b.mmc_boot_as_disks);
    assert!(b
        .message
        .as_deref()
        .unwrap()
        .contains("No eMMC boot partitions"));
}

/// An eMMC card's hardware boot partitions are named in its details, as not copied with it.
#[test]
fn emmc_boot_partitions_named() {
    let mut m = disk("mmcblk0", 29 << 30, vec![]);
    m.transport = "mmc".into();
    m.mmc_boot_partitions = ["mmcblk0boot0", "mmcblk0boot1"]
        .iter()
        .map(|n| crate::devices::MmcBootPartition {
            name: n.to_string(),
            path: PathBuf::from(format!("/dev/{n}")),
            dev: "179:8".into(),
            size_bytes: 4 << 20,
            read_only: true,
        })
        .collect();
    let mut a = App::new(true, "t".into(), "/run/lifeboat/job".into());
    a.update(Event::Disks(Ok(vec![m])));
    let t = text(&render_buf(&a, 120, 30));
    assert!(
        t.contains("eMMC boot partitions mmcblk0boot0 4.0 MiB, mmcblk0boot1 4.0 MiB not copied"),
        "{t}"
    );
}

#[test]
fn controllers_without_disks_named() {
    use crate::devices::controllers::Unsupported;
    let raid = Unsupported {
        bus: "pci".into(),
        id: "1000:0079".into(),
        class: "010400".into(),
        kind: "RAID bus controller".into(),
        driver: None,
        sysfs_path: "/devices/pci0000:00/0000:00:05.0".into(),
        note: "RAID bus controller 1000:0079 at PCI 0000:00:05.0 has no driver in Lifeboat.".into(),
    };
    // A SAS HBA whose driver is loaded but that shows no disk (a dead cable).
    let sas = Unsupported {
        bus: "pci".into(),
        id: "1000:0054".into(),
        class: "010000".into(),
        kind: "SCSI storage controller".into(),
        driver: Some("mptsas".into()),
        sysfs_path: "/devices/pci0000:00/0000:00:06.0".into(),
        note: "SCSI storage controller 1000:0054 at PCI 0000:00:06.0: driver mptsas loaded, no \
               disk found behind it: check the controller's own setup (logical drives) or \
               cables."
            .into(),
    };
    let mut a = App::new(true, "t".into(), "/run/lifeboat/job".into());
    a.update(Event::Disks(Ok(vec![])));
    a.update(Event::Unsupported(vec![raid.clone(), sas]));
    let buf = snapshot("disks_unsupported_80x24", &a, 80, 24);
    assert_eq!(
        fg_of(&buf, "NO DISKS FROM: RAID bus controller 1000:0079"),
        Some(Color::Yellow)
    );
    // With no disk to show, the notes say what to check.
    let t = text(&buf);
    assert!(
        t.contains("Why no disks") && t.contains("driver mptsas loaded,"),
        "{t}"
    );
    let t = text(&render_buf(&a, 120, 30));
    assert!(
        t.contains("SCSI storage controller 1000:0054 (mptsas loaded)"),
        "{t}"
    );
    a.update(Event::Unsupported(vec![raid]));
    a.update(Event::Disks(Ok(machine())));
    let t = text(&render_buf(&a, 80, 24));
    assert!(
        t.contains("NO DISKS FROM: RAID bus controller 1000:0079"),
        "{t}"
    );
    a.update(Event::Unsupported(vec![]));
    let t = text(&render_buf(&a, 80, 24));
    assert!(!t.contains("NO DISKS FROM"), "{t}");
}

#[test]
fn failing_drive_health() {
    // The old SATA disk as a dying drive reports it: pending and uncorrectable sectors.
    let mut disks = machine();
    disks[0].health = Some(crate::health::ata::classify(
        &crate::health::ata::tests::failing(),
    ));
    let mut a = App::new(true, "t".into(), "/run/lifeboat/job".into());
    a.update(Event::Disks(Ok(disks.clone())));
    let buf = snapshot("disks_failing_80x24", &a, 80, 24);
    assert_eq!(fg_of(&buf, "FAILING: 12 sectors"), Some(Color::Red));
    // Not read yet, then read: the details say so.
    let mut fresh = disks.clone();
    fresh[0].health = None;
    a.update(Event::Disks(Ok(fresh)));
    let t = text(&render_buf(&a, 80, 24));
    assert!(t.contains("reading the drive's health"), "{t}");
    a.update(Event::Disks(Ok(disks)));
    // Backing it up as an image: the source picker says to clone it first.
    keys(&mut a, &[Key::Enter, Key::Char('2')]);
    assert_eq!(a.screen, Screen::Source);
    let buf = snapshot("source_image_failing_80x24", &a, 80, 24);
    assert_eq!(
        fg_of(&buf, "This drive is FAILING: clone it first"),
        Some(Color::Red)
    );
    // As a clone target it is refused with the reason (clone sdc onto it).
    keys(&mut a, &[Key::Esc, Key::Esc]);
    assert_eq!(a.screen, Screen::Disks);
    keys(&mut a, &[Key::Enter, Key::Char('1')]);
    assert_eq!(a.screen, Screen::Source);
    keys(&mut a, &[Key::End, Key::Enter]);
    assert_eq!(a.screen, Screen::Target);
    let t = a.targets();
    let sda = t.iter().find(|(d, _)| d.name == "sda").unwrap();
    assert_eq!(
        sda.1.as_deref(),
        Some("FAILING drive: 12 sectors pending reallocation (attribute 197)")
    );
    snapshot("target_failing_80x24", &a, 80, 24);
}

#[test]
fn menu_and_help() {
    let mut a = app();
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.screen, Screen::Menu);
    snapshot("menu_80x24", &a, 80, 24);
    keys(&mut a, &[Key::Char('j'), Key::Char('j'), Key::Char('j')]);
    snapshot("menu_restore_80x24", &a, 80, 24);
    keys(&mut a, &[Key::Char('?')]);
    assert_eq!(a.overlay, Overlay::Help);
    snapshot("help_80x24", &a, 80, 24);
    keys(&mut a, &[Key::Esc, Key::Esc, Key::Char('q')]);
    assert_eq!(a.overlay, Overlay::QuitAsk);
    snapshot("quit_ask_80x24", &a, 80, 24);
}

#[test]
fn clone_pickers_and_confirmation() {
    let mut a = app();
    keys(&mut a, &[Key::Enter, Key::Enter]);
    let buf = snapshot("source_80x24", &a, 80, 24);
    assert_eq!(fg_of(&buf, "Step 1 of 3"), Some(Color::Green));
    keys(&mut a, &[Key::Enter]);
    let buf = snapshot("target_80x24", &a, 80, 24);
    assert_eq!(fg_of(&buf, "Step 2 of 3"), Some(Color::Red));
    assert_eq!(fg_of(&buf, "Copying FROM"), Some(Color::Green));
    assert_eq!(
        fg_of(&buf, "sdb "),
        Some(Color::DarkGray),
        "refused rows are dimmed"
    );
    keys(&mut a, &[Key::Down, Key::Enter]);
    snapshot("target_refused_80x24", &a, 80, 24);
    keys(&mut a, &[Key::Up]);
    // The confirmation asks for the source's used-block plan, read in the background.
    let cmds = a.update(Event::Key(Key::Enter));
    assert_eq!(a.screen, Screen::Confirm);
    let src = a.source.as_ref().unwrap().path.clone();
    assert_eq!(cmds, vec![Command::ReadUsage(src.clone())]);
    type_str(&mut a, "nvme");
    let buf = snapshot("confirm_clone_80x24", &a, 80, 24);
    assert_eq!(fg_of(&buf, "ERASE"), Some(Color::Red));
    keys(&mut a, &[Key::Enter]);
    snapshot("confirm_clone_wrong_name_80x24", &a, 80, 24);
    snapshot("confirm_clone_100x30", &a, 100, 30);
    // The plan arrives: per partition, filesystem, used bytes, mode (and why).
    a.update(Event::Usage(
        "/dev/other".into(),
        Err("not this disk".into()),
    ));
    assert!(a.source_usage().is_none());
    a.update(Event::Usage(src, Ok(usage())));
    snapshot("confirm_clone_usage_80x24", &a, 80, 24);
    // The job carries the same lines to the progress screen.
    let spec = a.job_spec().unwrap();
    assert_eq!(spec.partitions.len(), 3);
    assert!(
        spec.partitions[2].contains("all sectors (BitLocker"),
        "{spec:?}"
    );
}

/// A source's used-block plan: an ESP, a Windows partition, a BitLocker volume.
pub(super) fn usage() -> SourceUsage {
    use crate::fs::{Mode, PartitionUsage};
    let p = |number: u32, fs: Option<&str>, size: u64, used: u64, reason: Option<&str>| {
        PartitionUsage {
            number,
            start_bytes: 1 << 20,
            size_bytes: size,
            filesystem: fs.map(Into::into),
            mode: if reason.is_some() {
                Mode::AllSectors
            } else {
                Mode::UsedBlocks
            },
            reason: reason.map(Into::into),
            used_bytes: used,
        }
    };
    SourceUsage {
        partitions: vec![
            p(1, Some("vfat"), 512 << 20, 34 << 20, None),
            p(2, Some("ntfs"), 400 << 30, 121 << 30, None),
            p(
                3,
                Some("BitLocker"),
                65 << 30,
                65 << 30,
                Some("BitLocker-encrypted: which blocks are used is not visible"),
            ),
        ],
        used_bytes: (186 << 30) + (36 << 20),
        disk_bytes: 500 << 30,
    }
}

#[test]
fn confirmation_lists_the_targets_partitions() {
    // Clone sdc (120 GiB, one partition) onto sda (500 GiB, four partitions): all four named.
    let mut a = app();
    keys(
        &mut a,
        &[
            Key::Enter,
            Key::Enter,
            Key::End,
            Key::Enter,
            Key::Home,
            Key::Enter,
        ],
    );
    assert_eq!(a.target.as_ref().unwrap().name, "sda");
    let t = text(&render_buf(&a, 80, 24));
    for want in [
        "WDC WD5000AAKX-00ERMA0",
        "WD-WCC2EAK80291",
        "\"EFI\"",
        "\"Windows\"",
        "\"Recovery\"",
        "sda2",
    ] {
        assert!(t.contains(want), "confirmation misses {want}:\n{t}");
    }
}

#[test]
fn image_screens() {
    let mut a = app();
    keys(&mut a, &[Key::Enter, Key::Char('2'), Key::Enter]);
    assert_eq!(a.screen, Screen::Location);
    snapshot("location_image_create_80x24", &a, 80, 24);
    keys(&mut a, &[Key::Enter, Key::Enter]);
    assert_eq!(a.screen, Screen::Passphrase);
    snapshot("passphrase_choice_80x24", &a, 80, 24);
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.screen, Screen::Confirm);
    snapshot("confirm_image_create_80x24", &a, 80, 24);
    let mut a = app();
    keys(
        &mut a,
        &[Key::Enter, Key::Char('3'), Key::Enter, Key::Enter],
    );
    type_str(&mut a, "/lifeboat/full");
    snapshot("location_incremental_80x24", &a, 80, 24);
    let mut a = app();
    keys(&mut a, &[Key::Enter, Key::Char('5')]);
    type_str(&mut a, "x");
    snapshot("location_verify_80x24", &a, 80, 24);
}

/// The location screen of a full image with the destinations' free space read: an NTFS USB
/// disk with room, the ext4 disk with too little (refused, saying why), one not readable.
#[test]
fn location_free_space_and_image_size() {
    let mut a = App::new(true, "t".into(), "/run/lifeboat/job".into());
    let mut m = machine();
    let mut usb = disk(
        "sdd",
        1000 << 30,
        vec![part("sdd1", 1 << 20, 931 << 30, "ntfs", "WINBACKUP")],
    );
    usb.model = Some("WD Elements 25A2".into());
    m.push(usb);
    a.update(Event::Disks(Ok(m)));
    keys(&mut a, &[Key::Enter, Key::Char('2')]);
    let cmds = {
        let mut c = Vec::new();
        c.extend(a.update(Event::Key(Key::Enter)));
        c
    };
    assert_eq!(a.screen, Screen::Location);
    // Entering the screen reads the source's plan and every filesystem's free space.
    assert!(
        cmds.contains(&Command::ReadUsage(PathBuf::from("/dev/sda"))),
        "{cmds:?}"
    );
    let Some(Command::ReadFree(parts)) = cmds.iter().find(|c| matches!(c, Command::ReadFree(_)))
    else {
        panic!("no ReadFree in {cmds:?}")
    };
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert!(
        names.contains(&"sdd1") && names.contains(&"sdc1"),
        "{names:?}"
    );
    // Never the source disk's partitions (refused anyway, maybe failing) nor the boot stick's.
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("sda") || n.starts_with("sdb")),
        "{names:?}"
    );
    // Nothing is refused for space before the figures are known.
    assert!(a
        .places()
        .iter()
        .all(|p| p.refused.as_deref().is_none_or(|r| !r.contains("free"))));
    a.update(Event::Usage(PathBuf::from("/dev/sda"), Ok(usage())));
    a.update(Event::Free(PathBuf::from("/dev/sdc1"), Ok(40 << 30)));
    a.update(Event::Free(PathBuf::from("/dev/sdd1"), Ok(700 << 30)));
    // An answer for a partition that was not asked about is ignored.
    a.update(Event::Free(PathBuf::from("/dev/sda1"), Ok(1)));
    assert!(!a.free.contains_key(&PathBuf::from("/dev/sda1")));
    let places = a.places();
    let sdc = places.iter().find(|p| p.disk == "sdc").unwrap();
    assert!(
        sdc.refused
            .as_deref()
            .unwrap()
            .contains("too full: 40.0 GiB free"),
        "{:?}",
        sdc.refused
    );
    assert!(places
        .iter()
        .find(|p| p.disk == "sdd")
        .unwrap()
        .refused
        .is_none());
    snapshot("location_free_space_80x24", &a, 80, 24);
    // Enter on the refused ext4 partition says why and stays.
    let i = places.iter().position(|p| p.disk == "sdc").unwrap();
    a.loc.sel = i;
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.screen, Screen::Location);
    assert!(a.message.as_deref().unwrap().contains("40.0 GiB free"));
    // The NTFS disk takes it.
    a.loc.sel = places.iter().position(|p| p.disk == "sdd").unwrap();
    keys(&mut a, &[Key::Enter, Key::Enter, Key::Enter]);
    assert_eq!(a.screen, Screen::Confirm);
    assert_eq!(
        a.image.as_deref(),
        Some("sdd1:/lifeboat/WD-WCC2EAK80291.lbi")
    );
}

pub(super) fn job(running: bool) -> JobSnapshot {
    JobSnapshot {
        spec: JobSpec {
            id: "j1".into(),
            kind: JobKind::Clone.job_name().into(),
            title: "Clone sda -> nvme0n1".into(),
            args: vec!["clone".into(), "/dev/sda".into(), "/dev/nvme0n1".into()],
            details: vec![
                "Source: sda  WDC WD5000AAKX-00ERMA0  serial WD-WCC2EAK80291  465.8 GiB".into(),
                "Target: nvme0n1  Samsung SSD 970 EVO 1TB  serial S467NX0M512345  931.5 GiB".into(),
            ],
            total_bytes: 500 << 30,
            partitions: usage().partitions.iter().map(usage_line).collect(),
        },
        progress: None,
        result: None,
        running,
        cancel_requested: false,
        acked: false,
        file_map: None,
        log_tail: vec![],
    }
}

fn progress(done: u64, bad: u64, map: Option<&str>) -> Progress {
    Progress {
        job: "clone".into(),
        phase: "copying".into(),
        done_bytes: done,
        total_bytes: 500 << 30,
        bad_bytes: bad,
        rate_bytes_per_sec: 142 << 20,
        eta_secs: Some(2071),
        map: map.map(str::to_string),
        ..Progress::new("clone", "copying", 500 << 30)
    }
}

#[test]
fn progress_screens() {
    let mut a = app();
    a.update(Event::Job(Some(job(true))));
    assert_eq!(a.screen, Screen::Progress);
    snapshot("progress_starting_80x24", &a, 80, 24);
    let mut j = job(true);
    let map: String =
        "+".repeat(200) + "-" + &"+".repeat(40) + "*/" + &"_".repeat(60) + &".".repeat(209);
    j.progress = Some(progress(211 << 30, 4096, Some(&map)));
    j.log_tail = vec!["read error at byte 215822106624: Input/output error".into()];
    a.update(Event::Job(Some(j.clone())));
    let buf = snapshot("progress_80x24", &a, 80, 24);
    assert_eq!(
        fg_of(&buf, "X█"),
        Some(Color::LightRed),
        "bad areas are red on the map"
    );
    snapshot("progress_120x40", &a, 120, 40);
    keys(&mut a, &[Key::Char('c')]);
    assert_eq!(a.overlay, Overlay::CancelAsk);
    snapshot("progress_cancel_ask_80x24", &a, 80, 24);
    // The map from the engine's mapfile when the progress line has none.
    j.progress = Some(progress(1 << 30, 0, None));
    j.file_map = Some("++++----....".into());
    a.update(Event::Job(Some(j)));
    let t = text(&render_buf(&a, 80, 24));
    assert!(t.contains("████") && t.contains("XXXX"), "{t}");
    // An image job reports no map: the map shows the part read so far, front to back.
    let mut j = job(true);
    j.spec.kind = "image-create".into();
    j.spec.partitions.clear();
    j.progress = Some(progress(250 << 30, 0, None));
    keys(&mut a, &[Key::Char('n')]);
    assert_eq!(
        a.overlay,
        Overlay::None,
        "any key but y keeps the job running"
    );
    a.update(Event::Job(Some(j)));
    snapshot("progress_image_80x24", &a, 80, 24);
    // A rescue in its trimming pass: reads issued and failed, the last good read; a drive that
    // returned nothing for 42 s is called stalled, in red.
    let mut j = job(true);
    let mut p = progress(211 << 30, 4096, Some(&map));
    p.phase = "trimming".into();
    p.pass = Some(2);
    p.reads_total = Some(8371);
    p.reads_failed = Some(4270);
    p.ms_since_good_read = Some(300);
    j.progress = Some(p.clone());
    a.update(Event::Job(Some(j.clone())));
    let t = text(&snapshot("progress_rescue_80x24", &a, 80, 24));
    assert!(t.contains("trimming, pass 2"), "{t}");
    assert!(
        t.contains("8371 issued, 4270 failed   last good read <1 s ago"),
        "{t}"
    );
    p.ms_since_good_read = Some(42_500);
    j.progress = Some(p);
    a.update(Event::Job(Some(j)));
    let buf = snapshot("progress_stalled_80x24", &a, 80, 24);
    assert!(
        text(&buf).contains("NO GOOD READ FOR 42 s"),
        "{}",
        text(&buf)
    );
    assert_eq!(fg_of(&buf, "NO GOOD READ"), Some(Color::LightRed));
}

#[test]
fn result_screens() {
    let mut a = app();
    a.update(Event::Job(Some(job(true))));
    let mut j = job(false);
    j.progress = Some(progress(500 << 30, 0, Some("++++")));
    j.result = Some(JobResult {
        exit_code: 0,
        cancelled: false,
        report: Some(
            serde_json::json!({"ok": true, "bytes_copied": (186u64 << 30) + (36 << 20), "used_bytes": (186u64 << 30) + (36 << 20), "size_bytes": 500u64 << 30, "bad_ranges": [], "verified": true, "partition_table": "gpt", "partition_table_fixed": true, "partitions": usage().partitions}),
        ),
        error: None,
        elapsed_secs: 3725,
    });
    a.update(Event::Job(Some(j.clone())));
    assert_eq!(a.screen, Screen::Result);
    snapshot("result_ok_80x24", &a, 80, 24);
    let ranges: Vec<[u64; 2]> = (0..20)
        .map(|i| [215822106624 + i * 1048576, 4096])
        .collect();
    j.result = Some(JobResult {
        exit_code: 3,
        cancelled: false,
        report: Some(
            serde_json::json!({"ok": true, "bytes_copied": (500u64 << 30) - 81920, "size_bytes": 500u64 << 30, "logical_block_size": 4096, "bad_ranges": ranges, "verified": true, "notes": ["the source had 20 unreadable ranges"]}),
        ),
        error: None,
        elapsed_secs: 9000,
    });
    a.update(Event::Job(Some(j.clone())));
    snapshot("result_partial_80x24", &a, 80, 24);
    j.result = Some(JobResult {
        exit_code: 4,
        cancelled: false,
        report: Some(
            serde_json::json!({"ok": false, "error": {"kind": "refused", "message": "target nvme0n1 is mounted on /mnt: unmount it first"}, "exit_code": 4}),
        ),
        error: None,
        elapsed_secs: 0,
    });
    a.update(Event::Job(Some(j.clone())));
    snapshot("result_refused_80x24", &a, 80, 24);
    j.result = Some(JobResult {
        exit_code: 130,
        cancelled: true,
        report: None,
        error: None,
        elapsed_secs: 12,
    });
    a.update(Event::Job(Some(j.clone())));
    snapshot("result_cancelled_80x24", &a, 80, 24);
    // The runner died without a result.
    j.result = None;
    a.update(Event::Job(Some(j)));
    snapshot("result_runner_died_80x24", &a, 80, 24);
    // On a host there is no power off.
    a.under_init = false;
    let t = text(&render_buf(&a, 80, 24));
    assert!(!t.contains("power off"), "{t}");
    // An image create's report names no image: the result shows the one its command line wrote.
    let mut j = job(false);
    j.spec.kind = JobKind::FullImage.job_name().into();
    j.spec.args = [
        "image",
        "create",
        "/dev/sda",
        "sdc1:/lifeboat/pc.lbi",
        "--json",
    ]
    .map(String::from)
    .to_vec();
    j.result = Some(JobResult {
        exit_code: 0,
        cancelled: false,
        report: Some(serde_json::json!({"ok": true, "disk_size_bytes": 500u64 << 30})),
        error: None,
        elapsed_secs: 60,
    });
    a.update(Event::Job(Some(j)));
    let t = text(&render_buf(&a, 80, 24));
    assert!(t.contains("Image     sdc1:/lifeboat/pc.lbi"), "{t}");
}

#[test]
fn image_arg_puts_the_path_at_the_partition_top() {
    use super::app::{image_arg, Place, PlaceKind};
    let place = Place {
        disk: "sdb".into(),
        kind: PlaceKind::Partition(Box::new(part("sdb1", 1 << 20, 64 << 20, "vfat", "BACKUPS"))),
        refused: None,
    };
    assert_eq!(image_arg(&place, "pc.lbi"), "sdb1:/pc.lbi");
    assert_eq!(
        image_arg(&place, "/lifeboat/pc.lbi"),
        "sdb1:/lifeboat/pc.lbi"
    );
    let host = Place {
        disk: String::new(),
        kind: PlaceKind::HostPath,
        refused: None,
    };
    assert_eq!(image_arg(&host, "/tmp/x.lbi"), "/tmp/x.lbi");
}

#[test]
fn second_copy_from_an_image_jobs_result() {
    let mut a = app();
    let mut j = job(false);
    j.spec.kind = JobKind::FullImage.job_name().into();
    j.spec.title = "Image sda -> sdc1:/lifeboat/pc.lbi".into();
    j.spec.args = [
        "image",
        "create",
        "/dev/sda",
        "sdc1:/lifeboat/pc.lbi",
        "--json",
    ]
    .map(String::from)
    .to_vec();
    j.result = Some(JobResult {
        exit_code: 0,
        cancelled: false,
        report: Some(
            serde_json::json!({"ok": true, "disk_size_bytes": 500u64 << 30, "verified": true}),
        ),
        error: None,
        elapsed_secs: 60,
    });
    a.update(Event::Job(Some(j.clone())));
    assert_eq!(a.screen, Screen::Result);
    snapshot("result_image_create_80x24", &a, 80, 24);
    let cmds = a.update(Event::Key(Key::Char('c')));
    assert_eq!(cmds, vec![crate::tui::app::Command::AckResult]);
    assert_eq!((a.screen, a.kind), (Screen::Location, JobKind::Copy));
    assert_eq!(a.loc.path, "/lifeboat/pc.lbi");
    let places = a.places();
    let sdc1 = places
        .iter()
        .find(|p| p.part().is_some_and(|p| p.name == "sdc1"))
        .unwrap();
    assert!(
        sdc1.refused.is_some(),
        "the image's own partition is offered"
    );
    snapshot("location_copy_80x24", &a, 80, 24);
    // The boot disk holds no copy either; sda3 (the second place), the path as offered.
    assert!(places[3].refused.is_some(), "{:?}", places[3]);
    keys(&mut a, &[Key::Home, Key::Down, Key::Enter]);
    keys(&mut a, &[Key::Enter]);
    assert_eq!(a.screen, Screen::Confirm);
    snapshot("confirm_copy_80x24", &a, 80, 24);
    let cmds = a.update(Event::Key(Key::Enter));
    let [crate::tui::app::Command::StartJob(spec)] = &cmds[..] else {
        panic!("{cmds:?}")
    };
    assert_eq!(
        spec.args,
        [
            "image",
            "copy",
            "sdc1:/lifeboat/pc.lbi",
            "sda3:/lifeboat/pc.lbi",
            "--chain",
            "--json"
        ]
    );
    assert_eq!(spec.kind, "image-copy");
    // A failed job leaves no image to copy: nothing offered.
    let mut a = app();
    j.result.as_mut().unwrap().exit_code = 5;
    a.update(Event::Job(Some(j)));
    assert!(a.result_image().is_none());
    let t = text(&render_buf(&a, 80, 24));
    assert!(!t.contains("second copy"), "{t}");
    assert!(a.update(Event::Key(Key::Char('c'))).is_empty());
}
