#![no_main]

// The body and what it checks: skywire_fuzz::socks::socks_wire.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::socks::socks_wire(data));
