#![no_main]
//! The cloud's decoder of gateway payloads: any bytes, never a panic; what decodes
//! re-encodes to something that decodes to the same batch.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = fieldgate::protocol::Batch::decode(data) {
        let again = fieldgate::protocol::Batch::decode(&batch.encode()).expect("re-encoded batch decodes");
        assert_eq!(again.samples.len(), batch.samples.len());
    }
});
