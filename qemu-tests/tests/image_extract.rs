//! The "restore files" job in the environment: `lifeboat image extract` takes files and
//! folders out of an image on a store disk (`label=LBSTORE:/pc.lbi`) onto another disk
//! (`label=LBDEST:/…`), run unattended, without restoring the disk. Two boots:
//!
//! 1. the ext4 partition: a folder tree and one file whose name is already taken at the
//!    destination (it must arrive as `hostname (2)`, the old file untouched). The host reads the
//!    source partition and the destination with `debugfs rdump` and checks every file's sha256,
//!    mode and modification time.
//! 2. the FAT partition, whole (`/`), from the same image with one stored chunk of one file
//!    damaged on the store disk (a chunk stored raw on its own, which the host's `image verify`
//!    confirms is the only damage): exit 5, that file (and only it) reported with EIO and absent,
//!    every other file copied with the sha256 `mcopy` reads from the source partition.
//!
//! The source disk and the store disk are unchanged by each boot.
use lifeboat_qemu_tests::check::{host_lifeboat, noise};
use lifeboat_qemu_tests::disks::{run, sha256, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{run_param, Bus, DiskSpec, TempDir, Vm};
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Where `w` occurs in `hay`, when it occurs exactly once.
fn unique(hay: &[u8], w: &[u8]) -> Option<usize> {
    let mut found = hay
        .windows(w.len())
        .enumerate()
        .filter(|(_, x)| *x == w)
        .map(|(i, _)| i);
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Copies `len` bytes at `offset` of `disk` into the file `out`.
fn cut(disk: &Path, offset: u64, len: u64, out: &Path) {
    let f = std::fs::File::open(disk).unwrap();
    let mut b = vec![0u8; len as usize];
    f.read_exact_at(&mut b, offset).unwrap();
    std::fs::write(out, b).unwrap();
}

/// Every regular file under `dir`: relative path -> (sha256, mode, mtime).
fn tree(dir: &Path) -> BTreeMap<String, (String, u32, i64)> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, (String, u32, i64)>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                walk(root, &p, out);
            } else if m.is_file() {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, (sha256(&p).unwrap(), m.mode() & 0o7777, m.mtime()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// `debugfs -R "rdump PATH OUT"` of the ext4 filesystem in `part` (keeps modes and times).
fn rdump(part: &Path, path: &str, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    run(
        "debugfs",
        &["-R".into(), format!("rdump {path} {}", s(out)), s(part)],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Boots with the store and destination disks, runs `args`, returns the result's output.
fn boot(name: &str, args: &str, store: &Path, dest: &Path) -> (i64, Value) {
    let mut vm = Vm::boot(
        name,
        &run_param(args),
        vec![
            DiskSpec::new(store, Bus::Virtio, "LB-X-STORE"),
            DiskSpec::new(dest, Bus::Virtio, "LB-X-DEST"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(Duration::from_secs(300));
    let res = vm.check(res);
    let _ = vm.wait_exit(Duration::from_secs(60));
    (
        res["exit_code"].as_i64().unwrap_or(-1),
        res["output"].clone(),
    )
}

#[test]
fn extract_files_from_ext4_and_fat_partitions_of_an_image() {
    let t = TempDir::new("image-extract").unwrap();
    let src = t.join("src.img");
    let damaged = noise(8 << 20, 7);
    let built = DiskBuilder::new(64, Table::Gpt)
        .part(
            Part::new(28, Fs::Ext4)
                .label("XROOT")
                .file("etc/hostname", "imaged-pc\n")
                .file("docs/letter.txt", "Dear Ann,\n".repeat(5000))
                .file("docs/photos/a.jpg", noise(700_000, 1))
                .file("docs/photos/b.jpg", noise(1_300_000, 2))
                .file("docs/empty", "")
                .file("docs/deep/er/still.txt", "deep\n"),
        )
        .part(
            Part::new(24, Fs::Vfat)
                .label("XFAT")
                .file("README.TXT", "fat readme\n")
                .file("DIR/SUB/NOTE.TXT", "a note\n".repeat(900))
                .file("DIR/PIC.BIN", noise(300_000, 3))
                .file("RANDOM.BIN", damaged.clone()),
        )
        .build(&src)
        .unwrap_or_else(|e| panic!("{e}"));
    let img = t.join("pc.lbi");
    let o = std::process::Command::new(host_lifeboat())
        // LZ4 compresses every chunk on its own (zstd packs up to 8 in one frame, and a group
        // that saves space as a whole would put RANDOM.BIN's chunks in one frame with the FAT's
        // own structures), so the damage below stays inside one chunk of RANDOM.BIN whatever
        // the default's group size.
        .args(["image", "create", &s(&src), &s(&img), "--compress", "lz4"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Pick a window of RANDOM.BIN whose chunk the image stores raw, alone (a chunk inside a
    // zstd group would damage its neighbours too, the FAT's own structures among them): the
    // host's `image verify` of a copy with a byte of that window flipped must name exactly one
    // damaged chunk.
    let lbi = std::fs::read(&img).unwrap();
    let mut pick = None;
    // (2 MiB from either end of the file: the whole 1 MiB chunk is the file's, not the FAT's
    // nor the next file's.)
    for off in (2 << 20..damaged.len() - (2 << 20)).step_by(256 << 10) {
        let Some(i) = unique(&lbi, &damaged[off..off + 4096]) else {
            continue;
        };
        let mut bad = lbi.clone();
        bad[i + 100] ^= 0x55;
        let bad_path = t.join("bad.lbi");
        std::fs::write(&bad_path, &bad).unwrap();
        let o = std::process::Command::new(host_lifeboat())
            .args(["image", "verify", &s(&bad_path), "--json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        std::fs::remove_file(&bad_path).unwrap();
        if v["problem_count"] == 1 {
            pick = Some(lbi[i..i + 4096].to_vec());
            break;
        }
    }
    let window = pick.expect("no chunk of RANDOM.BIN is stored raw on its own in the image");
    drop(lbi);
    let store = t.join("store.img");
    DiskBuilder::new(72, Table::Mbr)
        .part(
            Part::new(64, Fs::Ext4)
                .label("LBSTORE")
                .file("pc.lbi", std::fs::read(&img).unwrap()),
        )
        .build(&store)
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(&img).unwrap();
    let dest = t.join("dest.img");
    let dest_built = DiskBuilder::new(48, Table::Mbr)
        .part(
            Part::new(40, Fs::Ext4)
                .label("LBDEST")
                .file("restored/hostname", "already here\n"),
        )
        .build(&dest)
        .unwrap_or_else(|e| panic!("{e}"));
    let src_sha = sha256(&src).unwrap();
    let store_sha = sha256(&store).unwrap();

    // Boot 1: the ext4 partition.
    let (code, out) = boot(
        "image-extract-ext4",
        "image extract label=LBSTORE:/pc.lbi /docs /etc/hostname --partition 1 --to label=LBDEST:/restored --json",
        &store,
        &dest,
    );
    assert_eq!(code, 0, "extract failed: {out}");
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["filesystem"], "ext4", "{out}");
    assert_eq!(out["files"], 6, "{out}");
    assert_eq!(out["errors"], serde_json::json!([]), "{out}");
    assert_eq!(
        out["renamed"],
        serde_json::json!([{"path": "/etc/hostname", "dest": "hostname (2)"}]),
        "{out}"
    );
    assert_eq!(sha256(&store).unwrap(), store_sha, "the store disk changed");
    let p1 = &built.partitions[0];
    let src_part = t.join("src-p1.ext4");
    cut(&src, p1.start_bytes, p1.size_bytes, &src_part);
    let d1 = &dest_built.partitions[0];
    let dest_part = t.join("dest-p1.ext4");
    cut(&dest, d1.start_bytes, d1.size_bytes, &dest_part);
    run("e2fsck", &["-fn".into(), s(&dest_part)], None)
        .unwrap_or_else(|e| panic!("the destination's filesystem: {e}"));
    rdump(&src_part, "/docs", &t.join("src-docs"));
    rdump(&src_part, "/etc/hostname", &t.join("src-etc"));
    rdump(&dest_part, "/restored", &t.join("dest-out"));
    let want = tree(&t.join("src-docs/docs"));
    let got = tree(&t.join("dest-out/restored/docs"));
    assert_eq!(want.len(), 5, "{want:?}");
    assert_eq!(got, want, "extracted /docs differs (sha256, mode, mtime)");
    let host = tree(&t.join("src-etc"));
    let dest_top = tree(&t.join("dest-out/restored"));
    assert_eq!(dest_top.get("hostname (2)"), host.get("hostname"));
    assert_eq!(
        std::fs::read(t.join("dest-out/restored/hostname")).unwrap(),
        b"already here\n",
        "a file at the destination was replaced"
    );

    // Damage that chunk of RANDOM.BIN in the image on the store disk.
    let mut store_bytes = std::fs::read(&store).unwrap();
    let at = unique(&store_bytes, &window).expect("the chosen window is not on the store disk");
    store_bytes[at + 100] ^= 0x55;
    std::fs::write(&store, &store_bytes).unwrap();
    drop(store_bytes);
    let store_sha = sha256(&store).unwrap();

    // Boot 2: the whole FAT partition.
    let (code, out) = boot(
        "image-extract-fat",
        "image extract label=LBSTORE:/pc.lbi / --partition 2 --to label=LBDEST:/fat --json",
        &store,
        &dest,
    );
    assert_eq!(code, 5, "a damaged file must give exit 5: {out}");
    assert_eq!(out["ok"], false, "{out}");
    assert_eq!(out["filesystem"], "vfat", "{out}");
    let errs = out["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errs.len(), 1, "{out}");
    assert_eq!(errs[0]["path"], "/RANDOM.BIN", "{out}");
    assert_eq!(errs[0]["side"], "read", "{out}");
    assert_eq!(errs[0]["errno"], 5, "{out}");
    assert_eq!(out["files"], 3, "{out}");
    assert_eq!(sha256(&store).unwrap(), store_sha, "the store disk changed");
    cut(&dest, d1.start_bytes, d1.size_bytes, &dest_part);
    run("e2fsck", &["-fn".into(), s(&dest_part)], None)
        .unwrap_or_else(|e| panic!("the destination's filesystem: {e}"));
    rdump(&dest_part, "/fat", &t.join("dest-fat"));
    let p2 = &built.partitions[1];
    let fat = t.join("src-p2.vfat");
    cut(&src, p2.start_bytes, p2.size_bytes, &fat);
    let fat_out = t.join("src-fat");
    std::fs::create_dir_all(&fat_out).unwrap();
    run(
        "mcopy",
        &[
            "-s".into(),
            "-i".into(),
            s(&fat),
            "::/*".into(),
            s(&fat_out),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sums = |m: BTreeMap<String, (String, u32, i64)>| -> BTreeMap<String, String> {
        m.into_iter().map(|(k, v)| (k, v.0)).collect()
    };
    let mut want = sums(tree(&fat_out));
    assert!(want.remove("RANDOM.BIN").is_some(), "{want:?}");
    let got = sums(tree(&t.join("dest-fat/fat/partition-2")));
    assert_eq!(got, want, "extracted FAT files differ");
    assert_eq!(sha256(&src).unwrap(), src_sha, "the source changed");
}
