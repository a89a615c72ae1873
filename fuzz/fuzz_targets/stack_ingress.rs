#![no_main]

// The body and what it checks: skywire_fuzz::stack::ingress.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::stack::ingress(data));
