//! A real Samba server for the SMB tests: `smbd` started on the host's loopback with a generated
//! smb.conf in a temporary directory (its own state, lock and private dirs, a tdb password
//! database with one user), serving one share from a directory; stopped (its whole process
//! group) on drop. The guest reaches it through QEMU's restricted user network
//! (`NetSpec::forward` with the `tcp-stdio` forwarder).
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running smbd.
pub struct Samba {
    pub port: u16,
    /// The directory the share serves.
    pub share_dir: PathBuf,
    pub log: PathBuf,
    child: Child,
}

/// smb.conf for a standalone server on 127.0.0.1:`port` keeping everything under `dir`, with
/// one share `share` at `share_dir` writable by `user`.
pub fn smb_conf(dir: &Path, port: u16, share: &str, share_dir: &Path, user: &str) -> String {
    let d = dir.display();
    format!(
        "[global]\n\
         server role = standalone server\n\
         interfaces = 127.0.0.1\n\
         bind interfaces only = yes\n\
         smb ports = {port}\n\
         disable netbios = yes\n\
         pid directory = {d}/run\n\
         lock directory = {d}/lock\n\
         state directory = {d}/state\n\
         cache directory = {d}/cache\n\
         private dir = {d}/private\n\
         ncalrpc dir = {d}/ncalrpc\n\
         log file = {d}/log.%m\n\
         passdb backend = tdbsam:{d}/private/passdb.tdb\n\
         map to guest = never\n\
         load printers = no\n\
         printcap name = /dev/null\n\
         disable spoolss = yes\n\
         [{share}]\n\
         path = {}\n\
         read only = no\n\
         valid users = {user}\n",
        share_dir.display()
    )
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind a port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl Samba {
    /// Starts smbd serving `share_dir` as `share`; `user` (root: no account to create on the
    /// host) gets `password`. Waits until it accepts connections.
    pub fn start(
        dir: &Path,
        share: &str,
        share_dir: &Path,
        user: &str,
        password: &str,
    ) -> Result<Samba, String> {
        for sub in ["run", "lock", "state", "cache", "private"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{sub}: {e}"))?;
        }
        let port = free_port()?;
        let conf = dir.join("smb.conf");
        std::fs::write(&conf, smb_conf(dir, port, share, share_dir, user))
            .map_err(|e| format!("write smb.conf: {e}"))?;
        let pw = format!("{password}\n{password}\n");
        crate::disks::run(
            "smbpasswd",
            &[
                "-c".into(),
                conf.display().to_string(),
                "-a".into(),
                "-s".into(),
                user.into(),
            ],
            Some(&pw),
        )
        .map_err(|e| format!("{e} (scripts/setup installs samba)"))?;
        let log = dir.join("smbd.log");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("smbd")
            .args(["--foreground", "--no-process-group", "--debug-stdout", "-s"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: smbd forks a child per connection; drop stops them all.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start smbd ({e}); run scripts/setup to install samba"))?;
        let s = Samba {
            port,
            share_dir: share_dir.to_path_buf(),
            log,
            child,
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > crate::vm::scaled(Duration::from_secs(60)) {
                return Err(format!(
                    "smbd did not listen on 127.0.0.1:{port}: {}",
                    std::fs::read_to_string(&s.log).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(s)
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        // The group this test started (smbd and its per-connection children), by its id.
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) with a negative pid signals the process group we created above; no
        // memory is involved.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
