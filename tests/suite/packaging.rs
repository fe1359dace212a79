//! The Python wheel (maturin, `bindings = "bin"`) launched the way README's uvx entry
//! says, completing an MCP initialize and a tool call. CI installs maturin and uv
//! (`.ci/run`) and sets PCAP_REQUIRE_PACKAGING so a missing tool fails instead of
//! skipping; elsewhere the test skips without them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use rmcp::ServiceExt;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::{Value, json};

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The wheel, built from this checkout with the profile the tests already built (the
/// binary is reused, not compiled again).
fn build_wheel(out: &Path) -> PathBuf {
    let status = Command::new("maturin")
        .args(["build", "--profile", "dev", "--out"])
        .arg(out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "maturin build failed");
    std::fs::read_dir(out)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .expect("a wheel")
}

/// README's uvx entry: the JSON between the UVX markers.
fn readme_entry() -> Value {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("<!-- UVX:BEGIN -->")
        .nth(1)
        .and_then(|r| r.split("<!-- UVX:END -->").next())
        .expect("README's UVX markers");
    let json = block
        .trim()
        .trim_start_matches("```json")
        .trim_end_matches("```");
    let v: Value = serde_json::from_str(json).expect("README's uvx entry is JSON");
    v["mcpServers"]["pcap-analyzer"].clone()
}

#[tokio::test]
async fn the_wheel_launches_with_uvx_as_readme_says() {
    let required = std::env::var_os("PCAP_REQUIRE_PACKAGING").is_some();
    for tool in ["maturin", "uvx"] {
        if !have(tool) {
            assert!(!required, "{tool} is missing: pip install maturin uv");
            eprintln!("skipped: {tool} is missing (pip install maturin uv)");
            return;
        }
    }
    let work = tempfile::tempdir().unwrap();
    let wheel = build_wheel(&work.path().join("wheels"));
    let entry = readme_entry();
    assert_eq!(entry["command"], "uvx");
    let storage = work.path().join("pcaps");
    // README's entry with this wheel and this storage put in for its placeholders
    let args: Vec<String> = entry["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            if a.ends_with(".whl") {
                wheel.display().to_string()
            } else {
                a.to_string()
            }
        })
        .collect();
    assert_eq!(
        entry["env"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["PCAP_STORAGE_DIR"]
    );
    let cache = work.path().join("uv-cache");
    let transport = TokioChildProcess::new(tokio::process::Command::new("uvx").configure(|cmd| {
        cmd.args(&args)
            .env("PCAP_STORAGE_DIR", &storage)
            .env("PCAP_ALLOWED_DIRS", fixtures())
            .env("UV_CACHE_DIR", &cache)
            // the wheel has no dependencies: nothing to fetch
            .env("UV_OFFLINE", "1")
            .env("RUST_LOG", "warn");
    }))
    .unwrap();
    let client = ().serve(transport).await.expect("MCP initialize through uvx");
    let info = client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("pcap-analyzer-mcp-server")
    );
    let Value::Object(args) = json!({"pcap_file": fixture("zeek-wikipedia.pcap")}) else {
        unreachable!()
    };
    let r = client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("analyze_pcap_file").with_arguments(args),
        )
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let v = r.structured_content.unwrap();
    // tshark's own count of the capture's packets
    let packets = tshark()
        .args(["-n", "-r", &fixture("zeek-wikipedia.pcap")])
        .output()
        .unwrap()
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(v["capture"]["packets_in_file"], packets, "{v}");
    let _ = client.cancel().await;
}

/// server.json against the MCP registry's own schema (vendored in schemas/, version in
/// its file name), with Python's jsonschema as the validator: CI installs it.
#[test]
fn server_json_is_valid_for_the_registry() {
    let root = env!("CARGO_MANIFEST_DIR");
    let required = std::env::var_os("PCAP_REQUIRE_PACKAGING").is_some();
    let check = Command::new("python3")
        .args([
            "-c",
            "import json,sys,jsonschema\n\
             s=json.load(open(sys.argv[1])); d=json.load(open(sys.argv[2]))\n\
             jsonschema.Draft7Validator(s, format_checker=jsonschema.FormatChecker()).validate(d)\n\
             print('valid')",
        ])
        .arg(format!("{root}/schemas/server.schema.2025-12-11.json"))
        .arg(format!("{root}/server.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    if stderr.contains("No module named 'jsonschema'") {
        assert!(
            !required,
            "python3's jsonschema is missing: pip install jsonschema"
        );
        eprintln!("skipped the schema check: pip install jsonschema");
    } else {
        assert!(check.status.success(), "server.json: {stderr}");
    }
    let server: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/server.json")).unwrap())
            .unwrap();
    // one version everywhere
    assert_eq!(server["version"], env!("CARGO_PKG_VERSION"));
    for p in server["packages"].as_array().unwrap() {
        if let Some(v) = p.get("version") {
            assert_eq!(v, env!("CARGO_PKG_VERSION"), "{p}");
        }
    }
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    // the registry checks a PyPI package's README for its server name
    let marker = format!("mcp-name: {}", server["name"].as_str().unwrap());
    assert!(readme.contains(&marker), "README lacks {marker:?}");
    // every variable offered is one the server reads (README's configuration table)
    for p in server["packages"].as_array().unwrap() {
        for e in p["environmentVariables"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap();
            assert!(readme.contains(&format!("| `{name}` |")), "{name}");
        }
    }
}
