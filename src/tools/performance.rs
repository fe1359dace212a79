//! `analyze_network_performance` (per-connection throughput, RTT, loss; goodput; RTP
//! stream quality) and `analyze_network_latency` (handshake and ACK RTT, DNS, HTTP,
//! TLS handshake and ICMP echo times with percentiles).

use std::collections::{BTreeMap, HashMap};

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::Serialize;

use crate::analysis::rtp::{RtpStream, rtp_streams};
use crate::analysis::slowness::{Attribution, Transaction, attribute, transactions};
use crate::analysis::stats::{Distribution, stream_rtt};
use crate::engine::Analysis;
use crate::model::http::{HttpRow, distinct_messages};
use crate::model::tcp::{Stream, TcpModel};
use crate::model::timing::TimingRow;
use crate::model::tls::Session;
use crate::report::{
    Evidence, Finding, Report, Severity, Table, human_bits_per_s, ms, round, thousands,
};
use crate::server::PcapServer;
use crate::tools::TcpParams;
use crate::tools::{clamp_limit, clamp_offset};

// ---------------------------------------------------------------- performance

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConnPerf {
    pub stream: u64,
    pub client: String,
    pub server: String,
    pub duration_s: f64,
    pub client_to_server_bps: f64,
    pub server_to_client_bps: f64,
    /// Payload bytes minus retransmitted payload, per second, both ways.
    pub goodput_bps: f64,
    pub bytes: u64,
    pub rtt_ms: Option<f64>,
    pub retransmission_rate_pct: f64,
    /// Retransmissions that count as loss (data, not spurious, not a teardown's).
    pub loss_retransmissions: u64,
    /// Segments lost before the capture point (holes) and after it (resends of bytes
    /// it saw) over the data segments sent, percent: loss wherever the capture sits.
    pub estimated_loss_pct: f64,
    pub zero_windows: u64,
    /// Longest time a sender was stopped by a zero window, seconds.
    pub zero_window_stall_s: f64,
    pub out_of_order: u64,
    pub duplicate_acks: u64,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Performance {
    pub tcp_connections: u64,
    /// Useful payload delivered per second over the capture, all TCP connections.
    pub overall_goodput_bps: f64,
    pub retransmitted_bytes: u64,
    pub connections: Table<ConnPerf>,
    /// RTP streams (tshark's `-z rtp,streams`), worst first; empty without RTP.
    pub rtp_streams: Table<RtpStream>,
}

/// Rounds down to thousandths, for a `>=` threshold that must include its own sample.
fn floor3(x: f64) -> f64 {
    (x * 1000.0).floor() / 1000.0
}

/// A connection's row without its text: what judging and ordering it needs.
fn conn_numbers(s: &Stream) -> ConnPerf {
    let d = s.duration();
    let rate = |b: u64| {
        if d > 0.0 {
            round(b as f64 * 8.0 / d, 1)
        } else {
            0.0
        }
    };
    let good =
        (s.payload[0] + s.payload[1]).saturating_sub(s.retrans_bytes[0] + s.retrans_bytes[1]);
    ConnPerf {
        stream: s.id,
        client: String::new(),
        server: String::new(),
        duration_s: round(d, 6),
        client_to_server_bps: rate(s.bytes[0]),
        server_to_client_bps: rate(s.bytes[1]),
        goodput_bps: rate(good),
        bytes: s.bytes[0] + s.bytes[1],
        rtt_ms: stream_rtt(s).map(ms),
        retransmission_rate_pct: {
            let data = s.data_segment_count();
            if data == 0 {
                0.0
            } else {
                round(100.0 * s.loss_retransmissions() as f64 / data as f64, 2)
            }
        },
        loss_retransmissions: s.loss_retransmissions(),
        estimated_loss_pct: s.estimated_loss_pct(),
        zero_windows: s.zero_window[0] + s.zero_window[1],
        zero_window_stall_s: round(s.zw_stall_max[0].max(s.zw_stall_max[1]), 6),
        out_of_order: s.out_of_order[0] + s.out_of_order[1],
        duplicate_acks: s.dup_ack[0] + s.dup_ack[1],
        display_filter: String::new(),
    }
}

/// The row's endpoints and filter, for a row shown.
fn conn_row(s: &Stream) -> ConnPerf {
    ConnPerf {
        client: s.endpoint(0),
        server: s.endpoint(1),
        display_filter: s.filter(None),
        ..conn_numbers(s)
    }
}

/// How bad a connection is: problems weighted by how much traffic they hurt.
fn badness(c: &ConnPerf) -> f64 {
    (c.retransmission_rate_pct.max(c.estimated_loss_pct)
        + c.zero_windows as f64 * 5.0
        + c.out_of_order as f64)
        * (1.0 + (c.bytes as f64).log10())
}

async fn performance(mut a: Analysis, p: TcpParams) -> Result<Report<Performance>, String> {
    let m: std::sync::Arc<TcpModel> = a.part::<TcpModel>().await?;
    let mut rtp = rtp_streams(&mut a, &m).await?;
    let span = m.span.duration();
    // every connection judged and ordered by its numbers; its text (endpoints, filter)
    // is written only for the rows shown and the findings
    let mut judged: Vec<(f64, u64, &Stream)> = m
        .streams
        .iter()
        .map(|s| {
            let c = conn_numbers(s);
            (badness(&c), c.bytes, s)
        })
        .collect();
    // worst first
    judged.sort_by(|x, y| y.0.total_cmp(&x.0).then(y.1.cmp(&x.1)));
    let payload = m.total(|s| s.payload[0] + s.payload[1]);
    let retrans_bytes = m.total(|s| s.retrans_bytes[0] + s.retrans_bytes[1]);
    let goodput = if span > 0.0 {
        round(
            (payload - retrans_bytes.min(payload)) as f64 * 8.0 / span,
            1,
        )
    } else {
        0.0
    };
    let mut findings = Vec::new();
    for s in judged
        .iter()
        .map(|j| j.2)
        // a rate over a handful of segments needs a few losses before it means a bad path
        .filter(|s| {
            let c = conn_numbers(s);
            (c.retransmission_rate_pct >= 1.0 && c.loss_retransmissions >= 3)
                || c.estimated_loss_pct >= 1.0
                || c.zero_window_stall_s >= 0.2
        })
        .take(5)
    {
        let c = conn_row(s);
        findings.push(Finding::new(
            if c.retransmission_rate_pct.max(c.estimated_loss_pct) >= 5.0 || c.zero_window_stall_s >= 1.0 { Severity::Medium } else { Severity::Low },
            format!("Stream {} ({} -> {}) is impaired", c.stream, c.client, c.server),
            format!(
                "{}% of its data segments retransmitted ({}% estimated loss, wherever it happened relative to the capture point), {} zero window(s), {} out-of-order; goodput {} over {:.1} s at {} ms RTT.",
                c.retransmission_rate_pct,
                c.estimated_loss_pct,
                c.zero_windows,
                c.out_of_order,
                human_bits_per_s(c.goodput_bps),
                c.duration_s,
                c.rtt_ms.unwrap_or(0.0)
            ),
            Evidence {
                streams: vec![c.stream],
                endpoints: vec![c.client.clone(), c.server.clone()],
                display_filter: format!("{} && (tcp.analysis.flags && !tcp.analysis.window_update)", c.display_filter),
                ..Default::default()
            },
        ));
    }
    rtp.sort_by(|a, b| {
        b.lost_pct
            .total_cmp(&a.lost_pct)
            .then(b.max_jitter_ms.total_cmp(&a.max_jitter_ms))
    });
    for r in rtp
        .iter()
        .filter(|r| r.lost_pct >= 1.0 || r.max_jitter_ms >= 30.0)
        .take(5)
    {
        findings.push(Finding::new(
            if r.lost_pct >= 5.0 || r.max_jitter_ms >= 50.0 { Severity::High } else { Severity::Medium },
            format!("RTP stream {} {} -> {}: {}% lost, jitter up to {:.1} ms", r.ssrc, r.source, r.destination, r.lost_pct, r.max_jitter_ms),
            "Voice/video quality suffers noticeably above ~1% loss or ~30 ms jitter (clipping, robotic audio, frozen video).".to_string(),
            Evidence { endpoints: vec![r.source.clone(), r.destination.clone()], display_filter: r.display_filter.clone(), ..Default::default() },
        ));
    }
    let busiest = judged.iter().max_by_key(|j| j.1).map(|j| conn_row(j.2));
    let summary = format!(
        "{} TCP connection(s) over {:.1} s: overall goodput {} ({} of {} payload bytes were retransmissions).{}{}",
        thousands(m.streams.len() as u64),
        span,
        human_bits_per_s(goodput),
        thousands(retrans_bytes),
        thousands(payload),
        busiest
            .map(|b| format!(
                " Largest: stream {} {} -> {} with {} bytes, {} server-to-client.",
                b.stream,
                b.client,
                b.server,
                thousands(b.bytes),
                human_bits_per_s(b.server_to_client_bps)
            ))
            .unwrap_or_default(),
        if rtp.is_empty() {
            String::new()
        } else {
            format!(
                " {} RTP stream(s); worst loss {}%.",
                rtp.len(),
                rtp[0].lost_pct
            )
        }
    );
    let data = Performance {
        tcp_connections: m.streams.len() as u64,
        overall_goodput_bps: goodput,
        retransmitted_bytes: retrans_bytes,
        connections: Table::page_map(
            judged,
            clamp_offset(p.offset),
            clamp_limit(p.limit, 20),
            |j| conn_row(j.2),
        ),
        rtp_streams: Table::top(rtp, 20),
    };
    a.report(summary, findings, data, m.span, None).await
}

// ---------------------------------------------------------------- latency

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConnLatency {
    pub stream: u64,
    pub client: String,
    pub server: String,
    pub handshake_rtt_ms: Option<f64>,
    pub ack_rtt: Distribution,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Outlier {
    /// tcp-handshake, dns, http, tls-handshake or icmp-echo.
    pub kind: String,
    pub frame: u64,
    pub ms: f64,
    pub what: String,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Latency {
    pub tcp_handshake: Distribution,
    pub tcp_ack_rtt: Distribution,
    pub dns: Distribution,
    pub http: Distribution,
    /// ClientHello to ServerHello.
    pub tls_handshake: Distribution,
    pub icmp_echo: Distribution,
    pub connections: Table<ConnLatency>,
    /// The slowest measurements far above their kind's median.
    pub outliers: Vec<Outlier>,
}

async fn latency(mut a: Analysis, p: TcpParams) -> Result<Report<Latency>, String> {
    let m = a.part::<TcpModel>().await?;
    let mut dns = Vec::new();
    let mut http = Vec::new();
    let mut icmp = Vec::new();
    let mut samples: Vec<(&'static str, u64, f64, String)> = Vec::new();
    let mut hello: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
    let mut tls = Vec::new();
    let kept = a.part::<crate::index::Rows<TimingRow>>().await?;
    for r in kept.0.iter() {
        if let Some(t) = r.dns_time {
            dns.push(t);
            samples.push((
                "dns",
                r.frame(),
                t,
                r.dns_name.as_deref().unwrap_or_default().to_string(),
            ));
        }
        if let Some(t) = r.http_time {
            http.push(t);
            samples.push((
                "http",
                r.frame(),
                t,
                r.uri.as_deref().unwrap_or_default().to_string(),
            ));
        }
        if let Some(t) = r.icmp_time {
            icmp.push(t);
            samples.push(("icmp-echo", r.frame(), t, String::new()));
        }
        if let Some(s) = r.stream() {
            if r.client_hello {
                hello.entry(s).or_insert((r.time, r.frame()));
            }
            if r.server_hello
                && let Some((t0, _)) = hello.remove(&s)
            {
                tls.push(r.time - t0);
                samples.push((
                    "tls-handshake",
                    r.frame(),
                    r.time - t0,
                    format!("tcp.stream {s}"),
                ));
            }
        }
    }
    let irtts: Vec<f64> = m.streams.iter().filter_map(|s| s.handshake_rtt()).collect();
    for s in &m.streams {
        if let Some(r) = s.handshake_rtt() {
            samples.push(("tcp-handshake", s.synack_frame().unwrap_or(0), r, s.label()));
        }
    }
    let dists: BTreeMap<&str, Distribution> = [
        ("tcp-handshake", Distribution::of(irtts.clone())),
        ("dns", Distribution::of(dns.clone())),
        ("http", Distribution::of(http.clone())),
        ("tls-handshake", Distribution::of(tls.clone())),
        ("icmp-echo", Distribution::of(icmp.clone())),
    ]
    .into_iter()
    .collect();
    // outliers: at least 3x the median of their kind and above its p95, at least 10 ms
    let mut outliers: Vec<Outlier> = samples
        .iter()
        .filter(|(k, _, t, _)| {
            let d = &dists[k];
            let (Some(med), Some(p95)) = (d.median_ms, d.p95_ms) else {
                return false;
            };
            d.count >= 5 && ms(*t) >= (3.0 * med).max(10.0) && ms(*t) >= p95
        })
        .map(|(k, f, t, what)| Outlier {
            kind: k.to_string(),
            frame: *f,
            ms: ms(*t),
            what: what.clone(),
            display_filter: format!("frame.number == {f}"),
        })
        .collect();
    outliers.sort_by(|x, y| y.ms.total_cmp(&x.ms));
    crate::report::keep_first(&mut outliers, 10);
    // every timed connection ordered by its worst RTT, a row written for the page only
    let conn_row = |s: &crate::model::tcp::Stream| ConnLatency {
        stream: s.id,
        client: s.endpoint(0),
        server: s.endpoint(1),
        handshake_rtt_ms: s.handshake_rtt().map(ms),
        ack_rtt: {
            let mut d = Distribution::of(s.rtt.all().to_vec());
            d.count = s.rtt_count();
            d.min_ms = (s.rtt_count() > 0).then(|| ms(s.rtt_min));
            d.max_ms = (s.rtt_count() > 0).then(|| ms(s.rtt_max));
            d.mean_ms = (s.rtt_count() > 0).then(|| ms(s.rtt_sum / s.rtt_count() as f64));
            d
        },
        display_filter: s.filter(Some("tcp.analysis.ack_rtt")),
    };
    let mut conns: Vec<(&crate::model::tcp::Stream, f64)> = m
        .streams
        .iter()
        .filter(|s| s.handshake_rtt().is_some() || s.rtt_count() > 0)
        .map(|s| {
            let p95 = Distribution::of(s.rtt.all().to_vec()).p95_ms;
            (s, p95.or(s.handshake_rtt().map(ms)).unwrap_or(0.0))
        })
        .collect();
    conns.sort_by(|x, y| y.1.total_cmp(&x.1));
    let mut findings = Vec::new();
    let names = [
        ("tcp-handshake", "TCP handshake"),
        ("dns", "DNS"),
        ("http", "HTTP"),
        ("tls-handshake", "TLS handshake"),
        ("icmp-echo", "ICMP echo"),
    ];
    for (k, label) in names {
        let d = &dists[k];
        if let (Some(med), Some(p95)) = (d.median_ms, d.p95_ms) {
            let slow = match k {
                "dns" => p95 >= 200.0,
                "http" => p95 >= 1000.0,
                _ => p95 >= 300.0,
            };
            if slow {
                findings.push(Finding::new(
                    Severity::Medium,
                    format!("Slow {label}: p95 {p95:.1} ms (median {med:.1} ms)"),
                    format!(
                        "{} measurements; the slow tail is what users feel.",
                        d.count
                    ),
                    Evidence {
                        frames: outliers
                            .iter()
                            .filter(|o| o.kind == k)
                            .map(|o| o.frame)
                            .take(10)
                            .collect(),
                        // thresholds rounded down, so the p95 sample itself is selected
                        display_filter: match k {
                            "dns" => format!("dns.time >= {:.3}", floor3(p95 / 1000.0)),
                            "http" => format!("http.time >= {:.3}", floor3(p95 / 1000.0)),
                            "icmp-echo" => format!("icmp.resptime >= {:.3}", floor3(p95)),
                            "tcp-handshake" => {
                                "tcp.flags.syn == 1 && tcp.flags.ack == 1".to_string()
                            }
                            _ => "tls.handshake.type == 2".to_string(),
                        },
                        ..Default::default()
                    },
                ));
            }
        }
    }
    if !outliers.is_empty() {
        let o = &outliers[0];
        findings.push(Finding::new(
            Severity::Low,
            format!(
                "{} latency outlier(s); worst {} at {:.1} ms",
                outliers.len(),
                o.kind,
                o.ms
            ),
            format!(
                "Frame {} {}; outliers are at least 3x their kind's median and above its p95.",
                o.frame, o.what
            ),
            Evidence {
                frames: outliers.iter().map(|o| o.frame).collect(),
                display_filter: crate::report::in_set(
                    "frame.number",
                    outliers.iter().map(|o| o.frame),
                ),
                ..Default::default()
            },
        ));
    }
    let part = |label: &str, d: &Distribution| {
        d.median_ms.map(|med| {
            format!(
                "{label} median {med:.1} ms / p95 {:.1} ms (n={})",
                d.p95_ms.unwrap_or(0.0),
                d.count
            )
        })
    };
    let acks = Distribution::of(m.rtt_samples.clone());
    let mut parts: Vec<String> = names
        .iter()
        .filter_map(|(k, label)| part(label, &dists[k]))
        .collect();
    parts.extend(part("TCP ACK RTT", &acks));
    let summary = if parts.is_empty() && acks.count == 0 {
        format!(
            "No latency measurements in {}: no TCP handshakes, ACK RTTs, DNS, HTTP, TLS or ICMP echo exchanges.",
            a.file.display_name
        )
    } else {
        format!("{}.", parts.join("; "))
    };
    let data = Latency {
        tcp_handshake: dists["tcp-handshake"].clone(),
        tcp_ack_rtt: acks,
        dns: dists["dns"].clone(),
        http: dists["http"].clone(),
        tls_handshake: dists["tls-handshake"].clone(),
        icmp_echo: dists["icmp-echo"].clone(),
        connections: Table::page_map(
            conns,
            clamp_offset(p.offset),
            clamp_limit(p.limit, 20),
            |(s, _)| conn_row(s),
        ),
        outliers,
    };
    a.report(summary, findings, data, m.span, None).await
}

#[tool_router(router = performance_router, vis = "pub(crate)")]
impl PcapServer {
    /// Per TCP connection throughput each way, goodput, RTT, retransmission rate, zero
    /// windows, out-of-order and duplicate ACKs, worst first; overall goodput; RTP stream
    /// loss and jitter where RTP is present.
    #[tool(
        name = "analyze_network_performance",
        annotations(
            title = "Network performance",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_network_performance(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Performance>>, String> {
        self.engine
            .analyze("analyze_network_performance", p, rc, performance)
            .await
    }

    /// Latency distributions (min, median, p95, max): TCP handshake RTT and ACK RTT per
    /// connection, DNS, HTTP and TLS-handshake response times, ICMP echo RTT; outliers with frames.
    #[tool(
        name = "analyze_network_latency",
        annotations(
            title = "Network latency",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_network_latency(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Latency>>, String> {
        self.engine
            .analyze("analyze_network_latency", p, rc, latency)
            .await
    }
    /// Why is it slow? Splits each slow TCP connection's and request's time into
    /// setup, server think time and transfer with what limited it (receiver window,
    /// loss recovery, application pauses): client, network or server, with frames.
    #[tool(
        name = "analyze_slowness",
        annotations(
            title = "Why is it slow",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_slowness(
        &self,
        Parameters(p): Parameters<SlowParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Slowness>>, String> {
        self.engine
            .analyze("analyze_slowness", p, rc, slowness)
            .await
    }
}

// ---------------------------------------------------------------- slowness

#[derive(Debug, Clone, serde::Deserialize, Serialize, JsonSchema)]
pub struct SlowParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Wireshark display filter scoping the analysis.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// A connection is slow from this many milliseconds, first packet to last data
    /// (default 200).
    #[serde(default)]
    pub threshold_ms: Option<f64>,
    /// Connections listed, slowest first (default 10, max 500).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Connections to skip, for paging.
    #[serde(default)]
    pub offset: Option<i64>,
}

crate::file_args!(SlowParams);

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SlowDns {
    pub frame: u64,
    pub name: Option<String>,
    pub response_time_ms: f64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Slowness {
    pub threshold_ms: f64,
    pub connections_checked: usize,
    pub slow_connections: usize,
    /// How many slow connections each side is to blame for.
    pub client: usize,
    pub network: usize,
    pub server: usize,
    /// The side to blame for most of the slow time, or "none" when nothing is slow.
    pub overall: String,
    pub connections: Table<Attribution>,
    /// Requests whose answer took the threshold or more (from the request's first byte;
    /// a connection's first request from its SYN), slowest first, each split like a
    /// connection and named (HTTP request line and status, TLS handshake).
    pub slow_transactions: usize,
    pub transactions: Table<Transaction>,
    /// DNS answers slower than the threshold (the resolver, or the path to it).
    pub slow_dns: Vec<SlowDns>,
}

pub(crate) async fn slowness(mut a: Analysis, p: SlowParams) -> Result<Report<Slowness>, String> {
    crate::tools::check_seconds("threshold_ms", p.threshold_ms.map(|t| t / 1000.0))?;
    let threshold = p
        .threshold_ms
        .map(|t| t / 1000.0)
        .unwrap_or(crate::analysis::slowness::DEFAULT_SLOW_S);
    let m = a.part::<TcpModel>().await?;
    let rows = a.part::<crate::index::Rows<TimingRow>>().await?;
    let tls = a.part::<crate::model::tls::TlsModel>().await?;
    let http = a.part::<crate::index::Rows<HttpRow>>().await?;
    let tls_of: HashMap<u64, &Session> = tls
        .sessions
        .iter()
        .filter(|t| !t.quic)
        .map(|t| (t.stream, t))
        .collect();
    let mut http_of: HashMap<u64, Vec<&HttpRow>> = HashMap::new();
    for r in distinct_messages(&http.0) {
        if let Some(st) = r.stream() {
            http_of.entry(st).or_default().push(r);
        }
    }
    let mut slow: Vec<Attribution> = Vec::new();
    let mut slow_tx: Vec<Transaction> = Vec::new();
    for st in &m.streams {
        let t = tls_of.get(&st.id).copied();
        if let Some(x) = attribute(st, t).filter(|x| x.elapsed_s >= threshold) {
            slow.push(x);
        }
        let h = http_of.get(&st.id).map_or(&[][..], Vec::as_slice);
        slow_tx.extend(
            transactions(st, t, h)
                .into_iter()
                .filter(|x| x.elapsed_s >= threshold),
        );
    }
    slow_tx.sort_by(|x, y| {
        y.elapsed_s
            .total_cmp(&x.elapsed_s)
            .then(x.stream.cmp(&y.stream))
            .then(x.number.cmp(&y.number))
    });
    let checked = m.streams.len();
    slow.sort_by(|x, y| {
        y.elapsed_s
            .total_cmp(&x.elapsed_s)
            .then(x.stream.cmp(&y.stream))
    });
    let count = |v: &str| slow.iter().filter(|x| x.verdict == v).count();
    let (client, network, server) = (count("client"), count("network"), count("server"));
    // blame by time, not by count: one 30 s stall outweighs three 0.3 s waits
    let time_of = |v: &str| -> f64 {
        slow.iter()
            .filter(|x| x.verdict == v)
            .map(|x| x.elapsed_s)
            .sum()
    };
    let overall = if slow.is_empty() {
        "none".to_string()
    } else {
        ["network", "server", "client"]
            .into_iter()
            .max_by(|x, y| time_of(x).total_cmp(&time_of(y)))
            .unwrap_or("network")
            .to_string()
    };
    let mut slow_dns: Vec<SlowDns> = rows
        .0
        .iter()
        .filter_map(|r| {
            let t = r.dns_time.filter(|t| *t >= threshold)?;
            Some(SlowDns {
                frame: r.frame(),
                name: crate::index::owned(&r.dns_name),
                response_time_ms: round(t * 1000.0, 3),
            })
        })
        .collect();
    slow_dns.sort_by(|x, y| y.response_time_ms.total_cmp(&x.response_time_ms));
    let slow_dns_total = slow_dns.len();
    crate::report::keep_first(&mut slow_dns, 10);

    let mut findings = Vec::new();
    for x in slow.iter().take(5) {
        // a big transfer over a sound path takes its round trips: only a second or
        // more lost to a cause (a wait, a stall, loss, retried SYNs) is a problem
        let lost_s = [
            x.server_time_s,
            x.receiver_stall_s,
            x.loss_recovery_s,
            x.app_pause_s,
            if x.syn_retransmissions > 0 {
                x.setup_s
            } else {
                0.0
            },
        ]
        .into_iter()
        .fold(0.0, f64::max);
        findings.push(Finding::new(
            if lost_s >= 1.0 {
                Severity::Medium
            } else {
                Severity::Low
            },
            format!(
                "Stream {} took {:.3} s: {} ({})",
                x.stream,
                x.elapsed_s,
                x.verdict,
                match x.verdict.as_str() {
                    "client" => x.client.clone(),
                    "server" => x.server.clone(),
                    _ => format!("{} <-> {}", x.client, x.server),
                }
            ),
            format!("{} -> {}: {}.", x.client, x.server, x.reason),
            Evidence {
                frames: x.frames.clone(),
                streams: vec![x.stream],
                endpoints: vec![x.client.clone(), x.server.clone()],
                display_filter: x.display_filter.clone(),
                ..Default::default()
            },
        ));
    }
    if let Some(d) = slow_dns.first() {
        findings.push(Finding::new(
            Severity::Low,
            format!(
                "{slow_dns_total} DNS answer(s) slower than {:.0} ms (worst {:.0} ms)",
                threshold * 1000.0,
                d.response_time_ms
            ),
            "The resolver (or the path to it) was slow to answer: every connection after a name lookup waits for it.",
            Evidence {
                frames: slow_dns.iter().map(|d| d.frame).collect(),
                display_filter: format!("dns.time >= {threshold:.3}"),
                ..Default::default()
            },
        ));
    }
    let summary = if slow.is_empty() {
        format!(
            "Nothing is slow: none of {checked} TCP connection(s) took {:.0} ms or more{}.",
            threshold * 1000.0,
            if slow_dns_total > 0 {
                format!(", but {slow_dns_total} DNS answer(s) did")
            } else {
                String::new()
            }
        )
    } else {
        format!(
            "{} of {checked} TCP connection(s) took {:.0} ms or more: {network} network, {server} server, {client} client; most of the slow time is the {overall}'s. Slowest: stream {} ({:.3} s), {}.",
            slow.len(),
            threshold * 1000.0,
            slow[0].stream,
            slow[0].elapsed_s,
            slow[0].reason
        )
    };
    let summary = match slow_tx.first() {
        Some(t) => format!(
            "{summary} Slowest request: {} on stream {} ({:.3} s, {}).",
            t.what, t.stream, t.elapsed_s, t.verdict
        ),
        None => summary,
    };
    let span = m.span;
    let data = Slowness {
        threshold_ms: round(threshold * 1000.0, 3),
        connections_checked: checked,
        slow_connections: slow.len(),
        client,
        network,
        server,
        overall,
        connections: Table::page(slow, clamp_offset(p.offset), clamp_limit(p.limit, 10)),
        slow_transactions: slow_tx.len(),
        transactions: Table::page(slow_tx, clamp_offset(p.offset), clamp_limit(p.limit, 10)),
        slow_dns,
    };
    a.report(summary, findings, data, span, None).await
}
