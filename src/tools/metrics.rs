//! `analyze_application_response_times`: per server response-time distributions for
//! HTTP, DNS, TLS handshakes and TCP connects, and the slowest transactions with frames.

use std::collections::BTreeMap;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::stats::Distribution;
use crate::engine::{Analysis, Span};
use crate::model::tcp::TcpModel;
use crate::model::timing::TimingRow;
use crate::report::{Evidence, Finding, Report, Severity, Table, endpoint, ms, rfc3339};
use crate::server::PcapServer;
use crate::tools::{clamp_limit, clamp_offset};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    Http,
    Dns,
    Tls,
    Tcp,
    #[default]
    All,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ResponseTimeParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// http, dns, tls (ClientHello to ServerHello), tcp (SYN to SYN-ACK) or all (default).
    #[serde(default)]
    pub protocol: AppProtocol,
    /// Wireshark display filter scoping the analysis.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Servers to list (default 20, max 500), slowest p95 first.
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ServerTimes {
    pub protocol: String,
    pub server: String,
    #[serde(flatten)]
    pub times: Distribution,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Transaction {
    pub protocol: String,
    pub server: String,
    pub ms: f64,
    /// The frame that completed the exchange (response, ServerHello, SYN-ACK).
    pub frame: u64,
    pub time: String,
    pub what: String,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ResponseTimes {
    pub protocol: AppProtocol,
    pub overall: Vec<ServerTimes>,
    pub servers: Table<ServerTimes>,
    pub slowest: Vec<Transaction>,
}

#[tool_router(router = metrics_router, vis = "pub(crate)")]
impl PcapServer {
    /// Application response times per server for http, dns, tls, tcp (connect) or all:
    /// count, min, median, p95, max, and the slowest transactions with their frames.
    #[tool(
        name = "analyze_application_response_times",
        annotations(
            title = "Application response times",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_application_response_times(
        &self,
        Parameters(p): Parameters<ResponseTimeParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<ResponseTimes>>, String> {
        self.engine
            .analyze("analyze_application_response_times", p, rc, response_times)
            .await
    }
}

/// Slowest exchanges listed, overall and per protocol.
const SLOWEST: usize = 10;

async fn response_times(
    mut a: Analysis,
    p: ResponseTimeParams,
) -> Result<Report<ResponseTimes>, String> {
    let want = |x: AppProtocol| p.protocol == AppProtocol::All || p.protocol == x;
    // (protocol, server) -> samples; and every sample for the slowest list
    let mut samples: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    // each protocol's slowest exchanges (the overall ten are among them), with their
    // place among all exchanges for ties: every exchange as a Transaction was ~15 MB of
    // strings on the 200 MB bench mix, and the cached answer kept the list's capacity
    let mut slowest: BTreeMap<String, Vec<(usize, Transaction)>> = BTreeMap::new();
    let mut seen = 0usize;
    let mut span = Span::default();
    let mut push = |proto: &str,
                    server: String,
                    secs: f64,
                    frame: u64,
                    time: f64,
                    what: String,
                    filter: String| {
        samples
            .entry((proto.to_string(), server.clone()))
            .or_default()
            .push(secs);
        seen += 1;
        let t = ms(secs);
        let top = slowest.entry(proto.to_string()).or_default();
        // after every exchange as slow (a stable order), and only into the ten
        let at = top.partition_point(|(_, x)| x.ms >= t);
        if at < SLOWEST {
            top.insert(
                at,
                (
                    seen,
                    Transaction {
                        protocol: proto.into(),
                        server,
                        ms: t,
                        frame,
                        time: rfc3339(time),
                        what,
                        display_filter: filter,
                    },
                ),
            );
            top.truncate(SLOWEST);
        }
    };
    if want(AppProtocol::Http) || want(AppProtocol::Dns) || want(AppProtocol::Tls) {
        let mut hello: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
        let kept = a.part::<crate::index::Rows<TimingRow>>().await?;
        for r in kept.0.iter().filter(|r| r.is_application()) {
            span.add(Some(r.time));
            if let (Some(t), true) = (r.dns_time, want(AppProtocol::Dns)) {
                push(
                    "dns",
                    r.src.to_string(),
                    t,
                    r.frame(),
                    r.time,
                    r.dns_name.as_deref().unwrap_or_default().to_string(),
                    format!("frame.number == {}", r.frame()),
                );
            }
            if let (Some(t), true) = (r.http_time, want(AppProtocol::Http)) {
                push(
                    "http",
                    endpoint(&r.src, r.sport.map(u64::from)),
                    t,
                    r.frame(),
                    r.time,
                    r.uri.as_deref().unwrap_or_default().to_string(),
                    format!("frame.number == {}", r.frame()),
                );
            }
            if let (Some(s), true) = (r.stream(), want(AppProtocol::Tls)) {
                if r.client_hello {
                    hello.entry(s).or_insert(r.time);
                }
                if r.server_hello
                    && let Some(t0) = hello.remove(&s)
                {
                    push(
                        "tls",
                        endpoint(&r.src, r.sport.map(u64::from)),
                        r.time - t0,
                        r.frame(),
                        r.time,
                        format!("tcp.stream {s}"),
                        format!("tcp.stream == {s} && tls.handshake"),
                    );
                }
            }
        }
    }
    if want(AppProtocol::Tcp) {
        let m = a.part::<TcpModel>().await?;
        span = m.span;
        for s in &m.streams {
            if let (Some(rtt), Some(f)) = (s.handshake_rtt(), s.synack_frame()) {
                push(
                    "tcp",
                    s.endpoint(1),
                    rtt,
                    f,
                    s.first,
                    s.label(),
                    format!("tcp.stream == {} && tcp.flags.syn == 1", s.id),
                );
            }
        }
    }
    let per_server: Vec<ServerTimes> = samples
        .iter()
        .map(|((proto, server), v)| ServerTimes {
            protocol: proto.clone(),
            server: server.clone(),
            times: Distribution::of(v.clone()),
        })
        .collect();
    let mut by_proto: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for ((proto, _), v) in &samples {
        by_proto.entry(proto.clone()).or_default().extend(v);
    }
    let overall: Vec<ServerTimes> = by_proto
        .into_iter()
        .map(|(proto, v)| ServerTimes {
            protocol: proto,
            server: "all".into(),
            times: Distribution::of(v),
        })
        .collect();
    let mut servers = per_server;
    servers.sort_by(|x, y| {
        y.times
            .p95_ms
            .unwrap_or(0.0)
            .total_cmp(&x.times.p95_ms.unwrap_or(0.0))
    });
    // each protocol's own slowest exchanges: the overall top ten may all be another's
    let slowest_of: BTreeMap<String, Vec<u64>> = slowest
        .iter()
        .map(|(proto, top)| (proto.clone(), top.iter().map(|(_, t)| t.frame).collect()))
        .collect();
    let mut all: Vec<(usize, Transaction)> = slowest.into_values().flatten().collect();
    all.sort_by(|(i, x), (j, y)| y.ms.total_cmp(&x.ms).then(i.cmp(j)));
    let all: Vec<Transaction> = all.into_iter().take(SLOWEST).map(|(_, t)| t).collect();
    let mut findings = Vec::new();
    for o in &overall {
        let threshold = match o.protocol.as_str() {
            "dns" => 200.0,
            "http" => 1000.0,
            _ => 300.0,
        };
        if o.times.p95_ms.is_some_and(|p| p >= threshold) {
            let worst = servers
                .iter()
                .find(|s| s.protocol == o.protocol)
                .expect("a server per protocol");
            findings.push(Finding::new(
                Severity::Medium,
                format!(
                    "Slow {}: p95 {:.1} ms over {} exchanges",
                    o.protocol.to_uppercase(),
                    o.times.p95_ms.unwrap_or(0.0),
                    o.times.count
                ),
                format!(
                    "Slowest server {} (p95 {:.1} ms, max {:.1} ms).",
                    worst.server,
                    worst.times.p95_ms.unwrap_or(0.0),
                    worst.times.max_ms.unwrap_or(0.0)
                ),
                Evidence {
                    frames: slowest_of.get(&o.protocol).cloned().unwrap_or_default(),
                    endpoints: vec![worst.server.clone()],
                    // exactly the frames listed
                    display_filter: format!(
                        "frame.number in {{{}}}",
                        slowest_of
                            .get(&o.protocol)
                            .into_iter()
                            .flatten()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                    ..Default::default()
                },
            ));
        }
    }
    let summary = if overall.is_empty() {
        format!(
            "No {} request/response exchanges to time in {}.",
            format!("{:?}", p.protocol).to_lowercase(),
            a.file.display_name
        )
    } else {
        format!(
            "Response times: {}. Slowest single exchange: {}.",
            overall
                .iter()
                .map(|o| format!(
                    "{} median {:.1} ms / p95 {:.1} ms (n={})",
                    o.protocol.to_uppercase(),
                    o.times.median_ms.unwrap_or(0.0),
                    o.times.p95_ms.unwrap_or(0.0),
                    o.times.count
                ))
                .collect::<Vec<_>>()
                .join("; "),
            all.first()
                .map(|t| format!(
                    "{} {} {:.1} ms at frame {}",
                    t.protocol, t.server, t.ms, t.frame
                ))
                .unwrap_or_default()
        )
    };
    let data = ResponseTimes {
        protocol: p.protocol,
        overall,
        servers: Table::page(servers, clamp_offset(p.offset), clamp_limit(p.limit, 20)),
        slowest: all,
    };
    a.report(summary, findings, data, span, None).await
}
