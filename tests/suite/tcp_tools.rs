//! The TCP and performance tools against tshark's own counts and Zeek's conn.log.

use crate::common::*;
use serde_json::{Value, json};

const TCP_TOOLS: &[&str] = &[
    "analyze_tcp_retransmissions",
    "analyze_tcp_zero_window",
    "analyze_tcp_window_scaling",
    "analyze_packet_timing_issues",
    "analyze_congestion_indicators",
    "analyze_connection_lifecycle",
    "analyze_network_performance",
    "analyze_network_latency",
];

fn fact_value(f: &Value, fact: &str) -> u64 {
    f["truth"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["origin"] == "tshark-4.0.17" && t["fact"] == fact)
        .unwrap_or_else(|| panic!("no fact {fact}"))["value"]
        .as_u64()
        .unwrap()
}

/// Rows of a Zeek conn.log: (orig "h:p", resp "h:p", proto, conn_state, history).
fn zeek_conns(name: &str) -> Vec<(String, String, String, String, String)> {
    let ep = |h: &str, p: &str| {
        if h.contains(':') {
            format!("[{h}]:{p}")
        } else {
            format!("{h}:{p}")
        }
    };
    zeek_log(&format!("zeek-conn/{name}"))
        .into_iter()
        .map(|c| {
            (
                ep(&c["id.orig_h"], &c["id.orig_p"]),
                ep(&c["id.resp_h"], &c["id.resp_p"]),
                c["proto"].clone(),
                c["conn_state"].clone(),
                c["history"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn lifecycle_states_and_histories_agree_with_zeek() {
    let s = start().await;
    for (pcap, log) in [
        ("zeek-wikipedia.pcap", "zeek-wikipedia.conn.log"),
        ("zeek-ftp-ipv4.pcap", "zeek-ftp-ipv4.conn.log"),
        ("zeek-mixed-vlan-mpls.pcap", "zeek-mixed-vlan-mpls.conn.log"),
    ] {
        let v = s
            .ok(
                "analyze_connection_lifecycle",
                json!({"pcap_file": fixture(pcap), "limit": 500}),
            )
            .await;
        let rows = v["connections"]["rows"].as_array().unwrap();
        let zeek: Vec<_> = zeek_conns(log)
            .into_iter()
            .filter(|c| c.2 == "tcp")
            .collect();
        assert_eq!(
            rows.len(),
            zeek.len(),
            "{pcap}: one row per Zeek TCP connection"
        );
        for (orig, resp, _, state, history) in &zeek {
            let row = rows
                .iter()
                .find(|r| r["client"] == *orig && r["server"] == *resp)
                .unwrap_or_else(|| {
                    panic!("{pcap}: Zeek connection {orig} -> {resp} missing or reversed")
                });
            assert_eq!(row["state"], *state, "{pcap} {orig} -> {resp}");
            // Zeek's history and ours use the same letters for the same events
            assert_eq!(row["history"], *history, "{pcap} {orig} -> {resp}");
        }
    }
}

#[tokio::test]
async fn retransmission_counts_equal_tshark() {
    let s = start().await;
    let name = "arkime-wireshark-retrans.pcap";
    let f = facts(name);
    let v = s
        .ok(
            "analyze_tcp_retransmissions",
            json!({"pcap_file": fixture(name)}),
        )
        .await;
    let t = &v["totals"];
    assert_eq!(
        t["retransmissions"],
        fact_value(&f, "retransmissions (tcp.analysis.retransmission)")
    );
    assert_eq!(
        t["fast_retransmissions"],
        fact_value(&f, "fast retransmissions")
    );
    assert_eq!(t["duplicate_acks"], fact_value(&f, "duplicate ACKs"));
    assert_eq!(
        t["lost_segments"],
        fact_value(&f, "previous segment not captured")
    );
    assert_eq!(
        t["spurious_retransmissions"].as_u64().unwrap(),
        tshark_count(&fixture(name), "tcp.analysis.spurious_retransmission")
    );
    let row = &v["streams"]["rows"][0];
    assert_eq!(
        row["retransmissions_client_to_server"].as_u64().unwrap()
            + row["retransmissions_server_to_client"].as_u64().unwrap(),
        47
    );
    // the drill-down filter shows exactly the stream's retransmissions in tshark
    assert_eq!(
        tshark_count(&fixture(name), row["display_filter"].as_str().unwrap()),
        47
    );
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["severity"] == "high")
    );

    let v = s
        .ok(
            "analyze_packet_timing_issues",
            json!({"pcap_file": fixture(name)}),
        )
        .await;
    assert_eq!(v["out_of_order"], fact_value(&f, "out-of-order segments"));
    assert_eq!(v["keep_alives"], fact_value(&f, "keep-alives"));
    assert_eq!(v["duplicate_acks"], 27);
}

#[tokio::test]
async fn zero_window_who_and_how_long() {
    let s = start().await;
    let name = "cs-tcp_zerowindowdead.pcapng";
    let f = facts(name);
    let v = s
        .ok(
            "analyze_tcp_zero_window",
            json!({"pcap_file": fixture(name)}),
        )
        .await;
    assert_eq!(v["zero_window_events"], fact_value(&f, "zero window"));
    let r = &v["streams"]["rows"][0];
    // the client (port 38760) stopped reading; the web server had to wait
    assert!(
        r["advertised_by"].as_str().unwrap().ends_with(":38760"),
        "{r}"
    );
    assert!(r["stalled_sender"].as_str().unwrap().ends_with(":80"));
    assert_eq!(r["never_recovered"], true);
    assert!(r["stall_total_s"].as_f64().unwrap() > 10.0);
    assert!(
        v["findings"][0]["title"]
            .as_str()
            .unwrap()
            .contains("never reopened")
    );
    let c = s
        .ok(
            "analyze_congestion_indicators",
            json!({"pcap_file": fixture(name)}),
        )
        .await;
    assert!(c["verdict"].as_str().unwrap().contains("receiver_limited"));
    let t = s
        .ok(
            "analyze_packet_timing_issues",
            json!({"pcap_file": fixture(name)}),
        )
        .await;
    assert_eq!(t["keep_alives"], fact_value(&f, "keep-alives"));
}

#[tokio::test]
async fn window_scaling_options_and_invalid_shift() {
    let s = start().await;
    let v = s
        .ok(
            "analyze_tcp_window_scaling",
            json!({"pcap_file": fixture("zeek-window-scale-range.pcap")}),
        )
        .await;
    let r = &v["streams"]["rows"][0];
    // tshark: shift values 255 and 7 in SYN/SYN-ACK
    let shifts = [
        r["client_syn"]["wscale"].as_u64().unwrap(),
        r["server_syn"]["wscale"].as_u64().unwrap(),
    ];
    assert!(shifts.contains(&255) && shifts.contains(&7), "{r}");
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["title"].as_str().unwrap().contains("above 14"))
    );
    let v = s
        .ok(
            "analyze_tcp_window_scaling",
            json!({"pcap_file": fixture("cs-tcp_zerowindowdead.pcapng")}),
        )
        .await;
    assert_eq!(v["unknown"], 1, "no handshake captured: scale unknown");
    let v = s
        .ok(
            "analyze_tcp_window_scaling",
            json!({"pcap_file": fixture("zeek-http-methods.pcap")}),
        )
        .await;
    // tshark: wscale 6 and 7 on every one of the 49 handshakes
    assert_eq!(v["negotiated"], 49);
}

#[tokio::test]
async fn refused_connection_and_scan_storm_is_summarised() {
    let s = start().await;
    let v = s
        .ok(
            "analyze_connection_lifecycle",
            json!({"pcap_file": fixture("cs-tcp_refuseconnection.pcapng")}),
        )
        .await;
    assert_eq!(v["states"][0]["state"], "REJ");
    assert!(
        v["findings"][0]["title"]
            .as_str()
            .unwrap()
            .contains("refused")
    );

    let name = "cs-synscan.pcapng";
    let f = facts(name);
    let r = s
        .call(
            "analyze_connection_lifecycle",
            json!({"pcap_file": fixture(name)}),
        )
        .await;
    let size = text(&r).len();
    assert!(
        size < 20_000,
        "default output on {} streams is {size} bytes",
        fact_value(&f, "TCP conversations")
    );
    let v = r.structured_content.unwrap();
    assert_eq!(
        v["connections"]["total"],
        fact_value(&f, "TCP conversations")
    );
    assert_eq!(v["connections"]["shown"], 20);
    let findings = v["findings"].as_array().unwrap();
    let scan = findings
        .iter()
        .find(|f| f["title"].as_str().unwrap().starts_with("Port scan"))
        .expect("scan finding");
    assert_eq!(scan["severity"], "high");
    assert!(
        scan["title"].as_str().unwrap().contains("1000 ports"),
        "{scan}"
    ); // tshark: 1000 distinct ports
    assert!(
        scan["detail"].as_str().unwrap().contains("22, 53, 80"),
        "{scan}"
    );
    // the storm is one finding, not one per port
    assert!(findings.len() <= 4, "{findings:?}");
    for tool in TCP_TOOLS {
        let r = s.call(tool, json!({"pcap_file": fixture(name)})).await;
        assert!(text(&r).len() < 20_000, "{tool} default output too big");
    }
}

#[tokio::test]
async fn clean_captures_yield_no_medium_or_high_findings() {
    let s = start().await;
    for name in ["zeek-ftp-ipv4.pcap", "zeek-wikipedia.pcap"] {
        for tool in TCP_TOOLS {
            let v = s.ok(tool, json!({"pcap_file": fixture(name)})).await;
            for f in v["findings"].as_array().unwrap() {
                assert!(
                    f["severity"] == "low" || f["severity"] == "info",
                    "{tool} on clean {name}: {f}"
                );
            }
        }
    }
}

#[tokio::test]
async fn tcp_tools_share_one_pass_and_latency_percentiles() {
    let s = start().await;
    let file = fixture("zeek-http-methods.pcap");
    let a = s
        .ok("analyze_tcp_retransmissions", json!({"pcap_file": file}))
        .await;
    let b = s
        .ok("analyze_connection_lifecycle", json!({"pcap_file": file}))
        .await;
    // the second tool reports the same (cached) model pass
    assert_eq!(a["tshark_commands"], b["tshark_commands"]);
    let l = s
        .ok("analyze_network_latency", json!({"pcap_file": file}))
        .await;
    assert_eq!(
        l["http"]["count"].as_u64().unwrap(),
        tshark_count(&file, "http.time")
    );
    assert_eq!(l["tcp_handshake"]["count"], 49);
    let med = l["http"]["median_ms"].as_f64().unwrap();
    let p95 = l["http"]["p95_ms"].as_f64().unwrap();
    assert!(
        l["http"]["min_ms"].as_f64().unwrap() <= med
            && med <= p95
            && p95 <= l["http"]["max_ms"].as_f64().unwrap()
    );
    let icmp = s
        .ok(
            "analyze_network_latency",
            json!({"pcap_file": fixture("cs-icmp_echo.pcapng")}),
        )
        .await;
    assert_eq!(icmp["icmp_echo"]["count"], 4); // tshark: 4 echo replies
    let p = s
        .ok(
            "analyze_network_performance",
            json!({"pcap_file": file, "limit": 5}),
        )
        .await;
    assert_eq!(p["tcp_connections"], 49);
    assert_eq!(p["connections"]["shown"], 5);
    assert!(p["overall_goodput_bps"].as_f64().unwrap() > 0.0);
    // a display filter scopes the model
    let f = s
        .ok(
            "analyze_connection_lifecycle",
            json!({"pcap_file": file, "display_filter": "tcp.stream == 3"}),
        )
        .await;
    assert_eq!(f["connections"]["total"], 1);
}

/// Handshake RTT is SYN to SYN-ACK for answered SYNs only; connection setup counts from
/// the first SYN, so a lost SYN's second of waiting shows. The capture is built here:
/// the numbers are what the test sent.
#[tokio::test]
async fn handshake_rtt_and_setup_time_from_a_built_capture() {
    let s = start().await;
    let (c, srv) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const RST: u8 = 0x04;
    let t0 = 1_700_000_000.0;
    let capture = pcap_of(&[
        // stream 0: SYN lost once, sent again after 1 s, answered 50 ms later
        (t0, tcp_segment(c, srv, 40000, 80, 1000, 0, SYN, &[])),
        (t0 + 1.0, tcp_segment(c, srv, 40000, 80, 1000, 0, SYN, &[])),
        (
            t0 + 1.05,
            tcp_segment(srv, c, 80, 40000, 5000, 1001, SYN | ACK, &[]),
        ),
        (
            t0 + 1.1,
            tcp_segment(c, srv, 40000, 80, 1001, 5001, ACK, &[]),
        ),
        (
            t0 + 1.11,
            tcp_segment(
                c,
                srv,
                40000,
                80,
                1001,
                5001,
                ACK | 0x08,
                b"GET / HTTP/1.1\r\n\r\n",
            ),
        ),
        // stream 1: refused (SYN answered by RST/ACK): no handshake
        (t0 + 2.0, tcp_segment(c, srv, 40001, 81, 7000, 0, SYN, &[])),
        (
            t0 + 2.2,
            tcp_segment(srv, c, 81, 40001, 0, 7001, RST | ACK, &[]),
        ),
    ]);
    std::fs::write(s.storage_file("setup.pcap"), capture).unwrap();
    let file = s.storage_file("setup.pcap").display().to_string();
    assert_eq!(
        tshark_count(
            &file,
            "tcp.flags.syn == 1 && tcp.flags.ack == 0 && tcp.analysis.retransmission"
        ),
        1
    );
    let v = s
        .ok(
            "analyze_connection_lifecycle",
            json!({"pcap_file": "setup.pcap"}),
        )
        .await;
    let row = v["connections"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["stream"] == 0)
        .unwrap()
        .clone();
    assert_eq!(row["handshake_rtt_ms"].as_f64().unwrap(), 50.0, "{row}");
    assert_eq!(row["setup_ms"].as_f64().unwrap(), 1050.0, "{row}");
    assert_eq!(row["syn_retransmissions"], 1);
    let refused = v["connections"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["stream"] == 1)
        .unwrap()
        .clone();
    assert!(refused["handshake_rtt_ms"].is_null(), "{refused}");
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["title"].as_str().unwrap().contains("SYN retransmissions"))
        .unwrap_or_else(|| panic!("{}", v["findings"]));
    assert_eq!(f["severity"], "medium");
    // the latency and quality views count one handshake, not the refused SYN
    let l = s
        .ok(
            "analyze_network_latency",
            json!({"pcap_file": "setup.pcap"}),
        )
        .await;
    assert!(
        l["summary"]
            .as_str()
            .unwrap()
            .contains("TCP handshake median 50.0 ms"),
        "{}",
        l["summary"]
    );
    let q = s
        .ok(
            "analyze_network_quality_metrics",
            json!({"pcap_file": "setup.pcap"}),
        )
        .await;
    assert_eq!(q["latency"]["tcp_handshake_rtt"]["count"], 1);
    assert_eq!(
        q["latency"]["tcp_handshake_rtt"]["median_ms"]
            .as_f64()
            .unwrap(),
        50.0
    );
}

/// RTP rows whose payload column holds several words ("g711A, CN, RTPType-100"): the
/// loss must be tshark's, not a shifted column ("1171% lost").
#[tokio::test]
async fn rtp_loss_is_tsharks_whatever_the_payload_column_holds() {
    let s = start().await;
    let file = fixture("ndpi-FAX-Call-t38-CA-TDM-SIP-FB-1.pcap");
    let out = tshark()
        .args(["-n", "-q", "-r", &file, "-z", "rtp,streams"])
        .output()
        .unwrap();
    // the oracle: tshark's own "(N.N%)" loss per stream, in its row order
    let tshark_pcts: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|t| t.strip_prefix('(')?.strip_suffix("%)")?.parse().ok())
        .collect();
    assert_eq!(tshark_pcts.len(), 2);
    let v = s
        .ok("analyze_network_performance", json!({"pcap_file": file}))
        .await;
    let mut ours: Vec<f64> = v["rtp_streams"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["lost_pct"].as_f64().unwrap())
        .collect();
    let mut expected = tshark_pcts.clone();
    ours.sort_by(f64::total_cmp);
    expected.sort_by(f64::total_cmp);
    assert_eq!(ours, expected, "{}", v["rtp_streams"]);
    assert!(
        v["rtp_streams"]["rows"][0]["payload"]
            .as_str()
            .unwrap()
            .contains(',')
    );
}

#[tokio::test]
async fn rtp_stream_quality_where_rtp_is_present() {
    let s = start().await;
    let name = "ndpi-sip.pcap";
    let f = facts(name);
    let v = s
        .ok(
            "analyze_network_performance",
            json!({"pcap_file": fixture(name)}),
        )
        .await;
    let rtp = v["rtp_streams"]["rows"].as_array().unwrap();
    // tshark: 9 RTP packets, one SSRC 0x3796cb71, payload type 8 (G.711 A-law), set up by SIP/SDP
    assert_eq!(rtp.len(), 1);
    assert_eq!(
        rtp[0]["ssrc"].as_str().unwrap().to_lowercase(),
        "0x3796cb71"
    );
    assert_eq!(
        rtp[0]["packets"],
        fact_value(&f, "RTP packets (default dissection, no heuristics)")
    );
    assert_eq!(rtp[0]["lost"], 0);
    assert!(rtp[0]["max_jitter_ms"].as_f64().unwrap() > 0.0);
    assert!(
        v["tshark_commands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().contains("rtp,streams"))
    );
    // no RTP, no extra pass
    let v = s
        .ok(
            "analyze_network_performance",
            json!({"pcap_file": fixture("zeek-wikipedia.pcap")}),
        )
        .await;
    assert_eq!(v["rtp_streams"]["total"], 0);
}

/// One story per stream: a receiver that closed its window and never reopened it is a
/// zero-window stall in the timing view, its peer's keep-alives are probes of that
/// window, and the window view calls it a slow reader (fidelity issue, item 10).
#[tokio::test]
async fn a_dead_zero_window_is_one_story_in_every_view() {
    let s = start().await;
    let file = fixture("cs-tcp_zerowindowdead.pcapng");
    let receiver = "172.31.136.85";
    // tshark: every keep-alive is sent by the other side after the receiver's zero window
    let ka = tshark_count(&file, "tcp.analysis.keep_alive");
    assert!(ka > 0);
    assert_eq!(
        tshark_count(
            &file,
            &format!("tcp.analysis.keep_alive && ip.dst == {receiver}")
        ),
        ka
    );
    let first_zw = tshark_frames(&file, "tcp.analysis.zero_window", false)[0];
    assert!(tshark_frames(&file, "tcp.analysis.keep_alive", false)[0] > first_zw);
    let tshark_probes = tshark_count(&file, "tcp.analysis.zero_window_probe");

    let t = s
        .ok("analyze_packet_timing_issues", json!({"pcap_file": file}))
        .await;
    let titles: Vec<String> = t["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["title"].as_str().unwrap().to_string())
        .collect();
    assert!(
        titles
            .iter()
            .any(|x| x.contains("on a zero window from") && x.contains(receiver)),
        "{titles:?}"
    );
    assert!(
        titles
            .iter()
            .any(|x| x.starts_with(&format!("{ka} of the {ka} keep-alive(s) probed"))),
        "{titles:?}"
    );
    assert!(
        !titles.iter().any(|x| x.ends_with("TCP keep-alive(s)")),
        "{titles:?}"
    );
    let z = s
        .ok("analyze_tcp_zero_window", json!({"pcap_file": file}))
        .await;
    assert_eq!(z["zero_window_probes"], ka + tshark_probes, "{z}");
    let w = s
        .ok("analyze_tcp_window_scaling", json!({"pcap_file": file}))
        .await;
    assert_eq!(w["streams"]["rows"][0]["slow_reader"], true, "{w}");
}
