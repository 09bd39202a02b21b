//! Code that runs in a forked child before `exec` (`Command::pre_exec`): the only `unsafe` of
//! starting processes, each a small documented wrapper. PID 1 uses them for the consoles' UI
//! and for every command it starts.
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the child a session leader with `fd 0` as its controlling terminal (runs after fork).
pub fn new_session_on_stdin(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec; setsid and ioctl(TIOCSCTTY) are
    // async-signal-safe system calls that touch no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Argument 1: take the terminal even if an old session still claims it (we are root).
            if libc::ioctl(0, libc::TIOCSCTTY, 1) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// PID 1 blocks its power signals (a thread takes them with sigwait) and a blocked mask is
/// inherited across exec: without this, the command and the UI could not be stopped with
/// SIGTERM or cancelled with SIGINT.
pub fn clear_signal_mask(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec; sigemptyset and sigprocmask are
    // async-signal-safe and only touch the local `set`.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
