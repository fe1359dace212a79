//! Speed benchmark: each tool's time against the bare tshark pass(es) it runs, measured
//! in the same run, as a ratio (ENGINE.md: aim for at most 1.2x).
//!
//!   cargo build --release && cargo run --release --example bench -- [CAPTURE] [SIZE_MB]
//!
//! Without CAPTURE it builds one of about SIZE_MB (default 100) by appending
//! fixtures/zeek-http-methods.pcap to itself with mergecap. Each tool is called on a
//! fresh server (no cache), then its own `tshark_commands` are re-run bare with bash,
//! output to /dev/null. A repeated call shows the cache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::{Value, json};

fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/examples/bench -> target/<profile>/pcap-analyzer-mcp-server
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("pcap-analyzer-mcp-server");
    assert!(
        bin.exists(),
        "build the server first: cargo build --release"
    );
    bin
}

fn make_capture(dir: &Path, size_mb: u64) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/zeek-http-methods.pcap");
    let one = std::fs::metadata(&src).unwrap().len();
    let copies = (size_mb * 1_000_000 / one).max(1);
    let out = dir.join(format!("bench-{size_mb}mb.pcap"));
    if out.exists() {
        return out;
    }
    let mut cmd = Command::new("mergecap");
    cmd.args(["-a", "-F", "pcap", "-w"]).arg(&out);
    for _ in 0..copies {
        cmd.arg(&src);
    }
    assert!(cmd.status().unwrap().success(), "mergecap failed");
    out
}

fn time_bash(cmd: &str) -> f64 {
    let t = Instant::now();
    let st = Command::new("bash")
        .arg("-c")
        .arg(format!("{cmd} > /dev/null 2>&1"))
        .status()
        .unwrap();
    let _ = st;
    t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&work).unwrap();
    let size_mb: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let file = match args.first() {
        Some(p) => PathBuf::from(p).canonicalize().unwrap(),
        None => make_capture(&work, size_mb),
    };
    let dir = file.parent().unwrap().to_path_buf();
    let bytes = std::fs::metadata(&file).unwrap().len();
    println!("capture: {} ({:.1} MB)", file.display(), bytes as f64 / 1e6);
    let f = file.display().to_string();
    let calls: Vec<(&str, Value)> = vec![
        ("analyze_pcap_file", json!({"pcap_file": f})),
        ("extract_http_requests", json!({"pcap_file": f})),
        ("generate_traffic_timeline", json!({"pcap_file": f})),
        (
            "search_packet_content",
            json!({"pcap_file": f, "search_pattern": "google"}),
        ),
        ("analyze_tcp_retransmissions", json!({"pcap_file": f})),
        ("analyze_network_latency", json!({"pcap_file": f})),
        ("analyze_security_threats", json!({"pcap_file": f})),
        ("analyze_protocol_anomalies", json!({"pcap_file": f})),
        ("analyze_network_topology", json!({"pcap_file": f})),
        ("generate_throughput_io_graph", json!({"pcap_file": f})),
        ("analyze_bandwidth_utilization", json!({"pcap_file": f})),
        ("analyze_network_quality_metrics", json!({"pcap_file": f})),
    ];
    println!(
        "{:<32} {:>9} {:>10} {:>7} {:>10}",
        "tool", "tool (s)", "tshark (s)", "ratio", "cached (ms)"
    );
    for (tool, a) in calls {
        let storage = tempfile::tempdir().unwrap();
        let transport = TokioChildProcess::new(
            tokio::process::Command::new(server_binary()).configure(|c| {
                c.env("PCAP_STORAGE_DIR", storage.path())
                    .env("PCAP_ALLOWED_DIRS", &dir)
                    .env("PCAP_CALL_DEADLINE", "3600")
                    .env("RUST_LOG", "warn");
            }),
        )
        .unwrap();
        let client = ().serve(transport).await.unwrap();
        let req = CallToolRequestParams::new(tool).with_arguments(a.as_object().unwrap().clone());
        let t = Instant::now();
        let r = client.call_tool(req.clone()).await.unwrap();
        let tool_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _ = client.call_tool(req).await.unwrap();
        let cached_ms = t.elapsed().as_secs_f64() * 1000.0;
        let v = r.structured_content.unwrap_or_default();
        let bare: f64 = v["tshark_commands"]
            .as_array()
            .map(|cmds| cmds.iter().filter_map(|c| c.as_str()).map(time_bash).sum())
            .unwrap_or(0.0);
        println!(
            "{tool:<32} {tool_s:>9.2} {bare:>10.2} {:>7.2} {cached_ms:>10.1}",
            if bare > 0.0 { tool_s / bare } else { f64::NAN }
        );
        let _ = client.cancel().await;
    }
}
