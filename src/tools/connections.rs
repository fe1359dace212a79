//! `analyze_tcp_resets` (who reset what, when in the connection) and
//! `analyze_connection_timeouts` (SYNs nobody answered, senders that gave up, idle
//! connections): focused views over the shared TCP model, with the definitions in
//! `analysis::connections`.

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::Serialize;

use crate::analysis::connections::{
    IDLE_AT_END_S, IDLE_RESET_S, ResetRow, TimeoutRow, resets, timeouts,
};
use crate::model::tcp::TcpModel;
use crate::report::{CountRow, Evidence, Finding, Report, Severity, Table};
use crate::server::PcapServer;
use crate::tools::{TcpParams, clamp_limit, clamp_offset};

type Reduced<T> = (String, Vec<Finding>, T);

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TcpResets {
    /// Connections with at least one RST.
    pub reset_connections: usize,
    pub by_kind: Vec<CountRow>,
    pub by_client: usize,
    pub by_server: usize,
    /// Server endpoints that refused connections, most first.
    pub refusing: Vec<CountRow>,
    pub connections: Table<ResetRow>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConnectionTimeouts {
    pub timed_out: usize,
    pub by_kind: Vec<CountRow>,
    /// Destinations whose SYNs went unanswered, most first.
    pub unanswered_destinations: Vec<CountRow>,
    pub connections: Table<TimeoutRow>,
}

fn counts<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<CountRow> {
    crate::report::counts(keys.map(str::to_string))
}

fn streams_filter(ids: &[u64], extra: &str) -> String {
    let set = crate::report::in_set("tcp.stream", ids.iter().take(50).copied());
    format!("{set} && ({extra})")
}

pub(crate) fn tcp_resets(m: &TcpModel, p: &TcpParams) -> Reduced<TcpResets> {
    let rows = resets(&m.streams);
    let by_kind = counts(rows.iter().map(|r| r.kind.as_str()));
    let by_server = rows.iter().filter(|r| r.reset_by == "server").count();
    let refusing = counts(
        rows.iter()
            .filter(|r| r.kind == "refused")
            .map(|r| r.server.as_str()),
    );
    let mut findings = Vec::new();
    let of_kind = |k: &str| -> Vec<&ResetRow> { rows.iter().filter(|r| r.kind == k).collect() };
    let refused = of_kind("refused");
    if let Some(top) = refusing.first() {
        let ids: Vec<u64> = refused.iter().map(|r| r.stream).collect();
        findings.push(Finding::new(
            Severity::Medium,
            format!(
                "{} connection(s) refused ({} by {})",
                refused.len(),
                top.count,
                top.key
            ),
            "The server answered the SYN with a RST: nothing listens on that port, or a firewall rejects it.",
            Evidence {
                streams: ids.iter().copied().take(10).collect(),
                frames: refused.iter().map(|r| r.frame).take(10).collect(),
                endpoints: refusing.iter().map(|c| c.key.clone()).take(5).collect(),
                display_filter: streams_filter(&ids, "tcp.flags.reset == 1"),
                ..Default::default()
            },
        ));
    }
    for (kind, severity, what) in [
        (
            "mid_transfer",
            Severity::Medium,
            "aborted while data was flowing: an application error or crash, or a middlebox cutting the connection",
        ),
        (
            "after_idle",
            Severity::Low,
            "reset after a silence: an idle timer in a firewall, load balancer or the server",
        ),
        (
            "during_handshake",
            Severity::Low,
            "reset after the handshake, before any data: a server that accepts and drops, or a client that gave up",
        ),
    ] {
        let hit = of_kind(kind);
        if hit.is_empty() {
            continue;
        }
        let ids: Vec<u64> = hit.iter().map(|r| r.stream).collect();
        let servers = hit.iter().filter(|r| r.reset_by == "server").count();
        findings.push(Finding::new(
            severity,
            format!(
                "{} connection(s) reset {} ({servers} by the server)",
                hit.len(),
                kind.replace('_', " ")
            ),
            format!(
                "{}; first: stream {} at frame {}.",
                crate::report::capitalise(what),
                hit[0].stream,
                hit[0].frame
            ),
            Evidence {
                streams: ids.iter().copied().take(10).collect(),
                frames: hit.iter().map(|r| r.frame).take(10).collect(),
                display_filter: streams_filter(&ids, "tcp.flags.reset == 1"),
                ..Default::default()
            },
        ));
    }
    let summary = if rows.is_empty() {
        format!(
            "No TCP connection was reset ({} connections).",
            m.streams.len()
        )
    } else {
        format!(
            "{} of {} TCP connection(s) were reset, {by_server} by the server: {}.",
            rows.len(),
            m.streams.len(),
            crate::report::count_list(&by_kind)
        )
    };
    let data = TcpResets {
        reset_connections: rows.len(),
        by_client: rows.len() - by_server,
        by_server,
        by_kind,
        refusing: refusing.into_iter().take(10).collect(),
        connections: Table::page(rows, clamp_offset(p.offset), clamp_limit(p.limit, 20)),
    };
    (summary, findings, data)
}

pub(crate) fn connection_timeouts(m: &TcpModel, p: &TcpParams) -> Reduced<ConnectionTimeouts> {
    let end = m.span.last.unwrap_or(0.0);
    let mut rows = timeouts(&m.streams, end);
    rows.sort_by(|a, b| {
        b.waited_s
            .total_cmp(&a.waited_s)
            .then(a.stream.cmp(&b.stream))
    });
    let by_kind = counts(rows.iter().map(|r| r.kind.as_str()));
    let unanswered: Vec<&TimeoutRow> = rows.iter().filter(|r| r.kind == "unanswered_syn").collect();
    let destinations = counts(unanswered.iter().map(|r| r.server.as_str()));
    let mut findings = Vec::new();
    if let Some(top) = destinations.first() {
        let ids: Vec<u64> = unanswered.iter().map(|r| r.stream).collect();
        let attempts: u64 = unanswered.iter().map(|r| r.syn_attempts).sum();
        findings.push(Finding::new(
            Severity::Medium,
            format!(
                "{} connection attempt(s) never answered ({} to {})",
                unanswered.len(),
                top.count,
                top.key
            ),
            format!(
                "{attempts} SYN(s) got neither a SYN-ACK nor a RST: the host is down or unreachable, or a firewall drops them silently."
            ),
            Evidence {
                streams: ids.iter().copied().take(10).collect(),
                frames: unanswered.iter().map(|r| r.first_frame).take(10).collect(),
                endpoints: destinations.iter().map(|c| c.key.clone()).take(5).collect(),
                display_filter: streams_filter(&ids, "tcp.flags.syn == 1"),
                ..Default::default()
            },
        ));
    }
    for (kind, severity, what) in [
        (
            "gave_up_retransmitting",
            Severity::Medium,
            "spent 1 s or more in retransmission timeouts and then ended without an orderly close: the path or the peer stopped answering".to_string(),
        ),
        (
            "reset_after_idle",
            Severity::Low,
            format!("were reset after {IDLE_RESET_S:.0} s or more of silence: an idle timer in a firewall, load balancer or the server"),
        ),
        (
            "idle_at_capture_end",
            Severity::Info,
            format!("were open but silent for {IDLE_AT_END_S:.0} s or more when the capture ended"),
        ),
    ] {
        let hit: Vec<&TimeoutRow> = rows.iter().filter(|r| r.kind == kind).collect();
        if hit.is_empty() {
            continue;
        }
        let ids: Vec<u64> = hit.iter().map(|r| r.stream).collect();
        findings.push(Finding::new(
            severity,
            format!("{} connection(s) {}", hit.len(), kind.replace('_', " ")),
            format!(
                "{} connection(s) {what}; longest {:.1} s (stream {}).",
                hit.len(),
                hit[0].waited_s,
                hit[0].stream
            ),
            Evidence {
                streams: ids.iter().copied().take(10).collect(),
                frames: hit.iter().map(|r| r.last_frame).take(10).collect(),
                display_filter: streams_filter(&ids, "tcp"),
                ..Default::default()
            },
        ));
    }
    let summary = if rows.is_empty() {
        format!(
            "No TCP connection timed out ({} connections): every SYN was answered and none ended on retransmission timeouts or idle timers.",
            m.streams.len()
        )
    } else {
        format!(
            "{} of {} TCP connection(s) timed out: {}.",
            rows.len(),
            m.streams.len(),
            crate::report::count_list(&by_kind)
        )
    };
    let data = ConnectionTimeouts {
        timed_out: rows.len(),
        by_kind,
        unanswered_destinations: destinations.into_iter().take(10).collect(),
        connections: Table::page(rows, clamp_offset(p.offset), clamp_limit(p.limit, 20)),
    };
    (summary, findings, data)
}

#[tool_router(router = connections_router, vis = "pub(crate)")]
impl PcapServer {
    /// TCP resets: per connection who sent the first RST (client or server) and when —
    /// refused (RST to the SYN), during the handshake, mid-transfer, after an idle
    /// silence, after a FIN — with the bytes exchanged before it; servers refusing most.
    #[tool(
        name = "analyze_tcp_resets",
        annotations(title = "TCP resets", read_only_hint = true, open_world_hint = false)
    )]
    pub async fn analyze_tcp_resets(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<TcpResets>>, String> {
        self.tcp_tool("analyze_tcp_resets", p, rc, tcp_resets).await
    }

    /// TCP connections that timed out: SYNs never answered (with attempts and the
    /// destinations), senders that gave up after retransmission timeouts, connections
    /// reset by idle timers, and connections left open and silent at the capture's end.
    #[tool(
        name = "analyze_connection_timeouts",
        annotations(
            title = "Connection timeouts",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_connection_timeouts(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<ConnectionTimeouts>>, String> {
        self.tcp_tool("analyze_connection_timeouts", p, rc, connection_timeouts)
            .await
    }
}
