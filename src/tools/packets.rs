//! Drill-down into packets: `query_packets` (the packet list a Wireshark user sees, or
//! chosen fields, for any filter and time range) and `get_packet_details` (one frame's
//! dissection tree with offsets, its expert items and its conversation).
//!
//! Both run their own tshark pass: a list of arbitrary fields for an arbitrary filter,
//! and one frame's full dissection, are what the capture index cannot hold.

use std::collections::BTreeMap;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::{Analysis, Span};
use crate::report::{Finding, NextStep, Report, Table, rfc3339, thousands};
use crate::server::PcapServer;
use crate::tools::{clamp_limit, clamp_offset};
use crate::tshark::fields::{Row, field_args};

/// Fields a client may ask `query_packets` for at once.
const MAX_FIELDS: usize = 20;
/// The longest value a packet row keeps (a field can hold a whole payload).
const MAX_VALUE_CHARS: usize = 512;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct QueryParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Wireshark display filter selecting the packets, e.g. `tcp.stream == 3`,
    /// `dns.flags.rcode != 0` or `http.response.code >= 500` (default: every packet).
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Fields instead of the packet list's columns, e.g. `["ip.src", "tcp.seq"]`; up
    /// to 20 (an unknown name's error suggests close ones).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Packets to list (default 50, max 500); the total is always counted.
    #[serde(default)]
    pub limit: Option<i64>,
    /// Packets to skip, for paging.
    #[serde(default)]
    pub offset: Option<i64>,
    /// Show cleartext passwords in the info column as captured (default false: masked).
    #[serde(default)]
    pub reveal_secrets: Option<bool>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PacketRow {
    pub frame: u64,
    /// Capture time (RFC 3339, UTC).
    pub time: String,
    /// Seconds since the capture's first packet (Wireshark's default time column).
    pub relative_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Frame length on the wire, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    /// The requested fields' values, in the order of `fields` (several occurrences
    /// joined by commas; empty when the packet has none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PacketList {
    /// The fields each row's `values` hold, when fields were asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    pub packets: Table<PacketRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DetailsParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// The frame number, as Wireshark numbers it (from any finding's evidence).
    pub frame: i64,
    /// Only these layers, by protocol name, e.g. `["tcp", "http"]` (default: all).
    #[serde(default)]
    pub layers: Option<Vec<String>>,
    /// Add the frame's bytes as hex and ASCII (default false).
    #[serde(default)]
    pub include_bytes: bool,
    /// Budget for the dissection tree and bytes, in bytes of output (default 16384,
    /// at most 65536); what does not fit is counted as omitted.
    #[serde(default)]
    pub max_bytes: Option<i64>,
    /// SSLKEYLOGFILE in an allowed directory, to decrypt TLS (overrides
    /// PCAP_TLS_KEYLOG_FILE).
    #[serde(default)]
    pub tls_keylog_file: Option<String>,
}

impl crate::engine::FileArgs for DetailsParams {
    fn pcap_file(&self) -> &str {
        &self.pcap_file
    }
    fn display_filter(&self) -> Option<&str> {
        None
    }
    fn tls_keylog_file(&self) -> Option<&str> {
        self.tls_keylog_file
            .as_deref()
            .filter(|s| !s.trim().is_empty())
    }
}

/// One item of the dissection tree, as Wireshark's packet details pane shows it.
#[derive(Debug, Clone, Serialize, JsonSchema, Default)]
pub struct FieldNode {
    /// The field's filter name (`tcp.srcport`); empty for a text-only line.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The line as Wireshark displays it.
    pub display: String,
    /// The value alone, when it differs from the line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Offset and length of the bytes it was dissected from, within the frame (or the
    /// reassembled/decrypted data it belongs to).
    pub offset: u64,
    pub length: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<FieldNode>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Layer {
    pub protocol: String,
    pub display: String,
    pub offset: u64,
    pub length: u64,
    pub fields: Vec<FieldNode>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExpertItem {
    /// error, warning, note or chat.
    pub severity: String,
    pub group: String,
    pub message: String,
}

/// The TCP or UDP conversation a frame belongs to.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConversationRef {
    pub protocol: String,
    pub stream: u64,
    /// Shows every packet of the conversation.
    pub display_filter: String,
    /// The call that reads the conversation's payload.
    pub follow: NextStep,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PacketDetails {
    pub frame: u64,
    pub time: String,
    pub length: u64,
    pub captured_length: u64,
    /// The protocol stack, as `frame.protocols` (`eth:ethertype:ip:tcp:http`).
    pub protocols: String,
    pub layers: Vec<Layer>,
    /// Layers of the frame left out because `layers` did not name them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers_not_shown: Vec<String>,
    /// Tree items left out to stay within max_bytes.
    pub fields_omitted: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expert: Vec<ExpertItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationRef>,
    /// The frame's bytes, 16 per line: offset, hex, ASCII (non-printable as '.').
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hex: Vec<String>,
    /// Bytes of the frame not shown in `hex` (max_bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_omitted: Option<usize>,
}

/// The largest slice filter_capture writes: past it the copy stops (and is removed).
const MAX_SLICE_BYTES: u64 = 4 << 30;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SliceParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Wireshark display filter selecting the packets to keep, e.g. `tcp.stream == 3`.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Name of the new pcapng in PCAP_STORAGE_DIR (letters, digits, '.', '_', '-';
    /// never overwritten). Default: `<capture>-slice-<time>.pcapng`.
    #[serde(default)]
    pub output_file: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Slice {
    /// The new file's name in PCAP_STORAGE_DIR: every tool reads it by this name.
    pub output_file: String,
    pub path: String,
    /// The slice as an MCP resource (resources/read gives its facts).
    pub resource_uri: String,
    pub packets: u64,
    pub size_bytes: u64,
}

#[tool_router(router = packets_router, vis = "pub(crate)")]
impl PcapServer {
    /// The packet list for a display filter and/or time range, as Wireshark shows it
    /// (number, time, source, destination, protocol, length, info), or chosen fields
    /// per packet; paged, with the total count. For the frames a finding names, or any
    /// question a display filter can express.
    #[tool(
        name = "query_packets",
        annotations(
            title = "Query packets",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn query_packets(
        &self,
        Parameters(p): Parameters<QueryParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<PacketList>>, String> {
        if let Some(f) = &p.fields {
            if f.len() > MAX_FIELDS {
                return Err(format!(
                    "{} fields asked for; at most {MAX_FIELDS} fit a readable row: split the query",
                    f.len()
                ));
            }
            if !f.is_empty() {
                self.engine.tshark.check_fields(f).await?;
            }
        }
        self.engine.analyze("query_packets", p, rc, query).await
    }

    /// Writes the packets a display filter and/or time range select into a new pcapng
    /// in PCAP_STORAGE_DIR (never overwriting): the slice to attach to a ticket or to
    /// analyse on its own. Returns its name, packet count and size.
    #[tool(
        name = "filter_capture",
        annotations(
            title = "Save a slice of a capture",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn filter_capture(
        &self,
        Parameters(p): Parameters<SliceParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Slice>>, String> {
        let narrowed = p
            .display_filter
            .as_deref()
            .is_some_and(|f| !f.trim().is_empty())
            || !p.time.is_empty();
        if !narrowed {
            return Err("give a display_filter or a time range (start_time/end_time): without one the slice would be a copy of the whole capture".into());
        }
        if let Some(n) = &p.output_file
            && !n.ends_with(".pcapng")
        {
            return Err(format!(
                "output_file {n:?} must end in .pcapng: the slice is written as pcapng"
            ));
        }
        self.engine.analyze("filter_capture", p, rc, slice).await
    }

    /// One frame's full dissection as Wireshark's details pane shows it: each layer's
    /// fields (text, value, offset, length), expert items, its TCP/UDP conversation
    /// (filter and follow_stream call); optionally its bytes as hex and ASCII.
    #[tool(
        name = "get_packet_details",
        annotations(
            title = "Packet details",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn get_packet_details(
        &self,
        Parameters(p): Parameters<DetailsParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<PacketDetails>>, String> {
        if p.frame < 1 {
            return Err(format!(
                "frame {} does not exist: frames are numbered from 1, as in Wireshark",
                p.frame
            ));
        }
        self.engine
            .analyze("get_packet_details", p, rc, details)
            .await
    }
}

crate::file_args!(QueryParams, SliceParams);

async fn slice(mut a: Analysis, p: SliceParams) -> Result<Report<Slice>, String> {
    let name = match &p.output_file {
        Some(n) => n.trim().to_string(),
        None => crate::sandbox::generated_name(&a.file.display_name, "-slice-", ".pcapng"),
    };
    let (out, path) = a.engine.sandbox().create_output(&name)?;
    let args: Vec<String> = ["-F", "pcapng", "-w", "-"].map(String::from).to_vec();
    let written = a.run_to_file(&args, out, MAX_SLICE_BYTES).await;
    let size = match written {
        Ok(n) => n,
        Err(e) => {
            // the file is ours (created O_EXCL just now): a partial slice is no slice
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let reader = std::fs::File::open(&path).map_err(|e| format!("cannot reopen the slice: {e}"))?;
    let facts = tokio::task::spawn_blocking(move || crate::pcapfile::summarize(reader, size))
        .await
        .map_err(|e| format!("reading the slice failed: {e}"))?
        .map_err(|e| format!("reading the slice failed: {e}"))?;
    let span = Span::of_file(&facts);
    let summary = format!(
        "Wrote {} packet(s), {} bytes, to {name} in PCAP_STORAGE_DIR{}",
        thousands(facts.packets),
        thousands(size),
        if facts.packets == 0 {
            ": the selection is empty (the file holds only its headers)"
        } else {
            ""
        }
    );
    let data = Slice {
        resource_uri: format!("pcap://{name}"),
        output_file: name,
        path: path.display().to_string(),
        packets: facts.packets,
        size_bytes: size,
    };
    a.report(summary, Vec::new(), data, span, None).await
}

/// Cuts a value to MAX_VALUE_CHARS, saying how much was left out.
fn bounded(v: &str) -> String {
    match v.char_indices().nth(MAX_VALUE_CHARS) {
        None => v.to_string(),
        Some((i, _)) => format!("{}… ({} more bytes)", &v[..i], v.len() - i),
    }
}

async fn query(mut a: Analysis, p: QueryParams) -> Result<Report<PacketList>, String> {
    let limit = clamp_limit(p.limit, 50);
    let offset = clamp_offset(p.offset);
    let reveal = p.reveal_secrets.unwrap_or(false);
    let asked: Vec<String> = p.fields.clone().unwrap_or_default();
    let mut cols: Vec<&str> = vec!["frame.number", "frame.time_epoch", "frame.time_relative"];
    if asked.is_empty() {
        // Info last: free text is folded into the last column
        cols.extend([
            "_ws.col.Source",
            "_ws.col.Destination",
            "_ws.col.Protocol",
            "frame.len",
            "_ws.col.Info",
        ]);
    } else {
        cols.extend(asked.iter().map(String::as_str));
    }
    let args = field_args(&cols);
    let n = cols.len();
    let mut total = 0usize;
    let mut span = Span::default();
    let mut rows = Vec::new();
    a.run_lines(None, &args, |line| {
        let r = Row::parse(line, n);
        let Some(frame) = r.u64(0) else {
            return;
        };
        let t = r.f64(1);
        span.add(t);
        total += 1;
        // only the page is kept: a filter may select millions of packets
        if total <= offset || total > offset + limit {
            return;
        }
        let mut row = PacketRow {
            frame,
            time: t.map(rfc3339).unwrap_or_default(),
            relative_s: r.f64(2).map_or(0.0, |v| crate::report::round(v, 6)),
            source: None,
            destination: None,
            protocol: None,
            length: None,
            info: None,
            values: Vec::new(),
        };
        if asked.is_empty() {
            row.source = r.owned(3);
            row.destination = r.owned(4);
            row.protocol = r.owned(5);
            row.length = r.u64(6);
            row.info = r
                .str(7)
                .map(|i| bounded(&crate::secrets::mask_text(i, reveal)));
        } else {
            // several occurrences joined by commas, as tshark's default aggregator
            row.values = (0..asked.len())
                .map(|i| bounded(&r.all(3 + i).collect::<Vec<_>>().join(",")))
                .collect();
        }
        rows.push(row);
    })
    .await?;
    let packets = Table::window(rows, total, offset);
    let scope = match (&a.user_filter, &a.time) {
        (Some(f), _) => format!(" matching `{f}`"),
        (None, Some(_)) => " in the time range".to_string(),
        (None, None) => String::new(),
    };
    let mut summary = format!(
        "{} packet(s){scope} in {}",
        thousands(total as u64),
        a.file.display_name
    );
    if total > 0 {
        summary.push_str(&format!("; showing {} from offset {offset}", packets.shown));
    } else {
        summary
            .push_str(": the filter selects nothing (check field values, or widen the time range)");
    }
    let data = PacketList {
        fields: asked,
        packets,
    };
    a.report(summary, Vec::new(), data, span, None).await
}

async fn details(mut a: Analysis, p: DetailsParams) -> Result<Report<PacketDetails>, String> {
    let frame = p.frame as u64;
    let summary = a.summary().await?;
    if frame > summary.packets {
        return Err(format!(
            "frame {frame} does not exist: {} has {} frame(s)",
            a.file.display_name, summary.packets
        ));
    }
    let budget = p.max_bytes.map_or(16_384, |b| b.clamp(1024, 65_536)) as usize;
    // tshark stops after reading `frame` packets: the cost is the frames before it
    let args: Vec<String> = [
        "-c".to_string(),
        frame.to_string(),
        "-T".into(),
        "pdml".into(),
    ]
    .to_vec();
    let mut pdml = String::new();
    a.run_lines(Some(&format!("frame.number == {frame}")), &args, |l| {
        pdml.push_str(l);
        pdml.push('\n');
    })
    .await?;
    let tree = parse_pdml(&pdml)
        .map_err(|e| format!("tshark's dissection of frame {frame} could not be read: {e}"))?;
    if tree.is_empty() {
        return Err(format!(
            "tshark dissected no frame {frame} in {} (the file may end early there)",
            a.file.display_name
        ));
    }
    let wanted: Option<Vec<String>> = p
        .layers
        .as_ref()
        .map(|l| l.iter().map(|s| s.trim().to_ascii_lowercase()).collect())
        .filter(|l: &Vec<String>| !l.is_empty());
    let mut d = build_details(frame, tree, wanted.as_deref(), budget);
    if p.include_bytes {
        let reader = a
            .file
            .opened
            .reopen()
            .map_err(|e| format!("cannot read {}: {e}", a.file.display_name))?;
        let size = a.file.size;
        let bytes = tokio::task::spawn_blocking(move || {
            crate::pcapfile::frames(reader, size, &[frame].into_iter().collect())
        })
        .await
        .map_err(|e| format!("reading frame {frame} failed: {e}"))?
        .remove(&frame)
        .unwrap_or_default();
        // each hex line is about 80 bytes of output for 16 bytes of frame
        let room = (budget / 5).max(256);
        let shown = bytes.len().min(room);
        d.hex = crate::report::hex_dump(&bytes[..shown], 0, 4);
        if shown < bytes.len() {
            d.bytes_omitted = Some(bytes.len() - shown);
        }
    }
    let mut findings = Vec::new();
    if let Some(c) = &d.conversation {
        let mut f = Finding::new(
            crate::report::Severity::Info,
            format!(
                "Frame {frame} belongs to {} stream {}",
                c.protocol, c.stream
            ),
            format!(
                "Its conversation: `{}`; follow_stream reads the payload.",
                c.display_filter
            ),
            crate::report::Evidence {
                frames: vec![frame],
                streams: vec![c.stream],
                display_filter: c.display_filter.clone(),
                ..Default::default()
            },
        );
        f.next_step = Some(c.follow.clone());
        findings.push(f);
    }
    let top = d
        .layers
        .last()
        .map(|l| l.display.clone())
        .unwrap_or_default();
    let mut s = format!(
        "Frame {frame}: {} bytes on the wire, {}. {top}.",
        d.length, d.protocols
    );
    if !d.expert.is_empty() {
        s.push_str(&format!(
            " Expert: {}.",
            d.expert
                .iter()
                .map(|e| format!("{} ({})", e.message, e.severity))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if d.fields_omitted > 0 {
        s.push_str(&format!(
            " {} tree item(s) omitted: name `layers` or raise max_bytes.",
            d.fields_omitted
        ));
    }
    let span = Span {
        packets: 1,
        first: None,
        last: None,
    };
    a.report(s, findings, d, span, None).await
}

/// A PDML element: `proto` or `field`, with its attributes and children.
#[derive(Debug, Default)]
struct Node {
    attrs: BTreeMap<String, String>,
    children: Vec<Node>,
}

impl Node {
    fn attr(&self, k: &str) -> &str {
        self.attrs.get(k).map(String::as_str).unwrap_or("")
    }
    fn num(&self, k: &str) -> u64 {
        self.attr(k).parse().unwrap_or(0)
    }
}

/// The `proto` elements of the first `packet` in tshark's PDML.
fn parse_pdml(text: &str) -> Result<Vec<Node>, String> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(text);
    let mut stack: Vec<Node> = Vec::new();
    let mut protos = Vec::new();
    let mut in_packet = false;
    let attrs_of = |e: &quick_xml::events::BytesStart| -> Result<BTreeMap<String, String>, String> {
        let mut m = BTreeMap::new();
        for a in e.attributes() {
            let a = a.map_err(|e| e.to_string())?;
            let v = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| e.to_string())?;
            m.insert(a.key.as_ref().to_string(), v.into_owned());
        }
        Ok(m)
    };
    loop {
        match r.read_event().map_err(|e| e.to_string())? {
            Event::Eof => break,
            Event::Start(e) => match e.name().as_ref() {
                "packet" => in_packet = true,
                "proto" | "field" if in_packet => stack.push(Node {
                    attrs: attrs_of(&e)?,
                    children: Vec::new(),
                }),
                _ => {}
            },
            Event::Empty(e) if in_packet => {
                if matches!(e.name().as_ref(), "proto" | "field") {
                    let n = Node {
                        attrs: attrs_of(&e)?,
                        children: Vec::new(),
                    };
                    match stack.last_mut() {
                        Some(p) => p.children.push(n),
                        None => protos.push(n),
                    }
                }
            }
            Event::End(e) => match e.name().as_ref() {
                "packet" => break,
                "proto" | "field" if in_packet => {
                    if let Some(n) = stack.pop() {
                        match stack.last_mut() {
                            Some(p) => p.children.push(n),
                            None => protos.push(n),
                        }
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
    Ok(protos)
}

/// Output bytes a tree item costs in the result, roughly (its JSON).
fn cost(n: &FieldNode) -> usize {
    n.name.len() + n.display.len() + n.value.as_ref().map_or(0, String::len) + 70
}

/// Turns PDML into the result: frame facts from `frame`/`geninfo`, the layers asked for
/// within the budget, expert items and the conversation wherever they sit in the tree.
fn build_details(
    frame: u64,
    protos: Vec<Node>,
    wanted: Option<&[String]>,
    budget: usize,
) -> PacketDetails {
    let mut d = PacketDetails {
        frame,
        time: String::new(),
        length: 0,
        captured_length: 0,
        protocols: String::new(),
        layers: Vec::new(),
        layers_not_shown: Vec::new(),
        fields_omitted: 0,
        expert: Vec::new(),
        conversation: None,
        hex: Vec::new(),
        bytes_omitted: None,
    };
    let mut used = 0usize;
    for p in &protos {
        collect_facts(p, &mut d);
    }
    for p in protos {
        let name = p.attr("name").to_string();
        if name == "geninfo" || name == "fake-field-wrapper" {
            continue;
        }
        if let Some(w) = wanted
            && !w.iter().any(|x| *x == name.to_ascii_lowercase())
        {
            d.layers_not_shown.push(name);
            continue;
        }
        let mut layer = Layer {
            protocol: name.clone(),
            display: p.attr("showname").to_string(),
            offset: p.num("pos"),
            length: p.num("size"),
            fields: Vec::new(),
        };
        used += layer.display.len() + 80;
        for c in p.children {
            if let Some(n) = convert(c, &mut used, budget, &mut d.fields_omitted) {
                layer.fields.push(n);
            }
        }
        d.layers.push(layer);
    }
    d
}

/// Frame facts, expert items and the stream index, wherever they sit in the tree.
fn collect_facts(n: &Node, d: &mut PacketDetails) {
    let name = n.attr("name");
    let show = n.attr("show");
    match name {
        "frame.len" => d.length = show.parse().unwrap_or(0),
        "frame.cap_len" => d.captured_length = show.parse().unwrap_or(0),
        "frame.protocols" => d.protocols = show.to_string(),
        "frame.time_epoch" => {
            d.time = show.parse::<f64>().map(rfc3339).unwrap_or_default();
        }
        "_ws.expert" => {
            // "Expert Info (Warning/Sequence): This frame is a (suspected) retransmission"
            let line = n.attr("showname");
            let (head, message) = line.split_once("): ").unwrap_or(("", line));
            let (sev, group) = head
                .trim_start_matches("Expert Info (")
                .split_once('/')
                .unwrap_or(("", ""));
            d.expert.push(ExpertItem {
                severity: match sev {
                    "Warning" | "Warn" => "warning".into(),
                    s => s.to_ascii_lowercase(),
                },
                group: group.to_ascii_lowercase(),
                message: message.to_string(),
            });
        }
        "tcp.stream" | "udp.stream" if d.conversation.is_none() => {
            if let Ok(stream) = show.parse::<u64>() {
                let protocol = name.trim_end_matches(".stream").to_string();
                let mut arguments = BTreeMap::new();
                arguments.insert("stream".to_string(), serde_json::json!(stream));
                arguments.insert("protocol".to_string(), serde_json::json!(protocol));
                d.conversation = Some(ConversationRef {
                    display_filter: format!("{name} == {stream}"),
                    follow: NextStep {
                        tool: "follow_stream".into(),
                        arguments,
                    },
                    protocol,
                    stream,
                });
            }
        }
        _ => {}
    }
    for c in &n.children {
        collect_facts(c, d);
    }
}

/// A PDML field as a tree item, unless Wireshark hides it or the budget is spent
/// (then it and its children are counted as omitted).
fn convert(n: Node, used: &mut usize, budget: usize, omitted: &mut usize) -> Option<FieldNode> {
    if n.attr("hide") == "yes" {
        return None;
    }
    let name = n.attr("name").to_string();
    let show = n.attr("show").to_string();
    let showname = n.attr("showname").to_string();
    let display = if showname.is_empty() {
        show.clone()
    } else {
        showname
    };
    // the value alone only when the line does not already show it
    let value = (!show.is_empty() && !display.contains(&show)).then_some(show);
    let mut f = FieldNode {
        name,
        display: bounded(&display),
        value: value.map(|v| bounded(&v)),
        offset: n.num("pos"),
        length: n.num("size"),
        children: Vec::new(),
    };
    let c = cost(&f);
    if *used + c > budget {
        *omitted += 1 + count(&n.children);
        return None;
    }
    *used += c;
    for ch in n.children {
        if let Some(x) = convert(ch, used, budget, omitted) {
            f.children.push(x);
        }
    }
    Some(f)
}

fn count(ns: &[Node]) -> usize {
    ns.iter()
        .filter(|n| n.attr("hide") != "yes")
        .map(|n| 1 + count(&n.children))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PDML: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<pdml version="0" creator="wireshark/4.0.17">
<packet>
  <proto name="geninfo" pos="0" showname="General information" size="60">
    <field name="num" pos="0" show="4" showname="Number" value="4" size="60"/>
  </proto>
  <proto name="frame" showname="Frame 4: 60 bytes on wire" size="60" pos="0">
    <field name="frame.time_epoch" showname="Epoch Time: 1300475167.133969000 seconds" size="0" pos="0" show="1300475167.133969000"/>
    <field name="frame.len" showname="Frame Length: 60 bytes (480 bits)" size="0" pos="0" show="60"/>
    <field name="frame.protocols" showname="Protocols in frame: eth:ethertype:ip:tcp" size="0" pos="0" show="eth:ethertype:ip:tcp"/>
  </proto>
  <proto name="tcp" showname="Transmission Control Protocol, Src Port: 80" size="20" pos="34">
    <field name="tcp.srcport" showname="Source Port: 80" size="2" pos="34" show="80" value="0050"/>
    <field name="tcp.stream" showname="Stream index: 7" size="0" pos="34" show="7"/>
    <field name="tcp.port" showname="Source or Destination Port: 80" hide="yes" size="2" pos="34" show="80" value="0050"/>
    <field name="tcp.analysis" showname="SEQ/ACK analysis" size="0" pos="34" show="" value="">
      <field name="_ws.expert" showname="Expert Info (Warning/Sequence): This frame is a (suspected) retransmission &amp; more" size="0" pos="34">
        <field name="_ws.expert.message" showname="Message: x" hide="yes" size="0" pos="0" show="x"/>
      </field>
    </field>
  </proto>
</packet>
</pdml>"#;

    #[test]
    fn pdml_becomes_a_tree_with_facts() {
        let protos = parse_pdml(PDML).unwrap();
        let d = build_details(4, protos, None, 16_384);
        assert_eq!(d.length, 60);
        assert_eq!(d.protocols, "eth:ethertype:ip:tcp");
        assert_eq!(d.time, "2011-03-18T19:06:07.133969Z");
        assert_eq!(
            d.layers
                .iter()
                .map(|l| l.protocol.as_str())
                .collect::<Vec<_>>(),
            ["frame", "tcp"]
        );
        let tcp = &d.layers[1];
        // hidden fields stay hidden, as in Wireshark's pane
        assert!(tcp.fields.iter().all(|f| f.name != "tcp.port"));
        assert_eq!(tcp.fields[0].display, "Source Port: 80");
        assert_eq!((tcp.fields[0].offset, tcp.fields[0].length), (34, 2));
        assert_eq!(d.expert[0].severity, "warning");
        assert_eq!(d.expert[0].group, "sequence");
        assert_eq!(
            d.expert[0].message,
            "This frame is a (suspected) retransmission & more"
        );
        let c = d.conversation.unwrap();
        assert_eq!((c.protocol.as_str(), c.stream), ("tcp", 7));
        assert_eq!(c.display_filter, "tcp.stream == 7");
    }

    #[test]
    fn layers_and_budget_limit_the_tree() {
        let d = build_details(4, parse_pdml(PDML).unwrap(), Some(&["tcp".into()]), 16_384);
        assert_eq!(d.layers.len(), 1);
        assert_eq!(d.layers_not_shown, ["frame"]);
        let d = build_details(4, parse_pdml(PDML).unwrap(), None, 300);
        assert!(d.fields_omitted > 0);
        assert_eq!(
            crate::report::hex_dump(b"GET / HTTP/1.1\r\n\x00", 0, 4),
            [
                "0000  47 45 54 20 2f 20 48 54 54 50 2f 31 2e 31 0d 0a  GET / HTTP/1.1..",
                "0010  00                                               ."
            ]
        );
    }
}
