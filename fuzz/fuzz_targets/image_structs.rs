//! Fuzzes the structure decoders directly (header, footer, index segment) with in-memory bytes:
//! fast, and the place where every length and count from the file is bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lifeboat::image::format::{Footer, Header, Segment, DEFAULT_CHUNK_SIZE, VERSION};

fuzz_target!(|data: &[u8]| {
    let _ = Header::decode(data);
    if data.len() >= 160 {
        let _ = Footer::decode(&data[data.len() - 160..]);
    }
    let h = Header {
        version: VERSION,
        compat: 0,
        incompat: 1,
        volume: 1,
        uuid: [1; 16],
        parent_uuid: [2; 16],
        parent_media_hash: [0; 32],
        created: 0,
        disk_size: 64 << 20,
        sector_size: 512,
        chunk_size: DEFAULT_CHUNK_SIZE,
        segment_chunks: 16,
        split_size: 0,
        model: String::new(),
        serial: String::new(),
        source_name: String::new(),
        parent_path: String::new(),
    };
    let first = data.first().copied().unwrap_or(0) as u64 % 64;
    let n = (64 - first).min(16) as usize;
    let _ = Segment::decode(data, &h, first, n);
});
