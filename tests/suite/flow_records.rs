//! export_flow_records against Zeek's own logs of the same captures (fixtures/zeek-*/,
//! copied from Zeek's test baselines): conn.log row by row on every field Zeek's
//! baseline does not mask, and the dns/http/ssl fields both write.

use std::collections::BTreeMap;

use crate::common::*;
use serde_json::{Value, json};

/// Our JSON value written the way Zeek's TSV writes it.
fn as_zeek(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::Bool(b)) => if *b { "T" } else { "F" }.into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_f64() => format!("{:.6}", n.as_f64().unwrap()),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Array(a)) if a.is_empty() => "(empty)".into(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| as_zeek(Some(x)))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// Runs the export and reads back each log it wrote, by kind.
async fn export(s: &Server, pcap: &str) -> BTreeMap<String, Vec<Value>> {
    let v = s
        .ok("export_flow_records", json!({"pcap_file": fixture(pcap)}))
        .await;
    let dir = std::path::PathBuf::from(v["path"].as_str().unwrap());
    v["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let text = std::fs::read_to_string(dir.join(l["file"].as_str().unwrap())).unwrap();
            let rows: Vec<Value> = text
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            assert_eq!(rows.len() as u64, l["rows"].as_u64().unwrap());
            (l["log"].as_str().unwrap().to_string(), rows)
        })
        .collect()
}

/// Compares `fields` of each Zeek row with our row that has the same `key` fields.
fn compare(
    what: &str,
    zeek: &[BTreeMap<String, String>],
    ours: &[Value],
    key: &[&str],
    fields: &[&str],
) {
    for z in zeek {
        let k: Vec<&str> = key.iter().map(|f| z[*f].as_str()).collect();
        let mine: Vec<&Value> = ours
            .iter()
            .filter(|o| key.iter().zip(&k).all(|(f, v)| as_zeek(o.get(*f)) == *v))
            .collect();
        assert_eq!(
            mine.len(),
            1,
            "{what}: one row of ours for Zeek's {k:?}, got {mine:?}"
        );
        for f in fields {
            let (theirs, ours) = (z[*f].as_str(), as_zeek(mine[0].get(*f)));
            if (f == &"duration" || f == &"rtt") && theirs != "-" {
                let (a, b): (f64, f64) = (theirs.parse().unwrap(), ours.parse().unwrap());
                assert!(
                    (a - b).abs() <= 2e-6,
                    "{what} {k:?} {f}: Zeek {a}, ours {b}"
                );
            } else {
                assert_eq!(ours, theirs, "{what} {k:?} field {f}");
            }
        }
    }
}

const CONN_KEY: [&str; 5] = ["id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto"];

#[tokio::test]
async fn conn_log_rows_equal_zeeks() {
    let s = start().await;
    for (pcap, log) in [
        ("zeek-wikipedia.pcap", "zeek-wikipedia"),
        ("zeek-ftp-ipv4.pcap", "zeek-ftp-ipv4"),
        ("zeek-ftp-ipv6.pcap", "zeek-ftp-ipv6"),
        ("zeek-mixed-vlan-mpls.pcap", "zeek-mixed-vlan-mpls"),
        (
            "zeek-pcapng-multi-interface.pcapng",
            "zeek-pcapng-multi-interface",
        ),
        ("zeek-q-in-q.pcap", "zeek-q-in-q"),
        (
            "zeek-ftp-password-pass-command.pcap",
            "zeek-ftp-password-pass-command",
        ),
        ("zeek-retransmit-fast009.pcap", "zeek-retransmit-fast009"),
    ] {
        let logs = export(&s, pcap).await;
        let zeek = zeek_log(&format!("zeek-conn/{log}.conn.log"));
        let ours = &logs["conn"];
        assert_eq!(
            ours.len(),
            zeek.len(),
            "{pcap}: one conn row per Zeek connection"
        );
        compare(
            pcap,
            &zeek,
            ours,
            &CONN_KEY,
            &[
                "service",
                "duration",
                "orig_bytes",
                "resp_bytes",
                "conn_state",
                "missed_bytes",
                "history",
                "orig_pkts",
                "orig_ip_bytes",
                "resp_pkts",
                "resp_ip_bytes",
                "ip_proto",
            ],
        );
        // the uid joins the logs, and the same capture gives the same uids
        let again = export(&s, pcap).await;
        assert_eq!(
            again["conn"], *ours,
            "{pcap}: byte-identical on a second export"
        );
    }
}

#[tokio::test]
async fn dns_http_ssl_logs_agree_with_zeeks() {
    let s = start().await;
    // unicast DNS (Zeek's multicast rows pair messages by its own rules)
    let logs = export(&s, "zeek-wikipedia.pcap").await;
    let zeek: Vec<_> = zeek_log("zeek-dns/zeek-wikipedia.dns.log")
        .into_iter()
        .filter(|z| z["id.resp_p"] == "53")
        .collect();
    assert!(zeek.len() >= 10);
    compare(
        "wikipedia dns",
        &zeek,
        &logs["dns"],
        &["id.orig_h", "id.orig_p", "trans_id"],
        &[
            "proto",
            "query",
            "qclass",
            "qclass_name",
            "qtype",
            "qtype_name",
            "rcode",
            "rcode_name",
            "TC",
            "RD",
            "answers",
            "TTLs",
            "rejected",
        ],
    );
    // Zeek fills AA, RA (and rtt) only while it walks answer records: compared where
    // the response had some; without answers ours are the response header's flags
    let answered: Vec<_> = zeek
        .iter()
        .filter(|z| z["answers"] != "-")
        .cloned()
        .collect();
    assert!(answered.len() >= 4);
    compare(
        "wikipedia dns (answered)",
        &answered,
        &logs["dns"],
        &["id.orig_h", "id.orig_p", "trans_id"],
        &["AA", "RA", "rtt"],
    );
    let conn_uids: Vec<&Value> = logs["conn"].iter().map(|c| &c["uid"]).collect();
    for kind in ["dns", "http"] {
        for r in &logs[kind] {
            assert!(
                conn_uids.contains(&&r["uid"]),
                "{kind} row's uid is a conn.log uid: {r}"
            );
        }
    }
    let http_fields = [
        "method",
        "host",
        "uri",
        "referrer",
        "version",
        "user_agent",
        "request_body_len",
        "response_body_len",
        "status_code",
        "status_msg",
        "info_code",
        "info_msg",
        "username",
    ];
    for name in [
        "zeek-wikipedia",
        "zeek-100-continue-post",
        "zeek-basic-auth-with-colon",
        "zeek-http-methods",
        "zeek-mixed-vlan-mpls",
    ] {
        let pcap = format!("{name}.pcap");
        let logs = export(&s, &pcap).await;
        let all = zeek_log(&format!("zeek-http/{name}.http.log"));
        // Zeek logs status 0 for replies it could not parse (an HTTP/0.9 body, a torn
        // reply), and the methods capture tortures request lines ("OPTIONS HTTP/1.1",
        // "GET /HTTP/1.1") that the two parsers split differently: the rest is compared
        let zeek: Vec<_> = all
            .iter()
            .filter(|z| z["status_code"] != "0" && (z["uri"] == "/" || name != "zeek-http-methods"))
            .cloned()
            .collect();
        assert!(
            zeek.len() >= 10 || name != "zeek-http-methods",
            "{name}: ten rows compared at least"
        );
        // Zeek does not parse HTTP on a connection whose start the capture missed; we
        // do: every extra row of ours is on such a connection
        let key = |v: &Value| {
            (
                as_zeek(v.get("id.orig_h")),
                as_zeek(v.get("id.orig_p")),
                as_zeek(v.get("trans_depth")),
            )
        };
        for r in &logs["http"] {
            if !all.iter().any(|z| {
                (
                    z["id.orig_h"].clone(),
                    z["id.orig_p"].clone(),
                    z["trans_depth"].clone(),
                ) == key(r)
            }) {
                let conn = logs["conn"].iter().find(|c| c["uid"] == r["uid"]).unwrap();
                assert!(
                    !conn["history"].as_str().unwrap().contains('S'),
                    "{pcap}: a request Zeek did not log on a connection it saw open: {r}"
                );
            }
        }
        assert!(
            logs["http"].len() >= all.len(),
            "{pcap}: every Zeek request is ours"
        );
        compare(
            &pcap,
            &zeek,
            &logs["http"],
            &["id.orig_h", "id.orig_p", "trans_depth"],
            &http_fields,
        );
    }
    for name in [
        "zeek-tls1.2",
        "zeek-ecdhe",
        "zeek-tls-1.2-handshake-failure",
        "zeek-tls13_wolfssl",
        "zeek-tls13-ech",
    ] {
        let pcap = format!("{name}.pcap");
        let logs = export(&s, &pcap).await;
        let zeek = zeek_log(&format!("zeek-ssl/{name}.ssl.log"));
        compare(
            &pcap,
            &zeek,
            &logs["ssl"],
            &["id.orig_h", "id.orig_p"],
            &[
                "version",
                "cipher",
                "server_name",
                "resumed",
                "last_alert",
                "next_protocol",
                "established",
                "cert_chain_fps",
            ],
        );
    }
}

/// DuckDB (from PyPI: an independent Parquet reader) reads every Parquet log back to
/// the rows the JSON logs hold.
#[tokio::test]
async fn parquet_logs_read_back_in_duckdb_as_the_json_rows() {
    let has_duckdb = std::process::Command::new("python3")
        .args(["-c", "import duckdb"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_duckdb {
        assert!(
            std::env::var_os("PCAP_REQUIRE_PACKAGING").is_none(),
            "python3 -m pip install duckdb (.ci/run does)"
        );
        eprintln!("skipped: no duckdb for python3");
        return;
    }
    let s = start().await;
    for pcap in [
        "zeek-wikipedia.pcap",
        "zeek-tls1.2.pcap",
        "zeek-ftp-ipv6.pcap",
    ] {
        let json_logs = export(&s, pcap).await;
        let v = s
            .ok(
                "export_flow_records",
                json!({"pcap_file": fixture(pcap), "format": "parquet"}),
            )
            .await;
        assert_eq!(v["format"], "parquet");
        for l in v["logs"].as_array().unwrap() {
            let file =
                std::path::Path::new(v["path"].as_str().unwrap()).join(l["file"].as_str().unwrap());
            // every row as a JSON object without its nulls, in file order
            let script = "import duckdb, json, sys\n\
                rel = duckdb.sql(\"select * from read_parquet(?)\".replace('?', repr(sys.argv[1])))\n\
                cols = rel.columns\n\
                for row in rel.fetchall():\n\
                \x20   print(json.dumps({c: v for c, v in zip(cols, row) if v is not None}))\n";
            let out = std::process::Command::new("python3")
                .args(["-c", script, file.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let read: Vec<Value> = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            let kind = l["log"].as_str().unwrap();
            assert_eq!(
                read, json_logs[kind],
                "{pcap} {kind}: Parquet rows read back"
            );
            assert_eq!(read.len() as u64, l["rows"].as_u64().unwrap());
        }
    }
}
