//! Connections as Zeek's conn.log defines them, for the flows that are not TCP (UDP,
//! ICMP, any other IP protocol): a part of the capture index. TCP connections are the
//! TCP model's streams; `crate::analysis::flowlog` joins both into conn.log rows.
//!
//! Semantics follow Zeek's so the rows can be compared with (and loaded beside) a Zeek
//! sensor's:
//! - a flow is the packets of one address/port pair (ICMP: type and its answer's type,
//!   or the code of a one-way message) until it has been idle for a minute (Zeek's
//!   `udp_inactivity_timeout`, `icmp_inactivity_timeout`); the next packet opens a new
//!   connection;
//! - the originator is the first sender, except that a UDP flow whose first packet
//!   comes *from* a well-known service port to a port that is not one is turned round
//!   (history then starts with `^`), as Zeek's `likely_server_ports` does;
//! - bytes are transport payload (UDP: after the 8-byte header; ICMP: after the 8-byte
//!   ICMP header; other protocols: the IP payload), ip_bytes the IP packets' lengths;
//! - fragments that do not complete a datagram are not packets of a flow (Zeek
//!   reassembles first; tshark dissects the datagram in its last fragment).

use crate::index::FastMap;
use std::net::IpAddr;

use crate::index::{Ctx, Part, col};
use crate::model::tcp::PerDir;
use crate::tshark::fields::{FromRow, Row};

/// Zeek's idle timeout for UDP, ICMP and other IP flows, seconds.
pub const INACTIVITY_S: f64 = 60.0;

/// Flows kept; past this, packets of new flows are only counted (a flood of spoofed
/// sources cannot grow the index without bound).
pub const MAX_FLOWS: usize = 500_000;

/// The service Zeek would log for a connection whose packets tshark dissected as
/// `protocols` (`frame.protocols`, e.g. `eth:ethertype:ip:udp:dns`): the first
/// application protocol above the transport that Zeek has an analyzer for, by Zeek's
/// name for it. None when tshark found none of them (raw data, or a protocol Zeek does
/// not analyse by default).
pub fn zeek_service(protocols: &str) -> Option<&'static str> {
    let mut layers = protocols.split(':');
    // skip to the transport; the service is above it
    layers
        .by_ref()
        .find(|l| matches!(*l, "tcp" | "udp" | "sctp"))?;
    layers.find_map(|l| {
        Some(match l {
            "dns" | "mdns" | "llmnr" | "nbns" => "dns",
            "http" => "http",
            "tls" | "ssl" => "ssl",
            "dtls" => "dtls",
            "quic" => "quic,ssl",
            "ssh" => "ssh",
            "ftp" => "ftp",
            "ftp-data" => "ftp-data",
            "smtp" => "smtp",
            "pop" => "pop3",
            "imap" => "imap",
            "irc" => "irc",
            "dhcp" | "bootp" => "dhcp",
            "ntp" => "ntp",
            "snmp" => "snmp",
            "sip" => "sip",
            "syslog" => "syslog",
            "radius" => "radius",
            "kerberos" => "krb",
            "mysql" => "mysql",
            "pgsql" => "postgresql",
            "rdp" => "rdp",
            "smb" | "smb2" => "smb",
            "dcerpc" => "dce_rpc",
            "socks" => "socks",
            "modbus" | "mbtcp" => "modbus",
            "dnp3" => "dnp3",
            "vnc" => "rfb",
            "xmpp" => "xmpp",
            "ldap" => "ldap",
            "tftp" => "tftp",
            "mqtt" => "mqtt",
            "gtp" | "gtpv2" => "gtpv1",
            "vxlan" => "vxlan",
            "geneve" => "geneve",
            "teredo" => "teredo",
            "ayiya" => "ayiya",
            _ => return None,
        })
    })
}

/// Ports Zeek's analyzers register for UDP, so a flow seen first from one of them is
/// a server's answer (its `likely_server_ports`).
fn likely_udp_server_port(p: u16) -> bool {
    matches!(
        p,
        53 | 67
            | 68
            | 69
            | 88
            | 123
            | 137
            | 161
            | 162
            | 443
            | 514
            | 1812
            | 1813
            | 2152
            | 3478
            | 3544
            | 4789
            | 5060
            | 5353
            | 5355
            | 6081
    )
}

pub struct FlowRow {
    frame: u64,
    time: f64,
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    /// Transport payload and IP packet bytes.
    payload: u64,
    ip_len: u64,
    service: Option<&'static str>,
}

impl FlowRow {
    const ICMP4: usize = col(Self::FIELDS, "icmp.type");
    const ICMP6: usize = col(Self::FIELDS, "icmpv6.type");
    const UDP: usize = col(Self::FIELDS, "udp.srcport");
    const TCP: usize = col(Self::FIELDS, "tcp.srcport");
    const IP4: usize = col(Self::FIELDS, "ip.src");
    const IP6: usize = col(Self::FIELDS, "ipv6.src");
}

impl FromRow for FlowRow {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.time_epoch",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "ip.proto",
        "ipv6.nxt",
        "udp.srcport",
        "udp.dstport",
        "udp.length",
        "icmp.type",
        "icmp.code",
        "icmpv6.type",
        "icmpv6.code",
        "ip.len",
        "ipv6.plen",
        "ip.hdr_len",
        "frame.protocols",
        "tcp.srcport",
        "ip.flags.mf",
        "ip.frag_offset",
        "ipv6.fraghdr.more",
    ];

    fn from_row(r: &Row<'_>) -> Option<Self> {
        let (t4, c4, t6, c6) = (r.u64(11), r.u64(12), r.u64(13), r.u64(14));
        let icmp_error = crate::model::icmp::error_kind(t4, c4, t6, c6).is_some();
        // an ICMP error's own header is the first; tunnels put the flow's innermost
        let pick = |i: usize| r.conversation_addr(i, icmp_error);
        let v4 = pick(2).is_some();
        let src: IpAddr = pick(2).or_else(|| pick(3))?.parse().ok()?;
        let dst: IpAddr = pick(4).or_else(|| pick(5))?.parse().ok()?;
        let num = |s: Option<&str>| s.and_then(|v| v.parse::<u64>().ok());
        let ip_len = r.ip_packet_len(15, 16, icmp_error).unwrap_or(0);
        let ip_payload = if v4 {
            ip_len.saturating_sub(num(pick(17)).unwrap_or(20))
        } else {
            ip_len.saturating_sub(40)
        };
        let (proto, sport, dport, payload) = if let Some(t) = t4.or(t6) {
            let proto = if t4.is_some() { 1 } else { 58 };
            let code = c4.or(c6).unwrap_or(0) as u16;
            let t = t as u16;
            let answer = crate::model::flow::icmp_counterpart(proto, t).unwrap_or(code);
            (proto, t, answer, ip_payload.saturating_sub(8))
        } else if r.str(Self::UDP).is_some() {
            let last = |i: usize| num(r.all(i).last());
            (
                17,
                last(8)? as u16,
                last(9)? as u16,
                last(10).unwrap_or(8).saturating_sub(8),
            )
        } else {
            let proto = num(pick(if v4 { 6 } else { 7 }))? as u8;
            // a fragment of a datagram tshark has not finished: not a packet yet
            let fragment = r.flag(20) || r.u64(21).unwrap_or(0) > 0 || r.flag(22);
            if fragment || matches!(proto, 1 | 6 | 17 | 58) {
                return None;
            }
            (proto, 0, 0, ip_payload)
        };
        Some(Self {
            frame: r.u64(0)?,
            time: r.f64(1).unwrap_or(0.0),
            proto,
            src,
            dst,
            sport,
            dport,
            payload,
            ip_len,
            // ICMP's payload is a quote or an echo, never a service
            service: if payload > 0 && !matches!(proto, 1 | 58) {
                r.str(18).and_then(zeek_service)
            } else {
                None
            },
        })
    }
}

/// One connection that is not TCP, oriented (index 0 = originator).
#[derive(Debug, Clone)]
pub struct Flow {
    /// IP protocol: 17 UDP, 1 ICMP, 58 ICMPv6, or another.
    pub proto: u8,
    pub addr: [IpAddr; 2],
    /// UDP ports; for ICMP the originator's type and its answer's type (or the code).
    pub port: [u16; 2],
    pub first: f64,
    pub last: f64,
    pub first_frame: u64,
    pub packets: PerDir,
    pub bytes: PerDir,
    pub ip_bytes: PerDir,
    pub service: Option<&'static str>,
    /// The first packet came from the side Zeek takes for the responder.
    pub flipped: bool,
}

impl Flow {
    /// Zeek's conn_state: UDP by which sides sent anything; every other protocol OTH.
    pub fn conn_state(&self) -> &'static str {
        if self.proto != 17 {
            return "OTH";
        }
        match (self.packets[0] > 0, self.packets[1] > 0) {
            (true, true) => "SF",
            (true, false) => "S0",
            (false, true) => "SHR",
            (false, false) => "OTH",
        }
    }

    /// The flow's Community ID; ICMP types stand in for ports, other protocols have none.
    pub fn community_id(&self) -> Option<String> {
        let ported = matches!(self.proto, 1 | 17 | 58);
        crate::model::flow::community_id(
            &self.addr[0].to_string(),
            &self.addr[1].to_string(),
            self.proto,
            ported.then_some(self.port[0]),
            ported.then_some(self.port[1]),
        )
    }

    /// Zeek's history of a UDP flow: `D`/`d` for the sides that sent, `^` first when
    /// turned round. Other protocols have none.
    pub fn history(&self) -> Option<String> {
        if self.proto != 17 {
            return None;
        }
        let mut h = String::new();
        if self.flipped {
            h.push('^');
        }
        // the first sender's letter first, as Zeek records them in order
        let order: [usize; 2] = if self.flipped { [1, 0] } else { [0, 1] };
        for d in order {
            if self.packets[d] > 0 {
                h.push(if d == 0 { 'D' } else { 'd' });
            }
        }
        Some(h)
    }
}

/// A flow's key whichever way a packet goes: protocol, then the lower address/port
/// side, then the other.
pub type FlowKey = (u8, IpAddr, u16, IpAddr, u16);

pub fn flow_key(proto: u8, a: IpAddr, ap: u16, b: IpAddr, bp: u16) -> FlowKey {
    if (a, ap) <= (b, bp) {
        (proto, a, ap, b, bp)
    } else {
        (proto, b, bp, a, ap)
    }
}

fn key(r: &FlowRow) -> FlowKey {
    flow_key(r.proto, r.src, r.sport, r.dst, r.dport)
}

/// The non-TCP connections of one scope, in order of their first packet.
#[derive(Debug, Default)]
pub struct Flows {
    pub flows: Vec<Flow>,
    /// Packets of flows past [`MAX_FLOWS`], not kept.
    pub packets_not_kept: u64,
    open: FastMap<FlowKey, usize>,
}

impl Part for Flows {
    type Row = FlowRow;

    fn new(_: &Ctx) -> Self {
        Self::default()
    }

    /// IP packets that are not TCP segments (an ICMP error quoting one is ICMP).
    fn wants(r: &Row<'_>) -> bool {
        use crate::index::has_any;
        has_any(r, &[FlowRow::IP4, FlowRow::IP6])
            && (has_any(r, &[FlowRow::ICMP4, FlowRow::ICMP6, FlowRow::UDP])
                || r.str(FlowRow::TCP).is_none())
    }

    fn add(&mut self, r: FlowRow) {
        let k = key(&r);
        let live = self
            .open
            .get(&k)
            .copied()
            .filter(|&i| r.time - self.flows[i].last <= INACTIVITY_S);
        let i = match live {
            Some(i) => i,
            None if self.flows.len() >= MAX_FLOWS => {
                self.packets_not_kept += 1;
                return;
            }
            None => {
                let flip = r.proto == 17
                    && likely_udp_server_port(r.sport)
                    && !likely_udp_server_port(r.dport);
                let (a, b) = ((r.src, r.sport), (r.dst, r.dport));
                let (o, p) = if flip { (b, a) } else { (a, b) };
                self.flows.push(Flow {
                    proto: r.proto,
                    addr: [o.0, p.0],
                    port: [o.1, p.1],
                    first: r.time,
                    last: r.time,
                    first_frame: r.frame,
                    packets: [0; 2],
                    bytes: [0; 2],
                    ip_bytes: [0; 2],
                    service: None,
                    flipped: flip,
                });
                self.open.insert(k, self.flows.len() - 1);
                self.flows.len() - 1
            }
        };
        let f = &mut self.flows[i];
        let d = usize::from(!(f.addr[0] == r.src && f.port[0] == r.sport));
        f.first = f.first.min(r.time);
        f.last = f.last.max(r.time);
        f.packets[d] += 1;
        f.bytes[d] += r.payload;
        f.ip_bytes[d] += r.ip_len;
        if f.service.is_none() {
            f.service = r.service;
        }
    }

    fn finish(&mut self) {
        self.open = FastMap::default();
        self.flows.shrink_to_fit();
    }

    fn approx_bytes(&self) -> usize {
        self.flows.capacity() * std::mem::size_of::<Flow>()
    }
}

/// An FTP data channel announced on a control connection (PORT/EPRT by the client,
/// a PASV/EPSV reply by the server): the endpoint the data connection will be made
/// to. Zeek names such a connection's service `ftp-data` from its FTP analyzer;
/// tshark does not always follow an active-mode channel, so the flow records do.
pub struct FtpDataChannel {
    pub frame: u64,
    /// The announced address (EPSV announces only a port: the control connection's
    /// server then) and port.
    pub addr: String,
    pub port: u16,
}

impl crate::index::Kept for FtpDataChannel {
    fn wants(r: &Row<'_>) -> bool {
        crate::index::has_any(r, &[2, 4, 6, 8])
    }
}

impl FromRow for FtpDataChannel {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.time_epoch",
        "ftp.active.port",
        "ftp.active.cip",
        "ftp.passive.port",
        "ftp.passive.ip",
        "ftp.eprt.port",
        "ftp.eprt.ip",
        "ftp.epsv.port",
        "ip.src",
        "ipv6.src",
        "ftp.eprt.ipv6",
        "ftp.epsv.ip",
        "ftp.epsv.ipv6",
    ];

    fn from_row(r: &Row<'_>) -> Option<Self> {
        let (port, addr) = if let Some(p) = r.u64(2) {
            (p, r.owned(3))
        } else if let Some(p) = r.u64(4) {
            (p, r.owned(5))
        } else if let Some(p) = r.u64(6) {
            (p, r.owned(7).or_else(|| r.owned(11)))
        } else {
            (r.u64(8)?, r.owned(12).or_else(|| r.owned(13)))
        };
        Some(Self {
            frame: r.u64(0)?,
            // without an address in the message, the sender's own (EPSV: the server)
            addr: addr.unwrap_or_else(|| r.innermost_addr(9, 10)),
            port: u16::try_from(port).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_by_zeek_name() {
        assert_eq!(zeek_service("eth:ethertype:ip:udp:dns"), Some("dns"));
        assert_eq!(zeek_service("eth:ethertype:ipv6:udp:llmnr"), Some("dns"));
        assert_eq!(zeek_service("eth:ethertype:ip:tcp:tls"), Some("ssl"));
        assert_eq!(
            zeek_service("eth:ethertype:ip:tcp:http:data-text-lines"),
            Some("http")
        );
        assert_eq!(zeek_service("eth:ethertype:ip:icmp:data"), None);
        assert_eq!(zeek_service("eth:ethertype:ip:udp:bvlc:bacnet"), None);
        assert_eq!(zeek_service("eth:ethertype:arp"), None);
    }

    #[test]
    fn udp_history_and_state() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut f = Flow {
            proto: 17,
            addr: [a, b],
            port: [5000, 53],
            first: 0.0,
            last: 0.0,
            first_frame: 1,
            packets: [1, 1],
            bytes: [30, 60],
            ip_bytes: [58, 88],
            service: Some("dns"),
            flipped: false,
        };
        assert_eq!((f.conn_state(), f.history().unwrap()), ("SF", "Dd".into()));
        f.packets = [0, 2];
        f.flipped = true;
        assert_eq!((f.conn_state(), f.history().unwrap()), ("SHR", "^d".into()));
    }
}
