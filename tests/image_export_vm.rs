//! `image export --format qcow2|vhd|vhdx|vmdk`: every VM disk format written by Lifeboat is
//! checked by QEMU's own tools — `qemu-img check` (for the formats it can check: qcow2, vhdx,
//! vmdk), `qemu-img info` (format and virtual size) and `qemu-img compare` against the raw
//! export — for a full image and for the third point of an incremental chain, and is sparse
//! (about the size of the data, not of the disk). The images' sha256 are checked unchanged.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{assert_exit, have_qemu_img, lifeboat, run, s, sh, sha256, TempDir};

/// 48 MiB + 512 bytes (not a whole number of 64 KiB clusters or 2 MiB blocks): an ext4 partition
/// with files, random data in a gap, zeros elsewhere.
fn sample_disk(t: &TempDir) -> PathBuf {
    let d = t.p("disk.img");
    let c = t.p("content");
    sh(&format!(
        "mkdir -p {c} && cp -r /usr/share/doc/bash {c}/ 2>/dev/null; seq 1 80000 > {c}/numbers.txt; \
         head -c 1500000 /dev/urandom > {c}/random.bin; \
         truncate -s $((48 * 1048576 + 512)) {d} && \
         sgdisk -n1:2048:+24M -t1:8300 {d} >/dev/null && \
         mkfs.ext4 -q -F -d {c} -E offset={o1} {d} 24M && \
         dd if=/dev/urandom of={d} bs=64K seek=500 count=7 conv=notrunc status=none",
        c = s(&c),
        d = s(&d),
        o1 = 2048 * 512,
    ));
    d
}

fn export(img: &Path, out: &Path, format: Option<&str>) -> Output {
    let mut a = vec!["image", "export", s(img), s(out)];
    if let Some(f) = format {
        a.extend(["--format", f]);
    }
    lifeboat(&a)
}

fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().blocks() * 512
}

/// Exports `img` in every format and checks each against `raw` with QEMU's tools.
fn check_every_format(t: &TempDir, img: &Path, raw: &Path) {
    let size = std::fs::metadata(raw).unwrap().len();
    for (format, qemu, checkable) in [
        ("qcow2", "qcow2", true),
        ("vhd", "vpc", false),
        ("vhdx", "vhdx", true),
        ("vmdk", "vmdk", true),
    ] {
        let out = t.p(&format!("disk.{format}"));
        let _ = std::fs::remove_file(&out);
        assert_exit(&export(img, &out, Some(format)), 0);
        if checkable {
            let o = Command::new("qemu-img")
                .args(["check", "-f", qemu, s(&out)])
                .output()
                .unwrap();
            assert_exit(&o, 0);
        }
        let info =
            run(Command::new("qemu-img").args(["info", "--output=json", "-f", qemu, s(&out)]));
        let j: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(j["format"], qemu, "{info}");
        assert_eq!(j["virtual-size"], size, "{format}: {info}");
        let o = Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", qemu, s(raw), s(&out)])
            .output()
            .unwrap();
        assert_exit(&o, 0);
        // Sparse: the data (and metadata), not the whole disk.
        assert!(
            allocated(&out) <= allocated(raw) + (6 << 20),
            "{format}: {} bytes allocated for {} of data",
            allocated(&out),
            allocated(raw)
        );
    }
}

#[test]
fn every_vm_format_passes_qemu_img_check_and_compares_equal() {
    if !have_qemu_img() {
        return;
    }
    let t = TempDir::new("export-vm");
    let disk = sample_disk(&t);
    let full = t.p("full.lbi");
    assert_exit(&lifeboat(&["image", "create", s(&disk), s(&full)]), 0);
    sh(&format!(
        "dd if=/dev/urandom of={d} bs=1M seek=40 count=3 conv=notrunc status=none",
        d = s(&disk)
    ));
    let inc1 = t.p("inc1.lbi");
    assert_exit(
        &lifeboat(&["image", "create", s(&disk), s(&inc1), "--parent", s(&full)]),
        0,
    );
    sh(&format!(
        "dd if=/dev/urandom of={d} bs=4K seek=300 count=5 conv=notrunc status=none",
        d = s(&disk)
    ));
    let inc2 = t.p("inc2.lbi");
    assert_exit(
        &lifeboat(&["image", "create", s(&disk), s(&inc2), "--parent", s(&inc1)]),
        0,
    );
    let sums: Vec<String> = [&full, &inc1, &inc2].iter().map(|p| sha256(p)).collect();
    for img in [&full, &inc2] {
        let raw = t.p("disk.raw");
        let _ = std::fs::remove_file(&raw);
        // The existing interface: no --format is raw.
        assert_exit(&export(img, &raw, None), 0);
        check_every_format(&t, img, &raw);
    }
    // An existing output is replaced only with --force; an unknown format is a usage error.
    let out = t.p("disk.qcow2");
    assert_exit(&export(&full, &out, Some("qcow2")), 4);
    assert_exit(&export(&full, &t.p("x.iso"), Some("iso")), 2);
    let after: Vec<String> = [&full, &inc1, &inc2].iter().map(|p| sha256(p)).collect();
    assert_eq!(sums, after, "an image changed");
}
