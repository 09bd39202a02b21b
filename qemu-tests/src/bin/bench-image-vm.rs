//! `scripts/bench-image-vm`: image create of a failing disk against clone of it, under QEMU
//! (TCG), in Lifeboat's own environment. The source and its faults are those of
//! `scripts/bench-rescue-vm` (384 MiB on virtio-blk behind blkdebug: a 1 MiB dead region, 40
//! scattered bad sectors, one transient sector). Each round boots Lifeboat twice: `clone` onto a
//! blank NVMe disk (defaults: verify on, one retry), and `image create` onto an ext4 filesystem
//! on an NVMe disk (defaults: used blocks — the source has no partition table, so every
//! sector —, zstd:2 (the default), one retry). Timed from QEMU's start to the guest's power-off, best of the
//! runs, alternating order; QEMU's read counters for the source. Checks: both reports list the
//! same bad ranges (the permanent faults), the image — copied out of the ext4 with debugfs and
//! exported with the host's `lifeboat` — holds exactly the clone's bytes, the source is
//! unchanged. Prints the ratio image create / clone.
//!
//!
//! With `--baseline-initrd OLD` it compares two builds instead: image create with the current
//! initramfs and with OLD (another build's `target/lifeboat/initramfs.img`), alternating, and
//! prints each one's best times and timeline and the ratio new / old (no clone runs: a change
//! measured on a loaded machine against the build before it, in the same minutes).
//!
//! Usage: bench-image-vm --lifeboat HOST-BINARY [--runs 2] [--dir DIR] [--compress METHOD]
//! [--baseline-initrd OLD]
use lifeboat_qemu_tests::bench::{self, bad_ranges, blank, evict, marker_json, MIB, SIZE};
use lifeboat_qemu_tests::disks::{run as run_tool, sha256, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::qemu::{Bus, DiskSpec};
use lifeboat_qemu_tests::{artefacts, run_param};
use std::path::PathBuf;

const USAGE: &str =
    "--lifeboat PATH [--runs 2] [--dir DIR] [--compress METHOD] [--baseline-initrd OLD]";

/// The store's ext4 partition: start and length.
const STORE_MIB: u64 = 480;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-image-vm: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let o = bench::parse_args(
        "bench-image-vm",
        &["--lifeboat", "--compress", "--baseline-initrd"],
        USAGE,
        std::env::args().skip(1),
    )?;
    let lifeboat = PathBuf::from(o.get("--lifeboat").unwrap_or_default());
    if !lifeboat.is_file() {
        return Err("--lifeboat PATH (the host's lifeboat binary) is required".into());
    }
    let a = artefacts()?;
    let source = bench::source(&o.dir)?;
    let (src, cfg) = (&source.path, &source.blkdebug);
    let want = source.faults.permanent_ranges();
    let dst = o.dir.join("dst-clone.img");
    let store = o.dir.join("store.img");
    let clone_params = run_param("clone serial=BENCH-SRC serial=BENCH-DST --yes --json");
    // `--compress` for image create (default: its own default).
    let compress = o.get("--compress").unwrap_or("zstd:2").to_string();
    // `LIFEBOAT_THREAD_CPU=1` (passed by the kernel to PID 1 as an environment variable, and
    // on to the job): the job prints each thread's CPU time and a timeline of it (see
    // `lifeboat::jobs::threadcpu`), shown under the timelines below.
    let image_params = format!(
        "{} LIFEBOAT_THREAD_CPU=1",
        run_param(&format!(
            "image create serial=BENCH-SRC label=BSTORE:/b.lbi --compress {compress} --json"
        ))
    );
    let baseline = o.get("--baseline-initrd").map(PathBuf::from);
    if let Some(b) = &baseline {
        if !b.is_file() {
            return Err(format!("--baseline-initrd {}: no such file", b.display()));
        }
    }
    let tools = match baseline {
        Some(_) => ["image", "image-old"],
        None => ["clone", "image"],
    };
    let mut store_part = (0, 0);
    let runs = bench::rounds("bench-image-vm", o.runs, tools, |tool| {
        let disks = if tool == "clone" {
            blank(&dst, SIZE)?;
            vec![
                DiskSpec::new(src, Bus::Virtio, "BENCH-SRC").blkdebug(cfg),
                DiskSpec::new(&dst, Bus::Nvme, "BENCH-DST"),
            ]
        } else {
            let built = DiskBuilder::new(STORE_MIB + 8, Table::Gpt)
                .part(Part::new(STORE_MIB, Fs::Ext4).label("BSTORE"))
                .build(&store)?;
            let p = &built.partitions[0];
            store_part = (p.start_bytes, p.size_bytes);
            vec![
                DiskSpec::new(src, Bus::Virtio, "BENCH-SRC").blkdebug(cfg),
                DiskSpec::new(&store, Bus::Nvme, "BENCH-STORE"),
            ]
        };
        evict(src);
        let params = if tool == "clone" {
            &clone_params
        } else {
            &image_params
        };
        let initrd = match (tool, &baseline) {
            ("image-old", Some(b)) => b,
            _ => &a.initrd,
        };
        bench::boot(tool, &a.kernel, initrd, params, disks)
    })?;
    if baseline.is_some() {
        return compare_builds(&runs, o.runs);
    }
    let result = |t: &str| {
        marker_json(&bench::last(&runs, t).console, "LIFEBOAT-RESULT ")
            .ok_or(format!("no LIFEBOAT-RESULT on the {t} run's console"))
    };
    let (rc, ri) = (result("clone")?, result("image")?);
    let (oc, oi) = (&rc["output"], &ri["output"]);
    let (bc, bi) = (bad_ranges(oc)?, bad_ranges(oi)?);
    // The image's bytes: out of the store's ext4, exported on the host.
    let part = o.dir.join("store-part.img");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&store).map_err(|e| e.to_string())?;
        let mut b = vec![0u8; store_part.1 as usize];
        f.read_exact_at(&mut b, store_part.0)
            .map_err(|e| e.to_string())?;
        std::fs::write(&part, b).map_err(|e| e.to_string())?;
    }
    let lbi = o.dir.join("b.lbi");
    let _ = std::fs::remove_file(&lbi);
    run_tool(
        "debugfs",
        &[
            "-R".into(),
            format!("dump /b.lbi {}", lbi.display()),
            part.display().to_string(),
        ],
        None,
    )?;
    let raw = o.dir.join("image-export.raw");
    let _ = std::fs::remove_file(&raw);
    let exp = std::process::Command::new(&lifeboat)
        .args(["image", "export"])
        .arg(&lbi)
        .arg(&raw)
        .output()
        .map_err(|e| e.to_string())?;
    let image_bytes = std::fs::metadata(&lbi).map(|m| m.len()).unwrap_or(0);
    let same_bytes = exp.status.success()
        && sha256(&raw).map_err(|e| e.to_string())? == sha256(&dst).map_err(|e| e.to_string())?;
    let src_ok = sha256(src).map_err(|e| e.to_string())? == source.sha256;
    let _ = std::fs::remove_file(&part);
    let (c, i) = (bench::best(&runs, "clone"), bench::best(&runs, "image"));
    println!("Failing disk under QEMU TCG: {} MiB source (virtio-blk + blkdebug: 1 MiB dead, 40 bad sectors, 1 transient).", SIZE / MIB);
    println!("QEMU start to guest power-off, best of {} runs each, alternating order, Lifeboat's own environment both times.\n", o.runs);
    println!(
        "{:<46} {:>8} {:>13} {:>13} {:>11}",
        "job", "wall s", "source reads", "failed reads", "own clock s"
    );
    println!(
        "{:<46} {:>8.1} {:>13} {:>13} {:>11.1}",
        "clone onto NVMe (verify on, 1 retry)",
        c.secs,
        c.dev_reads + c.dev_failed,
        c.dev_failed,
        oc["duration_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
    );
    println!(
        "{:<46} {:>8.1} {:>13} {:>13} {:>11.1}",
        format!("image create onto ext4 on NVMe ({compress}, 1 retry)"),
        i.secs,
        i.dev_reads + i.dev_failed,
        i.dev_failed,
        oi["elapsed_secs"].as_f64().unwrap_or(0.0)
    );
    let after = |t: &str| bench::best_after_init(&runs, t);
    println!(
        "\nratio image create / clone: wall {:.2}x (from /init to power-off {:.2}x), failed reads {:.2}x, reads {:.2}x",
        i.secs / c.secs,
        after("image") / after("clone"),
        i.dev_failed as f64 / c.dev_failed.max(1) as f64,
        (i.dev_reads + i.dev_failed) as f64 / (c.dev_reads + c.dev_failed).max(1) as f64
    );
    println!(
        "from /init to power-off (the kernel's boot, up to ~3 s of noise, left out): clone {:.1} s, image create {:.1} s, best of {} each",
        after("clone"),
        after("image"),
        o.runs
    );
    println!(
        "QEMU host CPU after /init, fastest runs: clone {:.1} s, image create {:.1} s: {:.2}x",
        c.host_cpu - c.host_cpu_at_init,
        i.host_cpu - i.host_cpu_at_init,
        (i.host_cpu - i.host_cpu_at_init) / (c.host_cpu - c.host_cpu_at_init).max(0.01)
    );
    println!("all runs: {}", bench::all_runs(&runs));
    println!(
        "engine counters: clone {}/{} failed/total, image create {}/{} (re-read {} bytes, hashed ahead {} bytes); image {} bytes",
        oc["reads_failed"], oc["reads_total"], oi["reads_failed"], oi["reads_total"],
        oi["reread_bytes"], oi["prehashed_bytes"], image_bytes
    );
    let same_bad = bc == want && bi == want;
    println!(
        "bad ranges: clone {} ranges, image create {}, expected {}: {}; exit codes clone {} image {}",
        bc.len(),
        bi.len(),
        want.len(),
        if same_bad { "identical" } else { "DIFFERENT" },
        rc["exit_code"],
        ri["exit_code"]
    );
    println!("image (exported) == clone's target: {same_bytes}; source unchanged: {src_ok}");
    println!(
        "image create's own clocks: create {:.1} s, verify after write {:.1} s",
        oi["elapsed_secs"].as_f64().unwrap_or(0.0),
        oi["verify_elapsed_secs"].as_f64().unwrap_or(0.0)
    );
    print_timelines(&[("clone", c), ("image", i)]);
    if !(same_bad && same_bytes && src_ok) {
        return Err(format!(
            "results differ (clone bad {bc:?}, image bad {bi:?}, expected {want:?}, export: {})",
            String::from_utf8_lossy(&exp.stderr)
        ));
    }
    Ok(())
}

/// Where the time goes: each milestone of the fastest run of each job, seconds since QEMU's
/// start and since the milestone before (console lines reach the host within ~50 ms).
fn print_timelines(runs: &[(&str, &bench::Run)]) {
    for (t, r) in runs {
        println!(
            "\ntimeline of the fastest {t} run (s since QEMU start, +s since the line before):"
        );
        let mut prev = 0.0;
        for (at, m) in bench::timeline(r) {
            println!("  {at:7.2} {:+7.2}  {m}", at - prev);
            prev = at;
        }
        // The job's own per-thread CPU figures (`LIFEBOAT_THREAD_CPU`), if it printed them.
        let cpu: Vec<&str> = r
            .console
            .lines()
            .filter_map(|l| l.find("lifeboat: image create ").map(|i| l[i..].trim_end()))
            .filter(|l| l.contains(" cpu ") || l.contains("thread CPU seconds"))
            .collect();
        if !cpu.is_empty() {
            println!("where the {t} run's CPU went (per thread: % of one CPU in each window):");
            for l in cpu {
                println!("  {l}");
            }
        }
    }
}

/// `--baseline-initrd`: image create with this build ("image") against the baseline build
/// ("image-old"), both checked for their result (exit code 3, the expected bad ranges).
fn compare_builds(runs: &[bench::Run], n: usize) -> Result<(), String> {
    for r in runs {
        let j = marker_json(&r.console, "LIFEBOAT-RESULT ")
            .ok_or(format!("no LIFEBOAT-RESULT on an {} run's console", r.tool))?;
        if j["exit_code"] != 3 {
            return Err(format!("an {} run ended with {}", r.tool, j["exit_code"]));
        }
    }
    let (new, old) = (bench::best(runs, "image"), bench::best(runs, "image-old"));
    let after = |t: &str| bench::best_after_init(runs, t);
    println!("Image create of the failing disk, this build against --baseline-initrd, best of {n} runs each, alternating.\n");
    println!(
        "{:<12} {:>8} {:>18} {:>14}",
        "build", "wall s", "/init to off s", "own clock s"
    );
    for (name, r) in [("this", new), ("baseline", old)] {
        let j = marker_json(&r.console, "LIFEBOAT-RESULT ").unwrap_or_default();
        println!(
            "{name:<12} {:>8.1} {:>18.1} {:>14.1}",
            r.secs,
            r.secs - r.to_init,
            j["output"]["elapsed_secs"].as_f64().unwrap_or(0.0)
                + j["output"]["verify_elapsed_secs"].as_f64().unwrap_or(0.0)
        );
    }
    // Where the held-back chunks' bytes came from (null: a build before the field).
    for (name, r) in [("this", new), ("baseline", old)] {
        let j = marker_json(&r.console, "LIFEBOAT-RESULT ").unwrap_or_default();
        println!(
            "{name}: held-back chunks: re-read {} bytes, hashed ahead {} bytes",
            j["output"]["reread_bytes"], j["output"]["prehashed_bytes"]
        );
    }
    println!(
        "\nratio this / baseline: wall {:.2}x, from /init to power-off {:.2}x",
        new.secs / old.secs,
        after("image") / after("image-old")
    );
    // The work itself: QEMU's host CPU after /init, least of the runs (a loaded host stretches
    // wall times, much less the CPU a run needs).
    let cpu = |t: &str| {
        runs.iter()
            .filter(|r| r.tool == t && r.host_cpu > 0.0)
            .map(|r| r.host_cpu - r.host_cpu_at_init)
            .fold(f64::INFINITY, f64::min)
    };
    println!(
        "QEMU host CPU after /init (least of the runs): this {:.1} s, baseline {:.1} s: {:.2}x",
        cpu("image"),
        cpu("image-old"),
        cpu("image") / cpu("image-old")
    );
    println!("all runs: {}", bench::all_runs(runs));
    print_timelines(&[("image", new), ("image-old", old)]);
    Ok(())
}
