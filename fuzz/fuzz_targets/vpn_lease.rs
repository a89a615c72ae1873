#![no_main]

// The body and what it checks: skywire_fuzz::vpn::vpn_lease.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::vpn::vpn_lease(data));
