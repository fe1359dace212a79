//! Flow records in Zeek's log formats (conn.log, dns.log, http.log, ssl.log): the
//! capture index's connections and transactions written with Zeek's field names and
//! semantics, so they load into the tools built for Zeek logs (DuckDB, Spark,
//! Arkime/OpenSearch, zeek-cut) and can be compared with a Zeek sensor's.
//!
//! Field semantics, where they are not plain (Zeek's own documentation of each log):
//! - `uid` is derived from the connection's first frame, so the same capture gives the
//!   same uids; dns/http/ssl rows carry the uid of the connection they rode on.
//! - conn `orig_bytes`/`resp_bytes`: TCP, the sequence space each side's data covered
//!   (resent bytes once, bytes the capture missed included; those are `missed_bytes`);
//!   UDP/ICMP, the transport payload. `duration` and the two byte counts are left
//!   unset for a connection of one instant, as Zeek does; a TCP connection's clock
//!   stops once both sides have closed (the final ACKs are counted, not timed).
//! - conn `service`: the application protocol tshark dissected, by Zeek's name for it
//!   (`crate::model::conn::zeek_service`); for TCP only when the handshake was seen, as
//!   Zeek's analyzers need the connection's start.
//! - `local_orig`/`local_resp` depend on a site's `Site::local_nets` and are not
//!   written; neither are `tunnel_parents` nor the files framework's fuids.

use std::collections::HashMap;

use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::index::owned;
use crate::model::conn::{Flow, FlowKey, Flows, FtpDataChannel, flow_key};
use crate::model::dns::{DnsRow, qtype_name, rcode_name};
use crate::model::http::HttpRow;
use crate::model::tcp::{Stream, TcpModel};
use crate::model::tls::{Session, TlsModel};

/// A Zeek-style connection uid: `C` and 16 base-62 digits of a hash of what makes the
/// connection unique in this capture (its first frame).
fn uid(first_frame: u64) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let h = Sha1::digest(first_frame.to_be_bytes());
    let mut n = u128::from_be_bytes(h[..16].try_into().expect("16 bytes"));
    let mut s = String::from("C");
    for _ in 0..16 {
        s.push(DIGITS[(n % 62) as usize] as char);
        n /= 62;
    }
    s
}

/// Seconds rounded to Zeek's microseconds.
fn micros(t: f64) -> f64 {
    (t * 1e6).round() / 1e6
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        1 | 58 => "icmp",
        _ => "unknown_transport",
    }
}

/// One conn.log row.
#[derive(Debug, Clone, Serialize)]
pub struct ConnRecord {
    pub ts: f64,
    #[serde(flatten)]
    pub id: ConnId,
    pub proto: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orig_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resp_bytes: Option<u64>,
    pub conn_state: &'static str,
    pub missed_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
    pub orig_pkts: u64,
    pub orig_ip_bytes: u64,
    pub resp_pkts: u64,
    pub resp_ip_bytes: u64,
    pub ip_proto: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    /// The connection's first frame (not a Zeek field: the way back to the packets).
    #[serde(skip)]
    pub first_frame: u64,
}

/// Duration and the two byte counts, unset for a connection of one instant.
fn timed(first: f64, last: f64, bytes: [u64; 2]) -> (Option<f64>, Option<u64>, Option<u64>) {
    if last > first {
        (Some(micros(last - first)), Some(bytes[0]), Some(bytes[1]))
    } else {
        (None, None, None)
    }
}

fn tcp_record(s: &Stream) -> ConnRecord {
    let first_frame = s.first_frame();
    let (duration, orig_bytes, resp_bytes) = timed(
        s.first,
        s.open_until,
        [s.sequence_bytes(0), s.sequence_bytes(1)],
    );
    let handshake_seen = s.syn.iter().chain(&s.synack).any(|b| *b);
    ConnRecord {
        ts: s.first,
        id: ConnId {
            uid: uid(first_frame),
            orig_h: s.addr[0].to_string(),
            orig_p: s.port()[0] as u16,
            resp_h: s.addr[1].to_string(),
            resp_p: s.port()[1] as u16,
        },
        proto: "tcp",
        service: s.service.filter(|_| handshake_seen),
        duration,
        orig_bytes,
        resp_bytes,
        conn_state: s.conn_state(),
        missed_bytes: s.missed_bytes(),
        history: Some(s.history()).filter(|h| !h.is_empty()),
        orig_pkts: s.packets()[0],
        orig_ip_bytes: s.ip_bytes[0],
        resp_pkts: s.packets()[1],
        resp_ip_bytes: s.ip_bytes[1],
        ip_proto: 6,
        community_id: s.community_id(),
        first_frame,
    }
}

fn flow_record(f: &Flow) -> ConnRecord {
    let (duration, orig_bytes, resp_bytes) = timed(f.first, f.last, f.bytes);
    ConnRecord {
        ts: f.first,
        id: ConnId {
            uid: uid(f.first_frame),
            orig_h: f.addr[0].to_string(),
            orig_p: f.port[0],
            resp_h: f.addr[1].to_string(),
            resp_p: f.port[1],
        },
        proto: proto_name(f.proto),
        service: f.service,
        duration,
        orig_bytes,
        resp_bytes,
        conn_state: f.conn_state(),
        missed_bytes: 0,
        history: f.history(),
        orig_pkts: f.packets[0],
        orig_ip_bytes: f.ip_bytes[0],
        resp_pkts: f.packets[1],
        resp_ip_bytes: f.ip_bytes[1],
        ip_proto: f.proto,
        community_id: f.community_id(),
        first_frame: f.first_frame,
    }
}

/// Where a transaction's connection is found: TCP by tshark's stream number, every
/// protocol by its address/port pair and time (a pair can carry several connections
/// one after another).
pub struct Connections {
    pub records: Vec<ConnRecord>,
    by_stream: HashMap<u64, usize>,
    by_pair: HashMap<FlowKey, Vec<(f64, f64, usize)>>,
}

impl Connections {
    /// Every connection of the scope, TCP and the rest, in order of their start.
    /// `ftp_data`: the data channels FTP control connections announced.
    pub fn build(tcp: &TcpModel, flows: &Flows, ftp_data: &[FtpDataChannel]) -> Self {
        // each announced endpoint with its first announcement, looked up once per stream
        let mut announced_at: HashMap<(&str, u16), u64> = HashMap::new();
        for c in ftp_data {
            let at = announced_at
                .entry((c.addr.as_str(), c.port))
                .or_insert(c.frame);
            *at = (*at).min(c.frame);
        }
        let mut records: Vec<(ConnRecord, Option<u64>, f64)> = tcp
            .streams
            .iter()
            .map(|s| {
                let mut r = tcp_record(s);
                let announced = announced_at
                    .get(&(r.id.resp_h.as_str(), r.id.resp_p))
                    .is_some_and(|&f| f < s.first_frame());
                if announced && r.service.is_none() {
                    r.service = Some("ftp-data");
                }
                (r, Some(s.id), s.last)
            })
            .chain(flows.flows.iter().map(|f| (flow_record(f), None, f.last)))
            .collect();
        records.sort_by(|a, b| {
            a.0.ts
                .total_cmp(&b.0.ts)
                .then(a.0.first_frame.cmp(&b.0.first_frame))
        });
        let mut by_stream = HashMap::new();
        let mut by_pair: HashMap<_, Vec<_>> = HashMap::new();
        for (i, (r, stream, last)) in records.iter().enumerate() {
            if let Some(s) = stream {
                by_stream.insert(*s, i);
            }
            if let (Ok(a), Ok(b)) = (r.id.orig_h.parse(), r.id.resp_h.parse()) {
                by_pair
                    .entry(flow_key(r.ip_proto, a, r.id.orig_p, b, r.id.resp_p))
                    .or_default()
                    .push((r.ts, *last, i));
            }
        }
        Self {
            records: records.into_iter().map(|r| r.0).collect(),
            by_stream,
            by_pair,
        }
    }

    fn by_stream(&self, stream: u64) -> Option<&ConnRecord> {
        self.by_stream.get(&stream).map(|&i| &self.records[i])
    }

    /// The connection of a packet `src:sport -> dst:dport` over `proto` at `t`.
    fn by_packet(
        &self,
        proto: u8,
        src: &str,
        sport: u16,
        dst: &str,
        dport: u16,
        t: f64,
    ) -> Option<&ConnRecord> {
        let (a, b) = (src.parse().ok()?, dst.parse().ok()?);
        let list = self.by_pair.get(&flow_key(proto, a, sport, b, dport))?;
        list.iter()
            .find(|(first, last, _)| t >= *first && t <= *last)
            .or(list.last())
            .map(|&(_, _, i)| &self.records[i])
    }
}

/// The id fields every log but conn.log shares.
#[derive(Debug, Clone, Serialize)]
pub struct ConnId {
    pub uid: String,
    #[serde(rename = "id.orig_h")]
    pub orig_h: String,
    #[serde(rename = "id.orig_p")]
    pub orig_p: u16,
    #[serde(rename = "id.resp_h")]
    pub resp_h: String,
    #[serde(rename = "id.resp_p")]
    pub resp_p: u16,
}

/// One dns.log row: a query and its response, or a message whose other half the
/// capture lacks.
#[derive(Debug, Clone, Serialize)]
pub struct DnsRecord {
    pub ts: f64,
    #[serde(flatten)]
    pub id: ConnId,
    pub proto: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trans_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qclass: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qclass_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qtype: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qtype_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode_name: Option<String>,
    #[serde(rename = "AA")]
    pub aa: bool,
    #[serde(rename = "TC")]
    pub tc: bool,
    #[serde(rename = "RD")]
    pub rd: bool,
    #[serde(rename = "RA")]
    pub ra: bool,
    #[serde(rename = "Z")]
    pub z: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<Vec<String>>,
    #[serde(rename = "TTLs", skip_serializing_if = "Option::is_none")]
    pub ttls: Option<Vec<f64>>,
    pub rejected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opcode: Option<u64>,
}

fn class_name(c: u64) -> Option<&'static str> {
    Some(match c {
        1 => "C_INTERNET",
        3 => "C_CHAOS",
        4 => "C_HESIOD",
        254 => "C_NONE",
        255 => "C_ANY",
        _ => return None,
    })
}

fn dns_record(conns: &Connections, q: Option<&DnsRow>, r: Option<&DnsRow>) -> Option<DnsRecord> {
    let first = q.or(r)?;
    let proto = if first.tcp { 6 } else { 17 };
    let conn = conns.by_packet(
        proto,
        &first.src,
        first.sport.unwrap_or(0),
        &first.dst,
        first.dport.unwrap_or(0),
        first.time,
    )?;
    Some(DnsRecord {
        ts: first.time,
        id: conn.id.clone(),
        proto: proto_name(proto),
        trans_id: first.trans_id.map(u64::from),
        rtt: q.zip(r).map(|(q, r)| micros(r.time - q.time)),
        query: owned(&first.name),
        qclass: first.qclass.map(u64::from),
        qclass_name: first.qclass.map(u64::from).and_then(class_name),
        qtype: first.qtype.map(u64::from),
        qtype_name: first.qtype.map(qtype_name),
        rcode: r.and_then(|r| r.rcode).map(u64::from),
        rcode_name: r.and_then(|r| r.rcode).map(rcode_name),
        aa: r.is_some_and(|r| r.aa),
        tc: r.is_some_and(|r| r.truncated),
        rd: first.rd,
        ra: r.is_some_and(|r| r.ra),
        z: 0,
        answers: r
            .map(|r| r.answers().map(str::to_string).collect::<Vec<_>>())
            .filter(|a| !a.is_empty()),
        ttls: r
            .map(|r| r.ttls.iter().map(|t| *t as f64).collect::<Vec<_>>())
            .filter(|t| !t.is_empty()),
        rejected: r.and_then(|r| r.rcode) == Some(5),
        opcode: first.opcode.map(u64::from),
    })
}

/// dns.log: each query with the response tshark paired to it (`dns.response_to`);
/// queries never answered and responses to queries the capture lacks on their own.
pub fn dns_records(conns: &Connections, rows: &[DnsRow]) -> Vec<DnsRecord> {
    let responses: HashMap<u64, &DnsRow> = rows
        .iter()
        .filter(|r| r.response)
        .filter_map(|r| r.response_to().map(|q| (q, r)))
        .collect();
    let queries: std::collections::HashSet<u64> = rows
        .iter()
        .filter(|r| !r.response)
        .map(|r| r.frame())
        .collect();
    rows.iter()
        .filter_map(|m| {
            if !m.response {
                dns_record(conns, Some(m), responses.get(&m.frame()).copied())
            } else if m.response_to().is_none_or(|q| !queries.contains(&q)) {
                dns_record(conns, None, Some(m))
            } else {
                None
            }
        })
        .collect()
}

/// One http.log row: a request and its final response (an interim 1xx goes in
/// `info_code`).
#[derive(Debug, Clone, Serialize)]
pub struct HttpRecord {
    pub ts: f64,
    #[serde(flatten)]
    pub id: ConnId,
    pub trans_depth: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub request_body_len: u64,
    pub response_body_len: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info_code: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info_msg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resp_mime_types: Option<Vec<String>>,
}

fn body_len(m: &HttpRow) -> u64 {
    m.content_length.or(m.chunked_bytes()).unwrap_or(0)
}

/// http.log: each request once, with the responses tshark paired to it; a response
/// to a request tshark could not parse is a row of its own, as in Zeek's log.
pub fn http_records(conns: &Connections, rows: &[HttpRow]) -> Vec<HttpRecord> {
    let interim = |m: &HttpRow| m.code.is_some_and(crate::model::http::is_interim);
    let messages = crate::model::http::distinct_messages(rows);
    let mut answers: HashMap<u64, Vec<&HttpRow>> = HashMap::new();
    // a 100 Continue answers a request whose body has not been sent yet: tshark
    // completes the request after it and cannot pair them; it belongs to the stream's
    // next request
    let mut early: HashMap<u64, Vec<&HttpRow>> = HashMap::new();
    for m in messages.iter().filter(|m| !m.is_request) {
        match (m.request_in(), m.stream()) {
            (Some(q), _) => answers.entry(q).or_default().push(m),
            (None, Some(s)) if interim(m) => early.entry(s).or_default().push(m),
            _ => {}
        }
    }
    let mut depth: HashMap<u64, u64> = HashMap::new();
    messages
        .iter()
        .copied()
        // requests, and (as Zeek logs them) final responses to requests tshark could
        // not parse as HTTP
        .filter(|m| m.is_request || m.request_in().is_none() && !interim(m))
        .filter_map(|m| {
            let stream = m.stream()?;
            let conn = conns.by_stream(stream)?;
            let d = depth.entry(stream).or_default();
            *d += 1;
            let q = m.is_request.then_some(m);
            let got: &[&HttpRow] = match q {
                Some(q) => answers
                    .get(&q.frame())
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
                None => std::slice::from_ref(&m),
            };
            let first_interim: Option<&HttpRow> =
                got.iter().copied().find(|r| interim(r)).or_else(|| {
                    let waiting = early.get_mut(&stream)?;
                    let i = waiting.iter().position(|r| r.frame() < m.frame())?;
                    Some(waiting.remove(i))
                });
            let last: Option<&HttpRow> = got.iter().copied().rfind(|r| !interim(r));
            Some(HttpRecord {
                ts: m.time.unwrap_or(conn.ts),
                id: conn.id.clone(),
                trans_depth: *d,
                method: q.and_then(|q| owned(&q.method)),
                host: q.and_then(|q| owned(&q.host)),
                uri: q.and_then(|q| q.uri.as_deref().map(str::to_string)),
                referrer: q.and_then(|q| q.referrer().map(str::to_string)),
                // a request line without a version is HTTP/0.9
                version: last
                    .and_then(|r| r.version.as_deref())
                    .or_else(|| q.map(|q| q.version.as_deref().unwrap_or("0.9")))
                    .map(str::to_string),
                user_agent: q.and_then(|q| owned(&q.user_agent)),
                request_body_len: q.map_or(0, body_len),
                response_body_len: last.map_or(0, body_len),
                status_code: last.and_then(|r| r.code).map(u64::from),
                status_msg: last.and_then(|r| owned(&r.phrase)),
                info_code: first_interim.and_then(|r| r.code).map(u64::from),
                info_msg: first_interim.and_then(|r| owned(&r.phrase)),
                username: q.and_then(|q| q.username().map(str::to_string)),
                resp_mime_types: last
                    .and_then(|r| r.content_type.as_deref())
                    .map(|t| vec![crate::model::http::media_type(t).to_string()]),
            })
        })
        .collect()
}

/// One ssl.log row.
#[derive(Debug, Clone, Serialize)]
pub struct SslRecord {
    pub ts: f64,
    #[serde(flatten)]
    pub id: ConnId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    pub resumed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_alert: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_protocol: Option<String>,
    pub established: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_chain_fps: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja3: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja3s: Option<String>,
}

/// Zeek's name of a TLS version (`TLSv12`).
fn zeek_version(v: u64) -> String {
    match v {
        0x0304 => "TLSv13".into(),
        0x0303 => "TLSv12".into(),
        0x0302 => "TLSv11".into(),
        0x0301 => "TLSv10".into(),
        0x0300 => "SSLv3".into(),
        0x0002 => "SSLv2".into(),
        0xfeff => "DTLSv10".into(),
        0xfefd => "DTLSv12".into(),
        0xfefc => "DTLSv13".into(),
        v if v >> 8 == 0x7f => format!("TLSv13-draft{}", v & 0xff),
        v => format!("unknown-{v}"),
    }
}

fn ssl_record(conns: &Connections, s: &Session) -> Option<SslRecord> {
    let conn = if s.quic {
        let t = s.client_hello.map_or(s.last_time, |c| c.0);
        conns.by_packet(
            17,
            &s.addr[0],
            s.port[0] as u16,
            &s.addr[1],
            s.port[1] as u16,
            t,
        )?
    } else {
        conns.by_stream(s.stream)?
    };
    Some(SslRecord {
        ts: s.client_hello.or(s.server_hello).map_or(conn.ts, |c| c.0),
        id: conn.id.clone(),
        version: s.negotiated.map(zeek_version),
        cipher: s.cipher.map(crate::analysis::tls::suite_name),
        server_name: s.sni.clone(),
        resumed: s.resumed(),
        last_alert: s
            .alerts
            .last()
            .and_then(|a| a.description)
            .map(|d| crate::analysis::tls::alert_name(d).0),
        next_protocol: s.alpn_selected.clone(),
        established: s.established(),
        cert_chain_fps: Some(s.chain.clone()).filter(|c| !c.is_empty()),
        ja3: s.ja3.clone(),
        ja3s: s.ja3s.clone(),
    })
}

/// ssl.log: one row per TLS (or QUIC) session the capture saw.
pub fn ssl_records(conns: &Connections, tls: &TlsModel) -> Vec<SslRecord> {
    tls.sessions
        .iter()
        .filter(|s| s.handshake_seen())
        .filter_map(|s| ssl_record(conns, s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_stable_and_zeek_shaped() {
        let a = uid(1);
        assert_eq!(a, uid(1));
        assert_ne!(a, uid(2));
        assert_eq!(a.len(), 17);
        assert!(a.starts_with('C') && a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn versions_by_zeek_name() {
        assert_eq!(zeek_version(0x0303), "TLSv12");
        assert_eq!(zeek_version(0x0304), "TLSv13");
    }
}
