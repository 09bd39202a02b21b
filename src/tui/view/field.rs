//! The one-line input field of the console's forms (the location's paths, a network place's URL
//! and password, the static address, a passphrase): the label in a column of its own width,
//! then the value — or, for a secret, one `*` per character and never the text — with a `_`
//! cursor and inverted colours while the field has the focus.
use super::label_style;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};

/// At most this many `*` are drawn for a secret (a field's width), whatever its length.
pub(crate) const MASK_MAX: usize = 40;

/// What a field shows.
pub(crate) enum Value<'a> {
    /// The text as typed (already cut to the room the caller has for it).
    Text(&'a str),
    /// A secret of this many characters: drawn as stars only.
    Masked(usize),
}

/// The field's line: `label` left-aligned in `column` characters, then the value.
pub(crate) fn field<'a>(label: &str, column: usize, value: Value<'_>, active: bool) -> Line<'a> {
    let style = if active {
        Style::new().bg(Color::Cyan).fg(Color::Black)
    } else {
        Style::new().fg(Color::White)
    };
    let cursor = if active { "_" } else { "" };
    let shown = match value {
        Value::Text(t) => t.to_string(),
        Value::Masked(chars) => "*".repeat(chars.min(MASK_MAX)),
    };
    Line::from(vec![
        Span::styled(format!("{label:<column$}"), label_style()),
        Span::styled(format!("{shown}{cursor}"), style),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(l: &Line) -> String {
        l.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn a_secret_is_stars_only_and_bounded() {
        let l = field("Password", 12, Value::Masked(5), false);
        assert_eq!(text(&l), "Password    *****");
        let l = field("Password", 12, Value::Masked(500), true);
        assert_eq!(text(&l), format!("Password    {}_", "*".repeat(MASK_MAX)));
        assert_eq!(l.spans[1].style.bg, Some(Color::Cyan));
        let l = field("New image", 14, Value::Text("/lifeboat/pc.lbi"), true);
        assert_eq!(text(&l), "New image     /lifeboat/pc.lbi_");
    }
}
