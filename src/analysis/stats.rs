//! Distributions of times, as every latency view reports them.

use schemars::JsonSchema;
use serde::Serialize;

use crate::model::tcp::Stream;
use crate::report::{ms, percentile};

#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Distribution {
    pub count: u64,
    pub min_ms: Option<f64>,
    pub median_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

impl Distribution {
    pub fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Self {
            count: n as u64,
            min_ms: v.first().map(|x| ms(*x)),
            median_ms: percentile(&v, 50.0).map(ms),
            p95_ms: percentile(&v, 95.0).map(ms),
            max_ms: v.last().map(|x| ms(*x)),
            mean_ms: (n > 0).then(|| ms(v.iter().sum::<f64>() / n as f64)),
        }
    }
}

/// The RTT to use for a stream: the handshake's, else the median ACK RTT.
pub fn stream_rtt(s: &Stream) -> Option<f64> {
    s.handshake_rtt()
        .filter(|r| *r > 0.0)
        .or_else(|| percentile(&s.sorted_rtts(), 50.0))
        .filter(|r| *r > 0.0)
}
