//! The result contract on every fixture and corpus capture, for every file tool:
//! - the default answer fits a model's context (at most ~20 KB of JSON);
//! - every finding's display filter selects at least one frame in Wireshark (two-pass,
//!   as the GUI evaluates it) and every frame the finding lists.

use std::collections::BTreeMap;

use crate::common::*;
use serde_json::{Value, json};

const BUDGET: usize = 20_000;

/// The findings (tool and title, frames listed) that hand out one filter on one file.
type Uses = Vec<(String, Vec<u64>)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_result_fits_and_every_finding_filter_shows_its_frames() {
    // the fixtures, and the corpus when it sits beside the checkout (as in CI);
    // CONTRACT_FIXTURES_ONLY=1 for a quicker run (about a third of the time)
    let (files, dirs) = if std::env::var_os("CONTRACT_FIXTURES_ONLY").is_none() {
        fixture_and_corpus_captures()
    } else {
        let names: Vec<std::path::PathBuf> =
            fixture_names().iter().map(|n| fixture(n).into()).collect();
        (names, fixtures().display().to_string())
    };
    // the corpus' three merges of 7-12 MB cost more than all other files together
    // (every finding's filter is a two-pass tshark run over the file): CONTRACT_ALL=1
    // takes them too; CI leaves them out to stay under 15 minutes
    let files: Vec<std::path::PathBuf> = if std::env::var_os("CONTRACT_ALL").is_some() {
        files
    } else {
        files
            .into_iter()
            .filter(|f| std::fs::metadata(f).map_or(true, |m| m.len() <= 5_000_000))
            .collect()
    };
    let s = start_with(&[("PCAP_ALLOWED_DIRS", &dirs), ("PCAP_CALL_DEADLINE", "600")]).await;
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let tools = file_tool_names();
    let mut over = Vec::new();
    // file -> filter -> the findings that use it, with the frames they list
    let mut checks: BTreeMap<String, BTreeMap<String, Uses>> = BTreeMap::new();
    for name in &names {
        let mut calls = Vec::new();
        for tool in &tools {
            // a writer's result names its file; writing every capture out again (as
            // JSON) would cost more than the whole contract
            if WRITING_FILE_TOOLS.contains(&tool.as_str()) {
                continue;
            }
            let mut args = required_extras(tool);
            args["pcap_file"] = json!(name);
            if tool == "search_packet_content" {
                args["search_pattern"] = json!("e");
            }
            calls.push(spawn_call(s.client.peer(), tool, args));
        }
        for c in calls {
            let (tool, r) = c.await.unwrap();
            let Some(v) = r.unwrap().structured_content else {
                continue;
            };
            let size = v.to_string().len();
            if size > BUDGET {
                over.push(format!("{tool} on {name}: {size} bytes"));
            }
            for f in v["findings"].as_array().into_iter().flatten() {
                let filter = f["evidence"]["display_filter"].as_str().unwrap_or("");
                if filter.is_empty() {
                    continue;
                }
                let frames: Vec<u64> = f["evidence"]["frames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_u64)
                    .collect();
                checks
                    .entry(name.clone())
                    .or_default()
                    .entry(filter.to_string())
                    .or_default()
                    .push((format!("{tool}: {}", f["title"]), frames));
            }
        }
    }
    assert!(over.is_empty(), "over {BUDGET} bytes:\n{}", over.join("\n"));
    // every filter of a file in one tshark run; two files at a time
    let by_file: Vec<(String, Vec<(String, Uses)>)> = checks
        .into_iter()
        .map(|(file, filters)| (file, filters.into_iter().collect()))
        .collect();
    // the one-run check selects what `tshark -2 -Y` selects
    if let Some((file, checks)) = by_file.iter().find(|(_, c)| c.len() > 1) {
        let filters: Vec<&str> = checks.iter().take(3).map(|(f, _)| f.as_str()).collect();
        let each = tshark_frames_each(file, &filters);
        for (f, sel) in filters.iter().zip(&each) {
            let alone: std::collections::BTreeSet<u64> =
                tshark_frames(file, f, true).into_iter().collect();
            assert_eq!(sel, &alone, "`{f}` on {file}");
        }
    }
    let bad: Vec<String> = std::thread::scope(|sc| {
        let halves: Vec<_> = by_file
            .chunks(by_file.len().div_ceil(2).max(1))
            .map(|part| {
                sc.spawn(move || {
                    let mut bad = Vec::new();
                    for (file, checks) in part {
                        let filters: Vec<&str> = checks.iter().map(|(f, _)| f.as_str()).collect();
                        let selected = tshark_frames_each(file, &filters);
                        for ((filter, uses), sel) in checks.iter().zip(&selected) {
                            for (what, frames) in uses {
                                let missing: Vec<&u64> =
                                    frames.iter().filter(|f| !sel.contains(f)).collect();
                                if sel.is_empty() || !missing.is_empty() {
                                    bad.push(format!(
                                        "{what} on {file}: `{filter}` selects {} frame(s), misses {missing:?}",
                                        sel.len()
                                    ));
                                }
                            }
                        }
                    }
                    bad
                })
            })
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(
        bad.is_empty(),
        "{} finding(s):\n{}",
        bad.len(),
        bad.join("\n")
    );
}
