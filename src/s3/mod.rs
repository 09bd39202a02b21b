//! A small S3 client for the image store (`s3://BUCKET/PATH`): PUT, GET, HEAD and DELETE of
//! whole objects (a chunk is 1–4 MiB, so no multipart) and ListObjectsV2 with continuation,
//! every request signed with AWS Signature Version 4 ([`sigv4`]) and sent over `ureq` (plain
//! HTTP; path-style URLs `http://ENDPOINT/BUCKET/KEY`, which every S3-compatible server —
//! Garage, MinIO, Ceph RGW, moto, AWS — accepts). Transient failures (connection errors,
//! HTTP 5xx, 429 "slow down") are retried with exponential back-off; the store's refusals are
//! typed errors that say what to fix (wrong keys, no such bucket) and never carry a key.
//!
//! The endpoint, region and keys come from the credentials file ([`Config::from_credentials`],
//! keys `s3_endpoint`, `s3_region`, `s3_access_key`, `s3_secret_key`; see `crate::net::cred`).
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
}

impl Config {
    /// Parses an endpoint (`http://HOST[:PORT]`, or `HOST[:PORT]` meaning plain HTTP).
    /// `https://` is refused: this build carries no TLS (see Cargo.toml).
    pub fn new(endpoint: &str, region: &str, keys: sigv4::Keys) -> Result<Config> {
        let e = endpoint.trim().trim_end_matches('/');
        let host = if let Some(h) = e.strip_prefix("http://") {
            h
        } else if e.starts_with("https://") {
            return Err(Error::unsupported(format!(
                "s3_endpoint {e:?}: this build of Lifeboat speaks plain HTTP only (no TLS in the \
                 initramfs); give the store's http:// endpoint (a LAN store such as Garage or \
                 MinIO), or put a TLS-terminating proxy in front of it"
            )));
        } else {
            e
        };
        if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
            return Err(Error::invalid(format!(
                "s3_endpoint {e:?} is not HOST[:PORT] or http://HOST[:PORT] (no path after it)"
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
        })
    }
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
        write!(f, "Client(http://{}/{})", self.cfg.host, self.bucket)
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
        let agent = ureq::AgentBuilder::new()
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
        let mut url = format!("http://{}{}", self.cfg.host, sigv4::uri_encode(&path, true));
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
                    last = Some(Error::new(
                        ErrorKind::Io,
                        format!(
                            "cannot reach the S3 store at http://{} ({}): check s3_endpoint \
                             in the credentials file and the network",
                            self.cfg.host,
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
                            "the S3 store at http://{} broke off a reply: {e}",
                            self.cfg.host
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
                "the S3 store at http://{} refused the keys ({}): check s3_access_key and \
                     s3_secret_key in the credentials file",
                self.cfg.host,
                if code.is_empty() { "403" } else { &code }
            )),
            (403, _) => Error::refused(format!(
                "the S3 store denied {method} {what} (AccessDenied): the keys in the credentials \
                 file lack that permission on the bucket"
            )),
            (404, "NoSuchBucket") => Error::not_found(format!(
                "the S3 store at http://{} has no bucket {:?}: create it first (e.g. `garage \
                 bucket create`, `mc mb`), or correct the location",
                self.cfg.host, self.bucket
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
                    "the S3 store at http://{} sent a listing Lifeboat cannot read",
                    self.cfg.host
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
