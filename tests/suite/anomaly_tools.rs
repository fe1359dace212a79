//! analyze_protocol_anomalies against recorded malformed, truncated and fragmented
//! captures (tshark's and Zeek's facts), and against crafted TCP flag probes and
//! protocols on the wrong port sent into a namespace the test creates.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

fn fact(name: &str, filter: &str) -> u64 {
    tshark_fact(&facts(name), filter)["value"].as_u64().unwrap()
}

fn group<'a>(v: &'a Value, category: &str) -> Vec<&'a Value> {
    v["groups"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["category"] == category)
        .collect()
}

#[tokio::test]
async fn malformed_truncated_and_fragmented_captures() {
    let s = start().await;
    let a = |name: &'static str| {
        let s = &s;
        async move {
            s.ok(
                "analyze_protocol_anomalies",
                json!({"pcap_file": fixture(name)}),
            )
            .await
        }
    };

    // IPv4 total length beyond the packet (suricata-verify decoder event)
    let v = a("sv-ipv4-truncated.pcap").await;
    assert_eq!(
        v["counts"]["malformed"].as_u64().unwrap(),
        fact("sv-ipv4-truncated.pcap", "_ws.malformed")
    );
    let m = group(&v, "malformed");
    assert_eq!(m[0]["first_frames"], json!([1]));
    assert!(v["findings"][0]["severity"] == "medium", "{v}");

    // snaplen 68: every frame cut short, none malformed (tshark facts)
    let name = "zeek-tcp-truncated-header.pcap";
    let v = a(name).await;
    assert_eq!(
        v["counts"]["truncated"].as_u64().unwrap(),
        fact(name, "frame.cap_len < frame.len")
    );
    assert_eq!(
        v["counts"]["malformed"].as_u64().unwrap(),
        fact(name, "_ws.malformed")
    );

    // a packet cut inside its IPv4 header (Zeek: truncated_IP weird)
    let v = a("zeek-trunc-ip4-trunc.pcap").await;
    assert_eq!(v["counts"]["truncated"], 1);

    // IPv6 DNS answers in fragments; one datagram never completes (tshark -2: frame 4
    // is the only fragment of ident 1)
    let name = "zeek-ipv6-fragmented-dns.pcap";
    let v = a(name).await;
    assert_eq!(
        v["counts"]["ip_fragments"].as_u64().unwrap(),
        tshark_count(&fixture(name), "ipv6.fraghdr")
    );
    let f = group(&v, "fragment");
    assert_eq!(f.len(), 1, "{v}");
    assert_eq!(f[0]["count"], 1);
    assert_eq!(f[0]["first_frames"], json!([4]));

    // tracert: echo requests leaving with TTL 1 (outer header only, not the quotes)
    let name = "cs-icmp_traceroute.pcapng";
    let v = a(name).await;
    assert_eq!(
        v["counts"]["ttl_expiring"].as_u64().unwrap(),
        tshark_count(&fixture(name), "ip.ttl#1 == 1")
    );

    // a file cut in the middle of a record: said, not hidden
    let v = a("derived-cs-http_google-cut.pcapng").await;
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["title"].as_str().unwrap().contains("middle of a packet")),
        "{v}"
    );

    // a clean capture: nothing at all
    let v = a("zeek-wikipedia.pcap").await;
    assert!(v["findings"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["summary"].as_str().unwrap().contains("Nothing anomalous"));
}

/// Sends one bare TCP segment with the given flags from a raw socket (the kernel adds
/// the IP header), with a correct checksum.
const PROBES: &str = r#"
import socket, struct, sys
src, dst = sys.argv[1], sys.argv[2]
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
for port, flags in [(7001, 0x00), (7002, 0x29), (7003, 0x03), (7004, 0x01)]:
    hdr = struct.pack('!HHIIBBHHH', 40000, port, 1, 0, 5 << 4, flags, 1024, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, len(hdr))
    hdr = hdr[:16] + struct.pack('!H', csum(pseudo + hdr)) + hdr[18:]
    s.sendto(hdr, (dst, 0))
"#;

/// Plain HTTP on 443 and a plain TCP listener on 80 (a TLS client will talk to it).
const SERVERS: &str = r#"
import http.server, socket, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers(); self.wfile.write(b'ok')
    def log_message(self, *a): pass
threading.Thread(target=http.server.ThreadingHTTPServer(('0.0.0.0', 443), H).serve_forever, daemon=True).start()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 80)); s.listen(5)
while True:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        c.recv(65536)
    except Exception:
        pass
    c.close()
"#;

#[tokio::test]
async fn crafted_flag_probes_and_protocols_on_the_wrong_port() {
    if !is_root() {
        eprintln!("skipped: needs root for a network namespace and raw sockets");
        return;
    }
    let ns = Netns::create(17).expect("create netns and veth");
    let servers = ns.spawn_python(SERVERS);
    let s = start().await;
    let id = s.start_capture(&ns.host_if, "tcp", "odd.pcapng").await;
    tokio::task::spawn_blocking(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let http443: SocketAddr = "10.213.17.2:443".parse().unwrap();
        let mut c = loop {
            match TcpStream::connect_timeout(&http443, Duration::from_millis(300)) {
                Ok(c) => break c,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("server never came up: {e}"),
            }
        };
        write!(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.contains("200"), "{out}");
        // a TLS ClientHello to port 80: python's ssl client against a plain listener
        let ok = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket, ssl\nc = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\ntry:\n    c.wrap_socket(socket.create_connection(('10.213.17.2', 80), timeout=3))\nexcept Exception:\n    pass",
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let ok = std::process::Command::new("python3")
            .args(["-c", PROBES, "10.213.17.1", "10.213.17.2"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "raw socket probes");
    })
    .await
    .unwrap();
    s.stop_capture(&id).await;
    drop(servers);
    let path = s.storage_file("odd.pcapng").display().to_string();
    let v = s
        .ok(
            "analyze_protocol_anomalies",
            json!({"pcap_file": "odd.pcapng"}),
        )
        .await;

    let flags = group(&v, "tcp_flags");
    let kinds: Vec<&str> = flags.iter().map(|g| g["kind"].as_str().unwrap()).collect();
    for k in ["NULL", "XMAS", "SYN+FIN", "FIN without ACK"] {
        assert!(
            kinds.iter().any(|x| x.starts_with(k)),
            "{k} missing: {kinds:?}"
        );
    }
    assert_eq!(
        v["counts"]["bad_tcp_flags"].as_u64().unwrap(),
        tshark_count(&path, "tcp.dstport >= 7001 && tcp.dstport <= 7004")
    );
    for g in &flags {
        let f = g["display_filter"].as_str().unwrap();
        assert!(tshark_count(&path, f) >= 1, "filter {f} shows nothing");
    }

    let mm = v["port_mismatches"]["rows"].as_array().unwrap();
    let http = mm
        .iter()
        .find(|m| m["server"] == "10.213.17.2:443")
        .expect("HTTP on 443");
    assert_eq!(http["protocol"], "http");
    assert_eq!(http["expected"], "tls/ssl");
    let tls = mm
        .iter()
        .find(|m| m["server"] == "10.213.17.2:80")
        .expect("TLS on 80");
    assert_eq!(tls["protocol"], "undecoded");
    assert!(v["findings"].as_array().unwrap().iter().any(|f| {
        f["severity"] == "medium"
            && f["title"]
                .as_str()
                .unwrap()
                .contains("http on a port registered for tls")
    }));
}
