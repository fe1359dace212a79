//! Loss and delay on a path this test builds (a userspace relay between two
//! namespaces with 40 ms each way and 3% random loss each way, see common::delay): a
//! client downloads 2 MiB and the capture sits at the client. The relay's own counters
//! say how many packets it dropped each way; the configured delay says the RTT.

use std::process::Stdio;
use std::time::Duration;

use crate::common::delay::{DelayLink, SERVER_IP};
use crate::common::*;
use serde_json::json;

const SIZE: usize = 2 * 1024 * 1024;

/// Serves `header` then SIZE bytes from the server namespace on `port`, fetches them
/// from the client namespace with `request`, and captures at the client into `name`
/// in the server's storage.
async fn captured_download(
    s: &Server,
    link: &DelayLink,
    port: u16,
    header: &str,
    request: &str,
    name: &str,
) {
    let _server = KillOnDrop(
        link.in_server(&[
            "python3",
            "-c",
            &format!(
                "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',{port}));s.listen(1)\nc,_=s.accept();c.recv(1000);c.sendall(b'{header}' + b'x'*{SIZE});c.close()\n"
            ),
        ])
        .spawn()
        .unwrap(),
    );
    let file = s.storage_file(name);
    let mut dumpcap = link
        .in_client(&["dumpcap", "-q", "-i", "dl0", "-f", "tcp", "-w"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(10, "dumpcap to start", || {
        std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ok = link
        .in_client(&[
            "python3",
            "-c",
            &format!(
                "import socket\ns=socket.create_connection(('{SERVER_IP}',{port}),timeout=60);s.sendall(b'{request}')\nn=0\nwhile True:\n  b=s.recv(65536)\n  if not b: break\n  n+=len(b)\nassert n>={SIZE}, n\n"
            ),
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "download failed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = std::process::Command::new("kill")
        .args(["-INT", &dumpcap.id().to_string()])
        .status();
    let _ = dumpcap.wait();
}

#[tokio::test]
async fn loss_before_the_capture_point_and_a_slow_network_verdict() {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces");
        return;
    }
    let link = DelayLink::create(2, Duration::from_millis(40), [0.03, 0.03]).expect("link");
    let s = start().await;
    captured_download(&s, &link, 5900, "", "GET", "download.pcapng").await;
    let dropped_down = link.dropped(1);
    assert!(
        dropped_down > 0,
        "the relay dropped nothing towards the client"
    );

    // the capture is at the client: what the relay dropped towards it was lost before
    // the capture point, and shows as holes, whatever tshark calls their fills
    let r = s
        .ok(
            "analyze_tcp_retransmissions",
            json!({"pcap_file": "download.pcapng"}),
        )
        .await;
    let before = r["totals"]["lost_before_capture_point"].as_u64().unwrap();
    // a resend dropped again leaves one hole for two drops: the estimate can only be
    // lower, and not by much at 3%
    assert!(
        before <= dropped_down && before * 10 >= dropped_down * 8,
        "estimated {before} lost before the capture point, the relay dropped {dropped_down}: {}",
        r["totals"]
    );
    let est = r["totals"]["estimated_loss_pct"].as_f64().unwrap();
    assert!(est >= 2.0, "{}", r["totals"]);
    let q = s
        .ok(
            "analyze_network_quality_metrics",
            json!({"pcap_file": "download.pcapng"}),
        )
        .await;
    assert_eq!(q["loss"]["tcp_estimated_loss_pct"].as_f64().unwrap(), est);
    assert_ne!(q["grade"]["letter"], "A", "{}", q["grade"]);
    let c = s
        .ok(
            "analyze_congestion_indicators",
            json!({"pcap_file": "download.pcapng"}),
        )
        .await;
    assert!(c.to_string().contains("lossy"), "{c}");
    let p = s
        .ok(
            "analyze_network_performance",
            json!({"pcap_file": "download.pcapng"}),
        )
        .await;
    assert_eq!(
        p["connections"]["rows"][0]["estimated_loss_pct"]
            .as_f64()
            .unwrap(),
        est
    );

    // the slowness of the download is the network's, on the 80 ms the relay makes
    let v = s
        .ok("analyze_slowness", json!({"pcap_file": "download.pcapng"}))
        .await;
    let rows = v["connections"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["verdict"], "network", "{}", rows[0]);
    let rtt = rows[0]["rtt_ms"].as_f64().unwrap();
    assert!((78.0..95.0).contains(&rtt), "{}", rows[0]);
    assert_eq!(v["overall"], "network");
}

/// An HTTP download whose response arrives with holes and out-of-order fills is one
/// answered transaction (tshark reassembles it only when asked to reassemble out of
/// order), with the status the server sent.
#[tokio::test]
async fn an_http_response_delivered_with_loss_is_answered() {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces");
        return;
    }
    let link = DelayLink::create(3, Duration::from_millis(40), [0.03, 0.03]).expect("link");
    let s = start().await;
    let header = format!(
        "HTTP/1.1 200 OK\\r\\nContent-Type: application/octet-stream\\r\\nContent-Length: {SIZE}\\r\\nConnection: close\\r\\n\\r\\n"
    );
    captured_download(
        &s,
        &link,
        8080,
        &header,
        "GET /big HTTP/1.1\\r\\nHost: files.test\\r\\n\\r\\n",
        "http-download.pcapng",
    )
    .await;
    assert!(link.dropped(1) > 0);
    let v = s
        .ok(
            "extract_http_requests",
            json!({"pcap_file": "http-download.pcapng"}),
        )
        .await;
    let rows = v["requests"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["status"], 200, "{}", rows[0]);
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .contains("0 request(s) without a response"),
        "{v}"
    );
}
