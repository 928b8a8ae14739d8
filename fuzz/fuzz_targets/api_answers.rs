//! Any status and body from the service: a session/file or a classified error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let status = u16::from_le_bytes([data[0], data[1]]) % 1000;
    let size = u64::from_le_bytes(data[2..10].try_into().unwrap());
    let body = &data[10..];
    if let Ok(s) = autorender_sync::api::decode_start_answer(status, body, size) {
        assert!(s.part_size > 0);
        assert!(s.parts.len() as u64 == size.div_ceil(s.part_size) || (size == 0 && s.parts.len() == 1));
        for i in 0..s.parts.len() {
            let (start, len) = s.part_range(i, size);
            assert!(start.saturating_add(len) <= size);
        }
    }
    let _ = autorender_sync::api::decode_complete_answer(status, body);
});
