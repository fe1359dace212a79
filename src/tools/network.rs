//! `analyze_icmp_errors` (unreachables, time exceeded, redirects, fragmentation needed,
//! each with the flow it quotes) and `analyze_mtu_fragmentation` (IP fragments by
//! datagram, path MTU reports, MSS against them, suspected PMTU black holes): views
//! over the index's ICMP/fragment part and the TCP model.

use std::collections::BTreeMap;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::Analysis;
use crate::model::icmp::{IcmpError, NetErrors, is_path_mtu};
use crate::model::tcp::TcpModel;
use crate::report::{CountRow, Evidence, Finding, Report, Severity, Table, counts, rfc3339};
use crate::server::PcapServer;
use crate::tools::{clamp_limit, clamp_offset};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NetParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Wireshark display filter scoping the analysis.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Rows per table (default 20, max 500).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Rows to skip, for paging.
    #[serde(default)]
    pub offset: Option<i64>,
}

crate::file_args!(NetParams);

/// The quoted packet's flow, as `proto src -> dst:port`: the source port is left out,
/// since a client's every datagram or connection has a new one and the errors about
/// one service belong together.
fn quoted(e: &IcmpError) -> String {
    let proto = match e.original_protocol {
        Some(6) => "tcp",
        Some(17) => "udp",
        Some(1) | Some(58) => "icmp",
        _ => "ip",
    };
    let ep = |a: &str, p: Option<u64>| crate::report::endpoint(a, p);
    format!(
        "{proto} {} -> {}",
        ep(&e.original_src, None),
        ep(&e.original_dst, e.original_dport)
    )
}

/// Every type/code pair (ICMP and ICMPv6) that one kind name covers, as one filter.
fn kind_filters(errors: &[IcmpError], kind: &str) -> String {
    let mut parts: Vec<String> = errors
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| format!("({})", kind_filter(e)))
        .collect();
    parts.sort();
    parts.dedup();
    parts.join(" || ")
}

fn kind_filter(e: &IcmpError) -> String {
    let f = if e.v6 { "icmpv6" } else { "icmp" };
    format!("{f}.type == {} && {f}.code == {}", e.icmp_type, e.code)
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IcmpGroup {
    pub kind: String,
    /// The host that sent the errors.
    pub reporter: String,
    /// The flow the errors quote (the packets that caused them).
    pub quoted_flow: String,
    pub count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    pub first_time: String,
    pub first_frame: u64,
    pub last_frame: u64,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IcmpErrors {
    /// Every ICMP/ICMPv6 error in scope.
    pub errors: u64,
    /// Source -> destination pairs traced hop by hop (TTL exceeded from 3+ routers).
    pub traceroutes: Vec<String>,
    pub by_kind: Vec<CountRow>,
    /// Hosts that sent errors, most first.
    pub reporters: Vec<CountRow>,
    /// The errors grouped by kind, reporter and quoted flow, most first.
    pub groups: Table<IcmpGroup>,
}

/// Groups of errors by (kind, reporter, quoted flow), most first.
fn groups(errors: &[IcmpError]) -> Vec<IcmpGroup> {
    let mut m: BTreeMap<(&str, &str, String), IcmpGroup> = BTreeMap::new();
    for e in errors {
        let flow = quoted(e);
        let g = m
            .entry((e.kind, e.reporter.as_str(), flow.clone()))
            .or_insert_with(|| IcmpGroup {
                kind: e.kind.to_string(),
                reporter: e.reporter.clone(),
                quoted_flow: flow,
                count: 0,
                mtu: e.mtu.filter(|_| is_path_mtu(e.kind)),
                gateway: e.gateway.clone(),
                first_time: rfc3339(e.time),
                first_frame: e.frame,
                last_frame: e.frame,
                // the quoted transport header is the packet's only one of its kind
                display_filter: format!(
                    "{} && {}.src == {}{}",
                    kind_filter(e),
                    if e.v6 { "ipv6" } else { "ip" },
                    e.reporter,
                    match (e.original_protocol, e.original_dport) {
                        (Some(6), Some(port)) => format!(" && tcp.dstport == {port}"),
                        (Some(17), Some(port)) => format!(" && udp.dstport == {port}"),
                        _ => String::new(),
                    }
                ),
            });
        g.count += 1;
        g.last_frame = e.frame;
    }
    let mut v: Vec<IcmpGroup> = m.into_values().collect();
    v.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.first_frame.cmp(&b.first_frame))
    });
    v
}

/// What each kind means for the person reading, and how serious it is.
fn meaning(kind: &str) -> (Severity, &'static str) {
    match kind {
        "port unreachable" => (
            Severity::Medium,
            "datagrams went to a port nothing listens on (a stopped service, a wrong port, or a scan)",
        ),
        "network unreachable"
        | "host unreachable"
        | "no route to destination"
        | "address unreachable"
        | "destination unreachable"
        | "protocol unreachable" => (
            Severity::Medium,
            "a router or the destination could not deliver: no route, or the host did not answer ARP/ND",
        ),
        "administratively prohibited" => (
            Severity::Medium,
            "a firewall rejected the packets (and said so, instead of dropping them)",
        ),
        "fragmentation needed (path MTU)" | "packet too big (path MTU)" => (
            Severity::Low,
            "a link on the path has a smaller MTU than the packets sent with Don't Fragment; senders must shrink their packets (see analyze_mtu_fragmentation)",
        ),
        "time exceeded (TTL)" => (
            Severity::Low,
            "packets ran out of hops: a traceroute, or a routing loop when it is not one",
        ),
        "time exceeded (fragment reassembly)" => (
            Severity::Medium,
            "a receiver gave up reassembling datagrams: fragments were lost",
        ),
        "redirect" => (
            Severity::Low,
            "a router told hosts to use another gateway: a misconfigured route, or an attacker redirecting traffic",
        ),
        _ => (
            Severity::Low,
            "the network reported a problem with these packets",
        ),
    }
}

pub(crate) async fn icmp_errors(
    mut a: Analysis,
    p: NetParams,
) -> Result<Report<IcmpErrors>, String> {
    let n = a.part::<NetErrors>().await?;
    let all = groups(&n.errors);
    let by_kind = counts(n.errors.iter().map(|e| e.kind.to_string()));
    let reporters: Vec<CountRow> = counts(n.errors.iter().map(|e| e.reporter.clone()))
        .into_iter()
        .take(10)
        .collect();
    // a traceroute: TTL-exceeded answers from three or more routers about one
    // source/destination pair, each hop a different reporter
    let mut hops: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for e in n.errors.iter().filter(|e| e.kind == "time exceeded (TTL)") {
        let v = hops
            .entry((e.original_src.as_str(), e.original_dst.as_str()))
            .or_default();
        if !v.contains(&e.reporter.as_str()) {
            v.push(e.reporter.as_str());
        }
    }
    let traceroutes: Vec<String> = hops
        .iter()
        .filter(|(_, r)| r.len() >= 3)
        .map(|((src, dst), r)| format!("{src} -> {dst} ({} hops)", r.len()))
        .collect();
    let mut findings = Vec::new();
    for k in &by_kind {
        let of: Vec<&IcmpGroup> = all.iter().filter(|g| g.kind == k.key).collect();
        let (mut severity, mut what) = meaning(&k.key);
        let traced;
        if k.key == "time exceeded (TTL)" && !traceroutes.is_empty() {
            severity = Severity::Info;
            traced = format!(
                "a traceroute, not a fault: {} answered by one more router per hop",
                traceroutes.join(", ")
            );
            what = traced.as_str();
        }
        let top = of[0];
        findings.push(Finding::new(
            severity,
            format!(
                "{} ICMP {} error(s), most about {} from {}",
                k.count, k.key, top.quoted_flow, top.reporter
            ),
            format!(
                "{}{}.",
                crate::report::capitalise(what),
                top.mtu
                    .map(|m| format!("; next-hop MTU {m}"))
                    .unwrap_or_default()
            ),
            Evidence {
                frames: of.iter().map(|g| g.first_frame).take(10).collect(),
                endpoints: of.iter().map(|g| g.reporter.clone()).take(5).collect(),
                display_filter: kind_filters(&n.errors, &k.key),
                ..Default::default()
            },
        ));
    }
    let summary = if n.errors_total == 0 {
        "No ICMP errors: nothing was reported unreachable, too big, expired or redirected."
            .to_string()
    } else {
        format!(
            "{} ICMP error(s) from {} host(s): {}.",
            n.errors_total,
            counts(n.errors.iter().map(|e| e.reporter.clone())).len(),
            crate::report::count_list(&by_kind)
        )
    };
    let data = IcmpErrors {
        errors: n.errors_total,
        traceroutes,
        by_kind,
        reporters,
        groups: Table::page(all, clamp_offset(p.offset), clamp_limit(p.limit, 20)),
    };
    let span = n.span;
    a.report(summary, findings, data, span, None).await
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FragmentFlow {
    pub src: String,
    pub dst: String,
    /// IP protocol number of the datagrams (17 UDP, 6 TCP, 1 ICMP...).
    pub protocol: u64,
    pub datagrams: u64,
    pub fragments: u64,
    /// Payload bytes carried in fragments.
    pub bytes: u64,
    /// Datagrams whose first or last fragment never appeared.
    pub incomplete: u64,
    pub first_frame: u64,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MtuReport {
    pub reporter: String,
    pub mtu: u64,
    /// The flow the report quotes: whose packets were too big.
    pub quoted_flow: String,
    pub reports: u64,
    pub first_frame: u64,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MssRow {
    pub stream: u64,
    pub sender: String,
    pub receiver: String,
    /// The MSS the receiver announced in its SYN (what the sender may send).
    pub mss: u64,
    /// The smallest path MTU reported for the sender's packets to the receiver.
    pub path_mtu: u64,
    /// Packets of a full MSS (plus 40 bytes of IPv4+TCP headers, 60 for IPv6) exceed it.
    pub exceeds: bool,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BlackHoleSuspect {
    pub stream: u64,
    pub sender: String,
    pub receiver: String,
    pub largest_segment: u64,
    /// Retransmitted data segments and their average size.
    pub retransmissions: u64,
    pub avg_retransmitted_bytes: u64,
    /// Time lost to retransmission timeouts, seconds.
    pub timeout_stall_s: f64,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MtuFragmentation {
    pub fragment_packets: u64,
    pub fragmented_datagrams: usize,
    pub incomplete_datagrams: u64,
    pub fragments: Table<FragmentFlow>,
    /// "Fragmentation needed" / "packet too big" reports, by reporter, MTU and flow.
    pub path_mtu_reports: Vec<MtuReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smallest_path_mtu: Option<u64>,
    /// TCP connections whose path reported an MTU: the MSS against it.
    pub mss_vs_path_mtu: Vec<MssRow>,
    /// TCP senders whose full-size segments were retransmitted after timeouts with no
    /// path-MTU report back: what a PMTU black hole (ICMP filtered) looks like.
    pub black_hole_suspects: Vec<BlackHoleSuspect>,
}

/// Large-segment retransmissions after timeouts count as a black-hole sign from this
/// segment size (well above a small request, below any common MSS).
const BLACK_HOLE_MIN_SEGMENT: u64 = 1000;

pub(crate) async fn mtu_fragmentation(
    mut a: Analysis,
    p: NetParams,
) -> Result<Report<MtuFragmentation>, String> {
    let n = a.part::<NetErrors>().await?;
    let m = a.part::<TcpModel>().await?;
    // fragments by flow
    let mut flows: BTreeMap<(&str, &str, u64), FragmentFlow> = BTreeMap::new();
    for d in &n.datagrams {
        let f = flows
            .entry((d.src.as_str(), d.dst.as_str(), d.protocol))
            .or_insert_with(|| FragmentFlow {
                src: d.src.clone(),
                dst: d.dst.clone(),
                protocol: d.protocol,
                datagrams: 0,
                fragments: 0,
                bytes: 0,
                incomplete: 0,
                first_frame: d.first_frame,
                display_filter: format!(
                    "{v}.src == {} && {v}.dst == {} && ({})",
                    d.src,
                    d.dst,
                    if d.src.contains(':') {
                        "ipv6.fraghdr"
                    } else {
                        "ip.flags.mf == 1 || ip.frag_offset > 0"
                    },
                    v = if d.src.contains(':') { "ipv6" } else { "ip" }
                ),
            });
        f.datagrams += 1;
        f.fragments += d.fragments;
        f.bytes += d.bytes;
        f.incomplete += u64::from(!(d.has_first && d.has_last));
    }
    let mut frag_rows: Vec<FragmentFlow> = flows.into_values().collect();
    frag_rows.sort_by(|a, b| {
        b.fragments
            .cmp(&a.fragments)
            .then(a.first_frame.cmp(&b.first_frame))
    });
    let incomplete: u64 = frag_rows.iter().map(|f| f.incomplete).sum();

    // path MTU reports
    let mtu_errors: Vec<&IcmpError> = n.errors.iter().filter(|e| is_path_mtu(e.kind)).collect();
    let mut reports: BTreeMap<(String, u64, String), MtuReport> = BTreeMap::new();
    for e in &mtu_errors {
        let Some(mtu) = e.mtu else { continue };
        let flow = quoted(e);
        reports
            .entry((e.reporter.clone(), mtu, flow.clone()))
            .or_insert_with(|| MtuReport {
                reporter: e.reporter.clone(),
                mtu,
                quoted_flow: flow,
                reports: 0,
                first_frame: e.frame,
                display_filter: kind_filter(e),
            })
            .reports += 1;
    }
    let mut path_mtu_reports: Vec<MtuReport> = reports.into_values().collect();
    path_mtu_reports.sort_by(|a, b| b.reports.cmp(&a.reports).then(a.mtu.cmp(&b.mtu)));
    let smallest = mtu_errors.iter().filter_map(|e| e.mtu).min();

    // MSS against the path MTU reported for each direction of a connection
    let mut mss_rows = Vec::new();
    let mut black_holes = Vec::new();
    for s in &m.streams {
        for d in 0..2 {
            let (sender, receiver) = (&s.addr[d], &s.addr[1 - d]);
            let reported = mtu_errors
                .iter()
                .filter(|e| *e.original_src == **sender && *e.original_dst == **receiver)
                .filter_map(|e| e.mtu)
                .min();
            // the MSS the sender may use is the one its peer announced
            if let (Some(mtu), Some(mss)) = (reported, s.options(1 - d).and_then(|o| o.mss)) {
                let headers = if sender.contains(':') { 60 } else { 40 };
                mss_rows.push(MssRow {
                    stream: s.id,
                    sender: s.endpoint(d),
                    receiver: s.endpoint(1 - d),
                    mss,
                    path_mtu: mtu,
                    exceeds: mss + headers > mtu,
                    display_filter: s.filter(Some(
                        "(tcp.flags.syn == 1 || icmp.type == 3 || icmpv6.type == 2)",
                    )),
                });
            }
            let retrans = s.retrans_data[d];
            let avg = s.retrans_bytes[d].checked_div(retrans).unwrap_or(0);
            if reported.is_none()
                && retrans >= 3
                && s.rto_stall_total >= 1.0
                && avg >= BLACK_HOLE_MIN_SEGMENT
                && avg * 10 >= s.max_segment()[d] * 9
            {
                black_holes.push(BlackHoleSuspect {
                    stream: s.id,
                    sender: s.endpoint(d),
                    receiver: s.endpoint(1 - d),
                    largest_segment: s.max_segment()[d],
                    retransmissions: retrans,
                    avg_retransmitted_bytes: avg,
                    timeout_stall_s: (s.rto_stall_total * 1000.0).round() / 1000.0,
                    display_filter: s.filter(Some("tcp.analysis.retransmission")),
                });
            }
        }
    }
    mss_rows.sort_by(|a, b| b.exceeds.cmp(&a.exceeds).then(a.stream.cmp(&b.stream)));
    crate::report::keep_first(&mut mss_rows, 20);
    black_holes.sort_by(|a, b| b.timeout_stall_s.total_cmp(&a.timeout_stall_s));
    crate::report::keep_first(&mut black_holes, 20);

    let mut findings = Vec::new();
    if let Some(f) = frag_rows.first() {
        findings.push(Finding::new(
            Severity::Low,
            format!(
                "{} IP datagram(s) fragmented into {} packets (most {} -> {})",
                n.datagrams.len(),
                n.fragment_packets,
                f.src,
                f.dst
            ),
            "Fragmentation costs throughput and is often dropped by firewalls; a sender whose datagrams exceed the path MTU (large UDP: DNS with EDNS, IKE, tunnels) fragments them.",
            Evidence {
                frames: frag_rows.iter().map(|f| f.first_frame).take(10).collect(),
                display_filter: "ip.flags.mf == 1 || ip.frag_offset > 0 || ipv6.fraghdr".into(),
                ..Default::default()
            },
        ));
    }
    if incomplete > 0 {
        findings.push(Finding::new(
            Severity::Medium,
            format!("{incomplete} fragmented datagram(s) incomplete"),
            "Their first or last fragment never appeared: fragments were lost (or filtered), and the whole datagram with them.",
            Evidence {
                frames: frag_rows
                    .iter()
                    .filter(|f| f.incomplete > 0)
                    .map(|f| f.first_frame)
                    .take(10)
                    .collect(),
                display_filter: "ip.flags.mf == 1 || ip.frag_offset > 0 || ipv6.fraghdr".into(),
                ..Default::default()
            },
        ));
    }
    if let (Some(r), Some(mtu)) = (path_mtu_reports.first(), smallest) {
        findings.push(Finding::new(
            Severity::Low,
            format!(
                "Path MTU {mtu} reported ({} report(s), first by {})",
                mtu_errors.len(),
                r.reporter
            ),
            format!(
                "A link on the path carries at most {mtu} bytes: senders with Don't Fragment set were told to shrink their packets (first about {}).",
                r.quoted_flow
            ),
            Evidence {
                frames: path_mtu_reports.iter().map(|r| r.first_frame).take(10).collect(),
                endpoints: path_mtu_reports.iter().map(|r| r.reporter.clone()).take(5).collect(),
                display_filter: "icmp.type == 3 && icmp.code == 4 || icmpv6.type == 2".into(),
                ..Default::default()
            },
        ));
    }
    let over: Vec<&MssRow> = mss_rows.iter().filter(|r| r.exceeds).collect();
    if let Some(r) = over.first() {
        findings.push(Finding::new(
            Severity::Medium,
            format!("{} connection(s) with an MSS above the path MTU", over.len()),
            format!(
                "Stream {}: MSS {} (+ headers) is more than the path's {} bytes, so full-size segments need the sender to learn the path MTU; clamp the MSS on the router (e.g. iptables TCPMSS --clamp-mss-to-pmtu) if ICMP is filtered anywhere.",
                r.stream, r.mss, r.path_mtu
            ),
            Evidence {
                streams: over.iter().map(|r| r.stream).take(10).collect(),
                display_filter: r.display_filter.clone(),
                ..Default::default()
            },
        ));
    }
    if let Some(b) = black_holes.first() {
        findings.push(Finding::new(
            Severity::Medium,
            format!("{} possible path-MTU black hole(s)", black_holes.len()),
            format!(
                "Stream {}: {} full-size segments ({} bytes on average) were sent again after timeouts ({:.1} s lost) and no 'fragmentation needed' came back: a link with a smaller MTU whose ICMP is filtered drops them silently.",
                b.stream, b.retransmissions, b.avg_retransmitted_bytes, b.timeout_stall_s
            ),
            Evidence {
                streams: black_holes.iter().map(|b| b.stream).take(10).collect(),
                display_filter: b.display_filter.clone(),
                ..Default::default()
            },
        ));
    }
    let summary = format!(
        "{} fragmented datagram(s) in {} fragment(s){}; {} path-MTU report(s){}; {} MSS above a reported path MTU; {} possible black hole(s).",
        n.datagrams.len(),
        n.fragment_packets,
        if incomplete > 0 {
            format!(" ({incomplete} incomplete)")
        } else {
            String::new()
        },
        mtu_errors.len(),
        smallest
            .map(|m| format!(" (smallest MTU {m})"))
            .unwrap_or_default(),
        over.len(),
        black_holes.len()
    );
    let data = MtuFragmentation {
        fragment_packets: n.fragment_packets,
        fragmented_datagrams: n.datagrams.len(),
        incomplete_datagrams: incomplete,
        fragments: Table::page(frag_rows, clamp_offset(p.offset), clamp_limit(p.limit, 20)),
        path_mtu_reports: path_mtu_reports.into_iter().take(20).collect(),
        smallest_path_mtu: smallest,
        mss_vs_path_mtu: mss_rows,
        black_hole_suspects: black_holes,
    };
    // the packets this view is about: ICMP errors and fragments
    let span = n.span;
    a.report(summary, findings, data, span, None).await
}

#[tool_router(router = network_router, vis = "pub(crate)")]
impl PcapServer {
    /// ICMP/ICMPv6 errors: unreachables (network, host, port, prohibited), time
    /// exceeded, redirects, fragmentation needed / packet too big with the MTU, each with
    /// who reported it and the flow it quotes, grouped, with what each means.
    #[tool(
        name = "analyze_icmp_errors",
        annotations(title = "ICMP errors", read_only_hint = true, open_world_hint = false)
    )]
    pub async fn analyze_icmp_errors(
        &self,
        Parameters(p): Parameters<NetParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<IcmpErrors>>, String> {
        self.engine
            .analyze("analyze_icmp_errors", p, rc, icmp_errors)
            .await
    }

    /// MTU and fragmentation: IP fragments by flow (incomplete datagrams), path MTU
    /// reports (fragmentation needed, packet too big), TCP MSS against them, and
    /// suspected path-MTU black holes (full-size segments lost to timeouts, no ICMP).
    #[tool(
        name = "analyze_mtu_fragmentation",
        annotations(
            title = "MTU and fragmentation",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_mtu_fragmentation(
        &self,
        Parameters(p): Parameters<NetParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<MtuFragmentation>>, String> {
        self.engine
            .analyze("analyze_mtu_fragmentation", p, rc, mtu_fragmentation)
            .await
    }
}
