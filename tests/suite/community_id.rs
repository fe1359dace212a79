//! The Community ID in flow tables equals tshark's own (`--enable-protocol communityid`)
//! for every TCP connection, the overview's TCP and UDP conversations, the HTTP
//! transactions and the QUIC connection; the algorithm's own test vectors
//! are a unit test (fixtures/community-id-baseline.json).

use std::collections::BTreeMap;

use crate::common::*;
use serde_json::json;

/// tshark's Community ID per stream index, for packets matching `filter`.
fn tshark_ids(file: &str, filter: &str, stream_field: &str) -> BTreeMap<u64, String> {
    let out = tshark()
        .args([
            "-n",
            "-r",
            file,
            "--enable-protocol",
            "communityid",
            "-Y",
            filter,
        ])
        .args(["-T", "fields", "-e", stream_field, "-e", "communityid"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (s, id) = l.split_once('\t')?;
            Some((s.parse().ok()?, id.to_string()))
        })
        .collect()
}

#[tokio::test]
async fn community_ids_agree_with_tshark() {
    let s = start().await;
    let file = fixture("zeek-wikipedia.pcap");
    let want = tshark_ids(&file, "tcp", "tcp.stream");
    assert!(want.len() > 5);
    let v = s
        .ok(
            "analyze_connection_lifecycle",
            json!({"pcap_file": file, "limit": 500}),
        )
        .await;
    let rows = v["connections"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), want.len());
    for r in rows {
        let stream = r["stream"].as_u64().unwrap();
        assert_eq!(r["community_id"], want[&stream], "stream {stream}");
    }

    // the overview's conversations (TCP and UDP) and the HTTP transactions carry it too
    let v = s
        .ok(
            "analyze_pcap_file",
            json!({"pcap_file": file, "analysis_type": "conversations", "limit": 500}),
        )
        .await;
    let udp = tshark_ids(&file, "udp", "udp.stream");
    let mut checked = 0;
    for r in v["conversations"]["rows"].as_array().unwrap() {
        let Some(stream) = r["stream"].as_u64() else {
            continue;
        };
        let want = match r["protocol"].as_str().unwrap() {
            "tcp" => &want,
            "udp" => &udp,
            _ => continue,
        };
        assert_eq!(r["community_id"], want[&stream], "{r}");
        checked += 1;
    }
    assert!(checked > 5);
    let v = s
        .ok(
            "extract_http_requests",
            json!({"pcap_file": file, "limit": 500}),
        )
        .await;
    let rows = v["requests"]["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        let stream = r["stream"].as_u64().unwrap();
        assert_eq!(r["community_id"], want[&stream], "{r}");
    }

    // DNS problems name their query's flow
    for name in ["sv-dns-udp-nxdomain-soa.pcap", "ndpi-bad-dns-traffic.pcap"] {
        let file = fixture(name);
        let by_frame = tshark_ids(&file, "dns", "frame.number");
        let v = s
            .ok("analyze_dns_resolution_issues", json!({"pcap_file": file}))
            .await;
        let rows = v["problems"]["rows"].as_array().unwrap();
        assert!(!rows.is_empty(), "{name}");
        for r in rows {
            let frame = r["query_frame"].as_u64().unwrap();
            assert_eq!(r["community_id"], by_frame[&frame], "{name}: {r}");
        }
    }

    let file = fixture("zeek-curl-http3-www-google-de.pcap");
    let want = tshark_ids(&file, "quic", "udp.stream");
    let v = s
        .ok("analyze_quic_traffic", json!({"pcap_file": file}))
        .await;
    assert_eq!(v["connections"]["rows"][0]["community_id"], want[&0]);
    let t = s
        .ok("analyze_tls_handshakes", json!({"pcap_file": file}))
        .await;
    assert_eq!(t["sessions"]["rows"][0]["community_id"], want[&0]);
}
