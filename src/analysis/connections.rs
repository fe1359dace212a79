//! How TCP connections ended badly: who reset what and when in the connection, and
//! which connections timed out (SYNs nobody answered, senders that gave up on
//! retransmission timeouts, idle connections a timer reset or left open).
//!
//! Views over the TCP model's streams; the one definition of each kind is here.

use schemars::JsonSchema;
use serde::Serialize;

use crate::model::tcp::{At, Reset, Stream};

/// A RST after at least this much silence in its connection is an idle timer's (a
/// firewall's or server's), not a reaction to what was just sent.
pub const IDLE_RESET_S: f64 = 10.0;

/// An open connection silent for at least this long when the capture ends is idle.
pub const IDLE_AT_END_S: f64 = 60.0;

/// Retransmission timeouts adding up to at least this long make a connection one that
/// timed out on its path, whatever ended it.
pub const RTO_GAVE_UP_S: f64 = 1.0;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ResetRow {
    pub stream: u64,
    /// The connection's Community ID, to join Zeek, Suricata or Arkime records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    pub client: String,
    pub server: String,
    /// client or server: who sent the first RST.
    pub reset_by: String,
    /// refused (a RST answered the SYN), abandoned_handshake (the client reset before
    /// any answer), during_handshake (after the SYN-ACK, before data), mid_transfer,
    /// after_idle (after at least 10 s of silence), after_close (after a FIN).
    pub kind: String,
    /// Seconds from the connection's first packet to the RST.
    pub at_s: f64,
    /// Silence before the RST, seconds.
    pub idle_before_s: f64,
    pub client_bytes_before: u64,
    pub server_bytes_before: u64,
    pub frame: u64,
    pub display_filter: String,
}

/// Which side opened the connection and which answered, by the model's orientation.
fn side(dir: usize) -> &'static str {
    if dir == 0 { "client" } else { "server" }
}

/// The one classification of a connection's first RST.
pub fn reset_kind(s: &Stream, r: &Reset) -> &'static str {
    let handshake_started = s.syn[0];
    let answered = s.synack[1];
    if handshake_started && !answered {
        return if r.dir == 1 {
            "refused"
        } else {
            "abandoned_handshake"
        };
    }
    if r.after_fin {
        "after_close"
    } else if r.idle_before >= IDLE_RESET_S {
        "after_idle"
    } else if r.payload_before == [0, 0] && answered {
        "during_handshake"
    } else {
        "mid_transfer"
    }
}

/// Every connection with a RST, in stream order.
pub fn resets(streams: &[Stream]) -> Vec<ResetRow> {
    streams
        .iter()
        .filter_map(|s| {
            let r = s.reset.as_ref()?;
            Some(ResetRow {
                stream: s.id,
                community_id: s.community_id(),
                client: s.endpoint(0),
                server: s.endpoint(1),
                reset_by: side(r.dir).to_string(),
                kind: reset_kind(s, r).to_string(),
                at_s: round6(r.time - s.first),
                idle_before_s: round6(r.idle_before),
                client_bytes_before: r.payload_before[0],
                server_bytes_before: r.payload_before[1],
                frame: r.frame,
                display_filter: s.filter(Some("tcp.flags.reset == 1")),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TimeoutRow {
    pub stream: u64,
    /// The connection's Community ID, to join Zeek, Suricata or Arkime records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    pub client: String,
    pub server: String,
    /// unanswered_syn (no SYN-ACK nor RST came), gave_up_retransmitting (retransmission
    /// timeouts of at least 1 s, then a RST or the capture's end without a FIN),
    /// reset_after_idle (a RST after at least 10 s of silence), idle_at_capture_end
    /// (open, silent for at least 60 s when the capture ends).
    pub kind: String,
    /// SYNs sent (unanswered_syn), else 0.
    pub syn_attempts: u64,
    /// How long it waited: first to last SYN, the retransmission timeouts, or the
    /// silence, seconds.
    pub waited_s: f64,
    pub first_frame: u64,
    pub last_frame: u64,
    pub display_filter: String,
}

/// Connections that timed out, each under the first kind that applies.
pub fn timeouts(streams: &[Stream], capture_end: f64) -> Vec<TimeoutRow> {
    streams
        .iter()
        .filter_map(|s| {
            let closed = s.fin[0] || s.fin[1] || s.rst[0] || s.rst[1];
            let (kind, attempts, waited) = if s.syn[0] && !s.synack[1] && !s.rst[1] {
                ("unanswered_syn", 1 + s.syn_retries, s.last - s.first)
            } else if s.rto_stall_total >= RTO_GAVE_UP_S && (s.rst[0] || s.rst[1] || !closed) {
                ("gave_up_retransmitting", 0, s.rto_stall_total)
            } else if let Some(r) = s.reset.filter(|r| r.idle_before >= IDLE_RESET_S) {
                ("reset_after_idle", 0, r.idle_before)
            } else if !closed && s.synack[1] && capture_end - s.last >= IDLE_AT_END_S {
                ("idle_at_capture_end", 0, capture_end - s.last)
            } else {
                return None;
            };
            let first_frame = s
                .syn_frame()
                .or_else(|| s.first_data().map(At::frame))
                .unwrap_or(s.last_frame());
            Some(TimeoutRow {
                stream: s.id,
                community_id: s.community_id(),
                client: s.endpoint(0),
                server: s.endpoint(1),
                kind: kind.to_string(),
                syn_attempts: attempts,
                waited_s: round6(waited),
                first_frame,
                last_frame: s.last_frame(),
                display_filter: s.filter(None),
            })
        })
        .collect()
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
