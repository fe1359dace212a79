//! One module per tool group: a tool's parameters, its part of the capture index (the
//! reducer over the shared pass) and its view over it, with its findings. Tool modules
//! never import each other: what two share lives in `crate::analysis` (or, for a
//! metric's definition, `crate::definitions`); mechanics live in `crate::engine`,
//! `crate::index` and `crate::tshark`. This module declares what spans the tools:
//! the index's parts, the shared stream parameters and the triage's checks.

use std::future::Future;
use std::pin::Pin;

use serde::de::DeserializeOwned;

use crate::engine::Analysis;
use crate::model::tcp::TcpModel;
use crate::model::tls::TlsModel;
use crate::report::Finding;

pub mod anomalies;
pub mod bandwidth;
pub mod basic;
pub mod batch;
pub mod capture;
pub mod compare;
pub mod connections;
pub mod dns;
pub mod events;
pub mod expert;
pub mod export;
pub mod files;
pub mod flows;
pub mod follow;
pub mod host;
pub mod http;
pub mod interfaces;
pub mod lua;
pub mod metrics;
pub mod network;
pub mod objects;
pub mod packets;
pub mod performance;
pub mod quality;
pub mod quic;
pub mod search;
pub mod tcp;
pub mod threats;
pub mod timeline;
pub mod tls;
pub mod topology;
pub mod trust;

/// The parts of the capture index the tools read: each family's reducer over the one
/// shared pass (`crate::index`).
pub const INDEX_PARTS: &[crate::index::PartMaker] = &[
    crate::index::part::<crate::model::tcp::TcpModel>,
    crate::index::part::<crate::model::tls::TlsModel>,
    crate::index::part::<basic::Overview>,
    crate::index::part::<crate::index::Rows<dns::DnsRow>>,
    crate::index::part::<crate::index::Rows<crate::model::http::HttpRow>>,
    crate::index::part::<expert::ExpertFrames>,
    crate::index::part::<crate::index::Rows<crate::model::timing::TimingRow>>,
    crate::index::part::<crate::index::Rows<quality::QRow>>,
    crate::index::part::<threats::PacketFacts>,
    crate::index::part::<anomalies::AnomalyState>,
    crate::index::part::<crate::analysis::hosts::TopoState>,
    crate::index::part::<timeline::TimelineState>,
    crate::index::part::<bandwidth::BwState>,
    crate::index::part::<bandwidth::IoBuckets>,
    crate::index::part::<crate::model::icmp::NetErrors>,
    crate::index::part::<crate::model::quic::QuicModel>,
    crate::index::part::<crate::model::conn::Flows>,
    crate::index::part::<crate::index::Rows<crate::model::conn::FtpDataChannel>>,
];

/// The parameters of the stream tools (TCP, TLS, performance): one declaration, shared.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct TcpParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Wireshark display filter scoping the analysis, e.g. `ip.addr == 10.0.0.5`.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Streams listed, worst first (default 20, max 500).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Rows to skip, for paging.
    #[serde(default)]
    pub offset: Option<i64>,
    /// SSLKEYLOGFILE in an allowed directory, to decrypt TLS (overrides
    /// PCAP_TLS_KEYLOG_FILE).
    #[serde(default)]
    pub tls_keylog_file: Option<String>,
}

/// A family's symptom check in the triage: its tool's view with default arguments.
pub struct Check {
    /// The tool that explains what the check finds.
    pub tool: &'static str,
    pub run: fn(Analysis) -> CheckFuture,
    /// Which of the view's findings the triage shows (the rest belong to another
    /// family's check, or are not symptoms).
    pub keep: fn(&Finding) -> bool,
}

pub type CheckFuture = Pin<Box<dyn Future<Output = Result<Vec<Finding>, String>> + Send>>;

/// A tool's parameters as a client sending only `pcap_file` gets them.
pub(crate) fn defaults<P: DeserializeOwned>() -> Result<P, String> {
    serde_json::from_value(serde_json::json!({ "pcap_file": "" }))
        .map_err(|e| format!("internal error: default arguments: {e}"))
}

/// A check that runs a tool's whole view.
macro_rules! view_check {
    ($name:ident, $view:path, $params:ty) => {
        fn $name(a: Analysis) -> CheckFuture {
            Box::pin(async move { Ok($view(a, defaults::<$params>()?).await?.findings) })
        }
    };
}

/// A check that reduces a model part the way its tool does.
macro_rules! model_check {
    ($name:ident, $model:ty, $reduce:path) => {
        fn $name(mut a: Analysis) -> CheckFuture {
            Box::pin(async move {
                let m = a.part::<$model>().await?;
                Ok($reduce(&m, &defaults::<TcpParams>()?).1)
            })
        }
    };
}

view_check!(check_threats, threats::threats, threats::ThreatParams);
model_check!(check_retrans, TcpModel, tcp::retransmissions);
model_check!(check_zero_window, TcpModel, tcp::zero_windows);
model_check!(check_lifecycle, TcpModel, tcp::lifecycle);
model_check!(check_timing, TcpModel, tcp::timing);
view_check!(check_dns, dns::dns, dns::DnsParams);
model_check!(check_handshakes, TlsModel, tls::handshakes);
model_check!(check_certificates, TlsModel, tls::certificates);
model_check!(check_sni, TlsModel, tls::sni_mismatches);
model_check!(check_alerts, TlsModel, tls::alerts);
view_check!(check_http, http::http_requests, http::HttpParams);
view_check!(
    check_slowness,
    performance::slowness,
    performance::SlowParams
);
view_check!(check_quality, quality::quality, quality::QualityParams);
view_check!(check_mtu, network::mtu_fragmentation, network::NetParams);
view_check!(check_quic, quic::quic_traffic, TcpParams);
model_check!(check_timeouts, TcpModel, connections::connection_timeouts);
view_check!(
    check_anomalies,
    anomalies::anomalies,
    anomalies::AnomalyParams
);

fn all(_: &Finding) -> bool {
    true
}

fn check_trust(mut a: Analysis) -> CheckFuture {
    Box::pin(async move { Ok(trust::assess_capture(&mut a).await?.1) })
}

/// The triage of `analyze_pcap_file`: every family's check, in order of the harm its
/// problems do to users when two are equally severe (an attack, then loss and stalls,
/// then failed names, handshakes and requests, then protocol oddities).
pub const TRIAGE: &[Check] = &[
    // first: whether the capture can be believed qualifies every number after it
    Check {
        tool: "check_capture_trust",
        run: check_trust,
        keep: all,
    },
    Check {
        tool: "analyze_security_threats",
        run: check_threats,
        keep: all,
    },
    Check {
        tool: "analyze_tcp_retransmissions",
        run: check_retrans,
        keep: all,
    },
    Check {
        tool: "analyze_tcp_zero_window",
        run: check_zero_window,
        keep: all,
    },
    Check {
        tool: "analyze_connection_lifecycle",
        run: check_lifecycle,
        keep: all,
    },
    Check {
        tool: "analyze_dns_resolution_issues",
        run: check_dns,
        keep: all,
    },
    Check {
        tool: "analyze_tls_handshakes",
        run: check_handshakes,
        keep: all,
    },
    Check {
        tool: "extract_certificate_details",
        run: check_certificates,
        keep: all,
    },
    Check {
        tool: "analyze_sni_mismatches",
        run: check_sni,
        keep: all,
    },
    Check {
        tool: "analyze_tls_alerts",
        run: check_alerts,
        keep: all,
    },
    Check {
        tool: "extract_http_requests",
        run: check_http,
        keep: all,
    },
    Check {
        tool: "analyze_packet_timing_issues",
        run: check_timing,
        keep: all,
    },
    // a connection slow for a second or more, with whose fault it was
    Check {
        tool: "analyze_slowness",
        run: check_slowness,
        keep: |f| f.severity >= crate::report::Severity::Medium,
    },
    // the quality grade restates the other families' symptoms; ICMP errors, UDP to
    // closed ports and unreachable destinations are its own
    Check {
        tool: "analyze_network_quality_metrics",
        run: check_quality,
        keep: |f| {
            f.title.starts_with("ICMP errors")
                || f.title.starts_with("UDP to closed")
                || f.title.starts_with("Unreachable destination")
        },
    },
    // lost fragments, an MSS the path cannot carry, a PMTU black hole
    Check {
        tool: "analyze_mtu_fragmentation",
        run: check_mtu,
        keep: |f| f.severity >= crate::report::Severity::Medium,
    },
    Check {
        tool: "analyze_quic_traffic",
        run: check_quic,
        keep: all,
    },
    // unanswered SYNs and refusals are the lifecycle's; senders that gave up are not
    Check {
        tool: "analyze_connection_timeouts",
        run: check_timeouts,
        keep: |f| f.title.contains("gave up retransmitting"),
    },
    Check {
        tool: "analyze_protocol_anomalies",
        run: check_anomalies,
        keep: all,
    },
];

/// Every triage check run over one analysis: its findings above info that the check
/// keeps, or the error it ran into. A cancelled call stops at the first error.
pub async fn run_checks(
    a: &Analysis,
) -> Result<Vec<(&'static Check, Result<Vec<Finding>, String>)>, String> {
    let mut out = Vec::with_capacity(TRIAGE.len());
    for c in TRIAGE {
        match (c.run)(a.sibling()).await {
            Ok(found) => out.push((
                c,
                Ok(found
                    .into_iter()
                    .filter(|f| f.severity > crate::report::Severity::Info && (c.keep)(f))
                    .collect()),
            )),
            Err(e) if a.ctl.cancel.is_cancelled() => return Err(e),
            Err(e) => out.push((c, Err(e))),
        }
    }
    Ok(out)
}

/// What a family reports to get_events_around.
pub type EventsFuture =
    Pin<Box<dyn Future<Output = Result<Vec<crate::analysis::events::Event>, String>> + Send>>;

/// Every family's events, read from its index part.
pub const EVENT_SOURCES: &[fn(Analysis, crate::analysis::events::EventQuery) -> EventsFuture] = &[
    |mut a, q| {
        Box::pin(async move {
            let m = a.part::<TcpModel>().await?;
            Ok(crate::analysis::events::tcp_events(&m, q))
        })
    },
    |mut a, q| {
        Box::pin(async move {
            let m = a.part::<TlsModel>().await?;
            Ok(crate::analysis::events::tls_events(&m, q))
        })
    },
    |a, q| Box::pin(dns::events(a, q)),
    |a, q| Box::pin(http::events(a, q)),
    |a, q| Box::pin(quality::events(a, q)),
    |a, q| Box::pin(expert::events(a, q)),
    |a, q| Box::pin(basic::events(a, q)),
];

/// What a family reports to compare_captures.
pub type MetricsFuture =
    Pin<Box<dyn Future<Output = Result<Vec<crate::analysis::compare::Metric>, String>> + Send>>;

/// Every family's numbers for comparing two captures, each as its own tool reports
/// them (so a change is the change that tool would show).
pub const COMPARE_SOURCES: &[fn(Analysis) -> MetricsFuture] = &[
    |a| Box::pin(basic::compare_metrics(a)),
    |a| Box::pin(quality::compare_metrics(a)),
    |mut a| {
        Box::pin(async move {
            let m = a.part::<TcpModel>().await?;
            Ok(crate::analysis::compare::tcp_metrics(&m))
        })
    },
];

use crate::timescope::MAX_SECONDS;

/// Checks a client's time width (`time_interval`, `time_window`): positive, finite and
/// at most ten years; `None` means "choose automatically".
pub fn check_seconds(name: &str, v: Option<f64>) -> Result<(), String> {
    match v {
        Some(t) if !t.is_finite() || t <= 0.0 => Err(format!(
            "{name} must be a positive number of seconds, got {t}; omit it for an automatic width"
        )),
        Some(t) if t > MAX_SECONDS => Err(format!(
            "{name} {t} s is longer than ten years ({MAX_SECONDS} s); omit it for an automatic width"
        )),
        _ => Ok(()),
    }
}

crate::file_args!(
    basic::AnalyzePcapParams,
    timeline::TimelineParams,
    search::SearchParams,
    dns::DnsParams,
    expert::ExpertParams,
    metrics::ResponseTimeParams,
    threats::ThreatParams,
    threats::ScopeParams,
    anomalies::AnomalyParams,
    topology::TopologyParams,
    bandwidth::IoGraphParams,
    bandwidth::BandwidthParams,
);
crate::file_args!(keylog: http::HttpParams, TcpParams, quality::QualityParams);

/// Hard maximum for any `limit`: keeps a result inside an LLM context.
pub const MAX_LIMIT: usize = 500;

/// A client's limit, clamped to 1..=MAX_LIMIT.
pub fn clamp_limit(limit: Option<i64>, default: usize) -> usize {
    match limit {
        None => default,
        Some(l) if l < 1 => 1,
        Some(l) => (l as usize).min(MAX_LIMIT),
    }
}

pub fn clamp_offset(offset: Option<i64>) -> usize {
    offset.unwrap_or(0).clamp(0, 10_000_000) as usize
}

/// Display filter string literal for an arbitrary value: every character that could end
/// the literal or start an escape is escaped, so client text stays data.
pub fn filter_string_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The triage names each check's tool by its string; each must be a tool clients
    /// can call.
    #[test]
    fn triage_checks_name_real_tools() {
        let names: Vec<String> = crate::server::PcapServer::all_tools()
            .into_iter()
            .map(|(_, t)| t.name.to_string())
            .collect();
        for c in TRIAGE {
            assert!(names.iter().any(|n| n == c.tool), "no tool {}", c.tool);
        }
    }

    /// PCAP_TOOLSETS' documentation names every toolset the server declares.
    #[test]
    fn toolsets_are_documented() {
        let doc = crate::config::ENV_VARS
            .iter()
            .find(|v| v.0 == "PCAP_TOOLSETS")
            .unwrap()
            .2;
        for (set, _) in crate::server::PcapServer::all_tools() {
            assert!(doc.contains(set), "PCAP_TOOLSETS does not mention {set}");
        }
    }

    #[test]
    fn limits_are_clamped() {
        assert_eq!(clamp_limit(None, 20), 20);
        assert_eq!(clamp_limit(Some(-5), 20), 1);
        assert_eq!(clamp_limit(Some(1_000_000_000), 20), MAX_LIMIT);
        assert_eq!(clamp_offset(Some(-1)), 0);
    }

    #[test]
    fn literal_cannot_break_out() {
        assert_eq!(
            filter_string_literal(r#"a" || tcp || "b\"#),
            r#""a\" || tcp || \"b\\""#
        );
    }
}
