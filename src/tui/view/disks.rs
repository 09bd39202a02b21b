//! The disks screen and the two disk pickers (source, then target): one row per disk, the
//! details of the highlighted one below, with its health (ok / worn / FAILING / unknown and
//! why). Source is green and target red everywhere.
use super::{cut, label_style, selected_style, size_exact};
use crate::devices::Disk;
use crate::health::Status;
use crate::jobs::fmt_bytes;
use crate::tui::app::{describe, describe_part, fs_column, App};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

/// The model, or for a loop device the file behind it.
fn model_or_file(d: &Disk) -> String {
    match (&d.model, &d.backing_file) {
        (Some(m), _) => m.clone(),
        (None, Some(f)) => format!("file {f}"),
        (None, None) => "-".into(),
    }
}

/// The health line of the details: the verdict, its first reason, and the colour to show it in.
fn health_line(d: &Disk) -> (String, Color) {
    let Some(h) = &d.health else {
        return ("reading the drive's health...".into(), Color::DarkGray);
    };
    let first = h.reasons.first().cloned().unwrap_or_default();
    let more = match h.reasons.len() {
        0 | 1 => String::new(),
        n => format!(" (+{} more)", n - 1),
    };
    match h.status {
        Status::Ok => {
            let mut s = "ok".to_string();
            if let Some(p) = h.counters.power_on_hours {
                s.push_str(&format!(", {p} power-on hours"));
            }
            (s, Color::Green)
        }
        Status::Worn => (format!("WORN: {first}{more}"), Color::Yellow),
        Status::Failing => (format!("FAILING: {first}{more}"), Color::Red),
        Status::Unknown => (format!("unknown: {first}"), Color::DarkGray),
    }
}

/// One list row: name, size, transport, model, serial and flags.
/// The width of the name column: the longest kernel name of `disks` (`mmcblk0boot0` is
/// longer than `nvme0n1`), at least 8, so sizes stay in line.
fn name_width(disks: &[Disk]) -> usize {
    disks.iter().map(|d| d.name.len()).max().unwrap_or(0).max(8)
}

fn disk_row(d: &Disk, name_w: usize, width: usize) -> String {
    let mut flags = Vec::new();
    match d.health.as_ref().map(|h| h.status) {
        Some(Status::Failing) => flags.push("FAILING"),
        Some(Status::Worn) => flags.push("WORN"),
        _ => {}
    }
    if d.boot_media {
        flags.push("BOOT");
    }
    if d.read_only {
        flags.push("RO");
    }
    if !d.mounted.is_empty() || d.partitions.iter().any(|p| !p.mounted.is_empty()) {
        flags.push("MOUNTED");
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!("[{}] ", flags.join(","))
    };
    let s = format!(
        "{:<name_w$} {:>10}  {:<6} {flags}{:<24} {}",
        d.name,
        fmt_bytes(d.size_bytes),
        cut(&d.transport, 6),
        cut(&model_or_file(d), 24),
        d.serial.as_deref().unwrap_or(""),
    );
    cut(&s, width)
}

/// The details of one disk: identity, size, table, partitions with filesystems and labels.
pub(crate) fn details(d: &Disk, max_parts: usize) -> Vec<Line<'static>> {
    let l = label_style();
    let mut v = vec![
        Line::from(vec![
            Span::styled("Model     ", l),
            Span::raw(format!(
                "{:<30}",
                cut(d.model.as_deref().unwrap_or("-"), 30)
            )),
            Span::styled(" Serial ", l),
            Span::raw(d.serial.clone().unwrap_or_else(|| "-".into())),
        ]),
        Line::from(vec![
            Span::styled("Size      ", l),
            Span::raw(size_exact(d.size_bytes)),
        ]),
        Line::from(vec![
            Span::styled("Transport ", l),
            Span::raw(format!(
                "{} {}  sectors {}/{}  table {}",
                d.transport,
                if d.rotational {
                    "spinning"
                } else {
                    "solid-state"
                },
                d.logical_block_size,
                d.physical_block_size,
                d.partition_table
            )),
        ]),
    ];
    let (health, colour) = health_line(d);
    v.push(Line::from(vec![
        Span::styled("Health    ", l),
        Span::styled(health, Style::new().fg(colour)),
    ]));
    let mut notes = Vec::new();
    if d.boot_media {
        notes.push("Lifeboat booted from this disk".to_string());
    }
    if d.read_only {
        notes.push("read-only".to_string());
    }
    if d.removable {
        notes.push("removable".to_string());
    }
    for m in &d.mounted {
        notes.push(format!("mounted on {m}"));
    }
    if let Some(r) = d.role {
        notes.push(r.hint().to_string());
    } else if let Some(n) = &d.note {
        // An eMMC boot partition listed as a disk says what it is.
        notes.push(n.clone());
    }
    if !d.mmc_boot_partitions.is_empty() {
        let b: Vec<String> = d
            .mmc_boot_partitions
            .iter()
            .map(|b| format!("{} {}", b.name, fmt_bytes(b.size_bytes)))
            .collect();
        notes.push(format!(
            "eMMC boot partitions {} not copied with it (b lists them as disks)",
            b.join(", ")
        ));
    }
    if !notes.is_empty() {
        v.push(Line::from(vec![
            Span::styled("Note      ", l),
            Span::styled(notes.join(", "), Style::new().fg(Color::Yellow)),
        ]));
    }
    if d.partitions.is_empty() {
        let what = match &d.fs_type {
            Some(fs) => format!(
                "no partitions; whole-disk {fs}{}",
                d.label
                    .as_ref()
                    .map(|x| format!(" \"{x}\""))
                    .unwrap_or_default()
            ),
            None => "no partitions found".to_string(),
        };
        v.push(Line::from(vec![
            Span::styled("Contents  ", l),
            Span::raw(what),
        ]));
    } else {
        v.push(Line::from(Span::styled(
            format!("Partitions ({})", d.partitions.len()),
            l,
        )));
        // A layered partition (RAID, LVM, encrypted, pooled) gets a second line saying so.
        let mut lines = 0;
        for (i, p) in d.partitions.iter().enumerate() {
            let need = 1 + usize::from(p.role.is_some());
            let rest: usize = d.partitions[i..]
                .iter()
                .map(|q| 1 + usize::from(q.role.is_some()))
                .sum();
            if lines + rest > max_parts + 1 && lines + need > max_parts {
                v.push(Line::raw(format!(
                    "  ... and {} more",
                    d.partitions.len() - i
                )));
                break;
            }
            let mut s = format!("  {}", describe_part(p, fs_column(&d.partitions)));
            if let Some(m) = p.mounted.first() {
                s.push_str(&format!("  mounted on {m}"));
            }
            v.push(Line::raw(s));
            if let Some(r) = p.role {
                v.push(Line::from(Span::styled(
                    format!("      {}", r.hint()),
                    Style::new().fg(Color::Yellow),
                )));
            }
            lines += need;
        }
    }
    v
}

fn list_height(n: usize, body: Rect, min_details: u16) -> u16 {
    let want = n.max(1) as u16 + 2;
    want.min(body.height.saturating_sub(min_details)).max(3)
}

/// One line naming the controllers that give no disk ("" when there are none).
fn unsupported_line(app: &App, width: usize) -> String {
    if app.unsupported.is_empty() {
        return String::new();
    }
    let names: Vec<String> = app
        .unsupported
        .iter()
        .map(|u| match (&u.driver, u.bus.as_str()) {
            // A PCI controller whose driver is loaded: the disk is missing, not the driver.
            (Some(d), "pci") => format!("{} {} ({d} loaded)", u.kind, u.id),
            _ => format!("{} {}", u.kind, u.id),
        })
        .collect();
    cut(&format!(" NO DISKS FROM: {} ", names.join("; ")), width)
}

pub fn draw_disks(f: &mut Frame, area: Rect, app: &App) {
    let h = list_height(app.disks.len(), area, 8);
    let [list_area, det_area] =
        Layout::vertical([Constraint::Length(h), Constraint::Min(0)]).areas(area);
    let w = list_area.width.saturating_sub(4) as usize;
    let title = format!(" Disks ({}) ", app.disks.len());
    let mut block = Block::bordered().title(title);
    let missing = unsupported_line(app, w);
    if !missing.is_empty() {
        // A controller without a driver: say which, where the missing disks would be.
        block = block.title_bottom(Line::from(Span::styled(
            missing,
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        )));
    }
    if let Some(e) = &app.scan_error {
        let p = Paragraph::new(format!("Cannot list the disks: {e}"))
            .style(Style::new().fg(Color::Red))
            .block(block);
        f.render_widget(p, list_area);
        return;
    }
    if app.disks.is_empty() {
        let msg = if app.scanned {
            "No disks found. Plug a disk in: this list refreshes by itself."
        } else {
            "Looking for disks..."
        };
        f.render_widget(Paragraph::new(msg).block(block), list_area);
        if !app.unsupported.is_empty() {
            // Nothing to select: the details pane says what each silent controller means.
            let notes: Vec<Line> = app
                .unsupported
                .iter()
                .map(|u| Line::raw(u.note.clone()))
                .collect();
            let p = Paragraph::new(notes)
                .wrap(Wrap { trim: true })
                .block(Block::bordered().title(" Why no disks "));
            f.render_widget(p, det_area);
        }
        return;
    }
    let items: Vec<ListItem> = app
        .disks
        .iter()
        .map(|d| ListItem::new(disk_row(d, name_width(&app.disks), w)))
        .collect();
    let mut st = ListState::default().with_selected(Some(app.disk_sel));
    f.render_stateful_widget(
        List::new(items)
            .block(block)
            .highlight_symbol("> ")
            .highlight_style(selected_style()),
        list_area,
        &mut st,
    );
    if let Some(d) = app.disks.get(app.disk_sel) {
        let max_parts = det_area.height.saturating_sub(8) as usize;
        let p = Paragraph::new(details(d, max_parts))
            .block(Block::bordered().title(format!(" {} ", d.name)));
        f.render_widget(p, det_area);
    }
}

fn step_title(app: &App, what: &str) -> String {
    let steps = app.shown_steps();
    let n = steps
        .iter()
        .position(|s| *s == app.screen)
        .map(|i| i + 1)
        .unwrap_or(1);
    format!(" Step {n} of {}: {what} ", steps.len())
}

pub fn draw_source(f: &mut Frame, area: Rect, app: &App) {
    let green = Style::new().fg(Color::Green);
    let h = list_height(app.disks.len(), area, 9) + 1;
    let [list_area, det_area] =
        Layout::vertical([Constraint::Length(h), Constraint::Min(0)]).areas(area);
    let what = if app.kind == crate::tui::app::JobKind::Clone {
        "SOURCE, the disk to copy FROM"
    } else {
        "SOURCE, the disk to back up"
    };
    let block = Block::bordered()
        .title(Span::styled(
            step_title(app, what),
            green.add_modifier(Modifier::BOLD),
        ))
        .border_style(green);
    let inner = block.inner(list_area);
    f.render_widget(block, list_area);
    let [hint, rows] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
    f.render_widget(
        Paragraph::new("It is only read, never written. Pick the failing or old disk."),
        hint,
    );
    let w = rows.width.saturating_sub(2) as usize;
    let items: Vec<ListItem> = app
        .disks
        .iter()
        .map(|d| ListItem::new(disk_row(d, name_width(&app.disks), w)))
        .collect();
    let mut st = ListState::default().with_selected(Some(app.pick_sel));
    f.render_stateful_widget(
        List::new(items)
            .highlight_symbol("> ")
            .highlight_style(Style::new().bg(Color::Green).fg(Color::Black)),
        rows,
        &mut st,
    );
    if let Some(d) = app.disks.get(app.pick_sel) {
        let imaging = app.kind != crate::tui::app::JobKind::Clone;
        let warn = imaging && d.health.as_ref().is_some_and(|h| h.is_failing());
        let max_parts = det_area.height.saturating_sub(8 + u16::from(warn)) as usize;
        let mut lines = details(d, max_parts);
        if warn {
            // Imaging reads in disk order; clone reads all good data first and can resume.
            lines.insert(
                0,
                Line::from(Span::styled(
                    "This drive is FAILING: clone it first (job 1), then image the copy.",
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                )),
            );
        }
        let p = Paragraph::new(lines).block(
            Block::bordered()
                .title(Span::styled(format!(" SOURCE {} ", d.name), green))
                .border_style(green),
        );
        f.render_widget(p, det_area);
    }
}

pub fn draw_target(f: &mut Frame, area: Rect, app: &App) {
    let red = Style::new().fg(Color::Red);
    let green = Style::new().fg(Color::Green);
    let targets = app.targets();
    let h = list_height(targets.len(), area, 9) + 2;
    let [list_area, det_area] =
        Layout::vertical([Constraint::Length(h), Constraint::Min(0)]).areas(area);
    let block = Block::bordered()
        .title(Span::styled(
            step_title(app, "TARGET, the disk to ERASE"),
            red.add_modifier(Modifier::BOLD),
        ))
        .border_style(red);
    let inner = block.inner(list_area);
    f.render_widget(block, list_area);
    let [from, hint, rows] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(inner);
    let from_line = match (&app.source, &app.image) {
        (Some(s), _) => format!("Copying FROM: {}", describe(s)),
        (None, Some(i)) => format!("Restoring FROM image: {i}"),
        _ => String::new(),
    };
    f.render_widget(
        Paragraph::new(Span::styled(cut(&from_line, inner.width as usize), green)),
        from,
    );
    f.render_widget(
        Paragraph::new(Span::styled(
            "Everything on the disk you pick here is DESTROYED.",
            red.add_modifier(Modifier::BOLD),
        )),
        hint,
    );
    let w = rows.width.saturating_sub(2) as usize;
    if targets.is_empty() {
        f.render_widget(
            Paragraph::new("No other disk. Plug one in: this list refreshes by itself."),
            rows,
        );
    }
    let items: Vec<ListItem> = targets
        .iter()
        .map(|(d, why)| match why {
            None => ListItem::new(disk_row(d, name_width(&app.disks), w)),
            Some(r) => {
                // Name, size and serial identify it; the reason gets the rest of the row.
                let id = d.serial.clone().unwrap_or_else(|| model_or_file(d));
                let row = format!(
                    "{:<name_w$} {:>10}  {:<20}",
                    d.name,
                    fmt_bytes(d.size_bytes),
                    cut(&id, 20),
                    name_w = name_width(&app.disks),
                );
                ListItem::new(cut(&format!("{row} refused: {r}"), w))
                    .style(Style::new().fg(Color::DarkGray))
            }
        })
        .collect();
    let mut st = ListState::default().with_selected(Some(app.pick_sel));
    f.render_stateful_widget(
        List::new(items)
            .highlight_symbol("> ")
            .highlight_style(Style::new().bg(Color::Red).fg(Color::White)),
        rows,
        &mut st,
    );
    if let Some((d, why)) = targets.get(app.pick_sel) {
        let max_parts = det_area.height.saturating_sub(8) as usize;
        let title = match why {
            None => format!(" TARGET {}: all of this will be erased ", d.name),
            Some(r) => format!(" {} cannot be the target: {r} ", d.name),
        };
        let p = Paragraph::new(details(d, max_parts))
            .wrap(Wrap { trim: false })
            .block(
                Block::bordered()
                    .title(Span::styled(title, red))
                    .border_style(red),
            );
        f.render_widget(p, det_area);
    }
}
