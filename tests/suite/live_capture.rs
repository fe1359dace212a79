//! Live capture with real dumpcap on real interfaces: loopback traffic the test makes,
//! and traffic between a network namespace and the host over a veth pair the test
//! creates. Traffic goes only to loopback or to the test's own namespace.

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

/// Sends `n` UDP datagrams to 127.0.0.1:port, spaced so they land inside the capture.
fn send_loopback(port: u16, n: usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..n {
        sock.send_to(format!("pcap-test-{i}").as_bytes(), ("127.0.0.1", port))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn wait_state(s: &Server, id: &str, want: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = s.ok("get_capture_status", json!({"capture_id": id})).await;
        let c = v["captures"][0].clone();
        if c["state"] == want {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "capture never reached {want}: {c}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn capture_on_loopback_then_analyse_in_the_same_session() {
    let s = start().await;
    let ifs = s.ok("list_network_interfaces", json!({})).await;
    let lo = ifs["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "lo")
        .expect("lo listed");
    assert_eq!(lo["loopback"], true);
    if is_root() {
        assert_eq!(ifs["capture_permitted"], true);
    }

    let v = s
        .ok("start_packet_capture", json!({"interface": "lo", "duration": 3, "capture_filter": "udp port 45991", "output_file": "lo-test.pcapng"}))
        .await;
    let c = &v["capture"];
    assert_eq!(c["state"], "running", "{v}");
    assert_eq!(c["file"], "lo-test.pcapng");
    let id = c["capture_id"].as_str().unwrap().to_string();
    // while running: listed as being written, status counts so far
    let files = s.ok("list_captured_files", json!({})).await;
    let row = files["files"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "lo-test.pcapng")
        .unwrap()
        .clone();
    assert_eq!(row["being_written"], true);
    tokio::task::spawn_blocking(|| send_loopback(45991, 20))
        .await
        .unwrap();
    let running = s.ok("get_capture_status", json!({"capture_id": id})).await;
    assert!(running["captures"][0]["remaining_s"].as_f64().unwrap() > 0.0);

    // it stops by itself at its duration
    let done = wait_state(&s, &id, "finished", 20).await;
    assert_eq!(done["packets"], 20, "{done}");
    assert_eq!(done["remaining_s"], 0.0);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(s.storage_file("lo-test.pcapng"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let a = s
        .ok("analyze_pcap_file", json!({"pcap_file": "lo-test.pcapng"}))
        .await;
    assert_eq!(a["capture"]["packets_in_file"], 20);
    assert_eq!(a["capture"]["format"], "pcapng");
    let udp = a["protocol_totals"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["protocol"] == "udp")
        .unwrap()
        .clone();
    assert_eq!(udp["frames"], 20);
    let search = s
        .ok(
            "search_packet_content",
            json!({"pcap_file": "lo-test.pcapng", "search_pattern": "PCAP-TEST-1"}),
        )
        .await;
    assert_eq!(search["matches"]["total"], 11); // pcap-test-1 and pcap-test-10..19
    let files = s.ok("list_captured_files", json!({})).await;
    let row = files["files"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "lo-test.pcapng")
        .unwrap()
        .clone();
    assert_eq!(row["being_written"], false);
    assert_eq!(row["packets"], 20);
}

#[tokio::test]
async fn stop_is_graceful_and_packet_cap_ends_a_capture() {
    let s = start().await;
    let v = s
        .ok(
            "start_packet_capture",
            json!({"interface": "lo", "duration": 60, "capture_filter": "udp port 45992"}),
        )
        .await;
    let id = v["capture"]["capture_id"].as_str().unwrap().to_string();
    let file = v["capture"]["file"].as_str().unwrap().to_string();
    assert!(
        file.ends_with(".pcapng") && file.starts_with("capture-lo-"),
        "{file}"
    );
    tokio::task::spawn_blocking(|| send_loopback(45992, 5))
        .await
        .unwrap();
    let stopped = s.ok("stop_packet_capture", json!({"capture_id": id})).await;
    assert_eq!(stopped["capture"]["state"], "stopped", "{stopped}");
    assert_eq!(stopped["capture"]["packets"], 5);
    assert!(stopped["capture"]["elapsed_s"].as_f64().unwrap() < 30.0);
    // a finalised pcapng that capinfos reads without complaint
    let out = Command::new("capinfos")
        .arg(s.storage_file(&file))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // stopping again is harmless
    let again = s.ok("stop_packet_capture", json!({"capture_id": id})).await;
    assert_eq!(again["capture"]["state"], "stopped");

    let v = s.ok("start_packet_capture", json!({"interface": "lo", "duration": 60, "max_packets": 5, "capture_filter": "udp port 45993"})).await;
    let id = v["capture"]["capture_id"].as_str().unwrap().to_string();
    tokio::task::spawn_blocking(|| send_loopback(45993, 12))
        .await
        .unwrap();
    let done = wait_state(&s, &id, "finished", 20).await;
    assert_eq!(done["packets"], 5);
    // status without an id lists both
    let all = s.ok("get_capture_status", json!({})).await;
    assert_eq!(all["captures"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn every_refusal_says_what_to_change() {
    let s = start_with(&[("MAX_CAPTURE_DURATION", "10"), ("PCAP_MAX_CAPTURES", "1")]).await;
    std::fs::write(s.storage_file("exists.pcapng"), b"x").unwrap();
    let cases = [
        (
            json!({"interface": "no-such-if0", "duration": 2}),
            "list_network_interfaces",
        ),
        (
            json!({"interface": "lo", "duration": 2, "capture_filter": "tcp port"}),
            "BPF",
        ),
        (
            json!({"interface": "lo", "duration": 2, "capture_filter": "host 1.2.3.4 and and"}),
            "rejected",
        ),
        (
            json!({"interface": "lo", "duration": 0}),
            "between 1 and 10",
        ),
        (
            json!({"interface": "lo", "duration": -5}),
            "between 1 and 10",
        ),
        (
            json!({"interface": "lo", "duration": 11}),
            "MAX_CAPTURE_DURATION",
        ),
        (
            json!({"interface": "lo", "duration": 2, "output_file": "a/b.pcapng"}),
            "bare name",
        ),
        (
            json!({"interface": "lo", "duration": 2, "output_file": ".."}),
            "bare name",
        ),
        (
            json!({"interface": "lo", "duration": 2, "output_file": "../../etc/x"}),
            "bare name",
        ),
        (
            json!({"interface": "lo", "duration": 2, "output_file": "exists.pcapng"}),
            "never overwritten",
        ),
        (
            json!({"interface": "lo", "duration": 2, "max_packets": 0}),
            "max_packets",
        ),
        (
            json!({"interface": "lo", "duration": 2, "max_size_mb": -1}),
            "max_size_mb",
        ),
        (json!({"interface": "-i", "duration": 2}), "not one dumpcap"),
    ];
    for (args, needle) in cases {
        let e = s.err("start_packet_capture", args.clone()).await;
        assert!(e.contains(needle), "{args}: {e}");
    }
    assert_eq!(
        std::fs::read(s.storage_file("exists.pcapng")).unwrap(),
        b"x"
    );
    // the concurrency cap
    let v = s
        .ok(
            "start_packet_capture",
            json!({"interface": "lo", "duration": 5}),
        )
        .await;
    let e = s
        .err(
            "start_packet_capture",
            json!({"interface": "lo", "duration": 5}),
        )
        .await;
    assert!(e.contains("PCAP_MAX_CAPTURES"), "{e}");
    s.ok(
        "stop_packet_capture",
        json!({"capture_id": v["capture"]["capture_id"]}),
    )
    .await;
    let e = s
        .err("stop_packet_capture", json!({"capture_id": "cap-nope"}))
        .await;
    assert!(e.contains("get_capture_status"), "{e}");
}

/// The server's dumpcap children (dumpcap writes to a pipe, so its command line names
/// no file: it is found by its parent).
fn dumpcaps_of(server: u32) -> Vec<u32> {
    children_named(server, "dumpcap")
}

async fn no_dumpcap_left(pids: &[u32]) {
    assert!(!pids.is_empty(), "no dumpcap was running");
    wait_until(10, "dumpcap outlived the server", || {
        pids.iter().all(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|st| st.rfind(')').is_some_and(|i| st[i + 2..].starts_with('Z')))
                .unwrap_or(true)
        })
    })
    .await;
}

#[tokio::test]
async fn killed_server_leaves_no_dumpcap_and_a_readable_file() {
    let s = start().await;
    let v = s
        .ok(
            "start_packet_capture",
            json!({"interface": "lo", "duration": 120, "output_file": "killed.pcapng"}),
        )
        .await;
    assert_eq!(v["capture"]["state"], "running");
    let dumpcaps = dumpcaps_of(s.pid);
    assert_eq!(dumpcaps.len(), 1);
    // SIGKILL: no chance to clean up; the parent-death signal must end dumpcap
    unsafe_kill(s.pid, 9);
    no_dumpcap_left(&dumpcaps).await;
    let out = Command::new("capinfos")
        .arg(s.storage_file("killed.pcapng"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn disconnect_and_sigterm_stop_captures() {
    let s = start().await;
    s.ok(
        "start_packet_capture",
        json!({"interface": "lo", "duration": 120}),
    )
    .await;
    let dumpcaps = dumpcaps_of(s.pid);
    s.client.cancel().await.unwrap(); // stdin closed
    no_dumpcap_left(&dumpcaps).await;
    drop(s.storage);

    let s = start().await;
    s.ok(
        "start_packet_capture",
        json!({"interface": "lo", "duration": 120}),
    )
    .await;
    let dumpcaps = dumpcaps_of(s.pid);
    unsafe_kill(s.pid, 15);
    no_dumpcap_left(&dumpcaps).await;
}

fn unsafe_kill(pid: u32, sig: i32) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

#[tokio::test]
async fn capture_between_namespaces_over_veth() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let ns = Netns::create(7).expect("create netns and veth (needs iproute2 and root)");
    let s = start().await;
    let v = s
        .ok("start_packet_capture", json!({"interface": ns.host_if, "duration": 4, "capture_filter": "udp port 5599 or tcp port 5600", "output_file": "veth.pcapng"}))
        .await;
    assert_eq!(v["capture"]["state"], "running", "{v}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ten datagrams to the host side, and one TCP connection to a closed port (refused with RST)
    let sent = ns.python(
        "import socket,time\n\
         u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         [u.sendto(b'veth-%d'%i,('10.213.7.1',5599)) or time.sleep(0.02) for i in range(10)]\n\
         t=socket.socket()\n\
         t.settimeout(2)\n\
         try: t.connect(('10.213.7.1',5600))\n\
         except OSError: pass\n",
    );
    assert!(sent, "python3 in the namespace failed");
    let id = v["capture"]["capture_id"].as_str().unwrap().to_string();
    let done = wait_state(&s, &id, "finished", 20).await;
    assert_eq!(done["packets"], 12, "10 UDP + SYN + RST: {done}");
    let a = s
        .ok(
            "analyze_pcap_file",
            json!({"pcap_file": "veth.pcapng", "analysis_type": "conversations"}),
        )
        .await;
    let convs = a["conversations"]["rows"].as_array().unwrap();
    let udp = convs.iter().find(|c| c["protocol"] == "udp").unwrap();
    assert_eq!(udp["packets"], 10);
    assert!(udp["a"].as_str().unwrap().starts_with("10.213.7.2:"));
    assert!(
        a["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["evidence"]["display_filter"] == "tcp.flags.reset == 1"),
        "{a}"
    );
}

#[tokio::test]
async fn unprivileged_user_gets_the_permission_fix() {
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and setpriv to drop privileges");
        return;
    }
    // the server as `nobody`, with no capabilities: dumpcap cannot open interfaces
    let storage = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        storage.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            BIN,
            "call",
            "list_network_interfaces",
            "{}",
        ])
        .env("PCAP_STORAGE_DIR", storage.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!(
            "skipped: could not run as nobody: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["capture_permitted"], false, "{v}");
    assert!(v["fix"].as_str().unwrap().contains("setcap"), "{v}");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            BIN,
            "call",
            "start_packet_capture",
            "{\"interface\":\"lo\",\"duration\":2}",
        ])
        .env("PCAP_STORAGE_DIR", storage.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed") && err.contains("setcap"), "{err}");
}
