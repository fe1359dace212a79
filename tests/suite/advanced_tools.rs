//! The advanced toolset (so far: DNS) against Zeek's dns.log, suricata-verify and
//! tshark's own counts, and against a resolver the test runs in a network namespace.

use crate::common::*;
use serde_json::{Value, json};
use std::time::Duration;

fn rcode_count(v: &Value, rcode: &str) -> u64 {
    v["rcodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == rcode)
        .map(|r| r["count"].as_u64().unwrap())
        .unwrap_or(0)
}

#[tokio::test]
async fn dns_rcodes_and_pairing_match_recorded_facts() {
    let s = start().await;
    // Zeek dns.log: REFUSED 1, NOERROR 1 (a dynamic update refused by the server)
    let v = s
        .ok(
            "analyze_dns_resolution_issues",
            json!({"pcap_file": fixture("zeek-dns-dynamic-update.pcap")}),
        )
        .await;
    assert_eq!(rcode_count(&v, "REFUSED"), 1);
    assert_eq!(rcode_count(&v, "NOERROR"), 1);
    assert_eq!(v["unanswered"], 0); // tshark -2: no query without a response
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["severity"] == "high" && f["title"].as_str().unwrap().contains("REFUSED"))
    );
    // suricata-verify: one NXDOMAIN for dne.oisf.net
    let v = s
        .ok(
            "analyze_dns_resolution_issues",
            json!({"pcap_file": fixture("sv-dns-udp-nxdomain-soa.pcap")}),
        )
        .await;
    assert_eq!(rcode_count(&v, "NXDOMAIN"), 1);
    assert_eq!(v["problems"]["rows"][0]["name"], "dne.oisf.net");
    assert_eq!(v["problems"]["rows"][0]["rcode"], "NXDOMAIN");
    // DNS over TCP: two queries, both answered (tshark)
    let v = s
        .ok(
            "analyze_dns_resolution_issues",
            json!({"pcap_file": fixture("cs-dns_tcp.pcapng")}),
        )
        .await;
    assert_eq!(v["queries"], 2);
    assert!(v["tcp_queries"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["unanswered"], 0);
}

#[tokio::test]
async fn dns_on_wikipedia_separates_multicast() {
    let s = start().await;
    let file = fixture("zeek-wikipedia.pcap");
    let v = s
        .ok("analyze_dns_resolution_issues", json!({"pcap_file": file}))
        .await;
    // Zeek dns.log: 4 NXDOMAIN for search-domain suffixed names
    assert_eq!(rcode_count(&v, "NXDOMAIN"), 4);
    let nx: Vec<&Value> = v["problems"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["rcode"] == "NXDOMAIN")
        .collect();
    assert!(
        nx.iter()
            .all(|r| r["name"].as_str().unwrap().ends_with(".ncsa.uiuc.edu"))
    );
    // unicast queries equal tshark's count; unanswered mDNS/LLMNR are not "unanswered DNS"
    assert_eq!(
        v["queries"].as_u64().unwrap(),
        tshark_count(
            &file,
            "dns && dns.flags.response == 0 && !dns.retransmit_request_in"
        )
    );
    assert_eq!(v["unanswered"], 0);
    let mc = v["multicast"].as_array().unwrap();
    let llmnr = mc.iter().find(|m| m["protocol"] == "llmnr").unwrap();
    assert_eq!(
        llmnr["queries"].as_u64().unwrap(),
        tshark_count(&file, "llmnr && dns.flags.response == 0")
    );
    for f in v["findings"].as_array().unwrap() {
        assert!(f["severity"] == "low" || f["severity"] == "info", "{f}");
    }
}

/// A resolver in a namespace: NXDOMAIN for nx.test, REFUSED for refused.test, silence
/// for silent.test, NOERROR otherwise.
const RESOLVER: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 53))
while True:
    q, addr = s.recvfrom(512)
    i, labels = 12, []
    while q[i]:
        labels.append(q[i+1:i+1+q[i]].decode()); i += 1 + q[i]
    name = '.'.join(labels)
    if name.startswith('silent'):
        continue
    rcode = 3 if name.startswith('nx') else 5 if name.startswith('refused') else 0
    flags = (0x8180 | rcode).to_bytes(2, 'big')
    s.sendto(q[:2] + flags + q[4:6] + b'\x00\x00\x00\x00\x00\x00' + q[12:i+5], addr)
"#;

/// Sends one A query for `name`; true when an answer came within `wait`.
fn query(server: &str, name: &str, id: u16, wait: std::time::Duration) -> bool {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut q = id.to_be_bytes().to_vec();
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend(l.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    sock.send_to(&q, server).unwrap();
    let mut buf = [0u8; 512];
    sock.recv_from(&mut buf).is_ok()
}

#[tokio::test]
async fn dns_against_a_resolver_in_a_namespace() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let ns = Netns::create(11).expect("create netns and veth");
    let _resolver = ns.spawn_python(RESOLVER);
    // the resolver answers before the capture starts: on a loaded machine python may
    // take seconds to bind, and a query sent before then is one more unanswered query
    wait_until(20, "the resolver in the namespace never answered", || {
        query(
            "10.213.11.2:53",
            "probe.test",
            0x0fff,
            Duration::from_millis(200),
        )
    })
    .await;
    let s = start().await;
    let v = s
        .ok("start_packet_capture", json!({"interface": ns.host_if, "duration": 30, "capture_filter": "udp port 53", "output_file": "dns.pcapng"}))
        .await;
    let id = v["capture"]["capture_id"].as_str().unwrap().to_string();
    tokio::task::spawn_blocking(|| {
        std::thread::sleep(std::time::Duration::from_millis(500));
        for (i, name) in [
            "ok.test",
            "nx.test",
            "refused.test",
            "silent.test",
            "www.ok.test",
        ]
        .iter()
        .enumerate()
        {
            // wait for each answer (all but the silent one), so none is still on its
            // way when the capture stops
            let wait = if name.starts_with("silent") {
                300
            } else {
                5000
            };
            query(
                "10.213.11.2:53",
                name,
                0x1000 + i as u16,
                Duration::from_millis(wait),
            );
        }
    })
    .await
    .unwrap();
    s.ok("stop_packet_capture", json!({"capture_id": id})).await;
    let v = s
        .ok(
            "analyze_dns_resolution_issues",
            json!({"pcap_file": "dns.pcapng"}),
        )
        .await;
    assert_eq!(v["queries"], 5, "{v}");
    assert_eq!(rcode_count(&v, "NOERROR"), 2);
    assert_eq!(rcode_count(&v, "NXDOMAIN"), 1);
    assert_eq!(rcode_count(&v, "REFUSED"), 1);
    assert_eq!(v["unanswered"], 1);
    let rows = v["problems"]["rows"].as_array().unwrap();
    assert_eq!(rows[0]["name"], "silent.test", "unanswered first");
    assert!(rows[0]["rcode"].is_null());
    assert_eq!(v["resolvers"][0]["address"], "10.213.11.2");
    // failures: the REFUSED and the silent query; NXDOMAIN is an answer
    assert_eq!(v["resolvers"][0]["failures"], 2, "{}", v["resolvers"]);
    // one definition: the quality view counts the same failures
    let q = s
        .ok(
            "analyze_network_quality_metrics",
            json!({"pcap_file": "dns.pcapng"}),
        )
        .await;
    assert_eq!(
        q["errors"]["dns_failure_pct"].as_f64().unwrap(),
        40.0,
        "{}",
        q["errors"]
    );
    let titles: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["title"].as_str().unwrap())
        .collect();
    assert!(
        titles.iter().any(|t| t.contains("never answered")),
        "{titles:?}"
    );
    assert!(titles.iter().any(|t| t.contains("REFUSED")), "{titles:?}");
}

#[tokio::test]
async fn expert_information_grouped_with_first_frames() {
    let s = start().await;
    let name = "arkime-wireshark-retrans.pcap";
    let file = fixture(name);
    let f = facts(name);
    let v = s
        .ok(
            "analyze_expert_information",
            json!({"pcap_file": file, "limit": 100}),
        )
        .await;
    let groups = v["groups"]["rows"].as_array().unwrap();
    let retrans = groups
        .iter()
        .find(|g| g["message"] == "This frame is a (suspected) retransmission")
        .unwrap();
    assert_eq!(retrans["severity"], "note");
    assert_eq!(retrans["protocol"], "TCP");
    assert_eq!(
        retrans["count"],
        tshark_fact(&f, "tcp.analysis.retransmission")["value"]
    );
    // the drill-down filter selects exactly those frames, and the first frames are among them
    assert_eq!(
        tshark_count(&file, retrans["display_filter"].as_str().unwrap()),
        47
    );
    assert_eq!(retrans["first_frames"][0], 2);
    let rank = |g: &Value| {
        ["comment", "chat", "note", "warning", "error"]
            .iter()
            .position(|x| g["severity"] == *x)
            .unwrap()
    };
    let worst = groups.iter().map(rank).max().unwrap();
    assert_eq!(rank(&groups[0]), worst, "most severe first");
    assert_eq!(
        v["errors"].as_u64().unwrap(),
        groups
            .iter()
            .filter(|g| g["severity"] == "error")
            .map(|g| g["count"].as_u64().unwrap())
            .sum::<u64>()
    );
    // severity_filter keeps that severity and above
    let v = s
        .ok(
            "analyze_expert_information",
            json!({"pcap_file": file, "severity_filter": "warning"}),
        )
        .await;
    assert!(
        v["groups"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["severity"] == "error" || g["severity"] == "warning")
    );
    let e = s
        .err(
            "analyze_expert_information",
            json!({"pcap_file": file, "severity_filter": "bogus"}),
        )
        .await;
    assert!(e.contains("severity_filter"));
}

#[tokio::test]
async fn application_response_times_per_server() {
    let s = start().await;
    let file = fixture("zeek-http-methods.pcap");
    let v = s
        .ok(
            "analyze_application_response_times",
            json!({"pcap_file": file}),
        )
        .await;
    let overall = v["overall"].as_array().unwrap();
    let http = overall.iter().find(|o| o["protocol"] == "http").unwrap();
    assert_eq!(
        http["count"].as_u64().unwrap(),
        tshark_count(&file, "http.time")
    );
    let tcp = overall.iter().find(|o| o["protocol"] == "tcp").unwrap();
    assert_eq!(tcp["count"], 49); // tshark: 49 TCP conversations, all with a handshake
    let (min, med, p95, max) = (
        http["min_ms"].as_f64().unwrap(),
        http["median_ms"].as_f64().unwrap(),
        http["p95_ms"].as_f64().unwrap(),
        http["max_ms"].as_f64().unwrap(),
    );
    assert!(min <= med && med <= p95 && p95 <= max);
    let slowest = &v["slowest"][0];
    assert_eq!(slowest["ms"].as_f64().unwrap(), max);
    // the slowest transaction's frame is a response whose http.time is that long
    assert_eq!(
        tshark_count(
            &file,
            &format!(
                "frame.number == {} && http.time >= {:.3}",
                slowest["frame"],
                max / 1000.0 - 0.001
            )
        ),
        1
    );
    let v = s
        .ok(
            "analyze_application_response_times",
            json!({"pcap_file": file, "protocol": "dns"}),
        )
        .await;
    assert!(v["overall"].as_array().unwrap().is_empty());
    assert!(v["summary"].as_str().unwrap().contains("No dns"));
    let v = s
        .ok(
            "analyze_application_response_times",
            json!({"pcap_file": fixture("zeek-wikipedia.pcap"), "protocol": "dns"}),
        )
        .await;
    assert_eq!(
        v["overall"][0]["count"].as_u64().unwrap(),
        tshark_count(
            &fixture("zeek-wikipedia.pcap"),
            "dns.time && !mdns && !llmnr"
        )
    );
}

fn host<'a>(v: &'a Value, addr: &str) -> &'a Value {
    v["hosts"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["address"] == addr)
        .unwrap_or_else(|| panic!("{addr} not among the hosts: {v}"))
}

#[tokio::test]
async fn topology_hosts_gateways_vlans_and_a_diagram() {
    let s = start().await;
    // wikipedia browsing: one client, a Cisco router answering ARP for .1 in front of
    // the web servers and the resolver (Zeek dns.log: 141.142.2.2)
    let file = fixture("zeek-wikipedia.pcap");
    let v = s
        .ok(
            "analyze_network_topology",
            json!({"pcap_file": file, "limit": 50}),
        )
        .await;
    let gw = &v["gateways"]["rows"][0];
    assert_eq!(gw["mac"], "00:13:7f:be:8c:ff");
    assert_eq!(gw["addresses"], json!(["141.142.220.1"]));
    // the two other MACs that send from an IPv4 and an IPv6 address are dual-stack
    // hosts (tshark: their IPv6 sources are link-local or carry the MAC), not gateways
    assert_eq!(
        v["gateways"]["rows"].as_array().unwrap().len(),
        1,
        "{}",
        v["gateways"]["rows"]
    );
    for mac in ["00:17:f2:d7:cf:65", "f0:4d:a2:47:ba:25"] {
        let v6 = tshark()
            .args([
                "-n",
                "-r",
                &file,
                "-Y",
                &format!("eth.src == {mac} && ipv6"),
                "-T",
                "fields",
                "-e",
                "ipv6.src",
            ])
            .output()
            .unwrap();
        let v6 = String::from_utf8_lossy(&v6.stdout).to_string();
        let v4 = tshark_count(&file, &format!("eth.src == {mac} && ip"));
        assert!(
            v4 > 0 && !v6.trim().is_empty(),
            "{mac}: not dual-stack in tshark's eyes"
        );
        assert!(
            v6.lines()
                .all(|a| a.starts_with("fe80:") || a.contains("ff:fe")),
            "{mac}: {v6}"
        );
    }
    // the vendor is tshark's own OUI name for that MAC
    let out = tshark()
        .args([
            "-n",
            "-N",
            "m",
            "-r",
            &file,
            "-c",
            "200",
            "-T",
            "fields",
            "-e",
            "eth.src",
            "-e",
            "eth.src.oui_resolved",
        ])
        .output()
        .unwrap();
    let oui = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("00:13:7f:be:8c:ff\t").map(str::to_string))
        .unwrap();
    assert_eq!(gw["vendor"], oui.as_str());
    assert!(
        v["dns_servers"]
            .as_array()
            .unwrap()
            .contains(&json!("141.142.2.2"))
    );
    let resolver = host(&v, "141.142.2.2");
    assert_eq!(resolver["location"], "remote");
    assert!(
        resolver["roles"]
            .as_array()
            .unwrap()
            .contains(&json!("dns_server"))
    );
    let web = host(&v, "208.80.152.3");
    assert!(
        web["services"]
            .as_array()
            .unwrap()
            .contains(&json!("tcp/80"))
    );
    let client = host(&v, "141.142.220.118");
    assert_eq!(client["location"], "local");
    assert_eq!(client["macs"], json!(["00:24:7e:e0:1d:b5"]));
    assert!(
        v["subnets"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["prefix"] == "141.142.220.0/24")
    );
    // the busiest edge, in bytes, is the client and the main web server
    let e = &v["edges"]["rows"][0];
    let frames = tshark_count(
        &file,
        "ip.addr == 141.142.220.118 && ip.addr == 208.80.152.3",
    );
    assert!(frames > 0);
    assert_eq!(e["a"], "141.142.220.118");
    assert_eq!(e["b"], "208.80.152.3");
    assert_eq!(e["frames"].as_u64().unwrap(), frames);
    let m = v["mermaid"].as_str().unwrap();
    assert!(m.starts_with("flowchart LR\n"), "{m}");
    assert!(m.contains("141.142.220.118") && m.contains(" --- "), "{m}");

    // 802.1ad outer 200 + 802.1Q inner 2001 (tcpdump's own decode); ARP-only hosts
    let v = s
        .ok(
            "analyze_network_topology",
            json!({"pcap_file": fixture("tcpdump-802.1ad_QinQ.pcap")}),
        )
        .await;
    assert_eq!(v["vlans"]["rows"][0]["vlan"], "200/2001");
    assert_eq!(v["vlans"]["rows"][0]["frames"], 2);
    assert_eq!(host(&v, "172.21.79.97")["vlans"], json!(["200/2001"]));
    // 802.1Q in 802.1Q: outer 13, inner 10 (tshark: 5 frames tagged 13 and 10)
    let v = s
        .ok(
            "analyze_network_topology",
            json!({"pcap_file": fixture("zeek-q-in-q.pcap")}),
        )
        .await;
    assert_eq!(v["vlans"]["rows"][0]["vlan"], "13/10");
    assert_eq!(v["vlans"]["rows"][0]["frames"], 5);

    // two capture interfaces merged: both clients and the resolver they share
    let v = s
        .ok(
            "analyze_network_topology",
            json!({"pcap_file": fixture("zeek-pcapng-multi-interface.pcapng")}),
        )
        .await;
    assert_eq!(v["dns_servers"], json!(["1.1.1.1"]));
    host(&v, "10.0.0.4");
    host(&v, "172.17.0.2");
}
