//! analyze_host over MCP: a host's traffic and peers against tshark's own endpoint and
//! conversation taps, its names and user names against the fields tshark dissects, a
//! host found by name and by MAC, and hostile host arguments.

use std::collections::BTreeSet;

use crate::common::*;
use serde_json::{Value, json};

fn tshark_q(file: &str, args: &[&str]) -> String {
    let out = tshark()
        .args(["-n", "-r", file])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn tshark_values(file: &str, filter: &str, field: &str) -> Vec<String> {
    tshark_q(file, &["-Y", filter, "-T", "fields", "-e", field])
        .lines()
        .flat_map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect()
}

/// tshark's `-z endpoints,ip` row of one address: packets and bytes sent, received.
fn endpoint(file: &str, addr: &str) -> [u64; 4] {
    let text = tshark_q(file, &["-q", "-z", "endpoints,ip"]);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(addr))
        .unwrap_or_else(|| panic!("no endpoint {addr} in {text}"));
    let n: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    // Packets Bytes TxPackets TxBytes RxPackets RxBytes
    [n[2], n[3], n[4], n[5]]
}

/// One `-z conv,ip` row seen from `addr`: the peer, frames and bytes sent to it, frames
/// and bytes received from it (bytes only where tshark prints them unscaled).
type Conv = (String, u64, Option<u64>, u64, Option<u64>);

/// tshark's `-z conv,ip` rows that involve `addr`.
fn conversations(file: &str, addr: &str) -> Vec<Conv> {
    let text = tshark_q(file, &["-q", "-z", "conv,ip"]);
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.contains("<->")) {
        let t: Vec<&str> = line.split_whitespace().collect();
        // A <-> B  framesB->A bytes unit  framesA->B bytes unit ...
        let bytes = |n: &str, unit: &str| (unit == "bytes").then(|| n.parse().unwrap());
        let (to_a_f, to_a_b) = (t[3].parse::<u64>().unwrap(), bytes(t[4], t[5]));
        let (to_b_f, to_b_b) = (t[6].parse::<u64>().unwrap(), bytes(t[7], t[8]));
        if t[0] == addr {
            out.push((t[2].to_string(), to_b_f, to_b_b, to_a_f, to_a_b));
        } else if t[2] == addr {
            out.push((t[0].to_string(), to_a_f, to_a_b, to_b_f, to_b_b));
        }
    }
    out
}

#[tokio::test]
async fn traffic_and_peers_match_tsharks_taps() {
    let s = start().await;
    let file = fixture("zeek-wikipedia.pcap");
    let host = "141.142.220.118";
    let v = s
        .ok("analyze_host", json!({"pcap_file": file, "host": host}))
        .await;
    assert_eq!(v["addresses"], json!([host]));
    let [tx_f, tx_b, rx_f, rx_b] = endpoint(&file, host);
    let t = &v["traffic"];
    assert_eq!(t["frames_sent"], tx_f, "{t}");
    assert_eq!(t["bytes_sent"], tx_b, "{t}");
    assert_eq!(t["frames_received"], rx_f, "{t}");
    assert_eq!(t["bytes_received"], rx_b, "{t}");

    let convs = conversations(&file, host);
    assert_eq!(v["peer_count"], convs.len());
    let rows = v["peers"]["rows"].as_array().unwrap();
    for (peer, to_f, to_b, from_f, from_b) in &convs {
        let row = rows
            .iter()
            .find(|r| r["address"] == peer.as_str())
            .unwrap_or_else(|| panic!("peer {peer} missing: {rows:?}"));
        assert_eq!(row["frames_to"], *to_f, "{row}");
        assert_eq!(row["frames_from"], *from_f, "{row}");
        if let Some(b) = to_b {
            assert_eq!(row["bytes_to"], *b, "{row}");
        }
        if let Some(b) = from_b {
            assert_eq!(row["bytes_from"], *b, "{row}");
        }
        // every peer's filter shows exactly the frames between the two
        let filter = row["display_filter"].as_str().unwrap();
        assert_eq!(tshark_count(&file, filter), to_f + from_f, "{filter}");
    }
    // the peer it fetched images from carries the name the client resolved for it
    let upload: BTreeSet<String> = tshark_values(
        &file,
        "dns.qry.name == \"upload.wikimedia.org\" && dns.a",
        "dns.a",
    )
    .into_iter()
    .collect();
    let named: Vec<&Value> = rows
        .iter()
        .filter(|r| upload.contains(r["address"].as_str().unwrap()))
        .collect();
    assert!(!named.is_empty());
    for r in named {
        assert!(
            r["names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "upload.wikimedia.org"),
            "{r}"
        );
    }
    // its TCP connections: the SYNs it sent, each answered
    let syns = tshark_count(
        &file,
        &format!("ip.src == {host} && tcp.flags.syn == 1 && tcp.flags.ack == 0"),
    );
    let used: u64 = v["services_used"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(used, syns);
    assert!(
        v["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["role"] == "client")
    );

    // the topology's host table reads the same counters
    let topo = s
        .ok(
            "analyze_network_topology",
            json!({"pcap_file": file, "limit": 500}),
        )
        .await;
    let trow = topo["hosts"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["address"] == host)
        .unwrap()
        .clone();
    assert_eq!(trow["bytes_sent"], t["bytes_sent"]);
    assert_eq!(trow["bytes_received"], t["bytes_received"]);

    // found by the name DNS gave it, and by its MAC
    let by_name = s
        .ok(
            "analyze_host",
            json!({"pcap_file": file, "host": "UPLOAD.wikimedia.org."}),
        )
        .await;
    let got: BTreeSet<String> = by_name["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    // of the answers, the addresses that are hosts of this capture (tshark's endpoints)
    let endpoints = tshark_q(&file, &["-q", "-z", "endpoints,ip"]);
    let upload_seen: BTreeSet<String> = upload
        .iter()
        .filter(|a| {
            endpoints
                .lines()
                .any(|l| l.split_whitespace().next() == Some(a.as_str()))
        })
        .cloned()
        .collect();
    assert!(!upload_seen.is_empty());
    assert_eq!(got, upload_seen);
    let macs: BTreeSet<String> = tshark_values(&file, &format!("ip.src == {host}"), "eth.src")
        .into_iter()
        .collect();
    assert_eq!(macs.len(), 1);
    let mac = macs.iter().next().unwrap().to_uppercase().replace(':', "-");
    let by_mac = s
        .ok("analyze_host", json!({"pcap_file": file, "host": mac}))
        .await;
    assert_eq!(by_mac["addresses"], json!([host]), "{by_mac}");
    assert_eq!(by_mac["traffic"], v["traffic"]);
}

#[tokio::test]
async fn names_users_and_services_from_the_wire() {
    let s = start().await;
    let file = fixture("sv-smb2-ntlmssp.pcap");
    // the client: NTLM user names it sent, the NetBIOS name it registered
    let client = "192.168.199.132";
    let v = s
        .ok("analyze_host", json!({"pcap_file": file, "host": client}))
        .await;
    let users: BTreeSet<String> = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = tshark_q(
        &file,
        &[
            "-Y",
            &format!("ip.src == {client} && ntlmssp.auth.username != \"NULL\""),
            "-T",
            "fields",
            "-e",
            "ntlmssp.auth.domain",
            "-e",
            "ntlmssp.auth.username",
        ],
    )
    .lines()
    .map(|l| l.replace('\t', "\\"))
    .collect();
    assert!(!expected.is_empty());
    assert_eq!(users, expected);
    let netbios: BTreeSet<String> = tshark_values(
        &file,
        &format!("nbns.addr == {client} && nbns.nb_flags.group == 0"),
        "nbns.name",
    )
    .into_iter()
    .map(|n| n.split('<').next().unwrap().to_string())
    .collect();
    let names: BTreeSet<String> = v["names"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["source"] == "netbios")
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, netbios);
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["title"].as_str().unwrap().starts_with("User name")),
        "{v}"
    );

    // the file server, found by its NetBIOS name: the SMB connections it accepted
    let server = "192.168.199.133";
    let name = tshark_values(
        &file,
        &format!("nbns.addr == {server} && nbns.nb_flags.group == 0"),
        "nbns.name",
    )[0]
    .split('<')
    .next()
    .unwrap()
    .to_string();
    let v = s
        .ok("analyze_host", json!({"pcap_file": file, "host": name}))
        .await;
    assert!(
        v["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == server),
        "{v}"
    );
    let answered = tshark_count(
        &file,
        &format!(
            "ip.src == {server} && tcp.srcport == 445 && tcp.flags.syn == 1 && tcp.flags.ack == 1 && !tcp.analysis.retransmission"
        ),
    );
    let smb = v["services_offered"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == "tcp/445")
        .unwrap_or_else(|| panic!("{v}"))
        .clone();
    assert_eq!(smb["answered"], answered);
    assert!(
        v["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["role"] == "server")
    );
    // every finding listed names the host
    for f in v["findings"].as_array().unwrap() {
        let text = f.to_string();
        assert!(
            text.contains("192.168.199.133") || text.contains("fe80::"),
            "{f}"
        );
    }
}

#[tokio::test]
async fn unknown_and_hostile_hosts_get_clear_errors() {
    let s = start().await;
    let file = fixture("zeek-wikipedia.pcap");
    let e = s
        .err(
            "analyze_host",
            json!({"pcap_file": file, "host": "10.99.99.99"}),
        )
        .await;
    assert!(e.contains("sent or received nothing"), "{e}");
    let e = s
        .err(
            "analyze_host",
            json!({"pcap_file": file, "host": "no-such-host.example"}),
        )
        .await;
    assert!(
        e.contains("no host named") && e.contains("upload.wikimedia.org"),
        "{e}"
    );
    for hostile in [
        "".to_string(),
        "a\nb".to_string(),
        "x".repeat(10_000),
        "ip.addr == 1.2.3.4 || frame".to_string(),
    ] {
        let e = s
            .err("analyze_host", json!({"pcap_file": file, "host": hostile}))
            .await;
        assert!(e.contains("host"), "{e}");
    }
    // the server still answers
    s.ok(
        "analyze_host",
        json!({"pcap_file": file, "host": "141.142.2.2"}),
    )
    .await;
}
