//! The "restore files" browser (drawn by `view::browse`) and its destination step. The event
//! loop mounts the chosen partition of the image read-only ([`Command::OpenImage`], through
//! `serve::extract::Opened`, kept while the flow is on the browser, destination or confirmation
//! screen: [`App::browsing`]) and lists directories in the background ([`Command::ListDir`]);
//! the state here is what was listed and what is marked. The job itself (`image extract`)
//! mounts the image again on its own, so it survives a console restart.
//!
//! The destination step is the location screen's partition list and path field, on its own
//! [`Location`] (`dest_loc`): its keys run the location screen's handler with the two swapped.
use super::super::keys::{step_index, Key};
use super::{App, Command, Location, Screen};
use crate::serve::extract::LsEntry;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The partition of the image that is open.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedImage {
    /// Where the event loop mounted it (read-only).
    pub root: PathBuf,
    pub partition: u32,
    pub filesystem: String,
    /// Every partition of the imaged disk (0: it has none, the whole disk is the filesystem).
    pub partitions: Vec<u32>,
    pub size_bytes: u64,
    pub free_bytes: u64,
}

/// The browser's state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Browse {
    /// The partition asked for (None: the image's first).
    pub partition: Option<u32>,
    /// What opening gave (None while opening).
    pub opened: Option<Result<OpenedImage, String>>,
    /// The directory shown, from the partition's top ("/", "/home/ann").
    pub cwd: String,
    /// Its entries (None while listing).
    pub entries: Option<Result<Vec<LsEntry>, String>>,
    pub sel: usize,
    /// Marked files and folders (full paths inside the partition).
    pub marked: BTreeSet<String>,
}

/// `dir` + `name` as a path inside the partition.
pub fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The parent of a path inside the partition ("/" for "/" and "/a").
pub fn parent(dir: &str) -> String {
    match dir.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => dir[..i].to_string(),
    }
}

impl App {
    /// Whether the flow needs the image's partition mounted (the event loop unmounts it
    /// otherwise).
    pub fn browsing(&self) -> bool {
        self.kind == super::JobKind::RestoreFiles
            && matches!(self.screen, Screen::Browse | Screen::Dest | Screen::Confirm)
    }

    /// On entering the browser: opens the image (its first partition) unless it is open.
    pub(super) fn browse_open(&mut self) -> Vec<Command> {
        if self.screen != Screen::Browse || self.browse.opened.is_some() {
            return vec![];
        }
        let Some(image) = self.image.clone() else {
            return vec![];
        };
        self.browse.entries = None;
        self.browse.cwd = "/".into();
        vec![Command::OpenImage {
            image,
            partition: self.browse.partition,
            secret: self.secret.clone(),
        }]
    }

    /// The image's partition opened (or why not), for the request of `partition`.
    pub(super) fn on_image_opened(
        &mut self,
        partition: Option<u32>,
        r: Result<OpenedImage, String>,
    ) -> Vec<Command> {
        if !self.browsing() || partition != self.browse.partition {
            return vec![];
        }
        let ok = r.as_ref().ok().map(|o| o.root.clone());
        if let Ok(o) = &r {
            self.browse.partition = Some(o.partition);
        }
        self.browse.opened = Some(r);
        self.browse.cwd = "/".into();
        self.browse.sel = 0;
        match ok {
            Some(root) => self.list(root),
            None => vec![],
        }
    }

    fn list(&mut self, root: PathBuf) -> Vec<Command> {
        self.browse.entries = None;
        vec![Command::ListDir {
            root,
            path: self.browse.cwd.clone(),
        }]
    }

    /// A directory's entries (or why they could not be read).
    pub(super) fn on_listing(&mut self, path: String, r: Result<Vec<LsEntry>, String>) {
        if self.browsing() && path == self.browse.cwd {
            self.browse.entries = Some(r);
            let n = self.entries().len();
            self.browse.sel = self.browse.sel.min(n.saturating_sub(1));
        }
    }

    /// The entries of the directory shown (none while listing).
    pub fn entries(&self) -> &[LsEntry] {
        match &self.browse.entries {
            Some(Ok(v)) => v,
            _ => &[],
        }
    }

    fn root(&self) -> Option<PathBuf> {
        match &self.browse.opened {
            Some(Ok(o)) => Some(o.root.clone()),
            _ => None,
        }
    }

    pub(super) fn key_browse(&mut self, k: Key) -> Vec<Command> {
        let n = self.entries().len();
        if let Some(s) = k.list_step() {
            self.browse.sel = step_index(self.browse.sel, s, n);
            return vec![];
        }
        let sel = self.entries().get(self.browse.sel).cloned();
        match k {
            Key::Esc => {
                self.browse = Default::default();
                self.back();
            }
            Key::Enter | Key::Right | Key::Char('l') => match sel {
                Some(e) if e.kind == "dir" => {
                    let Some(root) = self.root() else {
                        return vec![];
                    };
                    self.browse.cwd = join(&self.browse.cwd, &e.name);
                    self.browse.sel = 0;
                    return self.list(root);
                }
                Some(e) if k == Key::Enter => self.toggle(&e.name),
                _ => {}
            },
            Key::Char(' ') => {
                if let Some(e) = sel {
                    self.toggle(&e.name);
                    self.browse.sel = step_index(self.browse.sel, 1, n);
                }
            }
            Key::Left | Key::Backspace | Key::Char('h') if self.browse.cwd != "/" => {
                let Some(root) = self.root() else {
                    return vec![];
                };
                let from = self.browse.cwd.clone();
                self.browse.cwd = parent(&from);
                self.browse.sel = 0;
                return self.list(root);
            }
            Key::Tab => {
                // The next partition of the imaged disk (marks belong to one partition).
                let Some(Ok(o)) = &self.browse.opened else {
                    return vec![];
                };
                if o.partitions.len() < 2 {
                    self.message = Some("The imaged disk has only this partition.".into());
                    return vec![];
                }
                let i = o.partitions.iter().position(|p| *p == o.partition);
                let next = o.partitions[i.map(|i| (i + 1) % o.partitions.len()).unwrap_or(0)];
                self.browse = Browse {
                    partition: Some(next),
                    ..Default::default()
                };
                return self.browse_open();
            }
            Key::Char('c') => {
                if self.browse.marked.is_empty() {
                    self.message =
                        Some("Mark files or folders with Space first, then press c.".into());
                } else {
                    self.forward();
                }
            }
            _ => {}
        }
        vec![]
    }

    fn toggle(&mut self, name: &str) {
        let p = join(&self.browse.cwd, name);
        if !self.browse.marked.remove(&p) {
            self.browse.marked.insert(p);
        }
    }

    /// The destination screen: the location screen's keys on the destination's own state.
    pub(super) fn key_dest(&mut self, k: Key) -> Vec<Command> {
        std::mem::swap(&mut self.loc, &mut self.dest_loc);
        std::mem::swap(&mut self.image, &mut self.dest);
        let cmds = self.key_location(k);
        std::mem::swap(&mut self.loc, &mut self.dest_loc);
        std::mem::swap(&mut self.image, &mut self.dest);
        cmds
    }

    /// The destination's starting state: a partition of a removable disk (a USB disk), else
    /// of a fixed one, not on the image's own disk nor the Lifeboat stick (any is allowed:
    /// files are only created new); folder `/restored`.
    pub(super) fn dest_default(&self) -> Location {
        let places = self.places();
        let image_part = self
            .image
            .as_deref()
            .and_then(crate::image::store::split_store)
            .map(|(sel, _)| sel);
        let usable = |p: &super::Place, removable: bool| {
            p.part().is_some() && {
                self.disks.iter().any(|d| {
                    d.name == p.disk
                        && d.removable == removable
                        && !d.boot_media
                        && !d
                            .partitions
                            .iter()
                            .any(|x| Some(x.name.as_str()) == image_part.as_deref())
                })
            }
        };
        let sel = places
            .iter()
            .position(|p| usable(p, true))
            .or_else(|| places.iter().position(|p| usable(p, false)))
            .unwrap_or(0);
        Location {
            sel,
            path: "/restored".into(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b c"), "/a/b c");
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/"), "/");
    }
}
