//! The index pass split by flow across several tsharks: **parallel dissection, serial
//! reduction**. The capture is split into partitions by IP address pair (`split`), one
//! tshark dissects each at once, and their lines are merged back into the capture's
//! frame order in front of the one reducer pipeline, so no part needs to know. Each
//! line is rewritten as the whole-capture pass would have printed it: frame numbers
//! (the frame's own, and those fields and messages point at) mapped back through the
//! splitter's table, and TCP/UDP stream indexes renumbered in order of first
//! appearance, which is how tshark numbers them.
//!
//! tshark finds RTP through the signalling that sets it up, often on another address
//! pair (a proxy's): the split plan (`split::Routing`) keeps call signalling and every
//! pair of an address its SDP announces in partition 0, and the merger checks every SDP
//! address tshark decodes against the plan. A capture the plan missed something in, or
//! whose media is set up by signalling the splitter cannot read (H.245, Skinny,
//! Unistim), is indexed again in one pass.

use std::collections::VecDeque;

use super::taps::{FirstSeen, section_of, severity_of_code};
use super::{CaptureIndex, FastMap, Pass, Taps};
use crate::engine::Analysis;
use crate::tshark::FrameMap;
use crate::tshark::fields::AGGREGATOR;

/// Fields holding frame numbers, mapped back to the capture's.
const FRAME_FIELDS: [&str; 4] = [
    "frame.number",
    "http.request_in",
    "dns.response_to",
    "dns.retransmit_request_in",
];

/// Fields holding a conversation index tshark counts in order of first frame.
const STREAM_FIELDS: [&str; 2] = ["tcp.stream", "udp.stream"];

/// Protocols through which tshark learns that other address pairs carry RTP, from
/// binary messages the splitter does not read: a capture with them is indexed in one
/// pass.
const OPAQUE_MEDIA_SETUP: [&str; 3] = ["h245", "skinny", "unistim"];

/// Signalling the split plan keeps in partition 0 (see `split::Routing`): seen in
/// another partition, it was missed by the plan.
const PLANNED_MEDIA_SETUP: [&str; 2] = ["sdp", "rtsp"];

/// Fields the index prints for the split pass's own checks (in every pass, so the
/// command, and with it every answer, is the same whether the capture is split).
pub(super) const CHECK_FIELDS: [&str; 1] = ["sdp.connection_info.address"];

/// What a column of the wide line needs when it is written back.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rewrite {
    Frames,
    Stream(usize),
    ExpertMessages,
}

/// One partition's line waiting for its turn.
struct Waiting {
    frame: u64,
    line: String,
}

/// Puts the partitions' lines back in frame order and rewrites them.
pub(super) struct Merger {
    columns: usize,
    /// The columns a line is written back with, in column order, and what each needs
    /// (None: read only, the severities the expert messages after them pair with).
    emit_cols: Vec<usize>,
    emit_how: Vec<Option<Rewrite>>,
    /// The columns a line is checked by when it arrives (its frame number, protocols
    /// and SDP addresses), in column order.
    check_cols: Vec<usize>,
    protocols: Option<usize>,
    sdp_addresses: Option<usize>,
    spans: Vec<(usize, usize)>,
    routing: std::sync::Arc<crate::split::Routing>,
    waiting: Vec<VecDeque<Waiting>>,
    /// A partition printed its last row (its taps follow, or its output ended).
    rows_done: Vec<bool>,
    taps: Vec<String>,
    /// Per stream field: (partition, its index) to the whole capture's index.
    streams: Vec<FastMap<(usize, u64), u64>>,
    first_seen: FirstSeen,
    seq: u64,
    /// Signalling that sets up media elsewhere was seen: the split cannot be trusted.
    pub media_setup: bool,
    /// A line named a frame the splitter never gave its partition (a bug, not data).
    pub lost: bool,
    out: String,
}

impl Merger {
    pub fn new(
        union: &[&str],
        workers: usize,
        routing: std::sync::Arc<crate::split::Routing>,
    ) -> Self {
        let at = |name: &str| union.iter().position(|f| *f == name);
        let mut emit: Vec<(usize, Option<Rewrite>)> = FRAME_FIELDS
            .iter()
            .filter_map(|f| at(f).map(|i| (i, Some(Rewrite::Frames))))
            .chain(
                STREAM_FIELDS
                    .iter()
                    .enumerate()
                    .filter_map(|(k, f)| at(f).map(|i| (i, Some(Rewrite::Stream(k))))),
            )
            .chain(at("_ws.expert.message").map(|i| (i, Some(Rewrite::ExpertMessages))))
            .chain(at("_ws.expert.severity").map(|i| (i, None)))
            .collect();
        emit.sort_by_key(|(i, _)| *i);
        let protocols = at("frame.protocols");
        let sdp_addresses = at(CHECK_FIELDS[0]);
        let mut check_cols: Vec<usize> = [Some(0), protocols, sdp_addresses]
            .into_iter()
            .flatten()
            .collect();
        check_cols.sort_unstable();
        check_cols.dedup();
        Self {
            columns: union.len(),
            emit_cols: emit.iter().map(|(i, _)| *i).collect(),
            emit_how: emit.iter().map(|(_, h)| *h).collect(),
            check_cols,
            protocols,
            sdp_addresses,
            spans: Vec::new(),
            routing,
            waiting: (0..workers).map(|_| VecDeque::new()).collect(),
            rows_done: vec![false; workers],
            taps: vec![String::new(); workers],
            streams: vec![FastMap::default(); STREAM_FIELDS.len()],
            first_seen: FirstSeen::default(),
            seq: 0,
            media_setup: false,
            lost: false,
            out: String::new(),
        }
    }

    /// The text of column `c` of `line`, from the spans last taken of `self.check_cols`.
    fn checked<'l>(&self, line: &'l str, c: Option<usize>) -> &'l str {
        c.and_then(|c| self.check_cols.iter().position(|&x| x == c))
            .and_then(|k| self.spans.get(k))
            .map_or("", |&(a, b)| &line[a..b])
    }

    /// Takes one line of partition `p`.
    pub fn push(&mut self, p: usize, line: &str, frames: &FrameMap) {
        if self.rows_done[p] || !Pass::is_row(line) {
            self.rows_done[p] = true;
            self.taps[p].push_str(line);
            self.taps[p].push('\n');
            return;
        }
        spans_of(line, self.columns, &self.check_cols, &mut self.spans);
        let local = self.checked(line, Some(0)).parse::<u64>().unwrap_or(0);
        let Some(frame) = frames.original(p, local) else {
            self.lost = true;
            return;
        };
        if !self.media_as_planned(p, line) {
            self.media_setup = true;
        }
        self.waiting[p].push_back(Waiting {
            frame,
            line: line.to_string(),
        });
    }

    /// Whether the media this row's signalling sets up is where the split plan put it:
    /// SDP and RTSP only in partition 0, every SDP address one the plan announced, and
    /// no signalling the splitter cannot read.
    fn media_as_planned(&self, p: usize, line: &str) -> bool {
        for proto in self.checked(line, self.protocols).split(':') {
            if OPAQUE_MEDIA_SETUP.contains(&proto)
                || (p != 0 && PLANNED_MEDIA_SETUP.contains(&proto))
            {
                return false;
            }
        }
        self.checked(line, self.sdp_addresses)
            .split(AGGREGATOR)
            .filter(|a| !a.is_empty())
            .all(|a| self.routing.announced(a))
    }

    /// Hands `row` every line whose turn has come: the earliest frame among the
    /// partitions, once every partition still printing rows has one waiting.
    pub fn drain(&mut self, frames: &FrameMap, row: &mut impl FnMut(&str)) {
        loop {
            let mut best: Option<(u64, usize)> = None;
            for (p, q) in self.waiting.iter().enumerate() {
                match q.front() {
                    Some(w) if best.is_none_or(|(f, _)| w.frame < f) => {
                        best = Some((w.frame, p));
                    }
                    Some(_) => {}
                    // its next row may come before every waiting one
                    None if !self.rows_done[p] => return,
                    None => {}
                }
            }
            let Some((_, p)) = best else { return };
            let w = self.waiting[p].pop_front().expect("a waiting line");
            self.rewrite(p, &w.line, frames);
            row(&self.out);
        }
    }

    /// The end of every partition's output: the rest of the lines, in order.
    pub fn finish(&mut self, frames: &FrameMap, row: &mut impl FnMut(&str)) {
        self.rows_done.iter_mut().for_each(|d| *d = true);
        self.drain(frames, row);
    }

    /// The partitions' taps merged as one pass prints them (None: the split cannot
    /// stand, see [`Taps::merge`]).
    pub fn taps(&self, frames: &FrameMap) -> Option<Taps> {
        let parts: Vec<Taps> = self.taps.iter().map(|t| Taps::split(t)).collect();
        Taps::merge(&parts, |p, n| frames.original(p, n), &self.first_seen)
    }

    /// Writes partition `p`'s `line` into `self.out` as the whole-capture pass prints it:
    /// the bytes between the columns it rewrites are copied as they are.
    fn rewrite(&mut self, p: usize, line: &str, frames: &FrameMap) {
        use std::fmt::Write;
        self.out.clear();
        let mut spans = std::mem::take(&mut self.spans);
        spans_of(line, self.columns, &self.emit_cols, &mut spans);
        let mut prev = 0;
        let mut severities = "";
        for (k, &(start, end)) in spans.iter().enumerate() {
            let col = &line[start..end];
            let Some(how) = self.emit_how[k] else {
                severities = col;
                continue;
            };
            if col.is_empty() {
                continue;
            }
            self.out.push_str(&line[prev..start]);
            prev = end;
            match how {
                Rewrite::Frames => {
                    for (i, v) in col.split(AGGREGATOR).enumerate() {
                        if i > 0 {
                            self.out.push(AGGREGATOR);
                        }
                        match v.parse().ok().and_then(|n| frames.original(p, n)) {
                            Some(n) => {
                                let _ = write!(self.out, "{n}");
                            }
                            None => self.out.push_str(v),
                        }
                    }
                }
                Rewrite::Stream(kind) => {
                    for (i, v) in col.split(AGGREGATOR).enumerate() {
                        if i > 0 {
                            self.out.push(AGGREGATOR);
                        }
                        match v.parse::<u64>() {
                            Ok(local) => {
                                let ids = &mut self.streams[kind];
                                let next_id = ids.len() as u64;
                                let id = *ids.entry((p, local)).or_insert(next_id);
                                let _ = write!(self.out, "{id}");
                            }
                            Err(_) => self.out.push_str(v),
                        }
                    }
                }
                Rewrite::ExpertMessages => {
                    let messages: std::borrow::Cow<str> = if col.contains("in frame ") {
                        super::taps::remap_frame_phrases(col, |n| frames.original(p, n)).into()
                    } else {
                        col.into()
                    };
                    self.out.push_str(&messages);
                    // the severity column comes before the messages (checked in a test)
                    self.note_first_seen(severities, &messages);
                }
            }
        }
        self.out.push_str(&line[prev..]);
        self.spans = spans;
    }

    /// Counts each (severity, message) pair the first time the merged rows show it, so
    /// the merged expert table lists them in the order one pass would.
    fn note_first_seen(&mut self, severities: &str, messages: &str) {
        let mut sev = severities.split(AGGREGATOR);
        for msg in messages.split(AGGREGATOR) {
            let Some(section) = sev
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .and_then(|c| section_of(severity_of_code(c)))
            else {
                continue;
            };
            self.seq += 1;
            match self.first_seen.get_mut(msg) {
                Some(s) => s[section] = s[section].min(self.seq),
                None => {
                    let mut s = [u64::MAX; 5];
                    s[section] = self.seq;
                    self.first_seen.insert(msg.to_string(), s);
                }
            }
        }
    }
}

/// The byte ranges of columns `wanted` (ascending) of a line of `columns` columns, into
/// `out`: the last column runs to the line's end (tshark's free text may hold tabs
/// there), and a column the line does not reach is empty.
fn spans_of(line: &str, columns: usize, wanted: &[usize], out: &mut Vec<(usize, usize)>) {
    out.clear();
    let bytes = line.as_bytes();
    let mut tabs = memchr::memchr_iter(b'\t', bytes);
    let (mut col, mut start) = (0, 0);
    for &w in wanted {
        while col < w {
            col += 1;
            start = tabs.next().map_or(bytes.len(), |t| t + 1);
        }
        let end = if w + 1 >= columns {
            bytes.len()
        } else {
            memchr::memchr(b'\t', &bytes[start..]).map_or(bytes.len(), |i| start + i)
        };
        out.push((start, end));
    }
}

/// Builds the index of `a`'s capture with `workers` tsharks, or None when the capture
/// has to be indexed in one pass after all (media set up by signalling, or a split
/// that failed on its own account).
pub(super) async fn build(
    a: &mut Analysis,
    mut pass: Pass,
    workers: usize,
) -> Result<Option<CaptureIndex>, String> {
    let args = pass.args();
    let before = (a.commands.len(), a.warning.clone());
    // the plan: which pairs stay together in partition 0 (signalling with its media)
    let input = a
        .file
        .opened
        .reopen()
        .map_err(|e| format!("cannot read {}: {e}", a.file.display_name))?;
    let size = a.file.size;
    let planning = std::time::Instant::now();
    let routing = match tokio::task::spawn_blocking(move || crate::split::plan(input, size)).await {
        Ok(Ok(r)) => std::sync::Arc::new(r),
        Ok(Err(e)) => {
            tracing::warn!(
                "the capture could not be planned for a split ({e}): indexed in one pass"
            );
            return Ok(gave_up(a, before));
        }
        Err(e) => return Err(format!("planning the split index pass failed: {e}")),
    };
    tracing::info!(elapsed = ?planning.elapsed(), "the split pass planned");
    let mut merger = Merger::new(&pass.union, workers, routing.clone());
    let ctl = crate::tshark::Control {
        cancel: a.ctl.cancel.child_token(),
        permille: a.ctl.permille.clone(),
    };
    let stop = ctl.cancel.clone();
    let run = a
        .run_split_lines(&args, workers, routing, &ctl, |p, line, frames| {
            merger.push(p, line, frames);
            if merger.media_setup || merger.lost {
                stop.cancel();
                return;
            }
            merger.drain(frames, &mut |l| pass.row(l));
        })
        .await;
    if a.ctl.cancel.is_cancelled() {
        return Err("cancelled".into());
    }
    // the split was given up while it ran (whether or not the tsharks had already
    // finished by then, the rows after that point were never fed)
    if merger.media_setup {
        tracing::info!(
            "the capture sets up media through signalling the split did not keep with it: indexed in one pass"
        );
        return Ok(gave_up(a, before));
    }
    if merger.lost {
        tracing::warn!("the split index pass lost a frame's place: indexed in one pass");
        return Ok(gave_up(a, before));
    }
    let frames = match run {
        Ok(frames) => frames,
        Err(e) if e.contains("splitting the capture") => {
            tracing::warn!("the split index pass failed ({e}): indexed in one pass");
            return Ok(gave_up(a, before));
        }
        Err(e) => return Err(e),
    };
    merger.finish(&frames, &mut |l| pass.row(l));
    let Some(taps) = merger.taps(&frames) else {
        tracing::info!("RTP streams found: indexed in one pass");
        return Ok(gave_up(a, before));
    };
    Ok(Some(pass.finish(taps, a)))
}

/// Leaves `a` as it was before the split was tried: the one pass that follows lists
/// its own command, and answers stay the size they would have been.
fn gave_up(a: &mut Analysis, (commands, warning): (usize, Option<String>)) -> Option<CaptureIndex> {
    a.commands.truncate(commands);
    a.warning = warning;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_the_columns() {
        let mut out = Vec::new();
        let line = "1\ta\t\tb\tlast\twith tab";
        spans_of(line, 5, &[0, 2, 3, 4], &mut out);
        let cols: Vec<&str> = out.iter().map(|&(a, b)| &line[a..b]).collect();
        assert_eq!(cols, ["1", "", "b", "last\twith tab"]);
        spans_of("7\tx", 5, &[1, 3], &mut out);
        assert_eq!(out, [(2, 3), (3, 3)]);
    }

    /// Every field of the index that names a frame or a conversation is one the
    /// merger maps: a new field of that kind must be added to its lists.
    #[test]
    fn every_frame_and_stream_field_is_mapped() {
        let ctx = crate::index::Ctx {
            summary: Default::default(),
            window: Default::default(),
            strings: crate::index::SharedStrings::new(),
        };
        let pass = Pass::new(&ctx, crate::tools::INDEX_PARTS);
        for f in &pass.union {
            let names_frame = f.ends_with("_in")
                || f.ends_with("response_to")
                || f.contains("frame")
                || f.ends_with(".stream")
                || f.contains("stream_index")
                || f.contains("connection.number");
            let plain = [
                "frame.time_epoch",
                "frame.len",
                "frame.cap_len",
                "frame.protocols",
                "quic.frame_type",
            ];
            if names_frame && !plain.contains(f) {
                assert!(
                    FRAME_FIELDS.contains(f) || STREAM_FIELDS.contains(f),
                    "{f} is printed by the index pass but not mapped back by the split pass"
                );
            }
        }
        let at = |n: &str| pass.union.iter().position(|f| *f == n);
        assert!(at("_ws.expert.severity") < at("_ws.expert.message"));
    }

    #[test]
    fn lines_come_back_in_frame_order_with_streams_renumbered() {
        let union = [
            "frame.number",
            "frame.time_epoch",
            "tcp.stream",
            "dns.response_to",
        ];
        let mut m = Merger::new(&union, 2, Default::default());
        let frames = FrameMap::for_test(&[vec![1, 3, 4], vec![2, 5]]);
        let mut out = Vec::new();
        // partition 1's lines arrive first; nothing is handed on before partition 0 has
        // one waiting too
        m.push(1, "1\t0.2\t0\t", &frames);
        m.drain(&frames, &mut |l| out.push(l.to_string()));
        assert!(out.is_empty());
        m.push(1, "2\t0.5\t1\t1", &frames);
        m.push(0, "1\t0.1\t0\t", &frames);
        m.push(0, "2\t0.3\t1\t", &frames);
        m.push(0, "3\t0.4\t0\t2", &frames);
        m.finish(&frames, &mut |l| out.push(l.to_string()));
        assert_eq!(
            out,
            [
                "1\t0.1\t0\t",
                "2\t0.2\t1\t",
                "3\t0.3\t2\t",
                "4\t0.4\t0\t3",
                "5\t0.5\t3\t2",
            ]
        );
    }
}
