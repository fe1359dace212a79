//! analyze_batch over real captures: a row per file that agrees with the tool called on
//! that file alone and with tshark's own packet counts, failures and non-captures named,
//! a long batch answering "running" with progress and then finishing, and hostile
//! batches refused before anything is read.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use serde_json::{Value, json};

/// Copies fixtures (and a non-capture) into a directory of their own.
fn batch_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for n in names {
        std::fs::copy(fixture(n), dir.path().join(n)).unwrap();
    }
    std::fs::write(dir.path().join("notes.txt"), "not a capture\n").unwrap();
    dir
}

fn severity_counts(result: &Value) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for f in result["findings"].as_array().unwrap() {
        *m.entry(f["severity"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    m
}

#[tokio::test]
async fn a_batch_gives_each_capture_the_answer_of_a_direct_call() {
    let good = [
        "cs-synscan.pcapng",
        "zeek-dns-dynamic-update.pcap",
        "cs-icmp_echo.pcapng",
    ];
    let damaged = "ndpi-fuzz-2021-10-13-cut.pcap";
    let mut all: Vec<&str> = good.to_vec();
    all.push(damaged);
    let dir = batch_dir(&all);
    let d = dir.path().display().to_string();
    let s = start_with(&[("PCAP_ALLOWED_DIRS", &d)]).await;
    let r = s
        .ok(
            "analyze_batch",
            json!({"tool": "analyze_pcap_file", "glob": format!("{d}/*")}),
        )
        .await;
    assert_eq!(r["status"], "complete", "{r}");
    // the glob's non-capture is named, not analysed
    assert_eq!(r["skipped"], json!([format!("{d}/notes.txt")]));
    let rows = r["files"]["rows"].as_array().unwrap();
    assert_eq!(r["files"]["total"], 4);
    for name in good {
        let path = format!("{d}/{name}");
        let row = rows.iter().find(|x| x["file"] == path).expect(name);
        assert_eq!(row["status"], "complete", "{row}");
        // the oracle for the packets: tshark's own count
        assert_eq!(
            row["packets"].as_u64().unwrap(),
            tshark_count(&path, "frame"),
            "{name}"
        );
        // each row is what the tool says about that file called alone
        let direct = s.ok("analyze_pcap_file", json!({"pcap_file": path})).await;
        let counts = severity_counts(&direct);
        for sev in ["high", "medium", "low", "info"] {
            assert_eq!(
                row[sev].as_u64().unwrap(),
                counts.get(sev).copied().unwrap_or(0),
                "{name} {sev}: {row}"
            );
        }
    }
    let bad = rows
        .iter()
        .find(|x| x["file"] == format!("{d}/{damaged}"))
        .unwrap();
    assert_eq!(bad["status"], "failed");
    assert!(bad["error"].as_str().unwrap().contains("damaged"), "{bad}");
    // the scan (1000 ports, per the capture's own description) is raised across files
    // and the cross-file view names the file that has it
    let scan = r["by_finding"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["example"].as_str().unwrap().starts_with("Port scan"))
        .expect("port scan kind");
    assert_eq!(scan["files"], json!([format!("{d}/cs-synscan.pcapng")]));
    assert_eq!(scan["file_count"], 1);
    let raised = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["title"].as_str().unwrap().starts_with("Port scan"))
        .expect("scan finding");
    assert!(
        raised["title"]
            .as_str()
            .unwrap()
            .ends_with("(in 1 of 4 files)")
    );
    assert_eq!(raised["next_step"]["tool"], "analyze_pcap_file");
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["title"] == "1 of 4 file(s) could not be analysed")
    );
    // a list of files works as the glob does, and a file outside the roots fails its
    // own row without being read
    let r = s
        .ok(
            "analyze_batch",
            json!({"tool": "analyze_dns_resolution_issues", "files": [format!("{d}/{}", good[1]), "/etc/passwd"]}),
        )
        .await;
    let rows = r["files"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let outside = rows.iter().find(|x| x["file"] == "/etc/passwd").unwrap();
    assert!(
        outside["error"]
            .as_str()
            .unwrap()
            .contains("not a file this server may read"),
        "{outside}"
    );
}

#[tokio::test]
async fn a_long_batch_answers_running_then_finishes() {
    // every capture among the fixtures, with a one-second call deadline
    let captures: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .filter(|e| {
            let head = std::fs::read(e.path()).unwrap_or_default();
            let magic = head.get(..4).unwrap_or_default();
            // pcap (both byte orders, micro/nano) and pcapng section headers
            matches!(
                magic,
                [0xd4, 0xc3, 0xb2, 0xa1]
                    | [0xa1, 0xb2, 0xc3, 0xd4]
                    | [0x4d, 0x3c, 0xb2, 0xa1]
                    | [0xa1, 0xb2, 0x3c, 0x4d]
                    | [0x0a, 0x0d, 0x0d, 0x0a]
            )
        })
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(captures.len() > 20);
    let dirs = fixtures().display().to_string();
    let s = start_with(&[("PCAP_ALLOWED_DIRS", &dirs), ("PCAP_CALL_DEADLINE", "1")]).await;
    let args = json!({"tool": "analyze_pcap_file", "glob": format!("{dirs}/*"), "limit": 500});
    let first = s.ok("analyze_batch", args.clone()).await;
    assert_eq!(first["status"], "running", "{first}");
    let mut last = first["percent_done"].as_f64().unwrap();
    assert!((0.0..100.0).contains(&last));
    let started = std::time::Instant::now();
    let done = loop {
        let r = s.ok("analyze_batch", args.clone()).await;
        if r["status"] == "complete" {
            break r;
        }
        let pct = r["percent_done"].as_f64().unwrap();
        assert!(pct >= last, "progress went back: {last} then {pct}");
        last = pct;
        assert!(started.elapsed().as_secs() < 600, "batch never finished");
    };
    assert_eq!(
        done["files"]["total"],
        captures.len(),
        "{}",
        done["summary"]
    );
    let skipped: Vec<&str> = done["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert!(skipped.iter().all(|f| !captures.contains(&f.to_string())));
    assert!(skipped.iter().any(|f| f.ends_with("README.md")));
    // a limit asked for is a page the caller chose: every row is there
    assert_eq!(
        done["files"]["rows"].as_array().unwrap().len(),
        captures.len()
    );
}

/// A client that asked for progress hears the share of files done while it waits.
#[test]
fn a_batch_reports_progress_to_a_client_that_asks() {
    use std::io::{BufRead, Write};
    let dirs = fixtures().display().to_string();
    let mut s = raw_server_with(&[("PCAP_ALLOWED_DIRS", &dirs)]);
    writeln!(
        s.stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "analyze_batch",
        "arguments": {"tool": "analyze_tcp_retransmissions", "glob": format!("{dirs}/*.pcap*")},
        "_meta": {"progressToken": "batch-1"}}});
    writeln!(s.stdin, "{call}").unwrap();
    let mut progress = Vec::new();
    let result = loop {
        let mut line = String::new();
        assert!(s.out.read_line(&mut line).unwrap() > 0, "server closed");
        let m: Value = serde_json::from_str(&line).unwrap();
        if m["method"] == "notifications/progress" {
            assert_eq!(m["params"]["progressToken"], "batch-1");
            assert!(
                m["params"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("of the files analysed")
            );
            progress.push(m["params"]["progress"].as_f64().unwrap());
        } else if m["id"] == 7 {
            break m;
        }
    };
    assert_eq!(
        result["result"]["structuredContent"]["status"], "complete",
        "{result}"
    );
    assert!(!progress.is_empty(), "no progress heard");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert!(progress.iter().all(|p| (0.0..=100.0).contains(p)));
    let _ = s.child.kill();
}

#[tokio::test]
async fn hostile_batches_are_refused_before_anything_is_read() {
    let dir = batch_dir(&["cs-icmp_echo.pcapng"]);
    let d = dir.path().display().to_string();
    let s = start_with(&[("PCAP_ALLOWED_DIRS", &d)]).await;
    let cases = [
        (
            json!({"tool": "analyze_pcap_file", "glob": "/etc/*"}),
            "not a file this server may read",
        ),
        (
            json!({"tool": "analyze_pcap_file", "glob": format!("{d}/../*")}),
            "not a file this server may read",
        ),
        (
            json!({"tool": "analyze_pcap_file", "glob": "*/x.pcap"}),
            "only stand in the file name",
        ),
        (
            json!({"tool": "analyze_pcap_file", "glob": format!("{d}/*.nothing")}),
            "matches no capture",
        ),
        (
            json!({"tool": "list_captured_files", "glob": format!("{d}/*")}),
            "no pcap_file parameter",
        ),
        (
            json!({"tool": "export_packets", "glob": format!("{d}/*")}),
            "writes files",
        ),
        (
            json!({"tool": "start_packet_capture", "glob": format!("{d}/*")}),
            "writes files or captures traffic",
        ),
        (
            json!({"tool": "analyze_batch", "glob": format!("{d}/*")}),
            "cannot run itself",
        ),
        (
            json!({"tool": "no_such_tool", "glob": format!("{d}/*")}),
            "no tool is called",
        ),
        (
            json!({"tool": "analyze_pcap_file", "glob": format!("{d}/*"), "arguments": {"pcap_file": "/etc/passwd"}}),
            "must not name pcap_file",
        ),
        (json!({"tool": "analyze_pcap_file"}), "no captures given"),
    ];
    for (args, want) in cases {
        let e = s.err("analyze_batch", args.clone()).await;
        assert!(e.contains(want), "{args}: {e}");
    }
    // a glob with many stars against the directory answers at once
    let e = s
        .err(
            "analyze_batch",
            json!({"tool": "analyze_pcap_file", "glob": format!("{d}/{}b", "*a".repeat(200))}),
        )
        .await;
    assert!(e.contains("matches no capture"), "{e}");
    assert!(Path::new(&format!("{d}/notes.txt")).exists());
    // a glob over a huge directory is refused before its files are opened
    let many = tempfile::tempdir_in(dir.path()).unwrap();
    for i in 0..2001 {
        std::fs::write(many.path().join(format!("f{i}.pcap")), b"").unwrap();
    }
    let e = s
        .err(
            "analyze_batch",
            json!({"tool": "analyze_pcap_file", "glob": format!("{}/*.pcap", many.path().display())}),
        )
        .await;
    assert!(e.contains("matches 2001 files"), "{e}");
}
