//! Splitting a capture by flow, for the parallel index pass (see `index::parallel`).
//!
//! Every record goes to one of N partitions chosen by a symmetric hash of its IP
//! address pair, so both directions of a flow, every fragment of a datagram, and the
//! ICMP errors that quote a flow's packets (hashed by the quoted pair) are dissected by
//! the same tshark, which then sees each flow exactly as a pass over the whole file
//! would. Frames without an IP pair we can read (ARP, link-layer protocols, link types
//! we do not parse) all go to partition 0: ARP's duplicate-address detection, for one,
//! compares frames of different MAC pairs.
//!
//! Each partition is a valid capture of the file's own format: a pcap's header, or
//! every section header, interface description, name resolution and decryption
//! secrets block of a pcapng (interface ids stay valid), with the packets of that
//! partition in file order. Statistics blocks go to partition 0 only. The caller
//! learns each record's partition (`on_frame`) before its bytes are written, so a
//! line tshark prints about a partition's k-th frame can always be mapped back to the
//! original frame number.
//!
//! The splitter expects a capture our reader walked without damage (the index only
//! splits those); on a structure it cannot follow it stops with an error.

use std::collections::HashSet;
use std::io::{self, BufReader, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

/// The partition (of `n`) of a packet on link type `linktype`.
pub fn partition_of(linktype: u32, data: &[u8], n: usize, routing: &Routing) -> usize {
    if n <= 1 {
        return 0;
    }
    match network_layer(linktype, data).and_then(|ip| address_pair(ip, true)) {
        Some((a, b)) => {
            let pair = pair_hash(a, b);
            if routing.keeps(a, b, pair) {
                0
            } else {
                (pair % n as u64) as usize
            }
        }
        None => 0,
    }
}

/// The IP packet of a frame, for the link types captures commonly have.
fn network_layer(linktype: u32, data: &[u8]) -> Option<&[u8]> {
    let by_ethertype = |mut ethertype: u16, mut off: usize| {
        // 802.1Q, 802.1ad and the older QinQ tag: skip each tag to the inner type
        while matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
            ethertype = u16::from_be_bytes([*data.get(off + 2)?, *data.get(off + 3)?]);
            off += 4;
        }
        matches!(ethertype, 0x0800 | 0x86dd).then(|| data.get(off..))?
    };
    let ethertype_at = |i: usize| Some(u16::from_be_bytes([*data.get(i)?, *data.get(i + 1)?]));
    match linktype {
        // Ethernet: the type after two MACs
        1 => by_ethertype(ethertype_at(12)?, 14),
        // Linux cooked v1 (16-byte header) and v2 (20 bytes, the type first)
        113 => by_ethertype(ethertype_at(14)?, 16),
        276 => by_ethertype(ethertype_at(0)?, 20),
        // raw IP
        12 | 14 | 101 | 228 | 229 => Some(data),
        // BSD loopback: a 4-byte address family in either byte order
        0 | 108 => data.get(4..),
        _ => None,
    }
}

/// The two addresses a packet is placed by: its own, or for an ICMP error (that is not
/// a fragment) those of the packet it quotes, which is where tshark places it too.
fn address_pair(ip: &[u8], look_inside: bool) -> Option<(&[u8], &[u8])> {
    match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let pair = (ip.get(12..16)?, ip.get(16..20)?);
            let flags_offset = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
            let fragment = flags_offset & 0x3fff != 0;
            if look_inside
                && !fragment
                && ip.get(9) == Some(&1)
                && matches!(ip.get(ihl), Some(3 | 4 | 5 | 11 | 12))
                && let Some(quoted) = ip.get(ihl + 8..).and_then(|q| address_pair(q, false))
            {
                return Some(quoted);
            }
            Some(pair)
        }
        6 => {
            let pair = (ip.get(8..24)?, ip.get(24..40)?);
            if look_inside
                && let Some(icmp) = icmpv6_payload(ip)
                && icmp.first().is_some_and(|&t| t < 128)
                && let Some(quoted) = icmp.get(8..).and_then(|q| address_pair(q, false))
            {
                return Some(quoted);
            }
            Some(pair)
        }
        _ => None,
    }
}

/// The ICMPv6 message of an IPv6 packet, past its extension headers; None when there
/// is none or the packet is a fragment (only its first fragment would show it).
fn icmpv6_payload(ip: &[u8]) -> Option<&[u8]> {
    let mut next = *ip.get(6)?;
    let mut off = 40;
    loop {
        match next {
            58 => return ip.get(off..),
            // hop-by-hop, routing, destination options: (length + 1) * 8 bytes
            0 | 43 | 60 => {
                next = *ip.get(off)?;
                off += (usize::from(*ip.get(off + 1)?) + 1) * 8;
            }
            _ => return None,
        }
    }
}

/// FNV-1a over the pair in a fixed order (the same value for both directions), mixed
/// by MurmurHash3's finaliser: FNV's low bits are little more than the parity of the
/// bytes' low bits, and the partition is the hash modulo a small N.
fn pair_hash(a: &[u8], b: &[u8]) -> u64 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in lo.iter().chain(&[0xff]).chain(hi) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Which address pairs stay in partition 0 whatever their hash: those that carry
/// call signalling (SIP, MGCP, RTSP, H.225, Skinny), every pair of an address the
/// signalling announces media on, and the capture's first frame's pair.
///
/// tshark decodes RTP only where signalling it has seen set it up (SDP's `c=` address,
/// RTSP's transport), and a call's signalling and media travel between different
/// address pairs whenever a proxy or gateway is in the path: together in one partition,
/// each partition's tshark decodes exactly what one pass would. The first frame's pair
/// is there so partition 0 starts where the capture does: the RTP streams tap prints
/// times relative to the first frame its tshark read.
///
/// Pairs and addresses are kept as hashes: two that collide only send one more pair to
/// partition 0, which is as correct as any other partition, so no key is stored.
#[derive(Debug, Default, Clone)]
pub struct Routing {
    pairs: HashSet<u64>,
    addresses: HashSet<u64>,
}

impl Routing {
    fn keeps(&self, a: &[u8], b: &[u8], pair: u64) -> bool {
        self.pairs.contains(&pair)
            || (!self.addresses.is_empty()
                && (self.addresses.contains(&address_hash(a))
                    || self.addresses.contains(&address_hash(b))))
    }

    /// Whether media announced on `address` (as tshark prints it) was planned for:
    /// the split pass checks every SDP address tshark decodes against the plan.
    pub fn announced(&self, address: &str) -> bool {
        match address.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => self.addresses.contains(&address_hash(&a.octets())),
            Ok(std::net::IpAddr::V6(a)) => self.addresses.contains(&address_hash(&a.octets())),
            // a host name or garbage: tshark sets up no media on it either
            Err(_) => true,
        }
    }
}

fn address_hash(a: &[u8]) -> u64 {
    pair_hash(a, &[])
}

/// Ports of the signalling that sets up media: SIP, MGCP (gateway and agent), H.248
/// (text and binary), RTSP, H.225 call signalling, Skinny.
const SIGNALLING_PORTS: [u16; 8] = [5060, 2427, 2727, 2944, 2945, 554, 1720, 2000];

/// Reads the capture once (our reader, no dissection) for the pairs [`Routing`] keeps
/// together: the plan the split follows.
pub fn plan(input: impl Read, limit: u64) -> io::Result<Routing> {
    let mut routing = Routing::default();
    let mut first = true;
    let read = AtomicU64::new(0);
    walk(input, limit, &read, &mut |block| {
        let Block::Frame {
            packet: Some((linktype, data)),
            ..
        } = block
        else {
            return Ok(());
        };
        let Some(ip) = network_layer(linktype, data) else {
            return Ok(());
        };
        let Some((a, b)) = address_pair(ip, true) else {
            return Ok(());
        };
        if std::mem::take(&mut first) {
            routing.pairs.insert(pair_hash(a, b));
        }
        let Some((sport, dport, payload)) = transport(ip) else {
            return Ok(());
        };
        if SIGNALLING_PORTS.contains(&sport) || SIGNALLING_PORTS.contains(&dport) {
            routing.pairs.insert(pair_hash(a, b));
            for address in sdp_addresses(payload) {
                routing.addresses.insert(address_hash(&address));
            }
        }
        Ok(())
    })?;
    Ok(routing)
}

/// The ports and payload of a TCP or UDP packet that is not a later fragment.
fn transport(ip: &[u8]) -> Option<(u16, u16, &[u8])> {
    let (proto, l4) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let offset = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff;
            if offset != 0 {
                return None;
            }
            (*ip.get(9)?, ip.get(ihl..)?)
        }
        6 => {
            let mut next = *ip.get(6)?;
            let mut off = 40;
            loop {
                match next {
                    0 | 43 | 60 => {
                        next = *ip.get(off)?;
                        off += (usize::from(*ip.get(off + 1)?) + 1) * 8;
                    }
                    // a fragment header: only the first fragment holds the ports
                    44 => {
                        let offset =
                            u16::from_be_bytes([*ip.get(off + 2)?, *ip.get(off + 3)?]) >> 3;
                        if offset != 0 {
                            return None;
                        }
                        next = *ip.get(off)?;
                        off += 8;
                    }
                    _ => break,
                }
            }
            (next, ip.get(off..)?)
        }
        _ => return None,
    };
    let port = |i: usize| Some(u16::from_be_bytes([*l4.get(i)?, *l4.get(i + 1)?]));
    let (sport, dport) = (port(0)?, port(2)?);
    let payload = match proto {
        17 => l4.get(8..)?,
        6 => l4.get(usize::from(*l4.get(12)? >> 4) * 4..)?,
        _ => return None,
    };
    Some((sport, dport, payload))
}

/// The addresses of the SDP connection lines (`c=IN IP4 a.b.c.d`) in a payload, as
/// address bytes.
fn sdp_addresses(payload: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = payload;
    while let Some(i) = memchr::memmem::find(rest, b"c=IN IP") {
        rest = &rest[i + 7..];
        let Some(text) = rest.get(2..) else { break };
        let end = text
            .iter()
            .position(|c| matches!(c, b'\r' | b'\n' | b'/' | b' '))
            .unwrap_or(text.len());
        if let Some(a) = std::str::from_utf8(&text[..end])
            .ok()
            .and_then(|t| t.parse::<std::net::IpAddr>().ok())
        {
            out.push(match a {
                std::net::IpAddr::V4(a) => a.octets().to_vec(),
                std::net::IpAddr::V6(a) => a.octets().to_vec(),
            });
        }
    }
    out
}

/// Splits the capture read from `input` (at most `limit` bytes) into `outs` as
/// `routing` plans, calling `on_frame(partition)` for each frame tshark will number, in
/// file order, before its bytes are written. `read` counts the bytes taken from the
/// input, for progress.
pub fn split<W: Write>(
    input: impl Read,
    limit: u64,
    outs: &mut [W],
    routing: &Routing,
    mut on_frame: impl FnMut(usize),
    read: &AtomicU64,
) -> io::Result<()> {
    let n = outs.len();
    walk(input, limit, read, &mut |block| match block {
        Block::Shared(parts) => {
            for o in outs.iter_mut() {
                for b in parts {
                    o.write_all(b)?;
                }
            }
            Ok(())
        }
        Block::First(b) => outs[0].write_all(b),
        Block::Frame { packet, raw } => {
            let p = packet.map_or(0, |(linktype, data)| {
                partition_of(linktype, data, n, routing)
            });
            on_frame(p);
            for b in raw {
                outs[p].write_all(b)?;
            }
            Ok(())
        }
    })
}

/// One unit of a capture as the splitter copies it.
enum Block<'a> {
    /// The file header, section headers, interfaces, name resolution, secrets: what
    /// every partition needs to read its packets.
    Shared(&'a [&'a [u8]]),
    /// Interface statistics: one copy, in partition 0.
    First(&'a [u8]),
    /// A record tshark numbers as a frame, in pieces to copy as they are; its link type
    /// and bytes when it is a packet.
    Frame {
        packet: Option<(u32, &'a [u8])>,
        raw: &'a [&'a [u8]],
    },
}

/// Hands `visit` every block of the capture read from `input`, in file order.
fn walk(
    input: impl Read,
    limit: u64,
    read: &AtomicU64,
    visit: &mut impl FnMut(Block<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let mut r = Counted {
        inner: BufReader::with_capacity(1 << 20, input.take(limit)),
        read,
    };
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        walk_pcapng(&mut r, visit)
    } else {
        walk_pcap(&mut r, magic, visit)
    }
}

struct Counted<'a, R> {
    inner: R,
    read: &'a AtomicU64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn damaged(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads a record header, or None at a clean end of the input.
fn header<const N: usize>(r: &mut impl Read) -> io::Result<Option<[u8; N]>> {
    let mut h = [0u8; N];
    match crate::pcapfile::read_full(r, &mut h)? {
        0 => Ok(None),
        n if n == N => Ok(Some(h)),
        _ => Err(damaged("the capture ends inside a record header")),
    }
}

fn walk_pcap(
    r: &mut impl Read,
    magic: [u8; 4],
    visit: &mut impl FnMut(Block<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let u32_of = crate::pcapfile::pcap_u32(magic);
    let mut rest = [0u8; 20];
    r.read_exact(&mut rest)?;
    let linktype = u32_of(&rest[16..20]) & 0xffff;
    visit(Block::Shared(&[&magic, &rest]))?;
    let mut data = Vec::new();
    while let Some(hdr) = header::<16>(r)? {
        let caplen = u32_of(&hdr[8..12]) as usize;
        data.resize(caplen, 0);
        r.read_exact(&mut data)?;
        visit(Block::Frame {
            packet: Some((linktype, &data)),
            raw: &[&hdr, &data],
        })?;
    }
    Ok(())
}

fn walk_pcapng(
    r: &mut impl Read,
    visit: &mut impl FnMut(Block<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let mut little = true;
    // the link type of each interface of the current section
    let mut linktypes: Vec<u32> = Vec::new();
    let mut block = Vec::new();
    let mut first = Some([0x0a, 0x0d, 0x0d, 0x0a]);
    loop {
        let head: [u8; 8] = match first.take() {
            Some(m) => {
                let mut h = [m[0], m[1], m[2], m[3], 0, 0, 0, 0];
                r.read_exact(&mut h[4..])?;
                h
            }
            None => match header::<8>(r)? {
                Some(h) => h,
                None => return Ok(()),
            },
        };
        let is_shb = head[..4] == [0x0a, 0x0d, 0x0d, 0x0a];
        let mut bom = [0u8; 4];
        if is_shb {
            r.read_exact(&mut bom)?;
            little = match u32::from_le_bytes(bom) {
                0x1a2b_3c4d => true,
                0x4d3c_2b1a => false,
                _ => return Err(damaged("a section header has no valid byte-order magic")),
            };
            linktypes.clear();
        }
        let u32_at = |b: &[u8], o: usize| {
            let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
            if little {
                u32::from_le_bytes(a)
            } else {
                u32::from_be_bytes(a)
            }
        };
        let u16_at = |b: &[u8], o: usize| {
            let a = [b[o], b[o + 1]];
            if little {
                u16::from_le_bytes(a)
            } else {
                u16::from_be_bytes(a)
            }
        };
        let block_type = u32_at(&head, 0);
        let len = u32_at(&head, 4) as usize;
        let consumed = if is_shb { 12 } else { 8 };
        if len < consumed + 4 || !len.is_multiple_of(4) || len > 128 * 1024 * 1024 {
            return Err(damaged(format!(
                "a pcapng block has an impossible length ({len})"
            )));
        }
        // the whole block, header included, as it is copied
        block.clear();
        block.extend_from_slice(&head);
        if is_shb {
            block.extend_from_slice(&bom);
        }
        let start = block.len();
        block.resize(len, 0);
        r.read_exact(&mut block[start..])?;
        let body = &block[8..len - 4];
        match block_type {
            1 => {
                if body.len() < 8 {
                    return Err(damaged("an interface description block is too short"));
                }
                linktypes.push(u32::from(u16_at(body, 0)));
                visit(Block::Shared(&[&block]))?;
            }
            // interface statistics: the capturing side's counters, read by our own
            // reader, not by the index; one copy is enough
            5 => visit(Block::First(&block))?,
            t if crate::pcapfile::is_frame_block(t) => {
                // (interface, offset of the data, captured length) of packet blocks
                let packet = match t {
                    6 if body.len() >= 20 => {
                        Some((u32_at(body, 0) as usize, 20, u32_at(body, 12) as usize))
                    }
                    2 if body.len() >= 20 => {
                        Some((usize::from(u16_at(body, 0)), 20, u32_at(body, 12) as usize))
                    }
                    3 if body.len() >= 4 => {
                        Some((0, 4, (u32_at(body, 0) as usize).min(body.len() - 4)))
                    }
                    _ => None,
                };
                let packet = match packet {
                    Some((iface, off, caplen)) => {
                        let linktype = *linktypes.get(iface).ok_or_else(|| {
                            damaged("a packet names an interface no block declared")
                        })?;
                        let data = body
                            .get(off..off + caplen)
                            .ok_or_else(|| damaged("a packet is longer than its block"))?;
                        Some((linktype, data))
                    }
                    None => None,
                };
                visit(Block::Frame {
                    packet,
                    raw: &[&block],
                })?;
            }
            // section headers, name resolution, decryption secrets, and whatever else
            // sets up how later packets read: every partition needs them
            _ => visit(Block::Shared(&[&block]))?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    fn ether(ethertype: u16, vlan: Option<u16>, ip: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        if let Some(id) = vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    #[test]
    fn both_directions_and_quoting_errors_land_together() {
        let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let n = 7;
        let fwd = ether(0x0800, None, &ipv4(a, b, 17, &[0; 8]));
        let back = ether(0x0800, Some(5), &ipv4(b, a, 17, &[0; 8]));
        let p = partition_of(1, &fwd, n, &Routing::default());
        assert_eq!(partition_of(1, &back, n, &Routing::default()), p);
        // a router's port unreachable about a -> b, sent from elsewhere
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&ipv4(a, b, 17, &[0; 8]));
        let mut moved = 0;
        for last in 0..=255u8 {
            let err = ether(0x0800, None, &ipv4([192, 168, 9, last], a, 1, &icmp));
            assert_eq!(partition_of(1, &err, n, &Routing::default()), p);
            // an echo request of the same router is placed by its own pair
            let echo = ipv4([192, 168, 9, last], a, 1, &[8, 0, 0, 0, 0, 0, 0, 0]);
            moved += usize::from(partition_of(101, &echo, n, &Routing::default()) != p);
        }
        assert!(moved > 0, "echo requests are placed by their own pair");
        // ARP and unknown link types: partition 0
        assert_eq!(
            partition_of(1, &ether(0x0806, None, &[0; 28]), n, &Routing::default()),
            0
        );
        assert_eq!(partition_of(105, &fwd, n, &Routing::default()), 0);
    }

    #[test]
    fn ipv6_errors_are_placed_by_the_quoted_pair() {
        let v6 = |src: u8, dst: u8, next: u8, payload: &[u8]| {
            let mut p = vec![0x60, 0, 0, 0, 0, 0, next, 64];
            p.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, src]);
            p.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, dst]);
            p.extend_from_slice(payload);
            p
        };
        let flow = v6(1, 2, 6, &[0; 20]);
        let p = partition_of(229, &flow, 5, &Routing::default());
        let mut err = vec![1, 4, 0, 0, 0, 0, 0, 0];
        err.extend_from_slice(&flow);
        for router in 3..60 {
            // behind a hop-by-hop options header
            let mut hop = vec![58, 0, 0, 0, 0, 0, 0, 0];
            hop.extend_from_slice(&err);
            assert_eq!(
                partition_of(229, &v6(router, 1, 0, &hop), 5, &Routing::default()),
                p
            );
            assert_eq!(
                partition_of(
                    1,
                    &ether(0x86dd, Some(9), &v6(router, 1, 58, &err)),
                    5,
                    &Routing::default()
                ),
                p
            );
        }
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = sport.to_be_bytes().to_vec();
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    /// Hosts of one subnet talking to one server spread evenly over two partitions.
    #[test]
    fn pairs_spread_evenly() {
        let server = [10, 0, 0, 1];
        let mut counts = [0usize; 2];
        for h in 0..=255u8 {
            for g in 0..4u8 {
                let f = ether(0x0800, None, &ipv4([10, 1, g, h], server, 6, &[0; 20]));
                counts[partition_of(1, &f, 2, &Routing::default())] += 1;
            }
        }
        assert!(counts.iter().all(|&c| c > 450), "{counts:?}");
    }

    /// A call through a proxy: its signalling (phone <-> proxy) and its media (phone <->
    /// gateway, announced in the SDP) are planned into partition 0, beside the first
    /// frame's pair; other traffic is hashed.
    #[test]
    fn calls_are_planned_with_their_media() {
        let (phone, proxy, gateway) = ([10, 0, 0, 5], [10, 0, 0, 1], [10, 7, 7, 7]);
        let first = ether(
            0x0800,
            None,
            &ipv4([192, 0, 2, 1], [192, 0, 2, 2], 17, &udp(1, 2, &[])),
        );
        let invite = b"INVITE sip:gw SIP/2.0\r\nContent-Type: application/sdp\r\n\r\nv=0\r\nc=IN IP4 10.7.7.7\r\nm=audio 4000 RTP/AVP 0\r\n";
        let sip = ether(
            0x0800,
            Some(3),
            &ipv4(phone, proxy, 17, &udp(5060, 5060, invite)),
        );
        let mut pcap = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        pcap.extend_from_slice(&65535u32.to_le_bytes());
        pcap.extend_from_slice(&1u32.to_le_bytes());
        for f in [&first, &sip] {
            pcap.extend_from_slice(&[0; 8]);
            pcap.extend_from_slice(&(f.len() as u32).to_le_bytes());
            pcap.extend_from_slice(&(f.len() as u32).to_le_bytes());
            pcap.extend_from_slice(f);
        }
        let routing = plan(&pcap[..], u64::MAX).unwrap();
        assert!(routing.announced("10.7.7.7") && !routing.announced("10.0.0.5"));
        assert!(routing.announced("$"), "not an address: nothing to route");
        let n = 8;
        assert_eq!(partition_of(1, &first, n, &routing), 0);
        assert_eq!(partition_of(1, &sip, n, &routing), 0);
        let media = ether(
            0x0800,
            None,
            &ipv4(gateway, phone, 17, &udp(4000, 4000, &[0x80; 12])),
        );
        assert_eq!(partition_of(1, &media, n, &routing), 0);
        // without the plan, some of these pairs hash elsewhere
        let moved = (0..=255u8)
            .map(|h| {
                ether(
                    0x0800,
                    None,
                    &ipv4(gateway, [10, 9, 0, h], 17, &udp(1, 2, &[])),
                )
            })
            .filter(|f| partition_of(1, f, n, &Routing::default()) != 0)
            .count();
        assert!(moved > 0);
        // every pair of an announced address stays in partition 0
        for h in 0..=255u8 {
            let f = ether(
                0x0800,
                None,
                &ipv4(gateway, [10, 9, 0, h], 17, &udp(1, 2, &[])),
            );
            assert_eq!(partition_of(1, &f, n, &routing), 0);
        }
    }

    /// Every frame of a fixture lands in exactly one partition, each partition reads
    /// as a capture of its own, and interfaces keep their ids.
    #[test]
    fn partitions_are_captures_holding_every_frame_once() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        for name in [
            "zeek-pcapng-multi-interface.pcapng",
            "zeek-ipv6-fragmented-dns.pcap",
            "cs-icmp_traceroute.pcapng",
        ] {
            let path = dir.join(name);
            let whole =
                crate::pcapfile::summarize(std::fs::File::open(&path).unwrap(), u64::MAX).unwrap();
            let mut outs = vec![Vec::new(), Vec::new(), Vec::new()];
            let mut counts = [0u64; 3];
            let read = AtomicU64::new(0);
            split(
                std::fs::File::open(&path).unwrap(),
                u64::MAX,
                &mut outs,
                &Routing::default(),
                |p| counts[p] += 1,
                &read,
            )
            .unwrap();
            assert_eq!(
                read.load(Ordering::Relaxed),
                std::fs::metadata(&path).unwrap().len()
            );
            assert_eq!(counts.iter().sum::<u64>(), whole.packets, "{name}");
            for (i, out) in outs.iter().enumerate() {
                let tmp = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(tmp.path(), out).unwrap();
                let s =
                    crate::pcapfile::summarize(std::fs::File::open(tmp.path()).unwrap(), u64::MAX)
                        .unwrap();
                assert_eq!(s.packets, counts[i], "{name} partition {i}");
                assert!(s.damaged.is_none(), "{name} partition {i}: {:?}", s.damaged);
            }
        }
    }
}
