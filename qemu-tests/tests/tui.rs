//! The technician's console driven as a person would: boot with the serial console only (no
//! lifeboat.run), read the screen through a terminal emulator (vt100), press keys over the
//! serial line, clone one disk onto another, confirm by typing the target's name, wait for the
//! result screen; then the host checks the target equals the source and the source is unchanged.
//! `image_then_restore_through_the_serial_console` makes an encrypted image (the passphrase
//! typed twice), its second copy, and restores the copy after a wrong passphrase was refused;
//! no passphrase typed ever appears in the serial output.
//! `restore_a_file_through_the_serial_console` takes one file out of an image (menu 6: browse
//! the image's partition, mark the file, pick a USB disk) and the host reads it back from the
//! USB disk with mtools. `image_to_an_smb_share_through_the_serial_console` adds an SMB share
//! (the host's Samba) as a network place with a typed password and images the source onto it.
//!
//! `vga_screendumps` (ignored; run it with `--ignored`) drives the VGA console with the QEMU
//! monitor's `sendkey` and saves `screendump`s of the main screens into docs/screens/.
use lifeboat_qemu_tests::disks::{sha256, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{Bus, DiskSpec, Faults, TempDir, Vm};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(240);
const ROWS: u16 = 24;
const COLS: u16 = 80;

/// The serial console as a screen.
struct Screen {
    parser: vt100::Parser,
    fed: usize,
}

impl Screen {
    fn new() -> Screen {
        Screen {
            parser: vt100::Parser::new(ROWS, COLS, 0),
            fed: 0,
        }
    }

    /// Feeds what the guest printed since the last call.
    fn update(&mut self, vm: &Vm) {
        let out = vm.output();
        if out.len() > self.fed {
            self.parser.process(&out[self.fed..]);
            self.fed = out.len();
        }
    }

    fn text(&self) -> String {
        self.parser.screen().contents()
    }

    fn rows(&self) -> Vec<String> {
        self.parser.screen().rows(0, COLS).collect()
    }

    /// The highlighted list row (the one drawn with the "> " marker), if any.
    fn selected_row(&self) -> Option<String> {
        self.rows()
            .into_iter()
            .find(|r| r.trim_start_matches('│').starts_with("> "))
    }
}

/// Waits until the screen satisfies `pred`.
fn wait_screen(
    vm: &Vm,
    s: &mut Screen,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Screen) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + lifeboat_qemu_tests::vm::scaled(timeout);
    loop {
        s.update(vm);
        if pred(s) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {timeout:?} waiting for {what}; the screen shows:\n{}",
                s.text()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_text(vm: &Vm, s: &mut Screen, text: &str, timeout: Duration) -> Result<(), String> {
    wait_screen(vm, s, &format!("{text:?} on screen"), timeout, |s| {
        s.text().contains(text)
    })
}

/// Waits up to `secs` for `text` on screen, or fails the test with the screen and serial log.
fn expect_text(vm: &Vm, s: &mut Screen, text: &str, secs: u64) {
    let r = wait_text(vm, s, text, Duration::from_secs(secs));
    vm.check(r);
}

/// The name the confirmation screen asks to type ("... type its name NAME and press Enter").
fn name_to_type(s: &Screen) -> String {
    s.text()
        .split("type its name ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or("")
        .to_string()
}

/// Presses a key and gives the console a moment to redraw.
fn press(vm: &mut Vm, bytes: &[u8]) {
    let r = vm.write(bytes);
    vm.check(r);
    std::thread::sleep(Duration::from_millis(400));
}

/// Moves the list selection (down arrow) until the highlighted row contains `needle`.
fn select_row(vm: &mut Vm, s: &mut Screen, needle: &str) {
    for _ in 0..12 {
        let r = wait_screen(vm, s, "a highlighted row", Duration::from_secs(20), |s| {
            s.selected_row().is_some()
        });
        vm.check(r);
        if s.selected_row().is_some_and(|r| r.contains(needle)) {
            return;
        }
        press(vm, b"\x1b[B");
        s.update(vm);
    }
    vm.fail(&format!(
        "no list row with {needle:?} could be selected; the screen shows:\n{}",
        s.text()
    ));
}

fn build_disks(t: &TempDir) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = t.join("src.img");
    let payload: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i * 7 + i / 4093) as u8)
        .collect();
    DiskBuilder::new(64, Table::Gpt)
        .part(
            Part::new(40, Fs::Ext4)
                .label("TUISRC")
                .file("data.bin", payload),
        )
        .part(Part::new(16, Fs::Vfat).label("TUIEFI"))
        .build(&src)
        .unwrap_or_else(|e| panic!("{e}"));
    let dst = t.join("dst.img");
    let f = std::fs::File::create(&dst).unwrap();
    f.set_len(64 << 20).unwrap();
    (src, dst)
}

#[test]
fn clone_through_the_serial_console() {
    let t = TempDir::new("tui-clone").unwrap();
    let (src, dst) = build_disks(&t);
    let src_sha = sha256(&src).unwrap();
    let disks = vec![
        DiskSpec::new(&src, Bus::Virtio, "TUI-SRC"),
        DiskSpec::new(&dst, Bus::Nvme, "TUI-DST"),
    ];
    let mut vm =
        Vm::boot("tui-clone", "lifeboat.console=80x24", disks).unwrap_or_else(|e| panic!("{e}"));
    let r = vm.wait_ready(BOOT);
    vm.check(r);
    let mut s = Screen::new();

    // The disks screen lists both disks with their serials and the source's labels.
    let r = wait_screen(
        &vm,
        &mut s,
        "the disks screen with both disks",
        Duration::from_secs(60),
        |s| {
            let t = s.text();
            t.contains("Disks (") && t.contains("TUI-SRC") && t.contains("TUI-DST")
        },
    );
    vm.check(r);
    select_row(&mut vm, &mut s, "TUI-SRC");
    expect_text(&vm, &mut s, "TUISRC", 10);

    // Job menu -> clone -> source picker.
    press(&mut vm, b"\r");
    expect_text(&vm, &mut s, "What do you want to do?", 20);
    press(&mut vm, b"1");
    expect_text(&vm, &mut s, "SOURCE, the disk to copy FROM", 20);
    select_row(&mut vm, &mut s, "TUI-SRC");
    press(&mut vm, b"\r");

    // Target picker: the source is gone from the list.
    expect_text(&vm, &mut s, "TARGET, the disk to ERASE", 20);
    let list: Vec<String> = s
        .rows()
        .into_iter()
        .filter(|r| r.contains("GiB") || r.contains("MiB"))
        .filter(|r| !r.contains("Copying FROM"))
        .collect();
    if list.iter().take(3).any(|r| r.contains("TUI-SRC")) {
        vm.fail(&format!("the source is offered as a target:\n{}", s.text()));
    }
    select_row(&mut vm, &mut s, "TUI-DST");
    press(&mut vm, b"\r");

    // Confirmation: names the target; Enter without typing does nothing.
    expect_text(&vm, &mut s, "type its name", 20);
    let text = s.text();
    let name = name_to_type(&s);
    if !name.starts_with("nvme") || !text.contains("TUI-DST") {
        vm.fail(&format!(
            "the confirmation must name the NVMe target:\n{text}"
        ));
    }
    // What is copied of each source partition, read in the background: ext4 and FAT by their
    // used blocks.
    expect_text(&vm, &mut s, "copies ", 30);
    let text = s.text();
    if !text.contains("ext4") || !text.contains("vfat") || text.matches("used blocks").count() < 3 {
        vm.fail(&format!(
            "the confirmation must show the source partitions' used blocks:\n{text}"
        ));
    }
    press(&mut vm, b"\r");
    expect_text(&vm, &mut s, "exactly to erase it", 10);
    press(&mut vm, name.as_bytes());
    press(&mut vm, b"\r");

    // Progress, then the result screen.
    expect_finished(&mut vm, &mut s, "the clone");
    // Power off from the result screen; QEMU exits.
    press(&mut vm, b"p");
    let r = vm.wait_exit(Duration::from_secs(60));
    vm.check(r);

    assert_eq!(sha256(&src).unwrap(), src_sha, "the source changed");
    assert_eq!(
        sha256(&dst).unwrap(),
        src_sha,
        "the target differs from the source"
    );
}

/// Waits for the result screen and fails unless the job finished with nothing lost.
/// The title row arrives first over the serial line (ratatui redraws row by row), so it waits for
/// the result's status line too (the ends of the lines in src/tui/view/job.rs).
fn expect_finished(vm: &mut Vm, s: &mut Screen, what: &str) {
    const STATUS_ENDS: [&str; 6] = [
        "everything was done, nothing lost",
        "see what was lost below",
        "nothing was written",
        "does not match",
        "stopped at your request",
        "the job did not complete",
    ];
    let r = wait_screen(vm, s, "the result screen", Duration::from_secs(180), |s| {
        let t = s.text();
        t.contains("Job finished") && STATUS_ENDS.iter().any(|end| t.contains(end))
    });
    vm.check(r);
    let text = s.text();
    if !text.contains("FINISHED: everything was done") {
        vm.fail(&format!("{what} did not finish cleanly:\n{text}"));
    }
}

/// The passphrase typed on the console (never drawn, logged or on a command line: the
/// test looks for it in everything the serial line carried) and a wrong one typed first.
const PASSPHRASE: &str = "tui-Secret-7Kq9w";
const WRONG: &str = "tui-Wrong-3Zp2x";

/// Types a passphrase on the passphrase field and presses Enter.
fn type_secret(vm: &mut Vm, secret: &str) {
    press(vm, secret.as_bytes());
    press(vm, b"\r");
}

#[test]
fn image_then_restore_through_the_serial_console() {
    let t = TempDir::new("tui-image").unwrap();
    let (src, rst) = build_disks(&t);
    let bak = t.join("bak.img");
    DiskBuilder::new(128, Table::Gpt)
        .part(Part::new(60, Fs::Ext4).label("BACKUPS"))
        .part(Part::new(60, Fs::Ext4).label("SECOND"))
        .build(&bak)
        .unwrap_or_else(|e| panic!("{e}"));
    let src_sha = sha256(&src).unwrap();
    let disks = vec![
        DiskSpec::new(&src, Bus::Virtio, "TUI-SRC"),
        DiskSpec::new(&bak, Bus::Nvme, "TUI-BAK"),
        DiskSpec::new(&rst, Bus::Nvme, "TUI-RST"),
    ];
    let mut vm =
        Vm::boot("tui-image", "lifeboat.console=80x24", disks).unwrap_or_else(|e| panic!("{e}"));
    let r = vm.wait_ready(BOOT);
    vm.check(r);
    let mut s = Screen::new();
    let r = wait_screen(&vm, &mut s, "three disks", Duration::from_secs(60), |s| {
        let t = s.text();
        t.contains("Disks (3)") && t.contains("TUI-BAK") && t.contains("TUI-RST")
    });
    vm.check(r);

    // 2: a full image of the source onto the BACKUPS partition, encrypted (the passphrase
    // typed twice).
    press(&mut vm, b"\r");
    press(&mut vm, b"2");
    expect_text(&vm, &mut s, "SOURCE, the disk to back up", 20);
    select_row(&mut vm, &mut s, "TUI-SRC");
    press(&mut vm, b"\r");
    expect_text(&vm, &mut s, "where to write the image", 20);
    select_row(&mut vm, &mut s, "BACKUPS");
    press(&mut vm, b"\r");
    expect_text(&vm, &mut s, "/lifeboat/TUI-SRC.lbi_", 20);
    press(&mut vm, b"\r");
    expect_text(&vm, &mut s, "encrypt the image?", 20);
    press(&mut vm, b"\x1b[B");
    press(&mut vm, b"\r");
    expect_text(&vm, &mut s, "Passphrase", 20);
    type_secret(&mut vm, PASSPHRASE);
    type_secret(&mut vm, PASSPHRASE);
    expect_text(&vm, &mut s, "ENCRYPTED with the passphrase", 20);
    press(&mut vm, b"\r");
    expect_finished(&mut vm, &mut s, "the image");

    // c: its second copy onto the SECOND partition (ciphertext, compared byte for byte).
    press(&mut vm, b"c");
    expect_text(&vm, &mut s, "where the second copy goes", 20);
    select_row(&mut vm, &mut s, "SECOND");
    press(&mut vm, b"\r");
    expect_text(&vm, &mut s, "/lifeboat/TUI-SRC.lbi_", 20);
    press(&mut vm, b"\r");
    expect_text(&vm, &mut s, "Enter to start", 20);
    press(&mut vm, b"\r");
    expect_finished(&mut vm, &mut s, "the second copy");

    // 4: restore the image found on the second copy onto the blank disk: a wrong passphrase
    // is told and asked again; the disk holding the image is refused as a target.
    press(&mut vm, b"n");
    press(&mut vm, b"4");
    expect_text(&vm, &mut s, "where the image is", 20);
    select_row(&mut vm, &mut s, "SECOND");
    press(&mut vm, b"\r");
    press(&mut vm, b"TUI-SRC.lbi\r");
    expect_text(&vm, &mut s, "is encrypted: type its passphrase", 60);
    type_secret(&mut vm, WRONG);
    expect_text(&vm, &mut s, "Wrong passphrase: nothing was written", 120);
    type_secret(&mut vm, PASSPHRASE);
    expect_text(&vm, &mut s, "TARGET, the disk to ERASE", 120);
    // (The disk list is refreshed every 2 s: a scan made while the passphrase step read the
    // image's header may still say its partition is mounted.)
    let r = wait_screen(
        &vm,
        &mut s,
        "the image's disk refused as a target",
        Duration::from_secs(20),
        |s| {
            s.rows()
                .iter()
                .any(|r| r.contains("TUI-BAK") && r.contains("holds the image"))
        },
    );
    vm.check(r);
    select_row(&mut vm, &mut s, "TUI-RST");
    press(&mut vm, b"\r");
    expect_text(&vm, &mut s, "type its name", 20);
    let name = name_to_type(&s);
    press(&mut vm, name.as_bytes());
    press(&mut vm, b"\r");
    expect_finished(&mut vm, &mut s, "the restore");
    press(&mut vm, b"p");
    let r = vm.wait_exit(Duration::from_secs(60));
    vm.check(r);
    let out = String::from_utf8_lossy(&vm.output()).into_owned();
    for secret in [PASSPHRASE, WRONG] {
        assert!(
            !out.contains(secret),
            "a passphrase typed on the console reached the serial line"
        );
    }
    assert_eq!(sha256(&src).unwrap(), src_sha, "the source changed");
    assert_eq!(
        sha256(&rst).unwrap(),
        src_sha,
        "the restored disk differs from the source"
    );
}

#[test]
fn restore_a_file_through_the_serial_console() {
    let t = TempDir::new("tui-files").unwrap();
    let src = t.join("src.img");
    let letter: Vec<u8> = (0..200_000u32)
        .map(|i| b"Dear Ann, the photos are attached.\n"[(i % 35) as usize] ^ (i / 35 % 2) as u8)
        .collect();
    DiskBuilder::new(48, Table::Gpt)
        .part(
            Part::new(40, Fs::Ext4)
                .label("FILESRC")
                .file("docs/letter.txt", letter.clone())
                .file("docs/other.txt", "not this one\n"),
        )
        .build(&src)
        .unwrap_or_else(|e| panic!("{e}"));
    let img = t.join("pc.lbi");
    let exe =
        lifeboat_qemu_tests::repo_root().join("target/x86_64-unknown-linux-musl/release/lifeboat");
    let o = std::process::Command::new(&exe)
        .args(["image", "create"])
        .arg(&src)
        .arg(&img)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build)", exe.display()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bak = t.join("bak.img");
    DiskBuilder::new(64, Table::Gpt)
        .part(
            Part::new(56, Fs::Ext4)
                .label("BACKUPS")
                .file("lifeboat/pc.lbi", std::fs::read(&img).unwrap()),
        )
        .build(&bak)
        .unwrap_or_else(|e| panic!("{e}"));
    let usb = t.join("usb.img");
    let usb_built = DiskBuilder::new(40, Table::Mbr)
        .part(Part::new(32, Fs::Vfat).label("USBKEY"))
        .build(&usb)
        .unwrap_or_else(|e| panic!("{e}"));
    let (src_sha, bak_sha) = (sha256(&src).unwrap(), sha256(&bak).unwrap());
    let disks = vec![
        DiskSpec::new(&bak, Bus::Virtio, "TUI-BAK"),
        DiskSpec::new(&usb, Bus::Usb, "TUI-USB").removable(),
    ];
    let mut vm =
        Vm::boot("tui-files", "lifeboat.console=80x24", disks).unwrap_or_else(|e| panic!("{e}"));
    let r = vm.wait_ready(BOOT);
    vm.check(r);
    let mut s = Screen::new();
    let r = wait_screen(&vm, &mut s, "two disks", Duration::from_secs(60), |s| {
        let t = s.text();
        t.contains("Disks (2)") && t.contains("TUI-BAK") && t.contains("TUI-USB")
    });
    vm.check(r);
    press(&mut vm, b"\r");
    press(&mut vm, b"6");
    expect_text(&vm, &mut s, "where the image is", 20);
    select_row(&mut vm, &mut s, "BACKUPS");
    press(&mut vm, b"\r");
    press(&mut vm, b"pc.lbi\r");
    // The browser mounts the image's partition (through NBD) and lists its top.
    expect_text(&vm, &mut s, "docs/", 90);
    select_row(&mut vm, &mut s, "docs/");
    press(&mut vm, b"\r");
    expect_text(&vm, &mut s, "letter.txt", 30);
    select_row(&mut vm, &mut s, "letter.txt");
    press(&mut vm, b" ");
    expect_text(&vm, &mut s, "1 marked", 10);
    press(&mut vm, b"c");
    expect_text(&vm, &mut s, "where to copy the files", 20);
    select_row(&mut vm, &mut s, "USBKEY");
    press(&mut vm, b"\r");
    press(&mut vm, b"\r");
    expect_text(&vm, &mut s, "Nothing is erased", 20);
    press(&mut vm, b"\r");
    expect_finished(&mut vm, &mut s, "the restore of a file");
    press(&mut vm, b"p");
    let r = vm.wait_exit(Duration::from_secs(60));
    vm.check(r);
    let p = &usb_built.partitions[0];
    let part = t.join("usb-p1.vfat");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&usb).unwrap();
        let mut b = vec![0u8; p.size_bytes as usize];
        f.read_exact_at(&mut b, p.start_bytes).unwrap();
        std::fs::write(&part, b).unwrap();
    }
    let got = t.join("got.txt");
    lifeboat_qemu_tests::disks::run(
        "mcopy",
        &[
            "-i".into(),
            part.display().to_string(),
            "::/restored/letter.txt".into(),
            got.display().to_string(),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("the restored file is not on the USB disk: {e}"));
    assert_eq!(
        sha256(&got).unwrap(),
        {
            let want = t.join("want.txt");
            std::fs::write(&want, &letter).unwrap();
            sha256(&want).unwrap()
        },
        "the restored file differs from the source's"
    );
    let listing = lifeboat_qemu_tests::disks::run(
        "mdir",
        &[
            "-b".into(),
            "-i".into(),
            part.display().to_string(),
            "::/restored".into(),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !listing.contains("other.txt"),
        "an unmarked file was copied: {listing}"
    );
    assert_eq!(sha256(&src).unwrap(), src_sha, "the source changed");
    assert_eq!(
        sha256(&bak).unwrap(),
        bak_sha,
        "the disk holding the image changed"
    );
}

/// The password typed into the console for the Samba share: a space and a comma in it, and
/// distinctive enough that finding it anywhere in the serial output is a real leak.
const SMB_PASSWORD: &str = "tui pw,4 Kq9";
/// Where the guest finds the share (forwarded to the host's smbd on loopback).
const SMB_SERVER: &str = "10.0.2.100";

/// Issue 13's console side: a full image onto an SMB share added on the location screen, with
/// the password typed (masked) into the console. The network starts only then (DHCP from
/// QEMU); the place shows its free space beside the image's size bound; the job gets the
/// password through a 0600 file, never a command line. On the host: the image on the share
/// verifies, the source is unchanged, and the password appears nowhere in the serial output.
#[test]
fn image_to_an_smb_share_through_the_serial_console() {
    use lifeboat_qemu_tests::samba::Samba;
    use lifeboat_qemu_tests::NetSpec;
    let t = TempDir::new("tui-smb").unwrap();
    let share = t.join("share");
    std::fs::create_dir_all(&share).unwrap();
    let samba = Samba::start(&t.join("samba"), "backups", &share, "root", SMB_PASSWORD)
        .unwrap_or_else(|e| panic!("{e}"));
    let (src, _) = build_disks(&t);
    let _ = std::fs::remove_file(t.join("dst.img"));
    let src_sha = sha256(&src).unwrap();
    let net = NetSpec::restricted().forward(
        SMB_SERVER,
        445,
        &format!(
            "{} 127.0.0.1 {}",
            env!("CARGO_BIN_EXE_tcp-stdio"),
            samba.port
        ),
    );
    let mut vm = Vm::boot_net(
        "tui-smb",
        "lifeboat.console=80x24",
        vec![DiskSpec::new(&src, Bus::Virtio, "TUI-SRC")],
        &net,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = vm.wait_ready(BOOT);
    vm.check(r);
    let mut s = Screen::new();
    let r = wait_screen(
        &vm,
        &mut s,
        "the source disk",
        Duration::from_secs(60),
        |s| {
            let t = s.text();
            t.contains("Disks (1)") && t.contains("TUI-SRC")
        },
    );
    vm.check(r);
    press(&mut vm, b"\r");
    press(&mut vm, b"2");
    expect_text(&vm, &mut s, "SOURCE, the disk to back up", 20);
    select_row(&mut vm, &mut s, "TUI-SRC");
    press(&mut vm, b"\r");
    expect_text(&vm, &mut s, "where to write the image", 20);
    // The image's size bound is known before a place is picked.
    expect_text(&vm, &mut s, "image: at most", 60);
    select_row(&mut vm, &mut s, "add a network place");
    press(&mut vm, b"\r");
    expect_text(&vm, &mut s, "smb://[user@]host/share/folder", 20);
    let url = format!("smb://root@{SMB_SERVER}/backups/pc");
    press(&mut vm, url.as_bytes());
    press(&mut vm, b"\r");
    press(&mut vm, SMB_PASSWORD.as_bytes());
    expect_text(&vm, &mut s, &"*".repeat(SMB_PASSWORD.len()), 20);
    press(&mut vm, b"\r");
    // DHCP, then the mount: the place comes back with its free space, selected.
    let r = wait_screen(
        &vm,
        &mut s,
        "the share with its free space",
        Duration::from_secs(120),
        |s| {
            s.selected_row()
                .is_some_and(|r| r.contains(&url) && r.contains("free") && r.contains("SMB"))
        },
    );
    vm.check(r);
    press(&mut vm, b"\r");
    expect_text(&vm, &mut s, "/lifeboat/TUI-SRC.lbi_", 20);
    press(&mut vm, b"\r");
    // Not encrypted (the default choice).
    expect_text(&vm, &mut s, "encrypt the image?", 20);
    press(&mut vm, b"\r");
    expect_text(&vm, &mut s, "Nothing is erased", 20);
    press(&mut vm, b"\r");
    expect_finished(&mut vm, &mut s, "the image onto the share");
    press(&mut vm, b"p");
    let r = vm.wait_exit(Duration::from_secs(60));
    vm.check(r);
    let out = String::from_utf8_lossy(&vm.output()).into_owned();
    if out.contains(SMB_PASSWORD) || out.contains("Kq9") {
        vm.fail("the typed password appears in the serial output");
    }
    drop(vm);
    assert_eq!(sha256(&src).unwrap(), src_sha, "the source changed");
    let img = share.join("pc/lifeboat/TUI-SRC.lbi");
    assert!(
        !share.join("pc/lifeboat/TUI-SRC.lbi.partial").exists(),
        "a .partial was left on the share"
    );
    let exe =
        lifeboat_qemu_tests::repo_root().join("target/x86_64-unknown-linux-musl/release/lifeboat");
    let o = std::process::Command::new(&exe)
        .args(["image", "verify", "--json"])
        .arg(&img)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    let v = String::from_utf8_lossy(&o.stdout);
    let vj: serde_json::Value = serde_json::from_str(v.trim()).unwrap_or(serde_json::Value::Null);
    assert!(
        o.status.success() && vj["ok"] == serde_json::Value::Bool(true),
        "the image on the share does not verify: {v} {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Sends a key to the VGA console's keyboard (QEMU `sendkey` names).
fn sendkey(vm: &Vm, keys: &[&str]) {
    for k in keys {
        let r = vm.monitor(&format!("sendkey {k}"));
        vm.check(r);
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Saves the VGA screen as docs/screens/NAME.png (QEMU writes PPM; docs/screens/ppm2png.py,
/// or netpbm's `pnmtopng`, makes the PNG).
fn dump(vm: &Vm, t: &TempDir, name: &str) {
    let dir = lifeboat_qemu_tests::repo_root().join("docs/screens");
    std::fs::create_dir_all(&dir).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let ppm = t.join(&format!("{name}.ppm"));
    let png = dir.join(format!("{name}.png"));
    let r = vm.monitor(&format!("screendump {}", ppm.display()));
    let out = vm.check(r);
    if !ppm.is_file() {
        vm.fail(&format!("screendump wrote no {}: {out}", ppm.display()));
    }
    let script = lifeboat_qemu_tests::repo_root().join("docs/screens/ppm2png.py");
    let converted = std::process::Command::new("python3")
        .arg(&script)
        .arg(&ppm)
        .arg(&png)
        .status()
        .is_ok_and(|s| s.success())
        || std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "pnmtopng '{}' > '{}'",
                ppm.display(),
                png.display()
            ))
            .status()
            .is_ok_and(|s| s.success());
    if !converted {
        vm.fail("cannot convert the screendump to PNG: needs python3 (or netpbm)");
    }
}

#[test]
#[ignore = "writes docs/screens/*.png; run with --ignored"]
fn vga_screendumps() {
    let t = TempDir::new("tui-vga").unwrap();
    let (src, dst) = build_disks(&t);
    // Bad areas on the source, so the progress and result screens show them.
    let faults = Faults::new()
        .bad_bytes(9 << 20, 4096)
        .bad_bytes(30 << 20, 192 << 10)
        .bad_bytes(50 << 20, 512);
    let cfg = t.join("blkdebug.conf");
    faults.write(&cfg).unwrap();
    let disks = vec![
        DiskSpec::new(&src, Bus::Virtio, "TUI-SRC").blkdebug(&cfg),
        DiskSpec::new(&dst, Bus::Nvme, "TUI-DST"),
    ];
    // tty0 last: /dev/console is the VGA console, the UI runs on tty1 as well as ttyS0.
    let mut vm = Vm::boot("tui-vga", "console=tty0", disks).unwrap_or_else(|e| panic!("{e}"));
    let r = vm.wait_ready(BOOT);
    vm.check(r);
    std::thread::sleep(Duration::from_secs(8));
    dump(&vm, &t, "disks");
    sendkey(&vm, &["ret"]);
    dump(&vm, &t, "menu");
    sendkey(&vm, &["1"]);
    // vda (the virtio source) sorts after nvme0n1.
    sendkey(&vm, &["down"]);
    dump(&vm, &t, "source");
    sendkey(&vm, &["ret"]);
    dump(&vm, &t, "target");
    sendkey(&vm, &["ret", "n", "v"]);
    dump(&vm, &t, "confirm");
    sendkey(&vm, &["m", "e", "0", "n", "1", "ret"]);
    // Mid-job: the first pass is done and the bad areas are being trimmed and scraped.
    std::thread::sleep(Duration::from_secs(7));
    dump(&vm, &t, "progress");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut s = Screen::new();
    while Instant::now() < deadline {
        s.update(&vm);
        if s.text().contains("Job finished") {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    dump(&vm, &t, "result");
    sendkey(&vm, &["shift-slash"]);
    dump(&vm, &t, "help");
    vm.kill();
}
