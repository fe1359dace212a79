//! TLS tools against Zeek's ssl.log/x509.log and suricata-verify facts, and against
//! TLS the test makes on loopback with openssl (chosen names, right and wrong SNI).

use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

fn zeek_entries(f: &Value, log: &str) -> Vec<Value> {
    f["truth"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["origin"] == "zeek-baseline" && t["summary"]["log"] == log)
        .unwrap_or_else(|| panic!("no Zeek {log}"))["summary"]["entries"]
        .as_array()
        .unwrap()
        .clone()
}

/// Zeek writes "TLSv12"; we write "TLS 1.2".
fn zeek_version(v: &str) -> String {
    match v {
        "TLSv13" => "TLS 1.3".into(),
        "TLSv12" => "TLS 1.2".into(),
        "TLSv11" => "TLS 1.1".into(),
        "TLSv10" => "TLS 1.0".into(),
        other => other.into(),
    }
}

#[tokio::test]
async fn handshakes_agree_with_zeek_ssl_log() {
    let s = start().await;
    for (name, log) in [
        ("zeek-tls1.2.pcap", "ssl.log"),
        ("zeek-tls-1.2-handshake-failure.pcap", "ssl.log"),
        ("zeek-curl-http3-www-google-de.pcap", "ssl.log"),
        ("zeek-tls-expired-cert.pcap", "ssl-all.log"),
    ] {
        let f = facts(name);
        let v = s
            .ok(
                "analyze_tls_handshakes",
                json!({"pcap_file": fixture(name), "limit": 100}),
            )
            .await;
        let rows = v["sessions"]["rows"].as_array().unwrap();
        for z in zeek_entries(&f, log) {
            let server_ip = z["id.resp_h"].as_str().unwrap();
            let row = rows
                .iter()
                .find(|r| {
                    r["server"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("{server_ip}:"))
                })
                .unwrap_or_else(|| panic!("{name}: no session to {server_ip}"));
            if z["version"] != "-" {
                assert_eq!(
                    row["negotiated_version"],
                    zeek_version(z["version"].as_str().unwrap()),
                    "{name}"
                );
            } else {
                assert!(row["negotiated_version"].is_null(), "{name}");
            }
            if z["cipher"] != "-" {
                assert_eq!(row["cipher_suite"], z["cipher"], "{name}");
            }
            match z["server_name"].as_str().unwrap() {
                "-" => assert!(row["sni"].is_null(), "{name}"),
                sni => assert_eq!(row["sni"], sni, "{name}"),
            }
            if z["last_alert"] != "-" {
                assert_eq!(row["outcome"], "alert", "{name}");
            }
            // Zeek's "established" is our complete outcome (QUIC is never "established" for Zeek)
            if z["established"] == "T" {
                assert_eq!(row["outcome"], "complete", "{name}");
            }
        }
    }
}

#[tokio::test]
async fn certificates_agree_with_zeek_x509_log() {
    let s = start().await;
    let f = facts("zeek-tls1.2.pcap");
    let v = s
        .ok(
            "extract_certificate_details",
            json!({"pcap_file": fixture("zeek-tls1.2.pcap")}),
        )
        .await;
    let certs = v["certificates"]["rows"].as_array().unwrap();
    let zeek = zeek_entries(&f, "x509.log");
    assert_eq!(certs.len(), zeek.len(), "the three-certificate chain");
    for z in &zeek {
        let cn = z["certificate.subject"]
            .as_str()
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_string();
        let c = certs
            .iter()
            .find(|c| c["subject"].as_str().unwrap().ends_with(&cn))
            .unwrap_or_else(|| panic!("certificate {cn} missing"));
        assert_eq!(
            c["key_bits"].as_u64().unwrap().to_string(),
            z["certificate.key_length"].as_str().unwrap()
        );
        assert_eq!(c["is_ca"], z["basic_constraints.ca"] == "T");
        let nb: f64 = z["certificate.not_valid_before"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let expected = Command::new("date")
            .args(["-u", "-d", &format!("@{}", nb as i64), "+%Y-%m-%dT%H:%M:%S"])
            .output()
            .unwrap();
        assert!(
            c["not_before"]
                .as_str()
                .unwrap()
                .starts_with(String::from_utf8_lossy(&expected.stdout).trim()),
            "{c}"
        );
        if z["san.dns"] != "-" {
            let sans: Vec<&str> = z["san.dns"].as_str().unwrap().split(',').collect();
            assert_eq!(c["san_dns"], json!(sans));
        }
        assert_eq!(c["sha256"].as_str().unwrap().len(), 64);
    }
    let leaf = certs
        .iter()
        .find(|c| c["chain_positions"] == json!([0]))
        .unwrap();
    assert!(
        leaf["subject"]
            .as_str()
            .unwrap()
            .ends_with("CN=*.taleo.net")
    );
    assert_eq!(
        leaf["weak_signature"], true,
        "sha1WithRSAEncryption is flagged"
    );

    // expired www.spidh.org (Zeek: certificate has expired) and tobu-estate expiring soon
    let v = s
        .ok(
            "extract_certificate_details",
            json!({"pcap_file": fixture("zeek-tls-expired-cert.pcap")}),
        )
        .await;
    let certs = v["certificates"]["rows"].as_array().unwrap();
    let spidh = certs
        .iter()
        .find(|c| c["subject"].as_str().unwrap().contains("www.spidh.org"))
        .unwrap();
    assert_eq!(spidh["status"], "expired");
    assert!(
        spidh["not_after"]
            .as_str()
            .unwrap()
            .starts_with("2014-03-04T23:59:59")
    );
    let tobu = certs
        .iter()
        .find(|c| {
            c["subject"]
                .as_str()
                .unwrap()
                .contains("www.tobu-estate.com")
        })
        .unwrap();
    assert_eq!(tobu["status"], "expires_soon");
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["severity"] == "high"
                && f["title"].as_str().unwrap().contains("www.spidh.org"))
    );

    // the SELKS self-signed certificate (suricata-verify: serial, subject == issuer, validity)
    let v = s
        .ok(
            "extract_certificate_details",
            json!({"pcap_file": fixture("sv-tls-selfsigned-selks.pcap")}),
        )
        .await;
    let c = &v["certificates"]["rows"][0];
    assert_eq!(v["certificates"]["total"], 1);
    assert_eq!(c["self_signed"], true);
    assert_eq!(
        c["serial"].as_str().unwrap().to_uppercase(),
        "00:97:E6:47:09:8E:EA:C9:B4"
    );
    assert_eq!(c["subject"], "C=FR, ST=IDF, L=Paris, O=Stamus, CN=SELKS");
    assert_eq!(c["not_before"], "2015-02-12T18:07:27.000000Z");
    assert_eq!(c["not_after"], "2025-02-09T18:07:27.000000Z");
    let h = s
        .ok(
            "analyze_tls_handshakes",
            json!({"pcap_file": fixture("sv-tls-selfsigned-selks.pcap")}),
        )
        .await;
    assert_eq!(
        h["sessions"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["resumed"] == true)
            .count(),
        1
    );
}

/// Zeek's ssl.log rows of a fixture: (client addr, client port, established, history).
fn zeek_ssl(name: &str) -> Vec<(String, u64, bool, String)> {
    let text = std::fs::read_to_string(fixtures().join("zeek-ssl").join(format!("{name}.ssl.log")))
        .unwrap();
    let mut fields: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("#fields\t") {
            fields = f.split('\t').map(str::to_string).collect();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let col = |n: &str| cols[fields.iter().position(|f| f == n).unwrap()];
        rows.push((
            col("id.orig_h").to_string(),
            col("id.orig_p").parse().unwrap(),
            col("established") == "T",
            col("ssl_history").to_string(),
        ));
    }
    rows
}

/// TLS 1.3 without keys: encrypted records sit in tls.record.opaque_type, and a
/// HelloRetryRequest is a ServerHello with a fixed random. "complete" is Zeek's
/// `established`, session by session.
#[tokio::test]
async fn tls13_completion_agrees_with_zeek() {
    let s = start().await;
    let mut compared = 0;
    for name in [
        "zeek-tls13_wolfssl",
        "zeek-chrome-1250-tls-x25519-kyber",
        "zeek-hrr",
        "zeek-tls13-ech",
    ] {
        let v = s
            .ok(
                "analyze_tls_handshakes",
                json!({"pcap_file": fixture(&format!("{name}.pcap")), "limit": 50}),
            )
            .await;
        let zeek = zeek_ssl(name);
        for row in v["sessions"]["rows"].as_array().unwrap() {
            let client = row["client"].as_str().unwrap();
            let (addr, port) = client.rsplit_once(':').unwrap();
            let Some(z) = zeek
                .iter()
                .find(|z| z.0 == addr && z.1 == port.parse::<u64>().unwrap())
            else {
                continue;
            };
            assert_eq!(
                row["outcome"] == "complete",
                z.2,
                "{name} {client}: ours {} vs Zeek established {}",
                row["outcome"],
                z.2
            );
            assert_eq!(
                row["hello_retry_request"] == true,
                z.3.contains('j'),
                "{name} {client}: HelloRetryRequest, Zeek history {}",
                z.3
            );
            compared += 1;
        }
        // the quality tool reports the same sessions, so no "TLS failures" for them
        let q = s
            .ok(
                "analyze_network_quality_metrics",
                json!({"pcap_file": fixture(&format!("{name}.pcap"))}),
            )
            .await;
        let failed = v["sessions"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["outcome"] != "complete")
            .count();
        if failed == 0 {
            assert!(
                !q["summary"].as_str().unwrap().contains("TLS failures")
                    || q["summary"].as_str().unwrap().contains("TLS failures 0%"),
                "{name}: {}",
                q["summary"]
            );
        }
    }
    assert_eq!(compared, 5, "sessions matched with Zeek's ssl.log");
}

/// Chains judged from what the server sent: Zeek (with a trust store) says "unable to
/// get local issuer certificate" exactly where the leaf's issuer was never sent.
#[tokio::test]
async fn incomplete_chains_agree_with_zeek_validation() {
    let s = start().await;
    let text =
        std::fs::read_to_string(fixtures().join("zeek-ssl/zeek-missing-intermediate.ssl.log"))
            .unwrap();
    let mut fields: Vec<&str> = Vec::new();
    let mut unable: std::collections::BTreeSet<String> = Default::default();
    let mut unable_sessions = 0;
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("#fields\t") {
            fields = f.split('\t').collect();
        } else if !line.starts_with('#') {
            let cols: Vec<&str> = line.split('\t').collect();
            let col = |n: &str| cols[fields.iter().position(|f| *f == n).unwrap()];
            if col("validation_status") == "unable to get local issuer certificate" {
                unable.insert(format!("{}:{}", col("id.resp_h"), col("id.resp_p")));
                unable_sessions += 1;
            }
        }
    }
    let v = s
        .ok(
            "extract_certificate_details",
            json!({"pcap_file": fixture("zeek-missing-intermediate.pcap")}),
        )
        .await;
    let chains: Vec<&Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["title"]
                .as_str()
                .unwrap()
                .starts_with("Incomplete certificate chain")
        })
        .collect();
    let ours: std::collections::BTreeSet<String> = chains
        .iter()
        .flat_map(|f| f["evidence"]["endpoints"].as_array().unwrap().iter())
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ours, unable, "{}", v["findings"]);
    let sessions: usize = chains
        .iter()
        .map(|f| f["evidence"]["streams"].as_array().unwrap().len())
        .sum();
    assert_eq!(sessions, unable_sessions);
    // complete chains elsewhere raise nothing of the kind
    for f in [
        "zeek-tls1.2.pcap",
        "zeek-tls-expired-cert.pcap",
        "sv-tls-selfsigned-selks.pcap",
    ] {
        let v = s
            .ok(
                "extract_certificate_details",
                json!({"pcap_file": fixture(f)}),
            )
            .await;
        assert!(
            !v["findings"]
                .to_string()
                .contains("Incomplete certificate chain"),
            "{f}"
        );
    }
}

/// An alert belongs to a handshake only when the capture saw that handshake start: a
/// flow caught mid-connection (no hello) whose encrypted alert is a close is info.
#[tokio::test]
async fn alerts_outside_a_seen_handshake_are_not_handshake_failures() {
    let s = start().await;
    let file = fixture("ndpi-tls_alert.pcap");
    // tshark: one ClientHello in the file, so at most one handshake can have failed
    assert_eq!(tshark_count(&file, "tls.handshake.type == 1"), 1);
    assert_eq!(tshark_count(&file, "tls.alert_message.desc == 70"), 1);
    let v = s
        .ok("analyze_tls_handshakes", json!({"pcap_file": file}))
        .await;
    let alert_outcomes = v["sessions"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "alert")
        .count();
    assert_eq!(alert_outcomes, 1, "{v}");
    let a = s.ok("analyze_tls_alerts", json!({"pcap_file": file})).await;
    let rows = a["alerts"]["rows"].as_array().unwrap();
    assert_eq!(
        rows.iter()
            .filter(|r| r["during_handshake"] == true)
            .count(),
        1,
        "{a}"
    );
    let encrypted = a["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["title"].as_str().unwrap().contains("encrypted alert"))
        .unwrap();
    assert_eq!(encrypted["severity"], "info", "{encrypted}");
}

/// Validity is judged when a certificate was presented, not at the capture's first
/// packet: in a merge of captures years apart that made current certificates "not yet
/// valid" and hid one that had expired when it was presented.
#[tokio::test]
async fn certificate_validity_is_judged_when_presented() {
    let s = start().await;
    let file = fixture("derived-sv-mixed-merge-certs.pcapng");
    // the oracle: tshark's own presentation time and validity dates per certificate frame
    let out = tshark()
        .args(["-n", "-r", &file, "-T", "fields", "-E", "separator=|"])
        .args([
            "-Y",
            "tls.handshake.certificate",
            "-e",
            "frame.number",
            "-e",
            "frame.time_epoch",
            "-e",
            "x509af.utcTime",
        ])
        .output()
        .unwrap();
    let first_packet: f64 = String::from_utf8_lossy(
        &tshark()
            .args([
                "-n",
                "-r",
                &file,
                "-c",
                "1",
                "-T",
                "fields",
                "-e",
                "frame.time_epoch",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .parse()
    .unwrap();
    let year = |s: &str| s[..4].parse::<i32>().unwrap();
    let mut leaf_expired_when_presented = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let cols: Vec<&str> = line.split('|').collect();
        let presented: f64 = cols[1].parse().unwrap();
        let times: Vec<&str> = cols[2].split(',').collect();
        // the leaf's notAfter (2017) lies before its presentation (2022) ...
        if year(times[1]) < 2020 && presented > 1_600_000_000.0 {
            leaf_expired_when_presented += 1;
        }
        // ... and every certificate's notBefore lies after the capture's first packet (2012)
        assert!(
            year(times[0]) > 2012 && first_packet < 1_400_000_000.0,
            "{line}"
        );
    }
    assert_eq!(leaf_expired_when_presented, 1);
    let v = s
        .ok(
            "extract_certificate_details",
            json!({"pcap_file": file, "limit": 50}),
        )
        .await;
    let rows = v["certificates"]["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    let expired: Vec<&Value> = rows.iter().filter(|r| r["status"] == "expired").collect();
    assert_eq!(expired.len(), 1, "{v}");
    assert!(
        expired[0]["subject"]
            .as_str()
            .unwrap()
            .contains("mamzon.ru")
    );
    assert!(rows.iter().all(|r| r["status"] != "not_yet_valid"), "{v}");
    let high: Vec<&Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "high")
        .collect();
    assert_eq!(high.len(), 1, "{}", v["findings"]);
    assert!(
        high[0]["title"]
            .as_str()
            .unwrap()
            .starts_with("Expired certificate")
    );
}

#[tokio::test]
async fn alerts_and_cipher_grades() {
    let s = start().await;
    let v = s
        .ok(
            "analyze_tls_alerts",
            json!({"pcap_file": fixture("zeek-tls-1.2-handshake-failure.pcap")}),
        )
        .await;
    let a = &v["alerts"]["rows"][0];
    assert_eq!(a["description"], "handshake_failure");
    assert_eq!(a["level"], "fatal");
    assert_eq!(a["sent_by"], "server");
    assert_eq!(a["during_handshake"], true);
    assert!(a["meaning"].as_str().unwrap().contains("cipher"));
    let v = s
        .ok(
            "analyze_tls_alerts",
            json!({"pcap_file": fixture("zeek-tls13draft16-ff52-aborted.pcap")}),
        )
        .await;
    assert_eq!(v["by_description"][0]["key"], "protocol_version");
    let v = s
        .ok(
            "analyze_tls_alerts",
            json!({"pcap_file": fixture("zeek-tls1.2.pcap")}),
        )
        .await;
    assert_eq!(v["alerts"]["rows"][0]["level"], "encrypted");
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["severity"] == "info"),
        "an encrypted alert after the handshake is a close"
    );

    // RC4-MD5 chosen (Zeek: TLS_RSA_WITH_RC4_128_MD5) is insecure
    let v = s
        .ok(
            "extract_tls_cipher_analysis",
            json!({"pcap_file": fixture("zeek-tls1.2.pcap")}),
        )
        .await;
    let chosen = v["suites"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["chosen_in_sessions"] == 1)
        .unwrap()
        .clone();
    assert_eq!(chosen["suite"], "TLS_RSA_WITH_RC4_128_MD5");
    assert_eq!(chosen["grade"], "insecure");
    assert_eq!(v["findings"][0]["severity"], "high");
    let v = s
        .ok(
            "extract_tls_cipher_analysis",
            json!({"pcap_file": fixture("zeek-tls-1.2-handshake-failure.pcap")}),
        )
        .await;
    assert_eq!(
        v["negotiation_failures"][0]["failed_after"],
        "handshake_failure"
    );
    let v = s
        .ok(
            "extract_tls_cipher_analysis",
            json!({"pcap_file": fixture("zeek-curl-http3-www-google-de.pcap")}),
        )
        .await;
    assert_eq!(v["chosen_grades"][0]["key"], "modern");
}

#[tokio::test]
async fn sni_against_certificates_made_on_loopback() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: openssl not installed");
        return;
    }
    let s = start().await;
    let dir = tempfile::tempdir().unwrap();
    let (p12, p13, p_rc4) = (46443u16, 46444u16, 46445u16);
    let v = s
        .ok("start_packet_capture", json!({"interface": "lo", "duration": 60, "capture_filter": format!("tcp port {p12} or tcp port {p13} or tcp port {p_rc4}"), "output_file": "tls-lo.pcapng"}))
        .await;
    let id = v["capture"]["capture_id"].as_str().unwrap().to_string();
    let dirp = dir.path().to_path_buf();
    let keylog = s.storage_file("keys.log").display().to_string();
    tokio::task::spawn_blocking(move || {
        let s12 = openssl_server(&dirp, p12, &["-tls1_2"]);
        let s13 = openssl_server(&dirp, p13, &["-tls1_3"]);
        openssl_client(s12.port, "www.good.test", &["-tls1_2"]);
        openssl_client(s12.port, "api.good.test", &["-tls1_2"]);
        openssl_client(s12.port, "www.evil.test", &["-tls1_2"]);
        openssl_client(s12.port, "10.0.0.1", &["-tls1_2"]);
        openssl_client(
            s13.port,
            "www.good.test",
            &["-tls1_3", "-keylogfile", &keylog],
        );
        // a client that verifies the chain rejects the self-signed certificate
        openssl_client(
            s12.port,
            "www.good.test",
            &["-tls1_2", "-verify_return_error"],
        );
        // a server that only accepts a suite the client does not offer
        let refusing = openssl_server(&dirp, p_rc4, &["-tls1_2", "-cipher", "AES256-SHA"]);
        openssl_client(
            refusing.port,
            "www.good.test",
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
        );
    })
    .await
    .unwrap();
    s.ok("stop_packet_capture", json!({"capture_id": id})).await;

    let v = s
        .ok(
            "analyze_sni_mismatches",
            json!({"pcap_file": "tls-lo.pcapng"}),
        )
        .await;
    let rows = v["sessions"]["rows"].as_array().unwrap();
    let verdict = |sni: &str, port: u16| {
        rows.iter()
            .find(|r| {
                r["sni"] == sni && r["server"].as_str().unwrap().ends_with(&format!(":{port}"))
            })
            .unwrap_or_else(|| panic!("no session with SNI {sni}: {v}"))["verdict"]
            .clone()
    };
    assert_eq!(verdict("www.good.test", p12), "match");
    assert_eq!(
        verdict("api.good.test", p12),
        "match",
        "*.good.test covers api.good.test"
    );
    assert_eq!(verdict("www.evil.test", p12), "mismatch");
    assert_eq!(verdict("10.0.0.1", p12), "ip_literal_sni");
    assert_eq!(
        verdict("www.good.test", p13),
        "not_verifiable",
        "TLS 1.3 certificates are encrypted"
    );
    let high: Vec<&Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "high")
        .collect();
    assert_eq!(high.len(), 1);
    assert!(
        high[0]["detail"]
            .as_str()
            .unwrap()
            .contains("www.evil.test")
    );

    let h = s
        .ok(
            "analyze_tls_handshakes",
            json!({"pcap_file": "tls-lo.pcapng"}),
        )
        .await;
    let versions: Vec<String> = h["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap().to_string())
        .collect();
    assert!(
        versions.contains(&"TLS 1.2".to_string()) && versions.contains(&"TLS 1.3".to_string()),
        "{versions:?}"
    );
    let c = s
        .ok(
            "extract_certificate_details",
            json!({"pcap_file": "tls-lo.pcapng"}),
        )
        .await;
    let cert = &c["certificates"]["rows"][0];
    assert_eq!(
        c["certificates"]["total"], 1,
        "one certificate, seen in four sessions"
    );
    assert_eq!(cert["san_dns"], json!(["www.good.test", "*.good.test"]));
    assert_eq!(cert["status"], "expires_soon", "valid for 20 days");
    assert_eq!(cert["self_signed"], true);
    assert_eq!(cert["key_bits"], 2048);

    // alerts: unknown_ca from the verifying client, handshake_failure from the refusing server
    let a = s
        .ok("analyze_tls_alerts", json!({"pcap_file": "tls-lo.pcapng"}))
        .await;
    let rows = a["alerts"]["rows"].as_array().unwrap();
    let unknown_ca = rows
        .iter()
        .find(|r| r["description"] == "unknown_ca")
        .expect("unknown_ca alert");
    assert_eq!(unknown_ca["sent_by"], "client");
    assert_eq!(unknown_ca["level"], "fatal");
    assert!(
        unknown_ca["meaning"]
            .as_str()
            .unwrap()
            .contains("does not trust")
    );
    let refused = rows
        .iter()
        .find(|r| r["description"] == "handshake_failure")
        .expect("handshake_failure alert");
    assert_eq!(refused["sent_by"], "server");
    assert!(
        refused["sender"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{p_rc4}"))
    );
    let c = s
        .ok(
            "extract_tls_cipher_analysis",
            json!({"pcap_file": "tls-lo.pcapng"}),
        )
        .await;
    let failure = c["negotiation_failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["server"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{p_rc4}"))
        })
        .expect("failed negotiation");
    assert_eq!(failure["failed_after"], "handshake_failure");

    // decryption: with the client's key log the TLS 1.3 certificate and the HTTP inside appear
    let v = s.ok("analyze_sni_mismatches", json!({"pcap_file": "tls-lo.pcapng", "tls_keylog_file": "keys.log", "display_filter": format!("tcp.port == {p13}")})).await;
    assert_eq!(v["sessions"]["rows"][0]["verdict"], "match", "{v}");
    assert!(
        v["tshark_commands"][0]
            .as_str()
            .unwrap()
            .contains("tls.keylog_file:")
    );
    let h = s
        .ok(
            "extract_http_requests",
            json!({"pcap_file": "tls-lo.pcapng", "display_filter": format!("tcp.port == {p13}")}),
        )
        .await;
    assert_eq!(h["requests"]["total"], 0, "encrypted without keys");
    let h = s.ok("extract_http_requests", json!({"pcap_file": "tls-lo.pcapng", "tls_keylog_file": "keys.log", "display_filter": format!("tcp.port == {p13}")})).await;
    assert_eq!(h["requests"]["total"], 1, "{h}");
    assert_eq!(h["requests"]["rows"][0]["method"], "GET");
    // (s_server -www answers HTTP/1.0 without Content-Length, ended by close_notify;
    // tshark keeps that body in reassembly, so the response itself is not dissected)

    // the key log obeys the sandbox and must be a key log
    let e = s
        .err(
            "analyze_tls_handshakes",
            json!({"pcap_file": "tls-lo.pcapng", "tls_keylog_file": "/etc/passwd"}),
        )
        .await;
    assert!(e.contains("PCAP_ALLOWED_DIRS"), "{e}");
    let e = s
        .err(
            "analyze_tls_handshakes",
            json!({"pcap_file": "tls-lo.pcapng", "tls_keylog_file": "tls-lo.pcapng"}),
        )
        .await;
    assert!(e.contains("not a TLS key log"), "{e}");
}

/// JA4 (computed: tshark 4.0 has no field) against FoxIO's JA4 as the PyPI reference
/// implementation `ja4plus` computes it, ClientHello by ClientHello. CI installs it
/// (.ci/run); elsewhere the test skips without it.
#[tokio::test]
async fn ja4_agrees_with_the_reference_implementation() {
    let have = Command::new("ja4plus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("PCAP_REQUIRE_PACKAGING").is_none(),
            "ja4plus is missing: pip install ja4plus"
        );
        eprintln!("skipped: pip install ja4plus");
        return;
    }
    let s = start().await;
    let mut compared = 0;
    for name in [
        "zeek-tls1.2.pcap",
        "zeek-chrome-1250-tls-x25519-kyber.pcap",
        "zeek-curl-http3-www-google-de.pcap",
        "zeek-chromium-api-cirrus-ci.pcap",
        "zeek-tls13-ech.pcap",
        "zeek-hrr.pcap",
        "ndpi-tls_alert.pcap",
        "sv-tls-selfsigned-selks.pcap",
        "zeek-tls13_wolfssl.pcap",
    ] {
        let out = Command::new("ja4plus")
            .args([
                "--format",
                "json",
                "--types",
                "ja4",
                "analyze",
                &fixture(name),
            ])
            .output()
            .unwrap();
        // (client port, JA4) of every ClientHello the reference saw
        let want: std::collections::BTreeSet<(u64, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| {
                (
                    v["src_port"].as_u64().unwrap(),
                    v["fingerprint"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let v = s
            .ok(
                "analyze_tls_handshakes",
                json!({"pcap_file": fixture(name), "limit": 500}),
            )
            .await;
        let got: std::collections::BTreeSet<(u64, String)> = v["sessions"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| {
                let port = r["client"].as_str()?.rsplit(':').next()?.parse().ok()?;
                Some((port, r["ja4"].as_str()?.to_string()))
            })
            .collect();
        assert!(
            !want.is_empty(),
            "{name}: the reference found no ClientHello"
        );
        assert_eq!(got, want, "{name}");
        compared += want.len();
    }
    assert!(compared >= 9, "{compared}");
}

/// One certificate presented by many servers (a CDN's): the row lists the first 20 and
/// counts them all, and the finding's sentence counts the rest. The test makes the
/// servers: 25 copies of the SELKS capture, each with the server moved to its own
/// address (10.77.0.k) and shifted in time so copies do not overlap.
#[tokio::test]
async fn a_certificate_of_many_servers_lists_some_and_counts_all() {
    let s = start().await;
    let data = std::fs::read(fixture("sv-tls-selfsigned-selks.pcap")).unwrap();
    assert_eq!(&data[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    let server = [192u8, 168, 56, 101];
    let copies = 25u8;
    let mut out = data[..24].to_vec();
    for k in 0..copies {
        let mut at = 24;
        while at + 16 <= data.len() {
            let len = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
            let mut rec = data[at..at + 16 + len].to_vec();
            let secs = u32::from_le_bytes(rec[..4].try_into().unwrap()) + u32::from(k) * 1000;
            rec[..4].copy_from_slice(&secs.to_le_bytes());
            // Ethernet + IPv4: source at 26, destination at 30 (checksums are not
            // validated by tshark's defaults)
            let frame = &mut rec[16..];
            if frame.len() >= 34 && frame[12..14] == [0x08, 0x00] {
                for off in [26, 30] {
                    if frame[off..off + 4] == server {
                        frame[off..off + 4].copy_from_slice(&[10, 77, 0, k + 1]);
                    }
                }
            }
            out.extend_from_slice(&rec);
            at += 16 + len;
        }
    }
    let f = s.storage_file("many-servers.pcap");
    std::fs::write(&f, out).unwrap();
    let file = f.display().to_string();
    let v = s
        .ok("extract_certificate_details", json!({"pcap_file": file}))
        .await;
    assert_eq!(v["certificates"]["total"], 1, "{v}");
    let c = &v["certificates"]["rows"][0];
    assert_eq!(c["servers_total"], u64::from(copies));
    let listed: Vec<&str> = c["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let first: Vec<String> = (1..=20).map(|k| format!("10.77.0.{k}:443")).collect();
    assert_eq!(listed, first);
    let finding = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["title"].as_str().unwrap().starts_with("Self-signed"))
        .unwrap_or_else(|| panic!("no self-signed finding: {}", v["findings"]));
    assert!(
        finding["detail"]
            .as_str()
            .unwrap()
            .contains("10.77.0.5:443 and 20 more"),
        "{finding}"
    );
}
