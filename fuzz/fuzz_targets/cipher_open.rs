#![no_main]

// The body and what it checks: skywire_fuzz::cipher::open.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::cipher::open(data));
