//! The result contract every file-analysis tool returns (TOOLS.md, "The common
//! contract"): a summary a person can paste into a ticket, findings whose evidence
//! points back into the capture with a ready drill-down filter, the tool's own tables
//! with totals against what is shown, the capture facts, the scope, and the exact
//! tshark command lines, so an analyst can reproduce every number by hand.

use schemars::JsonSchema;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
}

impl Severity {
    /// The word the result uses for it (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// Where in the capture a finding can be seen.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Evidence {
    /// Frame numbers (as Wireshark numbers them) that show the problem; a sample when there are many.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub frames: Vec<u64>,
    /// `tcp.stream` / `udp.stream` indexes involved.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub streams: Vec<u64>,
    /// Hosts or host:port pairs involved.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub endpoints: Vec<String>,
    /// When it happened (RFC 3339, UTC), where a single time applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// A Wireshark display filter that shows exactly the packets behind this finding.
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Finding {
    pub severity: Severity,
    pub title: String,
    pub detail: String,
    pub evidence: Evidence,
    /// The tool, with its arguments, that explains this finding in depth (set by the
    /// triage of analyze_pcap_file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step: Option<NextStep>,
}

/// A tool call to make next.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NextStep {
    pub tool: String,
    pub arguments: std::collections::BTreeMap<String, serde_json::Value>,
}

impl Finding {
    pub fn new(
        severity: Severity,
        title: impl Into<String>,
        detail: impl Into<String>,
        evidence: Evidence,
    ) -> Self {
        Self {
            severity,
            title: title.into(),
            detail: detail.into(),
            evidence,
            next_step: None,
        }
    }
}

/// A finding's kind: its title with the numbers taken out ("Stream 7 went
/// silent for 60.06 s" and "Stream 2 went silent for 3.1 s" are one kind): what compare_captures and analyze_batch match findings by.
pub fn finding_kind(title: &str) -> String {
    let mut out = String::new();
    let mut in_num = false;
    for c in title.chars() {
        if c.is_ascii_digit() || (in_num && (c == '.' || c == ',')) {
            if !in_num {
                out.push('#');
            }
            in_num = true;
        } else {
            in_num = false;
            out.push(c);
        }
    }
    out
}

/// At most `n` items joined by ", ", then "and N more": a list in a sentence stays
/// short whatever the capture holds.
pub fn some_of(items: &[String], n: usize) -> String {
    some_of_total(items, items.len(), n)
}

/// [`some_of`] for a list that keeps only the first of `total` items.
pub fn some_of_total(items: &[String], total: usize, n: usize) -> String {
    let n = n.min(items.len());
    let shown = items[..n].join(", ");
    match total.max(items.len()) - n {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// `addr:port` as Wireshark writes it, IPv6 in brackets; the bare address without a port.
pub fn endpoint(addr: &str, port: Option<u64>) -> String {
    let mut out = String::new();
    write_endpoint(&mut out, addr, port);
    out
}

/// [`endpoint`] into a buffer the caller reuses (a reducer's per-packet path).
pub fn write_endpoint(out: &mut String, addr: &str, port: Option<u64>) {
    use std::fmt::Write;
    out.clear();
    let _ = match port {
        Some(p) if addr.contains(':') => write!(out, "[{addr}]:{p}"),
        Some(p) => write!(out, "{addr}:{p}"),
        None => {
            out.push_str(addr);
            Ok(())
        }
    };
}

/// The inverse of [`endpoint`]: `addr:port`, `[v6]:port` or a bare address (an IPv6
/// address without brackets has no port).
pub fn split_endpoint(e: &str) -> (&str, Option<u16>) {
    if let Some(rest) = e.strip_prefix('[')
        && let Some((addr, port)) = rest.split_once("]:")
    {
        return (addr, port.parse().ok());
    }
    match e.split_once(':') {
        Some((addr, port)) if !port.contains(':') => match port.parse() {
            Ok(p) => (addr, Some(p)),
            Err(_) => (e, None),
        },
        _ => (e.trim_matches(['[', ']']), None),
    }
}

/// A display filter for one host in one role (`src`, `dst` or `addr`): `eth.` for a MAC,
/// `ipv6.` for an IPv6 address, else `ip.`.
/// `field in {a,b,...}`: the display filter selecting these values (tshark 4 wants the
/// commas).
pub fn in_set(field: &str, values: impl IntoIterator<Item = u64>) -> String {
    let v: Vec<String> = values.into_iter().map(|n| n.to_string()).collect();
    format!("{field} in {{{}}}", v.join(","))
}

pub fn host_filter(addr: &str, dir: &str) -> String {
    let parts: Vec<&str> = addr.split(':').collect();
    let mac = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    let layer = if mac {
        "eth"
    } else if addr.contains(':') {
        "ipv6"
    } else {
        "ip"
    };
    format!("{layer}.{dir} == {addr}")
}

/// A paged table's `more`: how to see the rows after the `shown` ones from `offset`,
/// when some are left.
pub fn more_rows(total: usize, offset: usize, shown: usize) -> Option<String> {
    (offset + shown < total).then(|| {
        format!(
            "{} more row(s): call again with offset={} (or a larger limit, or a narrower display_filter)",
            total - offset - shown,
            offset + shown
        )
    })
}

/// Keeps the first `n` items of `v` and lets go of the rest of its buffer: `truncate`
/// alone keeps the whole capacity, and a report may be cached for the rest of the
/// session (the evidence frames of a scan over 100k streams, every second of a
/// capture ranked for its ten worst).
pub fn keep_first<T>(v: &mut Vec<T>, n: usize) {
    v.truncate(n);
    v.shrink_to_fit();
}

/// A bounded list: how many rows exist, how many are shown, and how to see more.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Table<T> {
    pub total: usize,
    pub shown: usize,
    /// Index of the first row shown within the full, sorted list.
    pub offset: usize,
    /// Set when rows were left out: what to call to see them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub more: Option<String>,
    pub rows: Vec<T>,
}

impl<T> Table<T> {
    /// Takes an already sorted list and keeps `limit` rows from `offset`.
    pub fn page(all: Vec<T>, offset: usize, limit: usize) -> Self {
        Self::page_map(all, offset, limit, |row| row)
    }

    /// [`Table::page`] of `all`, each shown item made into its row by `row`: a view
    /// judges and orders every flow of a capture without strings, and writes rows only
    /// for the page it shows.
    pub fn page_map<X>(all: Vec<X>, offset: usize, limit: usize, row: impl FnMut(X) -> T) -> Self {
        let total = all.len();
        // into a vector of the page's size: `collect` from `all.into_iter()` reuses
        // `all`'s buffer in place and keeps its whole capacity, so a cached report of
        // 15 hosts held the 100k-host list's 13 MB (on the 1 GB bench mix each
        // topology call with other arguments left the server 13 MB bigger)
        let mut rows = Vec::with_capacity(limit.min(total.saturating_sub(offset)));
        rows.extend(all.into_iter().skip(offset).take(limit).map(row));
        Self::window(rows, total, offset)
    }

    /// Rows already cut from a list of `total` that was never held whole (matches
    /// counted while streaming), starting at `offset`.
    pub fn window(mut rows: Vec<T>, total: usize, offset: usize) -> Self {
        // a list cut with `truncate` keeps its capacity; a report may be cached
        rows.shrink_to_fit();
        let shown = rows.len();
        let more = more_rows(total, offset, shown);
        Self {
            total,
            shown,
            offset,
            more,
            rows,
        }
    }

    /// The first `limit` rows, no paging offered beyond a larger limit.
    pub fn top(all: Vec<T>, limit: usize) -> Self {
        Self::top_map(all, limit, |row| row)
    }

    /// [`Table::top`] of `all`, each shown item made into its row by `row`.
    pub fn top_map<X>(all: Vec<X>, limit: usize, row: impl FnMut(X) -> T) -> Self {
        let mut t = Self::page_map(all, 0, limit, row);
        if t.more.is_some() {
            t.more = Some(format!(
                "{} more row(s): raise limit or narrow display_filter",
                t.total - t.shown
            ));
        }
        t
    }
}

/// Facts about the file analysed.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, JsonSchema)]
pub struct CaptureFacts {
    /// The name the client gave.
    pub file: String,
    /// pcap or pcapng (from the magic bytes).
    pub format: String,
    pub size_bytes: u64,
    /// Packets (frames as tshark numbers them) in the file as it was when the call began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets_in_file: Option<u64>,
    /// Packets this analysis looked at (after the display filter).
    pub packets_analysed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_packet_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_packet_time: Option<String>,
    pub duration_s: f64,
    /// Set when the file ends in the middle of a packet or is damaged: results cover
    /// what could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_warning: Option<String>,
    /// What makes the capture itself doubtful: clock jumps, a file that grew while it was read.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Scope {
    /// The display filter that scoped the analysis, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_filter: Option<String>,
    /// The time range that scoped the analysis (start_time/end_time), as absolute bounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_range: Option<crate::timescope::TimeRangeScope>,
    /// Other parameters that narrowed the result (method, host, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The analysis finished; every field is final.
    Complete,
    /// The capture is large and the analysis is still running in the background:
    /// call the tool again with the same arguments for the answer.
    Running,
}

/// The fields every tool's result carries around its own data (see [`Report`]).
pub const ENVELOPE: &[&str] = &[
    "status",
    "summary",
    "findings",
    "capture",
    "scope",
    "percent_done",
    "tshark_commands",
];

/// What every file-analysis tool returns. The tool's own tables are flattened in.
/// Serialized through [`crate::fit`], so no result exceeds the size budget whatever
/// the caps inside it missed.
#[derive(Debug, Clone, JsonSchema)]
pub struct Report<T> {
    // the envelope's fields are listed in ENVELOPE too (a test keeps them in step)
    pub status: Status,
    pub summary: String,
    /// Problems and observations, most severe first.
    pub findings: Vec<Finding>,
    #[serde(flatten)]
    pub data: Option<T>,
    pub capture: CaptureFacts,
    pub scope: Scope,
    /// Progress of a running analysis, 0-100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent_done: Option<f64>,
    /// The tshark command lines run, to reproduce the result by hand.
    pub tshark_commands: Vec<String>,
    /// Bytes of JSON the result may take ([`crate::fit`]): the contract's 20 KB, or
    /// more when the caller asked for a bigger page.
    #[schemars(skip)]
    pub budget: usize,
}

/// The wire form of [`Report`], field for field (the schema is derived on `Report`).
#[derive(Serialize)]
struct ReportWire<'a, T> {
    status: Status,
    summary: &'a str,
    findings: &'a [Finding],
    #[serde(flatten)]
    data: &'a Option<T>,
    capture: &'a CaptureFacts,
    scope: &'a Scope,
    #[serde(skip_serializing_if = "Option::is_none")]
    percent_done: Option<f64>,
    tshark_commands: &'a [String],
}

impl<T: Serialize> Serialize for Report<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wire = ReportWire {
            status: self.status,
            summary: &self.summary,
            findings: &self.findings,
            data: &self.data,
            capture: &self.capture,
            scope: &self.scope,
            percent_done: self.percent_done,
            tshark_commands: &self.tshark_commands,
        };
        let mut v = serde_json::to_value(&wire).map_err(serde::ser::Error::custom)?;
        crate::fit::fit(&mut v, self.budget);
        v.serialize(s)
    }
}

impl<T> Report<T> {
    pub fn complete(
        summary: String,
        mut findings: Vec<Finding>,
        data: T,
        capture: CaptureFacts,
        scope: Scope,
        tshark_commands: Vec<String>,
    ) -> Self {
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        // what makes the capture itself doubtful leads the summary of every tool
        let summary = if capture.warnings.is_empty() {
            summary
        } else {
            format!("Capture problem: {} {summary}", capture.warnings.join(" "))
        };
        Self {
            status: Status::Complete,
            summary,
            findings,
            data: Some(data),
            capture,
            scope,
            percent_done: None,
            tshark_commands,
            budget: crate::fit::RESULT_BUDGET,
        }
    }

    pub fn running(capture: CaptureFacts, scope: Scope, percent: f64) -> Self {
        Self {
            status: Status::Running,
            summary: format!(
                "The analysis of {} is still running ({percent:.0}% of the file read). It continues in the background: \
                 call this tool again with exactly the same arguments to get the result.",
                capture.file
            ),
            findings: Vec::new(),
            data: None,
            capture,
            scope,
            percent_done: Some(percent),
            tshark_commands: Vec::new(),
            budget: crate::fit::RESULT_BUDGET,
        }
    }
}

/// How often one value occurred.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CountRow {
    pub key: String,
    pub count: u64,
}

/// Counts as prose: "3 refused, 1 mid transfer" (underscores read as spaces).
pub fn count_list(counts: &[CountRow]) -> String {
    counts
        .iter()
        .map(|c| format!("{} {}", c.count, c.key.replace('_', " ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text with its first letter upper case.
pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Counts of each distinct value, most frequent first (ties by name).
pub fn counts(items: impl Iterator<Item = String>) -> Vec<CountRow> {
    let mut m: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for i in items {
        *m.entry(i).or_default() += 1;
    }
    let mut v: Vec<CountRow> = m
        .into_iter()
        .map(|(key, count)| CountRow { key, count })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
    v
}

/// Formats a number with thousands separators, for summaries people read.
/// Wireshark's bytes pane: 16 bytes per line as offset (from `base`, `digits` hex
/// digits), hex, and ASCII with non-printable bytes as '.'.
pub fn hex_dump(b: &[u8], base: u64, digits: usize) -> Vec<String> {
    b.chunks(16)
        .enumerate()
        .map(|(i, c)| {
            let hex: Vec<String> = c.iter().map(|x| format!("{x:02x}")).collect();
            let ascii: String = c
                .iter()
                .map(|&x| {
                    if (0x20..0x7f).contains(&x) {
                        x as char
                    } else {
                        '.'
                    }
                })
                .collect();
            let off = base + i as u64 * 16;
            format!("{off:0digits$x}  {:<47}  {ascii}", hex.join(" "))
        })
        .collect()
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Human-readable byte size.
pub fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Human-readable bit rate.
pub fn human_bits_per_s(bps: f64) -> String {
    const UNITS: [&str; 4] = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s"];
    let mut v = bps;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// Seconds since the Unix epoch to RFC 3339 UTC with microseconds.
pub fn rfc3339(epoch_s: f64) -> String {
    if !epoch_s.is_finite() {
        return String::new();
    }
    let total_us = (epoch_s * 1e6).round() as i128;
    let secs = total_us.div_euclid(1_000_000) as i64;
    let us = total_us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{us:06}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Percentile by nearest rank on a sorted slice.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Seconds to milliseconds, rounded to microseconds.
pub fn ms(s: f64) -> f64 {
    round(s * 1000.0, 3)
}

/// `part` as a percentage of `whole`, two decimals; 0 when `whole` is 0.
pub fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        round(100.0 * part as f64 / whole as f64, 2)
    }
}

/// Rounds for display in JSON without losing meaning.
pub fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentence_list_counts_what_it_leaves_out() {
        let items: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(some_of(&items, 2), "a, b and 1 more");
        assert_eq!(some_of(&items, 5), "a, b, c");
        // a list that kept 3 of 25
        assert_eq!(some_of_total(&items, 25, 2), "a, b and 23 more");
        assert_eq!(some_of_total(&items, 25, 5), "a, b, c and 22 more");
    }

    #[test]
    fn endpoints_split_back_into_address_and_port() {
        for (addr, port) in [
            ("10.0.0.1", Some(80)),
            ("2001:db8::1", Some(443)),
            ("fe80::1", None),
            ("10.0.0.1", None),
        ] {
            let e = endpoint(addr, port.map(u64::from));
            assert_eq!(split_endpoint(&e), (addr, port), "{e}");
        }
    }

    #[test]
    fn finding_kinds_ignore_numbers() {
        assert_eq!(
            finding_kind("Stream 7 went silent for 60.06 s"),
            finding_kind("Stream 12 went silent for 3.1 s")
        );
        assert_ne!(
            finding_kind("2 DNS failures"),
            finding_kind("2 TLS failures")
        );
    }

    #[test]
    fn the_envelope_list_names_the_reports_own_fields() {
        #[derive(Serialize, JsonSchema)]
        struct Nothing {}
        let schema = serde_json::to_value(schemars::schema_for!(Report<Nothing>)).unwrap();
        let mut fields: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        let mut want = ENVELOPE.to_vec();
        want.sort_unstable();
        assert_eq!(fields, want);
    }

    #[test]
    fn rfc3339_known_instant() {
        // capinfos: 2011-03-18 19:06:07.096535 for zeek-wikipedia.pcap
        assert_eq!(rfc3339(1300475167.096535), "2011-03-18T19:06:07.096535Z");
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn table_paging_counts() {
        let t = Table::page((0..10).collect::<Vec<_>>(), 2, 3);
        assert_eq!((t.total, t.shown, t.offset), (10, 3, 2));
        assert_eq!(t.rows, vec![2, 3, 4]);
        assert!(t.more.unwrap().contains("offset=5"));
        let t = Table::page(vec![1, 2], 0, 50);
        assert!(t.more.is_none());
    }

    #[test]
    fn host_filters_by_address_kind() {
        assert_eq!(host_filter("10.0.0.1", "src"), "ip.src == 10.0.0.1");
        assert_eq!(
            host_filter("2001:db8::1", "addr"),
            "ipv6.addr == 2001:db8::1"
        );
        assert_eq!(
            host_filter("00:13:7f:be:8c:ff", "addr"),
            "eth.addr == 00:13:7f:be:8c:ff"
        );
        assert_eq!(
            host_filter("fe80::1:2:3:4", "dst"),
            "ipv6.dst == fe80::1:2:3:4"
        );
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(thousands(12408), "12,408");
        assert_eq!(thousands(999), "999");
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 95.0), Some(4.0));
    }
}
