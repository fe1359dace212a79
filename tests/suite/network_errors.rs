//! analyze_icmp_errors and analyze_mtu_fragmentation on traffic this test makes fail
//! in known ways through a router namespace whose link to the server carries at most
//! 1280 bytes: UDP to a closed port (port unreachable from the server), UDP with TTL 1
//! (time exceeded from the router), a 1400-byte UDP datagram with Don't Fragment
//! (fragmentation needed, MTU 1280), and a 3000-byte datagram the client fragments
//! (to another closed port).
//! The counts are the test's own; tshark's filters confirm what was captured.

use crate::common::*;
use serde_json::json;

const CLIENT: &str = r#"
import socket, time
S = "10.214.2.2"
IP_MTU_DISCOVER, DO, DONT = 10, 2, 0
def udp():
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# three datagrams to a port nothing listens on
for i in range(3):
    udp().sendto(b"hello", (S, 9999)); time.sleep(0.3)
# two that expire at the router
s = udp(); s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
for i in range(2):
    s.sendto(b"ttl", (S, 9998)); time.sleep(0.3)
# too big for the 1280-byte link, and not to be fragmented
s = udp(); s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, DO)
s.sendto(b"d" * 1400, (S, 9997)); time.sleep(0.5)
# bigger than the client's own 1500-byte link: fragmented before it leaves
s = udp(); s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, DONT)
s.sendto(b"f" * 3000, (S, 9996)); time.sleep(0.5)
"#;

#[tokio::test]
async fn icmp_errors_and_fragments_are_named_with_their_flows() {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces");
        return;
    }
    let p = Path3::create().expect("three namespaces");
    // the router's link to the server carries 1280 bytes; no ICMP rate limit anywhere
    assert!(in_ns(&p.rtr, &["ip", "link", "set", "r2", "mtu", "1280"]));
    assert!(in_ns(&p.srv, &["ip", "link", "set", "s0", "mtu", "1280"]));
    for n in [&p.rtr, &p.srv] {
        assert!(in_ns(n, &["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]));
    }
    let s = start().await;
    let file = s.storage_file("icmp.pcapng");
    let cap = start_dumpcap(&p.cli, "c0", "udp or icmp", &file);
    assert!(in_ns(&p.cli, &["python3", "-c", CLIENT]));
    stop(cap);
    let path = file.display().to_string();

    let v = s
        .ok("analyze_icmp_errors", json!({"pcap_file": "icmp.pcapng"}))
        .await;
    let kind = |k: &str| {
        v["by_kind"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key"] == k)
            .map_or(0, |c| c["count"].as_u64().unwrap())
    };
    // the test's own counts (three datagrams to 9999, and the fragmented one to
    // 9996, once reassembled), and tshark's view of the same packets
    assert_eq!(kind("port unreachable"), 4, "{v}");
    assert_eq!(tshark_count(&path, "icmp.type == 3 && icmp.code == 3"), 4);
    assert_eq!(kind("time exceeded (TTL)"), 2, "{v}");
    assert_eq!(kind("fragmentation needed (path MTU)"), 1, "{v}");
    assert_eq!(v["errors"], tshark_count(&path, "icmp.type in {3,11}"));
    let groups = v["groups"]["rows"].as_array().unwrap();
    let closed = groups
        .iter()
        .find(|g| g["kind"] == "port unreachable" && g["count"] == 3)
        .unwrap_or_else(|| panic!("{v}"));
    // reported by the server itself, about the client's datagrams to port 9999
    assert_eq!(closed["reporter"], "10.214.2.2");
    assert_eq!(closed["quoted_flow"], "udp 10.214.1.2 -> 10.214.2.2:9999");
    let expired = groups
        .iter()
        .find(|g| g["kind"] == "time exceeded (TTL)")
        .unwrap();
    assert_eq!(expired["reporter"], "10.214.1.1");
    let big = groups
        .iter()
        .find(|g| g["kind"] == "fragmentation needed (path MTU)")
        .unwrap();
    assert_eq!(big["mtu"], 1280, "{big}");
    assert_eq!(big["reporter"], "10.214.1.1");
    // the group's filter shows exactly its frames
    let frames = tshark_frames(&path, closed["display_filter"].as_str().unwrap(), false);
    assert_eq!(frames.len(), 3, "{closed}");
    // and every finding's filter shows the frames it names
    for f in v["findings"].as_array().unwrap() {
        let shown = tshark_frames(
            &path,
            f["evidence"]["display_filter"].as_str().unwrap(),
            false,
        );
        for fr in f["evidence"]["frames"].as_array().unwrap() {
            assert!(shown.contains(&fr.as_u64().unwrap()), "{f}");
        }
    }

    let m = s
        .ok(
            "analyze_mtu_fragmentation",
            json!({"pcap_file": "icmp.pcapng"}),
        )
        .await;
    // one datagram of 3000 bytes in fragments of at most 1480: three, whole
    assert_eq!(m["fragmented_datagrams"], 1, "{m}");
    assert_eq!(m["fragment_packets"], 3, "{m}");
    assert_eq!(
        m["fragment_packets"],
        tshark_count(&path, "ip.flags.mf == 1 || ip.frag_offset > 0")
    );
    assert_eq!(m["incomplete_datagrams"], 0);
    let flow = &m["fragments"]["rows"][0];
    assert_eq!(flow["src"], "10.214.1.2");
    assert_eq!(flow["protocol"], 17);
    // the UDP header and the 3000 bytes
    assert_eq!(flow["bytes"], 3008, "{flow}");
    assert_eq!(m["smallest_path_mtu"], 1280, "{m}");
    assert_eq!(m["path_mtu_reports"][0]["reporter"], "10.214.1.1");
}
