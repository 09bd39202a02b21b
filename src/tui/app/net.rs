//! Network places and the network settings screen (drawn by `view::net`).
//!
//! A **network place** is an SMB or NFS folder (`smb://[user@]host/share/path`,
//! `nfs://host/export/path`) added from the image-location screen ("+ add a network place"):
//! the add screen ([`super::Screen::NetAdd`]) takes the URL and, for an SMB user, the password
//! — masked: drawn as `*`, kept only in memory in a [`Secret`] (whose `Debug` never shows it)
//! for the current job flow. [`Command::CheckShare`] mounts the place in the background (the
//! network is started then, DHCP by default: `net::ensure_up`), reads its free space and
//! unmounts it; the place then appears in the location list beside the partitions, refused
//! like them when it cannot hold the new image's size bound. The password reaches the job in a
//! 0600 file of the job directory, never a command line (`jobs::jobdir::JobCredentials`).
//!
//! The **network settings** screen ([`super::Screen::Network`], `n` on the location screen)
//! lists each wired adapter's link state and address and applies DHCP or a static address
//! (`IP/PREFIX,GATEWAY,DNS`, the syntax and code of `lifeboat.net=`: `net::NetConfig`) to the
//! selected adapter.
use super::super::keys::{step_index, Key};
use super::{App, Command, Free, Screen};
use crate::net::cred::Login;
use crate::net::NetConfig;

/// A password typed into the console: never printed, not even by `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: &str) -> Secret {
        Secret(s.to_string())
    }
    /// The password itself, for the mount and the job's credentials file only.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.chars().count()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(***)")
    }
}

/// A network folder an image can live in.
#[derive(Debug, Clone, PartialEq)]
pub struct NetPlace {
    /// As typed, without a trailing '/': `smb://alice@nas/backups/pc`.
    pub url: String,
    /// The typed login (SMB with a user), else the credentials file's is used.
    pub login: Option<Login>,
    pub free: Free,
    /// What was mounted, from the check: "//10.0.2.100/backups (SMB 3.1.1)".
    pub what: String,
}

impl NetPlace {
    /// The engine's IMAGE argument for `path` inside this place.
    pub fn image_url(&self, path: &str) -> String {
        format!("{}/{}", self.url, path.trim_start_matches('/'))
    }
}

/// Which field of the add screen has the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetField {
    Url,
    Password,
}

/// The add-a-network-place screen's state.
#[derive(Debug, Clone, PartialEq)]
pub struct NetForm {
    pub url: String,
    pub password: Secret,
    pub field: NetField,
    /// A check is running (the network starting, the share being mounted).
    pub checking: bool,
    /// Why the last check failed.
    pub error: Option<String>,
}

impl Default for NetForm {
    fn default() -> Self {
        NetForm {
            url: String::new(),
            password: Secret::default(),
            field: NetField::Url,
            checking: false,
            error: None,
        }
    }
}

/// What a successful check of a network place found.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareInfo {
    pub free_bytes: u64,
    pub what: String,
}

/// The network settings screen's state.
#[derive(Debug, Clone, PartialEq)]
pub struct NetSettings {
    /// The adapters as last read (None while reading).
    pub nics: Option<Vec<crate::net::Nic>>,
    pub sel: usize,
    /// The static address being typed (`IP/PREFIX,GATEWAY,DNS`).
    pub static_text: String,
    /// The static field has the keyboard.
    pub typing: bool,
    /// A configuration is being applied.
    pub applying: bool,
    /// What the last apply gave: the configured line, or why it failed.
    pub last: Option<Result<String, String>>,
    /// The screen to go back to.
    pub back_to: Screen,
}

impl Default for NetSettings {
    fn default() -> Self {
        NetSettings {
            nics: None,
            sel: 0,
            static_text: String::new(),
            typing: false,
            applying: false,
            last: None,
            back_to: Screen::Location,
        }
    }
}

/// The URL of a network place as a `ShareUrl` (a file name is added: the parser wants one).
pub fn parse_place(url: &str) -> Result<crate::net::share::ShareUrl, String> {
    let url = url.trim().trim_end_matches('/');
    if !crate::net::share::is_url(url) {
        return Err("a network place starts with smb:// or nfs:// \
                    (smb://[user@]host/share/folder, nfs://host/export/folder)"
            .into());
    }
    match crate::net::share::ShareUrl::parse(&format!("{url}/x.lbi")) {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err("not an smb:// or nfs:// location".into()),
        Err(e) => Err(e.msg.replace("/x.lbi", "")),
    }
}

impl App {
    /// Whether network places can be offered on this location screen: jobs whose image the
    /// engine itself opens (not the "restore files" browser and its destination).
    pub fn offers_network(&self) -> bool {
        self.screen != Screen::Dest && self.kind != super::JobKind::RestoreFiles
    }

    pub(super) fn open_net_add(&mut self) {
        self.net_form = NetForm::default();
        self.screen = Screen::NetAdd;
    }

    pub(super) fn open_net_settings(&mut self) -> Vec<Command> {
        let back_to = self.screen;
        self.net = NetSettings {
            back_to,
            static_text: self.net.static_text.clone(),
            last: self.net.last.clone(),
            ..NetSettings::default()
        };
        self.screen = Screen::Network;
        vec![Command::ReadNet]
    }

    pub(super) fn key_net_add(&mut self, k: Key) -> Vec<Command> {
        if self.net_form.checking {
            // Keys wait while the share is being checked (the check cannot be interrupted).
            if k == Key::Esc {
                self.message = Some("Connecting: wait for the answer.".into());
            }
            return vec![];
        }
        match k {
            Key::Esc => {
                self.net_form = NetForm::default();
                self.screen = Screen::Location;
            }
            Key::Tab | Key::BackTab | Key::Up | Key::Down => {
                self.net_form.field = match self.net_form.field {
                    NetField::Url => NetField::Password,
                    NetField::Password => NetField::Url,
                };
            }
            Key::Enter => return self.submit_net_add(),
            Key::Backspace => match self.net_form.field {
                NetField::Url => {
                    self.net_form.url.pop();
                }
                NetField::Password => {
                    self.net_form.password.0.pop();
                }
            },
            Key::Char(c) if !c.is_control() => match self.net_form.field {
                NetField::Url if self.net_form.url.len() < 200 => self.net_form.url.push(c),
                NetField::Password if self.net_form.password.0.len() < 200 => {
                    self.net_form.password.0.push(c)
                }
                _ => {}
            },
            _ => {}
        }
        vec![]
    }

    fn submit_net_add(&mut self) -> Vec<Command> {
        let f = &mut self.net_form;
        let u = match parse_place(&f.url) {
            Ok(u) => u,
            Err(e) => {
                f.error = Some(e);
                f.field = NetField::Url;
                return vec![];
            }
        };
        let login = match &u.user {
            Some(user) => {
                if f.password.is_empty() {
                    if f.field == NetField::Url {
                        f.field = NetField::Password;
                        f.error = None;
                    } else {
                        f.error = Some(format!("Type the password of {user} (it is not shown)."));
                    }
                    return vec![];
                }
                let l = Login {
                    user: Some(user.clone()),
                    password: Some(f.password.0.clone()),
                    domain: u.domain.clone(),
                };
                if let Err(e) = l.file_text(&u.host, &u.share) {
                    f.error = Some(format!("This password cannot be used: {}.", e.msg));
                    f.password = Secret::default();
                    return vec![];
                }
                Some(l)
            }
            None => None,
        };
        f.url = f.url.trim().trim_end_matches('/').to_string();
        f.checking = true;
        f.error = None;
        vec![Command::CheckShare {
            url: f.url.clone(),
            login,
        }]
    }

    /// The answer of a [`Command::CheckShare`].
    pub(super) fn on_share_checked(&mut self, url: String, r: Result<ShareInfo, String>) {
        if !self.net_form.checking || self.net_form.url != url {
            return;
        }
        self.net_form.checking = false;
        match r {
            Ok(info) => {
                let login = parse_place(&url).ok().and_then(|u| {
                    u.user.as_ref()?;
                    Some(Login {
                        user: u.user.clone(),
                        password: Some(self.net_form.password.0.clone()),
                        domain: u.domain.clone(),
                    })
                });
                let place = NetPlace {
                    url: url.clone(),
                    login,
                    free: Free::Bytes(info.free_bytes),
                    what: info.what,
                };
                match self.net_places.iter_mut().find(|p| p.url == url) {
                    Some(p) => *p = place,
                    None => self.net_places.push(place),
                }
                self.net_form = NetForm::default();
                self.screen = Screen::Location;
                self.message = None;
                self.loc.sel = self
                    .places()
                    .iter()
                    .position(|p| p.net().is_some_and(|n| n.url == url))
                    .unwrap_or(0);
            }
            Err(e) => {
                self.net_form.error = Some(e);
                // Typed again after a failure: a wrong password is the commonest one.
                self.net_form.password = Secret::default();
                if parse_place(&url).is_ok_and(|u| u.user.is_some()) {
                    self.net_form.field = NetField::Password;
                }
            }
        }
    }

    /// The login the job must be given for its image: the typed one of the network place
    /// chosen (None when the image is not on one, or the place takes the credentials file's).
    pub fn job_login(&self) -> Option<(String, String, Login)> {
        let img = self.image.as_deref()?;
        let p = self
            .net_places
            .iter()
            .find(|p| img.starts_with(&format!("{}/", p.url)))?;
        let login = p.login.clone()?;
        let u = parse_place(&p.url).ok()?;
        Some((u.host, u.share, login))
    }

    /// The logins typed for the network places of this flow, by `(host, share)`: the console
    /// hands them to `net::cred::set_typed` so its own mounts (an image's header, the browser)
    /// use them too.
    pub fn typed_logins(&self) -> Vec<(String, String, Login)> {
        self.net_places
            .iter()
            .filter_map(|p| {
                let l = p.login.clone()?;
                let u = parse_place(&p.url).ok()?;
                Some((u.host, u.share, l))
            })
            .collect()
    }

    /// How the job finds share passwords: the typed login as a credentials file, else the
    /// console's own `--credentials` location (`override_spec`), else nothing (the engine looks
    /// where the kernel command line says).
    pub fn job_credentials(
        &self,
        override_spec: Option<String>,
    ) -> Option<crate::jobs::jobdir::JobCredentials> {
        use crate::jobs::jobdir::JobCredentials;
        match self.job_login() {
            Some((host, share, l)) => l.file_text(&host, &share).ok().map(JobCredentials::Text),
            None => override_spec.map(JobCredentials::From),
        }
    }

    pub(super) fn key_network(&mut self, k: Key) -> Vec<Command> {
        if self.net.applying {
            return vec![];
        }
        if self.net.typing {
            match k {
                Key::Esc | Key::Tab | Key::BackTab => self.net.typing = false,
                Key::Backspace => {
                    self.net.static_text.pop();
                }
                Key::Enter => match NetConfig::parse(&self.net.static_text) {
                    Ok(c @ NetConfig::Static { .. }) => {
                        self.net.typing = false;
                        return self.apply_net(c);
                    }
                    Ok(NetConfig::Dhcp) => {
                        self.message = Some(
                            "Type an address like 192.168.1.50/24,192.168.1.1,192.168.1.1 \
                             (or press Esc, then d for DHCP)."
                                .into(),
                        );
                    }
                    Err(e) => self.message = Some(e.msg),
                },
                Key::Char(c)
                    if (c.is_ascii_digit() || matches!(c, '.' | '/' | ','))
                        && self.net.static_text.len() < 100 =>
                {
                    self.net.static_text.push(c)
                }
                _ => {}
            }
            return vec![];
        }
        let n = self.net.nics.as_ref().map_or(0, |v| v.len());
        match k {
            Key::Esc | Key::Left | Key::Char('h') => self.screen = self.net.back_to,
            Key::Char('d') => return self.apply_net(NetConfig::Dhcp),
            Key::Char('s') | Key::Tab | Key::Enter => self.net.typing = true,
            Key::Char('r') => {
                self.net.nics = None;
                return vec![Command::ReadNet];
            }
            k => {
                if let Some(s) = k.list_step() {
                    self.net.sel = step_index(self.net.sel, s, n);
                }
            }
        }
        vec![]
    }

    fn apply_net(&mut self, c: NetConfig) -> Vec<Command> {
        self.net.applying = true;
        self.net.last = None;
        // The adapter selected on the screen (when they were read).
        let nic = self
            .net
            .nics
            .as_ref()
            .and_then(|v| v.get(self.net.sel))
            .map(|n| n.name.clone());
        vec![Command::ConfigureNet(c, nic)]
    }

    /// The answer of a [`Command::ConfigureNet`]: shown, and the adapters read again.
    pub(super) fn on_net_configured(&mut self, r: Result<String, String>) -> Vec<Command> {
        self.net.applying = false;
        self.net.last = Some(r);
        // Free space read over the old configuration may no longer be reachable: keep it (the
        // places were checked) but the adapters are read afresh.
        if self.screen == Screen::Network {
            self.net.nics = None;
            return vec![Command::ReadNet];
        }
        vec![]
    }
}
