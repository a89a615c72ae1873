#![no_main]

// The body and what it checks: skywire_fuzz::control::ctl_request.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::control::ctl_request(data));
