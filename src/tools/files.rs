//! `list_captured_files`: the captures in PCAP_STORAGE_DIR, found by magic bytes.

use rmcp::{Json, handler::server::wrapper::Parameters, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::report::{Table, human_bytes, rfc3339, round};
use crate::sandbox::{CaptureFile, format_of};
use crate::server::PcapServer;
use crate::tools::clamp_limit;

/// capinfos reads the whole file; above this size its facts are skipped to stay fast.
const CAPINFOS_MAX_BYTES: u64 = 256 * 1024 * 1024;

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
        let read = std::fs::read_dir(&dir)
            .map_err(|e| format!("cannot read PCAP_STORAGE_DIR {}: {e}", dir.display()))?;
        let mut found: Vec<(CaptureFile, std::time::SystemTime)> = Vec::new();
        let mut skipped = 0;
        for entry in read.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let being_written = writing.contains(&path);
            let format = match format_of(&path) {
                Some(f) => f,
                // dumpcap has not written the header yet
                None if being_written => crate::sandbox::CaptureFormat::Pcapng,
                None => {
                    skipped += 1;
                    continue;
                }
            };
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            found.push((
                CaptureFile {
                    display_name: entry.file_name().to_string_lossy().into_owned(),
                    path,
                    format,
                    size: meta.len(),
                    mtime_ns: modified
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0),
                },
                modified,
            ));
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.1));
        let limit = clamp_limit(p.limit, 50);
        let total = found.len();
        let mut rows = Vec::new();
        for (f, modified) in found.into_iter().take(limit) {
            let being_written = writing.contains(&f.path);
            let info = if !being_written && f.size <= CAPINFOS_MAX_BYTES {
                self.engine.tshark.capinfos(&f).await
            } else {
                None
            };
            let epoch = modified
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            rows.push(StoredFile {
                name: f.display_name.clone(),
                format: format!("{:?}", f.format).to_lowercase(),
                size_bytes: f.size,
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
        }))
    }
}
