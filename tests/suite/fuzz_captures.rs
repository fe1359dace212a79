//! Generated malformed and extreme captures through every file tool on one server:
//! random record lengths, timestamps at 0, 2^32-1 and going backwards, huge captured
//! lengths, zero-length records, truncated blocks, undeclared interfaces. The server
//! must stay up, every answer must be a result or a clear error, and where tshark reads
//! frames, we must count exactly as many (our frame numbers are tshark's).

use std::path::Path;

use crate::common::*;
use serde_json::json;

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

fn tcp_frame(r: &mut Rng) -> Vec<u8> {
    let payload: Vec<u8> = (0..r.below(40)).map(|_| r.next() as u8).collect();
    let src = [10, 0, 0, r.below(4) as u8];
    let sport = 1024 + r.below(4) as u16;
    let mut f = tcp_segment(
        src,
        [10, 0, 0, 9],
        sport,
        80,
        1000,
        0,
        r.next() as u8,
        &payload,
    );
    // the same bytes as UDP or ICMP now and then (offset 23: IPv4 protocol)
    f[23] = [6u8, 17, 1][r.below(3) as usize];
    // a few flipped bytes make it malformed in interesting places
    for _ in 0..r.below(4) {
        let i = r.below(f.len() as u64) as usize;
        f[i] = r.next() as u8;
    }
    f
}

fn timestamp(r: &mut Rng, prev: u32) -> u32 {
    match r.below(6) {
        0 => 0,
        1 => u32::MAX,
        2 => prev.saturating_sub(r.below(1000) as u32),
        _ => prev.saturating_add(r.below(3) as u32),
    }
}

fn gen_pcap(r: &mut Rng) -> Vec<u8> {
    let mut f = pcap_header();
    if r.chance(10) {
        // snaplen 0 and an odd link type
        f[16..20].copy_from_slice(&0u32.to_le_bytes());
        f[20..24].copy_from_slice(&(r.below(300) as u32).to_le_bytes());
    }
    let mut ts = 1_700_000_000u32;
    for _ in 0..r.below(7) {
        ts = timestamp(r, ts);
        let data = if r.chance(15) {
            Vec::new()
        } else {
            tcp_frame(r)
        };
        let caplen = match r.below(10) {
            0 => u32::MAX,
            1 => 300_000,
            2 => data.len() as u32 + r.below(100) as u32,
            _ => data.len() as u32,
        };
        f.extend_from_slice(&ts.to_le_bytes());
        f.extend_from_slice(&(r.below(1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&caplen.to_le_bytes());
        f.extend_from_slice(&(data.len() as u32).to_le_bytes());
        f.extend_from_slice(&data);
    }
    if r.chance(20) {
        let cut = r.below(f.len() as u64) as usize;
        f.truncate(cut.max(24));
    }
    f
}

fn block(t: u32, body: &[u8], len_override: Option<u32>) -> Vec<u8> {
    let mut body = body.to_vec();
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let len = len_override.unwrap_or((12 + body.len()) as u32);
    let mut b = t.to_le_bytes().to_vec();
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&body);
    b.extend_from_slice(&((12 + body.len()) as u32).to_le_bytes());
    b
}

fn gen_pcapng(r: &mut Rng) -> Vec<u8> {
    let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    let mut f = block(0x0a0d_0d0a, &shb, None);
    let interfaces = if r.chance(85) { 1 + r.below(2) } else { 0 };
    for _ in 0..interfaces {
        let mut idb = vec![1, 0, 0, 0];
        idb.extend_from_slice(&65535u32.to_le_bytes());
        if r.chance(30) {
            // if_tsresol: nanoseconds, or an absurd value
            idb.extend_from_slice(&[9, 0, 1, 0, [9u8, 0x7f, 200][r.below(3) as usize], 0, 0, 0]);
            idb.extend_from_slice(&[0, 0, 0, 0]);
        }
        f.extend(block(1, &idb, None));
    }
    let mut ts: u64 = 1_700_000_000_000_000;
    for _ in 0..r.below(7) {
        ts = match r.below(5) {
            0 => 0,
            1 => u64::MAX,
            2 => ts.saturating_sub(r.below(10_000_000)),
            _ => ts.saturating_add(r.below(3_000_000)),
        };
        let data = if r.chance(10) {
            Vec::new()
        } else {
            tcp_frame(r)
        };
        let kind = r.below(10);
        let mut body = (r.below(3) as u32).to_le_bytes().to_vec();
        body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ts as u32).to_le_bytes());
        let caplen = match r.below(10) {
            0 => u32::MAX,
            1 => data.len() as u32 + 64,
            _ => data.len() as u32,
        };
        body.extend_from_slice(&caplen.to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&data);
        let len_override = match r.below(12) {
            0 => Some(r.next() as u32),
            1 => Some(8),
            _ => None,
        };
        let t = match kind {
            0 => 9,     // systemd journal
            1 => 0xBAD, // custom
            2 => 5,     // interface statistics
            3 => 3,     // simple packet
            _ => 6,
        };
        let body = if t == 9 {
            b"__REALTIME_TIMESTAMP=1\nMESSAGE=x\n".to_vec()
        } else if t == 3 {
            let mut b = (data.len() as u32).to_le_bytes().to_vec();
            b.extend_from_slice(&data);
            b
        } else {
            body
        };
        f.extend(block(t, &body, len_override));
    }
    if r.chance(20) {
        let cut = r.below(f.len() as u64) as usize;
        f.truncate(cut.max(4));
    }
    f
}

/// tshark's frames of a file (its pcap or pcapng reader forced, as the server does: a
/// file that reader rejects would otherwise open as JSON, text or one raw "MIME file"
/// frame) and whether it read the whole file without an error.
fn tshark_read(path: &Path) -> (u64, bool) {
    let reader = if path.extension().is_some_and(|e| e == "pcapng") {
        "read_format:Wireshark/... - pcapng"
    } else {
        "read_format:Wireshark/tcpdump/... - pcap"
    };
    let out = tshark()
        .args(["-n", "-X", reader, "-r"])
        .arg(path)
        .args(["-T", "fields", "-e", "frame.number"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let clean = out.status.success()
        && err
            .lines()
            .all(|l| l.trim().is_empty() || l.starts_with("Running as user"));
    (
        String::from_utf8_lossy(&out.stdout).lines().count() as u64,
        clean,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_hostile_captures_through_every_tool() {
    let count: u64 = std::env::var("FUZZ_CAPTURES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let s = start_with(&[("PCAP_CHILD_MEMORY_MB", "1024")]).await;
    let tools = file_tool_names();
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let mut r = Rng(seed);
    let mut readable = 0;
    for i in 0..count {
        let (name, bytes) = if r.chance(50) {
            (format!("f{i}.pcap"), gen_pcap(&mut r))
        } else {
            (format!("f{i}.pcapng"), gen_pcapng(&mut r))
        };
        let path = s.storage_file(&name);
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(dir) = std::env::var("FUZZ_DUMP") {
            std::fs::write(Path::new(&dir).join(&name), &bytes).unwrap();
        }
        let (tshark_frames, tshark_clean) = tshark_read(&path);
        // every tool, four calls in flight at a time
        let mut answers = Vec::new();
        for chunk in tools.chunks(4) {
            let mut calls = Vec::new();
            for tool in chunk {
                let mut args = required_extras(tool);
                args["pcap_file"] = json!(name);
                calls.push(spawn_call(s.client.peer(), tool, args));
            }
            for c in calls {
                answers.push(c.await.unwrap());
            }
        }
        for (tool, answer) in answers {
            let answer = answer
                .unwrap_or_else(|e| panic!("{tool} on {name} (seed step {i}): no answer: {e}"));
            if answer.is_error == Some(true) {
                let t = text(&answer);
                assert!(t.len() > 20, "{tool} on {name}: unhelpful error {t:?}");
                assert!(!t.contains("panicked"), "{tool} on {name}: {t}");
                // a capture tshark reads frames from is not refused as unreadable
                if tshark_frames > 0 {
                    assert!(!t.contains("holds no packet"), "{tool} on {name}: {t}");
                }
            } else {
                let v = answer.structured_content.unwrap_or_default();
                assert!(
                    v["status"] == "complete"
                        || v["status"] == "running"
                        || tool == "list_captured_files",
                    "{tool} on {name}: {v}"
                );
                if tool == "analyze_pcap_file" && v["status"] == "complete" {
                    readable += 1;
                    // On a damaged pcap, wiretap may guess another pcap variant (its
                    // record headers differ), so counts are compared where tshark read
                    // the whole file without complaint.
                    if tshark_clean {
                        assert_eq!(
                            v["capture"]["packets_in_file"], tshark_frames,
                            "{name}: our frame count differs from tshark's"
                        );
                    }
                }
            }
        }
    }
    eprintln!("{count} generated captures, {readable} readable by tshark");
    assert!(
        readable > count / 5,
        "too few readable captures to mean much: {readable}"
    );
    // still serving, and no tshark left behind
    s.ok("list_captured_files", json!({})).await;
    wait_until(10, "no tshark children left", || {
        children_named(s.pid, "tshark").is_empty()
    })
    .await;
}
