//! `lifeboat image serve`: an image (a chain resolved: the disk as it was at that image) served
//! as a disk over NBD, read-only or with a copy-on-write overlay file, without restoring it.
//!
//! - `proto`: the NBD wire format, pure encode/decode functions;
//! - `session`: one connection (handshake, then requests), over any byte stream;
//! - `cache`: the image's chunks read on demand, checked, kept in a bounded LRU cache;
//! - `overlay`: the `--writable-overlay` file (writes never reach the image);
//! - `disk`: the served disk (cache + overlay);
//! - `net`: TCP and Unix-socket listeners;
//! - `attach`: `image mount`/`umount` (the disk through the kernel's NBD client);
//! - `extract`: `image ls` / `image extract`, the "restore files" job (`copytree` copies);
//! - this file: the server (a thread per client, at most `--max-clients`) and the command.
pub mod attach;
pub mod cache;
pub mod copytree;
pub mod disk;
pub mod extract;
pub mod net;
pub mod overlay;
pub mod proto;
pub mod session;

use crate::error::{exit, Error, Result};
use crate::image::format::{hex, uuid_str};
use crate::image::{Mode, Store};
use crate::jobs::Cancel;
use disk::{Disk, ImageDisk};
use net::{Listener, Stream};
use serde::Serialize;
use session::Export;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `lifeboat image serve` arguments.
#[derive(clap::Args, Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServeArgs {
    /// The image (PARTITION:/path too); the disk is served as it was at this image (an
    /// incremental's whole chain is followed).
    pub image: String,
    /// Listen on this TCP address (default 127.0.0.1:10809; use 0.0.0.0:10809 to serve the
    /// network, port 0 for any free port).
    #[arg(long, value_name = "ADDR", conflicts_with = "socket")]
    pub listen: Option<String>,
    /// Listen on a Unix socket at PATH instead (clients: nbd+unix:///?socket=PATH).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Take writes into FILE (created if missing; an existing overlay of this image is
    /// continued). The image is never written.
    #[arg(long, value_name = "FILE")]
    pub writable_overlay: Option<PathBuf>,
    /// Decompressed chunks kept in memory (default 64M): the server's memory is this plus a
    /// few chunks per client, whatever the image size.
    #[arg(long, value_name = "SIZE")]
    pub cache: Option<String>,
    /// Clients served at once (default 8); more are turned away.
    #[arg(long, value_name = "N")]
    pub max_clients: Option<u32>,
    #[arg(long, value_name = "FILE", help = crate::image::PASSPHRASE_FILE_HELP)]
    pub passphrase_file: Option<String>,
    /// Print one JSON object on stdout once the server listens.
    #[arg(long)]
    pub json: bool,
}

/// What `serve --json` prints once it listens.
#[derive(Debug, Clone, Serialize)]
pub struct ServeReport {
    pub ok: bool,
    pub image: PathBuf,
    /// How to connect: `nbd://HOST:PORT` or `nbd+unix:///?socket=PATH`.
    pub uri: String,
    pub export_name: String,
    pub size_bytes: u64,
    pub read_only: bool,
    pub overlay: Option<PathBuf>,
    pub cache_bytes: u64,
    pub max_clients: usize,
    pub media_hash: String,
    pub chain: Vec<crate::image::ops::ChainLink>,
}

pub const DEFAULT_CACHE: u64 = 64 << 20;
pub const DEFAULT_MAX_CLIENTS: usize = 8;
/// Chains opened for decompression at once (two clients read in parallel).
const READERS: usize = 2;
/// A client must finish the handshake within this time (a silent connection holds a slot).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens the disk of the image at `path` (its chain), with an overlay when given.
pub fn open_disk(
    path: &std::path::Path,
    overlay: Option<&std::path::Path>,
    cache_bytes: u64,
) -> Result<ImageDisk> {
    let cache = cache::ChunkCache::open(path, READERS, cache_bytes)?;
    let overlay = match overlay {
        Some(p) => {
            let top = crate::image::Image::open(path)?;
            Some(overlay::Overlay::open_or_create(
                p,
                cache.disk_size,
                top.header.uuid,
                top.footer.media_hash,
            )?)
        }
        None => None,
    };
    Ok(ImageDisk { cache, overlay })
}

/// The export a server offers for the image at `path`.
pub fn export_of(path: &std::path::Path, img: &crate::image::Image) -> Export {
    let h = &img.header;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let what = [h.model.as_str(), h.serial.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    Export {
        description: format!(
            "Lifeboat image of {} ({}), {}",
            if what.is_empty() {
                h.source_name.as_str()
            } else {
                what.as_str()
            },
            crate::jobs::fmt_bytes(h.disk_size),
            crate::image::ops::iso8601(h.created)
        ),
        name,
    }
}

/// Serves one connection to its end, logging how it ended.
pub fn serve_connection(disk: &dyn Disk, ex: &Export, stream: Stream, who: &str) {
    let (Ok(mut r), Ok(w)) = (stream.try_clone(), stream.try_clone()) else {
        crate::errln!("lifeboat: serve: {who}: cannot use the connection");
        return;
    };
    let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let mut w = std::io::BufWriter::with_capacity(128 << 10, w);
    let log = |l: &str| crate::errln!("lifeboat: serve: {who}: {l}");
    let end = session::run(
        &mut r,
        &mut w,
        disk,
        ex,
        &mut || {
            let _ = stream.set_read_timeout(None);
        },
        &log,
    );
    match end {
        Ok(e) => crate::errln!("lifeboat: serve: {who}: ended ({e:?})"),
        Err(d) => crate::errln!("lifeboat: serve: {who}: {d}"),
    }
    stream.shutdown();
}

/// Accepts clients until `cancel`, each on its own thread (at most `max_clients` at once);
/// then disconnects them and waits for their threads.
pub fn serve(
    listener: &Listener,
    disk: Arc<dyn Disk>,
    ex: Arc<Export>,
    max_clients: usize,
    cancel: &Cancel,
) -> Result<usize> {
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::os("set up the listener", e))?;
    let active = Arc::new(AtomicUsize::new(0));
    let mut clients: Vec<(Stream, std::thread::JoinHandle<()>)> = Vec::new();
    let mut served = 0usize;
    while !cancel.is_cancelled() {
        clients.retain(|(_, h)| !h.is_finished());
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                crate::errln!("lifeboat: serve: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        served += 1;
        let who = format!("client {served} ({peer})");
        if active.load(Ordering::SeqCst) >= max_clients {
            crate::errln!("lifeboat: serve: {who}: turned away ({max_clients} clients already)");
            stream.shutdown();
            continue;
        }
        let Ok(keep) = stream.try_clone() else {
            continue;
        };
        crate::errln!("lifeboat: serve: {who}: connected");
        active.fetch_add(1, Ordering::SeqCst);
        let (d, e, a) = (disk.clone(), ex.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("nbd-{served}"))
            .spawn(move || {
                serve_connection(&*d, &e, stream, &who);
                a.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(h) => clients.push((keep, h)),
            Err(e) => {
                active.fetch_sub(1, Ordering::SeqCst);
                keep.shutdown();
                crate::errln!("lifeboat: serve: cannot start a thread for a client: {e}");
            }
        }
    }
    for (s, _) in &clients {
        s.shutdown();
    }
    for (_, h) in clients {
        let _ = h.join();
    }
    disk.flush()?;
    Ok(served)
}

/// `lifeboat image serve`.
pub fn run(a: ServeArgs) -> Result<i32> {
    let cancel = Cancel::new();
    crate::jobs::cancel_on_signals(&cancel, "the server stops and disconnects its clients");
    let cache_bytes = match a.cache.as_deref() {
        Some(s) => crate::image::parse_size(s)?,
        None => DEFAULT_CACHE,
    };
    let max_clients = match a.max_clients {
        Some(0) => return Err(Error::invalid("--max-clients must be at least 1")),
        Some(n) => n as usize,
        None => DEFAULT_MAX_CLIENTS,
    };
    let store = Store::open(&a.image, Mode::ReadOnly)?;
    crate::image::ops::require_complete(&store.path)?;
    // The image and its parents are only read; the overlay is written and may share storage
    // with none of them.
    let mut check = crate::storage::Check::new();
    let chain = crate::image::cmd::chain_items(&mut check, &store.path, "the image")?;
    if let Some(o) = &a.writable_overlay {
        check.writes("the overlay", o)?;
    }
    check.run()?;
    let links = crate::image::ops::links(&chain);
    let top = &chain.images[0];
    let ex = export_of(&store.path, top);
    let media_hash = hex(&top.footer.media_hash);
    let uuid = uuid_str(&top.header.uuid);
    drop(chain);
    let disk = open_disk(&store.path, a.writable_overlay.as_deref(), cache_bytes)?;
    let listener = match (&a.socket, &a.listen) {
        (Some(p), _) => Listener::unix(p)?,
        (None, Some(addr)) => Listener::tcp(addr)?,
        (None, None) => Listener::tcp(&format!("127.0.0.1:{}", net::NBD_PORT))?,
    };
    let rep = ServeReport {
        ok: true,
        image: store.path.clone(),
        uri: listener.uri(),
        export_name: ex.name.clone(),
        size_bytes: disk.size(),
        read_only: !disk.writable(),
        overlay: a.writable_overlay.clone(),
        cache_bytes: disk.cache.capacity_chunks() as u64 * disk.cache.chunk_size,
        max_clients,
        media_hash,
        chain: links,
    };
    crate::cli::emit_report(&rep, a.json);
    crate::errln!(
        "lifeboat: serving {} ({}, image {uuid}) {} at {} — Ctrl-C stops",
        store.path.display(),
        crate::jobs::fmt_bytes(rep.size_bytes),
        match &rep.overlay {
            Some(o) => format!("with writes going to {}", o.display()),
            None => "read-only".into(),
        },
        rep.uri
    );
    let disk = Arc::new(disk);
    let served = serve(&listener, disk.clone(), Arc::new(ex), max_clients, &cancel)?;
    let st = disk.cache.stats();
    crate::errln!(
        "lifeboat: serve: stopped after {served} connection(s); {} chunks decompressed, {} cache hits, {} zero chunks{}",
        st.loads,
        st.hits,
        st.zero,
        disk.overlay
            .as_ref()
            .map(|o| format!(", {} blocks in the overlay", o.written_blocks()))
            .unwrap_or_default()
    );
    drop(listener);
    drop(store);
    Ok(exit::OK)
}
