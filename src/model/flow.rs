//! The Community ID of a flow (version 1, seed 0): the identifier Zeek, Suricata and
//! Arkime print for the same connection, so a finding here joins their logs.
//!
//! SHA-1 over seed, the two addresses and ports in a canonical order (lower address
//! first, then lower port), the protocol and a padding byte; ICMP types stand in for
//! ports, paired with their answer's type when one exists, so a request and its reply
//! share an ID. Spec: github.com/corelight/community-id-spec.

use std::net::IpAddr;

use base64::Engine as _;
use sha1::{Digest, Sha1};

const ICMP: u8 = 1;
const ICMP6: u8 = 58;

/// The type a request/answer pair's other half has, for ICMP and ICMPv6.
pub fn icmp_counterpart(proto: u8, t: u16) -> Option<u16> {
    match (proto, t) {
        (ICMP, 8) => Some(0),
        (ICMP, 0) => Some(8),
        (ICMP, 13) => Some(14),
        (ICMP, 14) => Some(13),
        (ICMP, 15) => Some(16),
        (ICMP, 16) => Some(15),
        (ICMP, 10) => Some(9),
        (ICMP, 17) => Some(18),
        (ICMP, 18) => Some(17),
        (ICMP6, 128) => Some(129),
        (ICMP6, 129) => Some(128),
        (ICMP6, 133) => Some(134),
        (ICMP6, 134) => Some(133),
        (ICMP6, 135) => Some(136),
        (ICMP6, 136) => Some(135),
        (ICMP6, 130) => Some(131),
        (ICMP6, 131) => Some(130),
        (ICMP6, 139) => Some(140),
        (ICMP6, 140) => Some(139),
        (ICMP6, 144) => Some(145),
        (ICMP6, 145) => Some(144),
        _ => None,
    }
}

fn octets(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// The Community ID of a flow seen as `src:sport -> dst:dport` over IP protocol
/// `proto` (for ICMP, sport is the type and dport the code). Ports are None for
/// protocols without them. None when an address does not parse or the two are of
/// different families.
pub fn community_id(
    src: &str,
    dst: &str,
    proto: u8,
    sport: Option<u16>,
    dport: Option<u16>,
) -> Option<String> {
    let (s, d): (IpAddr, IpAddr) = (src.parse().ok()?, dst.parse().ok()?);
    if s.is_ipv4() != d.is_ipv4() {
        return None;
    }
    let (s, d) = (octets(&s), octets(&d));
    let less = |a: &[u8], b: &[u8], pa: u16, pb: u16| a < b || (a == b && pa < pb);
    let (a, b, ports) = match (sport, dport) {
        (Some(sp), Some(dp)) if proto == ICMP || proto == ICMP6 => {
            match icmp_counterpart(proto, sp) {
                // one-way messages (errors, most others) keep their direction
                None => (s, d, Some((sp, dp))),
                Some(answer) if less(&s, &d, sp, answer) => (s, d, Some((sp, answer))),
                Some(answer) => (d, s, Some((answer, sp))),
            }
        }
        (Some(sp), Some(dp)) if less(&s, &d, sp, dp) => (s, d, Some((sp, dp))),
        (Some(sp), Some(dp)) => (d, s, Some((dp, sp))),
        _ if less(&s, &d, 0, 0) => (s, d, None),
        _ => (d, s, None),
    };
    let mut h = Sha1::new();
    h.update(0u16.to_be_bytes());
    h.update(&a);
    h.update(&b);
    h.update([proto, 0]);
    if let Some((p1, p2)) = ports {
        h.update(p1.to_be_bytes());
        h.update(p2.to_be_bytes());
    }
    Some(format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode(h.finalize())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vector the specification publishes (fixtures/community-id-baseline.json).
    #[test]
    fn the_specifications_test_vectors() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/community-id-baseline.json"
        ))
        .unwrap();
        let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert!(vectors.len() > 20);
        for v in vectors {
            let port = |k: &str| v[k].as_u64().map(|p| p as u16);
            let got = community_id(
                v["saddr"].as_str().unwrap(),
                v["daddr"].as_str().unwrap(),
                v["proto"].as_u64().unwrap() as u8,
                port("sport"),
                port("dport"),
            );
            assert_eq!(got.as_deref(), v["communityid"].as_str(), "{v}");
        }
    }
}
