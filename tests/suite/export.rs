//! export_result and export_packets over MCP: files written into storage only, their
//! contents checked against the direct call's result and tshark's own counts.

use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

fn well_formed_xml(path: &std::path::Path) -> bool {
    Command::new("python3")
        .args([
            "-c",
            "import sys,xml.etree.ElementTree as E; E.parse(sys.argv[1])",
        ])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

/// CSV records (quoted fields may hold commas, not newlines here).
fn csv_rows(text: &str) -> usize {
    text.lines().count() - 1
}

#[tokio::test]
async fn results_and_packets_are_exported_into_storage() {
    let s = start().await;
    let file = fixture("zeek-wikipedia.pcap");
    let streams = tshark()
        .args([
            "-n",
            "-r",
            &file,
            "-T",
            "fields",
            "-e",
            "tcp.stream",
            "-Y",
            "tcp",
        ])
        .output()
        .unwrap();
    let mut ids: Vec<String> = String::from_utf8_lossy(&streams.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();

    // CSV of the lifecycle table: one row per TCP connection tshark numbers
    let v = s
        .ok(
            "export_result",
            json!({"tool": "analyze_connection_lifecycle", "arguments": {"pcap_file": file, "limit": 500}, "format": "csv"}),
        )
        .await;
    assert_eq!(v["table"], "connections");
    assert_eq!(v["rows"], ids.len());
    let path = s.storage_file(v["output_file"].as_str().unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(csv_rows(&text), ids.len());
    assert!(text.lines().next().unwrap().contains("community_id"));
    assert_eq!(v["size_bytes"], text.len());
    // the envelope describes the capture the exported result is about
    assert_eq!(
        v["capture"]["packets_analysed"],
        tshark_count(&file, "frame"),
        "{}",
        v["capture"]
    );
    assert_eq!(v["capture"]["file"], file);

    // JSON: the direct call's result itself
    let direct = s
        .ok("analyze_dns_resolution_issues", json!({"pcap_file": file}))
        .await;
    let v = s
        .ok(
            "export_result",
            json!({"tool": "analyze_dns_resolution_issues", "arguments": {"pcap_file": file}, "output_file": "dns.json"}),
        )
        .await;
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(s.storage_file("dns.json")).unwrap())
            .unwrap();
    assert_eq!(saved["summary"], direct["summary"]);
    assert_eq!(saved["queries"], direct["queries"]);
    assert_eq!(v["resource_uri"], "pcap://dns.json");
    // never overwritten
    let again = s
        .err(
            "export_result",
            json!({"tool": "analyze_dns_resolution_issues", "arguments": {"pcap_file": file}, "output_file": "dns.json"}),
        )
        .await;
    assert!(again.contains("already exists"), "{again}");

    // XML is well-formed, odd keys and all
    let v = s
        .ok(
            "export_result",
            json!({"tool": "analyze_pcap_file", "arguments": {"pcap_file": file}, "format": "xml"}),
        )
        .await;
    assert!(well_formed_xml(
        &s.storage_file(v["output_file"].as_str().unwrap())
    ));

    // packets: CSV rows and PDML packets as tshark counts them for the filter
    let http = tshark_count(&file, "http");
    let v = s
        .ok(
            "export_packets",
            json!({"pcap_file": file, "display_filter": "http", "format": "csv", "fields": ["frame.number", "http.host"]}),
        )
        .await;
    let text = std::fs::read_to_string(s.storage_file(v["output_file"].as_str().unwrap())).unwrap();
    assert_eq!(csv_rows(&text) as u64, http);
    assert_eq!(text.lines().next().unwrap(), "frame.number,http.host");
    let v = s
        .ok(
            "export_packets",
            json!({"pcap_file": file, "display_filter": "http", "format": "pdml"}),
        )
        .await;
    let pdml = s.storage_file(v["output_file"].as_str().unwrap());
    assert!(well_formed_xml(&pdml));
    let packets = std::fs::read_to_string(&pdml)
        .unwrap()
        .matches("<packet>")
        .count();
    assert_eq!(packets as u64, http);

    // hostile or impossible requests: a clear error, nothing written outside storage
    for (tool, args, says) in [
        (
            "export_result",
            json!({"tool": "start_packet_capture", "arguments": {}}),
            "only the read-only",
        ),
        (
            "export_result",
            json!({"tool": "no_such_tool", "arguments": {}}),
            "no tool is called",
        ),
        (
            "export_result",
            json!({"tool": "analyze_dns_resolution_issues", "arguments": {"pcap_file": file}, "output_file": "../escape.json"}),
            "not allowed",
        ),
        (
            "export_result",
            json!({"tool": "analyze_dns_resolution_issues", "arguments": {"pcap_file": "/etc/passwd"}}),
            "not a file this server may read",
        ),
        (
            "export_packets",
            json!({"pcap_file": file, "format": "csv", "fields": ["no.such.field"]}),
            "no.such.field",
        ),
    ] {
        let e = s.err(tool, args.clone()).await;
        assert!(e.contains(says), "{args}: {e}");
    }
    assert!(
        !s.storage
            .path()
            .parent()
            .unwrap()
            .join("escape.json")
            .exists()
    );
}
