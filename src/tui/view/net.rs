//! The add-a-network-place screen (URL, masked password, the check's progress or failure) and
//! the network settings screen (adapters with link and address; DHCP or a static address).
//! A password is drawn as one `*` per character: its text is never put on the screen.
use super::field::{field, Value};
use super::{cut, selected_style};
use crate::tui::app::{App, NetField};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

pub fn draw_add(f: &mut Frame, area: Rect, app: &App) {
    let form = &app.net_form;
    let [fields, info] = Layout::vertical([Constraint::Length(9), Constraint::Min(3)]).areas(area);
    let w = fields.width.saturating_sub(16) as usize;
    let url = cut(&form.url, w);
    let lines = vec![
        field(
            "Location",
            12,
            Value::Text(&url),
            form.field == NetField::Url,
        ),
        Line::raw("            smb://[user@]host/share/folder   nfs://host/export/folder"),
        Line::raw(""),
        field(
            "Password",
            12,
            Value::Masked(form.password.len()),
            form.field == NetField::Password,
        ),
        Line::raw("            SMB with a user only; not shown, not kept after this job"),
    ];
    f.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(" Add a network place: a Windows/Samba (SMB) or NFS share ")
                .border_style(Style::new().fg(Color::Cyan)),
        ),
        fields,
    );
    let mut text: Vec<Line> = Vec::new();
    if form.checking {
        text.push(Line::from(Span::styled(
            "Connecting: starting the network if needed (DHCP unless lifeboat.net= says \
             otherwise), then mounting the share to read its free space...",
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        )));
    } else if let Some(e) = &form.error {
        text.push(Line::from(Span::styled(
            format!("Not added: {e}"),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        )));
    } else {
        text.push(Line::raw(
            "Enter checks the place: Lifeboat connects, reads its free space and lists it \
             beside the partitions. The image's file name is chosen on the next screen.",
        ));
    }
    text.push(Line::raw(""));
    text.push(Line::from(Span::styled(
        "Without a password here, the credentials file is used (lifeboat.credentials=).",
        Style::new().fg(Color::Gray),
    )));
    f.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .block(Block::bordered()),
        info,
    );
}

pub fn draw_settings(f: &mut Frame, area: Rect, app: &App) {
    let n = &app.net;
    let [list_area, form_area] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(8)]).areas(area);
    let items: Vec<ListItem> = match &n.nics {
        None => vec![ListItem::new("reading the network adapters...")],
        Some(v) if v.is_empty() => vec![ListItem::new(
            "no wired network adapter (Wi-Fi is not supported: use a USB-Ethernet adapter)",
        )],
        Some(v) => v
            .iter()
            .map(|nic| {
                let link = match (nic.up, nic.carrier) {
                    (false, _) => "off (not started)",
                    (true, Some(true)) => "cable connected",
                    (true, _) => "NO CABLE / no link",
                };
                let addr = if nic.addrs.is_empty() {
                    "no address".to_string()
                } else {
                    nic.addrs
                        .iter()
                        .map(|(a, p)| format!("{a}/{p}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                ListItem::new(format!(
                    "{:<10} {:<18} {:<19} {}",
                    cut(&nic.name, 10),
                    link,
                    addr,
                    nic.mac.as_deref().unwrap_or("")
                ))
            })
            .collect(),
    };
    let mut st = ListState::default().with_selected(
        n.nics
            .as_ref()
            .is_some_and(|v| !v.is_empty())
            .then_some(n.sel),
    );
    f.render_stateful_widget(
        List::new(items)
            .block(Block::bordered().title(" Network adapters: name, link, address, hardware "))
            .highlight_symbol("> ")
            .highlight_style(selected_style()),
        list_area,
        &mut st,
    );
    let mut lines = vec![field("Static", 12, Value::Text(&n.static_text), n.typing)];
    lines.push(Line::raw(
        "            IP/PREFIX,GATEWAY,DNS: 192.168.1.50/24,192.168.1.1,192.168.1.1",
    ));
    lines.push(Line::raw(""));
    let (text, style) = match (&n.last, n.applying) {
        (_, true) => (
            "Applying: waiting for a link and an address...".to_string(),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        (Some(Ok(c)), _) => (format!("Configured: {c}"), Style::new().fg(Color::Green)),
        (Some(Err(e)), _) => (
            format!("Failed: {e}"),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        (None, _) => (
            "Started only when needed: by a network place (DHCP unless lifeboat.net= says \
             otherwise), or here."
                .to_string(),
            Style::new().fg(Color::Gray),
        ),
    };
    lines.push(Line::from(Span::styled(text, style)));
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(" The selected adapter's address: d = DHCP now, s = type a static one "),
        ),
        form_area,
    );
}
