//! The size contract on a capture of more than 100 MB (#12 item 19): every file tool's
//! default answer stays within ~20 KB however many hosts, streams, names and requests
//! the capture holds, and the counts in those answers are the ones the test generated.
//!
//! The capture is generated here: some 15,000 HTTP exchanges (handshake, GET with its own
//! URI, a 4-segment answer, a 404 every 50th, teardown) between 3,000 clients and 400
//! servers, each preceded by a DNS lookup of its own name (NXDOMAIN every 40th).

use std::io::Write;

use crate::common::*;
use serde_json::json;

const CLIENTS: u32 = 3_000;
const SERVERS: u32 = 400;
const BODY_SEGMENT: usize = 1_400;

fn client(k: u32) -> [u8; 4] {
    let c = k % CLIENTS;
    [10, 1, (c / 250) as u8, (c % 250 + 1) as u8]
}

fn server(k: u32) -> [u8; 4] {
    let s = k % SERVERS;
    [172, 16, (s / 250) as u8, (s % 250 + 1) as u8]
}

fn dns_name(k: u32) -> String {
    format!("h{}-{}.example.test", k % SERVERS, k)
}

fn dns_message(k: u32, answer: Option<[u8; 4]>, nxdomain: bool) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&((k & 0xffff) as u16).to_be_bytes());
    let flags: u16 = match (answer.is_some() || nxdomain, nxdomain) {
        (false, _) => 0x0100,
        (true, false) => 0x8180,
        (true, true) => 0x8183,
    };
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&[0, 1, 0, u8::from(answer.is_some()), 0, 0, 0, 0]);
    for label in dns_name(k).split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    if let Some(ip) = answer {
        m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        m.extend_from_slice(&ip);
    }
    m
}

struct Writer {
    out: std::io::BufWriter<std::fs::File>,
    frames: u64,
}

impl Writer {
    fn record(&mut self, t: f64, data: &[u8]) {
        let sec = t.floor() as u32;
        let usec = ((t - t.floor()) * 1e6).round().min(999_999.0) as u32;
        self.out.write_all(&sec.to_le_bytes()).unwrap();
        self.out.write_all(&usec.to_le_bytes()).unwrap();
        self.out
            .write_all(&(data.len() as u32).to_le_bytes())
            .unwrap();
        self.out
            .write_all(&(data.len() as u32).to_le_bytes())
            .unwrap();
        self.out.write_all(data).unwrap();
        self.frames += 1;
    }
}

/// What the generator put in the capture: the oracle of the assertions.
struct Generated {
    frames: u64,
    requests: u64,
    not_found: u64,
    dns_queries: u64,
    nxdomain: u64,
}

fn generate(path: &std::path::Path, min_bytes: u64) -> Generated {
    let mut w = Writer {
        out: std::io::BufWriter::new(std::fs::File::create(path).unwrap()),
        frames: 0,
    };
    w.out.write_all(&pcap_header()).unwrap();
    let resolver = [10, 0, 0, 53];
    let mut g = Generated {
        frames: 0,
        requests: 0,
        not_found: 0,
        dns_queries: 0,
        nxdomain: 0,
    };
    let mut k = 0u32;
    let mut bytes = 24u64;
    while bytes < min_bytes {
        let (c, s) = (client(k), server(k));
        let cp = 20_000 + (k / CLIENTS) as u16;
        let t = 1_700_000_000.0 + k as f64 * 0.01;
        let nx = k.is_multiple_of(40);
        // the lookup
        w.record(
            t,
            &udp_datagram(c, resolver, cp, 53, &dns_message(k, None, false)),
        );
        w.record(
            t + 0.0004,
            &udp_datagram(resolver, c, 53, cp, &dns_message(k, (!nx).then_some(s), nx)),
        );
        g.dns_queries += 1;
        g.nxdomain += u64::from(nx);
        // the exchange
        let t = t + 0.001;
        let req = format!(
            "GET /item/{k} HTTP/1.1\r\nHost: {}\r\nUser-Agent: gen/1\r\n\r\n",
            dns_name(k)
        );
        let status = if k.is_multiple_of(50) {
            "404 Not Found"
        } else {
            "200 OK"
        };
        let body_len = 4 * BODY_SEGMENT - 60;
        let head = format!("HTTP/1.1 {status}\r\nContent-Length: {body_len:05}\r\n\r\n");
        let mut answer = head.into_bytes();
        answer.resize(4 * BODY_SEGMENT, b'a');
        let (mut cs, mut ss) = (1u32, 1u32);
        w.record(t, &tcp_segment(c, s, cp, 80, 0, 0, 0x02, &[]));
        w.record(t + 0.0002, &tcp_segment(s, c, 80, cp, 0, 1, 0x12, &[]));
        w.record(t + 0.0004, &tcp_segment(c, s, cp, 80, 1, 1, 0x10, &[]));
        w.record(
            t + 0.0005,
            &tcp_segment(c, s, cp, 80, cs, ss, 0x18, req.as_bytes()),
        );
        cs += req.len() as u32;
        w.record(t + 0.0007, &tcp_segment(s, c, 80, cp, ss, cs, 0x10, &[]));
        for (i, chunk) in answer.chunks(BODY_SEGMENT).enumerate() {
            let at = t + 0.002 + i as f64 * 0.0001;
            w.record(at, &tcp_segment(s, c, 80, cp, ss, cs, 0x18, chunk));
            ss += chunk.len() as u32;
        }
        w.record(t + 0.0030, &tcp_segment(c, s, cp, 80, cs, ss, 0x10, &[]));
        w.record(t + 0.0031, &tcp_segment(c, s, cp, 80, cs, ss, 0x11, &[]));
        w.record(
            t + 0.0033,
            &tcp_segment(s, c, 80, cp, ss, cs + 1, 0x11, &[]),
        );
        w.record(
            t + 0.0035,
            &tcp_segment(c, s, cp, 80, cs + 1, ss + 1, 0x10, &[]),
        );
        g.requests += 1;
        g.not_found += u64::from(k.is_multiple_of(50));
        bytes = w.out.get_ref().metadata().unwrap().len() + w.out.buffer().len() as u64;
        k += 1;
    }
    w.out.flush().unwrap();
    g.frames = w.frames;
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_default_answer_fits_on_a_capture_over_100_mb() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("generated-mix.pcap");
    let g = generate(&file, 100_000_000);
    assert!(std::fs::metadata(&file).unwrap().len() >= 100_000_000);
    let name = file.display().to_string();
    let d = dir.path().display().to_string();
    let s = start_with(&[
        ("PCAP_ALLOWED_DIRS", &d),
        ("PCAP_CALL_DEADLINE", "900"),
        ("PCAP_SEARCH_TIMEOUT", "900"),
    ])
    .await;
    let mut calls = Vec::new();
    for tool in file_tool_names() {
        if WRITING_FILE_TOOLS.contains(&tool.as_str()) {
            continue;
        }
        let mut args = required_extras(&tool);
        args["pcap_file"] = json!(name);
        if tool == "analyze_host" {
            args["host"] = json!("10.1.0.2");
        }
        calls.push(spawn_call(s.client.peer(), &tool, args));
    }
    let mut over = Vec::new();
    let mut failed = Vec::new();
    let mut results = std::collections::BTreeMap::new();
    for c in calls {
        let (tool, r) = c.await.unwrap();
        let r = r.unwrap();
        let Some(v) = r.structured_content.clone() else {
            // Lua is off unless the operator names a script directory
            if tool != "run_lua_script" {
                failed.push(format!("{tool}: {}", text(&r)));
            }
            continue;
        };
        if v["status"] != "complete" {
            failed.push(format!("{tool}: {}", v["summary"]));
        }
        let size = v.to_string().len();
        if size > 20_000 {
            over.push(format!("{tool}: {size} bytes"));
        }
        results.insert(tool, v);
    }
    if let Ok(dump) = std::env::var("BIG_CAPTURE_DUMP") {
        std::fs::write(dump, serde_json::to_string(&results).unwrap()).unwrap();
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(over.is_empty(), "over 20000 bytes:\n{}", over.join("\n"));
    // the counts are the generated ones
    let overview = &results["analyze_pcap_file"];
    assert_eq!(overview["capture"]["packets_analysed"], g.frames);
    let http = &results["extract_http_requests"];
    assert_eq!(http["requests"]["total"], g.requests, "{}", http["summary"]);
    let class = |name: &str| {
        http["by_status_class"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key"] == name)
            .map_or(0, |c| c["count"].as_u64().unwrap())
    };
    assert_eq!(class("4xx"), g.not_found);
    assert_eq!(class("2xx"), g.requests - g.not_found);
    let dns = &results["analyze_dns_resolution_issues"];
    assert_eq!(dns["queries"], g.dns_queries);
    let nx = dns["rcodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "NXDOMAIN")
        .map_or(0, |c| c["count"].as_u64().unwrap());
    assert_eq!(nx, g.nxdomain);
}
