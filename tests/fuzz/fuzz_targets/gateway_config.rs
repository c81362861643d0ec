#![no_main]
//! Gateway configs: any text gives a config or located errors, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = fieldgate::config::GatewayConfig::parse(text, std::path::Path::new("fuzz.toml")) {
            assert!(e.0.iter().all(|err| !err.message.is_empty()));
        }
    }
});
