//! The index pass split by flow across tsharks (PCAP_WORKERS) answers exactly what one
//! pass answers: every file tool's result with two workers is compared with its result
//! with one, on every fixture and on a capture this test builds to stress the split
//! (IPv4 and IPv6 fragments, 802.1Q and QinQ tags, ICMP and ICMPv6 errors quoting
//! flows of other address pairs, DNS retransmissions and HTTP answers, whose frame
//! references must be mapped back).

use std::path::Path;

use crate::common::*;
use serde_json::{Value, json};

/// The result without what differs between two runs of one build (wall times) and the
/// commands, which both list the same way but are not what is compared.
fn comparable(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, _| !matches!(k.as_str(), "tshark_commands" | "elapsed_s" | "timing"));
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

/// Tools answered from the capture index, each called with only `pcap_file`.
const INDEX_TOOLS: &[&str] = &[
    "analyze_pcap_file",
    "analyze_application_response_times",
    "analyze_bandwidth_utilization",
    "analyze_congestion_indicators",
    "analyze_connection_lifecycle",
    "analyze_connection_timeouts",
    "analyze_dns_resolution_issues",
    "analyze_expert_information",
    "analyze_icmp_errors",
    "analyze_mtu_fragmentation",
    "analyze_network_latency",
    "analyze_network_performance",
    "analyze_network_quality_metrics",
    "analyze_network_topology",
    "analyze_packet_timing_issues",
    "analyze_protocol_anomalies",
    "analyze_quic_traffic",
    "analyze_security_threats",
    "analyze_slowness",
    "analyze_sni_mismatches",
    "analyze_tcp_resets",
    "analyze_tcp_retransmissions",
    "analyze_tcp_window_scaling",
    "analyze_tcp_zero_window",
    "analyze_tls_alerts",
    "analyze_tls_handshakes",
    "check_capture_trust",
    "detect_arp_spoofing",
    "detect_dns_tunneling",
    "extract_credentials",
    "extract_http_requests",
    "extract_tls_cipher_analysis",
    "generate_throughput_io_graph",
    "generate_traffic_timeline",
    "get_events_around",
    "query_packets",
];

/// Every index tool's comparable results on `file`, in order.
async fn answers(s: &Server, file: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for tool in INDEX_TOOLS {
        let args = json!({"pcap_file": file.display().to_string(), "limit": 500});
        let r = s.call(tool, args).await;
        out.push(match r.structured_content {
            Some(v) => comparable(v),
            None => json!({"error": text(&r)}),
        });
    }
    out
}

/// The first place two results differ, for the failure message.
fn first_difference(a: &Value, b: &Value, path: &str) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                if x.get(k) != y.get(k) {
                    return first_difference(
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        &format!("{path}.{k}"),
                    );
                }
            }
            path.to_string()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, w)) in x.iter().zip(y).enumerate() {
                if u != w {
                    return first_difference(u, w, &format!("{path}[{i}]"));
                }
            }
            path.to_string()
        }
        _ => format!("{path}: {a:.200} vs {b:.200}"),
    }
}

// ---- a capture built to stress the split -------------------------------------------

fn ether(vlans: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    for (i, id) in vlans.iter().enumerate() {
        // the outer tag of two is 802.1ad, as QinQ switches send it
        let tpid: u16 = if vlans.len() == 2 && i == 0 {
            0x88a8
        } else {
            0x8100
        };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 header and payload; `frag` is (identification, offset in 8-byte units, more).
fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, frag: (u16, u16, bool), payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let flags = (u16::from(frag.2) << 13) | frag.1;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&frag.0.to_be_bytes());
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

fn v6addr(host: u16) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    a[14..].copy_from_slice(&host.to_be_bytes());
    a
}

fn ipv6(src: u16, dst: u16, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&v6addr(src));
    p.extend_from_slice(&v6addr(dst));
    p.extend_from_slice(payload);
    p
}

fn dns_query(id: u16, name: &str, response: bool) -> Vec<u8> {
    let mut d = id.to_be_bytes().to_vec();
    d.extend_from_slice(if response {
        &[0x81, 0x83]
    } else {
        &[0x01, 0x00]
    });
    d.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        d.push(label.len() as u8);
        d.extend_from_slice(label.as_bytes());
    }
    d.extend_from_slice(&[0, 0, 1, 0, 1]);
    d
}

/// Interleaved traffic of many address pairs, so that both partitions get flows of
/// every kind.
fn stress_capture(rounds: usize) -> Vec<u8> {
    let mut recs: Vec<(f64, Vec<u8>)> = Vec::new();
    let mut t = 1_700_000_000.0;
    let mut send = |f: Vec<u8>| {
        t += 0.001;
        recs.push((t, f));
    };
    let (syn, ack, psh_ack, fin_ack) = (0x02, 0x10, 0x18, 0x11);
    for i in (0..rounds).flat_map(|_| 0..24u8) {
        let client = [10, 1, 0, 10 + i];
        let server = [10, 2, 0, 1 + i % 5];
        let router = [10, 9, 9, 1 + i % 3];
        let resolver = [10, 3, 0, 53];
        let vlans: &[u16] = match i % 3 {
            0 => &[],
            1 => &[100],
            _ => &[200, 30],
        };
        let v4 = |src, dst, proto, frag, payload: &[u8]| {
            ether(vlans, 0x0800, &ipv4(src, dst, proto, frag, payload))
        };
        // a packet that is not a fragment, with identification `id`
        let whole = |id: u16| (id, 0, false);
        // an HTTP exchange, a retransmitted request included, and a DNS query asked
        // twice and answered NXDOMAIN
        let port = 40_000 + u16::from(i);
        let req = format!("GET /item/{i} HTTP/1.1\r\nHost: shop{i}.example\r\n\r\n");
        let resp = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let end = 101 + req.len() as u32;
        let (dns_port, qname) = (5000 + u16::from(i), format!("host{i}.corp.example"));
        let query = udp_l4(dns_port, 53, &dns_query(u16::from(i), &qname, false));
        let request = tcp_l4(port, 80, 101, 501, psh_ack, req.as_bytes());
        send(v4(
            client,
            server,
            6,
            whole(1),
            &tcp_l4(port, 80, 100, 0, syn, &[]),
        ));
        send(v4(
            server,
            client,
            6,
            whole(2),
            &tcp_l4(80, port, 500, 101, syn | ack, &[]),
        ));
        send(v4(
            client,
            server,
            6,
            whole(3),
            &tcp_l4(port, 80, 101, 501, ack, &[]),
        ));
        send(v4(client, server, 6, whole(4), &request));
        if i % 4 == 0 {
            send(v4(client, server, 6, whole(5), &request));
        }
        send(v4(client, resolver, 17, whole(6), &query));
        send(v4(client, resolver, 17, whole(7), &query));
        let answer = tcp_l4(80, port, 501, end, psh_ack, resp.as_bytes());
        send(v4(server, client, 6, whole(8), &answer));
        let nxdomain = udp_l4(53, dns_port, &dns_query(u16::from(i), &qname, true));
        send(v4(resolver, client, 17, whole(9), &nxdomain));
        // a fragmented UDP datagram (3 fragments), its middle fragment late
        let big = udp_l4(7000, 7001, &vec![i; 2000]);
        let id = 0x4000 + u16::from(i);
        send(v4(client, server, 17, (id, 0, true), &big[..1000]));
        // a port unreachable from a router, about the client's datagrams to the server
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&ipv4(client, server, 17, (id, 0, true), &big[..8]));
        send(v4(router, client, 1, whole(10), &icmp));
        send(v4(client, server, 17, (id, 250, false), &big[2000..]));
        send(v4(client, server, 17, (id, 125, true), &big[1000..2000]));
        send(v4(
            client,
            server,
            6,
            whole(11),
            &tcp_l4(port, 80, end, 506, fin_ack, &[]),
        ));
        send(v4(
            server,
            client,
            6,
            whole(12),
            &tcp_l4(80, port, 506, end + 1, fin_ack, &[]),
        ));
        // IPv6: a TCP exchange, a fragmented UDP datagram, a packet too big about it
        let (a6, b6, r6) = (0x100 + u16::from(i), 0x200 + u16::from(i % 4), 0x900);
        let v6 =
            |src, dst, next, payload: &[u8]| ether(vlans, 0x86dd, &ipv6(src, dst, next, payload));
        let p6 = 50_000 + u16::from(i);
        send(v6(a6, b6, 6, &tcp_l4(p6, 443, 1, 0, syn, &[])));
        send(v6(b6, a6, 6, &tcp_l4(443, p6, 9, 2, syn | ack, &[])));
        send(v6(a6, b6, 6, &tcp_l4(p6, 443, 2, 10, ack, &[])));
        let dgram = udp_l4(6000, 6001, &vec![i; 1600]);
        for (k, (range, more)) in [(0..1200usize, true), (1200..dgram.len(), false)]
            .into_iter()
            .enumerate()
        {
            let offset = (range.start / 8) as u16;
            let mut frag = vec![17, 0];
            frag.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
            frag.extend_from_slice(&(0x7000_0000u32 + u32::from(i)).to_be_bytes());
            frag.extend_from_slice(&dgram[range]);
            send(v6(a6, b6, 44, &frag));
            if k == 0 {
                let mut ptb = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
                let quoted = tcp_l4(p6, 443, 2, 10, psh_ack, &[0; 32]);
                ptb.extend_from_slice(&ipv6(a6, b6, 6, &quoted));
                send(v6(r6, a6, 58, &ptb));
            }
        }
        // ARP, which stays in one partition
        let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1];
        arp.extend_from_slice(&client);
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&server);
        send(ether(&[], 0x0806, &arp));
    }
    pcap_of(&recs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_answer_what_one_pass_answers() {
    let dir = tempfile::tempdir().unwrap();
    let stress = dir.path().join("split-stress.pcap");
    std::fs::write(&stress, stress_capture(1)).unwrap();
    let mut files: Vec<std::path::PathBuf> =
        fixture_names().iter().map(|n| fixtures().join(n)).collect();
    files.push(stress.clone());
    let allowed = format!("{}:{}", fixtures().display(), dir.path().display());
    // each server's tshark is the real one behind a script that notes its arguments:
    // how the split ran is seen, not assumed
    let spy = |name: &str| {
        let log = dir.path().join(format!("{name}.log"));
        let script = dir.path().join(format!("tshark-{name}"));
        let real = which_tshark();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        (script.display().to_string(), log)
    };
    let (tshark_one, log_one) = spy("one");
    let (tshark_two, log_two) = spy("two");
    let one = start_with(&[
        ("PCAP_WORKERS", "1"),
        ("PCAP_ALLOWED_DIRS", &allowed),
        ("WIRESHARK_PATH", &tshark_one),
    ])
    .await;
    let two = start_with(&[
        ("PCAP_WORKERS", "2"),
        ("PCAP_SPLIT_MIN_MB", "0"),
        ("PCAP_ALLOWED_DIRS", &allowed),
        ("WIRESHARK_PATH", &tshark_two),
    ])
    .await;
    let mut differences = Vec::new();
    for f in &files {
        let (a, b) = tokio::join!(answers(&one, f), answers(&two, f));
        for ((tool, x), y) in INDEX_TOOLS.iter().zip(&a).zip(&b) {
            if x != y {
                differences.push(format!(
                    "{} {tool}: {}",
                    f.file_name().unwrap().to_string_lossy(),
                    first_difference(x, y, "")
                ));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));

    // the captures really were split: two tsharks read their partitions from stdin
    // for each capture that is not set up through signalling (see index::parallel),
    // and none with one worker
    let from_stdin = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" -r - "))
            .count()
    };
    eprintln!(
        "{} tsharks read partitions for {} captures",
        from_stdin(&log_two),
        files.len()
    );
    assert_eq!(from_stdin(&log_one), 0);
    assert!(
        from_stdin(&log_two) >= 2 * (files.len() - 8),
        "{} tsharks read from stdin for {} captures",
        from_stdin(&log_two),
        files.len()
    );
}

/// The real tshark, found as the server finds it.
fn which_tshark() -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", "command -v tshark"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A split pass stopped at its time limit answers with the limit's message and leaves
/// no tshark behind, both of its tsharks having run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_pass_past_its_time_limit_leaves_no_tshark() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("split-slow.pcap");
    std::fs::write(&big, stress_capture(300)).unwrap();
    let s = start_with(&[
        ("PCAP_WORKERS", "2"),
        ("PCAP_SPLIT_MIN_MB", "0"),
        ("PCAP_TSHARK_TIMEOUT", "2"),
        ("PCAP_CALL_DEADLINE", "60"),
        ("PCAP_ALLOWED_DIRS", &dir.path().display().to_string()),
    ])
    .await;
    let call = spawn_call(
        s.client.peer(),
        "analyze_pcap_file",
        json!({"pcap_file": big.display().to_string()}),
    );
    let pid = s.pid;
    wait_until(20, "two tsharks at once", || {
        children_named(pid, "tshark").len() >= 2
    })
    .await;
    let (_, r) = call.await.unwrap();
    let r = r.unwrap();
    let message = text(&r);
    assert_eq!(r.is_error, Some(true), "{message}");
    assert!(message.contains("did not finish within 2 s"), "{message}");
    wait_until(10, "no tshark left", || {
        children_named(pid, "tshark").is_empty()
    })
    .await;
}
