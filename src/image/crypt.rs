//! Encrypted images (docs/image-format.md, "Encryption"): the data key and what is derived from
//! it (the record-sealing AEAD and the chunk-hash key), the two key slots in the header that
//! wrap the data key (Argon2id from a passphrase, or a random recovery key), sealing and opening
//! the records of the data stream, and [`Keys`]: where a passphrase comes from (a file, the
//! terminal, nowhere) and the cache that asks for it and runs the KDF once per chain.
//!
//! Every record of the data stream (chunk payload, index segment) is stored as
//! `nonce (24) ‖ ciphertext ‖ tag (16)`, sealed with the image's cipher (its id in the header):
//! AES-256-GCM (new images on a CPU with AES-NI and CLMUL: a deterministic 96-bit nonce from
//! the create's run number and the record's place, under a key of this image alone; the other
//! 12 bytes of the nonce field zero) or XChaCha20-Poly1305 (a random 192-bit nonce; older
//! images, and new ones on a CPU without AES-NI). The associated data binds every record to the
//! image's header (digest of every header byte but the volume number, the key slots and the
//! CRC, so the cipher id too) and to its place (volume, offset). The tail record binds the
//! segment table and the footer the same way.
use super::format::{Header, HEADER_SIZE};
use crate::error::{Error, ErrorKind, Result};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use zeroize::Zeroizing;

/// Bytes a sealed record adds to its plaintext: the nonce before it, the tag after it.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Where a sealed record's plaintext starts.
pub const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Cipher id 1: XChaCha20-Poly1305, random 192-bit nonces, one record key per chain.
pub const CIPHER_XCHACHA20_POLY1305: u8 = 1;
/// Cipher id 2: AES-256-GCM, deterministic 96-bit nonces ([`Sealer::with_run`]), one record key
/// per image (its data key and UUID).
pub const CIPHER_AES256_GCM: u8 = 2;
/// Environment variable naming the cipher of new images (`aes-256-gcm` or
/// `xchacha20-poly1305`) instead of choosing by this CPU ([`new_image_cipher`]): for the tests
/// of both ciphers on one machine; a user never needs it.
pub const CIPHER_ENV: &str = "LIFEBOAT_CIPHER";

/// The name of cipher `id` (as `image info` shows it).
pub fn cipher_name(id: u8) -> &'static str {
    match id {
        CIPHER_AES256_GCM => "aes-256-gcm",
        _ => "xchacha20-poly1305",
    }
}

/// The cipher of a new encrypted image (an incremental keeps its parent's): AES-256-GCM on a
/// CPU with AES-NI and carry-less multiply (ring's, 3-5 times XChaCha20-Poly1305's speed
/// there; see README's figures), else XChaCha20-Poly1305 (AES in portable constant-time code is several
/// times slower than ChaCha20). [`CIPHER_ENV`] overrides.
pub fn new_image_cipher() -> Result<u8> {
    if let Ok(v) = std::env::var(CIPHER_ENV) {
        return match v.trim() {
            "aes-256-gcm" => Ok(CIPHER_AES256_GCM),
            "xchacha20-poly1305" => Ok(CIPHER_XCHACHA20_POLY1305),
            _ => Err(Error::invalid(format!(
                "{CIPHER_ENV}={v:?}: use aes-256-gcm or xchacha20-poly1305"
            ))),
        };
    }
    Ok(if aes_is_fast() {
        CIPHER_AES256_GCM
    } else {
        CIPHER_XCHACHA20_POLY1305
    })
}

/// This CPU has the AES and carry-less multiply instructions AES-256-GCM is fast with.
fn aes_is_fast() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}
/// Where the encryption area starts in the header (replacing the source name and parent path,
/// which an encrypted image keeps in its sealed tail).
pub const AREA_AT: usize = 256;
/// Encryption area: cipher (1), flags (1), reserved (2), two key slots.
pub const AREA_LEN: usize = 4 + SLOTS * SLOT_LEN;
/// Key slots per image.
pub const SLOTS: usize = 2;
pub const SLOT_LEN: usize = 80;
/// The key slots' bytes in the header (left out of the header digest, so slots can change).
pub const SLOTS_RANGE: std::ops::Range<usize> = AREA_AT + 4..AREA_AT + AREA_LEN;
/// Area flag: the source's model and serial are stored in clear in the header.
pub const FLAG_IDENTITY_CLEAR: u8 = 1;
/// Length of the header's text fields (model, serial, source name, parent path) that an
/// encrypted image seals into its tail.
pub const TEXT_LEN: usize = 508 - 128;

/// A passphrase or recovery key as typed (wiped when dropped).
pub type Secret = Zeroizing<Vec<u8>>;

/// Argon2id cost parameters of a passphrase slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes over the memory.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

/// The target of [`KdfParams::tune`]: about one second on the machine that creates the image.
const KDF_TARGET_SECS: f64 = 1.0;
/// The most memory the KDF takes (the reading machine must have it too).
const KDF_MAX_KIB: u32 = 256 << 10;
/// The most passes [`KdfParams::tune`] chooses. With [`KDF_MAX_KIB`], the largest Argon2id
/// cost Lifeboat writes and so the largest it runs for a key slot it reads: a damaged or
/// hostile header asking for more (gigabytes of memory, thousands of passes) must not drive a
/// rescue environment that lives in RAM out of memory or keep it busy for hours.
const KDF_MAX_PASSES: u32 = 64;
const KDF_MIN_KIB: u32 = 32 << 10;
/// Environment variable with `M_KIB,T,P` Argon2id parameters used instead of tuning: for the
/// tests (a second of KDF per image would make them slow), never needed by a user.
pub const KDF_ENV: &str = "LIFEBOAT_KDF_PARAMS";

impl KdfParams {
    /// Whether these are parameters Lifeboat may have written (at most [`KDF_MAX_KIB`] of
    /// memory and [`KDF_MAX_PASSES`] passes): the only ones it derives a key with.
    pub fn within_limits(&self) -> bool {
        self.m_kib <= KDF_MAX_KIB && self.t <= KDF_MAX_PASSES
    }

    fn argon2(&self) -> Result<argon2::Argon2<'static>> {
        let p = argon2::Params::new(self.m_kib, self.t, self.p, Some(32)).map_err(|e| {
            Error::corrupt(format!("invalid Argon2id parameters in a key slot: {e}"))
        })?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            p,
        ))
    }

    /// Derives the 256-bit key-encryption key of `secret` with these parameters.
    pub fn derive(&self, secret: &[u8], salt: &[u8; 16]) -> Result<Zeroizing<[u8; 32]>> {
        let mut out = Zeroizing::new([0u8; 32]);
        self.argon2()?
            .hash_password_into(secret, salt, &mut out[..])
            .map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!(
                        "the key derivation (Argon2id, {} MiB) failed: {e}",
                        self.m_kib >> 10
                    ),
                )
            })?;
        Ok(out)
    }

    /// Parameters from [`KDF_ENV`], when set.
    pub fn from_env() -> Result<Option<KdfParams>> {
        let Ok(v) = std::env::var(KDF_ENV) else {
            return Ok(None);
        };
        let n: Vec<u32> = v
            .split(',')
            .map(|x| x.trim().parse::<u32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::invalid(format!("{KDF_ENV}={v:?}: use M_KIB,T,P")))?;
        match n[..] {
            [m_kib, t, p]
                if p >= 1
                    && t >= 1
                    && m_kib >= 8 * p
                    && KdfParams { m_kib, t, p }.within_limits() =>
            {
                Ok(Some(KdfParams { m_kib, t, p }))
            }
            _ => Err(Error::invalid(format!(
                "{KDF_ENV}={v:?}: use M_KIB,T,P with P >= 1, 1 <= T <= {KDF_MAX_PASSES}, \
                 8*P <= M_KIB <= {KDF_MAX_KIB}"
            ))),
        }
    }

    /// Chooses parameters for `secret` on this machine and derives its key with them: memory
    /// 256 MiB (less on a machine with under 1 GiB available), one lane, and as many passes
    /// as take about a second of this thread's CPU time ([`tune_passes`]). The speed is
    /// measured with one pass over a quarter of the memory (so the measurement costs a quarter
    /// of a pass, not a whole one that is then thrown away), in CPU time rather than wall
    /// time: a busy machine (other jobs, the create's own compressors beside it) does not
    /// choose fewer passes than an idle one would.
    pub fn tune(secret: &[u8], salt: &[u8; 16]) -> Result<(KdfParams, Zeroizing<[u8; 32]>)> {
        if let Some(p) = KdfParams::from_env()? {
            return Ok((p, p.derive(secret, salt)?));
        }
        let m_kib = (available_kib() / 4).clamp(KDF_MIN_KIB, KDF_MAX_KIB);
        let probe = KdfParams {
            m_kib: (m_kib / KDF_PROBE_SHARE).max(KDF_PROBE_MIN_KIB).min(m_kib),
            t: 1,
            p: 1,
        };
        let (cpu0, wall0) = (thread_cpu_secs(), std::time::Instant::now());
        probe.derive(secret, salt)?;
        let spent = match (cpu0, thread_cpu_secs()) {
            (Some(a), Some(b)) => b - a,
            // No thread clock (never on Linux): wall time, as long as a loaded machine's.
            _ => wall0.elapsed().as_secs_f64(),
        };
        let pass = spent * m_kib as f64 / probe.m_kib as f64;
        let p = KdfParams {
            m_kib,
            t: tune_passes(pass),
            p: 1,
        };
        Ok((p, p.derive(secret, salt)?))
    }
}

/// The measuring pass of [`KdfParams::tune`] runs over this share of the memory: a pass's
/// time per MiB grows a little with the memory (caches, TLB: 1.35 ms/MiB at 64 MiB against
/// 1.46 at 256 MiB on the development host), so a smaller probe estimates a faster pass and
/// chooses more passes, never fewer; a quarter keeps that excess under a tenth.
const KDF_PROBE_SHARE: u32 = 4;
const KDF_PROBE_MIN_KIB: u32 = 8 << 10;

/// Passes of about [`KDF_TARGET_SECS`] when one pass takes `pass` seconds: one when a pass
/// alone takes half the target or more, else the nearest count, at least two, at most 64.
fn tune_passes(pass: f64) -> u32 {
    let pass = pass.max(1e-4);
    if pass >= KDF_TARGET_SECS / 2.0 {
        return 1;
    }
    ((KDF_TARGET_SECS / pass).round() as u32).clamp(2, KDF_MAX_PASSES)
}

/// CPU time of the calling thread in seconds (user and system).
fn thread_cpu_secs() -> Option<f64> {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .ok()
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
}

/// MemAvailable of /proc/meminfo in KiB (1 GiB when it cannot be read).
pub(crate) fn available_kib() -> u32 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(1 << 20, |n| n.min(u32::MAX as u64) as u32)
}

/// What opens a key slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// A passphrase through Argon2id.
    Passphrase(KdfParams),
    /// A random 256-bit recovery key (printed by `image add-key`); no slow KDF needed.
    Recovery,
}

/// One key slot: the data key wrapped (XChaCha20-Poly1305, zero nonce: every slot has its own
/// random salt, so each wrapping key wraps exactly one data key) under a key derived from a
/// passphrase or a recovery key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySlot {
    pub kind: SlotKind,
    pub salt: [u8; 16],
    /// The wrapped data key and its tag.
    pub wrapped: [u8; 48],
}

impl KeySlot {
    fn encode(&self) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        let (kind, p) = match self.kind {
            SlotKind::Passphrase(p) => (1u8, p),
            SlotKind::Recovery => (
                2u8,
                KdfParams {
                    m_kib: 0,
                    t: 0,
                    p: 0,
                },
            ),
        };
        b[0] = kind;
        b[4..8].copy_from_slice(&p.m_kib.to_le_bytes());
        b[8..12].copy_from_slice(&p.t.to_le_bytes());
        b[12..16].copy_from_slice(&p.p.to_le_bytes());
        b[16..32].copy_from_slice(&self.salt);
        b[32..80].copy_from_slice(&self.wrapped);
        b
    }

    fn decode(b: &[u8]) -> Result<Option<KeySlot>> {
        let u = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let kind = match b[0] {
            0 if b.iter().all(|&x| x == 0) => return Ok(None),
            1 => {
                let p = KdfParams {
                    m_kib: u(4),
                    t: u(8),
                    p: u(12),
                };
                // Bounded before anything is allocated for it.
                if p.p == 0 || p.p > 16 || p.t == 0 || p.t > 1000 || p.m_kib > 4 << 20 {
                    return Err(Error::corrupt(
                        "image header has a key slot with invalid Argon2id parameters",
                    ));
                }
                SlotKind::Passphrase(p)
            }
            2 => SlotKind::Recovery,
            _ => {
                return Err(Error::corrupt(
                    "image header has a key slot of unknown kind",
                ))
            }
        };
        if b[1..4] != [0, 0, 0] {
            return Err(Error::corrupt(
                "image header has a key slot with reserved bits set",
            ));
        }
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&b[16..32]);
        let mut wrapped = [0u8; 48];
        wrapped.copy_from_slice(&b[32..80]);
        Ok(Some(KeySlot {
            kind,
            salt,
            wrapped,
        }))
    }

    /// The slot's bytes that are its wrapping's associated data (and its KDF cache key).
    fn head(&self) -> [u8; 32] {
        let mut h = [0u8; 32];
        h.copy_from_slice(&self.encode()[..32]);
        h
    }

    /// Wraps `key` for `secret` (a passphrase: Argon2id with `kdf`, or tuned when `None`).
    pub fn wrap_passphrase(
        key: &DataKey,
        secret: &[u8],
        kdf: Option<KdfParams>,
    ) -> Result<KeySlot> {
        let salt = random::<16>()?;
        let (params, kek) = match kdf {
            Some(p) => (p, p.derive(secret, &salt)?),
            None => KdfParams::tune(secret, &salt)?,
        };
        Ok(Self::wrap(key, SlotKind::Passphrase(params), salt, &kek))
    }

    /// Wraps `key` for a new random recovery key; returns the slot and the key as text.
    pub fn wrap_recovery(key: &DataKey) -> Result<(KeySlot, Zeroizing<String>)> {
        let raw = Zeroizing::new(random::<32>()?);
        let salt = random::<16>()?;
        let kek = recovery_kek(&raw, &salt);
        let text = Zeroizing::new(recovery_text(&raw));
        Ok((Self::wrap(key, SlotKind::Recovery, salt, &kek), text))
    }

    /// Wraps `key` for the recovery key `text` (as [`wrap_recovery`](Self::wrap_recovery)
    /// printed it) in another slot, with its own salt: one recovery key for every image of a
    /// chain (`image add-key --chain`).
    pub fn wrap_recovery_again(key: &DataKey, text: &str) -> Result<KeySlot> {
        let raw = parse_recovery(text.as_bytes())
            .ok_or_else(|| Error::invalid("not a recovery key (lbrk-…)"))?;
        let salt = random::<16>()?;
        let kek = recovery_kek(&raw, &salt);
        Ok(Self::wrap(key, SlotKind::Recovery, salt, &kek))
    }

    fn wrap(key: &DataKey, kind: SlotKind, salt: [u8; 16], kek: &[u8; 32]) -> KeySlot {
        let mut s = KeySlot {
            kind,
            salt,
            wrapped: [0; 48],
        };
        let mut buf = *key.0;
        let aead = XChaCha20Poly1305::new(kek.into());
        let tag = aead
            .encrypt_in_place_detached(&XNonce::default(), &s.head(), &mut buf)
            .expect("XChaCha20-Poly1305 seals 32 bytes");
        s.wrapped[..32].copy_from_slice(&buf);
        s.wrapped[32..].copy_from_slice(&tag);
        zeroize::Zeroize::zeroize(&mut buf);
        s
    }

    /// The data key, when `kek` is this slot's key-encryption key.
    fn unwrap(&self, kek: &[u8; 32]) -> Option<DataKey> {
        let mut buf = Zeroizing::new([0u8; 32]);
        buf.copy_from_slice(&self.wrapped[..32]);
        let aead = XChaCha20Poly1305::new(kek.into());
        aead.decrypt_in_place_detached(
            &XNonce::default(),
            &self.head(),
            &mut buf[..],
            Tag::from_slice(&self.wrapped[32..]),
        )
        .ok()?;
        Some(DataKey(buf))
    }
}

/// The key-encryption key of a recovery slot.
fn recovery_kek(raw: &[u8; 32], salt: &[u8; 16]) -> Zeroizing<[u8; 32]> {
    let mut m = Zeroizing::new([0u8; 48]);
    m[..32].copy_from_slice(raw);
    m[32..].copy_from_slice(salt);
    Zeroizing::new(blake3::derive_key(
        "lifeboat image recovery key slot v1",
        &m[..],
    ))
}

/// A recovery key as printed: `lbrk-` and 64 hex digits in groups of 8.
fn recovery_text(raw: &[u8; 32]) -> String {
    let hex = super::format::hex(raw);
    let groups: Vec<&str> = (0..8).map(|k| &hex[k * 8..k * 8 + 8]).collect();
    format!("lbrk-{}", groups.join("-"))
}

/// The recovery key in `secret` (as printed; case, dashes and spaces do not matter), if it is one.
fn parse_recovery(secret: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    let s = std::str::from_utf8(secret)
        .ok()?
        .trim()
        .to_ascii_lowercase();
    let s = s.strip_prefix("lbrk")?;
    let digits: Zeroizing<String> = Zeroizing::new(
        s.chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .collect::<String>(),
    );
    if digits.len() != 64 {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for (k, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(digits.get(2 * k..2 * k + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The encryption area of a header: cipher, flags and key slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptHeader {
    pub cipher: u8,
    /// The source's model and serial are in clear in the header (`--clear-identity`).
    pub identity_clear: bool,
    pub slots: [Option<KeySlot>; SLOTS],
}

impl CryptHeader {
    /// An area with cipher XChaCha20-Poly1305 (the S3 store's, whose objects are sealed with
    /// random nonces); a new image file takes [`new_image_cipher`] with [`with_cipher`](Self::with_cipher).
    pub fn new(identity_clear: bool) -> CryptHeader {
        Self::with_cipher(identity_clear, CIPHER_XCHACHA20_POLY1305)
    }

    pub fn with_cipher(identity_clear: bool, cipher: u8) -> CryptHeader {
        CryptHeader {
            cipher,
            identity_clear,
            slots: [None; SLOTS],
        }
    }

    /// Writes the area into `b` (the header's bytes `AREA_AT..AREA_AT + AREA_LEN`).
    pub fn encode_into(&self, b: &mut [u8]) {
        b[0] = self.cipher;
        b[1] = if self.identity_clear {
            FLAG_IDENTITY_CLEAR
        } else {
            0
        };
        for (k, s) in self.slots.iter().enumerate() {
            let at = 4 + k * SLOT_LEN;
            match s {
                Some(s) => b[at..at + SLOT_LEN].copy_from_slice(&s.encode()),
                None => b[at..at + SLOT_LEN].fill(0),
            }
        }
    }

    pub fn decode(b: &[u8]) -> Result<CryptHeader> {
        if b[0] != CIPHER_XCHACHA20_POLY1305 && b[0] != CIPHER_AES256_GCM {
            return Err(Error::unsupported(format!(
                "the image is encrypted with a cipher this Lifeboat does not know ({}); use a newer Lifeboat",
                b[0]
            )));
        }
        if b[1] & !FLAG_IDENTITY_CLEAR != 0 || b[2..4] != [0, 0] {
            return Err(Error::corrupt("image header has unknown encryption flags"));
        }
        let mut slots = [None; SLOTS];
        for (k, s) in slots.iter_mut().enumerate() {
            *s = KeySlot::decode(&b[4 + k * SLOT_LEN..4 + (k + 1) * SLOT_LEN])?;
        }
        Ok(CryptHeader {
            cipher: b[0],
            identity_clear: b[1] & FLAG_IDENTITY_CLEAR != 0,
            slots,
        })
    }

    /// Slots in use.
    pub fn used(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

/// An image's 256-bit data key (wiped when dropped). Images of one chain share it.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey(..)")
    }
}

impl PartialEq for DataKey {
    fn eq(&self, o: &DataKey) -> bool {
        // Not secret-dependent timing that matters here (both keys are already held), but
        // compare through hashes anyway so no early exit depends on key bytes.
        blake3::hash(&self.0[..]) == blake3::hash(&o.0[..])
    }
}

impl DataKey {
    /// A new random data key.
    pub fn random() -> Result<DataKey> {
        Ok(DataKey(Zeroizing::new(random::<32>()?)))
    }
    /// The key of keyed chunk hashes (BLAKE3 keyed mode).
    pub fn hash_key(&self) -> [u8; 32] {
        blake3::derive_key("lifeboat image chunk hash key v1", &self.0[..])
    }
    fn record_key(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(
            "lifeboat image record sealing key v1",
            &self.0[..],
        ))
    }
    /// The AES-256-GCM record key of the image `uuid`: images of a chain share the data key,
    /// and each numbers its nonces from the same places, so each has a key of its own.
    fn gcm_record_key(&self, uuid: &[u8; 16]) -> Zeroizing<[u8; 32]> {
        let mut m = Zeroizing::new([0u8; 48]);
        m[..32].copy_from_slice(&self.0[..]);
        m[32..].copy_from_slice(uuid);
        Zeroizing::new(blake3::derive_key(
            "lifeboat image record sealing key aes-256-gcm v1",
            &m[..],
        ))
    }
}

/// How chunk hashes are made: plain BLAKE3, or keyed BLAKE3 in an encrypted image (so equal
/// plaintext does not show as equal hashes to someone without the key).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub enum ChunkHasher {
    #[default]
    Plain,
    Keyed([u8; 32]),
}

impl std::fmt::Debug for ChunkHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkHasher::Plain => write!(f, "Plain"),
            ChunkHasher::Keyed(_) => write!(f, "Keyed(..)"),
        }
    }
}

impl ChunkHasher {
    pub fn hash(&self, data: &[u8]) -> [u8; 32] {
        match self {
            ChunkHasher::Plain => *blake3::hash(data).as_bytes(),
            ChunkHasher::Keyed(k) => *blake3::keyed_hash(k, data).as_bytes(),
        }
    }
}

/// The digest of a header that every sealed record's associated data starts with: BLAKE3 of
/// its bytes 0..508 with the volume number and the key slots zeroed.
pub fn header_digest(h: &Header) -> [u8; 32] {
    let mut b = h.encode();
    b[20..24].fill(0);
    if h.crypt.is_some() {
        b[SLOTS_RANGE].fill(0);
    }
    let mut d = blake3::Hasher::new_derive_key("lifeboat image header digest v1");
    d.update(&b[..HEADER_SIZE - 4]);
    *d.finalize().as_bytes()
}

/// A record cipher with its key.
enum Aead {
    XChaCha(XChaCha20Poly1305),
    /// ring's AES-256-GCM (see Cargo.toml for why ring's).
    Gcm(Box<ring::aead::LessSafeKey>),
}

/// Seals and opens the records of one image: its data key's AEAD and its header digest.
pub struct Sealer {
    aead: Aead,
    digest: [u8; 32],
    hasher: ChunkHasher,
    /// AES-256-GCM: the create's run number, the first 4 bytes of every nonce it makes
    /// ([`with_run`](Self::with_run)); None: this sealer only opens.
    run: Option<u32>,
}

impl Sealer {
    /// The sealer of the image with `header` (its cipher, UUID and digest).
    pub fn new(key: &DataKey, header: &Header) -> Sealer {
        let cipher = header
            .crypt
            .as_ref()
            .map_or(CIPHER_XCHACHA20_POLY1305, |c| c.cipher);
        let aead = match cipher {
            CIPHER_AES256_GCM => Aead::Gcm(Box::new(ring::aead::LessSafeKey::new(
                ring::aead::UnboundKey::new(
                    &ring::aead::AES_256_GCM,
                    &key.gcm_record_key(&header.uuid)[..],
                )
                .expect("a 32-byte AES-256-GCM key"),
            ))),
            _ => Aead::XChaCha(XChaCha20Poly1305::new((&*key.record_key()).into())),
        };
        Sealer {
            aead,
            digest: header_digest(header),
            hasher: ChunkHasher::Keyed(key.hash_key()),
            run: None,
        }
    }

    /// A sealer that writes records in run `run` of the image's create (0 for the first, one
    /// more for every resume, kept in the journal, so no run repeats a nonce of an earlier one
    /// at the same place). An AES-256-GCM sealer without a run seals nothing.
    pub fn with_run(mut self, run: u32) -> Sealer {
        self.run = Some(run);
        self
    }

    /// The sealer of an S3 store image's objects (`crate::s3::store`): the data key's record
    /// key and chunk-hash key, no header (store objects carry their own associated data).
    pub fn for_store(key: &DataKey) -> Sealer {
        Sealer {
            aead: Aead::XChaCha(XChaCha20Poly1305::new((&*key.record_key()).into())),
            digest: [0; 32],
            hasher: ChunkHasher::Keyed(key.hash_key()),
            run: None,
        }
    }

    /// The nonce field of a record sealed now at (`volume`, `offset`): XChaCha20-Poly1305's
    /// random 24 bytes; AES-256-GCM's run number (4 bytes), volume (2) and offset (6),
    /// little-endian, then 12 zero bytes.
    fn nonce(&self, volume: u16, offset: u64) -> Result<[u8; NONCE_LEN]> {
        match &self.aead {
            Aead::XChaCha(_) => random::<NONCE_LEN>(),
            Aead::Gcm(_) => {
                let run = self.run.ok_or_else(|| {
                    Error::invalid("internal: an AES-256-GCM record sealed without a run number")
                })?;
                if offset >> 48 != 0 {
                    return Err(Error::invalid(
                        "a volume of an AES-256-GCM image cannot pass 256 TiB",
                    ));
                }
                let mut n = [0u8; NONCE_LEN];
                n[..4].copy_from_slice(&run.to_le_bytes());
                n[4..6].copy_from_slice(&volume.to_le_bytes());
                n[6..12].copy_from_slice(&offset.to_le_bytes()[..6]);
                Ok(n)
            }
        }
    }

    pub fn hasher(&self) -> ChunkHasher {
        self.hasher
    }

    fn record_ad(&self, volume: u16, offset: u64) -> [u8; 45] {
        let mut ad = [0u8; 45];
        ad[..3].copy_from_slice(b"rec");
        ad[3..35].copy_from_slice(&self.digest);
        ad[35..37].copy_from_slice(&volume.to_le_bytes());
        ad[37..45].copy_from_slice(&offset.to_le_bytes());
        ad
    }

    /// Seals the concatenation of `parts` as the record at (`volume`, `offset`) into `out`
    /// (replacing its contents): nonce, ciphertext, tag.
    pub fn seal_record(
        &self,
        volume: u16,
        offset: u64,
        parts: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let nonce = self.nonce(volume, offset)?;
        self.seal_with(&nonce, &self.record_ad(volume, offset), parts, out)
    }

    /// Seals the tail record that starts at (`volume`, `offset`) with associated data `ad`
    /// ([`tail_ad`](Self::tail_ad)).
    pub fn seal_tail(
        &self,
        volume: u16,
        offset: u64,
        ad: &[u8],
        parts: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let nonce = self.nonce(volume, offset)?;
        self.seal_with(&nonce, ad, parts, out)
    }

    /// Opens the sealed record at (`volume`, `offset`) in place; the plaintext is
    /// `buf[NONCE..len - TAG]`, returned. `None` when it does not authenticate.
    pub fn open_record<'a>(
        &self,
        volume: u16,
        offset: u64,
        buf: &'a mut [u8],
    ) -> Option<&'a mut [u8]> {
        self.open(&self.record_ad(volume, offset), buf)
    }

    /// The associated data of the tail record: it binds the segment table and the footer.
    pub fn tail_ad(&self, segtab: &[u8], footer: &[u8]) -> Vec<u8> {
        let mut ad = Vec::with_capacity(36 + segtab.len() + footer.len());
        ad.extend_from_slice(b"tail");
        ad.extend_from_slice(&self.digest);
        ad.extend_from_slice(segtab);
        ad.extend_from_slice(footer);
        ad
    }

    /// Seals `parts` with associated data `ad` into `out` with a random nonce: nonce,
    /// ciphertext, tag. XChaCha20-Poly1305 only (the S3 store's objects); an AES-256-GCM
    /// sealer refuses (its nonces come from places: [`seal_record`](Self::seal_record)).
    pub fn seal(&self, ad: &[u8], parts: &[&[u8]], out: &mut Vec<u8>) -> Result<()> {
        if let Aead::Gcm(_) = self.aead {
            return Err(Error::invalid(
                "internal: an AES-256-GCM record sealed with a random nonce",
            ));
        }
        self.seal_with(&random::<NONCE_LEN>()?, ad, parts, out)
    }

    fn seal_with(
        &self,
        nonce: &[u8; NONCE_LEN],
        ad: &[u8],
        parts: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        out.reserve(NONCE_LEN + parts.iter().map(|p| p.len()).sum::<usize>() + TAG_LEN);
        out.extend_from_slice(nonce);
        for p in parts {
            out.extend_from_slice(p);
        }
        let too_large = || Error::invalid("a record is too large to seal");
        let body = &mut out[NONCE_LEN..];
        let tag: [u8; TAG_LEN] = match &self.aead {
            Aead::XChaCha(a) => a
                .encrypt_in_place_detached(XNonce::from_slice(nonce), ad, body)
                .map_err(|_| too_large())?
                .into(),
            Aead::Gcm(a) => {
                let tag = a
                    .seal_in_place_separate_tag(gcm_nonce(nonce), ring::aead::Aad::from(ad), body)
                    .map_err(|_| too_large())?;
                let mut t = [0u8; TAG_LEN];
                t.copy_from_slice(tag.as_ref());
                t
            }
        };
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Opens `buf` (nonce, ciphertext, tag) sealed with `ad`, in place. An AES-256-GCM record
    /// whose nonce field has anything but zeros after its 12 bytes does not open.
    pub fn open<'a>(&self, ad: &[u8], buf: &'a mut [u8]) -> Option<&'a mut [u8]> {
        if buf.len() < OVERHEAD {
            return None;
        }
        let (nonce, rest) = buf.split_at_mut(NONCE_LEN);
        let (ct, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        match &self.aead {
            Aead::XChaCha(a) => a
                .decrypt_in_place_detached(XNonce::from_slice(nonce), ad, ct, Tag::from_slice(tag))
                .ok()?,
            Aead::Gcm(a) => {
                if nonce[12..].iter().any(|&b| b != 0) {
                    return None;
                }
                let tag = ring::aead::Tag::try_from(&tag[..]).ok()?;
                a.open_in_place_separate_tag(
                    gcm_nonce(nonce),
                    ring::aead::Aad::from(ad),
                    tag,
                    ct,
                    0..,
                )
                .ok()?;
            }
        }
        Some(ct)
    }
}

/// The 96-bit AES-256-GCM nonce at the start of a record's nonce field.
fn gcm_nonce(field: &[u8]) -> ring::aead::Nonce {
    let mut n = [0u8; 12];
    n.copy_from_slice(&field[..12]);
    ring::aead::Nonce::assume_unique_for_key(n)
}

/// `N` random bytes from the kernel.
pub fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("cannot get random bytes from the kernel: {e}"),
        )
    })?;
    Ok(b)
}

/// Where a passphrase comes from.
#[derive(Clone)]
pub enum PassSource {
    /// Nowhere: an encrypted image is an error saying how to give one.
    None,
    /// Given (read from `--passphrase-file`, or by a test).
    Given(Secret),
    /// Asked on the controlling terminal, echo off (twice for a new image).
    Terminal,
    /// Encrypted images are opened without being unlocked: their clear structure (headers,
    /// footer, segment table) is checked, their sealed records cannot be read (`image copy`
    /// without a passphrase, which copies and compares the ciphertext).
    Locked,
}

/// Passphrases and derived keys of one job: asks (or reads) the passphrase once, and runs the
/// KDF once per distinct key slot, so a chain whose images share slots costs one derivation.
#[derive(Clone)]
pub struct Keys(Arc<KeysInner>);

struct KeysInner {
    source: PassSource,
    secret: Mutex<Option<Secret>>,
    /// (slot head, key-encryption key) of slots derived so far.
    keks: Mutex<Vec<(SlotHead, Zeroizing<[u8; 32]>)>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.0.source {
            PassSource::None => "none",
            PassSource::Given(_) => "given",
            PassSource::Terminal => "terminal",
            PassSource::Locked => "locked",
        };
        write!(f, "Keys({s})")
    }
}

/// A key slot's first 32 bytes (kind, KDF parameters, salt): what its KEK depends on.
type SlotHead = [u8; 32];

static GLOBAL: OnceLock<Mutex<Keys>> = OnceLock::new();

impl Keys {
    pub fn new(source: PassSource) -> Keys {
        Keys(Arc::new(KeysInner {
            source,
            secret: Mutex::new(None),
            keks: Mutex::new(Vec::new()),
        }))
    }
    /// A passphrase (or recovery key) given as bytes.
    pub fn passphrase(p: &[u8]) -> Keys {
        Keys::new(PassSource::Given(Zeroizing::new(p.to_vec())))
    }
    /// No passphrase: encrypted images cannot be opened.
    pub fn none() -> Keys {
        Keys::new(PassSource::None)
    }
    /// Encrypted images opened without being unlocked ([`PassSource::Locked`]).
    pub fn locked() -> Keys {
        Keys::new(PassSource::Locked)
    }
    /// Whether encrypted images are to be opened without being unlocked.
    pub fn is_locked(&self) -> bool {
        matches!(self.0.source, PassSource::Locked)
    }
    /// The keys of this process's job (set by the command line; none unless set).
    pub fn global() -> Keys {
        GLOBAL
            .get_or_init(|| Mutex::new(Keys::none()))
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// Sets the keys [`Keys::global`] returns.
    pub fn set_global(k: Keys) {
        *GLOBAL
            .get_or_init(|| Mutex::new(Keys::none()))
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = k;
    }

    /// The passphrase given to this job (`--passphrase-file`, or handed over), if any: never
    /// one still to be asked on the terminal.
    pub fn given(&self) -> Option<Secret> {
        match &self.0.source {
            PassSource::Given(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// The secret to open `what` with (asked once, then remembered).
    fn secret(&self, what: &Path) -> Result<Secret> {
        let mut cached = self.0.secret.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cached.as_ref() {
            return Ok(s.clone());
        }
        let s = match &self.0.source {
            PassSource::Given(s) => s.clone(),
            PassSource::Terminal => ask_terminal(&format!("Passphrase for {}: ", what.display()))?,
            PassSource::None | PassSource::Locked => return Err(needs_passphrase(what)),
        };
        *cached = Some(s.clone());
        Ok(s)
    }

    /// The passphrase of a new encrypted image: given, or asked twice on the terminal (once
    /// per job: asked again, the same is returned).
    pub fn new_secret(&self, what: &Path) -> Result<Secret> {
        if let Some(s) = self
            .0
            .secret
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Ok(s.clone());
        }
        let s = match &self.0.source {
            PassSource::Given(s) => s.clone(),
            PassSource::Terminal => {
                let a = ask_terminal(&format!(
                    "New passphrase for the encrypted image {}: ",
                    what.display()
                ))?;
                let b = ask_terminal("Type it again: ")?;
                if a != b {
                    return Err(Error::invalid(
                        "the two passphrases differ; nothing was written, run the command again",
                    ));
                }
                a
            }
            PassSource::None | PassSource::Locked => return Err(needs_passphrase(what)),
        };
        if s.is_empty() {
            return Err(Error::invalid(
                "an empty passphrase cannot protect an image; nothing was written",
            ));
        }
        *self.0.secret.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
        Ok(s)
    }

    /// Opens one of `ch`'s key slots with the secret: the image's data key and the slot number
    /// (0-based) that opened. Wrong: [`ErrorKind::WrongPassphrase`].
    pub fn unlock(&self, what: &Path, ch: &CryptHeader) -> Result<(DataKey, usize)> {
        let secret = self.secret(what)?;
        let recovery = parse_recovery(&secret);
        // A passphrase slot asking for more than Lifeboat writes is never derived (see
        // KDF_MAX_PASSES); another slot may still open.
        let mut too_costly = None;
        for (k, slot) in ch.slots.iter().enumerate() {
            let Some(slot) = slot else { continue };
            let kek = match slot.kind {
                SlotKind::Recovery => match &recovery {
                    Some(raw) => recovery_kek(raw, &slot.salt),
                    None => continue,
                },
                SlotKind::Passphrase(p) if !p.within_limits() => {
                    too_costly = Some((k, p));
                    continue;
                }
                SlotKind::Passphrase(p) => self.kek(slot, p, &secret)?,
            };
            if let Some(key) = slot.unwrap(&kek) {
                return Ok((key, k));
            }
        }
        if let Some((k, p)) = too_costly {
            return Err(Error::corrupt(format!(
                "key slot {} asks for a key derivation of {} MiB and {} passes, more than \
                 Lifeboat ever writes ({} MiB, {KDF_MAX_PASSES} passes), so it was not tried: \
                 the image's header is damaged or was not made by Lifeboat; open it with the \
                 other key slot's passphrase or recovery key, or use another copy of the image \
                 (nothing was written)",
                k + 1,
                p.m_kib >> 10,
                p.t,
                KDF_MAX_KIB >> 10
            ))
            .at_path(what));
        }
        Err(Error::new(
            ErrorKind::WrongPassphrase,
            "wrong passphrase: no key slot of the image opens with it (nothing was written)",
        )
        .at_path(what))
    }

    /// Wraps `key` in a new passphrase slot for `secret` (the KDF tuned on this machine) and
    /// remembers the slot's key-encryption key, so that opening the new image again in this
    /// job (its verify after writing) does not run the KDF a second time.
    pub fn wrap_new(&self, key: &DataKey, secret: &[u8]) -> Result<KeySlot> {
        let salt = random::<16>()?;
        let (params, kek) = KdfParams::tune(secret, &salt)?;
        test_kdf_delay();
        let slot = KeySlot::wrap(key, SlotKind::Passphrase(params), salt, &kek);
        self.0
            .keks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((slot.head(), kek));
        Ok(slot)
    }

    /// The key-encryption key of a passphrase slot (derived once per slot).
    fn kek(&self, slot: &KeySlot, p: KdfParams, secret: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let head = slot.head();
        let mut keks = self.0.keks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, k)) = keks.iter().find(|(h, _)| *h == head) {
            return Ok(k.clone());
        }
        let k = p.derive(secret, &slot.salt)?;
        keks.push((head, k.clone()));
        Ok(k)
    }
}

/// Tests only, and only in debug builds (release builds ignore it): with
/// `LIFEBOAT_TEST_KDF_DELAY_MS=N` a new image's key slot is ready N ms later than its KDF
/// says, as a slow machine's would be, so that a test sees the data path run ahead of it
/// (tests/image_crypt.rs).
fn test_kdf_delay() {
    if !cfg!(debug_assertions) {
        return;
    }
    if let Some(ms) = std::env::var("LIFEBOAT_TEST_KDF_DELAY_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms.min(600_000)));
    }
}

fn needs_passphrase(what: &Path) -> Error {
    Error::invalid(format!(
        "{} is encrypted: give its passphrase with --passphrase-file FILE, or run the command \
         on a terminal to be asked for it",
        what.display()
    ))
    .at_path(what)
}

/// Reads a passphrase (or recovery key) file: at most 64 KiB; one trailing newline is not part
/// of it.
pub fn read_passphrase_file(path: &Path) -> Result<Secret> {
    use std::io::Read;
    let f = crate::io::open::open_regular(path, "a passphrase file")?;
    let mut s = Zeroizing::new(Vec::new());
    f.take(64 << 10)
        .read_to_end(&mut s)
        .map_err(|e| Error::io("read the passphrase file", path, e))?;
    if s.len() >= 64 << 10 {
        return Err(Error::invalid("the passphrase file is larger than 64 KiB").at_path(path));
    }
    if s.last() == Some(&b'\n') {
        s.pop();
        if s.last() == Some(&b'\r') {
            s.pop();
        }
    }
    if s.is_empty() {
        return Err(Error::invalid("the passphrase file is empty").at_path(path));
    }
    Ok(s)
}

/// Asks on the controlling terminal with echo off; the line read, without its newline.
fn ask_terminal(prompt: &str) -> Result<Secret> {
    use nix::sys::termios::{self, LocalFlags, SetArg};
    use std::io::{BufRead, Write};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| {
            Error::invalid(
                "an encrypted image needs a passphrase and there is no terminal to ask on: give \
                 --passphrase-file FILE",
            )
        })?;
    let old = termios::tcgetattr(&tty).map_err(|e| {
        Error::io(
            "read the terminal settings of",
            "/dev/tty",
            std::io::Error::from(e),
        )
    })?;
    let mut quiet = old.clone();
    quiet.local_flags &= !LocalFlags::ECHO;
    quiet.local_flags |= LocalFlags::ECHONL;
    let mut w = &tty;
    let _ = w.write_all(prompt.as_bytes());
    let _ = w.flush();
    termios::tcsetattr(&tty, SetArg::TCSAFLUSH, &quiet)
        .map_err(|e| Error::io("turn echo off on", "/dev/tty", std::io::Error::from(e)))?;
    let mut line = Zeroizing::new(String::new());
    let r = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = termios::tcsetattr(&tty, SetArg::TCSAFLUSH, &old);
    r.map_err(|e| Error::io("read the passphrase from", "/dev/tty", e))?;
    let t = line.trim_end_matches(['\n', '\r']);
    Ok(Zeroizing::new(t.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    pub(super) fn header_for_speed() -> Header {
        header()
    }

    fn header() -> Header {
        let mut ch = CryptHeader::new(false);
        ch.slots[0] = Some(KeySlot {
            kind: SlotKind::Recovery,
            salt: [5; 16],
            wrapped: [6; 48],
        });
        Header {
            version: 2,
            compat: 0,
            incompat: super::super::format::FEAT_ENCRYPTED,
            volume: 1,
            uuid: [7; 16],
            parent_uuid: [0; 16],
            parent_media_hash: [0; 32],
            created: 1_700_000_000,
            disk_size: 8 << 20,
            sector_size: 512,
            chunk_size: 1 << 20,
            segment_chunks: 1024,
            split_size: 0,
            model: "M".into(),
            serial: "S".into(),
            source_name: "/dev/sda".into(),
            parent_path: String::new(),
            crypt: Some(ch),
        }
    }

    #[test]
    fn slots_wrap_and_unwrap() {
        let key = DataKey::random().unwrap();
        let slot = KeySlot::wrap_passphrase(&key, b"correct horse", Some(CHEAP)).unwrap();
        let (rslot, text) = KeySlot::wrap_recovery(&key).unwrap();
        let mut ch = CryptHeader::new(false);
        ch.slots = [Some(slot), Some(rslot)];
        let mut area = [0u8; AREA_LEN];
        ch.encode_into(&mut area);
        let back = CryptHeader::decode(&area).unwrap();
        assert_eq!(back, ch);
        let p = Path::new("x.lbi");
        let (k, n) = Keys::passphrase(b"correct horse").unlock(p, &back).unwrap();
        assert_eq!((k, n), (key.clone(), 0));
        let (k, n) = Keys::passphrase(text.as_bytes()).unlock(p, &back).unwrap();
        assert_eq!((k, n), (key.clone(), 1));
        // Case, spaces and a missing dash do not matter for a recovery key.
        let sloppy = text.to_uppercase().replacen('-', " ", 3);
        assert!(Keys::passphrase(sloppy.as_bytes()).unlock(p, &back).is_ok());
        let e = Keys::passphrase(b"correct horse!")
            .unlock(p, &back)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::WrongPassphrase);
        assert!(e.to_string().contains("wrong passphrase"), "{e}");
        assert_eq!(
            Keys::none().unlock(p, &back).unwrap_err().kind,
            ErrorKind::InvalidInput
        );
        // A slot whose bytes were changed does not open (its head is associated data).
        for at in [4usize, 16, 40, 79] {
            let mut a = area;
            a[at] ^= 1;
            let ok = CryptHeader::decode(&a)
                .ok()
                .and_then(|c| Keys::passphrase(b"correct horse").unlock(p, &c).ok());
            assert!(ok.is_none(), "flip at {at} still opens");
        }
    }

    #[test]
    fn kdf_runs_once_per_slot() {
        let key = DataKey::random().unwrap();
        let slot = KeySlot::wrap_passphrase(&key, b"pw", Some(CHEAP)).unwrap();
        let mut ch = CryptHeader::new(false);
        ch.slots[1] = Some(slot);
        let keys = Keys::passphrase(b"pw");
        keys.unlock(Path::new("a"), &ch).unwrap();
        keys.unlock(Path::new("b"), &ch).unwrap();
        assert_eq!(keys.0.keks.lock().unwrap().len(), 1);
    }

    fn header_with(cipher: u8) -> Header {
        let mut h = header();
        h.crypt.as_mut().unwrap().cipher = cipher;
        h
    }

    #[test]
    fn records_seal_and_bind_place_and_header() {
        for cipher in [CIPHER_XCHACHA20_POLY1305, CIPHER_AES256_GCM] {
            seal_and_bind(cipher);
        }
    }

    fn seal_and_bind(cipher: u8) {
        let key = DataKey::random().unwrap();
        let h = header_with(cipher);
        let s = Sealer::new(&key, &h).with_run(0);
        let mut out = Vec::new();
        s.seal_record(1, 512, &[b"hello ", b"world"], &mut out)
            .unwrap();
        assert_eq!(out.len(), 11 + OVERHEAD);
        assert!(!out.windows(5).any(|w| w == b"hello"));
        let mut b = out.clone();
        assert_eq!(s.open_record(1, 512, &mut b).unwrap(), b"hello world");
        // Another place, another volume, another header, another key: refused.
        assert!(s.open_record(1, 513, &mut out.clone()).is_none());
        assert!(s.open_record(2, 512, &mut out.clone()).is_none());
        let mut h2 = h.clone();
        h2.disk_size += 512;
        assert!(Sealer::new(&key, &h2)
            .open_record(1, 512, &mut out.clone())
            .is_none());
        assert!(Sealer::new(&DataKey::random().unwrap(), &h)
            .open_record(1, 512, &mut out.clone())
            .is_none());
        // Every single-byte change is caught.
        for i in 0..out.len() {
            let mut c = out.clone();
            c[i] ^= 0x40;
            assert!(s.open_record(1, 512, &mut c).is_none(), "flip at {i}");
        }
        // The other cipher with the same key does not open it (the cipher id is in the
        // header digest too).
        let other = if cipher == CIPHER_AES256_GCM {
            CIPHER_XCHACHA20_POLY1305
        } else {
            CIPHER_AES256_GCM
        };
        assert!(Sealer::new(&key, &header_with(other))
            .open_record(1, 512, &mut out.clone())
            .is_none());
        let mut again = Vec::new();
        s.seal_record(1, 512, &[b"hello world"], &mut again)
            .unwrap();
        if cipher == CIPHER_XCHACHA20_POLY1305 {
            // Two seals of the same bytes differ (random nonces).
            assert_ne!(again, out);
            return;
        }
        // AES-256-GCM: the nonce is the run, the place and zeros; the same run at the same
        // place gives the same bytes, another run or another image (UUID) other ones.
        assert_eq!(again, out);
        assert_eq!(&out[..12], &[0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0]);
        assert!(out[12..NONCE_LEN].iter().all(|&b| b == 0));
        let mut run7 = Vec::new();
        let s7 = Sealer::new(&key, &h).with_run(7);
        s7.seal_record(1, 512, &[b"hello world"], &mut run7)
            .unwrap();
        assert_eq!(&run7[..4], &7u32.to_le_bytes());
        assert_ne!(run7[NONCE_LEN..], out[NONCE_LEN..]);
        assert_eq!(s.open_record(1, 512, &mut run7).unwrap(), b"hello world");
        let mut h2 = h.clone();
        h2.uuid[3] ^= 1;
        let mut other_image = Vec::new();
        Sealer::new(&key, &h2)
            .with_run(0)
            .seal_record(1, 512, &[b"hello world"], &mut other_image)
            .unwrap();
        assert_eq!(other_image[..NONCE_LEN], out[..NONCE_LEN]);
        assert_ne!(other_image[NONCE_LEN..], out[NONCE_LEN..]);
        // Volume and offset are in the nonce: (1, 512) and (2, 512) and (1, 2^32 + 512) differ.
        let mut v2 = Vec::new();
        s.seal_record(2, 512, &[b"hello world"], &mut v2).unwrap();
        assert_eq!(&v2[4..6], &[2, 0]);
        let mut far = Vec::new();
        s.seal_record(1, (1 << 32) + 512, &[b"hello world"], &mut far)
            .unwrap();
        assert_eq!(&far[6..12], &[0, 2, 0, 0, 1, 0]);
        // Past 2^48 a nonce would wrap: refused. Without a run, or with a random nonce: refused.
        assert!(s.seal_record(1, 1 << 48, &[b"x"], &mut Vec::new()).is_err());
        assert!(Sealer::new(&key, &h)
            .seal_record(1, 512, &[b"x"], &mut Vec::new())
            .is_err());
        assert!(s.seal(b"ad", &[b"x"], &mut Vec::new()).is_err());
        // The tail is sealed at its own place too.
        let mut tail = Vec::new();
        s.seal_tail(1, 4096, b"tail ad", &[b"text"], &mut tail)
            .unwrap();
        assert_eq!(&tail[6..8], &[0, 16]);
        assert_eq!(s.open(b"tail ad", &mut tail).unwrap(), b"text");
    }

    #[test]
    fn the_cipher_id_round_trips_and_an_unknown_one_is_refused() {
        let mut ch = CryptHeader::with_cipher(true, CIPHER_AES256_GCM);
        ch.slots[0] = header().crypt.unwrap().slots[0];
        let mut area = [0u8; AREA_LEN];
        ch.encode_into(&mut area);
        assert_eq!(CryptHeader::decode(&area).unwrap(), ch);
        area[0] = 3;
        assert_eq!(
            CryptHeader::decode(&area).unwrap_err().kind,
            ErrorKind::Unsupported
        );
        assert_eq!(cipher_name(CIPHER_AES256_GCM), "aes-256-gcm");
        assert_eq!(cipher_name(CIPHER_XCHACHA20_POLY1305), "xchacha20-poly1305");
    }

    #[test]
    fn header_digest_ignores_volume_and_slots_only() {
        let h = header();
        let d = header_digest(&h);
        let mut v = h.clone();
        v.volume = 3;
        assert_eq!(header_digest(&v), d);
        let mut s = h.clone();
        s.crypt.as_mut().unwrap().slots[1] = s.crypt.as_ref().unwrap().slots[0];
        assert_eq!(header_digest(&s), d);
        let mut u = h.clone();
        u.uuid[0] ^= 1;
        assert_ne!(header_digest(&u), d);
        let mut c = h.clone();
        c.crypt.as_mut().unwrap().identity_clear = true;
        assert_ne!(header_digest(&c), d);
    }

    #[test]
    fn keyed_hashes_differ_by_key() {
        let a = DataKey::random().unwrap();
        let b = DataKey::random().unwrap();
        let data = [1u8; 4096];
        let ha = ChunkHasher::Keyed(a.hash_key()).hash(&data);
        assert_ne!(ha, ChunkHasher::Keyed(b.hash_key()).hash(&data));
        assert_ne!(ha, ChunkHasher::Plain.hash(&data));
        assert_eq!(
            ChunkHasher::Plain.hash(&data),
            *blake3::hash(&data).as_bytes()
        );
    }

    #[test]
    fn passes_are_tuned_to_about_a_second() {
        assert_eq!(tune_passes(0.37), 3);
        assert_eq!(tune_passes(0.30), 3);
        assert_eq!(tune_passes(0.2), 5);
        assert_eq!(tune_passes(0.45), 2);
        assert_eq!(tune_passes(0.5), 1);
        assert_eq!(tune_passes(3.0), 1);
        assert_eq!(tune_passes(0.0), 64);
        // The thread clock counts this thread's work, not the time it waits.
        let a = thread_cpu_secs().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let b = thread_cpu_secs().unwrap();
        let mut x = 0u64;
        for k in 0..50_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(k));
        }
        let c = thread_cpu_secs().unwrap();
        assert!(b - a < 0.1, "a sleep counted {} s of CPU", b - a);
        assert!(c > b, "work counted no CPU ({x})");
    }

    #[test]
    fn kdf_params_from_env_text() {
        // Parsed without touching the process environment (tests run in parallel).
        let p = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let salt = [1u8; 16];
        assert_eq!(
            p.derive(b"a", &salt).unwrap(),
            p.derive(b"a", &salt).unwrap()
        );
        assert_ne!(
            p.derive(b"a", &salt).unwrap(),
            p.derive(b"b", &salt).unwrap()
        );
        let bad = KdfParams {
            m_kib: 64,
            t: 0,
            p: 1,
        };
        assert!(bad.derive(b"a", &salt).is_err());
    }

    #[test]
    fn passphrase_file_strips_one_newline() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pw");
        std::fs::write(&p, b"secret words\n\n").unwrap();
        assert_eq!(&read_passphrase_file(&p).unwrap()[..], b"secret words\n");
        std::fs::write(&p, b"x\r\n").unwrap();
        assert_eq!(&read_passphrase_file(&p).unwrap()[..], b"x");
        std::fs::write(&p, b"\n").unwrap();
        assert_eq!(
            read_passphrase_file(&p).unwrap_err().kind,
            ErrorKind::InvalidInput
        );
    }
}

/// Seal and open speed of the two record ciphers on this machine, through [`Sealer`] as the
/// create and the verify use it (1 MiB records), beside RustCrypto's AES-256-GCM (why ring's is
/// used: Cargo.toml). Prints only, no timed assert:
/// `cargo test --release --lib image::crypt::speed -- --ignored --nocapture`.
#[cfg(test)]
mod speed {
    use super::*;

    fn mbps(bytes: usize, f: impl FnOnce()) -> f64 {
        let t = std::time::Instant::now();
        f();
        bytes as f64 / t.elapsed().as_secs_f64() / 1e6
    }

    /// (seal, open) MB/s of `n` records of `plain`'s size with `cipher`.
    fn sealer_speed(cipher: u8, plain: &[u8], n: usize) -> (f64, f64) {
        let mut h = super::tests::header_for_speed();
        h.crypt.as_mut().unwrap().cipher = cipher;
        let s = Sealer::new(&DataKey::random().unwrap(), &h).with_run(0);
        let mut recs = vec![Vec::new(); n];
        // Once untimed: the records' memory faulted in, as the create's reused buffers are.
        for (k, r) in recs.iter_mut().enumerate() {
            s.seal_record(1, 512 + k as u64 * (1 << 21), &[plain], r)
                .unwrap();
        }
        let seal = mbps(n * plain.len(), || {
            for (k, r) in recs.iter_mut().enumerate() {
                s.seal_record(1, 512 + k as u64 * (1 << 21), &[plain], r)
                    .unwrap();
            }
        });
        let open = mbps(n * plain.len(), || {
            for (k, r) in recs.iter_mut().enumerate() {
                assert!(s.open_record(1, 512 + k as u64 * (1 << 21), r).is_some());
            }
        });
        (seal, open)
    }

    #[test]
    #[ignore]
    #[allow(clippy::print_stdout)] // a measurement printed for a person (`--nocapture`)
    fn cipher_throughput() {
        let n = 256usize;
        let plain = vec![0x5au8; 1 << 20];
        let mut buf = plain.clone();
        let bytes = n * buf.len();
        let ad = [1u8; 45];
        for round in 0..3 {
            let (xs, xo) = sealer_speed(CIPHER_XCHACHA20_POLY1305, &plain, n);
            let (gs, go) = sealer_speed(CIPHER_AES256_GCM, &plain, n);
            let a = aes_gcm::Aes256Gcm::new(&[7u8; 32].into());
            let an = aes_gcm::Nonce::default();
            let mut tags = Vec::new();
            let rs = mbps(bytes, || {
                for _ in 0..n {
                    tags.push(a.encrypt_in_place_detached(&an, &ad, &mut buf).unwrap());
                }
            });
            let ro = mbps(bytes, || {
                for t in tags.iter().rev() {
                    let _ = a.decrypt_in_place_detached(&an, &ad, &mut buf, t);
                }
            });
            println!(
                "round {round}, MB/s on one core, 1 MiB records: xchacha20-poly1305 seal {xs:.0} \
                 open {xo:.0}; aes-256-gcm (ring) seal {gs:.0} open {go:.0}; aes-256-gcm \
                 (RustCrypto aes-gcm 0.10, not used) seal {rs:.0} open {ro:.0}"
            );
        }
    }
}
