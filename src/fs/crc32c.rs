//! CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum ext4 (metadata_csum),
//! XFS (v5) and btrfs put on the metadata their allocation maps are read from. One table, built
//! at compile time; `crc32c_raw` continues a register as ext4 chains its seeds, `crc32c` is the
//! standard form (inverted in and out) that XFS and btrfs store.

/// The lookup table, one entry per byte value.
const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Continues a raw CRC32C register over `data` (no pre/post inversion).
pub(crate) fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// The standard CRC32C of `data` (what XFS and btrfs store, little-endian).
pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_raw(!0, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // RFC 3720 test vectors.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn a_register_continues_across_pieces() {
        let whole = crc32c_raw(!0, b"123456789");
        let split = crc32c_raw(crc32c_raw(!0, b"1234"), b"56789");
        assert_eq!(whole, split);
    }
}
