//! `install CLIENT [--print] [--config FILE] [--name NAME]`: puts this server into an
//! MCP client's configuration, the way each client reads it, without losing what the
//! file already holds (other servers, other settings): the file is backed up first and
//! replaced in one rename, so a crash leaves the old or the new file, never half.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

/// The server's name in the client's list unless `--name` says otherwise.
const DEFAULT_NAME: &str = "pcap-analyzer";

/// The settings worth carrying into the client's entry when set here: where captures
/// live and what may be read. Clients start servers from an unknown directory, so
/// paths are made absolute.
const CARRIED: [&str; 4] = [
    "PCAP_STORAGE_DIR",
    "PCAP_ALLOWED_DIRS",
    "WIRESHARK_PATH",
    "PCAP_TOOLSETS",
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Client {
    ClaudeDesktop,
    ClaudeCode,
    Cursor,
    VsCode,
    Kiro,
    AmazonQ,
}

const CLIENTS: [(&str, Client); 6] = [
    ("claude-desktop", Client::ClaudeDesktop),
    ("claude-code", Client::ClaudeCode),
    ("cursor", Client::Cursor),
    ("vscode", Client::VsCode),
    ("kiro", Client::Kiro),
    ("amazonq", Client::AmazonQ),
];

impl Client {
    /// The object in the file that maps server names to entries.
    fn servers_key(self) -> &'static str {
        match self {
            Client::VsCode => "servers",
            _ => "mcpServers",
        }
    }

    /// Whether an entry says its transport (`"type": "stdio"`).
    fn typed(self) -> bool {
        matches!(self, Client::VsCode | Client::ClaudeCode)
    }

    /// The user-level configuration file.
    fn config_path(self) -> Result<PathBuf> {
        let home = home()?;
        Ok(match self {
            Client::ClaudeDesktop => app_config_dir(&home)?
                .join("Claude")
                .join("claude_desktop_config.json"),
            Client::ClaudeCode => home.join(".claude.json"),
            Client::Cursor => home.join(".cursor").join("mcp.json"),
            Client::VsCode => app_config_dir(&home)?
                .join("Code")
                .join("User")
                .join("mcp.json"),
            Client::Kiro => home.join(".kiro").join("settings").join("mcp.json"),
            Client::AmazonQ => home.join(".aws").join("amazonq").join("mcp.json"),
        })
    }
}

fn home() -> Result<PathBuf> {
    std::env::var_os(if cfg!(windows) { "USERPROFILE" } else { "HOME" })
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("cannot tell the home directory (HOME is not set): give the file with --config")
}

/// Where desktop applications keep their settings on this system.
fn app_config_dir(home: &Path) -> Result<PathBuf> {
    if cfg!(target_os = "macos") {
        return Ok(home.join("Library").join("Application Support"));
    }
    if cfg!(windows) {
        return std::env::var_os("APPDATA")
            .map(PathBuf::from)
            .context("APPDATA is not set: give the file with --config");
    }
    Ok(std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".config")))
}

struct Options {
    client: Client,
    print: bool,
    config: Option<PathBuf>,
    name: String,
}

fn parse(args: &[String]) -> Result<Options> {
    let names: Vec<&str> = CLIENTS.iter().map(|c| c.0).collect();
    let usage = format!(
        "usage: pcap-analyzer-mcp-server install <{}> [--print] [--config FILE] [--name NAME]",
        names.join("|")
    );
    let mut it = args.iter();
    let which = it.next().with_context(|| usage.clone())?;
    let client = CLIENTS
        .iter()
        .find(|c| c.0 == which)
        .map(|c| c.1)
        .with_context(|| format!("unknown client {which:?}\n{usage}"))?;
    let mut o = Options {
        client,
        print: false,
        config: None,
        name: DEFAULT_NAME.into(),
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--print" => o.print = true,
            "--config" => o.config = Some(it.next().with_context(|| usage.clone())?.into()),
            "--name" => {
                o.name = it.next().with_context(|| usage.clone())?.clone();
                if o.name.is_empty() {
                    bail!("--name must not be empty");
                }
            }
            other => bail!("unknown option {other:?}\n{usage}"),
        }
    }
    Ok(o)
}

/// The entry this binary would be launched by, with the settings worth carrying.
fn entry(client: Client) -> Result<Value> {
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("cannot tell where this binary is")?;
    let mut env = Map::new();
    for var in CARRIED {
        let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) else {
            continue;
        };
        let v = match var {
            "PCAP_STORAGE_DIR" | "WIRESHARK_PATH" => absolute(Path::new(&v))?,
            "PCAP_ALLOWED_DIRS" => std::env::join_paths(
                std::env::split_paths(&v)
                    .map(|p| absolute(&p).map(PathBuf::from))
                    .collect::<Result<Vec<_>>>()?,
            )
            .context("PCAP_ALLOWED_DIRS holds a path that cannot be joined")?
            .to_string_lossy()
            .into_owned(),
            _ => v.to_string_lossy().into_owned(),
        };
        env.insert(var.into(), Value::String(v));
    }
    // without a storage directory the server would write where the client starts it
    if !env.contains_key("PCAP_STORAGE_DIR") {
        let dir = home()?.join("pcap_storage");
        env.insert(
            "PCAP_STORAGE_DIR".into(),
            Value::String(dir.to_string_lossy().into_owned()),
        );
    }
    let mut e = Map::new();
    if client.typed() {
        e.insert("type".into(), json!("stdio"));
    }
    e.insert("command".into(), json!(exe.to_string_lossy()));
    e.insert("args".into(), json!([]));
    e.insert("env".into(), Value::Object(env));
    Ok(Value::Object(e))
}

fn absolute(p: &Path) -> Result<String> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    Ok(abs.to_string_lossy().into_owned())
}

pub fn install(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let entry = entry(o.client)?;
    if o.print {
        let snippet = json!({ o.client.servers_key(): { &o.name: entry } });
        println!("{}", serde_json::to_string_pretty(&snippet)?);
        return Ok(());
    }
    let path = match o.config {
        Some(p) => p,
        None => o.client.config_path()?,
    };
    let existing = match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut doc: Value = match &existing {
        Some(bytes) if !bytes.iter().all(u8::is_ascii_whitespace) => serde_json::from_slice(bytes)
            .with_context(|| {
                format!(
                    "{} is not valid JSON, so it was left as it is: fix it, or print the entry with --print and add it by hand",
                    path.display()
                )
            })?,
        _ => json!({}),
    };
    let Some(root) = doc.as_object_mut() else {
        bail!(
            "{} does not hold a JSON object, so it was left as it is",
            path.display()
        );
    };
    let servers = root
        .entry(o.client.servers_key())
        .or_insert_with(|| json!({}));
    let Some(servers) = servers.as_object_mut() else {
        bail!(
            "{}: \"{}\" is not an object, so the file was left as it is",
            path.display(),
            o.client.servers_key()
        );
    };
    let replaced = servers.insert(o.name.clone(), entry).is_some();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let backup = match &existing {
        Some(bytes) => {
            let b = PathBuf::from(format!("{}.bak", path.display()));
            std::fs::write(&b, bytes)
                .with_context(|| format!("cannot write the backup {}", b.display()))?;
            Some(b)
        }
        None => None,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    use std::io::Write;
    tmp.write_all(serde_json::to_string_pretty(&doc)?.as_bytes())?;
    tmp.write_all(b"\n")?;
    // the new file keeps the old one's permissions (a temporary file is private)
    if let Ok(meta) = std::fs::metadata(&path) {
        let _ = tmp.as_file().set_permissions(meta.permissions());
    }
    tmp.persist(&path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    println!(
        "{} \"{}\" in {}{}; restart the client to load it.",
        if replaced { "Updated" } else { "Added" },
        o.name,
        path.display(),
        backup
            .map(|b| format!(" (the previous file is in {})", b.display()))
            .unwrap_or_default()
    );
    Ok(())
}
