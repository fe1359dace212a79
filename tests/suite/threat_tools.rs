//! analyze_security_threats against captures of real attacks (facts from tshark and
//! Zeek), against every clean capture we have (no high finding allowed), and against a
//! scan and password guessing the test performs on its own network namespace.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

fn findings<'a>(v: &'a Value, severity: &str) -> Vec<&'a Value> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == severity)
        .collect()
}

fn creds<'a>(v: &'a Value, protocol: &str) -> Vec<&'a Value> {
    v["credentials"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["protocol"] == protocol)
        .collect()
}

#[tokio::test]
async fn attacks_in_recorded_captures_are_found_with_evidence() {
    let s = start().await;
    let synscan = facts("cs-synscan.pcapng");

    // nmap SYN scan of 1000 ports (tshark: 1000 distinct ports, open 22/53/80)
    let v = s
        .ok(
            "analyze_security_threats",
            json!({"pcap_file": fixture("cs-synscan.pcapng")}),
        )
        .await;
    let scan = &v["port_scans"]["rows"][0];
    assert_eq!(scan["scanner"], "172.16.0.8");
    assert_eq!(scan["target"], "64.13.134.52");
    let distinct_ports = synscan["truth"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["fact"] == "distinct destination ports probed with SYN")
        .unwrap()["value"]
        .clone();
    assert_eq!(scan["ports_tried"], distinct_ports);
    assert_eq!(scan["open_ports"], json!([22, 53, 80]));
    // the corpus says nmap SYN scan: open ports answered SYN-ACK, the scanner never ACKed
    assert_eq!(scan["scan_type"], "syn");
    assert!(!scan.to_string().contains("in 0.0 s"));
    let high = findings(&v, "high");
    assert_eq!(high.len(), 1, "{v}");
    assert!(high[0]["title"].as_str().unwrap().contains("Port scan"));
    assert!(!high[0]["evidence"]["frames"].as_array().unwrap().is_empty());

    // ARP poisoning: 00:25:b3:bf:91:ee claims the gateway 172.16.0.1 (tshark: ARP
    // sender IPs 172.16.0.1 x2, .105, .107), then the remote traffic arrives from it
    let v = s
        .ok(
            "analyze_security_threats",
            json!({"pcap_file": fixture("cs-arppoison.pcapng")}),
        )
        .await;
    let high = findings(&v, "high");
    assert_eq!(high.len(), 1, "{v}");
    assert!(
        high[0]["title"]
            .as_str()
            .unwrap()
            .contains("00:25:b3:bf:91:ee")
    );
    let row = &v["arp_conflicts"]["rows"][0];
    assert!(
        row["ip_addresses"]
            .as_array()
            .unwrap()
            .contains(&json!("172.16.0.1"))
    );
    assert!(
        row["traffic_moved"]
            .as_str()
            .unwrap()
            .contains("74.125.95.147")
    );

    // FTP USER Admin / PASS qwerty (Zeek ftp.log), masked by default, revealed on request
    let file = fixture("zeek-ftp-password-pass-command.pcap");
    let v = s
        .ok("analyze_security_threats", json!({"pcap_file": file}))
        .await;
    let c = creds(&v, "ftp");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["username"], "Admin");
    assert_eq!(c[0]["secret"], "<masked, 6 chars>");
    assert_eq!(c[0]["frame"], 9); // tshark -z credentials: packet 9
    assert!(
        !v.to_string().contains("qwerty"),
        "a masked secret leaked: {v}"
    );
    assert_eq!(findings(&v, "high").len(), 1);
    let v = s
        .ok(
            "analyze_security_threats",
            json!({"pcap_file": file, "reveal_secrets": true}),
        )
        .await;
    assert_eq!(creds(&v, "ftp")[0]["secret"], "qwerty");

    // HTTP Basic: Zeek http.log username test, password "1:34" (a colon inside)
    let v = s
        .ok(
            "analyze_security_threats",
            json!({"pcap_file": fixture("zeek-basic-auth-with-colon.pcap"), "reveal_secrets": true}),
        )
        .await;
    let c = creds(&v, "http-basic");
    assert_eq!(c[0]["username"], "test");
    assert_eq!(c[0]["secret"], "1:34");

    // an HTML form login (DVWA): username admin, password field masked
    let v = s
        .ok(
            "analyze_security_threats",
            json!({"pcap_file": fixture("cs-http_dvwa_clearlogin.pcapng")}),
        )
        .await;
    let c = creds(&v, "http-form");
    assert_eq!(c[0]["username"], "admin");
    assert_eq!(c[0]["secret"], "<masked, 8 chars>");

    // dnscat-style tunnel (nDPI flags every flow "Susp DGA / Susp DNS Traffic")
    let v = s
        .ok(
            "analyze_security_threats",
            json!({"pcap_file": fixture("ndpi-bad-dns-traffic.pcap")}),
        )
        .await;
    assert!(
        findings(&v, "high")
            .iter()
            .any(|f| f["title"].as_str().unwrap().contains("DNS tunnelling")),
        "{v}"
    );

    // nmap host discovery: SYNs to 80/443 on 7 hosts in 2 s (tshark: 17 SYNs from .71)
    let v = s
        .ok(
            "analyze_security_threats",
            json!({"pcap_file": fixture("zeek-nmap-vsn.pcap")}),
        )
        .await;
    let sweep = &v["host_sweeps"]["rows"][0];
    assert_eq!(sweep["source"], "192.168.1.71");
    assert_eq!(sweep["hosts_tried"], 7);
}

/// Captures in which the corpus records an attack (or a deliberate credential).
const ATTACKS: &[&str] = &[
    "cs-synscan.pcapng",
    "cs-arppoison.pcapng",
    "zeek-basic-auth-with-colon.pcap",
    "cs-http_dvwa_clearlogin.pcapng",
    "zeek-ftp-password-pass-command.pcap",
    "ndpi-bad-dns-traffic.pcap",
    "zeek-nmap-vsn.pcap",
];

/// A password the threat view masks is masked in search snippets too, unless asked.
#[tokio::test]
async fn search_masks_the_passwords_the_threat_view_masks() {
    let s = start().await;
    let file = fixture("zeek-ftp-password-pass-command.pcap");
    // the oracle: tshark's own FTP PASS argument
    let out = tshark()
        .args([
            "-n",
            "-r",
            &file,
            "-Y",
            "ftp.request.command == \"PASS\"",
            "-T",
            "fields",
            "-e",
            "ftp.request.arg",
        ])
        .output()
        .unwrap();
    let password = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!password.is_empty());
    let v = s
        .ok(
            "search_packet_content",
            json!({"pcap_file": file, "search_pattern": "PASS"}),
        )
        .await;
    let text = v["matches"].to_string();
    assert!(!text.contains(&password), "password leaked: {text}");
    assert!(
        text.contains(&format!("<masked, {} chars>", password.len())),
        "{text}"
    );
    let t = s
        .ok("analyze_security_threats", json!({"pcap_file": file}))
        .await;
    assert!(!t.to_string().contains(&password));
    let v = s
        .ok(
            "search_packet_content",
            json!({"pcap_file": file, "search_pattern": "PASS", "reveal_secrets": true}),
        )
        .await;
    assert!(v["matches"].to_string().contains(&password));
}

#[tokio::test]
async fn no_clean_capture_yields_a_high_threat() {
    // every fixture, plus the whole shared corpus when this checkout sits beside it
    let (mut files, dirs) = fixture_and_corpus_captures();
    files.retain(|f| !ATTACKS.contains(&f.file_name().unwrap().to_string_lossy().as_ref()));
    let s = start_with(&[("PCAP_ALLOWED_DIRS", &dirs), ("PCAP_CALL_DEADLINE", "600")]).await;
    let checked = in_two_lanes(&files, |f| {
        let s = &s;
        async move {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            let r = s
                .call(
                    "analyze_security_threats",
                    json!({"pcap_file": f.display().to_string()}),
                )
                .await;
            if r.is_error == Some(true) {
                return false; // a capture tshark cannot read at all (cut inside its first record)
            }
            let v = r.structured_content.unwrap();
            assert_eq!(v["status"], "complete", "{name}: {v}");
            let high = findings(&v, "high");
            assert!(
                high.is_empty(),
                "{name}: clean capture with a high finding: {high:?}"
            );
            true
        }
    })
    .await;
    assert!(checked >= 20, "only {checked} clean captures checked");
}

/// An HTTP server inside the namespace that refuses every login with 401, and an SSH
/// banner on 22 that hangs up (what a guessing tool sees after a wrong password).
const AUTH_SERVER: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(401)
        self.send_header('WWW-Authenticate', 'Basic realm="test"')
        self.send_header('Content-Length', '0')
        self.end_headers()
    def log_message(self, *a): pass
def ssh():
    import socket
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', 22)); s.listen(50)
    while True:
        c, _ = s.accept()
        c.sendall(b'SSH-2.0-OpenSSH_9.6\r\n'); c.close()
import threading
threading.Thread(target=ssh, daemon=True).start()
http.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()
"#;

fn basic_auth_get(addr: &str, user: &str, password: &str) -> std::io::Result<String> {
    let creds = base64(&format!("{user}:{password}"));
    let mut s =
        TcpStream::connect_timeout(&addr.parse::<SocketAddr>().unwrap(), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /admin HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {creds}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Ok(out)
}

fn base64(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// 400 SYNs to 10.213.13.2:8080 from 100 spoofed sources in the namespace's subnet
/// (nobody answers ARP for them, so no handshake ever completes), as fast as python goes.
const SYN_FLOOD: &str = r#"
import socket, struct
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
dst = '10.213.13.2'
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for i in range(400):
    src = '10.213.13.%d' % (100 + i % 100)
    tcp = struct.pack('!HHIIBBHHH', 20000 + i, 8080, i, 0, 5 << 4, 0x02, 1024, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, 20)
    tcp = tcp[:16] + struct.pack('!H', csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 40, i, 0, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(dst))
    s.sendto(ip + tcp, (dst, 0))
"#;

#[tokio::test]
async fn a_scan_and_password_guessing_against_our_own_namespace() {
    if !is_root() {
        eprintln!("skipped: needs root for a network namespace");
        return;
    }
    let ns = Netns::create(13).expect("create netns and veth");
    // every closed UDP port answers (the kernel rate-limits ICMP errors by default)
    assert!(ns.run(&["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]));
    let server = ns.spawn_python(AUTH_SERVER);
    let s = start().await;
    let id = s
        .start_capture(&ns.host_if, "tcp or udp or icmp", "attack.pcapng")
        .await;
    tokio::task::spawn_blocking(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while basic_auth_get("10.213.13.2:8080", "probe", "x").is_err() {
            assert!(std::time::Instant::now() < deadline, "server never came up");
            std::thread::sleep(Duration::from_millis(100));
        }
        // a connect scan of 60 ports: all closed but 8080
        for port in 8050..8110u16 {
            let _ = TcpStream::connect_timeout(
                &format!("10.213.13.2:{port}").parse().unwrap(),
                Duration::from_millis(300),
            );
        }
        // 15 short SSH connections, a password guesser's rhythm
        for _ in 0..15 {
            let mut c = TcpStream::connect_timeout(
                &"10.213.13.2:22".parse().unwrap(),
                Duration::from_secs(2),
            )
            .unwrap();
            let _ = c.read(&mut [0u8; 64]);
        }
        // a UDP scan of 40 closed ports
        let udp = std::net::UdpSocket::bind("10.213.13.1:0").unwrap();
        for port in 9000..9040u16 {
            udp.send_to(b"probe", format!("10.213.13.2:{port}"))
                .unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        // a SYN flood from spoofed sources
        let ok = std::process::Command::new("python3")
            .args(["-c", SYN_FLOOD])
            .status()
            .unwrap()
            .success();
        assert!(ok, "raw-socket SYN flood");
        // password guessing: 25 wrong passwords for admin
        for i in 0..25 {
            let reply =
                basic_auth_get("10.213.13.2:8080", "admin", &format!("guess{i:02}")).unwrap();
            assert!(reply.starts_with("HTTP/1.0 401"), "{reply}");
        }
    })
    .await
    .unwrap();
    s.stop_capture(&id).await;
    drop(server);
    let file = "attack.pcapng";
    let path = s.storage_file(file).display().to_string();
    let v = s
        .ok(
            "analyze_security_threats",
            json!({"pcap_file": file, "limit": 100}),
        )
        .await;

    let scans = v["port_scans"]["rows"].as_array().unwrap();
    let scan = scans
        .iter()
        .find(|s| s["protocol"] == "tcp")
        .expect("TCP scan");
    assert_eq!(scan["scanner"], "10.213.13.1");
    assert_eq!(scan["target"], "10.213.13.2");
    // the 60 scanned ports and SSH's 22; all refused but 8080
    assert_eq!(scan["ports_tried"], 61, "{scan}");
    // (plus any probe of 8080 made before the server was listening)
    assert!(
        scan["refused_or_unanswered"].as_u64().unwrap() >= 59,
        "{scan}"
    );
    assert_eq!(scan["open_ports"], json!([22, 8080]));
    let udp = scans
        .iter()
        .find(|s| s["protocol"] == "udp")
        .expect("UDP scan");
    assert_eq!(udp["scanner"], "10.213.13.1");
    assert_eq!(
        udp["ports_tried"].as_u64().unwrap(),
        tshark_count(
            &path,
            "icmp.type == 3 && icmp.code == 3 && udp.dstport >= 9000 && udp.dstport < 9040"
        ),
        "{udp}"
    );
    assert_eq!(udp["ports_tried"], 40, "{udp}");

    let flood = &v["syn_floods"]["rows"][0];
    assert_eq!(flood["target"], "10.213.13.2:8080");
    // the 400 spoofed SYNs, plus any refused readiness probe from 10.213.13.1
    let attempts = flood["syn_only_attempts"].as_u64().unwrap();
    assert!((400..=405).contains(&attempts), "{flood}");
    assert!(
        (100..=101).contains(&flood["distinct_sources"].as_u64().unwrap()),
        "{flood}"
    );

    let c = creds(&v, "http-basic");
    assert_eq!(
        v["credentials"]["total"].as_u64().unwrap(),
        tshark_count(&path, "http.authbasic"),
        "one credential per Authorization header: {}",
        v["credentials"]
    );
    assert!(c.iter().any(|c| c["username"] == "admin"));
    assert!(!v.to_string().contains("guess07"), "secret leaked");

    let ssh = v["brute_force"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["service"] == "ssh")
        .expect("SSH guessing");
    assert_eq!(ssh["connections"], 15);
    assert_eq!(ssh["client"], "10.213.13.1");
    let b = v["brute_force"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["service"] == "http")
        .expect("HTTP guessing");
    assert_eq!(b["client"], "10.213.13.1");
    assert_eq!(b["service"], "http");
    assert_eq!(
        b["failed_logins"].as_u64().unwrap(),
        tshark_count(&path, "http.response.code == 401")
    );
    let titles: Vec<&str> = findings(&v, "high")
        .iter()
        .map(|f| f["title"].as_str().unwrap())
        .collect();
    assert!(
        titles.iter().any(|t| t.contains("Port scan (tcp")),
        "{titles:?}"
    );
    assert!(
        titles.iter().any(|t| t.contains("Port scan (udp)")),
        "{titles:?}"
    );
    assert!(titles.iter().any(|t| t.contains("SYN flood")), "{titles:?}");
    // the test scanned with connect(): never called a half-open SYN scan
    let tcp_scan = v["port_scans"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["protocol"] == "tcp")
        .unwrap();
    assert_ne!(tcp_scan["scan_type"], "syn", "{tcp_scan}");
    assert!(
        titles.iter().any(|t| t.contains("Brute-force")),
        "{titles:?}"
    );
    assert!(
        titles.iter().any(|t| t.contains("Cleartext http-basic")),
        "{titles:?}"
    );
}

/// A pcap of DNS queries for one name from one client every `every_s` seconds (and a
/// decoy name queried at random-looking times), built byte by byte.
fn dns_check_in_capture(every_s: u32, count: u32) -> Vec<u8> {
    let mut out = pcap_header();
    let mut packet = |t: u32, id: u16, name: &str| {
        let mut dns = id.to_be_bytes().to_vec();
        dns.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            dns.push(label.len() as u8);
            dns.extend_from_slice(label.as_bytes());
        }
        dns.extend_from_slice(&[0, 0, 1, 0, 1]);
        let udp_len = 8 + dns.len() as u16;
        let mut udp = 53000u16.to_be_bytes().to_vec();
        udp.extend_from_slice(&53u16.to_be_bytes());
        udp.extend_from_slice(&udp_len.to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&dns);
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&(20 + udp_len).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 5, 10, 0, 0, 53]);
        ip.extend_from_slice(&udp);
        let mut frame = vec![0x02, 0, 0, 0, 0, 0x53, 0x02, 0, 0, 0, 0, 0x05, 0x08, 0x00];
        frame.extend_from_slice(&ip);
        out.extend_from_slice(&(1_700_000_000 + t).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    };
    let decoy = [0, 3, 11, 12, 30, 31, 50, 70, 71, 90];
    for i in 0..count {
        packet(i * every_s, i as u16, "cc.example.net");
        packet(
            decoy[i as usize % decoy.len()] + 1000 * (i / 10),
            1000 + i as u16,
            "www.example.org",
        );
    }
    out
}

#[tokio::test]
async fn a_dns_check_in_every_30_seconds_is_beaconing() {
    let s = start().await;
    std::fs::write(s.storage_file("checkin.pcap"), dns_check_in_capture(30, 10)).unwrap();
    let path = s.storage_file("checkin.pcap").display().to_string();
    assert_eq!(
        tshark_count(&path, "dns.qry.name == \"cc.example.net\""),
        10
    );
    let v = s
        .ok(
            "analyze_security_threats",
            json!({"pcap_file": "checkin.pcap"}),
        )
        .await;
    let rows = v["beacons"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "only the steady name: {rows:?}");
    let b = &rows[0];
    assert_eq!(b["kind"], "dns");
    assert_eq!(b["client"], "10.0.0.5");
    assert_eq!(b["server"], "cc.example.net");
    assert_eq!(b["events"], 10);
    assert_eq!(b["mean_interval_s"], 30.0);
    assert_eq!(
        tshark_count(&path, b["display_filter"].as_str().unwrap()),
        10
    );
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["title"].as_str().unwrap().starts_with("Beaconing (dns)"))
        .expect("beaconing finding");
    assert_eq!(f["severity"], "medium");
}

/// The focused tools report the broad tool's own detections: same rows, same findings.
#[tokio::test]
async fn focused_threat_tools_show_the_same_detections() {
    let s = start().await;
    let same_findings = |focused: &Value, broad: &Value, marker: &str| {
        let titles = |v: &Value| -> Vec<String> {
            v["findings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["title"].as_str().unwrap().to_string())
                .filter(|t| t.contains(marker))
                .collect()
        };
        let f = titles(focused);
        assert!(!f.is_empty(), "{focused}");
        assert_eq!(f, titles(broad));
        // nothing from other sections
        assert_eq!(
            f.len(),
            focused["findings"].as_array().unwrap().len(),
            "{focused}"
        );
    };

    // FTP USER Admin / PASS qwerty at frame 9 (Zeek ftp.log; tshark -z credentials)
    let file = fixture("zeek-ftp-password-pass-command.pcap");
    let broad = s
        .ok("analyze_security_threats", json!({"pcap_file": file}))
        .await;
    let v = s
        .ok("extract_credentials", json!({"pcap_file": file}))
        .await;
    assert_eq!(v["credentials"], broad["credentials"]);
    assert_eq!(v["credentials"]["rows"][0]["username"], "Admin");
    assert_eq!(v["credentials"]["rows"][0]["frame"], 9);
    assert_eq!(v["by_protocol"][0]["key"], "ftp");
    assert!(!v.to_string().contains("qwerty"), "{v}");
    same_findings(&v, &broad, "credentials");

    let file = fixture("cs-arppoison.pcapng");
    let broad = s
        .ok("analyze_security_threats", json!({"pcap_file": file}))
        .await;
    let v = s
        .ok("detect_arp_spoofing", json!({"pcap_file": file}))
        .await;
    assert_eq!(v["arp_conflicts"], broad["arp_conflicts"]);
    same_findings(&v, &broad, "ARP");

    let file = fixture("ndpi-bad-dns-traffic.pcap");
    let broad = s
        .ok("analyze_security_threats", json!({"pcap_file": file}))
        .await;
    let v = s
        .ok("detect_dns_tunneling", json!({"pcap_file": file}))
        .await;
    assert_eq!(v["hints"], broad["dns_tunnelling_hints"]);
    assert!(v["hints"].is_string());
    same_findings(&v, &broad, "DNS tunnelling");

    // and a clean capture has none
    let v = s
        .ok(
            "extract_credentials",
            json!({"pcap_file": fixture("zeek-tls1.2.pcap")}),
        )
        .await;
    assert_eq!(v["credentials"]["total"], 0);
    assert!(v["summary"].as_str().unwrap().starts_with("No credentials"));
}
