//! The integration tests, one binary: each module drives the server the way a client
//! does (spawns the binary, speaks MCP over stdio) against real tshark and dumpcap.
//!
//! One binary rather than one per file: the test harness then runs tests of every
//! module side by side (a long single test, such as the 100 MB capture's, no longer
//! leaves the other core idle), and CI links one executable instead of 37. Tests that
//! share machine-wide names (namespaces, veths, subnets) take their own: see
//! `common::Netns` and `common::Path3`.
//!
//! `cargo test --test suite <module>::` runs one module, e.g. `hardening::`.

mod common;

mod advanced_tools;
mod anomaly_tools;
mod basic_tools;
mod batch;
mod big_capture;
mod capacity;
mod community_id;
mod compare;
mod connections;
mod consistency;
mod delay_path;
mod drilldown;
mod events;
mod evidence_filters;
mod export;
mod flow_records;
mod fuzz_captures;
mod hardening;
mod host;
mod install;
mod live_capture;
mod lua;
mod metrics_tools;
mod network_errors;
mod objects;
mod packaging;
mod quic;
mod results_contract;
mod server_protocol;
mod slowness;
mod split_index;
mod tcp_live;
mod tcp_tools;
mod threat_tools;
mod time_scope;
mod tls_tools;
mod triage;
mod trust;
