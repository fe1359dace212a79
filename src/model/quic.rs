//! QUIC connections as the capture saw them: version, connection IDs, packets by kind
//! and direction, bytes, with Zeek's quic.log history letters. A part of the capture
//! index, read by the QUIC tool; whether the handshake completed is the TLS model's
//! one definition (`model::tls::Session::established`).

use std::collections::BTreeMap;

use crate::engine::Span;
use crate::index::{Ctx, Part, col, has_protocol};
use crate::tshark::fields::{FromRow, Row};

/// Connections kept with their detail.
const MAX_CONNECTIONS: usize = 50_000;
/// History letters kept per connection (Zeek's quic.log caps it too).
const MAX_HISTORY: usize = 64;

#[derive(Debug, Clone)]
pub struct QuicRow {
    frame: u64,
    time: f64,
    stream: Option<u64>,
    src: String,
    sport: u64,
    dst: String,
    dport: u64,
    len: u64,
    /// (long header?, long packet type) of each coalesced packet.
    packets: Vec<(bool, Option<u64>)>,
    version: Option<u64>,
    dcid: Option<String>,
    scid: Option<String>,
    hs_types: Vec<u64>,
    sni: Option<String>,
    alpn: Vec<String>,
    /// CONNECTION_CLOSE in a packet tshark could read (Initial/Handshake).
    close: bool,
}

impl QuicRow {
    const PROTOCOLS: usize = col(Self::FIELDS, "frame.protocols");
}

impl FromRow for QuicRow {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.time_epoch",
        "udp.stream",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "udp.srcport",
        "udp.dstport",
        "frame.len",
        "quic.header_form",
        "quic.long.packet_type",
        "quic.version",
        "quic.dcid",
        "quic.scid",
        "tls.handshake.type",
        "tls.handshake.extensions_server_name",
        "tls.handshake.extensions_alpn_str",
        "quic.frame_type",
        "frame.protocols",
    ];

    fn from_row(r: &Row<'_>) -> Option<Self> {
        let forms: Vec<&str> = r.all(10).collect();
        let mut types = r.all(11);
        // long-header packets carry a type, short ones none: pair them in order
        let packets = forms
            .iter()
            .map(|f| {
                let long = *f == "1";
                (
                    long,
                    if long {
                        types.next().and_then(|t| t.parse().ok())
                    } else {
                        None
                    },
                )
            })
            .collect();
        let hex = |s: &str| {
            s.strip_prefix("0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .or_else(|| s.parse().ok())
        };
        Some(Self {
            frame: r.u64(0)?,
            time: r.f64(1).unwrap_or(0.0),
            stream: r.u64(2),
            src: r.innermost_addr(3, 4),
            sport: r.u64(7).unwrap_or(0),
            dst: r.innermost_addr(5, 6),
            dport: r.u64(8).unwrap_or(0),
            len: r.u64(9).unwrap_or(0),
            packets,
            version: r.first(12).and_then(hex),
            dcid: r.owned(13),
            scid: r.owned(14),
            hs_types: r.all(15).filter_map(|s| s.parse().ok()).collect(),
            sni: r.owned(16),
            alpn: r
                .all(17)
                .flat_map(|s| s.split(','))
                .map(str::to_string)
                .collect(),
            close: r.all(18).any(|t| matches!(hex(t), Some(0x1c | 0x1d))),
        })
    }
}

/// One QUIC connection (a UDP stream carrying QUIC).
#[derive(Debug, Clone, Default)]
pub struct QuicConn {
    pub stream: u64,
    /// [client, server] address and port: the client sent the first Initial.
    pub addr: [String; 2],
    pub port: [u64; 2],
    /// The version of the client's first long-header packet (1 = QUIC v1).
    pub version: Option<u64>,
    /// The server answered with Version Negotiation (version 0).
    pub version_negotiation: bool,
    pub client_initial_dcid: Option<String>,
    pub client_scid: Option<String>,
    pub server_scid: Option<String>,
    pub sni: Option<String>,
    pub alpn_offered: Vec<String>,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// Per side: Initial, 0-RTT, Handshake, Retry, 1-RTT packets.
    pub initial: [u64; 2],
    pub zero_rtt: [u64; 2],
    pub handshake: [u64; 2],
    pub retry: u64,
    pub one_rtt: [u64; 2],
    pub connection_close: bool,
    pub first: f64,
    pub last: f64,
    pub first_frame: u64,
    /// Zeek quic.log's letters, client upper case: I initial, Z 0-RTT, H handshake,
    /// R retry, O 1-RTT, S client hello, C connection close (first of each run).
    pub history: String,
}

impl QuicConn {
    /// The connection's Community ID (UDP), as `Stream` and `Session` give theirs.
    pub fn community_id(&self) -> Option<String> {
        crate::model::flow::community_id(
            &self.addr[0],
            &self.addr[1],
            17,
            u16::try_from(self.port[0]).ok(),
            u16::try_from(self.port[1]).ok(),
        )
    }

    fn add(&mut self, p: &QuicRow) {
        let d = usize::from(!(p.src == self.addr[0] && p.sport == self.port[0]));
        self.packets[d] += 1;
        self.bytes[d] += p.len;
        self.last = self.last.max(p.time);
        let mark = |c: char, hist: &mut String| {
            let c = if d == 0 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            if hist.len() < MAX_HISTORY && !hist.ends_with(c) {
                hist.push(c);
            }
        };
        for &(long, ty) in &p.packets {
            let letter = match (long, ty) {
                (false, _) => {
                    self.one_rtt[d] += 1;
                    'O'
                }
                (true, Some(0)) => {
                    self.initial[d] += 1;
                    'I'
                }
                (true, Some(1)) => {
                    self.zero_rtt[d] += 1;
                    'Z'
                }
                (true, Some(2)) => {
                    self.handshake[d] += 1;
                    'H'
                }
                (true, Some(3)) => {
                    self.retry += 1;
                    'R'
                }
                _ => continue,
            };
            mark(letter, &mut self.history);
        }
        if p.hs_types.contains(&1) {
            mark('S', &mut self.history);
            self.sni = self.sni.take().or_else(|| p.sni.clone());
            if self.alpn_offered.is_empty() {
                self.alpn_offered = p.alpn.clone();
            }
        }
        if p.close {
            self.connection_close = true;
            mark('C', &mut self.history);
        }
        match (d, p.version) {
            (1, Some(0)) => self.version_negotiation = true,
            (0, Some(v)) if v != 0 => {
                self.version.get_or_insert(v);
            }
            _ => {}
        }
        let long = p.packets.first().is_some_and(|x| x.0);
        if long && d == 0 && self.client_initial_dcid.is_none() {
            self.client_initial_dcid = p.dcid.clone();
            self.client_scid = p.scid.clone();
        }
        if long && d == 1 && self.server_scid.is_none() {
            self.server_scid = p.scid.clone();
        }
    }
}

/// Every QUIC connection of one scope, in order of first packet.
#[derive(Debug, Default)]
pub struct QuicModel {
    pub connections: Vec<QuicConn>,
    pub span: Span,
    by_stream: BTreeMap<u64, usize>,
}

impl Part for QuicModel {
    type Row = QuicRow;
    fn new(_: &Ctx) -> Self {
        Self::default()
    }
    fn wants(r: &Row<'_>) -> bool {
        has_protocol(r, QuicRow::PROTOCOLS, "quic")
    }
    fn add(&mut self, p: QuicRow) {
        self.span.add(Some(p.time));
        let Some(stream) = p.stream else { return };
        let i = match self.by_stream.get(&stream) {
            Some(&i) => i,
            None if self.connections.len() < MAX_CONNECTIONS => {
                // the client sends the first Initial; a capture that starts mid-way
                // takes the side on the higher port for the client
                let initial = p.packets.first() == Some(&(true, Some(0)));
                let client_first = if initial {
                    p.hs_types.contains(&1) || p.dport == 443 || p.sport > p.dport
                } else {
                    p.sport > p.dport
                };
                let (a, b) = if client_first {
                    ((p.src.clone(), p.sport), (p.dst.clone(), p.dport))
                } else {
                    ((p.dst.clone(), p.dport), (p.src.clone(), p.sport))
                };
                self.connections.push(QuicConn {
                    stream,
                    addr: [a.0, b.0],
                    port: [a.1, b.1],
                    first: p.time,
                    last: p.time,
                    first_frame: p.frame,
                    ..Default::default()
                });
                self.by_stream.insert(stream, self.connections.len() - 1);
                self.connections.len() - 1
            }
            None => return,
        };
        self.connections[i].add(&p);
    }
    fn finish(&mut self) {
        self.by_stream = BTreeMap::new();
    }
    fn approx_bytes(&self) -> usize {
        self.connections.capacity() * (std::mem::size_of::<QuicConn>() + 200)
    }
}
