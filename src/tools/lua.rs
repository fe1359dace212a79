//! `run_lua_script`: one of the operator's Lua scripts, run inside tshark over a
//! capture in the sandbox. Off unless PCAP_LUA_DIR names a directory: a script runs
//! with the server's rights (tshark runs user scripts even as root), so only scripts
//! the operator put there run, by bare name, and their arguments cannot become options.

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::{Analysis, Span};
use crate::report::Report;
use crate::server::PcapServer;

/// Arguments a script may be given, and the longest one.
const MAX_ARGS: usize = 8;
const MAX_ARG_CHARS: usize = 512;
/// Output kept: lines and bytes.
const MAX_LINES: usize = 2000;
const MAX_OUTPUT_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LuaParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// The script's file name in PCAP_LUA_DIR, e.g. `http_hosts.lua`.
    pub script: String,
    /// Arguments the script reads as `...` (at most 8).
    #[serde(default)]
    pub args: Vec<String>,
    /// Wireshark display filter scoping the packets the script sees.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
}

crate::file_args!(LuaParams);

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LuaOutput {
    pub script: String,
    /// What the script printed, line by line.
    pub lines: Vec<String>,
    /// Lines or bytes left out past the output budget.
    pub truncated: bool,
}

/// The script's path: a bare `.lua` name of a regular file inside the directory,
/// which no link leads out of.
fn script_path(dir: &std::path::Path, name: &str) -> Result<std::path::PathBuf, String> {
    let bare = name.len() <= 128
        && name.ends_with(".lua")
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !bare {
        return Err(format!(
            "script {name:?} is not a script name: give the bare file name of a .lua file in PCAP_LUA_DIR (letters, digits, '.', '_', '-')"
        ));
    }
    let path = dir
        .join(name)
        .canonicalize()
        .map_err(|_| format!("no script {name:?} in PCAP_LUA_DIR ({})", dir.display()))?;
    if !path.starts_with(dir) || !path.is_file() {
        return Err(format!(
            "script {name:?} is not a file inside PCAP_LUA_DIR ({}): links out of it are not followed",
            dir.display()
        ));
    }
    Ok(path)
}

fn check_args(args: &[String]) -> Result<(), String> {
    if args.len() > MAX_ARGS {
        return Err(format!(
            "{} arguments; a script takes at most {MAX_ARGS}",
            args.len()
        ));
    }
    for a in args {
        if a.chars().count() > MAX_ARG_CHARS || a.chars().any(char::is_control) {
            return Err(format!(
                "script argument {:?} is not allowed: at most {MAX_ARG_CHARS} characters, no control characters",
                a.chars().take(40).collect::<String>()
            ));
        }
    }
    Ok(())
}

async fn run(mut a: Analysis, p: LuaParams) -> Result<Report<LuaOutput>, String> {
    let Some(dir) = a.engine.cfg.lua_dir.clone() else {
        return Err("Lua scripts are off: the operator turns them on by setting PCAP_LUA_DIR to a directory of vetted scripts (a script runs with the server's rights)".into());
    };
    let path = script_path(&dir, p.script.trim())?;
    check_args(&p.args)?;
    // each value is one argv element after `-X lua_scriptN:`, never an option
    let mut args: Vec<String> = vec![
        "-q".into(),
        "-X".into(),
        format!("lua_script:{}", path.display()),
    ];
    for (i, v) in p.args.iter().enumerate() {
        args.push("-X".into());
        args.push(format!("lua_script{}:{v}", i + 1));
    }
    let mut lines = Vec::new();
    let mut bytes = 0usize;
    let mut truncated = false;
    a.run_lines(None, &args, |l| {
        if lines.len() >= MAX_LINES || bytes + l.len() > MAX_OUTPUT_BYTES {
            truncated = true;
            return;
        }
        bytes += l.len() + 1;
        lines.push(l.to_string());
    })
    .await?;
    let summary = format!(
        "{} printed {} line(s){}.",
        p.script.trim(),
        lines.len(),
        if truncated {
            format!(
                " (cut at {MAX_LINES} lines / {} KB)",
                MAX_OUTPUT_BYTES / 1024
            )
        } else {
            String::new()
        }
    );
    let data = LuaOutput {
        script: p.script.trim().to_string(),
        lines,
        truncated,
    };
    a.report(summary, Vec::new(), data, Span::default(), None)
        .await
}

#[tool_router(router = lua_router, vis = "pub(crate)")]
impl PcapServer {
    /// Runs one of the operator's Lua scripts (PCAP_LUA_DIR; off unless set) inside
    /// tshark over a capture and returns what it printed, bounded.
    #[tool(
        name = "run_lua_script",
        annotations(
            title = "Run a Lua script",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn run_lua_script(
        &self,
        Parameters(p): Parameters<LuaParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<LuaOutput>>, String> {
        self.engine.analyze("run_lua_script", p, rc, run).await
    }
}
