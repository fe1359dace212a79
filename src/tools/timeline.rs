//! `generate_traffic_timeline`: the capture in time buckets (packets, bytes, bit rate)
//! with the events that matter per bucket, the busiest bucket, bursts and idle gaps.

use std::collections::BTreeMap;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::time::{MAX_BUCKETS, choose_interval};
use crate::engine::{Analysis, Span};
use crate::report::{
    Evidence, Finding, Report, Severity, Table, human_bits_per_s, rfc3339, round, thousands,
};
use crate::server::PcapServer;
use crate::tshark::fields::{FromRow, Row};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TimelineParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Bucket width in seconds (fractions allowed). Default: chosen so the capture spans about 60 buckets.
    #[serde(default)]
    pub time_interval: Option<f64>,
    /// Wireshark display filter scoping the analysis.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
}

#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Bucket {
    /// Seconds from the first packet to the start of this bucket.
    pub start_s: f64,
    pub start_time: String,
    pub packets: u64,
    pub bytes: u64,
    pub bits_per_s: f64,
    /// TCP connection attempts (SYN without ACK).
    pub new_connections: u64,
    pub resets: u64,
    pub retransmissions: u64,
    /// DNS failures: queries never answered, and SERVFAIL/REFUSED answers (NXDOMAIN is an answer).
    pub dns_failures: u64,
    pub tls_alerts: u64,
    /// First frame in the bucket, to jump there in Wireshark.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_frame: Option<u64>,
    /// The first frame of each kind of event (resets, retransmissions, DNS failures,
    /// TLS alerts) in the bucket: the evidence of its finding.
    #[serde(skip)]
    #[schemars(skip)]
    first_event: [Option<u64>; 4],
}

impl Bucket {
    fn event(&mut self, kind: usize, frame: u64) {
        let e = &mut self.first_event[kind];
        *e = Some(e.map_or(frame, |f| f.min(frame)));
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Gap {
    pub after_frame: u64,
    pub start_s: f64,
    pub duration_s: f64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Timeline {
    /// The bucket width used, in seconds.
    pub interval_s: f64,
    /// Set when the requested interval was too fine for the span and was widened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coarsened_from_s: Option<f64>,
    pub buckets: Table<Bucket>,
    /// Index of the busiest bucket by bytes.
    pub busiest_bucket: Option<usize>,
    pub peak_bits_per_s: f64,
    pub average_bits_per_s: f64,
    /// Buckets well above the typical rate.
    pub bursts: Vec<usize>,
    /// The longest silences between consecutive packets.
    pub idle_gaps: Vec<Gap>,
}

pub struct TimelineRow {
    frame: u64,
    time: Option<f64>,
    len: u64,
    syn: bool,
    ack: bool,
    reset: bool,
    retrans: bool,
    /// Some(false) for a DNS query, Some(true) for a response (mDNS/LLMNR left out:
    /// unanswered multicast queries are normal).
    dns_response: Option<bool>,
    dns_rcode: Option<u64>,
    tls_alert: bool,
    /// The query frame a response answers.
    dns_response_to: Option<u64>,
    dns_retransmission: bool,
    /// For a DNS query: its question (see `analysis::dns::Retries`).
    dns_question: Option<u64>,
}

impl FromRow for TimelineRow {
    const FIELDS: &'static [&'static str] = crate::with_question_fields![
        "frame.number",
        "frame.time_epoch",
        "frame.len",
        "tcp.flags.syn",
        "tcp.flags.ack",
        "tcp.flags.reset",
        "tcp.analysis.retransmission",
        "dns.flags.response",
        "dns.flags.rcode",
        "tls.alert_message.desc",
        "dns.response_to",
        "dns.retransmission",
        "mdns",
        "llmnr",
    ];

    fn from_row(r: &Row<'_>) -> Option<Self> {
        Some(Self {
            frame: r.u64(0)?,
            time: r.f64(1),
            len: r.u64(2).unwrap_or(0),
            syn: r.flag(3),
            ack: r.flag(4),
            reset: r.flag(5),
            retrans: r.str(6).is_some(),
            dns_response: (r.str(7).is_some() && r.str(12).is_none() && r.str(13).is_none())
                .then(|| r.flag(7)),
            dns_rcode: r.u64(8),
            tls_alert: r.str(9).is_some(),
            dns_response_to: r.u64(10),
            dns_retransmission: r.str(11).is_some(),
            dns_question: (r.str(7).is_some() && !r.flag(7))
                .then(|| crate::analysis::dns::question_key(r, Self::FIELDS)),
        })
    }
}

#[tool_router(router = timeline_router, vis = "pub(crate)")]
impl PcapServer {
    /// Traffic over time: per bucket packets, bytes, bit rate and the events that matter
    /// (new connections, resets, retransmissions, DNS failures, TLS alerts); busiest
    /// bucket, bursts and idle gaps. Buckets add up to the packet count.
    #[tool(
        name = "generate_traffic_timeline",
        annotations(
            title = "Traffic timeline",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn generate_traffic_timeline(
        &self,
        Parameters(p): Parameters<TimelineParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Timeline>>, String> {
        crate::tools::check_seconds("time_interval", p.time_interval)?;
        self.engine
            .analyze("generate_traffic_timeline", p, rc, timeline)
            .await
    }
}

/// The timeline's part of the index: buckets of one width, DNS queries and answers to
/// pair, and the longest idle gaps.
#[derive(Clone, Default)]
pub struct TimelineState {
    start: Option<f64>,
    buckets: BTreeMap<u64, Bucket>,
    dns_queries: Vec<(u64, u64)>,
    dns_answered: std::collections::BTreeSet<u64>,
    /// Questions asked again, while the pass runs.
    retries: crate::analysis::dns::Retries,
    span: Span,
    last: Option<(u64, f64)>,
    gaps: Vec<Gap>,
    base: f64,
}

impl crate::index::Part for TimelineState {
    type Row = TimelineRow;
    /// Buckets of the width a call without `time_interval` shows.
    fn new(ctx: &crate::index::Ctx) -> Self {
        let span_hint = ctx.window.span_s;
        let (interval, _) = choose_interval(None, span_hint);
        Self::with_base(base_width(interval, span_hint), ctx.window.start)
    }
    fn add(&mut self, r: TimelineRow) {
        self.span.add(r.time);
        let t = r.time.unwrap_or(0.0);
        let t0 = *self.start.get_or_insert(t);
        if let Some((frame, prev)) = self.last {
            let gap = t - prev;
            if gap > 0.0 && (self.gaps.len() < 5 || gap > self.gaps[self.gaps.len() - 1].duration_s)
            {
                self.gaps.push(Gap {
                    after_frame: frame,
                    start_s: round(prev - t0, 6),
                    duration_s: round(gap, 6),
                });
                self.gaps
                    .sort_by(|x, y| y.duration_s.total_cmp(&x.duration_s));
                self.gaps.truncate(5);
            }
        }
        self.last = Some((r.frame, t));
        let idx = crate::index::time_bucket(t, t0, self.base);
        let b = self.buckets.entry(idx).or_default();
        b.packets += 1;
        b.bytes += r.len;
        b.first_frame.get_or_insert(r.frame);
        b.new_connections += u64::from(r.syn && !r.ack);
        b.resets += u64::from(r.reset);
        b.retransmissions += u64::from(r.retrans);
        if r.reset {
            b.event(0, r.frame);
        }
        if r.retrans {
            b.event(1, r.frame);
        }
        if r.tls_alert {
            b.event(3, r.frame);
        }
        match r.dns_response {
            // the one definition: SERVFAIL/REFUSED answers, and (below) no answer at all
            Some(true) => {
                if let Some(q) = r.dns_response_to {
                    self.dns_answered.insert(q);
                    // an answer to a retry answers the question its first query asked
                    if let Some(first) = self.retries.answer(q) {
                        self.dns_answered.insert(first);
                    }
                }
                if crate::definitions::dns_failed(true, r.dns_rcode) {
                    b.dns_failures += 1;
                    b.event(2, r.frame);
                }
            }
            Some(false) => {
                let retry = r
                    .dns_question
                    .is_some_and(|k| self.retries.query(r.frame, k).is_some());
                if !r.dns_retransmission && !retry {
                    self.dns_queries.push((r.frame, idx));
                }
            }
            _ => {}
        }
        b.tls_alerts += u64::from(r.tls_alert);
    }
    fn finish(&mut self) {
        self.retries = Default::default();
    }
    fn approx_bytes(&self) -> usize {
        self.buckets.len() * (std::mem::size_of::<Bucket>() + 64)
            + self.dns_queries.len() * 16
            + self.dns_answered.len() * 24
    }
}

/// The width the pass counts in: fine enough for the interval shown, and never more
/// than ~100k buckets in memory.
fn base_width(interval: f64, span_hint: f64) -> f64 {
    interval.max(span_hint / 100_000.0)
}

impl TimelineState {
    fn with_base(base: f64, start: Option<f64>) -> Self {
        Self {
            start,
            base,
            ..Self::default()
        }
    }
}

async fn timeline(mut a: Analysis, p: TimelineParams) -> Result<Report<Timeline>, String> {
    let window = a.window().await;
    let span_hint = window.span_s;
    let (interval, coarsened) = choose_interval(p.time_interval, span_hint);
    let base = base_width(interval, span_hint);
    let indexed = a.part::<TimelineState>().await?;
    let state = if indexed.base == base {
        // the report consumes what it shows; the index keeps its own copy
        (*indexed).clone()
    } else {
        // a width the index does not count in: this call's own pass, same reducer
        crate::index::own_pass(&mut a, TimelineState::with_base(base, window.start)).await?
    };
    let TimelineState {
        start,
        mut buckets,
        dns_queries,
        dns_answered,
        span,
        gaps,
        ..
    } = state;

    for (frame, idx) in dns_queries {
        if !dns_answered.contains(&frame) {
            let b = buckets.entry(idx).or_default();
            b.dns_failures += 1;
            b.event(2, frame);
        }
    }
    // Without the file's span (unreadable by our reader) the span is only known now:
    // choose the width and regroup.
    let actual_span = span.duration();
    let (interval, coarsened) = if span_hint <= 0.0 {
        choose_interval(p.time_interval, actual_span)
    } else {
        (interval, coarsened)
    };
    let t0 = start.unwrap_or(0.0);
    let n = ((actual_span.max(span_hint) / interval).floor() as usize + 1).min(MAX_BUCKETS + 1);
    let mut out: Vec<Bucket> = (0..n)
        .map(|i| {
            let s = i as f64 * interval;
            Bucket {
                start_s: round(s, 6),
                start_time: rfc3339(t0 + s),
                ..Default::default()
            }
        })
        .collect();
    for (idx, b) in buckets {
        let i = ((idx as f64 * base) / interval + 1e-9).floor() as usize;
        let o = &mut out[i.min(n - 1)];
        o.packets += b.packets;
        o.bytes += b.bytes;
        o.new_connections += b.new_connections;
        o.resets += b.resets;
        o.retransmissions += b.retransmissions;
        o.dns_failures += b.dns_failures;
        o.tls_alerts += b.tls_alerts;
        if o.first_frame.is_none() || b.first_frame < o.first_frame {
            o.first_frame = b.first_frame;
        }
        for (k, f) in b.first_event.iter().enumerate() {
            if let Some(f) = *f {
                o.event(k, f);
            }
        }
    }
    for b in &mut out {
        b.bits_per_s = round(b.bytes as f64 * 8.0 / interval, 1);
    }
    let total_bytes: u64 = out.iter().map(|b| b.bytes).sum();
    let busiest = out
        .iter()
        .enumerate()
        .max_by_key(|(_, b)| b.bytes)
        .map(|(i, _)| i)
        .filter(|_| total_bytes > 0);
    let peak = busiest.map(|i| out[i].bits_per_s).unwrap_or(0.0);
    let average = round(
        crate::definitions::average_bits_per_s(total_bytes, actual_span),
        1,
    );
    let mut sorted: Vec<u64> = out.iter().map(|b| b.bytes).filter(|b| *b > 0).collect();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    let bursts: Vec<usize> = out
        .iter()
        .enumerate()
        .filter(|(_, b)| out.len() >= 4 && median > 0 && b.bytes >= median.saturating_mul(4))
        .map(|(i, _)| i)
        .collect();

    let mut findings = Vec::new();
    if let Some(i) = busiest {
        let b = &out[i];
        findings.push(Finding::new(
            Severity::Info,
            format!(
                "Busiest interval at +{:.1} s: {}",
                b.start_s,
                human_bits_per_s(b.bits_per_s)
            ),
            format!(
                "{} packets, {} bytes in {interval} s (capture average {}).",
                thousands(b.packets),
                thousands(b.bytes),
                human_bits_per_s(average)
            ),
            bucket_evidence(b, t0, interval),
        ));
    }
    if !bursts.is_empty() {
        let first = &out[bursts[0]];
        findings.push(Finding::new(
            Severity::Low,
            format!(
                "{} burst interval(s) at 4x or more the median rate",
                bursts.len()
            ),
            format!(
                "First burst at +{:.1} s ({}).",
                first.start_s,
                human_bits_per_s(first.bits_per_s)
            ),
            bucket_evidence(first, t0, interval),
        ));
    }
    type EventCount = fn(&Bucket) -> u64;
    // the index is the event's slot in Bucket::first_event
    let per_event: [(&str, EventCount, &str, Severity); 4] = [
        (
            "TCP resets",
            |b: &Bucket| b.resets,
            "tcp.flags.reset == 1",
            Severity::Low,
        ),
        (
            "retransmissions",
            |b: &Bucket| b.retransmissions,
            "tcp.analysis.retransmission",
            Severity::Low,
        ),
        (
            "DNS failures",
            |b: &Bucket| b.dns_failures,
            "(dns.flags.response == 1 && dns.flags.rcode in {2,5}) || (dns.flags.response == 0 && !dns.response_in && !mdns && !llmnr)",
            Severity::Low,
        ),
        (
            "TLS alerts",
            |b: &Bucket| b.tls_alerts,
            "tls.alert_message",
            Severity::Low,
        ),
    ];
    for (kind, (name, f, filter, sev)) in per_event.into_iter().enumerate() {
        let total: u64 = out.iter().map(f).sum();
        if total == 0 {
            continue;
        }
        let (wi, worst) = out
            .iter()
            .enumerate()
            .max_by_key(|(_, b)| f(b))
            .expect("non-empty");
        findings.push(Finding::new(
            sev,
            format!(
                "{} {name}, most at +{:.1} s",
                thousands(total),
                worst.start_s
            ),
            format!("{} of them in bucket {wi} ({} s wide).", f(worst), interval),
            Evidence {
                frames: worst.first_event[kind].into_iter().collect(),
                display_filter: filter.to_string(),
                ..bucket_evidence(worst, t0, interval)
            },
        ));
    }
    if let Some(g) = gaps
        .first()
        .filter(|g| g.duration_s >= (interval * 2.0).max(1.0))
    {
        findings.push(Finding::new(
            Severity::Info,
            format!("Longest silence: {:.1} s after frame {}", g.duration_s, g.after_frame),
            "No packet at all was captured in this gap (idle traffic, a capture filter, or a paused capture).",
            Evidence {
                frames: vec![g.after_frame, g.after_frame + 1],
                display_filter: format!("frame.number >= {} && frame.number <= {}", g.after_frame, g.after_frame + 1),
                ..Default::default()
            },
        ));
    }
    let summary = format!(
        "{} packets over {:.1} s in {} bucket(s) of {interval} s{}. Average {}, peak {}{}.",
        thousands(span.packets),
        actual_span,
        out.len(),
        coarsened
            .map(|c| format!(
                " (widened from the requested {c} s to stay under {MAX_BUCKETS} buckets)"
            ))
            .unwrap_or_default(),
        human_bits_per_s(average),
        human_bits_per_s(peak),
        busiest
            .map(|i| format!(" at +{:.1} s", out[i].start_s))
            .unwrap_or_default(),
    );
    let n_out = out.len();
    let data = Timeline {
        interval_s: interval,
        coarsened_from_s: coarsened,
        buckets: Table::top(out, n_out.max(1)),
        busiest_bucket: busiest,
        peak_bits_per_s: peak,
        average_bits_per_s: average,
        bursts,
        idle_gaps: gaps,
    };
    a.report(summary, findings, data, span, None).await
}

fn bucket_evidence(b: &Bucket, t0: f64, interval: f64) -> Evidence {
    // rounded down to the microsecond, so float noise never leaves the bucket's first
    // packet outside its own filter
    let from = ((t0 + b.start_s) * 1e6).floor() / 1e6;
    Evidence {
        frames: b.first_frame.into_iter().collect(),
        time: Some(b.start_time.clone()),
        display_filter: format!(
            "frame.time_epoch >= {from:.6} && frame.time_epoch < {:.6}",
            from + interval
        ),
        ..Default::default()
    }
}
