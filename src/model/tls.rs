//! TLS sessions (TCP, and QUIC Initial handshakes) and the certificates they carried,
//! from one tshark pass; shared by the TLS tools.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::engine::Span;
use crate::index::{Ctx, Part, col, has_protocol};
use crate::tshark::fields::{FromRow, Row};

pub struct TlsRow {
    frame: u64,
    time: f64,
    tcp_stream: Option<u64>,
    udp_stream: Option<u64>,
    src: String,
    dst: String,
    sport: u64,
    dport: u64,
    reset: bool,
    content_types: Vec<u64>,
    hs_types: Vec<u64>,
    hs_version: Option<u64>,
    supported_versions: Vec<u64>,
    ciphers: Vec<u64>,
    sni: Option<String>,
    alpn: Vec<String>,
    ja3: Option<String>,
    ja3s: Option<String>,
    session_id_len: Option<u64>,
    ext_types: Vec<u64>,
    alert_level: Option<u64>,
    alert_desc: Option<u64>,
    certs: Vec<String>,
    randoms: Vec<String>,
    /// A QUIC 1-RTT (short header) packet: application data under the handshake's keys.
    pub quic_one_rtt: bool,
    sig_algs: Vec<u64>,
    sig_alg_lens: Vec<u64>,
}

/// The ServerHello random that marks a HelloRetryRequest (RFC 8446 4.1.3):
/// SHA-256 of "HelloRetryRequest".
const HRR_RANDOM: &str = "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c";

impl FromRow for TlsRow {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.time_epoch",
        "tcp.stream",
        "udp.stream",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "tcp.srcport",
        "udp.srcport",
        "tcp.dstport",
        "udp.dstport",
        "tcp.flags.reset",
        "tls.record.content_type",
        "tls.handshake.type",
        "tls.handshake.version",
        "tls.handshake.extensions.supported_version",
        "tls.handshake.ciphersuite",
        "tls.handshake.extensions_server_name",
        "tls.handshake.extensions_alpn_str",
        "tls.handshake.ja3",
        "tls.handshake.ja3s",
        "tls.handshake.session_id_length",
        "tls.handshake.extension.type",
        "tls.alert_message.level",
        "tls.alert_message.desc",
        "tls.handshake.certificate",
        // TLS 1.3 records after the ServerHello carry their type here (always 23),
        // not in tls.record.content_type
        "tls.record.opaque_type",
        "tls.handshake.random",
        "frame.protocols",
        // 0 = a QUIC short-header (1-RTT) packet: encrypted application data
        "quic.header_form",
        // JA4: the signature algorithms, and each list's length (signature_algorithms
        // and signature_algorithms_cert print into the same field)
        "tls.handshake.sig_hash_alg",
        "tls.handshake.sig_hash_alg_len",
    ];

    fn from_row(r: &Row<'_>) -> Option<Self> {
        let nums = |i: usize| -> Vec<u64> {
            r.all(i)
                .flat_map(|s| s.split(','))
                .filter_map(|s| {
                    let s = s.trim();
                    s.strip_prefix("0x")
                        .and_then(|h| u64::from_str_radix(h, 16).ok())
                        .or_else(|| s.parse().ok())
                })
                .collect()
        };
        Some(Self {
            frame: r.u64(0)?,
            time: r.f64(1).unwrap_or(0.0),
            tcp_stream: r.u64(2),
            udp_stream: r.u64(3),
            src: r.innermost_addr(4, 5),
            dst: r.innermost_addr(6, 7),
            sport: r.u64(8).or_else(|| r.u64(9)).unwrap_or(0),
            dport: r.u64(10).or_else(|| r.u64(11)).unwrap_or(0),
            reset: r.flag(12),
            content_types: nums(13).into_iter().chain(nums(27)).collect(),
            hs_types: nums(14),
            hs_version: r.u64(15),
            supported_versions: nums(16),
            ciphers: nums(17),
            sni: r.owned(18),
            alpn: r
                .all(19)
                .flat_map(|s| s.split(','))
                .map(str::to_string)
                .collect(),
            ja3: r.owned(20),
            ja3s: r.owned(21),
            session_id_len: r.u64(22),
            ext_types: nums(23),
            alert_level: r.u64(24),
            alert_desc: r.u64(25),
            certs: r
                .all(26)
                .flat_map(|s| s.split(','))
                .map(str::to_string)
                .collect(),
            randoms: r
                .all(28)
                .flat_map(|s| s.split(','))
                .map(|s| s.replace(':', "").to_ascii_lowercase())
                .collect(),
            quic_one_rtt: r.all(30).any(|h| h == "0"),
            sig_algs: nums(31),
            sig_alg_lens: nums(32),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Alert {
    pub frame: u64,
    pub time: f64,
    pub from_server: bool,
    /// None when the alert is encrypted (only its record type is visible).
    pub level: Option<u64>,
    pub description: Option<u64>,
    pub during_handshake: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Session {
    pub key: String,
    pub stream: u64,
    pub quic: bool,
    /// Endpoint addresses/ports; index 0 is the client (ClientHello sender).
    pub addr: [String; 2],
    pub port: [u64; 2],
    pub sni: Option<String>,
    pub client_version: Option<u64>,
    /// The ClientHello's lists, GREASE removed (16-bit code points: a hello offers
    /// dozens, and a big capture has tens of thousands of sessions).
    pub offered_versions: Vec<u16>,
    pub negotiated: Option<u64>,
    pub offered_ciphers: Vec<u16>,
    /// The ClientHello's extension types in wire order, and its signature algorithms
    /// (GREASE removed from both), for JA4.
    pub client_extensions: Vec<u16>,
    pub signature_algorithms: Vec<u16>,
    pub cipher: Option<u64>,
    pub alpn_offered: Vec<String>,
    pub alpn_selected: Option<String>,
    pub ja3: Option<String>,
    pub ja3s: Option<String>,
    pub client_hello: Option<(f64, u64)>,
    pub server_hello: Option<(f64, u64)>,
    pub hello_retry: bool,
    pub client_session_id: bool,
    pub server_psk: bool,
    pub server_certificate_msg: bool,
    pub ccs: [bool; 2],
    pub app_data: [bool; 2],
    pub finished_time: Option<f64>,
    pub reset: Option<u64>,
    pub alerts: Vec<Alert>,
    /// SHA-256 fingerprints of the chain, leaf first.
    pub chain: Vec<String>,
    pub last_time: f64,
}

impl Session {
    pub fn endpoint(&self, i: usize) -> String {
        crate::report::endpoint(&self.addr[i], Some(self.port[i]))
    }

    /// The session's connection's Community ID (TCP, or UDP for QUIC).
    pub fn community_id(&self) -> Option<String> {
        crate::model::flow::community_id(
            &self.addr[0],
            &self.addr[1],
            if self.quic { 17 } else { 6 },
            u16::try_from(self.port[0]).ok(),
            u16::try_from(self.port[1]).ok(),
        )
    }

    pub fn filter(&self) -> String {
        if self.quic {
            format!("udp.stream == {}", self.stream)
        } else {
            format!("tcp.stream == {}", self.stream)
        }
    }

    /// TLS 1.2 abbreviated handshake (session id echoed, no Certificate) or TLS 1.3 PSK.
    pub fn resumed(&self) -> bool {
        self.server_psk
            || (self.server_hello.is_some()
                && self.client_session_id
                && !self.server_certificate_msg
                && self.negotiated.is_some_and(|v| v < 0x0304)
                && self.ccs[1])
    }

    /// Whether the capture saw this session's handshake start (a hello from either side);
    /// a capture that begins mid-connection shows only encrypted records.
    pub fn handshake_seen(&self) -> bool {
        self.client_hello.is_some() || self.server_hello.is_some()
    }

    /// complete, alert, reset, incomplete, or no_handshake (the capture began after it).
    pub fn outcome(&self) -> &'static str {
        if !self.handshake_seen() && !self.established() {
            return "no_handshake";
        }
        if self
            .alerts
            .iter()
            .any(|a| a.during_handshake && a.level != Some(1))
        {
            "alert"
        } else if self.established() {
            "complete"
        } else if self.reset.is_some() {
            "reset"
        } else {
            "incomplete"
        }
    }

    pub fn handshake_s(&self) -> Option<f64> {
        let (t0, _) = self.client_hello?;
        let t1 = self.finished_time.or(self.server_hello.map(|s| s.0))?;
        Some((t1 - t0).max(0.0))
    }

    /// The one definition of "handshake completed" (as Zeek's ssl.log `established`):
    /// TLS 1.2 and older, both sides sent ChangeCipherSpec; TLS 1.3 and QUIC, after the
    /// ServerHello the client sent an encrypted record (its Finished, or data; for QUIC
    /// a 1-RTT packet), or, with a compatibility ChangeCipherSpec from the client, the
    /// server did. (Zeek's ssl.log never marks QUIC established: its TLS analyzer does
    /// not see the encrypted Finished; its quic.log history shows the 1-RTT packets.)
    pub fn established(&self) -> bool {
        match self.negotiated {
            Some(v) if v >= 0x0304 || self.quic => {
                self.server_hello.is_some() && (self.app_data[0] || self.ccs[0] && self.app_data[1])
            }
            Some(_) => self.ccs[0] && self.ccs[1],
            None => false,
        }
    }

    fn add(&mut self, p: &TlsRow, certs: &mut BTreeMap<String, Certificate>) {
        let from_client = p.src == self.addr[0] && p.sport == self.port[0];
        let d = if from_client { 0 } else { 1 };
        self.last_time = p.time;
        if p.reset && self.reset.is_none() && !self.established() {
            self.reset = Some(p.frame);
        }
        // QUIC has no TLS records after the handshake: a 1-RTT packet is its
        // encrypted application data
        if self.quic && p.quic_one_rtt && self.server_hello.is_some() {
            self.app_data[d] = true;
        }
        for t in &p.hs_types {
            match *t {
                1 if self.client_hello.is_none() => {
                    self.client_hello = Some((p.time, p.frame));
                    self.sni = p.sni.clone();
                    self.client_version = p.hs_version;
                    self.offered_versions = code_points(&p.supported_versions);
                    self.offered_ciphers = code_points(&p.ciphers);
                    self.alpn_offered = p.alpn.clone();
                    self.client_extensions = code_points(&p.ext_types);
                    self.signature_algorithms = code_points(&signature_algorithms(p));
                    self.ja3 = p.ja3.clone();
                    self.client_session_id = p.session_id_len.unwrap_or(0) > 0;
                }
                2 => {
                    let selected = p.supported_versions.first().copied().or(p.hs_version);
                    // a HelloRetryRequest is a ServerHello with a fixed random; a second
                    // ServerHello is the real one after it
                    if self.server_hello.is_some() || p.randoms.iter().any(|r| r == HRR_RANDOM) {
                        self.hello_retry = true;
                    }
                    self.server_hello = Some((p.time, p.frame));
                    self.negotiated = selected;
                    self.cipher = p.ciphers.first().copied();
                    self.alpn_selected = p.alpn.first().cloned();
                    self.ja3s = p.ja3s.clone();
                    self.server_psk = p.ext_types.contains(&41);
                }
                11 if d == 1 => {
                    self.server_certificate_msg = true;
                    if self.chain.is_empty() {
                        for hex in &p.certs {
                            let der = decode_hex(hex);
                            if der.is_empty() {
                                continue;
                            }
                            let fp = hex_lower(&Sha256::digest(&der));
                            let pos = self.chain.len();
                            let c = certs.entry(fp.clone()).or_insert_with(|| Certificate {
                                der,
                                first_frame: p.frame,
                                first_time: p.time,
                                ..Default::default()
                            });
                            if !c.positions.contains(&pos) {
                                c.positions.push(pos);
                            }
                            if let Some(s) = &self.sni
                                && c.seen_snis.insert(s.clone())
                            {
                                c.snis.push(s.clone());
                            }
                            let server = self.endpoint(1);
                            if c.seen_servers.insert(server.clone()) {
                                c.servers.push(server);
                            }
                            self.chain.push(fp);
                        }
                    }
                }
                20 => self.finished_time = Some(p.time),
                _ => {}
            }
        }
        for ct in &p.content_types {
            match *ct {
                20 => {
                    self.ccs[d] = true;
                    if self.finished_time.is_none() && d == 0 && self.ccs[1] {
                        self.finished_time = Some(p.time);
                    }
                }
                23 => self.app_data[d] = true,
                21 => {
                    // an alert is part of a handshake only if the capture saw one start
                    let during = !self.established() && self.handshake_seen();
                    self.alerts.push(Alert {
                        frame: p.frame,
                        time: p.time,
                        from_server: d == 1,
                        level: p.alert_level,
                        description: p.alert_desc,
                        during_handshake: during,
                    });
                }
                _ => {}
            }
        }
    }
}

/// A certificate seen in the capture, once per SHA-256 fingerprint.
#[derive(Debug, Clone, Default)]
pub struct Certificate {
    pub der: Vec<u8>,
    pub first_frame: u64,
    /// When it was first presented: validity is judged at that moment, not at the
    /// start of the capture (a merged or long capture spans years).
    pub first_time: f64,
    /// Positions in the chains it appeared in (0 = leaf), each once.
    pub positions: Vec<usize>,
    /// Every server (`addr:port`) and SNI that presented it, distinct, in order of first
    /// presentation: one certificate can front thousands of servers.
    pub servers: Vec<String>,
    pub snis: Vec<String>,
    /// What `servers` and `snis` hold, while the pass runs: a list scan per session
    /// was quadratic in the servers sharing one certificate. Emptied by `finish`.
    seen_servers: crate::index::FastSet<String>,
    seen_snis: crate::index::FastSet<String>,
}

fn is_grease(v: u64) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

/// A hello's list of 16-bit code points without GREASE.
fn code_points(list: &[u64]) -> Vec<u16> {
    list.iter()
        .copied()
        .filter(|v| !is_grease(*v))
        .filter_map(|v| u16::try_from(v).ok())
        .collect()
}

fn decode_hex(s: &str) -> Vec<u8> {
    let clean: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..clean.len() / 2)
        .filter_map(|i| u8::from_str_radix(&clean[2 * i..2 * i + 2], 16).ok())
        .collect()
}

pub fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Debug, Default)]
pub struct TlsModel {
    pub sessions: Vec<Session>,
    pub certificates: BTreeMap<String, Certificate>,
    pub span: Span,
    /// sessions by key while the pass runs; `finish` moves them into `sessions`
    building: BTreeMap<String, Session>,
    order: Vec<String>,
}

impl TlsModel {
    /// Sessions inline plus a generous allowance per certificate (DER, names, SANs).
    pub fn approx_bytes(&self) -> usize {
        self.sessions.capacity() * (std::mem::size_of::<Session>() + 256)
            + self.certificates.len() * 4096
    }
}

impl Part for TlsModel {
    type Row = TlsRow;

    fn new(_: &Ctx) -> Self {
        Self::default()
    }

    /// What the family's tshark filter was: `tls || tcp.flags.reset == 1`, and QUIC's
    /// 1-RTT packets, which say a QUIC handshake's keys are in use.
    fn wants(r: &Row<'_>) -> bool {
        const PROTOCOLS: usize = col(TlsRow::FIELDS, "frame.protocols");
        const RESET: usize = col(TlsRow::FIELDS, "tcp.flags.reset");
        const QUIC_FORM: usize = col(TlsRow::FIELDS, "quic.header_form");
        has_protocol(r, PROTOCOLS, "tls") || r.flag(RESET) || r.all(QUIC_FORM).any(|h| h == "0")
    }

    fn add(&mut self, p: TlsRow) {
        self.span.add(Some(p.time));
        let (key, stream, quic) = match (p.tcp_stream, p.udp_stream) {
            (Some(s), _) => (format!("tcp:{s}"), s, false),
            (None, Some(s)) => (format!("udp:{s}"), s, true),
            _ => return,
        };
        let is_tls = !p.content_types.is_empty() || !p.hs_types.is_empty();
        if !self.building.contains_key(&key) {
            if !is_tls {
                return; // a reset on a stream with no TLS seen
            }
            // the client is the ClientHello sender; without one, whoever talks to the lower port
            let client_first =
                p.hs_types.contains(&1) || (!p.hs_types.contains(&2) && p.sport > p.dport);
            let (a0, a1, p0, p1) = if client_first {
                (p.src.clone(), p.dst.clone(), p.sport, p.dport)
            } else {
                (p.dst.clone(), p.src.clone(), p.dport, p.sport)
            };
            self.order.push(key.clone());
            self.building.insert(
                key.clone(),
                Session {
                    key: key.clone(),
                    stream,
                    quic,
                    addr: [a0, a1],
                    port: [p0, p1],
                    ..Default::default()
                },
            );
        }
        let s = self.building.get_mut(&key).expect("inserted above");
        s.add(&p, &mut self.certificates);
    }

    fn finish(&mut self) {
        for c in self.certificates.values_mut() {
            c.seen_servers = Default::default();
            c.seen_snis = Default::default();
        }
        let mut building = std::mem::take(&mut self.building);
        self.sessions = std::mem::take(&mut self.order)
            .into_iter()
            .filter_map(|k| building.remove(&k))
            .collect();
    }

    fn approx_bytes(&self) -> usize {
        TlsModel::approx_bytes(self)
    }
}

/// The ClientHello's signature_algorithms (extension 13) list: tshark prints it and
/// signature_algorithms_cert (50) into one field, so the lists are cut by their
/// lengths and taken in the order their extensions came.
fn signature_algorithms(p: &TlsRow) -> Vec<u64> {
    let order: Vec<u64> = p
        .ext_types
        .iter()
        .copied()
        .filter(|t| *t == 13 || *t == 50)
        .collect();
    let Some(pos) = order.iter().position(|t| *t == 13) else {
        return Vec::new();
    };
    if p.sig_alg_lens.len() < order.len() {
        // one list only, or lengths missing: all of it is extension 13's
        return p.sig_algs.clone();
    }
    let start: u64 = p.sig_alg_lens[..pos].iter().map(|l| l / 2).sum();
    let count = p.sig_alg_lens[pos] / 2;
    p.sig_algs
        .iter()
        .copied()
        .skip(start as usize)
        .take(count as usize)
        .collect()
}

/// JA4 of a ClientHello (FoxIO's JA4, the BSD-licensed client method; JA4S and the
/// rest of JA4+ are under another licence and left out): `a_b_c` where a is the
/// transport (t TCP, q QUIC), highest offered version, SNI present (d) or not (i),
/// cipher and extension counts, and the first ALPN value's first and last character;
/// b the first 12 hex of SHA-256 over the sorted ciphers; c over the sorted
/// extensions without SNI and ALPN, then the signature algorithms in wire order.
pub fn ja4(s: &Session) -> Option<String> {
    use sha2::{Digest, Sha256};
    s.client_hello?;
    let version = s
        .offered_versions
        .iter()
        .copied()
        .max()
        .map(u64::from)
        .or(s.client_version)
        .unwrap_or(0);
    let v = match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    };
    let sni = if s.sni.is_some() { 'd' } else { 'i' };
    let alpn = match s.alpn_offered.first().map(|a| a.as_bytes()) {
        Some([first, .., last]) | Some([first @ last]) => {
            let end = |b: u8| match b {
                0x20..=0x7e => Some(b as char),
                0x80.. => Some('9'),
                _ => None,
            };
            match (end(*first), end(*last)) {
                (Some(a), Some(b)) => format!("{a}{b}"),
                _ => "99".into(),
            }
        }
        _ => "00".into(),
    };
    let hash12 = |text: &str| {
        let d = Sha256::digest(text.as_bytes());
        d.iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let hex = |v: &[u16]| {
        v.iter()
            .map(|x| format!("{x:04x}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut ciphers = s.offered_ciphers.clone();
    ciphers.sort_unstable();
    let b = if ciphers.is_empty() {
        "000000000000".to_string()
    } else {
        hash12(&hex(&ciphers))
    };
    let mut exts: Vec<u16> = s
        .client_extensions
        .iter()
        .copied()
        .filter(|e| *e != 0x0000 && *e != 0x0010)
        .collect();
    exts.sort_unstable();
    let mut c_text = hex(&exts);
    if !s.signature_algorithms.is_empty() {
        c_text = format!("{c_text}_{}", hex(&s.signature_algorithms));
    }
    let c = if c_text.is_empty() {
        "000000000000".to_string()
    } else {
        hash12(&c_text)
    };
    Some(format!(
        "{}{v}{sni}{:02}{:02}{alpn}_{b}_{c}",
        if s.quic { 'q' } else { 't' },
        s.offered_ciphers.len().min(99),
        s.client_extensions.len().min(99)
    ))
}

pub fn version_name(v: u64) -> String {
    match v {
        0x0304 => "TLS 1.3".into(),
        0x0303 => "TLS 1.2".into(),
        0x0302 => "TLS 1.1".into(),
        0x0301 => "TLS 1.0".into(),
        0x0300 => "SSL 3.0".into(),
        0x0002 => "SSL 2.0".into(),
        v if v >> 8 == 0x7f => format!("TLS 1.3 draft-{}", v & 0xff),
        v => format!("0x{v:04x}"),
    }
}
