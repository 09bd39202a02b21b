//! The kernel command line as PID 1 reads it (`/proc/cmdline`, quoted values included) and the
//! shell-like splitting of `lifeboat.run="ARGS"` into an argument vector.
use crate::error::{Error, Result};
use crate::kcmdline::parse_pairs;

/// What to do after an unattended command has printed its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    PowerOff,
    Reboot,
    Stay,
}

impl Then {
    pub fn parse(s: &str) -> Option<Then> {
        match s.trim() {
            "poweroff" | "off" | "halt" => Some(Then::PowerOff),
            "reboot" => Some(Then::Reboot),
            "stay" | "shell" | "ui" => Some(Then::Stay),
            _ => None,
        }
    }
}

/// The parameters Lifeboat's PID 1 acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// `lifeboat.run="ARGS"`: the command to run unattended.
    pub run: Option<String>,
    /// `lifeboat.then=poweroff|reboot|stay` (None: the default for the mode).
    pub then: Option<Then>,
    /// `lifeboat.console=COLSxROWS`: the size the UI assumes on a serial console.
    pub console: Option<(u16, u16)>,
    /// `lifeboat.wait="SEL SEL"`: before running, wait until these disks are present.
    pub wait: Vec<String>,
    /// `lifeboat.wait_timeout=SECS` (default 120).
    pub wait_timeout: Option<u64>,
    /// `loglevel=N` was given: keep the user's console log level.
    pub loglevel: Option<u8>,
    /// `lifeboat.settle=SECS`: the longest PID 1 waits for disks to stop appearing (default 15).
    pub settle: Option<u64>,
    /// `lifeboat.media=ID`: the boot medium's identity, written by scripts/build-usb.
    pub media: Option<String>,
    /// Problems found while parsing (unknown `lifeboat.*` keys, bad values), for the log.
    pub warnings: Vec<String>,
}

/// Parses `COLSxROWS`, e.g. `120x40`.
pub fn parse_size(s: &str) -> Option<(u16, u16)> {
    let (c, r) = s.split_once(['x', 'X'])?;
    let (c, r) = (c.trim().parse().ok()?, r.trim().parse().ok()?);
    if c == 0 || r == 0 {
        return None;
    }
    Some((c, r))
}

impl Params {
    pub fn parse(cmdline: &str) -> Params {
        let mut p = Params::default();
        for (k, v) in parse_pairs(cmdline) {
            match k.as_str() {
                "lifeboat.run" => {
                    p.run = Some(v.trim().to_string()).filter(|s| !s.is_empty());
                }
                "lifeboat.then" => match Then::parse(&v) {
                    Some(t) => p.then = Some(t),
                    None => p.warnings.push(format!(
                        "lifeboat.then={v:?} is not poweroff, reboot or stay; ignored"
                    )),
                },
                "lifeboat.console" => match parse_size(&v) {
                    Some(s) => p.console = Some(s),
                    None => p.warnings.push(format!(
                        "lifeboat.console={v:?} is not COLSxROWS (e.g. 120x40); ignored"
                    )),
                },
                "lifeboat.wait" => p.wait.extend(v.split_whitespace().map(String::from)),
                "lifeboat.wait_timeout" => match v.parse() {
                    Ok(n) => p.wait_timeout = Some(n),
                    Err(_) => p.warnings.push(format!(
                        "lifeboat.wait_timeout={v:?} is not seconds; ignored"
                    )),
                },
                "lifeboat.settle" => match v.parse() {
                    Ok(n) => p.settle = Some(n),
                    Err(_) => p
                        .warnings
                        .push(format!("lifeboat.settle={v:?} is not seconds; ignored")),
                },
                "loglevel" => p.loglevel = v.parse().ok(),
                // Read by crate::devices::bootmedia (which disk Lifeboat booted from).
                "lifeboat.media" => p.media = Some(v).filter(|s| !s.is_empty()),
                // Read by a job that names a network location (crate::net, crate::net::cred).
                "lifeboat.net" | "lifeboat.credentials" => {}
                k if k.starts_with("lifeboat.") => {
                    p.warnings.push(format!("unknown parameter {k}; ignored"))
                }
                _ => {}
            }
        }
        p
    }

    /// What happens after the run: poweroff by default.
    pub fn then_or_default(&self) -> Then {
        self.then.unwrap_or(Then::PowerOff)
    }
}

/// Splits `ARGS` like a POSIX shell splits words: whitespace separates, '...' is literal,
/// "..." allows \" \\ \$ \` escapes, a backslash outside quotes escapes the next character.
/// No expansion of any kind. Unterminated quotes are an error.
pub fn shell_split(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\'' => {
                have = true;
                loop {
                    match it.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(Error::invalid(format!("unterminated ' in {s:?}"))),
                    }
                }
            }
            '"' => {
                have = true;
                loop {
                    match it.next() {
                        Some('"') => break,
                        Some('\\') => match it.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => {
                                return Err(Error::invalid(format!("unterminated \" in {s:?}")))
                            }
                        },
                        Some(c) => cur.push(c),
                        None => return Err(Error::invalid(format!("unterminated \" in {s:?}"))),
                    }
                }
            }
            '\\' => match it.next() {
                Some('\n') => {}
                Some(c) => {
                    cur.push(c);
                    have = true;
                }
                None => return Err(Error::invalid(format!("trailing backslash in {s:?}"))),
            },
            c if c.is_whitespace() => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        let p = Params::parse(
            "console=ttyS0 lifeboat.run=\"list --json\" lifeboat.then=stay lifeboat.console=120x40 loglevel=7 lifeboat.bogus=1 lifeboat.media=ABCD-1234 lifeboat.wait=\"serial=A sdb\"",
        );
        assert_eq!(p.run.as_deref(), Some("list --json"));
        assert_eq!(p.then, Some(Then::Stay));
        assert_eq!(p.console, Some((120, 40)));
        assert_eq!(p.loglevel, Some(7));
        assert_eq!(p.wait, ["serial=A", "sdb"]);
        assert_eq!(p.media.as_deref(), Some("ABCD-1234"));
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        let d = Params::parse("lifeboat.run=\"\" lifeboat.then=explode lifeboat.console=0x5");
        assert_eq!(d.run, None);
        assert_eq!(d.then_or_default(), Then::PowerOff);
        assert_eq!(d.console, None);
        assert_eq!(d.warnings.len(), 2);
        assert_eq!(
            Params::parse("lifeboat.then=reboot").then,
            Some(Then::Reboot)
        );
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            shell_split("clone serial=A serial=B --yes").unwrap(),
            ["clone", "serial=A", "serial=B", "--yes"]
        );
        assert_eq!(
            shell_split(r#"image create 'label=MY DATA' "--note=a \"b\" c" x\ y ''"#).unwrap(),
            [
                "image",
                "create",
                "label=MY DATA",
                "--note=a \"b\" c",
                "x y",
                ""
            ]
        );
        assert_eq!(shell_split("  ").unwrap(), Vec::<String>::new());
        assert_eq!(shell_split(r#""a\nb""#).unwrap(), [r"a\nb"]);
        assert!(shell_split("'open").is_err());
        assert!(shell_split("\"open").is_err());
        assert!(shell_split("end\\").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("80x25"), Some((80, 25)));
        assert_eq!(parse_size("80X25"), Some((80, 25)));
        assert_eq!(parse_size("80"), None);
        assert_eq!(parse_size("ax25"), None);
    }
}
