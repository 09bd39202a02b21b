//! Disk images in an S3 store (`s3://BUCKET/DIR/NAME`): create (a disk read chunk by chunk —
//! used blocks only where the filesystems say so, as `image create` does — each chunk stored
//! once as a content-addressed object, in parallel with bounded memory, the manifest last),
//! restore, verify and info from the manifest, and the store commands `list`, `delete` and
//! `gc`. The layout and the objects' formats are in [`super::store`] and
//! docs/image-format.md ("Image store on S3").
//!
//! A create that stops (killed, cancelled, the network gone) leaves its upload record; the
//! same command run again resumes: it reads the disk again (hashing is what names chunks) and
//! stores only the chunks not there yet (those its record lists are not even asked for). An
//! encrypted image resumes under the same data key (its key slots are in the record).
use super::store::{self, Location, UploadRecord};
use super::Client;
use crate::error::{Error, ErrorKind, Result};
use crate::image::crypt::{ChunkHasher, CryptHeader, DataKey, Keys, Sealer};
use crate::image::format::{hex, new_uuid, uuid_str, MediaHasher, DEFAULT_CHUNK_SIZE};
use crate::io::{AlignedBuf, BlockSource};
use crate::jobs::Cancel;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MANIFEST_FORMAT: &str = "lifeboat-s3-image";
/// Parallel requests (and chunk buffers: memory is about 2 chunk sizes per worker).
pub const DEFAULT_WORKERS: usize = 8;

/// A manifest (`images/NAME`): the image's index and identity. For an encrypted image, `body`
/// is sealed (`sealed`) and only the sorted set of chunk objects it needs is in clear (`refs`,
/// for `store gc`; no order, so it does not show which chunks are zero, unallocated or where).
#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    uuid: String,
    created: u64,
    completed: u64,
    disk_size: u64,
    sector_size: u32,
    chunk_size: u32,
    encrypted: bool,
    /// Hex of the encryption area (cipher, flags, two key slots), as in an `.lbi` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    crypt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Body>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refs: Option<Vec<String>>,
}

/// What a manifest says about the disk (sealed in an encrypted image).
#[derive(serde::Serialize, serde::Deserialize, Clone)]
struct Body {
    model: String,
    serial: String,
    source_name: String,
    /// The used-block plan (as an `.lbi` usage record).
    usage: serde_json::Value,
    /// Hex of the store's chunk-name key when the image was made.
    name_key: String,
    /// Hex media hash (docs/image-format.md "Media hash"; keyed chunk hashes when encrypted).
    media_hash: String,
    /// One entry per chunk: `0` all zero, `u` unallocated (no used block; zeros), else the hex
    /// name of its chunk object.
    chunks: Vec<String>,
}

/// `image create SRC s3://…`'s options.
pub struct CreateOptions {
    pub encrypt: bool,
    pub identity_clear: bool,
    pub all_sectors: bool,
    pub force: bool,
    pub level: i32,
    pub workers: usize,
    pub keys: Keys,
}

/// What `image create` into a store reports (`--json`).
#[derive(serde::Serialize, Debug)]
pub struct CreateReport {
    pub ok: bool,
    pub exit_code: i32,
    pub image: String,
    pub uuid: String,
    pub encrypted: bool,
    pub disk_size_bytes: u64,
    pub chunk_size: u32,
    pub chunks: u64,
    pub stored_chunks: u64,
    pub zero_chunks: u64,
    pub unallocated_chunks: u64,
    /// Chunk objects written by this run.
    pub uploaded_chunks: u64,
    pub uploaded_bytes: u64,
    /// Chunks already in the store (another image's, or an interrupted run's).
    pub existing_chunks: u64,
    pub used_bytes: u64,
    pub media_hash: String,
    pub resumed: bool,
    pub elapsed_secs: f64,
}

/// Counters shared by the workers.
#[derive(Default)]
struct Counts {
    next: AtomicU64,
    finished: AtomicU64,
    uploaded: AtomicU64,
    uploaded_bytes: AtomicU64,
    existing: AtomicU64,
}

/// One chunk's outcome.
#[derive(Clone, Copy)]
enum Slot {
    Pending,
    Zero,
    Unallocated,
    Stored([u8; 32]),
}

fn secs(at: Instant) -> f64 {
    at.elapsed().as_secs_f64()
}

/// Reads chunk `i` of `src` into `buf` (its length): the bytes in `domain.read` ranges, with
/// bytes outside `domain.used` zeroed. `None` when no byte of the chunk is used (unallocated).
fn read_chunk(
    src: &dyn BlockSource,
    domain: &crate::image::feed::Domain,
    start: u64,
    buf: &mut [u8],
    scratch: &mut AlignedBuf,
) -> Result<bool> {
    buf.fill(0);
    let end = start + buf.len() as u64;
    let mut any = false;
    // The ranges are sorted: find the first that ends after `start`.
    let k = domain.read.partition_point(|r| r.1 <= start);
    for &(rs, re) in domain.read[k..].iter().take_while(|r| r.0 < end) {
        let (s, e) = (rs.max(start), re.min(end));
        let n = (e - s) as usize;
        let mut got = 0;
        while got < n {
            let r = src
                .read_at(&mut scratch[got..n], s + got as u64)
                .map_err(|e| {
                    Error::io("read the source", Path::new(&src.name()), e)
                        .at_offset(s + got as u64)
                })?;
            if r == 0 {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("the source ended early at byte {}", s + got as u64),
                ));
            }
            got += r;
        }
        let sc = &scratch[..n];
        match &domain.used {
            None => {
                buf[(s - start) as usize..(e - start) as usize].copy_from_slice(sc);
                any = true;
            }
            Some(used) => {
                let j = used.partition_point(|u| u.1 <= s);
                for &(us, ue) in used[j..].iter().take_while(|u| u.0 < e) {
                    let (a, b) = (us.max(s), ue.min(e));
                    if a < b {
                        buf[(a - start) as usize..(b - start) as usize]
                            .copy_from_slice(&sc[(a - s) as usize..(b - s) as usize]);
                        any = true;
                    }
                }
            }
        }
    }
    Ok(any || domain.used.is_none())
}

/// The data key of a new or resumed encrypted upload, and the encryption area to record.
fn upload_key(
    opts: &CreateOptions,
    resumed: Option<&UploadRecord>,
    what: &Path,
) -> Result<Option<(DataKey, CryptHeader)>> {
    if let Some(area) = resumed.and_then(|r| r.crypt.as_deref()) {
        let ch = decode_area(area, &what.display().to_string())?;
        let (k, _) = opts.keys.unlock(what, &ch)?;
        return Ok(Some((k, ch)));
    }
    if !opts.encrypt {
        return Ok(None);
    }
    let k = DataKey::random()?;
    let secret = opts.keys.new_secret(what)?;
    let slot = crate::image::crypt::KeySlot::wrap_passphrase(&k, &secret, None)?;
    let mut ch = CryptHeader::new(opts.identity_clear);
    ch.slots[0] = Some(slot);
    Ok(Some((k, ch)))
}

fn encode_area(ch: &CryptHeader) -> String {
    let mut b = vec![0u8; crate::image::crypt::AREA_LEN];
    ch.encode_into(&mut b);
    hex(&b)
}

/// The encryption area of a manifest or an upload record. Its cipher must be
/// XChaCha20-Poly1305: the store's objects are sealed with random nonces, which AES-256-GCM's
/// 96-bit nonces do not allow (an `.lbi` file's cipher 2 uses deterministic ones), so Lifeboat
/// never writes another cipher here. One that names another was changed or written by another
/// program: refused as damaged before any key is derived or anything is read or uploaded.
fn decode_area(s: &str, what: &str) -> Result<CryptHeader> {
    let b = store::unhex(s)
        .filter(|b| b.len() == crate::image::crypt::AREA_LEN)
        .ok_or_else(|| Error::corrupt("the image's key slots are damaged"))?;
    let ch = CryptHeader::decode(&b)?;
    if ch.cipher != crate::image::crypt::CIPHER_XCHACHA20_POLY1305 {
        return Err(Error::corrupt(format!(
            "{what}: the image's encryption area names cipher {} ({}), which an S3 store \
             never uses (its objects are sealed with random nonces: XChaCha20-Poly1305 only); \
             the manifest or upload record was changed or written by another program",
            ch.cipher,
            crate::image::crypt::cipher_name(ch.cipher)
        )));
    }
    Ok(ch)
}

/// Creates the image `loc` of `src` in the store.
pub fn create(
    src: Arc<dyn BlockSource>,
    id: &crate::image::SourceIdentity,
    loc: &Location,
    opts: &CreateOptions,
    cancel: &Cancel,
) -> Result<CreateReport> {
    let started = Instant::now();
    let c = store::client(loc)?;
    let what = loc.display();
    let name_key = store::name_key(&c, loc)?;
    if !opts.force && c.head(&loc.manifest_key())?.is_some() {
        return Err(Error::refused(format!(
            "{what} already exists; use --force to replace it (the old image stays until the \
             new one is complete)"
        )));
    }
    let size = src.size();
    let cs = DEFAULT_CHUNK_SIZE;
    let chunks = size.div_ceil(cs as u64);
    // An unfinished upload of the same disk size is resumed.
    let resumed = c
        .get(&loc.upload_key())?
        .and_then(|b| serde_json::from_slice::<UploadRecord>(&b).ok())
        .filter(|r| {
            r.format == store::UPLOAD_FORMAT
                && r.disk_size == size
                && r.chunk_size == cs
                && r.crypt.is_some() == opts.encrypt
        });
    let key = upload_key(opts, resumed.as_ref(), Path::new(&what))?;
    let sealer = key.as_ref().map(|(k, _)| store::sealer(k));
    let hasher = sealer.as_ref().map_or(ChunkHasher::Plain, |s| s.hasher());
    let now = store::now_secs();
    let mut record = match &resumed {
        Some(r) => UploadRecord {
            refreshed: now,
            ..r.clone()
        },
        None => UploadRecord {
            format: store::UPLOAD_FORMAT.into(),
            uuid: uuid_str(&new_uuid()?),
            started: now,
            refreshed: now,
            disk_size: size,
            chunk_size: cs,
            crypt: key.as_ref().map(|(_, ch)| encode_area(ch)),
            done: Vec::new(),
        },
    };
    // The exclusion with `store gc`: the record first, then a look for a gc lock.
    c.put(
        &loc.upload_key(),
        &serde_json::to_vec(&record).unwrap_or_default(),
    )?;
    if store::gc_running(&c, loc, store::now_secs())? {
        if resumed.is_none() {
            let _ = c.delete(&loc.upload_key());
        }
        return Err(Error::refused(format!(
            "a `store gc` is running on s3://{}/{} (its lock {} is fresh); nothing was stored: run \
             this again when it has finished",
            loc.bucket,
            loc.root,
            loc.gc_lock_key()
        )));
    }
    let done: Mutex<HashSet<[u8; 32]>> = Mutex::new(
        record
            .done
            .iter()
            .filter_map(|h| store::unhex32(h))
            .collect(),
    );
    // The used-block plan, as `image create` makes it.
    let mut plan = crate::fs::UsageMap::analyze(src.as_ref());
    if opts.all_sectors {
        plan.force_all_sectors("--all-sectors was given");
    }
    let used_mode = plan.any_used_blocks();
    let used: Option<Vec<(u64, u64)>> = used_mode.then(|| plan.extents().collect());
    let lbs = src.logical_block_size().max(512) as u64;
    let domain = crate::image::feed::Domain::new(used, size, lbs);
    let usage = serde_json::to_value(&plan).unwrap_or_default();

    let counts = Counts::default();
    let slots = Mutex::new(vec![Slot::Pending; chunks as usize]);
    let hashes = Mutex::new(vec![[0u8; 32]; chunks as usize]);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let stop = || cancel.is_cancelled() || failed.lock().map(|f| f.is_some()).unwrap_or(true);
    let workers = opts.workers.clamp(1, 64);
    let zero_full = hasher.hash(&vec![0u8; cs as usize]);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut buf = vec![0u8; cs as usize];
                let mut scratch = AlignedBuf::new(cs as usize);
                loop {
                    if stop() {
                        return;
                    }
                    let i = counts.next.fetch_add(1, Ordering::SeqCst);
                    if i >= chunks {
                        return;
                    }
                    let start = i * cs as u64;
                    let len = (size - start).min(cs as u64) as usize;
                    let r = (|| -> Result<(Slot, [u8; 32])> {
                        let data = &mut buf[..len];
                        let any = read_chunk(src.as_ref(), &domain, start, data, &mut scratch)?;
                        let zero = crate::io::is_zero(data);
                        let h = if zero && len == cs as usize {
                            zero_full
                        } else {
                            hasher.hash(data)
                        };
                        if !any {
                            return Ok((Slot::Unallocated, h));
                        }
                        if zero {
                            return Ok((Slot::Zero, h));
                        }
                        let name = store::chunk_name(&name_key, &h);
                        let known = done.lock().map(|d| d.contains(&name)).unwrap_or(false);
                        if !known {
                            let key = loc.chunk_key(&name);
                            if c.head(&key)?.is_some() {
                                counts.existing.fetch_add(1, Ordering::Relaxed);
                            } else {
                                let body =
                                    store::encode_chunk(data, &name, opts.level, sealer.as_ref())?;
                                c.put(&key, &body)?;
                                let n = counts.uploaded.fetch_add(1, Ordering::Relaxed) + 1;
                                kill_hook(n);
                                counts
                                    .uploaded_bytes
                                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                            }
                            if let Ok(mut d) = done.lock() {
                                d.insert(name);
                            }
                        } else {
                            counts.existing.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((Slot::Stored(name), h))
                    })();
                    match r {
                        Ok((slot, h)) => {
                            if let Ok(mut v) = slots.lock() {
                                v[i as usize] = slot;
                            }
                            if let Ok(mut v) = hashes.lock() {
                                v[i as usize] = h;
                            }
                            counts.finished.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            if let Ok(mut f) = failed.lock() {
                                f.get_or_insert(e);
                            }
                            return;
                        }
                    }
                }
            });
        }
        // This thread: progress on stderr, and the upload record refreshed (liveness for
        // `store gc`, and the chunks a rerun need not ask for).
        let mut last_save = Instant::now();
        let mut last_print = Instant::now();
        while counts.finished.load(Ordering::SeqCst) < chunks && !stop() {
            std::thread::sleep(Duration::from_millis(200));
            if last_print.elapsed() >= Duration::from_secs(10) {
                last_print = Instant::now();
                crate::errln!(
                    "s3: {} of {chunks} chunks ({} stored now, {} already in the store)",
                    counts.finished.load(Ordering::SeqCst),
                    counts.uploaded.load(Ordering::Relaxed),
                    counts.existing.load(Ordering::Relaxed)
                );
            }
            if last_save.elapsed() >= Duration::from_secs(store::REFRESH_SECS.min(save_secs())) {
                last_save = Instant::now();
                save_record(&c, loc, &mut record, &done);
            }
        }
    });
    let failure = failed.into_inner().unwrap_or(None);
    if failure.is_some() || cancel.is_cancelled() {
        save_record(&c, loc, &mut record, &done);
        let rerun = "run the same command again to resume it (chunks already stored are kept)";
        return Err(match failure {
            Some(e) if e.kind != ErrorKind::Cancelled => Error {
                msg: format!("{}; the upload of {what} is unfinished: {rerun}", e.msg),
                ..e
            },
            _ => Error::new(
                ErrorKind::Cancelled,
                format!("cancelled by the user: the upload of {what} is unfinished; {rerun}"),
            ),
        });
    }
    let slots = slots.into_inner().unwrap_or_default();
    let hashes = hashes.into_inner().unwrap_or_default();
    let mut mh = MediaHasher::new(size, cs);
    hashes.iter().for_each(|h| mh.add(h));
    let media_hash = mh.finish();
    let (mut stored, mut zero, mut unalloc) = (0, 0, 0);
    let list: Vec<String> = slots
        .iter()
        .map(|s| match s {
            Slot::Zero => {
                zero += 1;
                "0".to_string()
            }
            Slot::Unallocated => {
                unalloc += 1;
                "u".to_string()
            }
            Slot::Stored(n) => {
                stored += 1;
                hex(n)
            }
            Slot::Pending => String::new(),
        })
        .collect();
    if list.iter().any(String::is_empty) {
        return Err(Error::new(
            ErrorKind::Io,
            "internal error: a chunk was not stored",
        ));
    }
    let encrypted = key.is_some();
    let body = Body {
        model: id.model.clone(),
        serial: id.serial.clone(),
        source_name: id.name.clone(),
        usage,
        name_key: hex(&name_key),
        media_hash: hex(&media_hash),
        chunks: list,
    };
    let mut m = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: 1,
        uuid: record.uuid.clone(),
        created: record.started,
        completed: store::now_secs(),
        disk_size: size,
        sector_size: if src.logical_block_size() == 4096 {
            4096
        } else {
            512
        },
        chunk_size: cs,
        encrypted,
        crypt: record.crypt.clone(),
        body: None,
        sealed: None,
        refs: None,
    };
    match &sealer {
        None => m.body = Some(body),
        Some(s) => {
            let mut refs: Vec<String> = body
                .chunks
                .iter()
                .filter(|n| n.len() == 64)
                .cloned()
                .collect();
            refs.sort();
            refs.dedup();
            m.refs = Some(refs);
            let plain = serde_json::to_vec(&body).unwrap_or_default();
            let mut out = Vec::new();
            s.seal(&manifest_ad(&m), &[&plain], &mut out)?;
            m.sealed = Some(hex(&out));
        }
    }
    // The manifest last: only now is the image there.
    c.put(
        &loc.manifest_key(),
        &serde_json::to_vec(&m).unwrap_or_default(),
    )?;
    let _ = c.delete(&loc.upload_key());
    Ok(CreateReport {
        ok: true,
        exit_code: 0,
        image: what,
        uuid: record.uuid,
        encrypted,
        disk_size_bytes: size,
        chunk_size: cs,
        chunks,
        stored_chunks: stored,
        zero_chunks: zero,
        unallocated_chunks: unalloc,
        uploaded_chunks: counts.uploaded.load(Ordering::Relaxed),
        uploaded_bytes: counts.uploaded_bytes.load(Ordering::Relaxed),
        existing_chunks: counts.existing.load(Ordering::Relaxed),
        used_bytes: plan.used_bytes,
        media_hash: hex(&media_hash),
        resumed: resumed.is_some(),
        elapsed_secs: secs(started),
    })
}

/// Test hook: `LIFEBOAT_S3_KILL_AFTER_PUTS=N` kills this process with SIGKILL (no cleanup,
/// as a power cut or `kill -9` would) once N chunk objects are stored, so the resume of an
/// interrupted upload is tested at a known point whatever the machine's speed.
fn kill_hook(puts: u64) {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        std::env::var("LIFEBOAT_S3_KILL_AFTER_PUTS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
    });
    if *at == Some(puts) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Seconds between upload-record saves (`LIFEBOAT_S3_SAVE_SECS`, for tests; at most
/// [`store::REFRESH_SECS`]).
fn save_secs() -> u64 {
    std::env::var("LIFEBOAT_S3_SAVE_SECS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(store::REFRESH_SECS)
}

fn save_record(c: &Client, loc: &Location, r: &mut UploadRecord, done: &Mutex<HashSet<[u8; 32]>>) {
    r.refreshed = store::now_secs();
    if let Ok(d) = done.lock() {
        r.done = d.iter().map(|n| hex(n)).collect();
    }
    if let Err(e) = c.put(
        &loc.upload_key(),
        &serde_json::to_vec(r).unwrap_or_default(),
    ) {
        crate::errln!("lifeboat: warning: cannot save the upload record: {e}");
    }
}

/// The associated data of a sealed manifest body: every clear field of the manifest.
fn manifest_ad(m: &Manifest) -> Vec<u8> {
    format!(
        "lifeboat s3 manifest v1|{}|{}|{}|{}|{}|{}|{}|{}",
        m.uuid,
        m.created,
        m.completed,
        m.disk_size,
        m.sector_size,
        m.chunk_size,
        m.crypt.as_deref().unwrap_or(""),
        m.refs.as_ref().map_or(String::new(), |r| r.join(","))
    )
    .into_bytes()
}

/// An image read from the store: its manifest opened (unsealed with the passphrase when
/// encrypted).
pub struct Opened {
    loc: Location,
    c: Client,
    m: Manifest,
    body: Body,
    name_key: [u8; 32],
    sealer: Option<Sealer>,
}

/// The folder of a restore's result under `results/`: the target disk's serial (characters
/// other than letters, digits, `-`, `_` and `.` as `_`) for an unencrypted image; for an
/// encrypted one (`hasher`: its keyed chunk hasher) a name that does not show the serial to
/// the store — 32 hex digits of BLAKE3 keyed with a key derived from the image's chunk-hash key
/// (itself derived from the data key), the same for every restore of that disk from images of
/// that key. `unknown` for a disk without a serial, either way.
pub fn result_name(serial: &str, hasher: Option<ChunkHasher>) -> String {
    if serial.is_empty() {
        return "unknown".into();
    }
    if let Some(ChunkHasher::Keyed(k)) = hasher {
        let key = blake3::derive_key("lifeboat s3 result name key v1", &k);
        return hex(&blake3::keyed_hash(&key, serial.as_bytes()).as_bytes()[..16]);
    }
    let name: String = serial
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // `.` or `..` would be a path step to a store that normalises keys.
    if name.chars().all(|c| c == '.') {
        return name.replace('.', "_");
    }
    name
}

/// Opens the image at `loc`: a missing one is "not found" listing the store's images; an
/// unfinished upload is "incomplete".
pub fn open(loc: &Location, keys: &Keys) -> Result<Opened> {
    let c = store::client(loc)?;
    let what = loc.display();
    let Some(b) = c.get(&loc.manifest_key())? else {
        if c.head(&loc.upload_key())?.is_some() {
            return Err(Error::incomplete(format!(
                "{what} is an unfinished upload (its create was interrupted): run the same \
                 `image create` again to finish it"
            )));
        }
        let names = image_names(&c, loc)?;
        return Err(Error::not_found(format!(
            "there is no image {what}{}",
            if names.is_empty() {
                format!(" (no image in s3://{}/{})", loc.bucket, loc.root)
            } else {
                format!(" (images there: {})", names.join(", "))
            }
        )));
    };
    let m: Manifest = serde_json::from_slice(&b)
        .ok()
        .filter(|m: &Manifest| m.format == MANIFEST_FORMAT)
        .ok_or_else(|| Error::corrupt(format!("{what}: the manifest is damaged")))?;
    if m.version != 1 {
        return Err(Error::unsupported(format!(
            "{what}: a manifest of version {}; use a newer Lifeboat",
            m.version
        )));
    }
    let (body, sealer) = match (&m.crypt, &m.sealed, &m.body) {
        (None, None, Some(b)) if !m.encrypted => (b.clone(), None),
        (Some(area), Some(sealed), None) if m.encrypted => {
            let ch = decode_area(area, &what)?;
            let (k, _) = keys.unlock(Path::new(&what), &ch)?;
            let s = store::sealer(&k);
            let mut buf = store::unhex(sealed)
                .ok_or_else(|| Error::corrupt(format!("{what}: the manifest is damaged")))?;
            let plain = s.open(&manifest_ad(&m), &mut buf).ok_or_else(|| {
                Error::corrupt(format!(
                    "{what}: the manifest does not authenticate (changed or damaged)"
                ))
            })?;
            let b: Body = serde_json::from_slice(plain)
                .map_err(|_| Error::corrupt(format!("{what}: the manifest is damaged")))?;
            (b, Some(s))
        }
        _ => return Err(Error::corrupt(format!("{what}: the manifest is damaged"))),
    };
    let chunks = m.disk_size.div_ceil(m.chunk_size.max(1) as u64);
    let name_key = store::unhex32(&body.name_key);
    if body.chunks.len() as u64 != chunks
        || name_key.is_none()
        || !m.chunk_size.is_power_of_two()
        || m.chunk_size > 16 << 20
    {
        return Err(Error::corrupt(format!(
            "{what}: the manifest's index does not fit its disk size"
        )));
    }
    Ok(Opened {
        loc: loc.clone(),
        c,
        body,
        name_key: name_key.unwrap_or_default(),
        sealer,
        m,
    })
}

fn image_names(c: &Client, loc: &Location) -> Result<Vec<String>> {
    let p = loc.manifests_prefix();
    Ok(c.list(&p)?
        .into_iter()
        .filter_map(|o| o.key.strip_prefix(&p).map(String::from))
        .collect())
}

/// Where restored chunks go.
pub trait Sink: Sync {
    /// Writes chunk bytes at `offset`.
    fn write(&self, offset: u64, data: &[u8]) -> Result<()>;
}

impl Sink for crate::io::Device {
    fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let mut b = AlignedBuf::new(data.len());
        b[..data.len()].copy_from_slice(data);
        self.write_all_at(&b[..data.len()], offset)
    }
}

/// What restore and verify report.
#[derive(serde::Serialize, Debug)]
pub struct ReadReport {
    pub ok: bool,
    pub exit_code: i32,
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub uuid: String,
    pub encrypted: bool,
    pub disk_size_bytes: u64,
    pub chunks: u64,
    pub stored_chunks: u64,
    pub zero_chunks: u64,
    pub unallocated_chunks: u64,
    pub fetched_bytes: u64,
    pub media_hash: String,
    pub media_hash_ok: bool,
    pub elapsed_secs: f64,
}

impl Opened {
    pub fn disk_size(&self) -> u64 {
        self.m.disk_size
    }
    pub fn serial(&self) -> &str {
        &self.body.serial
    }
    pub fn bucket(&self) -> &str {
        &self.loc.bucket
    }

    /// Reads every chunk (fetched, opened, hashed and checked against its name) in parallel
    /// and hands it to `sink` (zero chunks too; unallocated ones only with `zero_free`);
    /// then checks the media hash. Without a sink: verify.
    pub fn read_all(
        &self,
        sink: Option<&dyn Sink>,
        zero_free: bool,
        workers: usize,
        cancel: &Cancel,
    ) -> Result<ReadReport> {
        let started = Instant::now();
        let (size, cs) = (self.m.disk_size, self.m.chunk_size);
        let chunks = size.div_ceil(cs as u64);
        let hasher = self
            .sealer
            .as_ref()
            .map_or(ChunkHasher::Plain, |s| s.hasher());
        let zero_full = hasher.hash(&vec![0u8; cs as usize]);
        let next = AtomicU64::new(0);
        let fetched = AtomicU64::new(0);
        let hashes = Mutex::new(vec![[0u8; 32]; chunks as usize]);
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        let stop = || cancel.is_cancelled() || failed.lock().map(|f| f.is_some()).unwrap_or(true);
        let what = self.loc.display();
        std::thread::scope(|s| {
            for _ in 0..workers.clamp(1, 64) {
                s.spawn(|| loop {
                    if stop() {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= chunks {
                        return;
                    }
                    let start = i * cs as u64;
                    let len = (size - start).min(cs as u64) as usize;
                    let r = (|| -> Result<[u8; 32]> {
                        let entry = &self.body.chunks[i as usize];
                        let damaged = |why: &str| {
                            Error::corrupt(format!(
                                "{what}: chunk {i} (disk bytes {start}..{}) {why}",
                                start + len as u64
                            ))
                            .at_offset(start)
                        };
                        if entry == "0" || entry == "u" {
                            let zeros = vec![0u8; len];
                            if let Some(sk) = sink.filter(|_| entry == "0" || zero_free) {
                                sk.write(start, &zeros)?;
                            }
                            return Ok(if len == cs as usize {
                                zero_full
                            } else {
                                hasher.hash(&zeros)
                            });
                        }
                        let name =
                            store::unhex32(entry).ok_or_else(|| damaged("has a damaged entry"))?;
                        let body = self
                            .c
                            .get(&self.loc.chunk_key(&name))?
                            .ok_or_else(|| damaged("is missing from the store"))?;
                        fetched.fetch_add(body.len() as u64, Ordering::Relaxed);
                        let data = store::decode_chunk(body, &name, len, self.sealer.as_ref())
                            .map_err(|w| damaged(&format!("is damaged: {w}")))?;
                        let h = hasher.hash(&data);
                        if store::chunk_name(&self.name_key, &h) != name {
                            return Err(damaged("does not hash to its name (damaged)"));
                        }
                        if let Some(sk) = sink {
                            sk.write(start, &data)?;
                        }
                        Ok(h)
                    })();
                    match r {
                        Ok(h) => {
                            if let Ok(mut v) = hashes.lock() {
                                v[i as usize] = h;
                            }
                        }
                        Err(e) => {
                            if let Ok(mut f) = failed.lock() {
                                f.get_or_insert(e);
                            }
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().unwrap_or(None) {
            return Err(e);
        }
        if cancel.is_cancelled() {
            return Err(Error::cancelled());
        }
        let mut mh = MediaHasher::new(size, cs);
        hashes
            .into_inner()
            .unwrap_or_default()
            .iter()
            .for_each(|h| mh.add(h));
        let ok = hex(&mh.finish()) == self.body.media_hash;
        if !ok {
            return Err(Error::corrupt(format!(
                "{what}: the media hash does not match the manifest's (damaged manifest)"
            )));
        }
        let count = |t: &str| self.body.chunks.iter().filter(|c| *c == t).count() as u64;
        Ok(ReadReport {
            ok: true,
            exit_code: 0,
            image: what,
            target: None,
            uuid: self.m.uuid.clone(),
            encrypted: self.m.encrypted,
            disk_size_bytes: size,
            chunks,
            stored_chunks: chunks - count("0") - count("u"),
            zero_chunks: count("0"),
            unallocated_chunks: count("u"),
            fetched_bytes: fetched.load(Ordering::Relaxed),
            media_hash: self.body.media_hash.clone(),
            media_hash_ok: ok,
            elapsed_secs: secs(started),
        })
    }

    /// Stores a job's result in the store as `results/NAME/TIME.json`, so a fleet restoring at
    /// once leaves one record per machine. Returns the key. NAME: see [`result_name`].
    pub fn put_result(&self, serial: &str, report: &serde_json::Value) -> Result<String> {
        let serial = result_name(serial, self.sealer.as_ref().map(|s| s.hasher()));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let key = format!(
            "{}results/{serial}/{}.json",
            self.loc.root,
            super::sigv4::amz_date(now.as_secs())
        );
        self.c
            .put(&key, report.to_string().as_bytes())
            .map(|()| key)
    }

    /// `image info`'s report.
    pub fn info(&self) -> serde_json::Value {
        let m = &self.m;
        let count = |t: &str| self.body.chunks.iter().filter(|c| *c == t).count();
        let distinct: HashSet<&String> =
            self.body.chunks.iter().filter(|c| c.len() == 64).collect();
        serde_json::json!({
            "ok": true,
            "exit_code": 0,
            "image": self.loc.display(),
            "complete": true,
            "uuid": m.uuid,
            "encrypted": m.encrypted,
            "created": m.created,
            "completed": m.completed,
            "disk_size_bytes": m.disk_size,
            "sector_size": m.sector_size,
            "chunk_size": m.chunk_size,
            "chunks": self.body.chunks.len(),
            "stored_chunks": self.body.chunks.len() - count("0") - count("u"),
            "distinct_chunk_objects": distinct.len(),
            "zero_chunks": count("0"),
            "unallocated_chunks": count("u"),
            "source": {
                "model": self.body.model,
                "serial": self.body.serial,
                "name": self.body.source_name,
            },
            "usage": self.body.usage,
            "media_hash": self.body.media_hash,
        })
    }
}

/// `store list`: the images of a store.
pub fn list(loc: &Location) -> Result<serde_json::Value> {
    let c = store::client(loc)?;
    let p = loc.manifests_prefix();
    let images: Vec<serde_json::Value> = c
        .list(&p)?
        .into_iter()
        .map(|o| {
            serde_json::json!({
                "name": o.key.strip_prefix(&p).unwrap_or(&o.key),
                "manifest_bytes": o.size,
                "modified": o.modified,
            })
        })
        .collect();
    let uploads: Vec<String> = c
        .list(&loc.uploads_prefix())?
        .into_iter()
        .filter_map(|o| o.key.strip_prefix(&loc.uploads_prefix()).map(String::from))
        .collect();
    Ok(serde_json::json!({
        "ok": true,
        "exit_code": 0,
        "store": format!("s3://{}/{}", loc.bucket, loc.root),
        "images": images,
        "unfinished_uploads": uploads,
    }))
}

/// `store delete s3://…/NAME`: removes the image's manifest (its chunks go at the next gc).
pub fn delete(loc: &Location) -> Result<serde_json::Value> {
    let c = store::client(loc)?;
    if c.head(&loc.manifest_key())?.is_none() {
        return Err(Error::not_found(format!(
            "there is no image {}",
            loc.display()
        )));
    }
    c.delete(&loc.manifest_key())?;
    Ok(serde_json::json!({
        "ok": true,
        "exit_code": 0,
        "deleted": loc.display(),
    }))
}

/// What `store gc` reports.
#[derive(serde::Serialize, Debug)]
pub struct GcReport {
    pub ok: bool,
    pub exit_code: i32,
    pub store: String,
    pub images: u64,
    pub chunk_objects: u64,
    pub referenced: u64,
    pub deleted: u64,
    pub deleted_bytes: u64,
    /// Records of uploads that died (not refreshed for [`store::STALE_SECS`]), removed.
    pub stale_uploads_removed: Vec<String>,
}

/// `store gc`: deletes the chunk objects no manifest of the store refers to. Takes the gc
/// lock, then refuses (deleting nothing) while a fresh upload record exists (see
/// [`super::store`] for why that is safe against a concurrent upload).
pub fn gc(loc: &Location) -> Result<GcReport> {
    let c = store::client(loc)?;
    let store_name = format!("s3://{}/{}", loc.bucket, loc.root);
    c.put(
        &loc.gc_lock_key(),
        format!("{{\"gc_started\":{}}}", store::now_secs()).as_bytes(),
    )?;
    let r = gc_locked(&c, loc, &store_name);
    let _ = c.delete(&loc.gc_lock_key());
    r
}

fn gc_locked(c: &Client, loc: &Location, store_name: &str) -> Result<GcReport> {
    let now = store::now_secs();
    let all_uploads = c.list(&loc.uploads_prefix())?;
    let live: Vec<&super::Object> = all_uploads
        .iter()
        .filter(|o| o.modified + store::STALE_SECS > now)
        .collect();
    if !live.is_empty() {
        let names: Vec<&str> = live
            .iter()
            .map(|o| o.key.strip_prefix(&loc.uploads_prefix()).unwrap_or(&o.key))
            .collect();
        return Err(Error::refused(format!(
            "an upload into {store_name} is in progress ({}); nothing was deleted: run \
             `store gc` again when it has finished (an upload killed and never resumed stops \
             counting after {} hours)",
            names.join(", "),
            store::STALE_SECS / 3600
        )));
    }
    let mut referenced: HashSet<String> = HashSet::new();
    let mp = loc.manifests_prefix();
    let manifests = c.list(&mp)?;
    for o in &manifests {
        let b = c.get(&o.key)?.unwrap_or_default();
        let m: Manifest = serde_json::from_slice(&b)
            .ok()
            .filter(|m: &Manifest| m.format == MANIFEST_FORMAT && m.version == 1)
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "s3://{}/{} is not a manifest Lifeboat can read, so gc cannot know which \
                     chunks it needs; nothing was deleted",
                    loc.bucket, o.key
                ))
            })?;
        let refs: Vec<String> = match (&m.body, &m.refs) {
            (Some(b), _) => b.chunks.iter().filter(|c| c.len() == 64).cloned().collect(),
            (None, Some(r)) => r.clone(),
            (None, None) => {
                return Err(Error::corrupt(format!(
                    "s3://{}/{} lists no chunks; nothing was deleted",
                    loc.bucket, o.key
                )))
            }
        };
        referenced.extend(refs);
    }
    // Stale upload records go first: a rerun must not trust their lists of stored chunks.
    let mut stale = Vec::new();
    for o in &all_uploads {
        c.delete(&o.key)?;
        stale.push(
            o.key
                .strip_prefix(&loc.uploads_prefix())
                .unwrap_or(&o.key)
                .to_string(),
        );
    }
    let cp = loc.chunks_prefix();
    let objects = c.list(&cp)?;
    let (mut deleted, mut bytes) = (0u64, 0u64);
    let mut kept = 0u64;
    for o in &objects {
        let name = o.key.rsplit('/').next().unwrap_or("");
        if referenced.contains(name) {
            kept += 1;
            continue;
        }
        c.delete(&o.key)?;
        deleted += 1;
        bytes += o.size;
    }
    Ok(GcReport {
        ok: true,
        exit_code: 0,
        store: store_name.to_string(),
        images: manifests.len() as u64,
        chunk_objects: objects.len() as u64,
        referenced: kept,
        deleted,
        deleted_bytes: bytes,
        stale_uploads_removed: stale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unencrypted image's results are under the serial (the fleet contract); an encrypted
    /// one's under a keyed name that neither shows the serial nor is the same under another
    /// key, and is the same for the same disk and key.
    #[test]
    fn result_names_show_the_serial_only_for_unencrypted_images() {
        assert_eq!(result_name("WD-WX12 34/5", None), "WD-WX12_34_5");
        assert_eq!(result_name("", None), "unknown");
        assert_eq!(result_name("..", None), "__");
        let k1 = Sealer::for_store(&DataKey::random().unwrap()).hasher();
        let k2 = Sealer::for_store(&DataKey::random().unwrap()).hasher();
        let a = result_name("WD-WX1234", Some(k1));
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert!(!a.contains("WD") && !a.contains("1234"), "{a}");
        assert_eq!(result_name("WD-WX1234", Some(k1)), a);
        assert_ne!(result_name("WD-WX1235", Some(k1)), a);
        assert_ne!(result_name("WD-WX1234", Some(k2)), a);
        assert_eq!(result_name("", Some(k1)), "unknown");
    }

    /// A store's encryption area must name XChaCha20-Poly1305; AES-256-GCM (an `.lbi` file's
    /// cipher 2) is refused as damaged, naming the cipher.
    #[test]
    fn an_area_naming_aes_gcm_is_refused() {
        use crate::image::crypt::{CIPHER_AES256_GCM, CIPHER_XCHACHA20_POLY1305};
        let ok = encode_area(&CryptHeader::new(false));
        assert_eq!(
            decode_area(&ok, "s3://b/x").unwrap().cipher,
            CIPHER_XCHACHA20_POLY1305
        );
        let gcm = encode_area(&CryptHeader::with_cipher(false, CIPHER_AES256_GCM));
        let e = decode_area(&gcm, "s3://b/x").unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Corrupt);
        assert!(e.to_string().contains("aes-256-gcm"), "{e}");
    }
}
