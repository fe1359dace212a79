//! `-T fields` output parsed into typed rows.
//!
//! tshark prints one line per packet, fields separated by tabs. A field may be absent
//! (empty), repeated (joined by the aggregator) or, for free text, contain the
//! separator itself, so free-text fields go last and any surplus columns are folded
//! back into the last one.

/// Joins repeated occurrences of a field. A control character no dissector puts in
/// a value, so commas inside user agents or Info columns survive.
pub const AGGREGATOR: char = '\u{1f}';

/// The `-T fields` options we always use, followed by `-e` for each field.
pub fn field_args(fields: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "-T",
        "fields",
        "-E",
        "header=n",
        "-E",
        "separator=/t",
        "-E",
        "quote=n",
        "-E",
        "occurrence=a",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push("-E".into());
    a.push(format!("aggregator={AGGREGATOR}"));
    for f in fields {
        a.push("-e".into());
        a.push((*f).to_string());
    }
    a
}

/// One packet's fields, borrowed from the output line.
pub struct Row<'a> {
    cols: std::borrow::Cow<'a, [&'a str]>,
    /// A projection: column `i` of this row is column `map[i]` of `cols` (the capture
    /// index hands each part its own columns of the one wide line without copying).
    map: Option<&'a [usize]>,
    /// The frame number and epoch time of a wide row whose first two columns are
    /// `frame.number` and `frame.time_epoch` (see [`Row::with_frame_head`]), parsed
    /// once for every part that reads them instead of once per part.
    head: Option<(Option<u64>, Option<f64>)>,
}

impl<'a> Row<'a> {
    /// Splits a line into exactly `n` columns (missing ones are empty).
    pub fn parse(line: &'a str, n: usize) -> Self {
        // the line's end, once (tshark escapes CR and LF inside values)
        let line = line.trim_end_matches(['\r', '\n']);
        let n = n.max(1);
        let mut cols: Vec<&str> = Vec::with_capacity(n);
        let mut start = 0;
        // a plain scan: most of a wide line's ~180 fields are empty, so tabs come every
        // few bytes, where a vectorised search pays its setup once per tab (measured on
        // the index pass's 415k lines of the 200 MB bench mix: 0.87 s with memchr, 0.51 s
        // like this). The last column keeps surplus tabs.
        for (i, &b) in line.as_bytes().iter().enumerate() {
            if b == b'\t' {
                if cols.len() + 1 == n {
                    break;
                }
                // a tab is ASCII: `i` is a char boundary
                cols.push(&line[start..i]);
                start = i + 1;
            }
        }
        cols.push(&line[start..]);
        while cols.len() < n {
            cols.push("");
        }
        Self {
            cols: cols.into(),
            map: None,
            head: None,
        }
    }

    /// Parses the frame number and time (columns 0 and 1) once: nearly every part
    /// reads both, and an epoch time is the costliest number to parse.
    pub fn with_frame_head(mut self) -> Self {
        self.head = Some((self.u64(0), self.f64(1)));
        self
    }

    /// A row over columns already split (tests feed parts values field by field).
    #[cfg(test)]
    pub fn from_cols(cols: &'a [&'a str]) -> Self {
        Self {
            cols: cols.into(),
            map: None,
            head: None,
        }
    }

    /// The columns `map` names of this row, in that order, as a row of their own.
    pub fn project<'b>(&'b self, map: &'b [usize]) -> Row<'b> {
        debug_assert!(self.map.is_none(), "a projection of a projection");
        Row {
            cols: std::borrow::Cow::Borrowed(&self.cols[..]),
            map: Some(map),
            head: self.head,
        }
    }

    /// The wide row's column of column `i` (None: beyond a projection).
    fn wide(&self, i: usize) -> Option<usize> {
        match self.map {
            Some(m) => m.get(i).copied(),
            None => Some(i),
        }
    }

    /// Column `i` exactly as printed (empty when absent or beyond the row).
    pub fn raw(&self, i: usize) -> &'a str {
        self.wide(i)
            .and_then(|j| self.cols.get(j).copied())
            .unwrap_or("")
    }

    /// The raw text of column `i`, or None when the field was absent.
    pub fn str(&self, i: usize) -> Option<&str> {
        Some(self.raw(i)).filter(|s| !s.is_empty())
    }

    /// [`Row::innermost_addr`] held inline, for rows made per packet.
    pub fn innermost_addr_text(&self, v4: usize, v6: usize) -> AddrText {
        AddrText::new(self.innermost(v4, v6))
    }

    /// The first occurrence of a repeated field (e.g. the outer IP header of a tunnel).
    pub fn first(&self, i: usize) -> Option<&str> {
        let s = self.str(i)?;
        let b = s.as_bytes();
        // most values are a few bytes: a plain scan beats the vectorised search's setup
        let end = if b.len() < 32 {
            b.iter().position(|&c| c == AGGREGATOR as u8)
        } else {
            memchr::memchr(AGGREGATOR as u8, b)
        };
        // the aggregator is ASCII: its index is a char boundary
        Some(&s[..end.unwrap_or(b.len())]).filter(|s| !s.is_empty())
    }

    /// The innermost address of a packet: the last occurrence of the IPv4 field, else of
    /// the IPv6 one (tunnels repeat ip.*; the transport rides in the innermost header).
    pub fn innermost_addr(&self, v4: usize, v6: usize) -> String {
        self.innermost(v4, v6).to_string()
    }

    fn innermost(&self, v4: usize, v6: usize) -> &str {
        self.all(v4)
            .last()
            .or_else(|| self.all(v6).last())
            .unwrap_or("")
    }

    /// The address of the conversation a packet belongs to: the innermost header of a
    /// tunnelled packet, but the outer one of an ICMP error, whose inner header is only a
    /// quote of the packet it complains about.
    pub fn conversation_addr(&self, i: usize, icmp_error: bool) -> Option<&str> {
        if icmp_error {
            self.first(i)
        } else {
            self.all(i).filter(|s| !s.is_empty()).last()
        }
    }

    /// The IP packet's length, header included, of the header the conversation rides
    /// in (as [`Row::conversation_addr`] picks it): IPv4's total length (`v4_len`), else
    /// IPv6's payload length (`v6_plen`) plus its 40-byte header. What Zeek counts as
    /// `*_ip_bytes`.
    pub fn ip_packet_len(&self, v4_len: usize, v6_plen: usize, icmp_error: bool) -> Option<u64> {
        let n = |i: usize| {
            self.conversation_addr(i, icmp_error)
                .and_then(|s| s.parse::<u64>().ok())
        };
        n(v4_len).or_else(|| n(v6_plen).map(|l| l + 40))
    }

    /// Every occurrence of the field.
    pub fn all(&self, i: usize) -> impl Iterator<Item = &str> {
        self.str(i)
            .into_iter()
            .flat_map(|s| s.split(AGGREGATOR))
            .filter(|s| !s.is_empty())
    }

    pub fn u64(&self, i: usize) -> Option<u64> {
        if let Some((number, _)) = self.head
            && self.wide(i) == Some(0)
        {
            return number;
        }
        let s = self.first(i)?;
        s.parse().ok().or_else(|| {
            s.strip_prefix("0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
        })
    }

    /// A number tshark keeps in 32 bits (frame numbers, stream indexes), held in 32
    /// by the rows a big capture keeps hundreds of thousands of; a value that does not
    /// fit is not one.
    pub fn u32(&self, i: usize) -> Option<u32> {
        self.u64(i).and_then(|v| u32::try_from(v).ok())
    }

    /// A 16-bit field (a port, a DNS header field, an HTTP status code); a value that
    /// does not fit is not one.
    pub fn u16(&self, i: usize) -> Option<u16> {
        self.u64(i).and_then(|v| u16::try_from(v).ok())
    }

    pub fn f64(&self, i: usize) -> Option<f64> {
        if let Some((_, time)) = self.head
            && self.wide(i) == Some(1)
        {
            return time;
        }
        self.first(i)?.parse().ok().filter(|v: &f64| v.is_finite())
    }

    /// Boolean fields print as `1`/`0` (older tshark) or `True`/`False`.
    pub fn flag(&self, i: usize) -> bool {
        matches!(self.first(i), Some("1" | "True" | "true"))
    }

    pub fn owned(&self, i: usize) -> Option<String> {
        self.first(i).map(str::to_string)
    }
}

/// An address as tshark printed it, held inline: IPv4 and IPv6 text fits in 46 bytes
/// (INET6_ADDRSTRLEN), so a row made per packet carries its addresses without two heap
/// allocations per packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AddrText {
    len: u8,
    buf: [u8; 46],
}

impl AddrText {
    /// Text longer than any address (no address field prints one) is cut short.
    pub fn new(s: &str) -> Self {
        let mut end = s.len().min(46);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut buf = [0u8; 46];
        buf[..end].copy_from_slice(&s.as_bytes()[..end]);
        Self {
            len: end as u8,
            buf,
        }
    }

    pub fn as_str(&self) -> &str {
        // whole characters of a &str were copied: always UTF-8
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl Default for AddrText {
    fn default() -> Self {
        Self::new("")
    }
}

impl std::ops::Deref for AddrText {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for AddrText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A typed tshark row: the fields it needs, in order, and how to build it.
/// ICMP (v4) or ICMPv6 types that carry a quote of another packet: unreachable, source
/// quench, redirect, time exceeded, parameter problem; v6 1-4 and redirect.
pub fn is_icmp_error(v4_type: Option<u64>, v6_type: Option<u64>) -> bool {
    matches!(v4_type, Some(3 | 4 | 5 | 11 | 12)) || matches!(v6_type, Some(1..=4 | 137))
}

pub trait FromRow: Sized {
    const FIELDS: &'static [&'static str];
    fn from_row(row: &Row<'_>) -> Option<Self>;

    fn parse_line(line: &str) -> Option<Self> {
        Self::from_row(&Row::parse(line, Self::FIELDS.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_repeated_and_surplus_columns() {
        let line = format!("12\t\t10.0.0.1{AGGREGATOR}192.168.0.1\tGET /a\tb HTTP/1.1");
        let r = Row::parse(&line, 4);
        assert_eq!(r.u64(0), Some(12));
        assert_eq!(r.str(1), None);
        assert_eq!(r.first(2), Some("10.0.0.1"));
        assert_eq!(r.all(2).count(), 2);
        // a tab inside the last (free text) field stays in it
        assert_eq!(r.str(3), Some("GET /a\tb HTTP/1.1"));
    }

    #[test]
    fn projections_read_the_wide_row() {
        let r = Row::parse("1\t2\t3\tfree\ttext", 4);
        assert_eq!(r.str(3), Some("free\ttext"));
        let p = r.project(&[2, 0]);
        assert_eq!((p.u64(0), p.u64(1), p.str(2)), (Some(3), Some(1), None));
        assert_eq!(Row::parse("", 2).str(0), None);
        assert_eq!(Row::parse("a\t\t", 3).str(2), None);
    }

    #[test]
    fn the_parsed_frame_head_is_what_its_columns_say() {
        let line = format!("7\t1700000000.25\t0x10{AGGREGATOR}3\tx");
        let plain = Row::parse(&line, 4);
        let headed = Row::parse(&line, 4).with_frame_head();
        for r in [&plain, &headed] {
            let p = r.project(&[3, 1, 0, 2]);
            assert_eq!(p.u64(2), Some(7));
            assert_eq!(p.f64(1), Some(1_700_000_000.25));
            assert_eq!(p.u64(3), Some(16));
            assert_eq!(p.str(0), Some("x"));
            assert_eq!((r.u64(0), r.f64(1)), (Some(7), Some(1_700_000_000.25)));
        }
        // a column read as the other kind is parsed from its text, not the cache
        assert_eq!(headed.f64(0), Some(7.0));
        assert_eq!(headed.u64(1), None);
    }

    #[test]
    fn addresses_are_held_inline_whole() {
        let long6 = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
        for a in ["10.0.0.1", "2001:db8::1", long6, ""] {
            assert_eq!(AddrText::new(a).as_str(), a);
        }
        let line = format!("1\t10.0.0.1{AGGREGATOR}192.168.0.9\t\t{long6}");
        let r = Row::parse(&line, 4);
        assert_eq!(&*r.innermost_addr_text(1, 2), "192.168.0.9");
        assert_eq!(&*r.innermost_addr_text(2, 3), long6);
        assert_eq!(AddrText::new(&"é".repeat(30)).as_str(), "é".repeat(23));
    }

    #[test]
    fn short_lines_are_padded() {
        let r = Row::parse("1", 3);
        assert_eq!(r.u64(0), Some(1));
        assert_eq!(r.str(2), None);
        assert!(!r.flag(1));
    }
}
