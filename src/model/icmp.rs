//! ICMP errors with the flow each one quotes, and IP fragments by datagram: a part of
//! the capture index, read by the ICMP error and MTU/fragmentation tools. The one
//! naming of an ICMP error's kind is here too (`error_kind`).

use std::collections::BTreeMap;

use crate::engine::Span;
use crate::index::{Ctx, Part, col};
use crate::tshark::fields::{FromRow, Row, is_icmp_error};

/// ICMP errors kept with their detail; beyond this only counted (a scan answered by
/// unreachables can make millions).
const MAX_ERRORS: usize = 20_000;
/// Fragmented datagrams kept; beyond this only their fragments are counted.
const MAX_DATAGRAMS: usize = 50_000;

/// The kind of an ICMP or ICMPv6 error, from its type and code; None when it is not
/// an error (echo, neighbour discovery).
pub fn error_kind(
    v4_type: Option<u64>,
    v4_code: Option<u64>,
    v6_type: Option<u64>,
    v6_code: Option<u64>,
) -> Option<&'static str> {
    match (v4_type, v6_type) {
        (Some(3), _) => Some(match v4_code.unwrap_or(255) {
            0 | 6 | 11 => "network unreachable",
            1 | 7 | 12 => "host unreachable",
            2 => "protocol unreachable",
            3 => "port unreachable",
            4 => "fragmentation needed (path MTU)",
            9 | 10 | 13 => "administratively prohibited",
            _ => "destination unreachable",
        }),
        (Some(4), _) => Some("source quench"),
        (Some(5), _) => Some("redirect"),
        (Some(11), _) => Some(match v4_code {
            Some(1) => "time exceeded (fragment reassembly)",
            _ => "time exceeded (TTL)",
        }),
        (Some(12), _) => Some("parameter problem"),
        (_, Some(1)) => Some(match v6_code.unwrap_or(255) {
            0 => "no route to destination",
            1 | 5 | 6 => "administratively prohibited",
            3 => "address unreachable",
            4 => "port unreachable",
            _ => "destination unreachable",
        }),
        (_, Some(2)) => Some("packet too big (path MTU)"),
        (_, Some(3)) => Some(match v6_code {
            Some(1) => "time exceeded (fragment reassembly)",
            _ => "time exceeded (TTL)",
        }),
        (_, Some(4)) => Some("parameter problem"),
        (_, Some(137)) => Some("redirect"),
        _ => None,
    }
}

/// Whether a kind reports a path MTU smaller than the packet it quotes.
pub fn is_path_mtu(kind: &str) -> bool {
    kind.ends_with("(path MTU)")
}

#[derive(Debug, Clone)]
pub struct NetRow {
    frame: u64,
    time: Option<f64>,
    icmp: Option<IcmpError>,
    fragment: Option<Fragment>,
}

/// One ICMP error: who sent it, what it says, and the packet it quotes.
#[derive(Debug, Clone)]
pub struct IcmpError {
    pub frame: u64,
    pub time: f64,
    pub v6: bool,
    pub icmp_type: u64,
    pub code: u64,
    pub kind: &'static str,
    /// The host that sent the error (a router, or the destination itself).
    pub reporter: String,
    pub original_src: String,
    pub original_dst: String,
    /// The quoted packet's transport: 6 TCP, 17 UDP, 1/58 ICMP.
    pub original_protocol: Option<u64>,
    pub original_dport: Option<u64>,
    /// The next-hop MTU of "fragmentation needed" / "packet too big".
    pub mtu: Option<u64>,
    /// The better first hop a redirect names.
    pub gateway: Option<String>,
}

#[derive(Debug, Clone)]
struct Fragment {
    key: (String, String, u64, u64),
    offset: u64,
    more: bool,
    bytes: u64,
}

/// One fragmented datagram as the capture saw it.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub src: String,
    pub dst: String,
    pub protocol: u64,
    pub fragments: u64,
    /// Payload bytes the fragments carried.
    pub bytes: u64,
    pub first_frame: u64,
    pub last_frame: u64,
    /// The first (offset 0) and the last (no more-fragments flag) were both seen: the
    /// datagram can be whole, as far as its ends go.
    pub has_first: bool,
    pub has_last: bool,
}

impl NetRow {
    const ICMP4: usize = col(Self::FIELDS, "icmp.type");
    const ICMP6: usize = col(Self::FIELDS, "icmpv6.type");
    const MF: usize = col(Self::FIELDS, "ip.flags.mf");
    const OFFSET: usize = col(Self::FIELDS, "ip.frag_offset");
    const V6FRAG: usize = col(Self::FIELDS, "ipv6.fraghdr.ident");
}

impl FromRow for NetRow {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.time_epoch",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "icmp.type",
        "icmp.code",
        "icmpv6.type",
        "icmpv6.code",
        "icmp.mtu",
        "icmpv6.mtu",
        "ip.proto",
        "ipv6.nxt",
        "tcp.srcport",
        "tcp.dstport",
        "udp.srcport",
        "udp.dstport",
        "ip.flags.mf",
        "ip.frag_offset",
        "ip.id",
        "ipv6.fraghdr.offset",
        "ipv6.fraghdr.more",
        "ipv6.fraghdr.ident",
        "ip.len",
        "ipv6.plen",
        "icmp.redir_gw",
        "ipv6.fraghdr.nxt",
    ];

    fn from_row(r: &Row<'_>) -> Option<Self> {
        let frame = r.u64(0)?;
        let time = r.f64(1);
        let (t4, c4, t6, c6) = (r.u64(6), r.u64(7), r.u64(8), r.u64(9));
        let icmp = error_kind(t4, c4, t6, c6).map(|kind| {
            let v6 = t4.is_none();
            // the outer header is the error's own; the last occurrence is the quote's
            let outer = |v4: usize, v6i: usize| {
                r.first(if v6 { v6i } else { v4 }).unwrap_or("").to_string()
            };
            let quoted_proto = if v6 {
                r.all(13).last().and_then(|s| s.parse().ok())
            } else {
                r.all(12).last().and_then(|s| s.parse().ok())
            };
            let port = |tcp: usize, udp: usize| match quoted_proto {
                Some(6) => r.all(tcp).last().and_then(|s| s.parse().ok()),
                Some(17) => r.all(udp).last().and_then(|s| s.parse().ok()),
                _ => None,
            };
            IcmpError {
                frame,
                time: time.unwrap_or(0.0),
                v6,
                icmp_type: t4.or(t6).unwrap_or(0),
                code: c4.or(c6).unwrap_or(0),
                kind,
                reporter: outer(2, 3),
                original_src: r.innermost_addr(2, 3),
                original_dst: r.innermost_addr(4, 5),
                original_protocol: quoted_proto,
                original_dport: port(15, 17),
                mtu: r.u64(10).or_else(|| r.u64(11)),
                gateway: r.owned(26),
            }
        });
        // a fragment: the frame's own (outer) header says so
        let v4_offset = r.u64(19).unwrap_or(0);
        let fragment = if icmp.is_none() && (r.flag(18) || v4_offset > 0) {
            Some(Fragment {
                key: (
                    r.first(2)?.to_string(),
                    r.first(4)?.to_string(),
                    r.u64(12).unwrap_or(0),
                    r.u64(20).unwrap_or(0),
                ),
                offset: v4_offset,
                more: r.flag(18),
                // the header is at least 20 bytes; options make the payload smaller
                bytes: r.u64(24).unwrap_or(20).saturating_sub(20),
            })
        } else if icmp.is_none() && r.str(23).is_some() {
            Some(Fragment {
                key: (
                    r.first(3)?.to_string(),
                    r.first(5)?.to_string(),
                    r.u64(27).unwrap_or(0),
                    r.u64(23).unwrap_or(0),
                ),
                offset: r.u64(21).unwrap_or(0),
                more: r.flag(22),
                // the payload length counts the 8-byte fragment header
                bytes: r.u64(25).unwrap_or(8).saturating_sub(8),
            })
        } else {
            None
        };
        Some(Self {
            frame,
            time,
            icmp,
            fragment,
        })
    }
}

/// ICMP errors and fragments of one scope.
#[derive(Debug, Default)]
pub struct NetErrors {
    pub errors: Vec<IcmpError>,
    /// Every ICMP error, kept or not.
    pub errors_total: u64,
    pub datagrams: Vec<Datagram>,
    pub fragment_packets: u64,
    /// Fragments of datagrams past the kept ones.
    pub fragments_not_kept: u64,
    pub span: Span,
    by_key: BTreeMap<(String, String, u64, u64), usize>,
}

impl Part for NetErrors {
    type Row = NetRow;
    fn new(_: &Ctx) -> Self {
        Self::default()
    }
    fn wants(r: &Row<'_>) -> bool {
        is_icmp_error(r.u64(NetRow::ICMP4), r.u64(NetRow::ICMP6))
            || r.flag(NetRow::MF)
            || r.u64(NetRow::OFFSET).is_some_and(|o| o > 0)
            || r.str(NetRow::V6FRAG).is_some()
    }
    fn add(&mut self, row: NetRow) {
        self.span.add(row.time);
        if let Some(e) = row.icmp {
            self.errors_total += 1;
            if self.errors.len() < MAX_ERRORS {
                self.errors.push(e);
            }
        }
        if let Some(f) = row.fragment {
            self.fragment_packets += 1;
            let i = match self.by_key.get(&f.key) {
                Some(&i) => i,
                None if self.datagrams.len() < MAX_DATAGRAMS => {
                    self.datagrams.push(Datagram {
                        src: f.key.0.clone(),
                        dst: f.key.1.clone(),
                        protocol: f.key.2,
                        fragments: 0,
                        bytes: 0,
                        first_frame: row.frame,
                        last_frame: row.frame,
                        has_first: false,
                        has_last: false,
                    });
                    self.by_key.insert(f.key, self.datagrams.len() - 1);
                    self.datagrams.len() - 1
                }
                None => {
                    self.fragments_not_kept += 1;
                    return;
                }
            };
            let d = &mut self.datagrams[i];
            d.fragments += 1;
            d.bytes += f.bytes;
            d.last_frame = row.frame;
            d.has_first |= f.offset == 0;
            d.has_last |= !f.more;
        }
    }
    fn finish(&mut self) {
        self.by_key = BTreeMap::new();
        self.errors.shrink_to_fit();
        self.datagrams.shrink_to_fit();
    }
    fn approx_bytes(&self) -> usize {
        self.errors.capacity() * (std::mem::size_of::<IcmpError>() + 80)
            + self.datagrams.capacity() * (std::mem::size_of::<Datagram>() + 40)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_both_families() {
        assert_eq!(
            error_kind(Some(3), Some(3), None, None),
            Some("port unreachable")
        );
        assert_eq!(
            error_kind(None, None, Some(1), Some(4)),
            Some("port unreachable")
        );
        assert_eq!(
            error_kind(Some(3), Some(4), None, None),
            Some("fragmentation needed (path MTU)")
        );
        assert!(is_path_mtu(
            error_kind(None, None, Some(2), Some(0)).unwrap()
        ));
        assert_eq!(
            error_kind(Some(11), Some(1), None, None),
            Some("time exceeded (fragment reassembly)")
        );
        // echo and neighbour discovery are not errors
        assert_eq!(error_kind(Some(8), Some(0), None, None), None);
        assert_eq!(error_kind(None, None, Some(135), Some(0)), None);
    }
}
