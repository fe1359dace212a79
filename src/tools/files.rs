//! `list_captured_files`: the captures in PCAP_STORAGE_DIR, found by magic bytes.

use rmcp::{Json, handler::server::wrapper::Parameters, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::report::{Table, human_bytes, rfc3339, round};
use crate::server::PcapServer;
use crate::tools::clamp_limit;

/// Packet counts need a read of the whole file; above this size they are skipped to stay fast.
const SUMMARY_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// How long one listing may spend reading files for their facts (cached afterwards).
const FACTS_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ListFilesParams {
    /// Files to list, newest first (default 50, max 500).
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StoredFile {
    /// Pass this as pcap_file to the analysis tools.
    pub name: String,
    pub format: String,
    pub size_bytes: u64,
    pub modified: String,
    /// dumpcap is still writing it.
    pub being_written: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_packet_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FileList {
    pub summary: String,
    pub storage_dir: String,
    pub files: Table<StoredFile>,
    /// Files skipped because they are not pcap/pcapng (by magic bytes).
    pub non_capture_files: usize,
    /// Symbolic links in storage, listed by name and never followed or read here.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub symlinks: Vec<String>,
}

#[tool_router(router = files_router, vis = "pub(crate)")]
impl PcapServer {
    /// Capture files in PCAP_STORAGE_DIR (pcap/pcapng by magic bytes), newest first, with
    /// size, modified time, format, packet count and time span; marks files still being written.
    #[tool(
        name = "list_captured_files",
        annotations(
            title = "Stored captures",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn list_captured_files(
        &self,
        Parameters(p): Parameters<ListFilesParams>,
    ) -> Result<Json<FileList>, String> {
        let dir = self.engine.cfg.storage_dir.clone();
        let writing = self.engine.captures.files_being_written();
        let (found, links) = self.engine.sandbox().storage_entries()?;
        let limit = clamp_limit(p.limit, 50);
        let mut skipped = 0;
        let mut rows = Vec::new();
        let mut total = 0;
        // reading files for their packet counts stops after a while: a listing answers fast
        let facts_until = std::time::Instant::now() + FACTS_BUDGET;
        for crate::sandbox::StoredEntry {
            name,
            modified,
            size,
        } in found
        {
            let path = dir.join(&name);
            let being_written = writing.contains(&path);
            let opened = self.engine.sandbox().open_capture(&name);
            let format = match &opened {
                Ok(f) => f.format,
                // dumpcap has not written the header yet
                Err(_) if being_written => crate::sandbox::CaptureFormat::Pcapng,
                Err(_) => {
                    skipped += 1;
                    continue;
                }
            };
            total += 1;
            if rows.len() >= limit {
                continue;
            }
            let info = match &opened {
                Ok(f)
                    if !being_written
                        && size <= SUMMARY_MAX_BYTES
                        && std::time::Instant::now() < facts_until =>
                {
                    self.engine.summary(f).await.ok()
                }
                _ => None,
            };
            let epoch = modified
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            rows.push(StoredFile {
                name,
                format: format!("{format:?}").to_lowercase(),
                size_bytes: size,
                modified: rfc3339(epoch),
                being_written,
                packets: info.as_ref().map(|i| i.packets),
                first_packet_time: info.as_ref().and_then(|i| i.first_epoch).map(rfc3339),
                duration_s: info.as_ref().map(|i| round(i.duration_s, 6)),
            });
        }
        let mut table = Table::window(rows, total, 0);
        // this tool has no offset or filter: only a larger limit shows more
        table.more = (total > table.shown)
            .then(|| format!("{} more file(s): raise limit", total - table.shown));
        let bytes: u64 = table.rows.iter().map(|r| r.size_bytes).sum();
        let summary = if total == 0 {
            format!(
                "No capture files in {}. Start one with start_packet_capture or copy pcap/pcapng files there.",
                dir.display()
            )
        } else {
            format!(
                "{total} capture file(s) in {} ({} shown, {}); newest: {}{}.",
                dir.display(),
                table.shown,
                human_bytes(bytes as f64),
                table.rows[0].name,
                if writing.is_empty() {
                    String::new()
                } else {
                    format!("; {} still being written", writing.len())
                }
            )
        };
        Ok(Json(FileList {
            summary,
            storage_dir: dir.display().to_string(),
            files: table,
            non_capture_files: skipped,
            symlinks: links,
        }))
    }
}
