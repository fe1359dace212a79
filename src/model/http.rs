//! HTTP/1.x messages as tshark dissects them, one row per request or response (a
//! part of the capture index), read by the HTTP tool and by per-request timing.

use arcstr::ArcStr;
use std::collections::BTreeMap;

use crate::tshark::fields::{FromRow, Row};

#[derive(Clone)]
pub struct HttpRow {
    /// Frame numbers and stream indexes in 32 bits, as tshark holds them (a big
    /// capture keeps hundreds of thousands of rows); read through the accessors.
    frame: u32,
    pub time: Option<f64>,
    stream: Option<u32>,
    pub src: Option<ArcStr>,
    pub dst: Option<ArcStr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub is_request: bool,
    pub method: Option<ArcStr>,
    pub host: Option<ArcStr>,
    pub uri: Option<Box<str>>,
    pub code: Option<u16>,
    pub content_type: Option<ArcStr>,
    pub content_length: Option<u64>,
    pub time_since_request: Option<f64>,
    request_in: Option<u32>,
    pub phrase: Option<ArcStr>,
    pub user_agent: Option<ArcStr>,
    /// A TCP retransmission: tshark dissects the resent segment as HTTP again.
    pub retransmitted: bool,
    /// The protocol version the message states (`1.1`).
    pub version: Option<ArcStr>,
    /// What few messages have, apart: a big capture has hundreds of thousands of rows.
    rare: Option<Box<Rare>>,
}

/// The parts of an HTTP message most have not.
#[derive(Debug, Clone, Default)]
struct Rare {
    referrer: Option<Box<str>>,
    username: Option<Box<str>>,
    chunked_bytes: Option<u64>,
}

impl HttpRow {
    pub fn frame(&self) -> u64 {
        u64::from(self.frame)
    }

    /// tshark's `tcp.stream`.
    pub fn stream(&self) -> Option<u64> {
        self.stream.map(u64::from)
    }

    /// The frame of the request a response answers.
    pub fn request_in(&self) -> Option<u64> {
        self.request_in.map(u64::from)
    }

    /// The request's Referer.
    pub fn referrer(&self) -> Option<&str> {
        self.rare.as_ref()?.referrer.as_deref()
    }

    /// The user name of a Basic Authorization header (never its password).
    pub fn username(&self) -> Option<&str> {
        self.rare.as_ref()?.username.as_deref()
    }

    /// A chunked body's length: the sum of its chunks (without Content-Length).
    pub fn chunked_bytes(&self) -> Option<u64> {
        self.rare.as_ref()?.chunked_bytes
    }
}

impl crate::index::Kept for HttpRow {
    fn wants(r: &Row<'_>) -> bool {
        const MESSAGE: [usize; 2] = [
            crate::index::col(HttpRow::FIELDS, "http.request"),
            crate::index::col(HttpRow::FIELDS, "http.response"),
        ];
        crate::index::has_any(r, &MESSAGE)
    }
    fn share(&mut self, strings: &mut crate::index::Interner) {
        for s in [
            &mut self.src,
            &mut self.dst,
            &mut self.method,
            &mut self.host,
            &mut self.content_type,
            &mut self.phrase,
            &mut self.user_agent,
            &mut self.version,
        ] {
            strings.share(s);
        }
    }
}

impl FromRow for HttpRow {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.time_epoch",
        "tcp.stream",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "tcp.srcport",
        "tcp.dstport",
        "http.request",
        "http.request.method",
        "http.host",
        "http.request.uri",
        "http.response.code",
        "http.content_type",
        "http.content_length_header",
        "http.time",
        "http.request_in",
        "http.response.phrase",
        "http.user_agent",
        "tcp.analysis.retransmission",
        "http.response",
        "http.request.version",
        "http.response.version",
        "http.referer",
        "http.authbasic",
        "http.chunk_size",
    ];

    fn from_row(r: &Row<'_>) -> Option<Self> {
        Some(Self {
            frame: r.u32(0)?,
            time: r.f64(1),
            stream: r.u32(2),
            src: r.first(3).or_else(|| r.first(4)).map(ArcStr::from),
            dst: r.first(5).or_else(|| r.first(6)).map(ArcStr::from),
            sport: r.u16(7),
            dport: r.u16(8),
            is_request: r.str(9).is_some(),
            method: r.first(10).map(ArcStr::from),
            host: r.first(11).map(ArcStr::from),
            uri: r.first(12).map(Box::from),
            code: r.u16(13),
            content_type: r.first(14).map(ArcStr::from),
            content_length: r.u64(15),
            time_since_request: r.f64(16),
            request_in: r.u32(17),
            phrase: r.first(18).map(ArcStr::from),
            user_agent: r.first(19).map(ArcStr::from),
            retransmitted: r.str(20).is_some(),
            version: r
                .first(22)
                .or_else(|| r.first(23))
                .map(|v| ArcStr::from(v.trim_start_matches("HTTP/"))),
            rare: {
                let rare = Rare {
                    referrer: r.first(24).map(Box::from),
                    username: r
                        .first(25)
                        .map(|a| Box::from(a.split_once(':').map_or(a, |(u, _)| u))),
                    chunked_bytes: r
                        .str(26)
                        .map(|_| r.all(26).filter_map(|c| c.parse::<u64>().ok()).sum()),
                };
                (rare.referrer.is_some() || rare.username.is_some() || rare.chunked_bytes.is_some())
                    .then(|| Box::new(rare))
            },
        })
    }
}

/// A Content-Type's media type, without its parameters (`text/html; charset=utf-8`
/// -> `text/html`).
pub fn media_type(content_type: &str) -> &str {
    content_type
        .split(';')
        .next()
        .unwrap_or(content_type)
        .trim()
}

/// A 1xx answer other than 101 (switching protocols): the final answer follows.
pub fn is_interim(code: u16) -> bool {
    (100..200).contains(&code) && code != 101
}

/// The messages, once each. A message tshark completes on a retransmitted segment is
/// a copy when the same message was already seen (the request just sent again on its
/// stream; the response to a request already answered), and the message itself when
/// it was not: a response whose missing segment arrived only as a retransmission.
pub fn distinct_messages(rows: &[HttpRow]) -> Vec<&HttpRow> {
    let mut out = Vec::with_capacity(rows.len());
    let mut answered: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut last_request: BTreeMap<Option<u64>, (Option<&str>, Option<&str>)> = BTreeMap::new();
    for r in rows {
        let request = (r.method.as_deref(), r.uri.as_deref());
        let copy = r.retransmitted
            && if r.is_request {
                last_request.get(&r.stream()) == Some(&request)
            } else {
                r.request_in().is_none_or(|f| answered.contains(&f))
            };
        if copy {
            continue;
        }
        if r.is_request {
            last_request.insert(r.stream(), request);
        } else if let Some(f) = r.request_in()
            && !r.code.is_some_and(is_interim)
        {
            answered.insert(f);
        }
        out.push(r);
    }
    out
}

/// Responses the server sent before the request they answer was complete (a 413, 401
/// or 417 to a POST whose body was still uploading): tshark dissects the request only
/// once its last segment arrives, after the response, so it links neither. Among the
/// distinct messages, a final response that tshark links to no request answers the
/// next request on its stream when that request gets no answer of its own. Returns
/// response frame -> request frame.
pub fn early_answers(messages: &[&HttpRow]) -> BTreeMap<u64, u64> {
    let answered: std::collections::HashSet<u64> = messages
        .iter()
        .filter(|r| !r.is_request && !r.code.is_some_and(is_interim))
        .filter_map(|r| r.request_in())
        .collect();
    let mut out = BTreeMap::new();
    // per stream, the final response still waiting for the request it answers
    let mut waiting: BTreeMap<u64, u64> = BTreeMap::new();
    for r in messages {
        let Some(stream) = r.stream() else { continue };
        if r.is_request {
            if let Some(resp) = waiting.remove(&stream)
                && !answered.contains(&r.frame())
            {
                out.insert(resp, r.frame());
            }
        } else if r.request_in().is_none() && r.code.is_some_and(|c| !is_interim(c)) {
            waiting.insert(stream, r.frame());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recorded_response_row() {
        // shape recorded from tshark 4.0 on zeek-wikipedia.pcap frame 7
        let line = "7\t1300475168.915683000\t0\t208.80.152.2\t\t141.142.220.118\t\t80\t35634\t\t\t\t\t304\ttext/html; charset=utf-8\t\t0.061293000\t6\tNot Modified\t";
        let r = HttpRow::parse_line(line).unwrap();
        assert!(!r.is_request);
        assert_eq!(r.code, Some(304));
        assert_eq!(r.request_in, Some(6));
        assert_eq!(r.content_type.as_deref(), Some("text/html; charset=utf-8"));
    }
}
