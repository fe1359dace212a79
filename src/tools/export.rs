//! `export_result`: any read-only analysis' result saved into storage as JSON, CSV (its
//! main table) or XML; `export_packets`: a scope's packets as tshark writes them (JSON,
//! PDML, Elasticsearch bulk, or CSV of chosen fields). Both return the file as a
//! resource, never overwrite, and write only into PCAP_STORAGE_DIR.

use std::io::Write;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::{Analysis, Span};
use crate::report::{Report, thousands};
use crate::server::PcapServer;

/// Fields a CSV packet export may ask for.
const MAX_CSV_FIELDS: usize = 40;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum ResultFormat {
    Json,
    Csv,
    Xml,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExportResultParams {
    /// The analysis tool to run, e.g. `analyze_tcp_retransmissions`.
    pub tool: String,
    /// Its arguments, as for a direct call (with its `pcap_file`).
    pub arguments: Map<String, Value>,
    /// json (the whole result), csv (one table) or xml. Default json.
    #[serde(default)]
    pub format: Option<ResultFormat>,
    /// For csv: the result's table to write (e.g. `streams`); default the largest.
    #[serde(default)]
    pub table: Option<String>,
    /// New file's name in PCAP_STORAGE_DIR (never overwritten); default generated.
    #[serde(default)]
    pub output_file: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExportedFile {
    pub output_file: String,
    pub path: String,
    /// The file as an MCP resource (resources/read returns it).
    pub resource_uri: String,
    pub format: String,
    pub size_bytes: u64,
    /// For csv: the table written and its rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<usize>,
}

/// The result's tables: a paged `Table` (an object with `rows`) or a plain list of
/// objects, by field name.
fn tables(result: &Map<String, Value>) -> Vec<(&str, &Vec<Value>)> {
    result
        .iter()
        .filter_map(|(k, v)| {
            let rows = match v {
                Value::Object(o) => o.get("rows")?.as_array()?,
                Value::Array(a) => a,
                _ => return None,
            };
            (k != "findings" && k != "tshark_commands" && rows.iter().all(Value::is_object))
                .then_some((k.as_str(), rows))
        })
        .collect()
}

/// One CSV cell. Text that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`
/// first) is prefixed with `'`: a capture's strings are attacker-controlled.
fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) => {
            if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                format!("'{s}")
            } else {
                s.clone()
            }
        }
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(";"),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// A table as CSV: a header of every column any row has (in order of first
/// appearance), then a line per row.
pub fn to_csv(rows: &[Value]) -> String {
    let mut cols: Vec<&str> = Vec::new();
    for r in rows {
        for k in r.as_object().into_iter().flat_map(|o| o.keys()) {
            if !cols.contains(&k.as_str()) {
                cols.push(k);
            }
        }
    }
    let mut out = cols
        .iter()
        .map(|c| cell(&Value::String(c.to_string())))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for r in rows {
        let line: Vec<String> = cols
            .iter()
            .map(|c| cell(r.get(*c).unwrap_or(&Value::Null)))
            .collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// An element name from a JSON key: the key when it is a plain XML name, else `field`
/// with the key as its `name` attribute.
fn xml_open(key: &str) -> (String, String) {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        && !key.to_ascii_lowercase().starts_with("xml");
    if plain {
        (format!("<{key}>"), format!("</{key}>"))
    } else {
        (
            format!("<field name=\"{}\">", xml_escape(key)),
            "</field>".to_string(),
        )
    }
}

fn xml_value(key: &str, v: &Value, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    let (open, close) = xml_open(key);
    match v {
        Value::Object(o) => {
            out.push_str(&format!("{pad}{open}\n"));
            for (k, x) in o {
                xml_value(k, x, depth + 1, out);
            }
            out.push_str(&format!("{pad}{close}\n"));
        }
        Value::Array(a) => {
            out.push_str(&format!("{pad}{open}\n"));
            for x in a {
                xml_value("item", x, depth + 1, out);
            }
            out.push_str(&format!("{pad}{close}\n"));
        }
        Value::Null => out.push_str(&format!("{pad}{open}{close}\n")),
        Value::String(s) => out.push_str(&format!("{pad}{open}{}{close}\n", xml_escape(s))),
        other => out.push_str(&format!("{pad}{open}{other}{close}\n")),
    }
}

/// The whole result as XML under `<result tool="...">`.
pub fn to_xml(tool: &str, result: &Map<String, Value>) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<result tool=\"{}\">\n",
        xml_escape(tool)
    );
    for (k, v) in result {
        xml_value(k, v, 1, &mut out);
    }
    out.push_str("</result>\n");
    out
}

impl PcapServer {
    async fn export_result_impl(
        &self,
        p: ExportResultParams,
        rc: RequestContext<RoleServer>,
    ) -> Result<Report<ExportedFile>, String> {
        let format = p.format.unwrap_or(ResultFormat::Json);
        let tool = p.tool.trim().to_string();
        let pcap = p
            .arguments
            .get("pcap_file")
            .and_then(Value::as_str)
            .unwrap_or("result")
            .to_string();
        let result = self.call_read_only(&tool, p.arguments, rc).await?;
        let Value::Object(result) = result else {
            return Err(format!("{tool} returned no object to export"));
        };
        if result.get("status").and_then(Value::as_str) == Some("running") {
            return Err(format!(
                "{tool} is still running on this capture (it continues in the background): call export_result again with the same arguments to save the finished result"
            ));
        }
        let (text, table, rows, ext) = match format {
            ResultFormat::Json => (
                serde_json::to_string_pretty(&result).map_err(|e| e.to_string())? + "\n",
                None,
                None,
                "json",
            ),
            ResultFormat::Xml => (to_xml(&tool, &result), None, None, "xml"),
            ResultFormat::Csv => {
                let all = tables(&result);
                let chosen = match &p.table {
                    Some(t) => all.iter().find(|(k, _)| k == t).copied().ok_or_else(|| {
                        format!(
                            "{tool}'s result has no table {t:?}; its tables: {}",
                            all.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                        )
                    })?,
                    None => all
                        .iter()
                        .copied()
                        .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(a.0)))
                        .ok_or_else(|| {
                            format!("{tool}'s result has no table to write as CSV: use json or xml")
                        })?,
                };
                (
                    to_csv(chosen.1),
                    Some(chosen.0.to_string()),
                    Some(chosen.1.len()),
                    "csv",
                )
            }
        };
        let name = match &p.output_file {
            Some(n) => n.trim().to_string(),
            None => crate::sandbox::generated_name(&pcap, &format!("-{tool}-"), &format!(".{ext}")),
        };
        let (mut f, path) = self.engine.sandbox().create_output(&name)?;
        if let Err(e) = f.write_all(text.as_bytes()) {
            let _ = std::fs::remove_file(&path);
            return Err(format!("cannot write {name}: {e}"));
        }
        let size = text.len() as u64;
        let summary = format!(
            "Saved {tool}'s result as {ext}{} to {name} in PCAP_STORAGE_DIR ({} bytes).",
            table
                .as_ref()
                .map(|t| format!(" (table {t}, {} rows)", rows.unwrap_or(0)))
                .unwrap_or_default(),
            thousands(size)
        );
        let data = ExportedFile {
            resource_uri: format!("pcap://{name}"),
            output_file: name,
            path: path.display().to_string(),
            format: ext.into(),
            size_bytes: size,
            table,
            rows,
        };
        // the export's envelope describes the capture the exported result describes
        let capture = result
            .get("capture")
            .cloned()
            .and_then(|c| serde_json::from_value(c).ok())
            .unwrap_or_default();
        let commands = result
            .get("tshark_commands")
            .cloned()
            .and_then(|c| serde_json::from_value(c).ok())
            .unwrap_or_default();
        Ok(Report::complete(
            summary,
            Vec::new(),
            data,
            capture,
            crate::report::Scope {
                note: Some(format!("the result of {tool}")),
                ..Default::default()
            },
            commands,
        ))
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum PacketFormat {
    Json,
    Pdml,
    Ek,
    Csv,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExportPacketsParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Wireshark display filter selecting the packets.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// json (tshark -T json), pdml (XML), ek (Elasticsearch bulk) or csv. Default json.
    #[serde(default)]
    pub format: Option<PacketFormat>,
    /// For csv: the fields (columns), e.g. `ip.src`, `tcp.stream`; default a summary.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// New file's name in PCAP_STORAGE_DIR (never overwritten); default generated.
    #[serde(default)]
    pub output_file: Option<String>,
}

crate::file_args!(ExportPacketsParams);

const CSV_DEFAULT_FIELDS: [&str; 9] = [
    "frame.number",
    "frame.time_epoch",
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "_ws.col.Protocol",
    "frame.len",
    "_ws.col.Info",
];

async fn export_packets_run(
    mut a: Analysis,
    p: ExportPacketsParams,
) -> Result<Report<ExportedFile>, String> {
    let format = p.format.unwrap_or(PacketFormat::Json);
    let (mut args, ext): (Vec<String>, &str) = match format {
        PacketFormat::Json => (vec!["-T".into(), "json".into()], "json"),
        PacketFormat::Pdml => (vec!["-T".into(), "pdml".into()], "pdml.xml"),
        PacketFormat::Ek => (vec!["-T".into(), "ek".into()], "ek.ndjson"),
        PacketFormat::Csv => (
            [
                "-T",
                "fields",
                "-E",
                "header=y",
                "-E",
                "separator=,",
                "-E",
                "quote=d",
                "-E",
                "occurrence=a",
            ]
            .map(String::from)
            .to_vec(),
            "csv",
        ),
    };
    if format == PacketFormat::Csv {
        let fields: Vec<String> = match &p.fields {
            Some(f) if !f.is_empty() => f.clone(),
            _ => CSV_DEFAULT_FIELDS.map(String::from).to_vec(),
        };
        for f in &fields {
            args.push("-e".into());
            args.push(f.clone());
        }
    }
    let name = match &p.output_file {
        Some(n) => n.trim().to_string(),
        None => {
            crate::sandbox::generated_name(&a.file.display_name, "-packets-", &format!(".{ext}"))
        }
    };
    let (out, path) = a.engine.sandbox().create_output(&name)?;
    // PCAP_MAX_EXPORT_MB bounds it (PDML runs to kilobytes per packet)
    let limit = a.engine.cfg.max_export_bytes;
    let size = match a.run_to_file(&args, out, limit).await {
        Ok(n) => n,
        Err(e) => {
            // the file is ours (created O_EXCL just now): a partial export is none
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let summary = format!(
        "Wrote the packets as {ext} to {name} in PCAP_STORAGE_DIR ({} bytes).",
        thousands(size)
    );
    let data = ExportedFile {
        resource_uri: format!("pcap://{name}"),
        output_file: name,
        path: path.display().to_string(),
        format: ext.into(),
        size_bytes: size,
        table: None,
        rows: None,
    };
    let span = Span::default();
    a.report(summary, Vec::new(), data, span, None).await
}

#[tool_router(router = export_router, vis = "pub(crate)")]
impl PcapServer {
    /// Saves a read-only analysis tool's result into PCAP_STORAGE_DIR as JSON, CSV (one
    /// table, default the largest; pass `limit` in arguments for more rows) or XML,
    /// and returns it as a resource: for a ticket, a spreadsheet or another tool.
    #[tool(
        name = "export_result",
        annotations(
            title = "Export a result",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn export_result(
        &self,
        Parameters(p): Parameters<ExportResultParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<ExportedFile>>, String> {
        self.export_result_impl(p, rc).await.map(Json)
    }

    /// Writes a scope's packets into PCAP_STORAGE_DIR as tshark's JSON, PDML, ek or CSV
    /// of chosen fields, returned as a resource. Payloads are written as captured.
    #[tool(
        name = "export_packets",
        annotations(
            title = "Export packets",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn export_packets(
        &self,
        Parameters(p): Parameters<ExportPacketsParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<ExportedFile>>, String> {
        if let Some(f) = p.fields.as_ref().filter(|f| !f.is_empty()) {
            if f.len() > MAX_CSV_FIELDS {
                return Err(format!(
                    "{} fields asked for; at most {MAX_CSV_FIELDS}: export in two files",
                    f.len()
                ));
            }
            self.engine.tshark.check_fields(f).await?;
        }
        self.engine
            .analyze("export_packets", p, rc, export_packets_run)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let rows = vec![
            json!({"a": "x,y", "b": 1, "c": ["p", "q"]}),
            json!({"a": "=cmd|' /C calc'!A0", "d": null, "b": -2}),
        ];
        assert_eq!(
            to_csv(&rows),
            "a,b,c,d\n\"x,y\",1,p;q,\n'=cmd|' /C calc'!A0,-2,,\n"
        );
    }

    #[test]
    fn xml_escapes_text_and_odd_keys() {
        let v = json!({"summary": "a<b & \"c\"", "9lives": [1, null]});
        let x = to_xml("t", v.as_object().unwrap());
        assert!(
            x.contains("<summary>a&lt;b &amp; &quot;c&quot;</summary>"),
            "{x}"
        );
        assert!(x.contains("<field name=\"9lives\">"), "{x}");
        assert!(
            x.contains("<item>1</item>") && x.contains("<item></item>"),
            "{x}"
        );
    }
}
