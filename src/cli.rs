//! The same binary for people: `call`, `doctor`, `demo` and `tools`.
//!
//! `call` and `demo` speak MCP to an in-process server over a pipe, so what a person
//! sees is exactly what a client gets.

use anyhow::{Context, Result, bail};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::{RoleClient, ServiceExt, service::RunningService};
use serde_json::Value;

use crate::config::{Config, ENV_VARS, locate_wireshark};
use crate::engine::Engine;
use crate::server::PcapServer;

/// The capture `demo` investigates; shipped inside the binary so `demo` works from
/// `cargo install` too (fixtures/README.md says where it comes from).
const DEMO_PCAP: &[u8] = include_bytes!("../fixtures/zeek-wikipedia.pcap");
const DEMO_NAME: &str = "demo-wikipedia.pcap";

async fn in_process_client() -> Result<RunningService<RoleClient, ()>> {
    let cfg = Config::from_env()?;
    let engine = Engine::new(cfg, crate::tools::INDEX_PARTS)?;
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    let server = PcapServer::new(engine);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    Ok(().serve(client_io).await?)
}

async fn call_tool(
    client: &RunningService<RoleClient, ()>,
    name: &str,
    args: Value,
) -> Result<CallToolResult> {
    let Value::Object(map) = args else {
        bail!("tool arguments must be a JSON object, e.g. '{{\"pcap_file\":\"x.pcap\"}}'");
    };
    Ok(client
        .call_tool(CallToolRequestParams::new(name.to_string()).with_arguments(map))
        .await?)
}

fn result_text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn call(args: &[String]) -> Result<()> {
    let calls = parse_calls(args)?;
    let client = in_process_client().await?;
    // several calls share one server, so the later ones read the index the first built
    for (tool, json) in calls {
        let r = call_tool(&client, &tool, json).await?;
        if r.is_error == Some(true) {
            bail!("{tool} failed: {}", result_text(&r));
        }
        let out = match &r.structured_content {
            Some(v) => serde_json::to_string_pretty(v)?,
            None => result_text(&r),
        };
        // a closed pipe (`| head`) is not an error worth a panic
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{out}");
    }
    let _ = client.cancel().await;
    Ok(())
}

/// `TOOL [JSON] [TOOL [JSON]]...`: each tool name, with the JSON object of its
/// arguments when one follows.
fn parse_calls(args: &[String]) -> Result<Vec<(String, Value)>> {
    let mut calls = Vec::new();
    let mut rest = args.iter().peekable();
    while let Some(tool) = rest.next() {
        if tool.trim_start().starts_with('{') {
            bail!("arguments {tool} follow no tool name: write TOOL '{{json arguments}}'");
        }
        let json = match rest.next_if(|a| a.trim_start().starts_with('{')) {
            Some(s) => serde_json::from_str(s)
                .with_context(|| format!("arguments are not valid JSON: {s}"))?,
            None => Value::Object(Default::default()),
        };
        calls.push((tool.clone(), json));
    }
    if calls.is_empty() {
        bail!(
            "usage: pcap-analyzer-mcp-server call TOOL '{{json arguments}}' [TOOL '{{json arguments}}']..."
        );
    }
    Ok(calls)
}

/// `tools`: a terminal reader's view of every tool (or one), `--json` the full
/// schemas (with every field's meaning, which tools/list leaves out), `--markdown` the
/// README's table.
pub fn tools(args: &[String]) -> Result<()> {
    use std::io::Write;
    let out = match args.first().map(String::as_str) {
        Some("--markdown") => tools_markdown(),
        Some("--json") => {
            let all: Vec<Value> = PcapServer::all_tools()
                .into_iter()
                .map(|(set, t)| {
                    serde_json::json!({
                        "name": t.name,
                        "toolset": set,
                        "description": t.description,
                        "inputSchema": t.input_schema,
                        "outputSchema": t.output_schema,
                    })
                })
                .collect();
            serde_json::to_string_pretty(&all)? + "\n"
        }
        Some(name) if !name.starts_with('-') => {
            let text = tools_text(Some(name));
            if text.is_empty() {
                bail!("no tool is called {name:?}: `pcap-analyzer-mcp-server tools` lists them");
            }
            text
        }
        None => tools_text(None),
        Some(other) => {
            bail!("unknown option {other:?}: tools takes a tool name, --json or --markdown")
        }
    };
    // a closed pipe (`| head`) is not an error worth a panic
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(())
}

/// Each tool's description and parameters, for a terminal.
fn tools_text(only: Option<&str>) -> String {
    let mut out = String::new();
    for (set, tool) in PcapServer::all_tools() {
        if only.is_some_and(|n| n != tool.name) {
            continue;
        }
        out.push_str(&format!(
            "{} ({set})\n  {}\n",
            tool.name,
            tool.description.as_deref().unwrap_or("").replace('\n', " ")
        ));
        let schema = Value::Object((*tool.input_schema).clone());
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = schema["properties"].as_object() {
            // what a call needs first, then the options by name
            let mut props: Vec<(&String, &Value)> = props.iter().collect();
            props.sort_by_key(|(name, _)| (!required.contains(&name.as_str()), *name));
            for (name, p) in props {
                let ty = param_type(p, &schema);
                let default = match p.get("default") {
                    Some(Value::Null) | None => String::new(),
                    Some(d) => format!(" = {d}"),
                };
                let need = if required.contains(&name.as_str()) {
                    ", required"
                } else {
                    ""
                };
                let desc = p
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .replace('\n', " ");
                out.push_str(&format!(
                    "    {name}: {ty}{need}{default}\n        {desc}\n"
                ));
            }
        }
        out.push('\n');
    }
    out
}

/// A parameter's type in words: `string`, `integer`, `array of string`, or the values
/// of an enumeration.
fn param_type(p: &Value, root: &Value) -> String {
    let p = match p.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/$defs/")
            .and_then(|n| root["$defs"].get(n))
            .unwrap_or(p),
        None => p,
    };
    if let Some(alts) = p
        .get("anyOf")
        .or_else(|| p.get("oneOf"))
        .and_then(Value::as_array)
    {
        let parts: Vec<String> = alts
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
            .map(|a| match a.get("const") {
                Some(c) => c.to_string(),
                None => param_type(a, root),
            })
            .collect();
        return parts.join(" | ");
    }
    if let Some(e) = p.get("enum").and_then(Value::as_array) {
        return e
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(" | ");
    }
    let base = match p.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".into(),
    };
    match p.get("items") {
        Some(items) if base.contains("array") => format!("array of {}", param_type(items, root)),
        _ => base,
    }
}

pub fn tools_markdown() -> String {
    let mut out = String::from("| tool | toolset | what it does |\n|---|---|---|\n");
    for (set, tool) in PcapServer::all_tools() {
        let desc = tool
            .description
            .as_deref()
            .unwrap_or("")
            .replace('\n', " ")
            .replace('|', "\\|");
        out.push_str(&format!("| `{}` | {set} | {desc} |\n", tool.name));
    }
    out
}

pub async fn doctor() -> Result<()> {
    let mut problems = 0;
    let mut line = |ok: bool, what: &str, detail: String, fix: Option<String>| {
        println!("[{}] {what}: {detail}", if ok { " ok " } else { "FAIL" });
        if let (false, Some(f)) = (ok, fix) {
            println!("       fix: {f}");
            problems += 1;
        }
    };
    let located = locate_wireshark();
    let (tshark, dumpcap, capinfos) = match located {
        Ok(t) => (Some(t.0), t.1, t.2),
        Err(e) => {
            line(false, "tshark", "not found".into(), Some(e.to_string()));
            (None, None, None)
        }
    };
    for (name, path) in [
        ("tshark", &tshark),
        ("dumpcap", &dumpcap),
        ("capinfos", &capinfos),
    ] {
        match path {
            Some(p) => {
                let v = std::process::Command::new(p).arg("--version").output();
                let version = v
                    .ok()
                    .and_then(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .next()
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| "did not report a version".into());
                line(true, name, format!("{} ({version})", p.display()), None);
            }
            None if tshark.is_some() => line(
                false,
                name,
                "not found".into(),
                Some(format!(
                    "install Wireshark's command-line tools (Debian/Ubuntu: `sudo apt-get install tshark`) or set WIRESHARK_PATH to the directory holding {name}"
                )),
            ),
            None => {}
        }
    }
    match Config::from_env() {
        Ok(cfg) => {
            let probe = cfg.storage_dir.join(".doctor-write-test");
            let writable = std::fs::write(&probe, b"x").is_ok();
            let _ = std::fs::remove_file(&probe);
            line(
                writable,
                "storage",
                format!("PCAP_STORAGE_DIR = {}", cfg.storage_dir.display()),
                Some("make the directory writable or point PCAP_STORAGE_DIR elsewhere".into()),
            );
            // optional: without it every analysis pass costs more CPU, nothing fails
            match &cfg.stdbuf {
                Some(p) => line(
                    true,
                    "stdbuf",
                    format!("{} (tshark writes its output in 1 MiB blocks)", p.display()),
                    None,
                ),
                None => println!(
                    "[note] stdbuf: not found; analysis works, with more CPU per pass (install coreutils' stdbuf to save it)"
                ),
            }
            if let Some(d) = &dumpcap {
                let out = crate::capture::run_dumpcap(d, &["-L", "-i", loopback_name()]).await;
                match out {
                    Ok(o) if o.success => line(
                        true,
                        "capture permission",
                        format!("dumpcap can open {}", loopback_name()),
                        None,
                    ),
                    Ok(o) => line(
                        false,
                        "capture permission",
                        crate::capture::dumpcap_error(&o.stderr),
                        Some(crate::capture::permission_fix().into()),
                    ),
                    Err(e) => line(
                        false,
                        "capture permission",
                        e,
                        Some(crate::capture::permission_fix().into()),
                    ),
                }
            }
        }
        Err(e) => line(
            false,
            "configuration",
            format!("{e:#}"),
            Some("fix the variable named above".into()),
        ),
    }
    println!("\nEnvironment:");
    for (name, default, what) in ENV_VARS {
        let value = name
            .split(" / ")
            .filter_map(|n| std::env::var(n).ok())
            .next()
            .unwrap_or_else(|| format!("(default {default})"));
        println!("  {name} = {value}\n      {what}");
    }
    if problems > 0 {
        bail!("{problems} problem(s) found; see the fixes above");
    }
    println!("\nAll checks passed.");
    Ok(())
}

fn loopback_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "lo0"
    } else {
        "lo"
    }
}

pub async fn demo() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join(DEMO_NAME), DEMO_PCAP)?;
    // SAFETY: set before any other thread reads the environment for the demo server.
    unsafe {
        std::env::set_var("PCAP_STORAGE_DIR", dir.path());
    }
    let client = in_process_client().await?;
    println!("━━ pcap-analyzer-mcp-server demo ━━");
    println!(
        "A 2011 capture of a browser loading wikipedia.org (from Zeek's test traces), investigated through MCP.\n"
    );

    let steps: [(&str, &str, Value); 6] = [
        (
            "1. What is in this capture?",
            "analyze_pcap_file",
            serde_json::json!({"pcap_file": DEMO_NAME}),
        ),
        (
            "2. Which web requests were made, and how did they go?",
            "extract_http_requests",
            serde_json::json!({"pcap_file": DEMO_NAME, "limit": 5}),
        ),
        (
            "3. How did traffic evolve over time?",
            "generate_traffic_timeline",
            serde_json::json!({"pcap_file": DEMO_NAME, "time_interval": 1}),
        ),
        (
            "4. Where does \"wikimedia\" appear in the packets?",
            "search_packet_content",
            serde_json::json!({"pcap_file": DEMO_NAME, "search_pattern": "WIKIMEDIA", "limit": 3}),
        ),
        (
            "5. Is anything in it malicious?",
            "analyze_security_threats",
            serde_json::json!({"pcap_file": DEMO_NAME}),
        ),
        (
            "6. How good was the network, in one grade?",
            "analyze_network_quality_metrics",
            serde_json::json!({"pcap_file": DEMO_NAME}),
        ),
    ];
    for (title, tool, args) in steps {
        println!("{title}\n   → {tool} {args}");
        let r = call_tool(&client, tool, args).await?;
        let Some(v) = r.structured_content.as_ref() else {
            println!("   ! {}\n", result_text(&r));
            continue;
        };
        print_report(tool, v);
        println!();
    }
    println!(
        "Try it on your own capture:\n   pcap-analyzer-mcp-server call analyze_pcap_file '{{\"pcap_file\":\"/path/in/PCAP_ALLOWED_DIRS/file.pcapng\"}}'"
    );
    let _ = client.cancel().await;
    Ok(())
}

fn print_report(tool: &str, v: &Value) {
    if let Some(s) = v["summary"].as_str() {
        println!("   {}", wrap(s, 92, "   "));
    }
    match tool {
        "analyze_pcap_file" => {
            println!("   Protocols:");
            for p in v["protocol_totals"]["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .take(6)
            {
                println!(
                    "     {:<8} {:>5} frames {:>6.1}%",
                    p["protocol"].as_str().unwrap_or(""),
                    p["frames"],
                    p["frames_pct"].as_f64().unwrap_or(0.0)
                );
            }
            println!("   Top conversations:");
            for c in v["conversations"]["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .take(3)
            {
                println!(
                    "     {} {} ⇄ {}  {} bytes",
                    c["protocol"].as_str().unwrap_or(""),
                    c["a"].as_str().unwrap_or(""),
                    c["b"].as_str().unwrap_or(""),
                    c["bytes"]
                );
            }
        }
        "extract_http_requests" => {
            for r in v["requests"]["rows"].as_array().into_iter().flatten() {
                println!(
                    "     #{:<4} {} {}{}  → {} in {} ms",
                    r["frame"],
                    r["method"].as_str().unwrap_or(""),
                    r["host"].as_str().unwrap_or(""),
                    r["uri"].as_str().unwrap_or(""),
                    r["status"],
                    r["response_time_ms"]
                );
            }
            if let Some(m) = v["requests"]["more"].as_str() {
                println!("     ({m})");
            }
        }
        "generate_traffic_timeline" => {
            let rows = v["buckets"]["rows"].as_array().cloned().unwrap_or_default();
            let max = rows
                .iter()
                .filter_map(|b| b["bytes"].as_u64())
                .max()
                .unwrap_or(1)
                .max(1);
            for b in rows {
                let bytes = b["bytes"].as_u64().unwrap_or(0);
                let bar = "█".repeat(((bytes * 40) / max) as usize);
                println!(
                    "     +{:>4.0}s {:>4} pkts {:<40} {}",
                    b["start_s"].as_f64().unwrap_or(0.0),
                    b["packets"],
                    bar,
                    crate::report::human_bits_per_s(b["bits_per_s"].as_f64().unwrap_or(0.0))
                );
            }
        }
        "search_packet_content" => {
            for m in v["matches"]["rows"].as_array().into_iter().flatten() {
                println!(
                    "     frame {:<4} {:<5} {}",
                    m["frame"],
                    m["protocol"].as_str().unwrap_or(""),
                    m["snippet"].as_str().unwrap_or("")
                );
            }
        }
        "analyze_network_quality_metrics" => {
            for c in v["grade"]["components"].as_array().into_iter().flatten() {
                println!(
                    "     {:<32} {:>9} {:<16} -{}",
                    c["metric"].as_str().unwrap_or(""),
                    c["value"]
                        .as_f64()
                        .map_or("-".to_string(), |x| x.to_string()),
                    c["unit"].as_str().unwrap_or(""),
                    c["penalty"]
                );
            }
        }
        _ => {}
    }
    for f in v["findings"].as_array().into_iter().flatten().take(4) {
        println!(
            "   [{}] {} — filter: {}",
            f["severity"].as_str().unwrap_or(""),
            f["title"].as_str().unwrap_or(""),
            f["evidence"]["display_filter"].as_str().unwrap_or("")
        );
    }
}

fn wrap(s: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut col = 0;
    for word in s.split_whitespace() {
        if col + word.len() > width && col > 0 {
            out.push('\n');
            out.push_str(indent);
            col = 0;
        }
        if col > 0 {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.chars().count();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn calls_are_tool_names_each_with_optional_arguments() {
        let c = parse_calls(&args(&["a", r#"{"x":1}"#, "b", "c", r#" {"y":2}"#])).unwrap();
        let names: Vec<&str> = c.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(c[0].1["x"], 1);
        assert_eq!(c[1].1, serde_json::json!({}));
        assert_eq!(c[2].1["y"], 2);
        assert!(parse_calls(&[]).is_err());
        assert!(parse_calls(&args(&[r#"{"x":1}"#])).is_err());
        let bad = parse_calls(&args(&["a", "{not json"])).unwrap_err();
        assert!(format!("{bad:#}").contains("not valid JSON"), "{bad:#}");
    }
}
