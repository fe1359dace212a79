//! analyze_tcp_resets and analyze_connection_timeouts over MCP on connections this test
//! ends in known ways, to a namespace across a veth: refused (nothing listens), reset
//! by the server mid-transfer (SO_LINGER 0 after sending), reset by the client before
//! any data, and SYNs a firewall drops.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

/// 5811 sends 20 kB then aborts; 5813 accepts and waits. 5812 has no listener; 5814 is
/// dropped by iptables.
const SERVERS: &str = r#"
import socket, struct, threading, time
def serve(port, handler):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(8)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()
def abort(c):
    c.recv(100); c.sendall(b"x" * 20000); time.sleep(0.2)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); c.close()
def wait(c):
    time.sleep(5); c.close()
for port, h in [(5811, abort), (5813, wait)]:
    threading.Thread(target=serve, args=(port, h), daemon=True).start()
time.sleep(120)
"#;

const CLIENT: &str = r#"
import socket, struct, time
H = "10.213.18.2"
def conn(port, timeout=5):
    s = socket.socket(); s.settimeout(timeout); s.connect((H, port)); return s
# refused, three times
for _ in range(3):
    try:
        conn(5812).close()
    except ConnectionRefusedError:
        pass
# the server aborts mid-transfer
s = conn(5811); s.sendall(b"GET"); 
try:
    while s.recv(65536): pass
except ConnectionResetError:
    pass
s.close()
# the client aborts before any data
s = conn(5813); time.sleep(0.3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()
# dropped: the kernel sends the SYN again after 1 s; give up after 2.5 s
try:
    conn(5814, timeout=2.5)
except (socket.timeout, TimeoutError):
    pass
"#;

fn streams_with(path: &str, filter: &str) -> Vec<u64> {
    let out = tshark()
        .args([
            "-n",
            "-r",
            path,
            "-Y",
            filter,
            "-T",
            "fields",
            "-e",
            "tcp.stream",
        ])
        .output()
        .unwrap();
    let mut v: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn rows(v: &Value) -> &Vec<Value> {
    v["connections"]["rows"].as_array().unwrap()
}

fn on_port(v: &Value, port: u16) -> Vec<&Value> {
    rows(v)
        .iter()
        .filter(|r| r["server"].as_str().unwrap().ends_with(&format!(":{port}")))
        .collect()
}

#[tokio::test]
async fn resets_and_timeouts_are_told_apart() {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces");
        return;
    }
    let ns = Netns::create(18).expect("create netns and veth");
    let servers = ns.spawn_python(SERVERS);
    let firewall = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "5814",
            "-j", "DROP",
        ])
        .status()
        .unwrap();
    assert!(firewall.success());
    // the servers listen before the capture starts: a readiness probe refused by a
    // server still starting would be one more REJ in the capture (seen on a loaded
    // machine). Only 5813 is probed (its thread starts after 5811's): a probe of 5811
    // would make its handler abort with a RST.
    wait_listening("10.213.18.2:5813").await;
    let s = start().await;
    let v = s
        .ok("start_packet_capture", json!({"interface": ns.host_if, "duration": 60, "capture_filter": "tcp portrange 5811-5814", "output_file": "ends.pcapng"}))
        .await;
    let id = v["capture"]["capture_id"].as_str().unwrap().to_string();
    tokio::task::spawn_blocking(|| {
        assert!(
            Command::new("python3")
                .args(["-c", CLIENT])
                .status()
                .unwrap()
                .success()
        );
    })
    .await
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.ok("stop_packet_capture", json!({"capture_id": id})).await;
    drop(servers);
    let path = s.storage_file("ends.pcapng").display().to_string();

    let r = s
        .ok(
            "analyze_tcp_resets",
            json!({"pcap_file": "ends.pcapng", "limit": 50}),
        )
        .await;
    // every connection tshark sees a RST in, and only those
    let with_rst = streams_with(&path, "tcp.flags.reset == 1");
    assert_eq!(r["reset_connections"], with_rst.len(), "{r}");
    // the three refused, by the server, with their port
    let refused = on_port(&r, 5812);
    assert_eq!(refused.len(), 3, "{r}");
    for x in &refused {
        assert_eq!(x["kind"], "refused");
        assert_eq!(x["reset_by"], "server");
    }
    assert_eq!(
        r["refusing"][0]["key"].as_str().unwrap().rsplit(':').next(),
        Some("5812")
    );
    // the abort after 20 kB: by the server, mid-transfer, with the bytes it had sent
    let aborted = on_port(&r, 5811);
    assert_eq!(aborted.len(), 1, "{r}");
    assert_eq!(aborted[0]["kind"], "mid_transfer", "{r}");
    assert_eq!(aborted[0]["reset_by"], "server");
    assert_eq!(aborted[0]["server_bytes_before"], 20000, "{r}");
    assert_eq!(aborted[0]["client_bytes_before"], 3);
    // the client's abort before any data
    let early: Vec<_> = on_port(&r, 5813)
        .into_iter()
        .filter(|x| x["kind"] == "during_handshake")
        .collect();
    assert_eq!(early.len(), 1, "{r}");
    assert_eq!(early[0]["reset_by"], "client");
    // one definition of refused: the lifecycle tool's REJ count is the same
    let life = s
        .ok(
            "analyze_connection_lifecycle",
            json!({"pcap_file": "ends.pcapng"}),
        )
        .await;
    let rej = life["states"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["state"] == "REJ")
        .map(|x| x["count"].as_u64().unwrap());
    assert_eq!(rej, Some(3), "{life}");

    let t = s
        .ok(
            "analyze_connection_timeouts",
            json!({"pcap_file": "ends.pcapng"}),
        )
        .await;
    let dropped = on_port(&t, 5814);
    assert_eq!(dropped.len(), 1, "{t}");
    assert_eq!(dropped[0]["kind"], "unanswered_syn");
    // tshark's own count of the SYNs sent to the dropped port
    let syns = tshark_frames(&path, "tcp.dstport == 5814 && tcp.flags.syn == 1", false);
    assert_eq!(dropped[0]["syn_attempts"], syns.len(), "{t}");
    assert!(syns.len() >= 2, "{syns:?}");
    assert!(
        t["unanswered_destinations"][0]["key"]
            .as_str()
            .unwrap()
            .ends_with(":5814")
    );
    // nothing else timed out
    assert_eq!(t["timed_out"], 1, "{t}");
}
