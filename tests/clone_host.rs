//! Host tests of `lifeboat clone` on disk-image files and loop devices: exact copies checked by
//! `cmp`, `sgdisk -v`, `e2fsck -fn` and `fsck.vfat -n`; larger and smaller targets; the JSON
//! report; mapfiles readable by GNU ddrescuelog; every safety refusal writes nothing; the source
//! is never changed and is held read-only (BLKROSET) only while the job runs.
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{
    assert_exit, json, lifeboat, run, sha256 as sha, zero_file, Loop, LoopOpts, TempDir, MIB,
};

/// A 64 MiB GPT disk: p1 FAT (16 MiB at 1 MiB) with files, p2 ext4 (30 MiB at 17 MiB) with the
/// crate's sources; random bytes in the unallocated tail.
fn sample(dir: &TempDir) -> PathBuf {
    let p = dir.p("src.img");
    std::fs::File::create(&p)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    run(Command::new("sgdisk")
        .args([
            "-n1:1MiB:+16MiB",
            "-t1:ef00",
            "-n2:17MiB:+30MiB",
            "-t2:8300",
        ])
        .arg(&p));
    let root = env!("CARGO_MANIFEST_DIR");
    run(Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-E",
            &format!("offset={}", 17 * MIB),
            "-d",
            &format!("{root}/src"),
        ])
        .arg(&p)
        .arg("30M"));
    run(Command::new("mkfs.vfat")
        .args(["-F", "16", "--offset", "2048"])
        .arg(&p)
        .arg("16384"));
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@1M", p.display()))
        .args([
            &format!("{root}/Cargo.toml"),
            &format!("{root}/README.md"),
            "::/",
        ]));
    let noise: Vec<u8> = (0..8 * MIB)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    {
        use std::os::unix::fs::FileExt;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all_at(&noise, 52 * MIB)
            .unwrap();
    }
    p
}

fn referees(img: &Path) {
    let out = run(Command::new("sgdisk").arg("-v").arg(img));
    assert!(out.contains("No problems found"), "sgdisk -v: {out}");
    run(Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={}", img.display(), 17 * MIB)));
    let d = TempDir::new(&format!(
        "fat-{}",
        img.file_name().unwrap().to_string_lossy()
    ));
    let fat = d.p("fat.img");
    run(Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", fat.display()))
        .args(["bs=1M", "skip=1", "count=16", "status=none"]));
    run(Command::new("fsck.vfat").arg("-n").arg(&fat));
}

/// Compares `[1024, len)`: sectors 0 and 1 (protective MBR, primary GPT header) are rewritten
/// by the fix-up on a target of another size; the entry array and all data must be identical.
fn same_range(a: &Path, b: &Path, len: u64) {
    let n = (len - 1024).to_string();
    run(Command::new("cmp")
        .args(["-i", "1024", "-n"])
        .arg(&n)
        .arg(a)
        .arg(b));
}

#[test]
fn file_clones_larger_smaller_and_equal() {
    let dir = TempDir::new("clone-files");
    let src = sample(&dir);
    let before = sha(&src);
    for (name, size) in [
        ("same.img", 64 * MIB),
        ("big.img", 96 * MIB),
        ("small.img", 48 * MIB),
    ] {
        let dst = dir.p(name);
        std::fs::File::create(&dst).unwrap().set_len(size).unwrap();
        let o = lifeboat(&[
            "clone",
            src.to_str().unwrap(),
            dst.to_str().unwrap(),
            "--yes",
            "--json",
        ]);
        assert_exit(&o, 0);
        let r = json(&o);
        assert_eq!(r["ok"], true);
        assert_eq!(r["verified"], true);
        assert_eq!(r["bad_bytes"], 0);
        assert_eq!(r["bad_ranges"], serde_json::json!([]));
        assert_eq!(r["logical_block_size"], 512);
        // The used blocks and everything outside partitions (the target was zeros, as is the
        // sample's free space: the copy is identical all the same).
        assert_eq!(r["bytes_copied"], r["used_bytes"]);
        assert!(
            r["used_bytes"].as_u64().unwrap() < size.min(64 * MIB),
            "{r}"
        );
        assert_eq!(r["partitions"][1]["filesystem"], "ext4", "{r}");
        assert_eq!(r["partition_table_fixed"], size != 64 * MIB, "{name}");
        for k in [
            "source",
            "target",
            "bad_sectors",
            "duration_ms",
            "rate_bytes_per_sec",
        ] {
            assert!(r.get(k).is_some(), "{k} missing");
        }
        // Identical up to the end of the last partition; everything checks out.
        same_range(&src, &dst, 47 * MIB);
        referees(&dst);
        if size == 64 * MIB {
            run(Command::new("cmp").arg(&src).arg(&dst));
        }
        assert_eq!(std::fs::metadata(&dst).unwrap().len(), size);
    }
    assert_eq!(sha(&src), before, "the source changed");
}

#[test]
fn refusals_write_nothing() {
    let dir = TempDir::new("clone-refuse");
    let src = sample(&dir);
    let before = sha(&src);
    let small = dir.p("small.img");
    std::fs::write(&small, vec![0x5Au8; 40 * MIB as usize]).unwrap();
    let small_sha = sha(&small);
    let s = src.to_str().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![s.into(), s.into()], "is the source"),
        (vec![s.into(), small.to_str().unwrap().into()], "smaller"),
    ];
    for (args, why) in cases {
        let mut a: Vec<&str> = vec!["clone"];
        a.extend(args.iter().map(|x| x.as_str()));
        a.extend(["--yes", "--json"]);
        let o = lifeboat(&a);
        assert_eq!(
            o.status.code(),
            Some(4),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let r = json(&o);
        assert_eq!(r["ok"], false);
        assert_eq!(r["error"]["kind"], "refused");
        assert!(r["error"]["message"].as_str().unwrap().contains(why), "{r}");
    }
    // Without --yes and without a terminal: refused, nothing written.
    let t = dir.p("t.img");
    std::fs::write(&t, vec![0x5Au8; 64 * MIB as usize]).unwrap();
    let t_sha = sha(&t);
    let o = lifeboat(&["clone", s, t.to_str().unwrap()]);
    assert_exit(&o, 4);
    assert_eq!(sha(&t), t_sha);
    // Loop devices: a read-only target, a target held exclusively, a loop over the source file.
    if let Some(ro) = Loop::attach_with(
        &t,
        LoopOpts {
            read_only: true,
            ..Default::default()
        },
    ) {
        let o = lifeboat(&["clone", s, &ro.dev, "--yes"]);
        assert_exit(&o, 4);
        assert!(String::from_utf8_lossy(&o.stderr).contains("read-only"));
        drop(ro);
        let lo = Loop::attach(&t).unwrap();
        let held = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(&lo.dev)
            .unwrap();
        let o = lifeboat(&["clone", s, &lo.dev, "--yes"]);
        assert_exit(&o, 4);
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("in use"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        drop(held);
        drop(lo);
        let over_src = Loop::attach(&src).unwrap();
        let o = lifeboat(&["clone", &over_src.dev, s, "--yes"]);
        assert_exit(&o, 4);
        let o = lifeboat(&["clone", s, &over_src.dev, "--yes"]);
        assert_exit(&o, 4);
        // A partition of the source disk as the target.
        drop(over_src);
        let part_src = Loop::attach_with(
            &src,
            LoopOpts {
                partscan: true,
                ..Default::default()
            },
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut p2 = format!("{}p2", part_src.dev);
        let name = format!("{}p2", part_src.dev.trim_start_matches("/dev/"));
        // Without udev the partition has no /dev node: make one from sysfs.
        if !Path::new(&p2).exists() {
            if let Ok(dev) = std::fs::read_to_string(format!("/sys/class/block/{name}/dev")) {
                let (ma, mi) = dev.trim().split_once(':').unwrap();
                let node = dir.p("p2");
                run(Command::new("mknod").arg(&node).args(["b", ma, mi]));
                p2 = node.display().to_string();
            }
        }
        if Path::new(&p2).exists() {
            let o = lifeboat(&["clone", &part_src.dev, &p2, "--yes"]);
            assert_exit(&o, 4);
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("same disk"),
                "{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    assert_eq!(sha(&t), t_sha);
    assert_eq!(sha(&small), small_sha);
    assert_eq!(sha(&src), before);
}

fn getro(dev: &str) -> String {
    run(Command::new("blockdev").arg("--getro").arg(dev))
        .trim()
        .to_string()
}

#[test]
fn loop_to_loop_with_map_and_read_only_source() {
    let dir = TempDir::new("clone-loop");
    let src = sample(&dir);
    let before = sha(&src);
    let t = dir.p("t.img");
    std::fs::File::create(&t)
        .unwrap()
        .set_len(80 * MIB)
        .unwrap();
    let (Some(ls), Some(lt)) = (Loop::attach(&src), Loop::attach(&t)) else {
        return;
    };
    // The guard marks the source read-only and restores it.
    {
        let g = lifeboat::storage::ReadOnlyGuard::new(&[PathBuf::from(&ls.dev)]).unwrap();
        assert_eq!(getro(&ls.dev), "1");
        let w = OpenOptions::new().write(true).open(&ls.dev).and_then(|f| {
            use std::os::unix::fs::FileExt;
            f.write_at(&[1u8; 512], 0)
        });
        assert!(w.is_err(), "a read-only source accepted a write");
        drop(g);
    }
    assert_eq!(getro(&ls.dev), "0");
    let map = dir.p("clone.map");
    let o = lifeboat(&[
        "clone",
        &ls.dev,
        &lt.dev,
        "--yes",
        "--json",
        "--map",
        map.to_str().unwrap(),
    ]);
    assert_exit(&o, 0);
    let r = json(&o);
    assert_eq!(r["verified"], true);
    assert_eq!(r["partition_table_fixed"], true);
    assert_eq!(getro(&ls.dev), "0", "BLKROSET not restored");
    // GNU ddrescuelog reads our mapfile: the used blocks finished, the free space (not copied)
    // non-tried, sector for sector.
    let out = run(Command::new("ddrescuelog").arg("-t").arg(&map));
    assert!(out.contains("rescued:"), "{out}");
    let free = run(Command::new("ddrescuelog")
        .args(["-b", "512", "-l?"])
        .arg(&map)
        .env("LC_ALL", "C"));
    let used = r["used_bytes"].as_u64().unwrap();
    assert!(used < 64 * MIB, "{r}");
    assert_eq!(free.lines().count() as u64, (64 * MIB - used) / 512, "{r}");
    let done = run(Command::new("ddrescuelog")
        .args(["-b", "512", "-l+"])
        .arg(&map)
        .env("LC_ALL", "C"));
    assert_eq!(done.lines().count() as u64, used / 512);
    // Running again with the finished map reads nothing and still succeeds.
    let o = lifeboat(&[
        "clone",
        &ls.dev,
        &lt.dev,
        "--yes",
        "--json",
        "--map",
        map.to_str().unwrap(),
        "--no-verify",
    ]);
    assert_exit(&o, 0);
    assert_eq!(json(&o)["verified"], serde_json::Value::Null);
    drop(lt);
    drop(ls);
    same_range(&src, &t, 47 * MIB);
    referees(&t);
    assert_eq!(sha(&src), before);
}

/// A disk-image file whose size is not a whole number of sectors (a truncated dump, say): O_DIRECT
/// cannot read its last partial sector, so such files go through the page cache, and clone, image
/// create, restore and export all reproduce it byte for byte.
#[test]
fn odd_sized_image_files_are_copied_exactly() {
    let dir = TempDir::new("odd-size");
    let src = dir.p("odd.img");
    let data: Vec<u8> = (0..1_000_003u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let tgt = dir.p("clone.img");
    zero_file(&tgt, data.len() as u64);
    let o = lifeboat(&["clone", &s(&src), &s(&tgt), "--yes", "--json"]);
    assert_exit(&o, 0);
    assert_eq!(json(&o)["verified"], true);
    assert_eq!(std::fs::read(&tgt).unwrap(), data, "the clone differs");

    let img = dir.p("odd.lbi");
    let o = lifeboat(&["image", "create", &s(&src), &s(&img), "--json"]);
    assert_exit(&o, 0);
    let raw = dir.p("export.raw");
    let o = lifeboat(&["image", "export", &s(&img), &s(&raw)]);
    assert_exit(&o, 0);
    assert_eq!(std::fs::read(&raw).unwrap(), data, "the export differs");
    let rst = dir.p("restore.img");
    zero_file(&rst, data.len() as u64);
    let o = lifeboat(&["image", "restore", &s(&img), &s(&rst), "--yes", "--json"]);
    assert_exit(&o, 0);
    assert_eq!(std::fs::read(&rst).unwrap(), data, "the restore differs");
    assert_eq!(std::fs::read(&src).unwrap(), data, "the source changed");
}
