//! `analyze_host`: everything the capture says about one host — who it is (MACs and
//! vendor, names from DNS/mDNS/LLMNR answers, DHCP and NetBIOS, the names clients asked
//! it to serve, user names sent from it), what it is (client, server, resolver,
//! gateway, with the evidence), whom it talked to and how much each way, the services
//! it offered and used, and every finding of the triage's checks that involves it.
//!
//! A view over the capture index: the host table is the topology's (`analysis::hosts`),
//! connections are the TCP model's, and the findings are the triage's own checks over
//! the same index, so every number matches the tool that explains it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::hosts::{Directory, Named, TopoState, directory};
use crate::engine::Analysis;
use crate::model::tcp::TcpModel;
use crate::report::{
    Evidence, Finding, NextStep, Report, Severity, Table, host_filter, human_bytes, rfc3339,
};
use crate::server::PcapServer;
use crate::tools::clamp_limit;

/// The most findings of other checks the dossier lists.
const MAX_FINDINGS: usize = 15;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HostParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// The host: an IPv4/IPv6 address, a MAC (`00:11:22:33:44:55`), or a name seen in
    /// the capture (DNS/mDNS/LLMNR answer, DHCP or NetBIOS name, TLS SNI, HTTP Host).
    pub host: String,
    /// Wireshark display filter scoping the analysis.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Peers and services listed (default 15, max 500).
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Mac {
    pub mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Role {
    /// gateway, dns_server, dhcp_server, server, client.
    pub role: String,
    pub evidence: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Traffic {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Peer {
    pub address: String,
    /// Names the capture gives the peer (DNS answers, SNI or Host it served...).
    pub names: Vec<String>,
    /// Frames and bytes (frame length) the host sent to this peer, and received from it.
    pub frames_to: u64,
    pub bytes_to: u64,
    pub frames_from: u64,
    pub bytes_from: u64,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    /// Services used between them (server side), most bytes first.
    pub services: Vec<String>,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Service {
    /// `tcp/443`.
    pub service: String,
    /// For a service offered: distinct clients; for one used: the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// TCP connections (a SYN seen), of which the server answered.
    pub connections: u64,
    pub answered: u64,
    /// Bytes both ways (frame length).
    pub bytes: u64,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HostDossier {
    /// What was asked for, and the addresses it stands for.
    pub query: String,
    pub addresses: Vec<String>,
    pub macs: Vec<Mac>,
    /// local (on the capture's segment), remote (behind a gateway) or unknown.
    pub location: String,
    pub vlans: Vec<String>,
    /// Names given to it: dns, mdns, llmnr, netbios, dhcp; each with its first frame.
    pub names: Vec<Named>,
    /// Names clients asked it to serve: tls_sni, http_host.
    pub served_names: Vec<Named>,
    /// User names sent from it: kerberos, ntlm.
    pub users: Vec<Named>,
    pub roles: Vec<Role>,
    pub traffic: Traffic,
    pub peer_count: usize,
    pub peers: Table<Peer>,
    pub services_offered: Table<Service>,
    pub services_used: Table<Service>,
    /// Checks of the triage that found something involving it (see findings).
    pub finding_count: usize,
    pub display_filter: String,
}

crate::file_args!(HostParams);

#[tool_router(router = host_router, vis = "pub(crate)")]
impl PcapServer {
    /// A dossier of one host (IP, MAC or name): MACs and vendor, names (DNS, DHCP,
    /// NetBIOS, SNI, Host), user names, role with evidence, peers with bytes each way,
    /// services, first and last seen, and every finding that involves it.
    #[tool(
        name = "analyze_host",
        annotations(title = "Host dossier", read_only_hint = true, open_world_hint = false)
    )]
    pub async fn analyze_host(
        &self,
        Parameters(p): Parameters<HostParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<HostDossier>>, String> {
        self.engine.analyze("analyze_host", p, rc, host).await
    }
}

/// A MAC as tshark prints it (lowercase, colons), from `00-11-22-33-44-55` or
/// `00:11:22:33:44:55` in any case.
fn parse_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    (parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit())))
    .then(|| parts.join(":").to_ascii_lowercase())
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// The addresses (and MACs) a query stands for, or why none.
fn resolve(query: &str, state: &TopoState, dir: &Directory) -> Result<Resolved, String> {
    let q = query.trim();
    if q.is_empty() || q.len() > 255 || q.chars().any(char::is_control) {
        return Err(
            "host must be an IP address, a MAC or a host name (at most 255 characters)".into(),
        );
    }
    let known = |a: &str| state.hosts.contains_key(a);
    if let Ok(ip) = q.parse::<IpAddr>() {
        let a = ip.to_string();
        if !known(&a) {
            return Err(format!(
                "{a} sent or received nothing in this capture (scope); check the address, or list hosts with analyze_network_topology"
            ));
        }
        return Ok(Resolved {
            addresses: vec![a],
            macs: Vec::new(),
        });
    }
    if let Some(mac) = parse_mac(q) {
        let mut addresses: BTreeSet<String> = BTreeSet::new();
        // the addresses that are its own: the topology's host rows list the MAC only
        // for hosts it does not merely route for
        for h in dir.hosts.iter().filter(|h| dir.macs_of(h).contains(&&*mac)) {
            addresses.insert(h.address.to_string());
        }
        if let Some(c) = state.dhcp_clients.get(&mac) {
            addresses.extend(c.leased.iter().filter(|a| known(a)).cloned());
        }
        if addresses.is_empty() && !state.macs.contains_key(&mac) {
            return Err(format!(
                "no frame came from MAC {mac} in this capture (scope); list MACs with analyze_network_topology"
            ));
        }
        return Ok(Resolved {
            addresses: addresses.into_iter().collect(),
            macs: vec![mac],
        });
    }
    let named = |m: &crate::index::Keyed<String, Vec<Named>>| -> Vec<String> {
        m.iter()
            .filter(|(_, ns)| ns.iter().any(|n| same_name(&n.name, q)))
            .map(|(a, _)| a.clone())
            .collect()
    };
    let mut addresses: BTreeSet<String> = named(&state.names).into_iter().collect();
    let mut macs = Vec::new();
    for (mac, c) in &state.dhcp_clients {
        if c.hostnames.iter().any(|n| same_name(&n.name, q)) {
            macs.push(mac.clone());
            addresses.extend(c.leased.iter().cloned());
            addresses.extend(
                dir.hosts
                    .iter()
                    .filter(|h| dir.macs_of(h).contains(&&**mac))
                    .map(|h| h.address.to_string()),
            );
        }
    }
    if addresses.is_empty() {
        // only then the servers clients named: a CDN address serves many names
        addresses.extend(named(&state.served));
    }
    addresses.retain(|a| known(a));
    if addresses.is_empty() {
        let mut seen: Vec<&str> = state
            .names
            .values()
            .chain(state.served.values())
            .flatten()
            .map(|n| n.name.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .take(10)
            .collect();
        seen.sort();
        return Err(format!(
            "no host named {q:?} in this capture (scope): names come from DNS/mDNS/LLMNR answers, DHCP, NetBIOS, TLS SNI and HTTP Host; give an address instead{}",
            if seen.is_empty() {
                String::new()
            } else {
                format!(" (names seen include: {})", seen.join(", "))
            }
        ));
    }
    Ok(Resolved {
        addresses: addresses.into_iter().collect(),
        macs,
    })
}

struct Resolved {
    addresses: Vec<String>,
    macs: Vec<String>,
}

/// Whether `text` names `addr` as a whole token (10.0.0.1 is not in 10.0.0.10).
fn mentions(text: &str, addr: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == ':';
    text.match_indices(addr).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + addr.len()..].chars().next();
        // `10.0.0.1:443` names the host; `10.0.0.1.5` does not
        let port_after = after == Some(':')
            && !addr.contains(':')
            && text[i + addr.len() + 1..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit());
        !before.is_some_and(|c| part(c) && c != '[')
            && (!after.is_some_and(|c| part(c) && c != ']') || port_after)
    })
}

fn involves(f: &Finding, keys: &[String]) -> bool {
    keys.iter().any(|k| {
        f.evidence.endpoints.iter().any(|e| mentions(e, k))
            || mentions(&f.evidence.display_filter, k)
            || mentions(&f.title, k)
    })
}

fn names_of(state: &TopoState, addr: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in state
        .names
        .get(addr)
        .into_iter()
        .chain(state.served.get(addr))
        .flatten()
    {
        if !out.iter().any(|o| same_name(o, &n.name)) && out.len() < 3 {
            out.push(n.name.clone());
        }
    }
    out
}

fn time(t: Option<f64>) -> Option<String> {
    t.map(rfc3339)
}

async fn host(mut a: Analysis, p: HostParams) -> Result<Report<HostDossier>, String> {
    let state = a.part::<TopoState>().await?;
    let tcp = a.part::<TcpModel>().await?;
    let dir = directory(&state);
    let Resolved { addresses, macs } = resolve(&p.host, &state, &dir)?;
    let limit = clamp_limit(p.limit, 15);
    let ours: BTreeSet<&str> = addresses.iter().map(String::as_str).collect();

    let rows: Vec<_> = dir
        .hosts
        .iter()
        .filter(|h| ours.contains(h.address))
        .map(|h| dir.row(h))
        .collect();
    let mut mac_list: Vec<Mac> = Vec::new();
    for (mac, vendor) in rows
        .iter()
        .flat_map(|h| h.macs.iter().map(move |m| (m, h.vendor.clone())))
        .chain(macs.iter().map(|m| (m, None)))
    {
        if !mac_list.iter().any(|x| &x.mac == mac) {
            let vendor = vendor.or_else(|| state.macs.get(mac).and_then(|m| m.0.clone()));
            mac_list.push(Mac {
                mac: mac.clone(),
                vendor,
            });
        }
    }
    let location = if rows.iter().any(|h| h.location == "local") {
        "local"
    } else if rows.iter().any(|h| h.location == "remote") {
        "remote"
    } else {
        "unknown"
    };
    let vlans: Vec<String> = rows
        .iter()
        .flat_map(|h| h.vlans.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    // identity
    let collect = |m: &crate::index::Keyed<String, Vec<Named>>| -> Vec<Named> {
        let mut v: Vec<Named> = addresses
            .iter()
            .filter_map(|a| m.get(a))
            .flatten()
            .cloned()
            .collect();
        v.sort_by(|x, y| y.count.cmp(&x.count).then(x.frame.cmp(&y.frame)));
        v
    };
    let mut names = collect(&state.names);
    for (mac, c) in &state.dhcp_clients {
        let ours_mac = mac_list.iter().any(|m| &m.mac == mac)
            || c.leased.iter().any(|l| ours.contains(l.as_str()));
        if ours_mac {
            names.extend(c.hostnames.iter().cloned());
        }
    }
    let served_names = collect(&state.served);
    let users = collect(&state.users);

    // traffic: the topology's counters
    let mut traffic = Traffic {
        frames_sent: 0,
        bytes_sent: 0,
        frames_received: 0,
        bytes_received: 0,
        first_seen: None,
        last_seen: None,
    };
    let mut seen = crate::engine::Span::default();
    for h in addresses.iter().filter_map(|a| state.hosts.get(a.as_str())) {
        traffic.frames_sent += h.frames_sent;
        traffic.bytes_sent += h.sent;
        traffic.frames_received += h.frames_received;
        traffic.bytes_received += h.received;
        for t in [h.seen.first, h.seen.last] {
            seen.add(t);
        }
    }
    traffic.first_seen = time(seen.first);
    traffic.last_seen = time(seen.last);

    // peers: the address pairs it is in, most bytes first
    let mut peers: Vec<Peer> = Vec::new();
    for ((x, y), e) in &state.edges {
        let (me_first, peer) = match (ours.contains(&**x), ours.contains(&**y)) {
            (true, false) => (true, y),
            (false, true) => (false, x),
            _ => continue,
        };
        let (to_b, to_f) = (e.bytes_from_first, e.frames_from_first);
        let (from_b, from_f) = (e.bytes - to_b, e.frames - to_f);
        let ((bytes_to, frames_to), (bytes_from, frames_from)) = if me_first {
            ((to_b, to_f), (from_b, from_f))
        } else {
            ((from_b, from_f), (to_b, to_f))
        };
        let mut services = e.services.clone();
        services.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let me = if me_first { x } else { y };
        peers.push(Peer {
            names: names_of(&state, peer),
            frames_to,
            bytes_to,
            frames_from,
            bytes_from,
            first_seen: time(e.seen.first),
            last_seen: time(e.seen.last),
            services: services
                .into_iter()
                .map(|s| s.0.to_string())
                .take(5)
                .collect(),
            display_filter: format!(
                "{} && {}",
                host_filter(me, "addr"),
                host_filter(peer, "addr")
            ),
            address: peer.to_string(),
        });
    }
    peers.sort_by(|x, y| {
        (y.bytes_to + y.bytes_from)
            .cmp(&(x.bytes_to + x.bytes_from))
            .then(x.address.cmp(&y.address))
    });
    let peer_count = peers.len();

    // services: TCP connections from the model, by server port
    let mut offered: BTreeMap<u64, (BTreeSet<&str>, u64, u64, u64)> = BTreeMap::new();
    let mut used: BTreeMap<(&str, u64), (u64, u64, u64)> = BTreeMap::new();
    let mut opened = 0u64;
    for s in &tcp.streams {
        let bytes = s.bytes[0] + s.bytes[1];
        let answered = s.synack[1] as u64;
        if ours.contains(s.addr[1].as_str()) && (s.syn[0] || s.synack[1]) {
            let e = offered.entry(s.port()[1]).or_default();
            e.0.insert(s.addr[0].as_str());
            e.1 += s.syn[0] as u64;
            e.2 += answered;
            e.3 += bytes;
        }
        if ours.contains(s.addr[0].as_str()) && s.syn[0] {
            opened += 1;
            let e = used.entry((s.addr[1].as_str(), s.port()[1])).or_default();
            e.0 += 1;
            e.1 += answered;
            e.2 += bytes;
        }
    }
    let here = addresses
        .iter()
        .map(|a| host_filter(a, "addr"))
        .collect::<Vec<_>>()
        .join(" || ");
    let mut offered_rows: Vec<Service> = offered
        .into_iter()
        .map(|(port, (clients, conns, answered, bytes))| Service {
            service: format!("tcp/{port}"),
            clients: Some(clients.len()),
            server: None,
            connections: conns,
            answered,
            bytes,
            display_filter: format!("({here}) && tcp.port == {port}"),
        })
        .collect();
    offered_rows.sort_by(|x, y| {
        y.connections
            .cmp(&x.connections)
            .then(y.bytes.cmp(&x.bytes))
    });
    let mut used_rows: Vec<Service> = used
        .into_iter()
        .map(|((server, port), (conns, answered, bytes))| Service {
            service: format!("tcp/{port}"),
            clients: None,
            server: Some(server.to_string()),
            connections: conns,
            answered,
            bytes,
            display_filter: format!(
                "({here}) && {} && tcp.port == {port}",
                host_filter(server, "addr")
            ),
        })
        .collect();
    used_rows.sort_by(|x, y| {
        y.connections
            .cmp(&x.connections)
            .then(y.bytes.cmp(&x.bytes))
    });

    // roles, each with what shows it
    let mut roles: Vec<Role> = Vec::new();
    let role_names: BTreeSet<&str> = rows.iter().flat_map(|h| h.roles.iter().copied()).collect();
    if role_names.contains("gateway") {
        let behind = dir
            .gateways
            .iter()
            .filter(|g| mac_list.iter().any(|m| m.mac == g.mac))
            .map(|g| g.addresses_behind)
            .max();
        roles.push(Role {
            role: "gateway".into(),
            evidence: match behind {
                Some(n) => format!("its MAC forwards frames from {n} source addresses"),
                None => "named as router by DHCP, or its MAC claims the address in ARP".into(),
            },
        });
    }
    if role_names.contains("dns_server") {
        let answered = addresses.iter().any(|a| state.dns_servers.contains(a));
        roles.push(Role {
            role: "dns_server".into(),
            evidence: if answered {
                "answered DNS queries (or is the resolver DHCP hands out)".into()
            } else {
                "was sent DNS queries on port 53 (no answer from it in the capture)".into()
            },
        });
    }
    if role_names.contains("dhcp_server") {
        roles.push(Role {
            role: "dhcp_server".into(),
            evidence: "named as server identifier in DHCP messages".into(),
        });
    }
    if let Some(top) = offered_rows.iter().find(|s| s.answered > 0) {
        let served: u64 = offered_rows.iter().map(|s| s.answered).sum();
        roles.push(Role {
            role: "server".into(),
            evidence: format!(
                "accepted {served} TCP connection(s) on {} port(s), most on {} from {} client(s)",
                offered_rows.iter().filter(|s| s.answered > 0).count(),
                top.service,
                top.clients.unwrap_or(0)
            ),
        });
    } else if role_names.contains("server") {
        roles.push(Role {
            role: "server".into(),
            evidence: format!(
                "answered on {}",
                rows.iter()
                    .flat_map(|h| h.services.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    if opened > 0 {
        roles.push(Role {
            role: "client".into(),
            evidence: format!(
                "opened {opened} TCP connection(s) to {} server port(s)",
                used_rows.len()
            ),
        });
    } else if roles.is_empty() {
        roles.push(Role {
            role: "client".into(),
            evidence: "offered no service seen in the capture".into(),
        });
    }

    // the triage's own checks over the same index, kept where they name this host
    let mut keys = addresses.clone();
    keys.extend(mac_list.iter().map(|m| m.mac.clone()));
    let mut findings: Vec<Finding> = Vec::new();
    for (c, found) in crate::tools::run_checks(&a).await? {
        for mut f in found.into_iter().flatten().filter(|f| involves(f, &keys)) {
            if findings.iter().any(|o| o.title == f.title) {
                continue;
            }
            f.evidence.frames.truncate(5);
            f.next_step = Some(NextStep {
                tool: c.tool.into(),
                arguments: BTreeMap::from([(
                    "pcap_file".to_string(),
                    serde_json::Value::String(p.pcap_file.clone()),
                )]),
            });
            findings.push(f);
        }
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let finding_count = findings.len();
    findings.truncate(MAX_FINDINGS);

    let who = match names.first().or(served_names.first()) {
        Some(n) => format!("{} ({})", addresses.join(", "), n.name),
        None => addresses.join(", "),
    };
    let summary = format!(
        "{who}: {}, {location}{}; sent {} in {} frames, received {} in {} frames{}; {} peer(s){}; {} finding(s) involve it{}.",
        roles
            .iter()
            .map(|r| r.role.as_str())
            .collect::<Vec<_>>()
            .join("/"),
        mac_list
            .first()
            .map(|m| format!(
                ", MAC {}{}",
                m.mac,
                m.vendor
                    .as_deref()
                    .map(|v| format!(" ({v})"))
                    .unwrap_or_default()
            ))
            .unwrap_or_default(),
        human_bytes(traffic.bytes_sent as f64),
        traffic.frames_sent,
        human_bytes(traffic.bytes_received as f64),
        traffic.frames_received,
        match (&traffic.first_seen, &traffic.last_seen) {
            (Some(f), Some(l)) => format!(" from {f} to {l}"),
            _ => String::new(),
        },
        peer_count,
        peers
            .first()
            .map(|p| format!(", most with {}", p.address))
            .unwrap_or_default(),
        finding_count,
        findings
            .first()
            .map(|f| format!(", worst ({}): {}", f.severity.as_str(), f.title))
            .unwrap_or_default(),
    );
    if !users.is_empty() {
        findings.push(Finding::new(
            Severity::Info,
            format!(
                "User name(s) sent from it: {}",
                users
                    .iter()
                    .map(|u| format!("{} ({})", u.name, u.source))
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "Who was logged in on this host, as its Kerberos requests and NTLM authentications name it.",
            Evidence {
                frames: users.iter().map(|u| u.frame).take(10).collect(),
                display_filter: format!(
                    "({here}) && (kerberos.CNameString || ntlmssp.auth.username)"
                ),
                ..Default::default()
            },
        ));
    }
    let data = HostDossier {
        query: p.host.clone(),
        display_filter: if macs.is_empty() || !addresses.is_empty() {
            here.clone()
        } else {
            format!("eth.addr == {}", macs[0])
        },
        addresses,
        macs: mac_list,
        location: location.into(),
        vlans,
        names,
        served_names,
        users,
        roles,
        traffic,
        peer_count,
        peers: Table::top(peers, limit),
        services_offered: Table::top(offered_rows, limit),
        services_used: Table::top(used_rows, limit),
        finding_count,
    };
    a.report(summary, findings, data, state.span, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_whole_tokens() {
        assert!(mentions("ip.addr == 10.0.0.1", "10.0.0.1"));
        assert!(mentions("10.0.0.1:443", "10.0.0.1"));
        assert!(mentions("[2001:db8::1]:443", "2001:db8::1"));
        assert!(!mentions("ip.addr == 10.0.0.10", "10.0.0.1"));
        assert!(!mentions("110.0.0.1", "10.0.0.1"));
        assert!(!mentions("2001:db8::1:5", "2001:db8::1"));
        assert_eq!(
            parse_mac("00-1A-2b-3c-4d-5e").as_deref(),
            Some("00:1a:2b:3c:4d:5e")
        );
        assert!(parse_mac("00:1a:2b").is_none());
    }
}
