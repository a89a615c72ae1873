//! Apps that run on the mesh.

pub mod socks;
pub mod vpn;
