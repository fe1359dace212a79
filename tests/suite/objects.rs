//! export_objects over MCP: the objects listed, their sizes and SHA-256 are those of
//! the files `tshark --export-objects` writes itself (the oracle); extraction stays in
//! a new folder in storage; hostile names, oversized objects and a full disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// (sha256, size) -> count over the files tshark's own export writes.
fn tshark_export(
    file: &str,
    protocol: &str,
    read_filter: Option<&str>,
) -> BTreeMap<(String, u64), usize> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let mut cmd = tshark();
    cmd.args(["-n", "-q", "-r", file]);
    if let Some(f) = read_filter {
        cmd.args(["-2", "-R", f]);
    }
    cmd.arg("--export-objects")
        .arg(format!("{protocol},{}", out.display()));
    assert!(cmd.output().unwrap().status.success());
    let mut m = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(&out) {
        for e in entries.flatten() {
            let b = std::fs::read(e.path()).unwrap();
            *m.entry((sha256(&b), b.len() as u64)).or_default() += 1;
        }
    }
    m
}

/// Every object of a call, over all pages.
async fn all_objects(s: &Server, args: Value) -> (Vec<Value>, Value) {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let mut a = args.clone();
        a["offset"] = json!(offset);
        a["limit"] = json!(10);
        let v = s.ok("export_objects", a).await;
        out.extend(v["objects"].as_array().unwrap().iter().cloned());
        assert!(
            serde_json::to_string(&v).unwrap().len() < 20_000,
            "a page stays small"
        );
        match v["next_offset"].as_u64() {
            Some(n) => offset = n,
            None => return (out, v),
        }
    }
}

fn multiset(objects: &[Value]) -> BTreeMap<(String, u64), usize> {
    let mut m = BTreeMap::new();
    for o in objects {
        let key = (
            o["sha256"].as_str().unwrap().to_string(),
            o["size_bytes"].as_u64().unwrap(),
        );
        *m.entry(key).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn objects_and_hashes_are_those_tshark_exports() {
    let s = start().await;
    for name in [
        "cs-http_dvwa_clearlogin.pcapng",
        "zeek-100-continue-post.pcap",
        "zeek-http-methods.pcap",
        "arkime-wireshark-retrans.pcap",
        "zeek-tls1.2.pcap",
    ] {
        let file = fixture(name);
        let want = tshark_export(&file, "http", None);
        let (objects, last) = all_objects(&s, json!({"pcap_file": file})).await;
        assert_eq!(multiset(&objects), want, "{name}");
        assert_eq!(last["total"], json!(objects.len()), "{name}");
        // every object tied to an HTTP message sits on a frame tshark shows a body in
        let bodies = tshark_frames(&file, "http.file_data", false);
        for o in &objects {
            if o["direction"].is_string() {
                let f = o["frame"].as_u64().unwrap();
                assert!(bodies.contains(&f), "{name}: frame {f} has no HTTP body");
            }
        }
    }

    // other protocols: the files tshark names from the protocol (FTP: the RETR argument)
    let file = fixture("zeek-ftp-ipv4.pcap");
    let (objects, _) = all_objects(&s, json!({"pcap_file": file, "protocol": "ftp-data"})).await;
    assert_eq!(multiset(&objects), tshark_export(&file, "ftp-data", None));
    assert_eq!(objects[0]["name"], "robots.txt");

    // the POST body is an upload, its response a download answering it (zeek's http.log:
    // request_body_len 2001 for the POST to www.osu.edu)
    let (objects, _) = all_objects(
        &s,
        json!({"pcap_file": fixture("zeek-100-continue-post.pcap")}),
    )
    .await;
    let post = objects
        .iter()
        .find(|o| o["direction"] == "request")
        .unwrap();
    assert_eq!(post["method"], "POST");
    assert_eq!(post["size_bytes"], 2001);
    assert_eq!(post["host"], "www.osu.edu");
    let resp = objects
        .iter()
        .find(|o| o["direction"] == "response")
        .unwrap();
    assert_eq!(resp["request_frame"], post["frame"]);
    assert_eq!(resp["status"], 200);

    // a filter narrows the export as tshark's two-pass read filter does
    let file = fixture("zeek-http-methods.pcap");
    let filter = "tcp.stream <= 3";
    let want = tshark_export(&file, "http", Some(filter));
    let (objects, _) = all_objects(&s, json!({"pcap_file": file, "display_filter": filter})).await;
    assert!(!want.is_empty());
    assert_eq!(multiset(&objects), want);
}

#[tokio::test]
async fn extraction_writes_a_new_folder_and_serves_its_files() {
    let s = start().await;
    let file = fixture("cs-http_dvwa_clearlogin.pcapng");
    let v = s
        .ok(
            "export_objects",
            json!({"pcap_file": file, "extract": true, "limit": 500}),
        )
        .await;
    let folder = v["folder"].as_str().unwrap().to_string();
    let dir = s.storage_file(&folder);
    let objects = v["objects"].as_array().unwrap();
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        objects.len(),
        "every object saved"
    );
    for o in objects {
        let saved = dir.join(o["saved_as"].as_str().unwrap());
        let bytes = std::fs::read(&saved).unwrap();
        assert_eq!(sha256(&bytes), o["sha256"].as_str().unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", saved.display());
    }
    // one object read back through resources/read is its bytes
    let o = &objects[0];
    let r = s
        .client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            o["resource_uri"].as_str().unwrap(),
        ))
        .await
        .unwrap();
    let c = serde_json::to_value(&r.contents[0]).unwrap();
    let bytes = match c["text"].as_str() {
        Some(t) => t.as_bytes().to_vec(),
        None => base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            c["blob"].as_str().unwrap(),
        )
        .unwrap(),
    };
    assert_eq!(sha256(&bytes), o["sha256"].as_str().unwrap());
    // a second extraction never touches the first folder; no scratch is left behind
    let again = s
        .ok(
            "export_objects",
            json!({"pcap_file": file, "extract": true}),
        )
        .await;
    assert_ne!(again["folder"], v["folder"]);
    let hidden: Vec<String> = std::fs::read_dir(s.storage.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "scratch left behind: {hidden:?}");
}

/// A capture of one HTTP exchange: a GET for `uri` answered with `body`.
fn http_download(uri: &[u8], body: &[u8]) -> Vec<u8> {
    let c = [10, 0, 0, 1];
    let sv = [10, 0, 0, 2];
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(uri);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: files.test\r\n\r\n");
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    resp.extend_from_slice(body);
    let (mut cs, mut ss) = (1000u32, 5000u32);
    let mut t = 1.0;
    let mut recs = vec![
        (t, tcp_segment(c, sv, 40000, 80, cs, 0, 0x02, b"")),
        (
            t + 0.001,
            tcp_segment(sv, c, 80, 40000, ss, cs + 1, 0x12, b""),
        ),
        (
            t + 0.002,
            tcp_segment(c, sv, 40000, 80, cs + 1, ss + 1, 0x10, b""),
        ),
    ];
    cs += 1;
    ss += 1;
    t += 0.003;
    recs.push((t, tcp_segment(c, sv, 40000, 80, cs, ss, 0x18, &req)));
    cs += req.len() as u32;
    for chunk in resp.chunks(1400) {
        t += 0.0001;
        recs.push((t, tcp_segment(sv, c, 80, 40000, ss, cs, 0x10, chunk)));
        ss += chunk.len() as u32;
    }
    pcap_of(&recs)
}

#[tokio::test]
async fn hostile_names_and_oversized_objects_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // a name that climbs out of the folder and carries control characters
    let evil = dir.path().join("evil.pcap");
    std::fs::write(
        &evil,
        http_download(
            b"/a/../../../etc/pa\x01ss\x1bwd",
            b"MZ\x90\x00 not really a program",
        ),
    )
    .unwrap();
    // an object larger than PCAP_MAX_EXPORT_MB=1
    let big = dir.path().join("big.pcap");
    let body: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, http_download(b"/big.bin", &body)).unwrap();
    let allowed = dir.path().display().to_string();
    let s = start_with(&[("PCAP_ALLOWED_DIRS", &allowed), ("PCAP_MAX_EXPORT_MB", "1")]).await;

    let v = s
        .ok(
            "export_objects",
            json!({"pcap_file": evil.display().to_string(), "extract": true}),
        )
        .await;
    let o = &v["objects"][0];
    assert_eq!(v["total"], 1);
    let saved = o["saved_as"].as_str().unwrap();
    assert!(
        saved
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && !saved.starts_with('.'),
        "{saved}"
    );
    let folder = s.storage_file(v["folder"].as_str().unwrap());
    assert!(folder.join(saved).is_file());
    assert!(!Path::new("/etc/pa\x01ss\x1bwd").exists());
    // declared octet-stream, but the bytes are a Windows executable: flagged
    assert_eq!(o["content_sniffed"], "application/x-msdownload");
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["title"].as_str().unwrap().contains("executable")),
        "{}",
        v["findings"]
    );

    let v = s
        .ok(
            "export_objects",
            json!({"pcap_file": big.display().to_string()}),
        )
        .await;
    let o = &v["objects"][0];
    assert_eq!(o["truncated"], true, "{o}");
    assert_eq!(o["size_bytes"], 1 << 20);
    assert!(o["sha256"].is_null());
}

#[tokio::test]
async fn a_full_disk_fails_cleanly() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    std::fs::create_dir(&storage).unwrap();
    // 256 KiB: the objects of zeek-http-methods.pcap take 172 KB and their listing
    // 1.4 MB; those of arkime-wireshark-retrans.pcap 4 KB and 95 KB
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&storage)
        .status()
        .unwrap()
        .success();
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(storage.clone());
    let s = start_with(&[("PCAP_STORAGE_DIR", &storage.display().to_string())]).await;
    let e = s
        .err(
            "export_objects",
            json!({"pcap_file": fixture("zeek-http-methods.pcap"), "extract": true}),
        )
        .await;
    assert!(e.contains("No space left"), "{e}");
    assert!(e.contains("free space"), "{e}");
    let left: Vec<_> = std::fs::read_dir(&storage).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // and the server goes on serving
    let v = s
        .ok(
            "export_objects",
            json!({"pcap_file": fixture("arkime-wireshark-retrans.pcap"), "extract": true}),
        )
        .await;
    let want = tshark_export(&fixture("arkime-wireshark-retrans.pcap"), "http", None);
    assert_eq!(v["total"], json!(want.values().sum::<usize>()));
}
