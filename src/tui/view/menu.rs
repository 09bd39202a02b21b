//! The job menu: clone, full image, incremental, restore, verify, restore files, with what each
//! one does.
use super::selected_style;
use crate::tui::app::{App, JobKind};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let [list_area, explain] = Layout::vertical([
        Constraint::Length(JobKind::ALL.len() as u16 + 2),
        Constraint::Min(0),
    ])
    .areas(area);
    let items: Vec<ListItem> = JobKind::ALL
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let warn = if k.destructive() {
                "  (erases a disk)"
            } else {
                ""
            };
            ListItem::new(Line::from(vec![
                Span::raw(format!("{}  {}", i + 1, k.title())),
                Span::styled(warn, Style::new().fg(Color::Red)),
            ]))
        })
        .collect();
    let mut st = ListState::default().with_selected(Some(app.menu_sel));
    f.render_stateful_widget(
        List::new(items)
            .block(Block::bordered().title(" What do you want to do? "))
            .highlight_symbol("> ")
            .highlight_style(selected_style()),
        list_area,
        &mut st,
    );
    let k = JobKind::ALL[app.menu_sel.min(JobKind::ALL.len() - 1)];
    let steps: Vec<&str> = k
        .steps()
        .iter()
        .map(|s| match s {
            crate::tui::app::Screen::Source => "pick the source disk",
            crate::tui::app::Screen::Target => "pick the target disk",
            crate::tui::app::Screen::Location => "pick where the image is",
            crate::tui::app::Screen::Browse => "mark files and folders in it",
            crate::tui::app::Screen::Dest => "pick where to copy them",
            crate::tui::app::Screen::Passphrase if k == crate::tui::app::JobKind::FullImage => {
                "choose whether to encrypt it"
            }
            crate::tui::app::Screen::Passphrase => "its passphrase if it is encrypted",
            _ => "confirm",
        })
        .collect();
    let text = vec![
        Line::raw(k.explain()),
        Line::raw(""),
        Line::from(vec![
            Span::styled("Use it when: ", Style::new().fg(Color::Cyan)),
            Span::raw(k.when()),
        ]),
        Line::raw(""),
        Line::from(vec![
            Span::styled("Steps: ", Style::new().fg(Color::Cyan)),
            Span::raw(steps.join(", then ")),
        ]),
    ];
    f.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(format!(" {} ", k.title()))),
        explain,
    );
}
