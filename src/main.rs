//! pcap-analyzer-mcp-server: with no arguments an MCP server on stdio; with a command,
//! a CLI for people (`call`, `doctor`, `demo`, `tools`).

mod analysis;
mod capture;
mod chart;
mod cli;
mod config;
mod definitions;
mod engine;
mod fit;
mod index;
mod install;
mod jobs;
mod lru;
mod model;
#[cfg(feature = "parquet")]
mod parquet_out;
mod pcapfile;
mod prompts;
mod report;
mod resources;
mod sandbox;
mod schema;
mod secrets;
mod server;
mod split;
mod stdio;
mod timescope;
mod tools;
mod tshark;

use anyhow::Result;

#[cfg(test)]
#[global_allocator]
static ALLOC: index::heap::Counting = index::heap::Counting;
use rmcp::ServiceExt;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
pcap-analyzer-mcp-server: network capture analysis for AI assistants (MCP), built on tshark and dumpcap.

USAGE:
    pcap-analyzer-mcp-server                  serve MCP over stdio (what MCP clients run)
    pcap-analyzer-mcp-server call TOOL JSON   run one tool and print its result, e.g.
                                              call analyze_pcap_file '{\"pcap_file\":\"x.pcap\"}'
                                              (more TOOL JSON pairs: one server, one index)
    pcap-analyzer-mcp-server doctor           check tshark, dumpcap, capinfos, permissions, storage
    pcap-analyzer-mcp-server demo             a short investigation of a capture shipped with the binary
    pcap-analyzer-mcp-server tools [TOOL]     each tool's parameters: name, type, default, meaning
    pcap-analyzer-mcp-server tools --json     every tool's full input and output schemas
    pcap-analyzer-mcp-server tools --markdown the README's tool table
    pcap-analyzer-mcp-server install CLIENT   add this server to an MCP client's configuration (backup first):
                                              claude-desktop, claude-code, cursor, vscode, kiro, amazonq;
                                              --print shows the entry instead, --config FILE names the file
    pcap-analyzer-mcp-server --version

Configuration is by environment variable; `doctor` prints them all with their values.";

fn init_logging(serving: bool) {
    // FASTMCP_LOG_LEVEL is the seed's variable; RUST_LOG wins when both are set.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| {
            std::env::var("FASTMCP_LOG_LEVEL")
                .ok()
                .map(|v| v.to_ascii_lowercase())
        })
        .map(|v| if v == "warning" { "warn".into() } else { v })
        // people running a CLI command want its output, not the protocol chatter
        .unwrap_or_else(|| if serving { "info" } else { "warn" }.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Has glibc map every block of 2 MB or more on its own. By default the threshold
/// rises to the size of the largest mapped block freed (up to 32 MB), after which the
/// index's growing tables and each call's large temporaries come from the heap, where
/// they are copied as they grow and leave holes when freed: on the 1 GB bench mix the
/// server ended an investigation 30 MB higher (528 against 497 MB at the peak).
fn map_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator; a fixed threshold also
    // turns off its dynamic adjustment.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 2 << 20);
    }
}

#[tokio::main]
async fn main() {
    map_large_blocks();
    let args: Vec<String> = std::env::args().skip(1).collect();
    init_logging(matches!(
        args.first().map(String::as_str),
        None | Some("serve")
    ));
    let result = match args.first().map(String::as_str) {
        None | Some("serve") => serve().await,
        Some("call") => cli::call(&args[1..]).await,
        Some("doctor") => cli::doctor().await,
        Some("demo") => cli::demo().await,
        Some("tools") => cli::tools(&args[1..]),
        Some("install") => install::install(&args[1..]),
        Some("-V" | "--version") => {
            println!("pcap-analyzer-mcp-server {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command {other:?}\n\n{USAGE}")),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn serve() -> Result<()> {
    let cfg = config::Config::from_env()?;
    tracing::info!(
        storage = %cfg.storage_dir.display(),
        tshark = %cfg.tshark.display(),
        "pcap-analyzer-mcp-server {} starting on stdio",
        env!("CARGO_PKG_VERSION")
    );
    let max_request = cfg.max_request_bytes;
    let engine = engine::Engine::new(cfg, tools::INDEX_PARTS)?;
    let stdin = stdio::LimitedLines::new(tokio::io::stdin(), max_request);
    let service = server::PcapServer::new(engine.clone())
        .serve((stdin, tokio::io::stdout()))
        .await?;
    let ct = service.cancellation_token();
    let waiting = service.waiting();
    tokio::pin!(waiting);
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    #[cfg(unix)]
    let terminated = term.recv();
    #[cfg(not(unix))]
    let terminated = std::future::pending::<Option<()>>();
    tokio::select! {
        r = &mut waiting => { tracing::info!("client disconnected: {:?}", r.ok()); }
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted"); ct.cancel(); }
        _ = terminated => { tracing::info!("terminated"); ct.cancel(); }
    }
    // No dumpcap or tshark may outlive the server.
    engine.shutdown().await;
    // tokio reads stdin on a blocking thread that a still-open stdin never releases,
    // so returning would wait for it forever: leave now.
    std::process::exit(0)
}
