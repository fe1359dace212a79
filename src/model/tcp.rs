//! The per-stream TCP model shared by the TCP and performance tools.
//!
//! One tshark pass over every frame (TCP fields are empty for other frames, which still
//! count for time order) builds one record per `tcp.stream`, like a Zeek uid: 5-tuple,
//! start/end, Zeek `conn_state` and history, packets and bytes each way, iRTT and ACK
//! RTT, tshark's own `tcp.analysis.*` counts, SYN options of both sides, zero-window
//! stalls, bytes in flight, gaps and ECN. Tools only read it.

use arcstr::ArcStr;
use std::collections::BTreeMap;
use std::num::NonZeroU32;

use crate::engine::Span;
use crate::index::{Ctx, Interner, Part, SharedStrings};
use crate::tshark::fields::{AddrText, FromRow, Row};

/// ACK-RTT samples kept per stream for its median/p95 (a reservoir beyond that).
const RTT_SAMPLES: usize = 64;
/// ACK-RTT samples kept for the capture-wide distribution.
const GLOBAL_RTT_SAMPLES: usize = 20_000;
/// Example frames kept per kind of event, for evidence.
const SAMPLE_FRAMES: usize = 8;

pub const FIN: u64 = 0x01;

/// The shortest silence in a connection counted as a stall or a pause: longer than
/// the round trips of all but the longest paths.
pub const STALL_S: f64 = 0.2;
pub const SYN: u64 = 0x02;
pub const RST: u64 = 0x04;
pub const ACK: u64 = 0x10;
pub const ECE: u64 = 0x40;
pub const CWR: u64 = 0x80;

pub struct TcpRow {
    pub frame: u64,
    pub time: f64,
    pub len: u64,
    pub stream: Option<u64>,
    pub src: AddrText,
    pub dst: AddrText,
    pub sport: u64,
    pub dport: u64,
    pub flags: u64,
    pub payload: u64,
    pub window: Option<u64>,
    pub retrans: bool,
    pub fast_retrans: bool,
    pub spurious: bool,
    pub lost_segment: bool,
    /// This segment ACKs data the capture never saw ("ACKed segment that wasn't captured").
    pub ack_unseen: bool,
    pub dup_ack: bool,
    pub dup_ack_num: u64,
    pub out_of_order: bool,
    pub zero_window: bool,
    pub zw_probe: bool,
    pub window_full: bool,
    pub window_update: bool,
    pub keep_alive: bool,
    pub ack_rtt: Option<f64>,
    pub in_flight: Option<u64>,
    pub ecn: Option<u64>,
    pub mss: Option<u64>,
    pub wscale: Option<u64>,
    pub option_kinds: Vec<u64>,
    pub rtp: bool,
    /// Relative sequence number of the segment's first byte.
    pub seq: Option<u64>,
    /// The IP packet's length, header included (IPv6: payload length + 40), of the
    /// innermost header: what Zeek counts as `*_ip_bytes`.
    pub ip_len: u64,
    /// Payload bytes the capture cut off (snap length): seen in the sequence space,
    /// never captured, what Zeek counts as `missed_bytes`.
    pub cut_payload: u64,
    /// The application protocol tshark dissected in it, as Zeek names the service.
    pub service: Option<&'static str>,
}

impl FromRow for TcpRow {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.time_epoch",
        "frame.len",
        "tcp.stream",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "tcp.srcport",
        "tcp.dstport",
        "tcp.flags",
        "tcp.len",
        "tcp.window_size",
        "tcp.analysis.retransmission",
        "tcp.analysis.fast_retransmission",
        "tcp.analysis.spurious_retransmission",
        "tcp.analysis.lost_segment",
        "tcp.analysis.duplicate_ack",
        "tcp.analysis.duplicate_ack_num",
        "tcp.analysis.out_of_order",
        "tcp.analysis.zero_window",
        "tcp.analysis.zero_window_probe",
        "tcp.analysis.window_full",
        "tcp.analysis.window_update",
        "tcp.analysis.keep_alive",
        "tcp.analysis.ack_rtt",
        "tcp.analysis.bytes_in_flight",
        "ip.dsfield.ecn",
        "tcp.options.mss_val",
        "tcp.options.wscale.shift",
        "tcp.option_kind",
        "rtp.ssrc",
        "tcp.analysis.ack_lost_segment",
        "tcp.seq",
        "ip.len",
        "ipv6.plen",
        "frame.cap_len",
        "frame.protocols",
    ];

    fn from_row(r: &Row<'_>) -> Option<Self> {
        let payload = r.u64(11).unwrap_or(0);
        Some(Self {
            frame: r.u64(0)?,
            time: r.f64(1).unwrap_or(0.0),
            len: r.u64(2).unwrap_or(0),
            stream: r.u64(3),
            src: r.innermost_addr_text(4, 5),
            dst: r.innermost_addr_text(6, 7),
            sport: r.u64(8).unwrap_or(0),
            dport: r.u64(9).unwrap_or(0),
            flags: r.u64(10).unwrap_or(0),
            payload,
            window: r.u64(12),
            retrans: r.str(13).is_some(),
            fast_retrans: r.str(14).is_some(),
            spurious: r.str(15).is_some(),
            lost_segment: r.str(16).is_some(),
            dup_ack: r.str(17).is_some(),
            dup_ack_num: r.u64(18).unwrap_or(0),
            out_of_order: r.str(19).is_some(),
            zero_window: r.str(20).is_some(),
            zw_probe: r.str(21).is_some(),
            window_full: r.str(22).is_some(),
            window_update: r.str(23).is_some(),
            keep_alive: r.str(24).is_some(),
            ack_rtt: r.f64(25),
            in_flight: r.u64(26),
            ecn: r.all(27).last().and_then(|s| s.parse().ok()),
            mss: r.u64(28),
            wscale: r.u64(29),
            option_kinds: r.all(30).filter_map(|s| s.parse().ok()).collect(),
            rtp: r.str(31).is_some(),
            seq: r.u64(33),
            ack_unseen: r.str(32).is_some(),
            ip_len: r.ip_packet_len(34, 35, false).unwrap_or(0),
            cut_payload: {
                let (len, cap) = (r.u64(2).unwrap_or(0), r.u64(36).unwrap_or(0));
                payload.min(len.saturating_sub(cap))
            },
            // only data segments name their application; the string is read then
            service: if payload > 0 {
                r.str(37).and_then(crate::model::conn::zeek_service)
            } else {
                None
            },
        })
    }
}

/// SYN options one side offered.
#[derive(Debug, Clone, Default, serde::Serialize, schemars::JsonSchema)]
pub struct SynOptions {
    pub mss: Option<u64>,
    /// Window scale shift; None when the option was absent.
    pub wscale: Option<u64>,
    pub sack_permitted: bool,
    pub timestamps: bool,
}

/// Counts of one kind, per direction: [from A, from B] until `finish` orients them.
pub type PerDir = [u64; 2];

/// Lost over sent, percent to two decimals; nothing sent is no loss.
fn loss_pct(lost: u64, sent: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        (10_000.0 * lost as f64 / sent as f64).round() / 100.0
    }
}

/// See [`TcpModel::estimated_loss`].
#[derive(Debug, Clone, Copy, Default)]
pub struct EstimatedLoss {
    pub before_capture: u64,
    pub after_capture: u64,
    pub pct: f64,
}

/// One TCP connection. What every stream has (endpoints, counts, flags, the first
/// frames) is held inline; everything a stream only has once it carries data or shows
/// a `tcp.analysis` event lives in a [`StreamDetail`] allocated on first need, so a scan
/// or SYN flood of millions of streams costs a few hundred bytes each. Reads of the
/// detail go through `Deref` (a stream without one reads as all zeros).
#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub id: u64,
    /// Endpoint addresses and ports, index 0 = originator once finished.
    pub addr: [ArcStr; 2],
    /// Narrow where tshark's values are (ports 16 bits; frames, packet counts and
    /// windows 32): read through the accessors.
    port: [u16; 2],
    pub first: f64,
    pub last: f64,
    /// The last packet's time before both sides had closed (FIN or RST): Zeek stops
    /// a connection's clock there, so its conn.log duration leaves out the final ACKs.
    pub open_until: f64,
    first_frame: u32,
    last_frame: u32,
    packets: [u32; 2],
    /// Frame bytes each way.
    pub bytes: PerDir,
    /// IP bytes each way (headers included), as Zeek's `*_ip_bytes`.
    pub ip_bytes: PerDir,
    /// The application protocol of its first data tshark named, as Zeek names the
    /// service (`crate::model::conn::zeek_service`).
    pub service: Option<&'static str>,
    pub syn: [bool; 2],
    pub synack: [bool; 2],
    pub fin: [bool; 2],
    pub rst: [bool; 2],
    syn_frame: Option<NonZeroU32>,
    synack_frame: Option<NonZeroU32>,
    /// When the originator's first SYN was seen (NaN: none).
    syn_time: f64,
    close: Option<Close>,
    /// SYN options of each side, packed (see [`pack_syn`]); 0 = no SYN seen.
    syn_opts: [u32; 2],
    max_window: [u32; 2],
    pub max_gap: f64,
    max_gap_after_frame: u32,
    /// The silence ended with a retransmission: a timeout (RTO) stall, not an idle app.
    pub max_gap_ended_by_retrans: bool,
    /// The previous inter-packet gap (NaN before the second packet).
    last_gap: f64,
    /// The first RST frame; later ones are samples in the detail.
    first_reset: Option<NonZeroU32>,
    /// History letters with direction, first occurrence each, in order.
    history: History,
    /// Originator index into the raw per-direction arrays, fixed by `finish`.
    oriented: bool,
    flipped: bool,
    detail: Option<Box<StreamDetail>>,
}

/// Messages kept per stream: a web page's keep-alive connection carries a few dozen
/// requests; an interactive session's keystrokes beyond this are not transactions
/// anyone asks to time.
pub const MAX_MESSAGES: usize = 256;

/// A frame number as tshark writes it: from 1, in 32 bits (its `frame.number` is a
/// guint32). Nearly every stream keeps a handful of them, so their size counts, and an
/// `Option` of a struct holding one costs nothing extra.
fn frame32(frame: u64) -> NonZeroU32 {
    NonZeroU32::new(narrow(frame)).unwrap_or(NonZeroU32::MIN)
}

/// A count or frame number tshark keeps in 32 bits (saturating, never wrapping).
fn narrow(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A port: 16 bits on the wire.
fn port16(p: u64) -> u16 {
    u16::try_from(p).unwrap_or(u16::MAX)
}

/// A time that may not have come: NaN until it does, so that every difference with
/// it is NaN (8 bytes, where an `Option<f64>` takes 16).
#[derive(Debug, Clone, Copy)]
struct Unseen(f64);

impl Default for Unseen {
    fn default() -> Self {
        Self(f64::NAN)
    }
}

/// The first FIN or RST: when, which frame, who sent it, and whether it was a reset.
#[derive(Debug, Clone, Copy)]
struct Close {
    time: f64,
    frame: NonZeroU32,
    by: u8,
    rst: bool,
}

impl Close {
    fn new(p: &TcpRow, by: usize, rst: bool) -> Self {
        Self {
            time: p.time,
            frame: frame32(p.frame),
            by: by as u8,
            rst,
        }
    }
}

/// A data segment's place: when, and which frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct At {
    pub time: f64,
    frame: NonZeroU32,
}

impl At {
    pub fn new(time: f64, frame: u64) -> Self {
        Self {
            time,
            frame: frame32(frame),
        }
    }

    pub fn frame(self) -> u64 {
        u64::from(self.frame.get())
    }
}

/// One side's run of data segments until the other side sends data: a request, an
/// answer, a TLS handshake flight. Times and frames are kept apart so that a message
/// takes 48 bytes: a stream keeps up to [`MAX_MESSAGES`] of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Message {
    /// First and last data segment.
    pub first_time: f64,
    pub last_time: f64,
    first_frame: NonZeroU32,
    last_frame: NonZeroU32,
    pub bytes: u64,
    /// Time the receiver held it at a zero window, seconds.
    pub receiver_stall: f64,
    /// Its data lost on the way: resent by the sender, or holes before the capture point.
    pub lost: u32,
    /// The sender (0 = the originator, once the stream is oriented).
    dir: u8,
}

impl Message {
    /// The sender (0 = the originator, once the stream is oriented).
    pub fn dir(&self) -> usize {
        usize::from(self.dir)
    }

    pub fn first_frame(&self) -> u64 {
        u64::from(self.first_frame.get())
    }

    pub fn last_frame(&self) -> u64 {
        u64::from(self.last_frame.get())
    }
}

/// The connection's first RST: who sent it, when, and what came before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reset {
    pub time: f64,
    pub frame: u64,
    /// The sender (0 = the originator, once the stream is oriented).
    pub dir: usize,
    /// Silence before it in this connection, seconds: an idle connection reset by a
    /// timer (a firewall's, a server's) shows a long one.
    pub idle_before: f64,
    /// A FIN had been sent (by either side) before it.
    pub after_fin: bool,
    /// Payload bytes each side had sent before it.
    pub payload_before: [u64; 2],
}

/// A stream's ACK-RTT samples, seconds: a reservoir of [`RTT_SAMPLES`] over all of
/// them, and one per side whose data was acknowledged (raw orientation until
/// `finish`): a capture point near one host sees near-zero RTT for that host's data,
/// so only same-direction samples compare with each other. While a stream has at most
/// [`RTT_SAMPLES`] samples, each side's reservoir is the overall one's samples of that
/// side, so they are one list and a bit per sample (most streams never have more);
/// past that each side gets its own list.
#[derive(Debug, Clone, Default)]
pub struct RttSamples {
    all: Vec<f64>,
    /// Bit i set: sample i of `all` timed side 1's data (while `by_sender` is None).
    senders: u64,
    by_sender: Option<Box<[Vec<f64>; 2]>>,
}

impl RttSamples {
    /// One sample timing `sender`'s data: the stream's `seen`-th, that side's
    /// `seen_sender`-th (both counting this one).
    fn add(&mut self, sender: usize, rtt: f64, seen: u64, seen_sender: u64, frame: u64) {
        let by_sender = match &mut self.by_sender {
            Some(b) => b,
            None if seen <= RTT_SAMPLES as u64 => {
                self.senders |= (sender as u64) << self.all.len();
                self.all.push(rtt);
                return;
            }
            None => {
                let mut split: [Vec<f64>; 2] = Default::default();
                for (i, &x) in self.all.iter().enumerate() {
                    split[(self.senders >> i & 1) as usize].push(x);
                }
                self.by_sender.insert(Box::new(split))
            }
        };
        reservoir(&mut self.all, RTT_SAMPLES, seen, rtt, frame);
        reservoir(&mut by_sender[sender], RTT_SAMPLES, seen_sender, rtt, frame);
    }

    /// The reservoir over all samples, in arrival order until it is full.
    pub fn all(&self) -> &[f64] {
        &self.all
    }

    /// The reservoir of the samples timing side `d`'s data.
    pub fn of_sender(&self, d: usize) -> std::borrow::Cow<'_, [f64]> {
        match &self.by_sender {
            Some(b) => std::borrow::Cow::Borrowed(&b[d]),
            None => std::borrow::Cow::Owned(
                self.all
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| (self.senders >> i & 1) as usize == d)
                    .map(|(_, &x)| x)
                    .collect(),
            ),
        }
    }

    fn swap(&mut self) {
        match &mut self.by_sender {
            Some(b) => b.swap(0, 1),
            None => {
                let used = u64::MAX
                    .checked_shr(64 - self.all.len() as u32)
                    .unwrap_or(0);
                self.senders = !self.senders & used;
            }
        }
    }

    fn shrink_to_fit(&mut self) {
        self.all.shrink_to_fit();
        for v in self.by_sender.iter_mut().flat_map(|b| b.iter_mut()) {
            v.shrink_to_fit();
        }
    }

    /// Bytes held beside the struct itself.
    fn heap_bytes(&self) -> usize {
        8 * self.all.capacity()
            + self
                .by_sender
                .as_ref()
                .map_or(0, |b| 48 + 8 * (b[0].capacity() + b[1].capacity()))
    }
}

/// What a stream holds once it carries data or shows an analysis event. What only a
/// `tcp.analysis` event, a reset, a hole or a congestion mark sets lives in
/// [`StreamEvents`], allocated on the first such event: most connections of ordinary
/// traffic have none, and those fields are half the detail's size.
#[derive(Debug, Clone, Default)]
pub struct StreamDetail {
    /// When the first SYN-ACK was seen.
    synack_time: Unseen,
    pub payload: PerDir,
    /// Counts in 32 bits (a stream's packets are fewer than tshark's 32-bit frame
    /// numbers); read through the accessors.
    data_segments: [u32; 2],
    rtt_count: u32,
    pub rtt_sum: f64,
    pub rtt_min: f64,
    pub rtt_max: f64,
    pub rtt: RttSamples,
    rtt_seen_dir: [u32; 2],
    /// Highest sequence number + length seen per direction.
    seq_end: PerDir,
    /// A segment's payload, at most 64 KiB (or a GRO/TSO super-segment, still < 4 GiB).
    max_segment: [u32; 2],
    /// First and last data segment of each direction.
    pub data_first: [Option<At>; 2],
    pub data_last: [Option<At>; 2],
    /// For each direction's first data after the other side had sent some: when the
    /// other side's data before it ended, and when this answer began — a request and
    /// the wait for its response.
    pub reply: [Option<(f64, At)>; 2],
    /// The messages of the conversation in order (the first [`MAX_MESSAGES`]): one
    /// side's run of data until the other side sends data. A request and its answer
    /// are two messages; per-transaction timing reads them.
    pub messages: Vec<Message>,
    /// More messages followed the first [`MAX_MESSAGES`]; they are not kept (and the
    /// last one kept ends where the next began).
    pub messages_truncated: bool,
    /// Silences of at least [`STALL_S`] that new data ended, by the side that broke
    /// them, seconds.
    pub pause_total: [f64; 2],
    /// Silences ended by one side's data after the other side spoke last: a server's
    /// think time, or a client's idle time between requests.
    pub wait_total: [f64; 2],
    /// Which direction (raw, until `finish`) sent the latest data segment.
    last_data_dir: Option<u8>,
    pub max_in_flight: PerDir,
    pub jitter: f64,
    /// Example frames per kind of event, kinds in order of first occurrence: a stream
    /// shows a handful of kinds, and an ordered map's smallest node is ~450 bytes.
    frames: Vec<(&'static str, Vec<u64>)>,
    events: Option<Box<StreamEvents>>,
}

/// What a stream holds once it shows a `tcp.analysis` event, a reset, a SYN sent
/// again, a hole in its data or an ECN mark. Reads go through `Deref` from the detail
/// (a stream without events reads as all zeros); writes through
/// [`StreamDetail::events_mut`], only where such an event happens.
#[derive(Debug, Clone, Default)]
pub struct StreamEvents {
    /// SYNs sent again before an answer, and when the last of them was sent.
    pub syn_retries: u64,
    retry_syn_time: f64,
    pub retrans: PerDir,
    pub retrans_bytes: PerDir,
    /// Retransmissions that carried payload (SYN/FIN retransmissions excluded), for rates.
    pub retrans_data: PerDir,
    /// Of those, the ones that are not loss: spurious (the original had arrived) or a
    /// teardown's (data sent again with its FIN, e.g. close_notify + FIN).
    retrans_not_loss: PerDir,
    pub fast_retrans: PerDir,
    pub spurious: PerDir,
    pub lost_segment: PerDir,
    /// ACKs of data the capture never saw, by the side that sent the ACK.
    pub ack_unseen: PerDir,
    /// Data segments resending bytes this capture had already seen, which tshark calls
    /// out-of-order rather than retransmission (they came sooner than its RTT
    /// threshold, as near the sender on a short path): retransmissions of data lost
    /// after the capture point.
    pub resent_unflagged: PerDir,
    /// Retransmissions (flagged or not) of bytes this capture saw before: the original
    /// passed the capture point and was lost after it.
    pub lost_after_capture: PerDir,
    /// Payload bytes of new data the capture cut off (snap length), per direction.
    cut_bytes: PerDir,
    /// The direction's data has a hole or a cut the peer has not acknowledged yet.
    gap_pending: [bool; 2],
    /// The holes tshark reported ("previous segment not captured") not yet filled,
    /// oldest first.
    gaps: [Vec<(u64, u64)>; 2],
    /// Bytes of the holes tshark reported per direction: the holes in segments are
    /// the loss before the capture point.
    gap_bytes: PerDir,
    pub reset: Option<Reset>,
    /// Silences of at least [`STALL_S`] that a retransmission ended (timeouts), seconds.
    pub rto_stall_total: f64,
    pub dup_ack: PerDir,
    pub max_dup_chain: u64,
    pub out_of_order: PerDir,
    pub zero_window: PerDir,
    pub zw_probe: PerDir,
    /// Keep-alives sent while the other side advertised a zero window: they probe the
    /// window (the sender is blocked, not idle), whatever tshark calls them.
    pub keepalive_probes: PerDir,
    pub window_full: PerDir,
    pub window_update: PerDir,
    pub keep_alive: PerDir,
    /// Zero-window stalls per advertiser: total and longest seconds, and whether one never ended.
    pub zw_stall_total: [f64; 2],
    pub zw_stall_max: [f64; 2],
    pub zw_open: [Option<(f64, u64)>; 2],
    pub zw_unrecovered: [bool; 2],
    pub ce_marks: u64,
    pub ece: u64,
    pub cwr: u64,
}

static NO_EVENTS: std::sync::LazyLock<StreamEvents> =
    std::sync::LazyLock::new(StreamEvents::default);

impl std::ops::Deref for StreamDetail {
    type Target = StreamEvents;
    fn deref(&self) -> &StreamEvents {
        self.events.as_deref().unwrap_or(&NO_EVENTS)
    }
}

impl StreamDetail {
    /// Data-carrying segments each way.
    pub fn data_segments(&self) -> PerDir {
        self.data_segments.map(u64::from)
    }

    /// RTT samples (tshark's `tcp.analysis.ack_rtt`), both ways.
    pub fn rtt_count(&self) -> u64 {
        u64::from(self.rtt_count)
    }

    /// The largest segment payload each way.
    pub fn max_segment(&self) -> PerDir {
        self.max_segment.map(u64::from)
    }

    /// The events, allocated on the first: call it only where an event happens.
    fn events_mut(&mut self) -> &mut StreamEvents {
        self.events.get_or_insert_with(Default::default)
    }
}

static NO_DETAIL: std::sync::LazyLock<StreamDetail> =
    std::sync::LazyLock::new(StreamDetail::default);

impl std::ops::Deref for Stream {
    type Target = StreamDetail;
    fn deref(&self) -> &StreamDetail {
        self.detail.as_deref().unwrap_or(&NO_DETAIL)
    }
}

/// History letters (with direction in the high bit) inline: at most a dozen letters
/// per direction exist, so no allocation per stream.
#[derive(Debug, Clone, Copy, Default)]
struct History {
    marks: [u8; 24],
    len: u8,
}

impl History {
    fn iter(&self) -> impl Iterator<Item = (u8, usize)> + '_ {
        self.marks[..self.len as usize]
            .iter()
            .map(|&m| (m & 0x7f, usize::from(m >> 7)))
    }
    fn mark(&mut self, letter: u8, dir: usize) {
        let m = letter | ((dir as u8) << 7);
        let n = self.len as usize;
        if !self.marks[..n].contains(&m) && n < self.marks.len() {
            self.marks[n] = m;
            self.len += 1;
        }
    }
    fn flip(&mut self) {
        for m in &mut self.marks[..self.len as usize] {
            *m ^= 0x80;
        }
    }
}

/// SYN options in 32 bits: bit 31 present, 30 SACK permitted, 29 timestamps, 28 wscale
/// present, 16-23 wscale shift, 0-15 MSS (+ bit 27: MSS present).
fn pack_syn(o: &SynOptions) -> u32 {
    let mut v = 1 << 31;
    if o.sack_permitted {
        v |= 1 << 30;
    }
    if o.timestamps {
        v |= 1 << 29;
    }
    if let Some(w) = o.wscale {
        v |= 1 << 28 | ((w.min(255) as u32) << 16);
    }
    if let Some(m) = o.mss {
        v |= 1 << 27 | (m.min(0xffff) as u32);
    }
    v
}

fn unpack_syn(v: u32) -> Option<SynOptions> {
    (v & 1 << 31 != 0).then(|| SynOptions {
        mss: (v & 1 << 27 != 0).then_some(u64::from(v & 0xffff)),
        wscale: (v & 1 << 28 != 0).then_some(u64::from((v >> 16) & 0xff)),
        sack_permitted: v & 1 << 30 != 0,
        timestamps: v & 1 << 29 != 0,
    })
}

impl Stream {
    pub fn port(&self) -> [u64; 2] {
        self.port.map(u64::from)
    }

    pub fn first_frame(&self) -> u64 {
        u64::from(self.first_frame)
    }

    pub fn last_frame(&self) -> u64 {
        u64::from(self.last_frame)
    }

    /// Packets each way.
    pub fn packets(&self) -> PerDir {
        self.packets.map(u64::from)
    }

    /// The largest window each side advertised, scaled.
    pub fn max_window(&self) -> PerDir {
        self.max_window.map(u64::from)
    }

    /// The frame that ended the longest silence.
    pub fn max_gap_after_frame(&self) -> u64 {
        u64::from(self.max_gap_after_frame)
    }

    /// The originator's first SYN.
    pub fn syn_frame(&self) -> Option<u64> {
        self.syn_frame.map(|f| u64::from(f.get()))
    }

    /// The first SYN-ACK.
    pub fn synack_frame(&self) -> Option<u64> {
        self.synack_frame.map(|f| u64::from(f.get()))
    }

    /// The first FIN or RST: (time, frame, sender, whether it was a reset).
    pub fn close(&self) -> Option<(f64, u64, usize, bool)> {
        self.close
            .map(|c| (c.time, u64::from(c.frame.get()), usize::from(c.by), c.rst))
    }

    fn new(id: u64, p: &TcpRow, hosts: &mut Interner) -> Self {
        Self {
            id,
            addr: [hosts.one(&p.src), hosts.one(&p.dst)],
            port: [port16(p.sport), port16(p.dport)],
            first: p.time,
            last: p.time,
            open_until: p.time,
            first_frame: narrow(p.frame),
            last_gap: f64::NAN,
            syn_time: f64::NAN,
            ..Default::default()
        }
    }

    fn detail_mut(&mut self) -> &mut StreamDetail {
        self.detail.get_or_insert_with(Default::default)
    }

    /// The SYN options side `d` offered.
    pub fn options(&self, d: usize) -> Option<SynOptions> {
        unpack_syn(self.syn_opts[d])
    }

    /// Where a data segment's bytes stand against what this capture saw before: a hole
    /// tshark reports opens a gap (lost before the capture point, or by the capture),
    /// a segment inside a gap fills it, and a segment whose bytes were all seen is a
    /// resend, whatever tshark's timing heuristic called it.
    fn track_sequence(&mut self, d: usize, seq: u64, p: &TcpRow) {
        const MAX_GAPS: usize = 64;
        let end = seq + p.payload;
        let loss_resend = p.retrans && !p.spurious && p.flags & FIN == 0;
        let dd = self.detail_mut();
        let seen_end = dd.seq_end[d];
        dd.max_segment[d] = dd.max_segment[d].max(narrow(p.payload));
        if p.lost_segment && seq > seen_end {
            let ev = dd.events_mut();
            ev.gap_bytes[d] += seq - seen_end;
            if ev.gaps[d].len() < MAX_GAPS {
                ev.gaps[d].push((seen_end, seq));
            }
        }
        let in_gap = dd.gaps[d].iter().any(|&(a, b)| seq < b && end > a);
        if in_gap {
            // what the segment covers is no longer missing
            let ev = dd.events_mut();
            let mut kept = Vec::with_capacity(ev.gaps[d].len() + 1);
            for &(a, b) in &ev.gaps[d] {
                if a < seq {
                    kept.push((a, b.min(seq)));
                }
                if b > end {
                    kept.push((a.max(end), b));
                }
            }
            ev.gaps[d] = kept;
        } else if end <= seen_end && seen_end > 0 {
            if loss_resend {
                dd.events_mut().lost_after_capture[d] += 1;
            } else if p.out_of_order && !p.retrans {
                let ev = dd.events_mut();
                ev.resent_unflagged[d] += 1;
                ev.lost_after_capture[d] += 1;
                self.sample("resent_unflagged", p.frame);
            }
        }
        let dd = self.detail_mut();
        if end > seen_end && (p.cut_payload > 0 || p.lost_segment) {
            let ev = dd.events_mut();
            ev.cut_bytes[d] += p.cut_payload;
            ev.gap_pending[d] = true;
        }
        dd.seq_end[d] = dd.seq_end[d].max(end);
    }

    fn sample(&mut self, kind: &'static str, frame: u64) {
        if kind == "reset" && self.first_reset.is_none() {
            self.first_reset = Some(frame32(frame));
            return;
        }
        let frames = &mut self.detail_mut().frames;
        let i = match frames.iter().position(|(k, _)| *k == kind) {
            Some(i) => i,
            None => {
                frames.push((kind, Vec::new()));
                frames.len() - 1
            }
        };
        if frames[i].1.len() < SAMPLE_FRAMES {
            frames[i].1.push(frame);
        }
    }

    fn history_mark(&mut self, letter: u8, dir: usize) {
        self.history.mark(letter, dir);
    }

    /// The stream's Zeek-style history string (originator upper case; a leading `^`
    /// when the originator is not the first sender, as Zeek marks a flipped connection).
    pub fn history(&self) -> String {
        let flip = if self.flipped { "^" } else { "" };
        flip.chars()
            .chain(self.history.iter().map(|(l, d)| {
                if d == 0 {
                    l.to_ascii_uppercase() as char
                } else {
                    l.to_ascii_lowercase() as char
                }
            }))
            .collect()
    }

    /// Zeek's conn_state for this stream.
    pub fn conn_state(&self) -> &'static str {
        let (o, r) = (0, 1);
        if self.syn[o] && !self.synack[r] {
            if self.rst[r] {
                "REJ"
            } else if self.rst[o] {
                "RSTOS0"
            } else if self.fin[o] {
                "SH"
            } else {
                "S0"
            }
        } else if !self.syn[o] && self.synack[r] {
            if self.rst[r] {
                "RSTRH"
            } else if self.fin[r] {
                "SHR"
            } else {
                "OTH"
            }
        } else if self.syn[o] && self.synack[r] {
            if self.rst[o] {
                "RSTO"
            } else if self.rst[r] {
                "RSTR"
            } else if self.fin[o] && self.fin[r] {
                "SF"
            } else if self.fin[o] {
                "S2"
            } else if self.fin[r] {
                "S3"
            } else {
                "S1"
            }
        } else {
            "OTH"
        }
    }

    pub fn duration(&self) -> f64 {
        (self.last - self.first).max(0.0)
    }

    /// Side `d`'s bytes as Zeek counts them: the sequence space its data covered
    /// (tshark numbers the first byte 1, whether or not the SYN was seen), so resent
    /// bytes count once and bytes the capture missed count too.
    pub fn sequence_bytes(&self, d: usize) -> u64 {
        self.seq_end[d].saturating_sub(1)
    }

    /// Bytes inside that space the capture does not hold, as Zeek's `missed_bytes`:
    /// holes never filled and payload cut off by the snap length.
    pub fn missed_bytes(&self) -> u64 {
        let holes: u64 = self
            .gaps
            .iter()
            .flatten()
            .map(|&(a, b)| b.saturating_sub(a))
            .sum();
        holes + self.cut_bytes[0] + self.cut_bytes[1]
    }

    pub fn endpoint(&self, i: usize) -> String {
        crate::report::endpoint(&self.addr[i], Some(self.port()[i]))
    }

    /// The connection's Community ID (joins Zeek's, Suricata's and Arkime's records).
    pub fn community_id(&self) -> Option<String> {
        crate::model::flow::community_id(
            &self.addr[0],
            &self.addr[1],
            6,
            Some(self.port[0]),
            Some(self.port[1]),
        )
    }

    pub fn label(&self) -> String {
        format!("{} -> {}", self.endpoint(0), self.endpoint(1))
    }

    /// The one definition of the handshake RTT: from the SYN that was answered (the last
    /// one sent) to the SYN-ACK. None when no SYN-ACK came (a refused SYN answered by
    /// RST is not a handshake).
    pub fn handshake_rtt(&self) -> Option<f64> {
        let answered = if self.syn_retries > 0 {
            self.retry_syn_time
        } else {
            self.syn_time
        };
        let t = self.synack_time.0 - answered;
        (t >= 0.0).then_some(t)
    }

    /// Connection setup: from the first SYN to the SYN-ACK, including the time lost to
    /// SYN retransmissions (a lost SYN costs the client's 1 s timeout, or more).
    pub fn setup_time(&self) -> Option<f64> {
        let t = self.synack_time.0 - self.syn_time;
        (t >= 0.0).then_some(t)
    }

    /// The one definition of a retransmission that counts as loss: it carried data, it
    /// was not spurious (tshark saw the original arrive) and it was not a teardown's
    /// (data resent with its FIN). SYN, FIN and keep-alive retransmissions carry none.
    /// Resends tshark calls out-of-order but whose bytes the capture had seen count too.
    pub fn loss_retransmissions(&self) -> u64 {
        let all = self.retrans_data[0] + self.retrans_data[1];
        all.saturating_sub(self.retrans_not_loss[0] + self.retrans_not_loss[1])
            + self.resent_unflagged[0]
            + self.resent_unflagged[1]
    }

    /// Segments of direction `d` lost before the capture point: the holes it saw,
    /// counted in segments of the largest size that direction sent (a burst of drops
    /// is one hole of several segments); at least one per hole. A hole the capture
    /// itself made looks the same (check_capture_trust tells them apart).
    pub fn lost_before_capture(&self, d: usize) -> u64 {
        let holes = self.lost_segment[d];
        if self.max_segment[d] == 0 {
            return holes;
        }
        self.gap_bytes[d].div_ceil(self.max_segment()[d]).max(holes)
    }

    /// The one loss estimate of a direction: segments lost before the capture point
    /// (holes) plus those lost after it (resends of bytes it saw). A resend that fills
    /// a hole is the hole's loss, counted once.
    pub fn lost_segments(&self, d: usize) -> u64 {
        self.lost_before_capture(d) + self.lost_after_capture[d]
    }

    /// The first data segment either way (time, frame).
    pub fn first_data(&self) -> Option<At> {
        match (self.data_first[0], self.data_first[1]) {
            (Some(a), Some(b)) => Some(if b.frame < a.frame { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// Whether the stream's longest silence was a wait on a zero window: the receiver's
    /// stall, not an idle application.
    pub fn silence_was_zero_window(&self) -> bool {
        (0..2).any(|d| {
            self.zero_window[d] > 0
                && (self.zw_unrecovered[d] || self.zw_stall_max[d] >= 0.9 * self.max_gap)
        })
    }

    /// [`TcpModel::estimated_loss`]'s rate for this stream alone.
    pub fn estimated_loss_pct(&self) -> f64 {
        let before = self.lost_before_capture(0) + self.lost_before_capture(1);
        let after = self.lost_after_capture[0] + self.lost_after_capture[1];
        loss_pct(before + after, self.data_segment_count() + before)
    }

    pub fn data_segment_count(&self) -> u64 {
        self.data_segments().iter().sum()
    }

    pub fn sorted_rtts(&self) -> Vec<f64> {
        let mut v = self.rtt.all().to_vec();
        v.sort_by(f64::total_cmp);
        v
    }

    /// A display filter for this stream, optionally narrowed.
    pub fn filter(&self, extra: Option<&str>) -> String {
        match extra {
            Some(e) => format!("tcp.stream == {} && {e}", self.id),
            None => format!("tcp.stream == {}", self.id),
        }
    }

    pub fn sample_frames(&self, kind: &str) -> Vec<u64> {
        let mut v: Vec<u64> = if kind == "reset" {
            self.first_reset
                .map(|f| u64::from(f.get()))
                .into_iter()
                .collect()
        } else {
            Vec::new()
        };
        if let Some((_, f)) = self.frames.iter().find(|(k, _)| *k == kind) {
            v.extend(f);
        }
        v.truncate(SAMPLE_FRAMES);
        v
    }

    fn add(&mut self, p: &TcpRow, g: &mut Globals) {
        let d = if *p.src == *self.addr[0] && p.sport == u64::from(self.port[0]) {
            0
        } else {
            1
        };
        let silence = if self.packets[0] + self.packets[1] > 0 {
            p.time - self.last
        } else {
            0.0
        };
        if self.packets[0] + self.packets[1] > 0 {
            let gap = p.time - self.last;
            if gap > self.max_gap {
                self.max_gap = gap;
                self.max_gap_after_frame = self.last_frame;
                self.max_gap_ended_by_retrans = p.retrans;
            }
            // a silence long enough to be more than round trips: ended by a
            // retransmission it was a timeout; ended by new data, that side's wait
            if gap >= STALL_S {
                let dd = self.detail_mut();
                if p.retrans {
                    dd.events_mut().rto_stall_total += gap;
                } else if p.payload > 0 {
                    // the same side spoke last: it paused inside its own message; the
                    // other side did: this one answered (or asked again) after a wait
                    if dd.last_data_dir == Some(d as u8) {
                        dd.pause_total[d] += gap;
                    } else {
                        dd.wait_total[d] += gap;
                    }
                }
            }
            if !self.last_gap.is_nan() {
                let prev = self.last_gap;
                let jd = self.detail_mut();
                jd.jitter += ((gap - prev).abs() - jd.jitter) / 16.0;
            }
            self.last_gap = gap;
        }
        self.last = self.last.max(p.time);
        self.first = self.first.min(p.time);
        let closed = |d: usize| self.fin[d] || self.rst[d];
        if !(closed(0) && closed(1)) {
            self.open_until = self.open_until.max(p.time);
        }
        self.last_frame = narrow(p.frame);
        self.packets[d] += 1;
        self.bytes[d] += p.len;
        self.ip_bytes[d] += p.ip_len;
        if self.service.is_none() {
            self.service = p.service;
        }
        let f = p.flags;
        if f & SYN != 0 && f & ACK == 0 {
            if self.syn[d] && !self.synack[1 - d] {
                // the SYN sent again: the first went unanswered
                let ev = self.detail_mut().events_mut();
                ev.syn_retries += 1;
                ev.retry_syn_time = p.time;
            } else if self.syn_time.is_nan() {
                self.syn_time = p.time;
            }
            self.syn[d] = true;
            self.syn_frame.get_or_insert(frame32(p.frame));
            self.history_mark(b's', d);
            self.syn_opts[d] = pack_syn(&syn_options(p));
        } else if f & SYN != 0 {
            if !self.synack[d] && self.syn[1 - d] {
                self.detail_mut().synack_time = Unseen(p.time);
            }
            self.synack[d] = true;
            self.synack_frame.get_or_insert(frame32(p.frame));
            self.history_mark(b'h', d);
            self.syn_opts[d] = pack_syn(&syn_options(p));
        }
        if f & FIN != 0 {
            self.fin[d] = true;
            self.history_mark(b'f', d);
            self.close.get_or_insert(Close::new(p, d, false));
        }
        if f & RST != 0 {
            if self.detail.as_ref().is_none_or(|dd| dd.reset.is_none()) {
                let after_fin = self.fin[0] || self.fin[1];
                let dd = self.detail_mut();
                let payload_before = dd.payload;
                dd.events_mut().reset = Some(Reset {
                    time: p.time,
                    frame: p.frame,
                    dir: d,
                    idle_before: silence.max(0.0),
                    after_fin,
                    payload_before,
                });
            }
            self.rst[d] = true;
            self.history_mark(b'r', d);
            self.sample("reset", p.frame);
            self.close.get_or_insert(Close::new(p, d, true));
        }
        if p.payload > 0 {
            self.history_mark(b'd', d);
            let dd = self.detail_mut();
            dd.payload[d] += p.payload;
            dd.data_segments[d] += 1;
            let at = At::new(p.time, p.frame);
            if dd.data_first[d].is_none()
                && let Some(other) = dd.data_last[1 - d]
            {
                dd.reply[d] = Some((other.time, at));
            }
            dd.data_first[d].get_or_insert(at);
            dd.data_last[d] = Some(at);
            dd.last_data_dir = Some(d as u8);
            // a resend of an earlier message's bytes does not start a new one
            let resend = p.retrans || p.spurious;
            let kept = dd.messages.len();
            match dd.messages.last_mut() {
                _ if dd.messages_truncated => {}
                // a resend ends the message later (its bytes arrive then), adds none
                Some(m) if m.dir() == d => {
                    m.last_time = at.time;
                    m.last_frame = at.frame;
                    if !resend {
                        m.bytes += p.payload;
                    }
                }
                Some(_) if resend => {}
                _ if kept < MAX_MESSAGES => dd.messages.push(Message {
                    first_time: at.time,
                    last_time: at.time,
                    first_frame: at.frame,
                    last_frame: at.frame,
                    bytes: p.payload,
                    receiver_stall: 0.0,
                    lost: 0,
                    dir: d as u8,
                }),
                _ => dd.messages_truncated = true,
            }
            if (p.retrans && !p.spurious || p.lost_segment)
                && !dd.messages_truncated
                && let Some(m) = dd.messages.last_mut()
                && m.dir() == d
            {
                m.lost += 1;
            }
        } else if f & ACK != 0 && f & (SYN | FIN | RST) == 0 {
            self.history_mark(b'a', d);
        }
        if let Some(w) = p.window
            && f & RST == 0
        {
            self.max_window[d] = self.max_window[d].max(narrow(w));
            if w > 0
                && self.zw_open[d].is_some()
                && let Some((t0, _)) = self.detail_mut().events_mut().zw_open[d].take()
            {
                let stall = p.time - t0;
                let dd = self.detail_mut();
                if let Some(m) = dd.messages.last_mut()
                    && m.dir() != d
                    && !dd.messages_truncated
                {
                    m.receiver_stall += stall;
                }
                let ev = dd.events_mut();
                ev.zw_stall_total[d] += stall;
                ev.zw_stall_max[d] = ev.zw_stall_max[d].max(stall);
            }
        }
        type Field = fn(&mut StreamEvents) -> &mut PerDir;
        let kinds: [(bool, &'static str, Field); 12] = [
            (p.retrans, "retransmission", |s| &mut s.retrans),
            (p.fast_retrans, "fast_retransmission", |s| {
                &mut s.fast_retrans
            }),
            (p.spurious, "spurious_retransmission", |s| &mut s.spurious),
            (p.lost_segment, "lost_segment", |s| &mut s.lost_segment),
            (p.ack_unseen, "ack_lost_segment", |s| &mut s.ack_unseen),
            (p.dup_ack, "duplicate_ack", |s| &mut s.dup_ack),
            (p.out_of_order, "out_of_order", |s| &mut s.out_of_order),
            (p.zero_window, "zero_window", |s| &mut s.zero_window),
            (p.zw_probe, "zero_window_probe", |s| &mut s.zw_probe),
            (p.window_full, "window_full", |s| &mut s.window_full),
            (p.window_update, "window_update", |s| &mut s.window_update),
            (p.keep_alive, "keep_alive", |s| &mut s.keep_alive),
        ];
        for (flag, kind, field) in kinds {
            if flag {
                field(self.detail_mut().events_mut())[d] += 1;
                self.sample(kind, p.frame);
            }
        }
        if p.payload > 0
            && let Some(seq) = p.seq
        {
            self.track_sequence(d, seq, p);
        }
        if p.retrans {
            let ev = self.detail_mut().events_mut();
            ev.retrans_bytes[d] += p.payload;
            ev.retrans_data[d] += u64::from(p.payload > 0);
            ev.retrans_not_loss[d] += u64::from(p.payload > 0 && (p.spurious || f & FIN != 0));
            self.history_mark(b't', d);
            g.retrans_times.push(p.time);
        }
        if p.keep_alive && !p.zw_probe && self.zw_open[1 - d].is_some() {
            self.detail_mut().events_mut().keepalive_probes[d] += 1;
        }
        if p.zero_window {
            self.history_mark(b'w', d);
            let ev = self.detail_mut().events_mut();
            if ev.zw_open[d].is_none() {
                ev.zw_open[d] = Some((p.time, p.frame));
            }
        }
        if p.dup_ack_num > self.max_dup_chain {
            self.detail_mut().events_mut().max_dup_chain = p.dup_ack_num;
        }
        // bytes in flight of a SYN or FIN (one sequence number) says nothing about the window
        if let Some(b) = p.in_flight.filter(|_| p.payload > 0)
            && b > self.max_in_flight[d]
        {
            self.detail_mut().max_in_flight[d] = b;
        }
        if let Some(rtt) = p.ack_rtt {
            let dd = self.detail_mut();
            // the ACK comes from the receiver; the sample measures the other side's path
            dd.rtt_count += 1;
            dd.rtt_sum += rtt;
            dd.rtt_min = if dd.rtt_count == 1 {
                rtt
            } else {
                dd.rtt_min.min(rtt)
            };
            dd.rtt_max = dd.rtt_max.max(rtt);
            // an ACK from side d times the data side 1-d sent
            dd.rtt_seen_dir[1 - d] += 1;
            let seen = dd.rtt_seen_dir[1 - d];
            dd.rtt
                .add(1 - d, rtt, dd.rtt_count(), u64::from(seen), p.frame);
            g.rtt_seen += 1;
            reservoir(
                &mut g.rtt_samples,
                GLOBAL_RTT_SAMPLES,
                g.rtt_seen,
                rtt,
                p.frame,
            );
        }
        if p.ecn == Some(3) {
            self.detail_mut().events_mut().ce_marks += 1;
            self.sample("ce", p.frame);
        }
        if f & ECE != 0 && f & SYN == 0 {
            self.detail_mut().events_mut().ece += 1;
        }
        if f & CWR != 0 && f & SYN == 0 {
            self.detail_mut().events_mut().cwr += 1;
        }
        // the peer's ACK passing bytes the capture lacks is Zeek's content gap
        // (history g/G), after this packet's own letters
        if f & ACK != 0
            && self.gap_pending[1 - d]
            && let Some(ev) = self
                .detail
                .as_deref_mut()
                .and_then(|dd| dd.events.as_deref_mut())
            && std::mem::take(&mut ev.gap_pending[1 - d])
        {
            self.history_mark(b'g', 1 - d);
        }
    }

    /// Orients the stream so index 0 is the originator (the SYN sender, or the side that
    /// did not send the SYN-ACK, or else the first sender), and closes open stalls.
    fn finish(&mut self) {
        debug_assert!(!self.oriented);
        self.oriented = true;
        let orig = if self.syn[0] || (!self.syn[1] && self.synack[1]) {
            0
        } else if self.syn[1] || self.synack[0] {
            1
        } else {
            0
        };
        let last = self.last;
        if let Some(dd) = self.detail.as_deref_mut() {
            // the lists grew by doubling while the pass fed them; they are final now
            dd.messages.shrink_to_fit();
            dd.rtt.shrink_to_fit();
            dd.frames.shrink_to_fit();
            for f in &mut dd.frames {
                f.1.shrink_to_fit();
            }
            for d in 0..2 {
                let Some(ev) = dd.events.as_deref_mut() else {
                    continue;
                };
                ev.gaps[d].shrink_to_fit();
                if let Some((t0, _)) = ev.zw_open[d].take() {
                    let stall = last - t0;
                    if let Some(m) = dd.messages.last_mut()
                        && m.dir() != d
                        && !dd.messages_truncated
                    {
                        m.receiver_stall += stall;
                    }
                    ev.zw_stall_total[d] += stall;
                    ev.zw_stall_max[d] = ev.zw_stall_max[d].max(stall);
                    ev.zw_unrecovered[d] = true;
                }
            }
        }
        if orig == 1 {
            self.swap();
            self.flipped = true;
        }
    }

    fn swap(&mut self) {
        self.addr.swap(0, 1);
        self.port.swap(0, 1);
        for a in [&mut self.bytes, &mut self.ip_bytes] {
            a.swap(0, 1);
        }
        for a in [&mut self.packets, &mut self.max_window] {
            a.swap(0, 1);
        }
        self.syn.swap(0, 1);
        self.synack.swap(0, 1);
        self.fin.swap(0, 1);
        self.rst.swap(0, 1);
        self.syn_opts.swap(0, 1);
        self.history.flip();
        if let Some(c) = &mut self.close {
            c.by = 1 - c.by;
        }
        let Some(dd) = self.detail.as_deref_mut() else {
            return;
        };
        for a in [&mut dd.payload, &mut dd.seq_end, &mut dd.max_in_flight] {
            a.swap(0, 1);
        }
        for a in [
            &mut dd.data_segments,
            &mut dd.max_segment,
            &mut dd.rtt_seen_dir,
        ] {
            a.swap(0, 1);
        }
        dd.rtt.swap();
        dd.data_first.swap(0, 1);
        dd.data_last.swap(0, 1);
        dd.reply.swap(0, 1);
        dd.pause_total.swap(0, 1);
        dd.wait_total.swap(0, 1);
        for m in &mut dd.messages {
            m.dir = 1 - m.dir;
        }
        let Some(ev) = dd.events.as_deref_mut() else {
            return;
        };
        for a in [
            &mut ev.retrans,
            &mut ev.retrans_bytes,
            &mut ev.retrans_data,
            &mut ev.retrans_not_loss,
            &mut ev.fast_retrans,
            &mut ev.spurious,
            &mut ev.lost_segment,
            &mut ev.ack_unseen,
            &mut ev.resent_unflagged,
            &mut ev.lost_after_capture,
            &mut ev.cut_bytes,
            &mut ev.gap_bytes,
            &mut ev.dup_ack,
            &mut ev.out_of_order,
            &mut ev.zero_window,
            &mut ev.zw_probe,
            &mut ev.keepalive_probes,
            &mut ev.window_full,
            &mut ev.window_update,
            &mut ev.keep_alive,
        ] {
            a.swap(0, 1);
        }
        ev.gaps.swap(0, 1);
        ev.zw_stall_total.swap(0, 1);
        ev.zw_stall_max.swap(0, 1);
        ev.zw_unrecovered.swap(0, 1);
        if let Some(r) = &mut ev.reset {
            r.dir = 1 - r.dir;
            r.payload_before.swap(0, 1);
        }
    }
}

fn syn_options(p: &TcpRow) -> SynOptions {
    SynOptions {
        mss: p.mss,
        wscale: p.wscale,
        sack_permitted: p.option_kinds.contains(&4),
        timestamps: p.option_kinds.contains(&8),
    }
}

/// Keeps a bounded, evenly spread sample: the first `cap`, then every n-th.
fn reservoir(v: &mut Vec<f64>, cap: usize, seen: u64, x: f64, frame: u64) {
    if v.len() < cap {
        v.push(x);
    } else {
        // deterministic replacement keeps results reproducible run to run
        let slot = (frame.wrapping_mul(2_654_435_761) % seen) as usize;
        if slot < cap {
            v[slot] = x;
        }
    }
}

#[derive(Debug, Default)]
struct Globals {
    rtt_samples: Vec<f64>,
    rtt_seen: u64,
    retrans_times: Vec<f64>,
}

/// Everything the TCP and performance tools read.
#[derive(Debug, Default)]
pub struct TcpModel {
    pub streams: Vec<Stream>,
    pub span: Span,
    pub tcp_packets: u64,
    pub rtt_samples: Vec<f64>,
    /// Retransmission count per second of capture time (second offset, count), busiest first.
    pub retrans_by_second: Vec<(u64, u64)>,
    pub capture_start: f64,
    pub time_backwards: u64,
    /// Packets tshark dissected as RTP (then `-z rtp,streams` is worth a pass).
    pub rtp_packets: u64,
    pub time_backwards_frames: Vec<u64>,
    // builder state, dropped by `finish`: streams by id, pass-wide samples, last time
    index: BTreeMap<u64, usize>,
    /// One copy of each address: a host's connections share it.
    hosts: SharedStrings,
    g: Globals,
    prev_time: f64,
}

impl Part for TcpModel {
    type Row = TcpRow;

    fn new(ctx: &Ctx) -> Self {
        Self {
            prev_time: f64::NEG_INFINITY,
            hosts: ctx.strings.clone(),
            ..Default::default()
        }
    }

    fn add(&mut self, p: TcpRow) {
        self.span.add(Some(p.time));
        if p.time < self.prev_time {
            self.time_backwards += 1;
            if self.time_backwards_frames.len() < SAMPLE_FRAMES {
                self.time_backwards_frames.push(p.frame);
            }
        }
        self.prev_time = p.time;
        self.rtp_packets += u64::from(p.rtp);
        let Some(id) = p.stream else { return };
        self.tcp_packets += 1;
        // streams in order of first appearance, found by id through a small index: no
        // second copy of every stream when the pass ends
        let (streams, hosts) = (&mut self.streams, &mut self.hosts);
        let i = *self.index.entry(id).or_insert_with(|| {
            streams.push(hosts.with(|h| Stream::new(id, &p, h)));
            streams.len() - 1
        });
        self.streams[i].add(&p, &mut self.g);
    }

    fn finish(&mut self) {
        self.index = BTreeMap::new();
        self.hosts.release();
        let mut g = std::mem::take(&mut self.g);
        self.streams.shrink_to_fit();
        for s in &mut self.streams {
            s.finish();
        }
        self.streams.sort_by_key(|s| s.id);
        self.capture_start = self.span.first.unwrap_or(0.0);
        let mut per_sec: BTreeMap<u64, u64> = BTreeMap::new();
        for t in &g.retrans_times {
            *per_sec
                .entry((t - self.capture_start).max(0.0) as u64)
                .or_default() += 1;
        }
        let mut by_sec: Vec<(u64, u64)> = per_sec.into_iter().collect();
        by_sec.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        by_sec.truncate(10);
        self.retrans_by_second = by_sec;
        g.rtt_samples.sort_by(f64::total_cmp);
        self.rtt_samples = g.rtt_samples;
    }

    fn approx_bytes(&self) -> usize {
        TcpModel::approx_bytes(self)
    }
}

impl TcpModel {
    /// Inline size of each stream plus what its lists hold on the heap.
    pub fn approx_bytes(&self) -> usize {
        let per_stream: usize = self
            .streams
            .iter()
            .map(|s| {
                let detail = s.detail.as_ref().map_or(0, |d| {
                    let events = d.events.as_ref().map_or(0, |e| {
                        std::mem::size_of::<StreamEvents>()
                            + 16 * (e.gaps[0].capacity() + e.gaps[1].capacity())
                    });
                    std::mem::size_of::<StreamDetail>()
                        + events
                        + d.rtt.heap_bytes()
                        + std::mem::size_of::<Message>() * d.messages.capacity()
                        + d.frames
                            .iter()
                            .map(|(_, v)| 48 + 8 * v.capacity())
                            .sum::<usize>()
                });
                // the addresses are shared by a host's connections
                detail
            })
            .sum();
        self.streams.capacity() * std::mem::size_of::<Stream>()
            + per_stream
            + 8 * self.rtt_samples.capacity()
    }

    /// Loss retransmissions, data segments and their ratio in percent (two decimals),
    /// for every tool that reports a retransmission rate.
    pub fn loss_rate(&self) -> (u64, u64, f64) {
        let r = self.total(Stream::loss_retransmissions);
        let d = self.total(Stream::data_segment_count);
        (r, d, loss_pct(r, d))
    }

    /// Loss estimated from where the capture sits (see [`Stream::lost_segments`]):
    /// segments lost before and after the capture point, and their share of the data
    /// segments sent (those seen plus those lost before the capture point).
    pub fn estimated_loss(&self) -> EstimatedLoss {
        let before = self.total(|s| s.lost_before_capture(0) + s.lost_before_capture(1));
        let after = self.total(|s| s.lost_after_capture[0] + s.lost_after_capture[1]);
        let sent = self.total(Stream::data_segment_count) + before;
        EstimatedLoss {
            before_capture: before,
            after_capture: after,
            pct: loss_pct(before + after, sent),
        }
    }

    pub fn total(&self, f: impl Fn(&Stream) -> u64) -> u64 {
        self.streams.iter().map(f).sum()
    }
}

#[cfg(test)]
impl TcpModel {
    /// What the streams hold, by kind, for the index's memory test.
    pub fn breakdown(&self) -> String {
        let (mut det, mut ev, mut rtt, mut msgs, mut msgn, mut fr, mut frn, mut gaps) =
            (0, 0, 0, 0, 0, 0, 0, 0);
        for s in &self.streams {
            if let Some(d) = &s.detail {
                det += 1;
                if let Some(e) = &d.events {
                    ev += 1;
                    gaps += 16 * (e.gaps[0].capacity() + e.gaps[1].capacity());
                }
                rtt += d.rtt.heap_bytes();
                msgs += d.messages.capacity();
                msgn += (!d.messages.is_empty()) as usize;
                fr += d
                    .frames
                    .iter()
                    .map(|(_, v)| 8 * v.capacity())
                    .sum::<usize>()
                    + 24 * d.frames.capacity();
                frn += d.frames.len();
            }
        }
        format!(
            "streams {} x {} B; detail {} x {} B; events {} x {} B; rtt heap {} B; messages {} ({} streams) x {} B; frames {} B ({} kinds); gaps {} B; rtt_samples {}",
            self.streams.len(),
            std::mem::size_of::<Stream>(),
            det,
            std::mem::size_of::<StreamDetail>(),
            ev,
            std::mem::size_of::<StreamEvents>(),
            rtt,
            msgs,
            msgn,
            std::mem::size_of::<Message>(),
            fr,
            frn,
            gaps,
            self.rtt_samples.capacity()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(frame: u64, t: f64, from_client: bool, flags: u64, payload: u64) -> TcpRow {
        let (src, dst, sport, dport) = if from_client {
            ("10.0.0.1", "10.0.0.2", 40000, 80)
        } else {
            ("10.0.0.2", "10.0.0.1", 80, 40000)
        };
        let line = format!(
            "{frame}\t{t}\t60\t0\t{src}\t\t{dst}\t\t{sport}\t{dport}\t0x{flags:04x}\t{payload}\t64240"
        );
        TcpRow::parse_line(&line).unwrap()
    }

    fn stream_of(rows: &[TcpRow]) -> Stream {
        let mut g = Globals::default();
        let p0 = &rows[0];
        let mut s = Stream::new(0, p0, &mut Interner::default());
        for r in rows {
            s.add(r, &mut g);
        }
        s.finish();
        s
    }

    /// A data segment from the server with its relative sequence number and tshark's
    /// analysis flags set as named.
    fn data(frame: u64, t: f64, seq: u64, len: u64, flags: &[&str]) -> TcpRow {
        let mut r = row(frame, t, false, ACK, len);
        r.seq = Some(seq);
        r.retrans = flags.contains(&"retransmission");
        r.out_of_order = flags.contains(&"out_of_order");
        r.lost_segment = flags.contains(&"lost_segment");
        r
    }

    fn handshake() -> Vec<TcpRow> {
        vec![
            row(1, 0.0, true, SYN, 0),
            row(2, 0.01, false, SYN | ACK, 0),
            row(3, 0.02, true, ACK, 0),
        ]
    }

    #[test]
    fn rtt_samples_keep_what_three_reservoirs_kept() {
        // the reference: the overall reservoir and one per sender, each filled separately
        for len in [0usize, 1, 5, 63, 64, 65, 66, 130, 500] {
            let (mut all, mut by, mut seen) = (Vec::new(), [Vec::new(), Vec::new()], [0u64; 2]);
            let mut r = RttSamples::default();
            for i in 0..len as u64 {
                let sender = usize::from(i.wrapping_mul(7) % 3 == 0);
                let (rtt, frame) = (0.001 * (i % 17) as f64, 10 + 3 * i);
                seen[sender] += 1;
                reservoir(&mut all, RTT_SAMPLES, i + 1, rtt, frame);
                reservoir(&mut by[sender], RTT_SAMPLES, seen[sender], rtt, frame);
                r.add(sender, rtt, i + 1, seen[sender], frame);
            }
            assert_eq!(r.all(), &all[..], "{len}");
            for (d, expected) in by.iter().enumerate() {
                assert_eq!(&r.of_sender(d)[..], &expected[..], "{len} {d}");
            }
            r.swap();
            for d in 0..2 {
                assert_eq!(&r.of_sender(d)[..], &by[1 - d][..], "{len} {d} swapped");
            }
        }
    }

    #[test]
    fn loss_is_placed_relative_to_the_capture_point() {
        // near the sender: segment 2 is sent, lost downstream, and resent 1 ms later;
        // tshark's timing heuristic calls the resend out-of-order
        let mut rows = handshake();
        rows.extend([
            data(4, 0.10, 1, 1000, &[]),
            data(5, 0.10, 1001, 1000, &[]),
            data(6, 0.10, 2001, 1000, &[]),
            data(7, 0.101, 1001, 1000, &["out_of_order"]),
        ]);
        let s = stream_of(&rows);
        assert_eq!(s.resent_unflagged, [0, 1]);
        assert_eq!(s.lost_after_capture, [0, 1]);
        assert_eq!(s.lost_before_capture(1), 0);
        assert_eq!(s.loss_retransmissions(), 1);
        assert_eq!(s.lost_segments(1), 1);

        // near the receiver: two segments lost upstream leave one hole of 2000 bytes,
        // filled later; the fills are the hole's loss, not another loss
        let mut rows = handshake();
        rows.extend([
            data(4, 0.10, 1, 1000, &[]),
            data(5, 0.10, 3001, 1000, &["lost_segment"]),
            data(6, 0.20, 1001, 1000, &["retransmission"]),
            data(7, 0.20, 2001, 1000, &["out_of_order"]),
        ]);
        let s = stream_of(&rows);
        assert_eq!(s.lost_segment, [0, 1]);
        assert_eq!(s.lost_before_capture(1), 2);
        assert_eq!(s.lost_after_capture, [0, 0]);
        assert_eq!(s.resent_unflagged, [0, 0]);
        assert_eq!(s.lost_segments(1), 2);
    }

    #[test]
    fn keep_alives_into_a_zero_window_are_probes() {
        let mut rows = handshake();
        rows.push(data(4, 0.1, 1, 1000, &[]));
        let mut zw = row(5, 0.11, true, ACK, 0);
        zw.window = Some(0);
        zw.zero_window = true;
        rows.push(zw);
        let mut ka = row(6, 3.0, false, ACK, 0);
        ka.keep_alive = true;
        rows.push(ka);
        let s = stream_of(&rows);
        assert_eq!(s.keepalive_probes, [0, 1]);
        assert_eq!(s.keep_alive, [0, 1]);
        assert!(s.silence_was_zero_window());
    }

    #[test]
    fn zeek_states_and_history() {
        // S1 with history ShADad, as Zeek's conn.log for wikipedia.pcap
        let s = stream_of(&[
            row(1, 0.0, true, SYN, 0),
            row(2, 0.1, false, SYN | ACK, 0),
            row(3, 0.2, true, ACK, 0),
            row(4, 0.3, true, ACK, 100),
            row(5, 0.4, false, ACK, 0),
            row(6, 0.5, false, ACK, 200),
        ]);
        assert_eq!(s.conn_state(), "S1");
        assert_eq!(s.history(), "ShADad");
        // refused: SYN answered by RST
        let s = stream_of(&[row(1, 0.0, true, SYN, 0), row(2, 0.1, false, RST | ACK, 0)]);
        assert_eq!(s.conn_state(), "REJ");
        // a SYN-ACK seen first still makes the other side the originator
        let s = stream_of(&[row(1, 0.0, false, SYN | ACK, 0)]);
        assert_eq!(s.conn_state(), "OTH");
        assert_eq!(s.history(), "^h");
        assert_eq!(s.endpoint(0), "10.0.0.1:40000");
        let s = stream_of(&[
            row(1, 0.0, true, SYN, 0),
            row(2, 0.1, false, SYN | ACK, 0),
            row(3, 0.2, true, ACK | FIN, 0),
            row(4, 0.3, false, ACK | FIN, 0),
        ]);
        assert_eq!(s.conn_state(), "SF");
        let s = stream_of(&[row(1, 0.0, true, SYN, 0), row(2, 3.0, true, SYN, 0)]);
        assert_eq!(s.conn_state(), "S0");
        let s = stream_of(&[
            row(1, 0.0, true, SYN, 0),
            row(2, 0.1, false, SYN | ACK, 0),
            row(3, 0.2, true, RST, 0),
        ]);
        assert_eq!(s.conn_state(), "RSTO");
    }

    #[test]
    fn messages_split_a_keep_alive_conversation_into_requests_and_answers() {
        let mut rows = handshake();
        let req = |frame, t, len| {
            let mut r = row(frame, t, true, ACK, len);
            r.seq = Some(1);
            r
        };
        rows.extend([
            req(4, 0.1, 100),
            data(5, 0.2, 1, 1000, &[]),
            data(6, 0.2, 1001, 1000, &[]),
            // the second answer segment again: lost downstream
            data(7, 0.4, 1001, 1000, &["retransmission"]),
            req(8, 1.0, 120),
            data(9, 1.7, 2001, 500, &[]),
        ]);
        let s = stream_of(&rows);
        let m = &s.messages;
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m.iter().map(Message::dir).collect::<Vec<_>>(), [0, 1, 0, 1]);
        // the resend belongs to the first answer, ends it, and adds no bytes
        assert_eq!(
            (m[1].first_frame(), m[1].last_frame(), m[1].bytes, m[1].lost),
            (5, 7, 2000, 1)
        );
        assert_eq!(
            (m[3].first_time, m[3].first_frame(), m[3].bytes),
            (1.7, 9, 500)
        );
        assert!(!s.messages_truncated);
    }

    #[test]
    fn the_first_reset_says_who_when_and_after_what() {
        use crate::analysis::connections::reset_kind;
        // data both ways, then 15 s of silence, then the server resets: an idle timer
        let mut rows = handshake();
        rows.extend([
            row(4, 0.1, true, ACK, 10),
            data(5, 0.2, 1, 100, &[]),
            row(6, 15.2, false, RST | ACK, 0),
        ]);
        let s = stream_of(&rows);
        let r = s.reset.unwrap();
        assert_eq!((r.dir, r.frame, r.payload_before), (1, 6, [10, 100]));
        assert!((r.idle_before - 15.0).abs() < 1e-9);
        assert_eq!(reset_kind(&s, &r), "after_idle");
        // a RST after the client's FIN closes what was already closing
        let mut rows = handshake();
        rows.extend([row(4, 0.1, true, ACK | FIN, 0), row(5, 0.2, false, RST, 0)]);
        let s = stream_of(&rows);
        assert_eq!(reset_kind(&s, &s.reset.unwrap()), "after_close");
        // a RST answering the SYN refuses the connection
        let s = stream_of(&[row(1, 0.0, true, SYN, 0), row(2, 0.01, false, RST | ACK, 0)]);
        assert_eq!(reset_kind(&s, &s.reset.unwrap()), "refused");
    }
}
