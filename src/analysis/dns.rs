//! DNS tunnelling hints, shared by the DNS view and the threat view; DNS questions
//! asked again (retries), shared by every view that counts DNS queries and failures.

use std::collections::{BTreeMap, BTreeSet};

use crate::report::{Evidence, Finding, Severity};

/// Signs of data smuggled out in query names, gathered query by query: long
/// high-entropy labels, many unique names under one domain, TXT volume. Shared by the
/// DNS tool and the threat tool so both call the same thing tunnelling.
#[derive(Default)]
pub struct TunnelHints {
    subdomains: BTreeMap<String, BTreeSet<String>>,
    /// A sample of names with a long high-entropy first label, with their frames.
    pub suspicious: Vec<(String, u64)>,
    pub suspicious_total: u64,
    pub txt: u64,
}

impl TunnelHints {
    pub fn add(&mut self, name: &str, qtype: Option<u64>, frame: u64) {
        self.txt += u64::from(qtype == Some(16));
        self.subdomains
            .entry(base_domain(name))
            .or_default()
            .insert(name.to_string());
        if let Some(l) = name.split('.').next()
            && l.len() >= 40
            && entropy(l) >= 3.5
        {
            self.suspicious_total += 1;
            if self.suspicious.len() < 10 {
                self.suspicious.push((name.to_string(), frame));
            }
        }
    }

    /// Domains with 50+ unique names queried under them, most first.
    pub fn busy_domains(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = self
            .subdomains
            .iter()
            .map(|(d, s)| (d.clone(), s.len()))
            .filter(|(_, n)| *n >= 50)
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    pub fn any(&self) -> bool {
        self.suspicious_total > 0 || !self.busy_domains().is_empty() || self.txt >= 50
    }

    /// Strong signs: many high-entropy names under one busy domain.
    pub fn strong(&self) -> bool {
        self.suspicious_total >= 50 && !self.busy_domains().is_empty()
    }

    pub fn finding(&self, severity: Severity) -> Option<Finding> {
        if !self.any() {
            return None;
        }
        let busy = self.busy_domains();
        Some(Finding::new(
            severity,
            "DNS tunnelling hints".to_string(),
            format!(
                "{} long high-entropy label(s){}; {} domain(s) with 50+ unique subdomains{}; {} TXT queries. Data can be smuggled out in query names.",
                self.suspicious_total,
                self.suspicious
                    .first()
                    .map(|(n, _)| format!(" (e.g. {n})"))
                    .unwrap_or_default(),
                busy.len(),
                busy.first()
                    .map(|(d, n)| format!(" (e.g. {d}: {n})"))
                    .unwrap_or_default(),
                self.txt
            ),
            Evidence {
                frames: self.suspicious.iter().map(|(_, f)| *f).collect(),
                display_filter: "dns.qry.name.len > 50 || dns.qry.type == 16".into(),
                ..Default::default()
            },
        ))
    }
}

/// Shannon entropy per character of a label.
pub fn entropy(s: &str) -> f64 {
    let mut counts: BTreeMap<char, f64> = BTreeMap::new();
    for c in s.chars() {
        *counts.entry(c).or_default() += 1.0;
    }
    let n = s.chars().count() as f64;
    counts.values().map(|c| -(c / n) * (c / n).log2()).sum()
}

/// The last two labels, as a cheap stand-in for the registered domain.
pub fn base_domain(name: &str) -> String {
    let labels: Vec<&str> = name.trim_end_matches('.').rsplit('.').take(2).collect();
    labels.into_iter().rev().collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_and_entropy() {
        assert_eq!(base_domain("a.b.example.com."), "example.com");
        assert!(entropy("x7f9q2lk4m8z0p3v5n1b6c") > 3.5);
        assert!(entropy("aaaaaaaa") < 0.1);
    }
}

/// A row type's field list with the fields that name one DNS question appended (a
/// query's client, client port, resolver, ID, name and type): the last
/// QUESTION_FIELD_COUNT columns, read by `question_key`.
#[macro_export]
macro_rules! with_question_fields {
    ($($f:literal),* $(,)?) => {
        &[
            $($f,)*
            "ip.src",
            "ipv6.src",
            "ip.dst",
            "ipv6.dst",
            "udp.srcport",
            "tcp.srcport",
            "dns.id",
            "dns.qry.name",
            "dns.qry.type",
        ]
    };
}

pub const QUESTION_FIELD_COUNT: usize = 9;

/// One DNS question as a number, from the question columns a row type's field list
/// ends with (`with_question_fields!`; hashed: rows keep eight bytes, not the name).
pub fn question_key(r: &crate::tshark::fields::Row<'_>, fields: &[&str]) -> u64 {
    use std::hash::{Hash, Hasher};
    let at = fields.len() - QUESTION_FIELD_COUNT;
    // a fixed-key hasher: the same question gives the same key in every run
    let mut h = std::hash::DefaultHasher::new();
    for i in 0..QUESTION_FIELD_COUNT {
        r.str(at + i).unwrap_or("").hash(&mut h);
    }
    h.finish()
}

/// The questions a client asks again before any answer came. tshark flags a query as
/// `dns.retransmission` only within its 5 s timer; a client that waits longer and
/// asks again (same port, ID, name and type) still asks the same question, and an
/// answer to the retry answers it. Fed queries and answers in frame order.
#[derive(Debug, Default, Clone)]
pub struct Retries {
    /// Unanswered question -> the frame that first asked it.
    open: BTreeMap<u64, u64>,
    /// Query frame -> its question, while unanswered.
    key_of: BTreeMap<u64, u64>,
    /// Retry frame -> the first query of its question.
    pub retry_of: BTreeMap<u64, u64>,
}

impl Retries {
    /// A query: the frame that first asked its question when it is a retry.
    pub fn query(&mut self, frame: u64, key: u64) -> Option<u64> {
        self.key_of.insert(frame, key);
        match self.open.get(&key) {
            Some(&first) => {
                self.retry_of.insert(frame, first);
                Some(first)
            }
            None => {
                self.open.insert(key, frame);
                None
            }
        }
    }

    /// An answer to `query_frame`: its question is closed (a later identical query is a
    /// new question). Returns the first query of the question when it answers a retry.
    pub fn answer(&mut self, query_frame: u64) -> Option<u64> {
        if let Some(k) = self.key_of.remove(&query_frame) {
            self.open.remove(&k);
        }
        self.retry_of.get(&query_frame).copied()
    }
}

#[cfg(test)]
mod retry_tests {
    use super::Retries;

    #[test]
    fn a_question_asked_again_is_one_question() {
        let mut r = Retries::default();
        assert_eq!(r.query(3, 7), None);
        // asked again 5 s later, then the retry is answered
        assert_eq!(r.query(5, 7), Some(3));
        assert_eq!(r.answer(5), Some(3));
        // the same question after its answer is a new one
        assert_eq!(r.query(9, 7), None);
        assert_eq!(r.query(10, 8), None);
        assert_eq!(r.answer(10), None);
    }
}
