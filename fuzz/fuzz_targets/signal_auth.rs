#![no_main]

// The body and what it checks: skywire_fuzz::control::signal_auth.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::control::signal_auth(data));
