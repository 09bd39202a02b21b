//! The image location screen: which partition holds the image (Lifeboat mounts it itself), with
//! its free space, and the file's path on it; for an incremental also the parent image; for a
//! full image the size it will take at most. The "restore files" destination (a partition and a
//! folder) is drawn here too, from its own state (`App::dest_loc`). Network places (an SMB or
//! NFS folder with its free space and what was mounted) follow the partitions, then the row
//! that adds one.
use super::field::{field, Value};
use super::{cut, selected_style};
use crate::jobs::fmt_bytes;
use crate::tui::app::{App, Free, JobKind, LocField, PlaceKind, Screen};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph};
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let places = app.places();
    let dest = app.screen == Screen::Dest;
    let loc = if dest { &app.dest_loc } else { &app.loc };
    let fields = if app.kind == JobKind::Incremental {
        2
    } else {
        1
    };
    let [list_area, field_area, hint] = Layout::vertical([
        Constraint::Min(4),
        Constraint::Length(fields * 2 + 2),
        Constraint::Length(2),
    ])
    .areas(area);
    let steps = app.shown_steps();
    let n = steps
        .iter()
        .position(|s| *s == app.screen)
        .map(|i| i + 1)
        .unwrap_or(1);
    let what = match app.kind {
        _ if dest => "where to copy the files",
        JobKind::FullImage | JobKind::Incremental => "where to write the image",
        JobKind::Copy => "where the second copy goes",
        _ => "where the image is",
    };
    let focus = loc.field == LocField::Partitions;
    let border = if focus {
        Style::new().fg(Color::Cyan)
    } else {
        Style::new()
    };
    let mut block = Block::bordered()
        .title(format!(" Step {n} of {}: {what} ", steps.len()))
        .border_style(border);
    if app.kind == JobKind::FullImage {
        block = block.title_bottom(match (app.image_estimate(), app.source_usage()) {
            (Some(n), _) => format!(
                " image: at most {} (the source's used data, uncompressed) ",
                fmt_bytes(n)
            ),
            (None, Some(Err(_))) => " image size unknown (the source's plan is unreadable) ".into(),
            (None, _) => " image size: reading the source's used blocks... ".into(),
        });
    }
    let w = list_area.width.saturating_sub(4) as usize;
    let items: Vec<ListItem> = places
        .iter()
        .map(|p| match &p.kind {
            PlaceKind::Partition(part) => {
                let disk = app.disks.iter().find(|d| d.name == p.disk);
                let model = disk.and_then(|d| d.model.clone()).unwrap_or_default();
                // A destination shows its free space; a place an image is read from does not.
                let free = match (app.writes_image(), app.free_of(part)) {
                    (false, _) => String::new(),
                    (true, Free::Bytes(b)) => format!(" {:>15}", format!("{} free", fmt_bytes(b))),
                    (true, Free::Reading) => format!(" {:>15}", "free ..."),
                    (true, Free::Unknown(_)) => format!(" {:>15}", "free ?"),
                };
                let row = format!(
                    "{:<10} {:<6} {:<14} {:>10}{}  on {} {}",
                    part.name,
                    part.fs_type.as_deref().unwrap_or("-"),
                    cut(
                        &part
                            .label
                            .as_ref()
                            .map(|l| format!("\"{l}\""))
                            .unwrap_or_default(),
                        14
                    ),
                    fmt_bytes(part.size_bytes),
                    free,
                    p.disk,
                    model
                );
                match &p.refused {
                    None => ListItem::new(cut(&row, w)),
                    Some(r) => ListItem::new(cut(&format!("{} - {r}", cut(&row, 40)), w))
                        .style(Style::new().fg(Color::DarkGray)),
                }
            }
            PlaceKind::Network(n) => {
                let free = match (app.writes_image(), &n.free) {
                    (false, _) => String::new(),
                    (true, Free::Bytes(b)) => format!("{} free", fmt_bytes(*b)),
                    (true, _) => "free ?".into(),
                };
                // "//host/share (SMB 3.1.1)": the protocol is what the row has room for.
                let proto = n
                    .what
                    .rsplit_once('(')
                    .map_or(n.what.as_str(), |(_, p)| p.trim_end_matches(')'));
                let row = format!("{:<38} {:>15}  {}", cut(&n.url, 38), free, proto);
                match &p.refused {
                    None => ListItem::new(cut(&row, w)),
                    Some(r) => ListItem::new(cut(&format!("{} - {r}", cut(&n.url, 40)), w))
                        .style(Style::new().fg(Color::DarkGray)),
                }
            }
            PlaceKind::AddNetwork => {
                ListItem::new("+ add a network place (SMB or NFS share)...   n: network settings")
                    .style(Style::new().fg(Color::Cyan))
            }
            PlaceKind::HostPath => {
                ListItem::new("(no partition: a path on this machine, as typed)")
            }
        })
        .collect();
    let mut st = ListState::default().with_selected(Some(loc.sel));
    let hl = if focus {
        selected_style()
    } else {
        Style::new().add_modifier(Modifier::REVERSED)
    };
    f.render_stateful_widget(
        List::new(items)
            .block(block)
            .highlight_symbol("> ")
            .highlight_style(hl),
        list_area,
        &mut st,
    );

    let mut lines = Vec::new();
    let text_field =
        |label: &str, value: &str, active: bool| field(label, 14, Value::Text(value), active);
    if app.kind == JobKind::Incremental {
        lines.push(text_field(
            "Parent image",
            &app.loc.parent,
            app.loc.field == LocField::Parent,
        ));
        lines.push(Line::raw(
            "              the earlier image of this disk, on the same partition",
        ));
    }
    let label = match app.kind {
        _ if dest => "Folder",
        JobKind::FullImage | JobKind::Incremental => "New image",
        JobKind::Copy => "Copy to",
        _ => "Image file",
    };
    lines.push(text_field(label, &loc.path, loc.field == LocField::Path));
    let on_net = places.get(loc.sel).is_some_and(|p| p.net().is_some());
    lines.push(Line::raw(match app.kind {
        JobKind::FullImage | JobKind::Incremental if on_net => {
            "              path in that network place; the folder is created"
        }
        _ if on_net => "              path of the image in that network place",
        _ if dest => "              on that partition; created if missing, nothing replaced",
        JobKind::FullImage | JobKind::Incremental => {
            "              path on that partition; the folder is created"
        }
        JobKind::Copy => "              path on that partition; its parents go beside it",
        _ => "              path of the image on that partition",
    }));
    f.render_widget(Paragraph::new(lines).block(Block::bordered()), field_area);
    let hint_text = if dest {
        [
            " Tab moves between the partition list and the folder. Lifeboat mounts the",
            " partition itself; the files are copied there with their dates.",
        ]
    } else {
        [
            " Tab moves between the partition list and the fields. Lifeboat mounts the",
            " partition itself; the disk being backed up is never used for its image.",
        ]
    };
    f.render_widget(
        Paragraph::new(hint_text.iter().map(|l| Line::raw(*l)).collect::<Vec<_>>())
            .style(Style::new().fg(Color::Gray)),
        hint,
    );
}
