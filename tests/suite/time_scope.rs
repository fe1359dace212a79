//! Time ranges as a scope (`start_time` / `end_time` / `timezone` on every analysis
//! tool): each form of one instant resolves to one range, the packets analysed are
//! the ones tshark selects by time, and impossible ranges are refused with a reason.

use crate::common::*;
use serde_json::{Value, json};

const FILE: &str = "zeek-http-methods.pcap";

/// The capture's first packet time, from tshark (nanosecond decimal).
fn first_epoch(file: &str) -> jiff::Timestamp {
    let out = tshark()
        .args([
            "-r",
            file,
            "-c",
            "1",
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
        ])
        .output()
        .expect("tshark runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let (s, ns) = text.trim().split_once('.').unwrap();
    let ns = format!("{ns:0<9}");
    jiff::Timestamp::new(s.parse().unwrap(), ns[..9].parse().unwrap()).unwrap()
}

fn index_command(v: &Value) -> String {
    v["tshark_commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .find(|c| c.contains("frame.time_epoch >="))
        .unwrap_or_else(|| panic!("no time-scoped pass in {v}"))
}

#[tokio::test]
async fn every_form_of_a_range_selects_the_packets_tshark_selects() {
    let s = start().await;
    let file = fixture(FILE);
    let first = first_epoch(&file);
    let start = first + jiff::SignedDuration::from_secs(10);
    let end = first + jiff::SignedDuration::from_secs(30);
    // the oracle: tshark's own selection by time since the first packet
    let want = tshark_count(
        &file,
        "frame.time_relative >= 10 && frame.time_relative <= 30",
    );
    // transactions: the requests, and the responses to requests tshark did not parse
    let want_requests = tshark_count(
        &file,
        "(http.request || (http.response && !http.request_in)) && frame.time_relative >= 10 && frame.time_relative <= 30",
    );
    assert!(want > 0 && want < tshark_count(&file, "frame"));

    let berlin = start.to_zoned_datetime(jiff::tz::TimeZone::get("Europe/Berlin").unwrap());
    let forms = [
        json!({"start_time": "+10", "end_time": "+30"}),
        json!({"start_time": start.to_string(), "end_time": end.to_string()}),
        // a time of day in a fixed offset and in an IANA zone (CET in December)
        json!({
            "start_time": start.to_zoned_datetime(jiff::tz::TimeZone::fixed(jiff::tz::offset(-5))).time().to_string(),
            "end_time": "+30",
            "timezone": "-05:00",
        }),
        json!({
            "start_time": berlin.time().to_string(),
            "end_time": end.to_string(),
            "timezone": "Europe/Berlin",
        }),
    ];
    let mut commands = Vec::new();
    for form in forms {
        let mut args = form.clone();
        args["pcap_file"] = json!(file);
        let v = s.ok("analyze_pcap_file", args.clone()).await;
        assert_eq!(v["capture"]["packets_analysed"], json!(want), "{form}");
        let range = &v["scope"]["time_range"];
        assert_eq!(range["start"], json!(start.to_string()), "{form}: {range}");
        assert_eq!(range["end"], json!(end.to_string()), "{form}: {range}");
        assert_eq!(range["start_offset_s"], json!(10.0), "{form}");
        // the capture facts describe the range, not the file
        assert_eq!(v["capture"]["packets_in_file"], json!(655));
        commands.push(index_command(&v));

        let h = s.ok("extract_http_requests", args).await;
        assert_eq!(
            h["requests"]["total"],
            json!(want_requests),
            "{form}: {}",
            h["summary"]
        );
    }
    // one normalised key: the same pass, whatever form the client wrote
    commands.dedup();
    assert_eq!(commands.len(), 1, "{commands:?}");
}

#[tokio::test]
async fn a_range_combines_with_a_display_filter_and_shows_in_next_steps() {
    let s = start().await;
    let file = fixture(FILE);
    let want = tshark_count(
        &file,
        "tcp.port == 80 && frame.time_relative >= 5 && frame.time_relative <= 40",
    );
    let v = s
        .ok(
            "analyze_pcap_file",
            json!({"pcap_file": file, "display_filter": "tcp.port == 80", "start_time": "+5", "end_time": "+40"}),
        )
        .await;
    assert_eq!(v["capture"]["packets_analysed"], json!(want));
    // the scope keeps the client's filter as written, the range apart
    assert_eq!(v["scope"]["display_filter"], "tcp.port == 80");
    assert!(v["scope"]["time_range"]["end"].is_string());
    for f in v["findings"].as_array().unwrap() {
        if let Some(args) = f["next_step"]["arguments"].as_object() {
            assert_eq!(args["display_filter"], "tcp.port == 80", "{f}");
            assert_eq!(args["start_time"], v["scope"]["time_range"]["start"], "{f}");
        }
    }
    // a timeline of the range covers the range, bucketed from its start
    let t = s
        .ok(
            "generate_traffic_timeline",
            json!({"pcap_file": file, "start_time": "+5", "end_time": "+40"}),
        )
        .await;
    let total: u64 = t["buckets"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["packets"].as_u64().unwrap())
        .sum();
    assert_eq!(
        total,
        tshark_count(
            &file,
            "frame.time_relative >= 5 && frame.time_relative <= 40"
        )
    );
    assert_eq!(
        t["buckets"]["rows"][0]["start_time"],
        t["scope"]["time_range"]["start"]
    );
}

#[tokio::test]
async fn impossible_ranges_are_refused_with_what_to_write() {
    let s = start().await;
    let file = fixture(FILE);
    for (args, needle) in [
        (
            json!({"start_time": "+30", "end_time": "+10"}),
            "before start_time",
        ),
        (
            json!({"start_time": "2030-01-01T00:00:00Z"}),
            "holds no packet",
        ),
        (json!({"start_time": "noon"}), "RFC 3339"),
        (
            json!({"start_time": "12:00", "timezone": "Mars/Olympus"}),
            "IANA",
        ),
        (json!({"end_time": "+1e400"}), "seconds"),
    ] {
        let mut a = args.clone();
        a["pcap_file"] = json!(file);
        for tool in ["analyze_pcap_file", "analyze_dns_resolution_issues"] {
            let e = s.err(tool, a.clone()).await;
            assert!(e.contains(needle), "{tool} {args}: {e}");
        }
    }
}
