//! Events: what happened when, from every family, on one time line. Each family turns
//! its index part into `Event`s; this module orders them, folds repeats ("25 x GET /
//! -> 200") and ranks the moments where bad things cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;

/// One thing that happened, as a family reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: f64,
    pub frame: u64,
    /// `tcp`, `dns`, `http`, `tls`, `icmp`, `expert`, `capture` (a silence).
    pub family: &'static str,
    /// What happened, without what varies between repeats (client ports, timings):
    /// shared by the repeats a family knows are alike (every occurrence of one expert
    /// message), tens of thousands on a big capture.
    pub what: Arc<str>,
    /// Per-occurrence detail (a time taken, a client port), shown for single events.
    pub detail: Option<String>,
    /// How much it says something went wrong: 0 ordinary, 1 notable, 3 a failure.
    pub weight: u32,
    /// The display filter that shows this occurrence.
    pub filter: String,
}

/// What a family is asked for: events between `from` and `to` (epoch seconds), or
/// with `notable_only` just the ones with weight (for ranking a whole capture).
#[derive(Debug, Clone, Copy)]
pub struct EventQuery {
    pub from: f64,
    pub to: f64,
    pub notable_only: bool,
}

impl EventQuery {
    pub fn wants(&self, time: f64, weight: u32) -> bool {
        time >= self.from && time <= self.to && (!self.notable_only || weight > 0)
    }

    /// The event at `time` of `weight` when the query wants it, its sentence, detail
    /// and filter written by `text` only then: of a big capture's every connection,
    /// request and lookup, only the events kept cost strings. Ranking a whole capture
    /// reads neither detail nor filter, so those events keep none.
    pub fn event(
        &self,
        (time, frame): (f64, u64),
        family: &'static str,
        weight: u32,
        text: impl FnOnce() -> (Arc<str>, Option<String>, String),
    ) -> Option<Event> {
        if !self.wants(time, weight) {
            return None;
        }
        let (what, detail, filter) = text();
        let whole = !self.notable_only;
        Some(Event {
            time,
            frame,
            family,
            what,
            detail: detail.filter(|_| whole),
            weight,
            filter: if whole { filter } else { String::new() },
        })
    }
}

/// Connections opened, refused, unanswered, reset and closed.
pub fn tcp_events(m: &crate::model::tcp::TcpModel, q: EventQuery) -> Vec<Event> {
    let mut out = Vec::new();
    for s in &m.streams {
        let client = &s.addr[0];
        let filter = || format!("tcp.stream == {}", s.id);
        let state = s.conn_state();
        // a refused connection is one event, at its RST
        if let Some(syn) = s.syn_frame.filter(|_| state != "REJ") {
            let retries = s.syn_retries;
            let weight = match (state, retries) {
                ("S0", _) => 3,
                (_, r) if r > 0 => 1,
                _ => 0,
            };
            out.extend(q.event((s.first, syn), "tcp", weight, || {
                let server = s.endpoint(1);
                let what = if state == "S0" {
                    format!("TCP connection {client} -> {server} unanswered")
                } else {
                    format!("TCP connection {client} -> {server} opened")
                };
                let detail = (retries > 0).then(|| format!("SYN sent {} times", retries + 1));
                (what.into(), detail, filter())
            }));
        }
        if let Some((t, frame, by, rst)) = s.close {
            let weight = if state == "REJ" {
                3
            } else if rst {
                2
            } else {
                0
            };
            out.extend(q.event((t, frame), "tcp", weight, || {
                let server = s.endpoint(1);
                // the client's port varies between repeats; its address does not
                let by_ep: &str = if by == 0 { client } else { &server };
                let what = if state == "REJ" {
                    format!("TCP connection {client} -> {server} refused (RST)")
                } else if rst {
                    format!("TCP connection {client} -> {server} reset by {by_ep}")
                } else {
                    format!("TCP connection {client} -> {server} closed by {by_ep}")
                };
                let detail = Some(format!("after {:.3} s", (t - s.first).max(0.0)));
                (what.into(), detail, filter())
            }));
        }
    }
    out
}

/// TLS handshakes (completed or failed) and alerts.
pub fn tls_events(m: &crate::model::tls::TlsModel, q: EventQuery) -> Vec<Event> {
    let mut out = Vec::new();
    for s in &m.sessions {
        let name = || s.sni.clone().unwrap_or_else(|| s.endpoint(1));
        if let Some((t, frame)) = s.client_hello {
            let outcome = s.outcome();
            let weight = match outcome {
                "complete" => 0,
                // the capture may simply have ended mid-handshake
                "incomplete" => 1,
                _ => 3,
            };
            out.extend(q.event((t, frame), "tls", weight, || {
                let (client, name) = (&s.addr[0], name());
                let what = match outcome {
                    "complete" => format!(
                        "TLS handshake {client} -> {name} completed{}",
                        s.negotiated
                            .map(|v| format!(" ({})", crate::model::tls::version_name(v)))
                            .unwrap_or_default()
                    ),
                    "incomplete" => format!("TLS handshake {client} -> {name} not completed"),
                    other => format!("TLS handshake {client} -> {name} failed ({other})"),
                };
                let detail = s.handshake_s().map(|d| format!("{:.1} ms", d * 1000.0));
                (what.into(), detail, s.filter())
            }));
        }
        for a in &s.alerts {
            // an encrypted alert after the handshake is almost always close_notify
            let weight = if a.during_handshake { 3 } else { 0 };
            out.extend(q.event((a.time, a.frame), "tls", weight, || {
                let desc = a
                    .description
                    .map(|d| crate::analysis::tls::alert_name(d).0)
                    .unwrap_or("encrypted");
                let from = s.endpoint(if a.from_server { 1 } else { 0 });
                let what = format!("TLS alert {desc} from {from} ({})", name());
                (what.into(), None, s.filter())
            }));
        }
    }
    out
}

/// Events that are one line of the answer: one event, or repeats folded together.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EventLine {
    /// When the first of them happened (RFC 3339, UTC) and seconds from the moment asked about.
    pub time: String,
    pub offset_s: f64,
    pub family: &'static str,
    /// "3 x TCP connection 10.0.0.1 -> 10.0.0.2:80 reset by 10.0.0.2:80", or one event.
    pub event: String,
    pub count: usize,
    /// Seconds from the first to the last repeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_s: Option<f64>,
    /// The first frames (at most 5).
    pub frames: Vec<u64>,
    /// Shows the packets of the first occurrence.
    pub display_filter: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub problem: bool,
}

/// Orders events by time and folds the ones that say the same thing into the line of
/// their first occurrence.
pub fn fold(mut events: Vec<Event>, moment: f64) -> Vec<EventLine> {
    events.sort_by(|a, b| a.time.total_cmp(&b.time).then(a.frame.cmp(&b.frame)));
    let mut lines: Vec<(EventLine, f64, Option<String>)> = Vec::new();
    let mut by_what: BTreeMap<(&'static str, Arc<str>), usize> = BTreeMap::new();
    for e in events {
        match by_what.get(&(e.family, e.what.clone())) {
            Some(&i) => {
                let (line, first, _) = &mut lines[i];
                line.count += 1;
                line.span_s = Some(crate::report::round(e.time - *first, 6));
                if line.frames.len() < 5 {
                    line.frames.push(e.frame);
                }
            }
            None => {
                by_what.insert((e.family, e.what.clone()), lines.len());
                lines.push((
                    EventLine {
                        time: crate::report::rfc3339(e.time),
                        offset_s: crate::report::round(e.time - moment, 6),
                        family: e.family,
                        event: e.what.to_string(),
                        count: 1,
                        span_s: None,
                        frames: vec![e.frame],
                        display_filter: e.filter,
                        problem: e.weight > 0,
                    },
                    e.time,
                    e.detail,
                ));
            }
        }
    }
    lines
        .into_iter()
        .map(|(mut l, _, detail)| {
            if l.count > 1 {
                l.event = format!("{} x {}", l.count, l.event);
            } else if let Some(d) = detail {
                l.event = format!("{} ({d})", l.event);
            }
            l
        })
        .collect()
}

/// A moment where problems cluster.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Moment {
    /// The start of the one-second interval (RFC 3339, UTC).
    pub time: String,
    /// Sum of the weights of the problems in it.
    pub score: u32,
    /// What happened in it, by kind: "3 x TCP connection ... refused".
    pub problems: Vec<String>,
    pub first_frame: u64,
}

/// The seconds with the most weight of problems, counted as each family's events
/// arrive: ranking a whole capture then holds one family's events at a time (tens of
/// thousands of expert warnings on a big capture), not every family's at once.
#[derive(Default)]
pub struct Moments(BTreeMap<i64, Second>);

/// One second's problems: their weight, how often each was said, the first frame.
struct Second {
    score: u32,
    kinds: BTreeMap<Arc<str>, usize>,
    first_frame: u64,
}

impl Moments {
    pub fn add(&mut self, events: &[Event]) {
        for e in events.iter().filter(|e| e.weight > 0) {
            let s = self.0.entry(e.time.floor() as i64).or_insert(Second {
                score: 0,
                kinds: BTreeMap::new(),
                first_frame: e.frame,
            });
            s.score += e.weight;
            *s.kinds.entry(e.what.clone()).or_default() += 1;
            s.first_frame = s.first_frame.min(e.frame);
        }
    }

    /// The `n` worst seconds, worst first.
    pub fn top(self, n: usize) -> Vec<Moment> {
        let mut out: Vec<Moment> = self
            .0
            .into_iter()
            .map(|(sec, s)| {
                let mut ranked: Vec<(Arc<str>, usize)> = s.kinds.into_iter().collect();
                ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                Moment {
                    time: crate::report::rfc3339(sec as f64),
                    score: s.score,
                    problems: ranked
                        .iter()
                        .take(5)
                        .map(|(w, c)| {
                            if *c > 1 {
                                format!("{c} x {w}")
                            } else {
                                w.to_string()
                            }
                        })
                        .collect(),
                    first_frame: s.first_frame,
                }
            })
            .collect();
        out.sort_by(|a, b| b.score.cmp(&a.score).then(a.time.cmp(&b.time)));
        out.truncate(n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notable_moments(events: &[Event], n: usize) -> Vec<Moment> {
        let mut m = Moments::default();
        m.add(events);
        m.top(n)
    }

    fn ev(time: f64, frame: u64, what: &str, weight: u32) -> Event {
        Event {
            time,
            frame,
            family: "http",
            what: what.into(),
            detail: Some(format!("{frame} ms")),
            weight,
            filter: format!("frame.number == {frame}"),
        }
    }

    #[test]
    fn repeats_fold_into_their_first_line() {
        let lines = fold(
            vec![
                ev(10.5, 7, "GET / -> 200", 0),
                ev(10.0, 3, "GET / -> 200", 0),
                ev(10.2, 5, "GET /x -> 500", 3),
                ev(11.0, 9, "GET / -> 200", 0),
            ],
            10.0,
        );
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].event, "3 x GET / -> 200");
        assert_eq!(lines[0].frames, [3, 7, 9]);
        assert_eq!(lines[0].span_s, Some(1.0));
        assert_eq!(lines[1].event, "GET /x -> 500 (5 ms)");
        assert!(lines[1].problem);
        assert_eq!(lines[1].offset_s, 0.2);
    }

    #[test]
    fn moments_rank_by_problem_weight() {
        let m = notable_moments(
            &[
                ev(5.1, 1, "refused", 3),
                ev(5.9, 2, "refused", 3),
                ev(8.0, 3, "reset", 2),
                ev(9.0, 4, "fine", 0),
            ],
            5,
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].score, 6);
        assert_eq!(m[0].problems, ["2 x refused"]);
        assert_eq!(m[0].first_frame, 1);
    }
}
