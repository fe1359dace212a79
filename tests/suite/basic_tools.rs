//! The basic-analysis tools over MCP, checked against facts other tools recorded.

use crate::common::*;
use serde_json::{Value, json};

const ANALYSIS_TOOLS: &[&str] = &[
    "analyze_pcap_file",
    "extract_http_requests",
    "generate_traffic_timeline",
    "search_packet_content",
];

fn common_contract(v: &Value) {
    assert_eq!(v["status"], "complete", "{v}");
    let s = v["summary"].as_str().unwrap();
    assert!(s.len() > 20, "summary too short: {s}");
    assert!(v["findings"].is_array());
    for f in v["findings"].as_array().unwrap() {
        assert!(["high", "medium", "low", "info"].contains(&f["severity"].as_str().unwrap()));
        assert!(
            !f["evidence"]["display_filter"].as_str().unwrap().is_empty(),
            "{f}"
        );
    }
    assert!(v["capture"]["packets_analysed"].is_u64());
    let cmds = v["tshark_commands"].as_array().unwrap();
    assert!(!cmds.is_empty());
    assert!(
        cmds.iter()
            .all(|c| c.as_str().unwrap().starts_with("tshark -n "))
    );
}

#[tokio::test]
async fn packet_counts_equal_capinfos_for_every_fixture() {
    let s = start().await;
    for name in [
        "zeek-wikipedia.pcap",
        "zeek-http-methods.pcap",
        "arkime-wireshark-retrans.pcap",
        "cs-icmp_echo.pcapng",
    ] {
        let f = facts(name);
        let v = s
            .ok("analyze_pcap_file", json!({"pcap_file": fixture(name)}))
            .await;
        common_contract(&v);
        assert_eq!(v["capture"]["packets_in_file"], f["packets"], "{name}");
        assert_eq!(v["capture"]["packets_analysed"], f["packets"], "{name}");
        assert_eq!(v["file_facts"]["packets"], f["packets"], "{name}");
        assert_eq!(v["capture"]["format"], f["format"], "{name}");
        let dur = v["file_facts"]["duration_s"].as_f64().unwrap();
        assert!(
            (dur - f["duration_s"].as_f64().unwrap()).abs() < 1e-6,
            "{name}"
        );
        // io,phs-derived protocol counts recorded by the corpus ("proto:frames")
        let totals = v["protocol_totals"]["rows"].as_array().unwrap();
        for entry in f["top_protocols"].as_array().unwrap() {
            let (proto, frames) = entry.as_str().unwrap().split_once(':').unwrap();
            if proto.contains('.') || proto.starts_with('_') {
                continue; // pseudo-protocols (tcp.segments, _ws.malformed) are not layers
            }
            let Some(row) = totals.iter().find(|r| r["protocol"] == proto) else {
                if totals.len() < v["protocol_totals"]["total"].as_u64().unwrap() as usize {
                    continue; // beyond the shown rows
                }
                panic!("{name}: protocol {proto} missing");
            };
            // above TCP, what is dissected depends on reassembly: the server reads
            // with TCP reassembled out of order, and so does the tshark it is held to
            let want = if ["eth", "ip", "ipv6", "tcp", "udp", "arp", "icmp"].contains(&proto) {
                frames.parse::<u64>().unwrap()
            } else {
                tshark_count(&fixture(name), proto)
            };
            assert_eq!(row["frames"].as_u64().unwrap(), want, "{name} {proto}");
        }
    }
}

#[tokio::test]
async fn overview_conversations_and_endpoints_match_tshark() {
    let s = start().await;
    let f = facts("zeek-http-methods.pcap");
    let file = fixture("zeek-http-methods.pcap");
    let v = s
        .ok(
            "analyze_pcap_file",
            json!({"pcap_file": file, "analysis_type": "conversations", "limit": 500}),
        )
        .await;
    let tcp_convs = f["truth"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["fact"] == "TCP conversations")
        .unwrap()["value"]
        .as_u64()
        .unwrap();
    let rows = v["conversations"]["rows"].as_array().unwrap();
    let tcp = rows.iter().filter(|r| r["protocol"] == "tcp").count() as u64;
    assert_eq!(tcp, tcp_convs);
    // bytes each way add up to the total, and the biggest conversation comes first
    for r in rows {
        assert_eq!(
            r["bytes"].as_u64().unwrap(),
            r["bytes_a_to_b"].as_u64().unwrap() + r["bytes_b_to_a"].as_u64().unwrap()
        );
    }
    assert!(rows[0]["bytes"].as_u64() >= rows[rows.len() - 1]["bytes"].as_u64());
    // a drill-down filter of a conversation selects exactly its packets in tshark
    let first = &rows[0];
    assert_eq!(
        tshark_count(&file, first["display_filter"].as_str().unwrap()),
        first["packets"].as_u64().unwrap()
    );

    let wiki = fixture("zeek-wikipedia.pcap");
    let v = s
        .ok(
            "analyze_pcap_file",
            json!({"pcap_file": wiki, "analysis_type": "endpoints", "limit": 100}),
        )
        .await;
    let eps = v["endpoints"]["rows"].as_array().unwrap();
    for e in eps.iter().take(5) {
        let addr = e["address"].as_str().unwrap();
        let field = if addr.contains(':') {
            "ipv6.addr"
        } else {
            "ip.addr"
        };
        assert_eq!(
            e["packets"].as_u64().unwrap(),
            tshark_count(&wiki, &format!("{field} == {addr}")),
            "{addr}"
        );
    }
}

#[tokio::test]
async fn http_requests_cover_every_zeek_uri() {
    let s = start().await;
    let f = facts("zeek-wikipedia.pcap");
    let v = s
        .ok(
            "extract_http_requests",
            json!({"pcap_file": fixture("zeek-wikipedia.pcap"), "limit": 500}),
        )
        .await;
    common_contract(&v);
    let rows = v["requests"]["rows"].as_array().unwrap();
    let zeek = f["truth"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["summary"]["log"] == "http.log")
        .unwrap();
    for e in zeek["summary"]["entries"].as_array().unwrap() {
        let hit = rows
            .iter()
            .find(|r| r["uri"] == e["uri"] && r["host"] == e["host"])
            .unwrap_or_else(|| panic!("Zeek URI {} {} missing", e["host"], e["uri"]));
        assert_eq!(hit["method"], e["method"]);
        assert_eq!(
            hit["status"].to_string(),
            e["status_code"].as_str().unwrap()
        );
        assert!(hit["response_time_ms"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(v["requests"]["total"], v["requests"]["shown"]);
}

/// One transaction per request: an interim 100 Continue is not a response of its own,
/// and a response tshark dissects again from a TCP retransmission is the same response.
#[tokio::test]
async fn http_transactions_skip_interim_and_retransmitted_responses() {
    let s = start().await;
    // Zeek's http.log: one POST answered 200 after a 100 Continue
    let log = std::fs::read_to_string(fixtures().join("zeek-http/zeek-100-continue-post.http.log"))
        .unwrap();
    let zeek_rows = log
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    let v = s
        .ok(
            "extract_http_requests",
            json!({"pcap_file": fixture("zeek-100-continue-post.pcap")}),
        )
        .await;
    assert_eq!(
        v["requests"]["total"].as_u64().unwrap() as usize,
        zeek_rows,
        "{v}"
    );
    assert_eq!(v["requests"]["rows"][0]["status"], 200);
    assert_eq!(v["requests"]["rows"][0]["method"], "POST");
    // arkime-wireshark-retrans: 4 POSTs, each answered once (tshark reassembling out of
    // order, as the server reads; without that it dissects 6 responses, 2 of them the
    // retransmitted copies)
    let file = fixture("arkime-wireshark-retrans.pcap");
    assert_eq!(tshark_count(&file, "http.response"), 4);
    let answered = tshark_count(&file, "http.response && !tcp.analysis.retransmission");
    let v = s
        .ok("extract_http_requests", json!({"pcap_file": file}))
        .await;
    assert_eq!(v["requests"]["total"].as_u64().unwrap(), answered, "{v}");
    assert_eq!(
        v["requests"]["total"].as_u64().unwrap(),
        tshark_count(&file, "http.request && !tcp.analysis.retransmission")
    );
    assert!(
        !v["summary"].as_str().unwrap().contains(":4000 ("),
        "{}",
        v["summary"]
    );
}

#[tokio::test]
async fn http_status_and_methods_match_tshark_counts() {
    let s = start().await;
    let f = facts("zeek-http-methods.pcap");
    let v = s
        .ok(
            "extract_http_requests",
            json!({"pcap_file": fixture("zeek-http-methods.pcap"), "limit": 5}),
        )
        .await;
    // every response tshark sees is in a row, with its status
    let codes = &tshark_fact(&f, "http.response")["value"];
    let by_class: u64 = v["by_status_class"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["key"] != "no response")
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(by_class, codes.as_u64().unwrap());
    let methods = f["truth"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["fact"] == "HTTP request methods")
        .unwrap()["value_counts"]
        .clone();
    for (m, n) in methods.as_object().unwrap() {
        let row = v["by_method"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == *m)
            .unwrap();
        assert_eq!(row["count"], *n, "{m}");
    }
    // the paged table says how many exist and how to see more
    assert_eq!(v["requests"]["shown"], 5);
    assert!(v["requests"]["more"].as_str().unwrap().contains("offset=5"));
    // 4xx findings carry the ready filter
    assert!(v["findings"].as_array().unwrap().iter().any(|f| {
        f["evidence"]["display_filter"]
            .as_str()
            .unwrap()
            .starts_with("http.response.code == 400 ||")
    }));

    // the status filter narrows rows
    let v = s
        .ok(
            "extract_http_requests",
            json!({"pcap_file": fixture("zeek-http-methods.pcap"), "status": 411, "limit": 100}),
        )
        .await;
    assert_eq!(v["requests"]["total"], 5); // tshark: 411 x5
}

#[tokio::test]
async fn timeline_buckets_add_up_to_packet_count() {
    let s = start().await;
    let file = fixture("zeek-wikipedia.pcap");
    for interval in [json!(1), json!(0.25), json!(0.0001), Value::Null] {
        let mut args = json!({"pcap_file": file});
        if !interval.is_null() {
            args["time_interval"] = interval.clone();
        }
        let v = s.ok("generate_traffic_timeline", args).await;
        common_contract(&v);
        let rows = v["buckets"]["rows"].as_array().unwrap();
        let packets: u64 = rows.iter().map(|b| b["packets"].as_u64().unwrap()).sum();
        assert_eq!(packets, 136, "interval {interval}");
        assert!(rows.len() <= 120);
        assert_eq!(v["buckets"]["total"].as_u64().unwrap() as usize, rows.len());
        if interval == json!(0.0001) {
            assert!(
                v["coarsened_from_s"].is_number(),
                "too fine an interval is widened and said"
            );
        }
    }
    // with a display filter the buckets add up to tshark's count for it
    let v = s
        .ok(
            "generate_traffic_timeline",
            json!({"pcap_file": file, "time_interval": 1, "display_filter": "dns"}),
        )
        .await;
    let packets: u64 = v["buckets"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["packets"].as_u64().unwrap())
        .sum();
    assert_eq!(packets, tshark_count(&file, "dns"));
    assert_eq!(v["scope"]["display_filter"], "dns");
    let failures: u64 = v["buckets"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["dns_failures"].as_u64().unwrap())
        .sum();
    // DNS failure, one definition: unanswered queries (tshark's two passes pair them)
    // and SERVFAIL/REFUSED answers; NXDOMAIN is an answer; mDNS/LLMNR left out
    let unanswered = tshark_frames(
        &file,
        "dns.flags.response == 0 && !dns.response_in && !dns.retransmission && !mdns && !llmnr",
        true,
    )
    .len() as u64;
    let refused = tshark_count(
        &file,
        "dns.flags.response == 1 && dns.flags.rcode in {2 5} && !mdns && !llmnr",
    );
    assert_eq!(failures, unanswered + refused);
    // and the DNS tool counts the same failures
    let d = s
        .ok("analyze_dns_resolution_issues", json!({"pcap_file": file}))
        .await;
    let dns_failures: u64 = d["resolvers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["failures"].as_u64().unwrap())
        .sum();
    assert_eq!(failures, dns_failures, "{}", d["resolvers"]);

    let e = s
        .err(
            "generate_traffic_timeline",
            json!({"pcap_file": file, "time_interval": -5}),
        )
        .await;
    assert!(e.contains("time_interval"), "{e}");
}

#[tokio::test]
async fn search_is_literal_and_case_insensitive() {
    let s = start().await;
    let file = fixture("zeek-wikipedia.pcap");
    // the seed's injection: must stay zero matches, not every packet
    let v = s
        .ok(
            "search_packet_content",
            json!({"pcap_file": file, "search_pattern": "zzz\" || tcp || frame contains \"zzz"}),
        )
        .await;
    common_contract(&v);
    assert_eq!(v["matches"]["total"], 0);
    for p in [
        "\" or 1 or \"",
        "a\\\" || 1 || \"",
        ")) || ((frame",
        "-X lua_script:x.lua",
    ] {
        let v = s
            .ok(
                "search_packet_content",
                json!({"pcap_file": file, "search_pattern": p}),
            )
            .await;
        assert_eq!(v["matches"]["total"], 0, "{p}");
    }
    // a lone backslash is a byte like any other
    let v = s
        .ok(
            "search_packet_content",
            json!({"pcap_file": file, "search_pattern": "\\"}),
        )
        .await;
    assert_eq!(
        v["matches"]["total"].as_u64().unwrap(),
        tshark_count(&file, "frame contains 5c")
    );
    // case-insensitive by default, equal to tshark's own regex count
    let v = s
        .ok(
            "search_packet_content",
            json!({"pcap_file": file, "search_pattern": "WIKIMEDIA", "limit": 3}),
        )
        .await;
    let expected = tshark_count(&file, "frame matches \"(?i)wikimedia\"");
    assert!(expected > 3);
    assert_eq!(v["matches"]["total"].as_u64().unwrap(), expected);
    assert_eq!(v["matches"]["shown"], 3);
    let m = &v["matches"]["rows"][0];
    assert!(
        m["snippet"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("wikimedia"),
        "{m}"
    );
    assert!(m["snippet"].as_str().unwrap().len() < 200);
    // case-sensitive differs and equals `frame contains`
    let v = s
        .ok(
            "search_packet_content",
            json!({"pcap_file": file, "search_pattern": "Wikipedia", "case_sensitive": true}),
        )
        .await;
    assert_eq!(
        v["matches"]["total"].as_u64().unwrap(),
        tshark_count(&file, "frame contains \"Wikipedia\"")
    );
    // a dot is literal, not "any character"
    let v = s
        .ok(
            "search_packet_content",
            json!({"pcap_file": file, "search_pattern": "wikipedia.org"}),
        )
        .await;
    assert_eq!(
        v["matches"]["total"].as_u64().unwrap(),
        tshark_count(&file, "frame matches \"(?i)wikipedia\\\\.org\"")
    );
    // regex mode
    let v = s
        .ok(
            "search_packet_content",
            json!({"pcap_file": file, "search_pattern": "HTTP/1\\.[01] 304", "regex": true}),
        )
        .await;
    assert_eq!(v["matches"]["total"].as_u64().unwrap(), 15);
    // paging
    let v = s
        .ok(
            "search_packet_content",
            json!({"pcap_file": file, "search_pattern": "wikimedia", "limit": 2, "offset": 2}),
        )
        .await;
    assert_eq!(v["matches"]["offset"], 2);
    assert_eq!(v["matches"]["shown"], 2);
}

/// A pcap with UDP payloads chosen by the test (non-ASCII, quotes, backslashes).
fn write_udp_pcap(path: &std::path::Path, payloads: &[&[u8]]) {
    let mut out = Vec::new();
    for v in [
        0xa1b2c3d4u32.to_le_bytes().to_vec(),
        2u16.to_le_bytes().to_vec(),
        4u16.to_le_bytes().to_vec(),
        vec![0; 8],
        65535u32.to_le_bytes().to_vec(),
        1u32.to_le_bytes().to_vec(),
    ] {
        out.extend(v);
    }
    for (i, p) in payloads.iter().enumerate() {
        let mut frame = vec![0u8; 12];
        frame.extend([0x08, 0x00]);
        let udp_len = 8 + p.len() as u16;
        let ip_len = 20 + udp_len;
        frame.extend([
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
            127,
            0,
            0,
            1,
            127,
            0,
            0,
            1,
        ]);
        frame.extend([
            0x04,
            0xd2,
            0x16,
            0x2e,
            (udp_len >> 8) as u8,
            udp_len as u8,
            0,
            0,
        ]);
        frame.extend_from_slice(p);
        out.extend((1000 + i as u32).to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend((frame.len() as u32).to_le_bytes());
        out.extend((frame.len() as u32).to_le_bytes());
        out.extend(frame);
    }
    std::fs::write(path, out).unwrap();
}

#[tokio::test]
async fn search_handles_non_ascii_quotes_and_backslashes() {
    let s = start().await;
    let path = s.storage_file("payloads.pcap");
    write_udp_pcap(
        &path,
        &[
            "Café au lait".as_bytes(),
            "CAFÉ NOIR".as_bytes(),
            br#"quote " back \ or 1 " end"#,
            b"plain",
        ],
    );
    let v = s
        .ok(
            "search_packet_content",
            json!({"pcap_file": "payloads.pcap", "search_pattern": "café"}),
        )
        .await;
    assert_eq!(v["matches"]["total"], 2, "é and É fold together");
    let v = s
        .ok(
            "search_packet_content",
            json!({"pcap_file": "payloads.pcap", "search_pattern": "Café", "case_sensitive": true}),
        )
        .await;
    assert_eq!(v["matches"]["total"], 1);
    let v = s
        .ok(
            "search_packet_content",
            json!({"pcap_file": "payloads.pcap", "search_pattern": "\" back \\ or 1 \""}),
        )
        .await;
    assert_eq!(v["matches"]["total"], 1);
    assert_eq!(v["matches"]["rows"][0]["frame"], 3);
    assert!(
        v["matches"]["rows"][0]["snippet"]
            .as_str()
            .unwrap()
            .contains("back \\ or 1")
    );
}

#[tokio::test]
async fn file_sandbox_refuses_with_clear_errors() {
    let s = start().await;
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.pcap");
    std::fs::copy(fixture("cs-icmp_echo.pcapng"), &secret).unwrap();
    std::os::unix::fs::symlink(&secret, s.storage_file("escape.pcap")).unwrap();
    std::os::unix::fs::symlink(
        fixture("cs-icmp_echo.pcapng"),
        s.storage_file("inside-link.pcapng"),
    )
    .unwrap();
    std::fs::write(s.storage_file("data.pcap"), br#"{"not": "a capture"}"#).unwrap();
    std::fs::write(s.storage_file("empty.pcap"), b"").unwrap();
    std::fs::write(
        s.storage_file("text.pcapng"),
        b"hello world, definitely not pcapng",
    )
    .unwrap();

    for tool in ANALYSIS_TOOLS {
        let base = |f: &str| {
            let mut a = json!({"pcap_file": f});
            if *tool == "search_packet_content" {
                a["search_pattern"] = json!("x");
            }
            a
        };
        // one neutral answer outside the roots: it names the setting, never the target
        let e = s.err(tool, base("../../../../etc/passwd")).await;
        assert!(e.contains("not inside the directories"), "{tool}: {e}");
        let e = s.err(tool, base("/etc/passwd")).await;
        assert!(e.contains("PCAP_ALLOWED_DIRS"), "{tool}: {e}");
        let e = s.err(tool, base(&secret.display().to_string())).await;
        assert!(e.contains("PCAP_ALLOWED_DIRS"), "{tool}: {e}");
        let e = s.err(tool, base("escape.pcap")).await;
        assert!(
            e.contains("not inside the directories") && !e.contains(&secret.display().to_string()),
            "symlink escape, {tool}: {e}"
        );
        let e = s.err(tool, base("data.pcap")).await;
        assert!(e.contains("not a pcap or pcapng"), "{tool}: {e}");
        let e = s.err(tool, base("empty.pcap")).await;
        assert!(e.contains("empty"), "{tool}: {e}");
        let e = s.err(tool, base("text.pcapng")).await;
        assert!(e.contains("not a pcap or pcapng"), "{tool}: {e}");
        let e = s.err(tool, base("no-such-file.pcap")).await;
        assert!(e.contains("list_captured_files"), "{tool}: {e}");
    }
    // a symlink that stays inside an allowed root is fine
    let v = s
        .ok(
            "analyze_pcap_file",
            json!({"pcap_file": "inside-link.pcapng"}),
        )
        .await;
    assert_eq!(v["capture"]["packets_in_file"], 8);
    // the server keeps serving after all those failures
    s.ok(
        "analyze_pcap_file",
        json!({"pcap_file": fixture("cs-icmp_echo.pcapng")}),
    )
    .await;
}

#[tokio::test]
async fn invalid_and_smuggling_filters_are_tool_errors() {
    let s = start().await;
    let file = fixture("zeek-wikipedia.pcap");
    for tool in ANALYSIS_TOOLS {
        for filter in [
            "tcp.port == ",
            "-X lua_script:evil.lua",
            "tcp) || (udp",
            "frame contains \"unterminated",
            "nosuchproto",
        ] {
            let mut a = json!({"pcap_file": file, "display_filter": filter});
            if *tool == "search_packet_content" {
                a["search_pattern"] = json!("GET");
            }
            let e = s.err(tool, a).await;
            assert!(e.contains("invalid display_filter"), "{tool} {filter}: {e}");
            assert!(!e.contains("Running as user"));
        }
    }
    // tshark's own message is quoted
    let e = s
        .err(
            "analyze_pcap_file",
            json!({"pcap_file": file, "display_filter": "tcp.port == "}),
        )
        .await;
    assert!(e.contains("Unexpected end of filter expression"), "{e}");
    // a valid filter scopes the analysis to tshark's count
    let v = s
        .ok(
            "analyze_pcap_file",
            json!({"pcap_file": file, "display_filter": "tcp.port == 80"}),
        )
        .await;
    assert_eq!(
        v["capture"]["packets_analysed"].as_u64().unwrap(),
        tshark_count(&file, "tcp.port == 80")
    );
}

#[tokio::test]
async fn absurd_limits_and_malformed_arguments() {
    let s = start().await;
    let file = fixture("zeek-http-methods.pcap");
    let v = s
        .ok(
            "extract_http_requests",
            json!({"pcap_file": file, "limit": 1_000_000_000_i64}),
        )
        .await;
    assert!(v["requests"]["shown"].as_u64().unwrap() <= 500);
    assert_eq!(v["requests"]["total"], 49);
    let v = s
        .ok(
            "extract_http_requests",
            json!({"pcap_file": file, "limit": -3}),
        )
        .await;
    assert_eq!(v["requests"]["shown"], 1);
    let v = s
        .ok(
            "analyze_pcap_file",
            json!({"pcap_file": file, "analysis_type": "conversations", "limit": 0, "offset": -7}),
        )
        .await;
    assert_eq!(v["conversations"]["shown"], 1);
    // wrong types are invalid params at the protocol level, and the server survives
    let r = s
        .client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("analyze_pcap_file")
                .with_arguments(json!({"pcap_file": 42}).as_object().unwrap().clone()),
        )
        .await;
    assert!(r.is_err() || r.unwrap().is_error == Some(true));
    let r = s
        .client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("analyze_pcap_file").with_arguments(
                json!({"analysis_type": "bogus"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await;
    assert!(r.is_err() || r.unwrap().is_error == Some(true));
    s.ok("analyze_pcap_file", json!({"pcap_file": file})).await;
}

#[tokio::test]
async fn truncated_capture_gives_partial_results_with_a_warning() {
    let s = start().await;
    let name = "derived-cs-http_google-cut.pcapng";
    let f = facts(name);
    let v = s
        .ok("analyze_pcap_file", json!({"pcap_file": fixture(name)}))
        .await;
    assert!(
        v["capture"]["read_warning"]
            .as_str()
            .unwrap()
            .contains("cut short")
    );
    assert_eq!(v["capture"]["packets_analysed"], f["packets"]);
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["title"].as_str().unwrap().contains("cut short"))
    );
    let v = s
        .ok("extract_http_requests", json!({"pcap_file": fixture(name)}))
        .await;
    assert_eq!(
        v["requests"]["total"],
        tshark_fact(&f, "http.request")["value"]
    );
    assert_eq!(v["requests"]["rows"][0]["host"], "www.google.com");
}

#[tokio::test]
async fn pcap_variants_by_magic_not_extension() {
    let s = start().await;
    // nanosecond pcap via editcap; big-endian by byte-swapping a little-endian file
    let ns = s.storage_file("nanos.cap");
    let st = std::process::Command::new("editcap")
        .args([
            "-F",
            "nsecpcap",
            &fixture("zeek-wikipedia.pcap"),
            ns.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let v = s
        .ok("analyze_pcap_file", json!({"pcap_file": "nanos.cap"}))
        .await;
    assert_eq!(v["capture"]["packets_in_file"], 136);
    let le = std::fs::read(fixture("zeek-wikipedia.pcap")).unwrap();
    std::fs::write(s.storage_file("bigendian.bin"), swap_pcap(&le)).unwrap();
    let v = s
        .ok("analyze_pcap_file", json!({"pcap_file": "bigendian.bin"}))
        .await;
    assert_eq!(v["capture"]["packets_in_file"], 136);
    assert_eq!(v["capture"]["format"], "pcap");
}

fn swap_pcap(le: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(le.len());
    let u32le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (i, w) in [4usize, 2, 2, 4, 4, 4, 4].iter().scan(0, |o, w| {
        let s = *o;
        *o += w;
        Some((s, *w))
    }) {
        let mut f = le[i..i + w].to_vec();
        f.reverse();
        out.extend(f);
    }
    let mut pos = 24;
    while pos + 16 <= le.len() {
        let incl = u32le(&le[pos + 8..]) as usize;
        for k in 0..4 {
            let mut f = le[pos + 4 * k..pos + 4 * k + 4].to_vec();
            f.reverse();
            out.extend(f);
        }
        out.extend_from_slice(&le[pos + 16..pos + 16 + incl]);
        pos += 16 + incl;
    }
    out
}

#[tokio::test]
async fn many_calls_at_once_and_cache() {
    let s = start().await;
    let file = fixture("arkime-wireshark-retrans.pcap");
    let calls: Vec<_> = (0..12)
        .map(|i| {
            let tool = ANALYSIS_TOOLS[i % 4];
            let mut a = json!({"pcap_file": file, "limit": 5 + i});
            if tool == "search_packet_content" {
                a["search_pattern"] = json!("POST");
            }
            s.ok(tool, a)
        })
        .collect();
    let results = futures_join(calls).await;
    assert_eq!(results.len(), 12);
    // retransmissions found by the triage equal tshark's count (corpus: 47), from the
    // retransmission tool's own finding
    let f = facts("arkime-wireshark-retrans.pcap");
    let v = s.ok("analyze_pcap_file", json!({"pcap_file": file})).await;
    let expected = tshark_fact(&f, "tcp.analysis.retransmission")["value"]
        .as_u64()
        .unwrap();
    let finding = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["evidence"]["display_filter"] == "tcp.analysis.retransmission")
        .unwrap();
    assert!(
        finding["title"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{expected} retransmissions")),
        "{finding}"
    );
    assert_eq!(finding["next_step"]["tool"], "analyze_tcp_retransmissions");
    // an identical call is answered from the index the first call built (a quick
    // answer is made again rather than cached), without another pass
    let t = std::time::Instant::now();
    s.ok("analyze_pcap_file", json!({"pcap_file": file})).await;
    assert!(
        t.elapsed() < std::time::Duration::from_millis(500),
        "cached answer took {:?}",
        t.elapsed()
    );
}

async fn futures_join<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let handles: Vec<_> = fs.into_iter().map(Box::pin).collect();
    // poll them together: all requests are in flight before any answer is awaited
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        done[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    for d in done {
        out.push(d.unwrap());
    }
    out
}

/// A server that answers an upload before its body has arrived (413 after the headers):
/// tshark completes the request only at its last segment, after the response, and links
/// neither; it is still one transaction, answered early, not an orphan request and an
/// orphan response.
#[tokio::test]
async fn a_post_answered_before_its_body_arrived_is_one_transaction() {
    let (c, sv) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let (cp, sp) = (40000u16, 80u16);
    let head = b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 3000\r\n\r\n";
    let resp = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n";
    let body = vec![b'x'; 1000];
    let (mut cs, ss) = (1u32, 1u32);
    let mut recs = vec![
        (1.0, tcp_segment(c, sv, cp, sp, 0, 0, 0x02, &[])),
        (1.001, tcp_segment(sv, c, sp, cp, 0, 1, 0x12, &[])),
        (1.002, tcp_segment(c, sv, cp, sp, 1, 1, 0x10, &[])),
        (1.003, tcp_segment(c, sv, cp, sp, cs, ss, 0x18, head)),
    ];
    cs += head.len() as u32;
    // the server's answer, then the body still on its way
    recs.push((1.004, tcp_segment(sv, c, sp, cp, ss, cs, 0x18, resp)));
    let ss = ss + resp.len() as u32;
    for i in 0..3 {
        recs.push((
            1.1 + i as f64 * 0.01,
            tcp_segment(c, sv, cp, sp, cs, ss, 0x18, &body),
        ));
        cs += body.len() as u32;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("early.pcap");
    std::fs::write(&file, pcap_of(&recs)).unwrap();
    let f = file.display().to_string();
    // tshark's view: one request (at its last segment) and one response, unlinked
    let req = tshark_frames(&f, "http.request", true);
    let rsp = tshark_frames(&f, "http.response", true);
    assert_eq!((req.len(), rsp.len()), (1, 1));
    assert!(rsp[0] < req[0]);
    assert!(tshark_frames(&f, "http.response_in || http.request_in", true).is_empty());
    let d = dir.path().display().to_string();
    let s = start_with(&[("PCAP_ALLOWED_DIRS", &d)]).await;
    let v = s.ok("extract_http_requests", json!({"pcap_file": f})).await;
    assert_eq!(v["requests"]["total"], 1, "{v}");
    let t = &v["requests"]["rows"][0];
    assert_eq!(t["method"], "POST");
    assert_eq!(t["status"], 413);
    assert_eq!(t["frame"], req[0]);
    assert_eq!(t["response_frame"], rsp[0]);
    assert_eq!(t["answered_early"], true);
    assert!(
        !v["summary"]
            .as_str()
            .unwrap()
            .contains("without a response in the capture")
            || v["summary"]
                .as_str()
                .unwrap()
                .contains("0 request(s) without"),
        "{}",
        v["summary"]
    );
}
