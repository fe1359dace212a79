//! compare_captures over MCP on traffic this test makes: a client and a server in two
//! network namespaces with a router namespace between them, a capture on each side.
//! The router drops a random share of the client's packets (iptables `statistic`), and
//! its own rule counter is the oracle for how many were lost between the capture
//! points. A clean transfer and a lossy one are the before/after pair.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

/// The client sends `bytes` to the server, which reads them all. Small socket buffers
/// keep the bursts short: a veth hands packets to the next namespace through the
/// kernel's per-CPU backlog (1,000 packets), and a longer burst would lose packets there,
/// beside the loss the test makes.
fn transfer(p: &Path3, bytes: usize) {
    let server = KillOnDrop(
        Command::new("ip")
            .args([
                "netns", "exec", &p.srv, "taskset", "-c", "0", "python3", "-c",
                "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,131072);s.bind(('10.214.2.2',5001));s.listen(1)\nc,_=s.accept()\nwhile c.recv(65536): pass\n",
            ])
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_millis(400));
    let code = format!(
        "import socket,time\nfor i in range(50):\n  try:\n    s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_SNDBUF,131072);s.settimeout(30);s.connect(('10.214.2.2',5001));break\n  except OSError: time.sleep(0.1)\ns.sendall(b'x'*{bytes});s.shutdown(socket.SHUT_WR);s.recv(1);s.close()\n"
    );
    // both ends on one CPU: packets crossing the namespaces on two CPUs get reordered
    assert!(
        in_ns(&p.cli, &["taskset", "-c", "0", "python3", "-c", &code]),
        "transfer failed"
    );
    drop(server);
}

fn capture_transfer(p: &Path3, dir: &Path, tag: &str) -> (String, String) {
    let a = dir.join(format!("{tag}-client.pcapng"));
    let b = dir.join(format!("{tag}-server.pcapng"));
    let ca = start_dumpcap(&p.cli, "c0", "tcp", &a);
    let cb = start_dumpcap(&p.srv, "s0", "tcp", &b);
    transfer(p, 3_000_000);
    stop(ca);
    stop(cb);
    (
        a.file_name().unwrap().to_string_lossy().into_owned(),
        b.file_name().unwrap().to_string_lossy().into_owned(),
    )
}

fn metric<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["metrics"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == name)
        .unwrap_or_else(|| panic!("no metric {name}: {}", v["metrics"]))
}

#[tokio::test]
async fn loss_between_two_capture_points_and_before_after() {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces");
        return;
    }
    let path = Path3::create().expect("namespaces, veths and a router");
    let s = start().await;
    let dir = s.storage.path().to_path_buf();

    let (before, _) = capture_transfer(&path, &dir, "clean");
    assert!(path.drop_from_client(5));
    let (client, server) = capture_transfer(&path, &dir, "lossy");
    let dropped = path.dropped();
    assert!(dropped > 0, "the router dropped nothing");

    // the two sides of the lossy transfer
    let v = s
        .ok(
            "compare_captures",
            json!({"pcap_a": client, "pcap_b": server, "limit": 100}),
        )
        .await;
    let al = &v["alignment"];
    assert_eq!(al["shared_flows"], 1, "{al}");
    let dirs = al["directions"].as_array().unwrap();
    let up = dirs
        .iter()
        .find(|d| d["from"].as_str().unwrap().starts_with("10.214.1.2:"))
        .unwrap_or_else(|| panic!("{al}"));
    assert_eq!(up["upstream"], "a", "{up}");
    assert_eq!(up["lost_between"], dropped, "{up}");
    assert_eq!(up["seen_only_downstream"], 0, "{up}");
    // every router takes one from the TTL
    assert_eq!(
        up["ttl_a"].as_u64().unwrap(),
        up["ttl_b"].as_u64().unwrap() + 1
    );
    let down = dirs
        .iter()
        .find(|d| d["from"].as_str().unwrap().starts_with("10.214.2.2:"))
        .unwrap();
    assert_eq!(down["upstream"], "b", "{down}");
    assert_eq!(down["lost_between"], 0, "{down}");
    let lost: Vec<&Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["title"].as_str().unwrap().contains("lost between"))
        .collect();
    assert_eq!(lost.len(), 1, "{}", v["findings"]);
    // the frames it lists are in the client capture and are the client's
    let filter = lost[0]["evidence"]["display_filter"].as_str().unwrap();
    let client_path = dir.join(&client).display().to_string();
    let listed: Vec<u64> = lost[0]["evidence"]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_u64().unwrap())
        .collect();
    let matching = tshark_frames(&client_path, filter, false);
    assert!(listed.iter().all(|f| matching.contains(f)), "{listed:?}");

    // before/after: the loss the router introduced shows as a worse retransmission rate,
    // the same number the quality tool reports for each file
    let v = s
        .ok(
            "compare_captures",
            json!({"pcap_a": before, "pcap_b": client, "limit": 100}),
        )
        .await;
    let r = metric(&v, "tcp_retransmission_rate");
    assert_eq!(r["verdict"], "worse", "{r}");
    for (side, file) in [("a", &before), ("b", &client)] {
        let q = s
            .ok(
                "analyze_network_quality_metrics",
                json!({"pcap_file": file}),
            )
            .await;
        assert_eq!(r[side], q["loss"]["tcp_retransmission_rate_pct"], "{side}");
    }
    // the loss the router made, seen from the sender: at least what it dropped (this
    // path also reorders a little, which makes a few spurious resends)
    let data = tshark_count(&client_path, "ip.src == 10.214.1.2 && tcp.len > 0");
    let made = 100.0 * dropped as f64 / data as f64;
    assert!(r["b"].as_f64().unwrap() >= made * 0.9, "{r} vs {made}");
    // two transfers of one flow each: different client ports, no shared flow
    assert!(v["alignment"].is_null(), "{}", v["alignment"]);

    // the same file twice is refused
    let e = s
        .err(
            "compare_captures",
            json!({"pcap_a": before, "pcap_b": before}),
        )
        .await;
    assert!(e.contains("same file"), "{e}");
}

#[tokio::test]
async fn second_capture_obeys_the_same_roots() {
    let s = start().await;
    let a = fixture("zeek-wikipedia.pcap");
    for bad in ["/etc/passwd", "../../../../etc/shadow", "no-such.pcap", ""] {
        let e = s
            .err("compare_captures", json!({"pcap_a": a, "pcap_b": bad}))
            .await;
        assert!(!e.contains("root:"), "{e}");
        assert!(e.len() < 2000, "{e}");
    }
    // two unrelated fixtures: no shared flow, nothing aligned, still an answer
    let v = s
        .ok(
            "compare_captures",
            json!({"pcap_a": a, "pcap_b": fixture("arkime-wireshark-retrans.pcap"), "align": true}),
        )
        .await;
    assert!(v["alignment"].is_null());
    assert!(v["summary"].as_str().unwrap().contains("share no TCP flow"));
    assert_eq!(v["a"]["packets"], tshark_count(&a, "frame"));
    assert_eq!(
        v["b"]["packets"],
        tshark_count(&fixture("arkime-wireshark-retrans.pcap"), "frame")
    );
}
