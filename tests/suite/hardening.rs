//! Hostile captures, planted symlinks, races, signals and floods, each driven through
//! the real binary over MCP. Every crash input is built here, a few bytes each; every
//! number asserted comes from what the test built or from tshark itself.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

/// The analysis tools that take a capture, with the extra arguments they need.
fn file_tools() -> Vec<(String, Value)> {
    file_tool_names()
        .into_iter()
        .map(|name| {
            let extra = required_extras(&name);
            (name, extra)
        })
        .collect()
}

fn args(file: &str, extra: &Value) -> Value {
    let mut a = extra.clone();
    a["pcap_file"] = json!(file);
    a
}

/// A pcap record: timestamp, then the bytes.
fn record(sec: u32, usec: u32, data: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(16 + data.len());
    r.extend_from_slice(&sec.to_le_bytes());
    r.extend_from_slice(&usec.to_le_bytes());
    r.extend_from_slice(&(data.len() as u32).to_le_bytes());
    r.extend_from_slice(&(data.len() as u32).to_le_bytes());
    r.extend_from_slice(data);
    r
}

/// An Ethernet/IPv4/TCP segment with sequence number 1000 (see `tcp_segment`).
fn tcp_frame(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    tcp_segment(src, dst, sport, dport, 1000, 0, flags, payload)
}

fn pcap(records: &[Vec<u8>]) -> Vec<u8> {
    let mut f = pcap_header();
    for r in records {
        f.extend_from_slice(r);
    }
    f
}

/// A pcapng block with its padding and trailing length.
fn block(t: u32, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let len = (12 + body.len()) as u32;
    let mut b = t.to_le_bytes().to_vec();
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&body);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

fn shb() -> Vec<u8> {
    let mut body = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    body.extend_from_slice(&[1, 0, 0, 0]);
    body.extend_from_slice(&(-1i64).to_le_bytes());
    block(0x0a0d_0d0a, &body)
}

fn idb() -> Vec<u8> {
    let mut body = vec![1, 0, 0, 0];
    body.extend_from_slice(&65535u32.to_le_bytes());
    block(1, &body)
}

fn epb(ts_us: u64, data: &[u8]) -> Vec<u8> {
    let mut body = 0u32.to_le_bytes().to_vec();
    body.extend_from_slice(&((ts_us >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(ts_us as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(data);
    block(6, &body)
}

fn http_get(i: u16) -> Vec<u8> {
    tcp_frame(
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        40000 + i,
        80,
        0x18,
        b"GET / HTTP/1.1\r\n\r\n",
    )
}

/// `n` SYNs from `n` spoofed sources to one server: a flood with one stream each.
fn syn_flood(path: &Path, n: u32) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&pcap_header()).unwrap();
    for i in 0..n {
        let src = [11, (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let frame = tcp_frame(src, [10, 9, 9, 9], 1024 + (i % 60000) as u16, 80, 0x02, &[]);
        f.write_all(&record(
            1_700_000_000 + i / 10_000,
            (i % 10_000) * 100,
            &frame,
        ))
        .unwrap();
    }
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn absurd_timestamps_become_a_finding_not_an_allocation() {
    let s = start().await;
    // two packets 2^32-1 seconds apart: once a 34 GB bucket vector and a 6 GB tshark
    let f = s.storage_file("jump.pcap");
    std::fs::write(
        &f,
        pcap(&[
            record(0, 0, &http_get(1)),
            record(u32::MAX, 0, &http_get(2)),
        ]),
    )
    .unwrap();
    let bw = s
        .ok(
            "analyze_bandwidth_utilization",
            json!({"pcap_file": "jump.pcap"}),
        )
        .await;
    assert!(bw["windows"].as_u64().unwrap() <= 100_000, "{bw}");
    let jump = bw["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["title"] == "The capture clock jumps")
        .unwrap_or_else(|| panic!("no clock finding: {}", bw["findings"]));
    // 2^32-1 s is 136 years; the jump is into frame 2
    assert!(
        jump["detail"]
            .as_str()
            .unwrap()
            .contains("136 years at frame 2"),
        "{jump}"
    );
    assert_eq!(jump["evidence"]["frames"], json!([1, 2]));
    let io = s
        .ok(
            "generate_throughput_io_graph",
            json!({"pcap_file": "jump.pcap"}),
        )
        .await;
    assert!(
        io["buckets"]["total"].as_u64().unwrap() <= 2000,
        "{}",
        io["buckets"]["total"]
    );
    let frames: u64 = io["series"][0]["frames"].as_u64().unwrap();
    assert_eq!(frames, 2);
    let overview = s
        .ok("analyze_pcap_file", json!({"pcap_file": "jump.pcap"}))
        .await;
    assert!(
        overview["summary"]
            .as_str()
            .unwrap()
            .starts_with("Capture problem"),
        "{}",
        overview["summary"]
    );
    // still serving
    s.ok("list_captured_files", json!({})).await;
}

#[tokio::test]
async fn unreadable_captures_are_errors_from_every_tool() {
    let s = start().await;
    let get = http_get(1);
    let mut absurd = shb();
    absurd.extend(idb());
    absurd.extend_from_slice(&6u32.to_le_bytes());
    absurd.extend_from_slice(&0xfff0_0000u32.to_le_bytes());
    absurd.extend_from_slice(&[0u8; 40]);
    let mut caplen_beyond = shb();
    caplen_beyond.extend(idb());
    let mut e = epb(1, &get);
    // captured length claims far more than the block holds
    e[20..24].copy_from_slice(&60_000u32.to_le_bytes());
    caplen_beyond.extend(e);
    let mut no_idb = shb();
    no_idb.extend(epb(1, &get));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("header-only.pcap", pcap_header()),
        ("absurd-block.pcapng", absurd),
        ("caplen-beyond.pcapng", caplen_beyond),
        ("no-interface.pcapng", no_idb),
    ];
    for (name, bytes) in &cases {
        let path = s.storage_file(name);
        std::fs::write(&path, bytes).unwrap();
        // the oracle: tshark itself reads no frame from any of them
        assert_eq!(
            tshark_count(&path.display().to_string(), "frame"),
            0,
            "{name}"
        );
        for (tool, extra) in file_tools() {
            let e = s.err(&tool, args(name, &extra)).await;
            assert!(
                e.contains("holds no packet"),
                "{tool} on {name} should say it read nothing: {e}"
            );
        }
    }
}

#[tokio::test]
async fn frames_are_numbered_as_tshark_numbers_them() {
    let s = start().await;
    // a systemd journal entry before the packets is frame 1 for tshark
    let mut f = shb();
    f.extend(idb());
    f.extend(block(9, b"__REALTIME_TIMESTAMP=1000000\nMESSAGE=boot\n"));
    let a = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, 0x18, b"AAAA-first");
    let b = tcp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, 0x18, b"BBBB-second");
    f.extend(epb(1_000_000, &a));
    f.extend(epb(2_000_000, &b));
    let path = s.storage_file("journal.pcapng");
    std::fs::write(&path, f).unwrap();
    let p = path.display().to_string();
    let frames = tshark_count(&p, "frame");
    assert_eq!(frames, 3);
    let v = s
        .ok(
            "search_packet_content",
            json!({"pcap_file": "journal.pcapng", "search_pattern": "BBBB"}),
        )
        .await;
    let row = &v["matches"]["rows"][0];
    let expected = tshark_frames(&p, "frame contains \"BBBB\"", false)[0];
    assert_eq!(row["frame"], expected, "{v}");
    assert!(
        row["snippet"].as_str().unwrap().contains("BBBB-second"),
        "{row}"
    );
    assert_eq!(v["capture"]["packets_in_file"], frames);
}

#[tokio::test]
async fn a_tab_in_the_file_name_does_not_shift_the_facts() {
    let s = start().await;
    std::fs::copy(
        fixture("zeek-wikipedia.pcap"),
        s.storage_file("wiki\tpedia.pcap"),
    )
    .unwrap();
    let v = s
        .ok(
            "analyze_pcap_file",
            json!({"pcap_file": "wiki\tpedia.pcap"}),
        )
        .await;
    assert_eq!(
        v["capture"]["packets_in_file"],
        tshark_count(&fixture("zeek-wikipedia.pcap"), "frame")
    );
    assert!(
        v["capture"]["first_packet_time"]
            .as_str()
            .unwrap()
            .starts_with("2011-03-18")
    );
}

#[tokio::test]
async fn nothing_is_written_or_listed_through_a_planted_symlink() {
    let s = start().await;
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("written-outside.png");
    std::os::unix::fs::symlink(&target, s.storage_file("graph.png")).unwrap();
    let e = s
        .err(
            "generate_throughput_io_graph",
            json!({"pcap_file": fixture("cs-icmp_echo.pcapng"), "output_file": "graph.png"}),
        )
        .await;
    assert!(e.contains("already exists"), "{e}");
    assert!(!target.exists(), "the PNG was written through the symlink");

    // a link to a capture outside the roots is listed by name, never read
    let secret = outside.path().join("secret.pcap");
    std::fs::copy(fixture("zeek-wikipedia.pcap"), &secret).unwrap();
    std::os::unix::fs::symlink(&secret, s.storage_file("link.pcap")).unwrap();
    std::fs::copy(
        fixture("cs-icmp_echo.pcapng"),
        s.storage_file("real.pcapng"),
    )
    .unwrap();
    let v = s.ok("list_captured_files", json!({})).await;
    let names: Vec<&str> = v["files"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["real.pcapng"], "{v}");
    assert!(
        v["symlinks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "link.pcap"),
        "{v}"
    );
    assert!(
        !v.to_string().contains("136"),
        "facts of the outside file leaked: {v}"
    );
}

#[tokio::test]
async fn errors_outside_the_roots_do_not_reveal_what_exists() {
    let s = start().await;
    std::os::unix::fs::symlink("/etc/passwd", s.storage_file("passwd.pcap")).unwrap();
    let mut messages = Vec::new();
    for (name, asked) in [
        ("a", "/etc/hostname"),
        ("b", "/definitely/not/here.pcap"),
        ("c", "passwd.pcap"),
        ("d", "../../../../etc/shadow"),
    ] {
        let e = s
            .err("analyze_pcap_file", json!({"pcap_file": asked}))
            .await;
        assert!(e.contains("PCAP_ALLOWED_DIRS"), "{e}");
        assert!(
            !e.contains("No such file") && !e.contains("resolves"),
            "{e}"
        );
        messages.push((name, e.replace(asked, "X")));
    }
    for w in messages.windows(2) {
        assert_eq!(
            w[0].1, w[1].1,
            "{} and {} answer differently",
            w[0].0, w[1].0
        );
    }
}

#[tokio::test]
async fn a_directory_swapped_for_a_symlink_never_redirects_a_read() {
    let s = start().await;
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let real = root.path().join("d");
    let parked = root.path().join("d.real");
    std::fs::create_dir(&real).unwrap();
    std::fs::copy(fixture("cs-icmp_echo.pcapng"), real.join("c.pcapng")).unwrap();
    std::fs::copy(
        fixture("zeek-wikipedia.pcap"),
        outside.path().join("c.pcapng"),
    )
    .unwrap();
    let inside_frames = tshark_count(&fixture("cs-icmp_echo.pcapng"), "frame");
    let server = start_with(&[(
        "PCAP_ALLOWED_DIRS",
        &format!("{}:{}", fixtures().display(), root.path().display()),
    )])
    .await;
    drop(s);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, real, parked, out) = (
            stop.clone(),
            real.clone(),
            parked.clone(),
            outside.path().to_path_buf(),
        );
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::rename(&real, &parked);
                let _ = std::os::unix::fs::symlink(&out, &real);
                std::thread::sleep(Duration::from_micros(300));
                let _ = std::fs::remove_file(&real);
                let _ = std::fs::rename(&parked, &real);
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };
    let file = real.join("c.pcapng").display().to_string();
    let mut analysed = 0;
    for i in 0..40 {
        // a different limit each time: no cached answer
        let r = server
            .call(
                "analyze_pcap_file",
                json!({"pcap_file": file, "limit": i + 1}),
            )
            .await;
        if r.is_error == Some(true) {
            continue;
        }
        let v = r.structured_content.unwrap();
        assert_eq!(
            v["capture"]["packets_in_file"], inside_frames,
            "read outside: {v}"
        );
        assert_eq!(
            v["capture"]["packets_analysed"], inside_frames,
            "read outside: {v}"
        );
        analysed += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    assert!(analysed > 0, "no call got through at all");
}

#[tokio::test]
async fn a_file_that_grows_during_the_analysis_says_so() {
    let s = start().await;
    let path = s.storage_file("growing.pcap");
    let mut recs = Vec::new();
    for i in 0..20_000u32 {
        recs.push(record(
            1_700_000_000 + i / 1000,
            (i % 1000) * 1000,
            &http_get(i as u16),
        ));
    }
    std::fs::write(&path, pcap(&recs)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(&record(1_700_000_100, i, &http_get(7)))
                    .unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let v = s
        .ok("analyze_pcap_file", json!({"pcap_file": "growing.pcap"}))
        .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let warnings = v["capture"]["warnings"].to_string();
    assert!(
        warnings.contains("changed size while it was analysed"),
        "{v}"
    );
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .starts_with("Capture problem")
    );
}

#[tokio::test]
async fn children_die_with_the_server_and_leave_no_temp_files() {
    let big = tempfile::tempdir().unwrap();
    let flood = big.path().join("flood.pcap");
    syn_flood(&flood, 150_000);
    let temp_before = temp_leftovers();
    let s = start_with(&[(
        "PCAP_ALLOWED_DIRS",
        &format!("{}:{}", fixtures().display(), big.path().display()),
    )])
    .await;
    let pid = s.pid;
    let client = s.client.peer().clone();
    let file = flood.display().to_string();
    // a slow regex search keeps one tshark busy with little output
    let call = tokio::spawn(async move {
        let _ = client
            .call_tool(
                rmcp::model::CallToolRequestParams::new("search_packet_content").with_arguments(
                    json!({"pcap_file": file, "search_pattern": "(a|b|c|d|e)*zq[0-9]+x", "regex": true})
                        .as_object()
                        .unwrap()
                        .clone(),
                ),
            )
            .await;
    });
    wait_until(20, "tshark started", || {
        !children_named(pid, "tshark").is_empty()
    })
    .await;
    let kids = children_named(pid, "tshark");
    // the memory ceiling is in force in the child
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", kids[0])).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max address space") && l.contains("4294967296")),
        "{limits}"
    );
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    wait_until(10, "orphaned tshark gone", || {
        kids.iter()
            .all(|k| !Path::new(&format!("/proc/{k}")).exists() || is_zombie(*k))
    })
    .await;
    call.abort();
    assert_eq!(temp_leftovers(), temp_before, "temp files left behind");
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rfind(')').is_some_and(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}

fn temp_leftovers() -> usize {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pcap-analyzer"))
        .count()
}

#[test]
fn sigterm_ends_a_server_whose_stdin_is_still_open() {
    let RawServer {
        mut child, stdin, ..
    } = raw_server();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < until, "the server ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
}

#[test]
fn an_oversized_request_gets_an_error_and_the_server_keeps_serving() {
    let RawServer {
        mut child,
        mut stdin,
        mut out,
        ..
    } = raw_server();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    // 64 MB in one line
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"x","arguments":{{"pad":"{}"}}}}}}"#,
        "a".repeat(64 << 20)
    );
    stdin.write_all(huge.as_bytes()).unwrap();
    stdin.write_all(b"\n").unwrap();
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":3,"method":"tools/list"}}"#).unwrap();
    stdin.flush().unwrap();
    let mut replies = Vec::new();
    for _ in 0..2 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        replies.push(serde_json::from_str::<Value>(&l).unwrap());
    }
    assert!(
        replies[0]["error"].is_object() && replies[0]["id"].is_null(),
        "{}",
        replies[0]
    );
    assert_eq!(replies[1]["id"], 3);
    assert!(replies[1]["result"]["tools"].as_array().unwrap().len() > 20);
    drop(stdin);
    let _ = child.wait();
}

#[tokio::test]
async fn slow_searches_do_not_starve_cheap_calls_and_stop_at_their_budget() {
    let big = tempfile::tempdir().unwrap();
    let flood = big.path().join("flood.pcap");
    syn_flood(&flood, 150_000);
    let s = start_with(&[
        (
            "PCAP_ALLOWED_DIRS",
            &format!("{}:{}", fixtures().display(), big.path().display()),
        ),
        ("PCAP_CALL_DEADLINE", "4"),
        ("PCAP_SEARCH_TIMEOUT", "3"),
    ])
    .await;
    let file = flood.display().to_string();
    // two slow searches take both tshark slots
    let mut searches = Vec::new();
    for p in ["(a|b|c)*zq[0-9]+x", "(d|e|f)*zq[0-9]+y"] {
        let c = s.client.peer().clone();
        let file = file.clone();
        searches.push(tokio::spawn(async move {
            c.call_tool(
                rmcp::model::CallToolRequestParams::new("search_packet_content").with_arguments(
                    json!({"pcap_file": file, "search_pattern": p, "regex": true})
                        .as_object()
                        .unwrap()
                        .clone(),
                ),
            )
            .await
            .unwrap()
        }));
    }
    wait_until(20, "both searches running", || {
        children_named(s.pid, "tshark").len() >= 2
    })
    .await;
    // cheap calls and a filter check answer at once; an analysis answers by the deadline
    let t = Instant::now();
    s.ok("list_captured_files", json!({})).await;
    let e = s
        .err(
            "analyze_pcap_file",
            json!({"pcap_file": fixture("cs-icmp_echo.pcapng"), "display_filter": "tcp.port =="}),
        )
        .await;
    assert!(e.contains("invalid display_filter"), "{e}");
    let r = s
        .call(
            "analyze_tcp_retransmissions",
            json!({"pcap_file": fixture("cs-icmp_echo.pcapng"), "display_filter": "icmp"}),
        )
        .await;
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "calls waited {:?}",
        t.elapsed()
    );
    let v = r.structured_content.unwrap_or_default();
    assert!(v["status"] == "running" || v["status"] == "complete", "{v}");
    // each search is stopped by its own budget and says which setting holds it
    for h in searches {
        let mut r = h.await.unwrap();
        // past the call deadline the first answer is "running": ask again
        for _ in 0..10 {
            if r.is_error == Some(true) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let args =
                json!({"pcap_file": file, "search_pattern": "(a|b|c)*zq[0-9]+x", "regex": true});
            r = s.call("search_packet_content", args).await;
        }
        let t = text(&r);
        assert!(t.contains("PCAP_SEARCH_TIMEOUT"), "{t}");
    }
}

#[tokio::test]
async fn the_capture_limit_holds_under_concurrent_starts() {
    if !is_root() {
        eprintln!("skipped: live capture needs root");
        return;
    }
    let s = start_with(&[("PCAP_MAX_CAPTURES", "2")]).await;
    let mut starts = Vec::new();
    for i in 0..5 {
        let c = s.client.peer().clone();
        starts.push(tokio::spawn(async move {
            c.call_tool(
                rmcp::model::CallToolRequestParams::new("start_packet_capture").with_arguments(
                    json!({"interface": "lo", "duration": 20, "capture_filter": "udp port 9", "output_file": format!("c{i}.pcapng")})
                        .as_object()
                        .unwrap()
                        .clone(),
                ),
            )
            .await
            .unwrap()
        }));
    }
    let mut ok = 0;
    for h in starts {
        let r = h.await.unwrap();
        if r.is_error != Some(true) {
            ok += 1;
        } else {
            assert!(text(&r).contains("PCAP_MAX_CAPTURES"), "{}", text(&r));
        }
    }
    assert_eq!(ok, 2);
    let v = s.ok("get_capture_status", json!({})).await;
    for c in v["captures"].as_array().unwrap() {
        s.ok(
            "stop_packet_capture",
            json!({"capture_id": c["capture_id"]}),
        )
        .await;
    }
}

#[tokio::test]
async fn a_symlink_swapped_in_during_a_live_capture_is_never_written() {
    if !is_root() {
        eprintln!("skipped: live capture needs root");
        return;
    }
    let s = start().await;
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, b"keep me").unwrap();
    let id = s.start_capture("lo", "udp port 9", "swap.pcapng").await;
    // replace the capture file by a link to the victim while dumpcap runs
    let path = s.storage_file("swap.pcapng");
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..20 {
        sock.send_to(b"hello", "127.0.0.1:9").unwrap();
    }
    s.stop_capture(&id).await;
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
}

#[tokio::test]
async fn edge_arguments_get_clear_errors() {
    let s = start().await;
    let one = s.storage_file("one.pcap");
    std::fs::write(&one, pcap(&[record(1_700_000_000, 0, &http_get(1))])).unwrap();
    // a single packet is one bucket with one frame, not "0 frames in 0 buckets"
    let v = s
        .ok(
            "generate_throughput_io_graph",
            json!({"pcap_file": "one.pcap"}),
        )
        .await;
    assert_eq!(v["series"][0]["frames"], 1, "{v}");
    assert!(v["buckets"]["total"].as_u64().unwrap() >= 1);
    for (tool, field) in [
        ("generate_throughput_io_graph", "time_interval"),
        ("generate_traffic_timeline", "time_interval"),
        ("analyze_bandwidth_utilization", "time_window"),
    ] {
        for bad in [json!(0), json!(-1), json!(1e308)] {
            let e = s
                .err(tool, json!({"pcap_file": "one.pcap", field: bad}))
                .await;
            assert!(
                e.contains(field) && !e.contains("tshark:"),
                "{tool} {bad}: {e}"
            );
        }
    }
    let e = s
        .err(
            "generate_throughput_io_graph",
            json!({"pcap_file": "one.pcap", "display_filter": "tcp.port in {80,443}"}),
        )
        .await;
    assert!(e.contains("comma") && !e.contains("register"), "{e}");
    let e = s
        .err(
            "analyze_pcap_file",
            json!({"pcap_file": "one.pcap", "display_filter": "tcp\u{0}"}),
        )
        .await;
    assert!(
        e.contains("control character") && !e.contains("doctor"),
        "{e}"
    );
}

#[tokio::test]
async fn identical_input_gives_identical_output() {
    let a = start().await;
    let b = start().await;
    for file in [
        "zeek-wikipedia.pcap",
        "cs-synscan.pcapng",
        "zeek-mixed-vlan-mpls.pcap",
    ] {
        for (tool, extra) in file_tools() {
            if WRITING_FILE_TOOLS.contains(&tool.as_str()) {
                // it names the file it wrote, in each server's own storage
                continue;
            }
            let x = a.call(&tool, args(&fixture(file), &extra)).await;
            let y = b.call(&tool, args(&fixture(file), &extra)).await;
            assert_eq!(
                text(&x),
                text(&y),
                "{tool} on {file} differs between two runs"
            );
        }
    }
}

#[tokio::test]
async fn a_syn_flood_is_counted_exactly_in_bounded_memory() {
    let big = tempfile::tempdir().unwrap();
    let flood = big.path().join("flood.pcap");
    let n: u32 = std::env::var("SYN_FLOOD_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    syn_flood(&flood, n);
    let s = start_with(&[(
        "PCAP_ALLOWED_DIRS",
        &format!("{}:{}", fixtures().display(), big.path().display()),
    )])
    .await;
    let file = flood.display().to_string();
    let mut v = Value::Null;
    for _ in 0..60 {
        v = s
            .ok("analyze_connection_lifecycle", json!({"pcap_file": file}))
            .await;
        if v["status"] == "complete" {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(v["status"], "complete");
    // the test sent one SYN per source: that many streams, none answered
    assert_eq!(v["capture"]["packets_in_file"], n);
    assert_eq!(v["connections"]["total"], n);
    // the threat view counts every SYN of the flood, however many streams it keeps
    let mut t = Value::Null;
    for _ in 0..60 {
        t = s
            .ok("analyze_security_threats", json!({"pcap_file": file}))
            .await;
        if t["status"] == "complete" {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let flood = t["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["title"]
                .as_str()
                .unwrap_or("")
                .to_lowercase()
                .contains("flood")
        })
        .unwrap_or_else(|| panic!("no flood finding: {}", t["findings"]));
    assert!(
        flood["title"].as_str().unwrap().contains(&n.to_string())
            || flood["detail"].as_str().unwrap().contains(&n.to_string()),
        "{flood}"
    );
    // another scope of the same file: a model of its own, as large; before building it
    // the cache makes room for it (each more scope is one more ~50 s pass of the debug
    // build, and shows nothing the first one does not)
    for _ in 0..60 {
        let v = s
            .ok(
                "analyze_connection_lifecycle",
                json!({"pcap_file": file, "display_filter": "tcp.srcport > 2000"}),
            )
            .await;
        if v["status"] == "complete" {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eprintln!(
        "server RSS after two scopes: {} MB",
        rss_kb(s.pid, "VmRSS:") / 1024
    );
    let hwm = rss_kb(s.pid, "VmHWM:");
    eprintln!("server peak RSS for {n} one-SYN streams: {} MB", hwm / 1024);
    assert!(hwm < 600 * 1024, "server peak RSS {hwm} kB for {n} SYNs");
}
