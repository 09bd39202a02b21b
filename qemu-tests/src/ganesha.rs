//! A real NFS server for the NFS tests: NFS-Ganesha (userspace, VFS backend) started on the host's
//! loopback with a generated configuration in a temporary directory, exporting one directory
//! over NFSv4 (TCP, no root squash, no grace period, owners as numbers: the guest has no
//! idmapper); stopped on drop. The guest reaches it
//! through QEMU's restricted user network (`NetSpec::forward` with the `tcp-stdio` forwarder).
//! NFSv3 would also need rpcbind and mountd on the host, so only version 4 is served.
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running ganesha.nfsd.
pub struct Ganesha {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

/// ganesha.conf: NFSv4 on 127.0.0.1:`port`, `export_dir` exported as `pseudo`, state in `dir`.
pub fn ganesha_conf(dir: &Path, port: u16, export_dir: &Path, pseudo: &str) -> String {
    format!(
        "NFS_CORE_PARAM {{\n  NFS_Port = {port};\n  Bind_addr = 127.0.0.1;\n  Protocols = 4;\n  \
         Enable_NLM = false;\n  Enable_RQUOTA = false;\n  Enable_UDP = false;\n}}\n\
         NFSV4 {{\n  Graceless = true;\n  RecoveryBackend = fs;\n  RecoveryRoot = \"{}\";\n  \
         Only_Numeric_Owners = true;\n}}\n\
         NFS_KRB5 {{ Active_krb5 = false; }}\n\
         EXPORT {{\n  Export_Id = 1;\n  Path = \"{}\";\n  Pseudo = \"{pseudo}\";\n  \
         Access_Type = RW;\n  Squash = No_Root_Squash;\n  SecType = sys;\n  Protocols = 4;\n  \
         Transports = TCP;\n  FSAL {{ Name = VFS; }}\n}}\n",
        dir.join("recovery").display(),
        export_dir.display()
    )
}

impl Ganesha {
    /// Starts ganesha.nfsd exporting `export_dir` as `pseudo` (e.g. "/export"); waits until it
    /// accepts connections.
    pub fn start(dir: &Path, export_dir: &Path, pseudo: &str) -> Result<Ganesha, String> {
        std::fs::create_dir_all(dir.join("recovery")).map_err(|e| e.to_string())?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("bind a port: {e}"))?
            .port();
        let conf = dir.join("ganesha.conf");
        std::fs::write(&conf, ganesha_conf(dir, port, export_dir, pseudo))
            .map_err(|e| e.to_string())?;
        let log = dir.join("ganesha.log");
        let child = Command::new("ganesha.nfsd")
            .arg("-F")
            .arg("-L")
            .arg(&log)
            .arg("-f")
            .arg(&conf)
            .arg("-p")
            .arg(dir.join("ganesha.pid"))
            .args(["-N", "NIV_EVENT"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot start ganesha.nfsd ({e}); run scripts/setup to install nfs-ganesha")
            })?;
        let g = Ganesha { port, log, child };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > crate::vm::scaled(Duration::from_secs(60)) {
                return Err(format!(
                    "ganesha.nfsd did not listen on 127.0.0.1:{port}: {}",
                    std::fs::read_to_string(&g.log).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(g)
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
