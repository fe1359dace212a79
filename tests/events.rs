//! get_events_around over MCP: the events in a window are the ones tshark selects in
//! that window, in time order; without a moment, the worst second is where tshark
//! finds the failure.

mod common;

use common::*;
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
