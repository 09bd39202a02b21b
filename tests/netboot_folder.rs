//! `scripts/build-netboot` on the host (issue 18): the folder it writes from a machines file
//! and a kernel + initramfs (stand-in files here: the script copies them unchanged), checked by
//! real tools — `sha256sum -c` on its SHA256SUMS, `grub-script-check` on the GRUB menu,
//! `dnsmasq --test` on the dnsmasq examples — and the refusals of a bad machines file, which
//! leave the previous folder in place. The VM boots of the folder are
//! `qemu-tests/tests/netboot.rs`.
mod common;

use common::{sha256, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-netboot")
}

/// A stand-in kernel and initramfs in `t/built`.
fn built(t: &TempDir) -> PathBuf {
    let d = t.p("built");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("vmlinuz"),
        b"not a kernel, copied unchanged\n".repeat(100),
    )
    .unwrap();
    std::fs::write(d.join("initramfs.img"), b"not an initramfs\n".repeat(300)).unwrap();
    d
}

fn build(t: &TempDir, machines: &str, extra: &[&str]) -> Output {
    let m = t.p("machines");
    std::fs::write(&m, machines).unwrap();
    Command::new(script())
        .arg("--from")
        .arg(t.p("built"))
        .arg("--machines")
        .arg(&m)
        .arg("--out")
        .arg(t.p("nb"))
        .args(extra)
        .output()
        .expect("run scripts/build-netboot")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether the Debian files the script copies are installed (scripts/setup installs them).
fn tools_present() -> bool {
    let ok = [
        "/usr/lib/ipxe/undionly.kpxe",
        "/usr/lib/shim/shimx64.efi.signed",
        "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
    ]
    .iter()
    .all(|p| Path::new(p).is_file());
    if !ok {
        eprintln!("skipped: Debian's ipxe / shim-signed / grub-efi-amd64-signed are not installed (scripts/setup)");
    }
    ok
}

const MACHINES: &str = "# a lab\n\
    all      lifeboat.then=poweroff\n\
    default  lifeboat.run=\"list --json\"\n\
    52-54-00-AB-CD-01    lifeboat.run=\"clone serial=A   serial=B --yes --json\"   lifeboat.credentials=label=CREDS:/lifeboat.cred\n\
    \n\
    52:54:00:ab:cd:02 lifeboat.wait=\"serial=X serial=Y\"\n";

#[test]
fn the_folder_has_everything_and_the_tools_accept_it() {
    if !tools_present() {
        return;
    }
    let t = TempDir::new("netboot-folder");
    let b = built(&t);
    let o = build(&t, MACHINES, &["--server", "192.168.7.5"]);
    assert!(o.status.success(), "{}", text(&o));
    let nb = t.p("nb");
    for f in [
        "vmlinuz",
        "initramfs.img",
        "lifeboat.ipxe",
        "lifeboat-http.ipxe",
        "undionly.kpxe",
        "snponly.efi",
        "ipxe.efi",
        "bootnetx64.efi",
        "grubx64.efi",
        "mmx64.efi",
        "grub/grub.cfg",
        "dnsmasq-proxy.conf",
        "dnsmasq-tftp-only.conf",
        "nginx-lifeboat.conf",
        "README.txt",
        "SHA256SUMS",
    ] {
        assert!(nb.join(f).is_file(), "{f} is missing");
    }
    // The kernel and initramfs unchanged; the boot programs are Debian's files byte for byte.
    for f in ["vmlinuz", "initramfs.img"] {
        assert_eq!(sha256(&nb.join(f)), sha256(&b.join(f)), "{f}");
    }
    for (f, deb) in [
        ("undionly.kpxe", "/usr/lib/ipxe/undionly.kpxe"),
        ("snponly.efi", "/usr/lib/ipxe/snponly.efi"),
        ("bootnetx64.efi", "/usr/lib/shim/shimx64.efi.signed"),
        (
            "grubx64.efi",
            "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
        ),
    ] {
        assert_eq!(sha256(&nb.join(f)), sha256(Path::new(deb)), "{f}");
    }
    // sha256sum -c: the checksums list every file and they match.
    let c = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&nb)
        .output()
        .unwrap();
    assert!(c.status.success(), "sha256sum -c: {}", text(&c));
    let sums = std::fs::read_to_string(nb.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 15, "{sums}");

    // The iPXE table: normalised MACs, every machine's own line with the common parameters.
    let ipxe = std::fs::read_to_string(nb.join("lifeboat.ipxe")).unwrap();
    assert!(ipxe.starts_with("#!ipxe\n"));
    assert!(ipxe.contains("set lifeboat_mac ${netX/mac}\n"));
    assert!(ipxe.contains("iseq ${lifeboat_mac} 52:54:00:ab:cd:01 && goto m1 ||\n"));
    assert!(ipxe.contains("iseq ${lifeboat_mac} 52:54:00:ab:cd:02 && goto m2 ||\n"));
    let base = "kernel vmlinuz initrd=initramfs.img console=tty0 console=ttyS0,115200 lifeboat.then=poweroff";
    assert!(ipxe.contains(&format!(
        ":m1\necho Lifeboat: the settings of 52:54:00:ab:cd:01\n{base} lifeboat.run=\"clone serial=A serial=B --yes --json\" lifeboat.credentials=label=CREDS:/lifeboat.cred || goto failed\n"
    )), "{ipxe}");
    assert!(ipxe.contains(&format!(
        "{base} lifeboat.wait=\"serial=X serial=Y\" || goto failed\n"
    )));
    assert!(ipxe.contains(&format!(
        ":default\necho Lifeboat: not listed, the default settings\n{base} lifeboat.run=\"list --json\" || goto failed\n"
    )));
    assert!(ipxe.contains("initrd initramfs.img || goto failed\nboot || goto failed\n"));
    let http = std::fs::read_to_string(nb.join("lifeboat-http.ipxe")).unwrap();
    assert!(
        http.contains("chain --autofree http://192.168.7.5/lifeboat/lifeboat.ipxe || goto failed")
    );

    // GRUB's menu: the same table, and GRUB's own syntax checker accepts it.
    let grub = std::fs::read_to_string(nb.join("grub/grub.cfg")).unwrap();
    assert!(grub.contains("  if [ \"$net_default_mac\" = \"52:54:00:ab:cd:01\" ]; then\n    linux /vmlinuz console=tty0 console=ttyS0,115200 lifeboat.then=poweroff lifeboat.run=\"clone serial=A serial=B --yes --json\""), "{grub}");
    assert!(grub.contains("  elif [ \"$net_default_mac\" = \"52:54:00:ab:cd:02\" ]; then\n"));
    assert!(grub.contains("  else\n    linux /vmlinuz console=tty0 console=ttyS0,115200 lifeboat.then=poweroff lifeboat.run=\"list --json\"\n  fi\n  initrd /initramfs.img\n"));
    let g = Command::new("grub-script-check")
        .arg(nb.join("grub/grub.cfg"))
        .output()
        .expect("grub-script-check (grub-common, scripts/setup)");
    assert!(g.status.success(), "grub-script-check: {}", text(&g));

    // dnsmasq's own parser accepts both examples; the server address is in the proxy range.
    let proxy = std::fs::read_to_string(nb.join("dnsmasq-proxy.conf")).unwrap();
    assert!(proxy.contains("dhcp-range=192.168.7.5,proxy"));
    for conf in ["dnsmasq-proxy.conf", "dnsmasq-tftp-only.conf"] {
        let d = Command::new("dnsmasq")
            .arg("--test")
            .arg(format!("--conf-file={}", nb.join(conf).display()))
            .output()
            .expect("dnsmasq (dnsmasq-base, scripts/setup)");
        assert!(d.status.success(), "dnsmasq --test {conf}: {}", text(&d));
    }
}

#[test]
fn without_a_default_line_an_unlisted_machine_gets_the_console() {
    if !tools_present() {
        return;
    }
    let t = TempDir::new("netboot-nodefault");
    built(&t);
    let o = build(&t, "52:54:00:00:00:01 lifeboat.run=\"list\"\n", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let ipxe = std::fs::read_to_string(t.p("nb/lifeboat.ipxe")).unwrap();
    assert!(ipxe.contains(
        ":default\necho Lifeboat: not listed, the interactive console\nkernel vmlinuz initrd=initramfs.img console=tty0 console=ttyS0,115200 || goto failed\n"
    ), "{ipxe}");
    // An empty machines file (the shipped one is all comments): the console for everyone.
    let o = build(&t, "# nothing\n", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let grub = std::fs::read_to_string(t.p("nb/grub/grub.cfg")).unwrap();
    assert!(
        grub.contains(
            "  linux /vmlinuz console=tty0 console=ttyS0,115200\n  initrd /initramfs.img\n"
        ),
        "{grub}"
    );
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("initramfs/netboot/machines");
    let o = build(&t, &std::fs::read_to_string(shipped).unwrap(), &[]);
    assert!(
        o.status.success(),
        "the shipped machines file: {}",
        text(&o)
    );
}

#[test]
fn a_bad_machines_file_is_refused_and_the_old_folder_kept() {
    if !tools_present() {
        return;
    }
    let t = TempDir::new("netboot-bad");
    built(&t);
    let o = build(&t, MACHINES, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let before = sha256(&t.p("nb/lifeboat.ipxe"));
    for (machines, says) in [
        (
            "52:54:00:12:34 lifeboat.run=\"list\"\n",
            "line 1: \"52:54:00:12:34\" is not a MAC address",
        ),
        (
            "all x=1\nnot-a-mac x=1\n",
            "line 2: \"not-a-mac\" is not a MAC address",
        ),
        (
            "52:54:00:12:34:56 a=1\n52-54-00-12-34-56 b=2\n",
            "line 2: 52-54-00-12-34-56 is listed twice (first on line 1)",
        ),
        (
            "default lifeboat.run=\"list --json\n",
            "line 1: a double quote is not closed",
        ),
        (
            "default lifeboat.run=\"clone a b; reboot\"\n",
            "line 1: the parameters contain one of",
        ),
        (
            "default lifeboat.run=\"list ${x}\"\n",
            "line 1: the parameters contain one of",
        ),
        (
            "default lifeboat.media=1234-5678\n",
            "line 1: lifeboat.media= names a boot stick",
        ),
    ] {
        let o = build(&t, machines, &[]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{machines:?} was accepted: {out}");
        assert!(
            out.contains(says),
            "{machines:?}: expected {says:?} in: {out}"
        );
        assert_eq!(
            sha256(&t.p("nb/lifeboat.ipxe")),
            before,
            "the old folder changed"
        );
    }
    // A command line over the limit names the machine.
    let long = format!("52:54:00:12:34:56 lifeboat.run=\"{}\"\n", "x ".repeat(1100));
    let o = build(&t, &long, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("the kernel command line for 52:54:00:12:34:56 is"),
        "{}",
        text(&o)
    );
    // Usage errors: exit 2.
    let o = Command::new(script()).arg("--bogus").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = build(&t, MACHINES, &["--server", "not-an-address"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--server wants an IPv4 address"));
    assert_eq!(
        sha256(&t.p("nb/lifeboat.ipxe")),
        before,
        "the old folder changed"
    );
}
