//! One definition per metric: every tool that reports the same metric for the same
//! capture and scope reports the same number (retransmissions and loss, DNS failures,
//! TLS handshake outcomes, TCP handshake RTT, throughput), over every fixture and the
//! shared corpus when it sits beside the checkout.

use std::path::Path;

use crate::common::*;
use serde_json::{Value, json};

/// Percent as the server rounds it: two decimals.
fn pct(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        (n as f64 * 10_000.0 / d as f64).round() / 100.0
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// A table's count for `key` (`[{key, count}]`), 0 when absent.
fn count_of(table: &Value, key: &str) -> u64 {
    table
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["key"] == key)
        .map_or(0, |r| u(&r["count"]))
}

async fn check(s: &Server, file: &Path) -> bool {
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    let args = json!({"pcap_file": file.display().to_string(), "limit": 500});
    let first = s.call("analyze_pcap_file", args.clone()).await;
    if first.is_error == Some(true) {
        return false; // nothing tshark can read
    }
    let call = |tool: &'static str| {
        let args = args.clone();
        let name = name.clone();
        async move {
            let v = s.ok(tool, args).await;
            assert_eq!(v["status"], "complete", "{tool} on {name}: {v}");
            v
        }
    };
    let retrans = call("analyze_tcp_retransmissions").await;
    let congestion = call("analyze_congestion_indicators").await;
    let quality = call("analyze_network_quality_metrics").await;
    let dns = call("analyze_dns_resolution_issues").await;
    let timeline = call("generate_traffic_timeline").await;
    let tls = call("analyze_tls_handshakes").await;
    let bandwidth = call("analyze_bandwidth_utilization").await;
    let response = call("analyze_application_response_times").await;
    let latency = call("analyze_network_latency").await;

    // retransmissions and loss: the TCP, congestion and quality tools
    let t = &retrans["totals"];
    let rate = f(&t["retransmission_rate_pct"]);
    assert_eq!(
        rate,
        f(&congestion["retransmission_rate_pct"]),
        "{name}: loss rate, retransmission vs congestion tool"
    );
    assert_eq!(
        rate,
        f(&quality["loss"]["tcp_retransmission_rate_pct"]),
        "{name}: loss rate, retransmission vs quality tool"
    );
    assert_eq!(
        u(&t["loss_retransmissions"]),
        u(&quality["loss"]["tcp_retransmissions"]),
        "{name}: loss retransmissions"
    );
    assert_eq!(
        u(&t["data_segments"]),
        u(&quality["loss"]["tcp_data_segments"]),
        "{name}: data segments"
    );
    assert_eq!(
        rate,
        pct(u(&t["loss_retransmissions"]), u(&t["data_segments"])),
        "{name}: the rate is loss retransmissions over data segments"
    );

    // DNS failures: unanswered queries plus SERVFAIL/REFUSED answers, NXDOMAIN excluded
    let queries = u(&dns["queries"]);
    assert_eq!(
        queries,
        u(&quality["errors"]["dns_queries"]),
        "{name}: DNS queries"
    );
    let failures = u(&dns["unanswered"])
        + count_of(&dns["rcodes"], "SERVFAIL")
        + count_of(&dns["rcodes"], "REFUSED");
    let by_resolver: u64 = dns["resolvers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| u(&r["failures"]))
        .sum();
    assert_eq!(failures, by_resolver, "{name}: DNS failures per resolver");
    assert_eq!(
        pct(failures, queries),
        f(&quality["errors"]["dns_failure_pct"]),
        "{name}: DNS failure rate"
    );
    let buckets = timeline["buckets"]["rows"].as_array().unwrap();
    assert_eq!(
        u(&timeline["buckets"]["total"]),
        buckets.len() as u64,
        "{name}: every bucket listed"
    );
    let in_timeline: u64 = buckets.iter().map(|b| u(&b["dns_failures"])).sum();
    assert_eq!(
        failures, in_timeline,
        "{name}: DNS failures in the timeline"
    );

    // TLS handshakes: quality's failures are the handshake tool's alert/reset outcomes
    let outcomes = &tls["outcomes"];
    let sessions: u64 = outcomes
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| u(&r["count"]))
        .sum();
    assert_eq!(
        sessions,
        u(&quality["errors"]["tls_sessions"]),
        "{name}: TLS sessions"
    );
    assert_eq!(
        pct(
            count_of(outcomes, "alert") + count_of(outcomes, "reset"),
            sessions
        ),
        f(&quality["errors"]["tls_failure_pct"]),
        "{name}: TLS failure rate"
    );

    // TCP handshake RTT: quality's latency and the response-time tool's TCP row
    let q = &quality["latency"]["tcp_handshake_rtt"];
    let tcp_row = response["overall"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["protocol"] == "tcp");
    match tcp_row {
        Some(r) => {
            assert_eq!(
                u(&r["count"]),
                u(&q["count"]),
                "{name}: handshake RTT samples"
            );
            assert_eq!(
                r["median_ms"], q["median_ms"],
                "{name}: handshake RTT median"
            );
            assert_eq!(r["p95_ms"], q["p95_ms"], "{name}: handshake RTT p95");
        }
        None => assert_eq!(u(&q["count"]), 0, "{name}: handshake RTT samples"),
    }

    // timed exchanges: the latency tool and the response-time tool time the same ones
    for (kind, protocol) in [
        ("tcp_handshake", "tcp"),
        ("dns", "dns"),
        ("http", "http"),
        ("tls_handshake", "tls"),
    ] {
        let overall = response["overall"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["protocol"] == protocol)
            .map_or(0, |r| u(&r["count"]));
        assert_eq!(
            u(&latency[kind]["count"]),
            overall,
            "{name}: {protocol} samples, latency vs response times"
        );
    }

    // throughput: frame bytes, in the bandwidth tool and the timeline
    let bytes: u64 = buckets.iter().map(|b| u(&b["bytes"])).sum();
    assert_eq!(
        u(&bandwidth["total_bytes"]),
        bytes,
        "{name}: bytes, bandwidth vs timeline"
    );
    let (x, y) = (
        f(&bandwidth["rates"]["average_bits_per_s"]),
        f(&timeline["average_bits_per_s"]),
    );
    assert!(
        (x - y).abs() <= 0.1 + x.abs() * 1e-6,
        "{name}: average rate, bandwidth {x} vs timeline {y}"
    );
    true
}

#[tokio::test]
async fn tools_reporting_one_metric_agree() {
    let (files, dirs) = fixture_and_corpus_captures();
    let s = start_with(&[("PCAP_ALLOWED_DIRS", &dirs), ("PCAP_CALL_DEADLINE", "600")]).await;
    let checked = in_two_lanes(&files, |f| {
        let s = &s;
        async move { check(s, &f).await }
    })
    .await;
    assert!(checked >= 40, "only {checked} captures checked");
}

/// A client that asks the same DNS question again after tshark's 5 s retransmission
/// timer (same port, ID and name), and gets the answer to the retry, asked one question
/// that was answered: no tool may call it unanswered or the resolver down.
#[tokio::test]
async fn a_question_asked_again_and_answered_is_answered() {
    let s = start().await;
    let file = fixture("zeek-ipv6-fragmented-dns.pcap");
    // the oracle, from tshark's own fields: distinct questions (port, ID, name) and
    // the questions some query of which got a response
    let rows = tshark()
        .args(["-n", "-r", &file, "-Y", "dns", "-T", "fields"])
        .args([
            "-e",
            "dns.flags.response",
            "-e",
            "udp.srcport",
            "-e",
            "udp.dstport",
        ])
        .args(["-e", "dns.id", "-e", "dns.qry.name"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&rows.stdout).to_string();
    let mut asked = std::collections::BTreeSet::new();
    let mut answered = std::collections::BTreeSet::new();
    for l in text.lines() {
        let c: Vec<&str> = l.split('\t').collect();
        if c[0] == "1" {
            answered.insert((c[2].to_string(), c[3].to_string(), c[4].to_string()));
        } else {
            asked.insert((c[1].to_string(), c[3].to_string(), c[4].to_string()));
        }
    }
    assert_eq!(asked.len(), 2);
    assert_eq!(asked, answered, "tshark: every question got an answer");

    let d = s
        .ok("analyze_dns_resolution_issues", json!({"pcap_file": file}))
        .await;
    assert_eq!(d["queries"], json!(asked.len()), "{}", d["summary"]);
    assert_eq!(d["unanswered"], 0, "{}", d["summary"]);
    let q = s
        .ok(
            "analyze_network_quality_metrics",
            json!({"pcap_file": file}),
        )
        .await;
    assert_eq!(q["errors"]["dns_queries"], json!(asked.len()));
    assert_eq!(q["errors"]["dns_failure_pct"], 0.0);
    let t = s
        .ok("generate_traffic_timeline", json!({"pcap_file": file}))
        .await;
    let failures: u64 = t["buckets"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["dns_failures"].as_u64().unwrap())
        .sum();
    assert_eq!(failures, 0);
    let a = s.ok("analyze_pcap_file", json!({"pcap_file": file})).await;
    for f in a["findings"].as_array().unwrap() {
        assert!(
            !f["title"].as_str().unwrap().contains("never answered"),
            "{f}"
        );
    }
}
