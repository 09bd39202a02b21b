//! QEMU command lines as data: a `VmSpec` (machine, boot, serial, monitor, disks) turned into an
//! argv by small pure functions, each unit-tested, so every test boots exactly what it describes.
use std::path::{Path, PathBuf};

/// The bus (and controller) a virtual disk hangs on; each maps to a Lifeboat `transport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    /// virtio-blk-pci (`vdX` in the guest).
    Virtio,
    /// ide-hd on an AHCI controller (`sdX`, libata).
    Sata,
    /// An NVMe controller with one namespace (`nvmeXn1`).
    Nvme,
    /// usb-storage on an xHCI controller (`sdX` via usb-storage).
    Usb,
    /// scsi-hd on virtio-scsi (`sdX`).
    Scsi,
    /// scsi-hd behind an LSI MegaRAID SAS 1078 (`megasas`; Linux megaraid_sas).
    Megasas,
    /// scsi-hd behind an LSI MegaRAID SAS 2108 (`megasas-gen2`; megaraid_sas).
    MegasasGen2,
    /// scsi-hd behind an LSI SAS 1068 HBA (`mptsas1068`; mptsas).
    Mptsas,
    /// scsi-hd behind an LSI 53C895A parallel SCSI controller (`lsi53c895a`; sym53c8xx).
    Lsi,
    /// scsi-hd behind an AMD Am53C974 PCscsi controller (`am53c974`; am53c974).
    Am53c974,
    /// An SD card on an SDHCI PCI controller (`sdhci-pci` + `sd-card`; sdhci-pci, mmc_block):
    /// `mmcblkN`. QEMU cannot set its serial (the card's CID is fixed).
    Sd,
    /// scsi-hd behind a USB Attached SCSI device on xHCI (`usb-uas`; uas).
    Uas,
    /// Namespace `nsid` of the one NVMe controller in an NVMe subsystem (`nvme-subsys`, `nvme`,
    /// `nvme-ns`), so Linux sees it multipath-capable: every such disk is a namespace of that
    /// controller and reports its serial (the first such disk's).
    NvmeNs(u32),
}

impl Bus {
    /// The `transport` value `lifeboat list --json` must report for a disk on this bus.
    pub fn transport(self) -> &'static str {
        match self {
            Bus::Virtio => "virtio",
            Bus::Sata => "sata",
            Bus::Nvme => "nvme",
            Bus::Usb | Bus::Uas => "usb",
            Bus::Scsi
            | Bus::Megasas
            | Bus::MegasasGen2
            | Bus::Mptsas
            | Bus::Lsi
            | Bus::Am53c974 => "scsi",
            Bus::Sd => "mmc",
            Bus::NvmeNs(_) => "nvme",
        }
    }

    /// Whether the guest sees the serial the spec sets (an SD card's CID is QEMU's own).
    pub fn serial_passed(self) -> bool {
        self != Bus::Sd
    }

    /// The controller `-device` this bus needs once per VM (before its first disk); None when
    /// each disk is its own PCI device. The NVMe subsystem's controller is `nvme_subsys_args`.
    pub fn controller(self) -> Option<&'static str> {
        match self {
            Bus::Sata => Some("ahci,id=ahci0"),
            Bus::Usb | Bus::Uas => Some("qemu-xhci,id=xhci"),
            Bus::Scsi => Some("virtio-scsi-pci,id=scsi0"),
            Bus::Megasas => Some("megasas,id=megasas0"),
            Bus::MegasasGen2 => Some("megasas-gen2,id=megasas2"),
            Bus::Mptsas => Some("mptsas1068,id=mptsas0"),
            Bus::Lsi => Some("lsi53c895a,id=lsi0"),
            Bus::Am53c974 => Some("am53c974,id=am0"),
            Bus::Sd => Some("sdhci-pci,id=sdhci0"),
            Bus::Virtio | Bus::Nvme | Bus::NvmeNs(_) => None,
        }
    }

    /// Whether QEMU lets us choose the model string the guest sees on this bus.
    pub fn model_settable(self) -> bool {
        matches!(
            self,
            Bus::Sata
                | Bus::Scsi
                | Bus::Megasas
                | Bus::MegasasGen2
                | Bus::Mptsas
                | Bus::Lsi
                | Bus::Am53c974
                | Bus::Uas
        )
    }

    /// The model string the guest sees when none is set (`None`: the bus has no model).
    pub fn default_model(self) -> Option<&'static str> {
        match self {
            Bus::Virtio => None,
            Bus::Sata
            | Bus::Usb
            | Bus::Scsi
            | Bus::Megasas
            | Bus::MegasasGen2
            | Bus::Mptsas
            | Bus::Lsi
            | Bus::Am53c974
            | Bus::Uas => Some("QEMU HARDDISK"),
            Bus::Nvme | Bus::NvmeNs(_) => Some("QEMU NVMe Ctrl"),
            // The product name in the card's CID.
            Bus::Sd => Some("QEMU!"),
        }
    }
}

/// One virtual disk: a raw image file on a bus, with the identity the guest will see.
#[derive(Clone, Debug)]
pub struct DiskSpec {
    pub image: PathBuf,
    pub bus: Bus,
    /// Serial number (at most 20 characters: the shortest limit among the buses).
    pub serial: String,
    /// Model (SATA `model=`, SCSI `product=`); an error on buses that cannot set it.
    pub model: Option<String>,
    pub logical_block_size: Option<u32>,
    pub physical_block_size: Option<u32>,
    pub read_only: bool,
    /// USB only: report the medium as removable.
    pub removable: bool,
    /// A blkdebug config file (see `blkdebug`): the disk then fails the reads it describes.
    pub blkdebug: Option<PathBuf>,
    /// Firmware boot order (`bootindex=`): set it on the disk a firmware boot starts from.
    pub bootindex: Option<u32>,
    /// NVMe only: the SMART / Health log's Critical Warning bits the controller reports
    /// (QEMU's `smart_critical_warning`), to present a failing drive.
    pub nvme_critical_warning: Option<u8>,
    /// Reads limited to this many bytes per second (QEMU's `throttling.bps-read`): a job on
    /// this disk takes long enough to be interrupted part way.
    pub throttle_read_bps: Option<u64>,
    /// The disk lies about failed writes (`werror=ignore`): a write its blkdebug config fails
    /// is reported to the guest as done, and the bytes never reach the image — storage that
    /// silently loses what it was given.
    pub lying_writes: bool,
}

impl DiskSpec {
    pub fn new(image: impl Into<PathBuf>, bus: Bus, serial: &str) -> DiskSpec {
        DiskSpec {
            image: image.into(),
            bus,
            serial: serial.to_string(),
            model: None,
            logical_block_size: None,
            physical_block_size: None,
            read_only: false,
            removable: false,
            blkdebug: None,
            bootindex: None,
            nvme_critical_warning: None,
            throttle_read_bps: None,
            lying_writes: false,
        }
    }
    pub fn model(mut self, m: &str) -> Self {
        self.model = Some(m.to_string());
        self
    }
    /// Sets the logical and physical block size (512 or 4096).
    pub fn block_size(mut self, logical: u32, physical: u32) -> Self {
        self.logical_block_size = Some(logical);
        self.physical_block_size = Some(physical);
        self
    }
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }
    pub fn removable(mut self) -> Self {
        self.removable = true;
        self
    }
    pub fn blkdebug(mut self, config: impl Into<PathBuf>) -> Self {
        self.blkdebug = Some(config.into());
        self
    }
    /// The firmware boots from this disk first (lowest index first).
    pub fn bootindex(mut self, n: u32) -> Self {
        self.bootindex = Some(n);
        self
    }
    /// NVMe only: report these Critical Warning bits in the SMART / Health log (e.g. 0x04,
    /// "NVM subsystem reliability degraded"): the drive then reads as failing.
    /// See [`DiskSpec::lying_writes`] (only SATA and virtio honour `werror=ignore`).
    pub fn lying_writes(mut self) -> Self {
        self.lying_writes = true;
        self
    }
    pub fn throttle_read_bps(mut self, bps: u64) -> Self {
        self.throttle_read_bps = Some(bps);
        self
    }
    pub fn nvme_critical_warning(mut self, bits: u8) -> Self {
        self.nvme_critical_warning = Some(bits);
        self
    }
    /// The model string the guest should report for this disk.
    pub fn expected_model(&self) -> Option<String> {
        match &self.model {
            Some(m) => Some(m.clone()),
            None => self.bus.default_model().map(str::to_string),
        }
    }
}

/// Where the guest's serial console (ttyS0) goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialMode {
    /// QEMU's stdin/stdout are the console (pipes the test reads and writes); QEMU also
    /// writes everything the guest sends to `log`.
    Pipe { log: PathBuf },
    /// The current terminal, `-nographic` style (console and monitor multiplexed, Ctrl-A X quits).
    Terminal,
}

/// Everything needed to boot one VM.
#[derive(Clone, Debug)]
pub struct VmSpec {
    pub qemu: String,
    pub kvm: bool,
    pub memory_mib: u32,
    pub smp: u32,
    /// Direct kernel boot; `None` boots the firmware (SeaBIOS, or OVMF via `extra`) from disks.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// Kernel command line (see `default_append`), used with `kernel`.
    pub append: String,
    pub serial: SerialMode,
    /// Human monitor on this unix socket (`screendump`, `info block`, ...).
    pub monitor: Option<PathBuf>,
    pub disks: Vec<DiskSpec>,
    /// Appended verbatim (firmware, extra devices for later tests).
    pub extra: Vec<String>,
    /// A directly booted kernel silent this long before /init counts as hung and is booted
    /// again (see `Vm::start`); `None` turns that watch off.
    pub boot_stall: Option<std::time::Duration>,
}

impl VmSpec {
    /// A spec with the harness defaults: q35, TCG (KVM only when LIFEBOAT_QEMU_KVM=1), 1 GiB, 2 CPUs.
    pub fn new(kernel: &Path, initrd: &Path, serial: SerialMode) -> VmSpec {
        VmSpec {
            qemu: std::env::var("LIFEBOAT_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into()),
            kvm: std::env::var("LIFEBOAT_QEMU_KVM").is_ok_and(|v| v == "1"),
            memory_mib: 1024,
            smp: 2,
            kernel: Some(kernel.to_path_buf()),
            initrd: Some(initrd.to_path_buf()),
            append: default_append(""),
            serial,
            monitor: None,
            disks: Vec::new(),
            extra: Vec::new(),
            boot_stall: Some(std::time::Duration::from_secs(60)),
        }
    }
}

/// The kernel command line the harness boots with: serial console, reboot (= QEMU exit, since
/// `-no-reboot`) on panic, then the test's own parameters.
pub fn default_append(params: &str) -> String {
    let base = "console=ttyS0,115200 panic=-1";
    if params.trim().is_empty() {
        base.to_string()
    } else {
        format!("{base} {}", params.trim())
    }
}

fn s(v: &str) -> String {
    v.to_string()
}

/// QEMU option values are comma-separated: a literal comma is written twice.
pub fn escape_opt(v: &str) -> String {
    v.replace(',', ",,")
}

fn path_opt(p: &Path) -> String {
    escape_opt(&p.to_string_lossy())
}

/// Machine, accelerator, memory, CPUs and the things every test VM has in common.
pub fn machine_args(kvm: bool, memory_mib: u32, smp: u32) -> Vec<String> {
    vec![
        s("-nodefaults"),
        s("-machine"),
        s("q35"),
        s("-accel"),
        s(if kvm { "kvm" } else { "tcg" }),
        s("-m"),
        memory_mib.to_string(),
        s("-smp"),
        smp.to_string(),
        s("-no-reboot"),
        s("-display"),
        s("none"),
        // A VGA device keeps tty0 and the monitor's `screendump` working without a window.
        s("-vga"),
        s("std"),
    ]
}

/// Direct kernel boot.
pub fn boot_args(kernel: &Path, initrd: &Path, append: &str) -> Vec<String> {
    vec![
        s("-kernel"),
        kernel.to_string_lossy().into_owned(),
        s("-initrd"),
        initrd.to_string_lossy().into_owned(),
        s("-append"),
        append.to_string(),
    ]
}

/// The serial console (ttyS0).
pub fn serial_args(mode: &SerialMode) -> Vec<String> {
    match mode {
        SerialMode::Pipe { log } => vec![
            s("-chardev"),
            format!("stdio,id=ser0,signal=off,logfile={}", path_opt(log)),
            s("-serial"),
            s("chardev:ser0"),
        ],
        SerialMode::Terminal => vec![
            // What -nographic does, spelled out: console and monitor share the terminal.
            s("-chardev"),
            s("stdio,id=ser0,mux=on,signal=off"),
            s("-serial"),
            s("chardev:ser0"),
            s("-mon"),
            s("chardev=ser0,mode=readline"),
        ],
    }
}

/// The human monitor on a unix socket the test can connect to.
pub fn monitor_args(sock: &Path) -> Vec<String> {
    vec![
        s("-chardev"),
        format!("socket,id=mon0,path={},server=on,wait=off", path_opt(sock)),
        s("-mon"),
        s("chardev=mon0,mode=readline"),
    ]
}

/// `-drive` for disk `n`: raw format, directly on the file or on a blkdebug node.
pub fn drive_arg(n: usize, d: &DiskSpec) -> String {
    let mut v = match &d.blkdebug {
        None => format!("if=none,id=d{n},format=raw,file={}", path_opt(&d.image)),
        // raw on top of blkdebug: raw fires the `read_aio` event the rules are keyed on.
        Some(conf) => format!(
            "if=none,id=d{n},driver=raw,file.driver=blkdebug,file.config={},file.image.filename={}",
            path_opt(conf),
            path_opt(&d.image)
        ),
    };
    if d.read_only {
        v.push_str(",readonly=on");
    }
    if let Some(bps) = d.throttle_read_bps {
        v.push_str(&format!(",throttling.bps-read={bps}"));
    }
    if d.lying_writes {
        v.push_str(",werror=ignore");
    }
    v
}

/// The MAC address of a test VM's NIC unless a test sets one.
pub const DEFAULT_MAC: &str = "52:54:00:12:34:56";

/// User-mode (slirp) networking for a guest: one virtio NIC on a `-netdev user` backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetSpec {
    /// The netdev id (the monitor's `set_link ID off` pulls the cable).
    pub id: String,
    /// `restrict=on`: the guest reaches nothing outside QEMU but its DHCP server and the
    /// `forwards` (no packet of a test ever leaves for a real network).
    pub restrict: bool,
    /// Guest TCP connections to (ADDRESS, PORT) run COMMAND on the host, once per connection,
    /// with the connection as its stdin and stdout (QEMU's `guestfwd=...-cmd:`).
    pub forwards: Vec<(String, u16, String)>,
    /// The NIC's MAC address.
    pub mac: String,
    /// QEMU's built-in TFTP server serves this directory (at the gateway, 10.0.2.2).
    pub tftp: Option<PathBuf>,
    /// The boot file QEMU's DHCP server names (a TFTP path, or a URL iPXE can fetch).
    pub bootfile: Option<String>,
    /// Firmware boot order of the NIC (`bootindex=`): set it to boot from the network.
    pub bootindex: Option<u32>,
    /// The NIC's option ROM (`romfile=`); `Some("")` gives it none, so UEFI boots with its own
    /// network driver and PXE instead of QEMU's iPXE ROM (which OVMF runs even under Secure Boot).
    pub romfile: Option<String>,
}

impl NetSpec {
    /// A restricted network with id `n0` and no forwards yet.
    pub fn restricted() -> NetSpec {
        NetSpec {
            id: s("n0"),
            restrict: true,
            forwards: Vec::new(),
            mac: s(DEFAULT_MAC),
            tftp: None,
            bootfile: None,
            bootindex: None,
            romfile: None,
        }
    }
    /// Sets the NIC's MAC address (`52:54:00:12:34:56` form).
    pub fn mac(mut self, mac: &str) -> Self {
        self.mac = mac.to_string();
        self
    }
    /// A network boot: QEMU's TFTP server serves `dir`, its DHCP server names `bootfile`, and
    /// the NIC is the firmware's first boot device (its option ROM is iPXE: Debian's ipxe-qemu).
    pub fn netboot(mut self, dir: &Path, bootfile: &str) -> Self {
        self.tftp = Some(dir.to_path_buf());
        self.bootfile = Some(bootfile.to_string());
        self.bootindex = Some(0);
        self
    }
    /// Adds a forward of guest connections to `addr:port` to `command`.
    pub fn forward(mut self, addr: &str, port: u16, command: &str) -> Self {
        self.forwards
            .push((addr.to_string(), port, command.to_string()));
        self
    }
}

/// `-netdev user,...` and `-device virtio-net-pci` for `n`.
pub fn net_args(n: &NetSpec) -> Vec<String> {
    let mut nd = format!("user,id={}", escape_opt(&n.id));
    if n.restrict {
        nd.push_str(",restrict=on");
    }
    if let Some(dir) = &n.tftp {
        nd.push_str(&format!(",tftp={}", path_opt(dir)));
    }
    if let Some(f) = &n.bootfile {
        nd.push_str(&format!(",bootfile={}", escape_opt(f)));
    }
    for (addr, port, cmd) in &n.forwards {
        nd.push_str(&format!(
            ",guestfwd=tcp:{addr}:{port}-cmd:{}",
            escape_opt(cmd)
        ));
    }
    let mut dev = format!(
        "virtio-net-pci,netdev={},mac={}",
        escape_opt(&n.id),
        escape_opt(&n.mac)
    );
    if let Some(i) = n.bootindex {
        dev.push_str(&format!(",bootindex={i}"));
    }
    if let Some(r) = &n.romfile {
        dev.push_str(&format!(",romfile={}", escape_opt(r)));
    }
    vec![s("-netdev"), nd, s("-device"), dev]
}

/// Checks a disk spec against what its bus accepts.
pub fn validate_disk(d: &DiskSpec) -> Result<(), String> {
    if d.serial.is_empty() || d.serial.len() > 20 || !d.serial.is_ascii() {
        return Err(format!(
            "disk {:?}: serial {:?} must be 1..=20 ASCII characters",
            d.image, d.serial
        ));
    }
    if d.serial.contains(',') {
        return Err(format!(
            "disk {:?}: serial {:?} must not contain a comma",
            d.image, d.serial
        ));
    }
    if d.model.is_some() && !d.bus.model_settable() {
        return Err(format!(
            "disk {:?}: QEMU cannot set the model on {:?}",
            d.image, d.bus
        ));
    }
    if let Bus::NvmeNs(nsid) = d.bus {
        if nsid == 0 {
            return Err(format!("disk {:?}: NVMe namespace ids start at 1", d.image));
        }
    }
    if d.nvme_critical_warning.is_some() && d.bus != Bus::Nvme {
        return Err(format!(
            "disk {:?}: a critical warning is only supported on Nvme",
            d.image
        ));
    }
    if d.removable && d.bus != Bus::Usb {
        return Err(format!(
            "disk {:?}: removable is only supported on Usb",
            d.image
        ));
    }
    for bs in [d.logical_block_size, d.physical_block_size]
        .into_iter()
        .flatten()
    {
        if bs != 512 && bs != 4096 {
            return Err(format!(
                "disk {:?}: block size {bs} must be 512 or 4096",
                d.image
            ));
        }
    }
    if let (Some(l), Some(p)) = (d.logical_block_size, d.physical_block_size) {
        if p < l {
            return Err(format!(
                "disk {:?}: physical block size {p} < logical {l}",
                d.image
            ));
        }
    }
    Ok(())
}

/// The SAS address (`wwn`) of disk `n` behind the SAS1068: never 0, since Linux's `mptsas`
/// attaches no end device whose SAS address is 0 (`mptsas_is_end_device`), and QEMU gives a
/// disk without `wwn=` the address 0. NAA 5 with a made-up company id, unique per disk.
pub fn sas_address(n: usize) -> u64 {
    0x500a_bcd0_0000_0000 + n as u64 + 1
}

/// `-device` for disk `n` (controllers are added by `disk_args`).
pub fn device_arg(n: usize, sata_port: usize, d: &DiskSpec) -> String {
    let serial = escape_opt(&d.serial);
    let mut v = match d.bus {
        Bus::Virtio => format!("virtio-blk-pci,drive=d{n},serial={serial}"),
        Bus::Sata => format!("ide-hd,drive=d{n},bus=ahci0.{sata_port},serial={serial}"),
        Bus::Nvme => format!("nvme,drive=d{n},serial={serial}"),
        Bus::Usb => format!("usb-storage,drive=d{n},bus=xhci.0,serial={serial}"),
        Bus::Scsi => format!("scsi-hd,drive=d{n},bus=scsi0.0,serial={serial}"),
        Bus::Megasas => format!("scsi-hd,drive=d{n},bus=megasas0.0,serial={serial}"),
        Bus::MegasasGen2 => format!("scsi-hd,drive=d{n},bus=megasas2.0,serial={serial}"),
        // A SAS disk needs a SAS address: QEMU's SAS1068 reports the disk's `wwn` as it, and
        // Linux's mptsas ignores an end device whose address is 0 (QEMU's default).
        Bus::Mptsas => format!(
            "scsi-hd,drive=d{n},bus=mptsas0.0,serial={serial},wwn={:#x}",
            sas_address(n)
        ),
        Bus::Lsi => format!("scsi-hd,drive=d{n},bus=lsi0.0,serial={serial}"),
        Bus::Am53c974 => format!("scsi-hd,drive=d{n},bus=am0.0,serial={serial}"),
        Bus::Sd => format!("sd-card,drive=d{n}"),
        // The SCSI bus of the UAS device added just before it (`uas_device_arg`).
        Bus::Uas => format!("scsi-hd,drive=d{n},bus=uas{n}.0,serial={serial}"),
        Bus::NvmeNs(nsid) => format!("nvme-ns,drive=d{n},nsid={nsid},bus=nvmesub0"),
    };
    if let Some(m) = &d.model {
        match d.bus {
            Bus::Sata => v.push_str(&format!(",model={}", escape_opt(m))),
            b if b.model_settable() => v.push_str(&format!(",product={}", escape_opt(m))),
            _ => {}
        }
    }
    if let Some(l) = d.logical_block_size {
        v.push_str(&format!(",logical_block_size={l}"));
    }
    if let Some(p) = d.physical_block_size {
        v.push_str(&format!(",physical_block_size={p}"));
    }
    if d.removable {
        v.push_str(",removable=on");
    }
    if let Some(n) = d.bootindex {
        v.push_str(&format!(",bootindex={n}"));
    }
    if let (Bus::Nvme, Some(w)) = (d.bus, d.nvme_critical_warning) {
        v.push_str(&format!(",smart_critical_warning={w}"));
    }
    v
}

/// The USB Attached SCSI device of UAS disk `n` (its SCSI bus is `uas{n}.0`), carrying the
/// disk's serial as the USB serial (what the guest reports for a USB disk).
pub fn uas_device_arg(n: usize, d: &DiskSpec) -> String {
    format!(
        "usb-uas,id=uas{n},bus=xhci.0,serial={}",
        escape_opt(&d.serial)
    )
}

/// The NVMe subsystem and its one controller, for the `NvmeNs` disks (all of which must carry
/// the controller's serial, and distinct namespace ids); empty without such disks.
pub fn nvme_subsys_args(disks: &[DiskSpec]) -> Result<Vec<String>, String> {
    let ns: Vec<&DiskSpec> = disks
        .iter()
        .filter(|d| matches!(d.bus, Bus::NvmeNs(_)))
        .collect();
    let Some(first) = ns.first() else {
        return Ok(vec![]);
    };
    let mut ids = Vec::new();
    for d in &ns {
        if d.serial != first.serial {
            return Err(format!(
                "NVMe namespaces of one controller share its serial: {:?} has {:?}, {:?} has {:?}",
                first.image, first.serial, d.image, d.serial
            ));
        }
        if let Bus::NvmeNs(id) = d.bus {
            if ids.contains(&id) {
                return Err(format!("NVMe namespace id {id} used twice"));
            }
            ids.push(id);
        }
    }
    Ok(vec![
        s("-device"),
        s("nvme-subsys,id=nvmesubsys0"),
        s("-device"),
        format!(
            "nvme,id=nvmesub0,serial={},subsys=nvmesubsys0",
            escape_opt(&first.serial)
        ),
    ])
}

/// All disks with their controllers (each controller added once, before its first disk).
pub fn disk_args(disks: &[DiskSpec]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut added: Vec<&str> = Vec::new();
    let mut sata_port = 0;
    let mut subsys = false;
    for (n, d) in disks.iter().enumerate() {
        validate_disk(d)?;
        if let Some(c) = d.bus.controller() {
            if !added.contains(&c) {
                added.push(c);
                out.extend([s("-device"), s(c)]);
            }
        }
        if matches!(d.bus, Bus::NvmeNs(_)) && !subsys {
            subsys = true;
            out.extend(nvme_subsys_args(disks)?);
        }
        if d.bus == Bus::Sata && sata_port >= 6 {
            return Err("at most 6 SATA disks (one AHCI controller)".into());
        }
        if d.bus == Bus::Sd && disks.iter().filter(|x| x.bus == Bus::Sd).count() > 1 {
            return Err("at most one SD card (one SDHCI slot)".into());
        }
        out.extend([s("-drive"), drive_arg(n, d)]);
        if d.bus == Bus::Uas {
            out.extend([s("-device"), uas_device_arg(n, d)]);
        }
        out.extend([s("-device"), device_arg(n, sata_port, d)]);
        if d.bus == Bus::Sata {
            sata_port += 1;
        }
    }
    Ok(out)
}

/// The whole argv (without the program name).
pub fn argv(spec: &VmSpec) -> Result<Vec<String>, String> {
    let mut v = machine_args(spec.kvm, spec.memory_mib, spec.smp);
    match (&spec.kernel, &spec.initrd) {
        (Some(k), Some(i)) => v.extend(boot_args(k, i, &spec.append)),
        (Some(k), None) => v.extend([
            s("-kernel"),
            k.to_string_lossy().into_owned(),
            s("-append"),
            spec.append.clone(),
        ]),
        (None, Some(_)) => return Err("an initrd needs a kernel".into()),
        (None, None) => {}
    }
    v.extend(serial_args(&spec.serial));
    match &spec.monitor {
        Some(sock) => v.extend(monitor_args(sock)),
        None if spec.serial != SerialMode::Terminal => v.extend([s("-monitor"), s("none")]),
        None => {}
    }
    v.extend(disk_args(&spec.disks)?);
    v.extend(spec.extra.iter().cloned());
    Ok(v)
}

/// The argv as one shell-pasteable line (for logs and the demo banner).
pub fn shell_line(program: &str, args: &[String]) -> String {
    let quote = |a: &str| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
        {
            a.to_string()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(v: &[String], flag: &str) -> Vec<String> {
        v.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn machine_is_q35_tcg_by_default() {
        let v = machine_args(false, 1024, 2);
        assert_eq!(pair(&v, "-machine"), ["q35"]);
        assert_eq!(pair(&v, "-accel"), ["tcg"]);
        assert_eq!(pair(&v, "-m"), ["1024"]);
        assert_eq!(pair(&v, "-smp"), ["2"]);
        assert!(v.contains(&s("-no-reboot")));
        assert_eq!(pair(&v, "-display"), ["none"]);
        assert_eq!(pair(&machine_args(true, 512, 1), "-accel"), ["kvm"]);
    }

    #[test]
    fn boot_args_pass_kernel_initrd_and_append() {
        let v = boot_args(
            Path::new("/k/vmlinuz"),
            Path::new("/k/initrd"),
            "console=ttyS0 a=\"b c\"",
        );
        assert_eq!(
            v,
            [
                "-kernel",
                "/k/vmlinuz",
                "-initrd",
                "/k/initrd",
                "-append",
                "console=ttyS0 a=\"b c\""
            ]
        );
    }

    #[test]
    fn default_append_has_serial_console_and_panic_exit() {
        assert_eq!(default_append(""), "console=ttyS0,115200 panic=-1");
        assert_eq!(
            default_append(" lifeboat.run=\"list --json\" "),
            "console=ttyS0,115200 panic=-1 lifeboat.run=\"list --json\""
        );
    }

    #[test]
    fn serial_pipe_logs_and_uses_stdio() {
        let v = serial_args(&SerialMode::Pipe {
            log: PathBuf::from("/t/a,b.log"),
        });
        assert_eq!(
            v,
            [
                "-chardev",
                "stdio,id=ser0,signal=off,logfile=/t/a,,b.log",
                "-serial",
                "chardev:ser0"
            ]
        );
        let t = serial_args(&SerialMode::Terminal);
        assert_eq!(pair(&t, "-mon"), ["chardev=ser0,mode=readline"]);
    }

    #[test]
    fn monitor_is_a_unix_socket() {
        let v = monitor_args(Path::new("/t/mon.sock"));
        assert_eq!(v[1], "socket,id=mon0,path=/t/mon.sock,server=on,wait=off");
    }

    #[test]
    fn every_bus_gets_its_device_and_controller_once() {
        let disks = vec![
            DiskSpec::new("/d/v.img", Bus::Virtio, "VIRT1"),
            DiskSpec::new("/d/s.img", Bus::Sata, "SATA1").model("Lifeboat SATA"),
            DiskSpec::new("/d/s2.img", Bus::Sata, "SATA2"),
            DiskSpec::new("/d/n.img", Bus::Nvme, "NVME1").block_size(4096, 4096),
            DiskSpec::new("/d/u.img", Bus::Usb, "USB1").removable(),
            DiskSpec::new("/d/c.img", Bus::Scsi, "SCSI1").model("Lifeboat SCSI"),
        ];
        let v = disk_args(&disks).unwrap();
        let devs = pair(&v, "-device");
        assert_eq!(
            devs,
            [
                "virtio-blk-pci,drive=d0,serial=VIRT1",
                "ahci,id=ahci0",
                "ide-hd,drive=d1,bus=ahci0.0,serial=SATA1,model=Lifeboat SATA",
                "ide-hd,drive=d2,bus=ahci0.1,serial=SATA2",
                "nvme,drive=d3,serial=NVME1,logical_block_size=4096,physical_block_size=4096",
                "qemu-xhci,id=xhci",
                "usb-storage,drive=d4,bus=xhci.0,serial=USB1,removable=on",
                "virtio-scsi-pci,id=scsi0",
                "scsi-hd,drive=d5,bus=scsi0.0,serial=SCSI1,product=Lifeboat SCSI",
            ]
        );
        let drives = pair(&v, "-drive");
        assert_eq!(drives[0], "if=none,id=d0,format=raw,file=/d/v.img");
        assert_eq!(drives.len(), 6);
    }

    #[test]
    fn hba_sd_uas_and_nvme_subsystem_disks() {
        let disks = vec![
            DiskSpec::new("/d/m.img", Bus::Megasas, "MEGA1"),
            DiskSpec::new("/d/m2.img", Bus::MegasasGen2, "MEGA2"),
            DiskSpec::new("/d/p.img", Bus::Mptsas, "MPT1"),
            DiskSpec::new("/d/l.img", Bus::Lsi, "LSI1").model("Old SCSI"),
            DiskSpec::new("/d/a.img", Bus::Am53c974, "AM1"),
            DiskSpec::new("/d/sd.img", Bus::Sd, "IGNORED"),
            DiskSpec::new("/d/u.img", Bus::Uas, "UAS1"),
            DiskSpec::new("/d/u2.img", Bus::Uas, "UAS2"),
            DiskSpec::new("/d/n1.img", Bus::NvmeNs(1), "NVSUB"),
            DiskSpec::new("/d/n2.img", Bus::NvmeNs(2), "NVSUB"),
        ];
        let v = disk_args(&disks).unwrap();
        let devs = pair(&v, "-device");
        assert_eq!(
            devs,
            [
                "megasas,id=megasas0",
                "scsi-hd,drive=d0,bus=megasas0.0,serial=MEGA1",
                "megasas-gen2,id=megasas2",
                "scsi-hd,drive=d1,bus=megasas2.0,serial=MEGA2",
                "mptsas1068,id=mptsas0",
                "scsi-hd,drive=d2,bus=mptsas0.0,serial=MPT1,wwn=0x500abcd000000003",
                "lsi53c895a,id=lsi0",
                "scsi-hd,drive=d3,bus=lsi0.0,serial=LSI1,product=Old SCSI",
                "am53c974,id=am0",
                "scsi-hd,drive=d4,bus=am0.0,serial=AM1",
                "sdhci-pci,id=sdhci0",
                "sd-card,drive=d5",
                "qemu-xhci,id=xhci",
                "usb-uas,id=uas6,bus=xhci.0,serial=UAS1",
                "scsi-hd,drive=d6,bus=uas6.0,serial=UAS1",
                "usb-uas,id=uas7,bus=xhci.0,serial=UAS2",
                "scsi-hd,drive=d7,bus=uas7.0,serial=UAS2",
                "nvme-subsys,id=nvmesubsys0",
                "nvme,id=nvmesub0,serial=NVSUB,subsys=nvmesubsys0",
                "nvme-ns,drive=d8,nsid=1,bus=nvmesub0",
                "nvme-ns,drive=d9,nsid=2,bus=nvmesub0",
            ]
        );
        assert_eq!(pair(&v, "-drive").len(), 10);
        assert_eq!(Bus::Mptsas.transport(), "scsi");
        assert_eq!(Bus::Sd.transport(), "mmc");
        assert_eq!(Bus::Uas.transport(), "usb");
        assert_eq!(Bus::NvmeNs(2).transport(), "nvme");
        assert!(!Bus::Sd.serial_passed() && Bus::Uas.serial_passed());
        // Namespaces of one controller share its serial and have distinct ids.
        let bad = [
            DiskSpec::new("/d/n1.img", Bus::NvmeNs(1), "A"),
            DiskSpec::new("/d/n2.img", Bus::NvmeNs(2), "B"),
        ];
        assert!(disk_args(&bad).is_err());
        let dup = [
            DiskSpec::new("/d/n1.img", Bus::NvmeNs(1), "A"),
            DiskSpec::new("/d/n2.img", Bus::NvmeNs(1), "A"),
        ];
        assert!(disk_args(&dup).is_err());
        assert!(validate_disk(&DiskSpec::new("/x", Bus::NvmeNs(0), "A")).is_err());
        let two_sd = [
            DiskSpec::new("/d/a.img", Bus::Sd, "A"),
            DiskSpec::new("/d/b.img", Bus::Sd, "B"),
        ];
        assert!(disk_args(&two_sd).is_err());
    }

    #[test]
    fn read_only_and_blkdebug_drives() {
        let d = DiskSpec::new("/d/src.img", Bus::Virtio, "SRC")
            .read_only()
            .blkdebug("/d/bd.conf");
        assert_eq!(
            drive_arg(7, &d),
            "if=none,id=d7,driver=raw,file.driver=blkdebug,file.config=/d/bd.conf,\
             file.image.filename=/d/src.img,readonly=on"
        );
        let d = DiskSpec::new("/d/s.img", Bus::Virtio, "S").throttle_read_bps(2 << 20);
        assert_eq!(
            drive_arg(1, &d),
            "if=none,id=d1,format=raw,file=/d/s.img,throttling.bps-read=2097152"
        );
    }

    #[test]
    fn invalid_disks_are_refused() {
        assert!(validate_disk(&DiskSpec::new("/x", Bus::Nvme, "N").model("m")).is_err());
        assert!(validate_disk(&DiskSpec::new("/x", Bus::Virtio, "")).is_err());
        assert!(validate_disk(&DiskSpec::new("/x", Bus::Virtio, "123456789012345678901")).is_err());
        assert!(validate_disk(&DiskSpec::new("/x", Bus::Sata, "S").removable()).is_err());
        assert!(validate_disk(&DiskSpec::new("/x", Bus::Sata, "S").block_size(4096, 512)).is_err());
        assert!(
            validate_disk(&DiskSpec::new("/x", Bus::Sata, "S").block_size(1000, 1000)).is_err()
        );
        let seven: Vec<_> = (0..7)
            .map(|i| DiskSpec::new("/x", Bus::Sata, &format!("S{i}")))
            .collect();
        assert!(disk_args(&seven).is_err());
    }

    #[test]
    fn expected_models() {
        assert_eq!(DiskSpec::new("/x", Bus::Virtio, "V").expected_model(), None);
        assert_eq!(
            DiskSpec::new("/x", Bus::Nvme, "V")
                .expected_model()
                .as_deref(),
            Some("QEMU NVMe Ctrl")
        );
        assert_eq!(
            DiskSpec::new("/x", Bus::Sata, "V")
                .model("M")
                .expected_model()
                .as_deref(),
            Some("M")
        );
    }

    #[test]
    fn full_argv_without_monitor_disables_it() {
        let spec = VmSpec {
            qemu: s("qemu-system-x86_64"),
            kvm: false,
            memory_mib: 1024,
            smp: 2,
            kernel: Some(PathBuf::from("/k")),
            initrd: Some(PathBuf::from("/i")),
            append: default_append(""),
            serial: SerialMode::Pipe {
                log: PathBuf::from("/l"),
            },
            monitor: None,
            disks: vec![],
            extra: vec![s("-bios"), s("/x.fd")],
            boot_stall: None,
        };
        let v = argv(&spec).unwrap();
        assert_eq!(pair(&v, "-monitor"), ["none"]);
        assert_eq!(&v[v.len() - 2..], ["-bios", "/x.fd"]);
        assert_eq!(pair(&v, "-kernel"), ["/k"]);
        let fw = VmSpec {
            kernel: None,
            initrd: None,
            ..spec.clone()
        };
        assert!(pair(&argv(&fw).unwrap(), "-kernel").is_empty());
        let bad = VmSpec {
            kernel: None,
            ..spec
        };
        assert!(argv(&bad).is_err());
    }

    #[test]
    fn user_network_with_forwards() {
        let n = NetSpec::restricted().forward("10.0.2.100", 445, "/bin/fwd 127.0.0.1 4445");
        assert_eq!(
            net_args(&n),
            [
                "-netdev",
                "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:445-cmd:/bin/fwd 127.0.0.1 4445",
                "-device",
                "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
            ]
        );
        let open = NetSpec {
            restrict: false,
            ..NetSpec::restricted()
        };
        assert_eq!(net_args(&open)[1], "user,id=n0");
    }

    #[test]
    fn network_boot_over_tftp() {
        let n = NetSpec::restricted()
            .mac("52:54:00:4c:42:01")
            .netboot(Path::new("/t/net,boot"), "lifeboat.ipxe");
        assert_eq!(
            net_args(&n),
            [
                "-netdev",
                "user,id=n0,restrict=on,tftp=/t/net,,boot,bootfile=lifeboat.ipxe",
                "-device",
                "virtio-net-pci,netdev=n0,mac=52:54:00:4c:42:01,bootindex=0",
            ]
        );
        let uefi = NetSpec {
            romfile: Some(String::new()),
            ..n
        };
        assert_eq!(
            net_args(&uefi)[3],
            "virtio-net-pci,netdev=n0,mac=52:54:00:4c:42:01,bootindex=0,romfile="
        );
    }

    #[test]
    fn shell_line_quotes() {
        assert_eq!(
            shell_line("qemu", &[s("-append"), s("a b"), s("x,y")]),
            "qemu -append 'a b' x,y"
        );
    }
}

/// Boot firmware for a VM without direct kernel boot (`VmSpec::kernel` = None).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's default SeaBIOS (legacy BIOS): no arguments.
    Bios,
    /// OVMF (UEFI) with a writable copy of its variable store at `vars`.
    Uefi { vars: PathBuf },
    /// OVMF's Secure Boot build with Microsoft's keys enrolled (`OVMF_VARS_4M.ms.fd` copied to
    /// `vars`), SMM on and the flash secured: only signed boot loaders start.
    SecureBoot { vars: PathBuf },
}

/// Debian's OVMF files.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

impl Firmware {
    /// UEFI with a fresh variable store copied into `dir`.
    pub fn uefi(dir: &Path) -> std::io::Result<Firmware> {
        let vars = dir.join("OVMF_VARS.fd");
        std::fs::copy(OVMF_VARS, &vars)?;
        Ok(Firmware::Uefi { vars })
    }
    /// Secure Boot UEFI with the Microsoft keys, variable store copied into `dir`.
    pub fn secure_boot(dir: &Path) -> std::io::Result<Firmware> {
        let vars = dir.join("OVMF_VARS.ms.fd");
        std::fs::copy(OVMF_VARS_MS, &vars)?;
        Ok(Firmware::SecureBoot { vars })
    }
}

/// The QEMU arguments for a firmware (add them to `VmSpec::extra`).
pub fn firmware_args(fw: &Firmware) -> Vec<String> {
    let pflash = |code: &str, vars: &Path| {
        vec![
            s("-drive"),
            format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                escape_opt(code)
            ),
            s("-drive"),
            format!("if=pflash,format=raw,unit=1,file={}", path_opt(vars)),
        ]
    };
    match fw {
        Firmware::Bios => Vec::new(),
        Firmware::Uefi { vars } => pflash(OVMF_CODE, vars),
        Firmware::SecureBoot { vars } => {
            let mut v = vec![
                s("-machine"),
                s("smm=on"),
                s("-global"),
                s("driver=cfi.pflash01,property=secure,value=on"),
            ];
            v.extend(pflash(OVMF_CODE_SECBOOT, vars));
            v
        }
    }
}

/// A CD-ROM drive (ide-cd on q35's built-in AHCI port 5) holding `iso`, booted first.
pub fn cdrom_args(iso: &Path, serial: &str) -> Vec<String> {
    vec![
        s("-drive"),
        format!(
            "if=none,id=cd0,media=cdrom,readonly=on,format=raw,file={}",
            path_opt(iso)
        ),
        s("-device"),
        format!(
            "ide-cd,drive=cd0,bus=ide.5,serial={},bootindex=0",
            escape_opt(serial)
        ),
    ]
}

#[cfg(test)]
mod firmware_tests {
    use super::*;

    #[test]
    fn firmware_and_cdrom_arguments() {
        assert!(firmware_args(&Firmware::Bios).is_empty());
        let u = firmware_args(&Firmware::Uefi {
            vars: PathBuf::from("/t/v,1.fd"),
        });
        assert_eq!(
            u[1],
            format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}")
        );
        assert_eq!(u[3], "if=pflash,format=raw,unit=1,file=/t/v,,1.fd");
        let sb = firmware_args(&Firmware::SecureBoot {
            vars: PathBuf::from("/t/v.fd"),
        });
        assert!(sb.contains(&"smm=on".to_string()));
        assert!(sb.contains(&"driver=cfi.pflash01,property=secure,value=on".to_string()));
        assert!(sb.iter().any(|a| a.contains(OVMF_CODE_SECBOOT)));
        let cd = cdrom_args(Path::new("/t/l.iso"), "CD1");
        assert!(cd[1].contains("media=cdrom") && cd[1].ends_with("file=/t/l.iso"));
        assert_eq!(cd[3], "ide-cd,drive=cd0,bus=ide.5,serial=CD1,bootindex=0");
        let d = DiskSpec::new("/t/s.img", Bus::Usb, "STICK").bootindex(0);
        assert!(device_arg(0, 0, &d).ends_with(",serial=STICK,bootindex=0"));
    }
}
