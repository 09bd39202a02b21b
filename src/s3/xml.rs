//! The little XML the S3 client reads: a ListObjectsV2 page (`Contents` with `Key`, `Size`,
//! `LastModified`; `IsTruncated`; `NextContinuationToken`) and an error's `Code`. A tag scanner,
//! not a general parser: S3 replies are flat, and the five predefined entities and numeric
//! character references are decoded.
use super::Object;

/// The text of the first `<name>…</name>` in `s`, decoded.
pub(super) fn tag(s: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let a = s.find(&open)? + open.len();
    let b = a + s[a..].find(&close)?;
    Some(unescape(&s[a..b]))
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let ent = &rest[1..end];
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => ent
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// One page of a listing.
pub(super) struct Page {
    pub objects: Vec<Object>,
    pub truncated: bool,
    pub next: Option<String>,
}

/// Parses a `ListBucketResult`; `None` when it is not one.
pub(super) fn parse_list(s: &str) -> Option<Page> {
    if !s.contains("<ListBucketResult") {
        return None;
    }
    let mut objects = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("<Contents>") {
        let end = rest[i..].find("</Contents>")? + i;
        let c = &rest[i..end];
        objects.push(Object {
            key: tag(c, "Key")?,
            size: tag(c, "Size")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
            modified: tag(c, "LastModified")
                .and_then(|t| parse_time(&t))
                .unwrap_or(0),
        });
        rest = &rest[end..];
    }
    Some(Page {
        objects,
        truncated: tag(s, "IsTruncated").is_some_and(|t| t.trim() == "true"),
        next: tag(s, "NextContinuationToken"),
    })
}

/// Unix seconds of an ISO 8601 UTC time (`2026-11-26T23:40:05.000Z`).
pub(super) fn parse_time(t: &str) -> Option<u64> {
    let t = t.trim();
    let n = |a: usize, b: usize| t.get(a..b)?.parse::<i64>().ok();
    let (y, m, d) = (n(0, 4)?, n(5, 7)?, n(8, 10)?);
    let (hh, mm, ss) = (n(11, 13)?, n(14, 16)?, n(17, 19)?);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_page() {
        let s = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix>
<KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>
<Contents><Key>p/a&amp;b</Key><LastModified>2013-05-24T00:00:00.000Z</LastModified><ETag>&quot;x&quot;</ETag><Size>10</Size></Contents>
<Contents><Key>p/c</Key><LastModified>2000-02-29T01:01:01Z</LastModified><Size>3</Size></Contents>
<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken></ListBucketResult>"#;
        let p = parse_list(s).unwrap();
        assert_eq!(
            p.objects,
            vec![
                Object {
                    key: "p/a&b".into(),
                    size: 10,
                    modified: 1_369_353_600
                },
                Object {
                    key: "p/c".into(),
                    size: 3,
                    modified: 951_782_400 + 3661
                }
            ]
        );
        assert!(p.truncated);
        assert_eq!(
            p.next.as_deref(),
            Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
        );
        assert!(parse_list("<Error><Code>NoSuchBucket</Code></Error>").is_none());
        assert_eq!(
            tag("<Error><Code>SignatureDoesNotMatch</Code></Error>", "Code").as_deref(),
            Some("SignatureDoesNotMatch")
        );
        assert_eq!(unescape("a&#65;&#x42;&bogus;"), "aAB&bogus;");
    }
}
