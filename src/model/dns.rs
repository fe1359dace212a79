//! DNS messages as the index keeps them: one row per query or response (mDNS and
//! LLMNR too), read by the DNS tool, the timeline, the quality grade and the flow
//! records. The names of rcodes and query types are here, once.

use arcstr::ArcStr;

use crate::tshark::fields::{FromRow, Row};

#[derive(Clone)]
pub struct DnsRow {
    /// Frame numbers in 32 bits as tshark holds them; read through the accessors.
    frame: u32,
    pub time: f64,
    pub protocols: ArcStr,
    pub tcp: bool,
    pub src: ArcStr,
    pub dst: ArcStr,
    pub response: bool,
    pub rcode: Option<u16>,
    pub name: Option<ArcStr>,
    pub qtype: Option<u16>,
    pub time_s: Option<f64>,
    response_to: Option<u32>,
    pub retransmission: bool,
    pub truncated: bool,
    /// For a query: its question (see `analysis::dns::Retries`).
    pub question: Option<u64>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// The message's transaction ID, opcode and class of its question (16, 4 and
    /// 16 bits on the wire).
    pub trans_id: Option<u16>,
    pub opcode: Option<u16>,
    pub qclass: Option<u16>,
    /// Header flags: authoritative answer, recursion desired, recursion available.
    pub aa: bool,
    pub rd: bool,
    pub ra: bool,
    /// The answer section's data in wire order (addresses, names, text), each
    /// ending in [`ANSWER_END`]: one string per message, not one per answer.
    answers: Option<Box<str>>,
    /// The answers' TTLs (32 bits on the wire).
    pub ttls: Box<[u32]>,
}

/// Ends each answer in [`DnsRow`]'s answers: tshark's aggregator between the values
/// of one field, so no value holds it.
const ANSWER_END: char = '\u{1f}';

impl DnsRow {
    pub fn frame(&self) -> u64 {
        u64::from(self.frame)
    }

    /// The frame of the query a response answers.
    pub fn response_to(&self) -> Option<u64> {
        self.response_to.map(u64::from)
    }

    /// The answer section's data in wire order (addresses, names, text).
    pub fn answers(&self) -> impl Iterator<Item = &str> {
        self.answers
            .as_deref()
            .unwrap_or_default()
            .split_terminator(ANSWER_END)
    }
}

/// The record data of each answer, in the section's order: tshark prints each type's
/// data as its own field, so the answers are rebuilt by walking the records' types and
/// taking the next value of that type's field (the answer section comes first, so
/// additional records' values are never reached).
fn answers(r: &Row<'_>, count: usize, types: usize, data: &[(u64, usize)]) -> Option<Box<str>> {
    let mut next: Vec<std::iter::Peekable<_>> =
        data.iter().map(|&(_, i)| r.all(i).peekable()).collect();
    let mut out = String::new();
    for t in r.all(types).take(count) {
        let Some(k) = t
            .parse::<u64>()
            .ok()
            .and_then(|t| data.iter().position(|&(ty, _)| ty == t))
        else {
            continue;
        };
        if let Some(v) = next[k].next() {
            out.push_str(v);
            out.push(ANSWER_END);
        }
    }
    (!out.is_empty()).then(|| out.into_boxed_str())
}

impl crate::index::Kept for DnsRow {
    fn wants(r: &Row<'_>) -> bool {
        const PROTOCOLS: usize = crate::index::col(DnsRow::FIELDS, "frame.protocols");
        ["dns", "mdns", "llmnr"]
            .iter()
            .any(|p| crate::index::has_protocol(r, PROTOCOLS, p))
    }
    fn share(&mut self, strings: &mut crate::index::Interner) {
        strings.share_one(&mut self.protocols);
        strings.share_one(&mut self.src);
        strings.share_one(&mut self.dst);
        strings.share(&mut self.name);
    }
}

impl FromRow for DnsRow {
    const FIELDS: &'static [&'static str] = crate::with_question_fields![
        "frame.number",
        "frame.time_epoch",
        "frame.protocols",
        "tcp.stream",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "dns.flags.response",
        "dns.flags.rcode",
        "dns.qry.name",
        "dns.qry.type",
        "dns.time",
        "dns.response_to",
        "dns.retransmit_request_in",
        "dns.flags.truncated",
        "udp.srcport",
        "udp.dstport",
        "tcp.srcport",
        "tcp.dstport",
        "dns.flags.opcode",
        "dns.qry.class",
        "dns.flags.authoritative",
        "dns.flags.recdesired",
        "dns.flags.recavail",
        "dns.count.answers",
        "dns.resp.type",
        "dns.resp.ttl",
        "dns.a",
        "dns.aaaa",
        "dns.cname",
        "dns.ptr.domain_name",
        "dns.ns",
        "dns.mx.mail_exchange",
        "dns.txt",
        "dns.srv.target",
    ];

    fn from_row(r: &Row<'_>) -> Option<Self> {
        Some(Self {
            frame: r.u32(0)?,
            time: r.f64(1).unwrap_or(0.0),
            protocols: ArcStr::from(r.first(2).unwrap_or_default()),
            tcp: r.u64(3).is_some(),
            src: ArcStr::from(r.innermost_addr(4, 5)),
            dst: ArcStr::from(r.innermost_addr(6, 7)),
            response: r.flag(8),
            rcode: r.u16(9),
            name: r.first(10).map(ArcStr::from),
            qtype: r.u16(11),
            time_s: r.f64(12),
            response_to: r.u32(13),
            retransmission: r.str(14).is_some(),
            truncated: r.flag(15),
            question: (!r.flag(8)).then(|| crate::analysis::dns::question_key(r, Self::FIELDS)),
            sport: r.u64(16).or_else(|| r.u64(18)).map(|p| p as u16),
            dport: r.u64(17).or_else(|| r.u64(19)).map(|p| p as u16),
            trans_id: r.u16(Self::FIELDS.len() - 3),
            opcode: r.u16(20),
            qclass: r.u16(21),
            aa: r.flag(22),
            rd: r.flag(23),
            ra: r.flag(24),
            answers: match r.u64(25).unwrap_or(0) as usize {
                0 => None,
                n => answers(
                    r,
                    n,
                    26,
                    &[
                        (1, 28),
                        (28, 29),
                        (5, 30),
                        (12, 31),
                        (2, 32),
                        (15, 33),
                        (16, 34),
                        (33, 35),
                    ],
                ),
            },
            ttls: {
                let n = r.u64(25).unwrap_or(0) as usize;
                r.all(27).take(n).filter_map(|t| t.parse().ok()).collect()
            },
        })
    }
}

pub fn rcode_name(c: impl Into<u64>) -> String {
    match c.into() {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        6 => "YXDOMAIN".into(),
        7 => "YXRRSET".into(),
        8 => "NXRRSET".into(),
        9 => "NOTAUTH".into(),
        10 => "NOTZONE".into(),
        n => format!("RCODE{n}"),
    }
}

pub fn qtype_name(t: impl Into<u64>) -> String {
    match t.into() {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        n => format!("TYPE{n}"),
    }
}
