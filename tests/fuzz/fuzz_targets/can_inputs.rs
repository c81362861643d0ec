#![no_main]
//! DBC text and candump logs: parsed or refused with a location, never a panic; frames of
//! any shape through the J1939 decoder.
use fieldgate::field::can::{db::CanDb, decoder::Decoder, frame::Received, log::LogReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let db = CanDb::parse(&text, "fuzz.dbc").unwrap_or_default();
    let mut d = Decoder::new(db, true);
    for rec in LogReader::from_reader(data, "fuzz.log").flatten() {
        if let Received::Data(f) = rec.received {
            let _ = d.feed(&f);
        }
    }
});
