#![no_main]

// The body and what it checks: skywire_fuzz::apps::app_frames.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::apps::app_frames(data));
