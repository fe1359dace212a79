//! `analyze_protocol_anomalies`: malformed and truncated frames, expert errors,
//! impossible TCP flag sets, IP fragment problems, TTL oddities, and protocols on ports
//! that belong to another protocol. One pass over every frame in scope.

use arcstr::ArcStr;
use std::collections::{BTreeMap, BTreeSet};

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::{Analysis, Span};
use crate::index::Keyed;
use crate::report::{Evidence, Finding, Report, Severity, Table, endpoint, host_filter, thousands};
use crate::server::PcapServer;
use crate::tools::{clamp_limit, filter_string_literal};
use crate::tshark::fields::{FromRow, Row};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AnomalyParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Wireshark display filter scoping the analysis.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Rows per table (default 20, max 500).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// A group of frames with one problem.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AnomalyGroup {
    /// malformed, expert_error, tcp_flags, fragment, ttl, port_mismatch, truncated.
    pub category: String,
    /// What exactly: the protocol and message, the flag set, the fragment problem.
    pub kind: String,
    pub count: u64,
    pub first_frames: Vec<u64>,
    /// Hosts involved (sources), a sample.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PortMismatch {
    pub transport: String,
    pub stream: u64,
    pub client: String,
    pub server: String,
    /// What tshark dissected on this connection.
    pub protocol: String,
    /// What the server port is registered for.
    pub expected: String,
    pub first_frame: u64,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TtlVariation {
    pub source: String,
    /// Distinct initial-looking TTL / hop-limit values seen from this source.
    pub ttls: Vec<u64>,
    pub frames: Vec<u64>,
    pub display_filter: String,
}

#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Counts {
    pub frames_checked: u64,
    pub malformed: u64,
    /// Frames captured shorter than they were on the wire (snaplen).
    pub truncated: u64,
    pub expert_errors: u64,
    pub bad_tcp_flags: u64,
    pub ip_fragments: u64,
    pub fragment_problems: u64,
    pub ttl_expiring: u64,
    pub port_mismatches: u64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Anomalies {
    pub counts: Counts,
    pub groups: Table<AnomalyGroup>,
    pub port_mismatches: Table<PortMismatch>,
    pub ttl_variations: Table<TtlVariation>,
}

pub struct AnomalyRow {
    frame: u64,
    time: f64,
    len: u64,
    cap_len: u64,
    protocols: String,
    tcp_flags: Option<u64>,
    tcp_stream: Option<u64>,
    udp_stream: Option<u64>,
    ports: Option<(u64, u64)>,
    payload: u64,
    ttl: Option<u64>,
    src: Option<String>,
    dst: Option<String>,
    fragment: bool,
    /// Source, destination and IP ID: one datagram's fragments share it.
    datagram: Option<String>,
    /// This fragment completed its datagram (tshark lists the fragments here).
    completes: bool,
    fragment_problems: Vec<&'static str>,
    /// Error-level expert items outside the Malformed group: (group name, message).
    expert_errors: Vec<(String, String)>,
    /// Set when tshark marked the frame malformed: which protocol, or what was wrong.
    malformed: Option<String>,
}

/// Wireshark's expert group codes (epan/proto.h PI_*), by name.
fn group_name(code: u64) -> &'static str {
    match code >> 24 {
        0x01 => "Checksum",
        0x02 => "Sequence",
        0x03 => "Response code",
        0x04 => "Request code",
        0x05 => "Undecoded",
        0x06 => "Reassemble",
        0x07 => "Malformed",
        0x08 => "Debug",
        0x09 => "Protocol",
        0x0a => "Security",
        0x0b => "Comment",
        0x0c => "Decryption",
        0x0d => "Assumption",
        0x0e => "Deprecated",
        0x0f => "Receive",
        0x10 => "Interface",
        0x11 => "Dissector bug",
        _ => "Other",
    }
}

const FRAGMENT_PROBLEMS: [(usize, &str); 8] = [
    (21, "overlapping fragments"),
    (22, "overlapping fragments with different data (conflict)"),
    (23, "fragment too long for the datagram"),
    (24, "more than one last fragment"),
    (25, "fragment reassembly error"),
    (26, "overlapping fragments"),
    (27, "overlapping fragments with different data (conflict)"),
    (28, "fragment reassembly error"),
];

impl FromRow for AnomalyRow {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.time_epoch",
        "frame.len",
        "frame.cap_len",
        "frame.protocols",
        "tcp.flags",
        "tcp.stream",
        "udp.stream",
        "tcp.srcport",
        "tcp.dstport",
        "udp.srcport",
        "udp.dstport",
        "tcp.len",
        "udp.length",
        "ip.ttl",
        "ipv6.hlim",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "ip.flags.mf",
        "ip.fragment.overlap",
        "ip.fragment.overlap.conflict",
        "ip.fragment.toolongfragment",
        "ip.fragment.multipletails",
        "ip.fragment.error",
        "ipv6.fragment.overlap",
        "ipv6.fragment.overlap.conflict",
        "ipv6.fragment.error",
        "ip.frag_offset",
        "ipv6.fraghdr.offset",
        "ipv6.fraghdr.more",
        "ip.id",
        "ipv6.fraghdr.ident",
        "ip.fragment.count",
        "ipv6.fragment.count",
        "_ws.expert.severity",
        "_ws.expert.group",
        "_ws.expert.message",
        "_ws.malformed",
    ];
    fn from_row(r: &Row<'_>) -> Option<Self> {
        let ports = match (r.u64(8), r.u64(9), r.u64(10), r.u64(11)) {
            (Some(s), Some(d), _, _) | (None, None, Some(s), Some(d)) => Some((s, d)),
            _ => None,
        };
        // the outer IP header: an ICMP error quotes an inner one
        let ttl = r.u64(14).or_else(|| r.u64(15));
        let fragment = r.flag(20)
            || r.u64(29).is_some_and(|o| o > 0)
            || r.u64(30).is_some_and(|o| o > 0)
            || r.flag(31);
        let fragment_problems = FRAGMENT_PROBLEMS
            .iter()
            .filter(|(i, _)| r.str(*i).is_some_and(|s| !s.is_empty()))
            .map(|(_, k)| *k)
            .collect();
        // (severity, group, message) of each expert item, zipped as they are read
        let items: Vec<(u64, u64, &str)> = r
            .all(36)
            .filter_map(|s| s.parse().ok())
            .zip(r.all(37).filter_map(|s| s.parse().ok()).zip(r.all(38)))
            .map(|(s, (g, m))| (s, g, m))
            .collect();
        let malformed = r.str(39).filter(|s| !s.is_empty()).map(|m| {
            m.split("[Malformed Packet: ")
                .nth(1)
                .and_then(|x| x.split(']').next())
                .map(|p| format!("{p}: malformed packet"))
                .or_else(|| {
                    items
                        .iter()
                        .find(|(_, g, _)| group_name(*g) == "Malformed")
                        .map(|(_, _, m)| m.to_string())
                })
                .unwrap_or_else(|| "malformed packet".into())
        });
        let expert_errors = items
            .iter()
            .filter(|(s, g, m)| {
                *s >= 0x0080_0000
                    && group_name(*g) != "Malformed"
                    && !m.starts_with("Malformed Packet")
            })
            .map(|(_, g, m)| (group_name(*g).to_string(), m.to_string()))
            .collect();
        Some(Self {
            frame: r.u64(0)?,
            time: r.f64(1).unwrap_or(0.0),
            len: r.u64(2).unwrap_or(0),
            cap_len: r.u64(3).unwrap_or(0),
            protocols: r.owned(4).unwrap_or_default(),
            tcp_flags: r.u64(5),
            tcp_stream: r.u64(6),
            udp_stream: r.u64(7),
            ports,
            payload: r
                .u64(12)
                .or_else(|| r.u64(13).map(|l| l.saturating_sub(8)))
                .unwrap_or(0),
            ttl,
            src: r.first(16).or_else(|| r.first(17)).map(str::to_string),
            dst: r.first(18).or_else(|| r.first(19)).map(str::to_string),
            fragment,
            datagram: fragment.then(|| {
                format!(
                    "{}>{}#{}",
                    r.first(16).or_else(|| r.first(17)).unwrap_or(""),
                    r.first(18).or_else(|| r.first(19)).unwrap_or(""),
                    r.first(32).or_else(|| r.first(33)).unwrap_or("")
                )
            }),
            completes: r.str(34).is_some_and(|s| !s.is_empty())
                || r.str(35).is_some_and(|s| !s.is_empty()),
            fragment_problems,
            expert_errors,
            malformed,
        })
    }
}

/// The TCP flag sets no correct stack sends; scanners and evasion tools do.
fn bad_flags(f: u64) -> Option<&'static str> {
    let (fin, syn, rst, psh, ack, urg) = (
        f & 0x01 != 0,
        f & 0x02 != 0,
        f & 0x04 != 0,
        f & 0x08 != 0,
        f & 0x10 != 0,
        f & 0x20 != 0,
    );
    if f & 0x3f == 0 {
        Some("NULL (no flags): a stealth scan probe")
    } else if fin && psh && urg && !ack {
        Some("XMAS (FIN+PSH+URG): a stealth scan probe")
    } else if syn && fin {
        Some("SYN+FIN together: impossible, a scan or evasion probe")
    } else if syn && rst {
        Some("SYN+RST together: impossible")
    } else if fin && !ack && !syn && !rst {
        Some("FIN without ACK: a FIN scan probe")
    } else {
        None
    }
}

/// The protocol tshark dissected above the transport: the layer after tcp/udp,
/// ignoring payload and reassembly pseudo-layers.
fn app_protocol(protocols: &str) -> Option<&str> {
    let mut layers = protocols.split(':');
    layers.find(|l| *l == "tcp" || *l == "udp")?;
    layers.find(|l| {
        !matches!(
            *l,
            "tcp.segments" | "data" | "_ws.malformed" | "_ws.short" | "_ws.unreassembled"
        )
    })
}

/// What a well-known server port is registered for (by transport).
fn expected_on(transport: &str, port: u64) -> Option<&'static [&'static str]> {
    Some(match (transport, port) {
        (_, 53) => &["dns"],
        ("tcp", 80) => &["http", "websocket", "ocsp"],
        ("tcp", 443) => &["tls", "ssl"],
        ("udp", 443) => &["quic", "gquic"],
        ("tcp", 22) => &["ssh"],
        ("tcp", 21) => &["ftp"],
        ("tcp", 25) => &["smtp", "imf"],
        ("tcp", 110) => &["pop", "imf"],
        ("tcp", 143) => &["imap", "imf"],
        ("udp", 123) => &["ntp"],
        _ => return None,
    })
}

#[derive(Default, Clone)]
struct Group {
    count: u64,
    frames: Vec<u64>,
    sources: BTreeSet<String>,
}

impl Group {
    fn add(&mut self, frame: u64, src: Option<&String>) {
        self.count += 1;
        if self.frames.len() < 10 {
            self.frames.push(frame);
        }
        if let Some(s) = src
            && self.sources.len() < 5
        {
            self.sources.insert(s.clone());
        }
    }
}

/// A stream that carried payload to a port registered for a protocol. Its addresses
/// are shared with the other streams of the same hosts; endpoints are written only for
/// the streams a mismatch is reported on (the rest are dropped when the pass ends).
#[derive(Clone)]
struct StreamSeen {
    transport: &'static str,
    client: (ArcStr, u64),
    server: (ArcStr, u64),
    protocol: Option<ArcStr>,
    payload: u64,
    first_frame: u64,
}

impl StreamSeen {
    /// The protocol it carried when that is not one its server port is registered for
    /// ("undecoded": payload tshark recognised nothing in), and what the port expects.
    fn mismatch(&self) -> Option<(&str, &'static [&'static str])> {
        let expected = expected_on(self.transport, self.server.1)?;
        let proto = match self.protocol.as_deref() {
            Some(p) => p,
            None if self.payload > 0 => "undecoded",
            None => return None,
        };
        (!expected.contains(&proto)).then_some((proto, expected))
    }
}

#[tool_router(router = anomalies_router, vis = "pub(crate)")]
impl PcapServer {
    /// Protocol anomalies: malformed and truncated frames, expert errors, impossible TCP
    /// flag sets (NULL, XMAS, SYN+FIN), IP fragment problems, TTL oddities, and protocols
    /// on ports registered for another protocol.
    #[tool(
        name = "analyze_protocol_anomalies",
        annotations(
            title = "Protocol anomalies",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_protocol_anomalies(
        &self,
        Parameters(p): Parameters<AnomalyParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Anomalies>>, String> {
        self.engine
            .analyze("analyze_protocol_anomalies", p, rc, anomalies)
            .await
    }
}

/// The anomaly view's part of the index: groups of odd frames, TTLs per source,
/// fragments per datagram, and what each stream carried.
#[derive(Clone, Default)]
pub struct AnomalyState {
    span: Span,
    groups: BTreeMap<(&'static str, String), Group>,
    counts: Counts,
    streams: Keyed<(bool, u64), StreamSeen>,
    /// The streams' addresses and protocols, one copy each, while the pass runs.
    strings: crate::index::SharedStrings,
    /// (tcp?, stream) -> first frame, the server port when a SYN was seen, and whether
    /// the stream is settled: it carried the protocol its port is registered for, so
    /// it can never be a mismatch and is no longer in `streams`
    stream_starts: Keyed<(bool, u64), (u64, Option<u64>, bool)>,
    ttls: Keyed<ArcStr, Ttls>,
    datagrams: BTreeMap<String, (Vec<u64>, bool)>,
}

/// The TTLs one source showed, each with the first frame that showed it: the first
/// [`Ttls::MAX`], inline (most sources only ever show one; a list of their own per
/// source, of the 100k a big capture has, cost more than the values).
#[derive(Clone, Default)]
struct Ttls {
    ttl: [u8; Ttls::MAX],
    frame: [u32; Ttls::MAX],
    len: u8,
}

impl Ttls {
    const MAX: usize = 8;

    fn add(&mut self, ttl: u64, frame: u64) {
        // a TTL or hop limit is one byte on the wire; a frame number is 32-bit in tshark
        let (Ok(ttl), Ok(frame)) = (u8::try_from(ttl), u32::try_from(frame)) else {
            return;
        };
        let n = usize::from(self.len);
        if n < Self::MAX && !self.ttl[..n].contains(&ttl) {
            self.ttl[n] = ttl;
            self.frame[n] = frame;
            self.len += 1;
        }
    }

    fn ttls(&self) -> impl Iterator<Item = u64> + '_ {
        self.ttl[..usize::from(self.len)]
            .iter()
            .map(|&t| u64::from(t))
    }

    fn frames(&self) -> impl Iterator<Item = u64> + '_ {
        self.frame[..usize::from(self.len)]
            .iter()
            .map(|&f| u64::from(f))
    }
}

impl crate::index::Part for AnomalyState {
    type Row = AnomalyRow;
    fn new(ctx: &crate::index::Ctx) -> Self {
        Self {
            strings: ctx.strings.clone(),
            ..Self::default()
        }
    }
    fn add(&mut self, r: AnomalyRow) {
        self.span.add(Some(r.time));
        self.counts.frames_checked += 1;
        let src = r.src.as_ref();
        if let Some(kind) = &r.malformed {
            self.counts.malformed += 1;
            self.groups
                .entry(("malformed", kind.clone()))
                .or_default()
                .add(r.frame, src);
        }
        if r.cap_len < r.len {
            self.counts.truncated += 1;
            self.groups
                .entry((
                    "truncated",
                    "captured shorter than on the wire (snaplen)".into(),
                ))
                .or_default()
                .add(r.frame, src);
        }
        for (group, msg) in &r.expert_errors {
            self.counts.expert_errors += 1;
            self.groups
                .entry(("expert_error", format!("{group}: {msg}")))
                .or_default()
                .add(r.frame, src);
        }
        if let Some(kind) = r.tcp_flags.and_then(bad_flags) {
            self.counts.bad_tcp_flags += 1;
            self.groups
                .entry(("tcp_flags", kind.to_string()))
                .or_default()
                .add(r.frame, src);
        }
        if r.fragment {
            self.counts.ip_fragments += 1;
            if let Some(d) = &r.datagram {
                let e = self.datagrams.entry(d.clone()).or_default();
                if e.0.len() < 4 {
                    e.0.push(r.frame);
                }
                e.1 |= r.completes;
            }
        }
        for k in &r.fragment_problems {
            self.counts.fragment_problems += 1;
            self.groups
                .entry(("fragment", k.to_string()))
                .or_default()
                .add(r.frame, src);
        }
        if let (Some(ttl), Some(s), Some(d)) = (r.ttl, src, r.dst.as_ref()) {
            let multicast = d.starts_with("224.")
                || d.starts_with("239.")
                || d.starts_with("ff")
                || d.ends_with(".255");
            if ttl == 0 || (ttl == 1 && !multicast) {
                self.counts.ttl_expiring += 1;
                self.groups
                    .entry(("ttl", format!("TTL {ttl} on unicast traffic")))
                    .or_default()
                    .add(r.frame, src);
            }
            if !multicast && let Some(e) = self.ttls.slot_shared(s, &mut self.strings) {
                e.add(ttl, r.frame);
            }
        }
        let key = match (r.tcp_stream, r.udp_stream) {
            (Some(s), _) => Some((true, s)),
            (None, Some(s)) => Some((false, s)),
            _ => None,
        };
        if let (Some(key), Some((sp, dp)), Some(s), Some(d)) = (key, r.ports, src, r.dst.as_ref()) {
            // every stream: its first frame and, from a SYN, its server port (a few
            // bytes); the endpoints only once it carries payload, the only streams a
            // port mismatch can be found on
            if !self.stream_starts.room(&key) {
                return;
            }
            let first = self
                .stream_starts
                .or_insert_with(key, || (r.frame, None, false));
            if r.tcp_flags.is_some_and(|f| f & 0x12 == 0x02) {
                first.1.get_or_insert(dp);
            }
            let (first_frame, syn_port, settled) = *first;
            if settled || (r.payload == 0 && !self.streams.contains_key(&key)) {
                return;
            }
            // the SYN's destination, else the lower port, is the server's
            let to_server = match syn_port {
                Some(p) => dp == p,
                None => dp < sp,
            };
            let (c, sv, cp, svp) = if to_server {
                (s.as_str(), d.as_str(), sp, dp)
            } else {
                (d.as_str(), s.as_str(), dp, sp)
            };
            let transport = if key.0 { "tcp" } else { "udp" };
            // no protocol is registered for the port: no mismatch to find
            if expected_on(transport, svp).is_none() {
                return;
            }
            let strings = &mut self.strings;
            let e = self.streams.or_insert_with(key, || StreamSeen {
                transport,
                client: (strings.one(c), cp),
                server: (strings.one(sv), svp),
                protocol: None,
                payload: 0,
                first_frame,
            });
            e.payload += r.payload;
            if e.protocol.is_none()
                && r.payload > 0
                && let Some(app) = app_protocol(&r.protocols)
            {
                e.protocol = Some(strings.one(app));
                // its protocol is decided once: the one its port expects is never a
                // mismatch, and most streams are that (on the 1 GB bench mix, holding
                // every stream to the end was 20 MB of the pass's peak)
                if e.mismatch().is_none() {
                    self.streams.remove(&key);
                    self.stream_starts
                        .or_insert_with(key, || (first_frame, syn_port, true))
                        .2 = true;
                }
            }
        }
    }
    fn finish(&mut self) {
        self.streams.retain(|_, s| s.mismatch().is_some());
        self.strings.release();
        self.streams.finish();
        // builder state: every stream's first frame and server port, read only while
        // the pass runs
        self.stream_starts = Keyed::default();
        self.ttls.finish();
    }
    fn approx_bytes(&self) -> usize {
        self.streams.len() * 220
            + self.ttls.len() * 140
            + self.datagrams.len() * 120
            + self.groups.len() * 400
    }
}

pub(crate) async fn anomalies(
    mut a: Analysis,
    p: AnomalyParams,
) -> Result<Report<Anomalies>, String> {
    // (category, kind) -> frames
    // datagram -> (its fragments' frames, completed)
    let state = a.part::<AnomalyState>().await?;
    // the per-flow tables are read in place (a copy of them was the largest allocation
    // of a call on a big capture); only the small group and count tables are amended
    let AnomalyState {
        span,
        groups,
        counts,
        streams,
        ttls,
        datagrams,
        ..
    } = &*state;
    let (mut groups, mut counts, span) = (groups.clone(), counts.clone(), *span);

    // datagrams whose fragments never all arrived
    let mut incomplete: Vec<u64> = datagrams
        .values()
        .filter(|(_, done)| !done)
        .flat_map(|(f, _)| f.iter().copied())
        .collect();
    incomplete.sort_unstable();
    if !incomplete.is_empty() {
        let n = datagrams.values().filter(|(_, done)| !done).count() as u64;
        counts.fragment_problems += n;
        let g = groups
            .entry((
                "fragment",
                "datagrams never reassembled (fragments missing)".into(),
            ))
            .or_default();
        g.count = n;
        g.frames = incomplete.iter().take(10).copied().collect();
    }
    let mut mismatches: Vec<PortMismatch> = streams
        .iter()
        .filter_map(|((tcp, id), s)| {
            // payload tshark could not dissect at all ("undecoded"): TLS on port 80, a
            // tunnel, or just a connection whose start was not captured
            let (proto, expected) = s.mismatch()?;
            let field = if *tcp { "tcp.stream" } else { "udp.stream" };
            Some(PortMismatch {
                transport: s.transport.into(),
                stream: *id,
                client: endpoint(&s.client.0, Some(s.client.1)),
                server: endpoint(&s.server.0, Some(s.server.1)),
                protocol: proto.into(),
                expected: expected.join("/"),
                first_frame: s.first_frame,
                display_filter: format!("{field} == {id}"),
            })
        })
        .collect();
    mismatches.sort_by_key(|m| m.first_frame);
    counts.port_mismatches = mismatches.len() as u64;
    let mut ttl_rows: Vec<TtlVariation> = ttls
        .iter()
        .filter(|(_, v)| {
            // hosts start from 64, 128 or 255: values that cannot share an initial TTL
            let initial: BTreeSet<u64> = v
                .ttls()
                .map(|t| match t {
                    0..=64 => 64,
                    65..=128 => 128,
                    _ => 255,
                })
                .collect();
            initial.len() >= 2
        })
        .map(|(source, v)| TtlVariation {
            display_filter: host_filter(source, "src"),
            source: source.to_string(),
            ttls: v.ttls().collect(),
            frames: v.frames().collect(),
        })
        .collect();
    ttl_rows.sort_by(|a, b| a.source.cmp(&b.source));

    let mut rows: Vec<AnomalyGroup> = groups
        .into_iter()
        .map(|((category, kind), g)| AnomalyGroup {
            display_filter: match category {
                // narrowed by protocol only when its display name is also its filter
                // name (ICMP, DNS, STUN); "IPv6 Hop-by-Hop" or "T.38" are not
                "malformed" => match kind
                    .strip_suffix(": malformed packet")
                    .map(str::to_ascii_lowercase)
                    .filter(|p| p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                {
                    Some(p) => format!("_ws.malformed && {p}"),
                    None => "_ws.malformed".into(),
                },
                "truncated" => "frame.cap_len < frame.len".into(),
                "expert_error" => format!(
                    "_ws.expert.message == {}",
                    filter_string_literal(kind.split_once(": ").map_or(kind.as_str(), |x| x.1))
                ),
                "tcp_flags" => match kind.split(' ').next() {
                    Some("NULL") => "tcp.flags & 0x3f == 0".into(),
                    Some("XMAS") => {
                        "tcp.flags.fin == 1 && tcp.flags.push == 1 && tcp.flags.urg == 1".into()
                    }
                    Some("SYN+FIN") => "tcp.flags.syn == 1 && tcp.flags.fin == 1".into(),
                    Some("SYN+RST") => "tcp.flags.syn == 1 && tcp.flags.reset == 1".into(),
                    _ => "tcp.flags.fin == 1 && tcp.flags.ack == 0".into(),
                },
                "fragment" => "ip.flags.mf == 1 || ip.frag_offset > 0 || ipv6.fraghdr".into(),
                _ => "ip.ttl <= 1 || ipv6.hlim <= 1".into(),
            },
            category: category.into(),
            kind,
            count: g.count,
            first_frames: g.frames,
            sources: g.sources.into_iter().collect(),
        })
        .collect();
    let rank = |c: &str| match c {
        "tcp_flags" => 0,
        "fragment" => 1,
        "malformed" => 2,
        "expert_error" => 3,
        "ttl" => 4,
        _ => 5,
    };
    rows.sort_by(|x, y| {
        rank(&x.category)
            .cmp(&rank(&y.category))
            .then(y.count.cmp(&x.count))
    });

    let mut findings = Vec::new();
    for g in &rows {
        let (sev, why) = match g.category.as_str() {
            "tcp_flags" => (
                Severity::Medium,
                "No TCP stack sends this; port scanners (nmap -sN/-sX/-sF) and IDS-evasion tools do.",
            ),
            "fragment" if g.kind.contains("conflict") => (
                Severity::High,
                "Overlapping fragments with different data: the classic IDS-evasion trick (the receiver and the monitor see different bytes).",
            ),
            "fragment" => (
                Severity::Low,
                "Fragmentation problems: lost fragments, a path MTU mismatch, or crafted packets.",
            ),
            "malformed" if g.kind.starts_with("ICMP") => (
                Severity::Low,
                "ICMP errors quote the packet that caused them; a quote cut short reads as malformed. Worth a look only in bulk.",
            ),
            "malformed" => (
                Severity::Medium,
                "tshark could not dissect these as the protocol claims: corrupted frames, a non-standard implementation, or a different protocol on that port.",
            ),
            "expert_error" => (
                Severity::Low,
                "Wireshark's dissector flagged an error in these frames.",
            ),
            "ttl" => (
                Severity::Low,
                "Packets about to expire: a traceroute, a routing loop, or a misconfigured host.",
            ),
            _ => (
                Severity::Info,
                "The capture was taken with a snap length: payload beyond it is missing, so payload-level analysis is incomplete for these frames (a capture setting, not a network fault).",
            ),
        };
        if findings.len() >= 10 {
            break;
        }
        findings.push(Finding::new(
            sev,
            format!("{} x {}", thousands(g.count), g.kind),
            why,
            Evidence {
                frames: g.first_frames.clone(),
                endpoints: g.sources.clone(),
                display_filter: g.display_filter.clone(),
                ..Default::default()
            },
        ));
    }
    for (undecoded, sev, why) in [
        (
            false,
            Severity::Medium,
            "A well-known port carrying another protocol is how tunnels and malware slip through port-based firewalls; it is also what a misconfigured client (plain HTTP to 443) looks like.",
        ),
        (
            true,
            Severity::Low,
            "tshark recognised nothing on a well-known port: encrypted or proprietary traffic (TLS sent to port 80, a VPN or tunnel), or a connection whose start was not captured.",
        ),
    ] {
        let list: Vec<&PortMismatch> = mismatches
            .iter()
            .filter(|m| (m.protocol == "undecoded") == undecoded)
            .collect();
        let Some(m) = list.first() else {
            continue;
        };
        findings.push(Finding::new(
            sev,
            format!(
                "{} connection(s) with {} on a port registered for {} (e.g. {} -> {})",
                list.len(),
                if undecoded {
                    "undecodable payload".to_string()
                } else {
                    m.protocol.clone()
                },
                m.expected,
                m.client,
                m.server
            ),
            why,
            Evidence {
                frames: list.iter().map(|m| m.first_frame).take(10).collect(),
                streams: list.iter().map(|m| m.stream).take(10).collect(),
                endpoints: list.iter().map(|m| m.server.clone()).take(5).collect(),
                // every connection listed, not only the first
                display_filter: list
                    .iter()
                    .take(10)
                    .map(|m| m.display_filter.clone())
                    .collect::<Vec<_>>()
                    .join(" || "),
                ..Default::default()
            },
        ));
    }
    if !ttl_rows.is_empty() {
        findings.push(Finding::new(
            Severity::Low,
            format!(
                "{} source(s) seen with TTLs from different starting values (e.g. {} with {:?})",
                ttl_rows.len(),
                ttl_rows[0].source,
                ttl_rows[0].ttls
            ),
            "One address whose packets cannot share an initial TTL: several hosts behind one address (NAT, load balancer), a route change, or spoofed packets.",
            Evidence {
                frames: ttl_rows[0].frames.clone(),
                endpoints: ttl_rows.iter().map(|t| t.source.clone()).take(5).collect(),
                display_filter: ttl_rows[0].display_filter.clone(),
                ..Default::default()
            },
        ));
    }
    if let Some(w) = &a.warning {
        findings.push(Finding::new(
            Severity::Low,
            "The file ends in the middle of a packet",
            format!("tshark read what it could: {w}"),
            Evidence {
                display_filter: "frame".into(),
                ..Default::default()
            },
        ));
    }
    let problems = counts.malformed
        + counts.expert_errors
        + counts.bad_tcp_flags
        + counts.fragment_problems
        + counts.ttl_expiring
        + counts.port_mismatches;
    let summary = format!(
        "Checked {} frames of {} for malformed and truncated frames, expert errors, impossible TCP flags, fragment problems, TTL oddities and protocol/port mismatches. {}",
        thousands(counts.frames_checked),
        a.file.display_name,
        if problems == 0 && counts.truncated == 0 {
            "Nothing anomalous found.".to_string()
        } else {
            format!(
                "Found {} malformed, {} truncated (snaplen), {} expert error(s), {} bad TCP flag set(s), {} fragment problem(s) of {} fragment(s), {} expiring TTL(s), {} port mismatch(es).",
                counts.malformed,
                counts.truncated,
                counts.expert_errors,
                counts.bad_tcp_flags,
                counts.fragment_problems,
                counts.ip_fragments,
                counts.ttl_expiring,
                counts.port_mismatches
            )
        }
    );
    let limit = clamp_limit(p.limit, 20);
    let data = Anomalies {
        counts,
        groups: Table::top(rows, limit),
        port_mismatches: Table::top(mismatches, limit),
        ttl_variations: Table::top(ttl_rows, limit),
    };
    a.report(summary, findings, data, span, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_sets_no_stack_sends() {
        assert!(bad_flags(0x000).unwrap().starts_with("NULL"));
        assert!(bad_flags(0x029).unwrap().starts_with("XMAS"));
        assert!(bad_flags(0x003).unwrap().starts_with("SYN+FIN"));
        assert!(bad_flags(0x001).unwrap().starts_with("FIN without ACK"));
        assert_eq!(bad_flags(0x002), None); // SYN
        assert_eq!(bad_flags(0x012), None); // SYN-ACK
        assert_eq!(bad_flags(0x011), None); // FIN-ACK
        assert_eq!(bad_flags(0x014), None); // RST-ACK
        assert_eq!(bad_flags(0x004), None); // RST
    }

    #[test]
    fn application_layer_from_the_protocol_chain() {
        assert_eq!(app_protocol("eth:ethertype:ip:tcp:tls"), Some("tls"));
        assert_eq!(app_protocol("eth:ethertype:ip:tcp:data"), None);
        assert_eq!(
            app_protocol("eth:ethertype:ip:tcp:tcp.segments:http"),
            Some("http")
        );
        assert_eq!(app_protocol("eth:ethertype:ip:udp:dns"), Some("dns"));
        assert_eq!(app_protocol("eth:ethertype:arp"), None);
    }
}
