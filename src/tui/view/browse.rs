//! The "restore files" browser: one partition of the disk as it was at the image, a directory
//! at a time, with the marked files and folders.
use super::{cut, selected_style};
use crate::jobs::fmt_bytes;
use crate::out::Shown;
use crate::tui::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let [head, list_area, hint] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length(2),
    ])
    .areas(area);
    let steps = app.shown_steps();
    let n = steps
        .iter()
        .position(|s| *s == app.screen)
        .map(|i| i + 1)
        .unwrap_or(1);
    let b = &app.browse;
    let part = match &b.opened {
        Some(Ok(o)) => format!(
            "partition {} ({}, {} of {} used)",
            o.partition,
            o.filesystem,
            fmt_bytes(o.size_bytes.saturating_sub(o.free_bytes)),
            fmt_bytes(o.size_bytes)
        ),
        _ => match b.partition {
            Some(p) => format!("partition {p}"),
            None => "the first partition".into(),
        },
    };
    let w = area.width as usize;
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(" Image ", Style::new().fg(Color::Cyan)),
            Span::raw(cut(
                &format!("{}, {part}", app.image.as_deref().unwrap_or("?")),
                w.saturating_sub(8),
            )),
        ])),
        head,
    );
    let block = Block::bordered()
        .title(format!(
            " Step {n} of {}: mark what to restore ",
            steps.len()
        ))
        .title_bottom(format!(
            " in {}   {} marked ",
            cut(&b.cwd, w.saturating_sub(24)),
            b.marked.len()
        ))
        .border_style(Style::new().fg(Color::Cyan));
    let grey = Style::new().fg(Color::Gray);
    let waiting = |text: String, style: Style| {
        Paragraph::new(text)
            .style(style)
            .wrap(Wrap { trim: true })
            .block(block.clone())
    };
    match (&b.opened, &b.entries) {
        (None, _) => f.render_widget(
            waiting(format!(" Opening {part} of the image (read-only)..."), grey),
            list_area,
        ),
        (Some(Err(e)), _) => f.render_widget(
            waiting(
                format!(" Could not open {part}: {e}"),
                Style::new().fg(Color::LightRed),
            ),
            list_area,
        ),
        (Some(Ok(_)), None) => f.render_widget(waiting(" Reading...".into(), grey), list_area),
        (Some(Ok(_)), Some(Err(e))) => f.render_widget(
            waiting(
                format!(" Could not read this folder: {e}"),
                Style::new().fg(Color::LightRed),
            ),
            list_area,
        ),
        (Some(Ok(_)), Some(Ok(v))) if v.is_empty() => {
            f.render_widget(waiting(" (empty folder)".into(), grey), list_area)
        }
        (Some(Ok(_)), Some(Ok(v))) => {
            let inner = list_area.width.saturating_sub(4) as usize;
            let name_w = inner.saturating_sub(4 + 11 + 18).max(10);
            let items: Vec<ListItem> = v
                .iter()
                .map(|e| {
                    let path = crate::tui::app::browse_join(&b.cwd, &e.name);
                    let mark = if b.marked.contains(&path) {
                        "[x] "
                    } else {
                        "[ ] "
                    };
                    // Names from the imaged filesystem: shown escaped, on one row.
                    let name = match (e.kind, &e.link_target) {
                        ("dir", _) => format!("{}/", Shown(&e.name)),
                        (_, Some(t)) => format!("{} -> {}", Shown(&e.name), Shown(t)),
                        _ => Shown(&e.name).to_string(),
                    };
                    let size = match e.kind {
                        "file" => fmt_bytes(e.size_bytes),
                        "dir" | "symlink" => String::new(),
                        other => other.replace('_', " "),
                    };
                    let when = crate::image::ops::iso8601(e.mtime.max(0) as u64);
                    let when: String = when.replace('T', " ").chars().take(16).collect();
                    let row = format!("{mark}{:<name_w$} {size:>10} {when}", cut(&name, name_w));
                    let style = if e.kind == "dir" {
                        Style::new().fg(Color::LightBlue)
                    } else {
                        Style::new()
                    };
                    ListItem::new(cut(&row, inner)).style(style)
                })
                .collect();
            let mut st = ListState::default().with_selected(Some(b.sel));
            f.render_stateful_widget(
                List::new(items)
                    .block(block)
                    .highlight_symbol("> ")
                    .highlight_style(selected_style()),
                list_area,
                &mut st,
            );
        }
    }
    f.render_widget(
        Paragraph::new(vec![
            Line::raw(" Space marks a file or folder, Enter opens a folder, ← goes up, Tab shows"),
            Line::raw(" the next partition, c copies the marked ones. The image is only read."),
        ])
        .style(grey),
        hint,
    );
}
