//! The timed exchanges tshark measures itself: a DNS answer (`dns.time`), an HTTP
//! response (`http.time`), an ICMP echo reply (`icmp.resptime`), and the TLS hellos a
//! handshake time is taken between. Kept once, in frame order, for every view that
//! times them (network latency, application response times, slowness), so they time
//! the same exchanges the same way.

use arcstr::ArcStr;

use crate::index::{Kept, col, has_any};
use crate::tshark::fields::{FromRow, Row};

#[derive(Debug, Clone)]
pub struct TimingRow {
    /// In 32 bits as tshark holds them; read through the accessors.
    frame: u32,
    pub time: f64,
    stream: Option<u32>,
    /// The sender of this frame (the answering server), innermost header.
    pub src: ArcStr,
    pub sport: Option<u16>,
    /// Seconds from the query to this answer.
    pub dns_time: Option<f64>,
    pub dns_name: Option<ArcStr>,
    /// Seconds from the request to this response.
    pub http_time: Option<f64>,
    /// The URI of the request this response answers.
    pub uri: Option<Box<str>>,
    /// Seconds from the echo request to this reply (tshark gives milliseconds).
    pub icmp_time: Option<f64>,
    pub client_hello: bool,
    pub server_hello: bool,
}

impl TimingRow {
    pub fn frame(&self) -> u64 {
        u64::from(self.frame)
    }

    /// tshark's `tcp.stream`.
    pub fn stream(&self) -> Option<u64> {
        self.stream.map(u64::from)
    }

    /// An application exchange (DNS, HTTP, a TLS hello), not an ICMP echo.
    pub fn is_application(&self) -> bool {
        self.dns_time.is_some()
            || self.http_time.is_some()
            || self.client_hello
            || self.server_hello
    }
}

impl Kept for TimingRow {
    fn wants(r: &Row<'_>) -> bool {
        const TIMES: [usize; 4] = [
            col(TimingRow::FIELDS, "dns.time"),
            col(TimingRow::FIELDS, "http.time"),
            col(TimingRow::FIELDS, "icmp.resptime"),
            col(TimingRow::FIELDS, "icmpv6.resptime"),
        ];
        const HANDSHAKE: usize = col(TimingRow::FIELDS, "tls.handshake.type");
        has_any(r, &TIMES) || r.all(HANDSHAKE).any(|t| t == "1" || t == "2")
    }
    fn share(&mut self, strings: &mut crate::index::Interner) {
        // a resolver's or a server's address, and the names looked up, repeat
        strings.share_one(&mut self.src);
        strings.share(&mut self.dns_name);
    }
}

impl FromRow for TimingRow {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.time_epoch",
        "tcp.stream",
        "ip.src",
        "ipv6.src",
        "tcp.srcport",
        "udp.srcport",
        "dns.time",
        "dns.qry.name",
        "http.time",
        "http.response_for.uri",
        "icmp.resptime",
        "icmpv6.resptime",
        "tls.handshake.type",
    ];

    fn from_row(r: &Row<'_>) -> Option<Self> {
        Some(Self {
            frame: r.u32(0)?,
            time: r.f64(1).unwrap_or(0.0),
            stream: r.u32(2),
            src: ArcStr::from(r.innermost_addr(3, 4)),
            sport: r.u64(5).or_else(|| r.u64(6)).map(|p| p as u16),
            dns_time: r.f64(7),
            dns_name: r.first(8).map(ArcStr::from),
            http_time: r.f64(9),
            uri: r.first(10).map(Box::from),
            icmp_time: r.f64(11).or_else(|| r.f64(12)).map(|v| v / 1000.0),
            client_hello: r.all(13).any(|t| t == "1"),
            server_hello: r.all(13).any(|t| t == "2"),
        })
    }
}
