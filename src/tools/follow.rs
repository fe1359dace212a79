//! `follow_stream`: one conversation's payload as alternating client/server chunks,
//! with frame numbers and byte offsets, paged by bytes — Wireshark's "Follow Stream".
//!
//! tshark's `-z follow,<proto>,yaml,<stream>` gives every chunk with its frame and peer
//! (base64); the same pass prints the stream's packets' `tcp.completeness`. The
//! payload is cached (up to FOLLOW_CACHE_BYTES) so later pages do not re-read the file.

use std::sync::Arc;

use base64::Engine as _;
use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::{Analysis, Span};
use crate::report::{Report, rfc3339, thousands};
use crate::server::PcapServer;
use crate::tshark::fields::{Row, field_args};

/// Payload kept per followed stream for paging; a longer stream's later pages re-read.
const FOLLOW_CACHE_BYTES: usize = 16 << 20;
/// The fields of the stream's packets the follow pass prints before tshark's follow
/// output: completeness, addresses and ports (client = SYN sender).
const ROW_FIELDS: [&str; 12] = [
    "frame.number",
    "tcp.completeness",
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
    "tcp.flags.syn",
    "tcp.flags.ack",
];
/// Candidate streams an ambiguous filter lists.
const MAX_CANDIDATES: usize = 10;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FollowParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// The stream index (`tcp.stream`, `udp.stream`; for quic `quic.connection.number`),
    /// as a finding's evidence or get_packet_details gives it.
    #[serde(default)]
    pub stream: Option<i64>,
    /// Instead of `stream`: a display filter that selects exactly one stream, e.g.
    /// `ip.addr == 10.0.0.5 && tcp.port == 8080`. Several streams: an error lists them.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// tcp (default), udp, tls (decrypted with a key log), http, http2 or quic.
    #[serde(default)]
    pub protocol: Option<String>,
    /// The HTTP/2 or QUIC stream inside the connection (default 0).
    #[serde(default)]
    pub substream: Option<i64>,
    /// text (default: printable chunks as text, binary ones as hex) or hex (always).
    #[serde(default)]
    pub format: Option<String>,
    /// Conversation bytes to skip (both directions, in order), for paging.
    #[serde(default)]
    pub offset_bytes: Option<i64>,
    /// Output budget of the page in bytes (default 16384, at most 65536): text shows
    /// about that many payload bytes, binary shown as hex about a fifth of it.
    #[serde(default)]
    pub max_bytes: Option<i64>,
    /// SSLKEYLOGFILE in an allowed directory, to decrypt TLS (overrides
    /// PCAP_TLS_KEYLOG_FILE).
    #[serde(default)]
    pub tls_keylog_file: Option<String>,
}

impl crate::engine::FileArgs for FollowParams {
    fn pcap_file(&self) -> &str {
        &self.pcap_file
    }
    fn display_filter(&self) -> Option<&str> {
        self.display_filter.as_deref()
    }
    fn tls_keylog_file(&self) -> Option<&str> {
        self.tls_keylog_file
            .as_deref()
            .filter(|s| !s.trim().is_empty())
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Chunk {
    pub frame: u64,
    pub time: String,
    /// client (the side that spoke first in tshark's view: peer 0) or server.
    pub from: String,
    /// Offset of the chunk's first byte shown within its direction's byte stream.
    pub direction_offset: u64,
    /// Bytes of the chunk shown on this page.
    pub length: usize,
    /// The bytes as text (printable chunks; `\r`, `\n`, `\t` kept, other control bytes
    /// as `\xNN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The bytes as Wireshark's hex view: offset, 16 bytes in hex, ASCII.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hex: Vec<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FollowedStream {
    pub protocol: String,
    pub stream: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub substream: Option<u64>,
    /// host:port of the side tshark lists first (usually the client).
    pub client: String,
    pub server: String,
    pub client_bytes: u64,
    pub server_bytes: u64,
    pub packets: u64,
    /// For TCP: whether the capture saw the handshake and the close (FIN or RST).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    /// For TCP: what the capture saw of the connection (Wireshark's tcp.completeness).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completeness: Option<String>,
    pub chunks: Vec<Chunk>,
    pub offset_bytes: u64,
    pub shown_bytes: u64,
    pub total_bytes: u64,
    /// The offset_bytes of the next page, when there is more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset_bytes: Option<u64>,
    pub display_filter: String,
}

/// What one follow pass learnt: the whole conversation (payload up to the cache limit).
struct Followed {
    /// client and server, host:port (from the SYN, else the first packet)
    peers: [String; 2],
    /// Which of tshark's follow peers (0/1) is the client.
    client_peer: u8,
    chunks: Vec<RawChunk>,
    packets: u64,
    completeness: Option<u64>,
    /// Whether every chunk's payload is kept (else pages past it re-read the file).
    whole: bool,
    bytes: usize,
}

/// One chunk as tshark's follow output gives it.
struct RawChunk {
    frame: u64,
    time: f64,
    /// tshark's peer number (0 or 1)
    peer: u8,
    len: usize,
    /// The payload, when kept (see FOLLOW_CACHE_BYTES).
    data: Option<Vec<u8>>,
}

#[tool_router(router = follow_router, vis = "pub(crate)")]
impl PcapServer {
    /// One conversation's payload as Wireshark's Follow Stream shows it: each side's
    /// chunks in order with frames and byte offsets, paged by bytes, totals per
    /// direction. Give the stream index or a display filter selecting one stream;
    /// tls/http2/quic decrypt with a key log.
    #[tool(
        name = "follow_stream",
        annotations(
            title = "Follow stream",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn follow_stream(
        &self,
        Parameters(p): Parameters<FollowParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<FollowedStream>>, String> {
        protocol_of(&p)?;
        match (p.stream, p.display_filter.as_deref().map(str::trim)) {
            (Some(s), _) if s < 0 => {
                return Err(format!(
                    "stream {s} does not exist: stream indexes start at 0"
                ));
            }
            (None, None | Some("")) => {
                return Err("give the stream index (`stream`, e.g. from a finding's evidence) or a display_filter that selects one stream".into());
            }
            _ => {}
        }
        if let Some(f) = &p.format
            && !["text", "hex"].contains(&f.as_str())
        {
            return Err(format!("format {f:?} is not text or hex"));
        }
        self.engine.analyze("follow_stream", p, rc, follow).await
    }
}

/// The protocol's follow name and the field that numbers its streams.
fn protocol_of(p: &FollowParams) -> Result<(&'static str, &'static str), String> {
    let name = p
        .protocol
        .as_deref()
        .unwrap_or("tcp")
        .trim()
        .to_ascii_lowercase();
    Ok(match name.as_str() {
        "" | "tcp" => ("tcp", "tcp.stream"),
        "udp" => ("udp", "udp.stream"),
        "tls" | "ssl" => ("tls", "tcp.stream"),
        "http" => ("http", "tcp.stream"),
        "http2" => ("http2", "tcp.stream"),
        "quic" => ("quic", "quic.connection.number"),
        other => {
            return Err(format!(
                "protocol {other:?} cannot be followed: use tcp, udp, tls, http, http2 or quic"
            ));
        }
    })
}

/// The one stream a display filter selects, or an error listing the candidates.
async fn resolve(a: &mut Analysis, field: &str) -> Result<u64, String> {
    let args = field_args(&[field, "_ws.col.Source", "_ws.col.Destination"]);
    // stream -> (packets, first source, first destination)
    let mut seen: std::collections::BTreeMap<u64, (u64, String, String)> = Default::default();
    a.run_lines(Some(field), &args, |l| {
        let r = Row::parse(l, 3);
        if let Some(s) = r.u64(0) {
            let e = seen.entry(s).or_insert_with(|| {
                (
                    0,
                    r.owned(1).unwrap_or_default(),
                    r.owned(2).unwrap_or_default(),
                )
            });
            e.0 += 1;
        }
    })
    .await?;
    let filter = a.user_filter.clone().unwrap_or_default();
    match seen.len() {
        1 => Ok(*seen.keys().next().unwrap()),
        0 => Err(format!(
            "display_filter `{filter}` selects no packet with a {field}: check the filter, or the protocol"
        )),
        n => {
            let list: Vec<String> = seen
                .iter()
                .take(MAX_CANDIDATES)
                .map(|(s, (k, src, dst))| format!("{s} ({src} -> {dst}, {k} packet(s))"))
                .collect();
            Err(format!(
                "display_filter `{filter}` selects {n} streams, follow_stream needs one: narrow the filter, or pass `stream` — {}{}",
                list.join("; "),
                if n > MAX_CANDIDATES { "; ..." } else { "" }
            ))
        }
    }
}

async fn follow(mut a: Analysis, p: FollowParams) -> Result<Report<FollowedStream>, String> {
    let (proto, field) = protocol_of(&p)?;
    let stream = match p.stream {
        Some(s) => s as u64,
        None => resolve(&mut a, field).await?,
    };
    // the follow pass reads the whole conversation, not the filter's packets
    a.filter = None;
    let sub = matches!(proto, "http2" | "quic").then(|| p.substream.unwrap_or(0).max(0) as u64);
    let offset = p.offset_bytes.unwrap_or(0).max(0) as u64;
    let max = p.max_bytes.map_or(16_384, |m| m.clamp(256, 65_536)) as u64;
    let key = format!(
        "follow|{}|{proto}|{stream}|{sub:?}|{}",
        a.file.identity(),
        a.keylog.as_ref().map(|k| k.identity.as_str()).unwrap_or("")
    );
    let display_filter = format!("{field} == {stream}");
    let cached: Option<Arc<Followed>> = a.engine.memo_get(&key);
    let f = match cached {
        Some(f) if f.whole || offset + max <= f.bytes as u64 => f,
        _ => {
            let f = Arc::new(follow_pass(&mut a, proto, field, stream, sub, offset, max).await?);
            if f.packets == 0 {
                return Err(format!(
                    "{proto} stream {stream} does not exist in {}: take stream indexes from a finding's evidence, get_packet_details or query_packets (`-e {field}`)",
                    a.file.display_name
                ));
            }
            a.engine
                .memo_put(key, f.clone(), f.bytes + f.chunks.len() * 48);
            f
        }
    };
    let hex_only = p.format.as_deref() == Some("hex");
    let mut chunks = Vec::new();
    let mut pos = 0u64;
    let mut dir_pos = [0u64; 2];
    let (mut totals, mut shown) = ([0u64; 2], 0u64);
    // output bytes left for this page, and whether it is spent
    let mut budget = max as usize;
    let mut full = false;
    for RawChunk {
        frame,
        time: t,
        peer,
        len,
        data,
    } in &f.chunks
    {
        // 0: from the client, 1: from the server
        let d = usize::from(*peer != f.client_peer);
        totals[d] += *len as u64;
        let (start, end) = (pos, pos + *len as u64);
        pos = end;
        let dir_start = dir_pos[d];
        dir_pos[d] += *len as u64;
        // the page: from `offset`, while the output budget lasts
        if full || end <= offset || start >= offset + max {
            continue;
        }
        let Some(data) = data else { continue };
        let from = (offset.max(start) - start) as usize;
        let room = budget.saturating_sub(CHUNK_OVERHEAD);
        let (bytes, text) = fit(&data[from..], room, hex_only);
        if bytes.is_empty() {
            full = true;
            continue;
        }
        let cost = CHUNK_OVERHEAD
            + text
                .as_ref()
                .map_or(bytes.len().div_ceil(16) * HEX_LINE, |t| {
                    t.len() + t.len() / 8
                });
        budget = budget.saturating_sub(cost);
        shown += bytes.len() as u64;
        if from + bytes.len() < data.len() {
            full = true;
        }
        chunks.push(Chunk {
            frame: *frame,
            time: rfc3339(*t),
            from: if d == 0 { "client" } else { "server" }.into(),
            direction_offset: dir_start + from as u64,
            length: bytes.len(),
            hex: if text.is_none() {
                crate::report::hex_dump(bytes, dir_start + from as u64, 8)
            } else {
                Vec::new()
            },
            text,
        });
    }
    let total = pos;
    let next = (offset + shown < total && shown > 0).then_some(offset + shown);
    let completeness = f.completeness.map(completeness_text);
    let complete = f.completeness.map(|c| c & 3 == 3 && c & 48 != 0);
    let mut summary = format!(
        "{proto} stream {stream} between {} (client) and {} (server): {} from the client, {} from the server",
        f.peers[0],
        f.peers[1],
        human(totals[0]),
        human(totals[1])
    );
    summary.push_str(&format!(
        " in {} chunk(s); showing bytes {offset}..{} of {}",
        thousands(f.chunks.len() as u64),
        offset + shown,
        thousands(total)
    ));
    if let Some(n) = next {
        summary.push_str(&format!(" (next page: offset_bytes={n})"));
    }
    if let Some(c) = &completeness {
        summary.push_str(&format!(". Connection: {c}"));
    }
    if proto == "tls" && a.keylog.is_none() {
        summary.push_str(
            ". Without a TLS key log only cleartext TLS records show: pass tls_keylog_file",
        );
    }
    let data = FollowedStream {
        protocol: proto.into(),
        stream,
        substream: sub,
        client: f.peers[0].clone(),
        server: f.peers[1].clone(),
        client_bytes: totals[0],
        server_bytes: totals[1],
        packets: f.packets,
        complete,
        completeness,
        chunks,
        offset_bytes: offset,
        shown_bytes: shown,
        total_bytes: total,
        next_offset_bytes: next,
        display_filter,
    };
    let span = Span {
        packets: f.packets,
        first: f.chunks.first().map(|c| c.time),
        last: f.chunks.last().map(|c| c.time),
    };
    a.report(summary + ".", Vec::new(), data, span, None).await
}

/// One pass: the stream's packets (for completeness) and tshark's follow output.
/// Keeps every chunk's payload up to FOLLOW_CACHE_BYTES, and past it those of the
/// page asked for.
async fn follow_pass(
    a: &mut Analysis,
    proto: &str,
    field: &str,
    stream: u64,
    sub: Option<u64>,
    offset: u64,
    max: u64,
) -> Result<Followed, String> {
    let spec = match sub {
        Some(s) => format!("follow,{proto},yaml,{stream},{s}"),
        None => format!("follow,{proto},yaml,{stream}"),
    };
    let mut args = field_args(&ROW_FIELDS);
    args.extend(["-z".into(), spec]);
    // tshark's own peer list: in tls follow its order (and one address) can be wrong,
    // so the packets decide who is the client
    let mut yaml_peers = [String::new(), String::new()];
    let mut first_packet: Option<[String; 2]> = None;
    let mut syn: Option<[String; 2]> = None;
    let mut f = Followed {
        peers: [String::new(), String::new()],
        client_peer: 0,
        chunks: Vec::new(),
        packets: 0,
        completeness: None,
        whole: true,
        bytes: 0,
    };
    let mut in_yaml = false;
    let mut cur_peer: Option<usize> = None;
    let mut host = String::new();
    let mut chunk: Option<(u64, u8, f64)> = None;
    let mut b64 = String::new();
    let mut pos = 0u64;
    let mut err = None;
    let page = (offset, max);
    a.run_lines(Some(&format!("{field} == {stream}")), &args, |l| {
        if !in_yaml {
            if l.starts_with("peers:") {
                in_yaml = true;
                return;
            }
            let r = Row::parse(l, ROW_FIELDS.len());
            if r.u64(0).is_some() {
                f.packets += 1;
                if let Some(v) = r.u64(1) {
                    f.completeness = Some(v);
                }
                let src = crate::report::endpoint(&r.innermost_addr(2, 3), r.u64(6).or(r.u64(8)));
                let dst = crate::report::endpoint(&r.innermost_addr(4, 5), r.u64(7).or(r.u64(9)));
                if first_packet.is_none() {
                    first_packet = Some([src.clone(), dst.clone()]);
                }
                if syn.is_none() && r.flag(10) && !r.flag(11) {
                    syn = Some([src, dst]);
                }
            }
            return;
        }
        let t = l.trim_start();
        if let Some(v) = t.strip_prefix("- peer: ") {
            cur_peer = v.trim().parse().ok();
        } else if let Some(v) = t.strip_prefix("host: ") {
            host = v.trim().to_string();
        } else if let Some(v) = t.strip_prefix("port: ") {
            if let Some(i) = cur_peer.filter(|i| *i < 2)
                && f.chunks.is_empty()
                && chunk.is_none()
            {
                yaml_peers[i] = crate::report::endpoint(&host, v.trim().parse().ok());
            }
        } else if let Some(v) = t.strip_prefix("- packet: ") {
            finish(&mut f, chunk.take(), &mut b64, &mut pos, page, &mut err);
            chunk = Some((v.trim().parse().unwrap_or(0), 0, 0.0));
            cur_peer = None;
        } else if let Some(v) = t.strip_prefix("peer: ") {
            if let Some(c) = chunk.as_mut() {
                c.1 = v.trim().parse().unwrap_or(0);
            }
        } else if let Some(v) = t.strip_prefix("timestamp: ") {
            if let Some(c) = chunk.as_mut() {
                c.2 = v.trim().parse().unwrap_or(0.0);
            }
        } else if t.starts_with("data:") || t == "packets:" {
        } else if chunk.is_some() && !t.is_empty() && !t.starts_with('=') {
            b64.push_str(t);
        }
    })
    .await?;
    finish(&mut f, chunk.take(), &mut b64, &mut pos, page, &mut err);
    if let Some(e) = err {
        return Err(e);
    }
    if let Some(p) = syn.or(first_packet) {
        // tshark's peer 0 is the client unless its addresses say otherwise
        let is = |i: usize, who: &str| yaml_peers[i] == *who;
        f.client_peer = u8::from(is(0, &p[1]) || is(1, &p[0]));
        f.peers = p;
    } else {
        f.peers = yaml_peers;
    }
    if f.packets == 0 && !f.chunks.is_empty() {
        // a protocol without a packet filter of its own (quic): count the chunks
        f.packets = f.chunks.len() as u64;
    }
    Ok(f)
}

/// Ends the chunk being read: decodes its payload and keeps it while the cache has
/// room, or when it falls on the page asked for (`page` = offset, length).
fn finish(
    f: &mut Followed,
    c: Option<(u64, u8, f64)>,
    b64: &mut String,
    pos: &mut u64,
    page: (u64, u64),
    err: &mut Option<String>,
) {
    let Some((frame, peer, t)) = c else { return };
    let data = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .unwrap_or_else(|e| {
            *err = Some(format!(
                "tshark's follow data for frame {frame} is not base64: {e}"
            ));
            Vec::new()
        });
    b64.clear();
    let len = data.len();
    let (start, end) = (*pos, *pos + len as u64);
    *pos = end;
    let fits = f.bytes + len <= FOLLOW_CACHE_BYTES;
    if !fits {
        f.whole = false;
    }
    let keep = fits || (end > page.0 && start < page.0 + page.1);
    if keep {
        f.bytes += len;
    }
    f.chunks.push(RawChunk {
        frame,
        time: t,
        peer,
        len,
        data: keep.then_some(data),
    });
}

/// Output bytes a chunk costs besides its payload (frame, time, offsets in JSON).
const CHUNK_OVERHEAD: usize = 120;
/// Output bytes of one hex line (16 payload bytes).
const HEX_LINE: usize = 80;

/// As much of `data` as fits `room` output bytes, with its text form when it is text
/// (else it is shown as hex, about five output bytes per payload byte).
fn fit(data: &[u8], room: usize, hex_only: bool) -> (&[u8], Option<String>) {
    let mut n = data.len().min(room);
    while !hex_only && n > 0 {
        // cut at a character boundary, so that a cut never turns text into hex
        let m = match std::str::from_utf8(&data[..n]) {
            Ok(_) => n,
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => break,
        };
        match as_text(&data[..m]) {
            None => break,
            // JSON escapes (\r, \n, quotes) make text a little longer
            Some(t) if t.len() + t.len() / 8 <= room => return (&data[..m], Some(t)),
            Some(_) => n = m / 2,
        }
    }
    let n = (room / HEX_LINE * 16).min(data.len());
    (&data[..n], None)
}

/// Bytes as text when they are text: UTF-8 with few control characters.
fn as_text(b: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(b).ok()?;
    let control = s
        .chars()
        .filter(|c| c.is_control() && !matches!(c, '\r' | '\n' | '\t'))
        .count();
    if control * 20 > s.chars().count().max(1) {
        return None;
    }
    Some(
        s.chars()
            .map(|c| {
                if c.is_control() && !matches!(c, '\r' | '\n' | '\t') {
                    format!("\\x{:02x}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

fn human(b: u64) -> String {
    format!("{} bytes", thousands(b))
}

/// Wireshark's tcp.completeness bits in words.
fn completeness_text(c: u64) -> String {
    let mut parts = Vec::new();
    for (bit, what) in [
        (1, "SYN"),
        (2, "SYN-ACK"),
        (4, "ACK"),
        (8, "data"),
        (16, "FIN"),
        (32, "RST"),
    ] {
        if c & bit != 0 {
            parts.push(what);
        }
    }
    let whole = c & 3 == 3 && c & 48 != 0;
    format!(
        "{} ({})",
        if whole { "complete" } else { "incomplete" },
        if parts.is_empty() {
            "nothing seen".to_string()
        } else {
            parts.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_binary_chunks() {
        assert_eq!(
            as_text(b"GET / HTTP/1.1\r\n").unwrap(),
            "GET / HTTP/1.1\r\n"
        );
        assert!(as_text(&[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01]).is_none());
        assert_eq!(
            completeness_text(31),
            "complete (SYN, SYN-ACK, ACK, data, FIN)"
        );
        assert_eq!(completeness_text(12), "incomplete (ACK, data)");
    }
}
