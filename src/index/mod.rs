//! The capture index: for one capture and scope (display filter, TLS key log), **one**
//! tshark pass whose rows feed every family's reducer at once, plus the taps that are
//! the cheapest or only source of a fact (expert info, credentials, RTP streams) in the
//! same process. Every analysis is then a view over the index: a whole investigation
//! costs about one pass, and two tools reporting the same metric read it from the same
//! reducer.
//!
//! A family declares a [`Part`]: the fields it needs (its row type), which rows belong
//! to it (what used to be its own `-Y` filter), and how it folds a row into state that
//! grows with flows or transactions, never with packets. The index prints the union of
//! every part's fields once and hands each part its own columns of each line.

use arcstr::ArcStr;
use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::engine::Analysis;
use crate::pcapfile::CaptureSummary;
use crate::tshark::fields::{FromRow, Row, field_args};

pub mod parallel;
pub mod taps;

pub use taps::Taps;

/// The per-host and per-pair tables of the views that show only their busiest or first
/// entries (conversations, endpoints, topology, talkers, TTLs, MACs) stop taking new
/// keys at this many: a flood of spoofed sources cannot grow them without bound, and
/// an ordinary capture (a 1 GB one has ~115k conversations) stays exact. Counts that
/// findings rest on (TCP streams, SYNs, bytes) are never capped.
pub const MAX_TRACKED: usize = 100_000;

/// The hash map of the pass's per-packet lookups (keyed tables, interners, open
/// flows). SipHash, std's default, was ~6% of the server's CPU in a profiled index
/// pass; aHash is several times faster on short keys and still keyed per map with
/// random state, so a capture crafted to collide keys cannot predict the seed.
pub type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, ahash::RandomState>;

/// A reducer's keyed table (per host, per pair, per protocol path): hashed while the
/// pass feeds it, in key order once its part has finished.
///
/// A per-packet lookup in an ordered map of 100k string keys is ~17 string compares;
/// profiled, those compares were the largest single cost of the index pass in our
/// process. Views, though, need the total order (byte-identical output, first-N
/// tables), so [`Keyed::finish`] sorts the entries once, and the views read them in
/// key order through `Deref`.
///
/// The entries live in one vector beside a table of their positions (an `IndexMap`):
/// a hash table of whole entries (a conversation's key and counters, ~150 bytes) is
/// at most seven-eighths full and, while it grows, briefly there twice; profiled on
/// the 200 MB bench mix, the conversation and host tables peaked at about twice what
/// they held. Here only 8-byte positions are rehashed, and `finish` sorts the
/// entries where they are instead of building a second, ordered copy.
///
/// There is no `DerefMut`: an `IndexMap` appends what is inserted into it, so an entry
/// added after `finish` goes through [`Keyed::or_insert_with`], which marks the table
/// for another sort (and a read before it, in debug builds, for a bug).
#[derive(Debug, Clone)]
pub struct Keyed<K, V> {
    map: indexmap::IndexMap<K, V, ahash::RandomState>,
    /// Entries were added since the last sort (reading them in order is a bug: debug
    /// builds assert it).
    unsorted: bool,
}

impl<K, V> Default for Keyed<K, V> {
    fn default() -> Self {
        Self {
            map: indexmap::IndexMap::default(),
            unsorted: false,
        }
    }
}

impl<K: Ord + std::hash::Hash + Eq, V> Keyed<K, V> {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: std::hash::Hash + indexmap::Equivalent<K> + ?Sized,
    {
        self.map.contains_key(key)
    }

    /// Whether `key` may be counted: it is there already, or there is room under
    /// [`MAX_TRACKED`].
    pub fn room<Q>(&self, key: &Q) -> bool
    where
        Q: std::hash::Hash + indexmap::Equivalent<K> + ?Sized,
    {
        self.len() < MAX_TRACKED || self.contains_key(key)
    }

    /// The entry of an owned key, made with `make` when it is new.
    pub fn or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        match self.map.entry(key) {
            indexmap::map::Entry::Occupied(e) => e.into_mut(),
            indexmap::map::Entry::Vacant(e) => {
                self.unsorted = true;
                e.insert(make())
            }
        }
    }

    pub fn or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        self.or_insert_with(key, V::default)
    }

    /// Drops the entry of `key`, if any: what a part learns while the pass runs that it
    /// will never report need not be held until the end. (The last entry takes its
    /// place; `finish` sorts them anyway.)
    pub fn remove<Q>(&mut self, key: &Q)
    where
        Q: std::hash::Hash + indexmap::Equivalent<K> + ?Sized,
    {
        if self.map.swap_remove(key).is_some() {
            self.unsorted = true;
        }
    }

    /// Keeps the entries `keep` says yes to: what a part learns at its finish that it
    /// will never report need not be sorted or held.
    pub fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool) {
        self.map.retain(keep);
    }

    /// Puts the entries in key order; the part's `finish` calls it before any view
    /// reads the table.
    pub fn finish(&mut self) {
        if self.unsorted {
            // keys are unique, so an unstable sort is still one order
            self.map.sort_unstable_keys();
            self.map.shrink_to_fit();
            self.unsorted = false;
        }
    }
}

impl<K: Ord + std::hash::Hash + Eq, V> Keyed<K, V> {
    /// The entry of `key`, looked up by a borrowed form and made only when it is new
    /// (its key by `make_key`, its value by `make`); None when it is new and the table
    /// already has [`MAX_TRACKED`] keys. A reducer's per-packet path looks up by
    /// `&str`, so a key costs one allocation per flow or host, not one per packet.
    pub fn slot_with<Q>(
        &mut self,
        key: &Q,
        make_key: impl FnOnce() -> K,
        make: impl FnOnce() -> V,
    ) -> Option<&mut V>
    where
        Q: std::hash::Hash + indexmap::Equivalent<K> + ?Sized,
    {
        match self.map.get_index_of(key) {
            Some(i) => Some(&mut self.map[i]),
            None if self.len() < MAX_TRACKED => Some(self.or_insert_with(make_key(), make)),
            None => None,
        }
    }
}

impl<V: Default> Keyed<String, V> {
    /// The entry of `key`, its key allocated only when it is new.
    pub fn at(&mut self, key: &str) -> &mut V {
        if let Some(i) = self.map.get_index_of(key) {
            return &mut self.map[i];
        }
        self.or_default(key.to_string())
    }

    /// [`Keyed::at`] for the tables capped at [`MAX_TRACKED`] keys: None when `key` is
    /// new and there is no room.
    pub fn slot(&mut self, key: &str) -> Option<&mut V> {
        self.slot_with(key, || key.to_string(), V::default)
    }
}

impl<V: Default> Keyed<ArcStr, V> {
    /// [`Keyed::slot`] for a table keyed by the pass's shared strings: a new key is
    /// the one copy of it in `strings` (an address keys the host tables of several
    /// parts; as a `String` each held its own 56 bytes).
    pub fn slot_shared(&mut self, key: &str, strings: &mut SharedStrings) -> Option<&mut V> {
        self.slot_with(key, || strings.one(key), V::default)
    }
}

/// A pair of strings to look up a table keyed by shared pairs with, without making
/// the key. Hashed field by field, as the key's tuple is.
#[derive(Hash)]
pub struct PairRef<'a>(pub &'a str, pub &'a str);

impl indexmap::Equivalent<(ArcStr, ArcStr)> for PairRef<'_> {
    fn equivalent(&self, key: &(ArcStr, ArcStr)) -> bool {
        *key.0 == *self.0 && *key.1 == *self.1
    }
}

impl<V> Keyed<(ArcStr, ArcStr), V> {
    /// [`Keyed::slot_shared`] for a table keyed by pairs (of addresses), a new entry
    /// made by `make`: its key is made of the pass's shared copies (a pair of
    /// `String`s held 112 bytes).
    pub fn slot_pair(
        &mut self,
        (a, b): (&str, &str),
        strings: &mut SharedStrings,
        make: impl FnOnce() -> V,
    ) -> Option<&mut V> {
        self.slot_with(&PairRef(a, b), || (strings.one(a), strings.one(b)), make)
    }
}

impl<K, V> std::ops::Deref for Keyed<K, V> {
    type Target = indexmap::IndexMap<K, V, ahash::RandomState>;
    fn deref(&self) -> &Self::Target {
        debug_assert!(!self.unsorted, "a table read before its part finished");
        &self.map
    }
}

impl<K, V> IntoIterator for Keyed<K, V> {
    type Item = (K, V);
    type IntoIter = indexmap::map::IntoIter<K, V>;
    fn into_iter(self) -> Self::IntoIter {
        debug_assert!(!self.unsorted, "a table read before its part finished");
        self.map.into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a Keyed<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = indexmap::map::Iter<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        std::ops::Deref::deref(self).iter()
    }
}

/// The time bucket of a packet at `t` for buckets of `width` from `t0`, as tshark's
/// io,stat places it: epoch seconds carry ~0.2 µs of float error, so a microsecond of
/// slack keeps a packet on a boundary in the bucket that starts there.
pub fn time_bucket(t: f64, t0: f64, width: f64) -> u64 {
    (((t - t0).max(0.0) + 1e-6) / width).floor() as u64
}

/// What a part may know before the pass starts.
pub struct Ctx {
    /// Our own reader's facts about the whole file.
    pub summary: Arc<CaptureSummary>,
    /// The scope's time window (see [`Window`]).
    pub window: Window,
    /// The pass's one copy of each string the parts keep.
    pub strings: SharedStrings,
}

/// Where a scope's time starts and how long it lasts, for choosing buckets: the file's
/// span, or a time range's bounds clipped to it. `start` is unknown (`None`) when only
/// a display filter narrows the capture: its first matching packet starts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub start: Option<f64>,
    pub span_s: f64,
}

impl Window {
    pub fn of(
        summary: &CaptureSummary,
        display_filtered: bool,
        time: Option<crate::timescope::TimeRange>,
    ) -> Self {
        let (Some(first), Some(last)) = (summary.first_epoch, summary.last_epoch) else {
            return Self::default();
        };
        match time {
            Some(r) => {
                let (a, b) = r.clip(first, last);
                Self {
                    start: Some(a),
                    span_s: (b - a).max(0.0),
                }
            }
            None => Self {
                start: (!display_filtered).then_some(first),
                span_s: summary.duration_s,
            },
        }
    }
}

/// One family's reducer over the shared pass.
pub trait Part: Sized + Send + Sync + 'static {
    type Row: FromRow;
    fn new(ctx: &Ctx) -> Self;
    /// Whether a row belongs to this family, judged on its own columns (the family's
    /// former tshark filter, as field presence).
    fn wants(_row: &Row<'_>) -> bool {
        true
    }
    fn add(&mut self, row: Self::Row);
    /// Called once after the last row (sorting, dropping builder state).
    fn finish(&mut self) {}
    /// An estimate of the memory it holds, for the cache's byte budget.
    fn approx_bytes(&self) -> usize;
}

/// The rows of a family whose rows are already transactions (a DNS message, an HTTP
/// request or response, a handshake message with a timing): kept as they are, so the
/// tool's own reduction can run with the caller's parameters over them.
pub trait Kept: FromRow + Send + Sync + 'static {
    fn wants(row: &Row<'_>) -> bool;
    /// Hands the row's repetitive strings to `strings`, which keeps one copy of each.
    fn share(&mut self, _strings: &mut Interner) {}
}

/// One copy of each string the kept rows of a family repeat: the addresses, hosts,
/// methods, versions and user agents of tens of thousands of HTTP messages are a few
/// hundred distinct strings. Used while the pass runs; the rows keep the copies.
#[derive(Debug, Default, Clone)]
pub struct Interner(FastSet<ArcStr>);

impl Interner {
    pub fn share(&mut self, s: &mut Option<ArcStr>) {
        if let Some(v) = s {
            self.share_one(v);
        }
    }

    /// The one copy of `s`, made on its first sight.
    pub fn one(&mut self, s: &str) -> ArcStr {
        match self.0.get(s) {
            Some(kept) => kept.clone(),
            None => {
                let v: ArcStr = ArcStr::from(s);
                self.0.insert(v.clone());
                v
            }
        }
    }

    pub fn share_one(&mut self, v: &mut ArcStr) {
        match self.0.get(&**v) {
            Some(kept) => *v = kept.clone(),
            None => {
                self.0.insert(v.clone());
            }
        }
    }
}

/// The pass's one copy of each string its parts keep, addresses above all: the TCP
/// streams, the HTTP, DNS and timing rows, the conversations, hosts and anomaly
/// streams each kept their own copy of an address, and a table to find them by while
/// the pass ran. A part takes a handle in `new` and lets go of it in `finish`, so the
/// table is freed when the pass ends; the strings live on in the parts that hold them.
#[derive(Debug, Clone, Default)]
pub struct SharedStrings(Option<Arc<std::sync::Mutex<Interner>>>);

impl SharedStrings {
    pub fn new() -> Self {
        Self(Some(Arc::default()))
    }

    /// Runs `f` with the table (a fresh one of its own for a part made outside a
    /// pass, or after it let go). The pass feeds its parts from one task, so the lock
    /// is never contended.
    pub fn with<T>(&mut self, f: impl FnOnce(&mut Interner) -> T) -> T {
        let table = self.0.get_or_insert_with(Arc::default);
        let mut guard = table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// The one copy of `s`.
    pub fn one(&mut self, s: &str) -> ArcStr {
        self.with(|t| t.one(s))
    }

    /// Lets go of the table: a part's `finish` calls it.
    pub fn release(&mut self) {
        self.0 = None;
    }
}

/// A kept row's shared string as an owned one, for a report or a record.
pub fn owned(s: &Option<ArcStr>) -> Option<String> {
    s.as_deref().map(str::to_string)
}

/// The kept rows of one family, in frame order (and the pass's strings while it
/// runs).
pub struct Rows<R>(pub Vec<R>, SharedStrings);

impl<R: Kept> Part for Rows<R> {
    type Row = R;
    fn new(ctx: &Ctx) -> Self {
        Rows(Vec::new(), ctx.strings.clone())
    }
    fn wants(row: &Row<'_>) -> bool {
        R::wants(row)
    }
    fn add(&mut self, mut row: R) {
        self.1.with(|s| row.share(s));
        self.0.push(row)
    }
    fn finish(&mut self) {
        self.0.shrink_to_fit();
        self.1.release();
    }
    fn approx_bytes(&self) -> usize {
        // rows hold a few short strings besides their inline size
        self.0.capacity() * (std::mem::size_of::<R>() + 64)
    }
}

/// A part behind a type-erased handle, as the pass drives it.
pub trait Sink: Send {
    fn name(&self) -> &'static str;
    fn fields(&self) -> &'static [&'static str];
    fn feed(&mut self, row: &Row<'_>);
    fn done(self: Box<Self>) -> (TypeId, Arc<dyn Any + Send + Sync>, usize);
}

struct PartSink<P: Part>(P);

impl<P: Part> Sink for PartSink<P> {
    fn name(&self) -> &'static str {
        std::any::type_name::<P>()
    }
    fn fields(&self) -> &'static [&'static str] {
        P::Row::FIELDS
    }
    fn feed(&mut self, row: &Row<'_>) {
        if P::wants(row)
            && let Some(r) = P::Row::from_row(row)
        {
            self.0.add(r);
        }
    }
    fn done(mut self: Box<Self>) -> (TypeId, Arc<dyn Any + Send + Sync>, usize) {
        self.0.finish();
        let bytes = self.0.approx_bytes();
        (TypeId::of::<P>(), Arc::new(self.0), bytes)
    }
}

/// How the index makes one part; the list of them is declared once, where the tools
/// that read them are (`tools::INDEX_PARTS`).
pub type PartMaker = fn(&Ctx) -> Box<dyn Sink>;

pub fn part<P: Part>(ctx: &Ctx) -> Box<dyn Sink> {
    Box::new(PartSink(P::new(ctx)))
}

/// The column of `name` in a row type's fields. Meant for `const` items, so the search
/// runs once at compile time, not per packet, and a name missing from the fields does
/// not compile.
pub const fn col(fields: &[&str], name: &str) -> usize {
    let mut i = 0;
    while i < fields.len() {
        if same(fields[i].as_bytes(), name.as_bytes()) {
            return i;
        }
        i += 1;
    }
    panic!("the field is not in the row's fields")
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether any of the columns is present in a row.
pub fn has_any(row: &Row<'_>, cols: &[usize]) -> bool {
    cols.iter().any(|&i| row.str(i).is_some())
}

/// Whether `frame.protocols` (column `i`) names protocol `p`.
pub fn has_protocol(row: &Row<'_>, i: usize, p: &str) -> bool {
    // a byte split: several parts ask this of every packet
    row.str(i).is_some_and(|s| {
        s.as_bytes()
            .split(|&c| c == b':')
            .any(|x| x == p.as_bytes())
    })
}

/// One part built by a pass of its own, for a view asked for what the index does not
/// hold (a bucket width other than the default): the same reducer, rows filtered and
/// finished as in the index.
pub async fn own_pass<P: Part>(a: &mut Analysis, mut part: P) -> Result<P, String> {
    let n = P::Row::FIELDS.len();
    a.run_lines(None, &field_args(P::Row::FIELDS), |line| {
        let row = Row::parse(line, n);
        if P::wants(&row)
            && let Some(r) = P::Row::from_row(&row)
        {
            part.add(r);
        }
    })
    .await?;
    part.finish();
    Ok(part)
}

/// The fields the pass prints, each once, and each sink's columns among them.
/// `frame.number` comes first: a row line then always starts with a digit, and the
/// tap text after the last row never does.
fn union_of(sinks: &[Box<dyn Sink>]) -> (Vec<&'static str>, Vec<Vec<usize>>) {
    let mut union: Vec<&'static str> = vec!["frame.number", "frame.time_epoch"];
    let maps = sinks
        .iter()
        .map(|s| {
            s.fields()
                .iter()
                .map(|f| match union.iter().position(|u| u == f) {
                    Some(i) => i,
                    None => {
                        union.push(f);
                        union.len() - 1
                    }
                })
                .collect()
        })
        .collect();
    for f in parallel::CHECK_FIELDS {
        if !union.contains(&f) {
            union.push(f);
        }
    }
    (union, maps)
}

/// Everything one pass learnt about one capture and scope.
pub struct CaptureIndex {
    parts: BTreeMap<TypeId, Arc<dyn Any + Send + Sync>>,
    pub taps: Taps,
    pub commands: Vec<String>,
    pub warning: Option<String>,
    bytes: usize,
}

impl CaptureIndex {
    /// One part's state; every part listed in `tools::INDEX_PARTS` is there.
    pub fn get<P: Part>(&self) -> Result<Arc<P>, String> {
        self.parts
            .get(&TypeId::of::<P>())
            .cloned()
            .and_then(|a| a.downcast::<P>().ok())
            .ok_or_else(|| {
                format!(
                    "internal error: the capture index has no {}",
                    std::any::type_name::<P>()
                )
            })
    }

    pub fn approx_bytes(&self) -> usize {
        self.bytes + self.taps.expert.len() + self.taps.credentials.len()
    }

    /// Runs the pass: split by flow across tsharks when the capture is large enough
    /// and the scope allows (see [`parallel`]), else one tshark. Lines are split once;
    /// each part gets its own columns.
    pub async fn build(a: &mut Analysis, makers: &[PartMaker]) -> Result<Self, String> {
        let summary = a.summary().await?;
        let window = Window::of(&summary, a.user_filter.is_some(), a.time.map(|t| t.0));
        let ctx = || Ctx {
            window,
            summary: summary.clone(),
            strings: SharedStrings::new(),
        };
        let workers = a.split_workers(&summary);
        if workers > 1
            && let Some(index) = parallel::build(a, Pass::new(&ctx(), makers), workers).await?
        {
            return Ok(index);
        }
        let mut pass = Pass::new(&ctx(), makers);
        let args = pass.args();
        let mut in_taps = false;
        let mut tap_text = String::new();
        a.run_lines(None, &args, |line| {
            if !in_taps && Pass::is_row(line) {
                pass.row(line);
            } else {
                in_taps = true;
                tap_text.push_str(line);
                tap_text.push('\n');
            }
        })
        .await?;
        Ok(pass.finish(Taps::split(&tap_text), a))
    }
}

/// The parts of one pass while tshark's lines feed them.
pub(crate) struct Pass {
    sinks: Vec<Box<dyn Sink>>,
    union: Vec<&'static str>,
    maps: Vec<Vec<usize>>,
}

impl Pass {
    fn new(ctx: &Ctx, makers: &[PartMaker]) -> Self {
        let sinks: Vec<Box<dyn Sink>> = makers.iter().map(|m| m(ctx)).collect();
        let (union, maps) = union_of(&sinks);
        Self { sinks, union, maps }
    }

    /// tshark's arguments for the pass: every part's fields, once, and the taps.
    fn args(&self) -> Vec<String> {
        let mut args = field_args(&self.union);
        args.extend(Taps::args());
        args
    }

    /// Whether a line is a row: rows start with `frame.number`; the tap text after the
    /// last row never starts with a digit.
    fn is_row(line: &str) -> bool {
        line.starts_with(|c: char| c.is_ascii_digit())
    }

    /// Feeds one row line to every part.
    fn row(&mut self, line: &str) {
        // tshark escapes tabs inside values (`\t`), so every column splits exactly
        // wherever a row type placed its free text
        let row = Row::parse(line, self.union.len()).with_frame_head();
        for (s, map) in self.sinks.iter_mut().zip(&self.maps) {
            s.feed(&row.project(map));
        }
    }

    fn finish(self, taps: Taps, a: &Analysis) -> CaptureIndex {
        let mut parts = BTreeMap::new();
        let mut bytes = 0;
        for s in self.sinks {
            let name = s.name();
            let (id, p, b) = s.done();
            tracing::debug!(part = name, bytes = b, "index part built");
            parts.insert(id, p);
            bytes += b;
        }
        CaptureIndex {
            parts,
            taps,
            commands: a.commands.clone(),
            warning: a.warning.clone(),
            bytes,
        }
    }
}

/// Heap bytes in use by the current thread, counted by the test build's allocator:
/// what a part really holds (per thread, so tests running beside it do not count).
#[cfg(test)]
pub mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        static IN_USE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn add(n: isize) {
        // try_with: a thread being torn down has no counter left
        let _ = IN_USE.try_with(|c| {
            c.set(c.get() + n);
            let _ = PEAK.try_with(|p| p.set(p.get().max(c.get())));
        });
    }

    /// The most heap this thread had in use since the last call (which resets it to
    /// what is in use now).
    pub fn take_peak() -> usize {
        let now = IN_USE.with(|c| c.get());
        PEAK.with(|p| p.replace(now)).max(0) as usize
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            add(l.size() as isize);
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            add(-(l.size() as isize));
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            add(n as isize - l.size() as isize);
            unsafe { System.realloc(p, l, n) }
        }
    }

    pub fn in_use() -> usize {
        IN_USE.with(|c| c.get()).max(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value for each field of a flood of one-SYN connections from distinct sources:
    /// the worst case for per-flow state.
    fn flood_value(field: &str, i: u64) -> String {
        match field {
            "frame.number" => (i + 1).to_string(),
            "frame.time_epoch" => {
                format!("{}.{:06}", 1_700_000_000 + i / 10_000, (i % 10_000) * 100)
            }
            "frame.len" | "frame.cap_len" => "54".into(),
            "frame.protocols" => "eth:ethertype:ip:tcp".into(),
            // spoofed sources behind one router
            "eth.src" => "02:00:00:00:00:01".into(),
            "eth.dst" => "02:00:00:00:00:02".into(),
            "ip.src" => format!("11.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
            "ip.dst" => "10.9.9.9".into(),
            "ip.proto" => "6".into(),
            "ip.ttl" => "64".into(),
            "ip.id" => (i & 0xffff).to_string(),
            "tcp.srcport" => (1024 + i % 60_000).to_string(),
            "tcp.dstport" => "80".into(),
            "tcp.stream" => i.to_string(),
            "tcp.flags" => "0x0002".into(),
            "tcp.flags.syn" => "1".into(),
            "tcp.flags.ack" | "tcp.flags.reset" | "tcp.flags.fin" => "0".into(),
            "tcp.len" => "0".into(),
            "tcp.window_size" | "tcp.window_size_value" => "64240".into(),
            "_ws.expert.severity" => "2097152".into(),
            "_ws.expert.message" => "Connection establish request (SYN): server port 80".into(),
            _ => String::new(),
        }
    }

    /// What each part holds per flow on a flood of distinct one-SYN connections,
    /// measured by the counting allocator: the numbers behind the memory targets.
    #[test]
    fn parts_stay_small_per_flow() {
        let n = 20_000u64;
        let mut total = 0usize;
        for make in crate::tools::INDEX_PARTS {
            let before = heap::in_use();
            // a pass of its own, so that the strings table it grows is counted and
            // freed with it
            let mut sink = make(&Ctx {
                summary: Arc::new(CaptureSummary::default()),
                window: Window::default(),
                strings: SharedStrings::new(),
            });
            let fields = sink.fields();
            let name = sink.name();
            for i in 0..n {
                let vals: Vec<String> = fields.iter().map(|f| flood_value(f, i)).collect();
                let cols: Vec<&str> = vals.iter().map(String::as_str).collect();
                sink.feed(&Row::from_cols(&cols));
            }
            let (_, part, estimate) = sink.done();
            let held = heap::in_use().saturating_sub(before);
            eprintln!(
                "{held:>10} B held, {:>5} B/flow, estimate {estimate:>10} B: {name}",
                held / n as usize
            );
            // the estimate weighs the cache: it must not be far below the truth
            assert!(
                std::env::var("PART_SIZES_ONLY").is_ok() || estimate * 2 + 4096 >= held,
                "{name}: estimate {estimate} B for {held} B held"
            );
            total += held;
            drop(part);
        }
        eprintln!("all parts: {} B/flow", total / n as usize);
    }

    /// What a big part is made of: its rows and their inline size, or the TCP
    /// model's streams and their lists.
    fn shape(part: &(dyn Any + Send + Sync)) -> Option<String> {
        fn rows<R: 'static>(part: &(dyn Any + Send + Sync)) -> Option<String> {
            let r = part.downcast_ref::<Rows<R>>()?;
            Some(format!(
                "{} rows x {} B",
                r.0.len(),
                std::mem::size_of::<R>()
            ))
        }
        use crate::model::*;
        part.downcast_ref::<tcp::TcpModel>()
            .map(tcp::TcpModel::breakdown)
            .or_else(|| rows::<http::HttpRow>(part))
            .or_else(|| rows::<dns::DnsRow>(part))
            .or_else(|| rows::<timing::TimingRow>(part))
            .or_else(|| rows::<crate::tools::quality::QRow>(part))
    }

    /// Our side of the index pass, without tshark: every part fed from recorded output
    /// (`tshark ... -T fields` with the index's fields, as `tshark_commands` lists it),
    /// or from a capture this test runs tshark on (INDEX_PCAP), with each part's CPU and
    /// the heap it really holds once finished (counted by dropping it).
    /// `INDEX_PCAP=/path cargo test --release --bin pcap-analyzer-mcp-server
    /// feed_recorded_lines -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn feed_recorded_lines() {
        // the capture's own span sizes the time buckets, as in the server
        let summary = std::env::var("INDEX_PCAP")
            .ok()
            .and_then(|p| std::fs::File::open(p).ok())
            .and_then(|f| crate::pcapfile::summarize(f, u64::MAX).ok())
            .unwrap_or_default();
        let window = Window::of(&summary, false, None);
        let summary = Arc::new(summary);
        let ctx = || Ctx {
            window,
            summary: summary.clone(),
            strings: SharedStrings::new(),
        };
        let pass = ctx();
        let mut sinks: Vec<Box<dyn Sink>> =
            crate::tools::INDEX_PARTS.iter().map(|m| m(&pass)).collect();
        drop(pass);
        let (union, maps) = union_of(&sinks);
        let text = if let Ok(path) = std::env::var("INDEX_LINES") {
            std::fs::read_to_string(path).unwrap()
        } else if let Ok(pcap) = std::env::var("INDEX_PCAP") {
            let out = std::process::Command::new("tshark")
                .args(["-n", "-r", &pcap])
                .args(field_args(&union))
                .output()
                .expect("tshark runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            return;
        };
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        let t = std::time::Instant::now();
        for line in &lines {
            let _ = Row::parse(line, union.len());
        }
        eprintln!("split {} lines: {:?}", lines.len(), t.elapsed());
        let mut per = vec![std::time::Duration::ZERO; sinks.len()];
        let base = heap::in_use();
        heap::take_peak();
        let t = std::time::Instant::now();
        for line in &lines {
            let row = Row::parse(line, union.len()).with_frame_head();
            for (i, (s, map)) in sinks.iter_mut().zip(&maps).enumerate() {
                let t1 = std::time::Instant::now();
                s.feed(&row.project(map));
                per[i] += t1.elapsed();
            }
        }
        eprintln!("all parts: {:?}", t.elapsed());
        for (s, d) in sinks.iter().zip(&per) {
            eprintln!("{d:>12?} {}", s.name());
        }
        let fed_peak = heap::take_peak();
        let mut parts = Vec::new();
        for s in sinks {
            let name = s.name();
            let (_, part, estimate) = s.done();
            parts.push((name, part, estimate));
        }
        let done_peak = heap::take_peak();
        eprintln!(
            "heap above the input: {} KB at most while fed, {} KB at most while finishing, {} KB once finished",
            fed_peak.saturating_sub(base) / 1024,
            done_peak.saturating_sub(base) / 1024,
            heap::in_use().saturating_sub(base) / 1024
        );
        let mut total = 0;
        for (name, part, estimate) in parts {
            let before = heap::in_use();
            if let Some(what) = shape(&*part) {
                eprintln!("  {what}");
            }
            drop(part);
            let held = before.saturating_sub(heap::in_use());
            total += held;
            eprintln!(
                "{:>8} KB held, estimate {:>8} KB: {name}",
                held / 1024,
                estimate / 1024
            );
        }
        eprintln!("all parts hold {} KB", total / 1024);
        if std::env::var("PART_PEAKS").is_err() {
            return;
        }
        // each part alone: what it needs while fed (hash tables and lists growing,
        // builder state) against what it keeps
        for make in crate::tools::INDEX_PARTS {
            let mut sink = make(&ctx());
            let map: Vec<usize> = sink
                .fields()
                .iter()
                .map(|f| union.iter().position(|u| u == f).expect("in the union"))
                .collect();
            let base = heap::in_use();
            heap::take_peak();
            for line in &lines {
                sink.feed(
                    &Row::parse(line, union.len())
                        .with_frame_head()
                        .project(&map),
                );
            }
            let name = sink.name();
            let fed = heap::take_peak().saturating_sub(base);
            let part = sink.done();
            let done = heap::take_peak().saturating_sub(base);
            let held = heap::in_use().saturating_sub(base);
            drop(part);
            eprintln!(
                "{:>8} KB fed peak, {:>8} KB finishing peak, {:>8} KB held: {name}",
                fed / 1024,
                done / 1024,
                held / 1024
            );
        }
    }
}
