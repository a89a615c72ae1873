#![no_main]

// The body and what it checks: skywire_fuzz::exposition::metrics_text.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::exposition::metrics_text(data));
