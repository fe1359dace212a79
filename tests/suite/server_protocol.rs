//! The server as a protocol peer: tool list and schemas (with a snapshot), toolsets,
//! cancellation, disconnects, and the "still running" answer for long analyses.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/tools.json");

#[tokio::test]
async fn tool_schemas_match_the_snapshot() {
    let s = start().await;
    let tools = s.client.list_all_tools().await.unwrap();
    let mut snapshot: Vec<Value> = tools
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "description": t.description,
                "annotations": t.annotations,
                "inputSchema": t.input_schema,
                "outputSchema": t.output_schema,
            })
        })
        .collect();
    snapshot.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let text = serde_json::to_string_pretty(&snapshot).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(SNAPSHOT, &text).unwrap();
    }
    let stored = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        stored == text,
        "tool schemas changed; if deliberate, run `UPDATE_SNAPSHOTS=1 cargo test --test suite server_protocol::` and commit tests/snapshots/tools.json"
    );

    for t in &tools {
        assert!(t.output_schema.is_some(), "{} has no output schema", t.name);
        let d = t.description.as_deref().unwrap_or("");
        assert!(
            d.len() > 40 && d.len() < 400,
            "{}: description length {}",
            t.name,
            d.len()
        );
    }
    for name in [
        "list_network_interfaces",
        "list_captured_files",
        "analyze_pcap_file",
        "extract_http_requests",
        "generate_traffic_timeline",
        "search_packet_content",
        "start_packet_capture",
        "stop_packet_capture",
        "get_capture_status",
    ] {
        assert!(tools.iter().any(|t| t.name == name), "{name} missing");
    }
    let info = s.client.peer_info().unwrap();
    assert_eq!(
        info.server_info.as_ref().unwrap().name,
        "pcap-analyzer-mcp-server"
    );
    assert!(
        info.instructions
            .as_deref()
            .unwrap()
            .contains("analyze_pcap_file")
    );
}

/// Every tool that writes a file: the one list of them. Each writes only new files
/// into PCAP_STORAGE_DIR (never over one), so none is destructive.
const WRITING_TOOLS: &[&str] = &[
    "start_packet_capture",
    "stop_packet_capture",
    "filter_capture",
    "generate_throughput_io_graph",
    "export_objects",
    "export_result",
    "export_packets",
    "export_flow_records",
];

#[tokio::test]
async fn annotations_are_explicit_and_writers_are_listed() {
    let s = start().await;
    for t in s.client.list_all_tools().await.unwrap() {
        let name = t.name.to_string();
        let a = t
            .annotations
            .unwrap_or_else(|| panic!("{name} has no annotations"));
        let writes = WRITING_TOOLS.contains(&name.as_str());
        assert!(a.title.is_some(), "{name}: no title");
        assert_eq!(a.read_only_hint, Some(!writes), "{name}: read_only_hint");
        if writes {
            assert_eq!(a.destructive_hint, Some(false), "{name}: destructive_hint");
            assert!(a.idempotent_hint.is_some(), "{name}: idempotent_hint");
        }
        // only live capture reaches beyond the files it is given
        assert_eq!(
            a.open_world_hint,
            Some(name == "start_packet_capture"),
            "{name}: open_world_hint"
        );
    }
}

#[tokio::test]
async fn readme_tool_list_is_generated_from_the_code() {
    let out = std::process::Command::new(BIN)
        .args(["tools", "--markdown"])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains(&table),
        "README's tool table is stale: paste the output of `pcap-analyzer-mcp-server tools --markdown` between the TOOLS markers"
    );
}

#[tokio::test]
async fn toolsets_limit_the_tool_list() {
    let s = start_with(&[("PCAP_TOOLSETS", "basic")]).await;
    let tools = s.client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"analyze_pcap_file"));
    assert!(!names.contains(&"start_packet_capture"), "{names:?}");
}

/// A capture big enough that tshark takes a while: the fixture repeated.
fn big_capture(dir: &std::path::Path) -> String {
    let out = dir.join("big.pcap");
    let src = fixture("zeek-http-methods.pcap");
    let copies: Vec<String> = (0..150).map(|_| src.clone()).collect();
    let st = std::process::Command::new("mergecap")
        .args(["-a", "-F", "pcap", "-w", out.to_str().unwrap()])
        .args(&copies)
        .status()
        .unwrap();
    assert!(st.success());
    out.display().to_string()
}

#[tokio::test]
async fn cancelled_call_kills_tshark_and_server_keeps_serving() {
    let s = start().await;
    let big = big_capture(s.storage.path());
    let call = s.call(
        "search_packet_content",
        json!({"pcap_file": big, "search_pattern": "nothing-like-this"}),
    );
    // dropping the request future sends notifications/cancelled
    let r = tokio::time::timeout(Duration::from_millis(700), call).await;
    assert!(r.is_err(), "the big search should still be running");
    wait_until(10, "tshark still running after cancellation", || {
        children_named(s.pid, "tshark").is_empty()
    })
    .await;
    s.ok(
        "analyze_pcap_file",
        json!({"pcap_file": fixture("cs-icmp_echo.pcapng")}),
    )
    .await;
}

#[tokio::test]
async fn long_analysis_answers_running_then_the_cached_result() {
    // a zero deadline makes every uncached call return "still running" at once
    let s = start_with(&[("PCAP_CALL_DEADLINE", "0")]).await;
    let file = fixture("zeek-http-methods.pcap");
    let args = json!({"pcap_file": file});
    let first = s.ok("analyze_pcap_file", args.clone()).await;
    assert_eq!(first["status"], "running");
    assert!(
        first["summary"]
            .as_str()
            .unwrap()
            .contains("call this tool again")
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = s.ok("analyze_pcap_file", args.clone()).await;
        if v["status"] == "complete" {
            assert_eq!(v["capture"]["packets_analysed"], 655);
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn client_disconnect_ends_the_server() {
    let s = start().await;
    let pid = s.pid;
    s.client.cancel().await.unwrap();
    wait_until(10, "server still running after stdin closed", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z")
    })
    .await;
}

#[tokio::test]
async fn cli_call_and_demo_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "call",
            "analyze_pcap_file",
            &format!("{{\"pcap_file\":\"{}\"}}", fixture("cs-icmp_echo.pcapng")),
        ])
        .env("PCAP_STORAGE_DIR", dir.path())
        .env("PCAP_ALLOWED_DIRS", fixtures())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["capture"]["packets_in_file"], 8);

    let out = std::process::Command::new(BIN)
        .args([
            "call",
            "analyze_pcap_file",
            "{\"pcap_file\":\"/etc/passwd\"}",
        ])
        .env("PCAP_STORAGE_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PCAP_ALLOWED_DIRS"));

    let out = std::process::Command::new(BIN)
        .arg("demo")
        .env("PCAP_STORAGE_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("136 packets"), "{text}");
    assert!(
        text.contains("bits.wikimedia.org/skins-1.5/monobook/main.css"),
        "{text}"
    );

    let out = std::process::Command::new(BIN)
        .arg("doctor")
        .env("PCAP_STORAGE_DIR", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tshark") && text.contains("PCAP_STORAGE_DIR"),
        "{text}"
    );
}

#[tokio::test]
async fn prompts_are_playbooks_of_real_tools() {
    let s = start().await;
    let prompts = s.client.list_all_prompts().await.unwrap();
    let mut names: Vec<String> = prompts.iter().map(|p| p.name.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "is_anything_malicious",
            "what_happened_at",
            "why_does_tls_fail",
            "why_is_it_slow"
        ]
    );
    let tools: Vec<String> = s
        .client
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    for (name, args) in [
        ("why_is_it_slow", json!({"pcap_file": "checkout.pcapng"})),
        ("why_does_tls_fail", json!({"pcap_file": "checkout.pcapng"})),
        (
            "is_anything_malicious",
            json!({"pcap_file": "checkout.pcapng"}),
        ),
        (
            "what_happened_at",
            json!({"pcap_file": "checkout.pcapng", "time": "+120", "window_s": "5"}),
        ),
    ] {
        let r = s
            .client
            .get_prompt(
                rmcp::model::GetPromptRequestParams::new(name)
                    .with_arguments(args.as_object().unwrap().clone()),
            )
            .await
            .unwrap();
        let text = serde_json::to_value(&r.messages).unwrap().to_string();
        assert!(text.contains("checkout.pcapng"), "{name}: {text}");
        // every numbered step starts with a tool the server lists
        let v = serde_json::to_value(&r.messages[0].content).unwrap();
        let body = v["text"].as_str().unwrap();
        let steps: Vec<&str> = body
            .lines()
            .filter_map(|l| l.split_once(". ").filter(|(n, _)| n.parse::<u32>().is_ok()))
            .map(|(_, rest)| rest.split(' ').next().unwrap())
            .collect();
        assert!(steps.len() >= 4, "{name}: {body}");
        for t in steps {
            assert!(tools.iter().any(|x| x == t), "{name}: {t} is not a tool");
        }
        if name == "what_happened_at" {
            assert!(body.contains("\"start_time\":\"+115\""), "{body}");
        }
    }
}

#[tokio::test]
async fn captures_in_storage_are_resources() {
    let s = start().await;
    // two captures and a non-capture in storage; a capture outside storage by template
    for name in ["zeek-wikipedia.pcap", "cs-icmp_echo.pcapng"] {
        std::fs::copy(fixture(name), s.storage_file(name)).unwrap();
    }
    std::fs::write(s.storage_file("notes.txt"), "not a capture").unwrap();
    let resources = s.client.list_all_resources().await.unwrap();
    let mut uris: Vec<String> = resources.iter().map(|r| r.uri.clone()).collect();
    uris.sort();
    assert_eq!(
        uris,
        ["pcap://cs-icmp_echo.pcapng", "pcap://zeek-wikipedia.pcap"]
    );
    let f = facts("zeek-wikipedia.pcap");
    let r = s
        .client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "pcap://zeek-wikipedia.pcap",
        ))
        .await
        .unwrap();
    let v = serde_json::to_value(&r.contents[0]).unwrap();
    let body: Value = serde_json::from_str(v["text"].as_str().unwrap()).unwrap();
    assert_eq!(body["packets"], f["packets"]);
    assert_eq!(body["format"], f["format"]);
    // allowed directories through the template; outside the roots: not found
    let outside = s
        .client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(format!(
            "pcap://{}",
            fixture("cs-synscan.pcapng")
        )))
        .await;
    assert!(
        outside.is_ok(),
        "fixtures are an allowed directory: {outside:?}"
    );
    for bad in [
        "pcap:///etc/passwd",
        "pcap://../../etc/shadow",
        "file:///etc/passwd",
        "pcap://notes.txt",
    ] {
        let r = s
            .client
            .read_resource(rmcp::model::ReadResourceRequestParams::new(bad))
            .await;
        assert!(r.is_err(), "{bad} was read");
    }
    let t = s.client.list_all_resource_templates().await.unwrap();
    assert_eq!(t[0].uri_template, "pcap://{name}");
    // a tool's full schemas, field meanings included, are a resource away
    assert_eq!(t[1].uri_template, "pcap-schema://{tool}");
    let r = s
        .client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "pcap-schema://analyze_slowness",
        ))
        .await
        .unwrap();
    let full: Value = serde_json::from_str(
        serde_json::to_value(&r.contents[0]).unwrap()["text"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(
        full["outputSchema"]["$defs"]["Attribution"]["properties"]["server_time_s"]["description"]
            .is_string(),
        "{full}"
    );
    for bad in ["pcap-schema://no_such_tool", "pcap-schema://../etc/passwd"] {
        let r = s
            .client
            .read_resource(rmcp::model::ReadResourceRequestParams::new(bad))
            .await;
        assert!(r.is_err(), "{bad} was read");
    }
    let c = s
        .client
        .complete_resource_argument("pcap://{name}", "name", "zeek", None)
        .await
        .unwrap();
    assert_eq!(c.values, ["zeek-wikipedia.pcap"]);

    // what the tools write comes back as resources: a slice's facts, a graph's picture
    let v = s
        .ok(
            "filter_capture",
            json!({"pcap_file": "zeek-wikipedia.pcap", "display_filter": "http", "output_file": "http-only.pcapng"}),
        )
        .await;
    let r = s
        .client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            v["resource_uri"].as_str().unwrap(),
        ))
        .await
        .unwrap();
    let body: Value = serde_json::from_str(
        serde_json::to_value(&r.contents[0]).unwrap()["text"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["packets"], v["packets"]);
    let g = s
        .ok(
            "generate_throughput_io_graph",
            json!({"pcap_file": "zeek-wikipedia.pcap", "output_file": "graph.png"}),
        )
        .await;
    let uri = g["image"]["resource_uri"].as_str().unwrap();
    let r = s
        .client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(uri))
        .await
        .unwrap();
    let c = serde_json::to_value(&r.contents[0]).unwrap();
    assert_eq!(c["mimeType"], "image/png");
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        c["blob"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(png, std::fs::read(s.storage_file("graph.png")).unwrap());
}

#[tokio::test]
async fn the_tool_list_fits_a_small_context() {
    // every toolset on: what an assistant loads before its first question
    let s = start().await;
    let tools = s.client.list_all_tools().await.unwrap();
    let bytes = serde_json::to_string(&tools).unwrap().len();
    assert!(
        bytes < 120_000,
        "tools/list is {bytes} bytes for {} tools: keep it under 120 KB (shorter descriptions; src/schema.rs compacts the schemas)",
        tools.len()
    );
    // the compact schemas still describe every result: each tool's own fields are there
    let slow = tools.iter().find(|t| t.name == "analyze_slowness").unwrap();
    let out = serde_json::to_value(slow.output_schema.as_ref().unwrap()).unwrap();
    for field in [
        "summary",
        "findings",
        "connections",
        "transactions",
        "overall",
    ] {
        assert!(out["properties"].get(field).is_some(), "{field}: {out}");
    }
    assert!(
        out["properties"]["transactions"]["properties"]["rows"]["items"]["properties"]
            .get("server_time_s")
            .is_some(),
        "{out}"
    );
}

#[test]
fn tools_command_lists_parameters_and_full_schemas() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(&["tools", "analyze_slowness"]);
    assert!(text.starts_with("analyze_slowness (performance)"), "{text}");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    // the required parameter first, then the options with their types
    assert_eq!(lines[2], "pcap_file: string, required", "{text}");
    assert!(lines.contains(&"threshold_ms: number"), "{text}");
    let all = run(&["tools"]);
    assert!(
        all.contains("analyze_pcap_file (basic)") && all.contains("analysis_type: \"summary\"")
    );
    // --json: every tool with the schemas in full, field meanings included
    let json: Vec<Value> = serde_json::from_str(&run(&["tools", "--json"])).unwrap();
    let slow = json
        .iter()
        .find(|t| t["name"] == "analyze_slowness")
        .unwrap();
    assert!(
        slow["outputSchema"]["$defs"]["Transaction"]["properties"]["server_time_s"]["description"]
            .is_string(),
        "{slow}"
    );
    let bad = std::process::Command::new(BIN)
        .args(["tools", "no_such_tool"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no tool is called"));
}
