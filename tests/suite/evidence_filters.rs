//! Every display filter a result hands out (findings' evidence, table rows, series) must
//! be one Wireshark accepts: an analyst pastes it into the filter bar. Runs every file
//! tool on captures that trigger many findings and compiles each distinct filter with
//! tshark itself.

use std::collections::BTreeSet;

use crate::common::*;
use serde_json::{Value, json};

fn collect(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    // the client's own filter, echoed back
                    ("scope", _) => {}
                    ("display_filter", Value::String(f)) => {
                        out.insert(f.clone());
                    }
                    _ => collect(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
        _ => {}
    }
}

/// Tools and the fixtures that give them the most to say.
const CASES: &[(&str, &[&str])] = &[
    (
        "analyze_security_threats",
        &[
            "cs-synscan.pcapng",
            "cs-arppoison.pcapng",
            "zeek-ftp-password-pass-command.pcap",
            "cs-http_dvwa_clearlogin.pcapng",
            "ndpi-bad-dns-traffic.pcap",
            "zeek-nmap-vsn.pcap",
            "sv-tls-selfsigned-selks.pcap",
            "zeek-tls1.2.pcap",
        ],
    ),
    (
        "analyze_protocol_anomalies",
        &[
            "sv-ipv4-truncated.pcap",
            "cs-icmp_traceroute.pcapng",
            "zeek-ipv6-fragmented-dns.pcap",
            "zeek-tcp-truncated-header.pcap",
            "arkime-wireshark-retrans.pcap",
        ],
    ),
    (
        "analyze_network_topology",
        &[
            "zeek-wikipedia.pcap",
            "tcpdump-802.1ad_QinQ.pcap",
            "zeek-q-in-q.pcap",
        ],
    ),
    (
        "generate_throughput_io_graph",
        &["arkime-wireshark-retrans.pcap"],
    ),
    (
        "analyze_bandwidth_utilization",
        &["zeek-wikipedia.pcap", "arkime-wireshark-retrans.pcap"],
    ),
    (
        "analyze_network_quality_metrics",
        &[
            "arkime-wireshark-retrans.pcap",
            "cs-synscan.pcapng",
            "cs-icmp_traceroute.pcapng",
        ],
    ),
    (
        "analyze_dns_resolution_issues",
        &["zeek-wikipedia.pcap", "ndpi-bad-dns-traffic.pcap"],
    ),
    (
        "analyze_expert_information",
        &["arkime-wireshark-retrans.pcap"],
    ),
    (
        "analyze_connection_lifecycle",
        &["cs-synscan.pcapng", "cs-tcp_refuseconnection.pcapng"],
    ),
    (
        "analyze_tcp_retransmissions",
        &["arkime-wireshark-retrans.pcap"],
    ),
    (
        "analyze_tls_handshakes",
        &["zeek-tls-1.2-handshake-failure.pcap"],
    ),
    (
        "extract_certificate_details",
        &["zeek-tls-expired-cert.pcap"],
    ),
    (
        "analyze_application_response_times",
        &["zeek-wikipedia.pcap"],
    ),
    (
        "generate_traffic_timeline",
        &["arkime-wireshark-retrans.pcap"],
    ),
];

fn compiles(filters: &[&str]) -> bool {
    // `(a) || (b) || ...` compiles exactly when each part does: one tshark run for many
    let joined = filters
        .iter()
        .map(|f| format!("({f})"))
        .collect::<Vec<_>>()
        .join(" || ");
    tshark()
        .args(["-n", "-r", &fixture("cs-icmp_echo.pcapng"), "-Y", &joined])
        .output()
        .unwrap()
        .status
        .success()
}

/// The filters tshark rejects, found by halving.
fn rejected(filters: &[&str], bad: &mut Vec<String>) {
    if filters.is_empty() || compiles(filters) {
        return;
    }
    if let [one] = filters {
        bad.push(one.to_string());
        return;
    }
    let (a, b) = filters.split_at(filters.len() / 2);
    rejected(a, bad);
    rejected(b, bad);
}

#[tokio::test]
async fn every_filter_we_hand_out_compiles() {
    let s = start().await;
    let mut filters = BTreeSet::new();
    for (tool, files) in CASES {
        for f in *files {
            let v = s.ok(tool, json!({"pcap_file": fixture(f)})).await;
            collect(&v, &mut filters);
        }
    }
    assert!(
        filters.len() > 50,
        "only {} filters collected",
        filters.len()
    );
    let all: Vec<&str> = filters.iter().map(String::as_str).collect();
    let mut bad = Vec::new();
    rejected(&all, &mut bad);
    assert!(bad.is_empty(), "filters tshark rejects: {bad:#?}");
    // the halving finds a bad one among good ones
    let mut found = Vec::new();
    rejected(&["tcp.port == 80", "ip.addr == 1.2.3", "dns"], &mut found);
    assert_eq!(found, vec!["ip.addr == 1.2.3".to_string()]);
}
