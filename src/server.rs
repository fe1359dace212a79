//! The MCP server: assembles the tool routers of `src/tools/` into the toolsets the
//! operator enabled, and serves them over stdio.

use std::sync::Arc;

use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    CompleteRequestParams, CompleteResult, Implementation, ListResourceTemplatesResult,
    ListResourcesResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use rmcp::{ServerHandler, prompt_handler, tool_handler};

use crate::engine::Engine;

pub const INSTRUCTIONS: &str = "Network traffic analysis with Wireshark's tshark and dumpcap. \
Start with analyze_pcap_file on a capture (list_captured_files shows what is stored; start_packet_capture records new traffic). \
Every analysis returns a summary, findings with frame numbers and a ready Wireshark display filter, \
tables (total, shown, offset, and `more` saying how to page), and the tshark command lines used. Narrow any analysis with display_filter \
(Wireshark syntax). If a result says status=running, the capture is large: call the same tool again with the \
same arguments to get the finished answer. What each field of a tool's result means: read the resource pcap-schema://<tool>.";

#[derive(Clone)]
pub struct PcapServer {
    pub engine: Arc<Engine>,
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
}

impl PcapServer {
    pub fn new(engine: Arc<Engine>) -> Self {
        let cfg = engine.cfg.clone();
        let mut router = ToolRouter::new();
        for (set, make) in Self::toolsets() {
            if cfg.toolset_enabled(set) {
                router += make();
            }
        }
        for route in router.map.values_mut() {
            compact(&mut route.attr);
        }
        Self {
            engine,
            tool_router: router,
            prompt_router: Self::prompt_router(),
        }
    }

    /// Each toolset's router: the one declaration of which tool belongs to which set
    /// (PCAP_TOOLSETS, the README table).
    #[allow(clippy::type_complexity)]
    fn toolsets() -> Vec<(&'static str, fn() -> ToolRouter<Self>)> {
        vec![
            ("interfaces", Self::interfaces_router),
            ("capture", || Self::capture_router() + Self::files_router()),
            ("basic", || {
                Self::basic_router()
                    + Self::trust_router()
                    + Self::events_router()
                    + Self::host_router()
                    + Self::compare_router()
                    + Self::batch_router()
                    + Self::http_router()
                    + Self::timeline_router()
                    + Self::search_router()
            }),
            ("tcp", || Self::tcp_router() + Self::connections_router()),
            ("performance", Self::performance_router),
            ("tls", || Self::tls_router() + Self::quic_router()),
            ("advanced", || {
                Self::dns_router()
                    + Self::network_router()
                    + Self::expert_router()
                    + Self::anomalies_router()
                    + Self::topology_router()
                    + Self::threats_router()
            }),
            ("metrics", || {
                Self::metrics_router() + Self::bandwidth_router() + Self::quality_router()
            }),
            ("drilldown", || {
                Self::packets_router()
                    + Self::follow_router()
                    + Self::objects_router()
                    + Self::export_router()
                    + Self::flows_router()
                    + Self::lua_router()
            }),
        ]
    }

    /// Every tool this build offers with its toolset, whatever the selection.
    pub fn all_tools() -> Vec<(&'static str, Tool)> {
        let mut out = Vec::new();
        for (set, make) in Self::toolsets() {
            let mut tools = make().list_all();
            tools.sort_by(|a, b| a.name.cmp(&b.name));
            out.extend(tools.into_iter().map(|t| (set, t)));
        }
        out
    }
}

impl PcapServer {
    /// The input schema of `name`, a read-only analysis tool this server offers; an
    /// error that says why for any other name (unknown, or a tool that writes files or
    /// captures traffic: one call never starts a write on another's behalf).
    pub(crate) fn read_only_tool(
        &self,
        name: &str,
    ) -> Result<Arc<serde_json::Map<String, serde_json::Value>>, String> {
        let Some(tool) = self.tool_router.get(name) else {
            return Err(format!(
                "no tool is called {name:?} here (tools/list names them; PCAP_TOOLSETS may have left it out)"
            ));
        };
        let read_only = tool
            .annotations
            .as_ref()
            .and_then(|a| a.read_only_hint)
            .unwrap_or(false);
        if !read_only || name.starts_with("export_") {
            return Err(format!(
                "{name} writes files or captures traffic: only the read-only analysis tools can be run on another tool's behalf"
            ));
        }
        Ok(tool.input_schema.clone())
    }

    /// Runs one of this server's read-only analysis tools in process, as a client's
    /// call would (same validation, same deadline), for a tool that reports on another's
    /// result (export_result). Writing tools and live capture are refused: one call
    /// never starts another write.
    pub(crate) async fn call_read_only(
        &self,
        name: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
        rc: RequestContext<RoleServer>,
    ) -> Result<serde_json::Value, String> {
        self.read_only_tool(name)?;
        let request =
            rmcp::model::CallToolRequestParams::new(name.to_string()).with_arguments(arguments);
        let ctx = rmcp::handler::server::tool::ToolCallContext::new(self, request, rc);
        let response = self
            .tool_router
            .call(ctx)
            .await
            .map_err(|e| format!("{name}: {}", e.message))?;
        let rmcp::model::CallToolResponse::Complete(result) = response else {
            return Err(format!("{name} did not complete in one call"));
        };
        if result.is_error == Some(true) {
            let text = result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                .collect::<Vec<_>>()
                .join(" ");
            return Err(format!("{name} failed: {text}"));
        }
        result
            .structured_content
            .ok_or_else(|| format!("{name} returned no structured result"))
    }
}

/// The tool as tools/list sends it (see `crate::schema`).
fn compact(tool: &mut Tool) {
    tool.input_schema = Arc::new(crate::schema::compact_input(&tool.input_schema));
    if let Some(out) = &tool.output_schema {
        tool.output_schema = Some(Arc::new(crate::schema::compact_output(out)));
    }
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for PcapServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .enable_completions()
                .build(),
        )
        .with_server_info(
            Implementation::new("pcap-analyzer-mcp-server", env!("CARGO_PKG_VERSION"))
                .with_title("PCAP Analyzer (tshark/dumpcap)"),
        )
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let cursor = request.as_ref().and_then(|r| r.cursor.as_deref());
        self.capture_resources(cursor).await
    }

    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(self.capture_templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.read_capture(&request.uri).await.map(Into::into)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        self.complete_capture(&request).await
    }
}
