//! Operator configuration, read once from the environment.
//!
//! The operator (whoever writes the MCP client's config) is trusted; everything here
//! comes from them, never from tool arguments.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Every environment variable the server reads, with its default, for the README,
/// `doctor` and the test that keeps the two in step.
pub const ENV_VARS: &[(&str, &str, &str)] = &[
    (
        "PCAP_STORAGE_DIR",
        "./pcap_storage",
        "Where captures are written and where bare file names are looked up. Created when missing.",
    ),
    (
        "PCAP_ALLOWED_DIRS",
        "(none)",
        "Extra directories whose captures may be read, separated by ':' (';' on Windows).",
    ),
    (
        "MAX_CAPTURE_DURATION",
        "3600",
        "Longest live capture a client may ask for, in seconds.",
    ),
    (
        "WIRESHARK_PATH",
        "(PATH)",
        "The tshark binary, or the directory holding tshark, dumpcap and capinfos.",
    ),
    (
        "PCAP_TLS_KEYLOG_FILE",
        "(none)",
        "A TLS key log (SSLKEYLOGFILE format) inside the allowed directories: every tool then sees inside TLS.",
    ),
    (
        "PCAP_TOOLSETS",
        "all",
        "Comma-separated toolsets to expose (default all): interfaces, capture, basic, tcp, tls, performance, advanced, metrics, drilldown; the Tools table below gives each tool's toolset.",
    ),
    (
        "PCAP_TSHARK_TIMEOUT",
        "600",
        "Seconds a single tshark run may take before it is killed.",
    ),
    (
        "PCAP_CALL_DEADLINE",
        "45",
        "Seconds a tool call waits before answering 'still running, call again'; the analysis continues in the background.",
    ),
    (
        "PCAP_MAX_TSHARK",
        "2",
        "How many tshark processes may run at once.",
    ),
    (
        "PCAP_WORKERS",
        "(cores)",
        "How many tsharks one capture's index pass may be split across, by flow (at most PCAP_MAX_TSHARK); 1 disables the split.",
    ),
    (
        "PCAP_SPLIT_MIN_MB",
        "64",
        "Smallest capture, in MB, whose index pass is split across PCAP_WORKERS tsharks; smaller ones are read by one.",
    ),
    (
        "PCAP_MAX_CAPTURES",
        "4",
        "How many live captures may run at once.",
    ),
    (
        "PCAP_SEARCH_TIMEOUT",
        "30",
        "Seconds a search_packet_content pass may take (a pathological regex is stopped and reported).",
    ),
    (
        "PCAP_CHILD_MEMORY_MB",
        "4096",
        "Address-space ceiling of every tshark child in MB (at least 1024: an idle tshark maps ~400 MB); 0 disables it.",
    ),
    (
        "PCAP_MAX_EXPORT_MB",
        "256",
        "Most bytes export_objects and export_packets may write for one call (export_objects: each object, and all of them together), in MB.",
    ),
    (
        "PCAP_CACHE_MB",
        "256",
        "Memory the cached capture indexes may hold, in MB (each is one pass over one capture and scope); least recently used ones are dropped beyond it.",
    ),
    (
        "PCAP_MAX_REQUEST_BYTES",
        "4194304",
        "Largest JSON-RPC message accepted on stdin; a longer one is answered with an error and skipped.",
    ),
    (
        "PCAP_LUA_DIR",
        "(off)",
        "A directory of Lua scripts run_lua_script may run (by bare name) inside tshark. Off unless set: a script runs with the server's rights.",
    ),
    (
        "PCAP_NAME_RESOLUTION",
        "off",
        "Set to 'on' to let tshark resolve names (slow; sends DNS queries about captured addresses).",
    ),
    (
        "FASTMCP_LOG_LEVEL / RUST_LOG",
        "info",
        "Log level (error, warn, info, debug, trace). Logs go to stderr only.",
    ),
];

#[derive(Debug, Clone)]
pub struct Config {
    pub storage_dir: PathBuf,
    pub allowed_dirs: Vec<PathBuf>,
    pub max_capture_duration: u64,
    pub tshark: PathBuf,
    pub dumpcap: Option<PathBuf>,
    /// coreutils' stdbuf, when present: runs tshark with a 1 MiB stdout buffer (see
    /// `tshark::STDOUT_BUFFER`).
    pub stdbuf: Option<PathBuf>,
    pub toolsets: Vec<String>,
    pub tshark_timeout: Duration,
    pub call_deadline: Duration,
    pub max_tshark: usize,
    /// How many tsharks one index pass may split a capture across (see `split`).
    pub workers: usize,
    /// The smallest capture whose index pass is split.
    pub split_min_bytes: u64,
    pub max_captures: usize,
    pub name_resolution: bool,
    pub search_timeout: Duration,
    /// RLIMIT_AS of every tshark child; 0 = none.
    pub child_memory_bytes: u64,
    pub cache_bytes: usize,
    /// The most export_objects writes in one call: each object and their sum.
    pub max_export_bytes: u64,
    pub max_request_bytes: usize,
    /// Operator's TLS key log; validated by the sandbox when used.
    pub tls_keylog_file: Option<String>,
    /// The operator's directory of Lua scripts (canonical); None: Lua is off.
    pub lua_dir: Option<PathBuf>,
}

impl Config {
    /// Reads the environment. Fails only when tshark cannot be found at all, because
    /// nothing the server offers works without it.
    pub fn from_env() -> Result<Self> {
        let storage_dir = PathBuf::from(env_or("PCAP_STORAGE_DIR", "./pcap_storage"));
        std::fs::create_dir_all(&storage_dir).with_context(|| {
            format!(
                "cannot create PCAP_STORAGE_DIR {}; set PCAP_STORAGE_DIR to a writable directory",
                storage_dir.display()
            )
        })?;
        let storage_dir = storage_dir.canonicalize()?;
        let allowed_dirs = std::env::var_os("PCAP_ALLOWED_DIRS")
            .map(|v| {
                std::env::split_paths(&v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .filter_map(|p| match p.canonicalize() {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::warn!("ignoring PCAP_ALLOWED_DIRS entry {}: {e}", p.display());
                            None
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (tshark, dumpcap, _capinfos) = locate_wireshark()?;
        let toolsets = env_or("PCAP_TOOLSETS", "all")
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(Self {
            storage_dir,
            allowed_dirs,
            max_capture_duration: parse_env("MAX_CAPTURE_DURATION", 3600)?,
            tshark,
            dumpcap,
            // GNU stdbuf works by LD_PRELOAD, which only glibc-style loaders honour
            stdbuf: if cfg!(target_os = "linux") {
                which::which("stdbuf").ok()
            } else {
                None
            },
            toolsets,
            tshark_timeout: Duration::from_secs(parse_env("PCAP_TSHARK_TIMEOUT", 600)?),
            call_deadline: Duration::from_secs(parse_env("PCAP_CALL_DEADLINE", 45)?),
            max_tshark: parse_env("PCAP_MAX_TSHARK", 2usize)?.max(1),
            workers: parse_env(
                "PCAP_WORKERS",
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )?
            .max(1),
            split_min_bytes: parse_env("PCAP_SPLIT_MIN_MB", 64u64)?.saturating_mul(1024 * 1024),
            max_captures: parse_env("PCAP_MAX_CAPTURES", 4usize)?.max(1),
            search_timeout: Duration::from_secs(parse_env("PCAP_SEARCH_TIMEOUT", 30u64)?.max(1)),
            child_memory_bytes: match parse_env("PCAP_CHILD_MEMORY_MB", 4096u64)? {
                0 => 0,
                // below ~1 GB tshark cannot even start (it maps ~400 MB idle)
                mb => mb.max(1024) * 1024 * 1024,
            },
            cache_bytes: parse_env("PCAP_CACHE_MB", 256usize)?.max(16) * 1024 * 1024,
            max_export_bytes: parse_env("PCAP_MAX_EXPORT_MB", 256u64)?.max(1) * 1024 * 1024,
            max_request_bytes: parse_env("PCAP_MAX_REQUEST_BYTES", 4usize << 20)?.max(64 * 1024),
            tls_keylog_file: std::env::var("PCAP_TLS_KEYLOG_FILE")
                .ok()
                .filter(|v| !v.trim().is_empty()),
            lua_dir: match std::env::var("PCAP_LUA_DIR").ok().filter(|v| !v.trim().is_empty()) {
                None => None,
                Some(d) => Some(
                    PathBuf::from(&d)
                        .canonicalize()
                        .ok()
                        .filter(|p| p.is_dir())
                        .with_context(|| {
                            format!("PCAP_LUA_DIR {d} is not a directory: set it to the directory of vetted Lua scripts, or unset it to keep Lua off")
                        })?,
                ),
            },
            name_resolution: matches!(
                env_or("PCAP_NAME_RESOLUTION", "off")
                    .to_ascii_lowercase()
                    .as_str(),
                "on" | "1" | "true" | "yes"
            ),
        })
    }

    pub fn toolset_enabled(&self, name: &str) -> bool {
        self.toolsets.iter().any(|t| t == "all" || t == name)
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn parse_env<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().ok().with_context(|| {
            format!("{name}={v:?} is not a valid number; unset it or give a whole number")
        }),
        _ => Ok(default),
    }
}

/// Finds tshark, dumpcap and capinfos: `WIRESHARK_PATH` (a binary or a directory) first,
/// then PATH. dumpcap and capinfos are optional: analysis still works without them.
pub fn locate_wireshark() -> Result<(PathBuf, Option<PathBuf>, Option<PathBuf>)> {
    let configured = std::env::var_os("WIRESHARK_PATH")
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty());
    let dir = configured.as_ref().map(|p| {
        if p.is_dir() {
            p.clone()
        } else {
            p.parent().map(Path::to_path_buf).unwrap_or_default()
        }
    });
    let find = |name: &str| -> Option<PathBuf> {
        if let Some(d) = &dir {
            let candidate = d.join(exe(name));
            if candidate.is_file() {
                return Some(candidate);
            }
        }
        which::which(name).ok()
    };
    let tshark = match &configured {
        Some(p) if p.is_file() => p.clone(),
        _ => match find("tshark") {
            Some(p) => p,
            None => bail!(
                "tshark was not found{}. Install Wireshark's command-line tools \
                 (Debian/Ubuntu: `sudo apt-get install tshark`; macOS: `brew install wireshark`; \
                 Windows: the Wireshark installer) or set WIRESHARK_PATH to the tshark binary",
                configured
                    .as_ref()
                    .map(|p| format!(" at WIRESHARK_PATH={}", p.display()))
                    .unwrap_or_else(|| " on PATH".into())
            ),
        },
    };
    Ok((tshark, find("dumpcap"), find("capinfos")))
}

fn exe(name: &str) -> String {
    if cfg!(windows) {
        format!("{name}.exe")
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod env_doc_tests {
    /// README's table of environment variables is ENV_VARS, row for row.
    #[test]
    fn readme_lists_every_variable() {
        let readme = include_str!("../README.md");
        for (name, default, what) in super::ENV_VARS {
            let row = format!("| `{name}` | `{default}` | {what} |");
            assert!(readme.contains(&row), "README lacks the row\n{row}");
        }
    }
}
