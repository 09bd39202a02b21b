//! Passwords for network shares. They never appear on the kernel command line, in a URL, a log,
//! `LIFEBOAT-RESULT` or a JSON report: they come from a credentials file, read when a share is
//! mounted, and go only into the mount(2) call.
//!
//! Where the file is, first found wins: `--credentials FILE|PARTITION:/path` (see
//! [`set_override`]); the `LIFEBOAT_CREDENTIALS` environment variable (the console hands its
//! jobs a file it wrote under /run); `lifeboat.credentials=PARTITION:/path` on the kernel command
//! line (`lifeboat.credentials=label=LIFEBOAT:/lifeboat.cred`); in the environment, by default,
//! `/lifeboat.cred` on the FAT partition of the stick Lifeboat booted from. A partition is
//! mounted read-only just to read it.
//!
//! The format: sections named by `host/share` (that share) or `host` (any share on it; an NFS
//! export needs no password), each with `user`, `password` and optionally `domain` lines:
//!
//! ```text
//! # lifeboat.cred
//! [nas.local/backups]
//! user = alice
//! password = correct horse battery staple
//! domain = WORKGROUP
//!
//! [10.0.2.2]
//! user = bob
//! password = s3cret
//! ```
//!
//! S3 image stores (`s3://BUCKET/...`, see `crate::s3`) take `s3_endpoint`, `s3_region`,
//! `s3_access_key` and `s3_secret_key` lines: at the top of the file, before any section (every
//! bucket), or in a `[s3://BUCKET]` section (that bucket; its lines win over the top's):
//!
//! ```text
//! s3_endpoint = http://10.0.2.2:9000
//! s3_region = garage
//! s3_access_key = GK31c2f218a2e44f485b94239e
//! s3_secret_key = b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835
//! ```
//!
//! An `https://` endpoint is checked against Mozilla's root certificates, or only against the
//! CA certificates of the PEM file `s3_ca_file` names (`FILE` or `PARTITION:/path`, e.g.
//! `s3_ca_file = label=LIFEBOAT:/store-ca.pem`): a self-hosted store with its own CA.
//!
//! A value is everything after the first `=`, without the spaces around it (a password cannot
//! start or end with a space). Lines starting with `#` or `;` are comments; there are no inline
//! comments (a password may contain `#`). Host names and share names compare without case.
use crate::error::{Error, Result};

/// One section's login.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub user: Option<String>,
    pub password: Option<String>,
    pub domain: Option<String>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password, even in a debug print.
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("domain", &self.domain)
            .finish()
    }
}

/// One scope's S3 settings (see the module doc); fields not given are `None`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Login {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Where the PEM file of the CA an `https://` store's certificate is checked against is
    /// (`FILE` or `PARTITION:/path`, as for the credentials file itself).
    pub ca_file: Option<String>,
}

impl std::fmt::Debug for S3Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret key, even in a debug print.
        f.debug_struct("S3Login")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "***"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// A parsed credentials file.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    sections: Vec<(String, Login)>,
    /// S3 settings by scope: `""` (the top of the file) or `s3://bucket`.
    s3: Vec<(String, S3Login)>,
}

/// The largest credentials file read.
const MAX_FILE: u64 = 64 << 10;

impl Credentials {
    /// Parses the file's text; a line that is neither a section, a `key = value`, a comment
    /// nor blank is an error naming its line number (never its content: it may be a password).
    pub fn parse(text: &str) -> Result<Credentials> {
        let mut c = Credentials::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                let name = name.trim().trim_end_matches('/').to_ascii_lowercase();
                if name.is_empty() {
                    return Err(Error::invalid(format!(
                        "credentials file, line {}: an empty section name; write [host/share] or [host]",
                        n + 1
                    )));
                }
                c.sections.push((
                    name,
                    Login {
                        user: None,
                        password: None,
                        domain: None,
                    },
                ));
                continue;
            }
            let bad = |why: &str| {
                Error::invalid(format!(
                    "credentials file, line {}: {why}; lines are [host/share], user = NAME, \
                     password = PASSWORD, domain = NAME, or comments starting with #",
                    n + 1
                ))
            };
            let (k, v) = line.split_once('=').ok_or_else(|| bad("not key = value"))?;
            let key = k.trim().to_ascii_lowercase();
            if key.starts_with("s3_") {
                let scope = c.sections.last().map_or(String::new(), |(n, _)| n.clone());
                if c.s3.last().is_none_or(|(s, _)| *s != scope) {
                    c.s3.push((scope, S3Login::default()));
                }
                let l = &mut c.s3.last_mut().expect("pushed").1;
                let v = Some(v.trim().to_string());
                match key.as_str() {
                    "s3_endpoint" => l.endpoint = v,
                    "s3_region" => l.region = v,
                    "s3_access_key" => l.access_key = v,
                    "s3_secret_key" => l.secret_key = v,
                    "s3_ca_file" => l.ca_file = v,
                    _ => {
                        return Err(bad(
                            "unknown s3_ key (s3_endpoint, s3_region, s3_access_key, \
                         s3_secret_key, s3_ca_file)",
                        ))
                    }
                }
                continue;
            }
            let Some((_, login)) = c.sections.last_mut() else {
                return Err(bad("a value before the first [host/share] section"));
            };
            let v = Some(v.trim().to_string());
            match k.trim().to_ascii_lowercase().as_str() {
                "user" | "username" => login.user = v,
                "password" | "pass" => login.password = v,
                "domain" | "workgroup" => login.domain = v,
                _ => return Err(bad("unknown key")),
            }
        }
        Ok(c)
    }

    /// The login for `share` on `host` (a `[host/share]` section first, then `[host]`); when
    /// the location names a user, only a section for that user (or naming none) fits.
    pub fn find(&self, host: &str, share: &str, user: Option<&str>) -> Option<&Login> {
        let host = host.to_ascii_lowercase();
        let exact = format!("{host}/{}", share.trim_matches('/').to_ascii_lowercase());
        let fits = |l: &Login| match (user, l.user.as_deref()) {
            (Some(u), Some(lu)) => u.eq_ignore_ascii_case(lu),
            _ => true,
        };
        let by = |name: &str| {
            self.sections
                .iter()
                .find(|(n, l)| n == name && fits(l))
                .map(|(_, l)| l)
        };
        by(&exact).or_else(|| by(&host))
    }
}

impl Credentials {
    /// The S3 settings for `bucket`: a `[s3://bucket]` section's lines over the top of the
    /// file's; `None` when neither gives any.
    pub fn find_s3(&self, bucket: &str) -> Option<S3Login> {
        let scope = format!("s3://{}", bucket.to_ascii_lowercase());
        let pick = |name: &str| {
            self.s3
                .iter()
                .filter(|(s, _)| s == name)
                .map(|(_, l)| l.clone())
                .reduce(|a, b| S3Login {
                    endpoint: b.endpoint.or(a.endpoint),
                    region: b.region.or(a.region),
                    access_key: b.access_key.or(a.access_key),
                    secret_key: b.secret_key.or(a.secret_key),
                    ca_file: b.ca_file.or(a.ca_file),
                })
        };
        match (pick(""), pick(&scope)) {
            (None, None) => None,
            (Some(t), None) => Some(t),
            (None, Some(b)) => Some(b),
            (Some(t), Some(b)) => Some(S3Login {
                endpoint: b.endpoint.or(t.endpoint),
                region: b.region.or(t.region),
                access_key: b.access_key.or(t.access_key),
                secret_key: b.secret_key.or(t.secret_key),
                ca_file: b.ca_file.or(t.ca_file),
            }),
        }
    }
}

static OVERRIDE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Sets where this process reads credentials (`--credentials FILE|PARTITION:/path`).
pub fn set_override(spec: Option<String>) {
    *OVERRIDE.lock().unwrap_or_else(|e| e.into_inner()) = spec;
}

/// Logins typed into this process (the console's network places) by `(host, share)`: consulted
/// before any credentials file when this process mounts a share itself (reading an image's
/// header, the file browser). Memory only; the console replaces the list as its state changes.
static TYPED: std::sync::Mutex<Vec<(String, String, Login)>> = std::sync::Mutex::new(Vec::new());

/// Replaces the logins typed into this process (see [`TYPED`]).
pub fn set_typed(v: Vec<(String, String, Login)>) {
    *TYPED.lock().unwrap_or_else(|e| e.into_inner()) = v;
}

/// The typed login for this share and user, if one was typed into this process.
pub fn typed(host: &str, share: &str, user: Option<&str>) -> Option<Login> {
    TYPED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(h, s, l)| {
            h.eq_ignore_ascii_case(host)
                && s.eq_ignore_ascii_case(share)
                && l.user.as_deref() == user
        })
        .map(|(_, _, l)| l.clone())
}

/// The `--credentials` location this process was given, if any (the console hands it on to the
/// jobs it starts).
pub fn override_spec() -> Option<String> {
    OVERRIDE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

impl Login {
    /// This login as a credentials file with one `[host/share]` section (how the console hands a
    /// typed password to its job: `jobs::jobdir::JobCredentials`). Refused when the file could not
    /// give it back as typed: a line break anywhere, or spaces around the password.
    pub fn file_text(&self, host: &str, share: &str) -> Result<String> {
        let mut s = format!("# written by the Lifeboat console for one job\n[{host}/{share}]\n");
        for (k, v) in [
            ("user", &self.user),
            ("domain", &self.domain),
            ("password", &self.password),
        ] {
            let Some(v) = v else { continue };
            if v.contains(['\n', '\r']) || v.trim() != v {
                return Err(Error::invalid(format!(
                    "the {k} cannot start or end with a space or hold a line break"
                )));
            }
            s.push_str(&format!("{k} = {v}\n"));
        }
        Ok(s)
    }
}

/// Where credentials are looked for, in order, as `(spec, explicit)`: an explicit location
/// that cannot be read is an error; the stick's default file may simply not exist.
pub fn locations(cmdline: &str, env: Option<String>, media_ids: &[String]) -> Vec<(String, bool)> {
    let ov = OVERRIDE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(s) = ov.or(env).filter(|s| !s.is_empty()) {
        return vec![(s, true)];
    }
    if let Some((_, v)) = crate::kcmdline::parse_pairs(cmdline)
        .into_iter()
        .rev()
        .find(|(k, _)| k == "lifeboat.credentials")
    {
        return vec![(v, true)];
    }
    media_ids
        .iter()
        .map(|id| (format!("uuid={id}:/lifeboat.cred"), false))
        .collect()
}

/// Reads the credentials from the first location that has them; `Ok(None)` when there is no
/// file (none given and none on the stick). Also returns where it looked, for messages.
pub fn load() -> Result<(Option<Credentials>, Vec<String>)> {
    let cmdline = if super::in_environment() {
        std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
    } else {
        String::new()
    };
    let ids = crate::devices::bootmedia::ids_from_cmdline(&cmdline);
    let locs = locations(&cmdline, std::env::var("LIFEBOAT_CREDENTIALS").ok(), &ids);
    let mut looked = Vec::new();
    for (spec, explicit) in locs {
        looked.push(spec.clone());
        match read_spec(&spec) {
            Ok(text) => return Ok((Some(Credentials::parse(&text)?), looked)),
            Err(e) if explicit => {
                return Err(Error {
                    msg: format!("cannot read the credentials file {spec}: {}", e.msg),
                    ..e
                })
            }
            Err(_) => {}
        }
    }
    Ok((None, looked))
}

/// Reads a small file named like the credentials file (`FILE` or `PARTITION:/path`, the
/// partition mounted read-only just to read it): at most `max` bytes. Not a regular file (a
/// FIFO, a device node): refused at once (exit 2), never read or waited on.
pub fn read_small(spec: &str, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let store = crate::image::Store::open(spec, crate::image::Mode::ReadOnly)?;
    // A regular file only: a FIFO would block the job for ever, a device node is a disk.
    let f = crate::io::open::open_regular(&store.path, "a settings file")?;
    let mut data = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io("read", &store.path, e))?;
    if data.len() as u64 > max {
        return Err(Error::invalid(format!(
            "{spec} is larger than {max} bytes: not the file meant"
        )));
    }
    Ok(data)
}

fn read_spec(spec: &str) -> Result<String> {
    use std::io::Read;
    let store = crate::image::Store::open(spec, crate::image::Mode::ReadOnly)?;
    // A regular file only: a FIFO would block the job for ever, a device node is a disk.
    let f = crate::io::open::open_regular(&store.path, "a credentials file")?;
    let mut text = String::new();
    f.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(|e| Error::io("read", &store.path, e))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# lifeboat.cred\n\
        [NAS.local/Backups]\n\
        user = alice\n\
        password =  pass word #1  \n\
        domain=WORKGROUP\n\
        \n\
        ; the whole host\n\
        [nas.local]\n\
        user = bob\n\
        password = b=2\n\
        [10.0.2.2/]\n\
        password = guestless\n";

    #[test]
    fn logins_typed_into_the_process_are_found_by_share_and_user() {
        let l = Login {
            user: Some("alice".into()),
            password: Some("pw".into()),
            domain: None,
        };
        set_typed(vec![("NAS.local".into(), "Backups".into(), l.clone())]);
        assert_eq!(typed("nas.local", "backups", Some("alice")), Some(l));
        assert_eq!(typed("nas.local", "backups", Some("bob")), None);
        assert_eq!(typed("nas.local", "other", Some("alice")), None);
        set_typed(Vec::new());
        assert_eq!(typed("nas.local", "backups", Some("alice")), None);
    }

    #[test]
    fn a_typed_login_round_trips_through_the_file_text() {
        let l = Login {
            user: Some("alice".into()),
            password: Some("p#ss = w;rd, 1".into()),
            domain: Some("WORKGROUP".into()),
        };
        let t = l.file_text("10.0.2.100", "backups").unwrap();
        let c = Credentials::parse(&t).unwrap();
        assert_eq!(c.find("10.0.2.100", "backups", Some("alice")), Some(&l));
        for bad in [" lead", "trail ", "two\nlines"] {
            let l = Login {
                password: Some(bad.into()),
                ..l.clone()
            };
            let e = l.file_text("h", "s").unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidInput);
            assert!(!e.msg.contains(bad.trim()), "{e}");
        }
    }

    #[test]
    fn sections_and_lookup() {
        let c = Credentials::parse(FILE).unwrap();
        let a = c.find("nas.LOCAL", "backups", None).unwrap();
        assert_eq!(a.user.as_deref(), Some("alice"));
        assert_eq!(a.password.as_deref(), Some("pass word #1"));
        assert_eq!(a.domain.as_deref(), Some("WORKGROUP"));
        // Another share on that host: the host's section.
        let b = c.find("nas.local", "photos", None).unwrap();
        assert_eq!(b.user.as_deref(), Some("bob"));
        assert_eq!(b.password.as_deref(), Some("b=2"));
        // The URL names bob: alice's share section does not fit, the host's does.
        assert_eq!(
            c.find("nas.local", "backups", Some("bob"))
                .unwrap()
                .password
                .as_deref(),
            Some("b=2")
        );
        assert!(c.find("nas.local", "backups", Some("carol")).is_none());
        assert_eq!(
            c.find("10.0.2.2", "x", Some("anyone"))
                .unwrap()
                .password
                .as_deref(),
            Some("guestless")
        );
        assert!(c.find("other", "backups", None).is_none());
    }

    #[test]
    fn errors_name_the_line_never_its_text() {
        for (text, line) in [
            ("password = x\n", 1),
            ("[a]\nuser alice\n", 2),
            ("[a]\nsecret = hunter2\n", 2),
            ("[]\n", 1),
        ] {
            let e = Credentials::parse(text).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidInput);
            assert!(e.msg.contains(&format!("line {line}")), "{e}");
            assert!(
                !e.msg.contains("hunter2") && !e.msg.contains("alice"),
                "{e}"
            );
        }
    }

    #[test]
    fn s3_settings() {
        let text = "s3_endpoint = http://10.0.2.2:9000\n\
            s3_access_key = AKTOP\n\
            s3_secret_key = top/secret=\n\
            [nas.local]\n\
            user = bob\n\
            [s3://Lab]\n\
            s3_access_key = AKLAB\n\
            s3_secret_key = lab secret\n\
            s3_region = garage\n";
        let c = Credentials::parse(text).unwrap();
        let lab = c.find_s3("lab").unwrap();
        assert_eq!(lab.endpoint.as_deref(), Some("http://10.0.2.2:9000"));
        assert_eq!(lab.access_key.as_deref(), Some("AKLAB"));
        assert_eq!(lab.secret_key.as_deref(), Some("lab secret"));
        assert_eq!(lab.region.as_deref(), Some("garage"));
        let other = c.find_s3("other").unwrap();
        assert_eq!(other.access_key.as_deref(), Some("AKTOP"));
        assert_eq!(other.secret_key.as_deref(), Some("top/secret="));
        assert_eq!(other.region, None);
        // The share section is unchanged by the s3 lines.
        assert_eq!(
            c.find("nas.local", "x", None).unwrap().user.as_deref(),
            Some("bob")
        );
        assert!(!format!("{lab:?}").contains("lab secret"));
        assert!(Credentials::parse("user = x\n").is_err());
        let e = Credentials::parse("s3_secret = hunter2\n").unwrap_err();
        assert!(!e.msg.contains("hunter2"), "{e}");
        assert!(Credentials::parse("[a]\nuser = x\n")
            .unwrap()
            .find_s3("lab")
            .is_none());
    }

    #[test]
    fn debug_hides_the_password() {
        let c = Credentials::parse(FILE).unwrap();
        let s = format!("{c:?}");
        assert!(!s.contains("pass word"), "{s}");
        assert!(s.contains("alice"));
    }

    #[test]
    fn where_credentials_are_looked_for() {
        set_override(None);
        assert_eq!(
            locations("quiet", None, &["2E25-CE26".into()]),
            [("uuid=2E25-CE26:/lifeboat.cred".to_string(), false)]
        );
        assert_eq!(
            locations(
                "lifeboat.credentials=label=LIFEBOAT:/l.cred",
                None,
                &["X".into()]
            ),
            [("label=LIFEBOAT:/l.cred".to_string(), true)]
        );
        assert_eq!(
            locations(
                "lifeboat.credentials=label=LIFEBOAT:/l.cred",
                Some("/run/c".into()),
                &[]
            ),
            [("/run/c".to_string(), true)]
        );
        assert!(locations("", None, &[]).is_empty());
    }
}
