//! Drives the built binary the way an MCP client does: spawn it, speak MCP over stdio
//! with rmcp's client, call tools, read structured results.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::process::{Child, Command, Stdio};

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

pub mod delay;

pub const BIN: &str = env!("CARGO_BIN_EXE_pcap-analyzer-mcp-server");

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

/// The facts the shared corpus recorded for a fixture (from Zeek, capinfos, tshark).
pub fn facts(name: &str) -> Value {
    let all: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("corpus-facts.json")).unwrap(),
    )
    .unwrap();
    all[name].clone()
}

/// The tshark-origin fact with this filter, e.g. `http.request`.
pub fn tshark_fact<'a>(facts: &'a Value, filter: &str) -> &'a Value {
    facts["truth"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["origin"] == "tshark-4.0.17" && t["filter"] == filter)
        .unwrap_or_else(|| panic!("no tshark fact for {filter}"))
}

pub struct Server {
    pub client: RunningService<RoleClient, ()>,
    pub storage: tempfile::TempDir,
    pub pid: u32,
}

pub async fn start() -> Server {
    start_with(&[]).await
}

pub async fn start_with(env: &[(&str, &str)]) -> Server {
    let storage = tempfile::tempdir().unwrap();
    let storage_path = storage.path().to_path_buf();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let transport = TokioChildProcess::new(tokio::process::Command::new(BIN).configure(|cmd| {
        cmd.env("PCAP_STORAGE_DIR", &storage_path)
            .env("PCAP_ALLOWED_DIRS", fixtures())
            .env("RUST_LOG", "warn");
        for (k, v) in &env {
            cmd.env(k, v);
        }
    }))
    .expect("spawn server");
    let pid = transport.id().expect("server pid");
    let client = ().serve(transport).await.expect("MCP initialize");
    Server {
        client,
        storage,
        pid,
    }
}

impl Server {
    pub async fn call(&self, tool: &str, args: Value) -> CallToolResult {
        let Value::Object(map) = args else {
            panic!("arguments must be an object")
        };
        self.client
            .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(map))
            .await
            .unwrap_or_else(|e| panic!("{tool}: protocol error {e}"))
    }

    /// Calls a tool that must succeed and returns its structured content.
    pub async fn ok(&self, tool: &str, args: Value) -> Value {
        let r = self.call(tool, args.clone()).await;
        assert_ne!(r.is_error, Some(true), "{tool} {args} failed: {}", text(&r));
        let v = r
            .structured_content
            .clone()
            .unwrap_or_else(|| panic!("{tool}: no structured content"));
        // everything the model needs is in the structured object, and the text copy matches it
        let copy: Value = serde_json::from_str(&text(&r)).expect("text content is the JSON copy");
        assert_eq!(copy, v);
        v
    }

    /// Calls a tool that must fail with isError and returns its message.
    pub async fn err(&self, tool: &str, args: Value) -> String {
        let r = self.call(tool, args.clone()).await;
        assert_eq!(
            r.is_error,
            Some(true),
            "{tool} {args} should fail, got {:?}",
            r.structured_content
        );
        text(&r)
    }

    pub fn storage_file(&self, name: &str) -> PathBuf {
        self.storage.path().join(name)
    }

    /// Starts a live capture on `interface` with a BPF `filter` into `output` in storage
    /// (stopped after 60 s at the latest) and returns its id.
    pub async fn start_capture(&self, interface: &str, filter: &str, output: &str) -> String {
        let v = self
            .ok(
                "start_packet_capture",
                json!({"interface": interface, "duration": 60, "capture_filter": filter, "output_file": output}),
            )
            .await;
        v["capture"]["capture_id"].as_str().unwrap().to_string()
    }

    pub async fn stop_capture(&self, id: &str) {
        let v = self
            .ok("stop_packet_capture", json!({"capture_id": id}))
            .await;
        assert_eq!(v["capture"]["state"], "stopped", "{v}");
    }
}

/// The capture fixtures, sorted by name.
pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
        .collect();
    names.sort();
    names
}

/// Starts one tool call on a task of its own, for calls in flight together.
pub fn spawn_call(
    peer: &rmcp::Peer<RoleClient>,
    tool: &str,
    args: Value,
) -> tokio::task::JoinHandle<(String, Result<CallToolResult, rmcp::ServiceError>)> {
    let (peer, tool) = (peer.clone(), tool.to_string());
    tokio::spawn(async move {
        let Value::Object(map) = args else {
            panic!("arguments must be an object")
        };
        let r = peer
            .call_tool(CallToolRequestParams::new(tool.clone()).with_arguments(map))
            .await;
        (tool, r)
    })
}

/// The tools that analyse a capture (a required `pcap_file`), from the schema snapshot.
/// The smallest valid arguments of a file tool besides pcap_file (a search needs a
/// pattern, packet details a frame, follow a stream, a slice a filter).
pub fn required_extras(tool: &str) -> Value {
    match tool {
        "search_packet_content" => json!({"search_pattern": "GET"}),
        "get_packet_details" => json!({"frame": 1}),
        "follow_stream" => json!({"stream": 0}),
        "filter_capture" => json!({"display_filter": "frame"}),
        "analyze_host" => json!({"host": "10.0.0.1"}),
        "run_lua_script" => json!({"script": "http_hosts.lua"}),
        _ => json!({}),
    }
}

/// Tools that write into storage: their results name the files they wrote.
pub const WRITING_FILE_TOOLS: &[&str] =
    &["filter_capture", "export_packets", "export_flow_records"];

pub fn file_tool_names() -> Vec<String> {
    let snapshot: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/tools.json"),
        )
        .unwrap(),
    )
    .unwrap();
    snapshot
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["inputSchema"]["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x == "pcap_file"))
        })
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// A server spoken to by hand over raw stdio (for what a client library would not
/// send), already initialized.
pub struct RawServer {
    pub child: std::process::Child,
    pub stdin: std::process::ChildStdin,
    pub out: std::io::BufReader<std::process::ChildStdout>,
    _storage: tempfile::TempDir,
}

pub fn raw_server() -> RawServer {
    raw_server_with(&[])
}

pub fn raw_server_with(env: &[(&str, &str)]) -> RawServer {
    use std::io::{BufRead, Write};
    let storage = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .env("PCAP_STORAGE_DIR", storage.path())
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#).unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("\"id\":1"), "{line}");
    RawServer {
        child,
        stdin,
        out,
        _storage: storage,
    }
}

/// An Ethernet/IPv4/TCP segment with the given sequence numbers (checksums zero:
/// tshark does not verify them).
#[allow(clippy::too_many_arguments)]
pub fn tcp_segment(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    ipv4_frame(src, dst, 6, &tcp_l4(sport, dport, seq, ack, flags, payload))
}

/// A TCP header (20 bytes, window 65535, checksum zero) and its payload.
pub fn tcp_l4(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(20 + payload.len());
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(&ack.to_be_bytes());
    l4.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(payload);
    l4
}

/// An Ethernet/IPv4/UDP frame (no UDP checksum).
pub fn udp_datagram(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    ipv4_frame(src, dst, 17, &udp_l4(sport, dport, payload))
}

/// A UDP header (checksum zero) and its payload.
pub fn udp_l4(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(8 + payload.len());
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    l4
}

/// An Ethernet frame carrying an IPv4 packet of protocol `proto` around `l4`.
pub fn ipv4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (20 + l4.len()) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(l4);
    f
}

/// A pcap of (seconds, bytes) records after [`pcap_header`].
pub fn pcap_of(records: &[(f64, Vec<u8>)]) -> Vec<u8> {
    let mut f = pcap_header();
    for (t, data) in records {
        let sec = t.floor() as u32;
        let usec = ((t - t.floor()) * 1e6).round() as u32;
        f.extend_from_slice(&sec.to_le_bytes());
        f.extend_from_slice(&usec.to_le_bytes());
        f.extend_from_slice(&(data.len() as u32).to_le_bytes());
        f.extend_from_slice(&(data.len() as u32).to_le_bytes());
        f.extend_from_slice(data);
    }
    f
}

/// A classic little-endian pcap file header: microseconds, Ethernet, snaplen 65535.
pub fn pcap_header() -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&[2, 0, 4, 0]); // version 2.4
    h.extend_from_slice(&[0; 8]); // timezone, accuracy
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    h
}

pub fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// tshark as the oracle runs it: with the preference the server reads every capture
/// with (TCP reassembled out of order), so both dissect the same messages.
pub fn tshark() -> StdCommand {
    let mut c = StdCommand::new("tshark");
    c.args(["-o", "tcp.reassemble_out_of_order:TRUE"]);
    c
}

/// The frames tshark selects with a display filter, in file order; `two_pass` evaluates
/// it as Wireshark's GUI does (fields that refer forward, like `dns.response_in`).
pub fn tshark_frames(file: &str, filter: &str, two_pass: bool) -> Vec<u64> {
    let mut cmd = tshark();
    cmd.arg("-n");
    if two_pass {
        cmd.arg("-2");
    }
    let out = cmd
        .args([
            "-r",
            file,
            "-Y",
            filter,
            "-T",
            "fields",
            "-e",
            "frame.number",
        ])
        .output()
        .expect("run tshark");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect()
}

/// The frames each display filter selects, evaluated as Wireshark's GUI does (two
/// passes), for many filters in **one** tshark run over the file: a Lua tap listener
/// per filter (listeners run in the second pass, on packets as the GUI shows them)
/// prints the frames it sees. A filter tshark rejects selects nothing. One run per
/// file instead of one per filter: the result contract checks ~1,000 filters.
pub fn tshark_frames_each(file: &str, filters: &[&str]) -> Vec<std::collections::BTreeSet<u64>> {
    const SCRIPT: &str = r#"
local idx = 0
for line in io.lines(os.getenv("CHECK_FILTERS")) do
  idx = idx + 1
  local i = idx
  local ok, l = pcall(Listener.new, "frame", line)
  if ok then
    l.packet = function(pinfo) io.write(i, "\t", pinfo.number, "\n") end
    -- kept referenced, so the garbage collector never takes a listener mid-run
    _G["check_listener_" .. i] = l
  end
end
"#;
    let mut sets = vec![std::collections::BTreeSet::new(); filters.len()];
    if filters.is_empty() {
        return sets;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("check.lua");
    let list = dir.path().join("filters.txt");
    std::fs::write(&script, SCRIPT).unwrap();
    assert!(
        filters.iter().all(|f| !f.contains('\n')),
        "a filter with a newline"
    );
    std::fs::write(&list, filters.join("\n") + "\n").unwrap();
    let out = tshark()
        .args(["-n", "-2", "-q", "-r", file, "-X"])
        .arg(format!("lua_script:{}", script.display()))
        .env("CHECK_FILTERS", &list)
        .output()
        .expect("run tshark");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut it = line.split('\t');
        if let (Some(Ok(i)), Some(Ok(frame))) = (
            it.next().map(str::parse::<usize>),
            it.next().map(str::parse::<u64>),
        ) && (1..=filters.len()).contains(&i)
        {
            sets[i - 1].insert(frame);
        }
    }
    sets
}

/// tshark's own count of frames matching a filter, for comparison.
pub fn tshark_count(file: &str, filter: &str) -> u64 {
    tshark_frames(file, filter, false).len() as u64
}

/// Child processes of `pid` with this command name.
pub fn children_named(pid: u32, name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = &stat[stat.find('(').unwrap() + 1..close];
        let ppid: u32 = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if ppid == pid && comm == name {
            out.push(p);
        }
    }
    out
}

/// All processes with this command name whose command line mentions `needle`.
pub fn processes_mentioning(name: &str, needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        let state = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let zombie = state
            .rfind(')')
            .is_some_and(|i| state[i + 2..].starts_with('Z'));
        if comm.trim() == name && !zombie && String::from_utf8_lossy(&cmdline).contains(needle) {
            out.push(p);
        }
    }
    out
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// A network namespace joined to the host by a veth pair; removed on drop.
pub struct Netns {
    pub name: String,
    pub host_if: String,
    n: u8,
}

impl Netns {
    /// Namespace number `n` gets 10.213.n.1 (host side) and 10.213.n.2 (inside).
    ///
    /// Every module's tests run in one process, side by side, so a number belongs to
    /// one test of the whole suite (7 live_capture, 9 tcp_live, 11 advanced_tools,
    /// 12 capacity, 13 threat_tools, 15 metrics_tools, 16 and 19 slowness,
    /// 17 anomaly_tools, 18 connections); taking one in use panics.
    pub fn create(n: u8) -> Option<Self> {
        assert!(
            NETNS_IN_USE.lock().unwrap().insert(n),
            "namespace number {n} is in use by another test: pick a free one"
        );
        let id = std::process::id() % 10_000;
        let ns = Netns {
            name: format!("pcaptest{id}n{n}"),
            host_if: format!("pv{id}n{n}a"),
            n,
        };
        let peer = format!("pv{id}n{n}b");
        let (host_ip, ns_ip) = (format!("10.213.{n}.1/24"), format!("10.213.{n}.2/24"));
        let run = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        let ok = run(&["netns", "add", &ns.name])
            && run(&[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ])
            && run(&["link", "set", &peer, "netns", &ns.name])
            && run(&["addr", "add", &host_ip, "dev", &ns.host_if])
            && run(&["link", "set", &ns.host_if, "up"])
            && run(&[
                "netns", "exec", &ns.name, "ip", "addr", "add", &ns_ip, "dev", &peer,
            ])
            && run(&["netns", "exec", &ns.name, "ip", "link", "set", &peer, "up"])
            && run(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        ok.then_some(ns)
    }

    /// Runs python3 inside the namespace.
    pub fn python(&self, code: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "python3", "-c", code])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Netns {
    /// Runs a command inside the namespace.
    pub fn run(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Runs a command inside the namespace and returns what it printed.
    pub fn output(&self, args: &[&str]) -> String {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Starts python3 inside the namespace in the background.
    pub fn spawn_python(&self, code: &str) -> KillOnDrop {
        KillOnDrop(
            Command::new("ip")
                .args(["netns", "exec", &self.name, "python3", "-c", code])
                .spawn()
                .expect("python3 in the namespace"),
        )
    }
}

static NETNS_IN_USE: std::sync::Mutex<std::collections::BTreeSet<u8>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if let Ok(mut used) = NETNS_IN_USE.lock() {
            used.remove(&self.n);
        }
    }
}

/// A background helper process that is killed and reaped when the test ends, pass or panic.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `done` every 100 ms; fails the test with `what` after `secs` seconds.
pub async fn wait_until(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits (up to 10 s) until something accepts TCP connections on `addr`. Call it
/// *before* a capture starts: a probe that reaches a server still starting is answered
/// with RST, and a captured RST is a refused connection the test did not mean to make.
pub async fn wait_listening(addr: &str) {
    let to: std::net::SocketAddr = addr.parse().expect("a socket address");
    wait_until(10, &format!("nothing listened on {addr}"), || {
        std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_millis(200)).is_ok()
    })
    .await;
}

/// Every capture under `dir` (recursively, leaving out oracle logs).
pub fn captures_in(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "oracles") {
                captures_in(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
            out.push(p);
        }
    }
}

/// Every fixture, plus the shared corpus when this checkout sits beside it (or
/// PCAP_TEST_CORPUS names it), each capture once (fixtures are copies of corpus files);
/// and the PCAP_ALLOWED_DIRS value that reaches them all.
pub fn fixture_and_corpus_captures() -> (Vec<PathBuf>, String) {
    let corpus = std::env::var("PCAP_TEST_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    let mut files = Vec::new();
    captures_in(&fixtures(), &mut files);
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_owned())
        .collect();
    let mut corpus_files = Vec::new();
    captures_in(&corpus, &mut corpus_files);
    files.extend(
        corpus_files
            .into_iter()
            .filter(|f| !names.contains(&f.file_name().unwrap().to_owned())),
    );
    files.sort();
    let dirs = format!("{}:{}", fixtures().display(), corpus.display());
    (files, dirs)
}

/// Runs `check` over `files` in two lanes (tshark runs two passes at a time by
/// default) and counts the files it returned true for.
pub async fn in_two_lanes<F, Fut>(files: &[PathBuf], check: F) -> usize
where
    F: Fn(PathBuf) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let lane = |odd: bool| {
        let lane_files: Vec<PathBuf> = files
            .iter()
            .skip(usize::from(odd))
            .step_by(2)
            .cloned()
            .collect();
        let check = &check;
        async move {
            let mut n = 0;
            for f in lane_files {
                n += usize::from(check(f).await);
            }
            n
        }
    };
    let (a, b) = tokio::join!(lane(false), lane(true));
    a + b
}

/// A loopback TLS server with a certificate for www.good.test and *.good.test.
pub struct OpensslServer {
    _child: KillOnDrop,
    pub port: u16,
}

pub fn openssl_server(dir: &std::path::Path, port: u16, extra: &[&str]) -> OpensslServer {
    let (key, cert) = (dir.join("k.pem"), dir.join("c.pem"));
    if !cert.exists() {
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "20",
                "-subj",
                "/CN=www.good.test",
            ])
            .args([
                "-addext",
                "subjectAltName=DNS:www.good.test,DNS:*.good.test",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
    }
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-www",
            "-quiet",
        ])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "openssl s_server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    OpensslServer {
        _child: KillOnDrop(child),
        port,
    }
}

pub fn openssl_client(port: u16, sni: &str, extra: &[&str]) {
    let mut c = Command::new("openssl")
        .args([
            "s_client",
            "-ign_eof",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            sni,
        ])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    let _ = c.stdin.take().unwrap().write_all(b"GET / HTTP/1.0\r\n\r\n");
    let _ = c.wait();
}

// ------------------------------------------------------------ a routed path

pub fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn in_ns(ns: &str, args: &[&str]) -> bool {
    let mut a = vec!["netns", "exec", ns];
    a.extend_from_slice(args);
    ip(&a)
}

/// client (10.214.1.2) -- router (10.214.1.1 | 10.214.2.1) -- server (10.214.2.2)
pub struct Path3 {
    pub cli: String,
    pub rtr: String,
    pub srv: String,
}

impl Path3 {
    pub fn create() -> Option<Self> {
        // tests of several modules build paths side by side in one process: the pid
        // alone would give them the same names
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = std::process::id() % 10_000;
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = Path3 {
            cli: format!("cmp{id}x{k}c"),
            rtr: format!("cmp{id}x{k}r"),
            srv: format!("cmp{id}x{k}s"),
        };
        let ok = [&p.cli, &p.rtr, &p.srv]
            .iter()
            .all(|n| ip(&["netns", "add", n]))
            && ip(&[
                "link", "add", "c0", "netns", &p.cli, "type", "veth", "peer", "name", "r1",
                "netns", &p.rtr,
            ])
            && ip(&[
                "link", "add", "s0", "netns", &p.srv, "type", "veth", "peer", "name", "r2",
                "netns", &p.rtr,
            ])
            && in_ns(&p.cli, &["ip", "addr", "add", "10.214.1.2/24", "dev", "c0"])
            && in_ns(&p.rtr, &["ip", "addr", "add", "10.214.1.1/24", "dev", "r1"])
            && in_ns(&p.rtr, &["ip", "addr", "add", "10.214.2.1/24", "dev", "r2"])
            && in_ns(&p.srv, &["ip", "addr", "add", "10.214.2.2/24", "dev", "s0"])
            && [(&p.cli, "c0"), (&p.rtr, "r1"), (&p.rtr, "r2"), (&p.srv, "s0")]
                .iter()
                .all(|(n, d)| in_ns(n, &["ip", "link", "set", d, "up"]))
            && [&p.cli, &p.rtr, &p.srv]
                .iter()
                .all(|n| in_ns(n, &["ip", "link", "set", "lo", "up"]))
            // one wire packet per IP packet (no 64 KB GSO batches): the drop rule then
            // takes single segments, as a lossy link does
            && [(&p.cli, "c0"), (&p.srv, "s0")]
                .iter()
                .all(|(n, d)| in_ns(n, &["ip", "link", "set", "dev", d, "gso_max_segs", "1"]))
            && in_ns(&p.cli, &["ip", "route", "add", "default", "via", "10.214.1.1"])
            && in_ns(&p.srv, &["ip", "route", "add", "default", "via", "10.214.2.1"])
            && in_ns(&p.rtr, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        ok.then_some(p)
    }

    /// Drops `pct` percent of the client's TCP packets at the router.
    pub fn drop_from_client(&self, pct: u32) -> bool {
        let p = format!("0.{pct:02}");
        in_ns(
            &self.rtr,
            &[
                "iptables",
                "-A",
                "FORWARD",
                "-p",
                "tcp",
                "-s",
                "10.214.1.2",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ],
        )
    }

    /// The router's count of packets its DROP rules dropped.
    pub fn dropped(&self) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.rtr, "iptables", "-L", "FORWARD", "-v", "-x", "-n",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("DROP") && l.contains("statistic"))
            .map(|l| l.split_whitespace().next().unwrap().parse::<u64>().unwrap())
            .sum()
    }
}

impl Drop for Path3 {
    fn drop(&mut self) {
        for n in [&self.cli, &self.rtr, &self.srv] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// dumpcap on `dev` inside `ns` with BPF `filter`, writing `file`; stopped by `stop`.
pub fn start_dumpcap(ns: &str, dev: &str, filter: &str, file: &Path) -> Child {
    let child = Command::new("ip")
        .args([
            "netns", "exec", ns, "dumpcap", "-q", "-i", dev, "-f", filter, "-w",
        ])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dumpcap");
    // it has opened the interface once it wrote the file's first blocks
    let t0 = std::time::Instant::now();
    while std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(t0.elapsed().as_secs() < 10, "dumpcap did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child
}

pub fn stop(mut c: Child) {
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-INT", &c.id().to_string()])
        .status();
    let _ = c.wait();
}

/// A Zeek TSV log in fixtures/ (e.g. `zeek-conn/x.conn.log`): one map of field -> text per row (`-` unset, `(empty)` empty).
pub fn zeek_log(path: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(fixtures().join(path)).unwrap();
    let fields: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("#fields"))
        .unwrap()
        .split('\t')
        .skip(1)
        .collect();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            fields
                .iter()
                .zip(l.split('\t'))
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}
