//! `analyze_network_topology`: who is on the wire. Hosts with their MACs and vendors
//! (tshark's bundled OUI table, no network lookups), subnets, likely gateways
//! (one MAC in front of many IPs), DNS and DHCP servers, VLANs, services per host (from
//! SYN-ACKs and answers), the main edges of the conversation graph, and a Mermaid
//! diagram of the top of that graph.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::{Analysis, Span};
use crate::report::{
    Evidence, Finding, Report, Severity, Table, host_filter, human_bytes, thousands,
};
use crate::server::PcapServer;
use crate::tools::clamp_limit;
use crate::tshark::fields::{FromRow, Row};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TopologyParams {
    /// Capture file: a name in PCAP_STORAGE_DIR or a path inside an allowed directory.
    pub pcap_file: String,
    /// Optional Wireshark display filter that scopes the analysis.
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
pub struct Host {
    pub address: String,
    /// MACs this address's own frames came from (absent for hosts behind a router).
    pub macs: Vec<String>,
    /// Manufacturer from the MAC's OUI, as tshark's bundled table names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// local (same segment as the capture) or remote (reached through a gateway).
    pub location: String,
    /// gateway, dns_server, dhcp_server, server, client.
    pub roles: Vec<String>,
    /// Services it answered on: `tcp/443`, `udp/53`.
    pub services: Vec<String>,
    pub vlans: Vec<String>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub peers: usize,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Gateway {
    pub mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Its own addresses (from ARP or its own traffic), when seen.
    pub addresses: Vec<String>,
    /// Distinct source addresses whose frames it forwarded.
    pub addresses_behind: usize,
    pub display_filter: String,
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
    pub gateways: Vec<Gateway>,
    pub subnets: Vec<Subnet>,
    pub dns_servers: Vec<String>,
    pub dhcp_servers: Vec<String>,
    pub vlans: Vec<Vlan>,
    pub edges: Table<Edge>,
    /// Mermaid flowchart of the busiest hosts and edges (paste into any Mermaid viewer).
    pub mermaid: String,
}

pub struct TopoRow {
    len: u64,
    eth_src: Option<String>,
    vendor: Option<String>,
    vlans: Vec<String>,
    src: Option<String>,
    dst: Option<String>,
    arp_mac: Option<String>,
    arp_ip: Option<String>,
    synack: bool,
    tcp_sport: Option<u64>,
    tcp_dport: Option<u64>,
    udp_sport: Option<u64>,
    dns_response: bool,
    /// A DNS query sent to port 53: its destination is (meant to be) a resolver.
    dns_query_to_53: bool,
    dhcp_server: Option<String>,
    dhcp_router: Vec<String>,
    dhcp_dns: Vec<String>,
    time: Option<f64>,
}

impl FromRow for TopoRow {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.len",
        "eth.src",
        "eth.src.oui_resolved",
        "ieee8021ad.id",
        "vlan.id",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "arp.src.hw_mac",
        "arp.src.proto_ipv4",
        "tcp.flags",
        "tcp.srcport",
        "tcp.dstport",
        "udp.srcport",
        "dns.flags.response",
        "dhcp.option.dhcp_server_id",
        "dhcp.option.router",
        "dhcp.option.domain_name_server",
        "frame.time_epoch",
        "udp.dstport",
    ];
    fn from_row(r: &Row<'_>) -> Option<Self> {
        let vlans: Vec<String> = r.all(4).chain(r.all(5)).map(str::to_string).collect();
        r.u64(0)?; // a row without a frame number is not a packet row
        Some(Self {
            len: r.u64(1).unwrap_or(0),
            eth_src: r.owned(2),
            vendor: r.owned(3),
            vlans,
            // the outer IP header: the hosts on this wire, not a tunnel's or a quote's
            src: r.first(6).or_else(|| r.first(7)).map(str::to_string),
            dst: r.first(8).or_else(|| r.first(9)).map(str::to_string),
            arp_mac: r.owned(10),
            arp_ip: r.owned(11).filter(|ip| ip != "0.0.0.0"),
            synack: r.u64(12).is_some_and(|f| f & 0x12 == 0x12),
            tcp_sport: r.u64(13),
            tcp_dport: r.u64(14),
            udp_sport: r.u64(15),
            dns_response: r.flag(16),
            dns_query_to_53: r.str(16).is_some() && !r.flag(16) && r.u64(21) == Some(53),
            dhcp_server: r.owned(17),
            dhcp_router: r.all(18).map(str::to_string).collect(),
            dhcp_dns: r.all(19).map(str::to_string).collect(),
            time: r.f64(20),
        })
    }
}

#[derive(Default, Clone)]
struct HostAcc {
    // short lists, not sets: one host rarely has more than a MAC or two, and an
    // empty-but-allocated tree node per host is most of a flood's memory
    macs: Vec<String>,
    vendor: Option<String>,
    services: Vec<(String, u64)>,
    vlans: Vec<String>,
    sent: u64,
    received: u64,
}

/// Adds `n` to `key`'s count in a short list (a host or pair uses a service or two; a
/// tree per entry would cost more than the entry).
fn bump(list: &mut Vec<(String, u64)>, key: &str, n: u64) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some(e) => e.1 += n,
        None => {
            list.reserve_exact(1);
            list.push((key.to_string(), n));
        }
    }
}

/// Pushes `v` unless the list holds it already.
fn insert_new(list: &mut Vec<String>, v: &str) -> bool {
    let new = !list.iter().any(|x| x == v);
    if new {
        list.reserve_exact(1);
        list.push(v.to_string());
    }
    new
}

#[derive(Default, Clone)]
struct EdgeAcc {
    bytes: u64,
    frames: u64,
    services: Vec<(String, u64)>,
    /// A packet between the two had a unicast destination: each is the other's peer.
    unicast: bool,
}

/// The subnet a person would name for an address: /24 for IPv4, /64 for IPv6.
pub fn subnet_of(addr: &str) -> Option<String> {
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(v) => {
            let o = v.octets();
            Some(format!("{}.{}.{}.0/24", o[0], o[1], o[2]))
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            Some(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
        }
    }
}

/// Whether one MAC sends from addresses of several networks of one family: a router.
/// A dual-stack host is not one: its IPv4 address, its link-local IPv6 (fe80::/10),
/// its unique-local one (fc00::/7) and its SLAAC address (the MAC in the interface ID)
/// are all its own, and IPv4 link-local (169.254/16) is a fallback of the host itself.
fn forwards_for_others<'a>(mac: &str, ips: impl Iterator<Item = &'a str>) -> bool {
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for ip in ips.filter(|ip| is_unicast(ip)) {
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) if !a.is_link_local() => {
                v4.insert(subnet_of(ip));
            }
            Ok(IpAddr::V6(a)) => {
                let s = a.segments();
                let link_local = s[0] & 0xffc0 == 0xfe80;
                let unique_local = s[0] & 0xfe00 == 0xfc00;
                if !link_local && !unique_local && !is_eui64_of(&a, mac) {
                    v6.insert(subnet_of(ip));
                }
            }
            _ => {}
        }
    }
    v4.len() >= 2 || v6.len() >= 2
}

/// Whether an IPv6 address's interface ID is the modified EUI-64 of this MAC.
fn is_eui64_of(a: &std::net::Ipv6Addr, mac: &str) -> bool {
    let m: Vec<u8> = mac
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    if m.len() != 6 {
        return false;
    }
    let o = a.octets();
    o[8..16] == [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]
}

fn is_unicast(addr: &str) -> bool {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(v)) => {
            !(v.is_multicast() || v.is_broadcast() || v.is_unspecified() || v.octets()[3] == 255)
        }
        Ok(IpAddr::V6(v)) => !(v.is_multicast() || v.is_unspecified()),
        Err(_) => false,
    }
}

/// A Mermaid-safe label: no quotes, brackets or pipes.
fn label(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '[' | ']' | '|' | '{' | '}' | '<' | '>' => ' ',
            c => c,
        })
        .collect()
}

fn mermaid(hosts: &[Host], edges: &[Edge], gateways: &[Gateway]) -> String {
    let shown: Vec<&Host> = hosts.iter().take(12).collect();
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
            .find(|r| *r != "client")
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
    for e in edges {
        if drawn >= 15 {
            break;
        }
        if let (Some(a), Some(b)) = (id.get(e.a.as_str()), id.get(e.b.as_str())) {
            let what = e.services.first().cloned().unwrap_or_default();
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

/// The topology view's part of the index: hosts, address pairs, MACs, ARP claims,
/// VLANs and the DNS/DHCP servers seen.
#[derive(Clone, Default)]
pub struct TopoState {
    span: Span,
    hosts: BTreeMap<String, HostAcc>,
    edges: BTreeMap<(String, String), EdgeAcc>,
    macs: BTreeMap<String, (Option<String>, BTreeSet<String>)>,
    arp: BTreeMap<String, BTreeSet<String>>,
    mac_vlans: BTreeMap<String, BTreeSet<String>>,
    vlans: BTreeMap<String, (u64, BTreeSet<String>)>,
    dns_servers: BTreeSet<String>,
    /// Hosts sent DNS queries on port 53, answering or not (a dead resolver is one).
    dns_asked: BTreeSet<String>,
    dhcp_servers: BTreeSet<String>,
    dhcp_routers: BTreeSet<String>,
}

impl crate::index::Part for TopoState {
    type Row = TopoRow;
    fn new(_ctx: &crate::index::Ctx) -> Self {
        Self::default()
    }
    fn add(&mut self, r: TopoRow) {
        self.span.add(r.time);
        if let (Some(m), Some(ip)) = (&r.arp_mac, &r.arp_ip) {
            self.arp.entry(m.clone()).or_default().insert(ip.clone());
        }
        let vlan = (!r.vlans.is_empty()).then(|| r.vlans.join("/"));
        if let (Some(v), Some(m)) = (&vlan, &r.eth_src) {
            self.mac_vlans
                .entry(m.clone())
                .or_default()
                .insert(v.clone());
        }
        if let Some(v) = &vlan {
            let e = self.vlans.entry(v.clone()).or_default();
            e.0 += 1;
            if let Some(s) = r.src.as_ref().or(r.arp_ip.as_ref()) {
                e.1.insert(s.clone());
            }
        }
        if let Some(d) = &r.dhcp_server {
            self.dhcp_servers.insert(d.clone());
        }
        self.dhcp_routers.extend(r.dhcp_router.iter().cloned());
        self.dns_servers.extend(r.dhcp_dns.iter().cloned());
        if r.dns_query_to_53
            && let Some(d) = &r.dst
            && !self.dns_asked.contains(d)
        {
            self.dns_asked.insert(d.clone());
        }
        let (Some(src), Some(dst)) = (r.src, r.dst) else {
            if let Some(m) = &r.eth_src {
                self.macs.entry(m.clone()).or_default().0 = r.vendor.clone();
            }
            return;
        };
        if let Some(m) = &r.eth_src {
            let e = self.macs.entry(m.clone()).or_default();
            if e.0.is_none() {
                e.0 = r.vendor.clone();
            }
            if e.1.len() < 10_000 {
                e.1.insert(src.clone());
            }
        }
        let service = if r.synack {
            r.tcp_sport.map(|p| format!("tcp/{p}"))
        } else if r.dns_response && r.udp_sport == Some(53) {
            self.dns_servers.insert(src.clone());
            Some("udp/53".into())
        } else if r.dns_response && r.tcp_sport == Some(53) {
            self.dns_servers.insert(src.clone());
            Some("tcp/53".into())
        } else {
            None
        };
        if crate::index::room(&self.hosts, &src) {
            let hs = self.hosts.entry(src.clone()).or_default();
            hs.sent += r.len;
            if let Some(m) = &r.eth_src {
                insert_new(&mut hs.macs, m);
                if hs.vendor.is_none() {
                    hs.vendor = r.vendor.clone();
                }
            }
            if let Some(v) = &vlan {
                insert_new(&mut hs.vlans, v);
            }
            if let Some(s) = &service {
                bump(&mut hs.services, s, 1);
            }
        }
        let unicast = is_unicast(&dst);
        if crate::index::room(&self.hosts, &dst) {
            self.hosts.entry(dst.clone()).or_default().received += r.len;
        }
        let key = if src <= dst {
            (src.clone(), dst.clone())
        } else {
            (dst.clone(), src.clone())
        };
        if !crate::index::room(&self.edges, &key) {
            return;
        }
        let e = self.edges.entry(key).or_default();
        e.bytes += r.len;
        e.frames += 1;
        e.unicast |= unicast;
        // the server side of this packet's connection: the lower well-known port
        let port = match (r.tcp_sport, r.tcp_dport, r.udp_sport) {
            (Some(s), Some(d), _) => Some(format!("tcp/{}", s.min(d))),
            (_, _, Some(s)) if r.dns_response => Some(format!("udp/{s}")),
            _ => None,
        };
        if let Some(pt) = port {
            bump(&mut e.services, &pt, r.len);
        }
    }
    fn approx_bytes(&self) -> usize {
        // per entry: key and value in a tree node (about half full) plus their strings
        self.hosts.len() * 420
            + self.edges.len() * 300
            + self
                .macs
                .values()
                .map(|m| 200 + m.1.len() * 80)
                .sum::<usize>()
            + self.arp.values().map(|v| 100 + v.len() * 80).sum::<usize>()
    }
}

async fn topology(mut a: Analysis, p: TopologyParams) -> Result<Report<Topology>, String> {
    // MAC -> (vendor, source IPs seen behind it)
    // eth.src.oui_resolved comes from tshark's bundled OUI table even under -n: vendors
    // without any name lookup
    let state = a.part::<TopoState>().await?;
    // the report consumes what it shows; the index keeps its own copy
    let TopoState {
        span,
        mut hosts,
        edges,
        macs,
        arp,
        mac_vlans,
        vlans,
        dns_servers,
        dns_asked,
        dhcp_servers,
        dhcp_routers,
    } = (*state).clone();

    // distinct peers per host, from the edges that carried unicast traffic
    let mut peers: BTreeMap<&str, usize> = BTreeMap::new();
    for (a, b) in edges.iter().filter(|(_, e)| e.unicast).map(|(k, _)| k) {
        *peers.entry(a.as_str()).or_default() += 1;
        if a != b {
            *peers.entry(b.as_str()).or_default() += 1;
        }
    }
    let peers: BTreeMap<String, usize> =
        peers.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    // hosts that only spoke ARP are on the segment too
    for (mac, ips) in &arp {
        for ip in ips {
            let h = hosts.entry(ip.clone()).or_default();
            if insert_new(&mut h.macs, mac) && h.vendor.is_none() {
                h.vendor = macs.get(mac).and_then(|m| m.0.clone());
            }
            for v in mac_vlans.get(mac).into_iter().flatten() {
                insert_new(&mut h.vlans, v);
            }
        }
    }
    // a MAC in front of source addresses from several subnets forwards for them: a
    // router (a host with aliases stays inside its own subnet)
    let mut gateways: Vec<Gateway> = macs
        .iter()
        .filter(|(mac, (_, ips))| forwards_for_others(mac, ips.iter().map(String::as_str)))
        .map(|(mac, (vendor, ips))| {
            let own: Vec<String> = arp
                .get(mac)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            Gateway {
                mac: mac.clone(),
                vendor: vendor.clone(),
                addresses: own,
                addresses_behind: ips.len(),
                display_filter: format!("eth.addr == {mac}"),
            }
        })
        .collect();
    gateways.sort_by_key(|g| std::cmp::Reverse(g.addresses_behind));
    let gateway_macs: BTreeSet<&str> = gateways.iter().map(|g| g.mac.as_str()).collect();

    let mut rows: Vec<Host> = hosts
        .into_iter()
        .filter(|(addr, _)| is_unicast(addr))
        .map(|(address, mut h)| {
            h.macs.sort();
            h.vlans.sort();
            let own_macs: Vec<String> = h
                .macs
                .iter()
                .filter(|m| !gateway_macs.contains(m.as_str()))
                .cloned()
                .collect();
            let behind_gateway = !h.macs.is_empty() && own_macs.is_empty();
            // a gateway's own address: in ARP for its MAC or announced by DHCP
            let is_gateway = dhcp_routers.contains(&address)
                || gateways.iter().any(|g| g.addresses.contains(&address));
            let location = if is_gateway || !own_macs.is_empty() {
                "local"
            } else if behind_gateway {
                "remote"
            } else {
                "unknown"
            };
            let mut roles = Vec::new();
            if is_gateway {
                roles.push("gateway".to_string());
            }
            // a resolver asked but never heard answering is still the resolver (the
            // DNS view says it is dead), not a client
            if dns_servers.contains(&address) || dns_asked.contains(&address) {
                roles.push("dns_server".into());
            }
            if dhcp_servers.contains(&address) {
                roles.push("dhcp_server".into());
            }
            if !h.services.is_empty() {
                roles.push("server".into());
            }
            if roles.is_empty() {
                roles.push("client".into());
            }
            let mut services = h.services;
            services.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            Host {
                display_filter: if address.contains(':') {
                    host_filter(&address, "addr")
                } else {
                    format!("ip.addr == {address} || arp.src.proto_ipv4 == {address}")
                },
                vendor: if own_macs.is_empty() { None } else { h.vendor },
                macs: own_macs,
                location: location.into(),
                roles,
                services: services.into_iter().map(|s| s.0).take(10).collect(),
                vlans: h.vlans.into_iter().collect(),
                bytes_sent: h.sent,
                bytes_received: h.received,
                peers: peers.get(&address).copied().unwrap_or(0),
                address,
            }
        })
        .collect();
    rows.sort_by(|x, y| {
        (y.bytes_sent + y.bytes_received)
            .cmp(&(x.bytes_sent + x.bytes_received))
            .then(x.address.cmp(&y.address))
    });
    let mut subnets: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
    for h in rows.iter().filter(|h| h.location == "local") {
        if let Some(s) = subnet_of(&h.address) {
            let e = subnets.entry(s).or_default();
            e.0 += 1;
            e.1.extend(h.vlans.iter().cloned());
        }
    }
    let subnets: Vec<Subnet> = subnets
        .into_iter()
        .map(|(prefix, (hosts, v))| Subnet {
            prefix,
            hosts,
            vlans: v.into_iter().collect(),
        })
        .collect();
    let mut edge_rows: Vec<Edge> = edges
        .into_iter()
        .filter(|((x, y), _)| is_unicast(x) && is_unicast(y))
        .map(|((x, y), e)| {
            let mut services = e.services;
            services.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            Edge {
                display_filter: format!(
                    "{} && {}",
                    host_filter(&x, "addr"),
                    host_filter(&y, "addr")
                ),
                a: x,
                b: y,
                bytes: e.bytes,
                frames: e.frames,
                services: services.into_iter().map(|s| s.0).take(5).collect(),
            }
        })
        .collect();
    edge_rows.sort_by_key(|e| std::cmp::Reverse(e.bytes));
    let vlan_rows: Vec<Vlan> = vlans
        .into_iter()
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
            vlan,
            frames,
            hosts: hs.len(),
        })
        .collect();
    let diagram = mermaid(&rows, &edge_rows, &gateways);
    let dns: Vec<String> = dns_servers.into_iter().collect();
    let dhcp: Vec<String> = dhcp_servers.into_iter().collect();

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
    let multi_mac: Vec<&Host> = rows.iter().filter(|h| h.macs.len() > 1).collect();
    if let Some(h) = multi_mac.first() {
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
                endpoints: multi_mac.iter().map(|h| h.address.clone()).take(5).collect(),
                display_filter: h.display_filter.clone(),
                ..Default::default()
            },
        ));
    }
    let local = rows.iter().filter(|h| h.location == "local").count();
    let summary = format!(
        "{} frames of {}: {} hosts ({} local, {} remote) in {} subnet(s), {} likely gateway(s), DNS server(s) {}, DHCP server(s) {}, {} VLAN tag stack(s). The busiest link is {}. A Mermaid diagram of the top of the graph is in `mermaid`.",
        thousands(span.packets),
        a.file.display_name,
        rows.len(),
        local,
        rows.iter().filter(|h| h.location == "remote").count(),
        subnets.len(),
        gateways.len(),
        if dns.is_empty() {
            "none seen".into()
        } else {
            dns.join(", ")
        },
        if dhcp.is_empty() {
            "none seen".into()
        } else {
            dhcp.join(", ")
        },
        vlan_rows.len(),
        edge_rows
            .first()
            .map(|e| format!("{} <-> {} ({})", e.a, e.b, human_bytes(e.bytes as f64)))
            .unwrap_or_else(|| "none".into())
    );
    let limit = clamp_limit(p.limit, 15);
    let data = Topology {
        host_count: rows.len(),
        hosts: Table::top(rows, limit),
        gateways,
        subnets,
        dns_servers: dns,
        dhcp_servers: dhcp,
        vlans: vlan_rows,
        edges: Table::top(edge_rows, limit),
        mermaid: diagram,
    };
    a.report(summary, findings, data, span, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_and_labels() {
        assert_eq!(subnet_of("10.1.2.3").unwrap(), "10.1.2.0/24");
        // a dual-stack host: its IPv4, link-local and SLAAC (EUI-64) IPv6 are its own
        let mac = "00:0c:29:1f:a7:55";
        let own = [
            "192.168.1.5",
            "fe80::20c:29ff:fe1f:a755",
            "2001:db8::20c:29ff:fe1f:a755",
        ];
        assert!(!forwards_for_others(mac, own.into_iter()));
        // a router: sources from several IPv4 subnets
        assert!(forwards_for_others(
            mac,
            ["10.0.0.1", "10.0.1.1"].into_iter()
        ));
        assert_eq!(subnet_of("2001:db8:1:2::5").unwrap(), "2001:db8:1:2::/64");
        assert!(!is_unicast("224.0.0.251") && !is_unicast("10.0.0.255"));
        assert!(is_unicast("10.0.0.5"));
        assert_eq!(label("a\"b[c]"), "a b c ");
    }
}
