//! `scripts/demo`: builds a few demo disks and boots Lifeboat in QEMU in this terminal (serial
//! console, Ctrl-A X quits). Without a terminal on stdin it runs `lifeboat list` and exits.
use lifeboat_qemu_tests::disks::{DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::qemu::{self, default_append, Bus, DiskSpec, SerialMode, VmSpec};
use lifeboat_qemu_tests::{artefacts, repo_root, run_param, Faults};
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::process::Command;

fn main() {
    if let Err(e) = run() {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let a = artefacts()?;
    let dir = repo_root().join("target").join("demo");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    eprintln!("demo: building demo disks in {} ...", dir.display());

    let src = dir.join("old-ssd.img");
    DiskBuilder::new(256, Table::Gpt)
        .part(
            Part::new(64, Fs::Vfat)
                .label("EFI")
                .name("EFI system")
                .file("EFI/BOOT/README.TXT", "a demo EFI partition\n"),
        )
        .part(
            Part::new(160, Fs::Ext4)
                .label("rootfs")
                .name("Linux root")
                .file(
                    "home/alice/thesis.txt",
                    "Chapter 1: why backups matter\n".repeat(200),
                )
                .file("etc/hostname", "alices-laptop\n"),
        )
        .build(&src)?;
    let target = dir.join("new-nvme.img");
    DiskBuilder::new(320, Table::None).build(&target)?;
    let usb = dir.join("usb-stick.img");
    DiskBuilder::new(512, Table::Mbr)
        .part(Part::new(500, Fs::Exfat).label("BACKUPS"))
        .build(&usb)?;
    let bad = dir.join("failing-hdd.img");
    DiskBuilder::new(64, Table::Gpt)
        .part(
            Part::new(60, Fs::Ext4)
                .label("photos")
                .file("photos/cat.txt", "=^.^=\n"),
        )
        .build(&bad)?;
    let faults = Faults::new()
        .bad_bytes(8 << 20, 4096)
        .bad_bytes(20 << 20, 64 << 10)
        .transient_sector(30 << 11);
    let conf = dir.join("failing-hdd.blkdebug");
    faults
        .write(&conf)
        .map_err(|e| format!("{}: {e}", conf.display()))?;

    let disks = vec![
        DiskSpec::new(&src, Bus::Sata, "DEMO-SRC-0001").model("DEMO OLD SSD"),
        DiskSpec::new(&target, Bus::Nvme, "DEMO-NEW-0002"),
        DiskSpec::new(&usb, Bus::Usb, "DEMO-USB-0003").removable(),
        DiskSpec::new(&bad, Bus::Virtio, "DEMO-BAD-0004").blkdebug(&conf),
    ];
    let interactive =
        std::io::stdin().is_terminal() && std::env::var_os("LIFEBOAT_DEMO_RUN").is_none();
    let mut spec = VmSpec::new(&a.kernel, &a.initrd, SerialMode::Terminal);
    spec.disks = disks;
    spec.append = if interactive {
        default_append("")
    } else {
        let cmd = std::env::var("LIFEBOAT_DEMO_RUN").unwrap_or_else(|_| "list".into());
        default_append(&format!("{} lifeboat.then=poweroff", run_param(&cmd)))
    };
    let args = qemu::argv(&spec)?;

    println!("================================================================================");
    println!(
        " Lifeboat demo: booting {} in QEMU ({})",
        a.kernel.display(),
        if spec.kvm {
            "KVM"
        } else {
            "TCG, no KVM: give it ~20 s"
        }
    );
    println!(" Disks attached:");
    println!("   SATA   DEMO-SRC-0001  256 MiB  'DEMO OLD SSD': GPT, FAT 'EFI' + ext4 'rootfs' with files");
    println!("   NVMe   DEMO-NEW-0002  320 MiB  blank: a clone target");
    println!("   USB    DEMO-USB-0003  512 MiB  stick, MBR, exFAT 'BACKUPS': an image destination");
    println!("   virtio DEMO-BAD-0004   64 MiB  FAILING (QEMU blkdebug): unreadable sectors at 8 MiB and 20 MiB");
    println!(" Disk images: {}", dir.display());
    if interactive {
        println!(
            " This terminal is the serial console. Quit: Ctrl-A then X.  (Ctrl-A C: QEMU monitor)"
        );
        println!(" Try in a second boot: lifeboat.run=\"clone serial=DEMO-SRC-0001 serial=DEMO-NEW-0002 --yes\"");
        println!("   (LIFEBOAT_DEMO_RUN='clone serial=DEMO-SRC-0001 serial=DEMO-NEW-0002 --yes' scripts/demo)");
    } else {
        println!(
            " Not a terminal (or LIFEBOAT_DEMO_RUN set): running `lifeboat {}`, then powering off.",
            std::env::var("LIFEBOAT_DEMO_RUN").unwrap_or_else(|_| "list".into())
        );
    }
    println!("================================================================================");
    let err = Command::new(&spec.qemu).args(&args).exec();
    Err(format!(
        "cannot start {}: {err}; run scripts/setup",
        spec.qemu
    ))
}
