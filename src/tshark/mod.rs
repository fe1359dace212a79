//! The one place that runs tshark and capinfos.
//!
//! Argv only, never a shell. stdout is streamed line by line into the caller's reducer,
//! so memory stays bounded by what the reducer keeps. stderr is kept for the error
//! message. Every child runs in its own process group and is killed with it on
//! timeout, on cancellation and when the server exits; a semaphore caps how many run.

pub mod capinfos;
pub mod fields;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::lru::Lru;
use crate::sandbox::CaptureFile;

/// What a running analysis shares with whoever waits for it.
#[derive(Clone, Default)]
pub struct Control {
    pub cancel: CancellationToken,
    /// Fraction of the capture read so far, in thousandths.
    pub permille: Arc<AtomicU32>,
}

impl Control {
    pub fn percent(&self) -> f64 {
        f64::from(self.permille.load(Ordering::Relaxed)) / 10.0
    }
}

/// How a tshark run ended when it produced usable output.
#[derive(Debug, Default, Clone)]
pub struct RunEnd {
    /// The capture could only be read in part (cut short, damaged): results cover what was read.
    pub warning: Option<String>,
}

pub struct Runner {
    cfg: Arc<Config>,
    slots: Semaphore,
    /// A valid, empty pcap used to compile display filters before a real run.
    empty_pcap: tempfile::NamedTempFile,
    good_filters: Mutex<HashSet<String>>,
    capinfos_cache: Mutex<Lru<capinfos::CapInfo>>,
}

impl Runner {
    pub fn new(cfg: Arc<Config>) -> anyhow::Result<Self> {
        use std::io::Write;
        let mut empty_pcap = tempfile::Builder::new()
            .prefix("pcap-analyzer-empty-")
            .suffix(".pcap")
            .tempfile()?;
        // pcap global header: magic, v2.4, tz 0, sigfigs 0, snaplen 65535, linktype 1 (Ethernet)
        let mut hdr = Vec::with_capacity(24);
        hdr.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        hdr.extend_from_slice(&2u16.to_le_bytes());
        hdr.extend_from_slice(&4u16.to_le_bytes());
        hdr.extend_from_slice(&0i32.to_le_bytes());
        hdr.extend_from_slice(&0u32.to_le_bytes());
        hdr.extend_from_slice(&65535u32.to_le_bytes());
        hdr.extend_from_slice(&1u32.to_le_bytes());
        empty_pcap.write_all(&hdr)?;
        empty_pcap.flush()?;
        Ok(Self {
            slots: Semaphore::new(cfg.max_tshark),
            cfg,
            empty_pcap,
            good_filters: Mutex::new(HashSet::new()),
            capinfos_cache: Mutex::new(Lru::new(64)),
        })
    }

    pub fn tshark_path(&self) -> &Path {
        &self.cfg.tshark
    }

    /// The arguments every tshark reading a capture starts with.
    pub fn read_args(&self, file: &CaptureFile) -> Vec<String> {
        let mut a = Vec::with_capacity(16);
        if !self.cfg.name_resolution {
            a.push("-n".to_string());
        }
        a.push("-r".into());
        a.push(file.path.display().to_string());
        a
    }

    /// A command line a person can paste into a shell to reproduce a run.
    pub fn command_line(&self, args: &[String]) -> String {
        std::iter::once("tshark".to_string())
            .chain(args.iter().map(|a| shell_quote(a)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Compiles a client's display filter on its own, before it is combined with a
    /// tool's filter: `(a) && (b)` only keeps its meaning when `a` is a whole filter,
    /// so something like `tcp) || (udp` is refused here rather than reinterpreted.
    pub async fn check_display_filter(&self, filter: &str) -> Result<(), String> {
        if self.good_filters.lock().unwrap().contains(filter) {
            return Ok(());
        }
        if filter.len() > 4096 {
            return Err("display_filter is longer than 4096 characters; narrow it".into());
        }
        let args = vec![
            "-n".to_string(),
            "-r".into(),
            self.empty_pcap.path().display().to_string(),
            "-Y".into(),
            filter.to_string(),
        ];
        let out = self
            .run_binary(&self.cfg.tshark, &args, None, &Control::default(), |_| {})
            .await;
        match out {
            Ok(_) => {
                self.good_filters.lock().unwrap().insert(filter.to_string());
                Ok(())
            }
            Err(e) => Err(format!(
                "invalid display_filter {filter:?}: {}. Use Wireshark display filter syntax, e.g. `ip.addr == 10.0.0.5 && tcp.port == 443`",
                e.trim_start_matches("tshark: ")
            )),
        }
    }

    /// Runs tshark on a capture, feeding each stdout line to `on_line`.
    pub async fn run(
        &self,
        args: &[String],
        file: &CaptureFile,
        ctl: &Control,
        on_line: impl FnMut(&str),
    ) -> Result<RunEnd, String> {
        self.run_binary(&self.cfg.tshark, args, Some(&file.path), ctl, on_line)
            .await
    }

    pub async fn capinfos(&self, file: &CaptureFile) -> Option<capinfos::CapInfo> {
        let key = file.identity();
        if let Some(hit) = self.capinfos_cache.lock().unwrap().get(&key) {
            return Some(hit);
        }
        let bin = self.cfg.capinfos.clone()?;
        let args = capinfos::args(&file.path);
        let mut text = String::new();
        let res = self
            .run_binary(&bin, &args, None, &Control::default(), |l| {
                text.push_str(l);
                text.push('\n');
            })
            .await;
        // capinfos reports a cut-short file with a non-zero exit but still prints its table
        if let Err(e) = &res {
            tracing::debug!("capinfos on {}: {e}", file.path.display());
        }
        let info = capinfos::parse(&text)?;
        self.capinfos_cache.lock().unwrap().put(key, info.clone());
        Some(info)
    }

    async fn run_binary(
        &self,
        bin: &Path,
        args: &[String],
        progress_of: Option<&PathBuf>,
        ctl: &Control,
        mut on_line: impl FnMut(&str),
    ) -> Result<RunEnd, String> {
        let _slot = tokio::select! {
            s = self.slots.acquire() => s.map_err(|_| "the server is shutting down".to_string())?,
            _ = ctl.cancel.cancelled() => return Err("cancelled".into()),
        };
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        tracing::debug!(?args, "spawning {name}");
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start {}: {e}; run `pcap-analyzer-mcp-server doctor`",
                bin.display()
            )
        })?;
        let pid = child.id();
        let mut guard = GroupGuard(pid);
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let err_task = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf).await;
            // drain the rest so the child never blocks on a full pipe
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            String::from_utf8_lossy(&buf).into_owned()
        });

        let mut reader = BufReader::with_capacity(256 * 1024, stdout);
        let mut line = Vec::with_capacity(1024);
        let deadline = tokio::time::sleep(self.cfg.tshark_timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let file_size = progress_of
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .unwrap_or(0);
        loop {
            // `line` is cleared only after a whole line was handled: when another branch
            // wins the select, read_until keeps the bytes it read so far in `line`.
            tokio::select! {
                biased;
                _ = ctl.cancel.cancelled() => {
                    drop(guard);
                    let _ = child.wait().await;
                    return Err("cancelled".into());
                }
                _ = &mut deadline => {
                    drop(guard);
                    let _ = child.wait().await;
                    return Err(format!(
                        "{name} did not finish within {} s and was stopped; narrow the analysis with a display_filter, or the operator can raise PCAP_TSHARK_TIMEOUT",
                        self.cfg.tshark_timeout.as_secs()
                    ));
                }
                _ = tick.tick() => {
                    if let (Some(path), Some(pid)) = (progress_of, pid)
                        && let Some(pos) = read_position(pid, path)
                            && file_size > 0 {
                                let pm = (pos.saturating_mul(1000) / file_size).min(999) as u32;
                                ctl.permille.store(pm, Ordering::Relaxed);
                            }
                }
                n = reader.read_until(b'\n', &mut line) => {
                    match n {
                        Ok(0) => {
                            // a last line without a newline
                            if !line.is_empty() {
                                on_line(&String::from_utf8_lossy(&line));
                            }
                            break;
                        }
                        Ok(_) => {
                            if line.last() == Some(&b'\n') {
                                while matches!(line.last(), Some(b'\n' | b'\r')) {
                                    line.pop();
                                }
                                on_line(&String::from_utf8_lossy(&line));
                                line.clear();
                            }
                        }
                        Err(e) => return Err(format!("reading {name} output failed: {e}")),
                    }
                }
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|e| format!("waiting for {name} failed: {e}"))?;
        guard.0 = None;
        let stderr_text = err_task.await.unwrap_or_default();
        let message = clean_stderr(&stderr_text);
        if progress_of.is_some() {
            ctl.permille.store(1000, Ordering::Relaxed);
        }
        if status.success() {
            return Ok(RunEnd::default());
        }
        if is_partial_read(&message) {
            return Ok(RunEnd {
                warning: Some(message),
            });
        }
        Err(if message.is_empty() {
            format!("{name} exited with {status}")
        } else {
            message
        })
    }
}

/// Kills the child's whole process group when dropped before the child was reaped.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0 {
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}

/// Where tshark's read position is in the capture, from /proc (Linux only).
fn read_position(pid: u32, path: &Path) -> Option<u64> {
    let fd_dir = format!("/proc/{pid}/fd");
    for entry in std::fs::read_dir(&fd_dir).ok()?.flatten() {
        if std::fs::read_link(entry.path()).ok().as_deref() == Some(path) {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                entry.file_name().to_string_lossy()
            ))
            .ok()?;
            return info
                .lines()
                .find_map(|l| l.strip_prefix("pos:"))
                .and_then(|v| v.trim().parse().ok());
        }
    }
    None
}

/// tshark's stderr without the root warning and blank lines.
fn clean_stderr(s: &str) -> String {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with("Running as user"))
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Messages with which tshark reports a capture it could read only in part.
pub fn is_partial_read(msg: &str) -> bool {
    msg.contains("cut short in the middle of a packet")
        || msg.contains("appears to be damaged or corrupt")
        || msg.contains("has a packet larger than")
}

pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else if s.chars().any(char::is_control) {
        // bash's $'...' keeps control characters (our aggregator) pasteable
        let mut out = String::from("$'");
        for c in s.chars() {
            match c {
                '\'' => out.push_str("\\'"),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_is_shell_safe() {
        assert_eq!(shell_quote("-Y"), "-Y");
        assert_eq!(shell_quote("tcp.port == 80"), "'tcp.port == 80'");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote("aggregator=\u{1f}"), r"$'aggregator=\x1f'");
    }

    #[test]
    fn stderr_cleanup() {
        let s = "Running as user \"root\" and group \"root\". This could be dangerous.\ntshark: Unexpected end of filter expression.\n";
        assert_eq!(
            clean_stderr(s),
            "tshark: Unexpected end of filter expression."
        );
        assert!(is_partial_read(
            "tshark: The file \"x\" appears to have been cut short in the middle of a packet."
        ));
    }
}
