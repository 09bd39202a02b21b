//! The passphrase step (drawn by `view::passphrase`) of every flow that writes or reads an
//! image: for a new full image the "Encrypt" choice and the new passphrase typed twice; for an
//! incremental (its parent's), a restore, a verify and "restore files" the image's passphrase,
//! asked only when the image turns out to be encrypted.
//!
//! Whether the image is encrypted is read in the background from its header
//! ([`Command::ProbeImage`]); a passphrase typed for an existing image is tried on its key
//! slots in the background too ([`Command::CheckPassphrase`], one Argon2id derivation): a
//! wrong one is said plainly and asked again before any job starts, so nothing is written.
//! The passphrase is kept in memory only ([`Masked`]: wiped when dropped, never printed by
//! `Debug`, drawn as `*`) and reaches the job through a mode-0600 file in the job directory
//! that the job's runner removes (`jobs::jobdir::start`), never through a command line.
use super::super::keys::Key;
use super::{App, Command, JobKind, Screen};
use zeroize::Zeroizing;

/// A passphrase as typed: wiped when dropped, never shown by `Debug`.
#[derive(Clone, PartialEq, Default)]
pub struct Masked(Zeroizing<Vec<u8>>);

impl Masked {
    pub fn new(b: &[u8]) -> Masked {
        Masked(Zeroizing::new(b.to_vec()))
    }
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
    /// Characters typed (for drawing one `*` each).
    pub fn chars(&self) -> usize {
        String::from_utf8_lossy(&self.0).chars().count()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn push(&mut self, c: char) {
        let mut b = [0u8; 4];
        self.0.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
    }
    fn pop(&mut self) {
        // Drop the last character (its UTF-8 bytes).
        while let Some(b) = self.0.pop() {
            if b & 0xC0 != 0x80 {
                break;
            }
        }
    }
    fn clear(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
        self.0.clear();
    }
}

impl std::fmt::Debug for Masked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Masked(..)")
    }
}

/// Which part of the passphrase screen has the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassField {
    /// A new image: "plain" or "encrypt".
    #[default]
    Choice,
    /// The passphrase.
    First,
    /// A new image's passphrase again.
    Second,
}

/// What trying a passphrase on an image's key slots gave.
#[derive(Debug, Clone, PartialEq)]
pub enum PassCheck {
    /// It opens a key slot.
    Opens,
    /// No key slot opens with it.
    Wrong,
    /// The image could not be read (why).
    Failed(String),
}

/// Most bytes a typed passphrase may have (the engine reads at most 64 KiB).
const MAX_LEN: usize = 1024;

/// The passphrase screen's state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PassEntry {
    /// The image whose header was read (the engine's IMAGE argument) and whether it is
    /// encrypted (`None` while reading).
    pub probed: Option<(String, Option<Result<bool, String>>)>,
    /// A new full image: encrypt it.
    pub encrypt: bool,
    pub field: PassField,
    pub first: Masked,
    pub second: Masked,
    /// A typed passphrase is being tried on the image's key slots.
    pub checking: bool,
}

impl App {
    /// Whether this flow creates a new image (its passphrase step is the "Encrypt" choice).
    pub fn pass_new_image(&self) -> bool {
        self.kind == JobKind::FullImage
    }

    /// The existing image the passphrase step is about: an incremental's parent, else the
    /// image chosen on the location screen.
    pub fn pass_image(&self) -> Option<String> {
        match self.kind {
            JobKind::FullImage | JobKind::Copy | JobKind::Clone => None,
            JobKind::Incremental => {
                let place = self.places().get(self.loc.sel)?.clone();
                let parent = self.loc.parent.trim();
                (!parent.is_empty()).then(|| super::image_arg(&place, parent))
            }
            JobKind::Restore | JobKind::Verify | JobKind::RestoreFiles => self.image.clone(),
        }
    }

    /// The steps of this flow as the screens count them ("Step 2 of 3"): a flow that reads an
    /// image counts its passphrase step only when the image is encrypted (or while on it).
    pub fn shown_steps(&self) -> Vec<Screen> {
        let keep = self.pass_new_image()
            || self.screen == Screen::Passphrase
            || self.pass_encrypted() == Some(true);
        self.kind
            .steps()
            .iter()
            .copied()
            .filter(|s| keep || *s != Screen::Passphrase)
            .collect()
    }

    /// Whether the image of the passphrase step is encrypted: `Some(true/false)` once read.
    pub fn pass_encrypted(&self) -> Option<bool> {
        let img = self.pass_image()?;
        match &self.pass.probed {
            Some((p, Some(Ok(e)))) if *p == img => Some(*e),
            _ => None,
        }
    }

    /// On the passphrase step of a flow that reads an image: reads its header in the
    /// background unless it was read already.
    pub(super) fn pass_reads(&mut self) -> Vec<Command> {
        if self.screen != Screen::Passphrase || self.pass_new_image() {
            return vec![];
        }
        let Some(img) = self.pass_image() else {
            return vec![];
        };
        if self.pass.probed.as_ref().is_some_and(|(p, _)| *p == img) {
            return vec![];
        }
        self.pass.probed = Some((img.clone(), None));
        self.pass.first.clear();
        self.secret = None;
        vec![Command::ProbeImage(img)]
    }

    /// Entering the passphrase step.
    pub(super) fn pass_enter(&mut self) {
        self.pass.first.clear();
        self.pass.second.clear();
        self.pass.checking = false;
        self.secret = None;
        // An image that could not be read is read again (a disk plugged in since, say).
        if matches!(self.pass.probed, Some((_, Some(Err(_))))) {
            self.pass.probed = None;
        }
        self.pass.field = if self.pass_new_image() {
            PassField::Choice
        } else {
            PassField::First
        };
    }

    /// The image's header was read: an image that is not encrypted needs no passphrase, and
    /// the flow goes on by itself.
    pub(super) fn on_probed(&mut self, image: String, r: Result<bool, String>) -> Vec<Command> {
        match &mut self.pass.probed {
            Some((p, slot)) if *p == image => *slot = Some(r.clone()),
            _ => return vec![],
        }
        if self.screen != Screen::Passphrase || self.pass_image().as_deref() != Some(&image) {
            return vec![];
        }
        match r {
            Ok(false) => self.pass_done(None),
            Ok(true) => vec![],
            Err(e) => {
                self.message = Some(format!("The image cannot be read: {e}"));
                vec![]
            }
        }
    }

    /// A typed passphrase was tried on the image's key slots.
    pub(super) fn on_pass_checked(&mut self, image: String, r: PassCheck) -> Vec<Command> {
        if self.screen != Screen::Passphrase
            || !self.pass.checking
            || self.pass_image().as_deref() != Some(&image)
        {
            return vec![];
        }
        self.pass.checking = false;
        match r {
            PassCheck::Opens => {
                let s = std::mem::take(&mut self.pass.first);
                self.pass_done(Some(s))
            }
            PassCheck::Wrong => {
                self.pass.first.clear();
                self.message = Some("Wrong passphrase: nothing was written. Type it again.".into());
                vec![]
            }
            PassCheck::Failed(e) => {
                self.message = Some(format!("The passphrase could not be tried: {e}"));
                vec![]
            }
        }
    }

    /// The step is done with this secret (None: no encryption): on to the next step.
    fn pass_done(&mut self, secret: Option<Masked>) -> Vec<Command> {
        self.pass.first.clear();
        self.pass.second.clear();
        self.secret = secret;
        self.forward();
        self.browse_open()
    }

    pub(super) fn key_passphrase(&mut self, k: Key) -> Vec<Command> {
        if k == Key::Esc {
            self.pass.checking = false;
            self.pass.first.clear();
            self.pass.second.clear();
            self.back();
            return vec![];
        }
        if self.pass.checking {
            self.message = Some("Checking the passphrase: wait a moment.".into());
            return vec![];
        }
        match self.pass.field {
            PassField::Choice => match k {
                Key::Up | Key::Down | Key::Char(' ') | Key::Char('k') | Key::Char('j') => {
                    self.pass.encrypt = !self.pass.encrypt;
                }
                Key::Char('y') | Key::Char('e') => self.pass.encrypt = true,
                Key::Char('n') => self.pass.encrypt = false,
                Key::Left | Key::Char('h') => self.back(),
                Key::Enter if self.pass.encrypt => self.pass.field = PassField::First,
                Key::Enter => return self.pass_done(None),
                _ => {}
            },
            PassField::First | PassField::Second => match k {
                Key::Char(c) if !c.is_control() => {
                    let f = if self.pass.field == PassField::First {
                        &mut self.pass.first
                    } else {
                        &mut self.pass.second
                    };
                    if f.bytes().len() + c.len_utf8() <= MAX_LEN {
                        f.push(c);
                    }
                }
                Key::Backspace => {
                    if self.pass.field == PassField::First {
                        self.pass.first.pop()
                    } else {
                        self.pass.second.pop()
                    }
                }
                Key::Up | Key::BackTab if self.pass_new_image() => {
                    self.pass.field = match self.pass.field {
                        PassField::Second => PassField::First,
                        _ => PassField::Choice,
                    }
                }
                Key::Enter => return self.pass_submit(),
                _ => {}
            },
        }
        vec![]
    }

    fn pass_submit(&mut self) -> Vec<Command> {
        if self.pass.first.is_empty() {
            self.message = Some("Type the passphrase (it is not shown).".into());
            self.pass.field = PassField::First;
            return vec![];
        }
        if self.pass_new_image() {
            if self.pass.field == PassField::First {
                self.pass.field = PassField::Second;
                return vec![];
            }
            if self.pass.first != self.pass.second {
                self.pass.first.clear();
                self.pass.second.clear();
                self.pass.field = PassField::First;
                self.message = Some("The two passphrases differ: type them again.".into());
                return vec![];
            }
            let s = std::mem::take(&mut self.pass.first);
            return self.pass_done(Some(s));
        }
        match (self.pass_image(), self.pass_encrypted()) {
            (Some(image), Some(true)) => {
                self.pass.checking = true;
                vec![Command::CheckPassphrase {
                    image,
                    secret: self.pass.first.clone(),
                }]
            }
            _ => {
                self.message = Some("Still reading the image's header: wait a moment.".into());
                vec![]
            }
        }
    }

    /// Forgets the passphrase (the job that needed it started with it).
    pub fn forget_secret(&mut self) {
        self.secret = None;
        self.pass.first.clear();
        self.pass.second.clear();
    }
}
