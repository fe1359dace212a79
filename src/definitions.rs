//! Metrics several tools report, defined once (README, "Metrics"). A tool that reports
//! one of these calls the function here; the TCP definitions (loss retransmission,
//! handshake RTT, setup time) live on the TCP model's `Stream`, and TLS handshake
//! completion on the TLS model's `Session::established`.

/// A failed DNS query: no response at all, or SERVFAIL (2) or REFUSED (5). NXDOMAIN
/// (3) is an answer, "no such name", not a failure of the resolver.
pub fn dns_failed(answered: bool, rcode: Option<u64>) -> bool {
    !answered || matches!(rcode, Some(2 | 5))
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
