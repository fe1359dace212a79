//! The metrics toolset's I/O graph and bandwidth tools against tshark's own counts on
//! recorded captures, and against a link the test rate-limits with `tc tbf`.

/// Invariants of the bandwidth view on every fixture: the average never exceeds the
/// peak (a capture shorter than a window is one window), and no host holds more than
/// all the bytes (traffic a host sends to itself counts once).
#[tokio::test]
async fn bandwidth_average_never_exceeds_peak_and_shares_stay_whole() {
    let s = start().await;
    let names = fixture_names();
    for name in &names {
        let r = s
            .call(
                "analyze_bandwidth_utilization",
                json!({"pcap_file": fixture(name)}),
            )
            .await;
        let Some(v) = r.structured_content else {
            continue;
        };
        let rates = &v["rates"];
        let (avg, peak) = (
            rates["average_bits_per_s"].as_f64().unwrap(),
            rates["peak_bits_per_s"].as_f64().unwrap(),
        );
        // windows are whole seconds but the capture's end is not: 2% for the last one
        assert!(
            avg <= peak * 1.02 + 1e-9,
            "{name}: average {avg} above peak {peak}"
        );
        for t in v["top_talkers"]["rows"].as_array().unwrap() {
            assert!(t["share_pct"].as_f64().unwrap() <= 100.0, "{name}: {t}");
        }
    }
    // a host talking to itself (loopback) holds 100% of the bytes, not 200%
    let a = [127, 0, 0, 1];
    let own = pcap_of(&[
        (
            1_700_000_000.0,
            tcp_segment(a, a, 5000, 6000, 1, 0, 0x02, &[]),
        ),
        (
            1_700_000_000.5,
            tcp_segment(a, a, 6000, 5000, 9, 2, 0x12, &[]),
        ),
    ]);
    std::fs::write(s.storage_file("self.pcap"), own).unwrap();
    let v = s
        .ok(
            "analyze_bandwidth_utilization",
            json!({"pcap_file": "self.pcap"}),
        )
        .await;
    let t = &v["top_talkers"]["rows"][0];
    assert_eq!(t["share_pct"].as_f64().unwrap(), 100.0, "{t}");
    assert_eq!(t["frames"], 2);
    // 0.5 s of capture in 1 s windows: one window, average equals peak
    let r = &v["rates"];
    assert_eq!(r["average_bits_per_s"], r["peak_bits_per_s"], "{v}");
}

/// tshark's filter for the retransmissions that count as loss (our one definition).
const LOSS_RETRANSMISSION: &str = "tcp.len > 0 && tcp.analysis.retransmission && !tcp.analysis.spurious_retransmission && tcp.flags.fin == 0";

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::*;
use base64::Engine as _;
use serde_json::json;

/// tshark's endpoint table row for one address: (frames, bytes).
fn tshark_endpoint(file: &str, addr: &str) -> (u64, u64) {
    let out = tshark()
        .args(["-n", "-r", file, "-q", "-z", "endpoints,ip"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(addr))
        .unwrap_or_else(|| panic!("{addr} not in tshark's endpoints"));
    let cols: Vec<u64> = row
        .split_whitespace()
        .skip(1)
        .map(|c| c.parse().unwrap())
        .collect();
    (cols[0], cols[1])
}

#[tokio::test]
async fn io_graph_counts_match_tshark_and_come_with_a_picture() {
    let s = start().await;
    let file = fixture("arkime-wireshark-retrans.pcap");
    let r = s
        .call(
            "generate_throughput_io_graph",
            json!({"pcap_file": file, "series_filters": ["tcp.analysis.retransmission"], "output_file": "retrans.png", "limit": 500}),
        )
        .await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let v = r.structured_content.clone().unwrap();
    // every packet lands in one bucket (capinfos: 108 packets)
    let frames: u64 = v["buckets"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["frames"].as_u64().unwrap())
        .sum();
    assert_eq!(frames, facts("arkime-wireshark-retrans.pcap")["packets"]);
    assert_eq!(v["series"][0]["frames"], frames);
    assert_eq!(
        v["series"][1]["frames"].as_u64().unwrap(),
        tshark_count(&file, "tcp.analysis.retransmission")
    );
    assert_eq!(v["interval_s"], 1.0); // 30.9 s: one-second buckets by default
    // bits per second is bytes * 8 / interval in every bucket
    for b in v["buckets"]["rows"].as_array().unwrap() {
        assert_eq!(
            b["bits_per_s"].as_f64().unwrap(),
            b["bytes"].as_f64().unwrap() * 8.0
        );
    }

    // the picture: MCP image content, a real PNG of the advertised size, also saved
    let img = r
        .content
        .iter()
        .find_map(|c| c.as_image())
        .expect("image content");
    assert_eq!(img.mime_type, "image/png");
    let png = base64::engine::general_purpose::STANDARD
        .decode(&img.data)
        .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1100, 520));
    assert_eq!(v["image"]["width"], 1100);
    let saved = s.storage_file("retrans.png");
    assert_eq!(std::fs::read(&saved).unwrap(), png);

    // one host's two directions add up to its traffic
    let v = s
        .ok(
            "generate_throughput_io_graph",
            json!({"pcap_file": file, "host": "10.10.10.10", "time_interval": 5}),
        )
        .await;
    let host_frames = tshark_count(&file, "ip.addr == 10.10.10.10");
    assert_eq!(
        v["series"][1]["frames"].as_u64().unwrap() + v["series"][2]["frames"].as_u64().unwrap(),
        host_frames
    );

    // bad input says what to do
    let e = s
        .err(
            "generate_throughput_io_graph",
            json!({"pcap_file": file, "series_filters": ["tcp.port in {80,443}"]}),
        )
        .await;
    assert!(e.contains("comma"), "{e}");
    let e = s
        .err(
            "generate_throughput_io_graph",
            json!({"pcap_file": file, "series_filters": ["tcp.bogus_field"]}),
        )
        .await;
    assert!(e.contains("tcp.bogus_field"), "{e}");
    let e = s
        .err(
            "generate_throughput_io_graph",
            json!({"pcap_file": file, "host": "10.0.0.1 || 1"}),
        )
        .await;
    assert!(e.contains("not an IP address"), "{e}");
    let e = s
        .err(
            "generate_throughput_io_graph",
            json!({"pcap_file": file, "output_file": "../escape.png"}),
        )
        .await;
    assert!(e.contains("not allowed"), "{e}");
}

#[tokio::test]
async fn bandwidth_totals_and_talkers_match_tshark() {
    let s = start().await;
    let file = fixture("zeek-wikipedia.pcap");
    let v = s
        .ok(
            "analyze_bandwidth_utilization",
            json!({"pcap_file": file, "limit": 3}),
        )
        .await;
    let f = facts("zeek-wikipedia.pcap");
    assert_eq!(v["total_frames"], f["packets"]);
    let top = &v["top_talkers"]["rows"][0];
    let addr = top["address"].as_str().unwrap();
    let (frames, bytes) = tshark_endpoint(&file, addr);
    assert_eq!(top["frames"].as_u64().unwrap(), frames);
    assert_eq!(
        top["bytes_sent"].as_u64().unwrap() + top["bytes_received"].as_u64().unwrap(),
        bytes
    );
    assert_eq!(v["top_talkers"]["shown"], 3);
    let rates = &v["rates"];
    assert!(rates["peak_bits_per_s"].as_f64() >= rates["p95_bits_per_s"].as_f64());
    assert!(rates["p95_bits_per_s"].as_f64() >= rates["median_bits_per_s"].as_f64());
    // protocol shares cover every byte
    let proto_bytes: u64 = s
        .ok(
            "analyze_bandwidth_utilization",
            json!({"pcap_file": file, "limit": 500}),
        )
        .await["top_protocols"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(proto_bytes, v["total_bytes"].as_u64().unwrap());
    let e = s
        .err(
            "analyze_bandwidth_utilization",
            json!({"pcap_file": file, "link_capacity_mbps": -1}),
        )
        .await;
    assert!(e.contains("link_capacity_mbps"), "{e}");
}

const SINK: &str = r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 5701)); s.listen(5)
while True:
    c, _ = s.accept()
    while c.recv(65536): pass
    c.close()
"#;

#[tokio::test]
async fn a_rate_limited_link_shows_as_saturated() {
    if !is_root() || std::process::Command::new("tc").arg("-V").output().is_err() {
        eprintln!("skipped: needs root and tc");
        return;
    }
    let ns = Netns::create(15).expect("create netns and veth");
    // 2 Mbit/s out of the host side: the capture on it sees what leaves the shaper
    assert!(
        std::process::Command::new("tc")
            .args([
                "qdisc",
                "add",
                "dev",
                &ns.host_if,
                "root",
                "tbf",
                "rate",
                "2mbit",
                "burst",
                "16kb",
                "latency",
                "200ms"
            ])
            .status()
            .unwrap()
            .success()
    );
    let sink = ns.spawn_python(SINK);
    let s = start().await;
    let id = s
        .start_capture(&ns.host_if, "tcp port 5701", "shaped.pcapng")
        .await;
    tokio::task::spawn_blocking(|| {
        let addr: SocketAddr = "10.213.15.2:5701".parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut c = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(c) => break c,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("sink never came up: {e}"),
            }
        };
        // 4 s at full speed into a 2 Mbit/s shaper
        let chunk = vec![b'x'; 16 * 1024];
        let until = std::time::Instant::now() + Duration::from_secs(4);
        while std::time::Instant::now() < until {
            c.write_all(&chunk).unwrap();
        }
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let _ = c.read(&mut [0u8; 16]);
    })
    .await
    .unwrap();
    s.stop_capture(&id).await;
    drop(sink);
    let v = s
        .ok(
            "analyze_bandwidth_utilization",
            json!({"pcap_file": "shaped.pcapng", "link_capacity_mbps": 2}),
        )
        .await;
    let peak = v["rates"]["peak_utilization_pct"].as_f64().unwrap();
    // frame bytes include headers the shaper also counts: close to, never far above, 100%
    assert!((75.0..=125.0).contains(&peak), "peak {peak}%: {v}");
    assert!(
        v["rates"]["windows_over_90_pct"].as_u64().unwrap() >= 2,
        "{v}"
    );
    let f = &v["findings"][0];
    assert!(f["severity"] == "high" || f["severity"] == "medium", "{f}");
    assert!(f["title"].as_str().unwrap().contains("saturated"), "{f}");
    let top = &v["top_conversations"]["rows"][0];
    assert_eq!(top["address_a"], "10.213.15.1");
    assert_eq!(top["address_b"], "10.213.15.2");
    // at 100 Mbit/s the same transfer is far from busy
    let v = s
        .ok(
            "analyze_bandwidth_utilization",
            json!({"pcap_file": "shaped.pcapng", "link_capacity_mbps": 100}),
        )
        .await;
    assert_eq!(v["findings"][0]["severity"], "info", "{v}");
}

#[tokio::test]
async fn quality_metrics_agree_with_tshark_and_the_grade_adds_up() {
    let s = start().await;
    // a lossy HTTP upload: 36 of 48 data segments are retransmissions (tshark), 31 of
    // them loss (not spurious, not resent with a FIN)
    let file = fixture("arkime-wireshark-retrans.pcap");
    let v = s
        .ok(
            "analyze_network_quality_metrics",
            json!({"pcap_file": file}),
        )
        .await;
    let data = tshark_count(&file, "tcp.len > 0");
    let retrans = tshark_count(&file, LOSS_RETRANSMISSION);
    assert_eq!(v["loss"]["tcp_data_segments"].as_u64().unwrap(), data);
    assert_eq!(v["loss"]["tcp_retransmissions"].as_u64().unwrap(), retrans);
    assert_eq!(
        v["loss"]["tcp_retransmission_rate_pct"].as_f64().unwrap(),
        (10000.0 * retrans as f64 / data as f64).round() / 100.0
    );
    // one definition: every tool that reports a TCP loss rate reports this one
    let rate = v["loss"]["tcp_retransmission_rate_pct"].as_f64().unwrap();
    let r = s
        .ok("analyze_tcp_retransmissions", json!({"pcap_file": file}))
        .await;
    assert_eq!(
        r["totals"]["retransmission_rate_pct"].as_f64().unwrap(),
        rate
    );
    assert_eq!(
        r["totals"]["loss_retransmissions"].as_u64().unwrap(),
        retrans
    );
    assert_eq!(
        r["totals"]["retransmissions"].as_u64().unwrap(),
        tshark_count(&file, "tcp.analysis.retransmission")
    );
    assert_eq!(
        r["totals"]["data_retransmissions"].as_u64().unwrap(),
        tshark_count(&file, "tcp.len > 0 && tcp.analysis.retransmission")
    );
    let c = s
        .ok("analyze_congestion_indicators", json!({"pcap_file": file}))
        .await;
    assert_eq!(c["retransmission_rate_pct"].as_f64().unwrap(), rate);
    let p = s
        .ok("analyze_network_performance", json!({"pcap_file": file}))
        .await;
    // one stream in this capture: its rate is the capture's
    assert_eq!(
        p["connections"]["rows"][0]["retransmission_rate_pct"]
            .as_f64()
            .unwrap(),
        rate,
        "{}",
        p["connections"]
    );
    // one teardown retransmission (close_notify resent with the FIN) on an 11-segment
    // connection is not a lossy path for any tool
    let ecdhe = fixture("zeek-ecdhe.pcap");
    assert_eq!(
        tshark_count(&ecdhe, "tcp.analysis.retransmission && tcp.flags.fin == 1"),
        1
    );
    assert_eq!(tshark_count(&ecdhe, LOSS_RETRANSMISSION), 0);
    for tool in [
        "analyze_tcp_retransmissions",
        "analyze_network_performance",
        "analyze_congestion_indicators",
        "analyze_network_quality_metrics",
    ] {
        let v = s.ok(tool, json!({"pcap_file": ecdhe})).await;
        for f in v["findings"].as_array().unwrap() {
            assert!(
                f["severity"] == "low" || f["severity"] == "info",
                "{tool}: {f}"
            );
        }
    }
    let g = &v["grade"];
    let penalties: f64 = g["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["penalty"].as_f64().unwrap())
        .sum();
    assert!((g["score"].as_f64().unwrap() - (100.0 - penalties).max(0.0)).abs() < 0.11);
    assert!(
        g["arithmetic"]
            .as_str()
            .unwrap()
            .ends_with(&format!("-> {}", g["letter"].as_str().unwrap()))
    );
    assert_ne!(g["letter"], "A", "{g}");
    assert_eq!(v["findings"][0]["severity"], "high");
    assert!(
        v["findings"][0]["title"]
            .as_str()
            .unwrap()
            .starts_with("loss")
    );

    // browsing over a clean path: NXDOMAIN answers are answers, not failures
    let file = fixture("zeek-wikipedia.pcap");
    let v = s
        .ok(
            "analyze_network_quality_metrics",
            json!({"pcap_file": file}),
        )
        .await;
    assert_eq!(
        v["errors"]["dns_queries"].as_u64().unwrap(),
        tshark_count(
            &file,
            "dns.flags.response == 0 && !dns.retransmit_request_in && !mdns && !llmnr"
        )
    );
    assert_eq!(
        v["errors"]["dns_nxdomain"].as_u64().unwrap(),
        tshark_count(&file, "dns.flags.rcode == 3 && !mdns && !llmnr")
    );
    assert_eq!(v["errors"]["dns_failure_pct"], 0.0);
    assert_eq!(v["grade"]["letter"], "A", "{}", v["grade"]);

    // a SIP call: jitter comes from RTP
    let v = s
        .ok(
            "analyze_network_quality_metrics",
            json!({"pcap_file": fixture("ndpi-sip.pcap")}),
        )
        .await;
    assert_eq!(v["jitter"]["source"], "rtp");
    assert!(v["jitter"]["jitter_ms"].as_f64().unwrap() > 0.0);

    // traceroute's time-exceeded replies are counted apart, not graded as errors
    let file = fixture("cs-icmp_traceroute.pcapng");
    let v = s
        .ok(
            "analyze_network_quality_metrics",
            json!({"pcap_file": file}),
        )
        .await;
    assert_eq!(
        v["errors"]["icmp_time_exceeded"].as_u64().unwrap(),
        tshark_count(&file, "icmp.type == 11")
    );
    assert!(v["latency"]["icmp_echo_rtt"]["count"].as_u64().unwrap() > 0);

    // a capture with no packets is refused, not graded: no "A" for silence
    let header = pcap_header();
    std::fs::write(s.storage_file("no-packets.pcap"), &header).unwrap();
    let e = s
        .err(
            "analyze_network_quality_metrics",
            json!({"pcap_file": "no-packets.pcap"}),
        )
        .await;
    assert!(e.contains("holds no packets"), "{e}");
    // and a scope with nothing measurable in it gets no grade either
    let v = s
        .ok(
            "analyze_network_quality_metrics",
            json!({"pcap_file": fixture("zeek-wikipedia.pcap"), "display_filter": "frame.number == 0"}),
        )
        .await;
    assert_eq!(v["grade"]["letter"], "n/a", "{v}");
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .contains("nothing measurable")
    );
}
