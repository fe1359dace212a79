//! `check_capture_trust`: whether a capture can be believed about loss and latency —
//! drops the capturing side reports, SPAN/TAP duplicates, snapshot-length cuts, one
//! direction missing, segments the capture (not the network) lost, clock jumps.
//!
//! A view over the file's own facts, one record walk for duplicates (cached per file)
//! and the shared TCP model; the triage runs it first, because every other family's
//! numbers depend on it.

use std::sync::Arc;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::trust::{CaptureTrust, assess};
use crate::engine::{Analysis, FileArgs, Span};
use crate::model::tcp::TcpModel;
use crate::pcapfile::Duplicates;
use crate::report::{Finding, Report};
use crate::server::PcapServer;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TrustParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
}

/// Trust is a property of the whole file: no filter, no time range.
impl FileArgs for TrustParams {
    fn pcap_file(&self) -> &str {
        &self.pcap_file
    }
    fn display_filter(&self) -> Option<&str> {
        None
    }
}

#[tool_router(router = trust_router, vis = "pub(crate)")]
impl PcapServer {
    /// Can this capture be trusted about loss and latency? Finds capture artefacts:
    /// reported drops, SPAN/TAP duplicates, snaplen cuts, one-way streams, segments
    /// ACKed but never captured (capture loss, not network loss), clock jumps.
    #[tool(
        name = "check_capture_trust",
        annotations(
            title = "Capture trust",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn check_capture_trust(
        &self,
        Parameters(p): Parameters<TrustParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<CaptureTrust>>, String> {
        self.engine
            .analyze("check_capture_trust", p, rc, trust)
            .await
    }
}

/// The trust facts and findings of the analysis' file (its TCP model is the scope's).
pub async fn assess_capture(a: &mut Analysis) -> Result<(CaptureTrust, Vec<Finding>), String> {
    let summary = a.summary().await?;
    let key = format!("duplicates:{}", a.file.identity());
    // memoised, or a walk that reads every byte: it runs beside the index pass, on
    // another core
    let known = match a.engine.memo_get::<Duplicates>(&key) {
        Some(d) => Ok(d),
        None => {
            let f = a
                .file
                .opened
                .reopen()
                .map_err(|e| format!("cannot reread the capture: {e}"))?;
            let size = a.file.size;
            Err(tokio::task::spawn_blocking(move || {
                crate::pcapfile::duplicates(f, size)
            }))
        }
    };
    let tcp = a.part::<TcpModel>().await;
    let dups = match known {
        Ok(d) => d,
        Err(walk) => {
            let failed = |e: String| format!("looking for duplicate frames failed: {e}");
            let d = walk
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(e.to_string()))?;
            let d = Arc::new(d);
            a.engine.memo_put(key, d.clone(), 256);
            d
        }
    };
    let tcp = tcp?;
    Ok(assess(&summary, &dups, &tcp))
}

pub async fn trust(mut a: Analysis, _: TrustParams) -> Result<Report<CaptureTrust>, String> {
    let (t, findings) = assess_capture(&mut a).await?;
    let problems: Vec<&str> = t
        .checks
        .iter()
        .filter(|c| c.result == "problem")
        .map(|c| c.check)
        .collect();
    let summary = if problems.is_empty() {
        format!(
            "Capture {}: no drops reported by the capture, no duplicates, no cut frames, both directions seen, no segment missing from the capture{}",
            t.verdict,
            if t.dropped_by_capture.is_none() {
                " (the file carries no drop counters)"
            } else {
                ""
            }
        )
    } else {
        format!("Capture {}: {}", t.verdict, problems.join(", "))
    };
    let s = a.summary().await?;
    let span = Span::of_file(&s);
    a.report(summary, findings, t, span, None).await
}
