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
use lifeboat_qemu_tests::bench::{
    self, between, blank, evict, faults, marker_json, pattern, Run, MIB, SIZE,
};
use lifeboat_qemu_tests::disks::sha256;
use lifeboat_qemu_tests::qemu::{Bus, DiskSpec};
use lifeboat_qemu_tests::{artefacts, run_param};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Opts {
    ddrescue_initrd: PathBuf,
    runs: usize,
    dir: PathBuf,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        ddrescue_initrd: PathBuf::new(),
        runs: 2,
        dir: lifeboat_qemu_tests::repo_root()
            .join("target")
            .join("bench-rescue-vm"),
    };
    let mut a = std::env::args().skip(1);
    while let Some(x) = a.next() {
        let mut val = || a.next().ok_or(format!("{x} needs a value"));
        match x.as_str() {
            "--ddrescue-initrd" => o.ddrescue_initrd = PathBuf::from(val()?),
            "--runs" => o.runs = val()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--dir" => o.dir = PathBuf::from(val()?),
            _ => {
                return Err(format!(
                    "unknown argument {x}; usage: bench-rescue-vm --ddrescue-initrd PATH [--runs 2] [--dir DIR]"
                ))
            }
        }
    }
    if !o.ddrescue_initrd.is_file() {
        return Err("--ddrescue-initrd PATH (built by scripts/bench-rescue-vm) is required".into());
    }
    Ok(o)
}

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
    let mut runs: Vec<Run> = Vec::new();
    for round in 0..o.runs {
        // Alternate the order so neither tool always runs on a warmer machine.
        let order: [&str; 2] = if round % 2 == 0 {
            ["ddrescue", "lifeboat"]
        } else {
            ["lifeboat", "ddrescue"]
        };
        for tool in order {
            let r = if tool == "lifeboat" {
                boot("lifeboat", &a.initrd, &lb_params, &src, &dst_lb, &cfg)?
            } else {
                boot("ddrescue", &o.ddrescue_initrd, "", &src, &dst_dd, &cfg)?
            };
            eprintln!(
                "bench-rescue-vm: round {} {:<9} {:6.1} s (/init at {:.1} s)  source reads {} (failed {})",
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
    // Checks on the last run of each tool.
    let last = |t: &str| runs.iter().rev().find(|r| r.tool == t).unwrap();
    let lb = last("lifeboat");
    let res = marker_json(&lb.console, "LIFEBOAT-RESULT ")
        .ok_or("no LIFEBOAT-RESULT on Lifeboat's console")?;
    let out = &res["output"];
    let lb_bad: Vec<(u64, u64)> = out["bad_ranges"]
        .as_array()
        .ok_or(format!("no bad_ranges: {res}"))?
        .iter()
        .map(|v| (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0)))
        .collect();
    let dd = last("ddrescue");
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
    let src_ok = sha256(&src).map_err(|e| e.to_string())? == before;

    let best = |t: &str| {
        runs.iter()
            .filter(|r| r.tool == t)
            .min_by(|a, b| a.secs.total_cmp(&b.secs))
            .unwrap()
    };
    let (bl, bd) = (best("lifeboat"), best("ddrescue"));
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
    let best_after = |t: &str| {
        runs.iter()
            .filter(|r| r.tool == t)
            .map(|r| r.secs - r.to_init)
            .fold(f64::INFINITY, f64::min)
    };
    let (al, ad) = (best_after("lifeboat"), best_after("ddrescue"));
    println!(
        "from /init to power-off (the environment and the tool; best of the runs): lifeboat {al:.1} s, ddrescue {ad:.1} s, ratio {:.2}x",
        al / ad
    );
    println!(
        "the rescue itself (each tool's own clock, last run): lifeboat {lb_secs:.1} s including its verify pass, ddrescue {dd_time}"
    );
    println!(
        "all runs: {}",
        runs.iter()
            .map(|r| format!("{} {:.1}s", r.tool, r.secs))
            .collect::<Vec<_>>()
            .join(", ")
    );
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
