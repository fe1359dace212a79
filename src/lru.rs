//! A small least-recently-used map for caches keyed by file identity and arguments.
use std::collections::VecDeque;

/// A small map that forgets its oldest entries; results are cheap to recompute
/// compared with the memory a long session would otherwise keep.
pub struct Lru<V> {
    cap: usize,
    items: VecDeque<(String, V)>,
}

impl<V: Clone> Lru<V> {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            items: VecDeque::new(),
        }
    }
    pub fn get(&mut self, key: &str) -> Option<V> {
        let pos = self.items.iter().position(|(k, _)| k == key)?;
        let item = self.items.remove(pos)?;
        let v = item.1.clone();
        self.items.push_front(item);
        Some(v)
    }
    pub fn put(&mut self, key: String, v: V) {
        self.items.retain(|(k, _)| *k != key);
        self.items.push_front((key, v));
        self.items.truncate(self.cap);
    }
}
