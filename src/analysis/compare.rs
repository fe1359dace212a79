//! Comparing two captures: the same metrics read from each (every family reports its
//! own, as its tool computes them), the changes that matter, and — when both files
//! saw the same TCP flows, one on each side of a path — the packets one side saw and
//! the other never did, and the delay between the two capture points.

use std::collections::{BTreeMap, HashMap};

use schemars::JsonSchema;
use serde::Serialize;

use crate::model::tcp::TcpModel;
use crate::report::percentile;
use crate::tshark::fields::{FromRow, Row};

/// Which way a metric gets worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
    /// A volume (frames of a protocol, connections): a change is news, not harm.
    Neither,
}

/// One number a family reports about one capture.
#[derive(Debug, Clone)]
pub struct Metric {
    pub family: &'static str,
    pub name: String,
    pub value: f64,
    /// pct, ms, count, bits/s, frames, score.
    pub unit: &'static str,
    pub better: Better,
}

impl Metric {
    pub fn new(
        family: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        better: Better,
    ) -> Self {
        Self {
            family,
            name: name.into(),
            value,
            unit,
            better,
        }
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MetricChange {
    pub family: String,
    pub metric: String,
    pub unit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<f64>,
    /// b - a.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<f64>,
    /// worse, better, changed (a volume), same, appeared (only in b), gone (only in a).
    pub verdict: String,
}

/// Whether the step from `a` to `b` is more than noise for a metric of this unit: a
/// rate moving a percentage point and a quarter of itself, a time 5 ms and a quarter,
/// a count 3 and a half.
fn significant(unit: &str, a: f64, b: f64) -> bool {
    let d = (b - a).abs();
    let rel = d / a.abs().max(b.abs()).max(f64::EPSILON);
    match unit {
        "pct" => d >= 1.0 && rel >= 0.25,
        "ms" => d >= 5.0 && rel >= 0.25,
        "score" => d >= 5.0,
        "bits/s" => rel >= 0.25,
        _ => d >= 3.0 && rel >= 0.5,
    }
}

/// Every metric of either side, paired by family and name; changes that matter first
/// (worse, then better, then volumes), then the rest.
pub fn diff(a: &[Metric], b: &[Metric]) -> Vec<MetricChange> {
    let key = |m: &Metric| (m.family, m.name.clone());
    type Sides<'m> = (Option<&'m Metric>, Option<&'m Metric>);
    let mut pairs: BTreeMap<(&'static str, String), Sides> = BTreeMap::new();
    for m in a {
        pairs.entry(key(m)).or_default().0 = Some(m);
    }
    for m in b {
        pairs.entry(key(m)).or_default().1 = Some(m);
    }
    let mut out: Vec<(u8, f64, MetricChange)> = pairs
        .into_iter()
        .map(|((family, metric), (x, y))| {
            let any = x.or(y).expect("a pair holds one side at least");
            let (verdict, rank) = match (x, y) {
                (Some(x), Some(y)) if significant(any.unit, x.value, y.value) => {
                    match (any.better, y.value > x.value) {
                        (Better::Neither, _) => ("changed", 2),
                        (Better::Lower, true) | (Better::Higher, false) => ("worse", 0),
                        _ => ("better", 1),
                    }
                }
                (Some(_), Some(_)) => ("same", 4),
                // a count that is 0 on one side is the same as absent
                (Some(x), None) if x.value == 0.0 => ("same", 4),
                (None, Some(y)) if y.value == 0.0 => ("same", 4),
                (Some(_), None) => ("gone", 3),
                (None, Some(_)) => ("appeared", 3),
                (None, None) => ("same", 4),
            };
            let weight = match (x, y) {
                (Some(x), Some(y)) => {
                    (y.value - x.value).abs() / x.value.abs().max(y.value.abs()).max(1e-9)
                }
                _ => 1.0,
            };
            (
                rank,
                -weight,
                MetricChange {
                    family: family.to_string(),
                    metric,
                    unit: any.unit.to_string(),
                    a: x.map(|m| round(m.value)),
                    b: y.map(|m| round(m.value)),
                    change: x.zip(y).map(|(x, y)| round(y.value - x.value)),
                    verdict: verdict.to_string(),
                },
            )
        })
        .collect();
    out.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)));
    out.into_iter().map(|(_, _, c)| c).collect()
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The TCP family's own numbers for a comparison: connections and their throughput.
/// Throughput is payload (goodput) both ways over the connection's life, for
/// connections that carried at least 10 data segments (a short exchange measures its
/// round trips, not the path's capacity).
pub fn tcp_metrics(m: &TcpModel) -> Vec<Metric> {
    let mut rates: Vec<f64> = m
        .streams
        .iter()
        .filter(|s| s.data_segment_count() >= 10 && s.duration() > 0.0)
        .map(|s| (s.payload[0] + s.payload[1]) as f64 * 8.0 / s.duration())
        .collect();
    rates.sort_by(f64::total_cmp);
    let mut out = vec![
        Metric::new(
            "tcp",
            "connections",
            m.streams.len() as f64,
            "count",
            Better::Neither,
        ),
        Metric::new(
            "tcp",
            "resets",
            m.streams.iter().filter(|s| s.rst[0] || s.rst[1]).count() as f64,
            "count",
            Better::Lower,
        ),
        Metric::new(
            "tcp",
            "zero_window_advertisements",
            m.total(|s| s.zero_window[0] + s.zero_window[1]) as f64,
            "count",
            Better::Lower,
        ),
    ];
    if let Some(p) = percentile(&rates, 50.0) {
        out.push(Metric::new(
            "tcp",
            "goodput_median_per_connection",
            p,
            "bits/s",
            Better::Higher,
        ));
    }
    if let Some(p) = percentile(&rates, 90.0) {
        out.push(Metric::new(
            "tcp",
            "goodput_p90_per_connection",
            p,
            "bits/s",
            Better::Higher,
        ));
    }
    out
}

/// One TCP packet as the alignment reads it.
pub struct SegRow {
    pub frame: u64,
    pub time: f64,
    pub src: String,
    pub dst: String,
    pub sport: u64,
    pub dport: u64,
    /// IPv4 identification; 0 for IPv6 (no ID outside fragments).
    pub ip_id: u64,
    pub seq: u64,
    pub ack: u64,
    pub len: u64,
    pub flags: u64,
    pub ttl: u64,
}

impl FromRow for SegRow {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.time_epoch",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "tcp.srcport",
        "tcp.dstport",
        "ip.id",
        "tcp.seq_raw",
        "tcp.ack_raw",
        "tcp.len",
        "tcp.flags",
        "ip.ttl",
        "ipv6.hlim",
    ];
    fn from_row(r: &Row<'_>) -> Option<Self> {
        // the innermost header: the flow's own addresses
        let src = r.innermost_addr(2, 3);
        let dst = r.innermost_addr(4, 5);
        if src.is_empty() || dst.is_empty() {
            return None;
        }
        Some(Self {
            frame: r.u64(0)?,
            time: r.f64(1)?,
            src,
            dst,
            sport: r.u64(6)?,
            dport: r.u64(7)?,
            ip_id: r.all(8).last().and_then(parse_u64).unwrap_or(0),
            seq: r.u64(9)?,
            ack: r.u64(10).unwrap_or(0),
            len: r.u64(11).unwrap_or(0),
            flags: r.u64(12).unwrap_or(0),
            ttl: r
                .all(13)
                .last()
                .or_else(|| r.all(14).last())
                .and_then(parse_u64)
                .unwrap_or(0),
        })
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    s.parse().ok().or_else(|| {
        s.strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
    })
}

/// A flow direction: source and destination address and port.
pub type Direction = (String, u64, String, u64);

/// What one side saw of one packet: when, at which TTL, as which frame.
#[derive(Clone, Copy)]
struct Sighting {
    time: f64,
    ttl: u64,
    frame: u64,
}

/// The packets of the flows both captures hold, keyed so that one transmission has one
/// key on both sides: header fields no router changes (IP ID, sequence and ACK numbers,
/// length, flags), and the how-many-th time this key appeared, so that copies without
/// an IP ID (IPv6) still pair up in order.
#[derive(Default)]
pub struct Aligner {
    seen_a: HashMap<(Direction, [u64; 6]), Sighting>,
    counts: HashMap<(Direction, [u64; 5]), u64>,
    per_dir: BTreeMap<Direction, DirAcc>,
    /// Packets of side A kept; past the cap, later ones are not aligned.
    pub capped: bool,
}

#[derive(Default)]
struct DirAcc {
    a: u64,
    b: u64,
    both: u64,
    ttl_a: Vec<u64>,
    ttl_b: Vec<u64>,
    /// b's time minus a's for packets both saw.
    delays: Vec<f64>,
    only_a_frames: Vec<u64>,
    only_b_frames: Vec<u64>,
}

/// The most packets of side A held for alignment (about 100 bytes each).
pub const MAX_ALIGNED: usize = 5_000_000;

impl Aligner {
    fn key(r: &SegRow, counts: &mut HashMap<(Direction, [u64; 5]), u64>) -> (Direction, [u64; 6]) {
        let dir = (r.src.clone(), r.sport, r.dst.clone(), r.dport);
        let k5 = [r.ip_id, r.seq, r.ack, r.len, r.flags];
        let n = counts.entry((dir.clone(), k5)).or_default();
        *n += 1;
        let [a, b, c, d, e] = k5;
        (dir, [a, b, c, d, e, *n])
    }

    pub fn add_a(&mut self, r: SegRow) {
        if self.seen_a.len() >= MAX_ALIGNED {
            self.capped = true;
            return;
        }
        let key = Self::key(&r, &mut self.counts);
        let acc = self.per_dir.entry(key.0.clone()).or_default();
        acc.a += 1;
        self.seen_a.insert(
            key,
            Sighting {
                time: r.time,
                ttl: r.ttl,
                frame: r.frame,
            },
        );
    }

    /// Side A is complete: occurrence counting starts again for side B.
    pub fn start_b(&mut self) {
        self.counts.clear();
    }

    pub fn add_b(&mut self, r: SegRow) {
        let key = Self::key(&r, &mut self.counts);
        let hit = self.seen_a.remove(&key);
        let acc = self.per_dir.entry(key.0).or_default();
        acc.b += 1;
        match hit {
            Some(s) => {
                acc.both += 1;
                if acc.ttl_a.len() < 1000 {
                    acc.ttl_a.push(s.ttl);
                    acc.ttl_b.push(r.ttl);
                }
                acc.delays.push(r.time - s.time);
            }
            None => {
                if acc.only_b_frames.len() < 10 {
                    acc.only_b_frames.push(r.frame);
                }
            }
        }
    }

    /// The packets each side saw that the other did not, per direction of the flows
    /// both saw, and the delay between the two points.
    pub fn finish(mut self) -> Alignment {
        for ((dir, _), s) in std::mem::take(&mut self.seen_a) {
            if let Some(acc) = self.per_dir.get_mut(&dir) {
                acc.only_a_frames.push(s.frame);
            }
        }
        let mut directions = Vec::new();
        for (dir, mut acc) in self.per_dir {
            // a direction only one capture holds is not a flow both saw
            if acc.a == 0 || acc.b == 0 || acc.both == 0 {
                continue;
            }
            acc.only_a_frames.sort_unstable();
            acc.only_a_frames.truncate(10);
            let median = |v: &mut Vec<u64>| {
                v.sort_unstable();
                v.get(v.len() / 2).copied().unwrap_or(0)
            };
            let (ta, tb) = (median(&mut acc.ttl_a), median(&mut acc.ttl_b));
            let only_a = acc.a - acc.both;
            let only_b = acc.b - acc.both;
            // the side nearer the sender sees the higher TTL (every router takes one);
            // on one segment, the side that saw packets the other missed is upstream
            let upstream = if ta != tb {
                if ta > tb { "a" } else { "b" }
            } else if only_a >= only_b {
                "a"
            } else {
                "b"
            };
            acc.delays.sort_by(f64::total_cmp);
            let d = percentile(&acc.delays, 50.0).unwrap_or(0.0);
            // as a one-way delay from upstream to downstream
            let one_way = if upstream == "a" { d } else { -d };
            let (lost, lost_frames) = if upstream == "a" {
                (only_a, acc.only_a_frames.clone())
            } else {
                (only_b, acc.only_b_frames.clone())
            };
            directions.push(DirectionAlignment {
                from: endpoint(&dir.0, dir.1),
                to: endpoint(&dir.2, dir.3),
                upstream: upstream.to_string(),
                packets_a: acc.a,
                packets_b: acc.b,
                seen_by_both: acc.both,
                lost_between: lost,
                lost_frames_upstream: lost_frames,
                seen_only_downstream: if upstream == "a" { only_b } else { only_a },
                ttl_a: ta,
                ttl_b: tb,
                one_way_delay_ms: round(one_way * 1000.0),
            });
        }
        directions.sort_by(|x, y| {
            y.lost_between
                .cmp(&x.lost_between)
                .then(y.packets_a.cmp(&x.packets_a))
        });
        // the sum of both ways' delays is the round trip between the two points,
        // whatever the offset between the two clocks
        let by_flow: BTreeMap<(String, String), Vec<f64>> =
            directions.iter().fold(BTreeMap::new(), |mut m, d| {
                let k = if d.from <= d.to {
                    (d.from.clone(), d.to.clone())
                } else {
                    (d.to.clone(), d.from.clone())
                };
                m.entry(k).or_default().push(d.one_way_delay_ms);
                m
            });
        let mut rtts: Vec<f64> = by_flow
            .values()
            .filter(|v| v.len() == 2)
            .map(|v| v[0] + v[1])
            .collect();
        rtts.sort_by(f64::total_cmp);
        Alignment {
            shared_flows: by_flow.len(),
            rtt_between_capture_points_ms: percentile(&rtts, 50.0).map(round),
            capped: self.capped,
            directions,
        }
    }
}

fn endpoint(addr: &str, port: u64) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DirectionAlignment {
    pub from: String,
    pub to: String,
    /// The capture nearer the sender (a or b): higher TTL, or the one that saw more.
    pub upstream: String,
    pub packets_a: u64,
    pub packets_b: u64,
    pub seen_by_both: u64,
    /// Packets the upstream capture saw that never reached the downstream one: lost
    /// between the two capture points.
    pub lost_between: u64,
    /// Frame numbers (in the upstream file) of some of them.
    pub lost_frames_upstream: Vec<u64>,
    /// Packets only the downstream capture saw (should be 0: capture loss upstream).
    pub seen_only_downstream: u64,
    /// Median TTL (hop limit) of the packets both saw, at a and at b.
    pub ttl_a: u64,
    pub ttl_b: u64,
    /// Median of downstream time minus upstream time, ms; only meaningful when the two
    /// capture clocks agree (the round trip below does not depend on them).
    pub one_way_delay_ms: f64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Alignment {
    /// TCP flows (address and port pairs) both captures saw packets of.
    pub shared_flows: usize,
    /// Median over shared flows of the two directions' delays added: the round trip
    /// between the capture points, independent of the clocks' offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_between_capture_points_ms: Option<f64>,
    /// Side a held more packets than are aligned; later ones were left out.
    pub capped: bool,
    pub directions: Vec<DirectionAlignment>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, v: f64, unit: &'static str, better: Better) -> Metric {
        Metric::new("x", name, v, unit, better)
    }

    #[test]
    fn changes_are_judged_by_unit_and_direction() {
        let a = vec![
            m("loss", 0.5, "pct", Better::Lower),
            m("rtt", 20.0, "ms", Better::Lower),
            m("rate", 10e6, "bits/s", Better::Higher),
            m("frames", 100.0, "count", Better::Neither),
            m("old", 4.0, "count", Better::Lower),
        ];
        let b = vec![
            m("loss", 3.0, "pct", Better::Lower),
            m("rtt", 22.0, "ms", Better::Lower),
            m("rate", 20e6, "bits/s", Better::Higher),
            m("frames", 400.0, "count", Better::Neither),
            m("new", 2.0, "count", Better::Lower),
        ];
        let d = diff(&a, &b);
        let v = |n: &str| d.iter().find(|c| c.metric == n).unwrap().verdict.clone();
        assert_eq!(v("loss"), "worse");
        assert_eq!(v("rtt"), "same");
        assert_eq!(v("rate"), "better");
        assert_eq!(v("frames"), "changed");
        assert_eq!(v("old"), "gone");
        assert_eq!(v("new"), "appeared");
        assert_eq!(d[0].metric, "loss");
    }

    fn seg(frame: u64, t: f64, id: u64, seq: u64, ttl: u64) -> SegRow {
        SegRow {
            frame,
            time: t,
            src: "10.0.0.1".into(),
            dst: "10.0.1.1".into(),
            sport: 40000,
            dport: 80,
            ip_id: id,
            seq,
            ack: 1,
            len: 1000,
            flags: 0x18,
            ttl,
        }
    }

    #[test]
    fn packets_missing_downstream_are_lost_between() {
        let mut al = Aligner::default();
        for i in 0..10 {
            al.add_a(seg(i + 1, i as f64, i, i * 1000, 64));
        }
        al.start_b();
        for i in (0..10).filter(|i| *i != 3 && *i != 7) {
            al.add_b(seg(i + 100, i as f64 + 0.040, i, i * 1000, 63));
        }
        let r = al.finish();
        assert_eq!(r.directions.len(), 1);
        let d = &r.directions[0];
        assert_eq!(d.upstream, "a");
        assert_eq!(d.lost_between, 2);
        assert_eq!(d.lost_frames_upstream, vec![4, 8]);
        assert!((d.one_way_delay_ms - 40.0).abs() < 0.01);
    }
}
