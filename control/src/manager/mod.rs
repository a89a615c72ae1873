//! The node manager: the part of the control plane that knows the whole mesh and decides
//! which routes exist.
//!
//! - [`topology`]: nodes, links and their measured metrics, and route computation over
//!   them (shortest simple path by weight, within min/max hops, around an avoid list).
//!   Sans-IO: pure data and algorithms, no sockets and no clock.

pub mod topology;
