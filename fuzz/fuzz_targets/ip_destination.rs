#![no_main]

// The body and what it checks: skywire_fuzz::prefix::destination.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::prefix::destination(data));
