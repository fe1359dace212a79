//! run_lua_script: off by default; with PCAP_LUA_DIR, the operator's script runs inside
//! tshark (its output checked against tshark's own field counts); names, paths, links
//! and arguments that would reach anything else are refused.

use crate::common::*;
use serde_json::json;

fn lua_dir() -> String {
    format!("{}/examples/lua", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn lua_is_off_unless_the_operator_turns_it_on() {
    let s = start().await;
    let e = s
        .err(
            "run_lua_script",
            json!({"pcap_file": fixture("zeek-wikipedia.pcap"), "script": "http_hosts.lua"}),
        )
        .await;
    assert!(
        e.contains("Lua scripts are off") && e.contains("PCAP_LUA_DIR"),
        "{e}"
    );
}

#[tokio::test]
async fn the_operators_script_runs_and_nothing_else_does() {
    // a directory of scripts with a link that leads out of it
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!("{}/http_hosts.lua", lua_dir()),
        dir.path().join("http_hosts.lua"),
    )
    .unwrap();
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(outside.path(), "print('outside')").unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("escape.lua")).unwrap();
    let s = start_with(&[("PCAP_LUA_DIR", dir.path().to_str().unwrap())]).await;
    let file = fixture("zeek-wikipedia.pcap");

    let v = s
        .ok(
            "run_lua_script",
            json!({"pcap_file": file, "script": "http_hosts.lua", "args": ["3"]}),
        )
        .await;
    // tshark's own count of requests per Host header, top 3
    let out = tshark()
        .args([
            "-n",
            "-r",
            &file,
            "-Y",
            "http.request",
            "-T",
            "fields",
            "-e",
            "http.host",
        ])
        .output()
        .unwrap();
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for h in String::from_utf8_lossy(&out.stdout).lines() {
        *counts.entry(h.to_string()).or_default() += 1;
    }
    let mut want: Vec<(u64, String)> = counts.into_iter().map(|(h, n)| (n, h)).collect();
    want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let want: Vec<String> = want
        .into_iter()
        .take(3)
        .map(|(n, h)| format!("{n}\t{h}"))
        .collect();
    assert_eq!(v["lines"], json!(want), "{v}");
    assert_eq!(v["truncated"], false);

    for (script, args, says) in [
        ("../http_hosts.lua", json!([]), "not a script name"),
        ("/etc/passwd", json!([]), "not a script name"),
        ("missing.lua", json!([]), "no script"),
        ("escape.lua", json!([]), "not a file inside PCAP_LUA_DIR"),
        ("http_hosts.lua", json!(["a\nb"]), "not allowed"),
        (
            "http_hosts.lua",
            json!(["1", "2", "3", "4", "5", "6", "7", "8", "9"]),
            "at most 8",
        ),
    ] {
        let e = s
            .err(
                "run_lua_script",
                json!({"pcap_file": file, "script": script, "args": args}),
            )
            .await;
        assert!(e.contains(says), "{script} {args}: {e}");
    }
    // an argument that looks like an option stays the script's argument
    let v = s
        .ok(
            "run_lua_script",
            json!({"pcap_file": file, "script": "http_hosts.lua", "args": ["-X lua_script:/tmp/x.lua"]}),
        )
        .await;
    assert_eq!(v["lines"].as_array().unwrap().len(), 4, "{v}");
}
