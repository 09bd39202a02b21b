//! Issue 12's kill-and-resume tests in the environment: a clone and an image restore are
//! started unattended with `--map` on a store disk (`label=LBMAPS:/...`, an ext4 filesystem
//! Lifeboat mounts itself), QEMU is killed hard (SIGKILL: no shutdown, no sync) once the
//! progress shows a good part done, and a second boot with the same disks runs the same command,
//! which resumes from the map. The host then checks the result is byte-identical to what an
//! uninterrupted job gives, that the map it resumed from was a partial one (read from the store
//! disk after journal replay by e2fsck), and that the source (the disk, or the disk holding the
//! image) is unchanged. The source's reads are throttled in the first boot
//! (`throttling.bps-read`) so the kill lands mid-job; maps are saved every second
//! (`LIFEBOAT_MAP_INTERVAL=1` on the kernel command line, passed to the job's environment).
use lifeboat_qemu_tests::check::{host_lifeboat_ok, noise};
use lifeboat_qemu_tests::disks::{run, sha256, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{run_param, Bus, DiskSpec, Faults, TempDir, Vm};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// An empty ext4 filesystem on a whole disk (no partition table), labelled `label`, holding
/// the files of `dir` when given.
fn ext4_disk(path: &Path, mib: u64, label: &str, dir: Option<&Path>) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(mib * MIB)
        .unwrap();
    let mut args: Vec<String> = vec!["-q".into(), "-F".into(), "-L".into(), label.into()];
    if let Some(d) = dir {
        args.push("-d".into());
        args.push(d.display().to_string());
    }
    args.push(path.display().to_string());
    run("mkfs.ext4", &args, None).unwrap_or_else(|e| panic!("{e}"));
}

/// A file of the ext4 filesystem in `disk`, read on a copy after e2fsck replayed the journal
/// (as the next mount would); `None` when it does not exist.
fn read_ext4_file(disk: &Path, name: &str, scratch: &Path) -> Option<Vec<u8>> {
    std::fs::copy(disk, scratch).unwrap();
    // Exit 1 (errors corrected, e.g. the journal replayed) is expected after a hard kill.
    let _ = std::process::Command::new("e2fsck")
        .args(["-fy", &scratch.display().to_string()])
        .output();
    let out = scratch.with_extension("out");
    let _ = std::fs::remove_file(&out);
    let _ = std::process::Command::new("debugfs")
        .args([
            "-R",
            &format!("dump -p /{name} {}", out.display()),
            &scratch.display().to_string(),
        ])
        .output();
    let r = std::fs::read(&out).ok();
    let _ = std::fs::remove_file(scratch);
    let _ = std::fs::remove_file(&out);
    r
}

/// Bytes marked finished ('+') in a GNU ddrescue mapfile.
fn finished_bytes(map: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(map);
    let mut status_seen = false;
    let mut done = 0;
    for l in text.lines().map(str::trim) {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if !status_seen {
            status_seen = true; // current_pos  current_status  current_pass
            continue;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 3 && f[2] == "+" {
            done += u64::from_str_radix(f[1].trim_start_matches("0x"), 16).unwrap_or(0);
        }
    }
    done
}

/// The `done_bytes` of a `LIFEBOAT-PROGRESS` line of `job` at or past `at` bytes, waited for.
fn wait_progress(vm: &mut Vm, job: &str, at: u64) {
    let want = format!("\"job\":\"{job}\"");
    let r = vm.wait_line(
        &format!("{job} progress past {at} bytes"),
        Duration::from_secs(300),
        |l| {
            let Some((_, j)) = l.split_once("LIFEBOAT-PROGRESS") else {
                return false;
            };
            if !j.contains(&want) {
                return false;
            }
            serde_json::from_str::<Value>(j.trim())
                .ok()
                .and_then(|v| v["done_bytes"].as_u64())
                .is_some_and(|d| d >= at)
        },
    );
    vm.check(r);
}

/// Boots with `params`, waits for `job` to pass `at` bytes and a map save or two, then kills
/// QEMU outright.
fn boot_and_kill(name: &str, params: &str, disks: Vec<DiskSpec>, job: &str, at: u64) {
    let mut vm = Vm::boot(name, params, disks).unwrap_or_else(|e| panic!("{e}"));
    wait_progress(&mut vm, job, at);
    // The map is saved every second (after an fsync of the target): give it two.
    std::thread::sleep(Duration::from_millis(2500));
    vm.kill();
}

fn boot_result(name: &str, params: &str, disks: Vec<DiskSpec>) -> Value {
    let mut vm = Vm::boot(name, params, disks).unwrap_or_else(|e| panic!("{e}"));
    let r = vm.wait_result(Duration::from_secs(300));
    let res = vm.check(r);
    let _ = vm.wait_exit(Duration::from_secs(60));
    res
}

#[test]
fn clone_killed_mid_job_resumes_with_its_map() {
    let t = TempDir::new("resume-clone").unwrap();
    let src = t.join("src.img");
    let dst = t.join("dst.img");
    let maps = t.join("maps.img");
    let size = 64 * MIB;
    std::fs::write(&src, noise(size as usize, 0x1234_5678_9ABC_DEF1)).unwrap();
    std::fs::write(&dst, vec![0x77u8; size as usize]).unwrap();
    ext4_disk(&maps, 16, "LBMAPS", None);
    let faults = Faults::new()
        .bad_bytes(3000 * 512, 512)
        .bad_bytes(50 * MIB + 4096, 8192);
    let cfg = t.join("blkdebug.conf");
    faults.write(&cfg).unwrap();
    let before = sha256(&src).unwrap();
    let disks = |throttle: bool| {
        let mut s = DiskSpec::new(&src, Bus::Virtio, "RS-CLONE-SRC").blkdebug(&cfg);
        if throttle {
            s = s.throttle_read_bps(2 * MIB);
        }
        vec![
            s,
            DiskSpec::new(&dst, Bus::Nvme, "RS-CLONE-DST"),
            DiskSpec::new(&maps, Bus::Virtio, "RS-CLONE-MAPS"),
        ]
    };
    let cmd = run_param(
        "clone serial=RS-CLONE-SRC serial=RS-CLONE-DST --yes --json --map label=LBMAPS:/clone.map",
    );
    let params = format!("LIFEBOAT_MAP_INTERVAL=1 {cmd}");
    boot_and_kill("resume-clone-1", &params, disks(true), "clone", 16 * MIB);
    let map = read_ext4_file(&maps, "clone.map", &t.join("maps-copy.img"))
        .expect("the map survived the kill on the store disk");
    let done = finished_bytes(&map);
    eprintln!("clone: the map on the store disk after the kill: {done} of {size} bytes finished");
    assert!(
        done > 0 && done < size,
        "the kill should land mid-job: {done} of {size} bytes finished in the map:\n{}",
        String::from_utf8_lossy(&map)
    );
    assert_eq!(sha256(&src).unwrap(), before, "the source changed");

    let res = boot_result("resume-clone-2", &params, disks(false));
    let r = &res["output"];
    assert_eq!(res["exit_code"], 3, "{res}");
    let want: Vec<Value> = faults
        .permanent_ranges()
        .iter()
        .map(|(a, l)| serde_json::json!([a, l]))
        .collect();
    assert_eq!(r["bad_ranges"], Value::Array(want), "{r}");
    assert_eq!(r["verified"], true, "{r}");
    // Resumed: what the first boot copied was not copied (nor hashed) again.
    let verified = r["verified_bytes"].as_u64().unwrap();
    assert!(verified < size && verified + done <= size + MIB, "{r}");
    assert_eq!(sha256(&src).unwrap(), before, "the source changed");
    // Byte for byte: the source, with zeros at the unreadable sectors.
    let mut expect = std::fs::read(&src).unwrap();
    for (a, l) in faults.permanent_ranges() {
        expect[a as usize..(a + l) as usize].fill(0);
    }
    let got = std::fs::read(&dst).unwrap();
    let first = got.iter().zip(&expect).position(|(a, b)| a != b);
    assert!(first.is_none(), "target differs at byte {first:?}");
}

#[test]
fn restore_killed_mid_job_resumes_with_its_map() {
    let t = TempDir::new("resume-restore").unwrap();
    let disk = t.join("disk.img");
    DiskBuilder::new(96, Table::Gpt)
        .part(
            Part::new(80, Fs::Ext4)
                .label("RESTROOT")
                .file("data/a.bin", noise(20 << 20, 7))
                .file("data/b.bin", noise(30 << 20, 9)),
        )
        .build(&disk)
        .unwrap_or_else(|e| panic!("{e}"));
    // The image, made on the host, on an ext4 store disk; the reference restore onto old data.
    let dir = t.join("store");
    std::fs::create_dir_all(&dir).unwrap();
    let d = disk.display().to_string();
    let img = dir.join("disk.lbi").display().to_string();
    host_lifeboat_ok(&["image", "create", &d, &img, "--compress", "lz4"]);
    let want = t.join("want.img");
    std::fs::write(&want, vec![0x77u8; 96 * MIB as usize]).unwrap();
    host_lifeboat_ok(&[
        "image",
        "restore",
        &img,
        &want.display().to_string(),
        "--yes",
    ]);
    let store = t.join("store.img");
    ext4_disk(&store, 128, "LBSTORE", Some(&dir));
    let store_sha = sha256(&store).unwrap();
    let tgt = t.join("tgt.img");
    std::fs::write(&tgt, vec![0x77u8; 96 * MIB as usize]).unwrap();
    let maps = t.join("maps.img");
    ext4_disk(&maps, 16, "LBMAPS", None);
    let disks = |throttle: bool| {
        let mut s = DiskSpec::new(&store, Bus::Virtio, "RS-REST-STORE");
        if throttle {
            s = s.throttle_read_bps(2 * MIB);
        }
        vec![
            s,
            DiskSpec::new(&tgt, Bus::Nvme, "RS-REST-TGT"),
            DiskSpec::new(&maps, Bus::Sata, "RS-REST-MAPS"),
        ]
    };
    let cmd = run_param(
        "image restore label=LBSTORE:/disk.lbi serial=RS-REST-TGT --yes --json --map label=LBMAPS:/restore.map",
    );
    let params = format!("LIFEBOAT_MAP_INTERVAL=1 {cmd}");
    boot_and_kill(
        "resume-restore-1",
        &params,
        disks(true),
        "image-restore",
        24 * MIB,
    );
    let map = read_ext4_file(&maps, "restore.map", &t.join("maps-copy.img"))
        .expect("the map survived the kill on the store disk");
    let done = finished_bytes(&map);
    eprintln!("restore: the map on the store disk after the kill: {done} bytes written");
    assert!(
        done > 0 && done < 96 * MIB,
        "the kill should land mid-job: {done} bytes finished in the map:\n{}",
        String::from_utf8_lossy(&map)
    );
    assert_ne!(sha256(&tgt).unwrap(), sha256(&want).unwrap());

    let res = boot_result("resume-restore-2", &params, disks(false));
    let r = &res["output"];
    assert_eq!(res["exit_code"], 0, "{res}");
    assert_eq!(r["media_hash_verified"], true, "{r}");
    let resumed = r["resumed_bytes"].as_u64().unwrap();
    assert!(
        resumed >= done,
        "resumed {resumed} < {done} in the map: {r}"
    );
    assert_eq!(
        sha256(&tgt).unwrap(),
        sha256(&want).unwrap(),
        "the resumed restore differs from an uninterrupted one"
    );
    assert_eq!(
        sha256(&store).unwrap(),
        store_sha,
        "the image's disk changed"
    );
}
