//! `analyze_expert_information`: Wireshark's expert info grouped by severity, group,
//! protocol and message, with counts and first frames. tshark's `-z expert` table gives
//! the protocol and group names; a fields pass gives the frames.

use std::collections::BTreeMap;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::{Analysis, Span};
use crate::index::taps::{parse_expert_table, severity_of_code};
use crate::report::{Evidence, Finding, Report, Severity, Table, thousands};
use crate::server::PcapServer;
use crate::tools::{clamp_limit, clamp_offset, filter_string_literal};
use crate::tshark::fields::{FromRow, Row};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExpertParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Lowest severity to include: error, warning, note or chat (default: all, comments included).
    #[serde(default)]
    pub severity_filter: Option<String>,
    /// Wireshark display filter scoping the analysis.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Groups to list (default 30, max 500), most severe and most frequent first.
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExpertGroup {
    /// error, warning, note, chat or comment.
    pub severity: String,
    pub group: String,
    pub protocol: String,
    pub message: String,
    pub count: u64,
    pub first_frames: Vec<u64>,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExpertInfo {
    pub errors: u64,
    pub warnings: u64,
    pub notes: u64,
    pub chats: u64,
    pub comments: u64,
    pub groups: Table<ExpertGroup>,
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "error" => 4,
        "warning" => 3,
        "note" => 2,
        "chat" => 1,
        _ => 0,
    }
}

pub struct ExpertRow {
    frame: u64,
    time: Option<f64>,
    severities: Vec<u64>,
    messages: Vec<String>,
}

/// The first frames of each (severity, message) expert item; counts come from the
/// expert tap of the same pass.
#[derive(Default)]
pub struct ExpertFrames {
    span: Span,
    frames: BTreeMap<(String, String), Vec<u64>>,
    /// Every warning and error with its time, for events around a moment: (time,
    /// frame, index into `kinds`), at most [`MAX_OCCURRENCES`].
    occurrences: Vec<(f64, u64, u32)>,
    kinds: Vec<(String, String)>,
    /// Each kind's index in `kinds`, while the pass runs: a capture with thousands of
    /// distinct messages would otherwise scan the list for every warning.
    kind_index: crate::index::FastMap<(String, String), u32>,
}

/// The most expert warnings and errors kept with their times (16 bytes each).
const MAX_OCCURRENCES: usize = 200_000;

impl crate::index::Part for ExpertFrames {
    type Row = ExpertRow;
    fn new(_: &crate::index::Ctx) -> Self {
        Self::default()
    }
    /// The family's tshark filter was `_ws.expert`.
    fn wants(r: &Row<'_>) -> bool {
        r.str(2).is_some()
    }
    fn add(&mut self, r: ExpertRow) {
        self.span.add(r.time);
        for (sev, msg) in r.severities.iter().zip(&r.messages) {
            let key = (severity_of_code(*sev).to_string(), msg.clone());
            if *sev >= 0x0060_0000
                && self.occurrences.len() < MAX_OCCURRENCES
                && let Some(t) = r.time
            {
                let i = match self.kind_index.get(&key) {
                    Some(&i) => Some(i),
                    None if self.kinds.len() < 10_000 => {
                        let i = self.kinds.len() as u32;
                        self.kinds.push(key.clone());
                        self.kind_index.insert(key.clone(), i);
                        Some(i)
                    }
                    None => None,
                };
                if let Some(i) = i {
                    self.occurrences.push((t, r.frame, i));
                }
            }
            let v = self.frames.entry(key).or_default();
            if v.len() < 5 && v.last() != Some(&r.frame) {
                v.push(r.frame);
            }
        }
    }
    fn finish(&mut self) {
        self.kind_index = Default::default();
    }
    fn approx_bytes(&self) -> usize {
        self.frames
            .keys()
            .map(|(a, b)| 2 * (a.len() + b.len()) + 160)
            .sum::<usize>()
            + self.occurrences.capacity() * 24
    }
}

impl FromRow for ExpertRow {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.time_epoch",
        "_ws.expert.severity",
        "_ws.expert.message",
    ];
    fn from_row(r: &Row<'_>) -> Option<Self> {
        Some(Self {
            frame: r.u64(0)?,
            time: r.f64(1),
            severities: r.all(2).filter_map(|s| s.parse().ok()).collect(),
            messages: r.all(3).map(str::to_string).collect(),
        })
    }
}

#[tool_router(router = expert_router, vis = "pub(crate)")]
impl PcapServer {
    /// Wireshark's expert information grouped by severity, group, protocol and message,
    /// with counts and first frames; severity_filter keeps that severity and above.
    #[tool(
        name = "analyze_expert_information",
        annotations(
            title = "Expert information",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_expert_information(
        &self,
        Parameters(p): Parameters<ExpertParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<ExpertInfo>>, String> {
        if let Some(s) = &p.severity_filter
            && ![
                "error", "warning", "warn", "note", "chat", "comment", "all", "",
            ]
            .contains(&s.trim().to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "severity_filter {s:?} is not one of error, warning, note, chat, comment"
            ));
        }
        self.engine
            .analyze("analyze_expert_information", p, rc, expert)
            .await
    }
}

async fn expert(mut a: Analysis, p: ExpertParams) -> Result<Report<ExpertInfo>, String> {
    let min = match p
        .severity_filter
        .as_deref()
        .map(|s| s.trim().to_ascii_lowercase())
    {
        Some(s) if s == "warn" => 3,
        Some(s) if !s.is_empty() && s != "all" => severity_rank(&s),
        _ => 0,
    };
    let index = a.index().await?;
    let part = index.get::<ExpertFrames>()?;
    let (span, frames) = (part.span, &part.frames);
    let rows = parse_expert_table(&index.taps.expert);
    let total = |s: &str| {
        rows.iter()
            .filter(|r| r.severity == s)
            .map(|r| r.count)
            .sum::<u64>()
    };
    let (errors, warnings, notes, chats, comments) = (
        total("error"),
        total("warning"),
        total("note"),
        total("chat"),
        total("comment"),
    );
    let mut groups: Vec<ExpertGroup> = rows
        .into_iter()
        .filter(|r| severity_rank(&r.severity) >= min)
        .map(|r| {
            let first = frames
                .get(&(r.severity.clone(), r.summary.clone()))
                .cloned()
                .unwrap_or_default();
            ExpertGroup {
                display_filter: format!(
                    "_ws.expert.message == {}",
                    filter_string_literal(&r.summary)
                ),
                severity: r.severity,
                group: r.group,
                protocol: r.protocol,
                message: r.summary,
                count: r.count,
                first_frames: first,
            }
        })
        .collect();
    groups.sort_by(|x, y| {
        severity_rank(&y.severity)
            .cmp(&severity_rank(&x.severity))
            .then(y.count.cmp(&x.count))
    });
    let mut findings = Vec::new();
    for g in groups
        .iter()
        .filter(|g| severity_rank(&g.severity) >= 3)
        .take(8)
    {
        findings.push(Finding::new(
            if g.severity == "error" {
                Severity::Medium
            } else {
                Severity::Low
            },
            format!("{} x {} {}: {}", g.count, g.protocol, g.severity, g.message),
            format!("Wireshark's {} expert ({} group).", g.protocol, g.group),
            Evidence {
                frames: g.first_frames.clone(),
                display_filter: g.display_filter.clone(),
                ..Default::default()
            },
        ));
    }
    let summary = format!(
        "Expert info in {}: {} error(s), {} warning(s), {} note(s), {} chat(s){}; {} distinct message group(s){}.",
        a.file.display_name,
        thousands(errors),
        thousands(warnings),
        thousands(notes),
        thousands(chats),
        if comments > 0 {
            format!(", {comments} comment(s)")
        } else {
            String::new()
        },
        groups.len(),
        if min > 0 {
            format!(
                " at or above {}",
                p.severity_filter.clone().unwrap_or_default()
            )
        } else {
            String::new()
        }
    );
    let data = ExpertInfo {
        errors,
        warnings,
        notes,
        chats,
        comments,
        groups: Table::page(groups, clamp_offset(p.offset), clamp_limit(p.limit, 30)),
    };
    a.report(summary, findings, data, span, None).await
}

/// Expert warnings and errors for get_events_around. TCP's own analysis warnings
/// (retransmissions, holes, zero windows) are left to the TCP events, which tell
/// their story per connection.
pub async fn events(
    mut a: Analysis,
    q: crate::analysis::events::EventQuery,
) -> Result<Vec<crate::analysis::events::Event>, String> {
    let x = a.part::<ExpertFrames>().await?;
    let tcp_analysis = [
        "retransmission",
        "segment not captured",
        "out-of-order",
        "dup ack",
        "zero window",
        "window is full",
        "keep-alive",
        "acked segment that wasn't captured",
        "window update",
        "previous segment",
        "sack",
        "connection reset",
    ];
    // once per kind of message, not per occurrence: whether the TCP view tells it,
    // and its sentence, which every occurrence shares
    let kinds: Vec<Option<(u32, arcstr::ArcStr)>> = x
        .kinds
        .iter()
        .map(|(sev, msg)| {
            let lower = msg.to_ascii_lowercase();
            if tcp_analysis.iter().any(|t| lower.contains(t)) {
                return None;
            }
            let weight = if sev == "error" { 3 } else { 1 };
            let what = format!(
                "Expert {sev}: {}",
                msg.chars().take(160).collect::<String>()
            );
            Some((weight, what.into()))
        })
        .collect();
    let mut out = Vec::new();
    for &(time, frame, i) in &x.occurrences {
        let Some((weight, what)) = &kinds[i as usize] else {
            continue;
        };
        out.extend(q.event((time, frame), "expert", *weight, || {
            (what.clone(), None, format!("frame.number == {frame}"))
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::index::taps::parse_expert_table;

    #[test]
    fn parses_recorded_expert_table() {
        // recorded: tshark 4.0.17 -q -z expert on arkime-wireshark-retrans.pcap (excerpt)
        let text = "\nErrors (9)\n=============\n   Frequency      Group           Protocol  Summary\n           9  Malformed                TCP  New fragment overlaps old data (retransmission?)\n\nNotes (102)\n=============\n   Frequency      Group           Protocol  Summary\n          47   Sequence                TCP  This frame is a (suspected) retransmission\n           4   Sequence               HTTP  POST /exhmedmx HTTP/1.1\\r\\n\n";
        let rows = parse_expert_table(text);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].severity, "error");
        assert_eq!(rows[0].group, "Malformed");
        assert_eq!(rows[0].protocol, "TCP");
        assert_eq!(
            rows[0].summary,
            "New fragment overlaps old data (retransmission?)"
        );
        assert_eq!(rows[1].count, 47);
        assert_eq!(rows[2].protocol, "HTTP");
        // recorded: zeek-trunc-ip6-ext-trunc.pcap, a protocol name with a space
        let text = "\nErrors (1)\n=============\n   Frequency      Group           Protocol  Summary\n           1  Malformed    IPv6 Hop-by-Hop  Malformed Packet (Exception occurred)\n";
        let rows = parse_expert_table(text);
        assert_eq!(rows[0].protocol, "IPv6 Hop-by-Hop");
        assert_eq!(rows[0].summary, "Malformed Packet (Exception occurred)");
    }
}
