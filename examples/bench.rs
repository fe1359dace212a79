//! The investigation benchmark: every analysis tool called once, with default arguments,
//! on one server the way a client investigates, against one bare tshark pass printing
//! the capture index's fields on the same file, measured in the same run as CPU time.
//!
//!   cargo build --release && cargo run --release --example bench -- [CAPTURE] [SIZE_MB]
//!
//! Without CAPTURE it builds one of about SIZE_MB (default 100) from real traffic: a mix
//! of fixtures laid end to end, copied with addresses remapped per copy (`tcprewrite
//! --seed`, package tcpreplay) and shifted in time (`editcap -t`) before `mergecap -a`,
//! so copies look like new hosts, not port reuse or retransmissions.
//!
//! Prints per call the server's CPU (its own and its tshark children's) as a ratio to
//! the bare pass, the whole investigation's ratio (target <= 1.5), the first call's
//! (target <= 1.3), and the server's peak RSS.

use std::path::{Path, PathBuf};
use std::process::Command;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::{Value, json};

fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/examples/bench -> target/<profile>/pcap-analyzer-mcp-server
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("pcap-analyzer-mcp-server");
    assert!(
        bin.exists(),
        "build the server first: cargo build --release"
    );
    bin
}

/// Real traffic of several kinds: HTTP, DNS, TLS 1.2/1.3, loss, SIP/RTP, ICMP (captures
/// whose own clock jumps are left out: they would stretch every copy over years).
const MIX: &[&str] = &[
    "zeek-wikipedia.pcap",
    "zeek-http-methods.pcap",
    "arkime-wireshark-retrans.pcap",
    "zeek-tls13_wolfssl.pcap",
    "zeek-chrome-1250-tls-x25519-kyber.pcap",
    "zeek-tls1.2.pcap",
    "sv-tls-selfsigned-selks.pcap",
    "zeek-100-continue-post.pcap",
    "ndpi-sip.pcap",
    "cs-icmp_echo.pcapng",
    "sv-dns-udp-nxdomain-soa.pcap",
];

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn first_and_last_time(file: &Path) -> (f64, f64) {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(file)
        .args(["-T", "fields", "-e", "frame.time_epoch"])
        .output()
        .unwrap();
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let first = times.iter().copied().fold(f64::INFINITY, f64::min);
    let last = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (first, last)
}

/// One copy of the mix: each capture after the one before, with a second between.
fn make_base(work: &Path) -> (PathBuf, f64) {
    let base = work.join("mix-base.pcap");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut at = 1_700_000_000.0;
    let mut parts = Vec::new();
    for (i, name) in MIX.iter().enumerate() {
        let src = fixtures.join(name);
        let (first, last) = first_and_last_time(&src);
        let part = work.join(format!("mix-{i}.pcap"));
        run(Command::new("editcap")
            .args(["-F", "pcap", "-t"])
            .arg(format!("{:.6}", at - first))
            .arg(&src)
            .arg(&part));
        at += (last - first) + 1.0;
        parts.push(part);
    }
    run(Command::new("mergecap")
        .args(["-a", "-F", "pcap", "-w"])
        .arg(&base)
        .args(&parts));
    (base, at - 1_700_000_000.0)
}

fn make_capture(work: &Path, size_mb: u64) -> PathBuf {
    let out = work.join(format!("bench-mix-{size_mb}mb.pcap"));
    if out.exists() {
        return out;
    }
    let (base, span) = make_base(work);
    let one = std::fs::metadata(&base).unwrap().len();
    let copies = (size_mb * 1_000_000 / one).max(1);
    let mut parts = Vec::new();
    for i in 0..copies {
        let seeded = work.join(format!("copy-{i}-ip.pcap"));
        let shifted = work.join(format!("copy-{i}.pcap"));
        run(Command::new("tcprewrite")
            .arg(format!("--seed={}", i + 1))
            .arg(format!("--infile={}", base.display()))
            .arg(format!("--outfile={}", seeded.display())));
        run(Command::new("editcap")
            .args(["-t"])
            .arg(format!("{:.6}", i as f64 * span))
            .arg(&seeded)
            .arg(&shifted));
        let _ = std::fs::remove_file(&seeded);
        parts.push(shifted);
    }
    run(Command::new("mergecap")
        .args(["-a", "-F", "pcap", "-w"])
        .arg(&out)
        .args(&parts));
    for p in parts {
        let _ = std::fs::remove_file(p);
    }
    out
}

/// CPU seconds of a process itself and of the children it has reaped (its tshark
/// passes), apart.
fn cpu_split(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the command name's closing parenthesis; utime is field 14
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime stime cutime cstime are the 12th-15th fields after the name
    let sum = |r: std::ops::Range<usize>| f.get(r).map_or(0.0, |v| v.iter().sum::<f64>() / tick);
    (sum(11..13), sum(13..15))
}

/// CPU seconds of a process and of the children it has reaped.
fn cpu_of(pid: u32) -> f64 {
    let (own, children) = cpu_split(pid);
    own + children
}

fn peak_rss_mb(pid: u32) -> u64 {
    status_mb(pid, "VmHWM:")
}

/// A memory line of /proc/PID/status in MB: VmHWM (the peak) or VmRSS (now).
fn status_mb(pid: u32, line: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(line))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// CPU seconds (user + system) of a shell command's children, output discarded.
fn bare_cpu(cmd: &str) -> f64 {
    let before = children_cpu();
    let st = Command::new("bash")
        .arg("-c")
        .arg(format!("{cmd} > /dev/null 2>&1"))
        .status()
        .unwrap();
    assert!(st.success(), "bare pass failed: {cmd}");
    children_cpu() - before
}

fn children_cpu() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// The tools of the `drilldown` toolset, as the server declares them (`tools` prints
/// its table: "| `name` | toolset | ..."): they look at chosen packets after an
/// investigation and run their own passes by design.
fn drilldown_tools() -> Vec<String> {
    let out = Command::new(server_binary())
        .args(["tools", "--markdown"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('|').map(str::trim).skip(1);
            let name = cols.next()?.trim_matches('`');
            (cols.next()? == "drilldown").then(|| name.to_string())
        })
        .collect()
}

/// Every analysis tool, each once, with default arguments (the search needs a pattern).
fn investigation(f: &str) -> Vec<(String, Value)> {
    let snapshot: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/tools.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let drilldown = drilldown_tools();
    assert!(
        !drilldown.is_empty(),
        "`{} tools` lists no drilldown tool",
        server_binary().display()
    );
    let mut calls = Vec::new();
    for t in snapshot.as_array().unwrap() {
        let name = t["name"].as_str().unwrap().to_string();
        let required: Vec<&str> = t["inputSchema"]["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        // a call on the capture alone (the search gets its pattern below); a tool that
        // needs more (a host, a second capture, a moment) is not part of it
        let needs_file = required.contains(&"pcap_file");
        let only_file = required.iter().all(|r| *r == "pcap_file");
        if !needs_file || (!only_file && name != "search_packet_content") {
            continue;
        }
        // not part of the seed's 26-call investigation
        if drilldown.contains(&name) {
            continue;
        }
        let args = if name == "search_packet_content" {
            json!({"pcap_file": f, "search_pattern": "google"})
        } else {
            json!({"pcap_file": f})
        };
        calls.push((name, args));
    }
    // the start-here tool first, as a client begins
    calls.sort_by_key(|(n, _)| n != "analyze_pcap_file");
    calls
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&work).unwrap();
    let size_mb: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let file = match args.first().filter(|a| !a.is_empty() && *a != "-") {
        Some(p) => PathBuf::from(p).canonicalize().unwrap(),
        None => make_capture(&work, size_mb),
    };
    let dir = file.parent().unwrap().to_path_buf();
    let bytes = std::fs::metadata(&file).unwrap().len();
    println!("capture: {} ({:.1} MB)", file.display(), bytes as f64 / 1e6);

    if std::env::var_os("BENCH_SPLIT_ONLY").is_some() {
        split_index(&file).await;
        return;
    }
    // one tshark per pass, so every ratio is one pass against one pass; the split
    // pass is measured on its own below
    let (client, pid, _storage) = server(&dir, 1).await;

    let f = file.display().to_string();
    let mut rows = Vec::new();
    let mut index_cmd = None;
    let mut largest = (String::new(), 0usize);
    // the first call's CPU: the server's own (reading, reducing, reporting) and its
    // tshark children's (the index pass and the reader probe)
    let mut first_split = (0.0, 0.0);
    let start = cpu_of(pid);
    for (tool, a) in investigation(&f) {
        let req =
            CallToolRequestParams::new(tool.clone()).with_arguments(a.as_object().unwrap().clone());
        let before = cpu_split(pid);
        let r = client.call_tool(req).await.unwrap();
        let after = cpu_split(pid);
        let split = (after.0 - before.0, after.1 - before.1);
        let cpu = split.0 + split.1;
        if rows.is_empty() {
            first_split = split;
        }
        let v = r.structured_content.unwrap_or_default();
        if tool == "analyze_pcap_file" {
            // the index pass: the command with the most fields
            index_cmd = v["tshark_commands"]
                .as_array()
                .and_then(|c| c.iter().filter_map(|c| c.as_str()).max_by_key(|c| c.len()))
                .map(str::to_string);
        }
        let status = v["status"].as_str().unwrap_or("error").to_string();
        // every default answer should fit a model's context (~20 KB of JSON)
        let size = v.to_string().len();
        if size > largest.1 {
            largest = (tool.clone(), size);
        }
        // the server's peak so far (which call raised it), and what it holds after the
        // call (what an investigation keeps, against what a call needed for a moment)
        rows.push((
            tool,
            cpu,
            status,
            peak_rss_mb(pid),
            status_mb(pid, "VmRSS:"),
        ));
    }
    let total = cpu_of(pid) - start;
    let rss = peak_rss_mb(pid);
    let _ = client.cancel().await;

    let index_cmd = index_cmd.expect("analyze_pcap_file reported no tshark command");
    // twice: on this kind of shared VM one pass varies by 10-30% from run to run, and
    // every ratio below rests on it
    let runs = [bare_cpu(&index_cmd), bare_cpu(&index_cmd)];
    let bare = (runs[0] + runs[1]) / 2.0;
    println!(
        "bare index pass: {bare:.2} s CPU (mean of {:.2} and {:.2})",
        runs[0], runs[1]
    );
    println!(
        "{:<40} {:>9} {:>9} {:>8} {:>8}",
        "call", "cpu (s)", "x bare", "peak MB", "now MB"
    );
    for (tool, cpu, status, peak, now) in &rows {
        let note = if status == "complete" {
            String::new()
        } else {
            format!("  ({status})")
        };
        println!(
            "{tool:<40} {cpu:>9.2} {:>9.3} {peak:>8} {now:>8}{note}",
            cpu / bare
        );
    }
    println!(
        "investigation: {} calls, {total:.2} s CPU = {:.2} x the bare index pass (target <= 1.5)",
        rows.len(),
        total / bare
    );
    println!(
        "first call: server process {:.2} s ({:.2} x bare), tshark children {:.2} s ({:.2} x bare)",
        first_split.0,
        first_split.0 / bare,
        first_split.1,
        first_split.1 / bare
    );
    println!(
        "first call: {:.2} x (target <= 1.3); later calls: at most {:.3} x each (target < 0.05)",
        rows[0].1 / bare,
        rows.iter().skip(1).map(|r| r.1 / bare).fold(0.0, f64::max)
    );
    println!("server peak RSS: {rss} MB");
    println!(
        "largest default answer: {} bytes ({}; budget ~20000)",
        largest.1, largest.0
    );

    split_index(&file).await;
}

/// The index pass split by flow: the first call on a fresh server with one worker and
/// with two, wall time and CPU (server and tsharks), and each tshark's peak.
/// `BENCH_SPLIT_ONLY=1` runs only this.
async fn split_index(file: &Path) {
    let one = first_call(file, 1).await;
    let two = first_call(file, 2).await;
    for (w, m) in [(1, &one), (2, &two)] {
        println!(
            "first call, PCAP_WORKERS={w}: {:.2} s wall, {:.2} s CPU (server {:.2} + tsharks {:.2}), server peak {} MB, {} tshark(s) peaking at {:?} MB",
            m.wall,
            m.cpu.0 + m.cpu.1,
            m.cpu.0,
            m.cpu.1,
            m.server_peak_mb,
            m.tshark_peaks_mb.len(),
            m.tshark_peaks_mb
        );
    }
    println!(
        "split index: {:.2} x the wall time of one worker (target <= 0.7) at {:.2} x its CPU (target <= 1.15)",
        two.wall / one.wall,
        (two.cpu.0 + two.cpu.1) / (one.cpu.0 + one.cpu.1)
    );
}

/// A server reading captures in `dir` with `PCAP_WORKERS=workers` (splitting any
/// capture when that is more than 1), its pid, and its storage (removed when dropped).
async fn server(
    dir: &Path,
    workers: usize,
) -> (
    rmcp::service::RunningService<rmcp::RoleClient, ()>,
    u32,
    tempfile::TempDir,
) {
    let storage = tempfile::tempdir().unwrap();
    let transport = TokioChildProcess::new(
        tokio::process::Command::new(server_binary()).configure(|c| {
            c.env("PCAP_STORAGE_DIR", storage.path())
                .env("PCAP_ALLOWED_DIRS", dir)
                .env("PCAP_CALL_DEADLINE", "3600")
                .env("PCAP_WORKERS", workers.to_string())
                .env("PCAP_SPLIT_MIN_MB", "0")
                .env("RUST_LOG", "warn");
        }),
    )
    .unwrap();
    let pid = transport.id().unwrap();
    (().serve(transport).await.unwrap(), pid, storage)
}

/// What the first call on a fresh server cost.
struct FirstCall {
    wall: f64,
    /// (server, its tshark children), CPU seconds.
    cpu: (f64, f64),
    /// The peak RSS of each tshark that ran, in MB.
    tshark_peaks_mb: Vec<u64>,
    server_peak_mb: u64,
}

async fn first_call(file: &Path, workers: usize) -> FirstCall {
    let (client, pid, _storage) = server(file.parent().unwrap(), workers).await;
    let req = CallToolRequestParams::new("analyze_pcap_file").with_arguments(
        json!({"pcap_file": file.display().to_string()})
            .as_object()
            .unwrap()
            .clone(),
    );
    let before = cpu_split(pid);
    let t = std::time::Instant::now();
    // each tshark's peak, sampled while it runs (a reaped child's is gone)
    let mut peaks: std::collections::BTreeMap<u32, u64> = Default::default();
    {
        let call = client.call_tool(req);
        tokio::pin!(call);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        loop {
            tokio::select! {
                r = &mut call => {
                    r.unwrap();
                    break;
                }
                _ = tick.tick() => {
                    for child in tshark_children(pid) {
                        let mb = peak_rss_mb(child);
                        let p = peaks.entry(child).or_default();
                        *p = (*p).max(mb);
                    }
                }
            }
        }
    }
    let wall = t.elapsed().as_secs_f64();
    let after = cpu_split(pid);
    let server_peak_mb = peak_rss_mb(pid);
    let _ = client.cancel().await;
    FirstCall {
        wall,
        server_peak_mb,
        cpu: (after.0 - before.0, after.1 - before.1),
        // the reader probe's tshark is short and small: only the passes
        tshark_peaks_mb: peaks.into_values().filter(|&mb| mb > 100).collect(),
    }
}

/// The tshark processes whose parent is `pid`.
fn tshark_children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let Some((name, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let parent = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if name.ends_with("(tshark") && parent == Some(pid) {
            out.push(child);
        }
    }
    out
}
