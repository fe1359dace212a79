//! `analyze_dns_resolution_issues`: DNS queries paired with their responses (tshark's
//! `dns.response_to`), rcodes by name, unanswered queries, slow answers, truncation and
//! TCP fallback, retries, resolvers, top names and tunnelling hints. mDNS and LLMNR
//! share the DNS fields but are reported apart from unicast DNS.

use std::collections::BTreeMap;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::dns::TunnelHints;
use crate::engine::{Analysis, Span};
use crate::report::{
    CountRow, Evidence, Finding, Report, Severity, Table, ms, percentile, rfc3339,
};
use crate::server::PcapServer;
use crate::tools::{clamp_limit, clamp_offset};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DnsParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Wireshark display filter scoping the analysis.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Problem queries to list (default 20, max 500).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Rows to skip, for paging.
    #[serde(default)]
    pub offset: Option<i64>,
    /// A response slower than this is "slow" (milliseconds, default 500).
    #[serde(default)]
    pub slow_ms: Option<f64>,
}

pub use crate::model::dns::{DnsRow, qtype_name, rcode_name};

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DnsTransaction {
    pub query_frame: u64,
    pub response_frame: Option<u64>,
    pub time: String,
    pub client: String,
    pub resolver: String,
    pub name: String,
    pub qtype: String,
    /// NOERROR, NXDOMAIN, SERVFAIL, REFUSED, ...; None when unanswered.
    pub rcode: Option<String>,
    pub response_ms: Option<f64>,
    pub truncated: bool,
    pub over_tcp: bool,
    pub display_filter: String,
    /// The query's flow Community ID (as Zeek, Suricata and Arkime print it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Resolver {
    pub address: String,
    /// Distinct queries (a retransmitted query counts once).
    pub queries: u64,
    pub answered: u64,
    /// Queries that failed: no response at all, SERVFAIL or REFUSED (NXDOMAIN is an answer).
    pub failures: u64,
    pub median_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Multicast {
    /// mdns or llmnr.
    pub protocol: String,
    pub queries: u64,
    pub responses: u64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DnsReport {
    /// Distinct queries: a query sent again counts once (retransmitted_queries counts
    /// the copies).
    pub queries: u64,
    pub responses: u64,
    pub unanswered: u64,
    pub retransmitted_queries: u64,
    pub truncated_responses: u64,
    pub tcp_queries: u64,
    pub rcodes: Vec<CountRow>,
    pub response_median_ms: Option<f64>,
    pub response_p95_ms: Option<f64>,
    pub resolvers: Vec<Resolver>,
    pub top_names: Vec<CountRow>,
    /// Failed, unanswered and slow queries, worst first.
    pub problems: Table<DnsTransaction>,
    /// mDNS / LLMNR, kept out of the unicast figures (unanswered queries are normal there).
    pub multicast: Vec<Multicast>,
}

#[tool_router(router = dns_router, vis = "pub(crate)")]
impl PcapServer {
    /// DNS health: queries paired with responses, rcodes by name (NXDOMAIN, SERVFAIL,
    /// REFUSED), unanswered queries, slow answers, truncation and TCP fallback, retries,
    /// resolvers, top names and tunnelling hints; mDNS/LLMNR reported apart.
    #[tool(
        name = "analyze_dns_resolution_issues",
        annotations(
            title = "DNS resolution issues",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_dns_resolution_issues(
        &self,
        Parameters(p): Parameters<DnsParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<DnsReport>>, String> {
        if p.slow_ms.is_some_and(|s| !s.is_finite() || s <= 0.0) {
            return Err("slow_ms must be a positive number of milliseconds".into());
        }
        self.engine
            .analyze("analyze_dns_resolution_issues", p, rc, dns)
            .await
    }
}

pub(crate) async fn dns(mut a: Analysis, p: DnsParams) -> Result<Report<DnsReport>, String> {
    let mut span = Span::default();
    let mut queries: Vec<DnsRow> = Vec::new();
    let mut responses: BTreeMap<u64, DnsRow> = BTreeMap::new();
    let mut multicast: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut retries = crate::analysis::dns::Retries::default();
    let kept = a.part::<crate::index::Rows<DnsRow>>().await?;
    for r in kept.0.iter().cloned() {
        span.add(Some(r.time));
        let mc = ["mdns", "llmnr"]
            .into_iter()
            .find(|m| r.protocols.split(':').any(|x| x == *m));
        if let Some(m) = mc {
            let e = multicast.entry(m.to_string()).or_default();
            if r.response {
                e.1 += 1
            } else {
                e.0 += 1
            }
            continue;
        }
        if r.response {
            if let Some(q) = r.response_to() {
                // an answer to a retry answers the question its first query asked
                if let Some(first) = retries.answer(q) {
                    responses.entry(first).or_insert_with(|| r.clone());
                }
                responses.entry(q).or_insert(r);
            }
        } else {
            let mut r = r;
            if let Some(k) = r.question
                && retries.query(r.frame(), k).is_some()
            {
                r.retransmission = true;
            }
            queries.push(r);
        }
    }
    let slow_s = p.slow_ms.unwrap_or(500.0) / 1000.0;
    let mut rcodes: BTreeMap<String, u64> = BTreeMap::new();
    let mut times = Vec::new();
    let mut resolvers: BTreeMap<String, (u64, u64, u64, Vec<f64>)> = BTreeMap::new();
    let mut names: BTreeMap<String, u64> = BTreeMap::new();
    let mut problems: Vec<(u8, DnsTransaction)> = Vec::new();
    let mut unanswered = 0u64;
    let mut retrans = 0u64;
    let mut tcp_queries = 0u64;
    let mut truncated = 0u64;
    let mut hints = TunnelHints::default();
    for q in &queries {
        let name = q.name.as_deref().unwrap_or_default().to_string();
        *names.entry(name.clone()).or_default() += 1;
        retrans += u64::from(q.retransmission);
        tcp_queries += u64::from(q.tcp);
        hints.add(&name, q.qtype.map(u64::from), q.frame());
        let r = responses.get(&q.frame());
        let res = resolvers.entry(q.dst.to_string()).or_default();
        res.0 += u64::from(crate::definitions::dns_query_counts(q.retransmission));
        let rcode = r.and_then(|r| r.rcode);
        if crate::definitions::dns_query_failed(q.retransmission, r.is_some(), rcode.map(u64::from))
        {
            res.2 += 1;
        }
        // a question counts once: its answer is counted with its first query (an
        // answer to a retry included), not again with the retry
        let counted = crate::definitions::dns_query_counts(q.retransmission);
        if let Some(r) = r.filter(|_| counted) {
            res.1 += 1;
            truncated += u64::from(r.truncated);
            if let Some(t) = r.time_s {
                times.push(t);
                res.3.push(t);
            }
        } else if r.is_none() && counted {
            // a retransmitted query is counted once: by its original
            unanswered += 1;
        }
        if let Some(c) = rcode.filter(|_| counted) {
            *rcodes.entry(rcode_name(c)).or_default() += 1;
        }
        let t = r.and_then(|r| r.time_s);
        let severity = match (r.is_some(), rcode) {
            (false, _) if !q.retransmission => Some(0),
            (true, Some(2 | 5)) => Some(1),
            (true, Some(c)) if c != 0 => Some(2),
            _ if t.is_some_and(|t| t >= slow_s) => Some(3),
            _ if r.is_some_and(|r| r.truncated) => Some(4),
            _ => None,
        };
        if let Some(rank) = severity {
            problems.push((
                rank,
                DnsTransaction {
                    query_frame: q.frame(),
                    response_frame: r.map(|r| r.frame()),
                    time: rfc3339(q.time),
                    client: q.src.to_string(),
                    resolver: q.dst.to_string(),
                    name: name.clone(),
                    qtype: q.qtype.map(qtype_name).unwrap_or_default(),
                    rcode: rcode.map(rcode_name),
                    response_ms: t.map(ms),
                    truncated: r.is_some_and(|r| r.truncated),
                    over_tcp: q.tcp,
                    display_filter: match r {
                        Some(r) => format!("frame.number in {{{},{}}}", q.frame(), r.frame()),
                        None => format!("frame.number == {}", q.frame()),
                    },
                    community_id: crate::model::flow::community_id(
                        &q.src,
                        &q.dst,
                        if q.tcp { 6 } else { 17 },
                        q.sport,
                        q.dport,
                    ),
                },
            ));
        }
    }
    times.sort_by(f64::total_cmp);
    problems.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.query_frame.cmp(&y.1.query_frame)));
    let mut findings = Vec::new();
    let group = |rank: u8| -> Vec<&DnsTransaction> {
        problems
            .iter()
            .filter(|p| p.0 == rank)
            .map(|p| &p.1)
            .collect()
    };
    let ev = |v: &[&DnsTransaction], filter: &str| Evidence {
        // the answer shows the problem (its rcode, its delay); a query without one is its own
        frames: v
            .iter()
            .map(|t| t.response_frame.unwrap_or(t.query_frame))
            .take(10)
            .collect(),
        endpoints: v
            .iter()
            .map(|t| t.resolver.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .take(5)
            .collect(),
        time: v.first().map(|t| t.time.clone()),
        display_filter: filter.to_string(),
        ..Default::default()
    };
    let un = group(0);
    if !un.is_empty() {
        findings.push(Finding::new(
            if un.len() * 10 >= queries.len().max(1) { Severity::High } else { Severity::Medium },
            format!("{} DNS quer(ies) never answered", un.len()),
            format!("No response at all, e.g. {} {} to {}: the resolver is down, unreachable, or dropping queries.", un[0].qtype, un[0].name, un[0].resolver),
            ev(&un, "dns.flags.response == 0 && !dns.response_in"),
        ));
    }
    let fail = group(1);
    if !fail.is_empty() {
        findings.push(Finding::new(
            Severity::High,
            format!("{} SERVFAIL/REFUSED answer(s)", fail.len()),
            format!("The resolver could not or would not answer, e.g. {} {} from {}: check its upstream, DNSSEC validation or its ACL.", fail[0].rcode.clone().unwrap_or_default(), fail[0].name, fail[0].resolver),
            ev(&fail, "dns.flags.rcode == 2 || dns.flags.rcode == 5"),
        ));
    }
    let nx = group(2);
    if !nx.is_empty() {
        let mut distinct: Vec<&str> = nx.iter().map(|t| t.name.as_str()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        findings.push(Finding::new(
            Severity::Low,
            format!("{} negative answer(s) (NXDOMAIN and similar) for {} name(s)", nx.len(), distinct.len()),
            format!("E.g. {}. Often search-domain suffixes tried before the real name, or a typo / decommissioned host.", distinct.iter().take(3).cloned().collect::<Vec<_>>().join(", ")),
            ev(&nx, "dns.flags.rcode != 0 && dns.flags.rcode != 2 && dns.flags.rcode != 5"),
        ));
    }
    let slow = group(3);
    if !slow.is_empty() {
        findings.push(Finding::new(
            Severity::Medium,
            format!(
                "{} slow DNS answer(s) (>= {:.0} ms)",
                slow.len(),
                slow_s * 1000.0
            ),
            format!(
                "Slowest shown first in problems; e.g. {} took {:.0} ms from {}.",
                slow[0].name,
                slow[0].response_ms.unwrap_or(0.0),
                slow[0].resolver
            ),
            ev(&slow, &format!("dns.time >= {slow_s:.3}")),
        ));
    }
    if retrans > 0 {
        // tshark flags retries within its 5 s timer; later ones only we link
        let frames: Vec<u64> = queries
            .iter()
            .filter(|q| q.retransmission)
            .map(|q| q.frame())
            .take(20)
            .collect();
        let list = frames
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        findings.push(Finding::new(
            Severity::Low,
            format!("{retrans} retransmitted DNS quer(ies)"),
            "The client asked the same question again (same port, ID and name) after no answer came: lost queries or answers. An answer to the retry answers the question.".to_string(),
            Evidence {
                display_filter: format!("dns.retransmission || frame.number in {{{list}}}"),
                frames,
                ..Default::default()
            },
        ));
    }
    if truncated > 0 {
        findings.push(Finding::new(Severity::Info, format!("{truncated} truncated answer(s), {tcp_queries} quer(ies) over TCP"), "Truncated UDP answers make clients retry over TCP; a firewall blocking TCP/53 breaks large answers (DNSSEC, many records).".to_string(), Evidence { display_filter: "dns.flags.truncated == 1 || (dns && tcp)".into(), ..Default::default() }));
    }
    findings.extend(hints.finding(Severity::Medium));
    let resolvers: Vec<Resolver> = {
        let mut v: Vec<Resolver> = resolvers
            .into_iter()
            .map(|(address, (q, ans, fail, mut ts))| {
                ts.sort_by(f64::total_cmp);
                Resolver {
                    address,
                    queries: q,
                    answered: ans,
                    failures: fail,
                    median_ms: percentile(&ts, 50.0).map(ms),
                    p95_ms: percentile(&ts, 95.0).map(ms),
                }
            })
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.queries));
        crate::report::keep_first(&mut v, 10);
        v
    };
    let mut top: Vec<CountRow> = names
        .into_iter()
        .map(|(key, count)| CountRow { key, count })
        .collect();
    top.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
    crate::report::keep_first(&mut top, 10);
    let rcode_rows: Vec<CountRow> = rcodes
        .into_iter()
        .map(|(key, count)| CountRow { key, count })
        .collect();
    let mc: Vec<Multicast> = multicast
        .into_iter()
        .map(|(protocol, (q, r))| Multicast {
            protocol,
            queries: q,
            responses: r,
        })
        .collect();
    let summary = if queries.is_empty() {
        format!(
            "No unicast DNS queries in {}{}.",
            a.file.display_name,
            if mc.is_empty() {
                String::new()
            } else {
                " (only mDNS/LLMNR)".into()
            }
        )
    } else {
        format!(
            "{} DNS quer(ies) ({} more sent again) to {} resolver(s): {}; {} unanswered; {}.{}",
            queries.len() as u64 - retrans,
            retrans,
            resolvers.len(),
            rcode_rows
                .iter()
                .map(|c| format!("{} {}", c.count, c.key))
                .collect::<Vec<_>>()
                .join(", "),
            unanswered,
            match (percentile(&times, 50.0), percentile(&times, 95.0)) {
                (Some(m), Some(p)) => format!("median answer {:.1} ms, p95 {:.1} ms", ms(m), ms(p)),
                _ => "no answer to time".into(),
            },
            if mc.is_empty() {
                String::new()
            } else {
                format!(
                    " mDNS/LLMNR reported apart: {}.",
                    mc.iter()
                        .map(|m| format!("{} {} queries", m.queries, m.protocol))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )
    };
    let data = DnsReport {
        queries: queries.len() as u64 - retrans,
        responses: responses.len() as u64,
        unanswered,
        retransmitted_queries: retrans,
        truncated_responses: truncated,
        tcp_queries,
        rcodes: rcode_rows,
        response_median_ms: percentile(&times, 50.0).map(ms),
        response_p95_ms: percentile(&times, 95.0).map(ms),
        resolvers,
        top_names: top,
        problems: Table::page(
            problems.into_iter().map(|p| p.1).collect(),
            clamp_offset(p.offset),
            clamp_limit(p.limit, 20),
        ),
        multicast: mc,
    };
    a.report(summary, findings, data, span, None).await
}

/// DNS answers (with their rcode and time) and questions never answered, for
/// get_events_around. A retransmitted query is not a question of its own.
pub async fn events(
    mut a: Analysis,
    q: crate::analysis::events::EventQuery,
) -> Result<Vec<crate::analysis::events::Event>, String> {
    let kept = a.part::<crate::index::Rows<DnsRow>>().await?;
    let answered: std::collections::HashSet<u64> =
        kept.0.iter().filter_map(|r| r.response_to()).collect();
    let mut out = Vec::new();
    for r in &kept.0 {
        let name = || {
            r.name
                .as_deref()
                .map(|n| n.chars().take(120).collect::<String>())
                .unwrap_or_else(|| "?".into())
        };
        let qtype = || r.qtype.map(qtype_name).unwrap_or_default();
        let filter = || format!("frame.number == {}", r.frame());
        let event = if r.response {
            let rcode = r.rcode.unwrap_or(0);
            let weight = match rcode {
                0 => 0,
                3 => 1,
                _ => 3,
            };
            q.event((r.time, r.frame()), "dns", weight, || {
                (
                    format!(
                        "DNS {} {} answered by {} -> {}",
                        qtype(),
                        name(),
                        r.src,
                        rcode_name(rcode)
                    )
                    .into(),
                    r.time_s.map(|t| format!("{:.1} ms", t * 1000.0)),
                    filter(),
                )
            })
        } else if !answered.contains(&r.frame()) && !r.retransmission {
            q.event((r.time, r.frame()), "dns", 2, || {
                (
                    format!("DNS {} {} to {} unanswered", qtype(), name(), r.dst).into(),
                    None,
                    filter(),
                )
            })
        } else {
            continue;
        };
        out.extend(event);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hints() {
        assert_eq!(rcode_name(3u64), "NXDOMAIN");
    }
}
