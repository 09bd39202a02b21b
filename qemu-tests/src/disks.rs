//! Test disk images built with the real tools and no root mounts: a partition table written by
//! sgdisk (GPT) or sfdisk (MBR), filesystems made by mkfs.ext4 -d / mkfs.vfat + mcopy /
//! mkfs.exfat / mkntfs + ntfscp in their own image files and copied in at their offsets. Returns the facts a
//! guest must report (starts, sizes, types, labels, UUIDs as blkid sees them).
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MIB: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Gpt,
    Mbr,
    /// No partition table (a blank disk, e.g. a clone target).
    None,
}

impl Table {
    /// The `partition_table` value `lifeboat list --json` reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Gpt => "gpt",
            Table::Mbr => "mbr",
            Table::None => "none",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fs {
    Ext4,
    Vfat,
    Exfat,
    /// NTFS (mkntfs; files, at the top directory only, copied in with ntfscp).
    Ntfs,
    /// A partition with nothing in it.
    Blank,
}

/// One partition to create.
#[derive(Clone, Debug)]
pub struct Part {
    pub size_mib: u64,
    pub fs: Fs,
    pub label: Option<String>,
    /// GPT partition name.
    pub name: Option<String>,
    /// Files put into the filesystem: (path inside, contents).
    pub files: Vec<(String, Vec<u8>)>,
}

impl Part {
    pub fn new(size_mib: u64, fs: Fs) -> Part {
        Part {
            size_mib,
            fs,
            label: None,
            name: None,
            files: Vec::new(),
        }
    }
    pub fn label(mut self, l: &str) -> Part {
        self.label = Some(l.to_string());
        self
    }
    pub fn name(mut self, n: &str) -> Part {
        self.name = Some(n.to_string());
        self
    }
    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>) -> Part {
        self.files.push((path.to_string(), data.into()));
        self
    }
}

/// A disk image to build.
#[derive(Clone, Debug)]
pub struct DiskBuilder {
    pub size_mib: u64,
    pub table: Table,
    /// Logical sector size the table is written for (512 or 4096; 4096 needs a loop device).
    pub sector_size: u32,
    pub parts: Vec<Part>,
}

/// What was built.
#[derive(Clone, Debug)]
pub struct BuiltDisk {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub table: Table,
    pub sector_size: u32,
    pub partitions: Vec<BuiltPart>,
}

/// A partition as the guest should see it.
#[derive(Clone, Debug)]
pub struct BuiltPart {
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// blkid's TYPE (`ext4`, `vfat`, `exfat`), `None` for a blank partition.
    pub fs_type: Option<String>,
    pub label: Option<String>,
    pub uuid: Option<String>,
    pub name: Option<String>,
}

impl DiskBuilder {
    pub fn new(size_mib: u64, table: Table) -> DiskBuilder {
        DiskBuilder {
            size_mib,
            table,
            sector_size: 512,
            parts: Vec::new(),
        }
    }
    pub fn sector_size(mut self, s: u32) -> DiskBuilder {
        self.sector_size = s;
        self
    }
    pub fn part(mut self, p: Part) -> DiskBuilder {
        self.parts.push(p);
        self
    }

    /// Partitions start at 1 MiB and follow each other; 1 MiB is left free at the end for the
    /// backup GPT.
    fn layout(&self) -> Result<Vec<(u64, u64)>, String> {
        let mut start = MIB;
        let mut out = Vec::new();
        for p in &self.parts {
            if p.size_mib == 0 {
                return Err("partition size must be at least 1 MiB".into());
            }
            out.push((start, p.size_mib * MIB));
            start += p.size_mib * MIB;
        }
        if start + MIB > self.size_mib * MIB {
            return Err(format!(
                "partitions need {} MiB, disk has {} MiB",
                start / MIB + 1,
                self.size_mib
            ));
        }
        if self.table == Table::Mbr && self.parts.len() > 4 {
            return Err("at most 4 primary MBR partitions".into());
        }
        if self.table == Table::None && !self.parts.is_empty() {
            return Err("a disk without a partition table has no partitions".into());
        }
        Ok(out)
    }

    /// Builds the image at `path` (scratch files go next to it).
    pub fn build(&self, path: &Path) -> Result<BuiltDisk, String> {
        if self.sector_size != 512 && self.sector_size != 4096 {
            return Err(format!(
                "sector size {} must be 512 or 4096",
                self.sector_size
            ));
        }
        let layout = self.layout()?;
        let size_bytes = self.size_mib * MIB;
        let f = File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
        f.set_len(size_bytes)
            .map_err(|e| format!("size {}: {e}", path.display()))?;
        drop(f);
        match (self.table, self.sector_size) {
            (Table::None, _) => {}
            (Table::Gpt, 512) => self.sgdisk(path, &layout)?,
            _ => self.sfdisk(path, &layout)?,
        }
        let mut partitions = Vec::new();
        for (i, (p, &(start, size))) in self.parts.iter().zip(&layout).enumerate() {
            let fs_img = path.with_extension(format!("p{}.fs", i + 1));
            let facts = make_fs(p, &fs_img, size, self.sector_size)?;
            if p.fs != Fs::Blank {
                copy_into(&fs_img, path, start)?;
            }
            let _ = std::fs::remove_file(&fs_img);
            partitions.push(BuiltPart {
                number: i as u32 + 1,
                start_bytes: start,
                size_bytes: size,
                fs_type: facts.get("TYPE").cloned(),
                label: facts.get("LABEL").cloned(),
                uuid: facts.get("UUID").cloned(),
                name: p.name.clone(),
            });
        }
        Ok(BuiltDisk {
            path: path.to_path_buf(),
            size_bytes,
            table: self.table,
            sector_size: self.sector_size,
            partitions,
        })
    }

    fn sgdisk(&self, path: &Path, layout: &[(u64, u64)]) -> Result<(), String> {
        let mut args = vec!["-o".to_string()];
        for (i, (p, &(start, size))) in self.parts.iter().zip(layout).enumerate() {
            let n = i + 1;
            args.push(format!(
                "-n{n}:{}:{}",
                start / 512,
                (start + size) / 512 - 1
            ));
            args.push(format!(
                "-t{n}:{}",
                if p.fs == Fs::Ext4 { "8300" } else { "0700" }
            ));
            if let Some(name) = &p.name {
                args.push(format!("-c{n}:{name}"));
            }
        }
        args.push(path.to_string_lossy().into_owned());
        run("sgdisk", &args, None)?;
        Ok(())
    }

    /// sfdisk script for the table (units: the table's own sectors).
    pub fn sfdisk_script(&self, layout: &[(u64, u64)]) -> String {
        let ss = self.sector_size as u64;
        let mut s = format!(
            "label: {}\n",
            if self.table == Table::Gpt {
                "gpt"
            } else {
                "dos"
            }
        );
        for (p, &(start, size)) in self.parts.iter().zip(layout) {
            let ty = match (self.table, p.fs) {
                (Table::Gpt, Fs::Ext4) => "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                (Table::Gpt, _) => "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
                (_, Fs::Ext4 | Fs::Blank) => "83",
                (_, Fs::Vfat) => "c",
                (_, Fs::Exfat | Fs::Ntfs) => "7",
            };
            s.push_str(&format!(
                "start={}, size={}, type={ty}",
                start / ss,
                size / ss
            ));
            if let (Table::Gpt, Some(name)) = (self.table, &p.name) {
                s.push_str(&format!(", name=\"{name}\""));
            }
            s.push('\n');
        }
        s
    }

    fn sfdisk(&self, path: &Path, layout: &[(u64, u64)]) -> Result<(), String> {
        let script = self.sfdisk_script(layout);
        let args = ["--no-reread", "--no-tell-kernel", "-q"];
        if self.sector_size == 512 {
            let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            a.push(path.to_string_lossy().into_owned());
            run("sfdisk", &a, Some(&script))?;
            return Ok(());
        }
        // sfdisk takes the sector size from the device: present the file as a 4Kn loop device.
        let lo = Loop::attach(path, self.sector_size)?;
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.push(lo.dev.clone());
        run("sfdisk", &a, Some(&script))?;
        drop(lo);
        Ok(())
    }
}

/// A loop device detached on drop.
struct Loop {
    dev: String,
}

impl Loop {
    fn attach(file: &Path, sector_size: u32) -> Result<Loop, String> {
        let out = run(
            "losetup",
            &[
                "-f".into(),
                "--show".into(),
                "-b".into(),
                sector_size.to_string(),
                file.to_string_lossy().into_owned(),
            ],
            None,
        )?;
        Ok(Loop {
            dev: out.trim().to_string(),
        })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// Runs a tool, returns its stdout; the error names the command and its stderr.
pub fn run(prog: &str, args: &[String], stdin: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        format!("cannot run {prog} ({e}); run scripts/setup to install the host tools")
    })?;
    if let (Some(text), Some(mut si)) = (stdin, child.stdin.take()) {
        si.write_all(text.as_bytes())
            .map_err(|e| format!("{prog} stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes the filesystem of `p` in the file `img` of `size` bytes and returns blkid's facts.
fn make_fs(
    p: &Part,
    img: &Path,
    size: u64,
    sector_size: u32,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let imgs = img.to_string_lossy().into_owned();
    let _ = std::fs::remove_file(img);
    let files_dir = img.with_extension("files");
    let _ = std::fs::remove_dir_all(&files_dir);
    std::fs::create_dir_all(&files_dir).map_err(|e| format!("{}: {e}", files_dir.display()))?;
    for (name, data) in &p.files {
        let dest = files_dir.join(name.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&dest, data).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    let sized = |img: &Path| -> Result<(), String> {
        let f = File::create(img).map_err(|e| format!("{}: {e}", img.display()))?;
        f.set_len(size)
            .map_err(|e| format!("{}: {e}", img.display()))
    };
    let label = |flag: &str| -> Vec<String> {
        p.label
            .as_ref()
            .map(|l| vec![flag.to_string(), l.clone()])
            .unwrap_or_default()
    };
    match p.fs {
        Fs::Blank => {}
        Fs::Ext4 => {
            sized(img)?;
            let mut a = vec!["-q".into(), "-F".into(), "-b".into(), "4096".into()];
            a.extend(label("-L"));
            a.extend([
                "-d".into(),
                files_dir.to_string_lossy().into_owned(),
                imgs.clone(),
            ]);
            run("mkfs.ext4", &a, None)?;
        }
        Fs::Vfat => {
            let mut a = vec!["-S".to_string(), sector_size.to_string()];
            a.extend(label("-n"));
            a.extend(["-C".into(), imgs.clone(), (size / 1024).to_string()]);
            run("mkfs.vfat", &a, None)?;
            // mcopy -s copies directory trees: copy each top-level entry into the root.
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&files_dir)
                .map_err(|e| format!("{}: {e}", files_dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for src in entries {
                run(
                    "mcopy",
                    &[
                        "-o".into(),
                        "-s".into(),
                        "-i".into(),
                        imgs.clone(),
                        src.to_string_lossy().into_owned(),
                        "::/".into(),
                    ],
                    None,
                )?;
            }
        }
        Fs::Exfat => {
            sized(img)?;
            let mut a = label("-L");
            a.push(imgs.clone());
            run("mkfs.exfat", &a, None)?;
            if !p.files.is_empty() {
                return Err(
                    "files on exFAT are not supported by the disk builder (no mtools for exFAT)"
                        .into(),
                );
            }
        }
        Fs::Ntfs => {
            sized(img)?;
            let mut a = vec!["-F".to_string(), "-Q".to_string()];
            a.extend(label("-L"));
            a.push(imgs.clone());
            run("mkntfs", &a, None)?;
            for (name, _) in &p.files {
                if name.trim_start_matches('/').contains('/') {
                    return Err(format!(
                        "{name}: files on NTFS go in its top directory (ntfscp makes no directories)"
                    ));
                }
                let src = files_dir.join(name.trim_start_matches('/'));
                run(
                    "ntfscp",
                    &[
                        imgs.clone(),
                        src.to_string_lossy().into_owned(),
                        name.trim_start_matches('/').to_string(),
                    ],
                    None,
                )?;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&files_dir);
    if p.fs == Fs::Blank {
        return Ok(Default::default());
    }
    blkid(img)
}

/// `blkid -p -o export FILE` as a map (TYPE, LABEL, UUID, ...).
pub fn blkid(path: &Path) -> Result<std::collections::BTreeMap<String, String>, String> {
    let out = run(
        "blkid",
        &[
            "-p".into(),
            "-o".into(),
            "export".into(),
            path.to_string_lossy().into_owned(),
        ],
        None,
    )?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Copies `src` into `dst` at `offset` in 1 MiB chunks, skipping all-zero chunks (the disk
/// image is sparse and already zero there).
fn copy_into(src: &Path, dst: &Path, offset: u64) -> Result<(), String> {
    let mut s = File::open(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let d = std::fs::OpenOptions::new()
        .write(true)
        .open(dst)
        .map_err(|e| format!("{}: {e}", dst.display()))?;
    let mut buf = vec![0u8; MIB as usize];
    let mut pos = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            let r = s
                .read(&mut buf[n..])
                .map_err(|e| format!("{}: {e}", src.display()))?;
            if r == 0 {
                break;
            }
            n += r;
        }
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            d.write_all_at(&buf[..n], offset + pos)
                .map_err(|e| format!("{}: {e}", dst.display()))?;
        }
        pos += n as u64;
    }
    Ok(())
}

/// SHA-256 of a file (via sha256sum), to prove a source was not written to.
pub fn sha256(path: &Path) -> Result<String, String> {
    let out = run("sha256sum", &[path.to_string_lossy().into_owned()], None)?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| "sha256sum printed nothing".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tmp::TempDir;

    #[test]
    fn layout_starts_at_one_mib_and_checks_fit() {
        let b = DiskBuilder::new(10, Table::Gpt)
            .part(Part::new(3, Fs::Ext4))
            .part(Part::new(4, Fs::Vfat));
        assert_eq!(
            b.layout().unwrap(),
            vec![(MIB, 3 * MIB), (4 * MIB, 4 * MIB)]
        );
        assert!(DiskBuilder::new(8, Table::Gpt)
            .part(Part::new(7, Fs::Ext4))
            .layout()
            .is_err());
        assert!(DiskBuilder::new(8, Table::None)
            .part(Part::new(1, Fs::Ext4))
            .layout()
            .is_err());
    }

    #[test]
    fn sfdisk_script_in_table_sectors() {
        let b = DiskBuilder::new(64, Table::Mbr)
            .part(Part::new(8, Fs::Vfat))
            .part(Part::new(8, Fs::Ext4));
        let l = b.layout().unwrap();
        assert_eq!(
            b.sfdisk_script(&l),
            "label: dos\nstart=2048, size=16384, type=c\nstart=18432, size=16384, type=83\n"
        );
        let g = DiskBuilder::new(64, Table::Gpt)
            .sector_size(4096)
            .part(Part::new(8, Fs::Ext4).name("root"));
        let l = g.layout().unwrap();
        assert_eq!(
            g.sfdisk_script(&l),
            "label: gpt\nstart=256, size=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"root\"\n"
        );
    }

    /// Builds a real GPT and MBR disk and checks them with sgdisk -v, sfdisk -d, fsck and blkid.
    #[test]
    fn builds_real_disks_checked_by_the_tools() {
        let t = TempDir::new("disks-unit").unwrap();
        let gpt = DiskBuilder::new(64, Table::Gpt)
            .part(
                Part::new(16, Fs::Ext4)
                    .label("ROOTFS")
                    .name("linux")
                    .file("hello.txt", "hi\n"),
            )
            .part(
                Part::new(16, Fs::Vfat)
                    .label("EFIDATA")
                    .name("data")
                    .file("a/b.txt", "fat\n"),
            )
            .part(Part::new(16, Fs::Exfat).label("EXSTORE"))
            .build(&t.join("gpt.img"))
            .unwrap();
        let v = run(
            "sgdisk",
            &["-v".into(), gpt.path.to_string_lossy().into_owned()],
            None,
        )
        .unwrap();
        assert!(v.contains("No problems found"), "{v}");
        let p = run(
            "sgdisk",
            &["-p".into(), gpt.path.to_string_lossy().into_owned()],
            None,
        )
        .unwrap();
        assert!(p.contains("linux") && p.contains("data"), "{p}");
        let types: Vec<_> = gpt
            .partitions
            .iter()
            .map(|p| p.fs_type.clone().unwrap())
            .collect();
        assert_eq!(types, ["ext4", "vfat", "exfat"]);
        let labels: Vec<_> = gpt
            .partitions
            .iter()
            .map(|p| p.label.clone().unwrap())
            .collect();
        assert_eq!(labels, ["ROOTFS", "EFIDATA", "EXSTORE"]);
        assert!(gpt.partitions.iter().all(|p| p.uuid.is_some()));
        // The filesystems landed at their offsets: extract p1 and fsck it, read the FAT file.
        let p1 = t.join("p1.ext4");
        run(
            "dd",
            &[
                format!("if={}", gpt.path.display()),
                format!("of={}", p1.display()),
                "bs=1M".into(),
                "skip=1".into(),
                "count=16".into(),
                "status=none".into(),
            ],
            None,
        )
        .unwrap();
        run(
            "e2fsck",
            &["-fn".into(), p1.to_string_lossy().into_owned()],
            None,
        )
        .unwrap();
        let got = run(
            "debugfs",
            &[
                "-R".into(),
                "cat /hello.txt".into(),
                p1.to_string_lossy().into_owned(),
            ],
            None,
        )
        .unwrap();
        assert_eq!(got, "hi\n");
        let fat = run(
            "mtype",
            &[
                "-i".into(),
                format!("{}@@{}", gpt.path.display(), 17 * MIB),
                "::/a/b.txt".into(),
            ],
            None,
        )
        .unwrap();
        assert_eq!(fat, "fat\n");

        let mbr = DiskBuilder::new(48, Table::Mbr)
            .part(Part::new(20, Fs::Vfat).label("MBRFAT"))
            .part(Part::new(20, Fs::Ext4).label("MBREXT"))
            .build(&t.join("mbr.img"))
            .unwrap();
        let d = run(
            "sfdisk",
            &["-d".into(), mbr.path.to_string_lossy().into_owned()],
            None,
        )
        .unwrap();
        assert!(d.contains("label: dos"), "{d}");
        assert!(
            d.contains("start=        2048, size=       40960, type=c"),
            "{d}"
        );
        assert!(
            d.contains("start=       43008, size=       40960, type=83"),
            "{d}"
        );
        assert_eq!(mbr.partitions[1].fs_type.as_deref(), Some("ext4"));
        assert_eq!(mbr.partitions[0].label.as_deref(), Some("MBRFAT"));
    }

    #[test]
    fn builds_a_4kn_gpt() {
        let t = TempDir::new("disks-4k").unwrap();
        let d = DiskBuilder::new(64, Table::Gpt)
            .sector_size(4096)
            .part(Part::new(16, Fs::Ext4).label("FOURK"))
            .build(&t.join("4k.img"))
            .unwrap();
        let mut hdr = [0u8; 8];
        File::open(&d.path)
            .unwrap()
            .read_exact_at(&mut hdr, 4096)
            .unwrap();
        assert_eq!(&hdr, b"EFI PART");
        assert_eq!(d.partitions[0].start_bytes, MIB);
        assert_eq!(d.partitions[0].fs_type.as_deref(), Some("ext4"));
    }
}
