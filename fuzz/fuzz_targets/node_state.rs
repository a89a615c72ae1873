#![no_main]

// The body and what it checks: skywire_fuzz::state::node_state.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::state::node_state(data));
