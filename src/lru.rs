//! A small least-recently-used map for caches keyed by file identity and arguments.
use std::collections::VecDeque;

/// A small map that forgets its oldest entries; results are cheap to recompute
/// compared with the memory a long session would otherwise keep. Bounded by a count
/// and, for entries whose size is known (`weigh`), by their bytes.
pub struct Lru<V> {
    cap: usize,
    max_bytes: usize,
    items: VecDeque<(String, V, usize)>,
}

impl<V: Clone> Lru<V> {
    pub fn new(cap: usize) -> Self {
        Self::with_bytes(cap, usize::MAX)
    }

    pub fn with_bytes(cap: usize, max_bytes: usize) -> Self {
        Self {
            cap,
            max_bytes,
            items: VecDeque::new(),
        }
    }

    pub fn get(&mut self, key: &str) -> Option<V> {
        let pos = self.items.iter().position(|(k, _, _)| k == key)?;
        let item = self.items.remove(pos)?;
        let v = item.1.clone();
        self.items.push_front(item);
        Some(v)
    }

    pub fn put(&mut self, key: String, v: V) {
        self.items.retain(|(k, _, _)| *k != key);
        self.items.push_front((key, v, 0));
        self.items.truncate(self.cap);
    }

    /// Records the size of `key`'s value and drops the least recently used others
    /// until the total fits the byte budget (the weighed entry itself always stays).
    pub fn weigh(&mut self, key: &str, bytes: usize) {
        if let Some(item) = self.items.iter_mut().find(|(k, _, _)| k == key) {
            item.2 = bytes;
        }
        let mut total: usize = self.items.iter().map(|i| i.2).sum();
        while total > self.max_bytes {
            let Some(pos) = self.items.iter().rposition(|(k, _, b)| k != key && *b > 0) else {
                break;
            };
            if let Some(item) = self.items.remove(pos) {
                total -= item.2;
            }
        }
    }

    /// Drops the least recently used weighed entries (never `keep`) until `bytes` more
    /// fit the budget: room for a value about to be built. Returns whether any went.
    pub fn make_room(&mut self, keep: &str, bytes: usize) -> bool {
        let mut total: usize = self.items.iter().map(|i| i.2).sum();
        let mut dropped = false;
        while total.saturating_add(bytes) > self.max_bytes {
            let Some(pos) = self.items.iter().rposition(|(k, _, b)| k != keep && *b > 0) else {
                break;
            };
            if let Some(item) = self.items.remove(pos) {
                total -= item.2;
                dropped = true;
            }
        }
        dropped
    }

    /// The largest weight among entries whose key starts with `prefix`.
    pub fn largest_with_prefix(&self, prefix: &str) -> usize {
        self.items
            .iter()
            .filter(|(k, _, _)| k.starts_with(prefix))
            .map(|i| i.2)
            .max()
            .unwrap_or(0)
    }

    /// Bytes of the weighed entries held now.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.items.iter().map(|i| i.2).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_budget_evicts_least_recent() {
        let mut l = Lru::with_bytes(10, 100);
        for k in ["a", "b", "c"] {
            l.put(k.into(), k.to_string());
            l.weigh(k, 40);
        }
        // a (oldest) went to make room for c
        assert!(l.get("a").is_none());
        assert_eq!(l.get("b").as_deref(), Some("b"));
        assert_eq!(l.bytes(), 80);
        // one entry larger than the budget stays alone
        l.put("big".into(), "big".into());
        l.weigh("big", 500);
        assert_eq!(l.get("big").as_deref(), Some("big"));
        assert!(l.get("b").is_none() && l.get("c").is_none());
    }
}
