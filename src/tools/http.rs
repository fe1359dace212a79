//! `extract_http_requests`: every HTTP/1.x request paired with its response (tshark's
//! own `http.request_in` link), with aggregates and the failing and slowest requests.

use std::collections::BTreeMap;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::{Analysis, Span};
use crate::index::owned;
use crate::model::http::{HttpRow, distinct_messages, early_answers, is_interim};
use crate::report::{
    CountRow, Evidence, Finding, Report, Severity, Table, percentile, rfc3339, round, thousands,
};
use crate::server::PcapServer;
use crate::tools::{clamp_limit, clamp_offset};

/// A status code (404) or a class ("4xx", "5xx", "error" for any 4xx/5xx).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusFilter {
    Code(u16),
    Text(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HttpParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Requests to list (default 20, max 500).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Rows to skip, for paging.
    #[serde(default)]
    pub offset: Option<i64>,
    /// Only this method (GET, POST, ...), case-insensitive.
    #[serde(default)]
    pub method: Option<String>,
    /// Only requests whose Host contains this text, case-insensitive.
    #[serde(default)]
    pub host: Option<String>,
    /// Only responses with this status: a code like 404, or "4xx", "5xx", "error".
    #[serde(default)]
    pub status: Option<StatusFilter>,
    /// Wireshark display filter scoping the analysis.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// SSLKEYLOGFILE in an allowed directory, to decrypt TLS (overrides
    /// PCAP_TLS_KEYLOG_FILE).
    #[serde(default)]
    pub tls_keylog_file: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HttpTransaction {
    pub frame: u64,
    pub time: String,
    pub stream: Option<u64>,
    pub client: String,
    pub server: String,
    pub method: String,
    pub host: Option<String>,
    pub uri: String,
    pub user_agent: Option<String>,
    pub status: Option<u16>,
    pub reason: Option<String>,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    pub response_time_ms: Option<f64>,
    pub response_frame: Option<u64>,
    /// False for a response whose request tshark could not parse or did not capture
    /// (then `frame` is the response frame and method/uri are empty).
    pub request_seen: bool,
    /// The server answered before the request was complete (its response frame comes
    /// before the request's last segment, `frame`): e.g. 413 or 401 to an upload.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub answered_early: bool,
    /// The connection's Community ID (as Zeek, Suricata and Arkime print it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HostRow {
    pub host: String,
    pub requests: u64,
    pub errors: u64,
    pub median_response_ms: Option<f64>,
    pub max_response_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HttpRequests {
    /// Requests in capture order.
    pub requests: Table<HttpTransaction>,
    pub by_host: Table<HostRow>,
    pub by_method: Vec<CountRow>,
    /// 1xx..5xx, and "no response" for requests never answered in the capture.
    pub by_status_class: Vec<CountRow>,
    pub median_response_ms: Option<f64>,
    pub p95_response_ms: Option<f64>,
}

/// The endpoint, or "?" when tshark gave no address.
fn endpoint(addr: &Option<arcstr::ArcStr>, port: Option<u16>) -> String {
    addr.as_deref()
        .map(|a| crate::report::endpoint(a, port.map(u64::from)))
        .unwrap_or_else(|| "?".into())
}

impl StatusFilter {
    fn matches(&self, code: Option<u16>) -> bool {
        match (self, code) {
            (StatusFilter::Code(c), Some(x)) => *c == x,
            (StatusFilter::Text(t), code) => {
                let t = t.trim().to_ascii_lowercase();
                match (t.as_str(), code) {
                    ("error" | "errors", Some(x)) => x >= 400,
                    ("none" | "no response", None) => true,
                    (class, Some(x)) if class.len() == 3 && class.ends_with("xx") => {
                        class.starts_with(char::from(b'0' + (x / 100) as u8))
                    }
                    (num, Some(x)) => num.parse::<u16>().is_ok_and(|n| n == x),
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

#[tool_router(router = http_router, vis = "pub(crate)")]
impl PcapServer {
    /// HTTP/1.x requests with their responses: time, client, server, method, host, URI,
    /// user agent, status, content type and length, response time. Aggregates by host,
    /// method and status class; errors and the slowest requests first in findings.
    #[tool(
        name = "extract_http_requests",
        annotations(
            title = "HTTP requests",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn extract_http_requests(
        &self,
        Parameters(p): Parameters<HttpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<HttpRequests>>, String> {
        self.engine
            .analyze("extract_http_requests", p, rc, http_requests)
            .await
    }
}

/// The Community ID of the TCP connection a message travelled on.
fn flow_id(r: &HttpRow) -> Option<String> {
    crate::model::flow::community_id(r.src.as_deref()?, r.dst.as_deref()?, 6, r.sport, r.dport)
}

/// One request and its answer, as references into the index's kept rows: every
/// exchange of a capture is paired, filtered and counted this way, and only the rows a
/// page shows become an [`HttpTransaction`] with its formatted time, endpoints and
/// owned strings (made for every exchange, ~22 MB on the 200 MB bench mix that the
/// triage's HTTP check held only to count them).
struct Exchange<'a> {
    /// The request; None for a response whose request tshark did not parse.
    req: Option<&'a HttpRow>,
    /// The final response paired with it (for an orphan, the response itself).
    resp: Option<&'a HttpRow>,
    /// tshark's `http.time` of the response it linked to the request.
    time_ms: Option<f64>,
    answered_early: bool,
}

impl Exchange<'_> {
    /// The row the exchange is listed by: its request, or the orphan response.
    fn first(&self) -> &HttpRow {
        self.req.or(self.resp).expect("an exchange has a message")
    }
    fn frame(&self) -> u64 {
        self.first().frame()
    }
    fn status(&self) -> Option<u16> {
        self.resp.and_then(|r| r.code)
    }
    fn response_frame(&self) -> Option<u64> {
        self.resp.map(|r| r.frame())
    }
    fn method(&self) -> &str {
        self.req.and_then(|r| r.method.as_deref()).unwrap_or("")
    }
    fn host(&self) -> Option<&str> {
        self.req.and_then(|r| r.host.as_deref())
    }
    fn uri(&self) -> &str {
        self.req.and_then(|r| r.uri.as_deref()).unwrap_or("")
    }
    /// The server's endpoint, or the client's: a request travels client to server, an
    /// orphan response server to client.
    fn end(&self, server: bool) -> String {
        let r = self.first();
        if server == self.req.is_some() {
            endpoint(&r.dst, r.dport)
        } else {
            endpoint(&r.src, r.sport)
        }
    }
    fn server(&self) -> String {
        self.end(true)
    }
    fn time(&self) -> String {
        self.first().time.map(rfc3339).unwrap_or_default()
    }
    fn transaction(&self) -> HttpTransaction {
        let r = self.first();
        let resp = self.resp;
        HttpTransaction {
            frame: r.frame(),
            time: self.time(),
            stream: r.stream(),
            client: self.end(false),
            server: self.server(),
            method: self.method().to_string(),
            host: self.host().map(str::to_string),
            uri: self.uri().to_string(),
            user_agent: self.req.and_then(|q| owned(&q.user_agent)),
            status: self.status(),
            reason: resp.and_then(|q| owned(&q.phrase)),
            content_type: resp.and_then(|q| owned(&q.content_type)),
            content_length: resp.and_then(|q| q.content_length),
            response_time_ms: self.time_ms,
            response_frame: self.response_frame(),
            request_seen: self.req.is_some(),
            answered_early: self.answered_early,
            community_id: flow_id(r),
        }
    }
}

/// Requests paired with their final responses by tshark's `http.request_in` (an answer
/// sent while its request was still arriving joins that request), in capture order,
/// and the count of responses whose request tshark did not parse.
fn pair(rows: &[HttpRow]) -> (Vec<Exchange<'_>>, u64) {
    let messages = distinct_messages(rows);
    let early = early_answers(&messages);
    let mut out: Vec<Exchange> = Vec::new();
    let mut index: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut early_rows: BTreeMap<u64, &HttpRow> = BTreeMap::new();
    let mut orphans = 0u64;
    for r in messages {
        if r.is_request {
            index.insert(r.frame(), out.len());
            out.push(Exchange {
                req: Some(r),
                resp: None,
                time_ms: None,
                answered_early: false,
            });
        } else if r.code.is_some_and(|c| !is_interim(c)) {
            // an interim 1xx (100 Continue) precedes the real answer: not a response of
            // its own; a second final response to one request gets its own row
            match r
                .request_in()
                .and_then(|f| index.get(&f))
                .filter(|&&i| out[i].resp.is_none())
            {
                Some(&i) => {
                    out[i].resp = Some(r);
                    out[i].time_ms = r.time_since_request.map(|s| round(s * 1000.0, 3));
                }
                // A response whose request tshark did not parse (malformed, or before
                // the capture started) still tells what the server said.
                None if early.contains_key(&r.frame()) => {
                    early_rows.insert(r.frame(), r);
                }
                None => {
                    orphans += 1;
                    out.push(Exchange {
                        req: None,
                        resp: Some(r),
                        time_ms: None,
                        answered_early: false,
                    });
                }
            }
        }
    }
    for (resp, req) in &early {
        if let (Some(row), Some(&i)) = (early_rows.remove(resp), index.get(req)) {
            out[i].resp = Some(row);
            out[i].answered_early = true;
        }
    }
    // frames are unique: the unstable sort is as deterministic and needs no buffer
    out.sort_unstable_by_key(Exchange::frame);
    (out, orphans)
}

pub(crate) async fn http_requests(
    mut a: Analysis,
    p: HttpParams,
) -> Result<Report<HttpRequests>, String> {
    let kept = a.part::<crate::index::Rows<HttpRow>>().await?;
    let mut span = Span::default();
    for r in kept.0.iter() {
        span.add(r.time);
    }
    let (mut requests, orphan_responses) = pair(&kept.0);
    let total_requests = requests.len();
    let method = p.method.as_ref().map(|m| m.trim().to_ascii_uppercase());
    let host = p.host.as_ref().map(|h| h.trim().to_ascii_lowercase());
    requests.retain(|t| {
        method
            .as_ref()
            .is_none_or(|m| t.method().eq_ignore_ascii_case(m))
            && host.as_ref().is_none_or(|h| {
                t.host()
                    .is_some_and(|x| x.to_ascii_lowercase().contains(h.as_str()))
            })
            && p.status.as_ref().is_none_or(|s| s.matches(t.status()))
    });

    let mut by_method: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_class: BTreeMap<String, u64> = BTreeMap::new();
    let mut hosts: BTreeMap<String, (u64, u64, Vec<f64>)> = BTreeMap::new();
    let mut times: Vec<f64> = Vec::new();
    for t in &requests {
        if t.req.is_some() {
            *by_method.entry(t.method().to_string()).or_default() += 1;
        }
        let class = t
            .status()
            .map(|s| format!("{}xx", s / 100))
            .unwrap_or_else(|| "no response".into());
        *by_class.entry(class).or_default() += 1;
        // without a Host header the server is its address, not address:port
        let h = hosts
            .entry(
                t.host()
                    .map(str::to_string)
                    .unwrap_or_else(|| crate::report::split_endpoint(&t.server()).0.to_string()),
            )
            .or_default();
        h.0 += 1;
        if t.status().is_some_and(|s| s >= 400) {
            h.1 += 1;
        }
        if let Some(ms) = t.time_ms {
            h.2.push(ms);
            times.push(ms);
        }
    }
    times.sort_by(f64::total_cmp);
    let mut host_rows: Vec<HostRow> = hosts
        .into_iter()
        .map(|(host, (n, errors, mut ts))| {
            ts.sort_by(f64::total_cmp);
            HostRow {
                host,
                requests: n,
                errors,
                median_response_ms: percentile(&ts, 50.0),
                max_response_ms: ts.last().copied(),
            }
        })
        .collect();
    host_rows.sort_by(|x, y| y.requests.cmp(&x.requests).then(x.host.cmp(&y.host)));

    let findings = http_findings(&requests, &times);
    let limit = clamp_limit(p.limit, 20);
    let shown_total = requests.len();
    let mut notes = Vec::new();
    if let Some(m) = &method {
        notes.push(format!("method = {m}"));
    }
    if let Some(h) = &host {
        notes.push(format!("host contains '{h}'"));
    }
    if let Some(s) = &p.status {
        notes.push(format!(
            "status = {}",
            serde_json::to_string(s).unwrap_or_default()
        ));
    }
    let errors = requests
        .iter()
        .filter(|t| t.status().is_some_and(|s| s >= 400))
        .count();
    let unanswered = requests.iter().filter(|t| t.status().is_none()).count();
    let mut summary = format!(
        "{} HTTP transaction(s) in {}{}: {} error response(s) (4xx/5xx), {} request(s) without a response in the capture.",
        thousands(shown_total as u64),
        a.file.display_name,
        if notes.is_empty() {
            String::new()
        } else {
            format!(
                " ({} of {} after {})",
                shown_total,
                total_requests,
                notes.join(", ")
            )
        },
        errors,
        unanswered
    );
    if let (Some(med), Some(p95)) = (percentile(&times, 50.0), percentile(&times, 95.0)) {
        summary.push_str(&format!(
            " Response time median {med:.1} ms, p95 {p95:.1} ms."
        ));
    }
    if let Some(h) = host_rows.first() {
        summary.push_str(&format!(
            " Busiest host: {} ({} requests).",
            h.host, h.requests
        ));
    }
    if orphan_responses > 0 {
        summary.push_str(&format!(
            " {orphan_responses} response(s) answer a request tshark did not parse as HTTP (malformed, or sent before the capture started); they are listed with request_seen=false."
        ));
    }
    if total_requests == 0 {
        summary = format!(
            "No HTTP requests in {}. HTTPS is encrypted and shows up as TLS, not HTTP; HTTP on a non-standard port may need Decode As.",
            a.file.display_name
        );
    }
    let data = HttpRequests {
        requests: Table::page_map(requests, clamp_offset(p.offset), limit, |x| x.transaction()),
        by_host: Table::top(host_rows, 20),
        by_method: by_method
            .into_iter()
            .map(|(key, count)| CountRow { key, count })
            .collect(),
        by_status_class: by_class
            .into_iter()
            .map(|(key, count)| CountRow { key, count })
            .collect(),
        median_response_ms: percentile(&times, 50.0),
        p95_response_ms: percentile(&times, 95.0),
    };
    let note = (!notes.is_empty()).then(|| notes.join(", "));
    a.report(summary, findings, data, span, note).await
}

fn http_findings(requests: &[Exchange], sorted_times: &[f64]) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut errors: BTreeMap<u16, Vec<&Exchange>> = BTreeMap::new();
    for t in requests {
        if let Some(s) = t.status().filter(|s| *s >= 400) {
            errors.entry(s).or_default().push(t);
        }
    }
    for (code, ts) in errors.iter().rev() {
        let sample: Vec<String> = ts
            .iter()
            .take(3)
            .map(|t| format!("{} {}{}", t.method(), t.host().unwrap_or_default(), t.uri()))
            .collect();
        out.push(Finding::new(
            if *code >= 500 {
                Severity::High
            } else {
                Severity::Medium
            },
            format!(
                "{} request(s) answered {code} {}",
                ts.len(),
                ts[0]
                    .resp
                    .and_then(|r| r.phrase.as_deref())
                    .unwrap_or_default()
            ),
            format!("For example: {}.", sample.join("; ")),
            Evidence {
                frames: ts
                    .iter()
                    .take(10)
                    .flat_map(|t| [Some(t.frame()), t.response_frame()])
                    .flatten()
                    .collect(),
                streams: ts
                    .iter()
                    .filter_map(|t| t.first().stream())
                    .take(10)
                    .collect(),
                endpoints: ts.iter().map(|t| t.server()).take(3).collect(),
                time: Some(ts[0].time()),
                // the responses and the requests they answer
                display_filter: format!(
                    "http.response.code == {code} || http.response_in in {{{}}}",
                    ts.iter()
                        .filter_map(|t| t.response_frame())
                        .take(10)
                        .map(|f| f.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            },
        ));
    }
    // slow: above 1 s, or far above this capture's own median
    let median = percentile(sorted_times, 50.0).unwrap_or(0.0);
    let threshold = (median * 10.0).max(1000.0);
    let mut slow: Vec<&Exchange> = requests
        .iter()
        .filter(|t| t.time_ms.is_some_and(|ms| ms >= threshold))
        .collect();
    slow.sort_by(|x, y| {
        y.time_ms
            .unwrap_or(0.0)
            .total_cmp(&x.time_ms.unwrap_or(0.0))
    });
    if let Some(worst) = slow.first() {
        out.push(Finding::new(
            if worst.time_ms.unwrap_or(0.0) >= 5000.0 {
                Severity::Medium
            } else {
                Severity::Low
            },
            format!(
                "{} slow response(s), slowest {:.0} ms",
                slow.len(),
                worst.time_ms.unwrap_or(0.0)
            ),
            format!(
                "Slowest: {} {}{} from {} (capture median {median:.1} ms).",
                worst.method(),
                worst.host().unwrap_or_default(),
                worst.uri(),
                worst.server()
            ),
            {
                let frames: Vec<u64> = slow
                    .iter()
                    .take(10)
                    .flat_map(|t| [Some(t.frame()), t.response_frame()])
                    .flatten()
                    .collect();
                // the slow responses by time, and the exchanges listed (a response
                // tshark times from another request shows by number)
                let listed = frames
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                Evidence {
                    frames,
                    streams: slow
                        .iter()
                        .filter_map(|t| t.first().stream())
                        .take(10)
                        .collect(),
                    time: Some(worst.time()),
                    display_filter: format!(
                        "http.time >= {:.3} || frame.number in {{{listed}}}",
                        threshold / 1000.0
                    ),
                    ..Default::default()
                }
            },
        ));
    }
    let unanswered: Vec<&Exchange> = requests.iter().filter(|t| t.status().is_none()).collect();
    if !unanswered.is_empty() {
        out.push(Finding::new(
            Severity::Low,
            format!("{} request(s) without a response in the capture", unanswered.len()),
            "The server did not answer before the capture ended, the response was lost, or the capture missed it.".to_string(),
            Evidence {
                frames: unanswered.iter().take(10).map(|t| t.frame()).collect(),
                streams: unanswered
                    .iter()
                    .filter_map(|t| t.first().stream())
                    .take(10)
                    .collect(),
                display_filter: "http.request && !http.response_in".into(),
                ..Default::default()
            },
        ));
    }
    out
}

/// HTTP requests with their status and time (or no answer), for get_events_around.
pub async fn events(
    mut a: Analysis,
    q: crate::analysis::events::EventQuery,
) -> Result<Vec<crate::analysis::events::Event>, String> {
    let kept = a.part::<crate::index::Rows<HttpRow>>().await?;
    let rows: Vec<&HttpRow> = distinct_messages(&kept.0);
    let answers: std::collections::HashMap<u64, &HttpRow> = rows
        .iter()
        .filter(|r| !r.is_request)
        .filter_map(|r| Some((r.request_in()?, *r)))
        .collect();
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.is_request) {
        let Some(time) = r.time else { continue };
        let answer = answers.get(&r.frame());
        let weight = match answer.map(|resp| resp.code.unwrap_or(0)) {
            Some(500..) => 3,
            Some(400..) => 1,
            Some(_) => 0,
            None => 2,
        };
        out.extend(q.event((time, r.frame()), "http", weight, || {
            let target: String = format!(
                "{}{}",
                r.host.as_deref().unwrap_or(""),
                r.uri.as_deref().unwrap_or("")
            )
            .chars()
            .take(120)
            .collect();
            let method = r.method.as_deref().unwrap_or("?");
            match answer {
                Some(resp) => (
                    format!("HTTP {method} {target} -> {}", resp.code.unwrap_or(0)).into(),
                    resp.time_since_request
                        .map(|t| format!("{:.1} ms", t * 1000.0)),
                    format!("frame.number in {{{},{}}}", r.frame(), resp.frame()),
                ),
                None => (
                    format!("HTTP {method} {target} unanswered").into(),
                    None,
                    format!("frame.number == {}", r.frame()),
                ),
            }
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_filters() {
        assert!(StatusFilter::Code(404).matches(Some(404)));
        assert!(StatusFilter::Text("4xx".into()).matches(Some(418)));
        assert!(!StatusFilter::Text("4xx".into()).matches(Some(500)));
        assert!(StatusFilter::Text("error".into()).matches(Some(503)));
        assert!(StatusFilter::Text("304".into()).matches(Some(304)));
        assert!(!StatusFilter::Text("error".into()).matches(None));
    }
}
