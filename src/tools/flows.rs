//! `export_flow_records`: the capture's connections and transactions as Zeek logs
//! (conn, dns, http, ssl) in a new folder in storage, for the engines that scale past
//! one machine (DuckDB, Spark, Arkime/OpenSearch, any Zeek tooling). The rows come
//! from the capture index (`crate::analysis::flowlog`); field semantics are Zeek's,
//! documented there and in README's "Flow records" section.

use std::io::Write;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::flowlog::{self, ConnRecord, Connections};
use crate::engine::Analysis;
use crate::model::conn::Flows;
use crate::model::dns::DnsRow;
use crate::model::http::HttpRow;
use crate::model::tcp::TcpModel;
use crate::model::tls::TlsModel;
use crate::report::{Evidence, Finding, Report, Severity, thousands};
use crate::server::PcapServer;

#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    Conn,
    Dns,
    Http,
    Ssl,
}

impl LogKind {
    const ALL: [LogKind; 4] = [LogKind::Conn, LogKind::Dns, LogKind::Http, LogKind::Ssl];

    fn name(self) -> &'static str {
        match self {
            LogKind::Conn => "conn",
            LogKind::Dns => "dns",
            LogKind::Http => "http",
            LogKind::Ssl => "ssl",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FlowRecordsParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Wireshark display filter scoping the analysis.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Logs to write (default all).
    #[serde(default)]
    pub kinds: Option<Vec<LogKind>>,
    /// zeek-json (default) or parquet.
    #[serde(default)]
    pub format: Option<FlowFormat>,
}

crate::file_args!(FlowRecordsParams);

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WrittenLog {
    /// conn, dns, http or ssl.
    pub log: String,
    pub file: String,
    pub rows: usize,
    pub size_bytes: u64,
    pub resource_uri: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FlowRecords {
    /// The new folder in PCAP_STORAGE_DIR.
    pub folder: String,
    pub path: String,
    pub format: String,
    pub logs: Vec<WrittenLog>,
    /// The first conn.log rows.
    pub sample: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq)]
pub enum FlowFormat {
    #[serde(rename = "zeek-json")]
    ZeekJson,
    #[serde(rename = "parquet")]
    Parquet,
}

impl FlowFormat {
    fn name(self) -> &'static str {
        match self {
            FlowFormat::ZeekJson => "zeek-json",
            FlowFormat::Parquet => "parquet",
        }
    }
}

/// A new file in the export's folder that refuses to grow past the bytes left of the
/// export budget (PCAP_MAX_EXPORT_MB), whichever format writes it.
struct Budgeted {
    file: std::io::BufWriter<std::fs::File>,
    left: u64,
    written: u64,
}

const OVER_BUDGET: &str = "PCAP_MAX_EXPORT_MB reached";

impl Write for Budgeted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(std::io::Error::other(OVER_BUDGET));
        }
        let n = self.file.write(buf)?;
        self.left -= n as u64;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn create(path: &std::path::Path, left: u64) -> std::io::Result<Budgeted> {
    Ok(Budgeted {
        file: std::io::BufWriter::new(crate::sandbox::create_private(path)?),
        left,
        written: 0,
    })
}

/// A log's rows into `dir/<kind>.log` (Zeek JSON lines) or `<kind>.parquet`, within
/// the bytes left of the export budget: (file, bytes, rows).
fn write_log<T: Serialize>(
    dir: &std::path::Path,
    kind: LogKind,
    format: FlowFormat,
    rows: &[T],
    budget: &mut u64,
) -> Result<(String, u64, usize), String> {
    let file = match format {
        FlowFormat::ZeekJson => format!("{}.log", kind.name()),
        FlowFormat::Parquet => format!("{}.parquet", kind.name()),
    };
    let failed = |e: String| {
        if e.contains(OVER_BUDGET) {
            format!(
                "the flow records pass PCAP_MAX_EXPORT_MB at {file}: narrow the export with a display filter, a time range or fewer kinds, or raise PCAP_MAX_EXPORT_MB"
            )
        } else {
            format!("writing {file} failed: {e}")
        }
    };
    let mut w = create(&dir.join(&file), *budget).map_err(|e| failed(e.to_string()))?;
    match format {
        FlowFormat::ZeekJson => {
            for r in rows {
                serde_json::to_writer(&mut w, r).map_err(|e| failed(e.to_string()))?;
                w.write_all(b"\n").map_err(|e| failed(e.to_string()))?;
            }
        }
        #[cfg(feature = "parquet")]
        FlowFormat::Parquet => {
            crate::parquet_out::write_records(rows, &mut w).map_err(failed)?;
        }
        #[cfg(not(feature = "parquet"))]
        FlowFormat::Parquet => {
            return Err("this build has no Parquet writer (built without the `parquet` feature): use format zeek-json".into());
        }
    }
    w.flush().map_err(|e| failed(e.to_string()))?;
    *budget -= w.written;
    Ok((file, w.written, rows.len()))
}

async fn flow_records(
    mut a: Analysis,
    p: FlowRecordsParams,
) -> Result<Report<FlowRecords>, String> {
    let format = p.format.unwrap_or(FlowFormat::ZeekJson);
    let mut kinds = p.kinds.clone().unwrap_or_else(|| LogKind::ALL.to_vec());
    kinds.sort();
    kinds.dedup();
    if kinds.is_empty() {
        return Err(
            "kinds is empty: name at least one of conn, dns, http, ssl, or omit it for all four"
                .into(),
        );
    }
    let tcp = a.part::<TcpModel>().await?;
    let flows = a.part::<Flows>().await?;
    let ftp = a
        .part::<crate::index::Rows<crate::model::conn::FtpDataChannel>>()
        .await?;
    let conns = Connections::build(&tcp, &flows, &ftp.0);
    // every part read before the folder exists: a failed pass leaves nothing behind
    let dns = if kinds.contains(&LogKind::Dns) {
        flowlog::dns_records(&conns, &a.part::<crate::index::Rows<DnsRow>>().await?.0)
    } else {
        Vec::new()
    };
    let http = if kinds.contains(&LogKind::Http) {
        flowlog::http_records(&conns, &a.part::<crate::index::Rows<HttpRow>>().await?.0)
    } else {
        Vec::new()
    };
    let ssl = if kinds.contains(&LogKind::Ssl) {
        flowlog::ssl_records(&conns, &*a.part::<TlsModel>().await?)
    } else {
        Vec::new()
    };
    let folder =
        crate::sandbox::generated_name(&a.file.display_name, crate::resources::FLOWS_FOLDER, "");
    let dir = a.engine.sandbox().create_output_dir(&folder)?;
    let mut budget = a.engine.cfg.max_export_bytes;
    let mut written = Vec::new();
    for k in &kinds {
        let done = match k {
            LogKind::Conn => write_log(&dir, *k, format, &conns.records, &mut budget),
            LogKind::Dns => write_log(&dir, *k, format, &dns, &mut budget),
            LogKind::Http => write_log(&dir, *k, format, &http, &mut budget),
            LogKind::Ssl => write_log(&dir, *k, format, &ssl, &mut budget),
        };
        match done {
            Ok(w) => written.push(WrittenLog {
                log: k.name().into(),
                resource_uri: format!("{}{folder}/{}", crate::resources::SCHEME, w.0),
                file: w.0,
                rows: w.2,
                size_bytes: w.1,
            }),
            Err(e) => {
                // a partial export is none
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        }
    }
    let mut by_proto: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &conns.records {
        *by_proto.entry(r.proto).or_default() += 1;
    }
    let mut findings = Vec::new();
    if flows.packets_not_kept > 0 {
        findings.push(Finding::new(
            Severity::Low,
            format!(
                "{} packets of flows past the first {} non-TCP flows are not in conn.log",
                thousands(flows.packets_not_kept),
                thousands(crate::model::conn::MAX_FLOWS as u64)
            ),
            "A flood of distinct UDP/ICMP flows (spoofed sources, a scan) filled the table; export a display-filtered or time-ranged scope for the rest",
            Evidence::default(),
        ));
    }
    let protos: Vec<String> = by_proto
        .iter()
        .map(|(p, n)| format!("{} {p}", thousands(*n as u64)))
        .collect();
    let counts: Vec<String> = written
        .iter()
        .map(|w| match w.log.as_str() {
            "conn" if !protos.is_empty() => {
                format!("{} conn ({})", thousands(w.rows as u64), protos.join(", "))
            }
            _ => format!("{} {}", thousands(w.rows as u64), w.log),
        })
        .collect();
    let summary = format!(
        "Wrote {} as {} into {folder} in PCAP_STORAGE_DIR.",
        counts.join(", "),
        match format {
            FlowFormat::ZeekJson => "Zeek JSON logs",
            FlowFormat::Parquet => "Parquet files with Zeek's columns",
        }
    );
    let sample = conns
        .records
        .iter()
        .take(3)
        .map(|r: &ConnRecord| serde_json::to_value(r).unwrap_or_default())
        .collect();
    let data = FlowRecords {
        path: dir.display().to_string(),
        folder,
        format: format.name().into(),
        logs: written,
        sample,
    };
    let span = tcp.span;
    a.report(summary, findings, data, span, None).await
}

#[tool_router(router = flows_router, vis = "pub(crate)")]
impl PcapServer {
    /// Writes connections and transactions as Zeek JSON logs (conn, dns, http, ssl;
    /// Community IDs) into a new folder in PCAP_STORAGE_DIR, for DuckDB, Spark or
    /// Zeek tooling.
    #[tool(
        name = "export_flow_records",
        annotations(
            title = "Export flow records (Zeek logs)",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn export_flow_records(
        &self,
        Parameters(p): Parameters<FlowRecordsParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<FlowRecords>>, String> {
        self.engine
            .analyze("export_flow_records", p, rc, flow_records)
            .await
    }
}
