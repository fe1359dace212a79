//! `analyze_security_threats`: scans and sweeps, SYN floods, brute force, cleartext
//! credentials, DNS tunnelling, ARP spoofing, ICMP redirects and floods, suspicious TLS
//! and beaconing, each with frames and a filter to see it.
//!
//! Connection-shaped threats come from the shared TCP model (one pass for every TCP
//! tool), certificates from the TLS model, and everything else from one more pass that
//! also runs tshark's own `-z credentials` tap. Thresholds favour the analyst's trust:
//! a capture with no attack must not raise a high finding (a test runs every clean
//! capture of the corpus through this tool).

use std::collections::{BTreeMap, BTreeSet};

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::dns::TunnelHints;
use crate::analysis::scans::{PortScan, SCAN_PORTS, attempt_failed, port_scans, scan_finding};
use crate::engine::Analysis;
use crate::model::tcp::{Stream, TcpModel};
use crate::model::tls::TlsModel;
use crate::report::{
    Evidence, Finding, Report, Severity, Table, endpoint, host_filter, rfc3339, round,
};
use crate::secrets::mask;
use crate::server::PcapServer;
use crate::tools::clamp_limit;
use crate::tshark::fields::{AddrText, FromRow, Row, is_icmp_error};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ThreatParams {
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
    /// Show cleartext passwords as captured (default false: masked to their length).
    #[serde(default)]
    pub reveal_secrets: Option<bool>,
}

/// The focused detections' parameters: a capture and its scope.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ScopeParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Wireshark display filter scoping the analysis.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
}

impl From<ScopeParams> for ThreatParams {
    fn from(p: ScopeParams) -> Self {
        ThreatParams {
            pcap_file: p.pcap_file,
            display_filter: p.display_filter,
            time: p.time,
            limit: None,
            reveal_secrets: None,
        }
    }
}

/// Addresses and frames listed per ARP conflict.
const ARP_LISTED: usize = 10;

/// One source trying one port (or ICMP echo) on many hosts.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HostSweep {
    pub source: String,
    /// `tcp/445` or `icmp-echo`.
    pub service: String,
    pub hosts_tried: usize,
    /// Hosts that answered (SYN-ACK or echo reply).
    pub hosts_answering: usize,
    pub sample_frames: Vec<u64>,
    pub display_filter: String,
}

/// Many connection attempts to one service that never got past the SYN.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SynFlood {
    pub target: String,
    pub syn_only_attempts: usize,
    pub distinct_sources: usize,
    pub peak_attempts_per_s: u64,
    pub sample_frames: Vec<u64>,
    pub display_filter: String,
}

/// Many logins (or connections) from one client to one authentication service.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BruteForce {
    pub client: String,
    pub server: String,
    pub service: String,
    pub connections: usize,
    /// Failed logins the protocol reported (FTP 530, HTTP 401).
    pub failed_logins: u64,
    pub sample_frames: Vec<u64>,
    pub display_filter: String,
}

/// A credential sent in clear text.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Credential {
    pub protocol: String,
    pub client: String,
    pub server: String,
    pub username: Option<String>,
    /// Masked as `<N chars>` unless `reveal_secrets` is true; absent when only a user
    /// name crossed the wire (NTLM, tshark's credentials tap).
    pub secret: Option<String>,
    pub frame: u64,
    pub display_filter: String,
}

/// One IP address claimed by several MACs, or one MAC claiming several IPs.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ArpConflict {
    /// `ip_with_several_macs` or `mac_claiming_several_ips`.
    pub kind: String,
    /// The addresses involved (the first 10) and how many there are.
    pub ip_addresses: Vec<String>,
    pub ip_count: usize,
    pub mac_addresses: Vec<String>,
    /// A sample of the ARP frames that claim them (the first 10).
    pub arp_frames: Vec<u64>,
    /// Off-link traffic that moved from one MAC to another (a new next hop) after it.
    pub traffic_moved: Option<String>,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IcmpActivity {
    pub redirects: u64,
    pub redirect_frames: Vec<u64>,
    /// Echo requests per (source -> destination) above flood rates.
    pub floods: Vec<IcmpFlood>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IcmpFlood {
    pub source: String,
    pub destination: String,
    pub echo_requests: u64,
    pub peak_per_s: u64,
    pub first_frame: u64,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TlsConcern {
    pub server: String,
    pub sni: Option<String>,
    /// self_signed_certificate, expired_certificate, insecure_cipher, old_protocol.
    pub issue: String,
    pub detail: String,
    pub frame: Option<u64>,
    pub display_filter: String,
}

/// A client checking in at a steady interval: TCP connections to one service, or DNS
/// queries for one name.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Beacon {
    /// tcp (connection starts) or dns (queries for one name).
    pub kind: String,
    pub client: String,
    /// The service (`addr:port`) or the name queried.
    pub server: String,
    /// Connections (tcp) or queries (dns).
    pub events: usize,
    pub mean_interval_s: f64,
    /// Standard deviation of the interval over its mean: 0 is a metronome.
    pub interval_variation: f64,
    pub sample_frames: Vec<u64>,
    pub display_filter: String,
}

/// What a check looked at and what it concluded, so "nothing found" says what was checked.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Check {
    pub check: String,
    pub found: usize,
    pub looked_at: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Threats {
    pub checks: Vec<Check>,
    pub port_scans: Table<PortScan>,
    pub host_sweeps: Table<HostSweep>,
    pub syn_floods: Table<SynFlood>,
    pub brute_force: Table<BruteForce>,
    pub credentials: Table<Credential>,
    pub arp_conflicts: Table<ArpConflict>,
    pub icmp: IcmpActivity,
    pub dns_tunnelling_hints: Option<String>,
    pub suspicious_tls: Table<TlsConcern>,
    pub beacons: Table<Beacon>,
}

// ------------------------------------------------------------ connection threats

/// Hosts answering one prober "port unreachable" for many UDP ports: a UDP scan (open
/// or filtered ports stay silent, so only the closed ones are counted).
fn udp_scans(udp_closed: &BTreeMap<(String, String), Unreachables>) -> Vec<PortScan> {
    let mut out: Vec<PortScan> = udp_closed
        .iter()
        .filter(|(_, (ports, ..))| ports.len() >= SCAN_PORTS)
        .map(|((scanner, target), (ports, frames, first, last))| {
            let v = if target.contains(':') {
                "icmpv6.type == 1 && icmpv6.code == 4"
            } else {
                "icmp.type == 3 && icmp.code == 3"
            };
            PortScan {
                protocol: "udp".into(),
                scanner: scanner.clone(),
                target: target.clone(),
                ports_tried: ports.len(),
                refused_or_unanswered: ports.len(),
                open_ports: Vec::new(),
                scan_type: "udp".into(),
                first_time: rfc3339(*first),
                duration_s: round(last - first, 3),
                sample_frames: frames.clone(),
                display_filter: format!(
                    "{v} && {} && {}",
                    host_filter(target, "src"),
                    host_filter(scanner, "dst")
                ),
            }
        })
        .collect();
    out.sort_by_key(|x| std::cmp::Reverse(x.ports_tried));
    out
}

/// Ports where administrators log in: many short connections to them are password guessing.
const AUTH_PORTS: &[(u64, &str)] = &[
    (21, "ftp"),
    (22, "ssh"),
    (23, "telnet"),
    (110, "pop3"),
    (143, "imap"),
    (389, "ldap"),
    (1433, "mssql"),
    (3306, "mysql"),
    (3389, "rdp"),
    (5432, "postgresql"),
    (5900, "vnc"),
];

/// Ports a sweep of many hosts is worth a high finding for: remote administration and
/// file sharing, the first things an intruder looks for.
const SWEEP_PORTS: &[u64] = &[22, 23, 135, 139, 445, 1433, 3306, 3389, 5900];

fn host_sweeps(m: &TcpModel, scanners: &BTreeSet<String>) -> Vec<HostSweep> {
    let mut by: BTreeMap<&str, Vec<&Stream>> = BTreeMap::new();
    for s in m.streams.iter().filter(|s| s.syn[0]) {
        by.entry(s.addr[0].as_ref()).or_default().push(s);
    }
    let mut out: Vec<HostSweep> = by
        .into_iter()
        .filter_map(|(src, streams)| {
            let hosts: BTreeSet<&str> = streams.iter().map(|s| s.addr[1].as_ref()).collect();
            let failed: BTreeSet<&str> = streams
                .iter()
                .filter(|s| attempt_failed(s))
                .map(|s| s.addr[1].as_ref())
                .collect();
            let first = streams.iter().map(|s| s.first).fold(f64::MAX, f64::min);
            let last = streams.iter().map(|s| s.first).fold(f64::MIN, f64::max);
            // a client talking to many servers that answer (a browser, a P2P node) is no
            // sweep; a fast burst of probes to a handful of hosts is (nmap's discovery)
            let quick = hosts.len() >= 6 && last - first <= 10.0;
            if !(hosts.len() >= 20 || quick)
                || failed.len() * 2 < hosts.len()
                || scanners.contains(src)
            {
                return None;
            }
            let ports: BTreeSet<u64> = streams.iter().map(|s| s.port()[1]).collect();
            if ports.len() > 10 {
                return None; // many ports per host: the port-scan check's business
            }
            let answering: BTreeSet<&str> = streams
                .iter()
                .filter(|s| s.synack[1])
                .map(|s| s.addr[1].as_ref())
                .collect();
            let mut frames: Vec<u64> = streams.iter().filter_map(|s| s.syn_frame()).collect();
            frames.sort_unstable();
            crate::report::keep_first(&mut frames, 10);
            let port_list = ports.iter().map(|p| p.to_string()).collect::<Vec<_>>();
            Some(HostSweep {
                source: src.to_string(),
                service: format!("tcp/{}", port_list.join(",")),
                hosts_tried: hosts.len(),
                hosts_answering: answering.len(),
                sample_frames: frames,
                display_filter: format!(
                    "{} && tcp.dstport in {{{}}} && tcp.flags.syn == 1 && tcp.flags.ack == 0",
                    host_filter(src, "src"),
                    port_list.join(",")
                ),
            })
        })
        .collect();
    out.sort_by_key(|x| std::cmp::Reverse(x.hosts_tried));
    out
}

/// The originator sent nothing but its SYN (and retransmissions of it).
fn syn_only(s: &Stream) -> bool {
    s.syn[0] && s.payload == [0, 0] && s.packets()[0] <= 1 + s.retrans[0] && !s.fin[0]
}

fn syn_floods(m: &TcpModel) -> Vec<SynFlood> {
    let mut by: BTreeMap<(&str, u64), Vec<&Stream>> = BTreeMap::new();
    for s in m.streams.iter().filter(|s| syn_only(s)) {
        by.entry((s.addr[1].as_ref(), s.port()[1]))
            .or_default()
            .push(s);
    }
    let mut out: Vec<SynFlood> = by
        .into_iter()
        .filter_map(|((dst, port), streams)| {
            if streams.len() < 50 {
                return None;
            }
            let mut per_s: BTreeMap<i64, u64> = BTreeMap::new();
            for s in &streams {
                *per_s.entry(s.first.floor() as i64).or_default() += 1;
            }
            let peak = per_s.values().copied().max().unwrap_or(0);
            if peak < 20 {
                return None;
            }
            let sources: BTreeSet<&str> = streams.iter().map(|s| s.addr[0].as_ref()).collect();
            let mut frames: Vec<u64> = streams.iter().filter_map(|s| s.syn_frame()).collect();
            frames.sort_unstable();
            crate::report::keep_first(&mut frames, 10);
            Some(SynFlood {
                target: endpoint(dst, Some(port)),
                syn_only_attempts: streams.len(),
                distinct_sources: sources.len(),
                peak_attempts_per_s: peak,
                sample_frames: frames,
                display_filter: format!(
                    "{} && tcp.dstport == {port} && tcp.flags.syn == 1 && tcp.flags.ack == 0",
                    host_filter(dst, "dst")
                ),
            })
        })
        .collect();
    out.sort_by_key(|x| std::cmp::Reverse(x.syn_only_attempts));
    out
}

fn brute_force(
    m: &TcpModel,
    failures: &BTreeMap<(String, String, String), Vec<u64>>,
) -> Vec<BruteForce> {
    let mut by: BTreeMap<(String, String, u64), Vec<&Stream>> = BTreeMap::new();
    for s in m.streams.iter().filter(|s| s.synack[1]) {
        if AUTH_PORTS.iter().any(|(p, _)| *p == s.port()[1]) {
            by.entry((s.addr[0].to_string(), s.addr[1].to_string(), s.port()[1]))
                .or_default()
                .push(s);
        }
    }
    let mut out = Vec::new();
    let mut covered = BTreeSet::new();
    for ((client, server, port), streams) in by {
        let service = AUTH_PORTS
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, n)| *n)
            .unwrap_or("tcp");
        let fails = failures
            .get(&(client.clone(), server.clone(), service.to_string()))
            .cloned()
            .unwrap_or_default();
        if streams.len() < 10 && fails.len() < 5 {
            continue;
        }
        covered.insert((client.clone(), server.clone(), service.to_string()));
        let mut frames: Vec<u64> = streams.iter().filter_map(|s| s.syn_frame()).collect();
        frames.extend(fails.iter().take(5));
        frames.sort_unstable();
        crate::report::keep_first(&mut frames, 10);
        out.push(BruteForce {
            display_filter: format!(
                "{} && {} && tcp.port == {port}",
                host_filter(&client, "addr"),
                host_filter(&server, "addr")
            ),
            client,
            server,
            service: service.into(),
            connections: streams.len(),
            failed_logins: fails.len() as u64,
            sample_frames: frames,
        });
    }
    // failed logins on services outside AUTH_PORTS (HTTP 401 on any port)
    for ((client, server, service), fails) in failures {
        if fails.len() >= 5 && !covered.contains(&(client.clone(), server.clone(), service.clone()))
        {
            out.push(BruteForce {
                display_filter: format!(
                    "{} && {} && {}",
                    host_filter(client, "addr"),
                    host_filter(server, "addr"),
                    if service == "http" {
                        "http.response.code == 401"
                    } else {
                        "ftp.response.code == 530"
                    }
                ),
                client: client.clone(),
                server: server.clone(),
                service: service.clone(),
                connections: 0,
                failed_logins: fails.len() as u64,
                sample_frames: fails.iter().take(10).copied().collect(),
            });
        }
    }
    out.sort_by_key(|x| std::cmp::Reverse((x.failed_logins, x.connections)));
    out
}

/// Mean interval and its variation (standard deviation over mean) of event times, when
/// they look like a check-in: 8+ events, 2 s or more apart on average (faster repeats are
/// a busy client), varying by at most 10%.
fn periodic(times: &mut [f64]) -> Option<(f64, f64)> {
    if times.len() < 8 {
        return None;
    }
    times.sort_by(f64::total_cmp);
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    if mean < 2.0 {
        return None;
    }
    let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
    let cv = var.sqrt() / mean;
    (cv <= 0.1).then_some((mean, cv))
}

fn beacons(m: &TcpModel, dns: &BTreeMap<(String, String), Vec<(f64, u64)>>) -> Vec<Beacon> {
    let mut by: BTreeMap<(&str, &str, u64), Vec<&Stream>> = BTreeMap::new();
    for s in m.streams.iter().filter(|s| s.syn[0]) {
        by.entry((s.addr[0].as_ref(), s.addr[1].as_ref(), s.port()[1]))
            .or_default()
            .push(s);
    }
    let mut out: Vec<Beacon> = by
        .into_iter()
        .filter_map(|((c, sv, port), streams)| {
            let mut times: Vec<f64> = streams.iter().map(|s| s.first).collect();
            let (mean, cv) = periodic(&mut times)?;
            let mut frames: Vec<u64> = streams.iter().filter_map(|s| s.syn_frame()).collect();
            frames.sort_unstable();
            crate::report::keep_first(&mut frames, 10);
            Some(Beacon {
                kind: "tcp".into(),
                client: c.to_string(),
                server: endpoint(sv, Some(port)),
                events: streams.len(),
                mean_interval_s: round(mean, 3),
                interval_variation: round(cv, 4),
                sample_frames: frames,
                display_filter: format!(
                    "{} && {} && tcp.dstport == {port} && tcp.flags.syn == 1 && tcp.flags.ack == 0",
                    host_filter(c, "src"),
                    host_filter(sv, "dst")
                ),
            })
        })
        .collect();
    out.extend(dns.iter().filter_map(|((client, name), q)| {
        let mut times: Vec<f64> = q.iter().map(|x| x.0).collect();
        let (mean, cv) = periodic(&mut times)?;
        Some(Beacon {
            kind: "dns".into(),
            client: client.clone(),
            server: name.clone(),
            events: q.len(),
            mean_interval_s: round(mean, 3),
            interval_variation: round(cv, 4),
            sample_frames: q.iter().map(|x| x.1).take(10).collect(),
            display_filter: format!(
                "{} && dns.flags.response == 0 && dns.qry.name == {}",
                host_filter(client, "src"),
                crate::tools::filter_string_literal(name)
            ),
        })
    }));
    out.sort_by_key(|x| std::cmp::Reverse(x.events));
    out
}

// ------------------------------------------------------------ the packet pass

pub struct ThreatRow {
    frame: u64,
    time: f64,
    eth_src: Option<AddrText>,
    src: Option<AddrText>,
    dst: Option<AddrText>,
    arp_op: Option<u64>,
    arp_mac: Option<String>,
    arp_ip: Option<String>,
    icmp_type: Option<u64>,
    dns_query: Option<(String, Option<u64>)>,
    ftp_cmd: Option<String>,
    ftp_arg: Option<String>,
    ftp_code: Option<u64>,
    http_basic: Option<String>,
    form: Vec<(String, String)>,
    http_code: Option<u64>,
    pop_cmd: Option<String>,
    pop_arg: Option<String>,
    imap_user: Option<String>,
    imap_pass: Option<String>,
    smtp_user: Option<String>,
    smtp_pass: Option<String>,
    ldap_simple: Option<String>,
    ldap_name: Option<String>,
    snmp_community: Option<String>,
    ntlm_user: Option<String>,
    ntlm_domain: Option<String>,
    stream: Option<u64>,
    /// The UDP port an ICMP port-unreachable error quotes.
    port_unreachable: Option<u64>,
}

impl FromRow for ThreatRow {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.time_epoch",
        "eth.src",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "arp.opcode",
        "arp.src.hw_mac",
        "arp.src.proto_ipv4",
        "icmp.type",
        "icmpv6.type",
        "dns.flags.response",
        "dns.qry.name",
        "dns.qry.type",
        "ftp.request.command",
        "ftp.request.arg",
        "ftp.response.code",
        "http.authbasic",
        "urlencoded-form.key",
        "urlencoded-form.value",
        "http.response.code",
        "pop.request.command",
        "pop.request.parameter",
        "imap.request.username",
        "imap.request.password",
        "smtp.auth.username",
        "smtp.auth.password",
        "ldap.simple",
        "ldap.name",
        "snmp.community",
        "ntlmssp.auth.username",
        "ntlmssp.auth.domain",
        "tcp.stream",
        "frame.protocols",
        "icmp.code",
        "icmpv6.code",
        "udp.dstport",
    ];
    fn from_row(r: &Row<'_>) -> Option<Self> {
        let protocols = r.str(34).unwrap_or("");
        let multicast_dns = protocols.contains(":mdns") || protocols.contains(":llmnr");
        let icmp_type = r.u64(10).or_else(|| r.u64(11).map(|t| t + 1000));
        let quote = is_icmp_error(r.u64(10), r.u64(11));
        let pick = |i: usize| r.conversation_addr(i, quote);
        Some(Self {
            frame: r.u64(0)?,
            time: r.f64(1).unwrap_or(0.0),
            eth_src: r.first(2).map(AddrText::new),
            src: pick(3).or_else(|| pick(4)).map(AddrText::new),
            dst: pick(5).or_else(|| pick(6)).map(AddrText::new),
            arp_op: r.u64(7),
            arp_mac: r.owned(8),
            arp_ip: r.owned(9),
            icmp_type,
            dns_query: (!r.flag(12) && !multicast_dns)
                .then(|| r.owned(13).map(|n| (n, r.u64(14))))
                .flatten(),
            ftp_cmd: r.owned(15),
            ftp_arg: r.owned(16),
            ftp_code: r.u64(17),
            http_basic: r.owned(18),
            form: r
                .all(19)
                .zip(r.all(20))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            http_code: r.u64(21),
            pop_cmd: r.owned(22),
            pop_arg: r.owned(23),
            imap_user: r.owned(24),
            imap_pass: r.owned(25),
            smtp_user: r.owned(26),
            smtp_pass: r.owned(27),
            ldap_simple: r.owned(28),
            ldap_name: r.owned(29),
            snmp_community: r.owned(30),
            ntlm_user: r.owned(31).filter(|u| u != "NULL"),
            ntlm_domain: r.owned(32).filter(|u| u != "NULL"),
            stream: r.u64(33),
            port_unreachable: match (r.u64(10), r.u64(35), r.u64(11), r.u64(36)) {
                (Some(3), Some(3), _, _) | (_, _, Some(1), Some(4)) => r.u64(37),
                _ => None,
            },
        })
    }
}

/// One row of tshark's `-z credentials` table: packet, protocol, user name.
pub fn parse_credentials_tap(line: &str) -> Option<(u64, String, String)> {
    // columns are padded to fixed widths: Packet(11) Protocol(17) Username(17) Info
    let frame: u64 = line.get(..11)?.trim().parse().ok()?;
    let protocol = line.get(11..28)?.trim().to_string();
    let user = line.get(28..45).unwrap_or("").trim().to_string();
    (!protocol.is_empty()).then_some((frame, protocol, user))
}

fn is_user_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["user", "login", "email", "uname", "account"]
        .iter()
        .any(|w| k.contains(w))
}

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["pass", "pwd", "secret"].iter().any(|w| k.contains(w))
}

/// Closed UDP ports one host reported to another: (ports, sample frames, first, last time).
type Unreachables = (BTreeSet<u64>, Vec<u64>, f64, f64);

/// Echo requests of one source/destination pair: count, first frame, count per second.
type EchoCount = (u64, u64, BTreeMap<i64, u64>);

#[derive(Default)]
pub struct PacketFacts {
    span: crate::engine::Span,
    arp_claims: BTreeMap<String, Vec<(String, u64)>>,
    mac_claims: BTreeMap<String, BTreeSet<String>>,
    /// Per IP source, the MACs its frames arrived from, with the first frame of each.
    ip_macs: crate::index::Keyed<String, Vec<(String, u64)>>,
    credentials: Vec<Credential>,
    /// (client, server, service) -> failed-login frames.
    failures: BTreeMap<(String, String, String), Vec<u64>>,
    redirects: Vec<u64>,
    echo: BTreeMap<(String, String), EchoCount>,
    echo_replied: BTreeSet<(String, String)>,
    /// (client, name) -> query times and frames, for DNS check-ins.
    dns_queries: BTreeMap<(String, String), Vec<(f64, u64)>>,
    /// (prober, closed host) -> ports it was told are closed.
    udp_closed: BTreeMap<(String, String), Unreachables>,
    tunnel: TunnelHints,
    /// The user named on a connection, by protocol and stream, until its PASS arrives.
    users: BTreeMap<(&'static str, u64), String>,
}

impl crate::index::Part for PacketFacts {
    type Row = ThreatRow;
    fn new(_: &crate::index::Ctx) -> Self {
        Self::default()
    }
    fn add(&mut self, r: ThreatRow) {
        self.span.add(Some(r.time));
        PacketFacts::add(self, r)
    }
    fn finish(&mut self) {
        self.ip_macs.finish();
    }
    fn approx_bytes(&self) -> usize {
        // per-pair maps dominate; each entry holds two addresses and a few frames
        (self.arp_claims.len() + self.ip_macs.len() + self.failures.len() + self.echo.len()) * 160
            + self
                .dns_queries
                .values()
                .map(|v| 96 + v.len() * 16)
                .sum::<usize>()
            + self.udp_closed.len() * 200
            + self.credentials.len() * 200
    }
}

impl PacketFacts {
    /// Secrets are kept as captured; the report masks them unless the caller asks.
    fn add(&mut self, mut r: ThreatRow) {
        if let (Some(op), Some(mac), Some(ip)) = (r.arp_op, &r.arp_mac, &r.arp_ip)
            && (op == 1 || op == 2)
            && !unassigned(ip)
        {
            let v = self.arp_claims.entry(ip.clone()).or_default();
            if !v.iter().any(|(m, _)| m == mac) {
                v.push((mac.clone(), r.frame));
            }
            self.mac_claims
                .entry(mac.clone())
                .or_default()
                .insert(ip.clone());
        }
        let (Some(src), Some(dst)) = (r.src.take(), r.dst.take()) else {
            return;
        };
        if let Some(mac) = &r.eth_src
            && !unassigned(&src)
            && let Some(v) = self.ip_macs.slot(&src)
            && v.len() < 4
            && !v.iter().any(|(m, _)| *m == **mac)
        {
            // most sources only ever show one MAC: no room for four per source
            v.reserve_exact(1);
            v.push((mac.to_string(), r.frame));
        }
        if let Some(port) = r.port_unreachable {
            // the error goes back to the prober: dst probed src
            let e = self
                .udp_closed
                .entry((dst.to_string(), src.to_string()))
                .or_insert((BTreeSet::new(), Vec::new(), r.time, r.time));
            e.0.insert(port);
            if e.1.len() < 10 {
                e.1.push(r.frame);
            }
            e.3 = r.time;
        }
        match r.icmp_type {
            Some(5) | Some(1137) => self.redirects.push(r.frame),
            Some(8) | Some(1128) => {
                let e = self
                    .echo
                    .entry((src.to_string(), dst.to_string()))
                    .or_insert((0, r.frame, BTreeMap::new()));
                e.0 += 1;
                *e.2.entry(r.time.floor() as i64).or_default() += 1;
            }
            Some(0) | Some(1129) => {
                self.echo_replied.insert((dst.to_string(), src.to_string()));
            }
            _ => {}
        }
        if let Some((name, qtype)) = &r.dns_query {
            self.tunnel.add(name, *qtype, r.frame);
            // bounded: a resolver-heavy capture keeps its first 100k client/name pairs
            let key = (src.to_string(), name.clone());
            if self.dns_queries.len() < 100_000 || self.dns_queries.contains_key(&key) {
                let v = self.dns_queries.entry(key).or_default();
                if v.len() < 10_000 {
                    v.push((r.time, r.frame));
                }
            }
        }
        let cred = |protocol: &str, user: Option<String>, secret: Option<&str>| Credential {
            protocol: protocol.into(),
            client: src.to_string(),
            server: dst.to_string(),
            username: user,
            secret: secret.map(str::to_string),
            frame: r.frame,
            display_filter: format!("frame.number == {}", r.frame),
        };
        let stream = r.stream.unwrap_or(u64::MAX);
        // USER then PASS on one connection (FTP, POP3): pair them by stream
        for (proto, cmd, arg) in [
            ("ftp", &r.ftp_cmd, &r.ftp_arg),
            ("pop3", &r.pop_cmd, &r.pop_arg),
        ] {
            match cmd.as_deref().map(str::to_ascii_uppercase).as_deref() {
                Some("USER") => {
                    if let Some(u) = arg {
                        self.users.insert((proto, stream), u.clone());
                    }
                }
                Some("PASS") => {
                    let user = self.users.get(&(proto, stream)).cloned();
                    self.credentials
                        .push(cred(proto, user, Some(arg.as_deref().unwrap_or(""))));
                }
                _ => {}
            }
        }
        if let Some(b) = &r.http_basic {
            let (u, s) = b.split_once(':').unwrap_or((b, ""));
            self.credentials
                .push(cred("http-basic", Some(u.to_string()), Some(s)));
        }
        if let Some((_, secret)) = r.form.iter().find(|(k, _)| is_secret_key(k)) {
            let user = r
                .form
                .iter()
                .find(|(k, _)| is_user_key(k))
                .map(|(_, v)| v.clone());
            self.credentials.push(cred("http-form", user, Some(secret)));
        }
        if r.imap_user.is_some() || r.imap_pass.is_some() {
            self.credentials
                .push(cred("imap", r.imap_user.clone(), r.imap_pass.as_deref()));
        }
        if r.smtp_user.is_some() || r.smtp_pass.is_some() {
            self.credentials
                .push(cred("smtp", r.smtp_user.clone(), r.smtp_pass.as_deref()));
        }
        if let Some(pw) = r.ldap_simple.as_deref().filter(|p| !p.is_empty()) {
            self.credentials
                .push(cred("ldap-simple-bind", r.ldap_name.clone(), Some(pw)));
        }
        if let Some(c) = &r.snmp_community {
            self.credentials.push(cred("snmp-community", None, Some(c)));
        }
        if let Some(u) = &r.ntlm_user {
            let user = match &r.ntlm_domain {
                Some(d) => format!("{d}\\{u}"),
                None => u.clone(),
            };
            self.credentials.push(cred("ntlmssp", Some(user), None));
        }
        // failed logins: the server's answer, keyed client -> server
        let failed = match (r.ftp_code, r.http_code) {
            (Some(530), _) => Some("ftp"),
            (_, Some(401)) => Some("http"),
            _ => None,
        };
        if let Some(service) = failed {
            self.failures
                .entry((dst.to_string(), src.to_string(), service.to_string()))
                .or_default()
                .push(r.frame);
        }
    }
}

/// Addresses a host uses before it has a real one (DHCP discovery, APIPA, IPv6 link
/// local): a host moving from one to a leased address is not spoofing anything.
fn unassigned(ip: &str) -> bool {
    ip == "0.0.0.0"
        || ip == "::"
        || ip.starts_with("169.254.")
        || ip.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("fe80:"))
}

fn arp_conflicts(f: &PacketFacts) -> Vec<ArpConflict> {
    let mut out = Vec::new();
    for (ip, macs) in &f.arp_claims {
        if macs.len() >= 2 {
            out.push(ArpConflict {
                kind: "ip_with_several_macs".into(),
                ip_count: 1,
                ip_addresses: vec![ip.clone()],
                mac_addresses: macs.iter().map(|(m, _)| m.clone()).collect(),
                arp_frames: macs.iter().map(|(_, fr)| *fr).collect(),
                traffic_moved: None,
                display_filter: format!("arp.src.proto_ipv4 == {ip}"),
            });
        }
    }
    for (mac, ips) in &f.mac_claims {
        if ips.len() < 2 {
            continue;
        }
        // off-link sources whose frames first came from another MAC and then from this one
        let moved: Vec<String> = f
            .ip_macs
            .iter()
            .filter(|(ip, v)| {
                !ips.contains(*ip) && v.len() >= 2 && v.iter().skip(1).any(|(m, _)| m == mac)
            })
            .map(|(ip, v)| {
                format!(
                    "{ip}: via {} from frame {}, via {mac} from frame {}",
                    v[0].0,
                    v[0].1,
                    v.iter().find(|(m, _)| m == mac).map(|x| x.1).unwrap_or(0)
                )
            })
            .collect();
        // a router or a proxy-ARP box can claim hundreds: a sample of each
        let mut frames: Vec<u64> = ips
            .iter()
            .filter_map(|ip| f.arp_claims.get(ip))
            .flat_map(|v| v.iter().filter(|(m, _)| m == mac).map(|(_, fr)| *fr))
            .collect();
        frames.sort_unstable();
        crate::report::keep_first(&mut frames, ARP_LISTED);
        out.push(ArpConflict {
            kind: "mac_claiming_several_ips".into(),
            ip_count: ips.len(),
            ip_addresses: ips.iter().take(ARP_LISTED).cloned().collect(),
            mac_addresses: vec![mac.clone()],
            arp_frames: frames,
            traffic_moved: (!moved.is_empty()).then(|| {
                let mut m = moved;
                m.sort();
                m.truncate(5);
                m.join("; ")
            }),
            display_filter: format!("arp.src.hw_mac == {mac} || eth.src == {mac}"),
        });
    }
    out
}

fn tls_concerns(m: &TlsModel) -> Vec<TlsConcern> {
    use crate::analysis::tls::{grade, parse_cert, suite_name};
    let mut out = Vec::new();
    let mut seen_certs = BTreeSet::new();
    for s in &m.sessions {
        let server = s.endpoint(1);
        if let Some(fp) = s.chain.first()
            && seen_certs.insert((fp.clone(), server.clone()))
            && let Some(c) = m.certificates.get(fp)
            && let Some(p) = parse_cert(fp, c)
        {
            if p.row.self_signed {
                out.push(TlsConcern {
                    server: server.clone(),
                    sni: s.sni.clone(),
                    issue: "self_signed_certificate".into(),
                    detail: format!("leaf certificate {} is self-signed", p.row.subject),
                    frame: Some(c.first_frame),
                    // the certificate messages of this server (its first one included)
                    display_filter: format!(
                        "tls.handshake.type == 11 && {}",
                        host_filter(&s.addr[1], "src")
                    ),
                });
            }
            if p.row.status == "expired" {
                out.push(TlsConcern {
                    server: server.clone(),
                    sni: s.sni.clone(),
                    issue: "expired_certificate".into(),
                    detail: format!("{} expired {}", p.row.subject, p.row.not_after),
                    frame: Some(c.first_frame),
                    display_filter: format!(
                        "tls.handshake.type == 11 && {}",
                        host_filter(&s.addr[1], "src")
                    ),
                });
            }
        }
        if let Some(c) = s.cipher
            && grade(c).0 == "insecure"
        {
            out.push(TlsConcern {
                server: server.clone(),
                sni: s.sni.clone(),
                issue: "insecure_cipher".into(),
                detail: format!("{} negotiated: {}", suite_name(c), grade(c).1),
                frame: s.server_hello.map(|x| x.1),
                display_filter: s.filter(),
            });
        }
        if let Some(v) = s.negotiated
            && v < 0x0302
        {
            out.push(TlsConcern {
                server,
                sni: s.sni.clone(),
                issue: "old_protocol".into(),
                detail: format!(
                    "{} negotiated (deprecated by RFC 8996)",
                    crate::model::tls::version_name(v)
                ),
                frame: s.server_hello.map(|x| x.1),
                display_filter: s.filter(),
            });
        }
    }
    // one row per server and issue: a busy server repeats the same certificate
    let mut seen = BTreeSet::new();
    out.retain(|c| seen.insert((c.server.clone(), c.issue.clone())));
    out
}

#[tool_router(router = threats_router, vis = "pub(crate)")]
impl PcapServer {
    /// Security threats with evidence: port scans and host sweeps, SYN floods, brute
    /// force, cleartext credentials (secrets masked unless reveal_secrets), DNS tunnelling,
    /// ARP spoofing, ICMP redirects/floods, suspicious TLS and beaconing.
    #[tool(
        name = "analyze_security_threats",
        annotations(
            title = "Security threats",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_security_threats(
        &self,
        Parameters(p): Parameters<ThreatParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Threats>>, String> {
        self.engine
            .analyze("analyze_security_threats", p, rc, threats)
            .await
    }

    /// Cleartext credentials (FTP, POP3, IMAP, SMTP AUTH, HTTP Basic and forms, LDAP,
    /// SNMP communities, NTLM/Kerberos user names): who logged in where, secrets masked
    /// unless reveal_secrets. The same detection as analyze_security_threats.
    #[tool(
        name = "extract_credentials",
        annotations(title = "Credentials", read_only_hint = true, open_world_hint = false)
    )]
    pub async fn extract_credentials(
        &self,
        Parameters(p): Parameters<ThreatParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<CredentialsFound>>, String> {
        self.engine
            .analyze("extract_credentials", p, rc, credentials)
            .await
    }

    /// ARP spoofing: an IP address claimed by several MACs, a MAC claiming several
    /// addresses, and traffic that moved to a new MAC after it. The same detection as
    /// analyze_security_threats.
    #[tool(
        name = "detect_arp_spoofing",
        annotations(title = "ARP spoofing", read_only_hint = true, open_world_hint = false)
    )]
    pub async fn detect_arp_spoofing(
        &self,
        Parameters(p): Parameters<ScopeParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<ArpSpoofing>>, String> {
        self.engine
            .analyze("detect_arp_spoofing", p, rc, arp_spoofing)
            .await
    }

    /// DNS tunnelling: long, high-entropy query labels, many unique subdomains of one
    /// domain, TXT volume. The same detection as analyze_security_threats.
    #[tool(
        name = "detect_dns_tunneling",
        annotations(
            title = "DNS tunnelling",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn detect_dns_tunneling(
        &self,
        Parameters(p): Parameters<ScopeParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<DnsTunnelling>>, String> {
        self.engine
            .analyze("detect_dns_tunneling", p, rc, dns_tunnelling)
            .await
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CredentialsFound {
    pub by_protocol: Vec<crate::report::CountRow>,
    pub credentials: Table<Credential>,
    /// What the check looked at.
    pub checked: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ArpSpoofing {
    pub arp_conflicts: Table<ArpConflict>,
    pub checked: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DnsTunnelling {
    /// What pointed at tunnelling, when something did.
    pub hints: Option<String>,
    pub checked: String,
}

/// The run's findings of one section, and what its check looked at.
fn section(run: &ThreatRun, range: std::ops::Range<usize>, check: &str) -> (Vec<Finding>, String) {
    let findings = run.findings.get(range).unwrap_or_default().to_vec();
    let checked = run
        .data
        .checks
        .iter()
        .find(|c| c.check == check)
        .map(|c| c.looked_at.clone())
        .unwrap_or_default();
    (findings, checked)
}

pub(crate) async fn credentials(
    mut a: Analysis,
    p: ThreatParams,
) -> Result<Report<CredentialsFound>, String> {
    let run = threat_run(&mut a, &p).await?;
    let (findings, checked) = section(
        &run,
        run.sections.credentials.clone(),
        "cleartext credentials",
    );
    let creds = run.data.credentials;
    let by_protocol = crate::report::counts(creds.rows.iter().map(|c| c.protocol.clone()));
    let users: BTreeSet<&str> = creds
        .rows
        .iter()
        .filter_map(|c| c.username.as_deref())
        .collect();
    let summary = if creds.total == 0 {
        format!("No credentials crossed the wire in clear (looked at {checked}).")
    } else {
        format!(
            "{} credential(s) in clear for {} user(s): {}.",
            creds.total,
            users.len(),
            by_protocol
                .iter()
                .map(|c| format!("{} {}", c.count, c.key))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let data = CredentialsFound {
        by_protocol,
        credentials: creds,
        checked,
    };
    a.report(summary, findings, data, run.span, run.note).await
}

pub(crate) async fn arp_spoofing(
    mut a: Analysis,
    p: ScopeParams,
) -> Result<Report<ArpSpoofing>, String> {
    let run = threat_run(&mut a, &p.into()).await?;
    let (findings, checked) = section(&run, run.sections.arp.clone(), "ARP spoofing");
    let conflicts = run.data.arp_conflicts;
    let spoofed = conflicts
        .rows
        .iter()
        .filter(|c| c.kind == "ip_with_several_macs" || c.traffic_moved.is_some())
        .count();
    let summary = if conflicts.total == 0 {
        format!("No ARP conflicts: every address was claimed by one MAC ({checked}).")
    } else {
        format!(
            "{} ARP conflict(s), {spoofed} of them an address claimed by several MACs or traffic that moved to a new MAC: see the findings.",
            conflicts.total
        )
    };
    let data = ArpSpoofing {
        arp_conflicts: conflicts,
        checked,
    };
    a.report(summary, findings, data, run.span, None).await
}

pub(crate) async fn dns_tunnelling(
    mut a: Analysis,
    p: ScopeParams,
) -> Result<Report<DnsTunnelling>, String> {
    let run = threat_run(&mut a, &p.into()).await?;
    let (findings, checked) = section(&run, run.sections.dns_tunnelling.clone(), "DNS tunnelling");
    let hints = run.data.dns_tunnelling_hints;
    let summary = match &hints {
        Some(h) => format!("DNS tunnelling suspected: {h}"),
        None => format!("No sign of DNS tunnelling (looked at {checked})."),
    };
    let data = DnsTunnelling { hints, checked };
    a.report(summary, findings, data, run.span, None).await
}

/// Which findings (positions in the list, before sorting) each focused tool shows.
pub(crate) struct Sections {
    pub credentials: std::ops::Range<usize>,
    pub arp: std::ops::Range<usize>,
    pub dns_tunnelling: std::ops::Range<usize>,
}

/// Every threat check over the scope: the one run that analyze_security_threats and
/// the focused tools (extract_credentials, detect_arp_spoofing, detect_dns_tunneling)
/// all report from, so they cannot disagree.
pub(crate) struct ThreatRun {
    pub summary: String,
    pub findings: Vec<Finding>,
    pub data: Threats,
    pub span: crate::engine::Span,
    pub note: Option<String>,
    pub sections: Sections,
}

pub(crate) async fn threats(mut a: Analysis, p: ThreatParams) -> Result<Report<Threats>, String> {
    let run = threat_run(&mut a, &p).await?;
    a.report(run.summary, run.findings, run.data, run.span, run.note)
        .await
}

pub(crate) async fn threat_run(a: &mut Analysis, p: &ThreatParams) -> Result<ThreatRun, String> {
    let reveal = p.reveal_secrets.unwrap_or(false);
    let limit = clamp_limit(p.limit, 20);
    let tcp = a.part::<TcpModel>().await?;
    let tls = a.part::<TlsModel>().await?;
    let index = a.index().await?;
    let facts = index.get::<PacketFacts>()?;
    let span = facts.span;
    let tap: Vec<(u64, String, String)> = index
        .taps
        .credentials
        .lines()
        .filter_map(parse_credentials_tap)
        .collect();

    let mut findings = Vec::new();
    let mut scans = port_scans(&tcp);
    scans.extend(udp_scans(&facts.udp_closed));
    findings.extend(scans.iter().take(5).map(scan_finding));
    let scanners: BTreeSet<String> = scans.iter().map(|s| s.scanner.clone()).collect();

    let sweeps = host_sweeps(&tcp, &scanners);
    for s in sweeps.iter().take(5) {
        let admin = s
            .service
            .trim_start_matches("tcp/")
            .split(',')
            .any(|p| p.parse().is_ok_and(|p: u64| SWEEP_PORTS.contains(&p)));
        let sev = if s.hosts_tried >= 50 && admin {
            Severity::High
        } else {
            Severity::Medium
        };
        findings.push(Finding::new(
            sev,
            format!("Host sweep: {} tried {} on {} hosts", s.source, s.service, s.hosts_tried),
            format!(
                "{} of them answered. One source trying one service across many hosts, most refusing or silent, is reconnaissance (or a worm).",
                s.hosts_answering
            ),
            Evidence {
                frames: s.sample_frames.clone(),
                endpoints: vec![s.source.clone()],
                display_filter: s.display_filter.clone(),
                ..Default::default()
            },
        ));
    }

    let floods = syn_floods(&tcp);
    for f in floods.iter().take(5) {
        let sev = if f.syn_only_attempts >= 200 && f.peak_attempts_per_s >= 100 {
            Severity::High
        } else {
            Severity::Medium
        };
        findings.push(Finding::new(
            sev,
            format!(
                "SYN flood pattern against {}: {} SYN-only attempts, peak {}/s",
                f.target, f.syn_only_attempts, f.peak_attempts_per_s
            ),
            format!(
                "{} source address(es) sent a SYN and nothing else. {}",
                f.distinct_sources,
                if f.distinct_sources >= 20 {
                    "Many sources with no follow-up point to spoofed addresses."
                } else {
                    "Few sources: a flood tool or a badly broken client."
                }
            ),
            Evidence {
                frames: f.sample_frames.clone(),
                endpoints: vec![f.target.clone()],
                display_filter: f.display_filter.clone(),
                ..Default::default()
            },
        ));
    }

    let brute = brute_force(&tcp, &facts.failures);
    for b in brute.iter().take(5) {
        let sev = if b.failed_logins >= 20 || b.connections >= 30 {
            Severity::High
        } else {
            Severity::Medium
        };
        findings.push(Finding::new(
            sev,
            format!(
                "Brute-force pattern: {} -> {} ({}): {} connection(s), {} failed login(s)",
                b.client, b.server, b.service, b.connections, b.failed_logins
            ),
            "Repeated logins from one client to one authentication service: password guessing, or a misconfigured client retrying bad credentials.".to_string(),
            Evidence {
                frames: b.sample_frames.clone(),
                endpoints: vec![b.client.clone(), b.server.clone()],
                display_filter: b.display_filter.clone(),
                ..Default::default()
            },
        ));
    }

    // credentials: protocol fields first, then any user the tap found that they missed
    let creds_at = findings.len();
    let mut creds = facts.credentials.clone();
    for c in &mut creds {
        c.secret = c.secret.as_deref().map(|s| mask(s, reveal));
    }
    for (frame, protocol, user) in &tap {
        let covered = creds.iter().any(|c| c.frame == *frame)
            || creds
                .iter()
                .any(|c| c.username.as_deref() == Some(user.as_str()));
        if !covered {
            creds.push(Credential {
                protocol: protocol.to_ascii_lowercase(),
                client: String::new(),
                server: String::new(),
                username: Some(user.clone()),
                secret: None,
                frame: *frame,
                display_filter: format!("frame.number == {frame}"),
            });
        }
    }
    let anonymous = |c: &Credential| {
        c.username
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case("anonymous") || u.eq_ignore_ascii_case("ftp"))
    };
    let mut by_proto: BTreeMap<String, Vec<&Credential>> = BTreeMap::new();
    for c in &creds {
        by_proto.entry(c.protocol.clone()).or_default().push(c);
    }
    for (proto, list) in &by_proto {
        let with_secret: Vec<&&Credential> = list
            .iter()
            .filter(|c| c.secret.is_some() && !anonymous(c))
            .collect();
        let sev = if proto == "ntlmssp" {
            Severity::Info
        } else if proto == "snmp-community" {
            Severity::Low
        } else if !with_secret.is_empty() {
            Severity::High
        } else {
            Severity::Low
        };
        let users: BTreeSet<String> = list.iter().filter_map(|c| c.username.clone()).collect();
        findings.push(Finding::new(
            sev,
            format!(
                "Cleartext {proto} credentials: {} login(s), user(s) {}",
                list.len(),
                users.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ),
            if with_secret.is_empty() {
                "User names cross the network readable by anyone on the path; no reusable secret seen (anonymous login or challenge-response).".to_string()
            } else {
                format!(
                    "{} password(s) sent in clear text: anyone on the path can reuse them. Move the service to TLS (FTPS/SFTP, HTTPS, IMAPS/POP3S, LDAPS){}.",
                    with_secret.len(),
                    if reveal { "" } else { "; secrets are masked here (reveal_secrets=true shows them)" }
                )
            },
            Evidence {
                frames: list.iter().map(|c| c.frame).take(10).collect(),
                endpoints: list
                    .iter()
                    .filter(|c| !c.server.is_empty())
                    .map(|c| c.server.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .take(5)
                    .collect(),
                display_filter: match proto.as_str() {
                    "ftp" => "ftp.request.command == \"USER\" || ftp.request.command == \"PASS\"".into(),
                    "pop3" => "pop.request.command == \"USER\" || pop.request.command == \"PASS\"".into(),
                    "http-basic" => "http.authbasic".into(),
                    "http-form" => "urlencoded-form".into(),
                    "imap" => "imap.request.username".into(),
                    "smtp" => "smtp.auth.username".into(),
                    "ldap-simple-bind" => "ldap.simple".into(),
                    "snmp-community" => "snmp.community".into(),
                    "ntlmssp" => "ntlmssp.auth.username".into(),
                    _ => list
                        .iter()
                        .map(|c| format!("frame.number == {}", c.frame))
                        .take(10)
                        .collect::<Vec<_>>()
                        .join(" || "),
                },
                ..Default::default()
            },
        ));
    }

    let creds_end = findings.len();
    let arps = arp_conflicts(&facts);
    for c in &arps {
        let (sev, title, detail) = match c.kind.as_str() {
            "ip_with_several_macs" => (
                Severity::High,
                format!(
                    "ARP spoofing: {} claimed by {} MACs ({})",
                    c.ip_addresses[0],
                    c.mac_addresses.len(),
                    c.mac_addresses.join(", ")
                ),
                "Two hardware addresses answer for one IP address: ARP cache poisoning (man in the middle), or an address conflict. Check which MAC really owns the address.".to_string(),
            ),
            _ if c.traffic_moved.is_some() => (
                Severity::High,
                format!(
                    "ARP poisoning: {} claims {} and off-link traffic moved to it",
                    c.mac_addresses[0],
                    c.ip_addresses.join(", ")
                ),
                format!(
                    "One MAC claims several IP addresses in ARP, and traffic from remote hosts that used to arrive from another MAC now arrives from it: a man in the middle relaying traffic. {}",
                    c.traffic_moved.clone().unwrap_or_default()
                ),
            ),
            _ => (
                Severity::Low,
                format!(
                    "{} claims {} IP addresses in ARP",
                    c.mac_addresses[0],
                    c.ip_count
                ),
                "One MAC answering for several addresses: normal for a router doing proxy ARP or a host with aliases; worth a look if one of them is another host's address.".to_string(),
            ),
        };
        findings.push(Finding::new(
            sev,
            title,
            detail,
            Evidence {
                frames: c.arp_frames.clone(),
                endpoints: c.ip_addresses.clone(),
                display_filter: c.display_filter.clone(),
                ..Default::default()
            },
        ));
    }

    let arp_end = findings.len();
    if !facts.redirects.is_empty() {
        findings.push(Finding::new(
            Severity::Medium,
            format!("{} ICMP redirect(s)", facts.redirects.len()),
            "A redirect tells a host to send traffic for a destination through another gateway. Routers send them legitimately on a misdesigned subnet; an attacker sends them to intercept traffic.",
            Evidence {
                frames: facts.redirects.iter().take(10).copied().collect(),
                display_filter: "icmp.type == 5 || icmpv6.type == 137".into(),
                ..Default::default()
            },
        ));
    }
    let mut floods_icmp: Vec<IcmpFlood> = facts
        .echo
        .iter()
        .filter_map(|((s, d), (n, first, per_s))| {
            let peak = per_s.values().copied().max().unwrap_or(0);
            (*n >= 100 && peak >= 50).then(|| IcmpFlood {
                source: s.clone(),
                destination: d.clone(),
                echo_requests: *n,
                peak_per_s: peak,
                first_frame: *first,
                display_filter: format!(
                    "{} && {} && (icmp.type == 8 || icmpv6.type == 128)",
                    host_filter(s, "src"),
                    host_filter(d, "dst")
                ),
            })
        })
        .collect();
    floods_icmp.sort_by_key(|x| std::cmp::Reverse(x.echo_requests));
    for f in floods_icmp.iter().take(3) {
        findings.push(Finding::new(
            if f.echo_requests >= 1000 && f.peak_per_s >= 200 {
                Severity::High
            } else {
                Severity::Medium
            },
            format!(
                "ICMP echo flood: {} -> {}: {} requests, peak {}/s",
                f.source, f.destination, f.echo_requests, f.peak_per_s
            ),
            "Echo requests far above a ping's once a second: a flood, or a stress test.",
            Evidence {
                frames: vec![f.first_frame],
                endpoints: vec![f.source.clone(), f.destination.clone()],
                display_filter: f.display_filter.clone(),
                ..Default::default()
            },
        ));
    }
    // ICMP sweep: one source pinging many hosts
    let mut ping_targets: BTreeMap<&str, (BTreeSet<&str>, usize, u64)> = BTreeMap::new();
    for ((s, d), (_, first, _)) in &facts.echo {
        let e = ping_targets
            .entry(s.as_str())
            .or_insert((BTreeSet::new(), 0, *first));
        e.0.insert(d.as_str());
        e.2 = e.2.min(*first);
        if facts.echo_replied.contains(&(s.clone(), d.clone())) {
            e.1 += 1;
        }
    }
    let mut sweeps = sweeps;
    for (src, (targets, answered, first)) in ping_targets {
        if targets.len() >= 20 {
            let s = HostSweep {
                source: src.to_string(),
                service: "icmp-echo".into(),
                hosts_tried: targets.len(),
                hosts_answering: answered,
                sample_frames: vec![first],
                display_filter: format!(
                    "{} && (icmp.type == 8 || icmpv6.type == 128)",
                    host_filter(src, "src")
                ),
            };
            findings.push(Finding::new(
                Severity::Medium,
                format!("Ping sweep: {} pinged {} hosts", s.source, s.hosts_tried),
                format!("{} answered. Discovery of live hosts; normal for monitoring systems, reconnaissance otherwise.", s.hosts_answering),
                Evidence {
                    frames: s.sample_frames.clone(),
                    endpoints: vec![s.source.clone()],
                    display_filter: s.display_filter.clone(),
                    ..Default::default()
                },
            ));
            sweeps.push(s);
        }
    }

    let dns_at = findings.len();
    let dns_hints = facts.tunnel.any().then(|| {
        let sev = if facts.tunnel.strong() {
            Severity::High
        } else {
            Severity::Medium
        };
        if let Some(f) = facts.tunnel.finding(sev) {
            let d = f.detail.clone();
            findings.push(f);
            d
        } else {
            String::new()
        }
    });

    let dns_end = findings.len();
    let tls_issues = tls_concerns(&tls);
    for t in tls_issues.iter().take(8) {
        findings.push(Finding::new(
            if t.issue == "old_protocol" {
                Severity::Low
            } else {
                Severity::Medium
            },
            format!(
                "Suspicious TLS at {}{}: {}",
                t.server,
                t.sni
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default(),
                t.issue.replace('_', " ")
            ),
            format!("{}. Clients that accept it can be intercepted.", t.detail),
            Evidence {
                frames: t.frame.into_iter().collect(),
                endpoints: vec![t.server.clone()],
                display_filter: t.display_filter.clone(),
                ..Default::default()
            },
        ));
    }

    let beacon_rows = beacons(&tcp, &facts.dns_queries);
    for b in beacon_rows.iter().take(3) {
        findings.push(Finding::new(
            Severity::Medium,
            format!(
                "Beaconing ({}): {} -> {} every {:.1} s ({} times)",
                b.kind, b.client, b.server, b.mean_interval_s, b.events
            ),
            format!(
                "Check-ins at a near-constant interval (variation {:.1}%): malware checking in with its controller looks like this; so do health checks and pollers. Check what the client process is.",
                b.interval_variation * 100.0
            ),
            Evidence {
                frames: b.sample_frames.clone(),
                endpoints: vec![b.client.clone(), b.server.clone()],
                display_filter: b.display_filter.clone(),
                ..Default::default()
            },
        ));
    }

    let checks = vec![
        Check { check: "port scans".into(), found: scans.len(), looked_at: format!("{} TCP connection attempts and {} ICMP port-unreachable pair(s)", tcp.streams.iter().filter(|s| s.syn[0]).count(), facts.udp_closed.len()) },
        Check { check: "host sweeps (TCP and ICMP)".into(), found: sweeps.len(), looked_at: "sources trying a few ports on 20+ hosts, or 6+ hosts within 10 s, most refusing or silent".into() },
        Check { check: "SYN floods".into(), found: floods.len(), looked_at: "SYN-only attempts per service".into() },
        Check { check: "brute force".into(), found: brute.len(), looked_at: "repeated logins to ftp/ssh/telnet/pop3/imap/ldap/sql/rdp/vnc, FTP 530 and HTTP 401 answers".into() },
        Check { check: "cleartext credentials".into(), found: creds.len(), looked_at: "FTP, POP3, IMAP, SMTP AUTH, HTTP Basic and forms, LDAP simple bind, SNMP community, NTLM user names, tshark -z credentials".into() },
        Check { check: "ARP spoofing".into(), found: arps.iter().filter(|c| c.kind == "ip_with_several_macs" || c.traffic_moved.is_some()).count(), looked_at: format!("{} IP address(es) claimed in ARP", facts.arp_claims.len()) },
        Check { check: "ICMP redirects and floods".into(), found: facts.redirects.len() + floods_icmp.len(), looked_at: format!("{} echo source/destination pair(s)", facts.echo.len()) },
        Check { check: "DNS tunnelling".into(), found: usize::from(dns_hints.is_some()), looked_at: "query names: label length and entropy, unique subdomains per domain, TXT volume".into() },
        Check { check: "suspicious TLS".into(), found: tls_issues.len(), looked_at: format!("{} TLS/QUIC session(s), {} certificate(s)", tls.sessions.len(), tls.certificates.len()) },
        Check { check: "beaconing".into(), found: beacon_rows.len(), looked_at: "clients with 8+ connections to one service, or 8+ queries for one name, at a steady interval".into() },
    ];
    let high = findings
        .iter()
        .filter(|f| f.severity == Severity::High)
        .count();
    let medium = findings
        .iter()
        .filter(|f| f.severity == Severity::Medium)
        .count();
    let found: Vec<String> = checks
        .iter()
        .filter(|c| c.found > 0)
        .map(|c| format!("{} ({})", c.check, c.found))
        .collect();
    let summary = format!(
        "Checked {} for {} kinds of threat over {} packets and {} TCP connections. {} {}",
        a.file.display_name,
        checks.len(),
        crate::report::thousands(span.packets),
        crate::report::thousands(tcp.streams.len() as u64),
        if found.is_empty() {
            "Nothing found: no scans, floods, brute force, cleartext credentials, ARP spoofing, ICMP abuse, DNS tunnelling, suspicious TLS or beaconing.".to_string()
        } else {
            format!("Found: {}.", found.join(", "))
        },
        if high + medium > 0 {
            format!(
                "{high} high and {medium} medium finding(s); the findings list frames and a filter for each."
            )
        } else {
            String::new()
        }
    );
    let data = Threats {
        checks,
        port_scans: Table::top(scans, limit),
        host_sweeps: Table::top(sweeps, limit),
        syn_floods: Table::top(floods, limit),
        brute_force: Table::top(brute, limit),
        credentials: Table::top(creds, limit),
        arp_conflicts: Table::top(arps, limit),
        icmp: IcmpActivity {
            redirects: facts.redirects.len() as u64,
            redirect_frames: facts.redirects.iter().take(10).copied().collect(),
            floods: floods_icmp.into_iter().take(limit).collect(),
        },
        dns_tunnelling_hints: dns_hints,
        suspicious_tls: Table::top(tls_issues, limit),
        beacons: Table::top(beacon_rows, limit),
    };
    let note = reveal.then(|| "reveal_secrets=true: passwords shown as captured".to_string());
    Ok(ThreatRun {
        summary,
        findings,
        data,
        span,
        note,
        sections: Sections {
            credentials: creds_at..creds_end,
            arp: creds_end..arp_end,
            dns_tunnelling: dns_at..dns_end,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recorded_credentials_tap() {
        // recorded: tshark 4.0.17 -z credentials on zeek-ftp-password-pass-command.pcap
        let line = "9          FTP              Admin            Username in packet: 6";
        assert_eq!(
            parse_credentials_tap(line),
            Some((9, "FTP".into(), "Admin".into()))
        );
        let basic = "4          HTTP basic auth  test                             ";
        assert_eq!(
            parse_credentials_tap(basic),
            Some((4, "HTTP basic auth".into(), "test".into()))
        );
        assert_eq!(parse_credentials_tap("------     --------"), None);
    }

    #[test]
    fn check_ins_are_steady_and_unhurried() {
        let mut every_5s: Vec<f64> = (0..9).map(|i| 100.0 + 5.0 * i as f64).collect();
        assert_eq!(periodic(&mut every_5s), Some((5.0, 0.0)));
        let mut jittered: Vec<f64> = (0..9)
            .map(|i| 30.0 * i as f64 + if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert!(periodic(&mut jittered).is_some_and(|(m, cv)| (m - 30.0).abs() < 0.5 && cv < 0.1));
        let mut busy: Vec<f64> = (0..50).map(|i| i as f64 * 0.5).collect();
        assert_eq!(periodic(&mut busy), None); // a busy client, not a check-in
        let mut erratic = vec![0.0, 3.0, 11.0, 12.0, 30.0, 31.0, 50.0, 70.0, 71.0];
        assert_eq!(periodic(&mut erratic), None);
        assert_eq!(periodic(&mut [0.0, 5.0, 10.0]), None); // too few
    }

    #[test]
    fn secrets_are_masked_unless_asked() {
        assert_eq!(mask("qwerty", true), "qwerty");
        assert!(is_secret_key("password") && is_secret_key("user_pwd"));
        assert!(is_user_key("username") && !is_user_key("password"));
    }
}
