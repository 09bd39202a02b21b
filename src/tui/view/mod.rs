//! Drawing: every screen is a function of `&App` (views never change state). Chrome shared by
//! all screens: the title bar, the message line and the keys bar. 16 colours and only glyphs the
//! Linux console font has (ASCII, box drawing, block shades).
mod browse;
mod confirm;
mod dialogs;
mod disks;
mod field;
mod job;
mod location;
mod menu;
mod net;
mod passphrase;

use super::app::{App, Overlay, PassField, Screen};
use crate::jobs::fmt_bytes;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// Draws the whole console for `app`.
pub fn draw(f: &mut Frame, app: &App) {
    let [top, body, msg, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    title_bar(f, top, app);
    match app.screen {
        Screen::Disks => disks::draw_disks(f, body, app),
        Screen::Menu => menu::draw(f, body, app),
        Screen::Source => disks::draw_source(f, body, app),
        Screen::Target => disks::draw_target(f, body, app),
        Screen::Location | Screen::Dest => location::draw(f, body, app),
        Screen::Passphrase => passphrase::draw(f, body, app),
        Screen::Browse => browse::draw(f, body, app),
        Screen::Confirm => confirm::draw(f, body, app),
        Screen::Progress => job::draw_progress(f, body, app),
        Screen::Result => job::draw_result(f, body, app),
        Screen::NetAdd => net::draw_add(f, body, app),
        Screen::Network => net::draw_settings(f, body, app),
    }
    if let Some(m) = &app.message {
        f.render_widget(
            Paragraph::new(Line::from(Span::styled(
                format!(" {m}"),
                Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            ))),
            msg,
        );
    }
    keys_bar(f, keys, &screen_keys(app));
    match app.overlay {
        Overlay::None => {}
        Overlay::Help => dialogs::help(f, app),
        Overlay::CancelAsk => dialogs::cancel_ask(f),
        Overlay::QuitAsk => dialogs::quit_ask(f, app),
    }
    no_controls(f.buffer_mut());
}

/// The last guard before the terminal: ratatui hands every cell's text to the terminal as it
/// is, and names from disks and imaged filesystems may hold controls (`ESC [ 2 J`). The views
/// show those names escaped ([`crate::out::shown`]); any control that still reached a cell
/// (a message quoting a name) is shown as `?` there.
fn no_controls(buf: &mut ratatui::buffer::Buffer) {
    for c in buf.content.iter_mut() {
        if c.symbol().chars().any(crate::out::unsafe_char) {
            c.set_symbol("?");
        }
    }
}

fn title_bar(f: &mut Frame, area: Rect, app: &App) {
    let name = match app.screen {
        Screen::Disks => "Disks",
        Screen::Menu => "Choose a job",
        Screen::Source => "Choose the source",
        Screen::Target => "Choose the target",
        Screen::Location => "Image location",
        Screen::Passphrase => "Encryption",
        Screen::Browse => "Restore files: choose",
        Screen::Dest => "Restore files: where to",
        Screen::Confirm => "Confirm",
        Screen::Progress => "Job running",
        Screen::Result => "Job finished",
        Screen::NetAdd => "Add a network place",
        Screen::Network => "Network settings",
    };
    let bar = Style::new().bg(Color::Blue).fg(Color::White);
    let mut right = String::new();
    if let Some(j) = &app.job {
        if j.running {
            let pct = j.progress.as_ref().map(|p| p.percent()).unwrap_or(0.0);
            right = format!("{} {:.1}% ", j.spec.kind, pct);
        }
    }
    let left = format!(" LIFEBOAT | {name}");
    let w = area.width as usize;
    let pad = w.saturating_sub(left.chars().count() + right.chars().count());
    let line = Line::from(vec![
        Span::styled(left, bar.add_modifier(Modifier::BOLD)),
        Span::styled(" ".repeat(pad), bar),
        Span::styled(right, bar.fg(Color::Yellow).add_modifier(Modifier::BOLD)),
    ]);
    f.render_widget(Paragraph::new(line).style(bar), area);
}

/// The keys of the current screen: (key, what it does).
fn screen_keys(app: &App) -> Vec<(&'static str, &'static str)> {
    let mut k: Vec<(&str, &str)> = match app.screen {
        Screen::Disks if app.has_mmc_boot() => vec![
            ("↑↓", "select"),
            ("Enter", "choose a job"),
            ("b", "eMMC boot parts"),
        ],
        Screen::Disks => vec![("↑↓", "select"), ("Enter", "choose a job")],
        Screen::Menu => vec![("↑↓", "select"), ("Enter", "next"), ("Esc", "back")],
        Screen::Source | Screen::Target => {
            vec![("↑↓", "select"), ("Enter", "next"), ("Esc", "back")]
        }
        Screen::Browse => vec![
            ("Space", "mark"),
            ("Enter", "open"),
            ("Tab", "partition"),
            ("c", "copy"),
            ("Esc", "back"),
        ],
        Screen::NetAdd => vec![("Tab", "field"), ("Enter", "connect"), ("Esc", "back")],
        Screen::Network if app.net.typing => {
            vec![("Enter", "apply"), ("Esc", "done typing")]
        }
        Screen::Network => vec![
            ("d", "DHCP"),
            ("s", "static"),
            ("r", "re-read"),
            ("Esc", "back"),
        ],
        Screen::Location if app.offers_network() => vec![
            ("↑↓", "place"),
            ("Tab", "field"),
            ("Enter", "next"),
            ("n", "net"),
            ("Esc", "back"),
        ],
        Screen::Location | Screen::Dest => vec![
            ("↑↓", "partition"),
            ("Tab", "field"),
            ("Enter", "next"),
            ("Esc", "back"),
        ],
        Screen::Passphrase if app.pass.field == PassField::Choice => {
            vec![("↑↓", "choose"), ("Enter", "next"), ("Esc", "back")]
        }
        Screen::Passphrase if app.pass_new_image() || app.pass_encrypted() == Some(true) => {
            vec![("type", "(not shown)"), ("Enter", "next"), ("Esc", "back")]
        }
        Screen::Passphrase => vec![("Esc", "back")],
        Screen::Confirm if app.kind.destructive() => {
            vec![("type name", ""), ("Enter", "START"), ("Esc", "back")]
        }
        Screen::Confirm => vec![("Enter", "START"), ("Esc", "back")],
        Screen::Progress => {
            if app.job.as_ref().is_some_and(|j| j.running) {
                vec![("c", "cancel job")]
            } else {
                vec![]
            }
        }
        Screen::Result => {
            let mut k = vec![("n", "another job")];
            if app.result_image().is_some() {
                k.push(("c", "2nd copy"));
            }
            if app.under_init {
                k.extend([("p", "power off"), ("r", "reboot")]);
            }
            k.push(("Esc", "disks"));
            k
        }
    };
    if !app.typing() {
        k.push(("?", "help"));
        if app.screen == Screen::Disks {
            k.push(("q", "quit"));
        } else if !matches!(app.screen, Screen::Progress | Screen::Result) {
            k.push(("q", "disks"));
        }
    }
    k
}

fn keys_bar(f: &mut Frame, area: Rect, keys: &[(&str, &str)]) {
    let mut spans = vec![Span::raw(" ")];
    for (key, what) in keys {
        spans.push(Span::styled(
            format!(" {key} "),
            Style::new().bg(Color::Cyan).fg(Color::Black),
        ));
        if !what.is_empty() {
            spans.push(Span::raw(format!(" {what}")));
        }
        spans.push(Span::raw("  "));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// A rectangle of at most `w` x `h` centred in `area`.
pub(crate) fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// Cuts `s` to `n` characters (with '~' when cut).
pub(crate) fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else if n == 0 {
        String::new()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('~');
        t
    }
}

/// Size with the exact byte count: "465.8 GiB (500107862016 bytes)".
pub(crate) fn size_exact(n: u64) -> String {
    format!("{} ({n} bytes)", fmt_bytes(n))
}

pub(crate) fn label_style() -> Style {
    Style::new().fg(Color::Cyan)
}

pub(crate) fn selected_style() -> Style {
    Style::new()
        .bg(Color::White)
        .fg(Color::Black)
        .add_modifier(Modifier::BOLD)
}
