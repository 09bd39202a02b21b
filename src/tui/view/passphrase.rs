//! The passphrase step: a new full image's "Encrypt" choice with the passphrase typed twice, or
//! the passphrase of an encrypted image being read (asked only once its header says it is
//! encrypted). A passphrase is drawn as one `*` per character, never as itself.
use super::field::{field, Value};
use super::{cut, selected_style};
use crate::tui::app::{App, JobKind, Masked, PassField};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let steps = app.shown_steps();
    let n = steps
        .iter()
        .position(|s| *s == app.screen)
        .map(|i| i + 1)
        .unwrap_or(1);
    let new = app.pass_new_image();
    let what = if new {
        "encrypt the image?"
    } else {
        "the image's passphrase"
    };
    let block = Block::bordered()
        .title(format!(" Step {n} of {}: {what} ", steps.len()))
        .border_style(Style::new().fg(Color::Cyan));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let w = inner.width.saturating_sub(2) as usize;
    // The passphrase fields: the label column one space in from the frame.
    let pass_field = |label: &str, value: &Masked, active: bool| {
        field(label, 17, Value::Masked(value.chars()), active)
    };
    let mut lines = Vec::new();
    if new {
        let choice = app.pass.field == PassField::Choice;
        let opt = |on: bool, text: &str| {
            let mark = if on { "(*)" } else { "( )" };
            let s = format!(" {} {mark} {text}", if on { ">" } else { " " });
            if on && choice {
                Line::styled(s, selected_style())
            } else if on {
                Line::styled(s, Style::new().add_modifier(Modifier::BOLD))
            } else {
                Line::raw(s)
            }
        };
        lines.push(opt(
            !app.pass.encrypt,
            "No: a plain image (anyone holding the file can read it)",
        ));
        lines.push(opt(
            app.pass.encrypt,
            "Yes: encrypt it with a passphrase (AES-256-GCM or XChaCha20, Argon2id)",
        ));
        lines.push(Line::raw(""));
        if app.pass.encrypt {
            lines.push(pass_field(
                " Passphrase",
                &app.pass.first,
                app.pass.field == PassField::First,
            ));
            lines.push(pass_field(
                " Again",
                &app.pass.second,
                app.pass.field == PassField::Second,
            ));
            lines.push(Line::raw(""));
            for l in [
                "Without the passphrase nobody can read the image, not even Lifeboat:",
                "write it down and keep it apart from the image. It is never shown,",
                "logged or stored; the incrementals on top of this image use it too.",
            ] {
                lines.push(Line::styled(
                    format!(" {}", cut(l, w)),
                    Style::new().fg(Color::Yellow),
                ));
            }
        }
    } else {
        let image = app.pass_image().unwrap_or_default();
        let whose = if app.kind == JobKind::Incremental {
            "The parent image"
        } else {
            "The image"
        };
        match app.pass_encrypted() {
            None => {
                let failed = app
                    .pass
                    .probed
                    .as_ref()
                    .is_some_and(|(_, r)| matches!(r, Some(Err(_))));
                lines.push(Line::raw(format!(" {}", cut(&image, w))));
                lines.push(Line::raw(""));
                lines.push(Line::raw(if failed {
                    " Its header cannot be read (see below): press Esc and choose again."
                } else {
                    " Reading the image's header..."
                }));
            }
            Some(false) => lines.push(Line::raw(" The image is not encrypted.")),
            Some(true) => {
                lines.push(Line::raw(format!(" {}", cut(&image, w))));
                lines.push(Line::raw(format!(
                    " {whose} is encrypted: type its passphrase (or a recovery key)."
                )));
                lines.push(Line::raw(""));
                lines.push(pass_field(
                    " Passphrase",
                    &app.pass.first,
                    !app.pass.checking,
                ));
                lines.push(Line::raw(""));
                lines.push(Line::styled(
                    if app.pass.checking {
                        " Checking the passphrase (about a second)..."
                    } else {
                        " It is tried on the image before anything is written."
                    },
                    Style::new().fg(Color::Gray),
                ));
            }
        }
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}
