//! The TCP tools: retransmissions, zero windows, window scaling, timing, congestion and
//! connection lifecycle. Each reads the shared per-stream model (`crate::model::tcp`),
//! so a series of them on one file costs one tshark pass.

use std::collections::BTreeMap;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::Serialize;

use crate::analysis::stats::stream_rtt;
use crate::model::tcp::{Stream, SynOptions, TcpModel};
use crate::report::{
    Evidence, Finding, Report, Severity, Table, ms, pct, percentile, rfc3339, round, thousands,
};
use crate::server::PcapServer;
use crate::tools::{TcpParams, clamp_limit, clamp_offset};

type Reduced<T> = (String, Vec<Finding>, T);

impl PcapServer {
    /// Runs a TCP tool: fetch (or build) the stream model, reduce it, wrap the report.
    pub(crate) async fn tcp_tool<T>(
        &self,
        tool: &'static str,
        p: TcpParams,
        rc: RequestContext<RoleServer>,
        reduce: fn(&TcpModel, &TcpParams) -> Reduced<T>,
    ) -> Result<Json<Report<T>>, String>
    where
        T: Clone + Send + Sync + 'static,
    {
        self.engine
            .analyze(tool, p, rc, move |mut a, p| async move {
                let m = a.part::<TcpModel>().await?;
                let (summary, findings, data) = reduce(&m, &p);
                a.report(summary, findings, data, m.span, None).await
            })
            .await
    }
}

fn page<T>(rows: Vec<T>, p: &TcpParams) -> Table<T> {
    Table::page(rows, clamp_offset(p.offset), clamp_limit(p.limit, 20))
}

/// [`page`] over every stream of a capture (or what a view judged of each), in
/// `order`, making a report row only for the streams shown: a row's endpoints,
/// Community ID and filter are strings, and a capture of 100,000 streams made all of
/// them to show 20 (~60 MB on the 1 GB bench).
fn page_by<X, T>(
    mut items: Vec<X>,
    p: &TcpParams,
    order: impl FnMut(&X, &X) -> std::cmp::Ordering,
    row: impl Fn(&X) -> T,
) -> Table<T> {
    items.sort_by(order);
    let (offset, limit) = (clamp_offset(p.offset), clamp_limit(p.limit, 20));
    Table::page_map(items, offset, limit, |x| row(&x))
}

fn stream_evidence(s: &Stream, kind: &str, filter_extra: Option<&str>) -> Evidence {
    Evidence {
        frames: s.sample_frames(kind),
        streams: vec![s.id],
        endpoints: vec![s.endpoint(0), s.endpoint(1)],
        time: Some(rfc3339(s.first)),
        display_filter: s.filter(filter_extra),
    }
}

fn none_checked(what: &str, m: &TcpModel) -> String {
    format!(
        "No {what} in {} TCP packets across {} streams.",
        thousands(m.tcp_packets),
        thousands(m.streams.len() as u64)
    )
}

// ---------------------------------------------------------------- retransmissions

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RetransStream {
    pub stream: u64,
    /// The connection's Community ID, to join Zeek, Suricata or Arkime records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    pub client: String,
    pub server: String,
    pub retransmissions_client_to_server: u64,
    pub retransmissions_server_to_client: u64,
    pub fast_retransmissions: u64,
    pub spurious_retransmissions: u64,
    pub lost_segments: u64,
    pub data_segments: u64,
    /// Retransmitted data segments / data segments, percent.
    pub retransmission_rate_pct: f64,
    pub display_filter: String,
    pub sample_frames: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RetransTotals {
    /// Every segment tshark marks as a retransmission (SYN, FIN and keep-alive ones too).
    pub retransmissions: u64,
    /// Of those, the ones that carried data.
    pub data_retransmissions: u64,
    /// Retransmissions that count as loss: data ones neither spurious nor a teardown's,
    /// plus the resends tshark calls out-of-order (below).
    pub loss_retransmissions: u64,
    /// Segments resending bytes this capture had already seen that tshark marks
    /// out-of-order, not retransmission (they came sooner than its RTT threshold, as
    /// near the sender on a short path): counted as loss.
    pub resent_marked_out_of_order: u64,
    /// Where loss happened relative to the capture point: resends of bytes the capture
    /// saw (the original passed it, then was lost) ...
    pub lost_after_capture_point: u64,
    /// ... and holes in what it saw, in segments (lost before it, or missed by the
    /// capture itself: see check_capture_trust).
    pub lost_before_capture_point: u64,
    /// Segments lost before and after the capture point over the data segments sent:
    /// the loss estimate that does not depend on where the capture sits.
    pub estimated_loss_pct: f64,
    pub fast_retransmissions: u64,
    pub spurious_retransmissions: u64,
    pub lost_segments: u64,
    pub duplicate_acks: u64,
    pub data_segments: u64,
    pub retransmission_rate_pct: f64,
    pub streams_affected: u64,
    pub streams_total: u64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Burst {
    /// Seconds from the capture start.
    pub second: u64,
    pub retransmissions: u64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Retransmissions {
    pub totals: RetransTotals,
    pub streams: Table<RetransStream>,
    /// The seconds with the most retransmissions.
    pub bursts: Vec<Burst>,
}

/// `tcp.stream in {a,b,...}` for the first ten streams, narrowed by `extra`: the
/// filter that selects the frames a group finding lists.
fn streams_filter<'a>(streams: impl Iterator<Item = &'a Stream>, extra: &str) -> String {
    let set = crate::report::in_set("tcp.stream", streams.take(10).map(|s| s.id));
    format!("{set} && ({extra})")
}

/// How much a loss rate matters: a high rate over a handful of segments is not a lossy
/// path (one teardown retransmission on an 11-segment connection), so the severity also
/// needs a minimum count of loss retransmissions.
fn loss_severity(rate: f64, loss: u64) -> Severity {
    if rate >= 5.0 && loss >= 10 {
        Severity::High
    } else if rate >= 1.0 && loss >= 3 {
        Severity::Medium
    } else {
        Severity::Low
    }
}

pub(crate) fn retransmissions(m: &TcpModel, p: &TcpParams) -> Reduced<Retransmissions> {
    let sum2 = |a: [u64; 2]| a[0] + a[1];
    let est = m.estimated_loss();
    let totals = RetransTotals {
        retransmissions: m.total(|s| sum2(s.retrans)),
        fast_retransmissions: m.total(|s| sum2(s.fast_retrans)),
        spurious_retransmissions: m.total(|s| sum2(s.spurious)),
        lost_segments: m.total(|s| sum2(s.lost_segment)),
        duplicate_acks: m.total(|s| sum2(s.dup_ack)),
        data_segments: m.total(|s| sum2(s.data_segments())),
        data_retransmissions: m.total(|s| sum2(s.retrans_data)),
        loss_retransmissions: m.loss_rate().0,
        resent_marked_out_of_order: m.total(|s| sum2(s.resent_unflagged)),
        lost_after_capture_point: est.after_capture,
        lost_before_capture_point: est.before_capture,
        estimated_loss_pct: est.pct,
        retransmission_rate_pct: m.loss_rate().2,
        streams_affected: m
            .streams
            .iter()
            .filter(|s| sum2(s.retrans) + sum2(s.lost_segment) + sum2(s.resent_unflagged) > 0)
            .count() as u64,
        streams_total: m.streams.len() as u64,
    };
    let mut affected: Vec<&Stream> = m
        .streams
        .iter()
        .filter(|s| sum2(s.retrans) + sum2(s.lost_segment) + sum2(s.resent_unflagged) > 0)
        .collect();
    affected.sort_by(|a, b| sum2(b.retrans).cmp(&sum2(a.retrans)).then(a.id.cmp(&b.id)));
    let mut findings = Vec::new();
    let rate = totals.retransmission_rate_pct;
    let unflagged = totals.resent_marked_out_of_order;
    if totals.retransmissions + unflagged > 0 {
        // a receiver-side capture sees loss as holes: the estimate grades it too
        let sev = loss_severity(rate, totals.loss_retransmissions).max(loss_severity(
            totals.estimated_loss_pct,
            est.before_capture + est.after_capture,
        ));
        findings.push(Finding::new(
            sev,
            format!(
                "{} retransmissions{}, {} of them loss: {rate}% of {} data segments",
                thousands(totals.retransmissions),
                if unflagged > 0 {
                    format!(" (and {} resends tshark marks out-of-order)", thousands(unflagged))
                } else {
                    String::new()
                },
                thousands(totals.loss_retransmissions),
                thousands(totals.data_segments)
            ),
            format!(
                "{} carried data ({} spurious or resent with a FIN, not loss); {} carried none (SYN, FIN, keep-alive). {} fast retransmissions (after duplicate ACKs: loss detected quickly), {} spurious (the original arrived: timers too aggressive or ACKs lost), {} segments never seen (capture or path loss), in {} of {} streams. Relative to the capture point: {} segment(s) lost after it (resends of bytes it saw), {} before it (holes in what it saw): {}% estimated loss.",
                totals.data_retransmissions,
                (totals.data_retransmissions + unflagged).saturating_sub(totals.loss_retransmissions),
                totals.retransmissions - totals.data_retransmissions,
                totals.fast_retransmissions, totals.spurious_retransmissions, totals.lost_segments, totals.streams_affected, totals.streams_total,
                totals.lost_after_capture_point, totals.lost_before_capture_point, totals.estimated_loss_pct
            ),
            Evidence {
                frames: affected.iter().flat_map(|s| s.sample_frames("retransmission")).take(10).collect(),
                streams: affected.iter().map(|s| s.id).take(10).collect(),
                display_filter: if unflagged > 0 {
                    "tcp.analysis.retransmission || tcp.analysis.out_of_order".into()
                } else {
                    "tcp.analysis.retransmission".into()
                },
                ..Default::default()
            },
        ));
    }
    for s in affected.iter().take(5) {
        let (c2s, s2c) = (
            s.retrans[0] + s.resent_unflagged[0],
            s.retrans[1] + s.resent_unflagged[1],
        );
        let total = c2s + s2c;
        let loss = s.loss_retransmissions();
        let rate = pct(loss, s.data_segment_count());
        let one_way = total >= 5 && (c2s * 10 >= total * 9 || s2c * 10 >= total * 9);
        let direction = if c2s >= s2c {
            format!("{} -> {}", s.endpoint(0), s.endpoint(1))
        } else {
            format!("{} -> {}", s.endpoint(1), s.endpoint(0))
        };
        if total == 0 {
            // only gaps: segments lost before the capture point and never resent while
            // the capture ran (or the capture missed them)
            let gaps = sum2(s.lost_segment);
            findings.push(Finding::new(
                Severity::Low,
                format!("Stream {}: {gaps} segment(s) never seen, no retransmission", s.id),
                "tshark saw a sequence gap (previous segment not captured) that no retransmission filled while the capture ran: the capture point missed the segment, or it was lost upstream and resent after the capture ended.",
                stream_evidence(s, "lost_segment", Some("tcp.analysis.lost_segment")),
            ));
            continue;
        }
        findings.push(Finding::new(
            if rate >= 5.0 && loss >= 5 { Severity::Medium } else { Severity::Low },
            format!("Stream {}: {total} retransmissions, {loss} of them loss ({rate}% of its data segments)", s.id),
            if one_way {
                format!("Loss is on one path direction: almost all retransmissions are sent {direction}, so segments (or their ACKs) are lost on that way.")
            } else {
                format!("{c2s} sent by the client {}, {s2c} by the server {}.", s.endpoint(0), s.endpoint(1))
            },
            stream_evidence(
                s,
                "retransmission",
                Some("(tcp.analysis.retransmission || tcp.analysis.lost_segment)"),
            ),
        ));
    }
    if let Some(&(sec, n)) = m.retrans_by_second.first()
        && n >= 5
        && totals.retransmissions >= 10
        && n * 3 >= totals.retransmissions
    {
        let t = m.capture_start + sec as f64;
        findings.push(Finding::new(
                Severity::Low,
                format!("Retransmission burst: {n} in one second at +{sec} s"),
                "Loss concentrated in time points to a transient event (congestion spike, link flap, Wi-Fi roam) rather than a steady lossy path.".to_string(),
                Evidence {
                    time: Some(rfc3339(t)),
                    display_filter: format!("tcp.analysis.retransmission && frame.time_epoch >= {t:.6} && frame.time_epoch < {:.6}", t + 1.0),
                    ..Default::default()
                },
            ));
    }
    let summary = if totals.retransmissions == 0 && totals.lost_segments == 0 {
        format!(
            "{} Loss does not explain any slowness here.",
            none_checked("retransmissions or lost segments", m)
        )
    } else {
        format!(
            "{} retransmissions ({} of them loss, {} fast, {} spurious) in {} data segments: {rate}% loss overall, in {} of {} streams. Worst: stream {}.",
            thousands(totals.retransmissions),
            thousands(totals.loss_retransmissions),
            totals.fast_retransmissions,
            totals.spurious_retransmissions,
            thousands(totals.data_segments),
            totals.streams_affected,
            totals.streams_total,
            affected
                .first()
                .map(|s| s.id.to_string())
                .unwrap_or_else(|| "-".into())
        )
    };
    let rows = affected
        .iter()
        .map(|s| RetransStream {
            stream: s.id,
            community_id: s.community_id(),
            client: s.endpoint(0),
            server: s.endpoint(1),
            retransmissions_client_to_server: s.retrans[0],
            retransmissions_server_to_client: s.retrans[1],
            fast_retransmissions: s.fast_retrans[0] + s.fast_retrans[1],
            spurious_retransmissions: s.spurious[0] + s.spurious[1],
            lost_segments: s.lost_segment[0] + s.lost_segment[1],
            data_segments: s.data_segments()[0] + s.data_segments()[1],
            retransmission_rate_pct: pct(s.loss_retransmissions(), s.data_segment_count()),
            display_filter: s.filter(Some("tcp.analysis.retransmission")),
            sample_frames: s.sample_frames("retransmission"),
        })
        .collect();
    let bursts = m
        .retrans_by_second
        .iter()
        .take(5)
        .map(|&(second, retransmissions)| Burst {
            second,
            retransmissions,
        })
        .collect();
    (
        summary,
        findings,
        Retransmissions {
            totals,
            streams: page(rows, p),
            bursts,
        },
    )
}

// ---------------------------------------------------------------- zero window

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ZeroWindowStream {
    pub stream: u64,
    /// The connection's Community ID, to join Zeek, Suricata or Arkime records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    /// The receiver that advertised a zero window (its buffer was full).
    pub advertised_by: String,
    /// The sender that had to stop.
    pub stalled_sender: String,
    pub zero_window_events: u64,
    pub zero_window_probes: u64,
    pub window_full_events: u64,
    pub window_updates: u64,
    /// Seconds the sender could not send, summed over the stalls, and the longest one.
    pub stall_total_s: f64,
    pub stall_max_s: f64,
    /// The window never reopened before the stream (or capture) ended.
    pub never_recovered: bool,
    pub display_filter: String,
    pub sample_frames: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ZeroWindows {
    pub zero_window_events: u64,
    pub zero_window_probes: u64,
    pub window_full_events: u64,
    pub window_updates: u64,
    pub streams: Table<ZeroWindowStream>,
}

pub(crate) fn zero_windows(m: &TcpModel, p: &TcpParams) -> Reduced<ZeroWindows> {
    let mut rows: Vec<ZeroWindowStream> = Vec::new();
    for s in &m.streams {
        for d in 0..2 {
            if s.zero_window[d] == 0 && s.window_full[1 - d] == 0 {
                continue;
            }
            rows.push(ZeroWindowStream {
                stream: s.id,
                community_id: s.community_id(),
                advertised_by: s.endpoint(d),
                stalled_sender: s.endpoint(1 - d),
                zero_window_events: s.zero_window[d],
                zero_window_probes: s.zw_probe[1 - d] + s.keepalive_probes[1 - d],
                window_full_events: s.window_full[1 - d],
                window_updates: s.window_update[d],
                stall_total_s: round(s.zw_stall_total[d], 6),
                stall_max_s: round(s.zw_stall_max[d], 6),
                never_recovered: s.zw_unrecovered[d],
                display_filter: s.filter(Some("(tcp.analysis.zero_window || tcp.analysis.zero_window_probe || tcp.analysis.window_update || tcp.analysis.window_full)")),
                sample_frames: s.sample_frames("zero_window"),
            });
        }
    }
    rows.sort_by(|a, b| {
        b.stall_total_s
            .total_cmp(&a.stall_total_s)
            .then(b.zero_window_events.cmp(&a.zero_window_events))
    });
    let sum = |f: fn(&Stream) -> [u64; 2]| m.total(|s| f(s)[0] + f(s)[1]);
    let data = ZeroWindows {
        zero_window_events: sum(|s| s.zero_window),
        zero_window_probes: sum(|s| s.zw_probe) + sum(|s| s.keepalive_probes),
        window_full_events: sum(|s| s.window_full),
        window_updates: sum(|s| s.window_update),
        streams: Table::page(Vec::new(), 0, 1),
    };
    let mut findings = Vec::new();
    for r in rows.iter().filter(|r| r.zero_window_events > 0).take(5) {
        let s = m
            .streams
            .iter()
            .find(|s| s.id == r.stream)
            .expect("row from model");
        findings.push(Finding::new(
            // a zero window that reopens within a fraction of a second is flow control
            // doing its job; a stall users feel is longer
            if r.never_recovered || r.stall_max_s >= 1.0 {
                Severity::High
            } else if r.stall_max_s >= 0.2 {
                Severity::Medium
            } else {
                Severity::Low
            },
            format!(
                "{} advertised a zero window {} time(s); {} stalled {:.3} s{}",
                r.advertised_by,
                r.zero_window_events,
                r.stalled_sender,
                r.stall_total_s,
                if r.never_recovered { " and the window never reopened" } else { "" }
            ),
            format!(
                "The receiving application on {} is not reading its socket fast enough, so its buffer filled and the sender had to wait (longest stall {:.3} s, {} zero-window probe(s)). Look at the receiver's load, not the network.",
                r.advertised_by, r.stall_max_s, r.zero_window_probes
            ),
            stream_evidence(s, "zero_window", Some("tcp.analysis.zero_window")),
        ));
    }
    let full_only: Vec<&ZeroWindowStream> = rows
        .iter()
        .filter(|r| r.zero_window_events == 0 && r.window_full_events > 0)
        .collect();
    if !full_only.is_empty() {
        findings.push(Finding::new(
            Severity::Low,
            format!("{} stream direction(s) filled the receiver's window without reaching zero", full_only.len()),
            "The sender had as much data in flight as the receiver allows: throughput is capped by the receive window (see analyze_tcp_window_scaling).".to_string(),
            Evidence {
                streams: full_only.iter().map(|r| r.stream).take(10).collect(),
                display_filter: "tcp.analysis.window_full".into(),
                ..Default::default()
            },
        ));
    }
    let summary = if data.zero_window_events == 0 && data.window_full_events == 0 {
        format!(
            "{} No receiver ran out of buffer.",
            none_checked("zero-window or window-full events", m)
        )
    } else {
        let worst = rows.first();
        format!(
            "{} zero-window advertisement(s), {} probe(s), {} window-full event(s), {} window update(s) in {} stream direction(s).{}",
            data.zero_window_events,
            data.zero_window_probes,
            data.window_full_events,
            data.window_updates,
            rows.len(),
            worst
                .map(|w| format!(
                    " Worst: stream {} where {} stalled the sender {:.3} s.",
                    w.stream, w.advertised_by, w.stall_total_s
                ))
                .unwrap_or_default()
        )
    };
    (
        summary,
        findings,
        ZeroWindows {
            streams: page(rows, p),
            ..data
        },
    )
}

// ---------------------------------------------------------------- window scaling

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WindowStream {
    pub stream: u64,
    /// The connection's Community ID, to join Zeek, Suricata or Arkime records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    pub client: String,
    pub server: String,
    pub client_syn: Option<SynOptions>,
    pub server_syn: Option<SynOptions>,
    /// negotiated, not_negotiated (one side lacks the option), or unknown (handshake not captured).
    pub scaling: String,
    pub max_window_client_bytes: u64,
    pub max_window_server_bytes: u64,
    pub rtt_ms: Option<f64>,
    /// The most the server could send per RTT given the client's window, in bits/s.
    pub window_limit_server_to_client_bps: Option<f64>,
    pub window_limit_client_to_server_bps: Option<f64>,
    pub observed_server_to_client_bps: f64,
    pub observed_client_to_server_bps: f64,
    /// Throughput reached the advertised window divided by the RTT.
    pub window_limited: bool,
    /// Which side's window capped it, and how big it got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited_by: Option<String>,
    /// The sender often filled the window while far below the window/RTT ceiling: the
    /// receiving application reads slowly.
    pub slow_reader: bool,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WindowScaling {
    pub negotiated: u64,
    pub not_negotiated: u64,
    pub unknown: u64,
    pub window_limited: u64,
    pub streams: Table<WindowStream>,
}

fn rate_bps(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        round(bytes as f64 * 8.0 / secs, 1)
    } else {
        0.0
    }
}

/// What the window-scaling view judges of one stream, before any string is made.
struct WindowFacts {
    /// negotiated, not_negotiated or unknown (see [`WindowStream::scaling`]).
    scaling: &'static str,
    rtt: Option<f64>,
    /// Observed payload rate and the window/RTT ceiling, client to server and back.
    observed_c2s: f64,
    observed_s2c: f64,
    limit_c2s: Option<f64>,
    limit_s2c: Option<f64>,
    ceiling_c2s: bool,
    ceiling_s2c: bool,
    slow_reader: bool,
}

impl WindowFacts {
    fn of(s: &Stream) -> Self {
        let scaling = match (s.options(0), s.options(1)) {
            (Some(c), Some(sv)) if c.wscale.is_some() && sv.wscale.is_some() => "negotiated",
            (Some(_), Some(_)) => "not_negotiated",
            _ => "unknown",
        };
        let rtt = stream_rtt(s);
        let dur = s.duration();
        let observed_s2c = rate_bps(s.payload[1], dur);
        let observed_c2s = rate_bps(s.payload[0], dur);
        // the window the client advertises limits what the server sends, and vice versa
        let limit_s2c = rtt.map(|r| round(s.max_window()[0] as f64 * 8.0 / r, 1));
        let limit_c2s = rtt.map(|r| round(s.max_window()[1] as f64 * 8.0 / r, 1));
        // window-limited when the data rate reaches window/RTT: a bigger window would go
        // faster. A sender that keeps filling a window whose ceiling is far above the
        // rate is waiting on a slow reader instead (a single window-full is no pattern).
        let at_ceiling = |obs: f64, lim: Option<f64>, bytes: u64| {
            bytes >= 64 * 1024 && lim.is_some_and(|l| l > 0.0 && obs >= 0.8 * l)
        };
        let filling =
            |bytes: u64, full: u64, segs: u64| bytes >= 64 * 1024 && full * 10 >= segs.max(1);
        let ceiling_s2c = at_ceiling(observed_s2c, limit_s2c, s.payload[1]);
        let ceiling_c2s = at_ceiling(observed_c2s, limit_c2s, s.payload[0]);
        // a receiver that closed its window to zero is the slowest reader of all
        let slow_reader = !(ceiling_s2c || ceiling_c2s)
            && (filling(s.payload[1], s.window_full[1], s.data_segments()[1])
                || filling(s.payload[0], s.window_full[0], s.data_segments()[0])
                || s.zero_window != [0, 0]);
        Self {
            scaling,
            rtt,
            observed_c2s,
            observed_s2c,
            limit_c2s,
            limit_s2c,
            ceiling_c2s,
            ceiling_s2c,
            slow_reader,
        }
    }

    fn window_limited(&self) -> bool {
        self.ceiling_s2c || self.ceiling_c2s
    }

    /// Which side's window capped the stream, and how big it got.
    fn limited_by(&self, s: &Stream) -> Option<String> {
        let side = if self.ceiling_s2c {
            0
        } else if self.ceiling_c2s {
            1
        } else {
            return None;
        };
        Some(format!(
            "{} advertised at most {} bytes",
            s.endpoint(side),
            s.max_window()[side]
        ))
    }

    fn row(&self, s: &Stream) -> WindowStream {
        WindowStream {
            stream: s.id,
            community_id: s.community_id(),
            client: s.endpoint(0),
            server: s.endpoint(1),
            client_syn: s.options(0),
            server_syn: s.options(1),
            scaling: self.scaling.into(),
            max_window_client_bytes: s.max_window()[0],
            max_window_server_bytes: s.max_window()[1],
            rtt_ms: self.rtt.map(ms),
            window_limit_server_to_client_bps: self.limit_s2c,
            window_limit_client_to_server_bps: self.limit_c2s,
            observed_server_to_client_bps: self.observed_s2c,
            observed_client_to_server_bps: self.observed_c2s,
            window_limited: self.window_limited(),
            limited_by: self.limited_by(s),
            slow_reader: self.slow_reader,
            display_filter: s.filter(None),
        }
    }
}

fn window_scaling(m: &TcpModel, p: &TcpParams) -> Reduced<WindowScaling> {
    let mut findings = Vec::new();
    let mut invalid_shift = Vec::new();
    for s in &m.streams {
        for o in [s.options(0), s.options(1)].iter().flatten() {
            if o.wscale.is_some_and(|w| w > 14) {
                invalid_shift.push(s);
            }
        }
    }
    let rows: Vec<(&Stream, WindowFacts)> =
        m.streams.iter().map(|s| (s, WindowFacts::of(s))).collect();
    let count = |k: &str| rows.iter().filter(|r| r.1.scaling == k).count() as u64;
    let (negotiated, not_negotiated, unknown) = (
        count("negotiated"),
        count("not_negotiated"),
        count("unknown"),
    );
    let limited: Vec<&(&Stream, WindowFacts)> =
        rows.iter().filter(|r| r.1.window_limited()).collect();
    if !limited.is_empty() {
        findings.push(Finding::new(
            Severity::Medium,
            format!("{} stream(s) are limited by the receive window", limited.len()),
            format!(
                "Throughput reaches the window/RTT ceiling, e.g. stream {}: {} at {} ms RTT. Raise the receiver's buffer or enable window scaling.",
                limited[0].0.id,
                limited[0].1.limited_by(limited[0].0).unwrap_or_default(),
                limited[0].1.rtt.map(ms).unwrap_or(0.0)
            ),
            Evidence {
                streams: limited.iter().map(|r| r.0.id).take(10).collect(),
                display_filter: format!("tcp.stream in {{{}}}", limited.iter().take(10).map(|r| r.0.id.to_string()).collect::<Vec<_>>().join(",")),
                ..Default::default()
            },
        ));
    }
    let slow: Vec<&(&Stream, WindowFacts)> = rows.iter().filter(|r| r.1.slow_reader).collect();
    if !slow.is_empty() {
        findings.push(Finding::new(
            Severity::Low,
            format!("{} stream(s) are held back by a slow reader", slow.len()),
            format!(
                "The sender kept hitting the advertised window, or the receiver closed it to zero, while throughput stayed well below window/RTT (e.g. stream {}): the receiving application reads slowly. A bigger buffer will not help; a faster reader will (see analyze_tcp_zero_window).",
                slow[0].0.id
            ),
            Evidence {
                streams: slow.iter().map(|r| r.0.id).take(10).collect(),
                display_filter: format!(
                    "(tcp.analysis.window_full || tcp.analysis.zero_window) && tcp.stream in {{{}}}",
                    slow.iter().take(10).map(|r| r.0.id.to_string()).collect::<Vec<_>>().join(",")
                ),
                ..Default::default()
            },
        ));
    }
    if not_negotiated > 0 {
        let ids: Vec<u64> = rows
            .iter()
            .filter(|r| r.1.scaling == "not_negotiated")
            .map(|r| r.0.id)
            .take(10)
            .collect();
        findings.push(Finding::new(
            Severity::Low,
            format!("{not_negotiated} stream(s) without window scaling"),
            "One side did not offer the window-scale option, so windows are capped at 64 KiB: on long, fast paths that caps throughput.".to_string(),
            Evidence { streams: ids.clone(), display_filter: "tcp.flags.syn == 1 && !tcp.options.wscale.shift".into(), ..Default::default() },
        ));
    }
    // streams whose handshake the capture missed (not unanswered SYNs: no data flows there)
    let midstream: Vec<&Stream> = m
        .streams
        .iter()
        .filter(|s| !s.syn[0] && !s.synack[1] && s.options(0).is_none() && s.options(1).is_none())
        .collect();
    if !midstream.is_empty() {
        let unknown = midstream.len();
        findings.push(Finding::new(
            Severity::Info,
            format!("{unknown} stream(s) started before the capture: scale factor unknown"),
            "Without the SYN/SYN-ACK the window scale is not known, so tshark's window sizes for these streams may be too small by the scale factor.".to_string(),
            Evidence {
                streams: midstream.iter().map(|s| s.id).take(10).collect(),
                display_filter: streams_filter(midstream.iter().copied(), "tcp"),
                ..Default::default()
            },
        ));
    }
    if let Some(s) = invalid_shift.first() {
        findings.push(Finding::new(
            Severity::Low,
            format!("{} stream(s) with a window-scale shift above 14", invalid_shift.len()),
            "RFC 7323 caps the shift at 14; a larger value is a broken or crafted stack and receivers clamp it.".to_string(),
            Evidence { streams: invalid_shift.iter().map(|s| s.id).take(10).collect(), display_filter: "tcp.options.wscale.shift > 14".into(), frames: s.syn_frame().into_iter().collect(), ..Default::default() },
        ));
    }
    let wl = limited.len() as u64;
    let summary = format!(
        "{} TCP streams: window scaling negotiated on {negotiated}, not negotiated on {not_negotiated}, unknown (handshake not captured) on {unknown}; {} limited by the receive window.",
        m.streams.len(),
        wl
    );
    (
        summary,
        findings,
        WindowScaling {
            negotiated,
            not_negotiated,
            unknown,
            window_limited: wl,
            streams: page_by(
                rows,
                p,
                |(sa, a), (sb, b)| {
                    b.window_limited()
                        .cmp(&a.window_limited())
                        .then(a.scaling.cmp(b.scaling))
                        .then(sa.id.cmp(&sb.id))
                },
                |(s, f)| f.row(s),
            ),
        },
    )
}

// ---------------------------------------------------------------- timing

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TimingStream {
    pub stream: u64,
    /// The connection's Community ID, to join Zeek, Suricata or Arkime records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    pub client: String,
    pub server: String,
    pub out_of_order: u64,
    pub duplicate_acks: u64,
    /// Longest run of duplicate ACKs for one segment.
    pub longest_dup_ack_chain: u64,
    pub keep_alives: u64,
    /// Longest silence inside the stream, and the frame before it.
    pub max_gap_s: f64,
    pub max_gap_after_frame: u64,
    /// Smoothed variation of packet inter-arrival times (RFC 3550 style), ms.
    pub jitter_ms: f64,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TimingIssues {
    pub out_of_order: u64,
    pub duplicate_acks: u64,
    pub keep_alives: u64,
    pub stalls: u64,
    /// Frames whose timestamp is earlier than the frame before them.
    pub timestamps_backwards: u64,
    pub timestamps_backwards_frames: Vec<u64>,
    pub streams: Table<TimingStream>,
}

/// A silence inside a stream that matters: over a second and far above its RTT.
fn is_stall(s: &Stream) -> bool {
    let rtt = stream_rtt(s).unwrap_or(0.0);
    s.max_gap >= 1.0 && s.max_gap >= 20.0 * rtt && s.keep_alive == [0, 0]
        || s.max_gap >= 5.0 && s.max_gap >= 50.0 * rtt
}

pub(crate) fn timing(m: &TcpModel, p: &TcpParams) -> Reduced<TimingIssues> {
    let timing_row = |s: &Stream| TimingStream {
        stream: s.id,
        community_id: s.community_id(),
        client: s.endpoint(0),
        server: s.endpoint(1),
        out_of_order: s.out_of_order[0] + s.out_of_order[1],
        duplicate_acks: s.dup_ack[0] + s.dup_ack[1],
        longest_dup_ack_chain: s.max_dup_chain,
        keep_alives: s.keep_alive[0] + s.keep_alive[1],
        max_gap_s: round(s.max_gap, 6),
        max_gap_after_frame: s.max_gap_after_frame(),
        jitter_ms: ms(s.jitter),
        display_filter: s.filter(Some(
            "(tcp.analysis.out_of_order || tcp.analysis.duplicate_ack || tcp.analysis.keep_alive)",
        )),
    };
    let score = |s: &Stream| {
        (s.out_of_order[0] + s.out_of_order[1]) * 3
            + s.dup_ack[0]
            + s.dup_ack[1]
            + s.keep_alive[0]
            + s.keep_alive[1]
            + (round(s.max_gap, 6) * 10.0) as u64
    };
    let rows = page_by(
        m.streams.iter().collect::<Vec<&Stream>>(),
        p,
        |a, b| score(b).cmp(&score(a)).then(a.id.cmp(&b.id)),
        |s| timing_row(s),
    );
    let stalls: Vec<&Stream> = m.streams.iter().filter(|s| is_stall(s)).collect();
    let mut findings = Vec::new();
    let ooo = m.total(|s| s.out_of_order[0] + s.out_of_order[1]);
    let dup = m.total(|s| s.dup_ack[0] + s.dup_ack[1]);
    let ka = m.total(|s| s.keep_alive[0] + s.keep_alive[1]);
    if ooo > 0 {
        findings.push(Finding::new(
            if ooo >= 50 { Severity::Medium } else { Severity::Low },
            format!("{ooo} out-of-order segment(s)"),
            "Segments arrived after later ones: reordering on the path (load balancing over several links) or a retransmission filling a hole; receivers answer with duplicate ACKs, which can trigger needless fast retransmits.".to_string(),
            Evidence { frames: m.streams.iter().flat_map(|s| s.sample_frames("out_of_order")).take(10).collect(), display_filter: "tcp.analysis.out_of_order".into(), ..Default::default() },
        ));
    }
    if let Some(s) = m
        .streams
        .iter()
        .max_by_key(|s| s.max_dup_chain)
        .filter(|s| s.max_dup_chain >= 3)
    {
        findings.push(Finding::new(
            if s.max_dup_chain >= 10 { Severity::Medium } else { Severity::Low },
            format!("{dup} duplicate ACK(s); longest chain {} in stream {}", s.max_dup_chain, s.id),
            "Three or more duplicate ACKs for one segment mean the receiver is missing it: a lost segment that fast retransmit should repair.".to_string(),
            stream_evidence(s, "duplicate_ack", Some("tcp.analysis.duplicate_ack")),
        ));
    }
    for s in stalls.iter().take(5) {
        if s.silence_was_zero_window() {
            // one story per stream: the zero-window view tells this one
            let d = if s.zero_window[0] > 0 { 0 } else { 1 };
            findings.push(Finding::new(
                Severity::Medium,
                format!(
                    "Stream {} stalled {:.2} s on a zero window from {}",
                    s.id,
                    s.max_gap,
                    s.endpoint(d)
                ),
                format!(
                    "{} advertised a zero window and the sender could only probe it: the receiving application stopped reading (see analyze_tcp_zero_window). Not an idle connection.",
                    s.endpoint(d)
                ),
                stream_evidence(s, "zero_window", Some("tcp.analysis.zero_window")),
            ));
            continue;
        }
        let rto = s.max_gap_ended_by_retrans;
        findings.push(Finding::new(
            if rto { Severity::Medium } else { Severity::Low },
            format!("Stream {} went silent for {:.2} s{}", s.id, s.max_gap, if rto { " until a retransmission" } else { "" }),
            if rto {
                format!(
                    "After frame {} nothing was sent for {:.2} s and then a segment was retransmitted: a retransmission timeout stalled the transfer (RTT {:.1} ms).",
                    s.max_gap_after_frame(),
                    s.max_gap,
                    stream_rtt(s).map(ms).unwrap_or(0.0)
                )
            } else {
                format!(
                    "After frame {} nothing was sent either way for {:.2} s (RTT {:.1} ms): the application paused (server think time, a slow backend, a user at a prompt); a problem only if someone was waiting.",
                    s.max_gap_after_frame(),
                    s.max_gap,
                    stream_rtt(s).map(ms).unwrap_or(0.0)
                )
            },
            Evidence {
                frames: vec![s.max_gap_after_frame()],
                streams: vec![s.id],
                endpoints: vec![s.endpoint(0), s.endpoint(1)],
                display_filter: format!("tcp.stream == {} && frame.number >= {}", s.id, s.max_gap_after_frame()),
                ..Default::default()
            },
        ));
    }
    let probes = m.total(|s| s.keepalive_probes[0] + s.keepalive_probes[1]);
    if probes > 0 {
        findings.push(Finding::new(
            Severity::Low,
            format!("{probes} of the {ka} keep-alive(s) probed a zero window"),
            "Sent while the other side advertised a zero window: the sender is blocked by a receiver that stopped reading, not keeping an idle connection open (see analyze_tcp_zero_window).".to_string(),
            Evidence { display_filter: "tcp.analysis.keep_alive || tcp.analysis.zero_window".into(), frames: m.streams.iter().filter(|s| s.keepalive_probes != [0, 0]).flat_map(|s| s.sample_frames("keep_alive")).take(10).collect(), ..Default::default() },
        ));
    }
    if ka > probes {
        findings.push(Finding::new(
            Severity::Info,
            format!("{} TCP keep-alive(s)", ka - probes),
            "Idle connections being kept open; harmless unless a middlebox drops idle flows sooner.".to_string(),
            Evidence { display_filter: "tcp.analysis.keep_alive".into(), frames: m.streams.iter().filter(|s| s.keepalive_probes == [0, 0]).flat_map(|s| s.sample_frames("keep_alive")).take(10).collect(), ..Default::default() },
        ));
    }
    if m.time_backwards > 0 {
        findings.push(Finding::new(
            Severity::Low,
            format!("{} frame(s) with timestamps earlier than the frame before", m.time_backwards),
            "The capture is not in time order (merged files, multiple interfaces or a clock step): time-based figures near these frames are unreliable.".to_string(),
            Evidence { frames: m.time_backwards_frames.clone(), display_filter: "frame.time_delta < 0".into(), ..Default::default() },
        ));
    }
    let summary = format!(
        "Checked {} TCP streams: {ooo} out-of-order segment(s), {dup} duplicate ACK(s), {ka} keep-alive(s), {} stall(s) inside streams, {} backwards timestamp(s).{}",
        m.streams.len(),
        stalls.len(),
        m.time_backwards,
        if ooo + dup + stalls.len() as u64 + m.time_backwards == 0 {
            " No timing problems."
        } else {
            ""
        }
    );
    let data = TimingIssues {
        out_of_order: ooo,
        duplicate_acks: dup,
        keep_alives: ka,
        stalls: stalls.len() as u64,
        timestamps_backwards: m.time_backwards,
        timestamps_backwards_frames: m.time_backwards_frames.clone(),
        streams: rows,
    };
    (summary, findings, data)
}

// ---------------------------------------------------------------- congestion

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Congestion {
    /// healthy, lossy, congested, receiver_limited (several can apply; the first is the strongest).
    pub verdict: String,
    pub reasons: Vec<String>,
    pub retransmission_rate_pct: f64,
    pub duplicate_acks: u64,
    pub zero_windows: u64,
    pub ecn_ce_marks: u64,
    pub ecn_ece_flags: u64,
    pub ecn_cwr_flags: u64,
    pub rtt_min_ms: Option<f64>,
    pub rtt_median_ms: Option<f64>,
    pub rtt_p95_ms: Option<f64>,
    /// Median over stream directions of p95 ACK RTT / minimum (directions with at least
    /// 10 samples and a minimum of 1 ms): above ~3 the path queues (bufferbloat).
    pub rtt_inflation: Option<f64>,
    /// Stream directions (client = data sender) whose own p95/min RTT ratio is highest.
    pub inflated_streams: Table<InflatedStream>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InflatedStream {
    pub stream: u64,
    pub client: String,
    pub server: String,
    pub rtt_min_ms: f64,
    pub rtt_p95_ms: f64,
    pub inflation: f64,
    pub display_filter: String,
}

fn congestion(m: &TcpModel, p: &TcpParams) -> Reduced<Congestion> {
    let (retrans, data, rate) = m.loss_rate();
    let dup = m.total(|s| s.dup_ack[0] + s.dup_ack[1]);
    let zw = m.total(|s| s.zero_window[0] + s.zero_window[1]);
    let ce = m.total(|s| s.ce_marks);
    let ece = m.total(|s| s.ece);
    let cwr = m.total(|s| s.cwr);
    let min = m.rtt_samples.first().copied();
    let med = percentile(&m.rtt_samples, 50.0);
    let p95 = percentile(&m.rtt_samples, 95.0);
    let mut inflated: Vec<InflatedStream> = Vec::new();
    for s in &m.streams {
        for d in 0..2 {
            let mut r = s.rtt.of_sender(d).into_owned();
            r.sort_by(f64::total_cmp);
            let (Some(&lo), Some(hi)) = (r.first(), percentile(&r, 95.0)) else {
                continue;
            };
            // below a millisecond the capture sits next to the acknowledging host, and
            // ratios would measure its scheduling, not queues on the path
            if r.len() >= 10 && lo >= 0.001 {
                inflated.push(InflatedStream {
                    stream: s.id,
                    client: s.endpoint(d),
                    server: s.endpoint(1 - d),
                    rtt_min_ms: ms(lo),
                    rtt_p95_ms: ms(hi),
                    inflation: round(hi / lo, 2),
                    display_filter: s.filter(Some(&format!(
                        "tcp.analysis.ack_rtt && ip.src == {}",
                        s.addr[1 - d]
                    ))),
                });
            }
        }
    }
    inflated.sort_by(|a, b| b.inflation.total_cmp(&a.inflation));
    // the verdict uses the typical direction, not one odd stream
    let inflation = {
        let mut v: Vec<f64> = inflated.iter().map(|i| i.inflation).collect();
        v.sort_by(f64::total_cmp);
        percentile(&v, 50.0)
    };
    let mut verdicts = Vec::new();
    let mut reasons = Vec::new();
    if ce > 0 || ece > 0 {
        verdicts.push("congested");
        reasons.push(format!("routers marked {ce} packet(s) Congestion Experienced and receivers echoed ECE {ece} time(s): explicit congestion signals"));
    }
    if let Some(inf) = inflation.filter(|i| *i >= 3.0) {
        if !verdicts.contains(&"congested") {
            verdicts.push("congested");
        }
        reasons.push(format!(
            "ACK RTT p95 is {inf}x its minimum in the typical stream direction (worst: stream {} {:.1} ms vs {:.1} ms): queues build up on the path",
            inflated[0].stream, inflated[0].rtt_p95_ms, inflated[0].rtt_min_ms
        ));
    }
    let est = m.estimated_loss();
    if rate >= 1.0 || est.pct >= 1.0 {
        verdicts.push("lossy");
        reasons.push(format!(
            "{rate}% of data segments were retransmitted ({retrans} of {data}); {dup} duplicate ACKs; estimated loss {}% ({} segment(s) lost before the capture point, {} after it)",
            est.pct, est.before_capture, est.after_capture
        ));
    }
    let longest_stall = m
        .streams
        .iter()
        .map(|s| s.zw_stall_max[0].max(s.zw_stall_max[1]))
        .fold(0.0, f64::max);
    let dead = m
        .streams
        .iter()
        .any(|s| s.zw_unrecovered[0] || s.zw_unrecovered[1]);
    // a zero window that reopens within a fraction of a second is flow control working
    if zw > 0 && (longest_stall >= 0.2 || dead) {
        verdicts.push("receiver_limited");
        reasons.push(format!(
            "{zw} zero-window advertisement(s), a sender stopped up to {longest_stall:.2} s{}: a receiver, not the network, held the transfer back",
            if dead { " (one window never reopened)" } else { "" }
        ));
    }
    if verdicts.is_empty() {
        verdicts.push("healthy");
        reasons.push(format!(
            "retransmissions {rate}% (<1%), no ECN marks, {}{}",
            if zw == 0 {
                "no zero windows".to_string()
            } else {
                format!("{zw} brief zero window(s) (longest stall {longest_stall:.3} s)")
            },
            inflation
                .map(|i| format!(", RTT p95/min {i}x (<3x)"))
                .unwrap_or_default()
        ));
    }
    let verdict = verdicts.join(", ");
    let severity = match verdicts[0] {
        "healthy" => Severity::Info,
        _ if rate >= 5.0 || inflation.is_some_and(|i| i >= 10.0) => Severity::High,
        _ => Severity::Medium,
    };
    // without TCP there is nothing to judge: no verdict finding, the summary says so
    let findings = if m.streams.is_empty() {
        Vec::new()
    } else {
        vec![Finding::new(
            severity,
            format!("Congestion verdict: {verdict}"),
            reasons.join("; "),
            Evidence {
                // a healthy verdict rests on every TCP segment; a congested one on its signs
                display_filter: if verdict == "healthy" {
                    "tcp".into()
                } else {
                    "tcp.analysis.retransmission || tcp.analysis.duplicate_ack || tcp.analysis.zero_window || ip.dsfield.ecn == 3 || tcp.flags.ece == 1".into()
                },
                streams: inflated.iter().map(|s| s.stream).take(5).collect(),
                ..Default::default()
            },
        )]
    };
    let summary = if m.streams.is_empty() {
        format!(
            "No TCP in this capture or scope ({} packets read): no congestion verdict.",
            thousands(m.span.packets)
        )
    } else {
        format!(
            "Verdict: {verdict}. {}. Based on {} TCP streams, {} data segments and {} ACK-RTT samples.",
            reasons.join("; "),
            m.streams.len(),
            thousands(data),
            m.rtt_samples.len()
        )
    };
    let data = Congestion {
        verdict,
        reasons,
        retransmission_rate_pct: rate,
        duplicate_acks: dup,
        zero_windows: zw,
        ecn_ce_marks: ce,
        ecn_ece_flags: ece,
        ecn_cwr_flags: cwr,
        rtt_min_ms: min.map(ms),
        rtt_median_ms: med.map(ms),
        rtt_p95_ms: p95.map(ms),
        rtt_inflation: inflation,
        inflated_streams: page(inflated, p),
    };
    (summary, findings, data)
}

// ---------------------------------------------------------------- lifecycle

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Lifecycle {
    pub stream: u64,
    /// The connection's Community ID, to join Zeek, Suricata or Arkime records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    pub client: String,
    pub server: String,
    /// Zeek conn_state: S0, S1, SF, REJ, S2, S3, RSTO, RSTR, RSTOS0, RSTRH, SH, SHR, OTH.
    pub state: String,
    /// Zeek-style history (originator upper case): S syn, H syn-ack, A ack, D data, F fin, R rst, T retransmission, W zero window.
    pub history: String,
    pub start: String,
    pub duration_s: f64,
    pub syn_frame: Option<u64>,
    pub syn_ack_frame: Option<u64>,
    pub handshake_rtt_ms: Option<f64>,
    /// First SYN to SYN-ACK, including time lost to SYN retransmissions.
    pub setup_ms: Option<f64>,
    pub syn_retransmissions: u64,
    /// Seconds from the first packet to the first payload byte.
    pub first_data_after_s: Option<f64>,
    /// client, server or none.
    pub closed_by: String,
    /// fin, rst or open.
    pub close_kind: String,
    pub close_frame: Option<u64>,
    pub packets_client_to_server: u64,
    pub packets_server_to_client: u64,
    pub bytes_client_to_server: u64,
    pub bytes_server_to_client: u64,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StateCount {
    pub state: String,
    pub count: u64,
    pub meaning: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Lifecycles {
    pub states: Vec<StateCount>,
    pub connections: Table<Lifecycle>,
}

fn state_meaning(s: &str) -> &'static str {
    match s {
        "S0" => "attempt seen, no reply",
        "S1" => "established, not closed",
        "SF" => "normal establishment and termination",
        "REJ" => "attempt rejected (RST)",
        "S2" => "established, originator closed, no reply",
        "S3" => "established, responder closed, no reply",
        "RSTO" => "established, originator aborted with RST",
        "RSTR" => "established, responder sent RST",
        "RSTOS0" => "originator sent SYN then RST, no SYN-ACK",
        "RSTRH" => "responder sent SYN-ACK then RST, no SYN seen",
        "SH" => "originator sent SYN then FIN, no SYN-ACK (half-open)",
        "SHR" => "responder sent SYN-ACK then FIN, no SYN seen",
        _ => "no SYN seen: midstream traffic",
    }
}

pub(crate) fn lifecycle(m: &TcpModel, p: &TcpParams) -> Reduced<Lifecycles> {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    // Rank every stream, but build rows only for the page shown: a scan of a million
    // ports must not become a million rows in memory.
    let mut order: Vec<(u8, u64, &Stream)> = m
        .streams
        .iter()
        .map(|s| {
            let state = s.conn_state();
            *counts.entry(state).or_default() += 1;
            let rank = match state {
                "REJ" | "RSTO" | "RSTR" | "RSTOS0" | "RSTRH" => 0,
                "S0" | "SH" | "SHR" | "S2" | "S3" => 1,
                "OTH" | "S1" => 2,
                _ => 3,
            };
            (rank, s.id, s)
        })
        .collect();
    order.sort_unstable_by_key(|&(rank, id, _)| (rank, id));
    let (offset, limit) = (clamp_offset(p.offset), clamp_limit(p.limit, 20));
    let total = order.len();
    let rows: Vec<Lifecycle> = order
        .iter()
        .skip(offset)
        .take(limit)
        .map(|&(_, _, s)| {
            let (closed_by, kind, frame) = match s.close() {
                Some((_, f, d, rst)) => (
                    if d == 0 { "client" } else { "server" },
                    if rst { "rst" } else { "fin" },
                    Some(f),
                ),
                None => ("none", "open", None),
            };
            Lifecycle {
                stream: s.id,
                community_id: s.community_id(),
                client: s.endpoint(0),
                server: s.endpoint(1),
                state: s.conn_state().into(),
                history: s.history(),
                start: rfc3339(s.first),
                duration_s: round(s.duration(), 6),
                syn_frame: s.syn_frame(),
                syn_ack_frame: s.synack_frame(),
                handshake_rtt_ms: s.handshake_rtt().map(ms),
                setup_ms: s.setup_time().map(ms),
                syn_retransmissions: s.syn_retries,
                first_data_after_s: s.first_data().map(|d| round(d.time - s.first, 6)),
                closed_by: closed_by.into(),
                close_kind: kind.into(),
                close_frame: frame,
                packets_client_to_server: s.packets()[0],
                packets_server_to_client: s.packets()[1],
                bytes_client_to_server: s.bytes[0],
                bytes_server_to_client: s.bytes[1],
                display_filter: s.filter(None),
            }
        })
        .collect();
    drop(order);
    let mut findings = Vec::new();
    // scans first: many refused/unanswered ports from one source to one host
    let mut scanned = std::collections::BTreeSet::new();
    for scan in crate::analysis::scans::port_scans(m) {
        // every probe of the scan: refused, unanswered, and the half-open ones to open
        // ports (SYN, SYN-ACK, then RST or nothing from the scanner; no data)
        for s in m.streams.iter().filter(|s| {
            *s.addr[0] == *scan.scanner
                && *s.addr[1] == *scan.target
                && s.syn[0]
                && s.payload == [0, 0]
        }) {
            scanned.insert(s.id);
        }
        findings.push(crate::analysis::scans::scan_finding(&scan));
    }
    // connections that got through only after their SYN was sent again
    let mut slow_setup: Vec<&Stream> = m
        .streams
        .iter()
        .filter(|s| s.syn_retries > 0 && s.setup_time().is_some())
        .collect();
    slow_setup.sort_by(|a, b| {
        b.setup_time()
            .unwrap_or(0.0)
            .total_cmp(&a.setup_time().unwrap_or(0.0))
            .then(a.id.cmp(&b.id))
    });
    if let Some(worst) = slow_setup.first() {
        let setup = worst.setup_time().unwrap_or(0.0);
        findings.push(Finding::new(
            if setup >= 1.0 { Severity::Medium } else { Severity::Low },
            format!(
                "{} connection(s) needed SYN retransmissions; the slowest took {:.3} s to set up",
                slow_setup.len(),
                setup
            ),
            format!(
                "The first SYN went unanswered (lost on the way, or a full accept queue), so the client waited for its retransmission timer: {} sent {} SYN(s) again, {:.3} s from the first SYN to the SYN-ACK while the handshake itself took {:.1} ms.",
                worst.label(),
                worst.syn_retries,
                setup,
                worst.handshake_rtt().map(ms).unwrap_or(0.0)
            ),
            Evidence {
                streams: slow_setup.iter().map(|s| s.id).take(10).collect(),
                frames: slow_setup.iter().filter_map(|s| s.syn_frame()).take(10).collect(),
                display_filter: format!(
                    "tcp.flags.syn == 1 && tcp.flags.ack == 0 && tcp.stream in {{{}}}",
                    slow_setup.iter().map(|s| s.id.to_string()).take(10).collect::<Vec<_>>().join(",")
                ),
                ..Default::default()
            },
        ));
    }
    let group = |states: &[&str]| -> Vec<&Stream> {
        m.streams
            .iter()
            .filter(|s| states.contains(&s.conn_state()) && !scanned.contains(&s.id))
            .collect()
    };
    let refused = group(&["REJ"]);
    if !refused.is_empty() {
        findings.push(Finding::new(
            Severity::Medium,
            format!("{} connection(s) refused", refused.len()),
            format!(
                "The server answered the SYN with RST: nothing listens on the port, or a firewall rejects. E.g. {} (stream {}).",
                refused[0].label(),
                refused[0].id
            ),
            Evidence {
                streams: refused.iter().map(|s| s.id).take(10).collect(),
                frames: refused.iter().filter_map(|s| s.syn_frame()).take(10).collect(),
                endpoints: refused.iter().map(|s| s.endpoint(1)).take(5).collect(),
                display_filter: streams_filter(refused.iter().copied(), "tcp.flags.syn == 1 || tcp.flags.reset == 1"),
                ..Default::default()
            },
        ));
    }
    let half = group(&["S0", "SH", "RSTOS0"]);
    if !half.is_empty() {
        findings.push(Finding::new(
            Severity::Medium,
            format!("{} connection attempt(s) never answered", half.len()),
            format!(
                "SYN without SYN-ACK: the host is down or unreachable, a firewall drops silently, or the SYN-ACK took another path. E.g. {} (stream {}).",
                half[0].label(),
                half[0].id
            ),
            Evidence {
                streams: half.iter().map(|s| s.id).take(10).collect(),
                frames: half.iter().filter_map(|s| s.syn_frame()).take(10).collect(),
                display_filter: streams_filter(half.iter().copied(), "tcp.flags.syn == 1 && tcp.flags.ack == 0"),
                ..Default::default()
            },
        ));
    }
    let resets = group(&["RSTO", "RSTR"]);
    if !resets.is_empty() {
        let by_server = resets.iter().filter(|s| s.conn_state() == "RSTR").count();
        findings.push(Finding::new(
            Severity::Low,
            format!("{} established connection(s) ended with RST ({by_server} by the server)", resets.len()),
            "An abort instead of an orderly FIN close: application errors, idle timeouts in a middlebox, or clients that reset instead of closing.".to_string(),
            Evidence {
                streams: resets.iter().map(|s| s.id).take(10).collect(),
                frames: resets.iter().flat_map(|s| s.sample_frames("reset").into_iter().take(1)).take(10).collect(),
                display_filter: streams_filter(resets.iter().copied(), "tcp.flags.reset == 1"),
                ..Default::default()
            },
        ));
    }
    let states: Vec<StateCount> = {
        let mut v: Vec<StateCount> = counts
            .iter()
            .map(|(s, c)| StateCount {
                state: s.to_string(),
                count: *c,
                meaning: state_meaning(s).into(),
            })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.state.cmp(&b.state)));
        v
    };
    let summary = format!(
        "{} TCP connection(s): {}. {}",
        m.streams.len(),
        states
            .iter()
            .map(|s| format!("{} {}", s.count, s.state))
            .collect::<Vec<_>>()
            .join(", "),
        if findings.is_empty() {
            "No refused, unanswered or reset connections.".to_string()
        } else {
            format!("{} problem group(s) in findings.", findings.len())
        }
    );
    let connections = Table::window(rows, total, offset);
    (
        summary,
        findings,
        Lifecycles {
            states,
            connections,
        },
    )
}

#[tool_router(router = tcp_router, vis = "pub(crate)")]
impl PcapServer {
    /// TCP retransmissions by kind (retransmission, fast, spurious, lost segment) per
    /// stream and overall, as a rate of data segments, with the loss direction, worst
    /// streams first, and bursts in time.
    #[tool(
        name = "analyze_tcp_retransmissions",
        annotations(
            title = "TCP retransmissions",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_tcp_retransmissions(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Retransmissions>>, String> {
        self.tcp_tool("analyze_tcp_retransmissions", p, rc, retransmissions)
            .await
    }

    /// TCP zero-window events, window-full, probes and window updates; per stream who
    /// advertised the zero window and how long the sender stalled, and windows that never reopened.
    #[tool(
        name = "analyze_tcp_zero_window",
        annotations(
            title = "TCP zero windows",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_tcp_zero_window(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<ZeroWindows>>, String> {
        self.tcp_tool("analyze_tcp_zero_window", p, rc, zero_windows)
            .await
    }

    /// Per TCP stream the SYN options of both sides (window scale, MSS, SACK, timestamps),
    /// whether scaling was negotiated or is unknown, the largest windows, and streams whose
    /// throughput is capped by window/RTT.
    #[tool(
        name = "analyze_tcp_window_scaling",
        annotations(
            title = "TCP window scaling",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_tcp_window_scaling(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<WindowScaling>>, String> {
        self.tcp_tool("analyze_tcp_window_scaling", p, rc, window_scaling)
            .await
    }

    /// Timing problems in TCP streams: out-of-order segments, duplicate-ACK chains,
    /// keep-alives, stalls (long silences inside a stream), timestamps going backwards,
    /// and per-stream jitter.
    #[tool(
        name = "analyze_packet_timing_issues",
        annotations(
            title = "Packet timing issues",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_packet_timing_issues(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<TimingIssues>>, String> {
        self.tcp_tool("analyze_packet_timing_issues", p, rc, timing)
            .await
    }

    /// Congestion verdict with its reasons: retransmission rate, duplicate ACKs, zero
    /// windows, ECN (CE marks, ECE/CWR) and RTT inflation (p95 against minimum: queueing).
    #[tool(
        name = "analyze_congestion_indicators",
        annotations(
            title = "Congestion indicators",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_congestion_indicators(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Congestion>>, String> {
        self.tcp_tool("analyze_congestion_indicators", p, rc, congestion)
            .await
    }

    /// Per TCP connection: SYN, SYN-ACK, handshake RTT, first data, who closed and how
    /// (FIN/RST), duration, bytes each way, Zeek conn_state and history. Counts per state;
    /// refused, unanswered and reset connections, and scans, in findings.
    #[tool(
        name = "analyze_connection_lifecycle",
        annotations(
            title = "TCP connection lifecycle",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_connection_lifecycle(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Lifecycles>>, String> {
        self.tcp_tool("analyze_connection_lifecycle", p, rc, lifecycle)
            .await
    }
}
