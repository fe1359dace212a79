//! check_capture_trust over MCP, on captures the test damages the way capture setups
//! do: drop counters it writes itself, a file merged with itself (SPAN duplicates), one
//! direction removed, a short snapshot length, segments cut out of a stream; and a
//! real dumpcap capture whose statistics block reports no drop.

use std::collections::BTreeMap;
use std::process::Command;

use crate::common::*;
use serde_json::json;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A little-endian pcapng block: type, body, padded, with both length fields.
fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let mut b = body.to_vec();
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
    let len = (b.len() + 12) as u32;
    let mut out = Vec::new();
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&b);
    out.extend_from_slice(&len.to_le_bytes());
    out
}

fn option(code: u16, value: &[u8]) -> Vec<u8> {
    let mut o = Vec::new();
    o.extend_from_slice(&code.to_le_bytes());
    o.extend_from_slice(&(value.len() as u16).to_le_bytes());
    o.extend_from_slice(value);
    while !o.len().is_multiple_of(4) {
        o.push(0);
    }
    o
}

/// A pcapng of `frames` on one Ethernet interface named eth0, ending with an interface
/// statistics block that says `received` and the drops given.
fn pcapng_with_stats(frames: &[Vec<u8>], received: u64, if_drop: u64, os_drop: u64) -> Vec<u8> {
    let mut f = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    f.extend(block(0x0a0d_0d0a, &shb));
    let mut idb = Vec::new();
    idb.extend_from_slice(&1u16.to_le_bytes()); // Ethernet
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&0u32.to_le_bytes()); // no snaplen
    idb.extend(option(2, b"eth0"));
    idb.extend(option(0, b""));
    f.extend(block(1, &idb));
    for (i, data) in frames.iter().enumerate() {
        let ts: u64 = 1_700_000_000_000_000 + i as u64 * 1000;
        let mut epb = Vec::new();
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(data);
        while !epb.len().is_multiple_of(4) {
            epb.push(0);
        }
        f.extend(block(6, &epb));
    }
    let ts: u64 = 1_700_000_000_000_000 + frames.len() as u64 * 1000;
    let mut isb = Vec::new();
    isb.extend_from_slice(&0u32.to_le_bytes());
    isb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
    isb.extend_from_slice(&(ts as u32).to_le_bytes());
    isb.extend(option(4, &received.to_le_bytes()));
    isb.extend(option(5, &if_drop.to_le_bytes()));
    isb.extend(option(7, &os_drop.to_le_bytes()));
    isb.extend(option(0, b""));
    f.extend(block(5, &isb));
    f
}

#[tokio::test]
async fn capture_artefacts_are_told_apart_from_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).display().to_string();
    let orig = fixture("zeek-wikipedia.pcap");

    // 1. drop counters the test wrote: 20 by the interface, 5 by the OS, of 1000
    let frames: Vec<Vec<u8>> = (0..10u32)
        .map(|i| {
            tcp_segment(
                [10, 0, 0, 1],
                [10, 0, 0, 2],
                40000,
                80,
                1000 + i * 10,
                1,
                0x18,
                &[b'x'; 10],
            )
        })
        .collect();
    std::fs::write(d("drops.pcapng"), pcapng_with_stats(&frames, 1000, 20, 5)).unwrap();
    // 2. SPAN duplicates: the file merged with itself, every frame twice
    run(Command::new("mergecap").args(["-w", &d("dup.pcap"), &orig, &orig]));
    // 3. one direction: only what the client sent
    run(tshark().args([
        "-r",
        &orig,
        "-Y",
        "ip.src == 141.142.220.118",
        "-w",
        &d("oneside.pcap"),
    ]));
    // 4. a 64-byte snapshot length
    run(Command::new("editcap").args(["-s", "64", &orig, &d("short.pcap")]));
    // 5. data segments cut out of a download whose ACKs remain
    let big = fixture("zeek-http-methods.pcap");
    let data = tshark_frames(&big, "tcp.len > 1000", false);
    let cut: Vec<String> = data.iter().step_by(7).take(5).map(u64::to_string).collect();
    let mut args = vec![big.clone(), d("holes.pcap")];
    args.extend(cut.iter().cloned());
    run(Command::new("editcap").args(&args));

    let allowed = format!("{}:{}", dir.path().display(), fixtures().display());
    let s = start_with(&[("PCAP_ALLOWED_DIRS", &allowed)]).await;
    let trust = |file: String| {
        let s = &s;
        async move {
            s.ok("check_capture_trust", json!({"pcap_file": file}))
                .await
        }
    };

    let v = trust(orig.clone()).await;
    assert_eq!(v["duplicate_frames"], 0, "{v}");
    assert_eq!(v["one_sided_streams"], 0, "{v}");
    assert_eq!(v["truncated_frames"], 0, "{v}");
    assert_eq!(v["verdict"], "trustworthy", "{v}");

    let v = trust(d("drops.pcapng")).await;
    assert_eq!(v["dropped_by_capture"], 25, "{v}");
    let f = &v["findings"][0];
    assert!(f["title"].as_str().unwrap().contains("dropped 25"), "{f}");
    assert!(f["detail"].as_str().unwrap().contains("eth0"), "{f}");
    assert_eq!(f["severity"], "high", "25 of 1000 is 2.5%: {f}");

    let v = trust(d("dup.pcap")).await;
    assert_eq!(
        v["duplicate_frames"],
        json!(tshark_count(&orig, "frame")),
        "every frame of the original appears twice"
    );
    assert_ne!(v["verdict"], "trustworthy");

    let v = trust(d("oneside.pcap")).await;
    let mut per_stream: BTreeMap<u64, u64> = BTreeMap::new();
    let out = tshark()
        .args([
            "-r",
            &d("oneside.pcap"),
            "-Y",
            "tcp",
            "-T",
            "fields",
            "-e",
            "tcp.stream",
        ])
        .output()
        .unwrap();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        *per_stream.entry(l.trim().parse().unwrap()).or_default() += 1;
    }
    let want = per_stream.values().filter(|&&n| n >= 3).count();
    assert!(want > 0);
    assert_eq!(v["one_sided_streams"], json!(want), "{v}");
    assert_eq!(v["verdict"], "misleading for loss and latency", "{v}");

    let v = trust(d("short.pcap")).await;
    assert_eq!(
        v["truncated_frames"],
        json!(tshark_count(&orig, "frame.len > 64")),
        "{v}"
    );

    let v = trust(d("holes.pcap")).await;
    let acked = tshark_count(&d("holes.pcap"), "tcp.analysis.ack_lost_segment");
    assert!(acked > 0, "the cut segments are ACKed");
    assert_eq!(v["acked_unseen_segments"], json!(acked), "{v}");
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["title"].as_str().unwrap().contains("capture loss")),
        "{v}"
    );

    // the triage leads with it when it matters
    let v = s
        .ok("analyze_pcap_file", json!({"pcap_file": d("oneside.pcap")}))
        .await;
    assert!(
        v["summary"].as_str().unwrap().contains("One-sided capture"),
        "{}",
        v["summary"]
    );
}

#[tokio::test]
async fn a_dumpcap_capture_reports_its_own_drops() {
    if !is_root() {
        eprintln!("skipped: capturing on lo needs root");
        return;
    }
    let s = start().await;
    let id = s
        .start_capture("lo", "udp port 45993", "trust-lo.pcapng")
        .await;
    tokio::task::spawn_blocking(|| {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..20 {
            sock.send_to(format!("trust-{i}").as_bytes(), ("127.0.0.1", 45993))
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    s.stop_capture(&id).await;
    let v = s
        .ok(
            "check_capture_trust",
            json!({"pcap_file": "trust-lo.pcapng"}),
        )
        .await;
    // dumpcap wrote an interface statistics block; lo drops nothing at this rate
    assert_eq!(v["dropped_by_capture"], 0, "{v}");
    let drops = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "capture drops")
        .unwrap()
        .clone();
    assert_eq!(drops["result"], "ok", "{drops}");
}
