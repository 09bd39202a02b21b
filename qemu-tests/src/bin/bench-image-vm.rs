//! `scripts/bench-image-vm`: image create of a failing disk against clone of it, under QEMU
//! (TCG), in Lifeboat's own environment. The source and its faults are those of
//! `scripts/bench-rescue-vm` (384 MiB on virtio-blk behind blkdebug: a 1 MiB dead region, 40
//! scattered bad sectors, one transient sector). Each round boots Lifeboat twice: `clone` onto a
//! blank NVMe disk (defaults: verify on, one retry), and `image create` onto an ext4 filesystem
//! on an NVMe disk (defaults: used blocks — the source has no partition table, so every
//! sector —, zstd:1, one retry). Timed from QEMU's start to the guest's power-off, best of the
//! runs, alternating order; QEMU's read counters for the source. Checks: both reports list the
//! same bad ranges (the permanent faults), the image — copied out of the ext4 with debugfs and
//! exported with the host's `lifeboat` — holds exactly the clone's bytes, the source is
//! unchanged. Prints the ratio image create / clone.
//!
//! Usage: bench-image-vm --lifeboat HOST-BINARY [--runs 2] [--dir DIR] [--compress METHOD]
use lifeboat_qemu_tests::bench::{
    self, blank, evict, faults, marker_json, pattern, Run, MIB, SIZE,
};
use lifeboat_qemu_tests::disks::{run as run_tool, sha256, DiskBuilder, Fs, Part, Table};
use lifeboat_qemu_tests::qemu::{Bus, DiskSpec};
use lifeboat_qemu_tests::{artefacts, run_param};
use serde_json::Value;
use std::path::PathBuf;

struct Opts {
    lifeboat: PathBuf,
    runs: usize,
    dir: PathBuf,
    /// `--compress` for image create (default: its own default, zstd:1).
    compress: Option<String>,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        lifeboat: PathBuf::new(),
        runs: 2,
        dir: lifeboat_qemu_tests::repo_root()
            .join("target")
            .join("bench-image-vm"),
        compress: None,
    };
    let mut a = std::env::args().skip(1);
    while let Some(x) = a.next() {
        let mut val = || a.next().ok_or(format!("{x} needs a value"));
        match x.as_str() {
            "--lifeboat" => o.lifeboat = PathBuf::from(val()?),
            "--runs" => o.runs = val()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--dir" => o.dir = PathBuf::from(val()?),
            "--compress" => o.compress = Some(val()?),
            _ => {
                return Err(format!(
                    "unknown argument {x}; usage: bench-image-vm --lifeboat PATH [--runs 2] [--dir DIR] [--compress METHOD]"
                ))
            }
        }
    }
    if !o.lifeboat.is_file() {
        return Err("--lifeboat PATH (the host's lifeboat binary) is required".into());
    }
    Ok(o)
}

fn bad_ranges(out: &Value) -> Result<Vec<(u64, u64)>, String> {
    Ok(out["bad_ranges"]
        .as_array()
        .ok_or(format!("no bad_ranges: {out}"))?
        .iter()
        .map(|v| (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0)))
        .collect())
}

/// The store's ext4 partition: start and length.
const STORE_MIB: u64 = 480;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-image-vm: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let o = parse_args()?;
    let a = artefacts()?;
    std::fs::create_dir_all(&o.dir).map_err(|e| format!("{}: {e}", o.dir.display()))?;
    let src = o.dir.join("src.img");
    let cfg = o.dir.join("blkdebug.conf");
    let f = faults();
    f.write(&cfg).map_err(|e| e.to_string())?;
    if std::fs::metadata(&src).map(|m| m.len()).ok() != Some(SIZE) {
        std::fs::write(&src, pattern(SIZE)).map_err(|e| e.to_string())?;
    }
    let before = sha256(&src).map_err(|e| e.to_string())?;
    let want = f.permanent_ranges();
    let dst = o.dir.join("dst-clone.img");
    let store = o.dir.join("store.img");
    let clone_params = run_param("clone serial=BENCH-SRC serial=BENCH-DST --yes --json");
    let compress = o.compress.clone().unwrap_or_else(|| "zstd:1".into());
    let image_params = run_param(&format!(
        "image create serial=BENCH-SRC label=BSTORE:/b.lbi --compress {compress} --json"
    ));
    let mut runs: Vec<Run> = Vec::new();
    let mut store_part = (0, 0);
    for round in 0..o.runs {
        let order: [&str; 2] = if round % 2 == 0 {
            ["clone", "image"]
        } else {
            ["image", "clone"]
        };
        for tool in order {
            let disks = if tool == "clone" {
                blank(&dst, SIZE)?;
                vec![
                    DiskSpec::new(&src, Bus::Virtio, "BENCH-SRC").blkdebug(&cfg),
                    DiskSpec::new(&dst, Bus::Nvme, "BENCH-DST"),
                ]
            } else {
                let built = DiskBuilder::new(STORE_MIB + 8, Table::Gpt)
                    .part(Part::new(STORE_MIB, Fs::Ext4).label("BSTORE"))
                    .build(&store)?;
                let p = &built.partitions[0];
                store_part = (p.start_bytes, p.size_bytes);
                vec![
                    DiskSpec::new(&src, Bus::Virtio, "BENCH-SRC").blkdebug(&cfg),
                    DiskSpec::new(&store, Bus::Nvme, "BENCH-STORE"),
                ]
            };
            evict(&src);
            let (name, params) = if tool == "clone" {
                ("clone", &clone_params)
            } else {
                ("image", &image_params)
            };
            let r = bench::boot(name, &a.kernel, &a.initrd, params, disks)?;
            eprintln!(
                "bench-image-vm: round {} {:<6} {:6.1} s (/init at {:.1} s)  source reads {} (failed {})",
                round + 1,
                r.tool,
                r.secs,
                r.to_init,
                r.dev_reads + r.dev_failed,
                r.dev_failed
            );
            runs.push(r);
        }
    }
    let last = |t: &str| runs.iter().rev().find(|r| r.tool == t).unwrap();
    let result = |t: &str| {
        marker_json(&last(t).console, "LIFEBOAT-RESULT ")
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
    let exp = std::process::Command::new(&o.lifeboat)
        .args(["image", "export"])
        .arg(&lbi)
        .arg(&raw)
        .output()
        .map_err(|e| e.to_string())?;
    let image_bytes = std::fs::metadata(&lbi).map(|m| m.len()).unwrap_or(0);
    let same_bytes = exp.status.success()
        && sha256(&raw).map_err(|e| e.to_string())? == sha256(&dst).map_err(|e| e.to_string())?;
    let src_ok = sha256(&src).map_err(|e| e.to_string())? == before;
    let _ = std::fs::remove_file(&part);
    let best = |t: &str| {
        runs.iter()
            .filter(|r| r.tool == t)
            .min_by(|a, b| a.secs.total_cmp(&b.secs))
            .unwrap()
    };
    let (c, i) = (best("clone"), best("image"));
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
    let after = |t: &str| {
        runs.iter()
            .filter(|r| r.tool == t)
            .map(|r| r.secs - r.to_init)
            .fold(f64::INFINITY, f64::min)
    };
    println!(
        "\nratio image create / clone: wall {:.2}x (from /init to power-off {:.2}x), failed reads {:.2}x, reads {:.2}x",
        i.secs / c.secs,
        after("image") / after("clone"),
        i.dev_failed as f64 / c.dev_failed.max(1) as f64,
        (i.dev_reads + i.dev_failed) as f64 / (c.dev_reads + c.dev_failed).max(1) as f64
    );
    println!(
        "all runs: {}",
        runs.iter()
            .map(|r| format!("{} {:.1}s", r.tool, r.secs))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "engine counters: clone {}/{} failed/total, image create {}/{} (re-read {} bytes); image {} bytes",
        oc["reads_failed"], oc["reads_total"], oi["reads_failed"], oi["reads_total"],
        oi["reread_bytes"], image_bytes
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
    if !(same_bad && same_bytes && src_ok) {
        return Err(format!(
            "results differ (clone bad {bc:?}, image bad {bi:?}, expected {want:?}, export: {})",
            String::from_utf8_lossy(&exp.stderr)
        ));
    }
    Ok(())
}
