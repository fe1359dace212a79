//! `analyze_pcap_file` is the triage: on a capture with one clear problem its top
//! finding names that problem and the tool that explains it; on a clean capture it
//! raises nothing above low.

use crate::common::*;
use serde_json::{Value, json};

async fn triage(s: &Server, file: &str) -> Value {
    let v = s
        .ok("analyze_pcap_file", json!({ "pcap_file": file }))
        .await;
    assert_eq!(v["status"], "complete", "{v}");
    v
}

fn top(v: &Value) -> &Value {
    &v["findings"][0]
}

/// Titles compared without case and with hyphens as spaces ("self-signed").
fn norm(s: &Value) -> String {
    s.as_str().unwrap_or("").to_lowercase().replace('-', " ")
}

#[tokio::test]
async fn the_top_finding_names_the_one_problem() {
    let s = start().await;
    // (capture, what its corpus entry or oracle says is wrong, the tool that explains it)
    let cases = [
        ("cs-synscan.pcapng", "port scan", "analyze_security_threats"),
        (
            "cs-arppoison.pcapng",
            "arp poisoning",
            "analyze_security_threats",
        ),
        (
            "sv-tls-selfsigned-selks.pcap",
            "self signed",
            "analyze_security_threats",
        ),
        (
            "zeek-ftp-password-pass-command.pcap",
            "cleartext ftp",
            "analyze_security_threats",
        ),
        (
            "cs-http_dvwa_clearlogin.pcapng",
            "cleartext http",
            "analyze_security_threats",
        ),
        (
            "zeek-icmp-destunreach-udp.pcap",
            "udp to closed port",
            "analyze_network_quality_metrics",
        ),
        (
            "arkime-wireshark-retrans.pcap",
            "retransmissions",
            "analyze_tcp_retransmissions",
        ),
        (
            "cs-tcp_zerowindowdead.pcapng",
            "zero window",
            "analyze_tcp_zero_window",
        ),
        ("ndpi-tls_alert.pcap", "alert", "analyze_tls_alerts"),
        (
            "zeek-tls-1.2-handshake-failure.pcap",
            "handshake_failure alert",
            "analyze_tls_alerts",
        ),
        (
            "zeek-tls-expired-cert.pcap",
            "expired certificate",
            "extract_certificate_details",
        ),
    ];
    for (file, problem, tool) in cases {
        let path = fixture(file);
        let v = triage(&s, &path).await;
        let f = top(&v);
        assert!(
            norm(&f["title"]).contains(problem),
            "{file}: top finding is not about {problem}: {f}"
        );
        assert_eq!(f["next_step"]["tool"], tool, "{file}: {f}");
        assert_eq!(f["next_step"]["arguments"]["pcap_file"], path.as_str());
        assert!(
            v["summary"]
                .as_str()
                .unwrap()
                .contains(f["title"].as_str().unwrap()),
            "{file}: the summary does not lead with the top finding: {}",
            v["summary"]
        );
        // every family was checked, and said so
        let checks = v["checks"].as_array().unwrap();
        assert!(checks.len() >= 10, "{file}: {checks:?}");
        assert!(
            checks.iter().all(|c| c["error"].is_null()),
            "{file}: {checks:?}"
        );
    }
}

#[tokio::test]
async fn clean_captures_raise_nothing_above_low() {
    let s = start().await;
    for file in [
        "zeek-wikipedia.pcap",
        "zeek-tls13_wolfssl.pcap",
        "zeek-chrome-1250-tls-x25519-kyber.pcap",
        "zeek-100-continue-post.pcap",
        "cs-icmp_echo.pcapng",
        "cs-dns_tcp.pcapng",
        "ndpi-sip.pcap",
        "zeek-q-in-q.pcap",
        "zeek-pcapng-multi-interface.pcapng",
    ] {
        let v = triage(&s, &fixture(file)).await;
        let serious: Vec<&Value> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["severity"] == "medium" || f["severity"] == "high")
            .collect();
        assert!(serious.is_empty(), "{file}: {serious:?}");
        assert!(
            v["summary"]
                .as_str()
                .unwrap()
                .contains("No serious symptoms"),
            "{file}: {}",
            v["summary"]
        );
    }
}

/// A DNS A query for `name`, or its answer (NOERROR, one address).
fn dns_message(id: u16, name: &str, answer: bool) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(if answer { &[0x81, 0x80] } else { &[0x01, 0x00] });
    m.extend_from_slice(&[0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    if answer {
        m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 80]);
    }
    m
}

#[tokio::test]
async fn a_dead_resolver_among_two_leads_the_triage() {
    // a client asks two resolvers in turn for 30 s: the first answers in 2 ms, the
    // second never does
    let (client, live, dead) = ([10, 0, 0, 10], [10, 0, 0, 53], [10, 0, 0, 54]);
    let mut records = Vec::new();
    for i in 0..30u16 {
        let t = 1_700_000_000.0 + f64::from(i);
        let name = format!("host{i}.example.com");
        let port = 40_000 + i;
        let resolver = if i % 3 == 2 { dead } else { live };
        records.push((
            t,
            udp_datagram(client, resolver, port, 53, &dns_message(i, &name, false)),
        ));
        if resolver == live {
            records.push((
                t + 0.002,
                udp_datagram(live, client, 53, port, &dns_message(i, &name, true)),
            ));
        }
    }
    let s = start().await;
    let path = s.storage_file("two-resolvers.pcap");
    std::fs::write(&path, pcap_of(&records)).unwrap();
    let v = triage(&s, "two-resolvers.pcap").await;
    let f = top(&v);
    assert!(norm(&f["title"]).contains("never answered"), "{f}");
    assert_eq!(f["next_step"]["tool"], "analyze_dns_resolution_issues");
    assert!(
        f["evidence"]["endpoints"].to_string().contains("10.0.0.54"),
        "{f}"
    );
    // the DNS view counts what the test sent: 10 unanswered, all at the dead resolver
    let d = s
        .ok(
            "analyze_dns_resolution_issues",
            json!({"pcap_file": "two-resolvers.pcap"}),
        )
        .await;
    assert_eq!(d["queries"], 30);
    assert_eq!(d["unanswered"], 10);
    let dead_row = d["resolvers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == "10.0.0.54")
        .unwrap();
    assert_eq!(dead_row["failures"], 10);
    assert_eq!(dead_row["answered"], 0);
    // the topology calls both resolvers resolvers, the silent one too
    let t = s
        .ok(
            "analyze_network_topology",
            json!({"pcap_file": "two-resolvers.pcap", "limit": 50}),
        )
        .await;
    for resolver in ["10.0.0.53", "10.0.0.54"] {
        let host = t["hosts"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["address"] == resolver)
            .unwrap_or_else(|| panic!("no host {resolver}: {t}"));
        assert!(
            host["roles"].to_string().contains("dns_server"),
            "{resolver}: {host}"
        );
        assert!(!host["roles"].to_string().contains("client"), "{host}");
    }
}

#[tokio::test]
async fn an_sni_the_certificate_does_not_cover_leads_the_triage() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("skipped: openssl not installed");
        return;
    }
    // one TLS 1.2 session on loopback: the client asks for www.evil.test, the server
    // presents its certificate for www.good.test and *.good.test
    let s = start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = 46461u16;
    let id = s
        .start_capture("lo", &format!("tcp port {port}"), "sni-mismatch.pcapng")
        .await;
    let dirp = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let server = openssl_server(&dirp, port, &["-tls1_2"]);
        openssl_client(server.port, "www.evil.test", &["-tls1_2"]);
    })
    .await
    .unwrap();
    s.stop_capture(&id).await;
    let v = triage(&s, "sni-mismatch.pcapng").await;
    let f = top(&v);
    assert!(norm(&f["title"]).contains("does not cover the sni"), "{f}");
    assert_eq!(f["next_step"]["tool"], "analyze_sni_mismatches");
    assert!(
        f["detail"].as_str().unwrap().contains("www.evil.test"),
        "{f}"
    );
}

/// ICMP destination unreachable from router `by`, quoting `original` (an Ethernet
/// frame): the IPv4 header and the first 8 bytes after it, as routers send.
fn icmp_unreachable(by: [u8; 4], to: [u8; 4], code: u8, original: &[u8]) -> Vec<u8> {
    let mut icmp = vec![3, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&original[14..14 + 28]);
    ipv4_frame(by, to, 1, &icmp)
}

#[tokio::test]
async fn unreachable_destinations_are_named_with_their_router() {
    // a client sends to two addresses; its router answers host unreachable for one
    // (3 times) and network unreachable for the other (2 times)
    let (client, router) = ([10, 0, 0, 5], [10, 0, 0, 1]);
    let (host, net) = ([10, 9, 9, 9], [172, 31, 0, 1]);
    let mut records = Vec::new();
    let mut t = 1_700_000_000.0;
    for (dst, code, n) in [(host, 1u8, 3), (net, 0u8, 2)] {
        for i in 0..n {
            let d = udp_datagram(client, dst, 40_000 + i, 5000, b"hello");
            records.push((t, d.clone()));
            records.push((t + 0.001, icmp_unreachable(router, client, code, &d)));
            t += 1.0;
        }
    }
    let s = start().await;
    std::fs::write(s.storage_file("unreachable.pcap"), pcap_of(&records)).unwrap();
    let q = s
        .ok(
            "analyze_network_quality_metrics",
            json!({"pcap_file": "unreachable.pcap"}),
        )
        .await;
    let f = q["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| norm(&f["title"]).starts_with("unreachable destination"))
        .unwrap_or_else(|| panic!("no unreachable finding: {q}"));
    assert!(
        norm(&f["title"]).contains("5 icmp error(s) for 2 destination(s)"),
        "{f}"
    );
    let detail = f["detail"].as_str().unwrap();
    assert!(
        detail.contains("host unreachable: 10.9.9.9 (3x, reported by 10.0.0.1)"),
        "{detail}"
    );
    assert!(
        detail.contains("network unreachable: 172.31.0.1 (2x, reported by 10.0.0.1)"),
        "{detail}"
    );
    // and the triage shows it
    let v = triage(&s, "unreachable.pcap").await;
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| norm(&f["title"]).starts_with("unreachable destination")),
        "{v}"
    );
}
