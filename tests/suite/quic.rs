//! analyze_quic_traffic against Zeek's quic.log for the same captures (version,
//! connection IDs, server name, first ALPN), and the handshake's completion against
//! the TLS tool's (one definition) and Zeek's history (1-RTT packets from the client).

use crate::common::*;
use serde_json::{Value, json};

/// The rows of a Zeek log as field -> value maps.
fn zeek_rows(path: &str) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let fields: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("#fields\t"))
        .unwrap()
        .split('\t')
        .map(str::to_string)
        .collect();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            fields
                .iter()
                .cloned()
                .zip(l.split('\t').map(str::to_string))
                .collect()
        })
        .collect()
}

fn zeek_value(v: &str) -> Value {
    match v {
        "(empty)" | "-" => Value::Null,
        s => json!(s),
    }
}

#[tokio::test]
async fn quic_connections_agree_with_zeek_quic_log() {
    let s = start().await;
    for name in [
        "zeek-curl-http3-www-google-de",
        "zeek-chromium-api-cirrus-ci",
    ] {
        let v = s
            .ok(
                "analyze_quic_traffic",
                json!({"pcap_file": fixture(&format!("{name}.pcap"))}),
            )
            .await;
        let zeek = zeek_rows(&fixture(&format!("zeek-quic/{name}.quic.log")));
        assert_eq!(v["connections_total"], zeek.len(), "{name}: {v}");
        for z in &zeek {
            let row = v["connections"]["rows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["client"] == format!("{}:{}", z["id.orig_h"], z["id.orig_p"]))
                .unwrap_or_else(|| panic!("{name}: no connection for {z:?}"));
            assert_eq!(
                row["server"],
                format!("{}:{}", z["id.resp_h"], z["id.resp_p"])
            );
            assert_eq!(row["version"], zeek_value(&z["version"]), "{name}");
            assert_eq!(
                row["client_initial_dcid"],
                zeek_value(&z["client_initial_dcid"]),
                "{name}"
            );
            assert_eq!(row["client_scid"], zeek_value(&z["client_scid"]), "{name}");
            assert_eq!(row["server_scid"], zeek_value(&z["server_scid"]), "{name}");
            assert_eq!(row["sni"], zeek_value(&z["server_name"]), "{name}");
            assert_eq!(
                row["alpn_offered"][0],
                zeek_value(&z["client_protocol"]),
                "{name}"
            );
            // the client sent 1-RTT packets (Zeek's "O") after the server's hello
            assert!(z["history"].contains('O') && z["history"].contains('s'));
            assert_eq!(row["handshake"], "complete", "{name}");
        }
        // tshark's own view: one Initial ClientHello per connection, naming the SNI
        let sni = tshark()
            .args([
                "-n",
                "-r",
                &fixture(&format!("{name}.pcap")),
                "-Y",
                "quic && tls.handshake.type == 1",
                "-T",
                "fields",
                "-e",
                "tls.handshake.extensions_server_name",
            ])
            .output()
            .unwrap();
        let names: Vec<String> = String::from_utf8_lossy(&sni.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(v["server_names"][0]["key"], names[0], "{name}");
        // one definition of a completed handshake: the TLS tool says the same
        let t = s
            .ok(
                "analyze_tls_handshakes",
                json!({"pcap_file": fixture(&format!("{name}.pcap"))}),
            )
            .await;
        assert_eq!(
            t["sessions"]["rows"][0]["outcome"], "complete",
            "{name}: {t}"
        );
    }
}
