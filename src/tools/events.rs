//! `get_events_around`: one time line of what every family saw around a moment —
//! connections opened, refused, reset and closed, DNS answers and unanswered questions,
//! HTTP requests with status and time, TLS handshakes and alerts, ICMP errors, expert
//! warnings and errors, silences in the capture — folded where it repeats; without a
//! moment, the seconds where problems cluster, ranked.
//!
//! A view over the capture index: each family's events come from its own part
//! (`tools::EVENT_SOURCES`), so the numbers are the ones its own tool reports.

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::events::{EventLine, EventQuery, Moment, Moments, TOP_SECONDS, fold};
use crate::engine::{Analysis, FileArgs, Span};
use crate::report::{Evidence, Finding, Report, Severity, rfc3339};
use crate::server::PcapServer;
use crate::timescope::TimeScope;
use crate::tools::{clamp_limit, clamp_offset};

/// The widest window a call may ask for, in seconds on each side.
const MAX_WINDOW_S: f64 = 3600.0;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EventsParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// The moment: an RFC 3339 instant, a time of day (`14:03:10`, in `timezone`) or
    /// seconds after the first packet (`+120`). Omit it for the capture's notable
    /// moments, ranked.
    #[serde(default)]
    pub time: Option<String>,
    /// Seconds on each side of `time` (default 10, at most 3600).
    #[serde(default)]
    pub window_s: Option<f64>,
    /// Time zone of a time of day: `+02:00` or an IANA name. Default UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Optional Wireshark display filter that scopes the events, e.g. `ip.addr == 10.0.0.5`.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Lines to list (default 40, max 500).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Lines to skip, for paging.
    #[serde(default)]
    pub offset: Option<i64>,
}

/// The moment is resolved here, against the capture's clock; the scope is the filter.
impl FileArgs for EventsParams {
    fn pcap_file(&self) -> &str {
        &self.pcap_file
    }
    fn display_filter(&self) -> Option<&str> {
        self.display_filter.as_deref()
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EventsAround {
    /// The moment asked about (RFC 3339, UTC), and the window around it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_s: Option<f64>,
    /// Events in the window (before folding repeats).
    pub events: usize,
    /// Of them, problems (refused, reset, unanswered, failed, errors).
    pub problems: usize,
    /// Lines after folding repeats, in time order.
    pub total_lines: usize,
    pub offset: usize,
    pub lines: Vec<EventLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
    /// The seconds where problems cluster, worst first (the whole capture when no
    /// moment is given, else the window).
    pub notable_moments: Vec<Moment>,
}

#[tool_router(router = events_router, vis = "pub(crate)")]
impl PcapServer {
    /// What happened around a moment, on one time line: TCP connections opened,
    /// refused, reset and closed; DNS, HTTP and TLS outcomes; ICMP errors; expert
    /// warnings; silences; repeats folded ("25 x GET / -> 200"), with frames. Without
    /// a time: the moments where problems cluster.
    #[tool(
        name = "get_events_around",
        annotations(
            title = "Events around a moment",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn get_events_around(
        &self,
        Parameters(p): Parameters<EventsParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<EventsAround>>, String> {
        if let Some(w) = p.window_s
            && (!w.is_finite() || w <= 0.0 || w > MAX_WINDOW_S)
        {
            return Err(format!(
                "window_s must be more than 0 and at most {MAX_WINDOW_S} seconds, got {w}"
            ));
        }
        self.engine
            .analyze("get_events_around", p, rc, events_around)
            .await
    }
}

async fn events_around(a: Analysis, p: EventsParams) -> Result<Report<EventsAround>, String> {
    let facts = a.summary().await?;
    let moment = match p.time.as_deref().filter(|t| !t.trim().is_empty()) {
        None => None,
        Some(t) => {
            let (Some(first), Some(last)) = (facts.first_ns, facts.last_ns) else {
                return Err("the capture has no timestamps to place a moment in".into());
            };
            let scope = TimeScope {
                start_time: Some(t.to_string()),
                end_time: None,
                timezone: p.timezone.clone(),
            };
            let range = scope
                .resolve(first, last)
                .map_err(|e| e.replace("start_time", "time"))?;
            range.and_then(|r| r.start_ns).map(|ns| ns as f64 / 1e9)
        }
    };
    let window = p.window_s.unwrap_or(10.0);
    if let (Some(t), Some(first), Some(last)) = (moment, facts.first_epoch, facts.last_epoch)
        && (t + window < first || t - window > last)
    {
        return Err(format!(
            "time {} is more than window_s ({window} s) outside the capture, which runs from {} to {}: give a moment inside it (or \"+seconds\" after its start)",
            rfc3339(t),
            rfc3339(first),
            rfc3339(last)
        ));
    }
    let q = match moment {
        Some(t) => EventQuery::Window {
            from: t - window,
            to: t + window,
        },
        None => EventQuery::Score,
    };
    // each family's events are ranked as they come; only around a moment are they
    // all kept, to be folded into lines
    let mut events = Vec::new();
    let mut ranking = Moments::default();
    let (mut problems, mut event_count) = (0, 0);
    for source in crate::tools::EVENT_SOURCES {
        let got = source(a.sibling(), q).await?;
        problems += got.iter().filter(|e| e.weight > 0).count();
        event_count += got.len();
        ranking.add(&got);
        if moment.is_some() {
            events.extend(got);
        }
    }
    if moment.is_none() {
        // the worst seconds are chosen by score; then only their problems are written
        let worst = ranking.worst();
        ranking = Moments::default();
        for source in crate::tools::EVENT_SOURCES {
            ranking.add(&source(a.sibling(), worst).await?);
        }
    }
    let moments = ranking.top(TOP_SECONDS);
    let lines = match moment {
        Some(t) => fold(events, t),
        None => Vec::new(),
    };
    let total_lines = lines.len();
    let limit = clamp_limit(p.limit, 40);
    let offset = clamp_offset(p.offset).min(total_lines);
    let page: Vec<EventLine> = lines.into_iter().skip(offset).take(limit).collect();
    let next_offset = (offset + page.len() < total_lines).then_some(offset + page.len());

    let mut findings = Vec::new();
    let summary = match moment {
        Some(t) => {
            let first_problem = page.iter().find(|l| l.problem);
            format!(
                "{} event(s) within {window} s of {}: {} problem(s){}",
                event_count,
                rfc3339(t),
                problems,
                first_problem
                    .map(|l| format!("; first: {} at {}", l.event, l.time))
                    .unwrap_or_default()
            )
        }
        None => match moments.first() {
            Some(m) => {
                findings.push(Finding::new(
                    Severity::Info,
                    format!("Most problems at {}", m.time),
                    m.problems.join("; "),
                    Evidence {
                        frames: vec![m.first_frame],
                        time: Some(m.time.clone()),
                        display_filter: format!("frame.number == {}", m.first_frame),
                        ..Default::default()
                    },
                ));
                format!(
                    "{} problem event(s) in the capture; the worst second is {} ({}): call again with time = \"{}\" to see everything around it",
                    problems,
                    m.time,
                    m.problems.join("; "),
                    m.time
                )
            }
            None => "No problem events (refused, reset or unanswered connections, DNS or HTTP errors, failed TLS handshakes) in this capture: give a time to see what happened around it".into(),
        },
    };
    let span = Span::of_file(&facts);
    let data = EventsAround {
        moment: moment.map(rfc3339),
        window_s: moment.map(|_| window),
        events: event_count,
        problems,
        total_lines,
        offset,
        lines: page,
        next_offset,
        notable_moments: moments,
    };
    a.report(summary, findings, data, span, None).await
}
