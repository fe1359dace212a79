//! MCP prompts: investigation playbooks a client can offer its user. Each is a short
//! sequence of this server's tools with the arguments to pass and what to look for,
//! declared as data so a test can check every step names a real tool.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{GetPromptResult, PromptMessage, Role};
use rmcp::{prompt, prompt_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::server::PcapServer;

/// One step of a playbook: the tool, its arguments, what to look for.
pub struct Step {
    pub tool: &'static str,
    pub arguments: Value,
    pub why: &'static str,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct CaptureArg {
    /// The capture to investigate: a name in PCAP_STORAGE_DIR or a path inside an
    /// allowed directory (list_captured_files shows them).
    pub pcap_file: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct MomentArgs {
    /// The capture to investigate.
    pub pcap_file: String,
    /// The moment: RFC 3339 (`2024-05-01T14:03:10+02:00`), a time of day (`14:03:10`,
    /// UTC unless the timezone is given) or seconds after the first packet (`+120`).
    pub time: String,
    /// Seconds before and after the moment to look at (default 10).
    #[serde(default)]
    pub window_s: Option<String>,
    /// Time zone of a time of day: `+02:00` or an IANA name (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
}

fn file(f: &str) -> Value {
    json!({ "pcap_file": f })
}

fn with(f: &str, extra: Value) -> Value {
    let mut v = file(f);
    if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    v
}

pub fn slow(f: &str) -> Vec<Step> {
    vec![
        Step {
            tool: "analyze_pcap_file",
            arguments: file(f),
            why: "the triage: its first finding is the most important problem, with the tool that explains it",
        },
        Step {
            tool: "analyze_slowness",
            arguments: file(f),
            why: "each slow connection's time split into setup, server think time and transfer, with a verdict: client, network or server",
        },
        Step {
            tool: "analyze_network_performance",
            arguments: file(f),
            why: "per-connection RTT, throughput and what limited it (receiver window, loss, application pauses)",
        },
        Step {
            tool: "analyze_tcp_retransmissions",
            arguments: file(f),
            why: "loss: which streams retransmitted, how much of their data, and where",
        },
        Step {
            tool: "analyze_tcp_zero_window",
            arguments: file(f),
            why: "a receiver that stopped reading (zero window) stalls the sender: that is the client or server, not the network",
        },
        Step {
            tool: "analyze_application_response_times",
            arguments: file(f),
            why: "server think time per request (DNS, HTTP, TLS): slow answers on a fast path mean the server",
        },
        Step {
            tool: "analyze_dns_resolution_issues",
            arguments: file(f),
            why: "slow or failing name lookups delay everything after them",
        },
        Step {
            tool: "follow_stream",
            arguments: with(
                f,
                json!({"stream": "<the worst stream from the steps above>"}),
            ),
            why: "read the slowest conversation itself; get_packet_details opens any frame a finding names",
        },
    ]
}

pub fn tls(f: &str) -> Vec<Step> {
    vec![
        Step {
            tool: "analyze_tls_handshakes",
            arguments: file(f),
            why: "which handshakes failed, at which step, with which versions and suites",
        },
        Step {
            tool: "analyze_tls_alerts",
            arguments: file(f),
            why: "the alert each side sent (unknown_ca, handshake_failure, protocol_version ...) names the cause",
        },
        Step {
            tool: "extract_certificate_details",
            arguments: file(f),
            why: "expired, not yet valid, self-signed or incomplete chains, judged at the time they were presented",
        },
        Step {
            tool: "analyze_sni_mismatches",
            arguments: file(f),
            why: "a certificate that does not cover the name the client asked for",
        },
        Step {
            tool: "extract_tls_cipher_analysis",
            arguments: file(f),
            why: "no common suite or version between client and server",
        },
        Step {
            tool: "get_packet_details",
            arguments: with(
                f,
                json!({"frame": "<the alert or ServerHello frame from a finding>", "layers": ["tls"]}),
            ),
            why: "the exact handshake message; pass tls_keylog_file to see inside TLS 1.3",
        },
    ]
}

pub fn malicious(f: &str) -> Vec<Step> {
    vec![
        Step {
            tool: "analyze_security_threats",
            arguments: file(f),
            why: "scans, floods, ARP spoofing, DNS tunnelling, cleartext credentials, suspicious ports",
        },
        Step {
            tool: "analyze_protocol_anomalies",
            arguments: file(f),
            why: "malformed packets, odd TTLs and flags, protocols on unexpected ports",
        },
        Step {
            tool: "analyze_dns_resolution_issues",
            arguments: file(f),
            why: "long random-looking names, many NXDOMAINs, resolvers nobody should use",
        },
        Step {
            tool: "analyze_network_topology",
            arguments: file(f),
            why: "who talks to whom: hosts that contact many peers, unexpected servers",
        },
        Step {
            tool: "extract_http_requests",
            arguments: file(f),
            why: "user agents, hosts and URIs of cleartext web traffic (downloads, beacons)",
        },
        Step {
            tool: "follow_stream",
            arguments: with(f, json!({"stream": "<a stream a finding names>"})),
            why: "read what the suspicious conversation carried",
        },
    ]
}

pub fn moment(f: &str, time: &str, window: f64, tz: Option<&str>) -> Vec<Step> {
    // the window as relative bounds only works for a relative moment; otherwise the
    // client computes them from the moment (the tools accept every form)
    let range = match time.strip_prefix('+').and_then(|s| s.parse::<f64>().ok()) {
        Some(t) => json!({
            "start_time": format!("+{}", (t - window).max(0.0)),
            "end_time": format!("+{}", t + window),
        }),
        None => json!({
            "start_time": format!("<{time} minus {window} s>"),
            "end_time": format!("<{time} plus {window} s>"),
        }),
    };
    let mut range = range;
    let mut around = json!({"time": time, "window_s": window});
    for v in [&mut range, &mut around] {
        if let (Some(tz), Some(m)) = (tz, v.as_object_mut()) {
            m.insert("timezone".into(), json!(tz));
        }
    }
    vec![
        Step {
            tool: "get_events_around",
            arguments: with(f, around),
            why: "every family's events in the window on one time line: connections, DNS, HTTP, TLS",
        },
        Step {
            tool: "analyze_pcap_file",
            arguments: with(f, range.clone()),
            why: "the triage of just that window: what went wrong then",
        },
        Step {
            tool: "generate_traffic_timeline",
            arguments: with(f, range.clone()),
            why: "traffic, new connections, resets, retransmissions and DNS failures second by second",
        },
        Step {
            tool: "analyze_expert_information",
            arguments: with(f, range.clone()),
            why: "Wireshark's own warnings and errors in the window",
        },
        Step {
            tool: "query_packets",
            arguments: with(f, range),
            why: "the packets themselves, as Wireshark's packet list; page with offset",
        },
    ]
}

/// A playbook as the user message a client sends: the question, then the steps.
fn playbook(question: &str, steps: &[Step]) -> Vec<PromptMessage> {
    let mut text = format!(
        "{question}\n\nInvestigate with the pcap-analyzer tools in this order; after each step say what it showed before moving on, cite frame numbers and display filters from the findings, and stop when the cause is clear:\n"
    );
    for (i, s) in steps.iter().enumerate() {
        text.push_str(&format!(
            "{}. {} {} — {}\n",
            i + 1,
            s.tool,
            s.arguments,
            s.why
        ));
    }
    text.push_str("Values in <angle brackets> come from earlier results.");
    vec![PromptMessage::new_text(Role::User, text)]
}

#[prompt_router(vis = "pub(crate)")]
impl PcapServer {
    /// Why is it slow? Client, network or server: loss, windows, think time, DNS.
    #[prompt(name = "why_is_it_slow")]
    async fn why_is_it_slow(&self, Parameters(a): Parameters<CaptureArg>) -> GetPromptResult {
        GetPromptResult::new(playbook(
            &format!(
                "Why is the traffic in {} slow: is it the client, the network or the server?",
                a.pcap_file
            ),
            &slow(&a.pcap_file),
        ))
        .with_description("Slowness: loss, receiver windows, server think time, DNS")
    }

    /// Why does TLS fail? Handshakes, alerts, certificates, SNI and cipher suites.
    #[prompt(name = "why_does_tls_fail")]
    async fn why_does_tls_fail(&self, Parameters(a): Parameters<CaptureArg>) -> GetPromptResult {
        GetPromptResult::new(playbook(
            &format!("Why do TLS connections in {} fail?", a.pcap_file),
            &tls(&a.pcap_file),
        ))
        .with_description("TLS failures: handshakes, alerts, certificates, SNI, suites")
    }

    /// Is anything in this capture malicious? Threats, anomalies, DNS, topology.
    #[prompt(name = "is_anything_malicious")]
    async fn is_anything_malicious(
        &self,
        Parameters(a): Parameters<CaptureArg>,
    ) -> GetPromptResult {
        GetPromptResult::new(playbook(
            &format!("Is anything in {} malicious or suspicious?", a.pcap_file),
            &malicious(&a.pcap_file),
        ))
        .with_description("Security review: scans, credentials, tunnelling, anomalies")
    }

    /// What happened at a given moment? The triage, timeline and packets around it.
    #[prompt(name = "what_happened_at")]
    async fn what_happened_at(&self, Parameters(a): Parameters<MomentArgs>) -> GetPromptResult {
        let window = a
            .window_s
            .as_deref()
            .and_then(|w| w.trim().parse::<f64>().ok())
            .filter(|w| w.is_finite() && *w > 0.0)
            .unwrap_or(10.0);
        GetPromptResult::new(playbook(
            &format!("What happened in {} around {}?", a.pcap_file, a.time),
            &moment(&a.pcap_file, &a.time, window, a.timezone.as_deref()),
        ))
        .with_description("One moment: triage, timeline, expert info and packets in a window")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step of every playbook names a tool this server offers.
    #[test]
    fn playbooks_name_real_tools() {
        let names: Vec<String> = PcapServer::all_tools()
            .into_iter()
            .map(|(_, t)| t.name.to_string())
            .collect();
        let all = [
            slow("x.pcap"),
            tls("x.pcap"),
            malicious("x.pcap"),
            moment("x.pcap", "+30", 5.0, Some("+02:00")),
        ];
        for steps in all {
            for s in steps {
                assert!(names.iter().any(|n| n == s.tool), "no tool {}", s.tool);
                assert_eq!(s.arguments["pcap_file"], "x.pcap");
            }
        }
        let m = moment("x.pcap", "+30", 5.0, None);
        assert_eq!(m[0].arguments["time"], "+30");
        assert_eq!(m[1].arguments["start_time"], "+25");
        assert_eq!(m[1].arguments["end_time"], "+35");
    }
}
