//! The Community ID in flow tables equals tshark's own (`--enable-protocol communityid`)
//! for every TCP connection and the QUIC connection; the algorithm's own test vectors
//! are a unit test (fixtures/community-id-baseline.json).

mod common;

use std::collections::BTreeMap;

use common::*;
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
