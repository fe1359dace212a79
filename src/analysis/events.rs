//! Events: what happened when, from every family, on one time line. Each family turns
//! its index part into `Event`s; this module orders them, folds repeats ("25 x GET /
//! -> 200") and ranks the moments where bad things cluster.

use arcstr::ArcStr;
use std::collections::BTreeMap;

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
    /// message), tens of thousands on a big capture. Empty while scoring.
    pub what: ArcStr,
    /// How much it says something went wrong: 0 ordinary, 1 notable, 3 a failure.
    pub weight: u32,
    /// What only a moment's lines show; None while ranking or scoring (an event is
    /// then 64 bytes, and a big capture has hundreds of thousands of them).
    pub shown: Option<Box<Shown>>,
}

/// An event's per-occurrence text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Shown {
    /// Per-occurrence detail (a time taken, a client port), shown for single events.
    pub detail: Option<String>,
    /// The display filter that shows this occurrence.
    pub filter: String,
}

/// How many of the worst seconds a ranking names.
pub const TOP_SECONDS: usize = 10;

/// What a family is asked for.
#[derive(Debug, Clone, Copy)]
pub enum EventQuery {
    /// Every event between `from` and `to` (epoch seconds), with its text.
    Window { from: f64, to: f64 },
    /// The events with weight, with no text at all: their times and weights are what
    /// choose the worst seconds of a whole capture.
    Score,
    /// The events with weight in these seconds (epoch seconds, floored), with their
    /// sentence: the worst seconds' problems, once they are chosen.
    Seconds([i64; TOP_SECONDS], usize),
}

impl EventQuery {
    /// Whether an event lasting from `start` to `end` (a silence), placed at its
    /// start, is asked for: in a window, when any of it is.
    pub fn wants_span(&self, start: f64, end: f64, weight: u32) -> bool {
        match *self {
            Self::Window { from, to } => end >= from && start <= to,
            Self::Score => weight > 0,
            Self::Seconds(secs, n) => weight > 0 && secs[..n].contains(&(start.floor() as i64)),
        }
    }

    /// The event at `time` of `weight` when the query wants it, its sentence, detail
    /// and filter written by `text` only when they are shown: of a big capture's every
    /// connection, request and lookup, only the events kept cost strings.
    pub fn event(
        &self,
        (time, frame): (f64, u64),
        family: &'static str,
        weight: u32,
        text: impl FnOnce() -> (ArcStr, Option<String>, String),
    ) -> Option<Event> {
        self.event_span((time, time, frame), family, weight, text)
    }

    /// [`EventQuery::event`] for an event that lasts (see [`EventQuery::wants_span`]).
    pub fn event_span(
        &self,
        (start, end, frame): (f64, f64, u64),
        family: &'static str,
        weight: u32,
        text: impl FnOnce() -> (ArcStr, Option<String>, String),
    ) -> Option<Event> {
        if !self.wants_span(start, end, weight) {
            return None;
        }
        let (what, shown) = match self {
            Self::Score => (ArcStr::new(), None),
            Self::Seconds(..) => (text().0, None),
            Self::Window { .. } => {
                let (what, detail, filter) = text();
                (what, Some(Box::new(Shown { detail, filter })))
            }
        };
        Some(Event {
            time: start,
            frame,
            family,
            what,
            weight,
            shown,
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
        if let Some(syn) = s.syn_frame().filter(|_| state != "REJ") {
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
        if let Some((t, frame, by, rst)) = s.close() {
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
    let mut by_what: BTreeMap<(&'static str, ArcStr), usize> = BTreeMap::new();
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
                let Shown { detail, filter } = e.shown.map(|b| *b).unwrap_or_default();
                lines.push((
                    EventLine {
                        time: crate::report::rfc3339(e.time),
                        offset_s: crate::report::round(e.time - moment, 6),
                        family: e.family,
                        event: e.what.to_string(),
                        count: 1,
                        span_s: None,
                        frames: vec![e.frame],
                        display_filter: filter,
                        problem: e.weight > 0,
                    },
                    e.time,
                    detail,
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
    kinds: BTreeMap<ArcStr, usize>,
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
            // a scored event has no sentence: only its weight counts
            if !e.what.is_empty() {
                *s.kinds.entry(e.what.clone()).or_default() += 1;
            }
            s.first_frame = s.first_frame.min(e.frame);
        }
    }

    /// The seconds in rank order: most weight first, earlier first among equals.
    fn ranked(&self) -> Vec<(&i64, &Second)> {
        let mut secs: Vec<(&i64, &Second)> = self.0.iter().collect();
        secs.sort_by(|a, b| b.1.score.cmp(&a.1.score).then(a.0.cmp(b.0)));
        secs
    }

    /// The query for the problems of the [`TOP_SECONDS`] worst seconds: ranking a
    /// whole capture scores every second first, then has only those seconds' events
    /// written (a big capture's hundreds of thousands of sentences are never made).
    pub fn worst(&self) -> EventQuery {
        let secs = self.ranked();
        let mut worst = [0; TOP_SECONDS];
        for (w, &(&t, _)) in worst.iter_mut().zip(&secs) {
            *w = t;
        }
        EventQuery::Seconds(worst, secs.len().min(TOP_SECONDS))
    }

    /// The `n` worst seconds, worst first; text is written for those only.
    pub fn top(self, n: usize) -> Vec<Moment> {
        self.ranked()
            .into_iter()
            .take(n)
            .map(|(&sec, s)| {
                let mut ranked: Vec<(&ArcStr, &usize)> = s.kinds.iter().collect();
                ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                Moment {
                    time: crate::report::rfc3339(sec as f64),
                    score: s.score,
                    problems: ranked
                        .into_iter()
                        .take(5)
                        .map(|(w, &c)| {
                            if c > 1 {
                                format!("{c} x {w}")
                            } else {
                                w.to_string()
                            }
                        })
                        .collect(),
                    first_frame: s.first_frame,
                }
            })
            .collect()
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
            weight,
            shown: Some(Box::new(Shown {
                detail: Some(format!("{frame} ms")),
                filter: format!("frame.number == {frame}"),
            })),
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

    /// Ranking in two rounds (scores of every second, then the sentences of the worst
    /// ones) names the same moments as ranking every event with its sentence.
    #[test]
    fn two_rounds_rank_as_one() {
        // 30 seconds of problems of varying weight, some tied, with ordinary events
        let events: Vec<Event> = (0..300u64)
            .map(|i| {
                let sec = (i * 7) % 30;
                let weight = [0, 1, 2, 3][(i % 4) as usize] * u32::from(sec % 3 != 0);
                ev(
                    100.0 + sec as f64 + 0.01 * (i % 50) as f64,
                    i + 1,
                    &format!("kind {}", i % 6),
                    weight,
                )
            })
            .collect();
        let once = notable_moments(&events, TOP_SECONDS);

        let mut scores = Moments::default();
        let scored: Vec<Event> = events
            .iter()
            .filter(|e| EventQuery::Score.wants_span(e.time, e.time, e.weight))
            .map(|e| Event {
                what: ArcStr::new(),
                shown: None,
                ..e.clone()
            })
            .collect();
        scores.add(&scored);
        let worst = scores.worst();
        let chosen: Vec<Event> = events
            .iter()
            .filter(|e| worst.wants_span(e.time, e.time, e.weight))
            .cloned()
            .collect();
        assert!(chosen.len() < events.iter().filter(|e| e.weight > 0).count());
        let twice = notable_moments(&chosen, TOP_SECONDS);
        assert_eq!(format!("{once:?}"), format!("{twice:?}"));
        assert_eq!(once.len(), TOP_SECONDS);
    }
}
