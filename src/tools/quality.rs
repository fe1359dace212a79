//! `analyze_network_quality_metrics`: loss, latency, jitter and error rates in one
//! place, and a grade whose arithmetic is written out so a person can check it.
//!
//! Loss, latency and connection failures come from the shared TCP model, TLS failures
//! from the TLS model, RTP jitter from tshark's RTP stream table, and DNS, ICMP and
//! expert errors from one more pass over just those packets.

use std::collections::BTreeMap;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::compare::{Better, Metric};
use crate::analysis::rtp::rtp_streams;
use crate::analysis::stats::Distribution;
use crate::engine::Analysis;
use crate::model::tcp::TcpModel;
use crate::model::tls::TlsModel;
use crate::report::{Evidence, Finding, Report, Severity, ms, pct, percentile, round};
use crate::server::PcapServer;
use crate::tshark::fields::{FromRow, Row};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct QualityParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Wireshark display filter scoping the analysis.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// SSLKEYLOGFILE in an allowed directory, to decrypt TLS (overrides
    /// PCAP_TLS_KEYLOG_FILE).
    #[serde(default)]
    pub tls_keylog_file: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Loss {
    /// Retransmitted data segments over data segments, TCP, percent.
    pub tcp_retransmission_rate_pct: f64,
    pub tcp_retransmissions: u64,
    pub tcp_data_segments: u64,
    /// Segments tshark saw missing (previous segment not captured).
    pub tcp_lost_segments: u64,
    /// Loss estimated from where the capture sits: segments lost before the capture
    /// point (holes, in segments) and after it (resends of bytes it saw), over the
    /// data segments sent, percent. The grade uses the worse of this and the
    /// retransmission rate.
    pub tcp_estimated_loss_pct: f64,
    pub tcp_lost_before_capture_point: u64,
    pub tcp_lost_after_capture_point: u64,
    /// Worst RTP stream loss, percent (present when RTP was seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtp_worst_loss_pct: Option<f64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Latency {
    pub tcp_handshake_rtt: Distribution,
    pub dns_response_time: Distribution,
    pub icmp_echo_rtt: Distribution,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Jitter {
    /// rtp (tshark's RTP jitter) or tcp_rtt_variation (mean change between consecutive
    /// ACK RTT samples of one sender, median over connections).
    pub source: String,
    pub jitter_ms: Option<f64>,
    pub max_jitter_ms: Option<f64>,
    pub samples: u64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorRates {
    pub tcp_connection_attempts: u64,
    /// Attempts refused (RST) or never answered, percent.
    pub tcp_connection_failure_pct: f64,
    pub dns_queries: u64,
    /// Queries with no answer, SERVFAIL or REFUSED, percent (NXDOMAIN is an answer).
    pub dns_failure_pct: f64,
    pub dns_nxdomain: u64,
    pub tls_sessions: u64,
    /// Handshakes ending in an alert or a reset, percent (incomplete ones at the capture
    /// edge are not counted as failures).
    pub tls_failure_pct: f64,
    /// ICMP destination unreachable and parameter problem (v4 and v6).
    pub icmp_errors: u64,
    /// ICMP time exceeded: traceroute, or a routing loop; not graded.
    pub icmp_time_exceeded: u64,
    /// ICMP errors per 1,000 packets.
    pub icmp_errors_per_1000_packets: f64,
    pub expert_errors: u64,
    pub expert_errors_per_1000_packets: f64,
}

/// One line of the grade: what was measured, the rule, and the points it cost.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GradeComponent {
    pub metric: String,
    pub value: Option<f64>,
    pub unit: String,
    pub rule: String,
    pub penalty: f64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Grade {
    /// 100 minus the penalties, floored at 0.
    pub score: f64,
    /// A (90+), B (80+), C (70+), D (60+), F; "n/a" when nothing in scope could be
    /// measured (no TCP data, RTP, DNS, TLS or echo): an empty scope is not a good network.
    pub letter: String,
    /// The computation written out, e.g. "100 - 10 (loss) - 0 (latency) ... = 90 -> A".
    pub arithmetic: String,
    pub components: Vec<GradeComponent>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Quality {
    pub grade: Grade,
    pub loss: Loss,
    pub latency: Latency,
    pub jitter: Jitter,
    pub errors: ErrorRates,
}

#[derive(Clone)]
pub struct QRow {
    frame: u64,
    time: f64,
    multicast_dns: bool,
    dns_response: Option<bool>,
    rcode: Option<u16>,
    dns_time: Option<f64>,
    response_to: Option<u64>,
    /// ICMP and ICMPv6 types (one byte on the wire).
    icmp_type: Option<u8>,
    icmp6_type: Option<u8>,
    icmp_rtt_ms: Option<f64>,
    expert_error: bool,
    /// For an ICMP port unreachable: the quoted datagram's sender, destination and port.
    /// (Boxed, as `unreachable`: most rows are DNS and carry neither.)
    closed_port: Option<Box<(String, String, u64)>>,
    /// Any other destination unreachable: what, who reported it, the quoted destination.
    unreachable: Option<Box<(&'static str, String, String)>>,
    dns_retransmission: bool,
    /// For a DNS query: its question (see `analysis::dns::Retries`).
    dns_question: Option<u64>,
}

impl crate::index::Kept for QRow {
    fn wants(r: &Row<'_>) -> bool {
        const PROTOCOLS: usize = crate::index::col(QRow::FIELDS, "frame.protocols");
        const SEVERITY: usize = crate::index::col(QRow::FIELDS, "_ws.expert.severity");
        ["dns", "icmp", "icmpv6"]
            .iter()
            .any(|p| crate::index::has_protocol(r, PROTOCOLS, p))
            || r.all(SEVERITY).any(|s| s == "8388608")
    }
}

impl FromRow for QRow {
    const FIELDS: &'static [&'static str] = crate::with_question_fields![
        "frame.number",
        "frame.protocols",
        "dns.flags.response",
        "dns.flags.rcode",
        "dns.time",
        "dns.response_to",
        "icmp.type",
        "icmpv6.type",
        "icmp.resptime",
        "icmpv6.resptime",
        "_ws.expert.severity",
        "icmp.code",
        "icmpv6.code",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "udp.dstport",
        "dns.retransmit_request_in",
        "frame.time_epoch",
    ];
    fn from_row(r: &Row<'_>) -> Option<Self> {
        const TIME: usize = crate::index::col(QRow::FIELDS, "frame.time_epoch");
        let protocols = r.str(1).unwrap_or("");
        let port_unreachable = (r.u64(6) == Some(3) && r.u64(11) == Some(3))
            || (r.u64(7) == Some(1) && r.u64(12) == Some(4));
        // the quoted datagram's headers are the last occurrences (the outer ones come first)
        let closed_port = port_unreachable
            .then(|| {
                let port = r.all(17).last()?.parse().ok()?;
                Some(Box::new((
                    r.innermost_addr(13, 14),
                    r.innermost_addr(15, 16),
                    port,
                )))
            })
            .flatten();
        let unreachable = unreachable_kind(r.u64(6), r.u64(11), r.u64(7), r.u64(12)).map(|kind| {
            // the router that reported it sent the outer header; the quoted one names
            // the destination it could not reach
            let reporter = r
                .first(13)
                .or_else(|| r.first(14))
                .unwrap_or("")
                .to_string();
            Box::new((kind, reporter, r.innermost_addr(15, 16)))
        });
        Some(Self {
            frame: r.u64(0)?,
            time: r.f64(TIME).unwrap_or(0.0),
            multicast_dns: protocols.contains(":mdns") || protocols.contains(":llmnr"),
            dns_response: r.str(2).filter(|s| !s.is_empty()).map(|_| r.flag(2)),
            rcode: r.u16(3),
            dns_time: r.f64(4),
            response_to: r.u64(5),
            // the first (outer) ICMP header: an error quotes the packet that caused it
            icmp_type: r.u64(6).and_then(|t| u8::try_from(t).ok()),
            icmp6_type: r.u64(7).and_then(|t| u8::try_from(t).ok()),
            icmp_rtt_ms: r.f64(8).or_else(|| r.f64(9)),
            expert_error: r
                .all(10)
                .any(|s| s.parse::<u64>().is_ok_and(|v| v >= 0x0080_0000)),
            closed_port,
            unreachable,
            dns_retransmission: r.str(18).is_some(),
            dns_question: (r.str(2).is_some() && !r.flag(2))
                .then(|| crate::analysis::dns::question_key(r, Self::FIELDS)),
        })
    }
}

/// Unreachable and parameter problems. Time exceeded is kept apart: traceroute makes it
/// on purpose, so it says nothing about quality unless a routing loop does.
fn is_unreachable(r: &QRow) -> bool {
    matches!(r.icmp_type, Some(3 | 12)) || matches!(r.icmp6_type, Some(1 | 2 | 4))
}

fn is_time_exceeded(r: &QRow) -> bool {
    r.icmp_type == Some(11) || r.icmp6_type == Some(3)
}

/// What an ICMP destination unreachable (or packet too big) other than port
/// unreachable says, from the outer type and code (ICMPv4, then ICMPv6).
fn unreachable_kind(
    v4_type: Option<u64>,
    v4_code: Option<u64>,
    v6_type: Option<u64>,
    v6_code: Option<u64>,
) -> Option<&'static str> {
    // destinations that could not be reached (a closed port is counted apart, as
    // UDP to a closed port), and a path MTU smaller than the packet
    let unreachable = matches!(v4_type, Some(3)) || matches!(v6_type, Some(1 | 2));
    crate::model::icmp::error_kind(v4_type, v4_code, v6_type, v6_code)
        .filter(|k| unreachable && *k != "port unreachable")
}

/// ICMP errors of one kind about one destination: how many, their first frames, and
/// the hosts named with them (the routers that reported an unreachable destination, or
/// the senders told of a closed port).
#[derive(Default)]
struct IcmpGroup {
    count: u64,
    frames: Vec<u64>,
    senders: Vec<String>,
}

impl IcmpGroup {
    fn add(&mut self, frame: u64, sender: &str, max_senders: usize) {
        self.count += 1;
        if self.frames.len() < 5 {
            self.frames.push(frame);
        }
        if self.senders.len() < max_senders && !self.senders.iter().any(|s| s == sender) {
            self.senders.push(sender.to_string());
        }
    }
}

/// The groups most frequent first (ties by key), their total, and the first frames
/// across them for a finding's evidence.
fn ranked<K: Ord>(m: &BTreeMap<K, IcmpGroup>) -> (u64, Vec<(&K, &IcmpGroup)>, Vec<u64>) {
    let total = m.values().map(|g| g.count).sum();
    let mut rows: Vec<_> = m.iter().collect();
    rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
    let frames = rows
        .iter()
        .flat_map(|(_, g)| g.frames.iter().copied())
        .take(10)
        .collect();
    (total, rows, frames)
}

/// (what, quoted destination) -> the ICMP errors saying so, from the routers.
type Unreachables = BTreeMap<(&'static str, String), IcmpGroup>;

/// Destinations the network said it could not reach: a routing problem, a host that
/// is down, a firewall that rejects, or a path MTU the sender must learn.
fn unreachables_finding(u: &Unreachables) -> Finding {
    let (total, rows, frames) = ranked(u);
    let named: Vec<String> = rows
        .iter()
        .take(5)
        .map(|((kind, dst), g)| {
            format!(
                "{kind}: {dst} ({}x, reported by {})",
                g.count,
                g.senders.join(", ")
            )
        })
        .collect();
    Finding::new(
        Severity::Medium,
        format!(
            "Unreachable destination(s): {total} ICMP error(s) for {} destination(s)",
            u.len()
        ),
        format!(
            "The network could not deliver to {}. Check the route and the host, a firewall that rejects, or (path MTU) a sender ignoring fragmentation-needed.",
            named.join("; ")
        ),
        Evidence {
            frames,
            display_filter: "(icmp.type == 3 && icmp.code != 3) || (icmpv6.type == 1 && icmpv6.code != 4) || icmpv6.type == 2".into(),
            ..Default::default()
        },
    )
}

/// (destination, UDP port) -> the port unreachables about it, with the senders told.
type ClosedPorts = BTreeMap<(String, u64), IcmpGroup>;

/// UDP datagrams answered by ICMP port unreachable: a service that is down or a client
/// aiming at the wrong port (a scan of many ports is the threat view's).
fn closed_ports_finding(closed: &ClosedPorts) -> Finding {
    let (total, rows, frames) = ranked(closed);
    let named: Vec<String> = rows
        .iter()
        .take(5)
        .map(|((dst, port), g)| {
            format!(
                "{} ({}x, from {})",
                crate::report::endpoint(dst, Some(*port)),
                g.count,
                g.senders.join(", ")
            )
        })
        .collect();
    Finding::new(
        Severity::Medium,
        format!(
            "UDP to closed port(s): {total} ICMP port unreachable for {} destination port(s)",
            closed.len()
        ),
        format!(
            "Nothing listened where these datagrams went: {}. A service that is down, a client configured with the wrong server or port, or a reply to a client that has gone.",
            named.join("; ")
        ),
        Evidence {
            frames,
            display_filter:
                "(icmp.type == 3 && icmp.code == 3) || (icmpv6.type == 1 && icmpv6.code == 4)"
                    .into(),
            ..Default::default()
        },
    )
}

/// Mean absolute change between consecutive samples (RFC 3550's idea applied to RTT).
fn variation(samples: &[f64]) -> Option<f64> {
    (samples.len() >= 5).then(|| {
        samples.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (samples.len() - 1) as f64
    })
}

/// The grade's rules, in one place so the arithmetic in the result matches the code.
pub fn grade(components: Vec<GradeComponent>) -> Grade {
    let total: f64 = components.iter().map(|c| c.penalty).sum();
    let score = round((100.0 - total).max(0.0), 1);
    let letter = match score {
        s if s >= 90.0 => "A",
        s if s >= 80.0 => "B",
        s if s >= 70.0 => "C",
        s if s >= 60.0 => "D",
        _ => "F",
    };
    let mut arithmetic = "100".to_string();
    for c in &components {
        arithmetic.push_str(&format!(" - {} ({})", round(c.penalty, 1), c.metric));
    }
    arithmetic.push_str(&format!(" = {score} -> {letter}"));
    Grade {
        score,
        letter: letter.into(),
        arithmetic,
        components,
    }
}

fn component(
    metric: &str,
    value: Option<f64>,
    unit: &str,
    rule: &str,
    penalty: f64,
) -> GradeComponent {
    GradeComponent {
        metric: metric.into(),
        value: value.map(|v| round(v, 3)),
        unit: unit.into(),
        rule: rule.into(),
        penalty: round(penalty.max(0.0), 1),
    }
}

#[tool_router(router = quality_router, vis = "pub(crate)")]
impl PcapServer {
    /// Network quality in one view: loss (TCP retransmission, RTP loss), latency
    /// (handshake, DNS, ICMP), jitter (RTP, else RTT variation), error rates (connections,
    /// DNS, TLS, ICMP, expert) and a 0-100 grade that shows its arithmetic.
    #[tool(
        name = "analyze_network_quality_metrics",
        annotations(
            title = "Network quality metrics",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_network_quality_metrics(
        &self,
        Parameters(p): Parameters<QualityParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Quality>>, String> {
        self.engine
            .analyze("analyze_network_quality_metrics", p, rc, quality)
            .await
    }
}

pub(crate) async fn quality(mut a: Analysis, _p: QualityParams) -> Result<Report<Quality>, String> {
    let m = a.part::<TcpModel>().await?;
    let tls = a.part::<TlsModel>().await?;
    let rtp = rtp_streams(&mut a, &m).await?;
    // query frames, and whether each is a retransmission
    let mut queries: Vec<(u64, bool)> = Vec::new();
    let mut answered: BTreeMap<u64, Option<u64>> = BTreeMap::new();
    let mut dns_times = Vec::new();
    let mut icmp_rtts = Vec::new();
    let mut icmp_errors = 0u64;
    let mut closed = ClosedPorts::new();
    let mut unreachable = Unreachables::new();
    let mut time_exceeded = 0u64;
    let mut icmp_error_frames = Vec::new();
    let mut expert_errors = 0u64;
    let mut expert_frames = Vec::new();
    let mut retries = crate::analysis::dns::Retries::default();
    let kept = a.part::<crate::index::Rows<QRow>>().await?;
    for r in kept.0.iter().cloned() {
        if r.expert_error {
            expert_errors += 1;
            if expert_frames.len() < 10 {
                expert_frames.push(r.frame);
            }
        }
        if is_unreachable(&r) {
            icmp_errors += 1;
            if icmp_error_frames.len() < 10 {
                icmp_error_frames.push(r.frame);
            }
        }
        if let Some((kind, by, dst)) = r.unreachable.as_deref() {
            unreachable
                .entry((*kind, dst.clone()))
                .or_default()
                .add(r.frame, by, 3);
        }
        if let Some((sender, dst, port)) = r.closed_port.as_deref() {
            closed
                .entry((dst.clone(), *port))
                .or_default()
                .add(r.frame, sender, 5);
        }
        time_exceeded += u64::from(is_time_exceeded(&r));
        if let Some(t) = r.icmp_rtt_ms {
            icmp_rtts.push(t / 1000.0);
        }
        if r.multicast_dns {
            continue;
        }
        match r.dns_response {
            Some(false) => {
                let retry = r
                    .dns_question
                    .is_some_and(|k| retries.query(r.frame, k).is_some());
                queries.push((r.frame, r.dns_retransmission || retry));
            }
            Some(true) => {
                if let Some(q) = r.response_to {
                    // an answer to a retry answers the question its first query asked
                    if let Some(first) = retries.answer(q) {
                        answered.entry(first).or_insert(r.rcode.map(u64::from));
                    }
                    answered.entry(q).or_insert(r.rcode.map(u64::from));
                    if let Some(t) = r.dns_time {
                        dns_times.push(t);
                    }
                }
            }
            None => {}
        }
    }

    // loss
    let (retrans, data_segments, _) = m.loss_rate();
    let lost = m.total(|s| s.lost_segment[0] + s.lost_segment[1]);
    let retrans_pct = pct(retrans, data_segments);
    let est = m.estimated_loss();
    let rtp_loss = rtp
        .iter()
        .map(|r| r.lost_pct.max(0.0))
        .fold(None, |acc: Option<f64>, v| {
            Some(acc.map_or(v, |a| a.max(v)))
        });
    let loss = Loss {
        tcp_retransmission_rate_pct: retrans_pct,
        tcp_retransmissions: retrans,
        tcp_data_segments: data_segments,
        tcp_lost_segments: lost,
        tcp_estimated_loss_pct: est.pct,
        tcp_lost_before_capture_point: est.before_capture,
        tcp_lost_after_capture_point: est.after_capture,
        rtp_worst_loss_pct: rtp_loss,
    };

    // latency
    let handshakes: Vec<f64> = m.streams.iter().filter_map(|s| s.handshake_rtt()).collect();
    let latency = Latency {
        tcp_handshake_rtt: Distribution::of(handshakes),
        dns_response_time: Distribution::of(dns_times),
        icmp_echo_rtt: Distribution::of(icmp_rtts),
    };

    // jitter
    let jitter = if !rtp.is_empty() {
        let mean: Vec<f64> = rtp.iter().map(|r| r.mean_jitter_ms).collect();
        Jitter {
            source: "rtp".into(),
            jitter_ms: mean
                .iter()
                .copied()
                .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v)))),
            max_jitter_ms: rtp
                .iter()
                .map(|r| r.max_jitter_ms)
                .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v)))),
            samples: rtp.iter().map(|r| r.packets).sum(),
        }
    } else {
        let mut per: Vec<f64> = m
            .streams
            .iter()
            .flat_map(|s| (0..2).filter_map(|d| variation(&s.rtt.of_sender(d))))
            .collect();
        per.sort_by(f64::total_cmp);
        Jitter {
            source: "tcp_rtt_variation".into(),
            jitter_ms: percentile(&per, 50.0).map(ms),
            max_jitter_ms: per.last().map(|v| ms(*v)),
            samples: per.len() as u64,
        }
    };

    // error rates
    let attempts: Vec<_> = m.streams.iter().filter(|s| s.syn[0]).collect();
    let failed_conns = attempts
        .iter()
        .filter(|s| matches!(s.conn_state(), "REJ" | "S0" | "RSTOS0" | "SH"))
        .count() as u64;
    // the failed queries' frames, counted here and listed as the finding's evidence
    let failed_queries: Vec<u64> = queries
        .iter()
        .filter(|(q, retrans)| {
            let rcode = answered.get(q);
            crate::definitions::dns_query_failed(
                *retrans,
                rcode.is_some(),
                rcode.copied().flatten(),
            )
        })
        .map(|(q, _)| *q)
        .collect();
    let dns_failed = failed_queries.len() as u64;
    let dns_queries = queries
        .iter()
        .filter(|(_, retrans)| crate::definitions::dns_query_counts(*retrans))
        .count() as u64;
    let nxdomain = answered.values().filter(|c| **c == Some(3)).count() as u64;
    let tls_failed = tls
        .sessions
        .iter()
        .filter(|s| matches!(s.outcome(), "alert" | "reset"))
        .count() as u64;
    // the TCP model's pass reads every packet in scope, TCP or not
    let packets = m.span.packets;
    let per_k = |n: u64| {
        if packets == 0 {
            0.0
        } else {
            round(1000.0 * n as f64 / packets as f64, 2)
        }
    };
    let errors = ErrorRates {
        tcp_connection_attempts: attempts.len() as u64,
        tcp_connection_failure_pct: pct(failed_conns, attempts.len() as u64),
        dns_queries,
        dns_failure_pct: pct(dns_failed, dns_queries),
        dns_nxdomain: nxdomain,
        tls_sessions: tls.sessions.len() as u64,
        tls_failure_pct: pct(tls_failed, tls.sessions.len() as u64),
        icmp_errors,
        icmp_time_exceeded: time_exceeded,
        icmp_errors_per_1000_packets: per_k(icmp_errors),
        expert_errors,
        expert_errors_per_1000_packets: per_k(expert_errors),
    };

    // the grade
    let worst_loss = retrans_pct.max(est.pct).max(rtp_loss.unwrap_or(0.0));
    let lat_p95 = latency
        .tcp_handshake_rtt
        .p95_ms
        .or(latency.icmp_echo_rtt.p95_ms)
        .or(latency.dns_response_time.p95_ms);
    let lat_name = if latency.tcp_handshake_rtt.p95_ms.is_some() {
        "latency (TCP handshake p95)"
    } else if latency.icmp_echo_rtt.p95_ms.is_some() {
        "latency (ICMP echo p95)"
    } else if latency.dns_response_time.p95_ms.is_some() {
        "latency (DNS p95)"
    } else {
        "latency (not measurable)"
    };
    let (jit_rule, jit_pen) = if jitter.source == "rtp" {
        (
            "(jitter - 10 ms) / 2, max 15 (voice degrades past ~30 ms)",
            jitter
                .jitter_ms
                .map_or(0.0, |j| ((j - 10.0) / 2.0).clamp(0.0, 15.0)),
        )
    } else {
        (
            "(variation - 20 ms) / 10, max 10",
            jitter
                .jitter_ms
                .map_or(0.0, |j| ((j - 20.0) / 10.0).clamp(0.0, 10.0)),
        )
    };
    let components = vec![
        component(
            "loss",
            Some(worst_loss),
            "%",
            "10 points per 1% of segments retransmitted or estimated lost (or RTP lost), max 30",
            (worst_loss * 10.0).min(30.0),
        ),
        component(
            lat_name,
            lat_p95,
            "ms",
            "(p95 - 50 ms) / 10, max 25",
            lat_p95.map_or(0.0, |l| ((l - 50.0) / 10.0).clamp(0.0, 25.0)),
        ),
        component(
            &format!("jitter ({})", jitter.source),
            jitter.jitter_ms,
            "ms",
            jit_rule,
            jit_pen,
        ),
        component(
            "connection failures",
            Some(errors.tcp_connection_failure_pct),
            "%",
            "failure % / 4, max 10",
            (errors.tcp_connection_failure_pct / 4.0).min(10.0),
        ),
        component(
            "DNS failures",
            Some(errors.dns_failure_pct),
            "%",
            "failure % / 4, max 10",
            (errors.dns_failure_pct / 4.0).min(10.0),
        ),
        component(
            "TLS failures",
            Some(errors.tls_failure_pct),
            "%",
            "failure % / 4, max 10",
            (errors.tls_failure_pct / 4.0).min(10.0),
        ),
        component(
            "ICMP errors",
            Some(errors.icmp_errors_per_1000_packets),
            "per 1000 packets",
            "1 point per error per 1000 packets, max 5",
            errors.icmp_errors_per_1000_packets.min(5.0),
        ),
        component(
            "expert errors",
            Some(errors.expert_errors_per_1000_packets),
            "per 1000 packets",
            "1 point per error per 1000 packets, max 5",
            errors.expert_errors_per_1000_packets.min(5.0),
        ),
    ];
    let mut grade = grade(components);
    let measured = data_segments > 0
        || lat_p95.is_some()
        || !rtp.is_empty()
        || !queries.is_empty()
        || !tls.sessions.is_empty()
        || !attempts.is_empty();
    if !measured {
        grade.letter = "n/a".into();
        grade.arithmetic =
            "nothing to grade: no TCP data, RTP, DNS, TLS or ICMP echo in scope".into();
    }

    let mut findings = Vec::new();
    let mut worst: Vec<&GradeComponent> = grade
        .components
        .iter()
        .filter(|c| c.penalty >= 5.0)
        .collect();
    worst.sort_by(|a, b| b.penalty.total_cmp(&a.penalty));
    for c in worst {
        let (evidence, why) = match c.metric.as_str() {
            "loss" => (
                Evidence {
                    // the worse of the two losses is the one graded
                    display_filter: if rtp_loss.unwrap_or(0.0) > retrans_pct {
                        "rtp".into()
                    } else {
                        "tcp.analysis.retransmission || tcp.analysis.lost_segment".into()
                    },
                    ..Default::default()
                },
                "Retransmissions cost a round trip or a timeout each; above 1-2% throughput collapses.",
            ),
            m if m.starts_with("latency") => (
                Evidence {
                    display_filter: if m.contains("ICMP") {
                        "icmp.resptime || icmpv6.resptime".into()
                    } else if m.contains("DNS") {
                        "dns.time".into()
                    } else {
                        "tcp.flags.syn == 1 && tcp.flags.ack == 1".into()
                    },
                    ..Default::default()
                },
                "Every request pays this round trip, several times for a new TLS connection.",
            ),
            m if m.starts_with("jitter") => (
                Evidence {
                    display_filter: if jitter.source == "rtp" {
                        "rtp".into()
                    } else {
                        "tcp.analysis.ack_rtt".into()
                    },
                    ..Default::default()
                },
                "Variable delay: voice and video need jitter buffers, TCP's timers grow.",
            ),
            "connection failures" => (
                Evidence {
                    frames: attempts
                        .iter()
                        .filter(|s| matches!(s.conn_state(), "REJ" | "S0"))
                        .filter_map(|s| s.syn_frame())
                        .take(10)
                        .collect(),
                    display_filter: "tcp.flags.syn == 1 && tcp.flags.ack == 0".into(),
                    ..Default::default()
                },
                "Connections refused or unanswered: a service down, a firewall, or a scan.",
            ),
            "DNS failures" => {
                let failed: Vec<u64> = failed_queries.iter().take(10).copied().collect();
                let listed = failed
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                (
                    Evidence {
                        frames: failed,
                        // every failure, and the queries listed (also those answered SERVFAIL/REFUSED)
                        display_filter: format!(
                            "dns.flags.rcode == 2 || dns.flags.rcode == 5 || (dns.flags.response == 0 && !dns.response_in) || frame.number in {{{listed}}}"
                        ),
                        ..Default::default()
                    },
                    "Names that do not resolve stall every application behind them.",
                )
            }
            "TLS failures" => (
                Evidence {
                    display_filter: "tls.alert_message || (tls && tcp.flags.reset == 1)".into(),
                    ..Default::default()
                },
                "Handshakes that end in an alert or a reset never carry application data.",
            ),
            "ICMP errors" => (
                Evidence {
                    frames: icmp_error_frames.clone(),
                    display_filter: "icmp.type in {3,12} || icmpv6.type in {1,2,4}".into(),
                    ..Default::default()
                },
                "Unreachable destinations: routing problems, filtered or closed ports.",
            ),
            _ => (
                Evidence {
                    frames: expert_frames.clone(),
                    display_filter: "_ws.expert.severity == error".into(),
                    ..Default::default()
                },
                "Wireshark flags these frames as errors (malformed, checksum, reassembly).",
            ),
        };
        findings.push(Finding::new(
            if c.penalty >= 15.0 {
                Severity::High
            } else if c.penalty >= 8.0 {
                Severity::Medium
            } else {
                Severity::Low
            },
            format!(
                "{}: {} {} costs {} points",
                c.metric,
                c.value.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                c.unit,
                c.penalty
            ),
            format!("{why} Rule: {}.", c.rule),
            evidence,
        ));
    }
    if !closed.is_empty() {
        findings.push(closed_ports_finding(&closed));
    }
    if !unreachable.is_empty() {
        findings.push(unreachables_finding(&unreachable));
    }
    let summary = format!(
        "Network quality of {}: {}. Loss {}% of TCP data segments{}; latency {}; jitter {}; connection failures {}%, DNS failures {}% of {} queries, TLS failures {}% of {} sessions. {}",
        a.file.display_name,
        if grade.letter == "n/a" {
            "no grade, nothing measurable".to_string()
        } else {
            format!("grade {} ({} / 100)", grade.letter, grade.score)
        },
        retrans_pct,
        rtp_loss
            .map(|l| format!(", worst RTP loss {l}%"))
            .unwrap_or_default(),
        match lat_p95 {
            Some(l) => format!(
                "{} {l} ms",
                lat_name
                    .trim_start_matches("latency (")
                    .trim_end_matches(')')
            ),
            None => "not measurable".into(),
        },
        jitter
            .jitter_ms
            .map(|j| format!("{j} ms ({})", jitter.source))
            .unwrap_or_else(|| "not measurable".into()),
        errors.tcp_connection_failure_pct,
        errors.dns_failure_pct,
        errors.dns_queries,
        errors.tls_failure_pct,
        errors.tls_sessions,
        {
            // the biggest deductions; the whole computation is in grade.arithmetic
            let mut d: Vec<&GradeComponent> = grade
                .components
                .iter()
                .filter(|c| c.penalty > 0.0)
                .collect();
            d.sort_by(|a, b| b.penalty.total_cmp(&a.penalty));
            if grade.letter == "n/a" {
                String::new()
            } else if d.is_empty() {
                "No deductions.".to_string()
            } else {
                format!(
                    "Deductions: {} (grade.arithmetic has the whole computation).",
                    d.iter()
                        .take(3)
                        .map(|c| format!("{} -{}", c.metric, c.penalty))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
    );
    let span = m.span;
    let data = Quality {
        grade,
        loss,
        latency,
        jitter,
        errors,
    };
    a.report(summary, findings, data, span, None).await
}

/// The quality numbers a comparison of two captures reads, as this tool reports them.
pub async fn compare_metrics(a: Analysis) -> Result<Vec<Metric>, String> {
    let p: QualityParams = crate::tools::defaults()?;
    let Some(q) = quality(a, p).await?.data else {
        return Ok(Vec::new());
    };
    use Better::{Higher, Lower};
    let mut out = vec![
        Metric::new("quality", "grade_score", q.grade.score, "score", Higher),
        Metric::new(
            "loss",
            "tcp_retransmission_rate",
            q.loss.tcp_retransmission_rate_pct,
            "pct",
            Lower,
        ),
        Metric::new(
            "loss",
            "tcp_estimated_loss",
            q.loss.tcp_estimated_loss_pct,
            "pct",
            Lower,
        ),
        Metric::new(
            "loss",
            "tcp_lost_segments",
            q.loss.tcp_lost_segments as f64,
            "count",
            Lower,
        ),
        Metric::new(
            "errors",
            "tcp_connection_failure",
            q.errors.tcp_connection_failure_pct,
            "pct",
            Lower,
        ),
        Metric::new(
            "errors",
            "dns_failure",
            q.errors.dns_failure_pct,
            "pct",
            Lower,
        ),
        Metric::new(
            "errors",
            "dns_nxdomain",
            q.errors.dns_nxdomain as f64,
            "count",
            Lower,
        ),
        Metric::new(
            "errors",
            "tls_failure",
            q.errors.tls_failure_pct,
            "pct",
            Lower,
        ),
        Metric::new(
            "errors",
            "icmp_errors",
            q.errors.icmp_errors as f64,
            "count",
            Lower,
        ),
        Metric::new(
            "errors",
            "expert_errors",
            q.errors.expert_errors as f64,
            "count",
            Lower,
        ),
    ];
    if let Some(w) = q.loss.rtp_worst_loss_pct {
        out.push(Metric::new(
            "loss",
            "rtp_worst_stream_loss",
            w,
            "pct",
            Lower,
        ));
    }
    for (name, d) in [
        ("tcp_handshake_rtt", &q.latency.tcp_handshake_rtt),
        ("dns_response_time", &q.latency.dns_response_time),
        ("icmp_echo_rtt", &q.latency.icmp_echo_rtt),
    ] {
        if let Some(v) = d.median_ms {
            out.push(Metric::new(
                "latency",
                format!("{name}_median"),
                v,
                "ms",
                Lower,
            ));
        }
        if let Some(v) = d.p95_ms {
            out.push(Metric::new(
                "latency",
                format!("{name}_p95"),
                v,
                "ms",
                Lower,
            ));
        }
    }
    if let Some(j) = q.jitter.jitter_ms {
        out.push(Metric::new(
            "latency",
            format!("jitter_{}", q.jitter.source),
            j,
            "ms",
            Lower,
        ));
    }
    Ok(out)
}

/// ICMP errors for get_events_around: unreachable destinations, closed ports and
/// time exceeded, with who reported them, from this tool's own index rows.
pub async fn events(
    mut a: Analysis,
    q: crate::analysis::events::EventQuery,
) -> Result<Vec<crate::analysis::events::Event>, String> {
    let kept = a.part::<crate::index::Rows<QRow>>().await?;
    let mut out = Vec::new();
    for r in &kept.0 {
        let weight = if r.closed_port.is_some() || r.unreachable.is_some() {
            2
        } else if is_time_exceeded(r) {
            1
        } else {
            continue;
        };
        out.extend(q.event((r.time, r.frame), "icmp", weight, || {
            let what = if let Some((from, to, port)) = r.closed_port.as_deref() {
                format!("ICMP port unreachable: {from} -> {to} udp/{port} closed")
            } else if let Some((kind, reporter, dest)) = r.unreachable.as_deref() {
                format!("ICMP {kind}: {dest}, reported by {reporter}")
            } else {
                "ICMP time exceeded (TTL expired in transit)".to_string()
            };
            (what.into(), None, format!("frame.number == {}", r.frame))
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grade_adds_up() {
        let g = grade(vec![
            component("loss", Some(1.5), "%", "r", 15.0),
            component("latency", Some(80.0), "ms", "r", 3.0),
        ]);
        assert_eq!(g.score, 82.0);
        assert_eq!(g.letter, "B");
        assert_eq!(g.arithmetic, "100 - 15 (loss) - 3 (latency) = 82 -> B");
        assert_eq!(grade(vec![component("x", None, "", "", 250.0)]).score, 0.0);
    }

    #[test]
    fn rtt_variation_needs_samples() {
        assert_eq!(variation(&[0.01, 0.02, 0.01]), None);
        let v = variation(&[0.010, 0.012, 0.010, 0.012, 0.010]).unwrap();
        assert!((v - 0.002).abs() < 1e-9);
    }
}
