//! The forwarding engine of a node: TUN and UDP on one mio event loop.
//!
//! (The pipeline description and the event loop land with the node daemon; this module
//! currently holds the engine's interface: its setup, its status and its handle.)

pub mod core;
mod handle;
mod setup;
mod status;

pub use core::{NodeCore, NodeDrop, NodeIo, SetupError};
pub use handle::{EngineGone, EngineHandle};
pub use setup::{NodeSetup, RelaySetup, RouteSetup, TunSetup};
pub use status::{NodeStatus, RelayStatus, RouteStatus};
