//! The time part of a scope: `start_time` / `end_time` as a client writes them (an
//! RFC 3339 instant, a time of day in a time zone, or seconds after the capture's first
//! packet), normalised to absolute nanosecond bounds. The bounds, never the text the
//! client wrote, key the capture index, so "+120", "14:05:10" and
//! "2024-05-01T14:05:10Z" naming one instant share one pass.

use jiff::civil::{Date, Time};
use jiff::tz::{Offset, TimeZone};
use jiff::{Timestamp, ZonedDateTime};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The time-range parameters every analysis tool accepts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct TimeScope {
    /// From: RFC 3339, time of day (`14:03:10`) or `+120` (s after first packet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// Until (forms as `start_time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Zone of a time of day (`+02:00`, IANA); default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// Absolute bounds in nanoseconds since the Unix epoch, both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start_ns: Option<i128>,
    pub end_ns: Option<i128>,
}

/// What the result's scope says about the time range: the absolute bounds used.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct TimeRangeScope {
    /// First instant analysed (RFC 3339, UTC), if bounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Last instant analysed (RFC 3339, UTC), if bounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// The same bounds in seconds since the capture's first packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_offset_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_offset_s: Option<f64>,
}

const NS: i128 = 1_000_000_000;

/// The longest time a client may name in seconds (ten years), for a bucket width or a
/// relative bound, so that no number reaches tshark in a form it cannot format.
pub const MAX_SECONDS: f64 = 10.0 * 365.25 * 86_400.0;

/// The forms a bound may take, for error messages.
const FORMS: &str = "write an RFC 3339 instant (2024-05-01T14:03:10+02:00), a time of day (14:03:10) or seconds after the capture's first packet (+120)";

impl TimeScope {
    pub fn is_empty(&self) -> bool {
        blank(&self.start_time).is_none() && blank(&self.end_time).is_none()
    }

    /// The absolute bounds for a capture whose first and last packets are at
    /// `first_ns` / `last_ns` (nanoseconds since the epoch), or an error naming the
    /// parameter and what to write instead. `None` when no bound is given.
    pub fn resolve(&self, first_ns: i128, last_ns: i128) -> Result<Option<TimeRange>, String> {
        // a zone is checked even alone: a misspelt one is an error, not ignored
        let tz = zone(self.timezone.as_deref())?;
        if self.is_empty() {
            return Ok(None);
        }
        let start = match blank(&self.start_time) {
            Some(s) => Some(bound("start_time", s, first_ns, first_ns, &tz)?),
            None => None,
        };
        let end = match blank(&self.end_time) {
            Some(s) => Some(bound(
                "end_time",
                s,
                first_ns,
                start.unwrap_or(first_ns),
                &tz,
            )?),
            None => None,
        };
        if let (Some(s), Some(e)) = (start, end)
            && e < s
        {
            return Err(format!(
                "end_time ({}) is before start_time ({}): give an end at or after the start",
                rfc3339_ns(e),
                rfc3339_ns(s)
            ));
        }
        let outside = start.is_some_and(|s| s > last_ns) || end.is_some_and(|e| e < first_ns);
        if outside {
            return Err(format!(
                "the time range {} .. {} holds no packet of this capture, which runs from {} to {}: choose bounds inside it",
                start.map_or("(start)".into(), rfc3339_ns),
                end.map_or("(end)".into(), rfc3339_ns),
                rfc3339_ns(first_ns),
                rfc3339_ns(last_ns)
            ));
        }
        Ok(Some(TimeRange {
            start_ns: start,
            end_ns: end,
        }))
    }
}

impl TimeRange {
    /// The display filter clause selecting the range (tshark compares
    /// `frame.time_epoch` to a decimal with nanoseconds exactly).
    pub fn filter_clause(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.start_ns {
            parts.push(format!("frame.time_epoch >= {}", decimal(s)));
        }
        if let Some(e) = self.end_ns {
            parts.push(format!("frame.time_epoch <= {}", decimal(e)));
        }
        parts.join(" && ")
    }

    pub fn scope(&self, first_ns: i128) -> TimeRangeScope {
        let offset = |n: i128| crate::report::round((n - first_ns) as f64 / NS as f64, 6);
        TimeRangeScope {
            start: self.start_ns.map(rfc3339_ns),
            end: self.end_ns.map(rfc3339_ns),
            start_offset_s: self.start_ns.map(offset),
            end_offset_s: self.end_ns.map(offset),
        }
    }

    /// The range clipped to a capture running from `first` to `last` (seconds).
    pub fn clip(&self, first: f64, last: f64) -> (f64, f64) {
        let s = self.start_ns.map_or(first, |n| (n as f64 / 1e9).max(first));
        let e = self.end_ns.map_or(last, |n| (n as f64 / 1e9).min(last));
        (s, e.max(s))
    }
}

fn blank(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn decimal(ns: i128) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let a = ns.abs();
    format!("{sign}{}.{:09}", a / NS, a % NS)
}

fn rfc3339_ns(ns: i128) -> String {
    Timestamp::from_nanosecond(ns)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| decimal(ns))
}

fn zone(name: Option<&str>) -> Result<TimeZone, String> {
    let Some(name) = name.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(TimeZone::UTC);
    };
    if let Some(secs) = fixed_offset(name) {
        return Offset::from_seconds(secs)
            .map(TimeZone::fixed)
            .map_err(|e| format!("timezone {name:?}: {e}"));
    }
    TimeZone::get(name).map_err(|_| {
        format!(
            "timezone {name:?} is neither a fixed offset (+02:00, -0530, Z) nor a known IANA zone name (Europe/Berlin, America/New_York, UTC)"
        )
    })
}

/// `+02:00`, `-0530`, `+2`, `Z`: seconds east of UTC.
fn fixed_offset(s: &str) -> Option<i32> {
    if s.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "0"),
    };
    if h.is_empty() || h.len() > 2 || m.len() > 2 {
        return None;
    }
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    (h <= 25 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

/// One bound: `+S` seconds after `first_ns`, an RFC 3339 instant, or a time of day's
/// first occurrence at or after `not_before_ns` in `tz`.
fn bound(
    name: &str,
    s: &str,
    first_ns: i128,
    not_before_ns: i128,
    tz: &TimeZone,
) -> Result<i128, String> {
    if let Some(rel) = s.strip_prefix('+') {
        let secs: f64 = rel.trim().parse().map_err(|_| {
            format!("{name} {s:?} is not a number of seconds after the first packet: {FORMS}")
        })?;
        if !secs.is_finite() || !(0.0..=MAX_SECONDS).contains(&secs) {
            return Err(format!(
                "{name} {s:?} must be between +0 and +{} seconds (ten years)",
                MAX_SECONDS
            ));
        }
        return Ok(first_ns + (secs * 1e9).round() as i128);
    }
    let b = s.as_bytes();
    if b.len() > 4 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' {
        return s
            .parse::<Timestamp>()
            .map(|t| t.as_nanosecond())
            .map_err(|e| {
                format!("{name} {s:?} is not an RFC 3339 instant with an offset ({e}): {FORMS}")
            });
    }
    let time: Time = s
        .parse()
        .map_err(|_| format!("{name} {s:?} is not a time: {FORMS}"))?;
    let floor = Timestamp::from_nanosecond(not_before_ns)
        .map_err(|e| format!("{name}: the capture's time is out of range ({e})"))?;
    let day = floor.to_zoned_datetime(tz.clone()).date();
    // the same time on the day of the floor, else the next day (a capture running
    // past midnight); a day skipped or repeated by a DST change resolves as jiff's
    // default (compatible) disambiguation does
    for d in [day, day.tomorrow().unwrap_or(day)] {
        let at =
            at_time(d, time, tz).map_err(|e| format!("{name} {s:?} in {}: {e}", tz_name(tz)))?;
        let ns = at.timestamp().as_nanosecond();
        if ns >= not_before_ns {
            return Ok(ns);
        }
    }
    Err(format!(
        "{name} {s:?}: no such time of day after the capture's first packet"
    ))
}

fn at_time(d: Date, t: Time, tz: &TimeZone) -> Result<ZonedDateTime, jiff::Error> {
    d.to_datetime(t).to_zoned_datetime(tz.clone())
}

fn tz_name(tz: &TimeZone) -> String {
    tz.iana_name()
        .map_or_else(|| "the given offset".into(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: Option<&str>, e: Option<&str>, tz: Option<&str>) -> TimeScope {
        TimeScope {
            start_time: s.map(str::to_string),
            end_time: e.map(str::to_string),
            timezone: tz.map(str::to_string),
        }
    }

    // 2024-05-01T23:59:50.25Z: a capture running past midnight UTC
    const FIRST: i128 = 1_714_607_990_250_000_000;
    const LAST: i128 = FIRST + 3600 * NS;

    #[test]
    fn every_form_of_one_instant_gives_one_range() {
        let want = Some(TimeRange {
            start_ns: Some(1_714_608_020_250_000_000),
            end_ns: None,
        });
        for (s, tz) in [
            ("+30", None),
            ("2024-05-02T00:00:20.25Z", None),
            ("2024-05-02T02:00:20.25+02:00", None),
            ("00:00:20.25", None),
            ("02:00:20.25", Some("+02:00")),
            ("02:00:20.25", Some("Europe/Berlin")),
            ("20:00:20.25", Some("America/New_York")),
        ] {
            assert_eq!(
                scope(Some(s), None, tz).resolve(FIRST, LAST).unwrap(),
                want,
                "{s} {tz:?}"
            );
        }
    }

    #[test]
    fn time_of_day_is_the_first_occurrence_at_or_after_the_first_packet() {
        // 23:59:55 is on the first day, 00:10 is after midnight
        let r = scope(Some("23:59:55"), Some("00:10"), None)
            .resolve(FIRST, LAST)
            .unwrap()
            .unwrap();
        assert_eq!(r.start_ns, Some(1_714_607_995 * NS));
        assert_eq!(r.end_ns, Some(1_714_608_600 * NS));
        assert_eq!(
            r.filter_clause(),
            "frame.time_epoch >= 1714607995.000000000 && frame.time_epoch <= 1714608600.000000000"
        );
    }

    #[test]
    fn bad_bounds_say_what_to_write() {
        for (s, e, tz, needle) in [
            (Some("yesterday"), None, None, "not a time"),
            (Some("+abc"), None, None, "not a number"),
            (Some("+-5"), None, None, "between"),
            (Some("2024-05-02T00:00:20"), None, None, "RFC 3339"),
            (Some("00:00:20"), None, Some("Mars/Olympus"), "IANA"),
            (Some("+60"), Some("+10"), None, "before start_time"),
            (Some("2030-01-01T00:00:00Z"), None, None, "holds no packet"),
            (None, Some("2020-01-01T00:00:00Z"), None, "holds no packet"),
        ] {
            let err = scope(s, e, tz).resolve(FIRST, LAST).unwrap_err();
            assert!(err.contains(needle), "{s:?} {e:?}: {err}");
        }
        assert_eq!(scope(None, None, None).resolve(FIRST, LAST).unwrap(), None);
        assert_eq!(fixed_offset("-0530"), Some(-19_800));
        assert_eq!(fixed_offset("+2"), Some(7200));
    }
}
