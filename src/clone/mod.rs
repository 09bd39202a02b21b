//! Disk-to-disk cloning: the rescue-grade copy, verification and the partition table fix-up
//! for a target of another size (`gpt`, shared with image restore). The safety rules live in
//! [`crate::storage`].
pub mod gpt;
pub mod job;
pub mod resume;

pub use job::{execute, plan, run_job, CloneJob, CloneReport, Plan};

use crate::error::{exit, Result};
use crate::jobs::{fmt_bytes, fmt_duration, Cancel, StderrSink};

#[derive(clap::Args, Debug, Clone, PartialEq, serde::Serialize)]
pub struct CloneArgs {
    /// The disk to copy (`/dev/sda`, `sda`, `serial=X`, or a disk-image file).
    pub source: String,
    /// The disk (or file) to overwrite.
    pub target: String,
    /// Do not ask for confirmation (unattended runs).
    #[arg(long)]
    pub yes: bool,
    /// GNU ddrescue mapfile: resume from it, and keep it up to date.
    #[arg(long, value_name = "FILE")]
    pub map: Option<std::path::PathBuf>,
    /// Skip the verification pass.
    #[arg(long)]
    pub no_verify: bool,
    #[arg(long, help = crate::fs::ALL_SECTORS_HELP)]
    pub all_sectors: bool,
    /// Print the final report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `lifeboat clone`: plan, confirm, run, report. Returns the exit code.
pub fn run(a: CloneArgs) -> Result<i32> {
    let mut job = CloneJob::new(&a.source, &a.target);
    job.map = a.map.clone();
    job.verify = !a.no_verify;
    job.allow_failing_target = a.yes;
    job.all_sectors = a.all_sectors;
    let mut cl = vec![
        "lifeboat".to_string(),
        "clone".into(),
        a.source.clone(),
        a.target.clone(),
    ];
    if let Some(m) = &a.map {
        cl.push("--map".into());
        cl.push(m.display().to_string());
    }
    if a.all_sectors {
        cl.push("--all-sectors".into());
    }
    job.command_line = cl.join(" ");
    // Ctrl-C / SIGTERM cancel the job cleanly (target synced, map saved); a second one exits.
    // Blocked before any thread exists so that every thread inherits the mask.
    let cancel = Cancel::new();
    watch_signals(&cancel);
    let plan = plan(&job)?;
    crate::err!("{}", plan.describe());
    if !a.yes {
        crate::storage::prompt::confirm(&plan.target.selected.name(), "")?;
    }
    let sink = StderrSink::from_env();
    let report = execute(plan, &job, &sink, &cancel)?;
    let mut last = crate::jobs::Progress::new("clone", "finished", report.used_bytes);
    last.done_bytes = report.used_bytes;
    last.bad_bytes = report.bad_bytes;
    last.rate_bytes_per_sec = report.rate_bytes_per_sec;
    sink.finish(&last);
    crate::errln!("{}", human_report(&report));
    crate::cli::emit_report(&report, a.json);
    Ok(report.exit_code)
}

fn watch_signals(cancel: &Cancel) {
    crate::jobs::cancel_on_signals(cancel, "the target is synced and the map saved");
}

/// The report for a person.
pub fn human_report(r: &CloneReport) -> String {
    let mut s = format!(
        "clone {} -> {}: {} copied in {} ({}/s)",
        r.source,
        r.target,
        fmt_bytes(r.bytes_copied),
        fmt_duration(r.duration_ms / 1000),
        fmt_bytes(r.rate_bytes_per_sec)
    );
    if r.used_bytes < r.size_bytes {
        s.push_str(&format!(
            "\n  used blocks: {} of {} (the target's free space keeps its old bytes)",
            fmt_bytes(r.used_bytes),
            fmt_bytes(r.size_bytes)
        ));
    }
    for p in &r.partitions {
        s.push_str(&format!("\n  {}", p.describe()));
    }
    if r.bad_bytes > 0 {
        s.push_str(&format!(
            "\n  UNREADABLE: {} in {} sectors of {} bytes (zeros on the target), {} ranges",
            fmt_bytes(r.bad_bytes),
            r.bad_sectors,
            r.logical_block_size,
            r.bad_ranges.len()
        ));
        for b in r.bad_ranges.iter().take(10) {
            s.push_str(&format!("\n    at byte {} length {}", b[0], b[1]));
        }
    }
    match r.verified {
        Some(true) => s.push_str(&format!(
            "\n  verified: OK ({})",
            fmt_bytes(r.verified_bytes)
        )),
        Some(false) => s.push_str(&format!(
            "\n  verified: MISMATCH in {} areas: the target is unreliable",
            r.verify_mismatches.len()
        )),
        None => s.push_str("\n  verified: skipped (--no-verify)"),
    }
    if r.partition_table_fixed {
        s.push_str("\n  partition table: GPT adjusted to the target's size");
    }
    for n in &r.notes {
        s.push_str(&format!("\n  note: {n}"));
    }
    s.push_str(match r.exit_code {
        exit::OK => "\n  result: complete",
        exit::PARTIAL => "\n  result: completed with unreadable sectors (exit 3)",
        _ => "\n  result: verification failed (exit 5)",
    });
    s
}
