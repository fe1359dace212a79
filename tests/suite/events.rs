//! get_events_around over MCP: the events in a window are the ones tshark selects in
//! that window, in time order; without a moment, the worst second is where tshark
//! finds the failure.

use crate::common::*;
use serde_json::{Value, json};

fn family_count(v: &Value, family: &str, needle: &str) -> u64 {
    v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["family"] == family && l["event"].as_str().unwrap().contains(needle))
        .map(|l| l["count"].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn events_in_a_window_are_what_tshark_sees_there() {
    let s = start().await;

    // without a moment: the worst second holds the refused connection's RST
    let file = fixture("cs-tcp_refuseconnection.pcapng");
    let v = s.ok("get_events_around", json!({"pcap_file": file})).await;
    let rst = tshark_frames(&file, "tcp.flags.reset == 1", false);
    let m = &v["notable_moments"][0];
    assert_eq!(m["first_frame"], json!(rst[0]), "{v}");
    assert!(
        m["problems"][0].as_str().unwrap().contains("refused"),
        "{m}"
    );

    // a window: HTTP requests and TCP connections tshark places in it
    let file = fixture("zeek-http-methods.pcap");
    let v = s
        .ok(
            "get_events_around",
            json!({"pcap_file": file, "time": "+20", "window_s": 6, "limit": 500}),
        )
        .await;
    let window = "frame.time_relative >= 14 && frame.time_relative <= 26";
    let requests = tshark_count(
        &file,
        &format!("http.request && !tcp.analysis.retransmission && {window}"),
    );
    assert!(requests > 0);
    assert_eq!(family_count(&v, "http", "HTTP "), requests, "{v}");
    let syns = tshark_count(
        &file,
        &format!(
            "tcp.flags.syn == 1 && tcp.flags.ack == 0 && !tcp.analysis.retransmission && {window}"
        ),
    );
    assert_eq!(family_count(&v, "tcp", "opened"), syns, "{v}");
    let offsets: Vec<f64> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["offset_s"].as_f64().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    assert!(offsets.iter().all(|o| o.abs() <= 6.0));

    // DNS answers with their rcode
    let file = fixture("sv-dns-udp-nxdomain-soa.pcap");
    let v = s
        .ok(
            "get_events_around",
            json!({"pcap_file": file, "time": "+0", "window_s": 3600}),
        )
        .await;
    assert_eq!(
        family_count(&v, "dns", "NXDOMAIN"),
        tshark_count(&file, "dns.flags.response == 1 && dns.flags.rcode == 3")
    );

    // a moment outside the capture, or a silly window: a clear refusal
    let e = s
        .err(
            "get_events_around",
            json!({"pcap_file": file, "time": "1999-01-01T00:00:00Z"}),
        )
        .await;
    assert!(e.contains("time"), "{e}");
    for w in [-1.0, 0.0, 1e9] {
        let e = s
            .err(
                "get_events_around",
                json!({"pcap_file": file, "time": "+0", "window_s": w}),
            )
            .await;
        assert!(e.contains("window_s"), "{e}");
    }
}

#[tokio::test]
async fn icmp_errors_and_silences_are_events() {
    let s = start().await;
    // an ICMP port unreachable, at the frame tshark shows it
    let file = fixture("zeek-icmp-destunreach-udp.pcap");
    let v = s
        .ok(
            "get_events_around",
            json!({"pcap_file": file, "time": "+0", "window_s": 60}),
        )
        .await;
    let icmp = tshark_frames(&file, "icmp.type == 3 && icmp.code == 3", false);
    assert!(!icmp.is_empty());
    let lines: Vec<&Value> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["family"] == "icmp")
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["count"].as_u64().unwrap())
            .sum::<u64>(),
        icmp.len() as u64,
        "{v}"
    );
    assert_eq!(lines[0]["frames"][0], json!(icmp[0]));
    // the quoted datagram's port is the closed one
    let port = tshark_frames(&file, "icmp.type == 3 && udp.dstport == 59207", false);
    assert_eq!(port, icmp);
    assert!(
        lines[0]["event"].as_str().unwrap().contains("udp/59207"),
        "{v}"
    );

    // a capture that goes silent for 30 s between two bursts: one gap, where it is
    let mut records = Vec::new();
    for i in 0..200 {
        let t = if i < 100 {
            i as f64 * 0.01
        } else {
            31.0 + i as f64 * 0.01
        };
        records.push((
            1_700_000_000.0 + t,
            udp_datagram([10, 0, 0, 1], [10, 0, 0, 2], 40000, 9999, b"ping"),
        ));
    }
    std::fs::write(s.storage_file("silent.pcap"), pcap_of(&records)).unwrap();
    let v = s
        .ok(
            "get_events_around",
            json!({"pcap_file": "silent.pcap", "time": "+15", "window_s": 20}),
        )
        .await;
    let gaps: Vec<&Value> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["family"] == "capture")
        .collect();
    assert_eq!(gaps.len(), 1, "{v}");
    assert_eq!(gaps[0]["count"], 1);
    // frames 100 and 101 (tshark's numbering) border the silence
    let after = tshark_frames(
        &s.storage_file("silent.pcap").display().to_string(),
        "frame.time_delta >= 30",
        false,
    );
    assert_eq!(after, vec![101]);
    assert_eq!(gaps[0]["frames"], json!([100]));
    assert!(
        gaps[0]["event"]
            .as_str()
            .unwrap()
            .contains("No packet captured"),
        "{}",
        gaps[0]
    );
}
