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
//! Each drives the console through one [`Console`]: boot to the Disks screen, keys, bounded
//! waits for what the screen shows, the result screen, power off, no secret on the serial line.
//!
//! `vga_screendumps` (ignored; run it with `--ignored`) drives the VGA console with the QEMU
//! monitor's `sendkey` and saves `screendump`s of the main screens into docs/screens/.
use lifeboat_qemu_tests::check::{host_lifeboat, host_verify, Unchanged};
use lifeboat_qemu_tests::disks::{sha256, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{Bus, DiskSpec, Faults, NetSpec, TempDir, Vm};
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

/// The console of a booted guest driven over its serial line as a person would: keys sent, the
/// screen read through the terminal emulator, every wait bounded (the timeouts scaled by
/// `LIFEBOAT_QEMU_TIMEOUT_SCALE`); a wait that runs out fails the test with the screen and the
/// serial log.
struct Console {
    vm: Vm,
    s: Screen,
}

impl Console {
    /// Boots `name` with `disks` (and a network card on `net`) and the 80x24 serial console,
    /// then waits for the Disks screen listing every one of them.
    fn boot(name: &str, disks: Vec<DiskSpec>, net: Option<&NetSpec>) -> Console {
        let serials: Vec<String> = disks.iter().map(|d| d.serial.clone()).collect();
        let params = "lifeboat.console=80x24";
        let vm = match net {
            None => Vm::boot(name, params, disks),
            Some(n) => Vm::boot_net(name, params, disks, n),
        };
        let mut c = Console {
            vm: vm.unwrap_or_else(|e| panic!("{e}")),
            s: Screen::new(),
        };
        let r = c.vm.wait_ready(BOOT);
        c.vm.check(r);
        let title = format!("Disks ({})", serials.len());
        c.wait("the disks screen with every disk", 60, |s| {
            let t = s.text();
            t.contains(&title) && serials.iter().all(|n| t.contains(n.as_str()))
        });
        c
    }

    /// Waits up to `secs` for the screen to satisfy `pred` (`what` names it in the failure).
    fn wait(&mut self, what: &str, secs: u64, pred: impl Fn(&Screen) -> bool) {
        let r = wait_screen(&self.vm, &mut self.s, what, Duration::from_secs(secs), pred);
        self.vm.check(r);
    }

    /// Waits up to `secs` for `text` on screen.
    fn expect(&mut self, text: &str, secs: u64) {
        self.wait(&format!("{text:?} on screen"), secs, |s| {
            s.text().contains(text)
        });
    }

    /// Sends keys and gives the console a moment to redraw.
    fn press(&mut self, bytes: &[u8]) {
        let r = self.vm.write(bytes);
        self.vm.check(r);
        std::thread::sleep(Duration::from_millis(400));
    }

    /// Moves the list selection (down arrow) until the highlighted row contains `needle`.
    fn select(&mut self, needle: &str) {
        for _ in 0..12 {
            self.wait("a highlighted row", 20, |s| s.selected_row().is_some());
            if self.s.selected_row().is_some_and(|r| r.contains(needle)) {
                return;
            }
            self.press(b"\x1b[B");
            self.s.update(&self.vm);
        }
        self.vm.fail(&format!(
            "no list row with {needle:?} could be selected; the screen shows:\n{}",
            self.s.text()
        ));
    }

    /// The name the confirmation screen asks to type ("... type its name NAME and press
    /// Enter").
    fn name_to_type(&self) -> String {
        self.s
            .text()
            .split("type its name ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .unwrap_or("")
            .to_string()
    }

    /// From the Disks screen to the location screen of a new full image of the disk `src`.
    fn start_full_image(&mut self, src: &str) {
        self.press(b"\r");
        self.press(b"2");
        self.expect("SOURCE, the disk to back up", 20);
        self.select(src);
        self.press(b"\r");
        self.expect("where to write the image", 20);
    }

    /// Waits for the result screen and fails unless the job finished with nothing lost.
    /// The title row arrives first over the serial line (ratatui redraws row by row), so it
    /// waits for the result's status line too (the ends of the lines in src/tui/view/job.rs).
    fn expect_finished(&mut self, what: &str) {
        const STATUS_ENDS: [&str; 6] = [
            "everything was done, nothing lost",
            "see what was lost below",
            "nothing was written",
            "does not match",
            "stopped at your request",
            "the job did not complete",
        ];
        self.wait("the result screen", 180, |s| {
            let t = s.text();
            t.contains("Job finished") && STATUS_ENDS.iter().any(|end| t.contains(end))
        });
        let text = self.s.text();
        if !text.contains("FINISHED: everything was done") {
            self.vm
                .fail(&format!("{what} did not finish cleanly:\n{text}"));
        }
    }

    /// Powers the guest off from the result screen (`p`) and waits for QEMU to exit.
    fn power_off(&mut self) {
        self.press(b"p");
        let r = self.vm.wait_exit(Duration::from_secs(60));
        self.vm.check(r);
    }

    /// Fails the test if any of `secrets` (typed on the console) is anywhere in what the
    /// serial line carried.
    fn never_sent(&self, secrets: &[&str]) {
        let out = String::from_utf8_lossy(&self.vm.output()).into_owned();
        if secrets.iter().any(|s| out.contains(s)) {
            self.vm
                .fail("a secret typed on the console appears in the serial output");
        }
    }
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
    let src_sha = Unchanged::record(&src);
    let disks = vec![
        DiskSpec::new(&src, Bus::Virtio, "TUI-SRC"),
        DiskSpec::new(&dst, Bus::Nvme, "TUI-DST"),
    ];
    // The disks screen lists both disks with their serials and the source's labels.
    let mut c = Console::boot("tui-clone", disks, None);
    c.select("TUI-SRC");
    c.expect("TUISRC", 10);

    // Job menu -> clone -> source picker.
    c.press(b"\r");
    c.expect("What do you want to do?", 20);
    c.press(b"1");
    c.expect("SOURCE, the disk to copy FROM", 20);
    c.select("TUI-SRC");
    c.press(b"\r");

    // Target picker: the source is gone from the list.
    c.expect("TARGET, the disk to ERASE", 20);
    let list: Vec<String> =
        c.s.rows()
            .into_iter()
            .filter(|r| r.contains("GiB") || r.contains("MiB"))
            .filter(|r| !r.contains("Copying FROM"))
            .collect();
    if list.iter().take(3).any(|r| r.contains("TUI-SRC")) {
        c.vm.fail(&format!(
            "the source is offered as a target:\n{}",
            c.s.text()
        ));
    }
    c.select("TUI-DST");
    c.press(b"\r");

    // Confirmation: names the target; Enter without typing does nothing.
    c.expect("type its name", 20);
    let text = c.s.text();
    let name = c.name_to_type();
    if !name.starts_with("nvme") || !text.contains("TUI-DST") {
        c.vm.fail(&format!(
            "the confirmation must name the NVMe target:\n{text}"
        ));
    }
    // What is copied of each source partition, read in the background: ext4 and FAT by their
    // used blocks.
    c.expect("copies ", 30);
    let text = c.s.text();
    if !text.contains("ext4") || !text.contains("vfat") || text.matches("used blocks").count() < 3 {
        c.vm.fail(&format!(
            "the confirmation must show the source partitions' used blocks:\n{text}"
        ));
    }
    c.press(b"\r");
    c.expect("exactly to erase it", 10);
    c.press(name.as_bytes());
    c.press(b"\r");

    // Progress, then the result screen; power off from it and QEMU exits.
    c.expect_finished("the clone");
    c.power_off();

    src_sha.check("the source");
    assert_eq!(
        sha256(&dst).unwrap(),
        sha256(&src).unwrap(),
        "the target differs from the source"
    );
}

/// The passphrase typed on the console (never drawn, logged or on a command line: the
/// test looks for it in everything the serial line carried) and a wrong one typed first.
const PASSPHRASE: &str = "tui-Secret-7Kq9w";
const WRONG: &str = "tui-Wrong-3Zp2x";

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
    let src_sha = Unchanged::record(&src);
    let disks = vec![
        DiskSpec::new(&src, Bus::Virtio, "TUI-SRC"),
        DiskSpec::new(&bak, Bus::Nvme, "TUI-BAK"),
        DiskSpec::new(&rst, Bus::Nvme, "TUI-RST"),
    ];
    let mut c = Console::boot("tui-image", disks, None);

    // 2: a full image of the source onto the BACKUPS partition, encrypted (the passphrase
    // typed twice, each followed by Enter).
    c.start_full_image("TUI-SRC");
    c.select("BACKUPS");
    c.press(b"\r");
    c.expect("/lifeboat/TUI-SRC.lbi_", 20);
    c.press(b"\r");
    c.expect("encrypt the image?", 20);
    c.press(b"\x1b[B");
    c.press(b"\r");
    c.expect("Passphrase", 20);
    for _ in 0..2 {
        c.press(PASSPHRASE.as_bytes());
        c.press(b"\r");
    }
    c.expect("ENCRYPTED with the passphrase", 20);
    c.press(b"\r");
    c.expect_finished("the image");

    // c: its second copy onto the SECOND partition (ciphertext, compared byte for byte).
    c.press(b"c");
    c.expect("where the second copy goes", 20);
    c.select("SECOND");
    c.press(b"\r");
    c.expect("/lifeboat/TUI-SRC.lbi_", 20);
    c.press(b"\r");
    c.expect("Enter to start", 20);
    c.press(b"\r");
    c.expect_finished("the second copy");

    // 4: restore the image found on the second copy onto the blank disk: a wrong passphrase
    // is told and asked again; the disk holding the image is refused as a target.
    c.press(b"n");
    c.press(b"4");
    c.expect("where the image is", 20);
    c.select("SECOND");
    c.press(b"\r");
    c.press(b"TUI-SRC.lbi\r");
    c.expect("is encrypted: type its passphrase", 60);
    c.press(WRONG.as_bytes());
    c.press(b"\r");
    c.expect("Wrong passphrase: nothing was written", 120);
    c.press(PASSPHRASE.as_bytes());
    c.press(b"\r");
    c.expect("TARGET, the disk to ERASE", 120);
    // (The disk list is refreshed every 2 s: a scan made while the passphrase step read the
    // image's header may still say its partition is mounted.)
    c.wait("the image's disk refused as a target", 20, |s| {
        s.rows()
            .iter()
            .any(|r| r.contains("TUI-BAK") && r.contains("holds the image"))
    });
    c.select("TUI-RST");
    c.press(b"\r");
    c.expect("type its name", 20);
    let name = c.name_to_type();
    c.press(name.as_bytes());
    c.press(b"\r");
    c.expect_finished("the restore");
    c.power_off();
    c.never_sent(&[PASSPHRASE, WRONG]);
    src_sha.check("the source");
    assert_eq!(
        sha256(&rst).unwrap(),
        sha256(&src).unwrap(),
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
    let o = std::process::Command::new(host_lifeboat())
        .args(["image", "create"])
        .arg(&src)
        .arg(&img)
        .output()
        .unwrap_or_else(|e| panic!("run lifeboat image create: {e}"));
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
    let (src_sha, bak_sha) = (Unchanged::record(&src), Unchanged::record(&bak));
    let disks = vec![
        DiskSpec::new(&bak, Bus::Virtio, "TUI-BAK"),
        DiskSpec::new(&usb, Bus::Usb, "TUI-USB").removable(),
    ];
    let mut c = Console::boot("tui-files", disks, None);
    c.press(b"\r");
    c.press(b"6");
    c.expect("where the image is", 20);
    c.select("BACKUPS");
    c.press(b"\r");
    c.press(b"pc.lbi\r");
    // The browser mounts the image's partition (through NBD) and lists its top.
    c.expect("docs/", 90);
    c.select("docs/");
    c.press(b"\r");
    c.expect("letter.txt", 30);
    c.select("letter.txt");
    c.press(b" ");
    c.expect("1 marked", 10);
    c.press(b"c");
    c.expect("where to copy the files", 20);
    c.select("USBKEY");
    c.press(b"\r");
    c.press(b"\r");
    c.expect("Nothing is erased", 20);
    c.press(b"\r");
    c.expect_finished("the restore of a file");
    c.power_off();
    let p = &usb_built.partitions[0];
    let part = t.join("usb-p1.vfat");
    lifeboat_qemu_tests::check::extract(&usb, &part, p.start_bytes, p.size_bytes);
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
    src_sha.check("the source");
    bak_sha.check("the disk holding the image");
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
    let t = TempDir::new("tui-smb").unwrap();
    let share = t.join("share");
    std::fs::create_dir_all(&share).unwrap();
    let samba = Samba::start(&t.join("samba"), "backups", &share, "root", SMB_PASSWORD)
        .unwrap_or_else(|e| panic!("{e}"));
    let (src, _) = build_disks(&t);
    let _ = std::fs::remove_file(t.join("dst.img"));
    let src_sha = Unchanged::record(&src);
    let net = NetSpec::restricted().forward(
        SMB_SERVER,
        445,
        &format!(
            "{} 127.0.0.1 {}",
            env!("CARGO_BIN_EXE_tcp-stdio"),
            samba.port
        ),
    );
    let mut c = Console::boot(
        "tui-smb",
        vec![DiskSpec::new(&src, Bus::Virtio, "TUI-SRC")],
        Some(&net),
    );
    c.start_full_image("TUI-SRC");
    // The image's size bound is known before a place is picked.
    c.expect("image: at most", 60);
    c.select("add a network place");
    c.press(b"\r");
    c.expect("smb://[user@]host/share/folder", 20);
    let url = format!("smb://root@{SMB_SERVER}/backups/pc");
    c.press(url.as_bytes());
    c.press(b"\r");
    c.press(SMB_PASSWORD.as_bytes());
    c.expect(&"*".repeat(SMB_PASSWORD.len()), 20);
    c.press(b"\r");
    // DHCP, then the mount: the place comes back with its free space, selected.
    c.wait("the share with its free space", 120, |s| {
        s.selected_row()
            .is_some_and(|r| r.contains(&url) && r.contains("free") && r.contains("SMB"))
    });
    c.press(b"\r");
    c.expect("/lifeboat/TUI-SRC.lbi_", 20);
    c.press(b"\r");
    // Not encrypted (the default choice).
    c.expect("encrypt the image?", 20);
    c.press(b"\r");
    c.expect("Nothing is erased", 20);
    c.press(b"\r");
    c.expect_finished("the image onto the share");
    c.power_off();
    c.never_sent(&[SMB_PASSWORD, "Kq9"]);
    drop(c);
    src_sha.check("the source");
    assert!(
        !share.join("pc/lifeboat/TUI-SRC.lbi.partial").exists(),
        "a .partial was left on the share"
    );
    host_verify(&share.join("pc/lifeboat/TUI-SRC.lbi"));
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
