//! The technician's console (`lifeboat ui`): ratatui + crossterm on a host terminal, the Linux
//! VT or a serial line. State lives in [`app::App`] and changes only in `update(event)`; the
//! views in [`view`] only read it; device scans and job-directory reads run in worker threads
//! that send events; jobs run as detached processes of this binary ([`crate::jobs::jobdir`]), so they survive
//! a UI crash and every console follows them.
pub mod app;
pub mod keys;
pub mod safety;
pub mod view;
mod worker;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_crypt;
#[cfg(test)]
mod tests_files;
#[cfg(test)]
mod tests_names;
#[cfg(test)]
mod tests_net;

use crate::error::{Error, Result};
use crate::jobs::jobdir;
use app::{App, Command, Event};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event as ct;
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone, PartialEq, serde::Serialize)]
pub struct UiArgs {
    /// Terminal to run on (PID 1 passes /dev/ttyS0 or /dev/tty1); default: this terminal.
    #[arg(long, value_name = "PATH")]
    pub tty: Option<PathBuf>,
    /// Screen size when the terminal cannot tell (a serial line), e.g. 80x24. Also taken from
    /// the environment variable LIFEBOAT_CONSOLE. Default: the terminal's size, else 80x24.
    #[arg(long, value_name = "COLSxROWS")]
    pub size: Option<String>,
    /// Internal: run the job described in DIR/spec.json (started detached by the console).
    #[arg(long, value_name = "DIR", hide = true)]
    pub run_job: Option<PathBuf>,
}

/// Parses "COLSxROWS" (at least 40x12).
pub fn parse_size(s: &str) -> Option<(u16, u16)> {
    let (c, r) = s.trim().split_once(['x', 'X'])?;
    let (c, r): (u16, u16) = (c.trim().parse().ok()?, r.trim().parse().ok()?);
    (c >= 40 && r >= 12).then_some((c, r))
}

pub fn run(a: UiArgs) -> Result<i32> {
    if let Some(dir) = &a.run_job {
        // Leave the console's session: a hang-up or a restart of the console must not stop the job.
        let _ = nix::unistd::setsid();
        return jobdir::run_job(dir, &jobdir::engine_program());
    }
    if let Some(tty) = &a.tty {
        attach_tty(tty)?;
    }
    let fixed = a
        .size
        .as_deref()
        .map(|s| {
            parse_size(s).ok_or_else(|| {
                Error::invalid(format!("--size {s}: expected COLSxROWS, e.g. 80x24"))
            })
        })
        .transpose()?
        .or_else(|| {
            std::env::var("LIFEBOAT_CONSOLE")
                .ok()
                .and_then(|s| parse_size(&s))
        });
    let size = match fixed {
        Some(s) => Some(s),
        // A serial line reports 0x0: assume 80x24.
        None => match terminal::size() {
            Ok((c, r)) if c > 0 && r > 0 => None,
            _ => Some((80, 24)),
        },
    };
    // Panics inside the UI: remember the message, restore the terminal, exit non-zero.
    let panic_msg = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let pm = panic_msg.clone();
    let prev_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut m) = pm.lock() {
            *m = Some(info.to_string());
        }
    }));
    setup_terminal()?;
    let res = std::panic::catch_unwind(|| event_loop(size));
    restore_terminal();
    std::panic::set_hook(prev_hook);
    match res {
        Ok(r) => r,
        Err(_) => {
            let m = panic_msg
                .lock()
                .ok()
                .and_then(|m| m.clone())
                .unwrap_or_default();
            crate::errln!("lifeboat ui: internal error, the console restarts: {m}");
            Ok(crate::error::exit::FAILED)
        }
    }
}

/// Makes `tty` this process's stdin and stdout (crossterm reads keys from stdin).
fn attach_tty(tty: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(tty)
        .map_err(|e| Error::io("open the console", tty, e))?;
    for fd in [0, 1] {
        nix::unistd::dup2(f.as_raw_fd(), fd)
            .map_err(|e| Error::io("attach the console", tty, std::io::Error::from(e)))?;
    }
    Ok(())
}

fn setup_terminal() -> Result<()> {
    let term_err = |e: std::io::Error| Error::io("set up the terminal", "/dev/stdin", e);
    terminal::enable_raw_mode().map_err(term_err)?;
    execute!(
        std::io::stdout(),
        terminal::EnterAlternateScreen,
        cursor::Hide
    )
    .map_err(term_err)?;
    Ok(())
}

fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let mut out = std::io::stdout();
    let _ = execute!(out, terminal::LeaveAlternateScreen, cursor::Show);
    let _ = out.flush();
}

/// Whether PID 1 (Lifeboat's init) started this console: then power off / reboot go to it.
fn under_init() -> bool {
    std::os::unix::process::parent_id() == 1
        && std::process::id() != 1
        && Path::new("/init").exists()
}

fn event_loop(size: Option<(u16, u16)>) -> Result<i32> {
    let term_err = |e: std::io::Error| Error::io("draw on the terminal", "/dev/stdout", e);
    let backend = CrosstermBackend::new(std::io::stdout());
    let mut term = match size {
        Some((c, r)) => Terminal::with_options(
            backend,
            TerminalOptions {
                viewport: Viewport::Fixed(Rect::new(0, 0, c, r)),
            },
        ),
        None => Terminal::new(backend),
    }
    .map_err(term_err)?;
    term.clear().map_err(term_err)?;
    let dir = jobdir::dir();
    let under_init = under_init();
    let prefix = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let mut app = App::new(under_init, prefix, dir.to_string_lossy().into_owned());
    // `lifeboat --mmc-boot-partitions ui`: the boot partitions start as disks.
    app.mmc_boot_as_disks = crate::devices::mmc_boot_as_disks();
    let (tx, rx) = mpsc::channel::<Event>();
    worker::spawn_disk_scanner(tx.clone());
    worker::spawn_job_watcher(tx.clone(), dir.clone());
    let browse = worker::BrowseMount::default();
    loop {
        term.draw(|f| view::draw(f, &app)).map_err(term_err)?;
        let mut cmds = Vec::new();
        if ct::poll(Duration::from_millis(250)).map_err(term_err)? {
            match ct::read().map_err(term_err)? {
                ct::Event::Key(k) => {
                    if let Some(k) = keys::Key::from_crossterm(k) {
                        cmds.extend(app.update(Event::Key(k)));
                    }
                }
                ct::Event::Resize(..) if size.is_none() => {
                    let _ = term.autoresize();
                }
                _ => {}
            }
        }
        while let Ok(ev) = rx.try_recv() {
            cmds.extend(app.update(ev));
        }
        // Passwords typed for network places serve this console's own mounts while their
        // flow lasts (an image's header, the browser), and are forgotten with it.
        crate::net::cred::set_typed(app.typed_logins());
        // The browser's image partition stays mounted only while the flow needs it.
        if !app.browsing() && browse.is_open() {
            browse.close();
        }
        for c in cmds {
            match c {
                Command::OpenImage {
                    image,
                    partition,
                    secret,
                } => {
                    worker::spawn_image_opener(tx.clone(), browse.clone(), image, partition, secret)
                }
                Command::ProbeImage(image) => worker::spawn_image_probe(tx.clone(), image),
                Command::CheckPassphrase { image, secret } => {
                    worker::spawn_passphrase_check(tx.clone(), image, secret)
                }
                Command::ListDir { root, path } => worker::spawn_lister(tx.clone(), root, path),
                Command::StartJob(spec) => {
                    // The job mounts the image itself (it outlives this console).
                    browse.close();
                    // An encrypted image's passphrase and a typed share password reach the job
                    // in mode-0600 files of the job directory, which the runner removes when the
                    // job ends; never on its command line.
                    let secret = app.secret.clone();
                    let creds = app.job_credentials(crate::net::cred::override_spec());
                    let started = jobdir::start_job(
                        &dir,
                        &spec,
                        secret.as_ref().map(|s| s.bytes()),
                        creds.as_ref(),
                        jobdir::launch_runner,
                    );
                    if let Err(e) = started {
                        app.update(Event::JobStartFailed(e.to_string()));
                    } else {
                        app.forget_secret();
                        app.update(Event::Job(jobdir::snapshot(&dir)));
                    }
                }
                Command::CheckShare { url, login } => {
                    worker::spawn_share_check(tx.clone(), url, login)
                }
                Command::ReadNet => worker::spawn_net_reader(tx.clone()),
                Command::ConfigureNet(cfg, nic) => worker::spawn_net_config(tx.clone(), cfg, nic),
                Command::CancelJob => {
                    if let Err(e) = jobdir::cancel(&dir) {
                        app.message = Some(format!("Could not cancel: {e}"));
                    }
                }
                Command::AckResult => jobdir::ack(&dir),
                // The disk scanner reads it at its next round (every 2 s).
                Command::MmcBootAsDisks(on) => crate::devices::set_mmc_boot_as_disks(on),
                Command::ReadUsage(path) => worker::spawn_usage_reader(tx.clone(), path),
                Command::ReadFree(parts) => worker::spawn_free_reader(tx.clone(), parts),
                Command::PowerOff | Command::Reboot if under_init => {
                    use nix::sys::signal::{kill, Signal};
                    let sig = if c == Command::PowerOff {
                        Signal::SIGUSR2
                    } else {
                        Signal::SIGTERM
                    };
                    let _ = kill(nix::unistd::Pid::from_raw(1), sig);
                }
                Command::PowerOff | Command::Reboot | Command::Quit => {
                    return Ok(crate::error::exit::OK)
                }
            }
        }
    }
}
