//! Capture trust: what in a capture is an artefact of how it was taken rather than a
//! fact about the network, so that nobody blames the network for it.
//!
//! Each check reads what the file itself says (pcapng interface statistics, snapshot
//! length, timestamps), what our record walk finds (byte-identical copies), or what
//! tshark's TCP analysis marks (ACKs of data never captured, one-sided streams).

use schemars::JsonSchema;
use serde::Serialize;

use crate::model::tcp::{Stream, TcpModel};
use crate::pcapfile::{CaptureSummary, Duplicates};
use crate::report::{Evidence, Finding, Severity, in_set, thousands};

/// One check's outcome.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TrustCheck {
    pub check: &'static str,
    /// `ok`, `problem`, or `unknown` (the file cannot tell: plain pcap has no drop counters).
    pub result: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CaptureTrust {
    /// `trustworthy`, `usable with caveats`, or `misleading for loss and latency`.
    pub verdict: &'static str,
    pub checks: Vec<TrustCheck>,
    /// Packets the capturing side reports it dropped (pcapng statistics), all interfaces.
    pub dropped_by_capture: Option<u64>,
    pub duplicate_frames: u64,
    pub truncated_frames: u64,
    /// TCP streams seen in one direction only, of those with at least 3 packets.
    pub one_sided_streams: u64,
    pub tcp_streams_considered: u64,
    /// ACKs of TCP data the capture never saw (tcp.analysis.ack_lost_segment).
    pub acked_unseen_segments: u64,
    /// "Previous segment not captured" marks (tcp.analysis.lost_segment).
    pub segments_not_captured: u64,
}

/// A TCP stream whose packets all flow one way although they acknowledge data: the
/// other direction exists but was not captured (asymmetric routing, a one-way TAP).
fn one_sided(s: &Stream) -> bool {
    let (a, b) = (s.packets()[0], s.packets()[1]);
    if a.min(b) != 0 || a.max(b) < 3 {
        return false;
    }
    // only SYNs is an unanswered connection attempt, not a missing direction
    s.history()
        .chars()
        .any(|c| matches!(c, 'A' | 'a' | 'D' | 'd'))
}

pub fn assess(
    summary: &CaptureSummary,
    dups: &Duplicates,
    tcp: &TcpModel,
) -> (CaptureTrust, Vec<Finding>) {
    let mut checks = Vec::new();
    let mut findings = Vec::new();
    let packets = summary.packets.max(1);

    // 1. what the capturing side says it missed
    let with_stats: Vec<_> = summary
        .interfaces
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.stats.as_ref().map(|s| (i, f, s)))
        .collect();
    let dropped_by_capture = (!with_stats.is_empty())
        .then(|| with_stats.iter().map(|(_, _, s)| s.dropped()).sum::<u64>());
    match dropped_by_capture {
        None => checks.push(TrustCheck {
            check: "capture drops",
            result: "unknown",
            detail: if summary.file_type == "pcapng" {
                "the file has no interface statistics block, so the capturing side's drop counters are unknown".into()
            } else {
                "pcap files carry no drop counters (dumpcap's pcapng does): drops by the capturing side are unknown".into()
            },
        }),
        Some(0) => checks.push(TrustCheck {
            check: "capture drops",
            result: "ok",
            detail: "the interface statistics report no packet dropped by the capturing side".into(),
        }),
        Some(n) => {
            let parts: Vec<String> = with_stats
                .iter()
                .filter(|(_, _, s)| s.dropped() > 0)
                .map(|(i, f, s)| {
                    format!(
                        "interface {i}{} dropped {}{}{}",
                        f.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
                        thousands(s.dropped()),
                        s.received
                            .map(|r| format!(" of {} received", thousands(r)))
                            .unwrap_or_default(),
                        match (s.dropped_by_interface, s.dropped_by_os) {
                            (Some(a), Some(b)) if a > 0 && b > 0 =>
                                format!(" ({a} by the interface, {b} by the OS)"),
                            (_, Some(b)) if b > 0 => " (by the OS: capture buffer full)".into(),
                            _ => " (by the interface)".into(),
                        }
                    )
                })
                .collect();
            let received: u64 = with_stats.iter().filter_map(|(_, _, s)| s.received).sum();
            let share = n as f64 / (received.max(summary.packets + n)).max(1) as f64;
            let detail = format!(
                "{}. Gaps in this capture are partly the capture's, not the network's: a stream's \"previous segment not captured\" may be a packet the capture dropped. Capture again with a larger buffer (dumpcap -B), a capture filter, or a faster disk",
                parts.join("; ")
            );
            checks.push(TrustCheck {
                check: "capture drops",
                result: "problem",
                detail: detail.clone(),
            });
            findings.push(Finding::new(
                if share >= 0.01 { Severity::High } else { Severity::Medium },
                format!(
                    "The capture itself dropped {} packet(s) ({})",
                    thousands(n),
                    percent(share)
                ),
                detail,
                Evidence::default(),
            ));
        }
    }

    // 2. SPAN/TAP copies
    if dups.count == 0 {
        checks.push(TrustCheck {
            check: "duplicate frames",
            result: "ok",
            detail: "no frame is a byte-identical copy of one just before it".into(),
        });
    } else {
        let share = dups.count as f64 / packets as f64;
        let detail = format!(
            "{} frame(s) ({}) are byte-identical copies of a frame at most {} µs before them, IP ID and TCP timestamps included: almost always a SPAN port or TAP delivering a packet twice (both directions mirrored, or two mirrored ports), since a sender's own resend differs or comes later. Retransmission and duplicate-ACK counts are inflated by them; remove them with `editcap -D 8 in out` before judging loss",
            thousands(dups.count),
            percent(share),
            dups.max_delta_us.round()
        );
        checks.push(TrustCheck {
            check: "duplicate frames",
            result: "problem",
            detail: detail.clone(),
        });
        findings.push(Finding::new(
            // a handful could still be an endpoint's own double send
            if share >= 0.05 && dups.count >= 10 {
                Severity::Medium
            } else {
                Severity::Low
            },
            format!(
                "{} duplicated frame(s) from the capture setup",
                thousands(dups.count)
            ),
            detail,
            Evidence {
                frames: dups.frames.clone(),
                display_filter: in_set("frame.number", dups.frames.iter().copied()),
                ..Default::default()
            },
        ));
    }

    // 3. snapshot length
    if summary.truncated_frames == 0 {
        checks.push(TrustCheck {
            check: "snapshot length",
            result: "ok",
            detail: "every frame was captured whole".into(),
        });
    } else {
        let short_snap = summary.snaplen.is_some_and(|s| s <= 256);
        let detail = format!(
            "{} frame(s) were captured shorter than they were on the wire{}: payload past the cut is missing, so reassembly, HTTP bodies, TLS certificates and content searches see only part of it (tshark's expert info calls these \"malformed\" or \"truncated\" when a header is cut). Loss and timing analyses are not affected",
            thousands(summary.truncated_frames),
            summary
                .snaplen
                .map(|s| format!(" (snapshot length {s} bytes)"))
                .unwrap_or_default()
        );
        checks.push(TrustCheck {
            check: "snapshot length",
            result: "problem",
            detail: detail.clone(),
        });
        let first = summary.first_truncated_frame.unwrap_or(1);
        findings.push(Finding::new(
            if short_snap {
                Severity::Medium
            } else {
                Severity::Low
            },
            format!(
                "{} frame(s) cut by the snapshot length",
                thousands(summary.truncated_frames)
            ),
            detail,
            Evidence {
                frames: vec![first],
                display_filter: "frame.cap_len < frame.len".into(),
                ..Default::default()
            },
        ));
    }

    // 4. one direction only
    let considered: Vec<&Stream> = tcp
        .streams
        .iter()
        .filter(|s| s.packets()[0] + s.packets()[1] >= 3)
        .collect();
    let lopsided: Vec<&Stream> = considered
        .iter()
        .copied()
        .filter(|s| one_sided(s))
        .collect();
    if lopsided.is_empty() {
        checks.push(TrustCheck {
            check: "both directions",
            result: "ok",
            detail: if considered.is_empty() {
                "no TCP stream with 3 or more packets to judge by".into()
            } else {
                format!(
                    "every one of {} TCP stream(s) shows traffic both ways",
                    considered.len()
                )
            },
        });
    } else {
        let share = lopsided.len() as f64 / considered.len() as f64;
        let examples: Vec<String> = lopsided
            .iter()
            .take(3)
            .map(|s| format!("stream {} {}", s.id, s.label()))
            .collect();
        let detail = format!(
            "{} of {} TCP stream(s) show packets in one direction only although they acknowledge data ({}): the other direction took another path (asymmetric routing) or the TAP/SPAN sees one direction. RTT, loss and window analyses of these streams are one-sided; capture where both directions pass",
            lopsided.len(),
            considered.len(),
            examples.join(", ")
        );
        checks.push(TrustCheck {
            check: "both directions",
            result: "problem",
            detail: detail.clone(),
        });
        let ids: Vec<u64> = lopsided.iter().take(10).map(|s| s.id).collect();
        // one stream of two may be a cut-out sample; most of several is the capture point
        let most = share >= 0.5 && lopsided.len() >= 3;
        findings.push(Finding::new(
            if most { Severity::High } else { Severity::Low },
            if most {
                "One-sided capture: only one direction of most TCP streams".to_string()
            } else {
                format!(
                    "{} TCP stream(s) captured in one direction only",
                    lopsided.len()
                )
            },
            detail,
            Evidence {
                streams: ids.clone(),
                frames: lopsided
                    .iter()
                    .filter_map(|s| s.syn_frame())
                    .take(5)
                    .collect(),
                display_filter: in_set("tcp.stream", ids.iter().copied()),
                ..Default::default()
            },
        ));
    }

    // 5. capture loss told apart from network loss
    let unseen = tcp.total(|s| s.ack_unseen[0] + s.ack_unseen[1]);
    let not_captured = tcp.total(|s| s.lost_segment[0] + s.lost_segment[1]);
    if unseen == 0 {
        checks.push(TrustCheck {
            check: "segments missing from the capture",
            result: "ok",
            detail: if not_captured == 0 {
                "no TCP segment is missing from the capture".into()
            } else {
                format!(
                    "{not_captured} gap(s) before a segment (\"previous segment not captured\") and no ACK of unseen data: the gaps are consistent with network loss, judged by the retransmissions"
                )
            },
        });
    } else {
        let worst: Vec<&Stream> = {
            let mut v: Vec<&Stream> = tcp
                .streams
                .iter()
                .filter(|s| s.ack_unseen[0] + s.ack_unseen[1] > 0)
                .collect();
            v.sort_by_key(|s| std::cmp::Reverse(s.ack_unseen[0] + s.ack_unseen[1]));
            v
        };
        let detail = format!(
            "{} ACK(s) acknowledge TCP data that is not in the capture ({} \"previous segment not captured\" gap(s)), in {} stream(s): the receiver got those segments, so they were lost by the capture (SPAN/TAP oversubscription, capture buffer), not by the network. Do not count them as packet loss",
            thousands(unseen),
            thousands(not_captured),
            worst.len()
        );
        checks.push(TrustCheck {
            check: "segments missing from the capture",
            result: "problem",
            detail: detail.clone(),
        });
        let ids: Vec<u64> = worst.iter().take(10).map(|s| s.id).collect();
        findings.push(Finding::new(
            Severity::Medium,
            format!(
                "{} ACK(s) of data the capture never saw: capture loss",
                thousands(unseen)
            ),
            detail,
            Evidence {
                streams: ids,
                frames: worst
                    .iter()
                    .flat_map(|s| s.sample_frames("ack_lost_segment"))
                    .take(5)
                    .collect(),
                display_filter: "tcp.analysis.ack_lost_segment".into(),
                ..Default::default()
            },
        ));
    }

    // 6. the clock
    match summary.time_warning() {
        None => checks.push(TrustCheck {
            check: "timestamps",
            result: "ok",
            detail: "timestamps move forward without jumps of more than a day or steps back of a second or more".into(),
        }),
        Some(w) => {
            checks.push(TrustCheck {
                check: "timestamps",
                result: "problem",
                detail: w,
            });
        }
    }
    if let Some(d) = &summary.damaged {
        checks.push(TrustCheck {
            check: "file structure",
            result: "problem",
            detail: format!("{d}; everything after that point is missing from every analysis"),
        });
    }

    let high = findings.iter().any(|f| f.severity >= Severity::High);
    let problems = checks.iter().any(|c| c.result == "problem");
    let verdict = if high {
        "misleading for loss and latency"
    } else if problems {
        "usable with caveats"
    } else {
        "trustworthy"
    };
    let trust = CaptureTrust {
        verdict,
        checks,
        dropped_by_capture,
        duplicate_frames: dups.count,
        truncated_frames: summary.truncated_frames,
        one_sided_streams: lopsided.len() as u64,
        tcp_streams_considered: considered.len() as u64,
        acked_unseen_segments: unseen,
        segments_not_captured: not_captured,
    };
    (trust, findings)
}

fn percent(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}
