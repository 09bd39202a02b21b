//! Issue 12 in the environment: `image create` of a failing disk (blkdebug: a 1 MiB dead region
//! and scattered bad sectors, permanent faults only) onto an ext4 store disk. Boot 1 creates an
//! image without interruption; boot 2 starts the same job under another name and QEMU is killed
//! in the middle of it (no clean shutdown: a power cut); boot 3 runs that command again, which
//! resumes from the `.partial` and its journal. The host then reads both images out of the
//! store's ext4 (debugfs) and compares them byte for byte (but for the image UUID and the times,
//! which differ between two separate jobs), checks the resumed one's bad ranges are the faults,
//! and that the source is unchanged.
use lifeboat_qemu_tests::disks::{run, sha256, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::{run_param, Bus, DiskSpec, Faults, TempDir, Vm};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const SRC_SIZE: u64 = 48 * MIB;

/// Half noise, half runs of zeros and repeated bytes: stored, compressed and zero chunks.
fn contents() -> Vec<u8> {
    let mut v = vec![0u8; SRC_SIZE as usize];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for (i, c) in v.chunks_mut(8).enumerate() {
        let block = i * 8 / (1 << 20);
        match block % 4 {
            0 | 1 => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
            }
            2 => c.fill(block as u8),
            _ => {}
        }
    }
    v
}

/// The image's bytes with the image UUID, the creation and completion times and the CRCs over
/// them zeroed (one volume).
fn normalized(b: &[u8]) -> Vec<u8> {
    let mut b = b.to_vec();
    for r in [24..40, 88..96, 508..512] {
        b[r].fill(0);
    }
    let f = b.len() - 160;
    for r in [8..24, 128..136, 156..160] {
        b[f + r.start..f + r.end].fill(0);
    }
    b
}

/// Copies the file `name` out of the ext4 filesystem at `start` of `disk`.
fn dump(disk: &Path, start: u64, len: u64, name: &str, dir: &Path) -> Vec<u8> {
    let part = dir.join("store-part.img");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(disk).unwrap();
        let mut b = vec![0u8; len as usize];
        f.read_exact_at(&mut b, start).unwrap();
        std::fs::write(&part, b).unwrap();
    }
    let out = dir.join(format!("dump-{}", name.trim_start_matches('/')));
    let _ = std::fs::remove_file(&out);
    run(
        "debugfs",
        &[
            "-R".into(),
            format!("dump {name} {}", out.display()),
            part.display().to_string(),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("debugfs dump {name}: {e}"));
    std::fs::read(&out).unwrap_or_else(|e| panic!("{name} is not in the store: {e}"))
}

/// `done_bytes` of a `LIFEBOAT-PROGRESS` line.
fn done_bytes(line: &str) -> Option<u64> {
    let rest = &line[line.find("\"done_bytes\":")? + "\"done_bytes\":".len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The source (failing: blkdebug, and with `throttle` its reads limited to that many bytes a
/// second) and the store.
fn disks(src: &Path, cfg: &Path, store: &Path, throttle: Option<u64>) -> Vec<DiskSpec> {
    let mut s = DiskSpec::new(src, Bus::Virtio, "RESUME-SRC").blkdebug(cfg);
    if let Some(bps) = throttle {
        s = s.throttle_read_bps(bps);
    }
    vec![s, DiskSpec::new(store, Bus::Sata, "RESUME-STORE")]
}

#[test]
fn image_create_killed_mid_job_resumes_to_the_same_bytes() {
    let t = TempDir::new("image-resume").unwrap();
    let src = t.join("src.img");
    std::fs::write(&src, contents()).unwrap();
    let mut faults = Faults::new().bad_bytes(30 * MIB + 300 * 1024, MIB);
    for k in 0..24u64 {
        faults = faults.bad_bytes(MIB + k * 1_900_000 / 512 * 512, 512);
    }
    let cfg = t.join("blkdebug.conf");
    faults.write(&cfg).unwrap();
    let store = t.join("store.img");
    let built = DiskBuilder::new(112, Table::Gpt)
        .part(Part::new(104, Fs::Ext4).label("STORE"))
        .build(&store)
        .unwrap_or_else(|e| panic!("{e}"));
    let before = sha256(&src).unwrap();
    let want_bad: Vec<Value> = faults
        .permanent_ranges()
        .iter()
        .map(|&(s, l)| serde_json::json!([s, l]))
        .collect();

    // Boot 1: the uninterrupted image.
    let mut vm = Vm::boot(
        "image-resume-whole",
        &run_param("image create serial=RESUME-SRC label=STORE:/whole.lbi --json"),
        disks(&src, &cfg, &store, None),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(Duration::from_secs(300));
    let res = vm.check(res);
    if res["exit_code"].as_i64() != Some(3)
        || res["output"]["bad_ranges"].as_array() != Some(&want_bad)
    {
        vm.fail(&format!(
            "expected exit 3 and the faults as bad ranges: {res}"
        ));
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);

    // Boot 2: the same job under another name, with a checkpoint every 0.3 s (an environment
    // variable on the kernel command line reaches the job through PID 1) and the source's reads
    // throttled to 3 MiB/s, so the job lasts ~16 s whatever the machine's speed; QEMU is killed
    // 1.5 s after a third of the disk is done (no fixed delay from the start: a quiet machine
    // finished the whole job inside one).
    let cmd = "image create serial=RESUME-SRC label=STORE:/cut.lbi --json";
    let params = format!("{} LIFEBOAT_CHECKPOINT_SECS=0.3", run_param(cmd));
    let mut vm = Vm::boot(
        "image-resume-cut",
        &params,
        disks(&src, &cfg, &store, Some(3 * MIB)),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let line = vm.wait_line("a third copied", Duration::from_secs(300), |l| {
        l.contains("LIFEBOAT-PROGRESS") && done_bytes(l).is_some_and(|d| d >= SRC_SIZE / 3)
    });
    vm.check(line);
    std::thread::sleep(Duration::from_millis(1500));
    if String::from_utf8_lossy(&vm.output()).contains("LIFEBOAT-RESULT") {
        vm.fail("the job finished before QEMU was killed: nothing to resume");
    }
    vm.kill();
    drop(vm);

    // Boot 3: the same command again resumes it.
    let mut vm = Vm::boot(
        "image-resume-again",
        &run_param(cmd),
        disks(&src, &cfg, &store, None),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let res = vm.wait_result(Duration::from_secs(300));
    let res = vm.check(res);
    let out = &res["output"];
    if res["exit_code"].as_i64() != Some(3)
        || out["bad_ranges"].as_array() != Some(&want_bad)
        || out["resumed_from"].is_null()
    {
        vm.fail(&format!(
            "expected a resumed image, exit 3, the faults as bad ranges: {res}"
        ));
    }
    eprintln!("resumed from {}", out["resumed_from"]);
    let _ = vm.wait_exit(Duration::from_secs(60));
    drop(vm);

    // Host: both images out of the store; identical but for the UUID and the times.
    let p = &built.partitions[0];
    let whole = dump(
        &store,
        p.start_bytes,
        p.size_bytes,
        "/whole.lbi",
        &t.join("."),
    );
    let cut = dump(
        &store,
        p.start_bytes,
        p.size_bytes,
        "/cut.lbi",
        &t.join("."),
    );
    assert_eq!(whole.len(), cut.len(), "the resumed image has another size");
    assert!(
        normalized(&whole) == normalized(&cut),
        "the resumed image differs from the uninterrupted one"
    );
    assert_eq!(sha256(&src).unwrap(), before, "the source changed");
}
