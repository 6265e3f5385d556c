//! Feeds arbitrary bytes to the bulk plane's server-side decode path (frame prefix, prost header,
//! structural request checks): it must never panic, and never allocate beyond the input's size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((req, payload)) = t3fs_common::bulk::decode_request(data) {
        assert!(payload.len() <= data.len());
        // Re-encoding what was decoded must work and stay within a frame.
        let _ = t3fs_common::bulk::encode_frame(&req, payload);
    }
});
