#![no_main]

// The body and what it checks: skywire_fuzz::cookie::cookie_reply.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::cookie::cookie_reply(data));
