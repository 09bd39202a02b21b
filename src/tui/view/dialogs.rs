//! Dialogs over the current screen: help (`?`), "cancel the job?" and "quit?".
use super::centered;
use crate::tui::app::App;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

pub fn help(f: &mut Frame, app: &App) {
    let area = centered(f.area(), 78, 20);
    let b = Style::new().fg(Color::Cyan);
    let mut v = vec![
        Line::styled("Keys", b.add_modifier(Modifier::BOLD)),
        Line::raw("  Up/Down, j/k  move             PgUp/PgDn, g/G  jump"),
        Line::raw("  Enter         choose, next     Esc             back one step"),
        Line::raw("  Tab           next field       q               to the disks, then quit"),
        Line::raw("  ?             this help        c               cancel the running job"),
        Line::raw("  b             eMMC boot partitions as disks of their own, or not (Disks)"),
        Line::raw(""),
        Line::styled("How a job goes", b.add_modifier(Modifier::BOLD)),
        Line::raw("  1. Pick the job. 2. Pick the SOURCE (green): it is only ever read."),
        Line::raw("  3. Pick the TARGET (red): everything on it is erased. The source and"),
        Line::raw("     disks that cannot be used are not offered (the reason is shown)."),
        Line::raw("  4. Check the red confirmation and type the target's name to start."),
        Line::raw("  Bad sectors are skipped first and retried at the end (see the map)."),
        Line::raw("  A job keeps running if this screen restarts; every console shows it."),
    ];
    if app.under_init {
        v.push(Line::raw("  After a job: p powers off, r reboots."));
    }
    v.push(Line::raw(""));
    v.push(Line::styled(
        "Press Esc or ? to close.",
        Style::new().fg(Color::Yellow),
    ));
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(v)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" Help ").border_style(b)),
        area,
    );
}

pub fn cancel_ask(f: &mut Frame) {
    let area = centered(f.area(), 66, 7);
    let y = Style::new().fg(Color::Yellow);
    let v = vec![
        Line::styled("Cancel the running job?", y.add_modifier(Modifier::BOLD)),
        Line::raw("What is done so far is kept and reported; a cancelled clone"),
        Line::raw("leaves the target incomplete."),
        Line::styled("y = cancel the job     any other key = keep it running", y),
    ];
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(v).block(Block::bordered().title(" Cancel ").border_style(y)),
        area,
    );
}

pub fn quit_ask(f: &mut Frame, app: &App) {
    let area = centered(f.area(), 56, 5);
    let y = Style::new().fg(Color::Yellow);
    let what = if app.under_init {
        "Restart the console?"
    } else {
        "Quit Lifeboat's console?"
    };
    let v = vec![
        Line::styled(what, y.add_modifier(Modifier::BOLD)),
        Line::styled("y = yes     any other key = no", y),
    ];
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(v).block(Block::bordered().title(" Quit ").border_style(y)),
        area,
    );
}
