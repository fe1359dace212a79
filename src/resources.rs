//! MCP resources: every capture in PCAP_STORAGE_DIR is a resource `pcap://<name>` whose
//! contents are its facts as JSON (what capinfos reports, from our own record reader).
//! Captures in the allowed directories are reachable through the template
//! `pcap://{name}` with their path, never listed. Other files the tools wrote (I/O graph
//! pictures, exported objects in their folder) are read as their bytes. Reads go through
//! the same sandbox as every tool's pcap_file.

use rmcp::ErrorData;
use rmcp::model::{
    CompleteRequestParams, CompleteResult, CompletionInfo, ListResourceTemplatesResult,
    ListResourcesResult, ReadResourceResult, Reference, Resource, ResourceContents,
    ResourceTemplate,
};
use serde::Serialize;

use crate::pcapfile::CaptureSummary;
use crate::report::rfc3339;
use crate::server::PcapServer;

pub const SCHEME: &str = "pcap://";
pub const TEMPLATE: &str = "pcap://{name}";
/// A tool's full schemas, with what each field of its result means (tools/list sends
/// them compact: see `crate::schema`).
pub const SCHEMA_SCHEME: &str = "pcap-schema://";
pub const SCHEMA_TEMPLATE: &str = "pcap-schema://{tool}";
/// What the name of every folder export_objects creates contains.
pub const OBJECT_FOLDER: &str = "-objects-";
/// The folder `export_flow_records` writes its logs into.
pub const FLOWS_FOLDER: &str = "-flows-";
/// The largest file resources/read serves as bytes (base64 makes it a third larger).
const MAX_BLOB_BYTES: u64 = 8 << 20;
/// Resources per page of resources/list.
const PAGE: usize = 100;

/// What reading a capture resource returns.
#[derive(Serialize)]
struct CaptureResource {
    name: String,
    format: String,
    size_bytes: u64,
    #[serde(flatten)]
    facts: CaptureSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_packet_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_packet_time: Option<String>,
    /// How to analyse it.
    next_step: String,
}

/// The capture name a `pcap://` URI names.
fn name_of(uri: &str) -> Result<&str, ErrorData> {
    uri.strip_prefix(SCHEME)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ErrorData::invalid_params(
                format!("{uri:?} is not a capture resource: capture URIs are pcap://<name in PCAP_STORAGE_DIR or path in an allowed directory>"),
                None,
            )
        })
}

impl PcapServer {
    /// One page of the captures in storage as resources; the cursor is the offset.
    pub async fn capture_resources(
        &self,
        cursor: Option<&str>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let offset: usize = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
        let sandbox = self.engine.sandbox();
        let (entries, _links) = sandbox
            .storage_entries()
            .map_err(|e| ErrorData::internal_error(e, None))?;
        let mut captures = entries
            .into_iter()
            .filter_map(|e| sandbox.open_capture(&e.name).ok().map(|f| (e, f)));
        let page: Vec<Resource> = captures
            .by_ref()
            .skip(offset)
            .take(PAGE)
            .map(|(e, f)| {
                let mime = match f.format {
                    crate::sandbox::CaptureFormat::Pcap => "application/vnd.tcpdump.pcap",
                    crate::sandbox::CaptureFormat::Pcapng => "application/x-pcapng",
                };
                Resource::new(format!("{SCHEME}{}", e.name), e.name.clone())
                    .with_description(format!(
                        "Capture in PCAP_STORAGE_DIR; reading it gives its facts (packets, span, link type). Analyse it with pcap_file = {:?}",
                        e.name
                    ))
                    .with_mime_type(mime)
                    .with_size(e.size)
            })
            .collect();
        let more = captures.next().is_some();
        let shown = page.len();
        let mut r = ListResourcesResult::with_all_items(page);
        if more {
            r.next_cursor = Some((offset + shown).to_string());
        }
        Ok(r)
    }

    pub fn capture_templates(&self) -> ListResourceTemplatesResult {
        ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(TEMPLATE, "capture")
                .with_title("A capture file")
                .with_description("A capture by its name in PCAP_STORAGE_DIR or its path inside an allowed directory (PCAP_ALLOWED_DIRS); reading it gives its facts as JSON")
                .with_mime_type("application/json"),
            ResourceTemplate::new(SCHEMA_TEMPLATE, "tool schema")
                .with_title("A tool's full schemas")
                .with_description("A tool's input and output schemas in full, with the meaning of every field of its result (tools/list sends them compact)")
                .with_mime_type("application/schema+json"),
        ])
    }

    /// A capture's facts, through the sandbox (the same rules as any pcap_file); a
    /// PNG the I/O graph saved, as the picture.
    pub async fn read_capture(&self, uri: &str) -> Result<ReadResourceResult, ErrorData> {
        if let Some(tool) = uri.strip_prefix(SCHEMA_SCHEME) {
            return read_schema(uri, tool);
        }
        let name = name_of(uri)?;
        let (opened, meta) = self
            .engine
            .sandbox()
            .open_file(name, "resource")
            .map_err(|e| ErrorData::resource_not_found(e, None))?;
        let is_capture = opened
            .reopen()
            .ok()
            .and_then(|f| crate::sandbox::format_of(&f))
            .is_some();
        if !is_capture {
            return self.read_written(uri, name, &opened, meta.len());
        }
        let file = self
            .engine
            .sandbox()
            .open_capture(name)
            .map_err(|e| ErrorData::resource_not_found(e, None))?;
        let facts = self
            .engine
            .summary(&file)
            .await
            .map_err(|e| ErrorData::internal_error(e, None))?;
        let body = CaptureResource {
            name: name.to_string(),
            format: format!("{:?}", file.format).to_lowercase(),
            size_bytes: file.size,
            first_packet_time: facts.first_epoch.map(rfc3339),
            last_packet_time: facts.last_epoch.map(rfc3339),
            facts: (*facts).clone(),
            next_step: format!("analyze_pcap_file with pcap_file = {name:?}"),
        };
        let text = serde_json::to_string_pretty(&body)
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, uri).with_mime_type("application/json"),
        ]))
    }

    /// Completes the template's `name` with the captures in storage it starts.
    pub async fn complete_capture(
        &self,
        req: &CompleteRequestParams,
    ) -> Result<CompleteResult, ErrorData> {
        let values = match &req.r#ref {
            Reference::Resource(r) if r.uri == TEMPLATE && req.argument.name == "name" => {
                let sandbox = self.engine.sandbox();
                let (entries, _) = sandbox
                    .storage_entries()
                    .map_err(|e| ErrorData::internal_error(e, None))?;
                let mut v: Vec<String> = entries
                    .into_iter()
                    .filter(|e| e.name.starts_with(&req.argument.value))
                    .filter(|e| sandbox.open_capture(&e.name).is_ok())
                    .map(|e| e.name)
                    .take(CompletionInfo::MAX_VALUES)
                    .collect();
                v.sort();
                v
            }
            _ => Vec::new(),
        };
        let info = CompletionInfo::new(values).map_err(|e| ErrorData::internal_error(e, None))?;
        Ok(CompleteResult::new(info))
    }
}

impl PcapServer {
    /// A file this server wrote that is not a capture, as its bytes: a picture in
    /// storage, or an object in a folder export_objects created. Nothing else: the
    /// allowed directories may hold files that are not the client's to read.
    fn read_written(
        &self,
        uri: &str,
        name: &str,
        opened: &crate::sandbox::OpenedFile,
        size: u64,
    ) -> Result<ReadResourceResult, ErrorData> {
        let storage = &self.engine.cfg.storage_dir;
        let parts: Vec<String> = opened
            .path
            .strip_prefix(storage)
            .map(|rel| {
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        // a picture at the top of storage, or anything in an export's folder
        let picture = parts.len() == 1;
        let object = parts.len() == 2
            && (parts[0].contains(crate::resources::OBJECT_FOLDER)
                || parts[0].contains(crate::resources::FLOWS_FOLDER));
        let refused = || {
            ErrorData::invalid_params(
                format!(
                    "{name} is neither a capture nor a file this server wrote (an I/O graph picture, an exported object, a flow log)"
                ),
                None,
            )
        };
        if !picture && !object {
            return Err(refused());
        }
        let (bytes, mime) = read_bytes(name, opened, size)?;
        if picture && mime != Some("image/png") {
            return Err(refused());
        }
        Ok(ReadResourceResult::new(vec![contents(bytes, mime, uri)]))
    }
}

/// A file's bytes (at most MAX_BLOB_BYTES) and the type its first bytes carry.
fn read_bytes(
    name: &str,
    opened: &crate::sandbox::OpenedFile,
    size: u64,
) -> Result<(Vec<u8>, Option<&'static str>), ErrorData> {
    use std::io::Read;
    if size > MAX_BLOB_BYTES {
        return Err(ErrorData::invalid_params(
            format!(
                "{name} is {size} bytes, more than the {MAX_BLOB_BYTES} bytes a resource read returns; read it from PCAP_STORAGE_DIR directly"
            ),
            None,
        ));
    }
    let mut bytes = Vec::new();
    opened
        .reopen()
        .and_then(|f| f.take(MAX_BLOB_BYTES).read_to_end(&mut bytes))
        .map_err(|e| ErrorData::internal_error(format!("cannot read {name}: {e}"), None))?;
    let mime = crate::analysis::objects::sniff_mime(&bytes[..bytes.len().min(512)]);
    Ok((bytes, mime))
}

/// Text as text, anything else as a blob.
fn contents(bytes: Vec<u8>, mime: Option<&'static str>, uri: &str) -> ResourceContents {
    use base64::Engine as _;
    let textual = mime.is_some_and(|m| {
        m.starts_with("text/")
            || m.starts_with("application/json")
            || m.starts_with("application/xml")
    });
    let c = match String::from_utf8(bytes) {
        Ok(text) if textual => ResourceContents::text(text, uri),
        Ok(text) => ResourceContents::blob(
            base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
            uri,
        ),
        Err(e) => ResourceContents::blob(
            base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
            uri,
        ),
    };
    c.with_mime_type(mime.unwrap_or("application/octet-stream"))
}

/// `pcap-schema://<tool>`: the tool's schemas as the code declares them.
fn read_schema(uri: &str, tool: &str) -> Result<ReadResourceResult, ErrorData> {
    let (set, t) = PcapServer::all_tools()
        .into_iter()
        .find(|(_, t)| t.name == tool)
        .ok_or_else(|| {
            ErrorData::resource_not_found(
                format!("no tool is called {tool:?}: tools/list names them (URI: pcap-schema://<tool name>)"),
                None,
            )
        })?;
    let body = serde_json::json!({
        "name": t.name,
        "toolset": set,
        "description": t.description,
        "inputSchema": t.input_schema,
        "outputSchema": t.output_schema,
    });
    let text = serde_json::to_string_pretty(&body)
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    Ok(ReadResourceResult::new(vec![
        ResourceContents::text(text, uri).with_mime_type("application/schema+json"),
    ]))
}
