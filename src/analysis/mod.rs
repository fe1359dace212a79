//! Analyses shared by several tools: pure functions over the capture index and its
//! models, with no MCP types. Tool modules never import each other; what two of them
//! share lives here (or, for a metric's definition, in `crate::definitions`).

pub mod compare;
pub mod connections;
pub mod dns;
pub mod events;
pub mod flowlog;
pub mod hosts;
pub mod objects;
pub mod rtp;
pub mod scans;
pub mod slowness;
pub mod stats;
pub mod time;
pub mod tls;
pub mod trust;
