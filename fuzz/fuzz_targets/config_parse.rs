#![no_main]

// The body and what it checks: skywire_fuzz::config::config_parse.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::config::config_parse(data));
