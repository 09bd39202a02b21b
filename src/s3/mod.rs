//! A small S3 client for the image store (`s3://BUCKET/PATH`): PUT, GET, HEAD and DELETE of
//! whole objects (a chunk is 1–4 MiB, so no multipart) and ListObjectsV2 with continuation,
//! every request signed with AWS Signature Version 4 ([`sigv4`]) and sent over `ureq`, plain
//! HTTP or HTTPS (rustls; path-style URLs `http[s]://ENDPOINT/BUCKET/KEY`, which every
//! S3-compatible server — Garage, MinIO, Ceph RGW, moto, AWS — accepts). Transient failures
//! (connection errors, HTTP 5xx, 429 "slow down") are retried with exponential back-off; the
//! store's refusals are typed errors that say what to fix (wrong keys, no such bucket, a
//! certificate not trusted) and never carry a key.
//!
//! HTTPS trusts Mozilla's root certificates (compiled in: `webpki-roots`), or, when the
//! credentials file names one with `s3_ca_file`, only the certificates of that PEM file (a
//! self-hosted store with its own CA). The endpoint, region and keys come from the
//! credentials file (`store::client`, keys `s3_endpoint`, `s3_region`,
//! `s3_access_key`, `s3_secret_key`, `s3_ca_file`; see `crate::net::cred`).
pub mod cmd;
pub mod image;
pub mod sigv4;
pub mod store;
mod xml;

use crate::error::{Error, ErrorKind, Result};
use std::io::Read;
use std::time::Duration;

/// Where and as whom to reach a store.
#[derive(Clone, Debug)]
pub struct Config {
    /// `host` or `host:port` (as sent in the Host header).
    pub host: String,
    pub region: String,
    pub keys: sigv4::Keys,
    /// For an `https://` endpoint: the TLS settings (the roots trusted); `None`: plain HTTP.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// The largest `s3_ca_file` read.
pub const MAX_CA_FILE: usize = 1 << 20;

impl Config {
    /// Parses an endpoint: `http://HOST[:PORT]` (or `HOST[:PORT]`) for plain HTTP,
    /// `https://HOST[:PORT]` for TLS trusting Mozilla's roots (see [`Config::with_ca`]).
    pub fn new(endpoint: &str, region: &str, keys: sigv4::Keys) -> Result<Config> {
        let e = endpoint.trim();
        let (host, tls) = if let Some(h) = e.strip_prefix("https://") {
            (h, Some(tls_config(mozilla_roots())?))
        } else {
            (e.strip_prefix("http://").unwrap_or(e), None)
        };
        let host = host.trim_end_matches('/');
        if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
            return Err(Error::invalid(format!(
                "s3_endpoint {e:?} is not HOST[:PORT], http://HOST[:PORT] or https://HOST[:PORT] \
                 (no path after it)"
            )));
        }
        Ok(Config {
            host: host.to_string(),
            region: if region.trim().is_empty() {
                "us-east-1".into()
            } else {
                region.trim().to_string()
            },
            keys,
            tls,
        })
    }

    /// Trusts only the certificates of `pem` (the text of `s3_ca_file`, named `what` in
    /// messages) instead of Mozilla's roots, like `curl --cacert` or the AWS CLI's `ca_bundle`:
    /// the store's own CA, and no public CA besides it. Refused for a plain-HTTP endpoint (a CA
    /// file there means the endpoint was meant to be `https://`).
    pub fn with_ca(mut self, pem: &[u8], what: &str) -> Result<Config> {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        if self.tls.is_none() {
            return Err(Error::invalid(format!(
                "s3_ca_file {what} is given but s3_endpoint is plain http://{}: write \
                 https://{} to use TLS with that CA",
                self.host, self.host
            )));
        }
        let bad = |why: String| {
            Error::invalid(format!(
                "s3_ca_file {what} is not a PEM file of CA certificates ({why}): give the \
                 store's CA certificate, the text from -----BEGIN CERTIFICATE----- to \
                 -----END CERTIFICATE-----"
            ))
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(pem) {
            let c = c.map_err(|e| bad(e.to_string()))?;
            roots.add(c).map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        self.tls = Some(tls_config(roots)?);
        Ok(self)
    }

    /// `http://HOST[:PORT]` or `https://HOST[:PORT]`, for URLs and messages.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host)
    }
}

/// Mozilla's root certificates, as compiled in by `webpki-roots`.
fn mozilla_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// rustls's client settings (its safe defaults: TLS 1.2 and 1.3, the `ring` provider) trusting
/// `roots`.
fn tls_config(roots: rustls::RootCertStore) -> Result<std::sync::Arc<rustls::ClientConfig>> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::unsupported(format!("TLS settings: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(cfg))
}

/// The TLS verdict inside a failed connection, if TLS is what failed: rustls's error, found
/// through the transport error's sources (an I/O error carries it as its inner error).
fn tls_error(t: &ureq::Transport) -> Option<rustls::Error> {
    let mut e: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(t);
    while let Some(err) = e {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r.clone());
        }
        if let Some(r) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(r.clone());
        }
        e = err.source();
    }
    None
}

/// A typed error for a TLS failure that retrying cannot cure: the store's certificate is not
/// trusted (or not for this name, or expired), or the two sides share no protocol.
fn tls_failure(endpoint: &str, e: &rustls::Error) -> Error {
    use rustls::CertificateError as C;
    let what = match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "its certificate is not trusted (signed by no CA Lifeboat trusts)".to_string()
        }
        rustls::Error::InvalidCertificate(C::NotValidForName) => {
            "its certificate is not trusted: it is not for this host name".to_string()
        }
        rustls::Error::InvalidCertificate(C::Expired | C::NotValidYet) => {
            "its certificate is not trusted: expired or not yet valid (check the clock)".to_string()
        }
        rustls::Error::InvalidCertificate(c) => {
            format!("its certificate is not trusted ({c:?})")
        }
        other => format!("the TLS handshake failed ({other})"),
    };
    Error::new(
        ErrorKind::Io,
        format!(
            "the S3 store at {endpoint}: {what}; if the store uses its own CA, name that CA's \
             certificate (a PEM file) with s3_ca_file in the credentials file"
        ),
    )
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
    /// Unix seconds (the store's `LastModified`).
    pub modified: u64,
}

/// A client for one bucket.
pub struct Client {
    cfg: Config,
    bucket: String,
    agent: ureq::Agent,
    /// Attempts per request (1 + retries).
    attempts: u32,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({}/{})", self.cfg.endpoint(), self.bucket)
    }
}

/// A response: status and body.
struct Reply {
    status: u16,
    body: Vec<u8>,
    len: Option<u64>,
}

/// The largest object body read (a chunk is at most 16 MiB plus framing; a listing page or a
/// manifest well under it).
const MAX_BODY: u64 = 64 << 20;

impl Client {
    pub fn new(cfg: Config, bucket: &str) -> Client {
        let mut agent = ureq::AgentBuilder::new();
        if let Some(tls) = &cfg.tls {
            agent = agent.tls_config(tls.clone());
        }
        let agent = agent
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(120))
            .max_idle_connections_per_host(64)
            // A redirect would be re-sent unsigned for another host: an error instead.
            .redirects(0)
            .build();
        Client {
            cfg,
            bucket: bucket.to_string(),
            agent,
            attempts: 6,
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Sends one signed request, retrying transient failures; any status is returned.
    fn send(
        &self,
        method: &str,
        key: &str,
        query: &[(String, String)],
        body: &[u8],
    ) -> Result<Reply> {
        self.send_with(method, key, query, &[], body)
    }

    /// [`Client::send`] with `extra` headers sent as they are (not signed: SigV4 needs only the
    /// `host` and `x-amz-*` headers signed, and the conditions below are not `x-amz-*`).
    fn send_with(
        &self,
        method: &str,
        key: &str,
        query: &[(String, String)],
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply> {
        let path = format!("/{}/{}", self.bucket, key);
        let payload = if body.is_empty() {
            sigv4::EMPTY_SHA256.to_string()
        } else {
            sigv4::sha256_hex(body)
        };
        let mut url = format!("{}{}", self.cfg.endpoint(), sigv4::uri_encode(&path, true));
        if !query.is_empty() {
            url.push('?');
            url.push_str(&sigv4::canonical_query(query));
        }
        let mut last: Option<Error> = None;
        for attempt in 0..self.attempts {
            if attempt > 0 {
                // 0.2 s, 0.4 s, … capped at 5 s, plus up to 1/4 of it at random so that many
                // machines retrying at once spread out.
                let base = (200u64 << (attempt - 1).min(5)).min(5_000);
                let jitter = crate::image::crypt::random::<2>()
                    .map(|b| u64::from(u16::from_le_bytes(b)) % (base / 4 + 1))
                    .unwrap_or(0);
                std::thread::sleep(Duration::from_millis(base + jitter));
            }
            let date = sigv4::amz_date(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            );
            let headers = vec![
                ("host".to_string(), self.cfg.host.clone()),
                ("x-amz-content-sha256".to_string(), payload.clone()),
                ("x-amz-date".to_string(), date.clone()),
            ];
            let auth = sigv4::authorization(
                &self.cfg.keys,
                &self.cfg.region,
                &date,
                &sigv4::Request {
                    method,
                    path: &path,
                    query,
                    headers: &headers,
                    payload_sha256: &payload,
                },
            );
            let mut req = self.agent.request(method, &url);
            for (k, v) in &headers {
                req = req.set(k, v);
            }
            req = req.set("authorization", &auth);
            for (k, v) in extra {
                req = req.set(k, v);
            }
            let res = if method == "PUT" {
                req.send_bytes(body)
            } else {
                req.call()
            };
            let resp = match res {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(ureq::Error::Transport(t)) => {
                    if let Some(e) = tls_error(&t) {
                        return Err(tls_failure(&self.cfg.endpoint(), &e));
                    }
                    last = Some(Error::new(
                        ErrorKind::Io,
                        format!(
                            "cannot reach the S3 store at {} ({}): check s3_endpoint \
                             in the credentials file and the network",
                            self.cfg.endpoint(),
                            t.kind()
                        ),
                    ));
                    continue;
                }
            };
            let status = resp.status();
            let len = resp
                .header("content-length")
                .and_then(|v| v.trim().parse().ok());
            let mut body = Vec::new();
            if method != "HEAD" {
                if let Err(e) = resp.into_reader().take(MAX_BODY).read_to_end(&mut body) {
                    last = Some(Error::new(
                        ErrorKind::Io,
                        format!(
                            "the S3 store at {} broke off a reply: {e}",
                            self.cfg.endpoint()
                        ),
                    ));
                    continue;
                }
            }
            if matches!(status, 429 | 500 | 502 | 503 | 504) {
                last = Some(self.status_error(method, key, status, &body));
                continue;
            }
            return Ok(Reply { status, body, len });
        }
        Err(last.unwrap_or_else(|| Error::new(ErrorKind::Io, "no attempt made")))
    }

    /// A typed error for a refusal, naming the object and what to fix (never a key).
    fn status_error(&self, method: &str, key: &str, status: u16, body: &[u8]) -> Error {
        let text = String::from_utf8_lossy(body);
        let code = xml::tag(&text, "Code").unwrap_or_default();
        let what = format!("s3://{}/{key}", self.bucket);
        match (status, code.as_str()) {
            (403, c) if c != "AccessDenied" => Error::invalid(format!(
                "the S3 store at {} refused the keys ({}): check s3_access_key and \
                     s3_secret_key in the credentials file",
                self.cfg.endpoint(),
                if code.is_empty() { "403" } else { &code }
            )),
            (403, _) => Error::refused(format!(
                "the S3 store denied {method} {what} (AccessDenied): the keys in the credentials \
                 file lack that permission on the bucket"
            )),
            (404, "NoSuchBucket") => Error::not_found(format!(
                "the S3 store at {} has no bucket {:?}: create it first (e.g. `garage \
                 bucket create`, `mc mb`), or correct the location",
                self.cfg.endpoint(),
                self.bucket
            )),
            _ => Error::new(
                ErrorKind::Io,
                format!(
                    "the S3 store answered {method} {what} with HTTP {status}{}",
                    if code.is_empty() {
                        String::new()
                    } else {
                        format!(" ({code})")
                    }
                ),
            ),
        }
    }

    fn ok(&self, method: &str, key: &str, r: &Reply) -> Result<()> {
        if (200..300).contains(&r.status) {
            Ok(())
        } else {
            Err(self.status_error(method, key, r.status, &r.body))
        }
    }

    /// Stores `body` as `key` (replacing it).
    pub fn put(&self, key: &str, body: &[u8]) -> Result<()> {
        let r = self.send("PUT", key, &[], body)?;
        self.ok("PUT", key, &r)
    }

    /// Stores `body` as `key` only if there is no such object yet (`If-None-Match: *`, a
    /// conditional write: AWS S3, MinIO, moto). Returns whether this call created it: `false`
    /// when the object exists or another conditional write of it is in flight (HTTP 412, 409).
    /// A store that does not implement the condition (HTTP 501) gets a plain PUT; one that
    /// ignores it overwrites — callers re-read what the store holds afterwards either way.
    pub fn put_if_absent(&self, key: &str, body: &[u8]) -> Result<bool> {
        let r = self.send_with("PUT", key, &[], &[("if-none-match", "*")], body)?;
        match r.status {
            412 | 409 => Ok(false),
            501 => self.put(key, body).map(|()| true),
            _ => self.ok("PUT", key, &r).map(|()| true),
        }
    }

    /// The object's bytes, or `None` when there is no such key.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let r = self.send("GET", key, &[], &[])?;
        if r.status == 404
            && xml::tag(&String::from_utf8_lossy(&r.body), "Code").as_deref()
                != Some("NoSuchBucket")
        {
            return Ok(None);
        }
        self.ok("GET", key, &r)?;
        Ok(Some(r.body))
    }

    /// The object's size, or `None` when there is no such key.
    pub fn head(&self, key: &str) -> Result<Option<u64>> {
        let r = self.send("HEAD", key, &[], &[])?;
        if r.status == 404 {
            return Ok(None);
        }
        self.ok("HEAD", key, &r)?;
        Ok(Some(r.len.unwrap_or(0)))
    }

    /// Removes `key` (no error when it is not there).
    pub fn delete(&self, key: &str) -> Result<()> {
        let r = self.send("DELETE", key, &[], &[])?;
        if r.status == 404 {
            return Ok(());
        }
        self.ok("DELETE", key, &r)
    }

    /// Every object whose key starts with `prefix` (ListObjectsV2, following continuation
    /// tokens), in key order.
    pub fn list(&self, prefix: &str) -> Result<Vec<Object>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![
                ("list-type".to_string(), "2".to_string()),
                ("prefix".to_string(), prefix.to_string()),
            ];
            if let Some(t) = &token {
                q.push(("continuation-token".to_string(), t.clone()));
            }
            let r = self.send("GET", "", &q, &[])?;
            self.ok("GET", &format!("?list-type=2&prefix={prefix}"), &r)?;
            let page = xml::parse_list(&String::from_utf8_lossy(&r.body)).ok_or_else(|| {
                Error::corrupt(format!(
                    "the S3 store at {} sent a listing Lifeboat cannot read",
                    self.cfg.endpoint()
                ))
            })?;
            out.extend(page.objects);
            match page.next {
                Some(t) if page.truncated => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> sigv4::Keys {
        sigv4::Keys {
            access_key: "AK".into(),
            secret_key: zeroize::Zeroizing::new("SK".into()),
        }
    }

    #[test]
    fn endpoints() {
        let c = Config::new("http://10.0.2.2:9000/", "", keys()).unwrap();
        assert_eq!((c.host.as_str(), c.tls.is_none()), ("10.0.2.2:9000", true));
        assert_eq!(c.endpoint(), "http://10.0.2.2:9000");
        assert_eq!(c.region, "us-east-1");
        let c = Config::new("nas:3900", "garage", keys()).unwrap();
        assert_eq!(
            (c.endpoint().as_str(), c.region.as_str()),
            ("http://nas:3900", "garage")
        );
        let c = Config::new("https://s3.eu-west-1.amazonaws.com", "eu-west-1", keys()).unwrap();
        assert!(c.tls.is_some());
        assert_eq!(c.endpoint(), "https://s3.eu-west-1.amazonaws.com");
        for bad in ["", "https://", "http://host/path", "ho st"] {
            let e = Config::new(bad, "", keys()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn ca_files() {
        let https = || Config::new("https://nas:9000", "", keys()).unwrap();
        // No certificate in it, or a damaged one: usage errors saying what to give.
        for pem in [
            &b"hello\n"[..],
            b"",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let e = https().with_ca(pem, "ca.pem").unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput);
            assert!(e.msg.contains("PEM"), "{}", e.msg);
        }
        // A CA file with a plain-HTTP endpoint is a mistake, not a silent no-op.
        let plain = Config::new("http://nas:9000", "", keys()).unwrap();
        let e = plain.with_ca(b"", "ca.pem").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        assert!(e.msg.contains("https://nas:9000"), "{}", e.msg);
    }
}
