//! Drill-down tools over MCP (query_packets, get_packet_details, follow_stream),
//! checked against tshark's own packet list, verbose dissection and follow output.

use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

fn tshark_lines(args: &[&str]) -> Vec<String> {
    // as the server runs it: no name resolution
    let out = tshark().arg("-n").args(args).output().expect("tshark runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn query_packets_lists_what_tshark_lists() {
    let s = start().await;
    for (name, filter) in [
        ("cs-http_dvwa_clearlogin.pcapng", "http"),
        (
            "zeek-http-methods.pcap",
            "tcp.flags.syn == 1 && tcp.flags.ack == 0",
        ),
        ("cs-synscan.pcapng", "tcp.flags.reset == 1"),
        ("sv-dns-udp-nxdomain-soa.pcap", "dns.flags.rcode == 3"),
    ] {
        let file = fixture(name);
        let want = tshark_frames(&file, filter, false);
        let v = s
            .ok(
                "query_packets",
                json!({"pcap_file": file, "display_filter": filter, "limit": 7}),
            )
            .await;
        assert_eq!(v["packets"]["total"], json!(want.len()), "{name} {filter}");
        let frames: Vec<u64> = v["packets"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["frame"].as_u64().unwrap())
            .collect();
        assert_eq!(frames, want[..want.len().min(7)], "{name} {filter}");
        // the columns are tshark's packet list
        let list = tshark_lines(&[
            "-r",
            &file,
            "-Y",
            filter,
            "-c",
            "1000000",
            "-T",
            "fields",
            "-e",
            "_ws.col.Protocol",
            "-e",
            "frame.len",
        ]);
        let first = &v["packets"]["rows"][0];
        if let Some(l) = list.first() {
            let (proto, len) = l.split_once('\t').unwrap();
            assert_eq!(first["protocol"], proto, "{name}");
            assert_eq!(first["length"].to_string(), len, "{name}");
        }
    }

    // pages reach every packet, none twice
    let file = fixture("zeek-http-methods.pcap");
    let want = tshark_frames(&file, "http", false);
    let mut got = Vec::new();
    let mut offset = 0;
    loop {
        let v = s
            .ok(
                "query_packets",
                json!({"pcap_file": file, "display_filter": "http", "limit": 10, "offset": offset}),
            )
            .await;
        let rows = v["packets"]["rows"].as_array().unwrap().clone();
        if rows.is_empty() {
            break;
        }
        got.extend(rows.iter().map(|r| r["frame"].as_u64().unwrap()));
        offset += rows.len();
    }
    assert_eq!(got, want);
}

#[tokio::test]
async fn query_packets_fields_and_unknown_names() {
    let s = start().await;
    let file = fixture("zeek-http-methods.pcap");
    let fields = [
        "ip.src",
        "tcp.srcport",
        "http.request.method",
        "http.request.uri",
    ];
    let v = s
        .ok(
            "query_packets",
            json!({"pcap_file": file, "display_filter": "http.request", "fields": fields, "limit": 500}),
        )
        .await;
    let mut args = vec!["-r", file.as_str(), "-Y", "http.request", "-T", "fields"];
    args.extend(["-E", "occurrence=a", "-E", "aggregator=,"]);
    for f in fields {
        args.extend(["-e", f]);
    }
    let want = tshark_lines(&args);
    let rows = v["packets"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), want.len());
    for (r, w) in rows.iter().zip(&want) {
        let got: Vec<&str> = r["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(got.join("\t"), *w);
    }
    assert_eq!(v["fields"], json!(fields));

    // an unknown name is an error with the close names, never an empty result
    let e = s
        .err(
            "query_packets",
            json!({"pcap_file": file, "fields": ["ip.srcx", "http.request.uri"]}),
        )
        .await;
    assert!(e.contains("ip.srcx") && e.contains("ip.src,"), "{e}");
    assert!(
        !e.contains("http.request.uri ("),
        "a known name is not reported: {e}"
    );
    let e = s
        .err(
            "query_packets",
            json!({"pcap_file": file, "fields": ["-o", "x"]}),
        )
        .await;
    assert!(e.contains("not a Wireshark field name"), "{e}");
}

#[tokio::test]
async fn packet_details_agree_with_tshark_verbose() {
    let s = start().await;
    for (name, frame) in [
        ("arkime-wireshark-retrans.pcap", 20u64),
        ("zeek-wikipedia.pcap", 12),
        ("sv-dns-udp-nxdomain-soa.pcap", 2),
        ("cs-icmp_traceroute.pcapng", 5),
    ] {
        let file = fixture(name);
        let v = s
            .ok(
                "get_packet_details",
                json!({"pcap_file": file, "frame": frame, "include_bytes": true}),
            )
            .await;
        let verbose = tshark_lines(&["-r", &file, "-V", "-Y", &format!("frame.number == {frame}")]);
        // tshark -V brackets the items Wireshark generated (not read from the bytes)
        let verbose: Vec<&str> = verbose
            .iter()
            .map(|l| {
                let l = l.trim();
                l.strip_prefix('[')
                    .and_then(|x| x.strip_suffix(']'))
                    .unwrap_or(l)
            })
            .collect();
        // every layer and every top-level item is a line of tshark -V
        for layer in v["layers"].as_array().unwrap() {
            let d = layer["display"].as_str().unwrap().trim();
            assert!(
                verbose.contains(&d),
                "{name}/{frame}: layer {d:?} not in tshark -V"
            );
            for f in layer["fields"].as_array().unwrap() {
                let d = f["display"].as_str().unwrap().trim();
                assert!(
                    verbose.iter().any(|l| *l == d || l.starts_with(d)),
                    "{name}/{frame}: {d:?} not in tshark -V"
                );
            }
        }
        for e in v["expert"].as_array().into_iter().flatten() {
            let m = e["message"].as_str().unwrap();
            assert!(verbose.iter().any(|l| l.contains(m)), "{name}: expert {m}");
        }
        // the bytes are tshark's hex dump
        let dump = tshark_lines(&["-r", &file, "-x", "-Y", &format!("frame.number == {frame}")]);
        let want: String = dump
            .iter()
            .take_while(|l| !l.is_empty())
            .map(|l| l[6..53].trim().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let got: String = v["hex"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap()[6..53].trim().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(got, want, "{name}/{frame}");
        let len = tshark_lines(&[
            "-r",
            &file,
            "-Y",
            &format!("frame.number == {frame}"),
            "-T",
            "fields",
            "-e",
            "frame.len",
        ]);
        assert_eq!(v["length"].to_string(), len[0]);
    }

    // one layer only, a tight budget, and frames that do not exist
    let file = fixture("zeek-wikipedia.pcap");
    let v = s
        .ok(
            "get_packet_details",
            json!({"pcap_file": file, "frame": 12, "layers": ["http"]}),
        )
        .await;
    assert_eq!(v["layers"].as_array().unwrap().len(), 1);
    assert_eq!(v["layers"][0]["protocol"], "http");
    assert!(
        v["layers_not_shown"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "tcp")
    );
    assert_eq!(v["conversation"]["display_filter"], "tcp.stream == 1");
    assert_eq!(v["conversation"]["follow"]["tool"], "follow_stream");
    let v = s
        .ok(
            "get_packet_details",
            json!({"pcap_file": file, "frame": 12, "max_bytes": 1024}),
        )
        .await;
    assert!(v["fields_omitted"].as_u64().unwrap() > 0);
    assert!(serde_json::to_string(&v).unwrap().len() < 8_000);
    for frame in [0, -3, 137, 1_000_000_000_000i64] {
        let e = s
            .err(
                "get_packet_details",
                json!({"pcap_file": file, "frame": frame}),
            )
            .await;
        assert!(e.contains("does not exist"), "{frame}: {e}");
    }
}

/// tshark's raw follow: client bytes on unindented lines, server bytes indented.
fn raw_follow(file: &str, stream: u64) -> [Vec<u8>; 2] {
    let lines = tshark_lines(&["-r", file, "-q", "-z", &format!("follow,tcp,raw,{stream}")]);
    let mut out = [Vec::new(), Vec::new()];
    for l in lines
        .iter()
        .skip_while(|l| !l.starts_with("Node 1"))
        .skip(1)
    {
        if l.starts_with('=') {
            break;
        }
        let side = usize::from(l.starts_with('\t'));
        let hex = l.trim();
        for i in (0..hex.len()).step_by(2) {
            out[side].push(u8::from_str_radix(&hex[i..i + 2], 16).unwrap());
        }
    }
    out
}

fn chunk_bytes(c: &Value) -> Vec<u8> {
    match c["text"].as_str() {
        Some(t) => {
            // text keeps \r \n \t and writes other control bytes as \xNN
            let mut out = Vec::new();
            let mut rest = t;
            while let Some(i) = rest.find("\\x") {
                out.extend_from_slice(&rest.as_bytes()[..i]);
                out.push(u8::from_str_radix(&rest[i + 2..i + 4], 16).unwrap());
                rest = &rest[i + 4..];
            }
            out.extend_from_slice(rest.as_bytes());
            out
        }
        None => c["hex"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| {
                let l = l.as_str().unwrap();
                l[10..57]
                    .split_whitespace()
                    .map(|h| u8::from_str_radix(h, 16).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect(),
    }
}

#[tokio::test]
async fn follow_stream_reproduces_the_conversation() {
    let s = start().await;
    for (name, stream) in [
        ("zeek-wikipedia.pcap", 1u64),
        ("zeek-http-methods.pcap", 3),
        ("arkime-wireshark-retrans.pcap", 0),
    ] {
        let file = fixture(name);
        let want = raw_follow(&file, stream);
        let mut got = [Vec::new(), Vec::new()];
        let mut offset = 0u64;
        let mut pages = 0;
        loop {
            let v = s
                .ok(
                    "follow_stream",
                    json!({"pcap_file": file, "stream": stream, "offset_bytes": offset, "max_bytes": 700}),
                )
                .await;
            assert_eq!(v["client_bytes"], json!(want[0].len()), "{name}");
            assert_eq!(v["server_bytes"], json!(want[1].len()), "{name}");
            for c in v["chunks"].as_array().unwrap() {
                let side = usize::from(c["from"] == "server");
                assert_eq!(c["direction_offset"], json!(got[side].len()), "{name}");
                got[side].extend(chunk_bytes(c));
                assert!(c["frame"].as_u64().unwrap() > 0);
            }
            pages += 1;
            match v["next_offset_bytes"].as_u64() {
                Some(n) => offset = n,
                None => break,
            }
        }
        assert_eq!(got, want, "{name} stream {stream}");
        assert!(pages > 1 || want[0].len() + want[1].len() <= 700);
    }

    // a filter that selects one stream resolves to it; several are listed; none exist
    let file = fixture("zeek-wikipedia.pcap");
    let v = s
        .ok(
            "follow_stream",
            json!({"pcap_file": file, "display_filter": "tcp.port == 48649"}),
        )
        .await;
    assert_eq!(v["stream"], 1);
    assert_eq!(v["server"], "208.80.152.118:80");
    let e = s
        .err(
            "follow_stream",
            json!({"pcap_file": file, "display_filter": "tcp"}),
        )
        .await;
    assert!(
        e.contains("streams") && e.contains("stream") && e.contains("->"),
        "{e}"
    );
    let e = s
        .err("follow_stream", json!({"pcap_file": file, "stream": 9999}))
        .await;
    assert!(e.contains("does not exist"), "{e}");
    let e = s
        .err(
            "follow_stream",
            json!({"pcap_file": file, "stream": 1, "protocol": "smtp; rm"}),
        )
        .await;
    assert!(e.contains("cannot be followed"), "{e}");
    // a complete connection says so (SYN ... FIN)
    let v = s
        .ok(
            "follow_stream",
            json!({"pcap_file": fixture("zeek-http-methods.pcap"), "stream": 3}),
        )
        .await;
    let whole = tshark_count(
        &fixture("zeek-http-methods.pcap"),
        "tcp.stream == 3 && tcp.completeness == 31",
    );
    assert_eq!(v["complete"], json!(whole > 0), "{}", v["completeness"]);
}

#[tokio::test]
async fn follow_stream_decrypts_tls_with_a_key_log() {
    if !is_root() || Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: needs root (capture on lo) and openssl");
        return;
    }
    let s = start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = 46551u16;
    let v = s
        .ok("start_packet_capture", json!({"interface": "lo", "duration": 60, "capture_filter": format!("tcp port {port}"), "output_file": "follow-tls.pcapng"}))
        .await;
    let id = v["capture"]["capture_id"].as_str().unwrap().to_string();
    let keylog = s.storage_file("follow-keys.log").display().to_string();
    let dirp = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let srv = openssl_server(&dirp, port, &["-tls1_3"]);
        openssl_client(
            srv.port,
            "www.good.test",
            &["-tls1_3", "-keylogfile", &keylog],
        );
    })
    .await
    .unwrap();
    s.ok("stop_packet_capture", json!({"capture_id": id})).await;

    let q = s
        .ok(
            "query_packets",
            json!({"pcap_file": "follow-tls.pcapng", "display_filter": "tls.handshake.type == 1", "fields": ["tcp.stream"]}),
        )
        .await;
    let stream: u64 = q["packets"]["rows"][0]["values"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let v = s
        .ok(
            "follow_stream",
            json!({"pcap_file": "follow-tls.pcapng", "stream": stream, "protocol": "tls", "tls_keylog_file": "follow-keys.log"}),
        )
        .await;
    let text = |from: &str| -> String {
        v["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["from"] == from)
            .filter_map(|c| c["text"].as_str())
            .collect()
    };
    // the client is the side that sent the SYN, whatever order tshark lists peers in
    assert!(
        v["server"].as_str().unwrap().ends_with(&format!(":{port}")),
        "{}",
        v["server"]
    );
    // what openssl_client sent and s_server -www answers
    assert!(text("client").starts_with("GET / HTTP/1.0\r\n\r\n"), "{v}");
    assert!(text("server").starts_with("HTTP/1.0 200 ok"), "{v}");
    // without the keys nothing of it shows
    let v = s
        .ok(
            "follow_stream",
            json!({"pcap_file": "follow-tls.pcapng", "stream": stream, "protocol": "tls"}),
        )
        .await;
    assert!(
        !serde_json::to_string(&v["chunks"])
            .unwrap()
            .contains("GET /")
    );
    assert!(v["summary"].as_str().unwrap().contains("key log"));
}

#[tokio::test]
async fn filter_capture_writes_the_selected_packets_and_nothing_else() {
    let s = start().await;
    let file = fixture("zeek-http-methods.pcap");
    let filter = "tcp.stream == 3 || dns";
    let want = tshark_count(&file, filter);
    let v = s
        .ok(
            "filter_capture",
            json!({"pcap_file": file, "display_filter": filter, "output_file": "slice-a.pcapng"}),
        )
        .await;
    assert_eq!(v["packets"], json!(want));
    let written = s.storage_file("slice-a.pcapng");
    assert_eq!(v["path"], json!(written.display().to_string()));
    // tshark reads the slice back: the same packets, as pcapng
    let path = written.display().to_string();
    assert_eq!(tshark_count(&path, "frame"), want);
    let magic = std::fs::read(&written).unwrap();
    assert_eq!(&magic[..4], &[0x0a, 0x0d, 0x0d, 0x0a]);
    // and every tool reads it by name
    let a = s
        .ok("analyze_pcap_file", json!({"pcap_file": "slice-a.pcapng"}))
        .await;
    assert_eq!(a["capture"]["packets_in_file"], json!(want));
    // a time range alone is a selection too
    let v = s
        .ok(
            "filter_capture",
            json!({"pcap_file": file, "start_time": "+10", "end_time": "+30"}),
        )
        .await;
    assert_eq!(
        v["packets"],
        json!(tshark_count(
            &file,
            "frame.time_relative >= 10 && frame.time_relative <= 30"
        ))
    );
    assert!(
        v["output_file"]
            .as_str()
            .unwrap()
            .starts_with("zeek-http-methods-slice-")
    );

    // never overwritten, never outside storage, never a copy of everything
    for (args, needle) in [
        (
            json!({"display_filter": "dns", "output_file": "slice-a.pcapng"}),
            "already exists",
        ),
        (
            json!({"display_filter": "dns", "output_file": "../escape.pcapng"}),
            "not allowed",
        ),
        (
            json!({"display_filter": "dns", "output_file": "x.txt"}),
            ".pcapng",
        ),
        (json!({}), "display_filter or a time range"),
    ] {
        let mut a = args.clone();
        a["pcap_file"] = json!(file);
        let e = s.err("filter_capture", a).await;
        assert!(e.contains(needle), "{args}: {e}");
    }
    assert_eq!(
        tshark_count(&path, "frame"),
        want,
        "the first slice is untouched"
    );
    assert!(!s.storage_file("../escape.pcapng").exists());
}

#[tokio::test]
async fn hostile_drilldown_arguments_get_bounded_answers() {
    // 300k packets, every one selected by the filter (a million costs CI ~40 s for the
    // same property: the page is capped, the count exact)
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("many.pcap");
    let n = 300_000u32;
    let mut recs = Vec::with_capacity(n as usize);
    for i in 0..n {
        let d = udp_datagram(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            5000 + (i % 7) as u16,
            9,
            &i.to_be_bytes(),
        );
        recs.push((1.0 + f64::from(i) * 1e-4, d));
    }
    std::fs::write(&big, pcap_of(&recs)).unwrap();
    drop(recs);
    let allowed = format!("{}:{}", dir.path().display(), fixtures().display());
    let s = start_with(&[("PCAP_ALLOWED_DIRS", &allowed)]).await;
    let file = big.display().to_string();
    let v = s
        .ok(
            "query_packets",
            json!({"pcap_file": file, "display_filter": "udp", "limit": 100_000_000i64, "offset": -5}),
        )
        .await;
    // what the test wrote; the page is capped, the count exact, a negative offset is 0
    assert_eq!(v["packets"]["total"], json!(n));
    assert_eq!(v["packets"]["rows"].as_array().unwrap().len(), 500);
    assert_eq!(v["packets"]["rows"][0]["frame"], 1);
    for frame in [0i64, -1, i64::from(n) + 1] {
        let e = s
            .err(
                "get_packet_details",
                json!({"pcap_file": file, "frame": frame}),
            )
            .await;
        assert!(e.contains("does not exist"), "{frame}: {e}");
    }
    // the last frame is there
    let v = s
        .ok("get_packet_details", json!({"pcap_file": file, "frame": n}))
        .await;
    assert_eq!(v["frame"], json!(n));
    let v = s
        .ok(
            "follow_stream",
            json!({"pcap_file": fixture("zeek-wikipedia.pcap"), "stream": 1, "offset_bytes": -100}),
        )
        .await;
    assert_eq!(v["offset_bytes"], 0);
}
