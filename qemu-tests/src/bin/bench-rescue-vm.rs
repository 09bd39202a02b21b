//! `scripts/bench-rescue-vm`: the real side-by-side of a failing-disk rescue under QEMU (TCG).
//! The same kernel boots twice per round with the same disks: a 384 MiB source on virtio-blk
//! behind blkdebug (a 1 MiB dead region, 40 scattered bad sectors, one transient sector: the
//! layout of `examples/bench_rescue.rs`) and a blank NVMe target of the same size. Once with
//! Lifeboat's initramfs running the clone unattended, once with a minimal initramfs (built by the
//! script from Debian's packages) running GNU ddrescue `-d -r3`. Timed from QEMU's start to the
//! guest's power-off; reads and failed reads are QEMU's own counters for the source device
//! (`info blockstats`: the requests the disk saw), plus each tool's own count. Afterwards the
//! two targets must be byte-identical (same bytes recovered, zeros where unreadable), ddrescue's
//! map must list the same bad ranges as Lifeboat's report (read with `ddrescuelog`), and the
//! source must be unchanged. Best of the runs per tool, ratio Lifeboat / ddrescue.
//!
//! Usage: bench-rescue-vm --ddrescue-initrd PATH [--runs 2] [--dir DIR]
use lifeboat_qemu_tests::bench::{self, between, blank, evict, marker_json, Run, MIB, SIZE};
use lifeboat_qemu_tests::disks::sha256;
use lifeboat_qemu_tests::qemu::{Bus, DiskSpec};
use lifeboat_qemu_tests::{artefacts, run_param};
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "--ddrescue-initrd PATH [--runs 2] [--dir DIR]";

fn boot(
    tool: &'static str,
    initrd: &Path,
    params: &str,
    src: &Path,
    dst: &Path,
    cfg: &Path,
) -> Result<Run, String> {
    let a = artefacts()?;
    // A blank target and a cold source cache for every run.
    blank(dst, SIZE)?;
    evict(src);
    bench::boot(
        tool,
        &a.kernel,
        initrd,
        params,
        vec![
            DiskSpec::new(src, Bus::Virtio, "BENCH-SRC").blkdebug(cfg),
            DiskSpec::new(dst, Bus::Nvme, "BENCH-DST"),
        ],
    )
}

fn ddrescuelog(args: &[&str], map: &Path) -> Result<String, String> {
    let o = Command::new("ddrescuelog")
        .args(args)
        .arg(map)
        .output()
        .map_err(|e| format!("ddrescuelog (scripts/setup installs gddrescue): {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "ddrescuelog {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Merged `[start, len]` ranges from a list of 512-byte sector numbers.
fn merge_sectors(list: &str) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in list
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok())
    {
        match out.last_mut() {
            Some((a, l)) if *a + *l == s * 512 => *l += 512,
            _ => out.push((s * 512, 512)),
        }
    }
    out
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-rescue-vm: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let o = bench::parse_args(
        "bench-rescue-vm",
        &["--ddrescue-initrd"],
        USAGE,
        std::env::args().skip(1),
    )?;
    let ddrescue_initrd = PathBuf::from(o.get("--ddrescue-initrd").unwrap_or_default());
    if !ddrescue_initrd.is_file() {
        return Err("--ddrescue-initrd PATH (built by scripts/bench-rescue-vm) is required".into());
    }
    let a = artefacts()?;
    let source = bench::source(&o.dir)?;
    let (src, cfg) = (&source.path, &source.blkdebug);
    let want = source.faults.permanent_ranges();
    let dst_lb = o.dir.join("dst-lifeboat.img");
    let dst_dd = o.dir.join("dst-ddrescue.img");
    eprintln!(
        "bench-rescue-vm: {} MiB source, {} bad ranges ({} bytes), kernel {}",
        SIZE / MIB,
        want.len(),
        want.iter().map(|r| r.1).sum::<u64>(),
        a.kernel.display()
    );
    let lb_params = run_param("clone serial=BENCH-SRC serial=BENCH-DST --yes --json");
    let runs = bench::rounds(
        "bench-rescue-vm",
        o.runs,
        ["ddrescue", "lifeboat"],
        |tool| {
            if tool == "lifeboat" {
                boot("lifeboat", &a.initrd, &lb_params, src, &dst_lb, cfg)
            } else {
                boot("ddrescue", &ddrescue_initrd, "", src, &dst_dd, cfg)
            }
        },
    )?;
    // Checks on the last run of each tool.
    let lb = bench::last(&runs, "lifeboat");
    let res = marker_json(&lb.console, "LIFEBOAT-RESULT ")
        .ok_or("no LIFEBOAT-RESULT on Lifeboat's console")?;
    let out = &res["output"];
    let lb_bad = bench::bad_ranges(out)?;
    let dd = bench::last(&runs, "ddrescue");
    let map_text = between(&dd.console, "BENCH-MAP-BEGIN\n", "BENCH-MAP-END")
        .ok_or("no mapfile on ddrescue's console")?
        .replace('\r', "");
    let map = o.dir.join("ddrescue.map");
    std::fs::write(&map, &map_text).map_err(|e| e.to_string())?;
    let dd_rc = between(&dd.console, "BENCH-DDRESCUE-RC ", "\n")
        .unwrap_or("?")
        .trim();
    // Each tool's own duration of the rescue (Lifeboat's report; ddrescue's "run time").
    let lb_secs = out["duration_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
    let dd_time = dd
        .console
        .lines()
        .rev()
        .find_map(|l| l.split("run time:").nth(1))
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|| "?".into());
    let dd_errors = between(&dd.console, "BENCH-READ-ERRORS ", "\n")
        .unwrap_or("?")
        .trim()
        .to_string();
    let dd_bad = merge_sectors(&ddrescuelog(&["-b512", "--list-blocks=-"], &map)?);
    let totals = ddrescuelog(&["-t"], &map)?;
    let same_bad = lb_bad == want && dd_bad == want;
    let same_bytes = sha256(&dst_lb).map_err(|e| e.to_string())?
        == sha256(&dst_dd).map_err(|e| e.to_string())?;
    let src_ok = sha256(src).map_err(|e| e.to_string())? == source.sha256;

    let (bl, bd) = (
        bench::best(&runs, "lifeboat"),
        bench::best(&runs, "ddrescue"),
    );
    println!("Failing-disk rescue under QEMU TCG: {} MiB source (virtio-blk + blkdebug: 1 MiB dead, 40 bad sectors, 1 transient) onto NVMe.", SIZE / MIB);
    println!("QEMU start to guest power-off, best of {} runs each, same kernel, same machine, alternating order.\n", o.runs);
    println!(
        "{:<34} {:>9} {:>14} {:>14} {:>16}",
        "tool", "wall s", "source reads", "failed reads", "tool's own count"
    );
    println!(
        "{:<34} {:>9.1} {:>14} {:>14} {:>16}",
        "GNU ddrescue 1.27 -d -r3",
        bd.secs,
        bd.dev_reads + bd.dev_failed,
        bd.dev_failed,
        format!("{dd_errors} errors")
    );
    println!(
        "{:<34} {:>9.1} {:>14} {:>14} {:>16}",
        "lifeboat clone (verify on, retry 1)",
        bl.secs,
        bl.dev_reads + bl.dev_failed,
        bl.dev_failed,
        format!(
            "{}/{}",
            out["reads_failed"].as_u64().unwrap_or(0),
            out["reads_total"].as_u64().unwrap_or(0)
        )
    );
    println!(
        "\nratio lifeboat / ddrescue: wall {:.2}x, failed reads {:.2}x, reads {:.2}x",
        bl.secs / bd.secs,
        bl.dev_failed as f64 / bd.dev_failed.max(1) as f64,
        (bl.dev_reads + bl.dev_failed) as f64 / (bd.dev_reads + bd.dev_failed).max(1) as f64
    );
    let (al, ad) = (
        bench::best_after_init(&runs, "lifeboat"),
        bench::best_after_init(&runs, "ddrescue"),
    );
    println!(
        "from /init to power-off (the environment and the tool; best of the runs): lifeboat {al:.1} s, ddrescue {ad:.1} s, ratio {:.2}x",
        al / ad
    );
    println!(
        "the rescue itself (each tool's own clock, last run): lifeboat {lb_secs:.1} s including its verify pass, ddrescue {dd_time}"
    );
    println!("all runs: {}", bench::all_runs(&runs));
    println!(
        "ddrescue exit status {dd_rc}; ddrescuelog -t:\n{}",
        totals.trim_end()
    );
    println!(
        "bad ranges: lifeboat {} ranges, ddrescue {} ranges, expected {}: {}",
        lb_bad.len(),
        dd_bad.len(),
        want.len(),
        if same_bad { "identical" } else { "DIFFERENT" }
    );
    println!(
        "targets byte-identical: {}; source unchanged: {}; lifeboat exit {} verified {}",
        same_bytes, src_ok, res["exit_code"], out["verified"]
    );
    if !(same_bad && same_bytes && src_ok) {
        return Err(format!(
            "results differ (lifeboat bad {lb_bad:?}, ddrescue bad {dd_bad:?}, expected {want:?})"
        ));
    }
    Ok(())
}
