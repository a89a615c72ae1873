#![no_main]

// The body and what it checks: skywire_fuzz::wire::link_probe.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::wire::link_probe(data));
