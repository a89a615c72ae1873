#![no_main]

// The body and what it checks: skywire_fuzz::replay::window.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::replay::window(data));
