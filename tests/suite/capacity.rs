//! The bandwidth view estimates a path's capacity from a flat ceiling: a transfer
//! through a 20 Mbit/s token-bucket shaper (tc tbf, set by this test) keeps hitting
//! the same rate, and the estimate lands within 15% of it.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use serde_json::json;

const RATE_MBIT: f64 = 20.0;

#[tokio::test]
async fn a_shaped_path_shows_its_capacity() {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces");
        return;
    }
    let ns = Netns::create(12).expect("create netns and veth");
    // the namespace's end of the veth is named like the namespace (see Netns::create)
    let dev = format!("{}b", ns.name.replace("pcaptest", "pv"));
    assert!(ns.run(&[
        "tc", "qdisc", "add", "dev", &dev, "root", "tbf", "rate", "20mbit", "burst", "32kb",
        "latency", "100ms",
    ]));
    let _server = ns.spawn_python(
        "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',5950));s.listen(1)\nc,_=s.accept();c.recv(10);c.sendall(b'x'*15000000);c.close()\n",
    );
    let s = start().await;
    let v = s
        .ok("start_packet_capture", json!({"interface": ns.host_if, "duration": 60, "capture_filter": "tcp port 5950", "output_file": "shaped.pcapng"}))
        .await;
    let id = v["capture"]["capture_id"].as_str().unwrap().to_string();
    tokio::task::spawn_blocking(|| {
        for _ in 0..50 {
            let ok = Command::new("python3")
                .args(["-c", "import socket\ns=socket.create_connection(('10.213.12.2',5950),timeout=60);s.sendall(b'go')\nwhile s.recv(65536): pass\n"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("transfer failed");
    })
    .await
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.ok("stop_packet_capture", json!({"capture_id": id})).await;

    let v = s
        .ok(
            "analyze_bandwidth_utilization",
            json!({"pcap_file": "shaped.pcapng", "time_window": 1}),
        )
        .await;
    let c = v["estimated_capacity_bits_per_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("no capacity estimate: {v}"));
    let want = RATE_MBIT * 1e6;
    assert!(
        (c - want).abs() <= 0.15 * want,
        "estimated {c} for a {want} shaper: {}",
        v["capacity_evidence"]
    );
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["title"].as_str().unwrap().starts_with("Capacity likely")),
        "{v}"
    );
    // a capacity stated lower than what was measured is explained, not clamped
    let v = s
        .ok(
            "analyze_bandwidth_utilization",
            json!({"pcap_file": "shaped.pcapng", "time_window": 1, "link_capacity_mbps": 10}),
        )
        .await;
    assert!(v["rates"]["peak_utilization_pct"].as_f64().unwrap() > 100.0);
    assert!(
        v["findings"].as_array().unwrap().iter().any(|f| f["title"]
            .as_str()
            .unwrap()
            .starts_with("More than the stated capacity")),
        "{v}"
    );
}
