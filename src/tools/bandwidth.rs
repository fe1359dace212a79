//! Throughput over time and bandwidth use: `generate_throughput_io_graph` (tshark's own
//! `-z io,stat` buckets, drawn as a PNG returned as MCP image content next to the data)
//! and `analyze_bandwidth_utilization` (average, peak and p95 rates against an optional
//! link capacity, top talkers, conversations and protocols by bytes, bursts).

use std::collections::BTreeMap;

use base64::Engine as _;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::time::{MAX_BUCKETS, choose_interval, nice_interval};
use crate::chart;
use crate::engine::{Analysis, Span};
use crate::index::{Keyed, Part};
use crate::report::{
    Evidence, Finding, Report, Severity, Table, host_filter, human_bits_per_s, human_bytes, pct,
    percentile, rfc3339, round, thousands,
};
use crate::server::PcapServer;
use crate::tools::{clamp_limit, clamp_offset};
use crate::tshark::fields::{FromRow, Row, is_icmp_error};

// ------------------------------------------------------------------ I/O graph

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IoGraphParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Bucket width in seconds (default: a round width giving at most 120 buckets; a
    /// width that would give more is coarsened and the result says so).
    #[serde(default)]
    pub time_interval: Option<f64>,
    /// Optional Wireshark display filter that scopes every series.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Up to 4 extra series, each a display filter drawn over the total, e.g. `tls`
    /// (use || inside a filter, not commas).
    #[serde(default)]
    pub series_filters: Option<Vec<String>>,
    /// An IP address: adds two series, traffic sent by it and traffic sent to it.
    #[serde(default)]
    pub host: Option<String>,
    /// Also save the picture into PCAP_STORAGE_DIR under this name (ending in .png).
    #[serde(default)]
    pub output_file: Option<String>,
    /// Buckets listed in the data (default 60, max 500); the picture always shows all.
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IoSeries {
    pub label: String,
    /// The filter tshark counted this series with (`frame` = every packet).
    pub display_filter: String,
    pub frames: u64,
    pub bytes: u64,
    pub average_bits_per_s: f64,
    pub peak_bits_per_s: f64,
    /// Start (seconds since the first packet) of the busiest bucket.
    pub peak_at_s: f64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IoBucket {
    /// Seconds since the first packet of the file.
    pub start_s: f64,
    pub start_time: String,
    pub frames: u64,
    pub bytes: u64,
    pub bits_per_s: f64,
    /// The extra series' rates in this bucket, in the order of `series` (after the first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub series_bits_per_s: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ImageInfo {
    pub mime_type: String,
    pub width: u32,
    pub height: u32,
    /// When output_file was given: the picture as an MCP resource (resources/read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_uri: Option<String>,
    /// Set when output_file was given: where the PNG was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_to: Option<String>,
    /// What is drawn, for clients that do not show images.
    pub description: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IoGraph {
    pub interval_s: f64,
    /// Set when the requested interval would have made too many buckets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coarsened_from_s: Option<f64>,
    pub series: Vec<IoSeries>,
    pub buckets: Table<IoBucket>,
    /// The picture returned next to this data as MCP image content.
    pub image: ImageInfo,
    /// Every bucket of every series (bits per second), for the picture.
    #[serde(skip)]
    #[schemars(skip)]
    plot: Vec<Vec<f64>>,
    #[serde(skip)]
    #[schemars(skip)]
    title: String,
}

/// One row of `-z io,stat`: the interval start and (frames, bytes) per column.
pub fn parse_io_stat_row(line: &str) -> Option<(f64, Vec<(u64, u64)>)> {
    let cells: Vec<&str> = line
        .trim()
        .strip_prefix('|')?
        .strip_suffix('|')?
        .split('|')
        .map(str::trim)
        .collect();
    let (start, _) = cells.first()?.split_once("<>")?;
    let start: f64 = start.trim().parse().ok()?;
    let nums: Vec<u64> = cells[1..]
        .iter()
        .map(|c| c.parse::<u64>())
        .collect::<Result<_, _>>()
        .ok()?;
    if nums.is_empty() || !nums.len().is_multiple_of(2) {
        return None;
    }
    Some((start, nums.chunks(2).map(|c| (c[0], c[1])).collect()))
}

fn host_filters(host: &str) -> Result<(String, String), String> {
    let ip: std::net::IpAddr = host.trim().parse().map_err(|_| {
        format!(
            "host {host:?} is not an IP address: give one address such as 10.0.0.5 or 2001:db8::1"
        )
    })?;
    let ip = ip.to_string();
    Ok((host_filter(&ip, "src"), host_filter(&ip, "dst")))
}

#[tool_router(router = bandwidth_router, vis = "pub(crate)")]
impl PcapServer {
    /// Throughput I/O graph: frames, bytes and bits per second per time bucket, optionally
    /// per direction of one host or per extra display filter; returned as data and as a
    /// PNG picture (MCP image content) with labelled axes and units.
    #[tool(
        name = "generate_throughput_io_graph",
        output_schema = rmcp::handler::server::tool::schema_for_output::<Report<IoGraph>>(),
        annotations(
            title = "Throughput I/O graph",
            // with output_file it saves the PNG into storage (a new file, never over one)
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn generate_throughput_io_graph(
        &self,
        Parameters(p): Parameters<IoGraphParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, String> {
        crate::tools::check_seconds("time_interval", p.time_interval)?;
        if let Some(f) = p.display_filter.as_deref()
            && f.contains(',')
        {
            return Err(format!(
                "display_filter {f:?} contains a comma, which tshark's io,stat cannot take (it splits its arguments on commas): write sets as `a || b` instead of `{{a,b}}`, and a comma inside a string as \\x2c"
            ));
        }
        let filters = p.series_filters.clone().unwrap_or_default();
        if filters.len() > 4 {
            return Err(format!(
                "series_filters has {} filters; at most 4 lines fit a readable graph: split the call",
                filters.len()
            ));
        }
        for f in &filters {
            if f.contains(',') {
                return Err(format!(
                    "series filter {f:?} contains a comma, which tshark's io,stat cannot take: write sets as `a || b` instead of `{{a,b}}`, and a comma inside a string as \\x2c"
                ));
            }
            self.engine
                .tshark
                .check_display_filter(f)
                .await
                .map_err(|e| format!("series filter {f:?}: {e}"))?;
        }
        if let Some(h) = &p.host {
            host_filters(h)?;
        }
        if let Some(name) = &p.output_file
            && !name.to_ascii_lowercase().ends_with(".png")
        {
            return Err(format!(
                "output_file {name:?} must end in .png: it is the picture"
            ));
        }
        let output = p.output_file.clone();
        let Json(mut report) = self
            .engine
            .analyze("generate_throughput_io_graph", p, rc, io_graph)
            .await?;
        let mut image = None;
        if let Some(g) = report.data.as_mut() {
            let labels: Vec<String> = g.series.iter().map(|s| s.label.clone()).collect();
            let series: Vec<chart::Series<'_>> = labels
                .iter()
                .zip(&g.plot)
                .map(|(l, v)| chart::Series {
                    label: l,
                    bits_per_s: v,
                })
                .collect();
            let subtitle = format!(
                "{} | {} frames | {} s buckets | first packet {}",
                report
                    .scope
                    .display_filter
                    .as_deref()
                    .unwrap_or("all traffic"),
                report.capture.packets_analysed,
                g.interval_s,
                report.capture.first_packet_time.clone().unwrap_or_default()
            );
            let png = chart::io_graph_png(&g.title, &subtitle, g.interval_s, &series)
                .map_err(|e| format!("drawing the I/O graph failed: {e}"))?;
            if let Some(name) = &output {
                let (mut f, path) = self.engine.sandbox().create_output(name)?;
                std::io::Write::write_all(&mut f, &png)
                    .map_err(|e| format!("could not write {}: {e}", path.display()))?;
                g.image.saved_to = Some(path.display().to_string());
                g.image.resource_uri = Some(format!("pcap://{name}"));
            }
            image = Some(png);
        }
        let value = serde_json::to_value(&report).map_err(|e| e.to_string())?;
        let mut result = CallToolResult::structured(value);
        if let Some(png) = image {
            result.content.push(ContentBlock::image(
                base64::engine::general_purpose::STANDARD.encode(png),
                "image/png",
            ));
        }
        Ok(result)
    }

    /// Bandwidth use: average, peak and p95 rates per time_window, utilisation against
    /// link_capacity_mbps when given, bursts, and the top talkers, conversations and
    /// protocols by bytes.
    #[tool(
        name = "analyze_bandwidth_utilization",
        annotations(
            title = "Bandwidth utilisation",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_bandwidth_utilization(
        &self,
        Parameters(p): Parameters<BandwidthParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Bandwidth>>, String> {
        crate::tools::check_seconds("time_window", p.time_window)?;
        if let Some(c) = p.link_capacity_mbps
            && !(c.is_finite() && c > 0.0)
        {
            return Err(format!(
                "link_capacity_mbps {c} is not a positive number of megabits per second (e.g. 1000 for gigabit)"
            ));
        }
        self.engine
            .analyze("analyze_bandwidth_utilization", p, rc, bandwidth)
            .await
    }
}

/// Frames and bytes per bucket of the I/O graph's default width, counted in the index
/// pass from the file's first packet (as io,stat counts): the graph without host or
/// series filters needs no pass of its own.
pub struct IoBuckets {
    t0: f64,
    interval: f64,
    counts: BTreeMap<u64, (u64, u64)>,
}

pub struct IoRow {
    time: f64,
    len: u64,
}

impl FromRow for IoRow {
    const FIELDS: &'static [&'static str] = &["frame.time_epoch", "frame.len"];
    fn from_row(r: &Row<'_>) -> Option<Self> {
        Some(Self {
            time: r.f64(0)?,
            len: r.u64(1).unwrap_or(0),
        })
    }
}

impl Part for IoBuckets {
    type Row = IoRow;
    fn new(ctx: &crate::index::Ctx) -> Self {
        Self {
            t0: ctx.window.start.or(ctx.summary.first_epoch).unwrap_or(0.0),
            interval: choose_interval(None, ctx.window.span_s).0,
            counts: BTreeMap::new(),
        }
    }
    fn add(&mut self, r: IoRow) {
        let b = self
            .counts
            .entry(crate::index::time_bucket(r.time, self.t0, self.interval))
            .or_default();
        b.0 += 1;
        b.1 += r.len;
    }
    fn approx_bytes(&self) -> usize {
        self.counts.len() * 48
    }
}

async fn io_graph(mut a: Analysis, p: IoGraphParams) -> Result<Report<IoGraph>, String> {
    let info = a.summary().await.ok();
    let file_first = info.as_ref().and_then(|i| i.first_epoch).unwrap_or(0.0);
    let window = a.window().await;
    let span_s = window.span_s;
    let mut t0 = window.start.unwrap_or(file_first);
    let (interval, coarsened) = choose_interval(p.time_interval, span_s);
    let user = a.filter.clone();
    let scope = |f: &str| match &user {
        Some(u) => format!("({u}) && ({f})"),
        None => f.to_string(),
    };
    let mut columns: Vec<(String, String)> = vec![(
        if a.filter.is_some() {
            "filtered traffic".into()
        } else {
            "all traffic".into()
        },
        a.filter.clone().unwrap_or_else(|| "frame".into()),
    )];
    if let Some(h) = &p.host {
        let (from, to) = host_filters(h)?;
        columns.push((format!("sent by {}", h.trim()), scope(&from)));
        columns.push((format!("sent to {}", h.trim()), scope(&to)));
    }
    for f in p.series_filters.iter().flatten() {
        columns.push((f.clone(), scope(f)));
    }
    let stat = format!(
        "io,stat,{},{}",
        interval,
        columns
            .iter()
            .map(|(_, f)| f.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut rows: Vec<(f64, Vec<(u64, u64)>)> = Vec::new();
    let indexed = a.part::<IoBuckets>().await?;
    if columns.len() == 1 && indexed.interval == interval {
        rows = indexed
            .counts
            .iter()
            .map(|(b, c)| (*b as f64 * interval, vec![*c]))
            .collect();
    } else {
        // host or series filters (or another width): tshark's io,stat counts them.
        // Its intervals start at the file's first packet whatever the filter, so a
        // time range starts at the interval holding its start (labelled as such)
        let skip = ((t0 - file_first).max(0.0) / interval + 1e-9).floor() * interval;
        t0 = file_first + skip;
        a.run_lines(None, &["-q".into(), "-z".into(), stat], |l| {
            if let Some((start, cols)) = parse_io_stat_row(l)
                && start + 1e-9 >= skip
            {
                rows.push((start - skip, cols));
            }
        })
        .await?;
    }
    if rows.is_empty() && span_s == 0.0 {
        // tshark's io,stat prints no interval at all when every packet has the same
        // timestamp (one packet, say): count that single bucket per column instead
        let mut cols = Vec::with_capacity(columns.len());
        for (_, f) in &columns {
            let (mut frames, mut bytes) = (0u64, 0u64);
            let args = ["-T", "fields", "-e", "frame.len"].map(String::from);
            a.run_lines(Some(f), &args, |l| {
                if let Ok(n) = l.trim().parse::<u64>() {
                    frames += 1;
                    bytes += n;
                }
            })
            .await?;
            cols.push((frames, bytes));
        }
        rows.push((0.0, cols));
    }
    // tshark prints every interval; index by start in case a row was skipped
    let n = rows
        .iter()
        .map(|(s, _)| (s / interval).round() as usize + 1)
        .max()
        .unwrap_or(0)
        .min(MAX_BUCKETS * 4);
    let mut grid = vec![vec![(0u64, 0u64); n]; columns.len()];
    for (start, cols) in &rows {
        let b = ((start / interval).round() as usize).min(n.saturating_sub(1));
        for (c, v) in cols.iter().enumerate().take(columns.len()) {
            grid[c][b].0 += v.0;
            grid[c][b].1 += v.1;
        }
    }
    let rate = |bytes: u64| round(bytes as f64 * 8.0 / interval, 3);
    let duration = span_s.max(interval);
    let series: Vec<IoSeries> = columns
        .iter()
        .zip(&grid)
        .map(|((label, filter), g)| {
            let frames = g.iter().map(|x| x.0).sum();
            let bytes: u64 = g.iter().map(|x| x.1).sum();
            let (peak_i, peak) = g
                .iter()
                .enumerate()
                .max_by_key(|(_, x)| x.1)
                .map(|(i, x)| (i, x.1))
                .unwrap_or((0, 0));
            IoSeries {
                label: label.clone(),
                display_filter: filter.clone(),
                frames,
                bytes,
                average_bits_per_s: round(bytes as f64 * 8.0 / duration, 3),
                peak_bits_per_s: rate(peak),
                peak_at_s: round(peak_i as f64 * interval, 6),
            }
        })
        .collect();
    let buckets: Vec<IoBucket> = (0..n)
        .map(|b| IoBucket {
            start_s: round(b as f64 * interval, 6),
            start_time: rfc3339(t0 + b as f64 * interval),
            frames: grid[0][b].0,
            bytes: grid[0][b].1,
            bits_per_s: rate(grid[0][b].1),
            series_bits_per_s: grid[1..].iter().map(|g| rate(g[b].1)).collect(),
        })
        .collect();
    let plot: Vec<Vec<f64>> = grid
        .iter()
        .map(|g| g.iter().map(|x| rate(x.1)).collect())
        .collect();
    let main = &series[0];
    let mut findings = Vec::new();
    if main.frames > 0 {
        let peak_start = main.peak_at_s;
        findings.push(Finding::new(
            Severity::Info,
            format!(
                "Peak {} at {:.3} s, average {}",
                human_bits_per_s(main.peak_bits_per_s),
                peak_start,
                human_bits_per_s(main.average_bits_per_s)
            ),
            format!(
                "The busiest {interval} s bucket starts {peak_start:.3} s into the graph ({}).",
                rfc3339(t0 + peak_start)
            ),
            Evidence {
                time: Some(rfc3339(t0 + peak_start)),
                display_filter: scope(&format!(
                    "frame.time_relative >= {peak_start} && frame.time_relative < {}",
                    round(peak_start + interval, 6)
                )),
                ..Default::default()
            },
        ));
    }
    let idle = grid[0].iter().filter(|x| x.0 == 0).count();
    if n > 4 && idle * 4 >= n {
        findings.push(Finding::new(
            Severity::Info,
            format!("{idle} of {n} buckets carry no traffic"),
            "Long silences: an idle application, a stalled transfer, or a capture filter that missed traffic.",
            Evidence {
                display_filter: a.filter.clone().unwrap_or_else(|| "frame".into()),
                ..Default::default()
            },
        ));
    }
    let summary = format!(
        "I/O graph of {}: {} frames, {} over {:.3} s in {n} buckets of {interval} s{}. Average {}, peak {}.{}",
        a.file.display_name,
        thousands(main.frames),
        human_bytes(main.bytes as f64),
        span_s,
        coarsened
            .map(|c| format!(" (coarsened from the requested {c} s)"))
            .unwrap_or_default(),
        human_bits_per_s(main.average_bits_per_s),
        human_bits_per_s(main.peak_bits_per_s),
        if series.len() > 1 {
            format!(
                " Extra series: {}.",
                series[1..]
                    .iter()
                    .map(|s| format!("{} (peak {})", s.label, human_bits_per_s(s.peak_bits_per_s)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        }
    );
    let base_name = std::path::Path::new(&a.file.display_name)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| a.file.display_name.clone());
    let title = format!("Throughput of {base_name}");
    let image = ImageInfo {
        mime_type: "image/png".into(),
        width: chart::WIDTH,
        height: chart::HEIGHT,
        saved_to: None,
        resource_uri: None,
        description: format!(
            "Bars: {} in bits per second per {interval} s bucket; lines: {}. X axis: seconds since the first packet; Y axis: auto-scaled bit rate.",
            series[0].label,
            if series.len() > 1 {
                series[1..]
                    .iter()
                    .map(|s| s.label.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                "none".into()
            }
        ),
    };
    let span = Span {
        packets: main.frames,
        first: window.start.or(info.as_ref().and_then(|i| i.first_epoch)),
        last: window
            .start
            .map(|s| s + span_s)
            .or(info.as_ref().and_then(|i| i.last_epoch)),
    };
    let data = IoGraph {
        interval_s: interval,
        coarsened_from_s: coarsened,
        series,
        buckets: Table::page(buckets, clamp_offset(p.offset), clamp_limit(p.limit, 60)),
        image,
        plot,
        title,
    };
    a.report(summary, findings, data, span, None).await
}

// ------------------------------------------------------------------ bandwidth

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BandwidthParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Window in seconds over which average, peak and p95 rates are measured (default 1 s;
    /// widened only when a capture would need more than 100,000 windows).
    #[serde(default)]
    pub time_window: Option<f64>,
    /// Link capacity in megabits per second, for utilisation percentages.
    #[serde(default)]
    pub link_capacity_mbps: Option<f64>,
    /// Wireshark display filter scoping the analysis.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Rows per table (default 10, max 500).
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Rates {
    pub average_bits_per_s: f64,
    pub peak_bits_per_s: f64,
    pub p95_bits_per_s: f64,
    pub median_bits_per_s: f64,
    /// Utilisation of link_capacity_mbps, percent (present when a capacity was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_utilization_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_utilization_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95_utilization_pct: Option<f64>,
    /// Windows at or above 90% of the link capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows_over_90_pct: Option<usize>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Talker {
    pub address: String,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Frames sent or received, as tshark's endpoint table counts them.
    pub frames: u64,
    pub share_pct: f64,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Conversation {
    pub address_a: String,
    pub address_b: String,
    pub bytes_a_to_b: u64,
    pub bytes_b_to_a: u64,
    pub frames: u64,
    pub duration_s: f64,
    /// Average rate over the conversation's own duration.
    pub bits_per_s: f64,
    pub share_pct: f64,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProtocolBytes {
    /// The highest protocol tshark dissected in the frame (e.g. tls, http, dns, tcp).
    pub protocol: String,
    pub frames: u64,
    pub bytes: u64,
    pub share_pct: f64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BurstWindow {
    pub start_s: f64,
    pub start_time: String,
    pub bits_per_s: f64,
    /// How many times the median window rate.
    pub times_median: f64,
    pub first_frame: u64,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Bandwidth {
    pub window_s: f64,
    pub windows: usize,
    /// Windows with no traffic at all: a mostly idle capture makes averages small.
    pub idle_windows: usize,
    pub total_bytes: u64,
    pub total_frames: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_capacity_mbps: Option<f64>,
    /// The path's likely capacity when the traffic shows a flat ceiling: several
    /// windows within 10% of the peak (a shaper or bottleneck), bits/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_capacity_bits_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_evidence: Option<String>,
    pub rates: Rates,
    pub bursts: Vec<BurstWindow>,
    pub top_talkers: Table<Talker>,
    pub top_conversations: Table<Conversation>,
    pub top_protocols: Table<ProtocolBytes>,
}

pub struct BwRow {
    frame: u64,
    time: f64,
    len: u64,
    src: Option<String>,
    dst: Option<String>,
    protocol: String,
}

impl FromRow for BwRow {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.time_epoch",
        "frame.len",
        "ip.src",
        "ipv6.src",
        "ip.dst",
        "ipv6.dst",
        "eth.src",
        "eth.dst",
        "frame.protocols",
        "icmp.type",
        "icmpv6.type",
    ];
    fn from_row(r: &Row<'_>) -> Option<Self> {
        let quote = is_icmp_error(r.u64(10), r.u64(11));
        let pick = |i: usize| r.conversation_addr(i, quote);
        let ip_src = pick(3).or_else(|| pick(4));
        let ip_dst = pick(5).or_else(|| pick(6));
        let (src, dst) = match (ip_src, ip_dst) {
            (Some(s), Some(d)) => (Some(s), Some(d)),
            _ => (r.first(7), r.first(8)),
        };
        Some(Self {
            frame: r.u64(0)?,
            time: r.f64(1)?,
            len: r.u64(2).unwrap_or(0),
            src: src.map(str::to_string),
            dst: dst.map(str::to_string),
            protocol: top_protocol(r.str(9).unwrap_or("")),
        })
    }
}

/// The protocol a person would name the frame by: the last layer of frame.protocols,
/// skipping tshark's catch-all payload layers.
pub fn top_protocol(protocols: &str) -> String {
    protocols
        .split(':')
        .rev()
        .find(|p| {
            !matches!(
                *p,
                "data"
                    | "media"
                    | "urlencoded-form"
                    | "tcp.segments"
                    | "json"
                    | "xml"
                    | "png"
                    | "image-jfif"
                    | "image-gif"
            )
        })
        .unwrap_or("unknown")
        .to_string()
}

/// Each window's rate over the time it really covers, sorted. The capture's end cuts
/// the last window short: a tail shorter than half a window joins the one before, so
/// every window spans between half and one and a half widths and the rates are a
/// partition of the capture (the peak is never below the average, and a last packet
/// alone in a sliver of a window does not make a false peak).
fn window_rates(
    windows: &BTreeMap<i64, (u64, u64)>,
    n_windows: usize,
    window: f64,
    duration: f64,
) -> Vec<f64> {
    let bytes = |i: usize| windows.get(&(i as i64)).map_or(0, |w| w.0);
    let tail = (duration - (n_windows as f64 - 1.0) * window).max(0.0);
    let (n, last_len) = if n_windows > 1 && tail < window / 2.0 {
        (n_windows - 1, window + tail)
    } else {
        (n_windows, if n_windows > 1 { tail } else { window })
    };
    let mut per: Vec<f64> = (0..n)
        .map(|i| {
            if i + 1 < n {
                bytes(i) as f64 * 8.0 / window
            } else {
                let b: u64 = (i..n_windows).map(bytes).sum();
                b as f64 * 8.0 / last_len.max(1e-9)
            }
        })
        .collect();
    per.sort_by(f64::total_cmp);
    per
}

/// Most windows a bandwidth result is computed over.
const MAX_WINDOWS: usize = 100_000;

/// Merges every `k` consecutive windows into one when `duration` would need more than
/// `max` windows of width `window`; returns the width and windows to use.
fn widen_windows(
    window: f64,
    windows: BTreeMap<i64, (u64, u64)>,
    duration: f64,
    max: usize,
) -> (f64, BTreeMap<i64, (u64, u64)>) {
    let needed = (duration / window).floor() + 1.0;
    if needed <= max as f64 {
        return (window, windows);
    }
    let k = (needed / max as f64).ceil().max(2.0);
    let mut merged: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for (i, (bytes, frame)) in windows {
        let m = merged
            .entry((i as f64 / k).floor() as i64)
            .or_insert((0, frame));
        m.0 += bytes;
        m.1 = m.1.min(frame);
    }
    (window * k, merged)
}

/// One address pair's traffic: bytes from the lower address and from the higher one.
#[derive(Default, Clone)]
struct ConvAcc {
    bytes: [u64; 2],
    frames: u64,
    first: f64,
    last: f64,
}

/// The bandwidth view's part of the index: bytes per window of one width, talkers,
/// address pairs and protocols.
#[derive(Clone, Default)]
pub struct BwState {
    span: Span,
    t0: Option<f64>,
    windows: BTreeMap<i64, (u64, u64)>,
    talkers: Keyed<arcstr::ArcStr, (u64, u64, u64, u64)>,
    convs: Keyed<(arcstr::ArcStr, arcstr::ArcStr), ConvAcc>,
    protocols: Keyed<String, (u64, u64)>,
    total: u64,
    window: f64,
    /// The pass's strings, while it runs: the talkers' addresses.
    strings: crate::index::SharedStrings,
}

impl crate::index::Part for BwState {
    type Row = BwRow;
    /// Windows of the width a call without `time_window` uses.
    fn new(ctx: &crate::index::Ctx) -> Self {
        Self {
            strings: ctx.strings.clone(),
            ..Self::with_window(window_width(None, ctx.window.span_s).0)
        }
    }
    fn add(&mut self, r: BwRow) {
        self.span.add(Some(r.time));
        let start = *self.t0.get_or_insert(r.time);
        self.total += r.len;
        let w = self
            .windows
            .entry(((r.time - start) / self.window).floor() as i64)
            .or_insert((0, r.frame));
        w.0 += r.len;
        let pe = self.protocols.or_default(r.protocol);
        pe.0 += 1;
        pe.1 += r.len;
        if let (Some(s), Some(d)) = (r.src, r.dst) {
            if let Some(ts) = self.talkers.slot_shared(&s, &mut self.strings) {
                ts.0 += r.len;
                ts.2 += 1;
                if s == d {
                    ts.1 += r.len;
                    ts.3 += r.len;
                }
            }
            if s != d
                && let Some(td) = self.talkers.slot_shared(&d, &mut self.strings)
            {
                td.1 += r.len;
                td.2 += 1;
            }
            let (key, forward) = if s <= d {
                ((&*s, &*d), true)
            } else {
                ((&*d, &*s), false)
            };
            let make = || ConvAcc {
                first: r.time,
                last: r.time,
                ..Default::default()
            };
            let Some(c) = self.convs.slot_pair(key, &mut self.strings, make) else {
                return;
            };
            c.bytes[usize::from(!forward)] += r.len;
            c.frames += 1;
            c.first = c.first.min(r.time);
            c.last = c.last.max(r.time);
        }
    }
    fn finish(&mut self) {
        self.talkers.finish();
        self.convs.finish();
        self.strings.release();
        self.protocols.finish();
    }
    fn approx_bytes(&self) -> usize {
        self.windows.len() * 40
            + self.talkers.len() * 96
            + self.convs.len() * 160
            + self.protocols.len() * 64
    }
}

impl BwState {
    fn with_window(window: f64) -> Self {
        Self {
            window,
            ..Self::default()
        }
    }
}

/// The window width for the asked one (1 s by default), widened so that the capture
/// has at most MAX_WINDOWS of them; and the asked width.
fn window_width(time_window: Option<f64>, span_hint: f64) -> (f64, f64) {
    let asked = time_window
        .filter(|w| w.is_finite() && *w > 0.0)
        .unwrap_or(1.0);
    let window = asked.max(nice_interval(span_hint / MAX_WINDOWS as f64));
    (window, asked)
}

async fn bandwidth(mut a: Analysis, p: BandwidthParams) -> Result<Report<Bandwidth>, String> {
    let info = a.summary().await.ok();
    let span_hint = a.window().await.span_s;
    let (window, asked) = window_width(p.time_window, span_hint);
    let coarsened = (window > asked).then_some(asked);
    // frame.time_relative counts from the file's first packet, not the filtered one
    let file_first = info.as_ref().and_then(|i| i.first_epoch);
    let indexed = a.part::<BwState>().await?;
    let state = if indexed.window == window {
        // the report consumes what it shows; the index keeps its own copy
        (*indexed).clone()
    } else {
        // a width the index does not count in: this call's own pass, same reducer
        crate::index::own_pass(&mut a, BwState::with_window(window)).await?
    };
    let BwState {
        span,
        t0,
        windows,
        talkers,
        convs,
        protocols,
        total,
        window,
        ..
    } = state;
    let limit = clamp_limit(p.limit, 10);
    let duration = span.duration();
    // The width was chosen from the file's span; the packets actually read decide how
    // many windows there are. Widen (merging whole windows) so that a clock jump in
    // the capture can never size an allocation.
    let (window, windows) = widen_windows(window, windows, duration, MAX_WINDOWS);
    // A capture shorter than one window is one window of its own length: rates over a
    // longer window would put the average above the peak.
    let (window, n_windows) = if duration > 0.0 && duration < window {
        (round(duration, 6).max(1e-6), 1)
    } else {
        (window, ((duration / window).floor() as usize + 1).max(1))
    };
    let coarsened = coarsened.or((window > asked).then_some(asked));
    let rate = |bytes: u64| bytes as f64 * 8.0 / window;
    let per = window_rates(&windows, n_windows, window, duration);
    let avg = crate::definitions::average_bits_per_s(total, duration);
    let peak = per.last().copied().unwrap_or(0.0);
    let p95 = percentile(&per, 95.0).unwrap_or(0.0);
    let median = percentile(&per, 50.0).unwrap_or(0.0);
    let cap_bps = p.link_capacity_mbps.map(|c| c * 1e6);
    let util = |v: f64| cap_bps.map(|c| round(100.0 * v / c, 2));
    let rates = Rates {
        average_bits_per_s: round(avg, 3),
        peak_bits_per_s: round(peak, 3),
        p95_bits_per_s: round(p95, 3),
        median_bits_per_s: round(median, 3),
        average_utilization_pct: util(avg),
        peak_utilization_pct: util(peak),
        p95_utilization_pct: util(p95),
        windows_over_90_pct: cap_bps.map(|c| per.iter().filter(|v| **v >= 0.9 * c).count()),
    };
    let start = t0.unwrap_or(0.0);
    // a burst: a window far above the usual rate (and a real share of the peak)
    let floor = median.max(avg / 4.0);
    let mut bursts: Vec<BurstWindow> = windows
        .iter()
        .filter(|(_, w)| rate(w.0) >= 3.0 * floor && rate(w.0) >= 0.5 * peak && n_windows >= 5)
        .map(|(i, w)| {
            let s = *i as f64 * window;
            BurstWindow {
                start_s: round(s, 6),
                start_time: rfc3339(start + s),
                bits_per_s: round(rate(w.0), 3),
                times_median: round(rate(w.0) / floor.max(1e-9), 1),
                first_frame: w.1,
                display_filter: {
                    let rel = start - file_first.unwrap_or(start) + s;
                    format!(
                        "frame.time_relative >= {} && frame.time_relative < {}",
                        round(rel, 6),
                        round(rel + window, 6)
                    )
                },
            }
        })
        .collect();
    bursts.sort_by(|a, b| b.bits_per_s.total_cmp(&a.bits_per_s));
    crate::report::keep_first(&mut bursts, 10);

    let mut talker_rows: Vec<Talker> = talkers
        .into_iter()
        .map(|(addr, (tx, rx, frames, to_self))| Talker {
            display_filter: host_filter(&addr, "addr"),
            share_pct: pct(tx + rx - to_self, total),
            address: addr.to_string(),
            bytes_sent: tx,
            bytes_received: rx,
            frames,
        })
        .collect();
    talker_rows.sort_by(|a, b| {
        (b.bytes_sent + b.bytes_received)
            .cmp(&(a.bytes_sent + a.bytes_received))
            .then(a.address.cmp(&b.address))
    });
    let mut conv_rows: Vec<Conversation> = convs
        .into_iter()
        .map(|((x, y), c)| {
            let ([ab, ba], frames) = (c.bytes, c.frames);
            let d = c.last - c.first;
            Conversation {
                display_filter: format!(
                    "{} && {}",
                    host_filter(&x, "addr"),
                    host_filter(&y, "addr")
                ),
                address_a: x.to_string(),
                address_b: y.to_string(),
                bytes_a_to_b: ab,
                bytes_b_to_a: ba,
                frames,
                duration_s: round(d, 6),
                bits_per_s: if d > 0.0 {
                    round((ab + ba) as f64 * 8.0 / d, 3)
                } else {
                    0.0
                },
                share_pct: pct(ab + ba, total),
            }
        })
        .collect();
    conv_rows.sort_by_key(|c| std::cmp::Reverse(c.bytes_a_to_b + c.bytes_b_to_a));
    let mut proto_rows: Vec<ProtocolBytes> = protocols
        .into_iter()
        .map(|(protocol, (frames, bytes))| ProtocolBytes {
            protocol,
            frames,
            bytes,
            share_pct: pct(bytes, total),
        })
        .collect();
    proto_rows.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.protocol.cmp(&b.protocol)));

    // a flat ceiling: the busiest windows all within 10% of the peak, and enough of
    // them (not one burst) — a shaper or a bottleneck the traffic keeps reaching
    let busy: Vec<f64> = per.iter().copied().filter(|v| *v > 0.0).collect();
    let at_ceiling: Vec<f64> = busy.iter().copied().filter(|v| *v >= 0.9 * peak).collect();
    let retransmissions = match a.part::<crate::model::tcp::TcpModel>().await {
        Ok(m) => m.total(|s| s.retrans[0] + s.retrans[1]),
        Err(_) => 0,
    };
    // only TCP pushes until something stops it: a steady UDP stream (voice, video) is
    // its own rate, not the path's
    let tcp_bytes = proto_rows
        .iter()
        .find(|r| r.protocol == "tcp")
        .map_or(0, |r| r.bytes);
    let (estimated_capacity, capacity_evidence) = if at_ceiling.len() >= 3
        && at_ceiling.len() * 10 >= busy.len() * 3
        && peak > 0.0
        && tcp_bytes * 2 >= total
    {
        let c = percentile(&at_ceiling, 50.0).unwrap_or(peak);
        (
            Some(round(c, 3)),
            Some(format!(
                "{} of {} busy {window} s window(s) within 10% of the peak ({}){}",
                at_ceiling.len(),
                busy.len(),
                human_bits_per_s(peak),
                if retransmissions > 0 {
                    format!(
                        ", with {retransmissions} TCP retransmission(s): loss when the ceiling is exceeded"
                    )
                } else {
                    String::new()
                }
            )),
        )
    } else {
        (None, None)
    };
    let mut findings = Vec::new();
    if let (Some(c), Some(why)) = (estimated_capacity, &capacity_evidence) {
        findings.push(Finding::new(
            Severity::Info,
            format!("Capacity likely ~{} (flat ceiling)", human_bits_per_s(c)),
            format!(
                "The traffic keeps reaching the same rate and no more: {why}. A shaper, a policer or the slowest link of the path sets it."
            ),
            Evidence {
                display_filter: "frame".into(),
                ..Default::default()
            },
        ));
    }
    if let Some(c) = p.link_capacity_mbps
        && rates.peak_utilization_pct.unwrap_or(0.0) > 100.0
    {
        findings.push(Finding::new(
            Severity::Low,
            format!(
                "More than the stated capacity: peak {}% of {c} Mbit/s",
                rates.peak_utilization_pct.unwrap_or(0.0)
            ),
            "Frames counted here exceed what the link can carry in one direction: the capacity given is lower than the link's, the capture sums both directions of a full-duplex link, or it aggregates several links (a SPAN of many ports). Utilisation above 100% is reported as measured, not clamped.",
            Evidence {
                display_filter: bursts
                    .first()
                    .map(|b| b.display_filter.clone())
                    .unwrap_or_else(|| "frame".into()),
                ..Default::default()
            },
        ));
    }
    if let Some(c) = p.link_capacity_mbps {
        let over = rates.windows_over_90_pct.unwrap_or(0);
        let peak_u = rates.peak_utilization_pct.unwrap_or(0.0);
        let p95_u = rates.p95_utilization_pct.unwrap_or(0.0);
        let (sev, what) = if over > 0 && p95_u >= 90.0 {
            (Severity::High, "saturated most of the time")
        } else if over > 0 {
            (Severity::Medium, "saturated at peaks")
        } else if p95_u >= 70.0 {
            (Severity::Medium, "running hot")
        } else if peak_u >= 70.0 {
            (Severity::Low, "busy at peaks")
        } else {
            (Severity::Info, "within capacity")
        };
        findings.push(Finding::new(
            sev,
            format!(
                "Link {what}: peak {peak_u}% and p95 {p95_u}% of {c} Mbit/s"
            ),
            format!(
                "{over} of {n_windows} {window} s window(s) at or above 90% of capacity; average {}% ({}). Queues build up and latency rises near saturation.",
                rates.average_utilization_pct.unwrap_or(0.0),
                human_bits_per_s(avg)
            ),
            Evidence {
                frames: bursts.iter().map(|b| b.first_frame).take(5).collect(),
                display_filter: bursts
                    .first()
                    .map(|b| b.display_filter.clone())
                    .unwrap_or_else(|| "frame".into()),
                ..Default::default()
            },
        ));
    }
    if let Some(b) = bursts.first() {
        findings.push(Finding::new(
            Severity::Info,
            format!(
                "{} burst window(s); the largest {} at {:.3} s ({}x the median)",
                bursts.len(),
                human_bits_per_s(b.bits_per_s),
                b.start_s,
                b.times_median
            ),
            "Short windows far above the usual rate: bulk transfers, backups or retransmission storms; they fill queues even when the average looks low.",
            Evidence {
                frames: vec![b.first_frame],
                time: Some(b.start_time.clone()),
                display_filter: b.display_filter.clone(),
                ..Default::default()
            },
        ));
    }
    if let Some(t) = talker_rows.first()
        && t.share_pct >= 50.0
        && talker_rows.len() > 2
    {
        findings.push(Finding::new(
            Severity::Info,
            format!("{} is in {}% of the bytes", t.address, t.share_pct),
            format!(
                "Sent {}, received {}.",
                human_bytes(t.bytes_sent as f64),
                human_bytes(t.bytes_received as f64)
            ),
            Evidence {
                endpoints: vec![t.address.clone()],
                display_filter: t.display_filter.clone(),
                ..Default::default()
            },
        ));
    }
    let summary = format!(
        "{} of {}: {} in {} frames over {:.3} s. Average {}, p95 {}, peak {} per {window} s window{}.{}{}",
        if a.filter.is_some() {
            "Filtered traffic"
        } else {
            "All traffic"
        },
        a.file.display_name,
        human_bytes(total as f64),
        thousands(span.packets),
        duration,
        human_bits_per_s(avg),
        human_bits_per_s(p95),
        human_bits_per_s(peak),
        coarsened
            .map(|c| format!(" (widened from {c} s: the capture is long)"))
            .unwrap_or_default(),
        match (p.link_capacity_mbps, rates.peak_utilization_pct) {
            (Some(c), Some(u)) => format!(" Peak utilisation {u}% of {c} Mbit/s."),
            _ => " Give link_capacity_mbps for utilisation.".into(),
        },
        talker_rows
            .first()
            .map(|t| format!(
                " Top talker {} ({}% of bytes); top protocol {}.",
                t.address,
                t.share_pct,
                proto_rows
                    .first()
                    .map(|p| p.protocol.as_str())
                    .unwrap_or("-")
            ))
            .unwrap_or_default()
    );
    let data = Bandwidth {
        window_s: window,
        windows: n_windows,
        idle_windows: n_windows.saturating_sub(windows.len()),
        total_bytes: total,
        estimated_capacity_bits_per_s: estimated_capacity,
        capacity_evidence,
        total_frames: span.packets,
        link_capacity_mbps: p.link_capacity_mbps,
        rates,
        bursts,
        top_talkers: Table::top(talker_rows, limit),
        top_conversations: Table::top(conv_rows, limit),
        top_protocols: Table::top(proto_rows, limit),
    };
    a.report(summary, findings, data, span, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recorded_io_stat_rows() {
        // recorded: tshark 4.0.17 -q -z io,stat,5,tcp.analysis.retransmission,http
        let row = "|  5 <> 10 |      9 |  4983 |      3 |  1607 |";
        assert_eq!(
            parse_io_stat_row(row),
            Some((5.0, vec![(9, 4983), (3, 1607)]))
        );
        let last = "| 30 <> Dur|      6 |   396 |      0 |     0 |";
        assert_eq!(parse_io_stat_row(last).unwrap().0, 30.0);
        assert_eq!(parse_io_stat_row("| Interval | Frames | Bytes |"), None);
        assert_eq!(
            parse_io_stat_row("| 0.000 <> 0.002 |      2 |   300 |"),
            Some((0.0, vec![(2, 300)]))
        );
    }

    #[test]
    fn protocol_names_skip_payload_layers() {
        assert_eq!(top_protocol("eth:ethertype:ip:tcp:tls"), "tls");
        assert_eq!(top_protocol("eth:ethertype:ip:tcp:data"), "tcp");
        assert_eq!(
            top_protocol("eth:ethertype:ip:tcp:http:urlencoded-form"),
            "http"
        );
    }
}
