#![no_main]

// The body and what it checks: skywire_fuzz::impair::impair_settings.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::impair::impair_settings(data));
