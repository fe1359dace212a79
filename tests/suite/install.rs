//! `install CLIENT`: the entry each client reads, written where that client looks for
//! it (the clients' documented user-level files), merged into what the file held, and
//! good enough to launch the server from.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;
use rmcp::ServiceExt;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::{Value, json};

fn install(home: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("install")
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("PCAP_STORAGE_DIR")
        .env_remove("PCAP_ALLOWED_DIRS")
        .env_remove("PCAP_TOOLSETS")
        .env_remove("WIRESHARK_PATH")
        .output()
        .unwrap()
}

fn read(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// (client, its user-level file under HOME on Linux, the key holding servers, typed)
const CLIENTS: [(&str, &str, &str, bool); 6] = [
    (
        "claude-desktop",
        ".config/Claude/claude_desktop_config.json",
        "mcpServers",
        false,
    ),
    ("claude-code", ".claude.json", "mcpServers", true),
    ("cursor", ".cursor/mcp.json", "mcpServers", false),
    ("vscode", ".config/Code/User/mcp.json", "servers", true),
    ("kiro", ".kiro/settings/mcp.json", "mcpServers", false),
    ("amazonq", ".aws/amazonq/mcp.json", "mcpServers", false),
];

#[test]
fn print_shows_each_clients_entry() {
    let home = tempfile::tempdir().unwrap();
    let exe = Path::new(BIN).canonicalize().unwrap();
    for (client, _, key, typed) in CLIENTS {
        let out = install(home.path(), &[client, "--print"]);
        assert!(out.status.success(), "{client}: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let e = &v[key]["pcap-analyzer"];
        assert_eq!(e["command"], exe.to_str().unwrap(), "{client}: {v}");
        assert_eq!(e["args"], json!([]), "{client}");
        // clients start servers anywhere: the storage directory is absolute
        let storage = e["env"]["PCAP_STORAGE_DIR"].as_str().unwrap();
        assert_eq!(
            Path::new(storage),
            home.path().join("pcap_storage"),
            "{client}"
        );
        assert_eq!(e.get("type").is_some(), typed, "{client}: {e}");
        if typed {
            assert_eq!(e["type"], "stdio");
        }
        // printing writes nothing
        assert!(std::fs::read_dir(home.path()).unwrap().next().is_none());
    }
}

#[test]
fn install_writes_where_each_client_reads() {
    let home = tempfile::tempdir().unwrap();
    for (client, file, key, _) in CLIENTS {
        let out = install(home.path(), &[client]);
        assert!(out.status.success(), "{client}: {out:?}");
        let v = read(&home.path().join(file));
        assert!(
            v[key]["pcap-analyzer"]["command"].is_string(),
            "{client}: {v}"
        );
    }
}

#[test]
fn install_merges_and_backs_up() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join(".cursor/mcp.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let before = r#"{"mcpServers": {"other": {"command": "other-server", "args": ["-x"]}}, "someSetting": true}"#;
    std::fs::write(&file, before).unwrap();
    let out = install(home.path(), &["cursor"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Added"));
    let v = read(&file);
    assert_eq!(
        v["mcpServers"]["other"],
        json!({"command": "other-server", "args": ["-x"]})
    );
    assert_eq!(v["someSetting"], true);
    assert!(v["mcpServers"]["pcap-analyzer"].is_object());
    assert_eq!(
        std::fs::read_to_string(home.path().join(".cursor/mcp.json.bak")).unwrap(),
        before
    );
    // a second install replaces its own entry and nothing else
    let out = install(home.path(), &["cursor", "--name", "pcap"]);
    assert!(out.status.success());
    let out = install(home.path(), &["cursor"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Updated"));
    let v = read(&file);
    let names: Vec<&String> = v["mcpServers"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["other", "pcap", "pcap-analyzer"]);

    // a file that is not JSON is left alone, with no backup made
    let broken = home.path().join("broken.json");
    std::fs::write(&broken, "{ not json").unwrap();
    let out = install(home.path(), &["kiro", "--config", broken.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
    assert_eq!(std::fs::read_to_string(&broken).unwrap(), "{ not json");
    assert!(!home.path().join("broken.json.bak").exists());
    // an unknown client says which exist
    let out = install(home.path(), &["notepad"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("claude-desktop|claude-code"));
}

#[tokio::test]
async fn the_installed_entry_launches_the_server() {
    let home = tempfile::tempdir().unwrap();
    let out = install(home.path(), &["claude-desktop"]);
    assert!(out.status.success());
    let v = read(
        &home
            .path()
            .join(".config/Claude/claude_desktop_config.json"),
    );
    let e = v["mcpServers"]["pcap-analyzer"].clone();
    // launched as the client would: the entry's command, arguments and environment only
    let transport = TokioChildProcess::new(
        tokio::process::Command::new(e["command"].as_str().unwrap()).configure(|cmd| {
            cmd.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap())
                .current_dir("/");
            for a in e["args"].as_array().unwrap() {
                cmd.arg(a.as_str().unwrap());
            }
            for (k, val) in e["env"].as_object().unwrap() {
                cmd.env(k, val.as_str().unwrap());
            }
        }),
    )
    .unwrap();
    let client = ().serve(transport).await.expect("MCP initialize");
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "analyze_pcap_file"));
    let r = client
        .call_tool(rmcp::model::CallToolRequestParams::new(
            "list_captured_files",
        ))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{r:?}");
    // the storage directory the entry names is where the server works
    assert!(home.path().join("pcap_storage").is_dir());
    let _ = client.cancel().await;
}
