//! `compare_captures`: what changed between two captures (before/after a change, good
//! day/bad day), and — when both saw the same TCP flows from two points of one path —
//! where loss and delay enter between them.
//!
//! Both files get their own capture index; every family's numbers come from its own
//! tool's reduction (`tools::COMPARE_SOURCES`), hosts and conversations from the
//! topology's table, findings from the triage's checks. Aligning packets across the two
//! files needs every packet's header fields, which no index holds: that is one pass of
//! its own over each file, run only when they share flows.

use std::collections::{BTreeMap, BTreeSet};

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::compare::{Aligner, Alignment, MetricChange, SegRow, diff};
use crate::analysis::hosts::{TopoState, is_unicast};
use crate::engine::{Analysis, FileArgs};
use crate::model::tcp::TcpModel;
use crate::report::{Evidence, Finding, Report, Severity, Table, finding_kind, thousands};
use crate::server::PcapServer;
use crate::tools::clamp_limit;
use crate::tshark::fields::{FromRow, Row, field_args};

/// The most hosts and conversations listed as new or gone on each side.
const LISTED: usize = 10;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CompareParams {
    /// The first capture ("before", or the client side): a name in PCAP_STORAGE_DIR
    /// or a path inside an allowed directory.
    pub pcap_a: String,
    /// The second capture ("after", or the server side).
    pub pcap_b: String,
    /// Optional Wireshark display filter applied to both captures.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Align packets of the TCP flows both captures saw, to find loss and delay between
    /// the two capture points (default: whenever they share flows).
    #[serde(default)]
    pub align: Option<bool>,
    /// Metric changes listed (default 25, max 500); the ones that got worse first.
    #[serde(default)]
    pub limit: Option<i64>,
}

impl FileArgs for CompareParams {
    fn pcap_file(&self) -> &str {
        &self.pcap_a
    }
    fn display_filter(&self) -> Option<&str> {
        self.display_filter.as_deref()
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Side {
    pub file: String,
    pub packets: u64,
    pub duration_s: f64,
    pub hosts: usize,
    pub conversations: usize,
    pub tcp_connections: usize,
    /// Findings of the triage's checks (above info).
    pub findings: usize,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Conversation {
    pub a: String,
    pub b: String,
    pub frames: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FindingChange {
    pub tool: String,
    pub severity: Severity,
    pub title: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Comparison {
    pub a: Side,
    pub b: Side,
    /// Every family's numbers side by side: worse, better, changed volumes first.
    pub metrics: Table<MetricChange>,
    pub hosts_only_in_a: Vec<String>,
    pub hosts_only_in_a_count: usize,
    pub hosts_only_in_b: Vec<String>,
    pub hosts_only_in_b_count: usize,
    /// Conversations (address pairs) of one side only, most bytes first.
    pub conversations_only_in_a: Table<Conversation>,
    pub conversations_only_in_b: Table<Conversation>,
    /// Findings of b whose kind a did not have, and the other way round.
    pub findings_appeared: Vec<FindingChange>,
    pub findings_gone: Vec<FindingChange>,
    /// Present when both captures saw the same TCP flows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alignment: Option<Alignment>,
}

#[tool_router(router = compare_router, vis = "pub(crate)")]
impl PcapServer {
    /// Compares two captures: every family's metrics side by side (loss, errors,
    /// latency and throughput distributions, protocols), hosts and conversations new or
    /// gone, findings that appeared or disappeared; for two points of one path, the
    /// packets lost and the delay between them.
    #[tool(
        name = "compare_captures",
        annotations(
            title = "Compare two captures",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn compare_captures(
        &self,
        Parameters(p): Parameters<CompareParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Comparison>>, String> {
        self.engine
            .analyze("compare_captures", p, rc, compare)
            .await
    }
}

struct SideFacts {
    side: Side,
    metrics: Vec<crate::analysis::compare::Metric>,
    hosts: BTreeSet<String>,
    convs: BTreeMap<(String, String), (u64, u64)>,
    findings: Vec<(String, Finding)>,
    flows: BTreeSet<(String, u64, String, u64)>,
}

async fn facts(a: &mut Analysis) -> Result<SideFacts, String> {
    let mut metrics = Vec::new();
    for source in crate::tools::COMPARE_SOURCES {
        metrics.extend(source(a.sibling()).await?);
    }
    // read through this analysis, so its commands list the index pass
    let topo = a.part::<TopoState>().await?;
    let tcp = a.part::<TcpModel>().await?;
    let hosts: BTreeSet<String> = topo
        .hosts
        .keys()
        .filter(|h| is_unicast(h))
        .map(|h| h.to_string())
        .collect();
    let convs = topo
        .edges
        .iter()
        .filter(|((x, y), _)| is_unicast(x) && is_unicast(y))
        .map(|((x, y), e)| ((x.to_string(), y.to_string()), (e.frames, e.bytes)))
        .collect::<BTreeMap<_, _>>();
    let mut findings = Vec::new();
    for (c, found) in crate::tools::run_checks(a).await? {
        findings.extend(found.into_iter().flatten().map(|f| (c.tool.to_string(), f)));
    }
    // a flow by its endpoints, lower first: the same connection seen from either side
    let flows = tcp
        .streams
        .iter()
        .map(|s| {
            let x = (s.addr[0].to_string(), s.port()[0]);
            let y = (s.addr[1].to_string(), s.port()[1]);
            let (l, h) = if x <= y { (x, y) } else { (y, x) };
            (l.0, l.1, h.0, h.1)
        })
        .collect();
    Ok(SideFacts {
        side: Side {
            file: a.file.display_name.clone(),
            packets: topo.span.packets,
            duration_s: (topo.span.duration() * 1e6).round() / 1e6,
            hosts: hosts.len(),
            conversations: convs.len(),
            tcp_connections: tcp.streams.len(),
            findings: findings.len(),
        },
        metrics,
        hosts,
        convs,
        findings,
        flows,
    })
}

/// One pass of its own over each file: the header fields of every TCP packet of the
/// shared flows (no index holds per-packet fields), fed to the aligner.
async fn align(a: &mut Analysis, b: &mut Analysis) -> Result<Alignment, String> {
    let mut aligner = Aligner::default();
    let n = SegRow::FIELDS.len();
    let args = field_args(SegRow::FIELDS);
    a.run_lines(Some("tcp"), &args, |line| {
        if let Some(r) = SegRow::from_row(&Row::parse(line, n)) {
            aligner.add_a(r);
        }
    })
    .await?;
    aligner.start_b();
    b.run_lines(Some("tcp"), &args, |line| {
        if let Some(r) = SegRow::from_row(&Row::parse(line, n)) {
            aligner.add_b(r);
        }
    })
    .await?;
    Ok(aligner.finish())
}

/// A display filter for one flow direction written `addr:port`.
fn direction_filter(from: &str, to: &str) -> String {
    let split = |e: &str| {
        let (a, p) = crate::report::split_endpoint(e);
        (a.to_string(), p.unwrap_or(0))
    };
    let (sa, sp) = split(from);
    let (da, dp) = split(to);
    format!(
        "{} && tcp.srcport == {sp} && {} && tcp.dstport == {dp}",
        crate::report::host_filter(&sa, "src"),
        crate::report::host_filter(&da, "dst")
    )
}

/// Where the packets behind a metric are, for a finding's evidence.
fn metric_filter(name: &str) -> &'static str {
    match name {
        "tcp_retransmission_rate" => "tcp.analysis.retransmission",
        "tcp_lost_segments" => "tcp.analysis.lost_segment",
        "tcp_connection_failure" => "tcp.flags.syn == 1 || tcp.flags.reset == 1",
        "dns_failure" | "dns_nxdomain" | "dns_response_time_median" | "dns_response_time_p95" => {
            "dns"
        }
        "tls_failure" => "tls.alert_message || tcp.flags.reset == 1",
        "icmp_errors" => "icmp.type == 3 || icmpv6.type == 1",
        "expert_errors" => "_ws.expert.severity == error",
        "zero_window_advertisements" => "tcp.analysis.zero_window",
        "resets" => "tcp.flags.reset == 1",
        n if n.starts_with("tcp_handshake") => "tcp.flags.syn == 1",
        n if n.starts_with("icmp_echo") => "icmp.resp_to || icmpv6.resp_to",
        _ => "tcp",
    }
}

async fn compare(mut a: Analysis, p: CompareParams) -> Result<Report<Comparison>, String> {
    let mut b = a.other_capture(&p.pcap_b).await?;
    if a.file.identity() == b.file.identity() {
        return Err(
            "pcap_a and pcap_b are the same file: give two captures to compare (before and after, or the two sides of a path)"
                .into(),
        );
    }
    let fa = facts(&mut a).await?;
    let fb = facts(&mut b).await?;
    let limit = clamp_limit(p.limit, 25);

    let changes = diff(&fa.metrics, &fb.metrics);
    let worse: Vec<&MetricChange> = changes.iter().filter(|c| c.verdict == "worse").collect();
    let better = changes.iter().filter(|c| c.verdict == "better").count();

    let only = |x: &BTreeSet<String>, y: &BTreeSet<String>| -> (Vec<String>, usize) {
        let d: Vec<String> = x.difference(y).cloned().collect();
        let n = d.len();
        (d.into_iter().take(LISTED).collect(), n)
    };
    let (hosts_a, hosts_a_n) = only(&fa.hosts, &fb.hosts);
    let (hosts_b, hosts_b_n) = only(&fb.hosts, &fa.hosts);
    let convs_only = |x: &SideFacts, y: &SideFacts| -> Table<Conversation> {
        let mut v: Vec<Conversation> = x
            .convs
            .iter()
            .filter(|(k, _)| !y.convs.contains_key(*k))
            .map(|((h1, h2), (frames, bytes))| Conversation {
                a: h1.clone(),
                b: h2.clone(),
                frames: *frames,
                bytes: *bytes,
            })
            .collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.bytes));
        Table::top(v, LISTED)
    };
    let convs_a = convs_only(&fa, &fb);
    let convs_b = convs_only(&fb, &fa);

    let kinds = |f: &SideFacts| -> BTreeSet<(String, String)> {
        f.findings
            .iter()
            .map(|(t, x)| (t.clone(), finding_kind(&x.title)))
            .collect()
    };
    let (ka, kb) = (kinds(&fa), kinds(&fb));
    let changed_findings = |f: &SideFacts, other: &BTreeSet<(String, String)>| {
        let mut seen = BTreeSet::new();
        let mut v: Vec<FindingChange> = f
            .findings
            .iter()
            .filter(|(t, x)| {
                let k = (t.clone(), finding_kind(&x.title));
                !other.contains(&k) && seen.insert(k)
            })
            .map(|(t, x)| FindingChange {
                tool: t.clone(),
                severity: x.severity,
                title: x.title.clone(),
            })
            .collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.severity));
        v.truncate(LISTED);
        v
    };
    let appeared = changed_findings(&fb, &ka);
    let gone = changed_findings(&fa, &kb);

    let shared = fa.flows.intersection(&fb.flows).count();
    let alignment = match p.align {
        Some(false) => None,
        _ if shared == 0 => None,
        _ => Some(align(&mut a, &mut b).await?),
    };

    let mut findings = Vec::new();
    for c in worse.iter().take(5) {
        let big = match c.unit.as_str() {
            "pct" => c.change.unwrap_or(0.0) >= 2.0,
            "ms" => c.change.unwrap_or(0.0) >= 50.0,
            "score" => c.change.unwrap_or(0.0) <= -10.0,
            _ => false,
        };
        findings.push(Finding::new(
            if big { Severity::Medium } else { Severity::Low },
            format!(
                "{} {} got worse: {} -> {} {}",
                c.family,
                c.metric,
                c.a.map_or("-".into(), |v| v.to_string()),
                c.b.map_or("-".into(), |v| v.to_string()),
                c.unit
            ),
            format!(
                "Measured in both captures the way the {} view measures it; the filter shows the packets behind it in {}.",
                c.family, fb.side.file
            ),
            Evidence {
                display_filter: metric_filter(&c.metric).into(),
                ..Default::default()
            },
        ));
    }
    for f in appeared.iter().filter(|f| f.severity >= Severity::Medium) {
        if let Some((_, orig)) = fb.findings.iter().find(|(_, x)| x.title == f.title) {
            let mut g = orig.clone();
            g.title = format!("New in {}: {}", fb.side.file, g.title);
            g.evidence.frames.truncate(5);
            findings.push(g);
        }
    }
    if let Some(al) = &alignment {
        for d in al.directions.iter().filter(|d| d.lost_between > 0).take(5) {
            let (up, down) = if d.upstream == "a" {
                (&fa.side.file, &fb.side.file)
            } else {
                (&fb.side.file, &fa.side.file)
            };
            findings.push(Finding::new(
                Severity::Medium,
                format!(
                    "{} packet(s) from {} to {} were lost between the capture points",
                    d.lost_between, d.from, d.to
                ),
                format!(
                    "{up} (upstream, TTL {}) saw {} packets of this direction; {down} (TTL {}) never saw {} of them. The frames listed are in {up}.",
                    if d.upstream == "a" { d.ttl_a } else { d.ttl_b },
                    if d.upstream == "a" { d.packets_a } else { d.packets_b },
                    if d.upstream == "a" { d.ttl_b } else { d.ttl_a },
                    d.lost_between
                ),
                Evidence {
                    frames: d.lost_frames_upstream.clone(),
                    endpoints: vec![d.from.clone(), d.to.clone()],
                    display_filter: direction_filter(&d.from, &d.to),
                    ..Default::default()
                },
            ));
        }
    }

    let summary = {
        let mut s = format!(
            "{} ({} packets) vs {} ({} packets): {} metric(s) worse{}, {} better; hosts {} new, {} gone; conversations {} new, {} gone; findings {} new kind(s), {} gone.",
            fa.side.file,
            thousands(fa.side.packets),
            fb.side.file,
            thousands(fb.side.packets),
            worse.len(),
            if worse.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    worse
                        .iter()
                        .take(3)
                        .map(|c| format!(
                            "{} {} -> {}",
                            c.metric,
                            c.a.map_or("-".into(), |v| v.to_string()),
                            c.b.map_or("-".into(), |v| v.to_string())
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            better,
            hosts_b_n,
            hosts_a_n,
            convs_b.total,
            convs_a.total,
            appeared.len(),
            gone.len()
        );
        match &alignment {
            Some(al) => {
                let lost: u64 = al.directions.iter().map(|d| d.lost_between).sum();
                s.push_str(&format!(
                    " Both saw {} TCP flow(s): {lost} packet(s) lost between the capture points{}.",
                    al.shared_flows,
                    al.rtt_between_capture_points_ms
                        .map(|r| format!(", {r} ms round trip between them"))
                        .unwrap_or_default()
                ));
            }
            None if shared == 0 => s.push_str(" They share no TCP flow (nothing to align)."),
            None => {}
        }
        s
    };
    let span = crate::engine::Span::of_file(&*a.summary().await?);
    let data = Comparison {
        a: fa.side,
        b: fb.side,
        metrics: Table::top(changes, limit),
        hosts_only_in_a: hosts_a,
        hosts_only_in_a_count: hosts_a_n,
        hosts_only_in_b: hosts_b,
        hosts_only_in_b_count: hosts_b_n,
        conversations_only_in_a: convs_a,
        conversations_only_in_b: convs_b,
        findings_appeared: appeared,
        findings_gone: gone,
        alignment,
    };
    a.commands.extend(b.commands);
    a.report(summary, findings, data, span, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_filters_name_each_family() {
        assert_eq!(
            direction_filter("10.0.0.1:40000", "[2001:db8::1]:80"),
            "ip.src == 10.0.0.1 && tcp.srcport == 40000 && ipv6.dst == 2001:db8::1 && tcp.dstport == 80"
        );
    }
}
