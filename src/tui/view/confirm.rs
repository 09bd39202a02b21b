//! The confirmation screen: names exactly what will be destroyed (model, serial, size, each
//! partition with its label) and, for a destructive job, wants the target's name typed.
use super::{cut, size_exact};
use crate::jobs::fmt_bytes;
use crate::tui::app::{describe, describe_part, fs_column, usage_line, App, JobKind};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

/// What a clone copies of each source partition: filesystem, used bytes, mode.
fn usage_lines(v: &mut Vec<Line>, app: &App, w: usize) {
    let grey = Style::new().fg(Color::Gray);
    match app.source_usage() {
        None => v.push(Line::styled(
            "  (reading its filesystems to see what is used...)",
            grey,
        )),
        Some(Err(e)) => v.push(Line::styled(
            cut(
                &format!("  what is used is read when the job starts ({e})"),
                w,
            ),
            grey,
        )),
        Some(Ok(u)) if u.partitions.is_empty() => v.push(Line::styled(
            "  no filesystem Lifeboat can map: every sector is copied",
            grey,
        )),
        Some(Ok(u)) => {
            v.push(Line::raw(cut(
                &format!(
                    "  copies {} of {}: the used blocks (free space is not copied)",
                    fmt_bytes(u.used_bytes),
                    fmt_bytes(u.disk_bytes)
                ),
                w,
            )));
            let shown = 4usize;
            for (i, p) in u.partitions.iter().enumerate() {
                if i == shown && u.partitions.len() > shown + 1 {
                    v.push(Line::raw(format!(
                        "    ... and {} more partitions",
                        u.partitions.len() - i
                    )));
                    break;
                }
                v.push(Line::raw(cut(&format!("    {}", usage_line(p)), w)));
            }
        }
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let red = Style::new().fg(Color::Red);
    let green = Style::new().fg(Color::Green);
    let bold = Modifier::BOLD;
    let w = area.width.saturating_sub(4) as usize;
    let mut v: Vec<Line> = Vec::new();
    v.push(Line::styled(
        app.kind.title(),
        Style::new().add_modifier(bold),
    ));
    v.push(Line::raw(""));
    if let Some(s) = &app.source {
        v.push(Line::styled("FROM (only read):", green.add_modifier(bold)));
        v.push(Line::styled(cut(&format!("  {}", describe(s)), w), green));
        if app.kind == JobKind::Clone {
            usage_lines(&mut v, app, w);
        }
    }
    if let Some(c) = &app.copy_of {
        v.push(Line::from(vec![
            Span::styled("Image to copy: ", Style::new().fg(Color::Cyan)),
            Span::raw(c.clone()),
        ]));
        v.push(Line::raw(
            "  with every earlier image it needs; read back and checked",
        ));
    }
    if let Some(i) = &app.image {
        let what = match app.kind {
            JobKind::FullImage | JobKind::Incremental => "Image to write:",
            JobKind::Copy => "Copy to:",
            _ => "Image:",
        };
        v.push(Line::from(vec![
            Span::styled(format!("{what} "), Style::new().fg(Color::Cyan)),
            Span::raw(i.clone()),
        ]));
        if app.kind == JobKind::Incremental {
            v.push(Line::raw(format!(
                "  on top of the parent image {}",
                app.loc.parent.trim()
            )));
        }
        // Encryption: a new image's choice, or the passphrase that opened the image.
        if app.kind == JobKind::FullImage && app.pass.encrypt {
            v.push(Line::styled(
                "  ENCRYPTED with the passphrase you typed (not stored anywhere)",
                Style::new().fg(Color::Yellow),
            ));
        } else if app.secret.is_some() {
            v.push(Line::raw(
                "  encrypted: opened with the passphrase you typed (checked)",
            ));
        }
    }
    if app.kind == JobKind::RestoreFiles {
        restore_files_lines(&mut v, app, w);
    }
    if let Some(t) = &app.target {
        v.push(Line::raw(""));
        v.push(Line::styled(
            "ERASE (everything on this disk is destroyed, forever):",
            red.add_modifier(bold),
        ));
        v.push(Line::styled(
            cut(
                &format!(
                    "  {}  {}",
                    t.name,
                    t.model.as_deref().unwrap_or("(no model)")
                ),
                w,
            ),
            red.add_modifier(bold),
        ));
        v.push(Line::styled(
            cut(
                &format!(
                    "  serial {}   size {}",
                    t.serial.as_deref().unwrap_or("(none)"),
                    size_exact(t.size_bytes)
                ),
                w,
            ),
            red,
        ));
        if t.partitions.is_empty() {
            let c = match &t.fs_type {
                Some(fs) => format!(
                    "  whole-disk {fs} filesystem{}",
                    t.label
                        .as_ref()
                        .map(|l| format!(" \"{l}\""))
                        .unwrap_or_default()
                ),
                None => "  no partitions found on it".into(),
            };
            v.push(Line::styled(c, red));
        } else {
            let shown = 5usize;
            for (i, p) in t.partitions.iter().enumerate() {
                if i == shown && t.partitions.len() > shown + 1 {
                    v.push(Line::styled(
                        format!("  ... and {} more partitions", t.partitions.len() - i),
                        red,
                    ));
                    break;
                }
                v.push(Line::styled(
                    cut(
                        &format!("  {}", describe_part(p, fs_column(&t.partitions))),
                        w,
                    ),
                    red,
                ));
            }
        }
    } else if !app.kind.destructive() {
        v.push(Line::raw(""));
        v.push(Line::styled("Nothing is erased by this job.", green));
    }
    v.push(Line::raw(""));
    match app.confirm_word() {
        Some(word) => {
            v.push(Line::from(vec![
                Span::raw("To erase it, type its name "),
                Span::styled(
                    word.clone(),
                    Style::new().fg(Color::Yellow).add_modifier(bold),
                ),
                Span::raw(" and press Enter (Esc goes back):"),
            ]));
            v.push(Line::from(vec![
                Span::raw("  > "),
                Span::styled(
                    format!("{}_", app.typed),
                    Style::new()
                        .bg(Color::Red)
                        .fg(Color::White)
                        .add_modifier(bold),
                ),
            ]));
        }
        None => v.push(Line::raw("Press Enter to start, Esc to go back.")),
    }
    let (title, border) = if app.kind.destructive() {
        (" Confirm: this ERASES a disk ", red)
    } else {
        (" Confirm ", Style::new().fg(Color::Cyan))
    };
    f.render_widget(
        Paragraph::new(v).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(Span::styled(title, border.add_modifier(bold)))
                .border_style(border),
        ),
        area,
    );
}

/// What "restore files" copies, from where, to where.
fn restore_files_lines(v: &mut Vec<Line>, app: &App, w: usize) {
    let cyan = Style::new().fg(Color::Cyan);
    let fs = match &app.browse.opened {
        Some(Ok(o)) => format!(" ({})", o.filesystem),
        _ => String::new(),
    };
    v.push(Line::raw(format!(
        "  partition {}{fs}, only read",
        app.browse.partition.unwrap_or(1)
    )));
    v.push(Line::styled("Copy:", cyan));
    let shown = 6usize;
    let n = app.browse.marked.len();
    for (i, m) in app.browse.marked.iter().enumerate() {
        if i == shown && n > shown + 1 {
            v.push(Line::raw(format!("  ... and {} more", n - i)));
            break;
        }
        v.push(Line::raw(cut(&format!("  {m}"), w)));
    }
    v.push(Line::from(vec![
        Span::styled("Into: ", cyan),
        Span::raw(cut(app.dest.as_deref().unwrap_or("?"), w.saturating_sub(6))),
    ]));
    v.push(Line::raw(
        "  (created if missing; nothing in it is replaced:",
    ));
    v.push(Line::raw("  a name already taken gets \" (2)\")"));
}
