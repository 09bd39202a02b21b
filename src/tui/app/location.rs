//! The image-location screen (drawn by `view::location`): which partition (or, on a host, which
//! path) holds the image, its file name and, for an incremental, its parent. Each destination
//! shows its free space (read in the background: [`Command::ReadFree`], `image::space`) and a
//! new full image's size bound (the source's used-block plan, [`Command::ReadUsage`]); a
//! destination with less free space than that bound is refused before the job starts. Network
//! places (SMB/NFS folders, `app::net`) are listed after the partitions, with their free space
//! read when they were added, and refused the same way.
use super::super::keys::{step_index, Key};
use super::{App, Command, JobKind};
use crate::devices::Partition;
use crate::jobs::fmt_bytes;

/// Which field of the image-location screen has the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocField {
    Partitions,
    Path,
    Parent,
}

/// What kind of place an image can live in. Each kind says how it is named as the engine's
/// IMAGE argument ([`image_arg`]), how its free space is found ([`App::places`] with
/// `image::space`) and how it is drawn (`view::location`).
#[derive(Debug, Clone, PartialEq)]
pub enum PlaceKind {
    /// A partition with a filesystem, mounted by the image engine (`PARTITION:/path`).
    Partition(Box<Partition>),
    /// A network folder added on the add screen (`smb://...`, `nfs://...`; the engine mounts it).
    Network(Box<super::net::NetPlace>),
    /// The "add a network place" row (opens the add screen).
    AddNetwork,
    /// A path on this machine, as typed (host use).
    HostPath,
}

/// A place an image can live: a partition (mounted by the image engine) or, on a host, a path.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    /// The disk holding it (empty for a host path).
    pub disk: String,
    pub kind: PlaceKind,
    /// Why it cannot hold this job's image (on the source disk, the target of a restore, too
    /// little free space).
    pub refused: Option<String>,
}

impl Place {
    /// The partition, for a partition place.
    pub fn part(&self) -> Option<&Partition> {
        match &self.kind {
            PlaceKind::Partition(p) => Some(p.as_ref()),
            _ => None,
        }
    }

    /// The network place, for a network place.
    pub fn net(&self) -> Option<&super::net::NetPlace> {
        match &self.kind {
            PlaceKind::Network(n) => Some(n.as_ref()),
            _ => None,
        }
    }
}

/// A destination's free space: being read, known, or why it is unknown.
#[derive(Debug, Clone, PartialEq)]
pub enum Free {
    Reading,
    Bytes(u64),
    Unknown(String),
}

/// The image-location screen's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub sel: usize,
    pub field: LocField,
    pub path: String,
    pub parent: String,
}

impl Default for Location {
    fn default() -> Self {
        Location {
            sel: 0,
            field: LocField::Partitions,
            path: String::new(),
            parent: String::new(),
        }
    }
}

impl App {
    pub(super) fn default_image_path(&self) -> String {
        let name = self
            .source
            .as_ref()
            .map(|d| {
                let base = d.serial.clone().unwrap_or_else(|| d.name.clone());
                base.chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect::<String>()
            })
            .unwrap_or_default();
        match self.kind {
            // The same path on the other partition.
            JobKind::Copy => {
                let img = self.copy_of.as_deref().unwrap_or_default();
                match crate::image::store::split_store(img) {
                    Some((_, inner)) => inner,
                    None => std::path::Path::new(img)
                        .file_name()
                        .map_or("/lifeboat/".into(), |n| {
                            format!("/lifeboat/{}", n.to_string_lossy())
                        }),
                }
            }
            JobKind::FullImage => format!("/lifeboat/{name}.lbi"),
            JobKind::Incremental => format!("/lifeboat/{name}-incr.lbi"),
            _ => "/lifeboat/".into(),
        }
    }

    /// The partition (kernel name) the image a second copy is made of lives on.
    fn copy_of_partition(&self) -> Option<&str> {
        let img = self.copy_of.as_deref()?;
        let (sel, _) = img
            .split_once(':')
            .filter(|_| !img.starts_with(['/', '.']))?;
        Some(sel)
    }

    /// Partitions with a filesystem the image can be written to / read from, then "a path on
    /// this machine" (for host use: the path as typed); on the location screen of a job the
    /// engine runs, the network places added, then "add a network place". For a new full
    /// image a partition or network place with less free space than [`App::image_estimate`] is
    /// refused.
    pub fn places(&self) -> Vec<Place> {
        let mut v = Vec::new();
        let need = self.image_estimate();
        for d in &self.disks {
            for p in &d.partitions {
                if p.fs_type.is_none() {
                    continue;
                }
                let refused = if self.source.as_ref().is_some_and(|s| s.name == d.name) {
                    Some("on the disk being backed up".to_string())
                } else if self.kind == JobKind::Copy && self.copy_of_partition() == Some(&p.name) {
                    Some("the image is on it: the second copy goes on other storage".to_string())
                } else if d.boot_media && (self.kind.needs_source() || self.kind == JobKind::Copy) {
                    Some("the Lifeboat boot disk".to_string())
                } else {
                    match (need, self.free_of(p)) {
                        (Some(n), Free::Bytes(f)) if f < n => {
                            Some(format!("too full: {} free", fmt_bytes(f)))
                        }
                        _ => None,
                    }
                };
                v.push(Place {
                    disk: d.name.clone(),
                    kind: PlaceKind::Partition(Box::new(p.clone())),
                    refused,
                });
            }
        }
        if self.offers_network() {
            for n in &self.net_places {
                let refused = match (need, &n.free) {
                    (Some(need), Free::Bytes(f)) if *f < need => {
                        Some(format!("too full: {} free", fmt_bytes(*f)))
                    }
                    _ => None,
                };
                v.push(Place {
                    disk: String::new(),
                    kind: PlaceKind::Network(Box::new(n.clone())),
                    refused,
                });
            }
            v.push(Place {
                disk: String::new(),
                kind: PlaceKind::AddNetwork,
                refused: None,
            });
        }
        v.push(Place {
            disk: String::new(),
            kind: PlaceKind::HostPath,
            refused: None,
        });
        v
    }

    /// The free space of partition `p` as read so far.
    pub fn free_of(&self, p: &Partition) -> Free {
        match self.free.get(&p.path) {
            Some(Some(Ok(b))) => Free::Bytes(*b),
            Some(Some(Err(e))) => Free::Unknown(e.clone()),
            _ => Free::Reading,
        }
    }

    /// At most how big a new full image of the source will be (once its used-block plan is
    /// read): `image::space::image_upper_bound`. None for other jobs (an incremental stores
    /// only what changed, which is not known before it runs).
    pub fn image_estimate(&self) -> Option<u64> {
        if self.kind != JobKind::FullImage {
            return None;
        }
        match self.source_usage() {
            Some(Ok(u)) => Some(crate::image::space::image_upper_bound(
                u.used_bytes,
                u.disk_bytes,
            )),
            _ => None,
        }
    }

    /// Whether this job writes an image (so its location is a destination with free space).
    pub fn writes_image(&self) -> bool {
        matches!(self.kind, JobKind::FullImage | JobKind::Incremental)
    }

    /// On the location screen of a job that writes an image: reads what it shows in the
    /// background — the source's used-block plan and the free space of every partition that
    /// could take the image (not those of the source disk, which are refused anyway and may be
    /// failing, nor the boot medium's) not read yet.
    pub(super) fn location_reads(&mut self) -> Vec<Command> {
        if self.screen != super::Screen::Location || !self.writes_image() {
            return vec![];
        }
        let mut cmds = Vec::new();
        if let Some(s) = &self.source {
            if self.usage.as_ref().is_none_or(|u| u.0 != s.path) {
                self.usage = Some((s.path.clone(), None));
                cmds.push(Command::ReadUsage(s.path.clone()));
            }
        }
        let mut ask = Vec::new();
        for d in &self.disks {
            if self.source.as_ref().is_some_and(|s| s.name == d.name) || d.boot_media {
                continue;
            }
            for p in &d.partitions {
                if p.fs_type.is_some() && !self.free.contains_key(&p.path) {
                    ask.push(p.clone());
                }
            }
        }
        for p in &ask {
            self.free.insert(p.path.clone(), None);
        }
        if !ask.is_empty() {
            cmds.push(Command::ReadFree(ask));
        }
        cmds
    }

    pub(super) fn key_location(&mut self, k: Key) -> Vec<Command> {
        let places = self.places();
        let has_parent = self.kind == JobKind::Incremental;
        match k {
            Key::Tab | Key::BackTab => {
                let order: &[LocField] = if has_parent {
                    &[LocField::Partitions, LocField::Parent, LocField::Path]
                } else {
                    &[LocField::Partitions, LocField::Path]
                };
                let i = order.iter().position(|f| *f == self.loc.field).unwrap_or(0);
                let n = order.len();
                self.loc.field = order[if k == Key::Tab {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                }];
                return vec![];
            }
            Key::Esc => {
                self.back();
                return vec![];
            }
            Key::Enter => {
                if self.loc.field == LocField::Partitions {
                    if places
                        .get(self.loc.sel)
                        .is_some_and(|p| p.kind == PlaceKind::AddNetwork)
                    {
                        self.open_net_add();
                        return vec![];
                    }
                    if let Some(why) = places.get(self.loc.sel).and_then(|p| p.refused.clone()) {
                        self.message = Some(refusal(&places[self.loc.sel], &why));
                        return vec![];
                    }
                    self.loc.field = if has_parent {
                        LocField::Parent
                    } else {
                        LocField::Path
                    };
                    return vec![];
                }
                let Some(place) = places.get(self.loc.sel) else {
                    return vec![];
                };
                if place.kind == PlaceKind::AddNetwork {
                    self.loc.field = LocField::Partitions;
                    return vec![];
                }
                if let Some(why) = &place.refused {
                    self.message = Some(refusal(place, why));
                    return vec![];
                }
                if has_parent && self.loc.parent.trim().is_empty() {
                    self.message =
                        Some("Type the path of the parent image (the earlier backup).".into());
                    self.loc.field = LocField::Parent;
                    return vec![];
                }
                // On the destination screen of "restore files" (its keys come here) the path
                // is a folder.
                let folder = self.screen == super::Screen::Dest;
                let path = self.loc.path.trim();
                let path = if folder {
                    path.trim_end_matches('/')
                } else {
                    path
                };
                if path.is_empty() || path.ends_with('/') {
                    self.message = Some(if folder {
                        "Type the folder to copy into (for example /restored).".into()
                    } else {
                        "Type the image file's name (for example /lifeboat/pc.lbi).".into()
                    });
                    self.loc.field = LocField::Path;
                    return vec![];
                }
                self.image = Some(image_arg(place, path));
                self.forward();
                return self.browse_open();
            }
            _ => {}
        }
        match self.loc.field {
            LocField::Partitions => {
                if let Some(s) = k.list_step() {
                    self.loc.sel = step_index(self.loc.sel, s, places.len());
                } else if matches!(k, Key::Left | Key::Char('h')) {
                    self.back();
                } else if k == Key::Char('n') && self.offers_network() {
                    return self.open_net_settings();
                }
            }
            LocField::Path | LocField::Parent => {
                let field = if self.loc.field == LocField::Path {
                    &mut self.loc.path
                } else {
                    &mut self.loc.parent
                };
                match k {
                    Key::Char(c) if !c.is_control() && field.len() < 200 => field.push(c),
                    Key::Backspace => {
                        field.pop();
                    }
                    Key::Up | Key::Down => self.loc.field = LocField::Partitions,
                    _ => {}
                }
            }
        }
        vec![]
    }
}

/// Why `place` is refused, as the message line says it.
fn refusal(place: &Place, why: &str) -> String {
    match place.kind {
        PlaceKind::Network(_) => format!("That network place cannot hold the image: {why}."),
        _ => format!("That partition cannot hold the image: {why}."),
    }
}

/// The engine's IMAGE argument: `PARTITION:/path`, `URL/path` in a network place, or the path
/// itself on a host.
pub fn image_arg(place: &Place, path: &str) -> String {
    if let Some(n) = place.net() {
        return n.image_url(path);
    }
    match place.part() {
        // The kernel name, not /dev/NAME: a PARTITION selector must not start with '/', which the
        // image engine takes as a plain path.
        // The path inside the partition starts at its top directory whether or not the user
        // typed the '/' (the engine refuses a relative one).
        Some(p) => format!("{}:/{}", p.name, path.trim_start_matches('/')),
        None => path.to_string(),
    }
}
