//! Models shared by a tool family: parts of the capture index (`crate::index`), built
//! from its one pass and read by every tool of the family.

pub mod conn;
pub mod dns;
pub mod flow;
pub mod http;
pub mod icmp;
pub mod quic;
pub mod tcp;
pub mod timing;
pub mod tls;
