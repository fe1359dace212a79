//! Every tool's default answer fits a model's context: at most ~20 KB of JSON on every
//! fixture (tables paged, long lists capped with their totals).

mod common;

use common::*;
use serde_json::json;

const BUDGET: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_outputs_stay_within_20_kb_on_every_fixture() {
    let s = start().await;
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
        .collect();
    names.sort();
    let tools = file_tool_names();
    let mut over = Vec::new();
    for name in &names {
        let mut calls = Vec::new();
        for tool in &tools {
            let peer = s.client.peer().clone();
            let mut args = json!({"pcap_file": fixture(name)});
            if tool == "search_packet_content" {
                args["search_pattern"] = json!("e");
            }
            let (tool, name) = (tool.clone(), name.clone());
            calls.push(tokio::spawn(async move {
                let r = peer
                    .call_tool(
                        rmcp::model::CallToolRequestParams::new(tool.clone())
                            .with_arguments(args.as_object().unwrap().clone()),
                    )
                    .await
                    .unwrap();
                // the structured copy is what a client puts in the model's context
                let size = r
                    .structured_content
                    .as_ref()
                    .map(|v| v.to_string().len())
                    .unwrap_or(0);
                (tool, name, size)
            }));
        }
        for c in calls {
            let (tool, name, size) = c.await.unwrap();
            if size > BUDGET {
                over.push(format!("{tool} on {name}: {size} bytes"));
            }
        }
    }
    assert!(over.is_empty(), "over {BUDGET} bytes:\n{}", over.join("\n"));
}
