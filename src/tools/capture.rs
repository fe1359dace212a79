//! Live capture tools: thin handlers over the capture manager (`crate::capture`).

use rmcp::{Json, handler::server::wrapper::Parameters, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::capture::{CaptureRequest, CaptureState, CaptureStatus};
use crate::server::PcapServer;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StartCaptureParams {
    /// Interface name from list_network_interfaces, e.g. `eth0` or `lo`.
    pub interface: String,
    /// Seconds to capture (default 60, at most MAX_CAPTURE_DURATION). The capture stops by itself.
    #[serde(default = "default_duration")]
    pub duration: i64,
    /// BPF capture filter (tcpdump syntax), e.g. `tcp port 443`. Checked by dumpcap before starting.
    #[serde(default)]
    pub capture_filter: Option<String>,
    /// Bare file name to write in PCAP_STORAGE_DIR (letters, digits, . _ -); must not exist. Default: generated.
    #[serde(default)]
    pub output_file: Option<String>,
    /// Stop after this many packets.
    #[serde(default)]
    pub max_packets: Option<i64>,
    /// Stop when the file reaches this size in MB (default 100).
    #[serde(default)]
    pub max_size_mb: Option<i64>,
}

fn default_duration() -> i64 {
    60
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CaptureIdParams {
    /// The capture_id returned by start_packet_capture.
    pub capture_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StatusParams {
    /// A capture_id; omit it to list every capture of this server.
    #[serde(default)]
    pub capture_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CaptureResult {
    pub summary: String,
    pub capture: CaptureStatus,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CaptureList {
    pub summary: String,
    pub captures: Vec<CaptureStatus>,
}

fn positive(name: &str, v: Option<i64>) -> Result<Option<u64>, String> {
    match v {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(n as u64)),
        Some(n) => Err(format!("{name} must be a positive whole number, got {n}")),
    }
}

fn describe(s: &CaptureStatus) -> String {
    match s.state {
        CaptureState::Running => format!(
            "Capture {} on {} is running: {} packets, {} bytes so far, {:.0} s left. Writing {}.",
            s.capture_id, s.interface, s.packets, s.bytes, s.remaining_s, s.file
        ),
        CaptureState::Finished | CaptureState::Stopped => format!(
            "Capture {} on {} {} after {:.1} s with {} packets ({} bytes) in {}; analyse it with pcap_file=\"{}\".",
            s.capture_id,
            s.interface,
            if s.state == CaptureState::Finished {
                "finished at its limit"
            } else {
                "was stopped"
            },
            s.elapsed_s,
            s.packets,
            s.bytes,
            s.file,
            s.file
        ),
        CaptureState::Failed => format!(
            "Capture {} on {} failed: {}. {}",
            s.capture_id,
            s.interface,
            s.error.clone().unwrap_or_default(),
            s.fix.clone().unwrap_or_default()
        ),
    }
}

#[tool_router(router = capture_router, vis = "pub(crate)")]
impl PcapServer {
    /// Start a live capture with dumpcap into PCAP_STORAGE_DIR (pcapng). Validates the
    /// interface, the BPF filter and the limits first; stops by itself at its duration,
    /// size or packet limit. Returns capture_id, file and start/stop times.
    #[tool(
        name = "start_packet_capture",
        annotations(
            title = "Start capture",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            // it records whatever the network carries
            open_world_hint = true
        )
    )]
    pub async fn start_packet_capture(
        &self,
        Parameters(p): Parameters<StartCaptureParams>,
    ) -> Result<Json<CaptureResult>, String> {
        if p.duration < 1 {
            return Err(format!(
                "duration must be between 1 and {} seconds (MAX_CAPTURE_DURATION), got {}",
                self.engine.cfg.max_capture_duration, p.duration
            ));
        }
        let req = CaptureRequest {
            interface: p.interface.trim().to_string(),
            duration_s: p.duration as u64,
            capture_filter: p.capture_filter.filter(|f| !f.trim().is_empty()),
            output_file: p.output_file.filter(|f| !f.trim().is_empty()),
            max_packets: positive("max_packets", p.max_packets)?,
            max_size_mb: positive("max_size_mb", p.max_size_mb)?,
        };
        let status = self.engine.captures.start(req).await?;
        if status.state == CaptureState::Failed {
            return Err(describe(&status));
        }
        Ok(Json(CaptureResult {
            summary: format!(
                "{} It stops by itself at {} (call stop_packet_capture to end it sooner).",
                describe(&status),
                status.scheduled_stop_time
            ),
            capture: status,
        }))
    }

    /// Stop a running capture gracefully; the file is a finalised pcapng afterwards.
    /// Returns packets, bytes and duration.
    #[tool(
        name = "stop_packet_capture",
        annotations(
            title = "Stop capture",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn stop_packet_capture(
        &self,
        Parameters(p): Parameters<CaptureIdParams>,
    ) -> Result<Json<CaptureResult>, String> {
        let status = self.engine.captures.stop(&p.capture_id).await?;
        Ok(Json(CaptureResult {
            summary: describe(&status),
            capture: status,
        }))
    }

    /// State of one capture (running, finished, stopped, failed with dumpcap's error and
    /// the fix), elapsed and remaining time, bytes and packets so far; all captures when
    /// no capture_id is given.
    #[tool(
        name = "get_capture_status",
        annotations(
            title = "Capture status",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn get_capture_status(
        &self,
        Parameters(p): Parameters<StatusParams>,
    ) -> Result<Json<CaptureList>, String> {
        let id = p
            .capture_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let captures = self.engine.captures.status(id)?;
        let summary = if captures.is_empty() {
            "No captures have been started by this server; use start_packet_capture.".to_string()
        } else {
            captures.iter().map(describe).collect::<Vec<_>>().join(" ")
        };
        Ok(Json(CaptureList { summary, captures }))
    }
}
