//! One module per tool group. A tool's parameters, its tshark command, its reduction
//! and its findings live together in its group's module; shared mechanics live in
//! `crate::engine` and `crate::tshark`.

pub mod anomalies;
pub mod bandwidth;
pub mod basic;
pub mod capture;
pub mod dns;
pub mod expert;
pub mod files;
pub mod http;
pub mod interfaces;
pub mod metrics;
pub mod performance;
pub mod quality;
pub mod search;
pub mod tcp;
pub mod threats;
pub mod timeline;
pub mod tls;
pub mod topology;

/// The longest bucket or window a client may ask for (ten years), so that no width
/// reaches tshark as a number it cannot format.
const MAX_SECONDS: f64 = 10.0 * 365.25 * 86_400.0;

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

/// Toolsets an operator can pick with `PCAP_TOOLSETS`, and the tools in each.
pub const TOOLSETS: &[(&str, &[&str])] = &[
    ("interfaces", &["list_network_interfaces"]),
    (
        "capture",
        &[
            "start_packet_capture",
            "stop_packet_capture",
            "get_capture_status",
            "list_captured_files",
        ],
    ),
    (
        "basic",
        &[
            "analyze_pcap_file",
            "extract_http_requests",
            "generate_traffic_timeline",
            "search_packet_content",
        ],
    ),
    (
        "tcp",
        &[
            "analyze_tcp_retransmissions",
            "analyze_tcp_zero_window",
            "analyze_tcp_window_scaling",
            "analyze_packet_timing_issues",
            "analyze_congestion_indicators",
            "analyze_connection_lifecycle",
        ],
    ),
    (
        "tls",
        &[
            "analyze_tls_handshakes",
            "analyze_sni_mismatches",
            "extract_certificate_details",
            "analyze_tls_alerts",
            "extract_tls_cipher_analysis",
        ],
    ),
    (
        "advanced",
        &[
            "analyze_dns_resolution_issues",
            "analyze_expert_information",
            "analyze_protocol_anomalies",
            "analyze_network_topology",
            "analyze_security_threats",
        ],
    ),
    (
        "metrics",
        &[
            "analyze_application_response_times",
            "generate_throughput_io_graph",
            "analyze_bandwidth_utilization",
            "analyze_network_quality_metrics",
        ],
    ),
    (
        "performance",
        &["analyze_network_performance", "analyze_network_latency"],
    ),
];

crate::file_args!(
    basic::AnalyzePcapParams,
    timeline::TimelineParams,
    search::SearchParams,
    dns::DnsParams,
    expert::ExpertParams,
    metrics::ResponseTimeParams,
    threats::ThreatParams,
    anomalies::AnomalyParams,
    topology::TopologyParams,
    bandwidth::IoGraphParams,
    bandwidth::BandwidthParams,
);
crate::file_args!(keylog: http::HttpParams, tcp::TcpParams, quality::QualityParams);

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
