//! Worker threads that do the console's I/O off the UI thread and send events: the disk
//! inventory (polled every 2 s, so hot-plugged disks appear) with each drive's health (read once
//! per drive, in the background, refreshed every 10 minutes), the job directory (every 0.5 s),
//! a source's used-block plan (once, for the confirmation and location screens), the free
//! space of the partitions an image can go to, and the "restore files" browser's mount of an
//! image partition and its directory listings; the network: a network place's check (mount,
//! free space, unmount), the adapters' state, a new configuration.
use super::app::Event;
use crate::devices::Disk;
use crate::health::Health;
use crate::jobs::jobdir;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// How long a drive's health reading is reused before it is read again.
const HEALTH_REFRESH: Duration = Duration::from_secs(600);

/// Health readings by drive: the same kernel name, device number, serial and size is the same
/// drive (a different disk plugged into the same port is read afresh).
type HealthCache = HashMap<(String, String, Option<String>, u64), (Instant, Health)>;

fn health_key(d: &Disk) -> (String, String, Option<String>, u64) {
    (
        d.name.clone(),
        d.dev.clone(),
        d.serial.clone(),
        d.size_bytes,
    )
}

/// Puts the cached health on each disk; returns the disks with none (or a stale one).
fn apply_health(disks: &mut [Disk], cache: &HealthCache) -> Vec<usize> {
    let mut missing = Vec::new();
    for (i, d) in disks.iter_mut().enumerate() {
        match cache.get(&health_key(d)) {
            Some((at, h)) => {
                d.health = Some(h.clone());
                if at.elapsed() > HEALTH_REFRESH {
                    missing.push(i);
                }
            }
            None => missing.push(i),
        }
    }
    missing
}

pub fn spawn_disk_scanner(tx: Sender<Event>) {
    std::thread::spawn(move || {
        let mut last = None;
        let mut last_unsupported = None;
        let mut cache = HealthCache::new();
        loop {
            // Controllers without a driver, then those with one but no disk.
            let c = crate::devices::controllers::scan(std::path::Path::new("/sys"));
            let mut u = c.unsupported;
            u.extend(c.without_disks);
            if last_unsupported.as_ref() != Some(&u) {
                last_unsupported = Some(u.clone());
                if tx.send(Event::Unsupported(u)).is_err() {
                    return;
                }
            }
            // scan_system marks the disk Lifeboat booted from (`boot_media`).
            let mut r = crate::devices::scan_system().map_err(|e| e.to_string());
            let usage: std::collections::BTreeMap<String, Vec<String>> = r
                .as_ref()
                .map(|disks| {
                    disks
                        .iter()
                        .map(|d| (d.name.clone(), crate::devices::in_use(&d.name)))
                        .collect()
                })
                .unwrap_or_default();
            let mut rounds = 0;
            loop {
                let missing = match r.as_mut() {
                    Ok(disks) => apply_health(disks, &cache),
                    Err(_) => Vec::new(),
                };
                if last.as_ref() != Some(&(r.clone(), usage.clone())) {
                    last = Some((r.clone(), usage.clone()));
                    if tx.send(Event::InUse(usage.clone())).is_err()
                        || tx.send(Event::Disks(r.clone())).is_err()
                    {
                        return;
                    }
                }
                // Disks are shown first; their health follows (at most a few seconds later).
                rounds += 1;
                let Ok(disks) = r.as_ref() else { break };
                if missing.is_empty() || rounds > 1 {
                    break;
                }
                let mut ask: Vec<Disk> = missing.iter().map(|&i| disks[i].clone()).collect();
                crate::health::fill(&mut ask, crate::health::LIST_TIMEOUT);
                for d in ask {
                    if let Some(h) = d.health.clone() {
                        cache.insert(health_key(&d), (Instant::now(), h));
                    }
                }
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    });
}

/// Reads the used-block plan of the disk at `path` (its filesystems' maps: on a failing disk
/// this can take a while, so never on the UI thread).
pub fn spawn_usage_reader(tx: Sender<Event>, path: PathBuf) {
    std::thread::spawn(move || {
        let r = super::app::SourceUsage::read(&path);
        let _ = tx.send(Event::Usage(path, r));
    });
}

/// Reads the free space of each partition (read-only: statvfs, or its filesystem's own map) and
/// sends one event per partition as it is known.
pub fn spawn_free_reader(tx: Sender<Event>, parts: Vec<crate::devices::Partition>) {
    std::thread::spawn(move || {
        for p in parts {
            let r = crate::image::space::free_bytes(&p);
            if tx.send(Event::Free(p.path.clone(), r)).is_err() {
                return;
            }
        }
    });
}

/// Checks a network place: mounts it read-only (starting the network first if nothing has:
/// `net::ensure_up`, DHCP unless `lifeboat.net=` says otherwise) with `login` (None: the
/// credentials file's), reads its free space with statvfs, unmounts it. Errors are the
/// network code's plain messages (they never hold the password).
pub fn spawn_share_check(tx: Sender<Event>, url: String, login: Option<crate::net::cred::Login>) {
    std::thread::spawn(move || {
        let r = check_share(&url, login.as_ref());
        let _ = tx.send(Event::ShareChecked(url, r));
    });
}

fn check_share(
    url: &str,
    login: Option<&crate::net::cred::Login>,
) -> Result<super::app::ShareInfo, String> {
    let u = super::app::parse_place(url)?;
    let m = crate::net::share::mount_as(&u, true, login).map_err(|e| e.msg)?;
    let free_bytes = crate::image::space::free_at(&m.mountpoint).map_err(|e| {
        let why = e.cause.map_or(e.msg, |c| c.to_string());
        format!("cannot read the free space of {}: {why}", m.what)
    })?;
    Ok(super::app::ShareInfo {
        free_bytes,
        what: m.what.clone(),
    })
}

/// Reads the wired adapters (link state, addresses).
pub fn spawn_net_reader(tx: Sender<Event>) {
    std::thread::spawn(move || {
        let _ = tx.send(Event::Nics(crate::net::nics_now()));
    });
}

/// Configures the network with `cfg` on adapter `nic` (the network settings screen).
pub fn spawn_net_config(tx: Sender<Event>, cfg: crate::net::NetConfig, nic: Option<String>) {
    std::thread::spawn(move || {
        let r = crate::net::reconfigure(&cfg, nic.as_deref())
            .map(|c| c.to_string())
            .map_err(|e| e.msg);
        let _ = tx.send(Event::NetConfigured(r));
    });
}

/// The browser's mounted image partition: one at a time, owned here (unmounted when replaced
/// or taken out and dropped). `gen` counts requests: an open that finishes after a newer one
/// was asked for is undone at once.
#[derive(Clone, Default)]
pub struct BrowseMount {
    slot: std::sync::Arc<std::sync::Mutex<Option<crate::serve::extract::Opened>>>,
    gen: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Mounted or being mounted (read without waiting for an open in progress).
    busy: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BrowseMount {
    /// Unmounts the image partition, if one is mounted, and forgets pending opens — in the
    /// background: an open in progress holds the slot for seconds, and the screen must not
    /// wait for it.
    pub fn close(&self) {
        use std::sync::atomic::Ordering;
        if !self.busy.swap(false, Ordering::SeqCst) {
            return;
        }
        let at = self.gen.fetch_add(1, Ordering::SeqCst) + 1;
        let (slot, gen) = (self.slot.clone(), self.gen.clone());
        std::thread::spawn(move || {
            let mut g = slot.lock().unwrap_or_else(|e| e.into_inner());
            // An open asked for since then replaces the mount itself (and must keep its own).
            if gen.load(Ordering::SeqCst) == at {
                drop(g.take());
            }
        });
    }

    pub fn is_open(&self) -> bool {
        self.busy.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Mounts partition `partition` of `image` read-only for the browser (the one mounted before is
/// unmounted first) and sends [`Event::ImageOpened`].
pub fn spawn_image_opener(
    tx: Sender<Event>,
    mount: BrowseMount,
    image: String,
    partition: Option<u32>,
    secret: Option<super::app::Masked>,
) {
    use std::sync::atomic::Ordering;
    let my = mount.gen.fetch_add(1, Ordering::SeqCst) + 1;
    mount.busy.store(true, Ordering::SeqCst);
    std::thread::spawn(move || {
        let mut slot = mount.slot.lock().unwrap_or_else(|e| e.into_inner());
        drop(slot.take());
        if mount.gen.load(Ordering::SeqCst) != my {
            return;
        }
        // The helper's messages must not land on the screen.
        let log = std::path::Path::new(crate::image::store::MOUNT_ROOT)
            .parent()
            .unwrap_or(std::path::Path::new("/run"))
            .join("browse.log");
        let r = crate::serve::extract::Opened::open(
            &image,
            partition,
            Some(&log),
            secret.as_ref().map(|s| s.bytes()),
        )
        .map(|o| {
            let m = o.report();
            let info = super::app::OpenedImage {
                root: o.root().to_path_buf(),
                partition: m.partition,
                filesystem: m.filesystem.clone(),
                partitions: m.partitions.clone(),
                size_bytes: m.size_bytes,
                free_bytes: m.free_bytes,
            };
            (o, info)
        });
        if mount.gen.load(Ordering::SeqCst) != my {
            return;
        }
        let ev = match r {
            Ok((o, info)) => {
                *slot = Some(o);
                Ok(info)
            }
            Err(e) => Err(e.to_string()),
        };
        drop(slot);
        let _ = tx.send(Event::ImageOpened(partition, ev));
    });
}

/// Reads whether `image` is encrypted (its header, the partition mounted read-only for the
/// look) and sends [`Event::Probed`].
pub fn spawn_image_probe(tx: Sender<Event>, image: String) {
    std::thread::spawn(move || {
        let r = crate::image::cmd_keys::probe_encrypted(&image).map_err(|e| e.to_string());
        let _ = tx.send(Event::Probed(image, r));
    });
}

/// Tries `secret` on the key slots of `image` (one KDF run) and sends
/// [`Event::PassphraseChecked`]; what is wrong is decided on the error's kind.
pub fn spawn_passphrase_check(tx: Sender<Event>, image: String, secret: super::app::Masked) {
    use super::app::PassCheck;
    std::thread::spawn(move || {
        let r = match crate::image::cmd_keys::try_passphrase(&image, secret.bytes()) {
            Ok(()) => PassCheck::Opens,
            Err(e) if e.kind == crate::error::ErrorKind::WrongPassphrase => PassCheck::Wrong,
            Err(e) => PassCheck::Failed(e.to_string()),
        };
        drop(secret);
        let _ = tx.send(Event::PassphraseChecked(image, r));
    });
}

/// Lists the directory `path` (from the partition's top) of the partition mounted at `root`.
pub fn spawn_lister(tx: Sender<Event>, root: PathBuf, path: String) {
    std::thread::spawn(move || {
        let dir = root.join(path.trim_start_matches('/'));
        let r = crate::serve::extract::list_dir(&dir).map_err(|e| e.to_string());
        let _ = tx.send(Event::Listing(path, r));
    });
}

pub fn spawn_job_watcher(tx: Sender<Event>, dir: PathBuf) {
    std::thread::spawn(move || {
        let mut last = None;
        let mut first = true;
        loop {
            let s = jobdir::snapshot(&dir);
            if first || last != s {
                first = false;
                last = s.clone();
                if tx.send(Event::Job(s)).is_err() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::fixtures::disk;

    #[test]
    fn health_is_reused_per_drive_and_refreshed_when_stale() {
        let mut disks = vec![disk("sda", 1 << 30, vec![]), disk("sdb", 1 << 30, vec![])];
        let mut cache = HealthCache::new();
        assert_eq!(apply_health(&mut disks, &cache), vec![0, 1]);
        cache.insert(
            health_key(&disks[0]),
            (Instant::now(), Health::unknown("a virtual disk")),
        );
        assert_eq!(apply_health(&mut disks, &cache), vec![1]);
        assert_eq!(
            disks[0].health.as_ref().unwrap().reasons[0],
            "a virtual disk"
        );
        // Another drive on the same name (a different serial) is read afresh.
        disks[0].serial = Some("OTHER".into());
        disks[0].health = None;
        assert_eq!(apply_health(&mut disks, &cache), vec![0, 1]);
        assert!(disks[0].health.is_none());
        // A reading older than the refresh interval is used but read again.
        disks[0].serial = Some("SN-SDA".into());
        if let Some(old) = Instant::now().checked_sub(HEALTH_REFRESH + Duration::from_secs(1)) {
            cache.insert(health_key(&disks[0]), (old, Health::unknown("old")));
            assert_eq!(apply_health(&mut disks, &cache), vec![0, 1]);
            assert_eq!(disks[0].health.as_ref().unwrap().reasons[0], "old");
        }
    }
}
