//! Exported objects: which HTTP message carried which file, the MIME type of a file's
//! bytes, and names safe to store.
//!
//! tshark's `--export-objects` writes the exact bytes of every object (de-chunked and
//! decompressed, as Wireshark's File > Export Objects does) but names them from the
//! URI with its own duplicate counters, and says nothing about frame, host or type. The
//! same tshark run prints each HTTP message that has a body as JSON with the body's
//! bytes (`-x`: `http.file_data_raw`), so an object is joined to its message by the
//! SHA-256 of its bytes, never by guessing from the file name.

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// One HTTP message with a body, as tshark's JSON shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpBody {
    pub frame: u64,
    /// SHA-256 of the body's bytes (lower-case hex).
    pub sha256: String,
    pub len: u64,
    pub is_request: bool,
    /// The request method (requests) or status code (responses), from the first line.
    pub method: Option<String>,
    pub status: Option<u16>,
    /// The full URI of the request (or of the request a response answers).
    pub uri: Option<String>,
    pub host: Option<String>,
    pub content_type: Option<String>,
    /// For a response: the frame of its request.
    pub request_frame: Option<u64>,
}

/// The tshark arguments that print what `http_bodies` reads: each frame with an HTTP
/// body, as JSON with raw bytes, only the frame and HTTP layers.
pub const HTTP_BODY_ARGS: &[&str] = &[
    "-Y",
    "http.file_data",
    "-T",
    "json",
    "-x",
    "--no-duplicate-keys",
    "-j",
    "frame http",
];

#[derive(Deserialize)]
struct Packet {
    #[serde(rename = "_source")]
    source: Source,
}

#[derive(Deserialize)]
struct Source {
    layers: Layers,
}

#[derive(Deserialize)]
struct Layers {
    #[serde(default)]
    frame: Option<FrameLayer>,
    #[serde(default)]
    http: Option<OneOrMany>,
}

#[derive(Deserialize)]
struct FrameLayer {
    #[serde(rename = "frame.number")]
    number: Option<String>,
}

/// A frame's HTTP layer: one message, or an array when several share the frame.
struct OneOrMany(Vec<Message>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an HTTP layer or an array of them")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OneOrMany, A::Error> {
                Message::from_map(map).map(|m| OneOrMany(vec![m]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut v = Vec::new();
                while let Some(m) = seq.next_element::<Message>()? {
                    v.push(m);
                }
                Ok(OneOrMany(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// One HTTP message's fields. Read key by key so that the body's text (tshark prints
/// it as `http.file_data` too) is skipped without being kept, and its raw hex is
/// hashed as soon as it is read: memory stays one body's hex, not the whole layer.
#[derive(Default)]
struct Message {
    has_body: bool,
    body: Option<(String, u64)>,
    first_line: Option<String>,
    is_request: bool,
    full_uri: Option<String>,
    response_for: Option<String>,
    host: Option<String>,
    content_type: Option<String>,
    request_in: Option<u64>,
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Message;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an HTTP layer")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Message, A::Error> {
                Message::from_map(map)
            }
        }
        d.deserialize_map(V)
    }
}

impl Message {
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut m = Message::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "http.file_data" => {
                    m.has_body = true;
                    map.next_value::<IgnoredAny>()?;
                }
                "http.file_data_raw" => {
                    // [hex, offset, length, bitmask, type]
                    let raw: Vec<Value> = map.next_value()?;
                    let bytes = raw
                        .first()
                        .and_then(Value::as_str)
                        .and_then(hex_bytes)
                        .unwrap_or_default();
                    m.body = Some((hex_digest(&bytes), bytes.len() as u64));
                }
                "http.request" => {
                    m.is_request = true;
                    map.next_value::<IgnoredAny>()?;
                }
                "http.request.full_uri" => m.full_uri = map.next_value()?,
                "http.response_for.uri" => m.response_for = map.next_value()?,
                "http.host" => m.host = map.next_value()?,
                "http.content_type" => m.content_type = map.next_value()?,
                "http.request_in" => {
                    m.request_in = map
                        .next_value::<Option<String>>()?
                        .and_then(|f| f.parse().ok())
                }
                // the first line's subtree is filtered out by `-j`; its label is the line
                k if m.first_line.is_none() && (k.starts_with("HTTP/") || k.contains(" HTTP/")) => {
                    m.first_line = Some(k.trim_end_matches("\\r\\n").to_string());
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(m)
    }

    fn into_body(self, frame: u64) -> Option<HttpBody> {
        if !self.has_body {
            return None;
        }
        // a zero-length body has no raw bytes; tshark still exports it (an empty file)
        let (sha256, len) = self.body.unwrap_or_else(|| (hex_digest(b""), 0));
        let (method, status) = match &self.first_line {
            Some(l) if l.starts_with("HTTP/") => {
                (None, l.split(' ').nth(1).and_then(|c| c.parse().ok()))
            }
            Some(l) => (l.split(' ').next().map(str::to_string), None),
            None => (None, None),
        };
        // a URI can be kilobytes of attacker text: a row keeps its start
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty()).map(|s| clip(s, MAX_TEXT));
        Some(HttpBody {
            frame,
            sha256,
            len,
            is_request: self.is_request,
            method,
            status,
            uri: nonempty(self.full_uri).or(nonempty(self.response_for)),
            host: nonempty(self.host),
            content_type: nonempty(self.content_type),
            request_frame: self.request_in,
        })
    }
}

/// Reads tshark's JSON array one packet at a time (an array of all bodies as hex can
/// be as large as every object together).
pub fn http_bodies(reader: impl std::io::Read) -> Result<Vec<HttpBody>, String> {
    struct Each<'a>(&'a mut Vec<HttpBody>);
    impl<'de> Visitor<'de> for Each<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("tshark's JSON packet array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(p) = seq.next_element::<Packet>()? {
                Each::take(self.0, p);
            }
            Ok(())
        }
    }
    impl Each<'_> {
        fn take(out: &mut Vec<HttpBody>, p: Packet) {
            let layers = p.source.layers;
            let frame = layers
                .frame
                .and_then(|f| f.number)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let messages = layers.http.map(|h| h.0).unwrap_or_default();
            out.extend(messages.into_iter().filter_map(|m| m.into_body(frame)));
        }
    }
    impl<'de> DeserializeSeed<'de> for Each<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    let mut out = Vec::new();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, reader);
    // tshark prints the array pretty, each packet between a line `  {` and a line
    // `  }` or `  },` (deeper lines are indented further; strings hold no newline).
    // Each packet is parsed from memory on its own: serde_json reading from a stream
    // goes byte by byte, several times slower over the hundreds of MB of hex a large
    // capture's bodies make. Output in another layout is read as one stream.
    let mut line = Vec::new();
    let mut packet = Vec::new();
    let read = |r: &mut std::io::BufReader<_>, l: &mut Vec<u8>| {
        l.clear();
        std::io::BufRead::read_until(r, b'\n', l)
            .map_err(|e| format!("reading tshark's HTTP message list failed: {e}"))
    };
    read(&mut reader, &mut line)?;
    let mut head = line.clone();
    if line.trim_ascii_end() == b"[" {
        read(&mut reader, &mut line)?;
        head.extend_from_slice(&line);
    }
    let first_packet = head.starts_with(b"[\n  {\n");
    if first_packet || head.trim_ascii_end() == b"[\n]" {
        let mut inside = first_packet;
        packet.extend_from_slice(b"{");
        while read(&mut reader, &mut line)? > 0 {
            let t = line.trim_ascii_end();
            if !inside {
                match t {
                    b"  {" => {
                        inside = true;
                        packet.clear();
                        packet.extend_from_slice(t);
                    }
                    b"]" | b"" => {}
                    _ => {
                        return Err(format!(
                            "reading tshark's HTTP message list failed: unexpected line {:?}",
                            String::from_utf8_lossy(&t[..t.len().min(80)])
                        ));
                    }
                }
                continue;
            }
            if t == b"  }" || t == b"  }," {
                inside = false;
                packet.extend_from_slice(b"}");
                let p: Packet = serde_json::from_slice(&packet)
                    .map_err(|e| format!("reading tshark's HTTP message list failed: {e}"))?;
                Each::take(&mut out, p);
            } else {
                packet.extend_from_slice(t);
            }
        }
        if inside {
            return Err(
                "reading tshark's HTTP message list failed: it ends inside a packet".into(),
            );
        }
        return Ok(out);
    }
    let mut de = serde_json::Deserializer::from_reader(std::io::Read::chain(
        std::io::Cursor::new(head),
        reader,
    ));
    match Each(&mut out).deserialize(&mut de) {
        Ok(()) => Ok(out),
        // no frame matched: tshark prints nothing at all, not an empty array
        Err(e) if e.is_eof() && out.is_empty() => Ok(out),
        Err(e) => Err(format!("reading tshark's HTTP message list failed: {e}")),
    }
}

/// The longest URI, host or type an object row keeps.
const MAX_TEXT: usize = 300;

fn clip(s: String, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s,
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 2);
    for pair in s.chunks_exact(2) {
        out.push(nibble(pair[0])? << 4 | nibble(pair[1])?);
    }
    Some(out)
}

pub fn hex_digest(bytes: &[u8]) -> String {
    hex_lower(&Sha256::digest(bytes))
}

/// Bytes as lower-case hex, the way hashes are written.
pub fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The frame tshark names an object after when it has no file name (`object<N>...`).
pub fn generic_name_frame(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("object")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The MIME type of a file from its first bytes; None when nothing is recognised.
pub fn sniff_mime(head: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1f\x8b", "application/gzip"),
        (b"MZ", "application/x-msdownload"),
        (b"\x7fELF", "application/x-executable"),
        (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
        (b"Rar!\x1a\x07", "application/vnd.rar"),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
            "application/x-ole-storage",
        ),
        (b"wOFF", "font/woff"),
        (b"wOF2", "font/woff2"),
        (b"\x00\x00\x01\x00", "image/x-icon"),
    ];
    if let Some((_, m)) = MAGIC.iter().find(|(magic, _)| head.starts_with(magic)) {
        return Some(m);
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Some("image/webp");
    }
    let text = std::str::from_utf8(head).ok().or_else(|| {
        // a multi-byte character cut at the end of the sniffed head is still text
        let cut = head.len().saturating_sub(3);
        (cut..head.len()).find_map(|i| std::str::from_utf8(&head[..i]).ok())
    })?;
    if head.is_empty() || text.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return None;
    }
    let start = text.trim_start().to_ascii_lowercase();
    Some(
        if start.starts_with("<!doctype html") || start.starts_with("<html") {
            "text/html"
        } else if start.starts_with("<?xml") || start.starts_with("<svg") {
            "application/xml"
        } else if start.starts_with('{') || start.starts_with('[') {
            "application/json"
        } else {
            "text/plain"
        },
    )
}

/// Whether a sniffed type came from a signature (magic bytes) rather than from the
/// bytes merely looking like text: only a signature can contradict a declared type.
pub fn is_signature_type(mime: &str) -> bool {
    !matches!(
        mime,
        "text/plain" | "text/html" | "application/json" | "application/xml"
    )
}

/// A name for an object in storage: letters, digits, '.', '_' and '-' only (tshark's
/// `%2f`-escapes and `(1)` counters included), not starting with '.', at most 100
/// characters, and not one already `taken` (then `-2`, `-3`, ... before the extension).
pub fn storage_name(name: &str, taken: &mut HashSet<String>) -> String {
    let mut base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    base = base.trim_start_matches('.').chars().take(100).collect();
    if base.is_empty() || base.chars().all(|c| c == '_') {
        base = "object".into();
    }
    let (stem, ext) = match base.rfind('.') {
        Some(i) if i > 0 && base.len() - i <= 10 => (base[..i].to_string(), base[i..].to_string()),
        _ => (base.clone(), String::new()),
    };
    let mut candidate = base;
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{stem}-{n}{ext}");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from `tshark -r zeek-100-continue-post.pcap` with HTTP_BODY_ARGS,
    /// bodies shortened: a POST with a body and its chunked response.
    const RECORDED: &str = r#"[
  {"_index": "packets-2009-03-19", "_type": "doc", "_score": null,
   "_source": {"layers": {
     "frame": {"frame.number": "10"},
     "http": {"POST / HTTP/1.1\\r\\n": {"filtered": "POST / HTTP/1.1\\r\\n"},
              "http.host": "www.osu.edu",
              "http.content_type": "application/x-www-form-urlencoded",
              "http.request.full_uri": "http://www.osu.edu/",
              "http.request": "1",
              "http.file_data_raw": ["52525246", 0, 4, 0, 26],
              "http.file_data": "RRRF"}}}},
  {"_index": "packets-2009-03-19", "_type": "doc", "_score": null,
   "_source": {"layers": {
     "frame": {"frame.number": "63"},
     "http": [{"HTTP/1.1 200 OK\\r\\n": {"filtered": "HTTP/1.1 200 OK\\r\\n"},
               "http.content_type": "text/html",
               "http.response": "1",
               "http.request_in": "10",
               "http.response_for.uri": "http://www.osu.edu/",
               "http.file_data_raw": ["3c68746d6c3e", 0, 6, 0, 26],
               "http.file_data": "<html>"},
              {"HTTP/1.1 204 No Content\\r\\n": {"filtered": "x"},
               "http.response": "1",
               "http.file_data": ""}]}}}
]"#;

    #[test]
    fn bodies_are_read_from_recorded_json() {
        let b = http_bodies(RECORDED.as_bytes()).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].frame, 10);
        assert!(b[0].is_request);
        assert_eq!(b[0].method.as_deref(), Some("POST"));
        assert_eq!(b[0].len, 4);
        assert_eq!(b[0].sha256, hex_digest(b"RRRF"));
        assert_eq!(b[0].host.as_deref(), Some("www.osu.edu"));
        assert_eq!(b[1].status, Some(200));
        assert_eq!(b[1].request_frame, Some(10));
        assert_eq!(b[1].uri.as_deref(), Some("http://www.osu.edu/"));
        assert_eq!(b[1].sha256, hex_digest(b"<html>"));
        // an empty body is still an object (tshark writes an empty file)
        assert_eq!((b[2].len, b[2].status), (0, Some(204)));
        assert!(http_bodies(&b""[..]).unwrap().is_empty());
        // tshark's own layout (two-space indent, a packet per `  {` .. `  }`) is read
        // packet by packet, to the same bodies
        let v: Value = serde_json::from_str(RECORDED).unwrap();
        let pretty = serde_json::to_string_pretty(&v).unwrap() + "\n";
        assert!(pretty.starts_with("[\n  {\n"));
        let p = http_bodies(pretty.as_bytes()).unwrap();
        assert_eq!(
            p.iter()
                .map(|b| (b.frame, &b.sha256, b.status))
                .collect::<Vec<_>>(),
            b.iter()
                .map(|b| (b.frame, &b.sha256, b.status))
                .collect::<Vec<_>>()
        );
        assert!(http_bodies(&b"[\n]\n"[..]).unwrap().is_empty());
        assert!(http_bodies(&pretty.as_bytes()[..pretty.len() / 2]).is_err());
    }

    #[test]
    fn names_are_safe_and_unique() {
        let mut taken = HashSet::new();
        assert_eq!(storage_name("%2f(1)", &mut taken), "_2f_1_");
        assert_eq!(
            storage_name("../../etc/passwd", &mut taken),
            "_.._etc_passwd"
        );
        assert_eq!(storage_name("a\u{7}b.html", &mut taken), "a_b.html");
        assert_eq!(storage_name("a\u{1}b.html", &mut taken), "a_b-2.html");
        assert_eq!(storage_name("...", &mut taken), "object");
        assert_eq!(storage_name("", &mut taken), "object-2");
        assert!(crate::sandbox::is_safe_file_name(&storage_name(
            &"x".repeat(300),
            &mut taken
        )));
    }

    #[test]
    fn mime_types_are_sniffed() {
        assert_eq!(sniff_mime(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff_mime(b"  <!DOCTYPE html><html>"), Some("text/html"));
        assert_eq!(sniff_mime(b"{\"a\": 1}"), Some("application/json"));
        assert_eq!(sniff_mime(b"plain words\n"), Some("text/plain"));
        assert_eq!(sniff_mime(b"\x00\x01\x02\x03"), None);
        assert_eq!(generic_name_frame("object184.text%2fhtml"), Some(184));
        assert_eq!(generic_name_frame("objects"), None);
        assert_eq!(
            hex_digest(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
