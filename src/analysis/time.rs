//! Time buckets and windows: the widths the timeline, the I/O graph and the bandwidth
//! view choose, so they agree on what a bucket is.

use crate::report::round;

/// Most buckets a timeline returns; finer requests are coarsened.
pub const MAX_BUCKETS: usize = 120;

/// Rounds an interval up to 1, 2 or 5 times a power of ten.
pub fn nice_interval(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= x * 0.999_999 {
            return round(m * mag, 9);
        }
    }
    10.0 * mag
}

/// Chooses the bucket width: the request if it gives at most MAX_BUCKETS over the span,
/// else the next nice width that does.
pub fn choose_interval(requested: Option<f64>, span_s: f64) -> (f64, Option<f64>) {
    let auto = nice_interval((span_s / 60.0).max(0.001));
    match requested.filter(|r| r.is_finite() && *r > 0.0) {
        None => (auto, None),
        Some(r) if span_s / r <= MAX_BUCKETS as f64 => (r, None),
        Some(r) => (nice_interval(span_s / MAX_BUCKETS as f64), Some(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(nice_interval(0.106), 0.2);
        assert_eq!(nice_interval(1.0), 1.0);
        assert_eq!(nice_interval(3.0), 5.0);
        assert_eq!(choose_interval(Some(1.0), 10.0), (1.0, None));
        let (i, c) = choose_interval(Some(0.001), 3600.0);
        assert_eq!(c, Some(0.001));
        assert!(3600.0 / i <= MAX_BUCKETS as f64);
    }
}
