//! The progress screen (percent, bytes, rate, ETA, errors, phase and a ddrescueview-like map of
//! the disk) and the result screen (what was copied, what was lost, verification, image place).
//! For a clone both show per source partition the filesystem, used bytes and copy mode.
use super::cut;
use crate::error::exit;
use crate::jobs::jobdir::{JobResult, JobSnapshot};
use crate::jobs::{fmt_bytes, fmt_duration};
use crate::tui::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

/// Display priority of a coarse-map character: the most alarming state wins a cell.
fn rank(c: char) -> u8 {
    match c {
        '-' => 5,
        '/' => 4,
        '*' => 3,
        '.' => 2,
        '+' => 1,
        _ => 0,
    }
}

/// Resamples a coarse map to `cells` cells (worst state wins), for drawing at any width.
pub fn resample(map: &str, cells: usize) -> String {
    let src: Vec<char> = map.chars().collect();
    if src.is_empty() || cells == 0 {
        return String::new();
    }
    (0..cells)
        .map(|i| {
            let a = i * src.len() / cells;
            let b = ((i + 1) * src.len())
                .div_ceil(cells)
                .clamp(a + 1, src.len());
            src[a..b]
                .iter()
                .copied()
                .max_by_key(|&c| rank(c))
                .unwrap_or('.')
        })
        .collect()
}

/// The glyph and colour of one map cell.
fn cell(c: char) -> (char, Color) {
    match c {
        '+' => ('█', Color::Green),
        '-' => ('X', Color::LightRed),
        '*' | '/' => ('▒', Color::Yellow),
        // Free space of a used-blocks clone: not part of the copy.
        '_' => (' ', Color::DarkGray),
        _ => ('░', Color::DarkGray),
    }
}

fn bar(pct: f64, width: usize) -> Line<'static> {
    let full = ((pct / 100.0) * width as f64)
        .floor()
        .clamp(0.0, width as f64) as usize;
    Line::from(vec![
        Span::styled("█".repeat(full), Style::new().fg(Color::Green)),
        Span::styled("░".repeat(width - full), Style::new().fg(Color::DarkGray)),
    ])
}

pub fn draw_progress(f: &mut Frame, area: Rect, app: &App) {
    let Some(j) = &app.job else {
        f.render_widget(
            Paragraph::new("Starting the job...").block(Block::bordered()),
            area,
        );
        return;
    };
    let l = Style::new().fg(Color::Cyan);
    const SHOWN: usize = 4;
    let parts = &j.spec.partitions;
    let parts_h = if parts.is_empty() {
        0
    } else {
        parts.len().min(SHOWN) as u16 + 2
    };
    let reads = j.progress.as_ref().and_then(reads_line);
    let rows = 11 + reads.is_some() as u16;
    let [stats, parts_area, map_area] = Layout::vertical([
        Constraint::Length(rows),
        Constraint::Length(parts_h),
        Constraint::Min(3),
    ])
    .areas(area);
    if !parts.is_empty() {
        let w = parts_area.width.saturating_sub(2) as usize;
        let mut lines: Vec<Line> = parts
            .iter()
            .take(SHOWN)
            .map(|p| Line::raw(cut(p, w)))
            .collect();
        if parts.len() > SHOWN {
            lines[SHOWN - 1] = Line::raw(format!(
                "... and {} more partitions (all are in the job's JSON report)",
                parts.len() - SHOWN + 1
            ));
        }
        f.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(" Partitions: what is copied ")),
            parts_area,
        );
    }
    let inner_w = stats.width.saturating_sub(2) as usize;
    let mut v: Vec<Line> = j
        .spec
        .details
        .iter()
        .map(|d| Line::raw(cut(d, inner_w)))
        .collect();
    v.truncate(3);
    while v.len() < 3 {
        v.push(Line::raw(""));
    }
    let total = j
        .progress
        .as_ref()
        .map(|p| p.total_bytes)
        .unwrap_or(j.spec.total_bytes);
    match &j.progress {
        Some(p) => {
            let pct = p.percent();
            let phase = match p.pass {
                Some(n) => format!("{}, pass {n}", p.phase),
                None => p.phase.clone(),
            };
            let phase = if j.cancel_requested {
                format!("{phase} (cancelling...)")
            } else {
                phase
            };
            v.push(Line::from(vec![
                Span::styled("Phase     ", l),
                Span::styled(
                    format!("{phase:<28}"),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::styled(
                    format!("{pct:5.1}%"),
                    Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                ),
            ]));
            v.push(bar(pct, inner_w.min(76)));
            v.push(Line::from(vec![
                Span::styled("Done      ", l),
                Span::raw(format!(
                    "{} of {}",
                    fmt_bytes(p.done_bytes),
                    fmt_bytes(total)
                )),
            ]));
            let eta = p
                .eta_secs
                .map(fmt_duration)
                .unwrap_or_else(|| "--:--".into());
            v.push(Line::from(vec![
                Span::styled("Rate      ", l),
                Span::raw(format!(
                    "{:<18}",
                    format!("{}/s", fmt_bytes(p.rate_bytes_per_sec))
                )),
                Span::styled("Time left ", l),
                Span::raw(eta),
            ]));
            let err_style = if p.bad_bytes > 0 {
                Style::new()
                    .fg(Color::LightRed)
                    .add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            };
            v.push(Line::from(vec![
                Span::styled("Errors    ", l),
                Span::styled(
                    format!("{} unreadable so far", fmt_bytes(p.bad_bytes)),
                    err_style,
                ),
            ]));
            v.extend(reads.clone());
        }
        None => {
            v.push(Line::from(vec![
                Span::styled("Phase     ", l),
                Span::raw("starting"),
            ]));
            v.push(bar(0.0, inner_w.min(76)));
            v.push(Line::from(vec![
                Span::styled("Done      ", l),
                Span::raw(format!("0 B of {}", fmt_bytes(total))),
            ]));
        }
    }
    if let Some(last) = j.log_tail.last() {
        v.push(Line::styled(
            cut(last, inner_w),
            Style::new().fg(Color::Gray),
        ));
    }
    let title = if j.running {
        format!(" {} ", j.spec.title)
    } else {
        format!(" {} (stopped) ", j.spec.title)
    };
    f.render_widget(
        Paragraph::new(v).block(Block::bordered().title(Span::styled(
            title,
            Style::new().add_modifier(Modifier::BOLD),
        ))),
        stats,
    );
    draw_map(f, map_area, j);
}

/// How long without a good read before the screen calls the drive stalled: a failing drive's
/// read can take a few seconds (its own retries, the kernel's); much longer is worth seeing.
const STALLED_MS: u64 = 10_000;

/// A rescuing job's reads (issued, failed) and the time since the last good read; a drive that
/// has returned no data for [`STALLED_MS`] is shown in red. `None` for jobs that do not report
/// reads.
fn reads_line(p: &crate::jobs::Progress) -> Option<Line<'static>> {
    let total = p.reads_total?;
    let failed = p.reads_failed.unwrap_or(0);
    let l = Style::new().fg(Color::Cyan);
    let fail_style = if failed > 0 {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new()
    };
    let mut spans = vec![
        Span::styled("Reads     ", l),
        Span::raw(format!("{total} issued, ")),
        Span::styled(format!("{failed} failed"), fail_style),
    ];
    match p.ms_since_good_read {
        Some(ms) if ms >= STALLED_MS => spans.push(Span::styled(
            format!("   NO GOOD READ FOR {} (stalled?)", fmt_secs(ms)),
            Style::new()
                .fg(Color::LightRed)
                .add_modifier(Modifier::BOLD),
        )),
        Some(ms) => spans.push(Span::raw(format!(
            "   last good read {} ago",
            if ms < 1000 {
                "<1 s".to_string()
            } else {
                fmt_secs(ms)
            }
        ))),
        None => {}
    }
    Some(Line::from(spans))
}

/// "42 s", "3 min 05 s" for a duration in milliseconds.
fn fmt_secs(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{s} s")
    } else {
        format!("{} min {:02} s", s / 60, s % 60)
    }
}

fn draw_map(f: &mut Frame, area: Rect, j: &JobSnapshot) {
    let mut legend = Line::from(vec![
        Span::raw(" Disk map: "),
        Span::styled("█", Style::new().fg(Color::Green)),
        Span::raw(" copied  "),
        Span::styled("░", Style::new().fg(Color::DarkGray)),
        Span::raw(" not yet  "),
        Span::styled("▒", Style::new().fg(Color::Yellow)),
        Span::raw(" to retry  "),
        Span::styled("X", Style::new().fg(Color::LightRed)),
        Span::raw(" unreadable "),
    ]);
    if j.map().is_some_and(|m| m.contains('_')) {
        legend.push_span(Span::raw(" blank: free space "));
    }
    let block = Block::bordered().title(legend);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let (w, h) = (inner.width as usize, inner.height as usize);
    if w == 0 || h == 0 {
        return;
    }
    // Jobs without a map of their own (images) read front to back: draw done / total.
    let linear = j.progress.as_ref().filter(|p| p.total_bytes > 0).map(|p| {
        let done = (p.done_bytes.min(p.total_bytes) as u128 * 256 / p.total_bytes as u128) as usize;
        "+".repeat(done) + &".".repeat(256 - done)
    });
    let Some(map) = j.map().or(linear.as_deref()) else {
        let msg = if j.progress.is_some() {
            "(this job reports no map)"
        } else {
            "(waiting for the first progress report)"
        };
        f.render_widget(
            Paragraph::new(msg).style(Style::new().fg(Color::DarkGray)),
            inner,
        );
        return;
    };
    let cells: Vec<char> = resample(map, w * h).chars().collect();
    let lines: Vec<Line> = cells
        .chunks(w)
        .map(|row| {
            Line::from(
                row.iter()
                    .map(|&c| {
                        let (g, col) = cell(c);
                        Span::styled(g.to_string(), Style::new().fg(col))
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}

/// (headline, colour) of an outcome.
fn headline(r: &JobResult, kind: &str) -> (&'static str, Color) {
    match r.exit_code {
        exit::CORRUPT if kind == "image-extract" => (
            "FINISHED, BUT SOME FILES COULD NOT BE READ: the image is damaged there",
            Color::LightRed,
        ),
        exit::OK => ("FINISHED: everything was done, nothing lost", Color::Green),
        exit::PARTIAL => (
            "FINISHED WITH UNREADABLE SECTORS: see what was lost below",
            Color::Yellow,
        ),
        exit::REFUSED => (
            "REFUSED by a safety rule: nothing was written",
            Color::Yellow,
        ),
        exit::CORRUPT => (
            "VERIFICATION FAILED: the copy or image does not match",
            Color::LightRed,
        ),
        exit::CANCELLED => ("CANCELLED: stopped at your request", Color::Yellow),
        _ if r.cancelled => ("CANCELLED: stopped at your request", Color::Yellow),
        _ => ("FAILED: the job did not complete", Color::LightRed),
    }
}

fn get_u64(v: &serde_json::Value, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|k| v.get(*k).and_then(|x| x.as_u64()))
}

/// The report's lines: copied, lost ranges, verification, image location, error.
fn report_lines(r: &JobResult, j: &JobSnapshot, width: usize, max: usize) -> Vec<Line<'static>> {
    let l = Style::new().fg(Color::Cyan);
    let mut v = Vec::new();
    let empty = serde_json::Value::Null;
    let rep = r.report.as_ref().unwrap_or(&empty);
    let total = get_u64(
        rep,
        &["total_bytes", "source_bytes", "size_bytes", "bytes_total"],
    )
    .or_else(|| j.progress.as_ref().map(|p| p.total_bytes));
    let done = get_u64(
        rep,
        &[
            "copied_bytes",
            "bytes_copied",
            "written_bytes",
            "read_bytes",
            "done_bytes",
            "bytes",
        ],
    )
    .or_else(|| j.progress.as_ref().map(|p| p.done_bytes));
    if let Some(d) = done.filter(|_| r.exit_code != exit::REFUSED) {
        let used = get_u64(rep, &["used_bytes"]).filter(|&u| total.is_some_and(|t| u < t));
        let t = match (used, total) {
            (Some(u), Some(t)) if j.spec.kind == "clone" => {
                format!(" of {} (the used blocks of {})", fmt_bytes(u), fmt_bytes(t))
            }
            (_, Some(t)) => format!(" of {}", fmt_bytes(t)),
            _ => String::new(),
        };
        let what = if ["clone", "image-restore", "image-extract"].contains(&j.spec.kind.as_str()) {
            "Copied    "
        } else {
            "Read      "
        };
        v.push(Line::from(vec![
            Span::styled(what, l),
            Span::raw(format!("{}{t}", fmt_bytes(d))),
        ]));
    }
    // Per partition: filesystem, used bytes, mode (the report's, as the job decided them).
    let parts: Vec<crate::fs::PartitionUsage> = rep
        .get("partitions")
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .unwrap_or_default();
    for (i, p) in parts.iter().enumerate() {
        if i == 3 && parts.len() > 4 {
            v.push(Line::raw(format!(
                "          ... and {} more partitions (all are in the job's JSON report)",
                parts.len() - i
            )));
            break;
        }
        v.push(Line::from(vec![
            Span::styled(if i == 0 { "Partitions" } else { "          " }, l),
            Span::raw(cut(
                &format!(" {}", crate::tui::app::usage_line(p)),
                width.saturating_sub(10),
            )),
        ]));
    }
    let ranges: Vec<(u64, u64)> = rep
        .get("bad_ranges")
        .and_then(|b| b.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| Some((x.get(0)?.as_u64()?, x.get(1)?.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let lost: u64 = ranges.iter().map(|r| r.1).sum();
    let sector = get_u64(rep, &["logical_block_size"])
        .filter(|&n| n > 0)
        .unwrap_or(512);
    if ranges.is_empty() {
        if rep.get("bad_ranges").is_some() {
            v.push(Line::from(vec![
                Span::styled("Lost      ", l),
                Span::styled("nothing", Style::new().fg(Color::Green)),
            ]));
        }
    } else {
        v.push(Line::from(vec![
            Span::styled("Lost      ", l),
            Span::styled(
                format!(
                    "{} in {} range(s) (written as zeros on the target):",
                    fmt_bytes(lost),
                    ranges.len()
                ),
                Style::new()
                    .fg(Color::LightRed)
                    .add_modifier(Modifier::BOLD),
            ),
        ]));
        let room = max.saturating_sub(v.len() + 7).max(1);
        for (i, (s, n)) in ranges.iter().enumerate() {
            if i + 1 == room && ranges.len() > room {
                v.push(Line::raw(format!(
                    "  ... and {} more ranges (all are in the job's JSON report)",
                    ranges.len() - i
                )));
                break;
            }
            v.push(Line::raw(cut(
                &format!(
                    "  bytes {s}-{} ({}, sectors {}-{})",
                    (s + n).saturating_sub(1),
                    fmt_bytes(*n),
                    s / sector,
                    (s + n).div_ceil(sector).saturating_sub(1)
                ),
                width,
            )));
        }
    }
    let verif = ["verified", "verify", "verification", "verify_ok"]
        .iter()
        .find_map(|k| rep.get(*k));
    if let Some(x) = verif {
        let (text, c) = match x {
            serde_json::Value::Bool(true) => ("passed".to_string(), Color::Green),
            serde_json::Value::Bool(false) => ("FAILED".to_string(), Color::LightRed),
            serde_json::Value::Null => ("skipped".to_string(), Color::Yellow),
            serde_json::Value::String(s) => (
                s.clone(),
                if s.contains("fail") {
                    Color::LightRed
                } else {
                    Color::Green
                },
            ),
            other => (
                cut(&other.to_string(), width.saturating_sub(10)),
                Color::White,
            ),
        };
        v.push(Line::from(vec![
            Span::styled("Verified  ", l),
            Span::styled(text, Style::new().fg(c)),
        ]));
    }
    if let Some(n) = rep
        .get("verify_mismatches")
        .and_then(|m| m.as_array())
        .filter(|m| !m.is_empty())
    {
        v.push(Line::from(vec![
            Span::styled("Mismatch  ", l),
            Span::styled(
                format!("{} range(s) of the target differ from the source", n.len()),
                Style::new().fg(Color::LightRed),
            ),
        ]));
    }
    if let Some(p) = rep
        .get("problems")
        .and_then(|m| m.as_array())
        .filter(|m| !m.is_empty())
    {
        for x in p.iter().take(3) {
            let t = x
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| x.to_string());
            v.push(Line::from(vec![
                Span::styled("Problem   ", l),
                Span::styled(
                    cut(&t, width.saturating_sub(10)),
                    Style::new().fg(Color::LightRed),
                ),
            ]));
        }
    }
    if rep.get("partition_table_fixed").and_then(|x| x.as_bool()) == Some(true) {
        let t = rep
            .get("partition_table")
            .and_then(|x| x.as_str())
            .unwrap_or("table");
        v.push(Line::from(vec![
            Span::styled("Table     ", l),
            Span::raw(format!("{t}, fixed for the target's size")),
        ]));
    }
    if let Some(b) = get_u64(rep, &["image_bytes"]) {
        v.push(Line::from(vec![
            Span::styled("Image size", l),
            Span::raw(format!(" {}", fmt_bytes(b))),
        ]));
    }
    for n in rep
        .get("notes")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
        .take(2)
    {
        if let Some(t) = n.as_str() {
            v.push(Line::from(vec![
                Span::styled("Note      ", l),
                Span::raw(cut(t, width.saturating_sub(10))),
            ]));
        }
    }
    let created = match crate::cli::parse_argv(&j.spec.args) {
        Some(crate::cli::Cmd::Image(crate::image::ImageCmd::Create { image, .. })) => Some(image),
        _ => None,
    };
    if let Some(img) = created.filter(|_| rep.get("image").is_none()) {
        v.push(Line::from(vec![
            Span::styled("Image     ", l),
            Span::raw(cut(&img, width.saturating_sub(10))),
        ]));
    }
    if j.spec.kind == "image-extract" {
        extract_lines(&mut v, rep, width, max);
    } else if let Some(img) = ["image", "path", "image_path"]
        .iter()
        .find_map(|k| rep.get(*k).and_then(|x| x.as_str()))
    {
        v.push(Line::from(vec![
            Span::styled("Stored at ", l),
            Span::raw(cut(img, width.saturating_sub(10))),
        ]));
    }
    v.push(Line::from(vec![
        Span::styled("Took      ", l),
        Span::raw(fmt_duration(r.elapsed_secs)),
    ]));
    let err = rep
        .get("error")
        .and_then(|e| {
            e.get("message")
                .and_then(|m| m.as_str())
                .or_else(|| e.as_str())
        })
        .map(str::to_string)
        .or_else(|| r.error.clone())
        .or_else(|| {
            if r.exit_code != exit::OK && r.report.is_none() && !r.cancelled {
                j.log_tail.last().cloned()
            } else {
                None
            }
        });
    if let Some(e) = err {
        v.push(Line::from(vec![
            Span::styled("Why       ", l),
            Span::styled(e, Style::new().fg(Color::LightRed)),
        ]));
    }
    v
}

/// "Restore files": what was copied, renamed, and every file that was not.
fn extract_lines(v: &mut Vec<Line<'static>>, rep: &serde_json::Value, width: usize, max: usize) {
    let l = Style::new().fg(Color::Cyan);
    let n = |k: &str| get_u64(rep, &[k]).unwrap_or(0);
    if rep.get("files").is_some() {
        v.push(Line::from(vec![
            Span::styled("Files     ", l),
            Span::raw(format!(
                "{} files, {} folders, {} links into {}",
                n("files"),
                n("dirs"),
                n("symlinks"),
                rep.get("destination")
                    .and_then(|d| d.as_str())
                    .unwrap_or("?")
            )),
        ]));
    }
    let list = |k: &str| {
        rep.get(k)
            .and_then(|x| x.as_array())
            .cloned()
            .unwrap_or_default()
    };
    let s = |x: &serde_json::Value, k: &str| {
        x.get(k).and_then(|y| y.as_str()).unwrap_or("?").to_string()
    };
    let errors = list("errors");
    let room = max.saturating_sub(v.len() + 6).max(2);
    for (i, e) in errors.iter().enumerate() {
        if i + 1 == room && errors.len() > room {
            v.push(Line::raw(format!(
                "  ... and {} more (all are in the job's JSON report)",
                n("errors_total").saturating_sub(i as u64)
            )));
            break;
        }
        let side = if s(e, "side") == "read" {
            "unreadable in the image"
        } else {
            "could not be written"
        };
        v.push(Line::from(vec![
            Span::styled(if i == 0 { "NOT COPIED" } else { "          " }, l),
            Span::styled(
                cut(
                    &format!(" {} ({side})", s(e, "path")),
                    width.saturating_sub(10),
                ),
                Style::new().fg(Color::LightRed),
            ),
        ]));
    }
    for (i, r) in list("renamed").iter().take(3).enumerate() {
        v.push(Line::from(vec![
            Span::styled(if i == 0 { "Renamed   " } else { "          " }, l),
            Span::raw(cut(
                &format!(
                    " {} is there as {} (the name was taken)",
                    s(r, "path"),
                    s(r, "dest")
                ),
                width.saturating_sub(10),
            )),
        ]));
    }
    if let Some(st) = rep.get("stopped").and_then(|x| x.as_str()) {
        v.push(Line::from(vec![
            Span::styled("Stopped   ", l),
            Span::styled(st.to_string(), Style::new().fg(Color::LightRed)),
        ]));
    }
}

pub fn draw_result(f: &mut Frame, area: Rect, app: &App) {
    let Some(j) = &app.job else {
        f.render_widget(
            Paragraph::new("No job has run yet.").block(Block::bordered()),
            area,
        );
        return;
    };
    let Some(r) = j.outcome() else {
        draw_progress(f, area, app);
        return;
    };
    let (head, color) = headline(&r, &j.spec.kind);
    let w = area.width.saturating_sub(2) as usize;
    let mut v = vec![
        Line::styled(head, Style::new().fg(color).add_modifier(Modifier::BOLD)),
        Line::raw(""),
    ];
    for d in &j.spec.details {
        v.push(Line::raw(cut(d, w)));
    }
    v.push(Line::raw(""));
    let max = area.height.saturating_sub(2) as usize;
    let room = max.saturating_sub(v.len() + 2);
    v.extend(report_lines(&r, j, w, room));
    v.push(Line::raw(""));
    let next = if app.under_init {
        "Next: n another job, p power off, r reboot. Take the disks out only after power off."
    } else {
        "Next: n another job, Esc back to the disks."
    };
    if app.result_image().is_some() {
        v.push(Line::styled(
            "Press c to make the second copy of this image on another disk (keep one copy \
             stored away).",
            Style::new().fg(Color::Cyan),
        ));
    }
    v.push(Line::styled(next, Style::new().fg(Color::Cyan)));
    f.render_widget(
        Paragraph::new(v).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(format!(" {} ", j.spec.title))
                .border_style(Style::new().fg(color)),
        ),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resample_keeps_the_worst() {
        assert_eq!(resample("++++-+++", 4), "++-+");
        assert_eq!(resample("+.", 4), "++..");
        assert_eq!(resample("", 4), "");
    }
}
