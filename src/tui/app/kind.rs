//! The six jobs of the job menu, the second copy of an image (offered on the result screen of
//! every image job), and every text about them: the menu's title, what each does, when to pick
//! it, the steps of its flow, and the running job's title.
use super::Screen;
use crate::devices::Disk;

/// The six jobs of the job menu, and `Copy` (not in the menu: `c` on an image job's result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Clone,
    FullImage,
    Incremental,
    Restore,
    Verify,
    /// The second copy of the image a finished job used (`image copy --chain`).
    Copy,
    /// Take files and folders out of an image (`image extract`), without restoring the disk.
    RestoreFiles,
}

impl JobKind {
    pub const ALL: [JobKind; 6] = [
        JobKind::Clone,
        JobKind::FullImage,
        JobKind::Incremental,
        JobKind::Restore,
        JobKind::Verify,
        JobKind::RestoreFiles,
    ];

    pub fn title(self) -> &'static str {
        match self {
            JobKind::Clone => "Clone a disk onto another disk",
            JobKind::FullImage => "Back up a disk into a new image file",
            JobKind::Incremental => "Back up a disk as an incremental on an existing image",
            JobKind::Restore => "Restore an image onto a disk",
            JobKind::Verify => "Verify an image file",
            JobKind::Copy => "Make the second copy of an image",
            JobKind::RestoreFiles => "Restore files from an image",
        }
    }
    pub fn explain(self) -> &'static str {
        match self {
            JobKind::Clone => "Copies every sector of the SOURCE disk onto the TARGET disk, bad sectors \
                 last (like ddrescue). Everything on the TARGET is destroyed. The source is only read.",
            JobKind::FullImage => "Reads the SOURCE disk into a compressed, verifiable image file on a \
                 partition of another disk. Nothing is erased.",
            JobKind::Incremental => "Stores only what changed since an existing image of the same disk. \
                 Needs the earlier image (the parent). Nothing is erased.",
            JobKind::Restore => "Writes an image back onto a TARGET disk. Everything on the TARGET is \
                 destroyed.",
            JobKind::Verify => "Reads an image file and checks every block against its checksums. \
                 Nothing is written.",
            JobKind::Copy => "Copies the image, and every earlier image it needs, onto another \
                 partition, then reads the copy back and checks it. Nothing is erased.",
            JobKind::RestoreFiles => "Opens an image without restoring it: browse a partition of the \
                 disk as it was, mark files and folders, copy them to a folder on another \
                 partition. Nothing is erased or replaced.",
        }
    }
    /// When to pick this job: the plain advice of "cloning vs imaging" (a clone is a carbon copy for
    /// a drive swap; an image is a backup file, kept stored away, with incrementals on top).
    pub fn when(self) -> &'static str {
        match self {
            JobKind::Clone => {
                "replacing or upgrading a drive, or getting everything off a failing \
                 one, with both drives attached. Pick them the right way round: the wrong TARGET \
                 loses everything on it forever."
            }
            JobKind::FullImage => {
                "you want a backup you can keep anywhere and restore later, onto \
                 this disk or a new one. Keep this first full image stored away safely."
            }
            JobKind::Incremental => {
                "you already have a full image and want a newer restore point \
                 quickly. Every point can be restored, so you can roll back to before something \
                 went wrong (a virus, a bad update)."
            }
            JobKind::Restore => {
                "rolling a disk back to a restore point, or putting a backup onto \
                 a new disk."
            }
            JobKind::Verify => {
                "before you rely on a backup, and after moving or copying the image."
            }
            JobKind::Copy => {
                "keep two copies of every backup: one stored away, one at hand for \
                 incrementals. Put the second copy on another disk."
            }
            JobKind::RestoreFiles => {
                "you need a few files back (a deleted letter, last week's photos) \
                 and not the whole disk."
            }
        }
    }
    /// The `kind` of the job spec ("clone", "image-create", ...).
    pub fn job_name(self) -> &'static str {
        match self {
            JobKind::Clone => "clone",
            JobKind::FullImage => "image-create",
            JobKind::Incremental => "image-incremental",
            JobKind::Restore => "image-restore",
            JobKind::Verify => "image-verify",
            JobKind::Copy => "image-copy",
            JobKind::RestoreFiles => "image-extract",
        }
    }
    pub fn needs_source(self) -> bool {
        matches!(
            self,
            JobKind::Clone | JobKind::FullImage | JobKind::Incremental
        )
    }
    pub fn needs_target(self) -> bool {
        matches!(self, JobKind::Clone | JobKind::Restore)
    }
    pub fn needs_image(self) -> bool {
        !matches!(self, JobKind::Clone)
    }
    /// Destroys a disk's contents (confirmation by typing its name).
    pub fn destructive(self) -> bool {
        self.needs_target()
    }
    /// The steps of this job's flow, in order.
    pub fn steps(self) -> &'static [Screen] {
        match self {
            JobKind::Clone => &[Screen::Source, Screen::Target, Screen::Confirm],
            // The passphrase step: a new image's "Encrypt" choice; for an image read, its
            // passphrase (passed by itself when the image is not encrypted).
            JobKind::FullImage | JobKind::Incremental => &[
                Screen::Source,
                Screen::Location,
                Screen::Passphrase,
                Screen::Confirm,
            ],
            JobKind::Restore => &[
                Screen::Location,
                Screen::Passphrase,
                Screen::Target,
                Screen::Confirm,
            ],
            JobKind::Verify => &[Screen::Location, Screen::Passphrase, Screen::Confirm],
            // An encrypted image is copied as it is stored: no passphrase needed.
            JobKind::Copy => &[Screen::Location, Screen::Confirm],
            JobKind::RestoreFiles => &[
                Screen::Location,
                Screen::Passphrase,
                Screen::Browse,
                Screen::Dest,
                Screen::Confirm,
            ],
        }
    }
    /// The running job's title: "Clone sda -> nvme0n1", "Verify sdc1:/lifeboat/pc.lbi".
    pub fn job_title(
        self,
        source: Option<&Disk>,
        target: Option<&Disk>,
        image: Option<&str>,
    ) -> String {
        let s = source.map_or("?", |d| d.name.as_str());
        let t = target.map_or("?", |d| d.name.as_str());
        let i = image.unwrap_or("?");
        match self {
            JobKind::Clone => format!("Clone {s} -> {t}"),
            JobKind::FullImage => format!("Image {s} -> {i}"),
            JobKind::Incremental => format!("Incremental {s} -> {i}"),
            JobKind::Restore => format!("Restore {i} -> {t}"),
            JobKind::Verify => format!("Verify {i}"),
            JobKind::Copy => format!("Second copy -> {i}"),
            JobKind::RestoreFiles => format!("Restore files from {i}"),
        }
    }
}
