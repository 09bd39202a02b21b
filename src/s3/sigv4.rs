//! AWS Signature Version 4 for S3 requests (header-based, `AWS4-HMAC-SHA256`): the canonical
//! request, the string to sign, the signing key (HMAC-SHA256 chain over date, region, service,
//! `aws4_request`) and the `Authorization` header. Checked against the worked examples of the
//! AWS S3 documentation ("Examples: Signature Calculations in AWS Signature Version 4").
use crate::image::format::hex;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// SHA-256 of an empty body (the `x-amz-content-sha256` of a GET, HEAD or DELETE).
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// One request as it is signed. `headers` must hold `host`, `x-amz-date` and
/// `x-amz-content-sha256` (names in any case); every header given is signed.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path before encoding (`/bucket/key`); every segment is URI-encoded once.
    pub path: &'a str,
    /// Query parameters before encoding, in any order (a bare `?lifecycle` is `("lifecycle", "")`).
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body (or `UNSIGNED-PAYLOAD`).
    pub payload_sha256: &'a str,
}

/// The secret half of an S3 login; never printed (Debug hides it).
#[derive(Clone)]
pub struct Keys {
    pub access_key: String,
    pub secret_key: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// URI-encodes `s` the SigV4 way: every byte but `A-Z a-z 0-9 - _ . ~` as `%XX` (upper-case
/// hex); `/` kept when `keep_slash` (object key paths).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The canonical query string: names and values encoded, sorted by name then value.
pub fn canonical_query(q: &[(String, String)]) -> String {
    let mut v: Vec<(String, String)> = q
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    v.sort();
    v.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `(canonical headers, signed header names)`: names lower-cased, values trimmed with inner
/// runs of spaces folded, sorted by name.
fn canonical_headers(h: &[(String, String)]) -> (String, String) {
    let mut v: Vec<(String, String)> = h
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    v.sort();
    let text = v.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let names = v
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (text, names)
}

/// The canonical request (method, path, query, headers, signed names, payload hash).
pub fn canonical_request(r: &Request) -> String {
    let (headers, names) = canonical_headers(r.headers);
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        r.method,
        uri_encode(r.path, true),
        canonical_query(r.query),
        headers,
        names,
        r.payload_sha256
    )
}

/// The `Authorization` header value for `r` at `amz_date` (`YYYYMMDDTHHMMSSZ`) in `region`.
pub fn authorization(keys: &Keys, region: &str, amz_date: &str, r: &Request) -> String {
    let day = &amz_date[..8.min(amz_date.len())];
    let scope = format!("{day}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request(r).as_bytes())
    );
    let mut k = zeroize::Zeroizing::new(format!("AWS4{}", &*keys.secret_key).into_bytes());
    let mut key = hmac(&k, day.as_bytes());
    k.iter_mut().for_each(|b| *b = 0);
    for part in [region, "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let sig = hex(&hmac(&key, to_sign.as_bytes()));
    let (_, names) = canonical_headers(r.headers);
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope},SignedHeaders={names},Signature={sig}",
        keys.access_key
    )
}

/// `YYYYMMDDTHHMMSSZ` of Unix time `secs` (UTC; proleptic Gregorian, days to civil date).
pub fn amz_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-from-civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    //! The vectors are the worked examples of the AWS S3 API reference, "Examples: Signature
    //! Calculations in AWS Signature Version 4" (Authenticating Requests: Using the
    //! Authorization Header): bucket `examplebucket`, 2013-05-24 00:00:00 UTC, us-east-1.
    use super::*;

    fn keys() -> Keys {
        Keys {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: zeroize::Zeroizing::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()),
        }
    }

    fn h(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const DATE: &str = "20130524T000000Z";
    const HOST: &str = "examplebucket.s3.amazonaws.com";

    fn sig(auth: &str) -> &str {
        auth.rsplit("Signature=").next().unwrap()
    }

    #[test]
    fn aws_example_get_object() {
        let headers = h(&[
            ("Host", HOST),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", DATE),
        ]);
        let r = Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        // The intermediate value the example shows: the hash of the canonical request.
        assert_eq!(
            sha256_hex(canonical_request(&r).as_bytes()),
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(
            authorization(&keys(), "us-east-1", DATE, &r),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn aws_example_put_object() {
        let body = b"Welcome to Amazon S3.";
        let payload = sha256_hex(body);
        assert_eq!(
            payload,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let headers = h(&[
            ("Host", HOST),
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-content-sha256", &payload),
            ("x-amz-date", DATE),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ]);
        // The key holds '$', encoded once as %24.
        let r = Request {
            method: "PUT",
            path: "/test$file.text",
            query: &[],
            headers: &headers,
            payload_sha256: &payload,
        };
        assert!(canonical_request(&r).starts_with("PUT\n/test%24file.text\n\n"));
        assert_eq!(
            sig(&authorization(&keys(), "us-east-1", DATE, &r)),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn aws_example_get_bucket_lifecycle() {
        let headers = h(&[
            ("Host", HOST),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", DATE),
        ]);
        let r = Request {
            method: "GET",
            path: "/",
            query: &[("lifecycle".into(), String::new())],
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        assert_eq!(
            sig(&authorization(&keys(), "us-east-1", DATE, &r)),
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
    }

    #[test]
    fn aws_example_list_objects() {
        let headers = h(&[
            ("Host", HOST),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", DATE),
        ]);
        // Given out of order: the canonical query sorts them.
        let r = Request {
            method: "GET",
            path: "/",
            query: &[
                ("prefix".into(), "J".into()),
                ("max-keys".into(), "2".into()),
            ],
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        assert_eq!(
            sig(&authorization(&keys(), "us-east-1", DATE, &r)),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
        // Another secret gives another signature (the test can fail).
        let mut other = keys();
        other.secret_key = zeroize::Zeroizing::new("x".into());
        assert_ne!(
            sig(&authorization(&other, "us-east-1", DATE, &r)),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    #[test]
    fn encoding_and_dates() {
        assert_eq!(uri_encode("a b/c~d+é", true), "a%20b/c~d%2B%C3%A9");
        assert_eq!(uri_encode("a/b=", false), "a%2Fb%3D");
        assert_eq!(
            canonical_query(&[
                ("prefix".into(), "img/".into()),
                ("list-type".into(), "2".into()),
                ("continuation-token".into(), "a+b=".into()),
            ]),
            "continuation-token=a%2Bb%3D&list-type=2&prefix=img%2F"
        );
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_369_353_600), DATE);
        assert_eq!(amz_date(951_782_400 + 3661), "20000229T010101Z");
        assert_eq!(amz_date(4_102_444_799), "20991231T235959Z");
    }
}
