//! The image store's layout in a bucket (docs/image-format.md, "Image store on S3"): locations
//! `s3://BUCKET/[DIR/]NAME`, the store's objects under `DIR/` — its settings, content-addressed
//! chunk objects, image manifests, in-progress upload records and the gc lock — the chunk
//! object framing (compressed, sealed for an encrypted image), the manifest, and the
//! upload/gc exclusion protocol.
//!
//! Exclusion: an upload writes its record (`uploads/NAME`) *then* looks for a fresh gc lock; a
//! gc writes its lock *then* looks for fresh upload records. With the read-after-write
//! consistency of S3 (AWS since 2020, Garage, MinIO, Ceph) at least one of two that overlap sees
//! the other: the upload stops before its first chunk, or the gc deletes nothing. So a chunk an
//! upload found present (and skipped) cannot be deleted under it. Records and locks are
//! refreshed while their owner runs and count as stale (ignored) after [`STALE_SECS`] without
//! a refresh — the trace of a killed process.
use super::Client;
use crate::error::{Error, ErrorKind, Result};
use crate::image::crypt::{DataKey, Sealer};
pub use crate::image::format::unhex;

/// A record or lock not refreshed for this long belongs to a process that died.
pub const STALE_SECS: u64 = 6 * 3600;
/// How often a running upload or gc refreshes its record or lock.
pub const REFRESH_SECS: u64 = 60;

/// A parsed `s3://BUCKET/[DIR/]NAME` (an image) or `s3://BUCKET[/DIR]` (a store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    /// The store's prefix: `""` or `"DIR/"` (may hold several levels).
    pub root: String,
    /// The image's name (empty for a store location).
    pub name: String,
}

/// Whether `s` is an S3 location.
pub fn is_s3(s: &str) -> bool {
    s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("s3://"))
}

impl Location {
    /// An image location: the last component is the image's name, what comes before it the
    /// store (shared by every image next to it).
    pub fn image(s: &str) -> Result<Location> {
        let (bucket, path) = split(s)?;
        let (root, name) = match path.rfind('/') {
            Some(i) => (format!("{}/", &path[..i]), path[i + 1..].to_string()),
            None => (String::new(), path.clone()),
        };
        if name.is_empty() || s.ends_with('/') {
            return Err(Error::invalid(format!(
                "{s:?} names no image: write s3://{bucket}/DIR/NAME (images beside each other in \
                 DIR share their chunks)"
            )));
        }
        Ok(Location { bucket, root, name })
    }

    /// A store location (`store gc`): everything after the bucket is the store's directory.
    pub fn store(s: &str) -> Result<Location> {
        let (bucket, path) = split(s)?;
        let root = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        Ok(Location {
            bucket,
            root,
            name: String::new(),
        })
    }

    pub fn settings_key(&self) -> String {
        format!("{}lifeboat-store.json", self.root)
    }
    pub fn chunk_key(&self, name: &[u8; 32]) -> String {
        let h = crate::image::format::hex(name);
        format!("{}chunks/{}/{h}", self.root, &h[..2])
    }
    pub fn chunks_prefix(&self) -> String {
        format!("{}chunks/", self.root)
    }
    pub fn manifest_key(&self) -> String {
        format!("{}images/{}", self.root, self.name)
    }
    pub fn manifests_prefix(&self) -> String {
        format!("{}images/", self.root)
    }
    pub fn upload_key(&self) -> String {
        format!("{}uploads/{}", self.root, self.name)
    }
    pub fn uploads_prefix(&self) -> String {
        format!("{}uploads/", self.root)
    }
    pub fn gc_lock_key(&self) -> String {
        format!("{}gc.lock", self.root)
    }
    /// `s3://BUCKET/DIR/NAME` as given back in reports.
    pub fn display(&self) -> String {
        format!("s3://{}/{}{}", self.bucket, self.root, self.name)
    }
}

/// `(bucket, path without slashes at its ends)`, checked: no empty, `.` or `..` component.
fn split(s: &str) -> Result<(String, String)> {
    let rest = if is_s3(s) { &s[5..] } else { s };
    let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
    let ok_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !ok_bucket {
        return Err(Error::invalid(format!(
            "{s:?}: {bucket:?} is not an S3 bucket name (3 to 63 of a-z 0-9 . -); write \
             s3://BUCKET/DIR/NAME"
        )));
    }
    let path = path.trim_matches('/');
    for c in path.split('/').filter(|_| !path.is_empty()) {
        let bad = c.is_empty()
            || c == "."
            || c == ".."
            || c.chars().any(|ch| ch.is_control() || ch == '\\');
        if bad {
            return Err(Error::invalid(format!(
                "{s:?}: the path has an empty, '.', '..' or control-character component; write \
                 s3://BUCKET/DIR/NAME"
            )));
        }
    }
    Ok((bucket.to_string(), path.to_string()))
}

/// The client for a location: endpoint, region and keys from the credentials file; in the
/// Lifeboat environment the network is brought up first (as for an `smb://` location).
pub fn client(loc: &Location) -> Result<Client> {
    let (creds, looked) = crate::net::cred::load()?;
    crate::net::ensure_up()?;
    let login = creds.as_ref().and_then(|c| c.find_s3(&loc.bucket));
    let where_ = if looked.is_empty() {
        "none given: use --credentials FILE".to_string()
    } else {
        format!("looked at {}", looked.join(", "))
    };
    let Some(l) = login else {
        return Err(Error::invalid(format!(
            "no S3 settings for bucket {:?} in the credentials file ({where_}): add \
             s3_endpoint, s3_access_key and s3_secret_key lines (and s3_region if the store \
             wants one) at its top or in a [s3://{}] section",
            loc.bucket, loc.bucket
        )));
    };
    let need = |v: &Option<String>, k: &str| {
        v.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
            Error::invalid(format!(
                "the credentials file has no {k} for bucket {:?} ({where_})",
                loc.bucket
            ))
        })
    };
    let keys = super::sigv4::Keys {
        access_key: need(&l.access_key, "s3_access_key")?,
        secret_key: zeroize::Zeroizing::new(need(&l.secret_key, "s3_secret_key")?),
    };
    let mut cfg = super::Config::new(
        &need(&l.endpoint, "s3_endpoint")?,
        l.region.as_deref().unwrap_or(""),
        keys,
    )?;
    if let Some(ca) = l.ca_file.as_deref().filter(|s| !s.is_empty()) {
        let pem =
            crate::net::cred::read_small(ca, super::MAX_CA_FILE as u64).map_err(|e| Error {
                msg: format!("cannot read s3_ca_file {ca}: {}", e.msg),
                ..e
            })?;
        cfg = cfg.with_ca(&pem, ca)?;
    }
    Ok(Client::new(cfg, &loc.bucket))
}

/// The store's settings object: the key that names chunks.
#[derive(serde::Serialize, serde::Deserialize)]
struct Settings {
    format: String,
    version: u32,
    /// Hex: the BLAKE3 key of chunk names (per store, so a name tells nothing to whoever lacks
    /// the bucket: no lookup of a known file's hash in a public listing).
    name_key: String,
}

const STORE_FORMAT: &str = "lifeboat-s3-store";

/// The store's chunk-name key, made (random) when the store has none.
pub fn name_key(c: &Client, loc: &Location) -> Result<[u8; 32]> {
    let key = loc.settings_key();
    let read = |b: Vec<u8>| -> Result<[u8; 32]> {
        let s: Settings = serde_json::from_slice(&b).map_err(|_| {
            Error::corrupt(format!(
                "s3://{}/{key} is not a Lifeboat store's settings",
                c.bucket()
            ))
        })?;
        if s.format != STORE_FORMAT || s.version != 1 {
            return Err(Error::unsupported(format!(
                "s3://{}/{key}: a store of another format or a newer version ({} {})",
                c.bucket(),
                s.format,
                s.version
            )));
        }
        unhex32(&s.name_key).ok_or_else(|| Error::corrupt("the store's name key is damaged"))
    };
    if let Some(b) = c.get(&key)? {
        return read(b);
    }
    let s = Settings {
        format: STORE_FORMAT.into(),
        version: 1,
        name_key: crate::image::format::hex(&crate::image::crypt::random::<32>()?),
    };
    // Machines making a new store at once (a lab imaging into an empty bucket): only the first
    // conditional write lands, and every machine then uses what the store holds, so all name
    // their chunks with one key and share them. (A store ignoring the condition: the last
    // writer wins; a machine that read an earlier key still restores fine — its manifest records
    // the key — but its chunks are not shared with the others.)
    c.put_if_absent(&key, &serde_json::to_vec_pretty(&s).unwrap_or_default())?;
    // A concurrent conditional write (HTTP 409) may still be landing: look again a few times.
    for wait_ms in [0, 500, 1000, 2000, 4000] {
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        if let Some(b) = c.get(&key)? {
            return read(b);
        }
    }
    Err(Error::new(
        ErrorKind::Io,
        "the S3 store has no settings object just after it was written: try again",
    ))
}

pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    let v = unhex(s)?;
    v.try_into().ok()
}

/// A chunk's object name: keyed BLAKE3 (the store's key) of its hash (plain BLAKE3 of its
/// bytes, or for an encrypted image the keyed hash under the image's key, so the store sees
/// neither the bytes nor their plain hash).
pub fn chunk_name(name_key: &[u8; 32], hash: &[u8; 32]) -> [u8; 32] {
    *blake3::keyed_hash(name_key, hash).as_bytes()
}

/// Chunk object framing: magic, format, compression, reserved; then the payload (sealed when
/// the image is encrypted).
const CHUNK_MAGIC: &[u8; 4] = b"LBC1";
pub const COMP_RAW: u8 = 0;
pub const COMP_ZSTD: u8 = 1;

/// The associated data of a sealed chunk object: what it is and its name (a sealed chunk
/// moved under another name does not open).
fn chunk_ad(name: &[u8; 32]) -> Vec<u8> {
    let mut ad = b"lifeboat s3 chunk v1".to_vec();
    ad.extend_from_slice(name);
    ad
}

/// The object body of a chunk: framed, compressed (zstd unless that does not make it
/// smaller), sealed under `sealer` when given.
pub fn encode_chunk(
    data: &[u8],
    name: &[u8; 32],
    level: i32,
    sealer: Option<&Sealer>,
) -> Result<Vec<u8>> {
    let z = zstd::bulk::compress(data, level)
        .map_err(|e| Error::new(ErrorKind::Io, format!("zstd failed: {e}")))?;
    let (comp, payload): (u8, &[u8]) = if z.len() < data.len() {
        (COMP_ZSTD, &z)
    } else {
        (COMP_RAW, data)
    };
    let head = [comp, 0, 0, 0];
    let mut out = Vec::with_capacity(payload.len() + 64);
    out.extend_from_slice(CHUNK_MAGIC);
    match sealer {
        None => {
            out.extend_from_slice(&head);
            out.extend_from_slice(payload);
        }
        Some(s) => {
            out.extend_from_slice(&[0xff, 0, 0, 0]);
            let mut sealed = Vec::new();
            s.seal(&chunk_ad(name), &[&head, payload], &mut sealed)?;
            out.extend_from_slice(&sealed);
        }
    }
    Ok(out)
}

/// The chunk's bytes from its object body (`len` bytes expected).
pub fn decode_chunk(
    mut body: Vec<u8>,
    name: &[u8; 32],
    len: usize,
    sealer: Option<&Sealer>,
) -> std::result::Result<Vec<u8>, String> {
    if body.len() < 8 || &body[..4] != CHUNK_MAGIC {
        return Err("not a chunk object".into());
    }
    let sealed = body[4] == 0xff;
    let plain: &[u8] = match (sealed, sealer) {
        (true, Some(s)) => s
            .open(&chunk_ad(name), &mut body[8..])
            .ok_or("it does not authenticate (changed, or of another image)")?,
        (true, None) => return Err("it is sealed but the image is not encrypted".into()),
        (false, Some(_)) => return Err("it is not sealed but the image is encrypted".into()),
        (false, None) => &body[4..],
    };
    if plain.len() < 4 {
        return Err("it is truncated".into());
    }
    match plain[0] {
        COMP_RAW if plain.len() - 4 == len => Ok(plain[4..].to_vec()),
        COMP_ZSTD => {
            let v = zstd::bulk::decompress(&plain[4..], len)
                .map_err(|e| format!("it does not decompress ({e})"))?;
            if v.len() == len {
                Ok(v)
            } else {
                Err(format!("it holds {} bytes, not {len}", v.len()))
            }
        }
        _ => Err("it has an unknown compression or the wrong length".into()),
    }
}

/// The sealer of a store image's chunks and manifest: the data key's record key (the header
/// digest is not used by store objects; their associated data names them).
pub fn sealer(key: &DataKey) -> Sealer {
    Sealer::for_store(key)
}

/// An in-progress upload's record (`uploads/NAME`), rewritten while it runs: when it started
/// and refreshed, and what a rerun needs to resume — the image's key slots (an encrypted image
/// must resume under the same data key, or its chunk names would all differ) and the chunks
/// already stored.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default)]
pub struct UploadRecord {
    pub format: String,
    pub uuid: String,
    pub started: u64,
    pub refreshed: u64,
    pub disk_size: u64,
    pub chunk_size: u32,
    /// Hex of the encryption area (cipher, flags, key slots), for an encrypted image.
    pub crypt: Option<String>,
    /// Hex names of the chunk objects stored (or found present) so far.
    pub done: Vec<String>,
}

pub const UPLOAD_FORMAT: &str = "lifeboat-s3-upload";

/// The fresh (not stale) upload records of the store: `(key, record refreshed time)`.
pub fn live_uploads(c: &Client, loc: &Location, now: u64) -> Result<Vec<(String, u64)>> {
    Ok(c.list(&loc.uploads_prefix())?
        .into_iter()
        .filter(|o| o.modified + STALE_SECS > now)
        .map(|o| (o.key, o.modified))
        .collect())
}

/// Whether a fresh gc lock is there.
pub fn gc_running(c: &Client, loc: &Location, now: u64) -> Result<bool> {
    Ok(c.list(&loc.gc_lock_key())?
        .iter()
        .any(|o| o.key == loc.gc_lock_key() && o.modified + STALE_SECS > now))
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let l = Location::image("s3://lab-images/fleet/2026/pc01").unwrap();
        assert_eq!(l.bucket, "lab-images");
        assert_eq!(l.root, "fleet/2026/");
        assert_eq!(l.name, "pc01");
        assert_eq!(l.manifest_key(), "fleet/2026/images/pc01");
        assert_eq!(
            l.chunk_key(&[0xab; 32]),
            format!("fleet/2026/chunks/ab/{}", "ab".repeat(32))
        );
        assert_eq!(l.display(), "s3://lab-images/fleet/2026/pc01");
        let top = Location::image("S3://lab/pc02").unwrap();
        assert_eq!((top.root.as_str(), top.name.as_str()), ("", "pc02"));
        assert_eq!(Location::store("s3://lab/fleet/").unwrap().root, "fleet/");
        assert_eq!(Location::store("s3://lab").unwrap().root, "");
        for bad in [
            "s3://lab/",
            "s3://lab/a/",
            "s3://Lab/x",
            "s3://ab/x",
            "s3://lab/a/../b",
            "s3://lab/a//b",
        ] {
            let e = Location::image(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{bad}");
        }
        assert!(is_s3("s3://x") && !is_s3("/s3://x") && !is_s3("s3:/x"));
    }

    #[test]
    fn chunk_objects_round_trip_and_refuse_tampering() {
        let name = [7u8; 32];
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let plain = encode_chunk(&data, &name, 3, None).unwrap();
        assert!(plain.len() < data.len());
        assert_eq!(
            decode_chunk(plain.clone(), &name, data.len(), None).unwrap(),
            data
        );
        let key = DataKey::random().unwrap();
        let s = sealer(&key);
        let sealed = encode_chunk(&data, &name, 3, Some(&s)).unwrap();
        // No plaintext in the sealed object: the compressed frame is not there.
        assert!(!sealed.windows(16).any(|w| plain[8..24] == *w));
        assert_eq!(
            decode_chunk(sealed.clone(), &name, data.len(), Some(&s)).unwrap(),
            data
        );
        // Under another name, or flipped, or without the key: refused.
        assert!(decode_chunk(sealed.clone(), &[8u8; 32], data.len(), Some(&s)).is_err());
        let mut flip = sealed.clone();
        let n = flip.len() / 2;
        flip[n] ^= 1;
        assert!(decode_chunk(flip, &name, data.len(), Some(&s)).is_err());
        assert!(decode_chunk(sealed, &name, data.len(), None).is_err());
        assert!(decode_chunk(plain, &name, data.len(), Some(&s)).is_err());
        // Incompressible data is stored raw.
        let rnd: Vec<u8> = (0..4096u32)
            .map(|i| blake3::hash(&i.to_le_bytes()).as_bytes()[0])
            .collect();
        let raw = encode_chunk(&rnd, &name, 3, None).unwrap();
        assert_eq!(raw[4], COMP_RAW);
        assert_eq!(decode_chunk(raw, &name, rnd.len(), None).unwrap(), rnd);
    }

    #[test]
    fn names_are_keyed() {
        let h = *blake3::hash(b"chunk").as_bytes();
        assert_ne!(chunk_name(&[1; 32], &h), chunk_name(&[2; 32], &h));
        assert_ne!(chunk_name(&[1; 32], &h), h);
        assert_eq!(unhex32(&crate::image::format::hex(&h)), Some(h));
        assert_eq!(unhex("0g"), None);
    }
}
