//! The image-location screen (drawn by `view::location`): which partition (or, on a host, which
//! path) holds the image, its file name and, for an incremental, its parent.
use super::super::keys::{step_index, Key};
use super::{App, Command, JobKind};
use crate::devices::Partition;

/// Which field of the image-location screen has the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocField {
    Partitions,
    Path,
    Parent,
}

/// A place an image can live: a partition (mounted by the image engine) or, on a host, a path.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub disk: String,
    pub part: Option<Partition>,
    /// Why it cannot hold this job's image (on the source disk, or the target of a restore).
    pub refused: Option<String>,
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
            JobKind::FullImage => format!("/lifeboat/{name}.lbi"),
            JobKind::Incremental => format!("/lifeboat/{name}-incr.lbi"),
            _ => "/lifeboat/".into(),
        }
    }

    /// Partitions with a filesystem the image can be written to / read from, then "a path on
    /// this machine" (for host use: the path as typed).
    pub fn places(&self) -> Vec<Place> {
        let mut v = Vec::new();
        for d in &self.disks {
            for p in &d.partitions {
                if p.fs_type.is_none() {
                    continue;
                }
                let refused = if self.source.as_ref().is_some_and(|s| s.name == d.name) {
                    Some("on the disk being backed up".to_string())
                } else if d.boot_media && self.kind.needs_source() {
                    Some("the Lifeboat boot disk".to_string())
                } else {
                    None
                };
                v.push(Place {
                    disk: d.name.clone(),
                    part: Some(p.clone()),
                    refused,
                });
            }
        }
        v.push(Place {
            disk: String::new(),
            part: None,
            refused: None,
        });
        v
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
                    if let Some(why) = places.get(self.loc.sel).and_then(|p| p.refused.clone()) {
                        self.message =
                            Some(format!("That partition cannot hold the image: {why}."));
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
                if let Some(why) = &place.refused {
                    self.message = Some(format!("That partition cannot hold the image: {why}."));
                    return vec![];
                }
                if has_parent && self.loc.parent.trim().is_empty() {
                    self.message =
                        Some("Type the path of the parent image (the earlier backup).".into());
                    self.loc.field = LocField::Parent;
                    return vec![];
                }
                let path = self.loc.path.trim();
                if path.is_empty() || path.ends_with('/') {
                    self.message =
                        Some("Type the image file's name (for example /lifeboat/pc.lbi).".into());
                    self.loc.field = LocField::Path;
                    return vec![];
                }
                self.image = Some(image_arg(place, path));
                self.forward();
                return vec![];
            }
            _ => {}
        }
        match self.loc.field {
            LocField::Partitions => {
                if let Some(s) = k.list_step() {
                    self.loc.sel = step_index(self.loc.sel, s, places.len());
                } else if matches!(k, Key::Left | Key::Char('h')) {
                    self.back();
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

/// The engine's IMAGE argument: `PARTITION:/path`, or the path itself on a host.
pub fn image_arg(place: &Place, path: &str) -> String {
    match &place.part {
        // The kernel name, not /dev/NAME: a PARTITION selector must not start with '/', which the
        // image engine takes as a plain path.
        // The path inside the partition starts at its top directory whether or not the user
        // typed the '/' (the engine refuses a relative one).
        Some(p) => format!("{}:/{}", p.name, path.trim_start_matches('/')),
        None => path.to_string(),
    }
}
