//! Port scans from the TCP model: shared by the threat view, which reports them, and the
//! connection lifecycle, which folds the half-open probes of a scan into one finding.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::Serialize;

use crate::model::tcp::{Stream, TcpModel};
use crate::report::{Evidence, Finding, Severity, host_filter, rfc3339, round};

/// One source probing many ports of one host.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PortScan {
    /// tcp (refused or unanswered SYNs) or udp (closed ports answering ICMP port unreachable).
    pub protocol: String,
    pub scanner: String,
    pub target: String,
    pub ports_tried: usize,
    /// Attempts refused (RST) or never answered.
    pub refused_or_unanswered: usize,
    /// Ports that answered SYN-ACK.
    pub open_ports: Vec<u64>,
    /// `syn` (half-open: the scanner never completes a handshake), `connect` (full
    /// handshakes to open ports), `udp`, or `unknown`.
    pub scan_type: String,
    pub first_time: String,
    pub duration_s: f64,
    pub sample_frames: Vec<u64>,
    pub display_filter: String,
}

pub fn attempt_failed(s: &Stream) -> bool {
    matches!(s.conn_state(), "REJ" | "S0" | "RSTOS0" | "SH")
}

/// Refused or unanswered attempts from one source to many ports of one host, largest first.
pub fn port_scans(m: &TcpModel) -> Vec<PortScan> {
    let mut by_pair: BTreeMap<(&str, &str), Vec<&Stream>> = BTreeMap::new();
    for s in m.streams.iter().filter(|s| s.syn[0]) {
        by_pair
            .entry((s.addr[0].as_ref(), s.addr[1].as_ref()))
            .or_default()
            .push(s);
    }
    let mut out: Vec<PortScan> = by_pair
        .into_iter()
        .filter_map(|((src, dst), streams)| {
            let failed: Vec<&&Stream> = streams.iter().filter(|s| attempt_failed(s)).collect();
            let failed_ports: BTreeSet<u64> = failed.iter().map(|s| s.port()[1]).collect();
            if failed_ports.len() < SCAN_PORTS {
                return None;
            }
            let ports: BTreeSet<u64> = streams.iter().map(|s| s.port()[1]).collect();
            let open: BTreeSet<u64> = streams
                .iter()
                .filter(|s| s.synack[1])
                .map(|s| s.port()[1])
                .collect();
            // A SYN (half-open) scan never completes a handshake: no ACK or data from
            // the scanner on open ports, and raw probes often reuse one source port;
            // a connect scan completes the handshake, then closes.
            let open_streams: Vec<&&Stream> = streams.iter().filter(|s| s.synack[1]).collect();
            let completed = open_streams
                .iter()
                .any(|s| s.history().contains('A') || s.history().contains('D'));
            let source_ports: BTreeSet<u64> = streams.iter().map(|s| s.port()[0]).collect();
            let scan_type = if !open_streams.is_empty() {
                if completed { "connect" } else { "syn" }
            } else if source_ports.len() * 10 <= streams.len() {
                "syn"
            } else {
                "unknown"
            };
            let first = streams.iter().map(|s| s.first).fold(f64::MAX, f64::min);
            let last = streams.iter().map(|s| s.last).fold(f64::MIN, f64::max);
            let mut frames: Vec<u64> = failed.iter().filter_map(|s| s.syn_frame()).collect();
            frames.sort_unstable();
            crate::report::keep_first(&mut frames, 10);
            Some(PortScan {
                protocol: "tcp".into(),
                scanner: src.to_string(),
                target: dst.to_string(),
                ports_tried: ports.len(),
                refused_or_unanswered: failed.len(),
                open_ports: open.into_iter().take(50).collect(),
                scan_type: scan_type.into(),
                first_time: rfc3339(first),
                duration_s: round(last - first, 3),
                sample_frames: frames,
                display_filter: format!(
                    "{} && {} && tcp.flags.syn == 1 && tcp.flags.ack == 0",
                    host_filter(src, "src"),
                    host_filter(dst, "dst")
                ),
            })
        })
        .collect();
    out.sort_by_key(|x| std::cmp::Reverse(x.ports_tried));
    out
}

/// A short span as people say it: "40 ms", "2.5 s", "3.1 min".
pub fn span_text(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

pub fn scan_finding(s: &PortScan) -> Finding {
    let detail = if s.protocol == "udp" {
        format!(
            "{} answered {} probes of {} with ICMP port unreachable in {} from {}: those ports are closed; open or filtered UDP ports stay silent, so the scan covered more.",
            s.target,
            s.ports_tried,
            s.scanner,
            span_text(s.duration_s),
            s.first_time
        )
    } else {
        format!(
            "{} from one source to many ports of one host in {}, starting {}. Ports that answered with SYN-ACK (open): {}.",
            match s.scan_type.as_str() {
                "syn" => "A SYN (half-open) scan: probes that never complete a handshake,",
                "connect" => "A connect scan: full handshakes to the open ports, then closed,",
                _ => "Connection attempts",
            },
            span_text(s.duration_s),
            s.first_time,
            if s.open_ports.is_empty() {
                "none".to_string()
            } else {
                s.open_ports
                    .iter()
                    .take(20)
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    };
    Finding::new(
        Severity::High,
        format!(
            "Port scan ({}{}): {} tried {} ports on {}, {} refused or unanswered",
            s.protocol,
            match s.scan_type.as_str() {
                "syn" => ", SYN/half-open",
                "connect" => ", connect",
                _ => "",
            },
            s.scanner,
            s.ports_tried,
            s.target,
            s.refused_or_unanswered
        ),
        detail,
        Evidence {
            frames: s.sample_frames.clone(),
            endpoints: vec![s.scanner.clone(), s.target.clone()],
            display_filter: s.display_filter.clone(),
            ..Default::default()
        },
    )
}

/// A source that tried this many distinct ports of one host, refused or unanswered, scanned it.
pub const SCAN_PORTS: usize = 20;
