//! The capture manager: owns every dumpcap child, keyed by capture id.
//!
//! dumpcap (never tshark) captures; it writes pcapng to its stdout (`-w -`), and the
//! server copies that pipe into a file it created itself in PCAP_STORAGE_DIR with
//! O_CREAT|O_EXCL|O_NOFOLLOW. dumpcap never opens a path, so swapping the file for a
//! symlink cannot make a privileged dumpcap overwrite anything. Each capture has a
//! duration limit that dumpcap enforces itself (`-a duration:`) plus a watchdog here,
//! optional packet and size caps, and a stop that signals dumpcap so it finalises the
//! stream. No dumpcap outlives the server: children are stopped on exit; a parent-death
//! signal covers a killed server, and because Linux drops that signal when it execs a
//! binary with file capabilities (how dumpcap is installed for non-root capture), the
//! pipe is the second guarantee: once the server is gone, dumpcap's next write fails
//! with SIGPIPE.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::config::Config;
use crate::report::rfc3339;
use crate::sandbox::Sandbox;

/// Caps a client may not exceed, whatever it asks.
pub const DEFAULT_MAX_SIZE_MB: u64 = 100;
pub const HARD_MAX_SIZE_MB: u64 = 10_240;
pub const HARD_MAX_PACKETS: u64 = 100_000_000;
const STOP_DRAIN: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CaptureState {
    Running,
    /// Ended by itself at its duration, size or packet limit.
    Finished,
    /// Stopped by stop_packet_capture or by the server shutting down.
    Stopped,
    /// dumpcap exited with an error; see `error`.
    Failed,
}

/// What a client asks for.
#[derive(Debug, Clone)]
pub struct CaptureRequest {
    pub interface: String,
    pub duration_s: u64,
    pub capture_filter: Option<String>,
    pub output_file: Option<String>,
    pub max_packets: Option<u64>,
    pub max_size_mb: Option<u64>,
}

/// A capture as reported to clients.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CaptureStatus {
    pub capture_id: String,
    pub state: CaptureState,
    pub interface: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_filter: Option<String>,
    /// File name in PCAP_STORAGE_DIR; pass it as pcap_file to any analysis tool.
    pub file: String,
    pub start_time: String,
    /// When the duration limit stops it.
    pub scheduled_stop_time: String,
    pub elapsed_s: f64,
    /// Seconds until the duration limit while running.
    pub remaining_s: f64,
    pub duration_limit_s: u64,
    pub max_packets: Option<u64>,
    pub max_size_mb: u64,
    /// Bytes written to the file so far.
    pub bytes: u64,
    /// Packets written to the file so far.
    pub packets: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What to do about the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

struct Entry {
    id: String,
    req: CaptureRequest,
    path: PathBuf,
    file_name: String,
    started: SystemTime,
    started_at: Instant,
    pid: Option<u32>,
    inner: Mutex<EntryState>,
    done: tokio::sync::Notify,
}

struct EntryState {
    state: CaptureState,
    ended_at: Option<Instant>,
    stop_requested: bool,
    error: Option<String>,
}

pub struct CaptureManager {
    cfg: Arc<Config>,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    counter: AtomicU64,
    /// Captures between their slot check and their registration: counted with the
    /// running ones, so concurrent starts cannot exceed PCAP_MAX_CAPTURES.
    starting: Mutex<usize>,
}

/// A capture slot taken at the check; given back unless the capture was registered.
struct Reservation<'a> {
    starting: &'a Mutex<usize>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        *self.starting.lock().unwrap() -= 1;
    }
}

impl CaptureManager {
    pub fn new(cfg: Arc<Config>) -> Self {
        Self {
            cfg,
            entries: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
            starting: Mutex::new(0),
        }
    }

    fn dumpcap(&self) -> Result<PathBuf, String> {
        self.cfg.dumpcap.clone().ok_or_else(|| {
            "dumpcap was not found, so live capture is unavailable. Install Wireshark's command-line tools \
             (Debian/Ubuntu: `sudo apt-get install tshark`, which brings dumpcap) or set WIRESHARK_PATH to the directory holding dumpcap"
                .to_string()
        })
    }

    /// Interface names dumpcap can capture on.
    pub async fn interface_names(&self) -> Result<Vec<String>, String> {
        let out = run_dumpcap(&self.dumpcap()?, &["-D", "-M"]).await?;
        Ok(crate::tools::interfaces::parse_dumpcap_list(&out.stdout)
            .into_iter()
            .map(|i| i.name)
            .collect())
    }

    /// Whether this process may capture, tried by opening the interface for its link types.
    pub async fn can_capture(&self, interface: &str) -> Result<(), String> {
        let out = run_dumpcap(&self.dumpcap()?, &["-L", "-i", interface]).await?;
        if out.success { Ok(()) } else { Err(out.stderr) }
    }

    pub fn files_being_written(&self) -> Vec<PathBuf> {
        self.entries
            .lock()
            .unwrap()
            .values()
            .filter(|e| e.inner.lock().unwrap().state == CaptureState::Running)
            .map(|e| e.path.clone())
            .collect()
    }

    /// Takes a capture slot, or says why none is free. The count of running captures
    /// and the reservation happen under one lock.
    fn reserve(&self) -> Result<Reservation<'_>, String> {
        let mut starting = self.starting.lock().unwrap();
        let running = self.files_being_written().len();
        if running + *starting >= self.cfg.max_captures {
            return Err(format!(
                "{} captures are already running or starting (the limit, PCAP_MAX_CAPTURES); stop one with stop_packet_capture first",
                self.cfg.max_captures
            ));
        }
        *starting += 1;
        Ok(Reservation {
            starting: &self.starting,
        })
    }

    pub async fn start(&self, req: CaptureRequest) -> Result<CaptureStatus, String> {
        let dumpcap = self.dumpcap()?;
        if req.duration_s < 1 || req.duration_s > self.cfg.max_capture_duration {
            return Err(format!(
                "duration must be between 1 and {} seconds (MAX_CAPTURE_DURATION), got {}",
                self.cfg.max_capture_duration, req.duration_s
            ));
        }
        if let Some(p) = req.max_packets
            && (p == 0 || p > HARD_MAX_PACKETS)
        {
            return Err(format!(
                "max_packets must be between 1 and {HARD_MAX_PACKETS}, got {p}"
            ));
        }
        let size_mb = req.max_size_mb.unwrap_or(DEFAULT_MAX_SIZE_MB);
        if size_mb == 0 || size_mb > HARD_MAX_SIZE_MB {
            return Err(format!(
                "max_size_mb must be between 1 and {HARD_MAX_SIZE_MB}, got {size_mb}"
            ));
        }
        let names = self.interface_names().await?;
        if !names.contains(&req.interface) {
            return Err(format!(
                "interface {:?} is not one dumpcap can capture on. Available: {}. Call list_network_interfaces for details",
                req.interface,
                names.join(", ")
            ));
        }
        if let Some(f) = req
            .capture_filter
            .as_deref()
            .filter(|f| !f.trim().is_empty())
        {
            self.check_bpf(&dumpcap, &req.interface, f).await?;
        }
        let reservation = self.reserve()?;
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let started = SystemTime::now();
        let epoch = started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let id = format!("cap-{epoch}-{n}");
        let file_name = match &req.output_file {
            Some(name) => name.trim().to_string(),
            None => {
                let iface: String = req
                    .interface
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let stamp = rfc3339(epoch as f64)[..19]
                    .replace([':', '-'], "")
                    .replace('T', "-");
                format!("capture-{iface}-{stamp}-{n}.pcapng")
            }
        };
        let (out_file, path) = Sandbox::new(&self.cfg).create_output(&file_name)?;

        let mut args: Vec<String> = vec![
            "-i".into(),
            req.interface.clone(),
            "-w".into(),
            "-".into(),
            "-a".into(),
            format!("duration:{}", req.duration_s),
            "-a".into(),
            format!("filesize:{}", size_mb * 1000),
            "-q".into(),
        ];
        if let Some(c) = req.max_packets {
            args.push("-c".into());
            args.push(c.to_string());
        }
        if let Some(f) = req
            .capture_filter
            .as_deref()
            .filter(|f| !f.trim().is_empty())
        {
            args.push("-f".into());
            args.push(f.to_string());
        }
        let mut cmd = Command::new(&dumpcap);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        #[cfg(unix)]
        cmd.process_group(0);
        #[cfg(target_os = "linux")]
        {
            let parent = std::process::id() as i32;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // the server died between fork and prctl: do not start at all
                    if libc::getppid() != parent {
                        libc::_exit(1);
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(|e| {
            let _ = std::fs::remove_file(&path);
            format!("cannot start dumpcap ({}): {e}", dumpcap.display())
        })?;
        let entry = Arc::new(Entry {
            id: id.clone(),
            req: req.clone(),
            path: path.clone(),
            file_name: file_name.clone(),
            started,
            started_at: Instant::now(),
            pid: child.id(),
            inner: Mutex::new(EntryState {
                state: CaptureState::Running,
                ended_at: None,
                stop_requested: false,
                error: None,
            }),
            done: tokio::sync::Notify::new(),
        });
        self.entries
            .lock()
            .unwrap()
            .insert(id.clone(), entry.clone());
        drop(reservation);

        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut out_file = tokio::fs::File::from_std(out_file);
        // The server writes the file: dumpcap's stream, copied as it arrives, so status
        // calls see the packets so far.
        let copier = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut failed = None;
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if failed.is_none()
                            && let Err(e) = out_file.write_all(&buf[..n]).await
                        {
                            // keep draining so dumpcap can stop cleanly
                            failed = Some(format!("writing the capture file failed: {e}"));
                        }
                    }
                    Err(e) => {
                        failed = Some(format!("reading dumpcap's output failed: {e}"));
                        break;
                    }
                }
            }
            let _ = out_file.flush().await;
            failed
        });
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let watched = entry.clone();
        tokio::spawn(async move {
            let reader = tokio::spawn(async move {
                let mut err = Vec::new();
                let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut err).await;
                let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
                err
            });
            let limit = Duration::from_secs(watched.req.duration_s + 15);
            let status = match tokio::time::timeout(limit, child.wait()).await {
                Ok(s) => s.ok(),
                Err(_) => {
                    // dumpcap should have stopped itself; make sure it does
                    signal(watched.pid, libc::SIGTERM);
                    if tokio::time::timeout(Duration::from_secs(3), child.wait())
                        .await
                        .is_err()
                    {
                        signal(watched.pid, libc::SIGKILL);
                    }
                    child.wait().await.ok()
                }
            };
            let err = reader.await.unwrap_or_default();
            let write_error = copier.await.unwrap_or(None);
            let text = String::from_utf8_lossy(&err).into_owned();
            let mut st = watched.inner.lock().unwrap();
            st.ended_at = Some(Instant::now());
            let ok = status.is_some_and(|s| s.success());
            st.state = if let Some(e) = write_error {
                st.error = Some(e);
                CaptureState::Failed
            } else if st.stop_requested {
                CaptureState::Stopped
            } else if ok {
                CaptureState::Finished
            } else {
                st.error = Some(dumpcap_error(&text));
                CaptureState::Failed
            };
            drop(st);
            watched.done.notify_waiters();
        });
        // dumpcap writes the pcapng header once the interface is open: wait for it, so the
        // caller's traffic is captured from the moment we answer, and a capture that fails
        // at once (permissions, interface down) is reported as failed.
        let ready_by = Instant::now() + Duration::from_secs(5);
        while Instant::now() < ready_by
            && entry.inner.lock().unwrap().state == CaptureState::Running
            && std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) == 0
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(self.status_of(&entry))
    }

    async fn check_bpf(
        &self,
        dumpcap: &PathBuf,
        interface: &str,
        filter: &str,
    ) -> Result<(), String> {
        let out = run_dumpcap(dumpcap, &["-i", interface, "-f", filter, "-d"]).await?;
        // dumpcap -d exits 0 even for a bad filter; compiled code starts with "(000)"
        if out.stdout.contains("(000)") {
            Ok(())
        } else {
            Err(format!(
                "capture_filter {filter:?} was rejected: {}. Use BPF (tcpdump) syntax, e.g. `tcp port 443` or `host 10.0.0.5`",
                dumpcap_error(&out.stderr).trim_end_matches('.')
            ))
        }
    }

    pub async fn stop(&self, id: &str) -> Result<CaptureStatus, String> {
        let entry = self.get(id)?;
        terminate(entry.clone()).await;
        Ok(self.status_of(&entry))
    }

    pub fn status(&self, id: Option<&str>) -> Result<Vec<CaptureStatus>, String> {
        match id {
            Some(id) => Ok(vec![self.status_of(&*self.get(id)?)]),
            None => {
                let mut all: Vec<Arc<Entry>> =
                    self.entries.lock().unwrap().values().cloned().collect();
                all.sort_by_key(|e| std::cmp::Reverse(e.started_at));
                Ok(all.iter().map(|e| self.status_of(e)).collect())
            }
        }
    }

    fn get(&self, id: &str) -> Result<Arc<Entry>, String> {
        self.entries.lock().unwrap().get(id.trim()).cloned().ok_or_else(|| {
            format!("no capture with id {id:?}; call get_capture_status without an id to list the captures of this server")
        })
    }

    fn status_of(&self, e: &Entry) -> CaptureStatus {
        let st = e.inner.lock().unwrap();
        let end = st.ended_at.unwrap_or_else(Instant::now);
        let elapsed = end.duration_since(e.started_at).as_secs_f64();
        let start_epoch = e
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let (packets, bytes) = crate::pcapfile::count_packets(&e.path);
        let fix = st.error.as_deref().map(fix_for);
        CaptureStatus {
            capture_id: e.id.clone(),
            state: st.state,
            interface: e.req.interface.clone(),
            capture_filter: e.req.capture_filter.clone(),
            file: e.file_name.clone(),
            start_time: rfc3339(start_epoch),
            scheduled_stop_time: rfc3339(start_epoch + e.req.duration_s as f64),
            elapsed_s: crate::report::round(elapsed, 3),
            remaining_s: if st.state == CaptureState::Running {
                crate::report::round((e.req.duration_s as f64 - elapsed).max(0.0), 3)
            } else {
                0.0
            },
            duration_limit_s: e.req.duration_s,
            max_packets: e.req.max_packets,
            max_size_mb: e.req.max_size_mb.unwrap_or(DEFAULT_MAX_SIZE_MB),
            bytes,
            packets,
            error: st.error.clone(),
            fix,
        }
    }

    /// Stops every running capture, all at once; called when the server exits.
    pub async fn shutdown(&self) {
        let entries: Vec<Arc<Entry>> = self.entries.lock().unwrap().values().cloned().collect();
        let mut stops = tokio::task::JoinSet::new();
        for e in entries {
            stops.spawn(terminate(e));
        }
        while stops.join_next().await.is_some() {}
    }
}

/// Asks a running dumpcap to stop so it finalises its file; kills it if it does not.
async fn terminate(entry: Arc<Entry>) {
    {
        let mut st = entry.inner.lock().unwrap();
        if st.state != CaptureState::Running {
            return;
        }
        st.stop_requested = true;
    }
    let notified = entry.done.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    // libpcap hands packets over in blocks (TPACKET_V3) after a timeout; dumpcap does
    // not drain the kernel ring on SIGTERM, so give in-flight packets time to reach the
    // file before asking it to stop.
    tokio::time::sleep(STOP_DRAIN).await;
    signal(entry.pid, libc::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(10), &mut notified)
        .await
        .is_err()
    {
        signal(entry.pid, libc::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(3), entry.done.notified()).await;
    }
}

fn signal(pid: Option<u32>, sig: i32) {
    #[cfg(unix)]
    if let Some(pid) = pid {
        // SAFETY: signals the dumpcap child we spawned (its own process group).
        unsafe {
            libc::kill(-(pid as i32), sig);
        }
    }
}

pub struct DumpcapOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

pub async fn run_dumpcap(bin: &PathBuf, args: &[&str]) -> Result<DumpcapOutput, String> {
    let fut = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .map_err(|_| "dumpcap did not answer within 20 s".to_string())?
        .map_err(|e| format!("cannot run dumpcap ({}): {e}", bin.display()))?;
    Ok(DumpcapOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// dumpcap's own error lines, without its banner.
pub fn dumpcap_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| {
            !l.starts_with("Capturing on") && !l.starts_with("File:") && !l.starts_with("Packets")
        })
        .filter(|l| !l.starts_with("Running as user"))
        .collect();
    if lines.is_empty() {
        "dumpcap exited with an error and no message".into()
    } else {
        lines.join(" ").trim_start_matches("dumpcap: ").to_string()
    }
}

/// The one-line fix for a capture error on this OS.
pub fn fix_for(error: &str) -> String {
    let e = error.to_ascii_lowercase();
    if e.contains("permission")
        || e.contains("operation not permitted")
        || e.contains("you don't have permission")
    {
        permission_fix().to_string()
    } else if e.contains("no such device") || e.contains("no device named") {
        "The interface does not exist (any more); call list_network_interfaces and pick one of its names".into()
    } else if e.contains("filter") {
        "Fix the capture filter: BPF (tcpdump) syntax, e.g. `tcp port 443`".into()
    } else {
        "Run `pcap-analyzer-mcp-server doctor` to check dumpcap and capture permissions".into()
    }
}

pub fn permission_fix() -> &'static str {
    if cfg!(target_os = "linux") {
        "Allow capture without root: `sudo setcap cap_net_raw,cap_net_admin=eip $(which dumpcap)` or add the user to the wireshark group (`sudo usermod -aG wireshark $USER`, then log in again); in Docker add --cap-add=NET_RAW --cap-add=NET_ADMIN"
    } else if cfg!(target_os = "macos") {
        "Install Wireshark's ChmodBPF (it adds you to the access_bpf group), then log out and in again"
    } else if cfg!(windows) {
        "Install Npcap (https://npcap.com) with 'Restrict Npcap driver's access to Administrators only' unchecked"
    } else {
        "Give this user permission to open capture devices (see dumpcap's documentation for this OS)"
    }
}
