//! `analyze_pcap_file`: the "start here" tool. One tshark pass yields the file facts,
//! the protocol hierarchy, conversations, endpoints, expert counts and the symptoms
//! that point to a specialised tool.

use arcstr::ArcStr;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::{Analysis, Span};
use crate::index::Keyed;
use crate::pcapfile::CaptureSummary as CapInfo;
use crate::report::{
    Evidence, Finding, NextStep, Report, Severity, Table, host_filter, human_bits_per_s,
    human_bytes, pct, round, thousands, write_endpoint,
};
use crate::server::PcapServer;
use crate::tools::{clamp_limit, clamp_offset};
use crate::tshark::fields::{FromRow, Row};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnalysisType {
    /// File facts plus the top of every table.
    #[default]
    Summary,
    /// The full protocol hierarchy.
    Protocols,
    /// Conversations by bytes.
    Conversations,
    /// Endpoints (IP addresses) by bytes.
    Endpoints,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AnalyzePcapParams {
    /// Capture file: a name in PCAP_STORAGE_DIR (see list_captured_files) or a path inside an allowed directory.
    pub pcap_file: String,
    /// summary (default), protocols, conversations or endpoints.
    #[serde(default)]
    pub analysis_type: AnalysisType,
    /// Wireshark display filter scoping the analysis, e.g. `ip.addr == 10.0.0.5`.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Rows per table (default 5 for summary, 50 otherwise; max 500).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Rows to skip in the detailed table, for paging.
    #[serde(default)]
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FileFacts {
    pub file_type: String,
    pub link_type: String,
    pub packets: u64,
    pub file_bytes: u64,
    /// Sum of the captured packet lengths.
    pub data_bytes: u64,
    pub duration_s: f64,
    pub avg_packets_per_s: f64,
    pub avg_bits_per_s: f64,
    pub avg_packet_bytes: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u64>,
    /// Packets stored shorter than they were on the wire (snaplen cut).
    pub truncated_packets: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict_time_order: Option<bool>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProtocolNode {
    pub protocol: String,
    /// Position in the hierarchy, e.g. `eth:ip:tcp:http`.
    pub path: String,
    pub depth: usize,
    pub frames: u64,
    pub bytes: u64,
    pub frames_pct: f64,
    pub bytes_pct: f64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProtocolTotal {
    pub protocol: String,
    /// Frames that contain this protocol anywhere in their stack (counted once per frame).
    pub frames: u64,
    pub bytes: u64,
    pub frames_pct: f64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Conversation {
    /// tcp, udp, or the IP protocol when there are no ports.
    pub protocol: String,
    /// The side that sent first (address or address:port).
    pub a: String,
    pub b: String,
    pub packets_a_to_b: u64,
    pub bytes_a_to_b: u64,
    pub packets_b_to_a: u64,
    pub bytes_b_to_a: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Seconds from the start of the capture.
    pub start_s: f64,
    pub duration_s: f64,
    /// `tcp.stream` / `udp.stream` index when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<u64>,
    pub display_filter: String,
    /// The flow's Community ID (TCP and UDP), as Zeek, Suricata and Arkime print it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Endpoint {
    pub address: String,
    pub packets: u64,
    pub bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

/// Wireshark expert-info items by severity.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct ExpertCounts {
    pub error: u64,
    pub warning: u64,
    pub note: u64,
    pub chat: u64,
    pub comment: u64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PcapOverview {
    pub analysis_type: AnalysisType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_facts: Option<FileFacts>,
    /// Frames per protocol, each frame counted once per protocol it contains.
    pub protocol_totals: Table<ProtocolTotal>,
    /// The protocol tree (like Statistics > Protocol Hierarchy), depth first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_hierarchy: Option<Table<ProtocolNode>>,
    pub conversations: Table<Conversation>,
    pub endpoints: Table<Endpoint>,
    pub expert: ExpertCounts,
    /// The triage (analysis_type summary): what each family's check found. Its findings
    /// are in `findings`, each naming the tool that explains it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<TriageCheck>,
}

/// One family's check in the triage.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TriageCheck {
    /// The tool whose view the check ran (with default arguments).
    pub tool: String,
    /// Findings above info it raised.
    pub findings: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worst: Option<Severity>,
    /// Why the check could not run, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The most findings the triage lists (the rest are counted in the summary), and the
/// most from one check: the tool named explains the rest, and the answer stays small.
const TRIAGE_FINDINGS: usize = 12;
const TRIAGE_PER_CHECK: usize = 3;

/// The fields of the one pass; free text last.
pub struct OverviewRow {
    number: u64,
    time: Option<f64>,
    len: u64,
    cap_len: u64,
    protocols: String,
    ip_src: Option<String>,
    ip_dst: Option<String>,
    ip_proto: Option<u64>,
    sport: Option<u64>,
    dport: Option<u64>,
    tcp_stream: Option<u64>,
    udp_stream: Option<u64>,
    severities: Vec<u64>,
    retransmission: bool,
    zero_window: bool,
    reset: bool,
    dns_rcode: Option<u64>,
    http_code: Option<u64>,
    tls_alert: bool,
}

impl FromRow for OverviewRow {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.time_epoch",
        "frame.len",
        "frame.cap_len",
        "frame.protocols",
        "ip.src",
        "ip.dst",
        "ipv6.src",
        "ipv6.dst",
        "ip.proto",
        "ipv6.nxt",
        "tcp.srcport",
        "tcp.dstport",
        "udp.srcport",
        "udp.dstport",
        "tcp.stream",
        "udp.stream",
        "_ws.expert.severity",
        "tcp.analysis.retransmission",
        "tcp.analysis.zero_window",
        "tcp.flags.reset",
        "dns.flags.rcode",
        "http.response.code",
        "tls.alert_message.desc",
    ];

    fn from_row(r: &Row<'_>) -> Option<Self> {
        let tcp = r.u64(11).is_some();
        Some(Self {
            number: r.u64(0)?,
            time: r.f64(1),
            len: r.u64(2).unwrap_or(0),
            cap_len: r.u64(3).unwrap_or(0),
            protocols: r.str(4).unwrap_or("").to_string(),
            ip_src: r.owned(5).or_else(|| r.owned(7)),
            ip_dst: r.owned(6).or_else(|| r.owned(8)),
            ip_proto: r.u64(9).or_else(|| r.u64(10)),
            sport: if tcp { r.u64(11) } else { r.u64(13) },
            dport: if tcp { r.u64(12) } else { r.u64(14) },
            tcp_stream: r.u64(15),
            udp_stream: r.u64(16),
            severities: r.all(17).filter_map(|s| s.parse().ok()).collect(),
            retransmission: r.str(18).is_some(),
            zero_window: r.str(19).is_some(),
            reset: r.flag(20),
            dns_rcode: r.u64(21),
            http_code: r.u64(22),
            tls_alert: r.str(23).is_some(),
        })
    }
}

/// A TCP or UDP conversation's Community ID, from its two `addr:port` sides.
fn conv_community_id(c: &ConvAcc) -> Option<String> {
    let proto = match c.protocol.as_ref() {
        "tcp" => 6,
        "udp" => 17,
        _ => return None,
    };
    let port = |s: &Side| s.port.and_then(|p| u16::try_from(p).ok());
    crate::model::flow::community_id(&c.a.addr, &c.b.addr, proto, port(&c.a), port(&c.b))
}

/// One side of a conversation: its address, shared by the host's conversations, and
/// its port. Written as `addr:port` only for the rows shown.
#[derive(Default)]
struct Side {
    addr: ArcStr,
    port: Option<u64>,
}

impl Side {
    fn text(&self) -> String {
        crate::report::endpoint(&self.addr, self.port)
    }
}

#[derive(Default)]
struct ConvAcc {
    protocol: Cow<'static, str>,
    a: Side,
    b: Side,
    ab: (u64, u64),
    ba: (u64, u64),
    first: f64,
    last: f64,
    stream: Option<u64>,
}

#[derive(Default)]
struct EpAcc {
    tx: (u64, u64),
    rx: (u64, u64),
}

/// Symptoms counted in the pass, with the first frames for evidence.
#[derive(Default)]
struct Symptom {
    count: u64,
    frames: Vec<u64>,
}

impl Symptom {
    fn hit(&mut self, frame: u64) {
        self.count += 1;
        if self.frames.len() < 10 {
            self.frames.push(frame);
        }
    }
}

#[derive(Default)]
pub struct Overview {
    span: Span,
    hierarchy: Keyed<String, (u64, u64)>,
    totals: Keyed<String, (u64, u64)>,
    convs: Keyed<String, ConvAcc>,
    eps: Keyed<ArcStr, EpAcc>,
    expert: ExpertCounts,
    truncated: Symptom,
    tcp_packets: u64,
    retrans: Symptom,
    zero_window: Symptom,
    resets: Symptom,
    dns_errors: Symptom,
    http_errors: Symptom,
    tls_alerts: Symptom,
    expert_errors: Symptom,
    bytes: u64,
    /// Silences of at least [`GAP_S`] between consecutive packets: (start, end, the
    /// frame that ended it), the first [`MAX_GAPS`].
    gaps: Vec<(f64, f64, u64)>,
    prev_time: Option<f64>,
    /// Text reused from packet to packet (protocol path, conversation key, the two
    /// endpoints): looking up a key already in a table allocates nothing.
    scratch: [String; 4],
    /// One copy of each conversation side's address while the pass runs.
    addrs: crate::index::SharedStrings,
}

/// The shortest silence of the whole capture reported as a gap in traffic.
const GAP_S: f64 = 1.0;
const MAX_GAPS: usize = 10_000;

impl crate::index::Part for Overview {
    type Row = OverviewRow;
    fn new(ctx: &crate::index::Ctx) -> Self {
        Self {
            addrs: ctx.strings.clone(),
            ..Self::default()
        }
    }
    fn add(&mut self, p: OverviewRow) {
        Overview::add(self, p)
    }
    fn finish(&mut self) {
        self.hierarchy.finish();
        self.totals.finish();
        self.convs.finish();
        self.eps.finish();
        self.addrs.release();
    }
    fn approx_bytes(&self) -> usize {
        // conversations and endpoints dominate: their keys, addresses and counters
        self.convs.len() * 200 + self.eps.len() * 100 + self.hierarchy.len() * 64
    }
}

impl Overview {
    fn add(&mut self, p: OverviewRow) {
        self.span.add(p.time);
        self.bytes += p.len;
        if let Some(t) = p.time {
            if let Some(prev) = self.prev_time
                && t - prev >= GAP_S
                && self.gaps.len() < MAX_GAPS
            {
                self.gaps.push((prev, t, p.number));
            }
            self.prev_time = Some(t);
        }
        let t = p.time.unwrap_or(0.0);
        let [path, key, s_ep, d_ep] = &mut self.scratch;
        // the protocol tree, like io,phs: `ethertype` is a dissector table, not a layer
        path.clear();
        let layers = || {
            p.protocols
                .split(':')
                .filter(|s| !s.is_empty() && *s != "ethertype")
        };
        for (i, proto) in layers().enumerate() {
            if !path.is_empty() {
                path.push(':');
            }
            path.push_str(proto);
            bump(&mut self.hierarchy, path, p.len);
            // a protocol counts once per packet however often it nests
            if !layers().take(i).any(|x| x == proto) {
                bump(&mut self.totals, proto, p.len);
            }
        }
        for s in &p.severities {
            match *s {
                0x0080_0000.. => self.expert.error += 1,
                0x0060_0000.. => self.expert.warning += 1,
                0x0040_0000.. => self.expert.note += 1,
                0x0020_0000.. => self.expert.chat += 1,
                _ => self.expert.comment += 1,
            }
        }
        if p.severities.iter().any(|s| *s >= 0x0080_0000) {
            self.expert_errors.hit(p.number);
        }
        if p.cap_len < p.len {
            self.truncated.hit(p.number);
        }
        if p.tcp_stream.is_some() {
            self.tcp_packets += 1;
        }
        if p.retransmission {
            self.retrans.hit(p.number);
        }
        if p.zero_window {
            self.zero_window.hit(p.number);
        }
        if p.reset {
            self.resets.hit(p.number);
        }
        // SERVFAIL/REFUSED answers (NXDOMAIN is an answer); the DNS tool also counts
        // queries never answered
        if p.dns_rcode.is_some() && crate::definitions::dns_failed(true, p.dns_rcode) {
            self.dns_errors.hit(p.number);
        }
        if p.http_code.is_some_and(|c| c >= 400) {
            self.http_errors.hit(p.number);
        }
        if p.tls_alert {
            self.tls_alerts.hit(p.number);
        }
        let (Some(src), Some(dst)) = (p.ip_src, p.ip_dst) else {
            return;
        };
        let (protocol, stream) = match (p.tcp_stream, p.udp_stream) {
            (Some(s), _) => (Cow::Borrowed("tcp"), Some(s)),
            (None, Some(s)) => (Cow::Borrowed("udp"), Some(s)),
            _ => (ip_proto_name(p.ip_proto), None),
        };
        key.clear();
        let _ = match stream {
            Some(s) => write!(key, "{protocol}#{s}"),
            None => {
                write_endpoint(s_ep, &src, p.sport);
                write_endpoint(d_ep, &dst, p.dport);
                if s_ep < d_ep {
                    write!(key, "{protocol}|{s_ep}|{d_ep}")
                } else {
                    write!(key, "{protocol}|{d_ep}|{s_ep}")
                }
            }
        };
        if let Some(c) = self.convs.slot(key) {
            if c.a.addr.is_empty() {
                // a new conversation: the sides are set once, here
                *c = ConvAcc {
                    protocol,
                    a: Side {
                        addr: self.addrs.one(&src),
                        port: p.sport,
                    },
                    b: Side {
                        addr: self.addrs.one(&dst),
                        port: p.dport,
                    },
                    first: t,
                    last: t,
                    stream,
                    ..Default::default()
                };
            }
            if *c.a.addr == *src && c.a.port == p.sport {
                c.ab.0 += 1;
                c.ab.1 += p.len;
            } else {
                c.ba.0 += 1;
                c.ba.1 += p.len;
            }
            c.first = c.first.min(t);
            c.last = c.last.max(t);
        }
        if let Some(e) = self.eps.slot_shared(&src, &mut self.addrs) {
            e.tx.0 += 1;
            e.tx.1 += p.len;
        }
        if let Some(e) = self.eps.slot_shared(&dst, &mut self.addrs) {
            e.rx.0 += 1;
            e.rx.1 += p.len;
        }
    }
}

fn ip_proto_name(p: Option<u64>) -> Cow<'static, str> {
    Cow::Borrowed(match p {
        Some(1) => "icmp",
        Some(2) => "igmp",
        Some(6) => "tcp",
        Some(17) => "udp",
        Some(47) => "gre",
        Some(50) => "esp",
        Some(58) => "icmpv6",
        Some(89) => "ospf",
        Some(132) => "sctp",
        Some(n) => return Cow::Owned(format!("ip-proto-{n}")),
        None => "ip",
    })
}

#[tool_router(router = basic_router, vis = "pub(crate)")]
impl PcapServer {
    /// Start here: file facts (format, link type, packets, bytes, span, rates, snaplen cuts),
    /// protocol hierarchy, top conversations and endpoints by bytes, expert-info counts, and
    /// findings that name the tool to use next. analysis_type picks the detailed table.
    #[tool(
        name = "analyze_pcap_file",
        annotations(
            title = "Capture overview",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_pcap_file(
        &self,
        Parameters(p): Parameters<AnalyzePcapParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<PcapOverview>>, String> {
        self.engine
            .analyze("analyze_pcap_file", p, rc, overview)
            .await
    }
}

async fn overview(mut a: Analysis, p: AnalyzePcapParams) -> Result<Report<PcapOverview>, String> {
    let acc = a.part::<Overview>().await?;
    let info = a.summary().await.ok().map(|s| (*s).clone());
    let capture = a.capture_facts(acc.span).await;
    let detailed = p.analysis_type;
    let limit = clamp_limit(
        p.limit,
        if detailed == AnalysisType::Summary {
            // the triage leads; each table is one call away with analysis_type
            5
        } else {
            50
        },
    );
    let offset = clamp_offset(p.offset);
    let table_for = |t: AnalysisType| {
        if detailed == t {
            (offset, limit)
        } else {
            (0, limit.min(10))
        }
    };
    let packets = acc.span.packets;
    let total_bytes = acc.bytes;
    let t0 = capture_start(&info, &acc.span);

    // protocol totals and tree
    let mut totals: Vec<ProtocolTotal> = acc
        .totals
        .iter()
        .filter(|(k, _)| k.as_str() != "frame")
        .map(|(k, (f, b))| ProtocolTotal {
            protocol: k.clone(),
            frames: *f,
            bytes: *b,
            frames_pct: pct(*f, packets),
        })
        .collect();
    totals.sort_by(|x, y| y.frames.cmp(&x.frames).then(x.protocol.cmp(&y.protocol)));
    let protocol_totals = Table::top(totals, limit.max(15));
    let protocol_hierarchy =
        (detailed == AnalysisType::Protocols || detailed == AnalysisType::Summary).then(|| {
            let (o, l) = table_for(AnalysisType::Protocols);
            Table::page(
                hierarchy_rows(&acc.hierarchy, packets, total_bytes),
                o,
                l.max(15),
            )
        });

    // ordered by their counters, a row (endpoints, filter, Community ID) written for
    // the page only: this runs on every call of the tool, the triage too
    let mut convs: Vec<&ConvAcc> = acc.convs.values().collect();
    let total = |c: &ConvAcc| (c.ab.1 + c.ba.1, c.ab.0 + c.ba.0);
    convs.sort_by_key(|c| std::cmp::Reverse(total(c)));
    let (o, l) = table_for(AnalysisType::Conversations);
    let conversations = Table::page_map(convs, o, l, |c| Conversation {
        protocol: c.protocol.to_string(),
        a: c.a.text(),
        b: c.b.text(),
        packets_a_to_b: c.ab.0,
        bytes_a_to_b: c.ab.1,
        packets_b_to_a: c.ba.0,
        bytes_b_to_a: c.ba.1,
        packets: c.ab.0 + c.ba.0,
        bytes: c.ab.1 + c.ba.1,
        start_s: round(c.first - t0, 6),
        duration_s: round(c.last - c.first, 6),
        stream: c.stream,
        display_filter: conv_filter(c),
        community_id: conv_community_id(c),
    });

    let mut eps: Vec<(&ArcStr, &EpAcc)> = acc.eps.iter().collect();
    eps.sort_by(|(xa, x), (ya, y)| (y.tx.1 + y.rx.1).cmp(&(x.tx.1 + x.rx.1)).then(xa.cmp(ya)));
    let (o, l) = table_for(AnalysisType::Endpoints);
    let endpoints = Table::page_map(eps, o, l, |(addr, e)| Endpoint {
        address: addr.to_string(),
        packets: e.tx.0 + e.rx.0,
        bytes: e.tx.1 + e.rx.1,
        tx_packets: e.tx.0,
        tx_bytes: e.tx.1,
        rx_packets: e.rx.0,
        rx_bytes: e.rx.1,
    });

    let file_facts = info.as_ref().map(|i| file_facts(i, acc.truncated.count));
    // in the triage, frames cut by the snapshot length are capture trust's finding
    let mut findings = capture_findings(
        &acc,
        &capture.read_warning,
        detailed != AnalysisType::Summary,
    );
    if detailed != AnalysisType::Summary {
        findings.extend(symptom_findings(&acc));
    }
    findings.extend(a.clock_finding().await);
    let mut checks = Vec::new();
    let mut more = 0;
    if detailed == AnalysisType::Summary {
        // the triage: every family's own symptoms instead of this view's packet counts
        // (one definition each)
        let (triaged, c) = triage(&a, &p).await?;
        checks = c;
        for f in triaged {
            if !findings.iter().any(|o| o.title == f.title) {
                findings.push(f);
            }
        }
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        more = findings.len().saturating_sub(TRIAGE_FINDINGS);
        findings.truncate(TRIAGE_FINDINGS);
    }
    let summary = summarize(
        &a,
        &acc,
        &file_facts,
        &conversations,
        &findings,
        &checks,
        more,
    );
    let data = PcapOverview {
        analysis_type: detailed,
        file_facts,
        protocol_totals,
        protocol_hierarchy,
        conversations,
        endpoints,
        expert: acc.expert.clone(),
        checks,
    };
    Ok(Report::complete(
        summary,
        findings,
        data,
        capture,
        a.scope(None),
        a.commands,
    ))
}

fn capture_start(info: &Option<CapInfo>, span: &Span) -> f64 {
    info.as_ref()
        .and_then(|i| i.first_epoch)
        .or(span.first)
        .unwrap_or(0.0)
}

fn conv_filter(c: &ConvAcc) -> String {
    match (c.protocol.as_ref(), c.stream) {
        ("tcp", Some(s)) => format!("tcp.stream == {s}"),
        ("udp", Some(s)) => format!("udp.stream == {s}"),
        _ => {
            let (a, b) = (&*c.a.addr, &*c.b.addr);
            format!("{} && {}", host_filter(a, "addr"), host_filter(b, "addr"))
        }
    }
}

/// One more packet of `len` bytes under `key`.
fn bump(map: &mut Keyed<String, (u64, u64)>, key: &str, len: u64) {
    let e = map.at(key);
    e.0 += 1;
    e.1 += len;
}

fn hierarchy_rows(
    nodes: &Keyed<String, (u64, u64)>,
    packets: u64,
    bytes: u64,
) -> Vec<ProtocolNode> {
    // depth first, siblings by frames: sort by the chain of ancestors' frame counts
    let mut keys: Vec<&String> = nodes.keys().collect();
    let sort_key = |path: &str| -> Vec<(std::cmp::Reverse<u64>, String)> {
        let mut prefix = String::new();
        path.split(':')
            .map(|seg| {
                if !prefix.is_empty() {
                    prefix.push(':');
                }
                prefix.push_str(seg);
                let frames = nodes.get(&prefix).map(|v| v.0).unwrap_or(0);
                (std::cmp::Reverse(frames), prefix.clone())
            })
            .collect()
    };
    keys.sort_by_cached_key(|k| sort_key(k));
    keys.into_iter()
        .map(|k| {
            let (f, b) = nodes[k];
            ProtocolNode {
                protocol: k.rsplit(':').next().unwrap_or(k).to_string(),
                path: k.clone(),
                depth: k.matches(':').count(),
                frames: f,
                bytes: b,
                frames_pct: pct(f, packets),
                bytes_pct: pct(b, bytes),
            }
        })
        .collect()
}

fn file_facts(i: &CapInfo, truncated: u64) -> FileFacts {
    let d = i.duration_s;
    let per_s = |v: f64| if d > 0.0 { round(v / d, 3) } else { 0.0 };
    FileFacts {
        file_type: i.file_type.clone(),
        link_type: i.encapsulation.clone(),
        packets: i.packets,
        file_bytes: i.file_bytes,
        data_bytes: i.data_bytes,
        duration_s: d,
        avg_packets_per_s: per_s(i.packets as f64),
        avg_bits_per_s: per_s(i.data_bytes as f64 * 8.0),
        avg_packet_bytes: if i.packets > 0 {
            round(i.data_bytes as f64 / i.packets as f64, 2)
        } else {
            0.0
        },
        snaplen: i.snaplen,
        truncated_packets: truncated,
        strict_time_order: i.strict_time_order,
    }
}

fn symptom_finding(
    s: &Symptom,
    severity: Severity,
    title: String,
    detail: String,
    filter: &str,
) -> Option<Finding> {
    (s.count > 0).then(|| {
        Finding::new(
            severity,
            title,
            detail,
            Evidence {
                frames: s.frames.clone(),
                display_filter: filter.to_string(),
                ..Default::default()
            },
        )
    })
}

/// What is wrong with the capture file itself (damaged, cut by the snapshot length):
/// the overview's own, in every analysis_type.
fn capture_findings(
    acc: &Overview,
    read_warning: &Option<String>,
    truncated: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(w) = read_warning {
        out.push(Finding::new(
            Severity::Medium,
            "Capture file is damaged or cut short",
            format!("tshark could read only part of the file: {w}. The figures cover the packets that could be read."),
            Evidence {
                frames: (acc.span.packets > 0).then_some(acc.span.packets).into_iter().collect(),
                display_filter: format!("frame.number == {}", acc.span.packets),
                ..Default::default()
            },
        ));
    }
    if !truncated {
        return out;
    }
    out.extend(symptom_finding(
        &acc.truncated,
        Severity::Info,
        format!("{} packets were captured shorter than they were on the wire", thousands(acc.truncated.count)),
        "The capture's snapshot length cut these packets; payload-level analysis (HTTP bodies, TLS certificates) may be incomplete.".into(),
        "frame.cap_len < frame.len",
    ));
    out
}

/// Symptoms counted per packet, for the detailed views; the triage (summary) takes
/// each family's own findings instead.
fn symptom_findings(acc: &Overview) -> Vec<Finding> {
    let mut out = Vec::new();
    let retrans_rate = pct(acc.retrans.count, acc.tcp_packets);
    out.extend(symptom_finding(
        &acc.retrans,
        if retrans_rate >= 5.0 {
            Severity::High
        } else if retrans_rate >= 1.0 {
            Severity::Medium
        } else {
            Severity::Low
        },
        format!("{} TCP retransmissions ({retrans_rate}% of TCP packets)", thousands(acc.retrans.count)),
        "Retransmissions mean lost or delayed segments. Drill into the affected streams with the display filter; per-stream loss analysis is analyze_tcp_retransmissions' job.".into(),
        "tcp.analysis.retransmission",
    ));
    out.extend(symptom_finding(
        &acc.zero_window,
        Severity::Medium,
        format!("{} TCP zero-window advertisements", thousands(acc.zero_window.count)),
        "A receiver told its peer to stop sending: the application is not reading fast enough (analyze_tcp_zero_window).".into(),
        "tcp.analysis.zero_window",
    ));
    out.extend(symptom_finding(
        &acc.resets,
        Severity::Low,
        format!("{} TCP resets", thousands(acc.resets.count)),
        "Connections ended or were refused with RST; many resets to one port usually mean a closed port or a scan (analyze_connection_lifecycle).".into(),
        "tcp.flags.reset == 1",
    ));
    out.extend(symptom_finding(
        &acc.dns_errors,
        Severity::Low,
        format!(
            "{} DNS responses with SERVFAIL or REFUSED",
            thousands(acc.dns_errors.count)
        ),
        "The resolver could not or would not answer (NXDOMAIN is an answer, not counted); analyze_dns_resolution_issues also finds queries never answered.".into(),
        "dns.flags.rcode in {2,5}",
    ));
    out.extend(symptom_finding(
        &acc.http_errors,
        Severity::Medium,
        format!(
            "{} HTTP error responses (4xx/5xx)",
            thousands(acc.http_errors.count)
        ),
        "Use extract_http_requests to see which requests failed and how long they took.".into(),
        "http.response.code >= 400",
    ));
    out.extend(symptom_finding(
        &acc.tls_alerts,
        Severity::Medium,
        format!("{} TLS alerts", thousands(acc.tls_alerts.count)),
        "TLS alerts end or warn about sessions: handshake failures, unknown CAs, bad certificates (analyze_tls_alerts).".into(),
        "tls.alert_message",
    ));
    out.extend(symptom_finding(
        &acc.expert_errors,
        Severity::Medium,
        format!("{} frames with Wireshark expert errors", thousands(acc.expert_errors.count)),
        "Malformed packets or protocol violations as Wireshark's dissectors see them (analyze_expert_information).".into(),
        "_ws.expert.severity == error",
    ));
    out
}

/// Every family's check over this capture's index, each finding pointing at the tool
/// that explains it. Findings two families share (the capture's clock) appear once.
async fn triage(
    a: &Analysis,
    p: &AnalyzePcapParams,
) -> Result<(Vec<Finding>, Vec<TriageCheck>), String> {
    let mut arguments = BTreeMap::new();
    arguments.insert(
        "pcap_file".to_string(),
        serde_json::Value::String(p.pcap_file.clone()),
    );
    if let Some(f) = &a.user_filter {
        arguments.insert(
            "display_filter".to_string(),
            serde_json::Value::String(f.clone()),
        );
    }
    // the same range as absolute instants, which name it whatever form was written
    let range = a.scope(None).time_range;
    for (name, v) in [
        ("start_time", range.as_ref().and_then(|r| r.start.clone())),
        ("end_time", range.as_ref().and_then(|r| r.end.clone())),
    ] {
        if let Some(v) = v {
            arguments.insert(name.to_string(), serde_json::Value::String(v));
        }
    }
    let mut out: Vec<Finding> = Vec::new();
    let mut checks = Vec::new();
    for (c, found) in crate::tools::run_checks(a).await? {
        let mut kept = match found {
            Ok(f) => f,
            Err(e) => {
                checks.push(TriageCheck {
                    tool: c.tool.into(),
                    findings: 0,
                    worst: None,
                    error: Some(e),
                });
                continue;
            }
        };
        kept.sort_by_key(|f| std::cmp::Reverse(f.severity));
        checks.push(TriageCheck {
            tool: c.tool.into(),
            findings: kept.len(),
            worst: kept.iter().map(|f| f.severity).max(),
            error: None,
        });
        for mut f in kept.into_iter().take(TRIAGE_PER_CHECK) {
            if out.iter().any(|o| o.title == f.title) {
                continue;
            }
            f.evidence.frames.truncate(5);
            f.next_step = Some(NextStep {
                tool: c.tool.into(),
                arguments: arguments.clone(),
            });
            out.push(f);
        }
    }
    Ok((out, checks))
}

fn summarize(
    a: &Analysis,
    acc: &Overview,
    facts: &Option<FileFacts>,
    convs: &Table<Conversation>,
    findings: &[Finding],
    checks: &[TriageCheck],
    more: usize,
) -> String {
    let mut s = String::new();
    // the triage leads with the most important problem
    if let Some(f) = findings
        .first()
        .filter(|f| f.severity >= Severity::Medium && !checks.is_empty())
    {
        s.push_str(&format!(
            "Most important ({}): {}",
            f.severity.as_str(),
            f.title
        ));
        if let Some(n) = &f.next_step {
            s.push_str(&format!(" (see {})", n.tool));
        }
        s.push_str(". ");
    }
    let scope = a
        .filter
        .as_ref()
        .map(|f| format!(" matching `{f}`"))
        .unwrap_or_default();
    s.push_str(&format!(
        "{} holds {} packets{scope} ({}) over {:.1} s",
        a.file.display_name,
        thousands(acc.span.packets),
        human_bytes(acc.bytes as f64),
        acc.span.duration(),
    ));
    if let Some(f) = facts {
        s.push_str(&format!(
            ", link type {}, average {}",
            f.link_type,
            human_bits_per_s(f.avg_bits_per_s)
        ));
    }
    s.push_str(". ");
    let mut top: Vec<(&String, &(u64, u64))> = acc
        .totals
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "frame" | "eth" | "ip" | "ipv6" | "sll" | "ethertype"
            )
        })
        .collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1.0));
    if !top.is_empty() {
        let names: Vec<String> = top
            .iter()
            .take(4)
            .map(|(k, v)| format!("{} {}%", k.to_uppercase(), pct(v.0, acc.span.packets)))
            .collect();
        s.push_str(&format!("Main protocols by frames: {}. ", names.join(", ")));
    }
    if let Some(c) = convs.rows.first() {
        s.push_str(&format!(
            "{} conversations; the largest is {} {} <-> {} with {}. ",
            thousands(convs.total as u64),
            c.protocol.to_uppercase(),
            c.a,
            c.b,
            human_bytes(c.bytes as f64)
        ));
    }
    let serious: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.severity >= Severity::Medium)
        .collect();
    if !checks.is_empty() {
        let names: Vec<&str> = checks.iter().map(|c| c.tool.as_str()).collect();
        if serious.is_empty() {
            s.push_str(&format!(
                "No serious symptoms from the {} checks ({}).",
                checks.len(),
                names.join(", ")
            ));
        } else {
            let titles: Vec<&str> = serious
                .iter()
                .skip(1)
                .take(3)
                .map(|f| f.title.as_str())
                .collect();
            if !titles.is_empty() {
                s.push_str(&format!("Also: {}.", titles.join("; ")));
            }
            s.push_str(&format!(
                " {} serious finding(s) from {} checks",
                serious.len(),
                checks.len()
            ));
            if more > 0 {
                s.push_str(&format!("; {more} more finding(s) not listed"));
            }
            s.push('.');
        }
        if let Some(failed) = checks.iter().find(|c| c.error.is_some()) {
            s.push_str(&format!(" The {} check could not run.", failed.tool));
        }
    } else if serious.is_empty() {
        s.push_str(&format!(
            "No serious symptoms: checked TCP retransmissions ({}), zero windows ({}), HTTP errors ({}), TLS alerts ({}) and expert errors ({}).",
            acc.retrans.count, acc.zero_window.count, acc.http_errors.count, acc.tls_alerts.count, acc.expert.error
        ));
    } else {
        let titles: Vec<&str> = serious.iter().take(3).map(|f| f.title.as_str()).collect();
        s.push_str(&format!("Worth a look: {}.", titles.join("; ")));
    }
    s
}

/// The volume numbers a comparison of two captures reads: packets, bytes and the
/// frames of each protocol, as the overview counts them.
pub async fn compare_metrics(
    mut a: Analysis,
) -> Result<Vec<crate::analysis::compare::Metric>, String> {
    use crate::analysis::compare::{Better, Metric};
    let acc = a.part::<Overview>().await?;
    let mut out = vec![
        Metric::new(
            "volume",
            "packets",
            acc.span.packets as f64,
            "count",
            Better::Neither,
        ),
        Metric::new(
            "volume",
            "bytes",
            acc.bytes as f64,
            "count",
            Better::Neither,
        ),
    ];
    for (proto, (frames, _)) in &acc.totals {
        out.push(Metric::new(
            "protocols",
            proto.clone(),
            *frames as f64,
            "frames",
            Better::Neither,
        ));
    }
    Ok(out)
}

/// Gaps in traffic for get_events_around: seconds in which nothing at all was
/// captured (the link, the capture, or every application went quiet).
pub async fn events(
    mut a: Analysis,
    q: crate::analysis::events::EventQuery,
) -> Result<Vec<crate::analysis::events::Event>, String> {
    let acc = a.part::<Overview>().await?;
    // a silence is news when it is long for this capture: a hundred times its mean
    // spacing of packets (a sparse capture is quiet for seconds all the time)
    let mean = acc.span.duration() / acc.span.packets.max(1) as f64;
    let long = (100.0 * mean).max(GAP_S);
    let mut out = Vec::new();
    for &(start, end, frame) in acc.gaps.iter().filter(|g| g.1 - g.0 >= long) {
        let len = end - start;
        let weight = u32::from(len >= 5.0);
        // a gap is near the moment when any of it is
        let before = frame.saturating_sub(1).max(1);
        out.extend(q.event_span((start, end, before), "capture", weight, || {
            (
                "No packet captured".into(),
                Some(format!("for {len:.3} s, until frame {frame}")),
                format!("frame.number in {{{before},{frame}}}"),
            )
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from `tshark -T fields` with OverviewRow::FIELDS on arkime-wireshark-retrans.pcap frame 2.
    const ROW: &str = "2\t1335961386.581014000\t74\t74\teth:ethertype:ip:tcp\t10.0.0.1\t10.0.0.2\t\t\t6\t\t35846\t4000\t\t\t0\t\t2097152\u{1f}4194304\t1\t\t0\t\t\t";

    #[test]
    fn reduces_a_recorded_row() {
        let row = OverviewRow::parse_line(ROW).unwrap();
        assert_eq!(row.number, 2);
        assert_eq!(row.sport, Some(35846));
        assert!(row.retransmission);
        let mut o = Overview::default();
        o.add(row);
        crate::index::Part::finish(&mut o);
        assert_eq!(o.expert.chat, 1);
        assert_eq!(o.expert.note, 1);
        assert_eq!(o.totals["tcp"].0, 1);
        assert!(o.hierarchy.contains_key("eth:ip:tcp"));
        assert_eq!(o.convs.len(), 1);
    }
}
