//! The extent map: the whole state of a rescue as sorted, contiguous, merged extents over
//! `[0, size)`, each untried, non-trimmed, non-scraped, bad or finished; saved and loaded in GNU
//! ddrescue's mapfile format so ddrescue's own tools (ddrescuelog) read it. Lifeboat also records
//! what the map is of ([`MapOrigin`]: the source and target) in a comment line, which ddrescue
//! ignores. Loading is bounded: a line is at most [`MAX_LINE`] bytes, a map at most
//! [`MAX_EXTENTS`] extents, and an error quotes a few bytes of the bad line, escaped.
//!
//! Areas outside a rescue's domain (a used-blocks clone: the filesystems' free space) are
//! [`Status::Free`]: never read, nothing to do. GNU ddrescue has no such status (its own
//! `--domain-mapfile` runs leave those areas non-tried), so a free extent is saved as
//! non-tried with a trailing comment, `0x00100000  0x00200000  ?  # free`, which ddrescue and
//! ddrescuelog read as non-tried ('?') and Lifeboat reads back as free.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::Path;

/// The longest mapfile line accepted (ddrescue's lines are under 100 bytes; comments hold a
/// command line).
pub const MAX_LINE: usize = 4096;
/// The most extents a loaded map may have (about 100 MiB of memory); a real map of a badly
/// failing disk has far fewer, because neighbouring extents of one status merge.
pub const MAX_EXTENTS: usize = 1 << 22;
/// The comment that carries the [`MapOrigin`] (JSON after it, on one line).
const ORIGIN_TAG: &str = "# Lifeboat origin: ";
/// What follows the status of a [`Status::Free`] extent's line.
const FREE_TAG: &str = "# free";

/// One side of a copy as recorded in a map: enough to tell that a later run is of the same
/// storage. A disk is known by its serial (and model); a disk-image file by its device and
/// inode; `name` is for messages only (device names change between boots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageId {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The partition number, when a partition (not a whole disk) was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// "MAJ:MIN:INODE" of a regular file (`+OFFSET` for a loop device over one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The UUID of a `.lbi` image (restore: the map's target holds this image's data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub name: String,
}

impl StorageId {
    /// Why `self` (recorded) and `now` are not the same storage, if they are not. Only what both
    /// know is compared: a disk without a serial is matched by its size alone.
    pub fn differs(&self, now: &StorageId) -> Option<String> {
        if self.size != now.size {
            return Some(format!("{} bytes then, {} bytes now", self.size, now.size));
        }
        match (&self.image, &now.image) {
            (Some(a), Some(b)) if a != b => {
                return Some(format!("the image with UUID {a} then, the image {b} now"))
            }
            (Some(a), None) => return Some(format!("the image with UUID {a} then, a disk now")),
            (None, Some(_)) => return Some("a disk then, an image now".to_string()),
            _ => {}
        }
        if self.partition != now.partition {
            return Some(match (self.partition, now.partition) {
                (Some(a), Some(b)) => format!("partition {a} then, partition {b} now"),
                (Some(a), None) => format!("partition {a} then, a whole disk now"),
                (None, _) => "a whole disk then, a partition now".to_string(),
            });
        }
        match (&self.serial, &now.serial) {
            (Some(a), Some(b)) if a != b => {
                return Some(format!("serial {a} then, serial {b} now"))
            }
            (Some(a), None) if now.file.is_some() => {
                return Some(format!("the disk with serial {a} then, a file now"))
            }
            _ => {}
        }
        match (&self.file, &now.file) {
            (Some(a), Some(b)) if a != b => Some(format!(
                "the file {} (inode {a}) then, another file (inode {b}) now",
                self.name
            )),
            (Some(_), None) if now.serial.is_some() => {
                Some(format!("the file {} then, a disk now", self.name))
            }
            _ => None,
        }
    }

    /// A short description for messages: name, serial, size.
    pub fn describe(&self) -> String {
        let mut s = self.name.clone();
        if let Some(x) = &self.serial {
            s.push_str(&format!(" (serial {x})"));
        }
        if let Some(x) = &self.image {
            s.push_str(&format!(" (image UUID {x})"));
        }
        s.push_str(&format!(", {} bytes", self.size));
        s
    }
}

/// What a map is the state of: the copy of `source` onto `target`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapOrigin {
    pub source: StorageId,
    pub target: StorageId,
}

/// A few bytes of `b`, escaped, for an error message (never the whole line).
fn quote(b: &[u8]) -> String {
    const SHOW: usize = 32;
    let mut s: String = b[..b.len().min(SHOW)].escape_ascii().to_string();
    if b.len() > SHOW {
        s.push_str(&format!("... ({} bytes)", b.len()));
    }
    format!("\"{s}\"")
}

/// The state of a byte range (ddrescue's status characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// '?' not read yet.
    Untried,
    /// '*' a read failed somewhere in here; edges not trimmed yet.
    NonTrimmed,
    /// '/' edges trimmed; the inside still to be read sector by sector.
    NonScraped,
    /// '-' unreadable sectors (zeros on the target).
    Bad,
    /// '+' read and written.
    Finished,
    /// Outside the rescue's domain (free space of a used-blocks copy): never read, nothing to
    /// do. Saved as '?' followed by `# free` (see the module documentation).
    Free,
}

impl Status {
    pub fn to_char(self) -> char {
        match self {
            Status::Untried => '?',
            Status::NonTrimmed => '*',
            Status::NonScraped => '/',
            Status::Bad => '-',
            Status::Finished => '+',
            Status::Free => '?',
        }
    }
    pub fn from_char(c: char) -> Option<Status> {
        Some(match c {
            '?' => Status::Untried,
            '*' => Status::NonTrimmed,
            '/' => Status::NonScraped,
            '-' => Status::Bad,
            '+' => Status::Finished,
            _ => return None,
        })
    }
    /// The character of the coarse progress map ('.' untried, '+' finished, '-' bad, '*', '/',
    /// '_' free).
    pub fn map_char(self) -> char {
        match self {
            Status::Untried => '.',
            Status::Free => '_',
            s => s.to_char(),
        }
    }
    /// Display priority in a coarse cell: the most alarming state present wins.
    fn rank(self) -> u8 {
        match self {
            Status::Free => 0,
            Status::Finished => 1,
            Status::Untried => 2,
            Status::NonTrimmed => 3,
            Status::NonScraped => 4,
            Status::Bad => 5,
        }
    }
}

/// One run of bytes with the same status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub pos: u64,
    pub size: u64,
    pub status: Status,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.pos + self.size
    }
}

/// Byte totals per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub untried: u64,
    pub non_trimmed: u64,
    pub non_scraped: u64,
    pub bad: u64,
    pub finished: u64,
    /// Outside the domain: not part of the copy.
    pub free: u64,
}

impl Totals {
    /// Bytes that failed to read so far and are not recovered (ddrescue's "errsize").
    pub fn error_bytes(&self) -> u64 {
        self.non_trimmed + self.non_scraped + self.bad
    }
}

/// The extent map. Invariant: extents are sorted, contiguous from 0 to `size`, non-empty, and
/// neighbours differ in status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentMap {
    size: u64,
    extents: Vec<Extent>,
    /// ddrescue's "current_pos" and "current_status" (the phase), kept for the mapfile.
    pub current_pos: u64,
    pub current_phase: char,
    /// What the map is of (saved in a comment line; `None` in maps from elsewhere).
    pub origin: Option<MapOrigin>,
    /// ddrescue's "current_pass" (the pass of the current phase, 1-based).
    pub current_pass: u32,
}

impl ExtentMap {
    /// A map of `size` bytes, all untried.
    pub fn new(size: u64) -> ExtentMap {
        let extents = if size == 0 {
            vec![]
        } else {
            vec![Extent {
                pos: 0,
                size,
                status: Status::Untried,
            }]
        };
        ExtentMap {
            size,
            extents,
            current_pos: 0,
            current_phase: '?',
            origin: None,
            current_pass: 1,
        }
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// Index of the extent containing `pos` (pos < size).
    fn index_of(&self, pos: u64) -> usize {
        match self.extents.binary_search_by(|e| e.pos.cmp(&pos)) {
            Ok(i) => i,
            Err(i) => i - 1,
        }
    }

    /// The status at byte `pos`.
    pub fn status_at(&self, pos: u64) -> Option<Status> {
        (pos < self.size).then(|| self.extents[self.index_of(pos)].status)
    }

    /// Sets `[pos, pos+len)` (clipped to the map) to `status`, splitting and merging extents.
    pub fn set(&mut self, pos: u64, len: u64, status: Status) {
        let end = pos.saturating_add(len).min(self.size);
        if pos >= end {
            return;
        }
        let first = self.index_of(pos);
        let last = self.index_of(end - 1);
        let mut repl: Vec<Extent> = Vec::with_capacity(3);
        let a = self.extents[first];
        if a.pos < pos {
            repl.push(Extent {
                pos: a.pos,
                size: pos - a.pos,
                status: a.status,
            });
        }
        repl.push(Extent {
            pos,
            size: end - pos,
            status,
        });
        let b = self.extents[last];
        if b.end() > end {
            repl.push(Extent {
                pos: end,
                size: b.end() - end,
                status: b.status,
            });
        }
        // Merge with the neighbours outside the replaced range.
        let mut lo = first;
        let mut hi = last + 1;
        if lo > 0 && self.extents[lo - 1].status == repl[0].status {
            lo -= 1;
            let p = self.extents[lo];
            repl[0].size += repl[0].pos - p.pos;
            repl[0].pos = p.pos;
        }
        if hi < self.extents.len() && self.extents[hi].status == repl[repl.len() - 1].status {
            let n = self.extents[hi];
            let r = repl.len() - 1;
            repl[r].size = n.end() - repl[r].pos;
            hi += 1;
        }
        // Merge inside the replacement.
        let mut merged: Vec<Extent> = Vec::with_capacity(repl.len());
        for e in repl {
            match merged.last_mut() {
                Some(m) if m.status == e.status => m.size += e.size,
                _ => merged.push(e),
            }
        }
        self.extents.splice(lo..hi, merged);
    }

    /// The first extent with `status` that ends after `from`, clipped to start at `from`.
    pub fn next_with(&self, status: Status, from: u64) -> Option<(u64, u64)> {
        if from >= self.size {
            return None;
        }
        let i = self.index_of(from);
        self.extents[i..]
            .iter()
            .find(|e| e.status == status)
            .map(|e| {
                let p = e.pos.max(from);
                (p, e.end() - p)
            })
    }

    /// The last extent with `status` that starts before `before`, clipped to end at `before`.
    pub fn prev_with(&self, status: Status, before: u64) -> Option<(u64, u64)> {
        let before = before.min(self.size);
        if before == 0 {
            return None;
        }
        let i = self.index_of(before - 1);
        self.extents[..=i]
            .iter()
            .rev()
            .find(|e| e.status == status)
            .map(|e| {
                let end = e.end().min(before);
                (e.pos, end - e.pos)
            })
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for e in &self.extents {
            match e.status {
                Status::Untried => t.untried += e.size,
                Status::NonTrimmed => t.non_trimmed += e.size,
                Status::NonScraped => t.non_scraped += e.size,
                Status::Bad => t.bad += e.size,
                Status::Finished => t.finished += e.size,
                Status::Free => t.free += e.size,
            }
        }
        t
    }

    /// `[start, len]` of every bad extent.
    pub fn ranges(&self, status: Status) -> Vec<(u64, u64)> {
        self.extents
            .iter()
            .filter(|e| e.status == status)
            .map(|e| (e.pos, e.size))
            .collect()
    }

    /// Whether every byte is finished, bad or free (nothing left to try).
    pub fn is_complete(&self) -> bool {
        self.extents
            .iter()
            .all(|e| matches!(e.status, Status::Finished | Status::Bad | Status::Free))
    }

    /// Sets the parts of `[pos, pos+len)` that are `from` to `to` (the rest keeps its status).
    pub fn replace(&mut self, pos: u64, len: u64, from: Status, to: Status) {
        let end = pos.saturating_add(len).min(self.size);
        if pos >= end {
            return;
        }
        let pieces: Vec<(u64, u64)> = self.extents[self.index_of(pos)..]
            .iter()
            .take_while(|e| e.pos < end)
            .filter(|e| e.status == from)
            .map(|e| (e.pos.max(pos), e.end().min(end)))
            .collect();
        for (a, e) in pieces {
            self.set(a, e - a, to);
        }
    }

    /// A coarse picture of the map in `cells` characters; each cell shows the most alarming
    /// status present in it ('-' bad, '/' non-scraped, '*' non-trimmed, '.' untried, '+' finished).
    pub fn coarse(&self, cells: usize) -> String {
        if self.size == 0 || cells == 0 {
            return String::new();
        }
        let mut out = String::with_capacity(cells);
        let mut i = 0;
        for c in 0..cells as u64 {
            let a = (self.size as u128 * c as u128 / cells as u128) as u64;
            let b = ((self.size as u128 * (c as u128 + 1) / cells as u128) as u64)
                .max(a + 1)
                .min(self.size);
            while i + 1 < self.extents.len() && self.extents[i].end() <= a {
                i += 1;
            }
            let mut best = self.extents[i].status;
            let mut j = i;
            while j < self.extents.len() && self.extents[j].pos < b {
                if self.extents[j].status.rank() > best.rank() {
                    best = self.extents[j].status;
                }
                j += 1;
            }
            out.push(best.map_char());
        }
        out
    }

    /// The map as a GNU ddrescue mapfile.
    pub fn to_mapfile(&self, command_line: &str) -> String {
        self.to_mapfile_with(command_line, &[])
    }

    /// The map as a GNU ddrescue mapfile with extra comment lines (each written as `# line`)
    /// after the command line, e.g. the rescue's read counters.
    pub fn to_mapfile_with(&self, command_line: &str, comments: &[String]) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Mapfile. Created by Lifeboat {}", crate::VERSION);
        // One line, whatever the command line holds (a newline would end the comment).
        let cl: String = command_line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let _ = writeln!(s, "# Command line: {cl}");
        if let Some(o) = &self.origin {
            // serde_json escapes control characters, so this stays one comment line.
            if let Ok(j) = serde_json::to_string(o) {
                let _ = writeln!(s, "{ORIGIN_TAG}{j}");
            }
        }
        for c in comments {
            let c: String = c
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let _ = writeln!(s, "# {c}");
        }
        let _ = writeln!(s, "# current_pos  current_status  current_pass");
        let _ = writeln!(
            s,
            "0x{:08X}     {}               {}",
            self.current_pos,
            self.current_phase,
            self.current_pass.max(1)
        );
        let _ = writeln!(s, "#      pos        size  status");
        for e in &self.extents {
            let _ = write!(
                s,
                "0x{:08X}  0x{:08X}  {}",
                e.pos,
                e.size,
                e.status.to_char()
            );
            if e.status == Status::Free {
                let _ = write!(s, "  {FREE_TAG}");
            }
            s.push('\n');
        }
        s
    }

    /// Parses a GNU ddrescue mapfile for a copy of `size` bytes. Parts of `[0, size)` the file
    /// does not cover are untried; a map reaching past `size` is refused (wrong device).
    pub fn from_mapfile(text: &str, size: u64) -> Result<ExtentMap> {
        Ok(ExtentMap::read_from(text.as_bytes(), size)?.0)
    }

    /// Parses a mapfile from `r` line by line: memory is one line (at most [`MAX_LINE`] bytes)
    /// plus the map (at most [`MAX_EXTENTS`] extents), whatever the input. Returns the map and
    /// how many bytes (from 0) the file described; the rest of `[0, size)` is untried.
    pub fn read_from(mut r: impl BufRead, size: u64) -> Result<(ExtentMap, u64)> {
        let mut m = ExtentMap::new(size);
        let mut status_line_seen = false;
        let mut expect = 0u64;
        let mut raw = Vec::with_capacity(128);
        let mut n = 0usize;
        loop {
            raw.clear();
            n += 1;
            let got = std::io::Read::take(&mut r, MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut raw)
                .map_err(|e| Error::corrupt("cannot read the mapfile").caused_by(e))?;
            if got == 0 {
                break;
            }
            if raw.last() != Some(&b'\n') && raw.len() > MAX_LINE {
                return Err(Error::corrupt(format!(
                    "mapfile line {n} is longer than {MAX_LINE} bytes (it starts {}): this is not \
                     a mapfile; give the map of this clone, or a new file name to start a new one",
                    quote(&raw)
                )));
            }
            let Ok(line) = std::str::from_utf8(&raw) else {
                return Err(Error::corrupt(format!(
                    "mapfile line {n} is not text ({}): this is not a mapfile",
                    quote(&raw)
                )));
            };
            let line = line.trim();
            if let Some(j) = line.strip_prefix(ORIGIN_TAG.trim_end()) {
                let o: MapOrigin = serde_json::from_str(j.trim()).map_err(|e| {
                    Error::corrupt(format!(
                        "mapfile line {n}: the record of the map's source and target is damaged ({})",
                        quote(line.as_bytes())
                    ))
                    .caused_by(e)
                })?;
                m.origin = Some(o);
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| {
                Error::corrupt(format!(
                    "mapfile line {n}: {what}: {}",
                    quote(line.as_bytes())
                ))
            };
            let f: Vec<&str> = line.split_whitespace().collect();
            if !status_line_seen {
                status_line_seen = true;
                let pos = f
                    .first()
                    .and_then(|s| parse_num(s))
                    .ok_or_else(|| bad("bad current position"))?;
                let ph = f
                    .get(1)
                    .and_then(|s| s.chars().next())
                    .ok_or_else(|| bad("missing current status"))?;
                m.current_pos = pos.min(size);
                m.current_phase = ph;
                m.current_pass = f
                    .get(2)
                    .and_then(|s| s.parse::<u32>().ok())
                    .filter(|&p| p >= 1)
                    .unwrap_or(1);
                continue;
            }
            if f.len() < 3 {
                return Err(bad("expected 'pos size status'"));
            }
            let pos = parse_num(f[0]).ok_or_else(|| bad("bad position"))?;
            let len = parse_num(f[1]).ok_or_else(|| bad("bad size"))?;
            let mut st = f[2]
                .chars()
                .next()
                .and_then(Status::from_char)
                .filter(|_| f[2].len() == 1)
                .ok_or_else(|| bad("bad status"))?;
            if st == Status::Untried && f[3..].join(" ") == FREE_TAG {
                st = Status::Free;
            }
            if pos != expect {
                return Err(bad("extents must be contiguous and sorted"));
            }
            let end = pos.checked_add(len).ok_or_else(|| bad("size overflows"))?;
            if end > size {
                return Err(Error::corrupt(format!(
                    "the mapfile covers {end} bytes but this copy is {size} bytes: it belongs to another device (or pass a new --map file)"
                )));
            }
            m.set(pos, len, st);
            expect = end;
            if m.extents.len() > MAX_EXTENTS {
                return Err(Error::corrupt(format!(
                    "the mapfile has more than {MAX_EXTENTS} extents (line {n}): too many to load"
                )));
            }
        }
        Ok((m, expect))
    }

    /// Reads a mapfile for a copy of `size` bytes (streamed and bounded: see [`read_from`]).
    ///
    /// [`read_from`]: ExtentMap::read_from
    pub fn load(path: &Path, size: u64) -> Result<ExtentMap> {
        Ok(ExtentMap::load_described(path, size)?.0)
    }

    /// [`load`](ExtentMap::load), also returning how many bytes the file described.
    pub fn load_described(path: &Path, size: u64) -> Result<(ExtentMap, u64)> {
        let f = crate::io::open::open_regular(path, "a mapfile")?;
        ExtentMap::read_from(std::io::BufReader::new(f), size).map_err(|e| e.at_path(path))
    }

    /// Writes the mapfile atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path, command_line: &str) -> Result<()> {
        self.save_with(path, command_line, &[])
    }

    /// [`ExtentMap::save`] with extra comment lines (see [`ExtentMap::to_mapfile_with`]).
    pub fn save_with(&self, path: &Path, command_line: &str, comments: &[String]) -> Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("lifeboat-tmp");
        // Never through what had the temporary name (a link to the source, a device node).
        let mut f = crate::io::open::create_fresh(&tmp)?;
        let written = f
            .write_all(self.to_mapfile_with(command_line, comments).as_bytes())
            .map_err(|e| Error::io("write the mapfile", &tmp, e))
            .and_then(|_| {
                f.sync_all()
                    .map_err(|e| Error::io("fsync the mapfile", &tmp, e))
            })
            .and_then(|_| {
                std::fs::rename(&tmp, path)
                    .map_err(|e| Error::io("rename the mapfile into place", path, e))
            });
        if written.is_err() {
            // A full filesystem: no half-written temporary file left beside the map.
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        // The rename is durable only once the directory is: after a power cut the map must be
        // this one or the previous one, never none.
        crate::image::create::sync_dir(path);
        Ok(())
    }
}

fn parse_num(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(m: &ExtentMap) {
        let mut p = 0;
        for (i, e) in m.extents().iter().enumerate() {
            assert_eq!(e.pos, p);
            assert!(e.size > 0);
            if i > 0 {
                assert_ne!(m.extents()[i - 1].status, e.status);
            }
            p = e.end();
        }
        assert_eq!(p, m.size());
    }

    #[test]
    fn set_splits_and_merges() {
        let mut m = ExtentMap::new(100);
        m.set(10, 10, Status::Finished);
        m.set(30, 10, Status::Finished);
        check(&m);
        assert_eq!(m.extents().len(), 5);
        m.set(20, 10, Status::Finished);
        check(&m);
        assert_eq!(m.extents().len(), 3);
        m.set(0, 100, Status::Bad);
        check(&m);
        assert_eq!(m.extents().len(), 1);
        m.set(99, 5, Status::Finished);
        check(&m);
        assert_eq!(m.status_at(99), Some(Status::Finished));
        assert_eq!(m.next_with(Status::Finished, 0), Some((99, 1)));
        assert_eq!(m.prev_with(Status::Bad, 100), Some((0, 99)));
        assert_eq!(m.totals().bad, 99);
    }

    #[test]
    fn random_sets_match_a_byte_model() {
        let mut m = ExtentMap::new(257);
        let mut model = [Status::Untried; 257];
        let all = [
            Status::Untried,
            Status::NonTrimmed,
            Status::NonScraped,
            Status::Bad,
            Status::Finished,
        ];
        let mut x: u64 = 12345;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pos = (x >> 33) % 257;
            let len = (x >> 13) % 40;
            let st = all[((x >> 5) % 5) as usize];
            m.set(pos, len, st);
            for b in pos..(pos + len).min(257) {
                model[b as usize] = st;
            }
            check(&m);
        }
        for (b, st) in model.iter().enumerate() {
            assert_eq!(m.status_at(b as u64), Some(*st));
        }
    }

    #[test]
    fn mapfile_roundtrip_and_ddrescue_syntax() {
        let mut m = ExtentMap::new(1 << 20);
        m.set(0, 4096, Status::Finished);
        m.set(8192, 512, Status::Bad);
        m.current_phase = '/';
        m.current_pos = 8192;
        let text = m.to_mapfile("lifeboat clone a b");
        let back = ExtentMap::from_mapfile(&text, 1 << 20).unwrap();
        assert_eq!(back, m);
        // What GNU ddrescue itself writes (decimal/hex mixes, pass column, comments).
        let dd = "# Mapfile. Created by GNU ddrescue version 1.27\n# current_pos  current_status  current_pass\n0x00001000     +               1\n#      pos        size  status\n0x00000000  0x00001000  +\n0x00001000  0x00000200  -\n";
        let d = ExtentMap::from_mapfile(dd, 8192).unwrap();
        assert_eq!(d.ranges(Status::Bad), vec![(4096, 512)]);
        assert_eq!(d.status_at(5000), Some(Status::Untried));
        assert!(ExtentMap::from_mapfile(dd, 4096).is_err());
        assert!(ExtentMap::from_mapfile("0 ?\n0 10 x\n", 100).is_err());
        assert!(ExtentMap::from_mapfile("0 ?\n5 10 +\n", 100).is_err());
    }

    #[test]
    fn free_extents_save_as_annotated_untried_and_load_back() {
        let mut m = ExtentMap::new(1 << 20);
        m.set(0, 4096, Status::Finished);
        m.set(8192, 65536, Status::Free);
        m.set(1 << 19, 4096, Status::Free);
        let text = m.to_mapfile("lifeboat clone a b");
        assert!(
            text.contains("\n0x00002000  0x00010000  ?  # free\n"),
            "{text}"
        );
        assert_eq!(ExtentMap::from_mapfile(&text, 1 << 20).unwrap(), m);
        let t = m.totals();
        assert_eq!(t.free, 65536 + 4096);
        assert!(!m.is_complete());
        // Only the untried parts change: free areas stay free, finished stays finished.
        m.replace(0, 1 << 20, Status::Untried, Status::Finished);
        assert!(m.is_complete());
        assert_eq!(m.ranges(Status::Free), vec![(8192, 65536), (1 << 19, 4096)]);
        m.replace(0, 1 << 19, Status::Free, Status::Untried);
        assert_eq!(m.ranges(Status::Untried), vec![(8192, 65536)]);
        assert_eq!(m.ranges(Status::Free), vec![(1 << 19, 4096)]);
        // Another trailing comment is not a free mark.
        let other = ExtentMap::from_mapfile("0 ?\n0 4096 ?  # something\n", 4096).unwrap();
        assert_eq!(other.status_at(0), Some(Status::Untried));
    }

    #[test]
    fn garbage_is_refused_with_a_short_quote_and_bounded_reads() {
        // 64 MiB of NULs, streamed: refused after one line's worth, quoting a few bytes.
        struct Nuls(u64);
        impl std::io::Read for Nuls {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                let n = (b.len() as u64).min(self.0) as usize;
                b[..n].fill(0);
                self.0 -= n as u64;
                Ok(n)
            }
        }
        let mut src = std::io::BufReader::new(Nuls(64 << 20));
        let e = ExtentMap::read_from(&mut src, 1 << 30).unwrap_err();
        let msg = e.to_string();
        assert!(msg.len() < 400, "{msg}");
        assert!(
            msg.contains("\\x00\\x00") && msg.contains("longer than"),
            "{msg}"
        );
        // Only about one line was read.
        assert!(src.into_inner().0 > (64 << 20) - 64 * 1024);
        // Not text.
        let e = ExtentMap::from_mapfile("0 ?\n\u{0}\u{1}\n", 100).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let bin = [b'0', b' ', b'?', b'\n', 0xff, 0xfe, b'\n'];
        let e = ExtentMap::read_from(&bin[..], 100).unwrap_err();
        assert!(e.to_string().contains("\\xff\\xfe"), "{e}");
        // A long but valid comment is fine.
        let long = format!("# {}\n0 ?\n0 100 +\n", "x".repeat(MAX_LINE - 10));
        assert!(ExtentMap::from_mapfile(&long, 100).is_ok());
    }

    #[test]
    fn origin_round_trip_in_a_comment() {
        let mut m = ExtentMap::new(4096);
        m.set(0, 512, Status::Finished);
        m.origin = Some(MapOrigin {
            source: StorageId {
                size: 4096,
                serial: Some("S\nX \"1\"".into()),
                model: Some("M".into()),
                name: "/dev/sda".into(),
                ..Default::default()
            },
            target: StorageId {
                size: 8192,
                file: Some("8:1:1234".into()),
                name: "/tmp/t.img".into(),
                ..Default::default()
            },
        });
        let text = m.to_mapfile("lifeboat clone a\nb");
        assert!(text
            .lines()
            .all(|l| l.starts_with('#') || l.starts_with("0x")));
        let (back, described) = ExtentMap::read_from(text.as_bytes(), 4096).unwrap();
        assert_eq!(back, m);
        assert_eq!(described, 4096);
        let o = back.origin.unwrap();
        let mut other = o.source.clone();
        assert_eq!(o.source.differs(&other), None);
        other.serial = Some("Y".into());
        assert!(o.source.differs(&other).unwrap().contains("serial"));
        other = o.target.clone();
        other.file = Some("8:1:99".into());
        assert!(o.target.differs(&other).is_some());
        other = o.target.clone();
        other.size += 1;
        assert!(o.target.differs(&other).is_some());
        let e = ExtentMap::from_mapfile("# Lifeboat origin: {bad\n", 10).unwrap_err();
        assert!(e.to_string().contains("damaged"), "{e}");
    }

    #[test]
    fn coarse_map() {
        let mut m = ExtentMap::new(1000);
        m.set(0, 500, Status::Finished);
        m.set(700, 1, Status::Bad);
        assert_eq!(m.coarse(10), "+++++..-..");
    }
}
