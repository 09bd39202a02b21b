//! SCSI/SAS disk health, as smartctl reads it from a SAS drive: LOG SENSE pages and the grown
//! defect list. Pure decoders and the classifier; `device` sends the commands.
//!
//! Layouts from SPC-4 (LOG SENSE, §6.7; log parameters, §7.3) and SBC-3 (READ DEFECT DATA,
//! §5.15): a log page is a 4-byte header (byte 0 page code in bits 5-0, byte 1 subpage, bytes
//! 2-3 the length of what follows) and parameters, each a 4-byte header (bytes 0-1 parameter
//! code, byte 2 control bits, byte 3 the value's length) and a big-endian value. The pages read:
//! 00h supported pages; 03h read (05h verify, 02h write) error counters, parameter 0006h "total
//! uncorrected errors"; 06h non-medium errors, parameter 0000h; 0Dh temperature, parameter
//! 0000h byte 1 (°C, FFh = not available); 10h self-test results, parameters 0001h–0014h
//! (0001h the most recent: byte 0 bits 3-0 the result, bytes 2-3 power-on hours, 4-11 the
//! first failing LBA); 15h background scan results, parameter 0000h bytes 0-3 power-on
//! minutes; 2Fh informational exceptions, parameter 0000h: the ASC/ASCQ the drive would
//! report for a predicted failure (00h: none; 5Dh: failure prediction threshold exceeded) and
//! the latest temperature. READ DEFECT DATA (10) with the grown list asked for answers a
//! 4-byte header whose bytes 2-3 are the list's length in bytes (entries of 4 or 8 bytes by
//! the format in byte 1 bits 2-0).
//!
//! The verdict follows the ATA rules (never the drive's own "OK"): uncorrected read, verify or
//! write errors, a predicted failure, a failed latest self-test or more than 100 grown defects
//! → failing; grown defects (the SAS counterpart of reallocated sectors) → worn; a drive that
//! reports neither an error counter page nor a defect list is unknown.
use super::{Counters, Health, SelfTest, Status};

/// LOG SENSE operation code and the pages Lifeboat reads.
pub const LOG_SENSE: u8 = 0x4D;
pub const PAGE_SUPPORTED: u8 = 0x00;
pub const PAGE_WRITE_ERRORS: u8 = 0x02;
pub const PAGE_READ_ERRORS: u8 = 0x03;
pub const PAGE_VERIFY_ERRORS: u8 = 0x05;
pub const PAGE_NON_MEDIUM: u8 = 0x06;
pub const PAGE_TEMPERATURE: u8 = 0x0D;
pub const PAGE_SELF_TEST: u8 = 0x10;
pub const PAGE_BACKGROUND_SCAN: u8 = 0x15;
pub const PAGE_INFO_EXCEPTIONS: u8 = 0x2F;
/// READ DEFECT DATA (10).
pub const READ_DEFECT_DATA_10: u8 = 0x37;
/// More grown defects than this: failing (as more than 100 reallocated ATA sectors).
pub const GROWN_DEFECTS_FAILING: u64 = 100;

/// The LOG SENSE (10) CDB for the cumulative values (PC 01b) of `page`, `alloc` bytes.
pub fn log_sense_cdb(page: u8, alloc: u16) -> [u8; 10] {
    let [hi, lo] = alloc.to_be_bytes();
    [LOG_SENSE, 0, 0x40 | (page & 0x3F), 0, 0, 0, 0, hi, lo, 0]
}

/// The READ DEFECT DATA (10) CDB asking for the grown list's header only (REQ_GLIST, format
/// 101b "physical sector", 4 bytes: the header carries the whole list's length).
pub fn read_defects_cdb() -> [u8; 10] {
    [READ_DEFECT_DATA_10, 0, 0x08 | 0x05, 0, 0, 0, 0, 0, 4, 0]
}

/// One log parameter: its code and value bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param<'a> {
    pub code: u16,
    pub value: &'a [u8],
}

/// The parameters of a log page whose page code must be `page`; None when the header does
/// not match or is short. A parameter running past the page's end is dropped.
pub fn params(b: &[u8], page: u8) -> Option<Vec<Param<'_>>> {
    if b.len() < 4 || b[0] & 0x3F != page {
        return None;
    }
    let end = (4 + usize::from(u16::from_be_bytes([b[2], b[3]]))).min(b.len());
    let mut v = Vec::new();
    let mut i = 4;
    while i + 4 <= end {
        let len = usize::from(b[i + 3]);
        if i + 4 + len > end {
            break;
        }
        v.push(Param {
            code: u16::from_be_bytes([b[i], b[i + 1]]),
            value: &b[i + 4..i + 4 + len],
        });
        i += 4 + len;
    }
    Some(v)
}

/// A big-endian counter of any length up to 8 bytes (longer saturate).
pub fn counter(v: &[u8]) -> u64 {
    if v.len() > 8 && v[..v.len() - 8].iter().any(|&b| b != 0) {
        return u64::MAX;
    }
    v.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b))
}

fn param<'a>(ps: &'a [Param<'a>], code: u16) -> Option<&'a Param<'a>> {
    ps.iter().find(|p| p.code == code)
}

/// The pages the drive lists in page 00h.
pub fn supported_pages(b: &[u8]) -> Option<Vec<u8>> {
    if b.len() < 4 || b[0] & 0x3F != PAGE_SUPPORTED {
        return None;
    }
    let end = (4 + usize::from(u16::from_be_bytes([b[2], b[3]]))).min(b.len());
    Some(b[4..end].iter().map(|p| p & 0x3F).collect())
}

/// Total uncorrected errors (parameter 0006h) of an error counter page.
pub fn uncorrected(b: &[u8], page: u8) -> Option<u64> {
    let ps = params(b, page)?;
    param(&ps, 0x0006).map(|p| counter(p.value))
}

/// The non-medium error count (page 06h, parameter 0000h).
pub fn non_medium(b: &[u8]) -> Option<u64> {
    let ps = params(b, PAGE_NON_MEDIUM)?;
    param(&ps, 0x0000).map(|p| counter(p.value))
}

/// The current temperature in °C (page 0Dh, parameter 0000h; FFh = not available).
pub fn temperature(b: &[u8]) -> Option<u64> {
    let ps = params(b, PAGE_TEMPERATURE)?;
    let t = *param(&ps, 0x0000)?.value.get(1)?;
    (t != 0xFF).then_some(u64::from(t))
}

/// Informational exceptions (page 2Fh, parameter 0000h): (ASC, ASCQ, temperature °C).
pub fn info_exceptions(b: &[u8]) -> Option<(u8, u8, Option<u64>)> {
    let ps = params(b, PAGE_INFO_EXCEPTIONS)?;
    let v = param(&ps, 0x0000)?.value;
    let (asc, ascq) = (*v.first()?, *v.get(1)?);
    let t = v
        .get(2)
        .filter(|&&t| t != 0 && t != 0xFF)
        .map(|&t| u64::from(t));
    Some((asc, ascq, t))
}

/// Power-on hours from the background scan results page (15h, parameter 0000h: minutes).
pub fn power_on_hours(b: &[u8]) -> Option<u64> {
    let ps = params(b, PAGE_BACKGROUND_SCAN)?;
    let v = param(&ps, 0x0000)?.value.get(0..4)?;
    Some(counter(v) / 60)
}

/// The latest self-test (page 10h, parameter 0001h); None when the log holds none.
pub fn latest_self_test(b: &[u8]) -> Option<SelfTest> {
    let ps = params(b, PAGE_SELF_TEST)?;
    let v = param(&ps, 0x0001)?.value;
    if v.len() < 12 || v.iter().all(|&x| x == 0) {
        return None;
    }
    let code = v[0] >> 5;
    let res = v[0] & 0x0F;
    let kind = match code {
        1 | 5 => "short",
        2 | 6 => "extended",
        0 => "default",
        _ => "vendor",
    }
    .to_string();
    let (result, passed) = match res {
        0 => ("completed without error", Some(true)),
        1 => ("aborted by the host (SEND DIAGNOSTIC)", None),
        2 => ("aborted (reset or another cause)", None),
        3 => ("failed: an error that stopped the test", Some(false)),
        4 => ("failed (segment unknown)", Some(false)),
        5 => ("failed (first segment)", Some(false)),
        6 => ("failed (second segment)", Some(false)),
        7 => ("failed (another segment)", Some(false)),
        15 => ("in progress", None),
        _ => ("reserved result code", None),
    };
    let lba = u64::from_be_bytes(v[4..12].try_into().unwrap_or([0xFF; 8]));
    Some(SelfTest {
        kind,
        result: result.to_string(),
        passed,
        power_on_hours: u64::from(u16::from_be_bytes([v[2], v[3]])),
        failing_lba: (passed == Some(false) && lba != u64::MAX).then_some(lba),
    })
}

/// The number of grown defects from a READ DEFECT DATA (10) header: the list's length over
/// its entry size (8 bytes, or 4 for the short block format 000b). None when the header does
/// not carry the grown list (GLISTV clear).
pub fn grown_defects(h: &[u8]) -> Option<u64> {
    if h.len() < 4 || h[1] & 0x08 == 0 {
        return None;
    }
    let len = u64::from(u16::from_be_bytes([h[2], h[3]]));
    let entry = if h[1] & 0x07 == 0 { 4 } else { 8 };
    Some(len / entry)
}

/// What was read from one drive (each page None when the drive does not have it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScsiPages {
    pub supported: Option<Vec<u8>>,
    pub read_errors: Option<Vec<u8>>,
    pub write_errors: Option<Vec<u8>>,
    pub verify_errors: Option<Vec<u8>>,
    pub non_medium: Option<Vec<u8>>,
    pub temperature: Option<Vec<u8>>,
    pub self_test: Option<Vec<u8>>,
    pub background_scan: Option<Vec<u8>>,
    pub info_exceptions: Option<Vec<u8>>,
    /// The READ DEFECT DATA (10) header of the grown list.
    pub defects: Option<Vec<u8>>,
}

/// Classifies a SCSI/SAS drive from its pages.
pub fn classify(p: &ScsiPages) -> Health {
    let mut h = Health::unknown("");
    h.reasons.clear();
    h.protocol = Some("scsi".into());
    let dec = |b: &Option<Vec<u8>>, page| b.as_deref().and_then(|b| uncorrected(b, page));
    let read = dec(&p.read_errors, PAGE_READ_ERRORS);
    let write = dec(&p.write_errors, PAGE_WRITE_ERRORS);
    let verify = dec(&p.verify_errors, PAGE_VERIFY_ERRORS);
    let grown = p.defects.as_deref().and_then(grown_defects);
    let ie = p.info_exceptions.as_deref().and_then(info_exceptions);
    let temp = p
        .temperature
        .as_deref()
        .and_then(temperature)
        .or(ie.and_then(|x| x.2));
    h.counters = Counters {
        grown_defects: grown,
        read_uncorrected: read,
        write_uncorrected: write,
        verify_uncorrected: verify,
        non_medium_errors: p.non_medium.as_deref().and_then(non_medium),
        temperature_celsius: temp,
        power_on_hours: p.background_scan.as_deref().and_then(power_on_hours),
        ..Counters::default()
    };
    h.self_test = p.self_test.as_deref().and_then(latest_self_test);
    let mut status = Status::Ok;
    let mut reasons = Vec::new();
    let mut fail = |why: String| {
        status = Status::Failing;
        reasons.push(why);
    };
    for (n, what, page) in [
        (read, "read", 3),
        (verify, "verify", 5),
        (write, "write", 2),
    ] {
        if let Some(n) = n.filter(|&n| n > 0) {
            fail(format!(
                "{n} uncorrected {what} errors (log page {page:02X}h): the drive lost data it could not recover"
            ));
        }
    }
    if let Some((asc, ascq, _)) = ie.filter(|x| x.0 != 0) {
        fail(format!(
            "the drive predicts its own failure (informational exception ASC/ASCQ {asc:02X}h/{ascq:02X}h)"
        ));
    }
    if let Some(t) = h.self_test.as_ref().filter(|t| t.passed == Some(false)) {
        fail(format!(
            "the latest {} self-test {} at {} power-on hours",
            t.kind, t.result, t.power_on_hours
        ));
    }
    match grown {
        Some(g) if g > GROWN_DEFECTS_FAILING => fail(format!(
            "{g} grown defects (sectors the drive replaced with spares since it left the factory)"
        )),
        Some(g) if g > 0 && status == Status::Ok => {
            status = Status::Worn;
            reasons.push(format!(
                "{g} grown defects (sectors the drive replaced with spares since it left the factory)"
            ));
        }
        Some(g) if g > 0 => reasons.push(format!("{g} grown defects")),
        _ => {}
    }
    if let Some(n) = h.counters.non_medium_errors.filter(|&n| n > 0) {
        h.notes.push(format!(
            "{n} non-medium errors (log page 06h: link, cabling or controller problems, not the platters)"
        ));
    }
    if read.is_none() && grown.is_none() && status == Status::Ok {
        // Nothing bad was seen, but nothing that would show bad sectors was read either.
        h.reasons = vec![
            "the SCSI drive reports neither error counters (log page 03h) nor a grown defect list, so there is nothing to judge it by"
                .into(),
        ];
        return h;
    }
    if read.is_none() {
        h.notes
            .push("the drive has no read error counter page (03h)".into());
    }
    if grown.is_none() {
        h.notes
            .push("the drive did not report its grown defect list".into());
    }
    h.status = status;
    h.reasons = reasons;
    h
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A log page: header with `page` and the parameters' bytes.
    pub fn page(page: u8, params: &[u8]) -> Vec<u8> {
        let mut v = vec![page, 0];
        v.extend_from_slice(&(params.len() as u16).to_be_bytes());
        v.extend_from_slice(params);
        v
    }

    /// One parameter: code, control byte 02h (binary list, as drives send counters), value.
    pub fn param(code: u16, value: &[u8]) -> Vec<u8> {
        let mut v = code.to_be_bytes().to_vec();
        v.extend_from_slice(&[0x02, value.len() as u8]);
        v.extend_from_slice(value);
        v
    }

    /// An error counter page with the seven standard parameters (0000h–0006h), the counters
    /// 4 bytes long except "bytes processed" (8), `uncorrected` in 0006h.
    pub fn errors(page_code: u8, uncorrected: u32) -> Vec<u8> {
        let mut ps = Vec::new();
        for (code, v) in [(0u16, 3u64), (1, 0), (2, 0), (3, 3), (4, 3)] {
            ps.extend(param(code, &(v as u32).to_be_bytes()));
        }
        ps.extend(param(5, &123_456_789_012u64.to_be_bytes()));
        ps.extend(param(6, &uncorrected.to_be_bytes()));
        page(page_code, &ps)
    }

    /// Linux's scsi_debug target answers the temperature page with these parameters
    /// (`resp_temp_l_pg`: 38 °C now, reference 65 °C) and the informational exceptions page
    /// with ASC 0, ASCQ 0, 38 °C (`resp_ie_l_pg`), or, with the TEST bit of the IE mode page
    /// set, ASC 5Dh (THRESHOLD_EXCEEDED) and ASCQ FFh.
    const SCSI_DEBUG_TEMP: [u8; 12] = [0x0, 0x0, 0x3, 0x2, 0x0, 38, 0x0, 0x1, 0x3, 0x2, 0x0, 65];
    const SCSI_DEBUG_IE: [u8; 7] = [0x0, 0x0, 0x3, 0x3, 0x0, 0x0, 38];

    /// A grown-list header: GLISTV, format 101b, `n` 8-byte entries.
    pub fn defects(n: u16) -> Vec<u8> {
        let mut v = vec![0, 0x08 | 0x05];
        v.extend_from_slice(&(n * 8).to_be_bytes());
        v
    }

    pub fn healthy() -> ScsiPages {
        ScsiPages {
            supported: Some(page(
                0,
                &[0x00, 0x02, 0x03, 0x05, 0x06, 0x0D, 0x10, 0x15, 0x2F],
            )),
            read_errors: Some(errors(3, 0)),
            write_errors: Some(errors(2, 0)),
            verify_errors: Some(errors(5, 0)),
            non_medium: Some(page(6, &param(0, &[0, 0, 0, 0]))),
            temperature: Some(page(0x0D, &SCSI_DEBUG_TEMP)),
            self_test: Some(page(0x10, &self_test_entry(1, 0, 30_211, u64::MAX))),
            // 30211 hours and 15 minutes, in minutes.
            background_scan: Some(page(
                0x15,
                &param(
                    0,
                    &[
                        &(30_211u32 * 60 + 15).to_be_bytes()[..],
                        &[0, 0, 0, 0, 0, 0, 0, 0],
                    ]
                    .concat(),
                ),
            )),
            info_exceptions: Some(page(0x2F, &SCSI_DEBUG_IE)),
            defects: Some(defects(0)),
        }
    }

    /// A self-test results parameter 0001h: test code, result, power-on hours, first failing LBA.
    pub fn self_test_entry(code: u8, result: u8, hours: u16, lba: u64) -> Vec<u8> {
        let mut v = vec![(code << 5) | result, 1];
        v.extend_from_slice(&hours.to_be_bytes());
        v.extend_from_slice(&lba.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 0]);
        param(1, &v)
    }

    #[test]
    fn decoders() {
        let p = page(0x0D, &SCSI_DEBUG_TEMP);
        assert_eq!(temperature(&p), Some(38));
        assert_eq!(params(&p, 0x0D).unwrap().len(), 2);
        // Not this page, or cut short: nothing.
        assert_eq!(temperature(&page(0x2F, &SCSI_DEBUG_TEMP)), None);
        assert_eq!(temperature(&p[..3]), None);
        // A parameter running past the page's end is dropped.
        let mut cut = p.clone();
        cut[3] = 10;
        assert_eq!(params(&cut, 0x0D).unwrap().len(), 1);
        assert_eq!(
            info_exceptions(&page(0x2F, &SCSI_DEBUG_IE)),
            Some((0, 0, Some(38)))
        );
        assert_eq!(uncorrected(&errors(3, 7), 3), Some(7));
        assert_eq!(uncorrected(&errors(3, 7), 5), None);
        assert_eq!(counter(&[1, 0, 0, 0, 0, 0, 0, 0, 5]), u64::MAX);
        assert_eq!(counter(&[0, 0, 0, 0, 0, 0, 0, 0, 5]), 5);
        assert_eq!(
            supported_pages(&page(0, &[0x00, 0x03, 0x2F])),
            Some(vec![0x00, 0x03, 0x2F])
        );
        assert_eq!(grown_defects(&defects(12)), Some(12));
        assert_eq!(
            grown_defects(&[0, 0x08, 0, 40]),
            Some(10),
            "short block format: 4 bytes"
        );
        assert_eq!(grown_defects(&[0, 0x05, 0, 40]), None, "GLISTV clear");
        assert_eq!(
            log_sense_cdb(0x2F, 512),
            [0x4D, 0, 0x6F, 0, 0, 0, 0, 2, 0, 0]
        );
        assert_eq!(read_defects_cdb(), [0x37, 0, 0x0D, 0, 0, 0, 0, 0, 4, 0]);
        let st =
            latest_self_test(&page(0x10, &self_test_entry(2, 5, 1234, 0x1_0000_0001))).unwrap();
        assert_eq!(
            (
                st.kind.as_str(),
                st.passed,
                st.power_on_hours,
                st.failing_lba
            ),
            ("extended", Some(false), 1234, Some(0x1_0000_0001))
        );
        assert_eq!(latest_self_test(&page(0x10, &param(1, &[0; 16]))), None);
    }

    #[test]
    fn healthy_drive_is_ok() {
        let h = classify(&healthy());
        assert_eq!(h.status, Status::Ok, "{h:?}");
        assert!(h.reasons.is_empty());
        assert_eq!(h.protocol.as_deref(), Some("scsi"));
        let c = &h.counters;
        assert_eq!(
            (
                c.grown_defects,
                c.read_uncorrected,
                c.temperature_celsius,
                c.power_on_hours
            ),
            (Some(0), Some(0), Some(38), Some(30_211))
        );
        assert_eq!(h.self_test.as_ref().unwrap().passed, Some(true));
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["counters"]["grown_defects"], 0);
        assert_eq!(v["counters"]["non_medium_errors"], 0);
    }

    #[test]
    fn worn_and_failing_drives() {
        let mut p = healthy();
        p.defects = Some(defects(9));
        let h = classify(&p);
        assert_eq!(h.status, Status::Worn);
        assert!(
            h.reasons[0].starts_with("9 grown defects"),
            "{:?}",
            h.reasons
        );

        p.defects = Some(defects(250));
        assert_eq!(classify(&p).status, Status::Failing);

        let mut p = healthy();
        p.read_errors = Some(errors(3, 4));
        let h = classify(&p);
        assert_eq!(h.status, Status::Failing);
        assert!(
            h.reasons[0].starts_with("4 uncorrected read errors"),
            "{:?}",
            h.reasons
        );

        // scsi_debug with the TEST bit: a predicted failure, which alone is enough.
        let mut p = healthy();
        let mut ie = SCSI_DEBUG_IE;
        ie[4] = 0x5D;
        ie[5] = 0xFF;
        p.info_exceptions = Some(page(0x2F, &ie));
        let h = classify(&p);
        assert_eq!(h.status, Status::Failing);
        assert!(h.reasons[0].contains("5Dh/FFh"), "{:?}", h.reasons);

        let mut p = healthy();
        p.self_test = Some(page(0x10, &self_test_entry(2, 7, 30_100, 88_000)));
        let h = classify(&p);
        assert_eq!(h.status, Status::Failing);
        assert_eq!(h.self_test.as_ref().unwrap().failing_lba, Some(88_000));

        // Non-medium errors are a note (the link, not the media).
        let mut p = healthy();
        p.non_medium = Some(page(6, &param(0, &[0, 0, 1, 2])));
        let h = classify(&p);
        assert_eq!(h.status, Status::Ok);
        assert!(
            h.notes
                .iter()
                .any(|n| n.starts_with("258 non-medium errors")),
            "{:?}",
            h.notes
        );
    }

    #[test]
    fn a_drive_without_counters_is_unknown() {
        // What QEMU's emulated disks or a bridge that answers only the temperature give.
        let p = ScsiPages {
            temperature: Some(page(0x0D, &SCSI_DEBUG_TEMP)),
            info_exceptions: Some(page(0x2F, &SCSI_DEBUG_IE)),
            ..ScsiPages::default()
        };
        let h = classify(&p);
        assert_eq!(h.status, Status::Unknown);
        assert!(
            h.reasons[0].contains("neither error counters"),
            "{:?}",
            h.reasons
        );
        assert_eq!(h.counters.temperature_celsius, Some(38));
        // The defect list alone is enough to judge by.
        let p = ScsiPages {
            defects: Some(defects(0)),
            ..ScsiPages::default()
        };
        assert_eq!(classify(&p).status, Status::Ok);
    }
}
