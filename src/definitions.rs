//! Metrics several tools report, defined once (README, "Metrics"). A tool that reports
//! one of these calls the function here; the TCP definitions (loss retransmission,
//! handshake RTT, setup time) live on the TCP model's `Stream`, and TLS handshake
//! completion on the TLS model's `Session::established`.

/// A failed DNS query: no response at all, or SERVFAIL (2) or REFUSED (5). NXDOMAIN
/// (3) is an answer, "no such name", not a failure of the resolver.
pub fn dns_failed(answered: bool, rcode: Option<u64>) -> bool {
    !answered || matches!(rcode, Some(2 | 5))
}

/// A DNS query counts once: a retransmission (tshark's `dns.retransmit_request_in`) is
/// its original sent again, not another query.
pub fn dns_query_counts(retransmission: bool) -> bool {
    !retransmission
}

/// Whether one query packet is a DNS failure: an original query never answered, or any
/// query (original or retransmission) answered SERVFAIL or REFUSED. The failure rate is
/// these over the queries that count.
pub fn dns_query_failed(retransmission: bool, answered: bool, rcode: Option<u64>) -> bool {
    dns_failed(answered, rcode) && (answered || !retransmission)
}

/// Average throughput: frame bytes (as on the wire, headers included) times eight over
/// the span they were captured in. A span of 0 (one packet, or all at one instant) has
/// no rate: 0, not the bytes over some window width.
pub fn average_bits_per_s(frame_bytes: u64, span_s: f64) -> f64 {
    if span_s > 0.0 {
        frame_bytes as f64 * 8.0 / span_s
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nxdomain_is_an_answer() {
        assert!(!super::dns_failed(true, Some(3)));
        assert!(!super::dns_failed(true, Some(0)));
        assert!(super::dns_failed(true, Some(2)) && super::dns_failed(true, Some(5)));
        assert!(super::dns_failed(false, None));
    }
}
