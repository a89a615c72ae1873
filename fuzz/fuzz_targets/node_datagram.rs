#![no_main]

// The body and what it checks: skywire_fuzz::node::node_datagram.
libfuzzer_sys::fuzz_target!(|data: &[u8]| skywire_fuzz::node::node_datagram(data));
