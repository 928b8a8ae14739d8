//! Any text given as a config: a list of located errors or settings, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = autorender_sync::config::Settings::parse(text, "fuzz.toml", None);
    }
});
