//! `analyze_quic_traffic`: QUIC connections with version, SNI and ALPN from the
//! Initial packets (tshark decrypts those without keys), connection IDs, packets and
//! bytes each way, handshake completion (the TLS model's one definition), version
//! negotiation, retries and 0-RTT.

use std::collections::HashMap;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::Serialize;

use crate::engine::Analysis;
use crate::model::quic::{QuicConn, QuicModel};
use crate::model::tls::{Session, TlsModel};
use crate::report::{CountRow, Evidence, Finding, Report, Severity, Table, counts, rfc3339};
use crate::server::PcapServer;
use crate::tools::{TcpParams, clamp_limit, clamp_offset};

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct QuicRowOut {
    pub stream: u64,
    /// The connection's Community ID, to join Zeek, Suricata or Arkime records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    pub client: String,
    pub server: String,
    /// "1" (QUIC v1), "2", a draft ("draft-29") or the hex number.
    pub version: Option<String>,
    pub sni: Option<String>,
    pub alpn_offered: Vec<String>,
    pub client_initial_dcid: Option<String>,
    pub client_scid: Option<String>,
    pub server_scid: Option<String>,
    /// complete (1-RTT data after the server's hello), incomplete, or unknown (no
    /// ClientHello seen: the capture started mid-connection).
    pub handshake: String,
    pub version_negotiation: bool,
    pub retry: bool,
    pub zero_rtt_packets: u64,
    pub connection_close_seen: bool,
    pub packets_client_to_server: u64,
    pub packets_server_to_client: u64,
    pub bytes_client_to_server: u64,
    pub bytes_server_to_client: u64,
    pub start: String,
    pub first_frame: u64,
    pub duration_s: f64,
    /// Zeek quic.log-style letters (client upper case; runs folded): I initial,
    /// Z 0-RTT, H handshake, R retry, O 1-RTT, S client hello, C connection close.
    pub history: String,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct QuicTraffic {
    pub connections_total: usize,
    pub versions: Vec<CountRow>,
    pub server_names: Vec<CountRow>,
    pub handshakes: Vec<CountRow>,
    pub connections: Table<QuicRowOut>,
}

fn version_name(v: u64) -> String {
    match v {
        1 => "1".into(),
        0x6b33_43cf => "2".into(),
        v if v & 0xffff_ff00 == 0xff00_0000 => format!("draft-{}", v & 0xff),
        v => format!("0x{v:08x}"),
    }
}

fn row(c: &QuicConn, tls: Option<&Session>) -> QuicRowOut {
    let ep = |i: usize| crate::report::endpoint(&c.addr[i], Some(c.port[i]));
    let handshake = match tls {
        Some(s) if s.established() => "complete",
        Some(s) if s.client_hello.is_some() => "incomplete",
        _ => "unknown",
    };
    QuicRowOut {
        stream: c.stream,
        community_id: c.community_id(),
        client: ep(0),
        server: ep(1),
        version: c.version.map(version_name),
        sni: c.sni.clone(),
        alpn_offered: c.alpn_offered.clone(),
        client_initial_dcid: c.client_initial_dcid.clone(),
        client_scid: c.client_scid.clone(),
        server_scid: c.server_scid.clone(),
        handshake: handshake.into(),
        version_negotiation: c.version_negotiation,
        retry: c.retry > 0,
        zero_rtt_packets: c.zero_rtt[0],
        connection_close_seen: c.connection_close,
        packets_client_to_server: c.packets[0],
        packets_server_to_client: c.packets[1],
        bytes_client_to_server: c.bytes[0],
        bytes_server_to_client: c.bytes[1],
        start: rfc3339(c.first),
        first_frame: c.first_frame,
        duration_s: ((c.last - c.first) * 1e6).round() / 1e6,
        history: c.history.clone(),
        display_filter: format!("udp.stream == {}", c.stream),
    }
}

pub(crate) async fn quic_traffic(
    mut a: Analysis,
    p: TcpParams,
) -> Result<Report<QuicTraffic>, String> {
    let q = a.part::<QuicModel>().await?;
    let tls = a.part::<TlsModel>().await?;
    let sessions: HashMap<u64, &Session> = tls
        .sessions
        .iter()
        .filter(|s| s.quic)
        .map(|s| (s.stream, s))
        .collect();
    let rows: Vec<QuicRowOut> = q
        .connections
        .iter()
        .map(|c| row(c, sessions.get(&c.stream).copied()))
        .collect();
    let versions = counts(rows.iter().filter_map(|r| r.version.clone()));
    let server_names: Vec<CountRow> = counts(rows.iter().filter_map(|r| r.sni.clone()))
        .into_iter()
        .take(20)
        .collect();
    let handshakes = counts(rows.iter().map(|r| r.handshake.clone()));
    let mut findings = Vec::new();
    let incomplete: Vec<&QuicRowOut> = rows
        .iter()
        .filter(|r| r.handshake == "incomplete")
        .collect();
    if let Some(first) = incomplete.first() {
        findings.push(Finding::new(
            Severity::Medium,
            format!("{} QUIC handshake(s) never completed", incomplete.len()),
            format!(
                "The client's Initial got no 1-RTT exchange after it (first: {} -> {}{}): UDP/443 blocked or rate-limited on the path, or the server refused; browsers then fall back to TCP.",
                first.client,
                first.server,
                first.sni.as_deref().map(|s| format!(", SNI {s}")).unwrap_or_default()
            ),
            Evidence {
                streams: incomplete.iter().map(|r| r.stream).take(10).collect(),
                frames: incomplete.iter().map(|r| r.first_frame).take(10).collect(),
                display_filter: crate::report::in_set(
                    "udp.stream",
                    incomplete.iter().take(50).map(|r| r.stream),
                ),
                ..Default::default()
            },
        ));
    }
    let negotiated: Vec<&QuicRowOut> = rows.iter().filter(|r| r.version_negotiation).collect();
    if !negotiated.is_empty() {
        findings.push(Finding::new(
            Severity::Low,
            format!(
                "{} QUIC connection(s) needed version negotiation",
                negotiated.len()
            ),
            "The server did not speak the client's first QUIC version: an extra round trip.",
            Evidence {
                streams: negotiated.iter().map(|r| r.stream).take(10).collect(),
                display_filter: "quic.version == 0".into(),
                ..Default::default()
            },
        ));
    }
    let summary = if rows.is_empty() {
        "No QUIC traffic.".to_string()
    } else {
        format!(
            "{} QUIC connection(s): versions {}; handshakes {}; top server names {}.",
            rows.len(),
            versions
                .iter()
                .map(|c| format!("{} v{}", c.count, c.key))
                .collect::<Vec<_>>()
                .join(", "),
            handshakes
                .iter()
                .map(|c| format!("{} {}", c.count, c.key))
                .collect::<Vec<_>>()
                .join(", "),
            if server_names.is_empty() {
                "none seen".to_string()
            } else {
                server_names
                    .iter()
                    .take(3)
                    .map(|c| c.key.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    };
    let data = QuicTraffic {
        connections_total: rows.len(),
        versions,
        server_names,
        handshakes,
        connections: Table::page(rows, clamp_offset(p.offset), clamp_limit(p.limit, 20)),
    };
    let span = q.span;
    a.report(summary, findings, data, span, None).await
}

#[tool_router(router = quic_router, vis = "pub(crate)")]
impl PcapServer {
    /// QUIC connections: version, SNI and ALPN from the Initial packets, connection
    /// IDs, handshake completion, version negotiation, retry, 0-RTT, packets and bytes
    /// each way; a TLS key log shows inside.
    #[tool(
        name = "analyze_quic_traffic",
        annotations(title = "QUIC traffic", read_only_hint = true, open_world_hint = false)
    )]
    pub async fn analyze_quic_traffic(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<QuicTraffic>>, String> {
        self.engine
            .analyze("analyze_quic_traffic", p, rc, quic_traffic)
            .await
    }
}
