//! `search_packet_content`: frames whose bytes contain a pattern.
//!
//! The pattern is data, never filter syntax. A literal pattern becomes a display filter
//! of hex byte escapes only (`frame contains "\x61\x62"`), so quotes, backslashes and
//! `" or 1 or "` cannot change what the filter means. Case-insensitive literals are
//! spelled out as alternatives of each character's case forms, because tshark's regex
//! engine works on bytes and would not fold non-ASCII letters.

use std::collections::HashMap;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::{Analysis, Span};
use crate::report::{Evidence, Finding, Report, Severity, Table, rfc3339, thousands};
use crate::secrets::mask_text;
use crate::server::PcapServer;
use crate::tools::{clamp_limit, clamp_offset, filter_string_literal};
use crate::tshark::fields::{FromRow, Row};

pub const MAX_PATTERN_CHARS: usize = 256;
/// Bytes of context on each side of the match in a snippet.
const SNIPPET_CONTEXT: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SearchParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Text to find in the frames' bytes. Searched literally unless regex is true.
    pub search_pattern: String,
    /// Match case exactly (default false).
    #[serde(default)]
    pub case_sensitive: bool,
    /// Treat search_pattern as a regular expression (PCRE, as Wireshark's `matches`).
    #[serde(default)]
    pub regex: bool,
    /// Matches to list (default 20, max 500); the total is always counted.
    #[serde(default)]
    pub limit: Option<i64>,
    /// Matches to skip, for paging.
    #[serde(default)]
    pub offset: Option<i64>,
    /// Optional Wireshark display filter that scopes the search, e.g. `http`.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Show cleartext passwords in snippets and info as captured (default false: masked,
    /// as analyze_security_threats masks them).
    #[serde(default)]
    pub reveal_secrets: Option<bool>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SearchMatch {
    pub frame: u64,
    pub time: String,
    pub source: Option<String>,
    pub destination: Option<String>,
    pub protocol: String,
    pub info: String,
    /// Printable bytes around the first match in the frame (non-printable as '.').
    pub snippet: Option<String>,
    /// Byte offset of the match inside the frame.
    pub match_offset: Option<usize>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SearchResult {
    pub pattern: String,
    pub case_sensitive: bool,
    pub regex: bool,
    /// The display filter that found the matches (reproduce it in Wireshark).
    pub match_filter: String,
    pub matches: Table<SearchMatch>,
}

/// The display filter that finds the pattern, built so client text is only data.
pub fn match_filter(pattern: &str, case_sensitive: bool, regex: bool) -> String {
    if regex {
        let p = if case_sensitive {
            pattern.to_string()
        } else {
            format!("(?i){pattern}")
        };
        return format!("frame matches {}", filter_string_literal(&p));
    }
    if case_sensitive {
        let hex: String = pattern.bytes().map(|b| format!("\\x{b:02x}")).collect();
        return format!("frame contains \"{hex}\"");
    }
    // every byte as a regex hex escape (`\\xHH` in the filter literal reaches PCRE as `\xHH`)
    format!(
        "frame matches \"{}\"",
        byte_alternatives(pattern, false, "\\\\")
    )
}

/// The pattern as a regular expression of byte escapes (`{esc}xHH`): each character
/// as its UTF-8 bytes or, unless case_sensitive, as the alternatives of its case forms.
fn byte_alternatives(pattern: &str, case_sensitive: bool, esc: &str) -> String {
    let bytes_re = |s: &str| -> String { s.bytes().map(|b| format!("{esc}x{b:02x}")).collect() };
    let mut re = String::new();
    for c in pattern.chars() {
        let variants = if case_sensitive {
            vec![c.to_string()]
        } else {
            case_variants(c)
        };
        if variants.len() == 1 {
            re.push_str(&bytes_re(&variants[0]));
        } else {
            re.push_str("(?:");
            re.push_str(
                &variants
                    .iter()
                    .map(|v| bytes_re(v))
                    .collect::<Vec<_>>()
                    .join("|"),
            );
            re.push(')');
        }
    }
    re
}

/// The distinct spellings of a character under simple case mapping.
fn case_variants(c: char) -> Vec<String> {
    let mut v = vec![c.to_string()];
    for s in [c.to_lowercase().to_string(), c.to_uppercase().to_string()] {
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}

/// The literal search exactly as the display filter `match_filter` makes it, in Rust:
/// the bytes of the text, or for a case-insensitive search each character's case forms
/// as alternatives of their UTF-8 bytes. Regular expressions have no such twin (PCRE is
/// not Rust's regex), so they stay tshark's.
fn literal_twin(pattern: &str, case_sensitive: bool) -> Option<regex::bytes::Regex> {
    let re = format!("(?-u){}", byte_alternatives(pattern, case_sensitive, "\\"));
    regex::bytes::RegexBuilder::new(&re)
        .unicode(false)
        .size_limit(1 << 22)
        .build()
        .ok()
}

/// Matches of a literal search found by our own record walk: every matching frame
/// counted, the page's records kept. `None` when a record could not be judged (a
/// packet block without bytes), and tshark must search.
fn walk_matches(
    file: std::fs::File,
    size: u64,
    re: &regex::bytes::Regex,
    offset: usize,
    limit: usize,
) -> Option<(Span, Vec<crate::pcapfile::KeptRecord>)> {
    let mut span = Span::default();
    let mut kept = Vec::new();
    let mut judged = true;
    crate::pcapfile::walk(file, size, true, |rec| {
        let (Some(data), Some(linktype)) = (rec.data, rec.linktype) else {
            // a frame whose bytes we do not read (a systemd journal or custom block):
            // only tshark can say whether it matches
            judged = false;
            return false;
        };
        if re.is_match(data) {
            span.add(rec.time);
            if span.packets as usize > offset && kept.len() < limit {
                kept.push(crate::pcapfile::KeptRecord {
                    frame: rec.frame,
                    time: rec.time.unwrap_or(0.0),
                    linktype,
                    data: data.to_vec(),
                });
            }
        }
        true
    })
    .ok()?;
    judged.then_some((span, kept))
}

/// What one search found: every match counted in `span`, the page's rows, and the
/// page's frame bytes (for the snippets) when the search already read them.
struct Found {
    span: Span,
    rows: Vec<SearchRow>,
    bytes: Option<HashMap<u64, Vec<u8>>>,
}

/// The same search in Rust, to place the snippet.
fn local_matcher(pattern: &str, case_sensitive: bool, regex: bool) -> Option<regex::bytes::Regex> {
    let src = if regex {
        pattern.to_string()
    } else {
        regex::escape(pattern)
    };
    regex::bytes::RegexBuilder::new(&src)
        .case_insensitive(!case_sensitive)
        .size_limit(1 << 20)
        .build()
        .ok()
}

fn snippet(bytes: &[u8], start: usize, end: usize) -> String {
    let from = start.saturating_sub(SNIPPET_CONTEXT);
    let to = (end + SNIPPET_CONTEXT).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[from..to]);
    let mut s: String = text
        .chars()
        .map(|c| {
            if c.is_control() || c == '\u{fffd}' {
                '.'
            } else {
                c
            }
        })
        .collect();
    if from > 0 {
        s.insert(0, '…');
    }
    if to < bytes.len() {
        s.push('…');
    }
    s
}

struct SearchRow {
    frame: u64,
    time: Option<f64>,
    src: Option<String>,
    dst: Option<String>,
    protocol: String,
    info: String,
}

impl FromRow for SearchRow {
    const FIELDS: &'static [&'static str] = &[
        "frame.number",
        "frame.time_epoch",
        "ip.src",
        "ipv6.src",
        "eth.src",
        "ip.dst",
        "ipv6.dst",
        "eth.dst",
        "_ws.col.Protocol",
        "_ws.col.Info",
    ];

    fn from_row(r: &Row<'_>) -> Option<Self> {
        Some(Self {
            frame: r.u64(0)?,
            time: r.f64(1),
            src: r.owned(2).or_else(|| r.owned(3)).or_else(|| r.owned(4)),
            dst: r.owned(5).or_else(|| r.owned(6)).or_else(|| r.owned(7)),
            protocol: r.owned(8).unwrap_or_default(),
            info: r.str(9).unwrap_or("").chars().take(200).collect(),
        })
    }
}

#[tool_router(router = search_router, vis = "pub(crate)")]
impl PcapServer {
    /// Frames whose bytes contain a text (literal by default, or a regex): time,
    /// endpoints, protocol, Info column and a short snippet around the match, plus the
    /// total match count. Case-insensitive unless case_sensitive is true.
    #[tool(
        name = "search_packet_content",
        annotations(
            title = "Search packet bytes",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn search_packet_content(
        &self,
        Parameters(p): Parameters<SearchParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<SearchResult>>, String> {
        if p.search_pattern.is_empty() {
            return Err("search_pattern is empty: give the text to look for".into());
        }
        if p.search_pattern.chars().count() > MAX_PATTERN_CHARS {
            return Err(format!(
                "search_pattern is longer than {MAX_PATTERN_CHARS} characters; search for a shorter, distinctive part"
            ));
        }
        self.engine
            .analyze("search_packet_content", p, rc, search)
            .await
    }
}

/// The frames of a literal search over the whole file, found by our own record walk:
/// tshark dissects only the page of matches shown, written to a capture of their own,
/// instead of every frame of the file. `None` when it cannot stand in for tshark's
/// search (records without bytes, page frames of several link types).
async fn search_by_walk(
    a: &Analysis,
    p: &SearchParams,
    offset: usize,
    limit: usize,
) -> Result<Option<Found>, String> {
    let Some(re) = literal_twin(&p.search_pattern, p.case_sensitive) else {
        return Ok(None);
    };
    let reader = a
        .file
        .opened
        .reopen()
        .map_err(|e| format!("cannot read {}: {e}", a.file.display_name))?;
    let size = a.file.size;
    let found = tokio::task::spawn_blocking(move || walk_matches(reader, size, &re, offset, limit))
        .await
        .map_err(|e| format!("searching the capture failed: {e}"))?;
    let Some((span, records)) = found else {
        return Ok(None);
    };
    let Some(linktype) = records.first().map(|r| r.linktype) else {
        return Ok(Some(Found {
            span,
            rows: Vec::new(),
            bytes: Some(HashMap::new()),
        }));
    };
    if records.iter().any(|r| r.linktype != linktype) {
        return Ok(None);
    }
    let mut tmp = tempfile::NamedTempFile::new()
        .map_err(|e| format!("cannot create a temporary capture for the matches: {e}"))?;
    crate::pcapfile::write_pcap(tmp.as_file_mut(), linktype, &records)
        .map_err(|e| format!("cannot write the matches' capture: {e}"))?;
    let mut sub = a.sibling();
    sub.filter = None;
    sub.file = crate::sandbox::CaptureFile::internal(
        tmp.reopen().map_err(|e| e.to_string())?,
        tmp.path(),
        &a.file.display_name,
    );
    let mut rows = Vec::new();
    sub.fields::<SearchRow>(None, &[], |mut r: SearchRow| {
        // frame n of the page's capture is the page's n-th match
        if let Some(rec) = records.get(r.frame as usize - 1) {
            r.frame = rec.frame;
            rows.push(r);
        }
    })
    .await?;
    let bytes = records.into_iter().map(|r| (r.frame, r.data)).collect();
    Ok(Some(Found {
        span,
        rows,
        bytes: Some(bytes),
    }))
}

async fn search(mut a: Analysis, p: SearchParams) -> Result<Report<SearchResult>, String> {
    let filter = match_filter(&p.search_pattern, p.case_sensitive, p.regex);
    let limit = clamp_limit(p.limit, 20);
    let offset = clamp_offset(p.offset);
    // a pathological pattern must not hold a tshark slot for PCAP_TSHARK_TIMEOUT
    a.time_budget = Some((a.engine.cfg.search_timeout, "PCAP_SEARCH_TIMEOUT"));
    // a literal search of the whole file is ours to do; a scoped or regex search is
    // tshark's (the scope needs dissection, PCRE has no twin here)
    let walked = if a.filter.is_none() && !p.regex {
        search_by_walk(&a, &p, offset, limit).await?
    } else {
        None
    };
    let Found {
        span,
        rows: kept,
        bytes,
    } = match walked {
        Some(found) => {
            // what was found without tshark, as the tshark command that finds it too
            let args = crate::tshark::fields::field_args(SearchRow::FIELDS);
            a.note_equivalent(Some(&filter), &args).await;
            found
        }
        None => {
            let mut span = Span::default();
            let mut rows: Vec<SearchRow> = Vec::new();
            a.fields::<SearchRow>(Some(&filter), &[], |r| {
                span.add(r.time);
                if span.packets as usize > offset && rows.len() < limit {
                    rows.push(r);
                }
            })
            .await
            .map_err(|e| {
                if p.regex {
                    format!("{e}\nIf the regular expression is the problem, check its syntax (PCRE) or set regex=false for a literal search.")
                } else {
                    e
                }
            })?;
            Found {
                span,
                rows,
                bytes: None,
            }
        }
    };
    let total = span.packets as usize;

    // The raw bytes of the shown frames, for the snippets: the walk's own, or straight
    // from the file records (no second dissection pass).
    let raw = match bytes {
        Some(b) => b,
        None => {
            let wanted: std::collections::BTreeSet<u64> = kept.iter().map(|r| r.frame).collect();
            let size = a.file.size;
            match a.file.opened.reopen() {
                Ok(reader) => tokio::task::spawn_blocking(move || {
                    crate::pcapfile::frames(reader, size, &wanted)
                })
                .await
                .unwrap_or_default(),
                Err(_) => Default::default(),
            }
        }
    };
    let matcher = local_matcher(&p.search_pattern, p.case_sensitive, p.regex);
    let reveal = p.reveal_secrets.unwrap_or(false);
    let rows: Vec<SearchMatch> = kept
        .into_iter()
        .map(|r| {
            let found = raw.get(&r.frame).and_then(|b| {
                let m = matcher.as_ref()?.find(b)?;
                Some((
                    m.start(),
                    mask_text(&snippet(b, m.start(), m.end()), reveal),
                ))
            });
            SearchMatch {
                frame: r.frame,
                time: r.time.map(rfc3339).unwrap_or_default(),
                source: r.src,
                destination: r.dst,
                protocol: r.protocol,
                info: mask_text(&r.info, reveal),
                match_offset: found.as_ref().map(|f| f.0),
                snippet: found.map(|f| f.1),
            }
        })
        .collect();
    let matches = Table::window(rows, total, offset);
    let mut findings = Vec::new();
    if total > 0 {
        findings.push(Finding::new(
            Severity::Info,
            format!("{} frame(s) contain the pattern", thousands(total as u64)),
            format!(
                "First match in frame {}.",
                matches.rows.first().map(|m| m.frame).unwrap_or(0)
            ),
            Evidence {
                frames: matches.rows.iter().map(|m| m.frame).take(10).collect(),
                display_filter: a.combined_filter(Some(&filter)).unwrap_or_default(),
                ..Default::default()
            },
        ));
    }
    let kind = if p.regex {
        "regular expression"
    } else {
        "text"
    };
    let case = if p.case_sensitive {
        "case-sensitive"
    } else {
        "case-insensitive"
    };
    let summary = if total == 0 {
        format!(
            "No frame in {} contains the {kind} {:?} ({case} search of every frame's bytes).",
            a.file.display_name, p.search_pattern
        )
    } else {
        format!(
            "{} frame(s) in {} contain the {kind} {:?} ({case}); showing {} from offset {}.",
            thousands(total as u64),
            a.file.display_name,
            p.search_pattern,
            matches.shown,
            offset
        )
    };
    let data = SearchResult {
        pattern: p.search_pattern.clone(),
        case_sensitive: p.case_sensitive,
        regex: p.regex,
        match_filter: filter,
        matches,
    };
    a.report(summary, findings, data, span, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_filters_are_hex_only() {
        let f = match_filter(r#"zzz" || tcp || frame contains "zzz"#, true, false);
        assert!(f.starts_with("frame contains \"\\x7a"));
        assert!(!f.contains("||"));
        let f = match_filter("a\"b", false, false);
        assert_eq!(
            f,
            "frame matches \"(?:\\\\x61|\\\\x41)\\\\x22(?:\\\\x62|\\\\x42)\""
        );
    }

    #[test]
    fn the_literal_twin_matches_what_the_filter_matches() {
        let re = literal_twin("Ab\"é", false).unwrap();
        assert!(re.is_match("xxaB\"Éyy".as_bytes()));
        assert!(!re.is_match("xxaB'Éyy".as_bytes()));
        let re = literal_twin("Ab", true).unwrap();
        assert!(re.is_match(b"zAbz") && !re.is_match(b"zabz"));
        // regex syntax in a literal is data
        let re = literal_twin("a.c", true).unwrap();
        assert!(re.is_match(b"a.c") && !re.is_match(b"abc"));
    }

    #[test]
    fn non_ascii_case_variants() {
        assert_eq!(case_variants('é'), vec!["é", "É"]);
        assert_eq!(case_variants('1'), vec!["1"]);
    }

    #[test]
    fn snippets_are_printable() {
        let b = b"\x00\x01GET /index.html HTTP/1.1\r\n";
        let m = local_matcher("index", false, false)
            .unwrap()
            .find(b)
            .unwrap();
        let s = snippet(b, m.start(), m.end());
        assert!(s.contains("GET /index.html"));
        assert!(!s.contains('\r'));
    }
}
