//! The node's userspace TCP/IP stack: reliable byte streams to apps over routes, addressed
//! by `(public key, port)`, without root or a TUN device.
//!
//! - [`api`]: the ids, options and errors streams are spoken of in, shared with the control
//!   plane's app socket.
//! - [`appframe`]: the frames a stream's bytes travel in between an app and its node.

pub mod api;
pub mod appframe;

pub use api::{
    Limit, ListenOptions, ListenerId, MIN_BUFFER, Owner, StackSetup, StreamError, StreamId,
    StreamInfo,
};
