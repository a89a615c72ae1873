#![no_main]

// The body and what it checks: skywire_fuzz::noise::read_response.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::noise::read_response(data));
