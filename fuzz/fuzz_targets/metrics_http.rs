#![no_main]

// The body and what it checks: skywire_fuzz::control::metrics_http.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::control::metrics_http(data));
