//! analyze_slowness over MCP on connections this test makes slow in known ways, to a
//! namespace across a veth: a server that thinks 500 ms before answering (server), a
//! client that does not read while the server sends (client: zero window), a rate-
//! limited lossy path (network), and a quick exchange (not slow).

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

/// The servers, one port per case, in the namespace.
const SERVERS: &str = r#"
import socket, threading, time
def serve(port, handler):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(8)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()
def think(c):
    c.recv(1024); time.sleep(0.5); c.sendall(b"x" * 20000); c.close()
def bulk(n):
    def h(c):
        c.recv(1024); c.sendall(b"x" * n); c.close()
    return h
for port, h in [(5701, think), (5702, bulk(3000000)), (5703, bulk(1500000)), (5704, bulk(5000))]:
    threading.Thread(target=serve, args=(port, h), daemon=True).start()
time.sleep(120)
"#;

/// A client in the host namespace: asks, waits `pause` seconds before reading, reads
/// everything; `rcvbuf` small keeps the server's data from piling up in the kernel.
fn client(port: u16, pause: f64, rcvbuf: u32) {
    let code = format!(
        "import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,{rcvbuf})\ns.settimeout(30);s.connect(('10.213.19.2',{port}));s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\ntime.sleep({pause})\nwhile s.recv(65536): pass\n"
    );
    let ok = Command::new("python3")
        .args(["-c", &code])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "client of port {port} failed");
}

fn on_port(v: &Value, port: u16) -> Option<Value> {
    v["connections"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["server"].as_str().unwrap().ends_with(&format!(":{port}")))
        .cloned()
}

#[tokio::test]
async fn server_client_and_network_slowness_are_told_apart() {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces");
        return;
    }
    let ns = Netns::create(19).expect("create netns and veth");
    let servers = ns.spawn_python(SERVERS);
    for p in 5701..=5704 {
        wait_listening(&format!("10.213.19.2:{p}")).await;
    }
    let s = start().await;
    let v = s
        .ok("start_packet_capture", json!({"interface": ns.host_if, "duration": 60, "capture_filter": "tcp portrange 5701-5704", "output_file": "slow.pcapng"}))
        .await;
    let id = v["capture"]["capture_id"].as_str().unwrap().to_string();
    // the namespace's end of the veth is named like the namespace (see Netns::create)
    let ns_name = ns.name.clone();
    tokio::task::spawn_blocking(move || {
        client(5701, 0.0, 1 << 20);
        // 3 MB against a 4 KB receive buffer the client does not read for 1.5 s
        client(5702, 1.5, 4096);
        client(5704, 0.0, 1 << 20);
        // the path then gets a 4 Mbit/s bottleneck and 3% loss towards the client
        let tc = |args: &[&str]| {
            let mut a = vec!["netns", "exec", &ns_name];
            a.extend_from_slice(args);
            assert!(
                Command::new("ip").args(&a).status().unwrap().success(),
                "{a:?}"
            );
        };
        tc(&[
            "tc",
            "qdisc",
            "add",
            "dev",
            &format!("{}b", ns_name.replace("pcaptest", "pv")),
            "root",
            "tbf",
            "rate",
            "4mbit",
            "burst",
            "16kb",
            "latency",
            "400ms",
        ]);
        tc(&[
            "iptables",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "--sport",
            "5703",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.03",
            "-j",
            "DROP",
        ]);
        client(5703, 0.0, 1 << 20);
    })
    .await
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let stopped = s.ok("stop_packet_capture", json!({"capture_id": id})).await;
    assert_eq!(stopped["capture"]["state"], "stopped");
    drop(servers);

    let v = s
        .ok(
            "analyze_slowness",
            json!({"pcap_file": "slow.pcapng", "limit": 50}),
        )
        .await;
    // the server thought for the 500 ms the test made it sleep
    let think = on_port(&v, 5701).unwrap_or_else(|| panic!("5701 not slow: {v}"));
    assert_eq!(think["verdict"], "server", "{think}");
    let t = think["server_time_s"].as_f64().unwrap();
    assert!((0.45..0.65).contains(&t), "{think}");
    // the client that did not read held the server at a zero window
    let held = on_port(&v, 5702).unwrap_or_else(|| panic!("5702 not slow: {v}"));
    assert_eq!(held["verdict"], "client", "{held}");
    let stall = held["receiver_stall_s"].as_f64().unwrap();
    assert!((0.8..1.7).contains(&stall), "{held}");
    // 1.5 MB over 4 Mbit/s takes 3 s or more: the network
    let net = on_port(&v, 5703).unwrap_or_else(|| panic!("5703 not slow: {v}"));
    assert_eq!(net["verdict"], "network", "{net}");
    assert!(net["elapsed_s"].as_f64().unwrap() >= 2.5, "{net}");
    // the quick exchange is not slow
    assert!(on_port(&v, 5704).is_none(), "{v}");
    // every slow connection (the readiness probes to 5701 met the thinking server too)
    // has its port's verdict
    for c in v["connections"]["rows"].as_array().unwrap() {
        let port = c["server"].as_str().unwrap().rsplit(':').next().unwrap();
        let want = match port {
            "5701" => "server",
            "5702" => "client",
            "5703" => "network",
            _ => panic!("{c}"),
        };
        assert_eq!(c["verdict"], want, "{c}");
    }
    assert_eq!(v["overall"], "network", "{v}");

    // the frames a verdict lists are the connection's
    let path = s.storage_file("slow.pcapng").display().to_string();
    for c in [&think, &held, &net] {
        let frames = tshark_frames(&path, c["display_filter"].as_str().unwrap(), false);
        for f in c["frames"].as_array().unwrap() {
            assert!(frames.contains(&f.as_u64().unwrap()), "{c}");
        }
    }
}

#[tokio::test]
async fn a_capture_of_quick_exchanges_has_nothing_slow() {
    let s = start().await;
    let file = fixture("zeek-wikipedia.pcap");
    // every request there was answered within 200 ms (tshark's own http.time)
    let out = tshark()
        .args([
            "-n",
            "-r",
            &file,
            "-Y",
            "http.time",
            "-T",
            "fields",
            "-e",
            "http.time",
        ])
        .output()
        .unwrap();
    let worst = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(worst > 0.0 && worst < 0.2, "{worst}");
    let v = s.ok("analyze_slowness", json!({"pcap_file": file})).await;
    assert_eq!(v["overall"], "none", "{v}");
    assert_eq!(v["slow_connections"], 0);
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .starts_with("Nothing is slow")
    );
}

/// A keep-alive HTTP server: /slow sleeps 700 ms before answering, the rest at once.
const KEEPALIVE: &str = r#"
import http.server, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/slow":
            time.sleep(0.7)
        body = b"y" * 3000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"#;

#[tokio::test]
async fn the_slow_request_on_a_keep_alive_connection_is_named() {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces");
        return;
    }
    let ns = Netns::create(16).expect("create netns and veth");
    let server = ns.spawn_python(KEEPALIVE);
    wait_listening("10.213.16.2:8080").await;
    let s = start().await;
    let v = s
        .ok("start_packet_capture", json!({"interface": ns.host_if, "duration": 60, "capture_filter": "tcp port 8080", "output_file": "keepalive.pcapng"}))
        .await;
    let id = v["capture"]["capture_id"].as_str().unwrap().to_string();
    tokio::task::spawn_blocking(|| {
        // one connection, three requests
        let code = "import http.client\nc=http.client.HTTPConnection('10.213.16.2',8080,timeout=30)\nfor p in ['/a','/slow','/c']:\n    c.request('GET',p); r=c.getresponse(); r.read()\n";
        assert!(
            Command::new("python3")
                .args(["-c", code])
                .status()
                .unwrap()
                .success()
        );
    })
    .await
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.ok("stop_packet_capture", json!({"capture_id": id})).await;
    drop(server);

    let v = s
        .ok("analyze_slowness", json!({"pcap_file": "keepalive.pcapng"}))
        .await;
    let rows = v["transactions"]["rows"].as_array().unwrap();
    // only the request the server slept on is slow, and it is the server's
    assert_eq!(rows.len(), 1, "{v}");
    let t = &rows[0];
    let what = t["what"].as_str().unwrap();
    assert!(
        what.starts_with("GET ") && what.ends_with("/slow -> 200"),
        "{t}"
    );
    assert_eq!(t["number"], 2, "{t}");
    assert_eq!(t["verdict"], "server", "{t}");
    let think = t["server_time_s"].as_f64().unwrap();
    assert!((0.65..0.9).contains(&think), "{t}");
    // its frames: tshark's own request frame for /slow and the 200 that answered it
    let path = s.storage_file("keepalive.pcapng").display().to_string();
    let req = tshark_frames(&path, "http.request.uri == \"/slow\"", false);
    let frames: Vec<u64> = t["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_u64().unwrap())
        .collect();
    assert!(req.iter().any(|f| frames.contains(f)), "{req:?} {t}");
    let in_tx = tshark_frames(&path, t["display_filter"].as_str().unwrap(), false);
    let answer = tshark_frames(&path, "http.response.code == 200", false);
    assert_eq!(
        answer.iter().filter(|f| in_tx.contains(f)).count(),
        1,
        "{answer:?} {t}"
    );
    // the connection carrying it waited on the server too
    let conn = v["connections"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["stream"] == t["stream"])
        .cloned()
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(conn["verdict"], "server", "{conn}");
}

#[tokio::test]
async fn tls_handshake_flights_are_their_own_transactions() {
    let s = start().await;
    let file = fixture("zeek-tls1.2.pcap");
    let v = s
        .ok(
            "analyze_slowness",
            json!({"pcap_file": file, "threshold_ms": 1, "limit": 50}),
        )
        .await;
    let rows = v["transactions"]["rows"].as_array().unwrap();
    let tx = |n: u64| {
        rows.iter()
            .find(|t| t["stream"] == 0 && t["number"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("transaction {n}: {v}"))
    };
    let frames_of = |t: &Value| -> Vec<u64> {
        let (lo, hi) = (
            t["frames"][0].as_u64().unwrap(),
            t["frames"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .as_u64()
                .unwrap(),
        );
        (lo..=hi).collect()
    };
    // a TLS 1.2 full handshake is two flights each way: ClientHello -> ServerHello ..
    // ServerHelloDone, then ClientKeyExchange/Finished -> the server's Finished
    let hello = tshark_frames(&file, "tls.handshake.type == 1", false);
    let kex = tshark_frames(&file, "tls.handshake.type == 16", false);
    let (t1, t2, t3) = (tx(1), tx(2), tx(3));
    assert_eq!(t1["what"], "TLS handshake", "{t1}");
    assert!(frames_of(&t1).contains(&hello[0]), "{hello:?} {t1}");
    assert_eq!(t2["what"], "TLS handshake", "{t2}");
    assert!(frames_of(&t2).contains(&kex[0]), "{kex:?} {t2}");
    // then the encrypted request, named by its size
    let app = tshark_frames(&file, "tls.record.content_type == 23", false);
    assert!(
        t3["what"].as_str().unwrap().starts_with("request 1 "),
        "{t3}"
    );
    assert!(frames_of(&t3).contains(&app[0]), "{app:?} {t3}");
    let conn = &v["connections"]["rows"][0];
    let hs = conn["tls_handshake_s"].as_f64().unwrap();
    assert!(
        hs > 0.0 && hs <= conn["elapsed_s"].as_f64().unwrap(),
        "{conn}"
    );
}
