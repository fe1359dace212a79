//! Why a connection was slow: its elapsed time split into connection setup, the wait
//! for the server's answer, and the transfer, with what limited the transfer, and one
//! verdict — client, network or server — from the biggest share.
//!
//! Times are as the capture point saw them. Where the capture sits matters and is
//! accounted for: the SYN -> SYN-ACK time is the part of the round trip between the
//! capture point and the server (the whole RTT near the client, ~0 near the server),
//! so the server's think time is the wait for its answer minus that part.

use schemars::JsonSchema;
use serde::Serialize;

use crate::model::http::HttpRow;
use crate::model::tcp::{Message, STALL_S, Stream};
use crate::model::tls::Session;

/// A connection is slow when it took at least this long from its first packet to its
/// last data, unless the caller asks for another threshold.
pub const DEFAULT_SLOW_S: f64 = 0.2;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Attribution {
    pub stream: u64,
    /// The connection's Community ID, to join Zeek, Suricata or Arkime records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    pub client: String,
    pub server: String,
    /// First packet to last data segment (or to the end of a zero-window stall that
    /// never ended), less the client's idle time, seconds.
    pub elapsed_s: f64,
    /// The client's idle time between requests (after an answer, before it asked
    /// again), left out of elapsed_s: nobody was waiting.
    pub idle_s: f64,
    /// First SYN to SYN-ACK, SYN retransmissions included.
    pub setup_s: f64,
    pub syn_retransmissions: u64,
    /// ClientHello to the end of the TLS handshake (the server's answer to it, or both
    /// Finished), when the connection carried TLS; part of the wait for the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_handshake_s: Option<f64>,
    /// The path's round trip (tshark's initial RTT, else the median ACK RTT), ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// The server's think time: from the end of the request to its first answer byte,
    /// less the round trip between the capture point and the server.
    pub server_time_s: f64,
    /// From the first to the last data of the answer (the bulk direction).
    pub transfer_s: f64,
    /// Of the transfer: time the receiver held the sender at a zero window.
    pub receiver_stall_s: f64,
    /// Times the sender filled the receiver's whole window.
    pub window_full: u64,
    /// Of the transfer: time estimated in loss recovery (a round trip per lost
    /// segment, or the retransmission timeout stall when longer).
    pub loss_recovery_s: f64,
    pub loss_retransmissions: u64,
    /// Of the transfer: the longest silence not caused by loss or a zero window (the
    /// sending application paused), seconds.
    pub app_pause_s: f64,
    /// client, network or server.
    pub verdict: String,
    pub reason: String,
    /// The frames that show it: SYN, request end / answer start, the stall.
    pub frames: Vec<u64>,
    pub display_filter: String,
}

/// The share of each cause, for the verdict.
struct Shares {
    network: f64,
    server: f64,
    client: f64,
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Which side asks and which answers: (requester, answerer). A stream caught mid-way
/// has no SYN to say who opened it: a well-known port on the side the model took for
/// the client makes that side the server.
fn roles(s: &Stream) -> (usize, usize) {
    if !s.syn[0] && !s.synack[1] && s.port()[0] < 1024 && s.port()[1] >= 1024 {
        (1, 0)
    } else {
        (0, 1)
    }
}

/// The attribution of one connection, or None when it carried no answer to attribute
/// (no data, or data one way only with no handshake).
pub fn attribute(s: &Stream, tls: Option<&Session>) -> Option<Attribution> {
    let rtt = crate::analysis::stats::stream_rtt(s);
    let setup = s.setup_time().unwrap_or(0.0);
    // the part of the round trip beyond the capture point, towards the server
    let server_leg = s.handshake_rtt().unwrap_or(0.0);
    // the answering side: the server's answer to the client's request; a connection
    // where only the client talks (an upload) is attributed on the client's data
    let (req, ans) = roles(s);
    let bulk = if s.payload[ans] >= s.payload[req] {
        ans
    } else {
        req
    };
    let first = s.data_first[bulk]?.time;
    let (last_data, last_frame) = s.data_last[bulk].map(|a| (a.time, a.frame()))?;
    let receiver = 1 - bulk;
    // a zero window still open when the capture ends stalls the sender until then
    // (the model counts that stall up to the last packet)
    let last = if s.zw_unrecovered[receiver] {
        s.last
    } else {
        last_data
    };
    // a client's silence before its next request is idle time, not slowness
    let idle = s.wait_total[req];
    let elapsed = (last - s.first - idle).max(0.0);
    let (wait, answer_frame) = match s.reply[ans] {
        Some((req_end, answer)) => ((answer.time - req_end).max(0.0), answer.frame()),
        None => (0.0, 0),
    };
    // the first answer's wait, or every long wait for an answer on a connection that
    // carried several requests
    let server_time = (wait - server_leg)
        .max(s.wait_total[ans] - server_leg)
        .max(0.0);
    // the transfer's own time: without the client's idle time and the server's later
    // waits (both fall between the first and last answer of a multi-request connection)
    let later_waits = (s.wait_total[ans] - if wait >= STALL_S { wait } else { 0.0 }).max(0.0);
    let transfer = (last - first - idle - later_waits).max(0.0);
    let receiver_stall = s.zw_stall_total[receiver].min(elapsed);
    // a receiver-side capture sees loss as holes, a sender-side one as resends
    let loss = s
        .loss_retransmissions()
        .max(s.lost_segments(0) + s.lost_segments(1));
    let loss_recovery = (loss as f64 * rtt.unwrap_or(0.0))
        .max(s.rto_stall_total)
        .min(transfer);
    // silences the sender broke with more of its own message: its application paused
    let app_pause = s.pause_total[bulk].min(transfer);
    // and the other side's, inside its own messages
    let other_pause = s.pause_total[1 - bulk];
    // what is left of the transfer once stalls, recovery and pauses are taken out:
    // round trips and the path's rate
    let network_transfer = (transfer - receiver_stall - loss_recovery - app_pause).max(0.0);
    let sender_is_server = bulk == ans;
    let mut sh = Shares {
        network: setup + loss_recovery + network_transfer + (wait - server_time).max(0.0),
        server: server_time,
        client: 0.0,
    };
    // a receiver that stopped reading is that side's application
    if receiver == req {
        sh.client += receiver_stall;
    } else {
        sh.server += receiver_stall;
    }
    // a paused sender is that side's application, and so is the other side's pause
    if sender_is_server {
        sh.server += app_pause;
        sh.client += other_pause;
    } else {
        sh.client += app_pause;
        sh.server += other_pause;
    }
    // the receiver's window held the transfer back (window full) with no zero window:
    // the part of the transfer the network did not spend in loss is the receiver's
    if s.window_full[bulk] > 0 && receiver_stall == 0.0 && loss == 0 {
        let w = network_transfer;
        sh.network -= w;
        if receiver == req {
            sh.client += w;
        } else {
            sh.server += w;
        }
    }
    let (verdict, share) = [
        ("network", sh.network),
        ("server", sh.server),
        ("client", sh.client),
    ]
    .into_iter()
    .fold(
        ("network", f64::MIN),
        |best, x| if x.1 > best.1 { x } else { best },
    );
    let pct = if elapsed > 0.0 {
        (100.0 * share / elapsed).round().min(100.0)
    } else {
        0.0
    };
    let reason = match verdict {
        "server" if server_time >= app_pause && server_time >= sh.server / 2.0 => format!(
            "the server took {:.3} s to start answering (request end to first answer byte, less the {:.1} ms between capture point and server): {pct}% of the time",
            server_time,
            server_leg * 1000.0
        ),
        "server" if app_pause > 0.0 => format!(
            "the server paused its own sending for {app_pause:.3} s during the transfer: {pct}% of the time"
        ),
        "server" if receiver_stall > 0.0 => format!(
            "the server advertised a zero window for {receiver_stall:.3} s (its application did not read): {pct}% of the time"
        ),
        "server" => format!(
            "the server's receive window held the upload back ({} window-full events): {pct}% of the time",
            s.window_full[bulk]
        ),
        "client" if receiver_stall > 0.0 => format!(
            "the client advertised a zero window for {receiver_stall:.3} s (its application did not read): {pct}% of the time"
        ),
        "client" if app_pause > 0.0 => {
            format!("the client paused its own sending for {app_pause:.3} s: {pct}% of the time")
        }
        "client" => format!(
            "the client's receive window limited the transfer ({} window-full events): {pct}% of the time",
            s.window_full[bulk]
        ),
        _ if s.syn_retries > 0 && setup >= loss_recovery => format!(
            "connection setup took {setup:.3} s with {} SYN retransmission(s): {pct}% of the time",
            s.syn_retries
        ),
        _ if loss > 0 => format!(
            "{loss} lost segment(s) cost about {loss_recovery:.3} s of recovery, over a {:.1} ms round trip: {pct}% of the time is the network",
            rtt.unwrap_or(0.0) * 1000.0
        ),
        _ => format!(
            "round trips of {:.1} ms and the path's rate: {pct}% of the time is the network",
            rtt.unwrap_or(0.0) * 1000.0
        ),
    };
    let mut frames: Vec<u64> = s.syn_frame().into_iter().collect();
    if answer_frame > 0 {
        frames.push(answer_frame);
    }
    if receiver_stall > 0.0 {
        frames.extend(s.sample_frames("zero_window").first());
    }
    if s.max_gap > 0.0 && (app_pause > 0.0 || s.rto_stall_total > 0.0) {
        frames.push(s.max_gap_after_frame());
    }
    frames.push(last_frame);
    frames.sort_unstable();
    frames.dedup();
    Some(Attribution {
        stream: s.id,
        community_id: s.community_id(),
        client: s.endpoint(req),
        server: s.endpoint(ans),
        elapsed_s: r3(elapsed),
        idle_s: r3(idle),
        setup_s: r3(setup),
        syn_retransmissions: s.syn_retries,
        tls_handshake_s: tls.and_then(Session::handshake_s).map(r3),
        rtt_ms: rtt.map(|r| (r * 1e6).round() / 1000.0),
        server_time_s: r3(server_time),
        transfer_s: r3(transfer),
        receiver_stall_s: r3(receiver_stall),
        window_full: s.window_full[bulk],
        loss_recovery_s: r3(loss_recovery),
        loss_retransmissions: loss,
        app_pause_s: r3(app_pause),
        verdict: verdict.to_string(),
        reason,
        frames,
        display_filter: format!("tcp.stream == {}", s.id),
    })
}

/// One request and its answer on a connection, timed.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Transaction {
    pub stream: u64,
    /// The connection's Community ID, to join Zeek, Suricata or Arkime records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    /// Its place among the connection's requests (1 = the first).
    pub number: usize,
    /// What it was: the HTTP request line and status, "TLS handshake", or the
    /// request's size when the application's messages are not readable.
    pub what: String,
    pub client: String,
    pub server: String,
    /// From the request's first byte (for the connection's first request, from the
    /// first SYN) to the answer's last byte, seconds.
    pub elapsed_s: f64,
    /// First SYN to SYN-ACK, on the connection's first request only.
    pub setup_s: f64,
    /// Sending the request: its first to its last segment.
    pub request_s: f64,
    /// Request end to the answer's first byte, less the round trip between the
    /// capture point and the server.
    pub server_time_s: f64,
    /// The answer's first to its last byte.
    pub transfer_s: f64,
    /// Of the transfer: a round trip per lost segment of the answer.
    pub loss_recovery_s: f64,
    pub lost_segments: u64,
    /// Of the transfer: time the requester held the answer at a zero window.
    pub receiver_stall_s: f64,
    pub answer_bytes: u64,
    /// client, network or server.
    pub verdict: String,
    pub reason: String,
    /// Request first and last, answer first and last.
    pub frames: Vec<u64>,
    pub display_filter: String,
}

/// The connection's requests, each with its answer, timed and judged like a
/// connection: the answerer's wait beyond the round trip is the server's, a receiver
/// that stopped reading is the client's, the rest (setup, round trips, loss, the
/// path's rate) is the network's. `http` holds the connection's HTTP messages, `tls`
/// its TLS session, to name the transactions.
pub fn transactions(s: &Stream, tls: Option<&Session>, http: &[&HttpRow]) -> Vec<Transaction> {
    let (req, ans) = roles(s);
    let rtt = crate::analysis::stats::stream_rtt(s).unwrap_or(0.0);
    let server_leg = s.handshake_rtt().unwrap_or(0.0);
    let tls_turns = tls.map_or(0, |t| {
        let full_legacy = t.negotiated.is_some_and(|v| v < 0x0304) && t.server_certificate_msg;
        if full_legacy { 2 } else { 1 }
    });
    let mut out = Vec::new();
    let msgs = &s.messages;
    let mut number = 0;
    for (i, pair) in msgs.windows(2).enumerate() {
        let (ask, answer): (&Message, &Message) = (&pair[0], &pair[1]);
        if ask.dir() != req || answer.dir() != ans {
            continue;
        }
        number += 1;
        let first = number == 1 && i == 0;
        let setup = if first {
            s.setup_time().unwrap_or(0.0)
        } else {
            0.0
        };
        let start = if first {
            s.first.min(ask.first_time)
        } else {
            ask.first_time
        };
        let elapsed = (answer.last_time - start).max(0.0);
        let request = (ask.last_time - ask.first_time).max(0.0);
        let wait = (answer.first_time - ask.last_time).max(0.0);
        let server_time = (wait - server_leg).max(0.0);
        let transfer = (answer.last_time - answer.first_time).max(0.0);
        let stall = answer.receiver_stall.min(transfer);
        let recovery = (answer.lost as f64 * rtt).min(transfer - stall).max(0.0);
        let network = setup + request + (wait - server_time) + (transfer - stall);
        let (verdict, share) = [
            ("network", network),
            ("server", server_time),
            ("client", stall),
        ]
        .into_iter()
        .fold(("network", f64::MIN), |b, x| if x.1 > b.1 { x } else { b });
        let pct = if elapsed > 0.0 {
            (100.0 * share / elapsed).round().min(100.0)
        } else {
            0.0
        };
        let reason = match verdict {
            "server" => format!(
                "the server took {server_time:.3} s to start answering (request end to first answer byte, less the {:.1} ms between capture point and server): {pct}% of the time",
                server_leg * 1000.0
            ),
            "client" => format!(
                "the client advertised a zero window for {stall:.3} s while the answer came (its application did not read): {pct}% of the time"
            ),
            _ if s.syn_retries > 0 && first && setup >= recovery => format!(
                "connection setup took {setup:.3} s with {} SYN retransmission(s): {pct}% of the time",
                s.syn_retries
            ),
            _ if answer.lost > 0 => format!(
                "{} segment(s) of the answer were lost, about {recovery:.3} s of recovery over a {:.1} ms round trip: {pct}% of the time is the network",
                answer.lost,
                rtt * 1000.0
            ),
            _ => format!(
                "round trips of {:.1} ms and the path's rate ({} bytes in {transfer:.3} s): {pct}% of the time is the network",
                rtt * 1000.0,
                answer.bytes
            ),
        };
        let what = if number <= tls_turns {
            "TLS handshake".to_string()
        } else if let Some(r) = http
            .iter()
            .find(|r| r.is_request && (ask.first_frame()..=ask.last_frame()).contains(&r.frame()))
        {
            let status = http
                .iter()
                .find(|x| !x.is_request && x.request_in() == Some(r.frame()))
                .and_then(|x| x.code)
                .map_or_else(|| "no status".to_string(), |c| c.to_string());
            format!(
                "{} {}{} -> {status}",
                r.method.as_deref().unwrap_or("?"),
                r.host.as_deref().unwrap_or(""),
                r.uri.as_deref().unwrap_or("")
            )
        } else {
            format!(
                "request {} ({} bytes, answer {} bytes)",
                number - tls_turns,
                ask.bytes,
                answer.bytes
            )
        };
        let mut frames = vec![
            ask.first_frame(),
            ask.last_frame(),
            answer.first_frame(),
            answer.last_frame(),
        ];
        frames.dedup();
        out.push(Transaction {
            stream: s.id,
            community_id: s.community_id(),
            number,
            what,
            client: s.endpoint(req),
            server: s.endpoint(ans),
            elapsed_s: r3(elapsed),
            setup_s: r3(setup),
            request_s: r3(request),
            server_time_s: r3(server_time),
            transfer_s: r3(transfer),
            loss_recovery_s: r3(recovery),
            lost_segments: u64::from(answer.lost),
            receiver_stall_s: r3(stall),
            answer_bytes: answer.bytes,
            verdict: verdict.to_string(),
            reason,
            display_filter: format!(
                "tcp.stream == {} && frame.number >= {} && frame.number <= {}",
                s.id,
                ask.first_frame(),
                answer.last_frame()
            ),
            frames,
        });
    }
    out
}
