//! Who is on the wire: the index part behind the topology and the host dossier. Hosts
//! with their MACs and vendors (tshark's bundled OUI table, no network lookups),
//! traffic each way, address pairs, ARP claims, VLANs, DNS/DHCP servers, and the names
//! and user names hosts announce or are given (DNS answers, DHCP, NetBIOS, Kerberos,
//! NTLM, TLS SNI and HTTP Host). One reducer: the topology's host table and a host's
//! dossier read the same counters.

use arcstr::ArcStr;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::Serialize;

use crate::engine::Span;
use crate::index::{Keyed, SharedStrings};
use crate::report::host_filter;
use crate::tshark::fields::{FromRow, Row};

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Host {
    pub address: String,
    /// MACs this address's own frames came from (absent for hosts behind a router).
    pub macs: Vec<String>,
    /// Manufacturer from the MAC's OUI, as tshark's bundled table names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// local (same segment as the capture) or remote (reached through a gateway).
    pub location: &'static str,
    /// gateway, dns_server, dhcp_server, server, client.
    pub roles: Vec<&'static str>,
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
    /// Its own addresses (from ARP or its own traffic), when seen (the topology lists
    /// the first 10).
    pub addresses: Vec<String>,
    /// Distinct source addresses whose frames it forwarded.
    pub addresses_behind: usize,
    pub display_filter: String,
}

pub struct TopoRow {
    frame: u64,
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
    /// What the packet says about names and users (rare: most packets carry none).
    ident: Option<Box<Identity>>,
}

/// Names and user names one packet carries, by what they are evidence of.
#[derive(Default)]
struct Identity {
    /// A DNS, mDNS or LLMNR answer: the name asked and the addresses it resolved to.
    resolved: Option<(&'static str, String, Vec<String>)>,
    /// A DHCP message: the client's MAC, the host name it sent, the address leased.
    dhcp: Option<(String, Option<String>, Option<String>)>,
    /// NetBIOS names with the addresses they were registered or answered for.
    nbns: Vec<(String, String)>,
    /// A user name sent by this packet's source (Kerberos request, NTLM authenticate).
    user: Option<(&'static str, String)>,
    /// A name this packet's destination is asked to serve (TLS SNI, HTTP Host).
    served: Option<(&'static str, String)>,
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
        "dns.qry.name",
        "dns.resp.name",
        "dns.a",
        "dns.aaaa",
        "dhcp.hw.mac_addr",
        "dhcp.option.hostname",
        "dhcp.ip.your",
        "nbns.name",
        "nbns.addr",
        "nbns.nb_flags.group",
        "kerberos.msg_type",
        "kerberos.CNameString",
        "ntlmssp.auth.username",
        "ntlmssp.auth.domain",
        "tls.handshake.extensions_server_name",
        "http.host",
        "http.request",
    ];
    fn from_row(r: &Row<'_>) -> Option<Self> {
        let vlans: Vec<String> = r.all(4).chain(r.all(5)).map(str::to_string).collect();
        Some(Self {
            // a row without a frame number is not a packet row
            frame: r.u64(0)?,
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
            ident: Identity::of(r).map(Box::new),
        })
    }
}

impl Identity {
    fn of(r: &Row<'_>) -> Option<Self> {
        const QNAME: usize = crate::index::col(TopoRow::FIELDS, "dns.qry.name");
        const RNAME: usize = crate::index::col(TopoRow::FIELDS, "dns.resp.name");
        const A: usize = crate::index::col(TopoRow::FIELDS, "dns.a");
        const AAAA: usize = crate::index::col(TopoRow::FIELDS, "dns.aaaa");
        const CHADDR: usize = crate::index::col(TopoRow::FIELDS, "dhcp.hw.mac_addr");
        const DHCP_NAME: usize = crate::index::col(TopoRow::FIELDS, "dhcp.option.hostname");
        const YIADDR: usize = crate::index::col(TopoRow::FIELDS, "dhcp.ip.your");
        const NB_NAME: usize = crate::index::col(TopoRow::FIELDS, "nbns.name");
        const NB_ADDR: usize = crate::index::col(TopoRow::FIELDS, "nbns.addr");
        const NB_GROUP: usize = crate::index::col(TopoRow::FIELDS, "nbns.nb_flags.group");
        const KRB_TYPE: usize = crate::index::col(TopoRow::FIELDS, "kerberos.msg_type");
        const KRB_NAME: usize = crate::index::col(TopoRow::FIELDS, "kerberos.CNameString");
        const NTLM_USER: usize = crate::index::col(TopoRow::FIELDS, "ntlmssp.auth.username");
        const NTLM_DOMAIN: usize = crate::index::col(TopoRow::FIELDS, "ntlmssp.auth.domain");
        const SNI: usize =
            crate::index::col(TopoRow::FIELDS, "tls.handshake.extensions_server_name");
        const HTTP_HOST: usize = crate::index::col(TopoRow::FIELDS, "http.host");
        const HTTP_REQUEST: usize = crate::index::col(TopoRow::FIELDS, "http.request");
        const UDP_SPORT: usize = crate::index::col(TopoRow::FIELDS, "udp.srcport");
        let mut id = Identity::default();
        let addrs: Vec<String> = r.all(A).chain(r.all(AAAA)).map(str::to_string).collect();
        if !addrs.is_empty() && r.flag(crate::index::col(TopoRow::FIELDS, "dns.flags.response")) {
            // the name the client asked for is the one these addresses answer; an
            // announcement (mDNS) asks nothing, and its first host-like record names it
            let name = r.first(QNAME).map(str::to_string).or_else(|| {
                r.all(RNAME)
                    .find(|n| !n.starts_with('_') && !n.ends_with(".arpa"))
                    .map(str::to_string)
            });
            let kind = match r.u64(UDP_SPORT) {
                Some(5353) => "mdns",
                Some(5355) => "llmnr",
                _ => "dns",
            };
            if let Some(n) = name {
                id.resolved = Some((kind, n, addrs));
            }
        }
        if let Some(mac) = r.owned(CHADDR) {
            let leased = r.owned(YIADDR).filter(|ip| ip != "0.0.0.0");
            id.dhcp = Some((mac, r.owned(DHCP_NAME), leased));
        }
        // a registration repeats the name in question and record, an answer lists one
        // name with every address it has; group names (a workgroup) name no host
        let nb_names: BTreeSet<String> = r.all(NB_NAME).map(netbios_name).collect();
        if let [name] = nb_names.into_iter().collect::<Vec<_>>().as_slice() {
            let groups: Vec<bool> = r.all(NB_GROUP).map(|g| g == "1" || g == "True").collect();
            id.nbns = r
                .all(NB_ADDR)
                .enumerate()
                .filter(|(i, _)| !groups.get(*i).copied().unwrap_or(false))
                .map(|(_, a)| (name.clone(), a.to_string()))
                .collect();
        }
        // AS-REQ (10) and TGS-REQ (12) carry the client's principal
        if matches!(r.u64(KRB_TYPE), Some(10 | 12))
            && let Some(u) = r.first(KRB_NAME)
        {
            id.user = Some(("kerberos", u.to_string()));
        } else if let Some(u) = r.first(NTLM_USER).filter(|u| !u.is_empty() && *u != "NULL") {
            let user = match r
                .first(NTLM_DOMAIN)
                .filter(|d| !d.is_empty() && *d != "NULL")
            {
                Some(d) => format!("{d}\\{u}"),
                None => u.to_string(),
            };
            id.user = Some(("ntlm", user));
        }
        if let Some(n) = r.first(SNI) {
            id.served = Some(("tls_sni", n.to_string()));
        } else if r.str(HTTP_REQUEST).is_some()
            && let Some(h) = r.first(HTTP_HOST)
        {
            // the Host header names the site; a port in it is not part of the name
            let name = h
                .rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()));
            let name = name.map_or(h, |(n, _)| n).trim_matches(['[', ']']);
            // an address literal (SSDP's 239.255.255.250) names nothing
            if name.parse::<IpAddr>().is_err() {
                id.served = Some(("http_host", name.to_string()));
            }
        }
        let any = id.resolved.is_some()
            || id.dhcp.is_some()
            || !id.nbns.is_empty()
            || id.user.is_some()
            || id.served.is_some();
        any.then_some(id)
    }
}

/// A NetBIOS name as a person writes it: `FILESRV<20>` is the host `FILESRV`.
fn netbios_name(n: &str) -> String {
    n.split('<').next().unwrap_or(n).trim_end().to_string()
}

#[derive(Default, Clone)]
pub struct HostAcc {
    // short lists, not sets: one host rarely has more than a MAC or two, and an
    // empty-but-allocated tree node per host is most of a flood's memory
    // the texts are the pass's one copy of each (see `TopoState::strings`): a router's
    // MAC, its vendor and a service name repeat across a hundred thousand hosts
    macs: Vec<ArcStr>,
    vendor: Option<ArcStr>,
    services: Vec<(ArcStr, u64)>,
    vlans: Vec<ArcStr>,
    pub sent: u64,
    pub received: u64,
    pub frames_sent: u64,
    pub frames_received: u64,
    /// First and last frame to or from it.
    pub seen: Span,
}

/// Adds `n` to `key`'s count in a short list (a host or pair uses a service or two; a
/// tree per entry would cost more than the entry).
fn bump(list: &mut Vec<(ArcStr, u64)>, key: &str, n: u64, strings: &mut SharedStrings) {
    match list.iter_mut().find(|(k, _)| &**k == key) {
        Some(e) => e.1 += n,
        None => {
            list.reserve_exact(1);
            list.push((strings.one(key), n));
        }
    }
}

/// Pushes the one copy of `v` unless the list holds it already.
fn insert_shared(list: &mut Vec<ArcStr>, v: &str, strings: &mut SharedStrings) {
    if !list.iter().any(|x| &**x == v) {
        list.reserve_exact(1);
        list.push(strings.one(v));
    }
}

#[derive(Default, Clone)]
pub struct EdgeAcc {
    pub bytes: u64,
    pub frames: u64,
    /// Of those, the ones the first address of the pair (the lower) sent.
    pub bytes_from_first: u64,
    pub frames_from_first: u64,
    pub seen: Span,
    /// Services used between them (server side) with their bytes.
    pub services: Vec<(ArcStr, u64)>,
    /// A packet between the two had a unicast destination: each is the other's peer.
    pub unicast: bool,
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

pub fn is_unicast(addr: &str) -> bool {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(v)) => {
            !(v.is_multicast() || v.is_broadcast() || v.is_unspecified() || v.octets()[3] == 255)
        }
        Ok(IpAddr::V6(v)) => !(v.is_multicast() || v.is_unspecified()),
        Err(_) => false,
    }
}

/// The topology view's part of the index: hosts, address pairs, MACs, ARP claims,
/// VLANs and the DNS/DHCP servers seen.
#[derive(Clone, Default)]
pub struct TopoState {
    pub span: Span,
    pub hosts: Keyed<ArcStr, HostAcc>,
    /// Address pairs, lower address first.
    pub edges: Keyed<(ArcStr, ArcStr), EdgeAcc>,
    /// MAC -> (vendor, source addresses of its frames).
    pub macs: Keyed<String, (Option<String>, BTreeSet<String>)>,
    /// MAC -> the addresses it claimed in ARP.
    pub arp: BTreeMap<String, BTreeSet<String>>,
    pub mac_vlans: BTreeMap<String, BTreeSet<String>>,
    pub vlans: BTreeMap<String, (u64, BTreeSet<String>)>,
    pub dns_servers: BTreeSet<String>,
    /// Hosts sent DNS queries on port 53, answering or not (a dead resolver is one).
    pub dns_asked: BTreeSet<String>,
    pub dhcp_servers: BTreeSet<String>,
    pub dhcp_routers: BTreeSet<String>,
    /// Address -> names it was given, with where each came from (`dns`, `mdns`,
    /// `llmnr`, `netbios`) and the first frame that said so.
    pub names: Keyed<String, Vec<Named>>,
    /// Address -> user names sent from it (`kerberos`, `ntlm`).
    pub users: Keyed<String, Vec<Named>>,
    /// Address -> names clients asked it to serve (`tls_sni`, `http_host`).
    pub served: Keyed<String, Vec<Named>>,
    /// MAC -> host names its DHCP messages carried, and addresses leased to it.
    pub dhcp_clients: Keyed<String, DhcpClient>,
    /// Text reused from packet to packet (an edge's service name): naming a service
    /// already on the edge allocates nothing.
    scratch: String,
    /// One copy of each MAC, vendor, VLAN and service name the hosts and edges list,
    /// while the pass runs.
    strings: SharedStrings,
}

/// A name and the evidence for it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Named {
    pub name: String,
    /// Where it was seen: dns, mdns, llmnr, netbios, dhcp, kerberos, ntlm, tls_sni, http_host.
    pub source: String,
    /// The first frame that showed it.
    pub frame: u64,
    /// How many frames showed it.
    pub count: u64,
}

#[derive(Debug, Clone, Default)]
pub struct DhcpClient {
    pub hostnames: Vec<Named>,
    pub leased: Vec<String>,
}

/// The most names kept per address (a resolver answering for a CDN may be given many).
const MAX_NAMES: usize = 32;

fn note(list: &mut Vec<Named>, source: &str, name: &str, frame: u64) {
    if let Some(n) = list
        .iter_mut()
        .find(|n| n.name == name && n.source == source)
    {
        n.count += 1;
        return;
    }
    if list.len() < MAX_NAMES {
        list.push(Named {
            name: name.to_string(),
            source: source.to_string(),
            frame,
            count: 1,
        });
    }
}

fn note_for(map: &mut Keyed<String, Vec<Named>>, key: &str, source: &str, name: &str, frame: u64) {
    if let Some(list) = map.slot(key) {
        note(list, source, name, frame);
    }
}

impl crate::index::Part for TopoState {
    type Row = TopoRow;
    fn new(ctx: &crate::index::Ctx) -> Self {
        Self {
            strings: ctx.strings.clone(),
            ..Self::default()
        }
    }
    fn finish(&mut self) {
        self.hosts.finish();
        self.edges.finish();
        self.macs.finish();
        self.names.finish();
        self.users.finish();
        self.served.finish();
        self.dhcp_clients.finish();
        self.strings.release();
    }
    fn add(&mut self, r: TopoRow) {
        self.span.add(r.time);
        if let Some(id) = &r.ident {
            self.identify(id, r.frame, r.src.as_deref(), r.dst.as_deref());
        }
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
                self.macs.at(m).0 = r.vendor.clone();
            }
            return;
        };
        if let Some(m) = &r.eth_src {
            let e = self.macs.at(m);
            if e.0.is_none() {
                e.0 = r.vendor.clone();
            }
            if e.1.len() < 10_000 && !e.1.contains(&src) {
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
        if let Some(hs) = self.hosts.slot_shared(&src, &mut self.strings) {
            hs.sent += r.len;
            hs.frames_sent += 1;
            hs.seen.add(r.time);
            let strings = &mut self.strings;
            if let Some(m) = &r.eth_src {
                insert_shared(&mut hs.macs, m, strings);
                if hs.vendor.is_none() {
                    hs.vendor = r.vendor.as_deref().map(|v| strings.one(v));
                }
            }
            if let Some(v) = &vlan {
                insert_shared(&mut hs.vlans, v, strings);
            }
            if let Some(s) = &service {
                bump(&mut hs.services, s, 1, strings);
            }
        }
        let unicast = is_unicast(&dst);
        if let Some(hd) = self.hosts.slot_shared(&dst, &mut self.strings) {
            hd.received += r.len;
            hd.frames_received += 1;
            if src != dst {
                hd.seen.add(r.time);
            }
        }
        let from_first = src <= dst;
        let key = if from_first {
            (&*src, &*dst)
        } else {
            (&*dst, &*src)
        };
        let Some(e) = self
            .edges
            .slot_pair(key, &mut self.strings, EdgeAcc::default)
        else {
            return;
        };
        e.bytes += r.len;
        e.frames += 1;
        if from_first {
            e.bytes_from_first += r.len;
            e.frames_from_first += 1;
        }
        e.seen.add(r.time);
        e.unicast |= unicast;
        // the server side of this packet's connection: the lower well-known port
        let port = match (r.tcp_sport, r.tcp_dport, r.udp_sport) {
            (Some(s), Some(d), _) => Some(("tcp", s.min(d))),
            (_, _, Some(s)) if r.dns_response => Some(("udp", s)),
            _ => None,
        };
        if let Some((proto, n)) = port {
            // written into reused text: every TCP packet names its edge's service
            use std::fmt::Write;
            let pt = &mut self.scratch;
            pt.clear();
            let _ = write!(pt, "{proto}/{n}");
            bump(&mut e.services, pt, r.len, &mut self.strings);
        }
    }
    fn approx_bytes(&self) -> usize {
        let named =
            |m: &Keyed<String, Vec<Named>>| m.values().map(|v| 100 + v.len() * 120).sum::<usize>();
        // per entry: key and value in a tree node (about half full) plus their strings
        named(&self.names)
            + named(&self.users)
            + named(&self.served)
            + self.dhcp_clients.len() * 300
            + self.hosts.len() * 480
            + self.edges.len() * 340
            + self
                .macs
                .values()
                .map(|m| 200 + m.1.len() * 80)
                .sum::<usize>()
            + self.arp.values().map(|v| 100 + v.len() * 80).sum::<usize>()
    }
}

impl TopoState {
    fn identify(&mut self, id: &Identity, frame: u64, src: Option<&str>, dst: Option<&str>) {
        if let Some((kind, name, addrs)) = &id.resolved {
            for a in addrs {
                note_for(&mut self.names, a, kind, name, frame);
            }
        }
        for (name, addr) in &id.nbns {
            if addr != "0.0.0.0" {
                note_for(&mut self.names, addr, "netbios", name, frame);
            }
        }
        if let Some((mac, hostname, leased)) = &id.dhcp
            && let Some(c) = self.dhcp_clients.slot(mac)
        {
            if let Some(h) = hostname {
                note(&mut c.hostnames, "dhcp", h, frame);
            }
            if let Some(ip) = leased
                && !c.leased.contains(ip)
                && c.leased.len() < MAX_NAMES
            {
                c.leased.push(ip.clone());
            }
        }
        if let (Some((kind, user)), Some(src)) = (&id.user, src) {
            note_for(&mut self.users, src, kind, user, frame);
        }
        if let (Some((kind, name)), Some(dst)) = (&id.served, dst) {
            note_for(&mut self.served, dst, kind, name, frame);
        }
    }
}

/// What the host table derives from the part: every unicast host, listed lean (its
/// address, where it sits, how many MACs are its own), and the gateways found. A
/// host's full row is written by [`Directory::row`] only for the hosts a view shows:
/// on a capture of 100k hosts the rows of all of them were ~35 MB for the length of a
/// call, to show 15. What the directory does not derive (pairs, VLANs, servers) the
/// views read from the part itself.
pub struct Directory<'a> {
    state: &'a TopoState,
    /// Unicast hosts, most bytes first.
    pub hosts: Vec<Listed<'a>>,
    pub gateways: Vec<Gateway>,
    /// Distinct peers per host, from the edges that carried unicast traffic.
    peers: BTreeMap<&'a str, usize>,
    /// The MACs that claimed each address in ARP, in MAC order: hosts that only spoke
    /// ARP are on the segment too.
    claimed: BTreeMap<&'a str, Vec<&'a str>>,
    gateway_macs: BTreeSet<&'a str>,
}

/// One host of the directory, as little as the views count and sort by.
pub struct Listed<'a> {
    pub address: &'a str,
    /// None: a host seen only in ARP.
    acc: Option<&'a HostAcc>,
    /// local (same segment as the capture), remote (behind a gateway) or unknown.
    pub location: &'static str,
    /// How many MACs are its own (not a gateway's it sits behind).
    pub own_macs: usize,
}

impl Listed<'_> {
    fn bytes(&self) -> u64 {
        self.acc.map_or(0, |h| h.sent + h.received)
    }
}

/// Pushes `v` unless the list holds it already; whether it was new.
fn push_new<'a>(list: &mut Vec<&'a str>, v: &'a str) -> bool {
    let new = !list.contains(&v);
    if new {
        list.push(v);
    }
    new
}

pub fn directory(state: &TopoState) -> Directory<'_> {
    let mut peers: BTreeMap<&str, usize> = BTreeMap::new();
    for (a, b) in state
        .edges
        .iter()
        .filter(|(_, e)| e.unicast)
        .map(|(k, _)| k)
    {
        *peers.entry(&**a).or_default() += 1;
        if a != b {
            *peers.entry(&**b).or_default() += 1;
        }
    }
    let mut claimed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (mac, ips) in &state.arp {
        for ip in ips {
            claimed.entry(ip).or_default().push(mac);
        }
    }
    // a MAC in front of source addresses from several subnets forwards for them: a
    // router (a host with aliases stays inside its own subnet)
    let forwarding: Vec<_> = state
        .macs
        .iter()
        .filter(|(mac, (_, ips))| forwards_for_others(mac, ips.iter().map(String::as_str)))
        .collect();
    let gateway_macs: BTreeSet<&str> = forwarding.iter().map(|(m, _)| m.as_str()).collect();
    let mut gateways: Vec<Gateway> = forwarding
        .into_iter()
        .map(|(mac, (vendor, ips))| Gateway {
            mac: mac.clone(),
            vendor: vendor.clone(),
            addresses: state
                .arp
                .get(mac)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
            addresses_behind: ips.len(),
            display_filter: format!("eth.addr == {mac}"),
        })
        .collect();
    gateways.sort_by_key(|g| std::cmp::Reverse(g.addresses_behind));
    let mut dir = Directory {
        state,
        hosts: Vec::new(),
        gateways,
        peers,
        claimed,
        gateway_macs,
    };
    // the host table is read, not copied: on a capture of 100k hosts a copy was most
    // of the view's memory
    let in_traffic = state.hosts.iter().map(|(a, h)| (&**a, Some(h)));
    let only_arp = dir
        .claimed
        .keys()
        .filter(|ip| state.hosts.get(**ip).is_none())
        .map(|ip| (*ip, None));
    let mut hosts: Vec<Listed<'_>> = in_traffic
        .chain(only_arp)
        .filter(|(addr, _)| is_unicast(addr))
        .map(|(address, acc)| {
            let (macs, _) = dir.macs(address, acc);
            let own_macs = dir.own_macs(&macs).count();
            Listed {
                address,
                acc,
                location: dir.location(address, &macs, own_macs),
                own_macs,
            }
        })
        .collect();
    hosts.sort_by(|x, y| y.bytes().cmp(&x.bytes()).then(x.address.cmp(y.address)));
    dir.hosts = hosts;
    dir
}

impl<'a> Directory<'a> {
    /// The MACs an address was seen from or claimed in ARP by (sorted), and the
    /// vendor of its own first, else of the first claiming MAC that has one.
    fn macs(&self, address: &'a str, acc: Option<&'a HostAcc>) -> (Vec<&'a str>, Option<&'a str>) {
        let mut macs: Vec<&str> = acc
            .into_iter()
            .flat_map(|h| h.macs.iter().map(|m| &**m))
            .collect();
        let mut vendor = acc.and_then(|h| h.vendor.as_deref());
        for &mac in self.claimed.get(address).into_iter().flatten() {
            if push_new(&mut macs, mac) && vendor.is_none() {
                vendor = self.state.macs.get(mac).and_then(|m| m.0.as_deref());
            }
        }
        macs.sort_unstable();
        (macs, vendor)
    }

    /// The VLANs an address was seen on, and those of the MACs that claimed it in
    /// ARP (sorted).
    fn vlans(&self, address: &'a str, acc: Option<&'a HostAcc>) -> Vec<&'a str> {
        let mut vlans: Vec<&str> = acc
            .into_iter()
            .flat_map(|h| h.vlans.iter().map(|v| &**v))
            .collect();
        for &mac in self.claimed.get(address).into_iter().flatten() {
            for v in self.state.mac_vlans.get(mac).into_iter().flatten() {
                push_new(&mut vlans, v);
            }
        }
        vlans.sort_unstable();
        vlans
    }

    /// The MACs that are the host's own: not those of a gateway it sits behind.
    fn own_macs<'b>(&'b self, macs: &'b [&'a str]) -> impl Iterator<Item = &'a str> + 'b {
        macs.iter()
            .copied()
            .filter(|m| !self.gateway_macs.contains(m))
    }

    /// A gateway's own address: in ARP for its MAC or announced by DHCP.
    fn is_gateway(&self, address: &str) -> bool {
        self.state.dhcp_routers.contains(address)
            || self
                .gateways
                .iter()
                .any(|g| g.addresses.iter().any(|a| a == address))
    }

    fn location(&self, address: &str, macs: &[&str], own_macs: usize) -> &'static str {
        if own_macs > 0 || self.is_gateway(address) {
            "local"
        } else if !macs.is_empty() {
            // every MAC it came from is a gateway's
            "remote"
        } else {
            "unknown"
        }
    }

    /// The MACs that are `host`'s own.
    pub fn macs_of(&self, host: &Listed<'a>) -> Vec<&'a str> {
        let (macs, _) = self.macs(host.address, host.acc);
        self.own_macs(&macs).collect()
    }

    /// The VLANs `host` was seen on, sorted.
    pub fn vlans_of(&self, host: &Listed<'a>) -> Vec<&'a str> {
        self.vlans(host.address, host.acc)
    }

    /// The host's row as the topology shows it.
    pub fn row(&self, host: &Listed<'a>) -> Host {
        let address = host.address;
        let state = self.state;
        let (macs, vendor) = self.macs(address, host.acc);
        let own_macs: Vec<String> = self.own_macs(&macs).map(str::to_string).collect();
        let mut roles = Vec::new();
        if self.is_gateway(address) {
            roles.push("gateway");
        }
        // a resolver asked but never heard answering is still the resolver (the DNS
        // view says it is dead), not a client
        if state.dns_servers.contains(address) || state.dns_asked.contains(address) {
            roles.push("dns_server");
        }
        if state.dhcp_servers.contains(address) {
            roles.push("dhcp_server");
        }
        let services: &[(ArcStr, u64)] = host.acc.map_or(&[], |h| &h.services);
        if !services.is_empty() {
            roles.push("server");
        }
        if roles.is_empty() {
            roles.push("client");
        }
        let mut services: Vec<&(ArcStr, u64)> = services.iter().collect();
        services.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        Host {
            display_filter: if address.contains(':') {
                host_filter(address, "addr")
            } else {
                format!("ip.addr == {address} || arp.src.proto_ipv4 == {address}")
            },
            vendor: if own_macs.is_empty() {
                None
            } else {
                vendor.map(str::to_string)
            },
            macs: own_macs,
            location: host.location,
            roles,
            services: services
                .into_iter()
                .map(|s| s.0.to_string())
                .take(10)
                .collect(),
            vlans: self
                .vlans(address, host.acc)
                .into_iter()
                .map(str::to_string)
                .collect(),
            bytes_sent: host.acc.map_or(0, |h| h.sent),
            bytes_received: host.acc.map_or(0, |h| h.received),
            peers: self.peers.get(address).copied().unwrap_or(0),
            address: address.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_and_routers() {
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
    }
}
