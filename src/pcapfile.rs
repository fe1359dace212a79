//! Our own pcap/pcapng reader: record walking without dissection.
//!
//! It answers what capinfos used to (packets, span, link type, snaplen), counts the
//! packets of a file dumpcap is still writing, and fetches the raw bytes of chosen frames
//! without a second tshark pass. Records are numbered exactly as tshark numbers frames
//! (1-based, in file order, including the non-packet records tshark shows as frames:
//! systemd journal entries, custom blocks, sysdig events), because every frame number a
//! result hands out is tshark's. Reading stops where tshark would stop with an error
//! (absurd lengths, a packet larger than tshark accepts, an undeclared interface), and
//! never goes past the size the file had when it was opened.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// tshark's largest packet for ordinary link types (WTAP_MAX_PACKET_SIZE_STANDARD).
const MAX_PACKET_STANDARD: u32 = 262_144;
/// A pcapng block longer than this is damage, not data (tshark refuses them too).
const MAX_BLOCK: u32 = 128 * 1024 * 1024;
/// A gap between consecutive packets worth reporting as a clock jump.
pub const TIME_JUMP_S: f64 = 86_400.0;

/// The largest packet tshark accepts for a link type.
fn max_packet(linktype: u32) -> u32 {
    match linktype {
        // D-Bus, USBPcap: tshark allows 128 MiB; EBHSCR 8 MiB
        231 | 249 => 128 * 1024 * 1024,
        279 => 8 * 1024 * 1024,
        _ => MAX_PACKET_STANDARD,
    }
}

/// capinfos-style names of the common link types.
fn encapsulation_name(linktype: u32) -> String {
    match linktype {
        0 | 108 => "null".into(),
        1 => "ether".into(),
        9 | 50 => "ppp".into(),
        12 | 14 | 101 => "rawip".into(),
        104 => "chdlc".into(),
        105 => "ieee-802-11".into(),
        113 => "linux-sll".into(),
        119 => "ieee-802-11-prism".into(),
        127 => "ieee-802-11-radiotap".into(),
        228 => "rawip4".into(),
        229 => "rawip6".into(),
        276 => "linux-sll2".into(),
        n => format!("linktype-{n}"),
    }
}

/// One record as the walker sees it.
pub struct Record<'a> {
    /// tshark's frame number.
    pub frame: u64,
    /// Seconds since the epoch, when the record carries a time.
    pub time: Option<f64>,
    /// The same time exactly, in nanoseconds (an f64 of today's epoch seconds keeps
    /// only about a quarter of a microsecond).
    pub time_ns: Option<i128>,
    pub caplen: u32,
    /// The packet's length on the wire; more than `caplen` when the snapshot length cut it.
    pub orig_len: u32,
    /// The link type of the interface it was captured on, when it is a packet.
    pub linktype: Option<u32>,
    /// The packet bytes, when the walk asked for them.
    pub data: Option<&'a [u8]>,
}

/// Facts about a capture file from its records (what capinfos reports, with tshark's
/// frame numbering), plus what looks wrong with its clock or structure.
#[derive(Debug, Clone, Default, serde::Serialize, schemars::JsonSchema)]
pub struct CaptureSummary {
    /// `pcap`, `nsecpcap` or `pcapng`.
    pub file_type: String,
    /// Link-layer encapsulation, e.g. `ether`, `linux-sll`, or `per-packet` when mixed.
    pub encapsulation: String,
    /// Records tshark numbers as frames.
    pub packets: u64,
    /// File size when it was opened; nothing beyond it was read.
    pub file_bytes: u64,
    /// Sum of captured packet lengths.
    pub data_bytes: u64,
    pub duration_s: f64,
    pub first_epoch: Option<f64>,
    pub last_epoch: Option<f64>,
    /// The first and last packet times exactly, in nanoseconds since the epoch.
    #[serde(skip)]
    pub first_ns: Option<i128>,
    #[serde(skip)]
    pub last_ns: Option<i128>,
    /// The snapshot length in the file header, when the format records one.
    pub snaplen: Option<u64>,
    /// Frames captured shorter than they were on the wire (the snapshot length cut them).
    #[serde(skip_serializing_if = "is_zero")]
    pub truncated_frames: u64,
    /// The first such frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_truncated_frame: Option<u64>,
    /// pcapng capture interfaces, with the drop counters their statistics blocks hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceInfo>,
    pub strict_time_order: Option<bool>,
    /// Why reading stopped before the end of the file (tshark stops there too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
    /// The largest forward gap between consecutive packets, when it exceeds a day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_jump: Option<TimeJump>,
    /// The largest step back in time between consecutive packets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_reversal: Option<TimeJump>,
}

/// A jump of the capture clock between frame `frame - 1` and `frame`.
#[derive(Debug, Clone, Copy, serde::Serialize, schemars::JsonSchema)]
pub struct TimeJump {
    pub frame: u64,
    pub seconds: f64,
}

impl CaptureSummary {
    /// One sentence about clock jumps, for capture warnings and findings.
    pub fn time_warning(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(j) = self.time_jump {
            parts.push(format!(
                "timestamps jump forward by {} at frame {}",
                human_span(j.seconds),
                j.frame
            ));
        }
        if let Some(j) = self.time_reversal {
            parts.push(format!(
                "timestamps go back by {} at frame {}",
                human_span(j.seconds),
                j.frame
            ));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "{}: the capture clock is not continuous, so durations and rates over the whole file are not meaningful (look at the frames around the jump, or narrow the analysis with a display_filter on frame.time)",
                parts.join("; ")
            )
        })
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A duration in the largest unit that keeps it readable ("136 years", "3.2 days").
pub fn human_span(s: f64) -> String {
    const YEAR: f64 = 365.25 * 86_400.0;
    if s >= YEAR {
        format!("{:.0} years", s / YEAR)
    } else if s >= 86_400.0 {
        format!("{:.1} days", s / 86_400.0)
    } else if s >= 3600.0 {
        format!("{:.1} hours", s / 3600.0)
    } else {
        format!("{s:.3} s")
    }
}

/// Walks the records of an open capture up to `limit` bytes, calling `on_record` until
/// it returns false. `with_data` reads the packet bytes; without it they are skipped.
/// Returns why the walk stopped early, if the file is damaged there.
pub fn walk(
    file: File,
    limit: u64,
    with_data: bool,
    mut on_record: impl FnMut(&Record<'_>) -> bool,
) -> std::io::Result<Walked> {
    let mut r = Bounded {
        inner: BufReader::with_capacity(1 << 20, file),
        left: limit,
    };
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    let mut w = Walked::default();
    match magic {
        [0x0a, 0x0d, 0x0d, 0x0a] => walk_pcapng(&mut r, with_data, &mut on_record, &mut w),
        _ => walk_pcap(&mut r, magic, with_data, &mut on_record, &mut w),
    };
    Ok(w)
}

/// What a walk learnt about the file besides its records.
#[derive(Debug, Default)]
pub struct Walked {
    pub file_type: &'static str,
    pub linktypes: BTreeSet<u32>,
    pub snaplen: Option<u64>,
    /// pcapng interfaces in file order, with their last statistics block.
    pub interfaces: Vec<InterfaceInfo>,
    pub damaged: Option<String>,
}

/// One capture interface of a pcapng file.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct InterfaceInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub linktype: u32,
    /// Its last interface statistics block, when the file has one (dumpcap writes one
    /// per interface when the capture stops).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<InterfaceStats>,
}

/// The counters of a pcapng interface statistics block: what the capturing side itself
/// knows it missed (tshark has no field for them).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct InterfaceStats {
    /// Packets the interface received (isb_ifrecv).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
    /// Packets the interface dropped, for lack of buffers (isb_ifdrop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_by_interface: Option<u64>,
    /// Packets the operating system dropped (isb_osdrop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_by_os: Option<u64>,
    /// Packets delivered to the capturing program (isb_usrdeliv).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
}

impl InterfaceStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_by_interface.unwrap_or(0) + self.dropped_by_os.unwrap_or(0)
    }
}

/// A reader that never reads past the size the file had when it was opened.
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

impl Bounded<BufReader<File>> {
    /// Skips `n` bytes; false when the file ends first.
    fn skip(&mut self, n: u64) -> bool {
        if n > self.left {
            return false;
        }
        if self.inner.seek_relative(n as i64).is_err() {
            return false;
        }
        self.left -= n;
        true
    }
}

fn walk_pcap(
    r: &mut Bounded<BufReader<File>>,
    magic: [u8; 4],
    with_data: bool,
    on_record: &mut impl FnMut(&Record<'_>) -> bool,
    w: &mut Walked,
) {
    let nsec = matches!(magic, [0x4d, 0x3c, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d]);
    w.file_type = if nsec { "nsecpcap" } else { "pcap" };
    let u32_of = pcap_u32(magic);
    let mut rest = [0u8; 20];
    if r.read_exact(&mut rest).is_err() {
        w.damaged = Some("the file ends inside its pcap header".into());
        return;
    }
    w.snaplen = Some(u64::from(u32_of(&rest[12..16]))).filter(|&s| s > 0);
    let linktype = u32_of(&rest[16..20]) & 0xffff;
    w.linktypes.insert(linktype);
    let max = max_packet(linktype);
    let scale = if nsec { 1e-9 } else { 1e-6 };
    let mut hdr = [0u8; 16];
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        match read_full(r, &mut hdr) {
            Ok(0) => return,
            Ok(16) => {}
            _ => {
                w.damaged = Some(format!("the file is cut short after frame {n}"));
                return;
            }
        }
        let caplen = u32_of(&hdr[8..12]);
        let orig_len = u32_of(&hdr[12..16]);
        if caplen > max {
            w.damaged = Some(format!(
                "frame {} claims {caplen} captured bytes, more than tshark accepts ({max}): the file is damaged there",
                n + 1
            ));
            return;
        }
        let time = f64::from(u32_of(&hdr[0..4])) + f64::from(u32_of(&hdr[4..8])) * scale;
        let frac_ns = i128::from(u32_of(&hdr[4..8])) * if scale < 1e-6 { 1 } else { 1000 };
        let time_ns = i128::from(u32_of(&hdr[0..4])) * 1_000_000_000 + frac_ns;
        let data = if with_data {
            buf.resize(caplen as usize, 0);
            if r.read_exact(&mut buf).is_err() {
                w.damaged = Some(format!("the file is cut short inside frame {}", n + 1));
                return;
            }
            Some(&buf[..])
        } else {
            if !r.skip(u64::from(caplen)) {
                w.damaged = Some(format!("the file is cut short inside frame {}", n + 1));
                return;
            }
            None
        };
        n += 1;
        let rec = Record {
            frame: n,
            time: Some(time),
            time_ns: Some(time_ns),
            caplen,
            orig_len,
            linktype: Some(linktype),
            data,
        };
        if !on_record(&rec) {
            return;
        }
    }
}

/// A reader of a classic pcap's 32-bit numbers, in the byte order its magic names.
pub fn pcap_u32(magic: [u8; 4]) -> impl Fn(&[u8]) -> u32 {
    let big = matches!(magic, [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d]);
    move |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Per-interface facts of the current pcapng section.
struct Interface {
    linktype: u32,
    /// Seconds per timestamp unit.
    resolution: f64,
    /// The same resolution exactly: timestamp units per second.
    units_per_s: u128,
    offset_s: f64,
}

/// pcapng block types tshark turns into frames besides packets: systemd journal
/// entries, sysdig events, and custom blocks (copyable and not).
pub fn is_frame_block(t: u32) -> bool {
    matches!(t, 2 | 3 | 6 | 9 | 0x204 | 0x208 | 0x0000_0BAD | 0x4000_0BAD)
}

fn walk_pcapng(
    r: &mut Bounded<BufReader<File>>,
    with_data: bool,
    on_record: &mut impl FnMut(&Record<'_>) -> bool,
    w: &mut Walked,
) {
    w.file_type = "pcapng";
    let mut little = true;
    let mut first = true;
    let mut ifaces: Vec<Interface> = Vec::new();
    // interface ids restart in each section; `w.interfaces` numbers them file-wide
    let mut section_base = 0usize;
    let mut body = Vec::new();
    let mut n = 0u64;
    loop {
        let mut head = [0u8; 8];
        let block_type_raw: [u8; 4];
        if first {
            first = false;
            block_type_raw = [0x0a, 0x0d, 0x0d, 0x0a];
            if r.read_exact(&mut head[4..8]).is_err() {
                w.damaged = Some("the file ends inside its section header".into());
                return;
            }
        } else {
            match read_full(r, &mut head) {
                Ok(0) => return,
                Ok(8) => {}
                _ => {
                    w.damaged = Some(format!("the file is cut short after frame {n}"));
                    return;
                }
            }
            block_type_raw = [head[0], head[1], head[2], head[3]];
        }
        let len_raw = [head[4], head[5], head[6], head[7]];
        let is_shb = block_type_raw == [0x0a, 0x0d, 0x0d, 0x0a];
        if is_shb {
            // the byte-order magic after the length decides how this section is read
            let mut bom = [0u8; 4];
            if r.read_exact(&mut bom).is_err() {
                w.damaged = Some("the file ends inside a section header".into());
                return;
            }
            little = match u32::from_le_bytes(bom) {
                0x1a2b_3c4d => true,
                0x4d3c_2b1a => false,
                _ => {
                    w.damaged = Some(format!(
                        "a section header after frame {n} has no valid byte-order magic"
                    ));
                    return;
                }
            };
            ifaces.clear();
            section_base = w.interfaces.len();
        }
        let u32_from = |a: [u8; 4]| {
            if little {
                u32::from_le_bytes(a)
            } else {
                u32::from_be_bytes(a)
            }
        };
        let block_type = u32_from(block_type_raw);
        let len = u32_from(len_raw);
        let consumed = if is_shb { 12 } else { 8 };
        if len < consumed + 4 || len % 4 != 0 || len > MAX_BLOCK {
            w.damaged = Some(format!(
                "a block after frame {n} has an impossible length ({len} bytes): the file is damaged there"
            ));
            return;
        }
        let body_len = (len - consumed) as usize;
        let wants_body = is_shb
            || block_type == 1
            || block_type == 5
            || (is_frame_block(block_type) && with_data);
        let wants_head = is_frame_block(block_type);
        if wants_body {
            body.resize(body_len, 0);
            if r.read_exact(&mut body).is_err() {
                w.damaged = Some(format!(
                    "the file is cut short inside the block after frame {n}"
                ));
                return;
            }
        } else if wants_head {
            // only the fixed part of a packet block (20 bytes) is needed for its facts
            let headlen = body_len.min(20);
            body.resize(headlen, 0);
            if r.read_exact(&mut body).is_err() || !r.skip((body_len - headlen) as u64) {
                w.damaged = Some(format!("the file is cut short inside frame {}", n + 1));
                return;
            }
        } else if !r.skip(body_len as u64) {
            w.damaged = Some(format!(
                "the file is cut short inside the block after frame {n}"
            ));
            return;
        }
        let u32_at = |o: usize| u32_from([body[o], body[o + 1], body[o + 2], body[o + 3]]);
        let u16_at = |o: usize| {
            let a = [body[o], body[o + 1]];
            if little {
                u16::from_le_bytes(a)
            } else {
                u16::from_be_bytes(a)
            }
        };
        match block_type {
            1 => {
                if body.len() < 12 {
                    w.damaged = Some("an interface description block is too short".into());
                    return;
                }
                let linktype = u32::from(u16_at(0));
                let snaplen = u64::from(u32_at(4));
                let opts = interface_options(&body[8..body.len() - 4], little);
                let (units_per_s, offset_s) = (opts.units_per_s, opts.offset_s);
                w.interfaces.push(InterfaceInfo {
                    name: opts.name,
                    linktype,
                    stats: None,
                });
                let resolution = 1.0 / units_per_s as f64;
                w.linktypes.insert(linktype);
                if snaplen > 0 {
                    w.snaplen = Some(w.snaplen.map_or(snaplen, |s| s.max(snaplen)));
                }
                ifaces.push(Interface {
                    linktype,
                    resolution,
                    units_per_s,
                    offset_s,
                });
            }
            // interface statistics: counters since the capture started, so the last
            // block of each interface holds the totals
            5 if body.len() >= 16 => {
                let iface = section_base + u32_at(0) as usize;
                let stats = statistics_options(&body[12..body.len() - 4], little);
                if let Some(i) = w.interfaces.get_mut(iface) {
                    i.stats = Some(stats);
                }
            }
            t if is_frame_block(t) => {
                // (offset of the data, captured length, original length, interface, time)
                let fixed = match t {
                    6 | 2 => {
                        if body.len() < 20 {
                            w.damaged = Some(format!(
                                "frame {} is a packet block too short for its header",
                                n + 1
                            ));
                            return;
                        }
                        let iface = if t == 6 {
                            u32_at(0)
                        } else {
                            u32::from(u16_at(0))
                        };
                        let ts = (u64::from(u32_at(4)) << 32) | u64::from(u32_at(8));
                        Some((20usize, u32_at(12), u32_at(16), iface, Some(ts)))
                    }
                    3 => {
                        if body_len < 8 {
                            w.damaged = Some(format!(
                                "frame {} is a simple packet block too short",
                                n + 1
                            ));
                            return;
                        }
                        let orig = u32_at(0);
                        let room = (body_len - 8) as u32;
                        Some((4usize, orig.min(room), orig, 0, None))
                    }
                    _ => None,
                };
                let (data_off, caplen, orig_len, (time, time_ns), linktype) = match fixed {
                    Some((off, cap, orig, iface, ts)) => {
                        let Some(ifc) = ifaces.get(iface as usize) else {
                            w.damaged = Some(format!(
                                "frame {} refers to interface {iface}, which no interface description block declared (tshark stops there)",
                                n + 1
                            ));
                            return;
                        };
                        if cap > max_packet(ifc.linktype) {
                            w.damaged = Some(format!(
                                "frame {} claims {cap} captured bytes, more than tshark accepts: the file is damaged there",
                                n + 1
                            ));
                            return;
                        }
                        if off as u64 + u64::from(cap) + 4 > body_len as u64 {
                            w.damaged = Some(format!(
                                "frame {} claims {cap} captured bytes, more than its block holds: the file is damaged there",
                                n + 1
                            ));
                            return;
                        }
                        let time = ts.map(|ts| ts as f64 * ifc.resolution + ifc.offset_s);
                        let time_ns = ts.map(|ts| {
                            (u128::from(ts) * 1_000_000_000 / ifc.units_per_s) as i128
                                + ifc.offset_s as i128 * 1_000_000_000
                        });
                        (off, cap, orig, (time, time_ns), Some(ifc.linktype))
                    }
                    None => {
                        let len = body_len.saturating_sub(4) as u32;
                        (0usize, len, len, (None, None), None)
                    }
                };
                n += 1;
                let data = (with_data && fixed.is_some())
                    .then(|| &body[data_off..data_off + caplen as usize]);
                let rec = Record {
                    frame: n,
                    time,
                    time_ns,
                    caplen: if fixed.is_some() { caplen } else { 0 },
                    orig_len: if fixed.is_some() { orig_len } else { 0 },
                    linktype,
                    data,
                };
                if !on_record(&rec) {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// What an interface description block's options say.
struct InterfaceOptions {
    /// if_tsresol (9), as timestamp units per second.
    units_per_s: u128,
    /// if_tsoffset (14).
    offset_s: f64,
    /// if_name (2).
    name: Option<String>,
}

/// A pcapng options list as (code, value) pairs, up to opt_endofopt or a malformed one.
fn options(mut opts: &[u8], little: bool) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while opts.len() >= 4 {
        let (code, len) = if little {
            (
                u16::from_le_bytes([opts[0], opts[1]]),
                u16::from_le_bytes([opts[2], opts[3]]) as usize,
            )
        } else {
            (
                u16::from_be_bytes([opts[0], opts[1]]),
                u16::from_be_bytes([opts[2], opts[3]]) as usize,
            )
        };
        if code == 0 || 4 + len > opts.len() {
            break;
        }
        out.push((code, &opts[4..4 + len]));
        opts = &opts[(4 + len).next_multiple_of(4).min(opts.len())..];
    }
    out
}

/// isb_ifrecv (4), isb_ifdrop (5), isb_osdrop (7), isb_usrdeliv (8) of an interface
/// statistics block.
fn statistics_options(opts: &[u8], little: bool) -> InterfaceStats {
    let mut s = InterfaceStats::default();
    for (code, v) in options(opts, little) {
        let Ok(a) = <[u8; 8]>::try_from(v) else {
            continue;
        };
        let n = if little {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        };
        match code {
            4 => s.received = Some(n),
            5 => s.dropped_by_interface = Some(n),
            7 => s.dropped_by_os = Some(n),
            8 => s.delivered = Some(n),
            _ => {}
        }
    }
    s
}

fn interface_options(opts: &[u8], little: bool) -> InterfaceOptions {
    let mut resolution: u128 = 1_000_000;
    let mut offset = 0.0;
    let mut name = None;
    for (code, v) in options(opts, little) {
        let len = v.len();
        match (code, len) {
            (2, _) => {
                name = Some(
                    String::from_utf8_lossy(v)
                        .trim_end_matches('\0')
                        .chars()
                        .take(64)
                        .collect(),
                )
            }
            (9, 1) => {
                let b = v[0];
                // like tshark, an absurd resolution falls back to microseconds
                resolution = if b & 0x80 == 0 {
                    if b <= 18 {
                        10u128.pow(u32::from(b))
                    } else {
                        1_000_000
                    }
                } else if (b & 0x7f) <= 63 {
                    1u128 << (b & 0x7f)
                } else {
                    1_000_000
                };
            }
            (14, 8) => {
                let a = [v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]];
                offset = if little {
                    i64::from_le_bytes(a)
                } else {
                    i64::from_be_bytes(a)
                } as f64;
            }
            _ => {}
        }
    }
    InterfaceOptions {
        units_per_s: resolution,
        offset_s: offset,
        name,
    }
}

/// Summarises an open capture, reading at most `limit` bytes (its size at open).
pub fn summarize(file: File, limit: u64) -> std::io::Result<CaptureSummary> {
    let mut s = CaptureSummary {
        file_bytes: limit,
        ..Default::default()
    };
    let mut prev: Option<f64> = None;
    let mut ordered = true;
    let walked = walk(file, limit, false, |rec| {
        s.packets = rec.frame;
        s.data_bytes += u64::from(rec.caplen);
        if rec.orig_len > rec.caplen {
            s.truncated_frames += 1;
            s.first_truncated_frame.get_or_insert(rec.frame);
        }
        if let Some(ns) = rec.time_ns {
            s.first_ns = Some(s.first_ns.map_or(ns, |f| f.min(ns)));
            s.last_ns = Some(s.last_ns.map_or(ns, |l| l.max(ns)));
        }
        if let Some(t) = rec.time.filter(|t| t.is_finite()) {
            s.first_epoch = Some(s.first_epoch.map_or(t, |f| f.min(t)));
            s.last_epoch = Some(s.last_epoch.map_or(t, |l| l.max(t)));
            if let Some(p) = prev {
                let step = t - p;
                if step < 0.0 {
                    ordered = false;
                    if s.time_reversal.is_none_or(|j| -step > j.seconds) {
                        s.time_reversal = Some(TimeJump {
                            frame: rec.frame,
                            seconds: -step,
                        });
                    }
                } else if step > TIME_JUMP_S && s.time_jump.is_none_or(|j| step > j.seconds) {
                    s.time_jump = Some(TimeJump {
                        frame: rec.frame,
                        seconds: step,
                    });
                }
            }
            prev = Some(t);
        }
        true
    })?;
    // a step back of less than a second is ordinary reordering between capture threads
    if s.time_reversal.is_some_and(|j| j.seconds < 1.0) {
        s.time_reversal = None;
    }
    s.file_type = walked.file_type.to_string();
    s.encapsulation = match walked.linktypes.len() {
        0 => "unknown".into(),
        1 => encapsulation_name(*walked.linktypes.iter().next().unwrap()),
        _ => "per-packet".into(),
    };
    s.snaplen = walked.snaplen;
    s.interfaces = walked.interfaces;
    s.duration_s = match (s.first_epoch, s.last_epoch) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    s.strict_time_order = (s.packets > 0).then_some(ordered);
    s.damaged = walked.damaged;
    Ok(s)
}

/// Packets in a pcapng file dumpcap may still be writing, and the file's size, by
/// seeking from block header to block header (status calls stay cheap on big files).
/// A block still being written at the end is not counted.
pub fn count_packets(path: &Path) -> (u64, u64) {
    let Ok(f) = File::open(path) else {
        return (0, 0);
    };
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = BufReader::new(f);
    let mut packets = 0u64;
    let mut pos = 0u64;
    let mut little = true;
    let mut hdr = [0u8; 12];
    while pos + 12 <= size {
        if r.read_exact(&mut hdr).is_err() {
            break;
        }
        let block_type = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        if block_type == 0x0a0d_0d0a {
            little = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) == 0x1a2b_3c4d;
        }
        let len_bytes = [hdr[4], hdr[5], hdr[6], hdr[7]];
        let len = u64::from(if little {
            u32::from_le_bytes(len_bytes)
        } else {
            u32::from_be_bytes(len_bytes)
        });
        let block_type = if little {
            block_type
        } else {
            block_type.swap_bytes()
        };
        if len < 12 || pos + len > size {
            break;
        }
        if matches!(block_type, 2 | 3 | 6) {
            packets += 1;
        }
        pos += len;
        if r.seek(SeekFrom::Start(pos)).is_err() {
            break;
        }
    }
    (packets, size)
}

/// A frame's record, kept to be written into a capture of its own.
#[derive(Debug, Clone)]
pub struct KeptRecord {
    pub frame: u64,
    pub time: f64,
    pub linktype: u32,
    pub data: Vec<u8>,
}

/// A nanosecond pcap of `records` (all of `linktype`): frames of a big capture, to be
/// dissected without reading the rest of it.
pub fn write_pcap(
    out: &mut impl std::io::Write,
    linktype: u32,
    records: &[KeptRecord],
) -> std::io::Result<()> {
    out.write_all(&0xa1b2_3c4du32.to_le_bytes())?;
    out.write_all(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0])?;
    out.write_all(&262_144u32.to_le_bytes())?;
    out.write_all(&linktype.to_le_bytes())?;
    for r in records {
        let sec = r.time.floor().max(0.0);
        let nsec = (((r.time - sec) * 1e9).round() as u64).min(999_999_999);
        out.write_all(&(sec as u32).to_le_bytes())?;
        out.write_all(&(nsec as u32).to_le_bytes())?;
        let len = r.data.len() as u32;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(&r.data)?;
    }
    Ok(())
}

/// Frames byte-for-byte identical to one of the few just before them, within a few
/// milliseconds: the copies a SPAN port or TAP delivers twice (a real retransmission
/// differs in its IP ID or TCP timestamp, and comes an RTO or RTT later).
#[derive(Debug, Clone, Default)]
pub struct Duplicates {
    pub count: u64,
    /// The first duplicates (each the second copy).
    pub frames: Vec<u64>,
    /// The largest time between a frame and its copy, in microseconds.
    pub max_delta_us: f64,
}

/// How far back, in records and in time, a copy is looked for.
const DUP_WINDOW: usize = 8;
const DUP_WINDOW_NS: i128 = 5_000_000;

pub fn duplicates(file: File, limit: u64) -> std::io::Result<Duplicates> {
    use std::hash::{Hash, Hasher};
    let mut d = Duplicates::default();
    let mut recent: std::collections::VecDeque<(u64, usize, i128)> =
        std::collections::VecDeque::with_capacity(DUP_WINDOW);
    walk(file, limit, true, |rec| {
        let (Some(data), Some(t)) = (rec.data, rec.time_ns) else {
            return true;
        };
        let mut h = std::hash::DefaultHasher::new();
        data.hash(&mut h);
        let key = h.finish();
        if let Some(&(_, _, t0)) = recent
            .iter()
            .find(|&&(k, len, t0)| k == key && len == data.len() && (t - t0).abs() <= DUP_WINDOW_NS)
        {
            d.count += 1;
            if d.frames.len() < 10 {
                d.frames.push(rec.frame);
            }
            d.max_delta_us = d.max_delta_us.max((t - t0).abs() as f64 / 1000.0);
        }
        if recent.len() == DUP_WINDOW {
            recent.pop_front();
        }
        recent.push_back((key, data.len(), t));
        true
    })?;
    Ok(d)
}

/// The raw bytes of the wanted frames, reading only as far as the last one.
pub fn frames(file: File, limit: u64, wanted: &BTreeSet<u64>) -> HashMap<u64, Vec<u8>> {
    let mut out = HashMap::new();
    let Some(&last) = wanted.iter().next_back() else {
        return out;
    };
    let _ = walk(file, limit, true, |rec| {
        if wanted.contains(&rec.frame)
            && let Some(d) = rec.data
        {
            out.insert(rec.frame, d.to_vec());
        }
        rec.frame < last
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name)
    }

    fn summary_of(name: &str) -> CaptureSummary {
        let f = File::open(fixture(name)).unwrap();
        let len = f.metadata().unwrap().len();
        summarize(f, len).unwrap()
    }

    #[test]
    fn summarises_like_capinfos() {
        // capinfos -T -M -r -S ... zeek-wikipedia.pcap:
        // pcap ether 65535 ... 136 packets, 25260 data bytes, 1300475167.096535 .. 1300475173.475401
        let s = summary_of("zeek-wikipedia.pcap");
        assert_eq!(s.packets, 136);
        assert_eq!(s.data_bytes, 25260);
        assert_eq!(s.encapsulation, "ether");
        assert_eq!(s.snaplen, Some(65535));
        assert!((s.first_epoch.unwrap() - 1300475167.096535).abs() < 1e-6);
        assert!((s.duration_s - 6.378866).abs() < 1e-6);
        assert_eq!(s.strict_time_order, Some(true));
        assert!(s.damaged.is_none() && s.time_jump.is_none());
        // capinfos: 8 packets
        assert_eq!(summary_of("cs-icmp_echo.pcapng").packets, 8);
        assert_eq!(count_packets(&fixture("cs-icmp_echo.pcapng")).0, 8);
    }

    #[test]
    fn fetches_frames() {
        // tshark: frame 1 of cs-icmp_echo.pcapng has frame.cap_len 74, an Ethernet/IPv4 frame
        let f = File::open(fixture("cs-icmp_echo.pcapng")).unwrap();
        let len = f.metadata().unwrap().len();
        let got = frames(f, len, &BTreeSet::from([1, 8]));
        assert_eq!(got[&1].len(), 74);
        assert_eq!(&got[&1][12..14], &[0x08, 0x00]);
        assert!(got.contains_key(&8));
    }

    #[test]
    fn stops_at_a_record_cut_short() {
        // the corpus' cut file: capinfos reads 11 whole packets before the damaged end
        let s = summary_of("derived-cs-http_google-cut.pcapng");
        assert!(s.packets <= 11);
        assert!(s.damaged.is_some());
    }

    #[test]
    fn random_bytes_never_panic() {
        // a deterministic xorshift: random blocks behind both magics, read in full
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3000 {
            let mut bytes: Vec<u8> = if i % 2 == 0 {
                vec![0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a]
            } else {
                vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]
            };
            let n = (next() % 400) as usize;
            bytes.extend((0..n).map(|_| {
                // small numbers are lengths and types worth hitting
                let v = next();
                if v % 3 == 0 { (v % 16) as u8 } else { v as u8 }
            }));
            let path = dir.path().join("r");
            std::fs::write(&path, &bytes).unwrap();
            let s = summarize(File::open(&path).unwrap(), bytes.len() as u64).unwrap();
            assert!(s.data_bytes <= bytes.len() as u64 * 2 + 8);
            let _ = frames(
                File::open(&path).unwrap(),
                bytes.len() as u64,
                &BTreeSet::from([1, 2, 3]),
            );
        }
    }
}
