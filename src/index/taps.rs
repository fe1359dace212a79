//! The taps the index pass runs beside its rows (`-z expert`, `-z credentials`,
//! `-z rtp,streams`): their text, how it is told apart, read, and, for a pass split
//! by flow, put back together as one pass over the whole capture would have printed it.

use crate::index::FastMap;

/// The text of the taps that ran in the index pass, each on its own.
#[derive(Debug, Default, Clone)]
pub struct Taps {
    pub expert: String,
    pub credentials: String,
    pub rtp_streams: String,
}

impl Taps {
    /// The taps' arguments, in an order [`Taps::split`] recognises.
    pub(super) fn args() -> [String; 6] {
        ["-z", "expert", "-z", "credentials", "-z", "rtp,streams"].map(String::from)
    }

    /// Sorts the tap text tshark prints after the last row into the three sections:
    /// each starts with a header only its tap prints.
    pub(super) fn split(text: &str) -> Self {
        let mut t = Taps::default();
        let mut cur: Option<&mut String> = None;
        for line in text.lines() {
            let expert_head = [
                "Errors (",
                "Warns (",
                "Warnings (",
                "Notes (",
                "Chats (",
                "Comments (",
            ]
            .iter()
            .any(|h| line.starts_with(h));
            if line.starts_with('=') && line.contains("RTP Streams") {
                cur = Some(&mut t.rtp_streams);
            } else if line.starts_with("Packet") && line.contains("Username") {
                cur = Some(&mut t.credentials);
            } else if expert_head {
                cur = Some(&mut t.expert);
            }
            if let Some(s) = cur.as_deref_mut() {
                s.push_str(line);
                s.push('\n');
            }
        }
        t
    }
}

/// The severity name of an `_ws.expert.severity` code.
pub fn severity_of_code(c: u64) -> &'static str {
    match c {
        0x0080_0000.. => "error",
        0x0060_0000.. => "warning",
        0x0040_0000.. => "note",
        0x0020_0000.. => "chat",
        _ => "comment",
    }
}

/// One row of the `-z expert` table with its section's severity.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    pub severity: String,
    pub count: u64,
    pub group: String,
    pub protocol: String,
    pub summary: String,
}

/// Parses tshark's `-z expert` output: sections "Errors (N)", "Warns (N)", "Notes (N)",
/// "Chats (N)", "Comments (N)", each with `Frequency Group Protocol Summary` rows.
pub fn parse_expert_table(text: &str) -> Vec<TableRow> {
    let mut out = Vec::new();
    let mut sev = "";
    let mut summary_col: Option<usize> = None;
    for line in text.lines() {
        let t = line.trim_start();
        let head = t.split(" (").next().unwrap_or("");
        match head {
            "Errors" => {
                sev = "error";
                continue;
            }
            "Warns" => {
                sev = "warning";
                continue;
            }
            "Notes" => {
                sev = "note";
                continue;
            }
            "Chats" => {
                sev = "chat";
                continue;
            }
            "Comments" => {
                sev = "comment";
                continue;
            }
            _ => {}
        }
        if t.starts_with("Frequency") {
            // the summary column starts where its header does (a protocol name may
            // hold a space: "IPv6 Hop-by-Hop")
            summary_col = line.find("Summary");
            continue;
        }
        if sev.is_empty() || t.starts_with('=') || t.is_empty() {
            continue;
        }
        // right-aligned columns: count, group (may contain a space), protocol, summary
        let mut parts = t.splitn(2, char::is_whitespace);
        let Some(count) = parts.next().and_then(|c| c.parse::<u64>().ok()) else {
            continue;
        };
        let rest = parts.next().unwrap_or("").trim_start();
        let groups = [
            "Response code",
            "Request code",
            "Comments group",
            "Checksum",
            "Sequence",
            "Undecoded",
            "Reassemble",
            "Malformed",
            "Debug",
            "Protocol",
            "Security",
            "Decryption",
            "Assumption",
            "Deprecated",
            "Receive",
            "Interface",
            "Bluetooth",
        ];
        let Some(g) = groups.iter().find(|g| rest.starts_with(*g)) else {
            continue;
        };
        let rest = rest[g.len()..].trim_start();
        let by_column = summary_col
            .filter(|&c| line.is_char_boundary(c) && line[..c].ends_with("  "))
            .map(|c| &line[c..])
            .filter(|sum| rest.ends_with(*sum) && rest.len() > sum.len())
            .map(|sum| (rest[..rest.len() - sum.len()].trim_end(), sum));
        let (protocol, summary) =
            by_column.unwrap_or_else(|| rest.split_once(char::is_whitespace).unwrap_or((rest, "")));
        out.push(TableRow {
            severity: sev.into(),
            count,
            group: g.to_string(),
            protocol: protocol.into(),
            summary: summary.trim_start().into(),
        });
    }
    out
}

/// The section label tshark prints for a severity name (as `parse_expert_table` names
/// them), most severe first.
const SECTIONS: [(&str, &str); 5] = [
    ("error", "Errors"),
    ("warning", "Warns"),
    ("note", "Notes"),
    ("chat", "Chats"),
    ("comment", "Comments"),
];

/// Whether an `-z rtp,streams` section lists any stream (beyond its borders and
/// column headings).
pub(super) fn has_rtp_streams(text: &str) -> bool {
    text.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('=') && !t.starts_with("Start time")
    })
}

/// `text` with the frame number after each of tshark's "in frame N" / "in packet: N" /
/// "in packet N" phrases mapped by `original` (kept when it has no mapping).
pub(super) fn remap_frame_phrases(text: &str, original: impl Fn(u64) -> Option<u64>) -> String {
    const MARKERS: [&str; 3] = ["in frame ", "in packet: ", "in packet "];
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = text;
    loop {
        let next = MARKERS
            .iter()
            .filter_map(|m| rest.find(m).map(|i| (i, m.len())))
            .min();
        let Some((i, len)) = next else {
            out.push_str(rest);
            return out;
        };
        let after = i + len;
        out.push_str(&rest[..after]);
        let digits = rest[after..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - after);
        let number = &rest[after..after + digits];
        match number.parse::<u64>().ok().and_then(&original) {
            Some(n) => out.push_str(&n.to_string()),
            None => out.push_str(number),
        }
        rest = &rest[after + digits..];
    }
}

/// The order in which expert messages first appear in the whole capture: a summary's
/// sequence number (counted over the merged rows) per severity, in [`SECTIONS`] order;
/// `u64::MAX` where it was not seen.
pub(super) type FirstSeen = FastMap<String, [u64; 5]>;

/// The place of a severity name in [`SECTIONS`].
pub(super) fn section_of(severity: &str) -> Option<usize> {
    SECTIONS.iter().position(|(s, _)| *s == severity)
}

impl Taps {
    /// The taps of a pass split by flow, as one pass over the whole capture prints them:
    /// expert rows summed per (severity, protocol, summary) and listed in order of first
    /// appearance, credentials in packet order, every frame number mapped back by
    /// `original(partition, frame)`; RTP streams as partition 0 found them (the split
    /// plan keeps calls there, and that partition starts with the capture's first frame,
    /// which the streams' times are relative to). None when another partition found
    /// streams: the plan missed a call.
    pub(super) fn merge(
        parts: &[Taps],
        original: impl Fn(usize, u64) -> Option<u64>,
        first_seen: &FirstSeen,
    ) -> Option<Taps> {
        // the plan keeps every call's signalling and media in partition 0
        if parts
            .iter()
            .skip(1)
            .any(|t| has_rtp_streams(&t.rtp_streams))
        {
            return None;
        }
        let first = parts.first();
        Some(Taps {
            expert: merge_expert(parts, &original, first_seen),
            credentials: merge_credentials(parts, &original, first.map_or("", |t| &t.credentials)),
            rtp_streams: first.map(|t| t.rtp_streams.clone()).unwrap_or_default(),
        })
    }
}

fn merge_expert(
    parts: &[Taps],
    original: &impl Fn(usize, u64) -> Option<u64>,
    first_seen: &FirstSeen,
) -> String {
    struct Entry {
        severity: &'static str,
        group: String,
        protocol: String,
        summary: String,
        count: u64,
        order: (u64, usize, usize),
    }
    let mut entries: indexmap::IndexMap<(&'static str, String, String), Entry> =
        indexmap::IndexMap::new();
    for (p, t) in parts.iter().enumerate() {
        for (i, row) in parse_expert_table(&t.expert).into_iter().enumerate() {
            let Some(section) = section_of(&row.severity) else {
                continue;
            };
            let severity = SECTIONS[section].0;
            let summary = remap_frame_phrases(&row.summary, |n| original(p, n));
            let seen = first_seen.get(&summary).map_or(u64::MAX, |s| s[section]);
            let order = (seen, p, i);
            let e = entries
                .entry((severity, row.protocol.clone(), summary.clone()))
                .or_insert_with(|| Entry {
                    severity,
                    group: row.group,
                    protocol: row.protocol,
                    summary,
                    count: 0,
                    order,
                });
            e.count += row.count;
            e.order = e.order.min(order);
        }
    }
    let mut out = String::new();
    for (severity, label) in SECTIONS {
        let mut rows: Vec<&Entry> = entries
            .values()
            .filter(|e| e.severity == severity)
            .collect();
        if rows.is_empty() {
            continue;
        }
        rows.sort_by_key(|e| e.order);
        let total: u64 = rows.iter().map(|e| e.count).sum();
        out.push_str(&format!(
            "\n{label} ({total})\n=============\n   Frequency      Group           Protocol  Summary\n"
        ));
        for e in rows {
            out.push_str(&format!(
                "{:>12} {:>10} {:>18}  {}\n",
                e.count, e.group, e.protocol, e.summary
            ));
        }
    }
    out
}

/// A credentials row's packet number, and where the rest of the row starts (tshark
/// prints the number left-aligned in ten columns and a space).
fn credential_packet(line: &str) -> Option<(u64, usize)> {
    let digits = line
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(line.len());
    let n = line[..digits].parse().ok()?;
    Some((n, (digits.max(10) + 1).min(line.len())))
}

fn merge_credentials(
    parts: &[Taps],
    original: &impl Fn(usize, u64) -> Option<u64>,
    template: &str,
) -> String {
    let mut rows: Vec<(u64, String)> = Vec::new();
    for (p, t) in parts.iter().enumerate() {
        for line in t.credentials.lines() {
            if let Some((n, rest)) = credential_packet(line) {
                let n = original(p, n).unwrap_or(n);
                let rest = remap_frame_phrases(&line[rest..], |k| original(p, k));
                rows.push((n, format!("{n:<10} {rest}")));
            }
        }
    }
    rows.sort_by_key(|(n, _)| *n);
    // the first partition's headings and closing border around every row
    let lines: Vec<&str> = template.lines().collect();
    let head = lines
        .iter()
        .position(|l| credential_packet(l).is_some())
        .unwrap_or(lines.len().saturating_sub(1));
    let tail = lines
        .iter()
        .rposition(|l| credential_packet(l).is_some())
        .map_or(head, |i| i + 1);
    let mut out = String::new();
    for l in &lines[..head] {
        out.push_str(l);
        out.push('\n');
    }
    for (_, r) in rows {
        out.push_str(&r);
        out.push('\n');
    }
    for l in &lines[tail..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_are_split_by_their_headers() {
        // as tshark 4.0 prints them after the rows: reverse order of registration
        let text = "========================= RTP Streams ========================\n   Start time ...\n==============================================================\n===================================================================\nPacket     Protocol         Username         Info\n9          FTP              Admin            Username in packet: 6\n===================================================================\nWarns (1)\n=============\n   Frequency      Group           Protocol  Summary\n           9   Sequence                TCP  C\nNotes (2)\n=============\n   Frequency      Group           Protocol  Summary\n           1   Sequence                TCP  This frame initiates the connection closing\n";
        let t = Taps::split(text);
        assert!(t.rtp_streams.contains("RTP Streams"), "{}", t.rtp_streams);
        assert!(!t.rtp_streams.contains("Admin"));
        assert!(t.credentials.contains("Admin"));
        assert!(!t.credentials.contains("Notes"));
        assert!(t.expert.starts_with("Warns (1)"));
        assert!(!t.credentials.contains("Sequence"));
        assert!(!t.expert.contains("Admin"));
    }

    #[test]
    fn frame_phrases_are_mapped() {
        let map = |n: u64| (n < 100).then_some(n * 10);
        assert_eq!(
            remap_frame_phrases("DNS query retransmission. Original request in frame 7", map),
            "DNS query retransmission. Original request in frame 70"
        );
        assert_eq!(
            remap_frame_phrases("in packet: 3; in packet 4; in frame 500; in frame x", map),
            "in packet: 30; in packet 40; in frame 500; in frame x"
        );
    }

    #[test]
    fn split_taps_merge_into_one_pass_order() {
        // recorded shapes: two partitions' expert and credentials sections
        let a = Taps {
            expert: "\nWarns (2)\n=============\n   Frequency      Group           Protocol  Summary\n           2   Sequence                TCP  Previous segment(s) not captured (common at capture start)\n\nNotes (1)\n=============\n   Frequency      Group           Protocol  Summary\n           1   Sequence                DNS  DNS query retransmission. Original request in frame 1\n".into(),
            credentials: "Packet     Protocol         Username         Info            \n------     --------         --------         --------\n2          FTP              Admin            Username in packet: 1\n===================================================================\n".into(),
            rtp_streams: "========================= RTP Streams ========================\n   Start time      End time\n==============================================================\n".into(),
        };
        let b = Taps {
            expert: "\nNotes (3)\n=============\n   Frequency      Group           Protocol  Summary\n           3   Sequence                TCP  This frame initiates the connection closing\n\nWarns (1)\n=============\n   Frequency      Group           Protocol  Summary\n           1   Sequence                TCP  Previous segment(s) not captured (common at capture start)\n".into(),
            credentials: "Packet     Protocol         Username         Info            \n------     --------         --------         --------\n===================================================================\n".into(),
            rtp_streams: a.rtp_streams.clone(),
        };
        // partition 0 holds frames 2, 5, 6; partition 1 frames 1, 3, 4
        let frames = [vec![2u64, 5, 6], vec![1, 3, 4]];
        let original = |p: usize, n: u64| frames[p].get(n as usize - 1).copied();
        let mut first = FirstSeen::default();
        let note = |seq| [u64::MAX, u64::MAX, seq, u64::MAX, u64::MAX];
        first.insert(
            "This frame initiates the connection closing".into(),
            note(1),
        );
        first.insert(
            "DNS query retransmission. Original request in frame 2".into(),
            note(2),
        );
        let t = Taps::merge(&[a.clone(), b], original, &first).unwrap();
        let rows = parse_expert_table(&t.expert);
        let got: Vec<(&str, u64, &str)> = rows
            .iter()
            .map(|r| (r.severity.as_str(), r.count, r.summary.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "warning",
                    3,
                    "Previous segment(s) not captured (common at capture start)"
                ),
                ("note", 3, "This frame initiates the connection closing"),
                (
                    "note",
                    1,
                    "DNS query retransmission. Original request in frame 2"
                ),
            ]
        );
        assert!(t.expert.starts_with("\nWarns (3)\n"), "{}", t.expert);
        assert_eq!(
            t.credentials.lines().nth(2),
            Some("5          FTP              Admin            Username in packet: 2")
        );
        assert_eq!(t.credentials.lines().count(), 4);
        // streams found in partition 0 are kept; in another, no merge
        let mut rtp = a;
        rtp.rtp_streams.push_str(
            "   0.1  0.9  10.0.0.1 4000 10.0.0.2 4002 0x1234 g711U 10 0 (0.0%) 1 2 3 0 0 0\n",
        );
        let kept = Taps::merge(&[rtp.clone(), Taps::default()], original, &first).unwrap();
        assert_eq!(kept.rtp_streams, rtp.rtp_streams);
        assert!(Taps::merge(&[Taps::default(), rtp], original, &first).is_none());
    }
}
