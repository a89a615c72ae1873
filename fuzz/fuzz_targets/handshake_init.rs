#![no_main]

// The body and what it checks: skywire_fuzz::wire::handshake_init.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::wire::handshake_init(data));
