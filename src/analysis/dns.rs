//! DNS tunnelling hints, shared by the DNS view and the threat view.

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
