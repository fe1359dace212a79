//! `analyze_network_topology`: who is on the wire. Hosts with their MACs and vendors
//! (tshark's bundled OUI table, no network lookups), subnets, likely gateways
//! (one MAC in front of many IPs), DNS and DHCP servers, VLANs, services per host (from
//! SYN-ACKs and answers), the main edges of the conversation graph, and a Mermaid
//! diagram of the top of that graph.

use arcstr::ArcStr;
use std::collections::{BTreeMap, BTreeSet};

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::hosts::{EdgeAcc, Listed, TopoState, directory, is_unicast, subnet_of};
pub use crate::analysis::hosts::{Gateway, Host};
use crate::engine::Analysis;
use crate::report::{
    Evidence, Finding, Report, Severity, Table, host_filter, human_bytes, thousands,
};
use crate::server::PcapServer;
use crate::tools::clamp_limit;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TopologyParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Wireshark display filter scoping the analysis.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Hosts and edges listed (default 15, max 500); the diagram shows at most 12 hosts.
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Subnet {
    pub prefix: String,
    pub hosts: usize,
    pub vlans: Vec<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Edge {
    pub a: String,
    pub b: String,
    pub bytes: u64,
    pub frames: u64,
    /// The services used between them (server side), most bytes first.
    pub services: Vec<String>,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Vlan {
    /// The tag stack, outer first (`200/2001` for Q-in-Q).
    pub vlan: String,
    pub frames: u64,
    pub hosts: usize,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Topology {
    pub host_count: usize,
    pub hosts: Table<Host>,
    /// Most addresses behind first.
    pub gateways: Table<Gateway>,
    /// Most hosts first.
    pub subnets: Table<Subnet>,
    /// The first [`SERVERS_LISTED`] resolvers and DHCP servers (sorted), and how many.
    pub dns_servers: Vec<String>,
    pub dns_server_count: usize,
    pub dhcp_servers: Vec<String>,
    pub dhcp_server_count: usize,
    /// Most frames first.
    pub vlans: Table<Vlan>,
    pub edges: Table<Edge>,
    /// Mermaid flowchart of the busiest hosts and edges (paste into any Mermaid viewer).
    pub mermaid: String,
}

/// Resolvers and DHCP servers listed by name (a scan answered from every address of a
/// range would list thousands).
const SERVERS_LISTED: usize = 20;

/// A Mermaid-safe label: no quotes, brackets or pipes.
fn label(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '[' | ']' | '|' | '{' | '}' | '<' | '>' => ' ',
            c => c,
        })
        .collect()
}

/// An address pair of the host table with its counters.
type Link<'a> = (&'a (ArcStr, ArcStr), &'a EdgeAcc);

/// The services of a link, most bytes first.
fn services(e: &EdgeAcc) -> impl Iterator<Item = &ArcStr> {
    let mut services: Vec<&(ArcStr, u64)> = e.services.iter().collect();
    services.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    services.into_iter().map(|s| &s.0)
}

fn edge_row(((x, y), e): Link<'_>) -> Edge {
    Edge {
        display_filter: format!("{} && {}", host_filter(x, "addr"), host_filter(y, "addr")),
        a: x.to_string(),
        b: y.to_string(),
        bytes: e.bytes,
        frames: e.frames,
        services: services(e).take(5).map(|s| s.to_string()).collect(),
    }
}

/// Hosts the Mermaid diagram draws, busiest first.
const PICTURED: usize = 12;

fn mermaid(hosts: &[Host], edges: &[Link<'_>], gateways: &[Gateway]) -> String {
    let shown: Vec<&Host> = hosts.iter().take(PICTURED).collect();
    let id: BTreeMap<&str, String> = shown
        .iter()
        .enumerate()
        .map(|(i, h)| (h.address.as_str(), format!("h{i}")))
        .collect();
    let mut out = String::from("flowchart LR\n");
    for h in &shown {
        let role = h
            .roles
            .iter()
            .find(|r| **r != "client")
            .map(|r| format!("<br/>{}", r.replace('_', " ")))
            .unwrap_or_default();
        let vendor = h
            .vendor
            .as_deref()
            .map(|v| format!("<br/>{}", label(v.split(',').next().unwrap_or(v))))
            .unwrap_or_default();
        let node = format!("{}{vendor}{role}", label(&h.address));
        let shape = if h.location == "remote" {
            format!("(\"{node}\")")
        } else {
            format!("[\"{node}\"]")
        };
        out.push_str(&format!("  {}{shape}\n", id[h.address.as_str()]));
    }
    let mut drawn = 0;
    for ((x, y), e) in edges {
        if drawn >= 15 {
            break;
        }
        if let (Some(a), Some(b)) = (id.get(&**x), id.get(&**y)) {
            let what = services(e).next().cloned().unwrap_or_default();
            out.push_str(&format!(
                "  {a} -- \"{} {}\" --- {b}\n",
                label(&what),
                human_bytes(e.bytes as f64)
            ));
            drawn += 1;
        }
    }
    for (i, g) in gateways.iter().take(3).enumerate() {
        out.push_str(&format!(
            "  gw{i}{{{{\"gateway {}<br/>{} addresses behind\"}}}}\n",
            label(&g.mac),
            g.addresses_behind
        ));
    }
    // remote hosts hang off the gateway when there is only one
    if gateways.len() == 1 {
        for h in shown.iter().filter(|h| h.location == "remote") {
            out.push_str(&format!("  gw0 -.- {}\n", id[h.address.as_str()]));
        }
    }
    out
}

#[tool_router(router = topology_router, vis = "pub(crate)")]
impl PcapServer {
    /// Network topology: hosts with MACs and vendors, subnets, likely gateways, DNS and
    /// DHCP servers, VLANs, services per host, the main conversation edges, and a
    /// Mermaid diagram of the busiest part of the graph.
    #[tool(
        name = "analyze_network_topology",
        annotations(
            title = "Network topology",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_network_topology(
        &self,
        Parameters(p): Parameters<TopologyParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Topology>>, String> {
        self.engine
            .analyze("analyze_network_topology", p, rc, topology)
            .await
    }
}

async fn topology(mut a: Analysis, p: TopologyParams) -> Result<Report<Topology>, String> {
    let state = a.part::<TopoState>().await?;
    let dir = directory(&state);
    let gateways = &dir.gateways;
    let span = state.span;
    let mut subnets: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
    for h in dir.hosts.iter().filter(|h| h.location == "local") {
        if let Some(s) = subnet_of(h.address) {
            let e = subnets.entry(s).or_default();
            e.0 += 1;
            e.1.extend(dir.vlans_of(h).into_iter().map(str::to_string));
        }
    }
    let mut subnets: Vec<Subnet> = subnets
        .into_iter()
        .map(|(prefix, (hosts, v))| Subnet {
            prefix,
            hosts,
            vlans: v.into_iter().collect(),
        })
        .collect();
    subnets.sort_by(|x, y| y.hosts.cmp(&x.hosts).then(x.prefix.cmp(&y.prefix)));
    // every unicast link judged by its counters, busiest first; rows are written only
    // for the ones shown
    let mut edges: Vec<Link<'_>> = state
        .edges
        .iter()
        .filter(|((x, y), _)| is_unicast(x) && is_unicast(y))
        .collect();
    edges.sort_by_key(|(_, e)| std::cmp::Reverse(e.bytes));
    let mut vlan_rows: Vec<Vlan> = state
        .vlans
        .iter()
        .map(|(vlan, (frames, hs))| Vlan {
            display_filter: {
                let ids: Vec<&str> = vlan.split('/').collect();
                match ids.as_slice() {
                    [one] => format!("vlan.id == {one}"),
                    [outer, inner, ..] => format!(
                        "(ieee8021ad.id == {outer} || vlan.id == {outer}) && vlan.id == {inner}"
                    ),
                    [] => "vlan".into(),
                }
            },
            vlan: vlan.clone(),
            frames: *frames,
            hosts: hs.len(),
        })
        .collect();
    vlan_rows.sort_by(|x, y| y.frames.cmp(&x.frames).then(x.vlan.cmp(&y.vlan)));
    let pictured: Vec<Host> = dir
        .hosts
        .iter()
        .take(PICTURED)
        .map(|h| dir.row(h))
        .collect();
    let diagram = mermaid(&pictured, &edges, gateways);
    let (dns_count, dhcp_count) = (state.dns_servers.len(), state.dhcp_servers.len());
    let dns: Vec<String> = state
        .dns_servers
        .iter()
        .take(SERVERS_LISTED)
        .cloned()
        .collect();
    let dhcp: Vec<String> = state
        .dhcp_servers
        .iter()
        .take(SERVERS_LISTED)
        .cloned()
        .collect();
    let named = |v: &[String], n: usize| {
        if v.is_empty() {
            "none seen".to_string()
        } else if n > 5 {
            format!("{} and {} more", v[..5].join(", "), n - 5)
        } else {
            v.join(", ")
        }
    };

    let mut findings = Vec::new();
    for g in gateways.iter().take(3) {
        findings.push(Finding::new(
            Severity::Info,
            format!(
                "Likely gateway {}{}: {} addresses behind it",
                g.mac,
                g.vendor.as_deref().map(|v| format!(" ({v})")).unwrap_or_default(),
                g.addresses_behind
            ),
            format!(
                "Frames from {} different source addresses arrived from this one MAC: it routes for them{}.",
                g.addresses_behind,
                if g.addresses.is_empty() {
                    String::new()
                } else {
                    format!("; its own address per ARP: {}", g.addresses.join(", "))
                }
            ),
            Evidence {
                display_filter: g.display_filter.clone(),
                ..Default::default()
            },
        ));
    }
    if gateways.len() > 1 {
        findings.push(Finding::new(
            Severity::Low,
            format!("{} MACs each forward for many addresses", gateways.len()),
            "Several routers on one segment (or a capture spanning segments): asymmetric routing and first-hop redundancy are worth checking.",
            Evidence {
                display_filter: gateways
                    .iter()
                    .take(3)
                    .map(|g| g.display_filter.clone())
                    .collect::<Vec<_>>()
                    .join(" || "),
                ..Default::default()
            },
        ));
    }
    let multi_mac: Vec<&Listed<'_>> = dir.hosts.iter().filter(|h| h.own_macs > 1).collect();
    if let Some(h) = multi_mac.first().map(|h| dir.row(h)) {
        findings.push(Finding::new(
            Severity::Low,
            format!(
                "{} address(es) seen from more than one MAC (e.g. {}: {})",
                multi_mac.len(),
                h.address,
                h.macs.join(", ")
            ),
            "One IP behind several MACs: a failover pair, a VM that moved, a capture across a router, or spoofing (analyze_security_threats checks ARP).",
            Evidence {
                endpoints: multi_mac
                    .iter()
                    .map(|h| h.address.to_string())
                    .take(5)
                    .collect(),
                display_filter: h.display_filter.clone(),
                ..Default::default()
            },
        ));
    }
    let local = dir.hosts.iter().filter(|h| h.location == "local").count();
    let summary = format!(
        "{} frames of {}: {} hosts ({} local, {} remote) in {} subnet(s), {} likely gateway(s), DNS server(s) {}, DHCP server(s) {}, {} VLAN tag stack(s). The busiest link is {}. A Mermaid diagram of the top of the graph is in `mermaid`.",
        thousands(span.packets),
        a.file.display_name,
        dir.hosts.len(),
        local,
        dir.hosts.iter().filter(|h| h.location == "remote").count(),
        subnets.len(),
        gateways.len(),
        named(&dns, dns_count),
        named(&dhcp, dhcp_count),
        vlan_rows.len(),
        edges
            .first()
            .map(|((a, b), e)| format!("{a} <-> {b} ({})", human_bytes(e.bytes as f64)))
            .unwrap_or_else(|| "none".into())
    );
    let limit = clamp_limit(p.limit, 15);
    let data = Topology {
        host_count: dir.hosts.len(),
        hosts: Table::top_map(dir.hosts.iter().collect(), limit, |h| dir.row(h)),
        gateways: Table::top(
            gateways
                .iter()
                .cloned()
                .map(|mut g| {
                    // a router answering ARP for a whole range claims hundreds
                    g.addresses.truncate(10);
                    g
                })
                .collect(),
            limit.min(10),
        ),
        subnets: Table::top(subnets, limit),
        dns_servers: dns,
        dns_server_count: dns_count,
        dhcp_servers: dhcp,
        dhcp_server_count: dhcp_count,
        vlans: Table::top(vlan_rows, limit),
        edges: Table::top_map(edges, limit, edge_row),
        mermaid: diagram,
    };
    a.report(summary, findings, data, span, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(label("a\"b[c]"), "a b c ");
    }
}
