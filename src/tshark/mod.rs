//! The one place that runs tshark and capinfos.
//!
//! Argv only, never a shell. stdout is streamed line by line into the caller's reducer,
//! so memory stays bounded by what the reducer keeps. stderr is kept for the error
//! message. Every child runs in its own process group and is killed with it on
//! timeout, on cancellation and when the server exits; a semaphore caps how many run.

pub mod fields;

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::sandbox::{CaptureFile, OpenedFile};

/// tshark's stdout buffer when coreutils' stdbuf can set it. Into a pipe, glibc buffers
/// 4 KiB, so a pass printing 190 MB of fields wakes the reader ~46,000 times; measured on
/// the 200 MB bench mix, the server's own CPU for the index pass went from ~10 s to
/// ~7.5 s with 1 MiB writes (and tshark's system time from ~1.4 s to ~1 s). Output still
/// streams: a MiB is a few thousand lines.
pub const STDOUT_BUFFER: usize = 1 << 20;

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
    /// What the child printed on stderr (cleaned) although it succeeded: tshark reports
    /// some failures, such as an exported object it could not write, only there.
    pub messages: String,
}

/// Which queue a child waits in: full passes over a capture are capped by
/// PCAP_MAX_TSHARK; quick checks (compiling a filter against an empty capture) have
/// their own small lane so they never wait behind a slow pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Pass,
    Quick,
}

/// How long a quick check may take, queue included.
const QUICK_TIMEOUT: Duration = Duration::from_secs(20);

/// One child to run: what it reads and how long it may take.
pub struct Job<'a> {
    pub args: &'a [String],
    /// Files the child reads through inherited descriptors: an argument equal to a
    /// file's path (or ending in `:path`, for preferences) is rewritten to `/dev/fd/N`.
    pub files: &'a [&'a OpenedFile],
    /// The file whose read position is the progress.
    pub progress_of: Option<&'a OpenedFile>,
    pub lane: Lane,
    pub timeout: Duration,
    /// Why the timeout applies, for its message.
    pub timeout_setting: &'static str,
    /// The largest file the child may write (RLIMIT_FSIZE): a write past it fails
    /// with EFBIG instead of filling the disk. None for children that write no files.
    pub file_size_limit: Option<u64>,
}

pub struct Runner {
    cfg: Arc<Config>,
    slots: Semaphore,
    quick: Semaphore,
    /// A valid, empty pcap used to compile display filters before a real run. An
    /// unnamed file: nothing is left behind if the server is killed.
    empty_pcap: OpenedFile,
    good_filters: Mutex<HashSet<String>>,
    /// Process groups of the children running now, killed at shutdown.
    live: Arc<Mutex<HashSet<i32>>>,
    /// Whether this tshark accepts `-X read_format:` with the names we use.
    forced_reader: tokio::sync::OnceCell<bool>,
    /// Every field name this tshark knows (`-G fields`), one per line: read once, when
    /// a client names an unknown field and needs suggestions.
    field_names: tokio::sync::OnceCell<String>,
}

/// wiretap's names for its pcap and pcapng readers (tshark 4.x).
const PCAP_READER: &str = "Wireshark/tcpdump/... - pcap";
const PCAPNG_READER: &str = "Wireshark/... - pcapng";

impl Runner {
    pub fn new(cfg: Arc<Config>) -> anyhow::Result<Self> {
        use std::io::Write;
        let mut empty = tempfile::tempfile()?;
        // pcap global header: magic, v2.4, tz 0, sigfigs 0, snaplen 65535, linktype 1 (Ethernet)
        let mut hdr = Vec::with_capacity(24);
        hdr.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        hdr.extend_from_slice(&2u16.to_le_bytes());
        hdr.extend_from_slice(&4u16.to_le_bytes());
        hdr.extend_from_slice(&0i32.to_le_bytes());
        hdr.extend_from_slice(&0u32.to_le_bytes());
        hdr.extend_from_slice(&65535u32.to_le_bytes());
        hdr.extend_from_slice(&1u32.to_le_bytes());
        empty.write_all(&hdr)?;
        empty.flush()?;
        Ok(Self {
            slots: Semaphore::new(cfg.max_tshark),
            quick: Semaphore::new(4),
            cfg,
            empty_pcap: OpenedFile {
                file: Arc::new(empty),
                path: "empty.pcap".into(),
            },
            good_filters: Mutex::new(HashSet::new()),
            live: Arc::default(),
            forced_reader: tokio::sync::OnceCell::new(),
            field_names: tokio::sync::OnceCell::new(),
        })
    }

    pub fn tshark_path(&self) -> &Path {
        &self.cfg.tshark
    }

    /// The arguments every tshark reading a capture starts with. The reader is forced
    /// to the format the magic bytes named: when wiretap's pcap/pcapng reader rejects a
    /// file, tshark would otherwise try its other readers and show a damaged capture as
    /// JSON, text or one raw "MIME file" frame.
    pub async fn read_args(&self, file: &CaptureFile) -> Vec<String> {
        let mut a = Vec::with_capacity(16);
        if !self.cfg.name_resolution {
            a.push("-n".to_string());
        }
        if self.forces_reader().await {
            let reader = match file.format {
                crate::sandbox::CaptureFormat::Pcap => PCAP_READER,
                crate::sandbox::CaptureFormat::Pcapng => PCAPNG_READER,
            };
            a.push("-X".into());
            a.push(format!("read_format:{reader}"));
        }
        // a stream with holes and out-of-order fills (loss before the capture point)
        // is reassembled only with this: without it a 2 MiB response delivered over a
        // lossy path never becomes an HTTP response, and its request looks unanswered
        a.push("-o".into());
        a.push("tcp.reassemble_out_of_order:TRUE".into());
        a.push("-r".into());
        a.push(file.path().display().to_string());
        a
    }

    /// Asks this tshark once whether it knows our reader names (another version may
    /// name them differently; then the option is left out rather than failing every run).
    async fn forces_reader(&self) -> bool {
        *self
            .forced_reader
            .get_or_init(|| async {
                let args = vec![
                    "-n".to_string(),
                    "-X".into(),
                    format!("read_format:{PCAP_READER}"),
                    "-r".into(),
                    self.empty_pcap.path.display().to_string(),
                ];
                let ok = self.run_quick(&args).await.is_ok();
                if !ok {
                    tracing::warn!("this tshark does not know the reader name {PCAP_READER:?}; damaged captures may be read by other readers");
                }
                ok
            })
            .await
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
        if let Some(c) = filter
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            return Err(format!(
                "invalid display_filter: it contains the control character U+{:04X}; a Wireshark display filter is plain text, e.g. `ip.addr == 10.0.0.5 && tcp.port == 443`",
                c as u32
            ));
        }
        let args = vec![
            "-n".to_string(),
            "-r".into(),
            self.empty_pcap.path.display().to_string(),
            "-Y".into(),
            filter.to_string(),
        ];
        match self.run_quick(&args).await {
            Ok(_) => {
                self.good_filters.lock().unwrap().insert(filter.to_string());
                Ok(())
            }
            Err(e) if e.contains("did not finish") || e.contains("memory") => Err(e),
            Err(e) => Err(format!(
                "invalid display_filter {filter:?}: {}. Use Wireshark display filter syntax, e.g. `ip.addr == 10.0.0.5 && tcp.port == 443`",
                e.trim_start_matches("tshark: ")
            )),
        }
    }

    /// Checks a client's field names for `-e`: each must be a field or protocol this
    /// tshark knows, or the error names the unknown ones with close names to use.
    pub async fn check_fields(&self, fields: &[String]) -> Result<(), String> {
        for f in fields {
            let ok = !f.is_empty()
                && f.len() <= 128
                && f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                && !f.starts_with('-');
            if !ok {
                return Err(format!(
                    "{f:?} is not a Wireshark field name: names are letters, digits, '.', '_' and '-', like `ip.src` or `http.request.uri`"
                ));
            }
        }
        let mut args = vec![
            "-n".to_string(),
            "-r".into(),
            self.empty_pcap.path.display().to_string(),
            "-T".into(),
            "fields".into(),
        ];
        for f in fields {
            args.push("-e".into());
            args.push(f.clone());
        }
        let err = match self.run_quick(&args).await {
            Ok(_) => return Ok(()),
            Err(e) if e.contains("aren't valid") => e,
            Err(e) => return Err(e),
        };
        let names = self.field_names().await;
        let unknown: Vec<&str> = fields
            .iter()
            .map(String::as_str)
            .filter(|f| err.lines().any(|l| l.trim() == *f))
            .collect();
        let mut msg = String::from("unknown field name(s) for this tshark:");
        for u in &unknown {
            let close = close_names(u, names, 5);
            msg.push_str(&format!(
                " {u} (did you mean {}?);",
                if close.is_empty() {
                    "a name from `tshark -G fields`".to_string()
                } else {
                    close.join(", ")
                }
            ));
        }
        msg.pop();
        msg.push_str(". `tshark -G fields` lists every name");
        Err(msg)
    }

    async fn field_names(&self) -> &str {
        self.field_names
            .get_or_init(|| async {
                let mut names = String::new();
                let args = ["-G".to_string(), "fields".into()];
                let job = Job {
                    args: &args,
                    files: &[],
                    progress_of: None,
                    lane: Lane::Quick,
                    timeout: QUICK_TIMEOUT,
                    timeout_setting: "its fixed limit for quick checks",
                    file_size_limit: None,
                };
                // "F\tDisplay name\tfield.name\t..." and "P\tProtocol\tabbrev"
                let ctl = Control::default();
                let run = self.run_job(&self.cfg.tshark, job, &ctl, |l| {
                    let mut cols = l.split('\t');
                    let name = match cols.next() {
                        Some("F" | "P") => cols.nth(1),
                        _ => None,
                    };
                    if let Some(n) = name {
                        names.push_str(n);
                        names.push('\n');
                    }
                });
                if let Err(e) = run.await {
                    tracing::warn!("tshark -G fields failed: {e}");
                }
                names
            })
            .await
    }

    /// Runs tshark over a capture (and a key log, when given), feeding each stdout line
    /// to `on_line`. `timeout` overrides PCAP_TSHARK_TIMEOUT for runs with their own budget.
    pub async fn run(
        &self,
        args: &[String],
        file: &CaptureFile,
        keylog: Option<&OpenedFile>,
        timeout: Option<(Duration, &'static str)>,
        ctl: &Control,
        on_line: impl FnMut(&str),
    ) -> Result<RunEnd, String> {
        let mut files = vec![&file.opened];
        files.extend(keylog);
        let (timeout, timeout_setting) =
            timeout.unwrap_or((self.cfg.tshark_timeout, "PCAP_TSHARK_TIMEOUT"));
        let job = Job {
            args,
            files: &files,
            progress_of: Some(&file.opened),
            lane: Lane::Pass,
            timeout,
            timeout_setting,
            file_size_limit: None,
        };
        self.run_job(&self.cfg.tshark, job, ctl, on_line).await
    }

    /// Runs `workers` tsharks at once over the flow partitions of a capture (see
    /// `split`, planned by `routing`), each reading its partition on stdin (`args`
    /// read `-r -`), and hands every line each prints to `on_line` with its partition
    /// and the table that maps the partition's frame numbers back to the capture's.
    /// Lines of one partition arrive in its order; partitions interleave as their
    /// output comes.
    ///
    /// Every child's output is drained as it comes, whichever the caller waits for:
    /// the splitter writes frames in file order, so a child left unread would stop
    /// the splitter and, through it, every other child.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_split(
        &self,
        args: &[String],
        file: &CaptureFile,
        keylog: Option<&OpenedFile>,
        workers: usize,
        routing: Arc<crate::split::Routing>,
        timeout: Option<(Duration, &'static str)>,
        ctl: &Control,
        mut on_line: impl FnMut(usize, &str, &FrameMap),
    ) -> Result<(RunEnd, Arc<FrameMap>), String> {
        let bin = self.cfg.tshark.clone();
        let name = "tshark";
        let (timeout, setting) =
            timeout.unwrap_or((self.cfg.tshark_timeout, "PCAP_TSHARK_TIMEOUT"));
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let _slots = tokio::select! {
            s = self.slots.acquire_many(workers as u32) => s.map_err(|_| "the server is shutting down".to_string())?,
            _ = ctl.cancel.cancelled() => return Err("cancelled".into()),
            _ = &mut deadline => return Err(timed_out(name, timeout, setting)),
        };
        let files: Vec<&OpenedFile> = keylog.into_iter().collect();
        let job = Job {
            args,
            files: &files,
            progress_of: None,
            lane: Lane::Pass,
            timeout,
            timeout_setting: setting,
            file_size_limit: None,
        };
        let mut children = Vec::with_capacity(workers);
        let mut inputs = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (reader, writer) =
                std::io::pipe().map_err(|e| format!("cannot make a pipe for tshark: {e}"))?;
            #[cfg(target_os = "linux")]
            {
                use std::os::fd::AsRawFd;
                // SAFETY: fcntl on a descriptor this function owns.
                unsafe {
                    libc::fcntl(writer.as_raw_fd(), libc::F_SETPIPE_SZ, STDOUT_BUFFER as i32)
                };
            }
            children.push(self.spawn(&bin, &job, Stdio::from(reader))?);
            inputs.push(std::io::BufWriter::with_capacity(256 * 1024, writer));
        }
        let frames = Arc::new(FrameMap::new(workers));
        let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let size = file.size.max(1);
        let input = file
            .opened
            .reopen()
            .map_err(|e| format!("cannot read {}: {e}", file.display_name))?;
        let splitter = {
            let (frames, read) = (frames.clone(), read.clone());
            let limit = file.size;
            tokio::task::spawn_blocking(move || {
                let r = crate::split::split(
                    input,
                    limit,
                    &mut inputs,
                    &routing,
                    |p| frames.push(p),
                    &read,
                );
                // flushed or not, dropping the writers closes the pipes: each tshark
                // sees its input end
                let flushed = inputs.iter_mut().try_for_each(std::io::Write::flush);
                r.and(flushed)
            })
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Vec<u8>)>(4 * workers);
        let mut waits = Vec::with_capacity(workers);
        for (p, sp) in children.into_iter().enumerate() {
            let Spawned {
                child,
                guard,
                mut stdout,
                stderr,
            } = sp;
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    let mut chunk = vec![0u8; 256 * 1024];
                    match stdout.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            chunk.truncate(n);
                            if tx.send((p, chunk)).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            waits.push((child, guard, stderr));
        }
        drop(tx);
        let mut lines: Vec<Lines> = (0..workers).map(|_| Lines::default()).collect();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let stop = |waits: Vec<_>, why: String| async move {
            for (mut child, guard, _) in waits {
                drop(guard);
                let _: Result<_, _> = tokio::process::Child::wait(&mut child).await;
            }
            Err(why)
        };
        loop {
            tokio::select! {
                biased;
                _ = ctl.cancel.cancelled() => return stop(waits, "cancelled".into()).await,
                _ = &mut deadline => return stop(waits, timed_out(name, timeout, setting)).await,
                _ = tick.tick() => {
                    let done = read.load(std::sync::atomic::Ordering::Relaxed);
                    ctl.permille.store((done.saturating_mul(1000) / size).min(999) as u32, Ordering::Relaxed);
                }
                got = rx.recv() => match got {
                    Some((p, chunk)) => lines[p].feed(&chunk, &mut |l| on_line(p, l, &frames)),
                    None => break,
                },
            }
        }
        for (p, l) in lines.iter_mut().enumerate() {
            l.end(&mut |line| on_line(p, line, &frames));
        }
        let mut end = RunEnd::default();
        let mut failure = None;
        for (mut child, mut guard, stderr) in waits {
            let (status, text) = reap(&mut child, &mut guard, stderr).await?;
            match self.outcome(&bin, status, &text) {
                Ok(e) => {
                    end.warning = end.warning.or(e.warning);
                    if end.messages.is_empty() {
                        end.messages = e.messages;
                    }
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        let split = splitter
            .await
            .map_err(|e| format!("splitting the capture failed: {e}"))?;
        if let Some(e) = failure {
            return Err(e);
        }
        split.map_err(|e| format!("splitting the capture by flow failed: {e}"))?;
        tracing::info!(frames = ?frames.sizes(), "the split pass's partitions");
        ctl.permille.store(1000, Ordering::Relaxed);
        Ok((end, frames))
    }

    /// A quick check of tshark against the empty capture (its own lane, a short limit).
    async fn run_quick(&self, args: &[String]) -> Result<RunEnd, String> {
        let job = Job {
            args,
            files: &[&self.empty_pcap],
            progress_of: None,
            lane: Lane::Quick,
            timeout: QUICK_TIMEOUT,
            timeout_setting: "its fixed limit for quick checks",
            file_size_limit: None,
        };
        self.run_job(&self.cfg.tshark, job, &Control::default(), |_| {})
            .await
    }

    /// Kills every child still running; called when the server exits.
    pub fn kill_all(&self) {
        for pgid in self.live.lock().unwrap().drain() {
            // SAFETY: kill(2) on a process group we created.
            #[cfg(unix)]
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }

    async fn run_job(
        &self,
        bin: &Path,
        job: Job<'_>,
        ctl: &Control,
        on_line: impl FnMut(&str),
    ) -> Result<RunEnd, String> {
        let mut lines = LineSink {
            on_line,
            lines: Lines::default(),
        };
        self.run_job_into(bin, job, ctl, &mut lines).await
    }

    /// Runs tshark over a capture with its stdout written, as bytes, into `out` (at
    /// most `limit` bytes: past it the run stops with an error). Files the child writes
    /// itself (`--export-objects`) are capped at `child_file_limit` each. Returns the
    /// bytes written and how the run ended.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_to_file(
        &self,
        args: &[String],
        file: &CaptureFile,
        keylog: Option<&OpenedFile>,
        ctl: &Control,
        out: std::fs::File,
        limit: u64,
        child_file_limit: Option<u64>,
    ) -> Result<(u64, RunEnd), String> {
        let mut files = vec![&file.opened];
        files.extend(keylog);
        let job = Job {
            args,
            files: &files,
            progress_of: Some(&file.opened),
            lane: Lane::Pass,
            timeout: self.cfg.tshark_timeout,
            timeout_setting: "PCAP_TSHARK_TIMEOUT",
            file_size_limit: child_file_limit,
        };
        let mut sink = FileSink {
            out: std::io::BufWriter::new(out),
            written: 0,
            limit,
        };
        let end = self
            .run_job_into(&self.cfg.tshark, job, ctl, &mut sink)
            .await?;
        use std::io::Write;
        sink.out
            .flush()
            .map_err(|e| format!("writing the output file failed: {e}"))?;
        Ok((sink.written, end))
    }

    async fn run_job_into(
        &self,
        bin: &Path,
        job: Job<'_>,
        ctl: &Control,
        sink: &mut impl Output,
    ) -> Result<RunEnd, String> {
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let deadline = tokio::time::sleep(job.timeout);
        tokio::pin!(deadline);
        let timed_out = || timed_out(&name, job.timeout, job.timeout_setting);
        let sem = match job.lane {
            Lane::Pass => &self.slots,
            Lane::Quick => &self.quick,
        };
        // the time spent queueing counts against the same budget
        let _slot = tokio::select! {
            s = sem.acquire() => s.map_err(|_| "the server is shutting down".to_string())?,
            _ = ctl.cancel.cancelled() => return Err("cancelled".into()),
            _ = &mut deadline => return Err(timed_out()),
        };
        let Spawned {
            mut child,
            mut guard,
            mut stdout,
            stderr: err_task,
        } = self.spawn(bin, &job, Stdio::null())?;
        let pid = child.id();
        // read in chunks: one select per 256 KiB, not per line (a pass prints hundreds
        // of thousands of short lines)
        let mut chunk = vec![0u8; 256 * 1024];
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let progress_of = job.progress_of;
        let file_size = progress_of.map(|f| f.current_size()).unwrap_or(0);
        loop {
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
                    return Err(timed_out());
                }
                _ = tick.tick() => {
                    if let (Some(f), Some(pid)) = (progress_of, pid)
                        && let Some(pos) = read_position(pid, &f.path)
                            && file_size > 0 {
                                let pm = (pos.saturating_mul(1000) / file_size).min(999) as u32;
                                ctl.permille.store(pm, Ordering::Relaxed);
                            }
                }
                // read is cancel-safe: a read that loses the select consumed nothing
                n = stdout.read(&mut chunk) => {
                    match n {
                        Ok(0) => {
                            sink.end();
                            break;
                        }
                        Ok(n) => {
                            if let Err(e) = sink.data(&chunk[..n]) {
                                drop(guard);
                                let _ = child.wait().await;
                                return Err(e);
                            }
                        }
                        Err(e) => return Err(format!("reading {name} output failed: {e}")),
                    }
                }
            }
        }
        let (status, stderr_text) = reap(&mut child, &mut guard, err_task).await?;
        if progress_of.is_some() {
            ctl.permille.store(1000, Ordering::Relaxed);
        }
        self.outcome(bin, status, &stderr_text)
    }

    /// Starts one child of `job` in its own process group, with our limits and the
    /// job's files on descriptors 3, 4, ...; the guard kills the group when dropped.
    fn spawn(&self, bin: &Path, job: &Job<'_>, stdin: Stdio) -> Result<Spawned, String> {
        let args: Vec<String> = job.args.iter().map(|a| fd_argument(a, job.files)).collect();
        let mut cmd = match &self.cfg.stdbuf {
            Some(stdbuf) => {
                let mut c = Command::new(stdbuf);
                c.arg(format!("--output={STDOUT_BUFFER}")).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(&args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let memory = self.cfg.child_memory_bytes;
        let file_size_limit = job.file_size_limit;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            let fds: Vec<i32> = job.files.iter().map(|f| f.file.as_raw_fd()).collect();
            let parent = std::process::id() as i32;
            cmd.process_group(0);
            // SAFETY: only async-signal-safe calls between fork and exec; `fds` is
            // allocated before the fork and only read in the child.
            unsafe {
                cmd.pre_exec(move || child_setup(parent, &fds, memory, file_size_limit));
            }
        }
        tracing::debug!(?args, "spawning {}", bin.display());
        let mut child = cmd.spawn().map_err(|e| cannot_start(bin, e))?;
        let pid = child.id();
        if let Some(p) = pid {
            self.live.lock().unwrap().insert(p as i32);
        }
        let guard = GroupGuard {
            pid,
            live: self.live.clone(),
        };
        let stdout = child.stdout.take().expect("stdout is piped");
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // a pipe as large as tshark's writes: one wake-up per MiB; refused (e.g. above
            // /proc/sys/fs/pipe-max-size for an unprivileged user) it stays at 64 KiB
            // SAFETY: fcntl on a descriptor this function owns.
            unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, STDOUT_BUFFER as i32) };
        }
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf).await;
            // drain the rest so the child never blocks on a full pipe
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            String::from_utf8_lossy(&buf).into_owned()
        });
        Ok(Spawned {
            child,
            guard,
            stdout,
            stderr,
        })
    }

    /// What a finished child's exit status and stderr mean for its output.
    fn outcome(
        &self,
        bin: &Path,
        status: std::process::ExitStatus,
        stderr_text: &str,
    ) -> Result<RunEnd, String> {
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let message = clean_stderr(stderr_text);
        if status.success() {
            return Ok(RunEnd {
                warning: None,
                messages: message,
            });
        }
        // stdbuf's own codes for a command it could not run (tshark removed or replaced
        // since the server started)
        if self.cfg.stdbuf.is_some() && matches!(status.code(), Some(126 | 127)) {
            return Err(cannot_start(bin, message));
        }
        if out_of_memory(&message, &status) {
            return Err(format!(
                "{name} ran out of the memory it may use ({} MB, PCAP_CHILD_MEMORY_MB) and was stopped; narrow the analysis with a display_filter or a time range, or the operator can raise PCAP_CHILD_MEMORY_MB",
                self.cfg.child_memory_bytes / (1024 * 1024)
            ));
        }
        if is_partial_read(&message) {
            return Ok(RunEnd {
                warning: Some(message.clone()),
                messages: message,
            });
        }
        Err(if message.is_empty() {
            format!("{name} exited with {status}")
        } else {
            message
        })
    }
}

/// Where each partition's frames came from: the k-th frame of partition p is
/// original frame `frames[p][k - 1]`. Filled by the splitter before the frame's bytes
/// reach the partition's tshark, so a line about a frame always finds it here.
pub struct FrameMap {
    parts: Vec<Mutex<Vec<u32>>>,
    next: std::sync::atomic::AtomicU32,
}

impl FrameMap {
    fn new(n: usize) -> Self {
        Self {
            parts: (0..n).map(|_| Mutex::default()).collect(),
            next: std::sync::atomic::AtomicU32::new(1),
        }
    }

    /// A map of partitions holding these original frames, in order.
    #[cfg(test)]
    pub fn for_test(parts: &[Vec<u32>]) -> Self {
        Self {
            parts: parts.iter().map(|v| Mutex::new(v.clone())).collect(),
            next: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn push(&self, p: usize) {
        let frame = self.next.fetch_add(1, Ordering::Relaxed);
        self.parts[p].lock().unwrap().push(frame);
    }

    /// How many frames each partition holds.
    pub fn sizes(&self) -> Vec<usize> {
        self.parts.iter().map(|p| p.lock().unwrap().len()).collect()
    }

    /// The capture's frame number of partition `p`'s frame `local` (1-based).
    pub fn original(&self, p: usize, local: u64) -> Option<u64> {
        let i = usize::try_from(local.checked_sub(1)?).ok()?;
        self.parts
            .get(p)?
            .lock()
            .unwrap()
            .get(i)
            .map(|&f| u64::from(f))
    }
}

/// A child as `Runner::spawn` started it: its stdout to read, its stderr being drained
/// (the first 64 KiB kept for its message).
struct Spawned {
    child: tokio::process::Child,
    guard: GroupGuard,
    stdout: tokio::process::ChildStdout,
    stderr: tokio::task::JoinHandle<String>,
}

/// Waits for a child that closed its stdout, ends its group, and takes its stderr.
async fn reap(
    child: &mut tokio::process::Child,
    guard: &mut GroupGuard,
    stderr: tokio::task::JoinHandle<String>,
) -> Result<(std::process::ExitStatus, String), String> {
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for tshark failed: {e}"))?;
    guard.reaped();
    Ok((status, stderr.await.unwrap_or_default()))
}

/// The message of a child stopped at its time limit.
fn timed_out(name: &str, timeout: Duration, setting: &str) -> String {
    format!(
        "{name} did not finish within {} s and was stopped ({setting}); narrow the analysis with a display_filter{}",
        timeout.as_secs(),
        if setting.starts_with("PCAP_") {
            format!(", or the operator can raise {setting}")
        } else {
            String::new()
        }
    )
}

/// A child that could not be started, whether the spawn failed or stdbuf could not run it.
fn cannot_start(bin: &Path, why: impl std::fmt::Display) -> String {
    format!(
        "cannot start {}: {why}; run `pcap-analyzer-mcp-server doctor`",
        bin.display()
    )
}

/// The argument a child sees: a checked file's path becomes its inherited descriptor.
fn fd_argument(arg: &str, files: &[&OpenedFile]) -> String {
    #[cfg(unix)]
    for (i, f) in files.iter().enumerate() {
        let path = f.path.display().to_string();
        let fd = format!("/dev/fd/{}", FIRST_FD + i as i32);
        if arg == path {
            return fd;
        }
        if let Some(prefix) = arg.strip_suffix(path.as_str())
            && prefix.ends_with(':')
        {
            return format!("{prefix}{fd}");
        }
    }
    #[cfg(not(unix))]
    let _ = files;
    arg.to_string()
}

/// Descriptors 3, 4, ... carry the files a child reads.
#[cfg(unix)]
const FIRST_FD: i32 = 3;

/// Runs in the child between fork and exec: its own process group (set by
/// `process_group`), death with the server, a memory ceiling, a file size ceiling when
/// it writes files, and the inherited files on descriptors 3, 4, ...
#[cfg(unix)]
pub fn child_setup(
    parent: i32,
    fds: &[i32],
    memory: u64,
    file_size: Option<u64>,
) -> std::io::Result<()> {
    // SAFETY (all calls): async-signal-safe system calls on plain integers.
    unsafe {
        #[cfg(target_os = "linux")]
        {
            // The signal fires when the *thread* that forked exits. Children are spawned
            // from the runtime's worker threads, which live as long as the server.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // the server died between fork and prctl: do not start at all
            if libc::getppid() != parent {
                libc::_exit(1);
            }
        }
        if memory > 0 {
            let lim = libc::rlimit {
                rlim_cur: memory as libc::rlim_t,
                rlim_max: memory as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if let Some(max) = file_size {
            let lim = libc::rlimit {
                rlim_cur: max as libc::rlim_t,
                rlim_max: max as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // ignored, a write past the limit fails with EFBIG (tshark reports it and
            // goes on) instead of SIGXFSZ killing the child; exec keeps it ignored
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
        // move the sources out of the way first, so dup2 never clobbers one not yet moved
        let mut moved = [0i32; 8];
        for (i, &fd) in fds.iter().take(moved.len()).enumerate() {
            let m = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
            if m < 0 {
                return Err(std::io::Error::last_os_error());
            }
            moved[i] = m;
        }
        for (i, &m) in moved.iter().take(fds.len().min(8)).enumerate() {
            // dup2 clears close-on-exec on the new descriptor
            if libc::dup2(m, FIRST_FD + i as i32) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// GLib's message when an allocation fails, or the abort that follows it.
fn out_of_memory(message: &str, status: &std::process::ExitStatus) -> bool {
    if message.contains("failed to allocate") || message.contains("Out of memory") {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        matches!(
            status.signal(),
            Some(libc::SIGABRT | libc::SIGTRAP | libc::SIGSEGV)
        ) && message.contains("alloc")
    }
    #[cfg(not(unix))]
    {
        let _ = status;
        false
    }
}

/// Kills the child's whole process group when dropped before the child was reaped.
struct GroupGuard {
    pid: Option<u32>,
    live: Arc<Mutex<HashSet<i32>>>,
}

impl GroupGuard {
    fn reaped(&mut self) {
        if let Some(pid) = self.pid.take() {
            // the group may still hold grandchildren; it is ours to end
            #[cfg(unix)]
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
            self.live.lock().unwrap().remove(&(pid as i32));
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.reaped();
    }
}

/// Where tshark's read position is in the capture, from /proc (Linux only).
/// The child reads through its own open of the inherited descriptor: the furthest
/// position among its descriptors on the capture is how far it got.
fn read_position(pid: u32, path: &Path) -> Option<u64> {
    let fd_dir = format!("/proc/{pid}/fd");
    let mut best = None;
    for entry in std::fs::read_dir(&fd_dir).ok()?.flatten() {
        if std::fs::read_link(entry.path()).ok().as_deref() == Some(path) {
            let pos = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                entry.file_name().to_string_lossy()
            ))
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("pos:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            });
            best = best.max(pos);
        }
    }
    best
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

/// Where a child's stdout goes.
trait Output {
    fn data(&mut self, data: &[u8]) -> Result<(), String>;
    fn end(&mut self) {}
}

/// Splits stdout into lines (without the line end) for a callback.
struct LineSink<F> {
    on_line: F,
    lines: Lines,
}

/// The lines of a byte stream read in chunks: a line cut by a chunk's end waits here
/// for the rest.
#[derive(Default)]
struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    fn emit(on_line: &mut impl FnMut(&str), line: &[u8]) {
        let mut end = line.len();
        while end > 0 && matches!(line[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        on_line(&String::from_utf8_lossy(&line[..end]));
    }

    fn feed(&mut self, data: &[u8], on_line: &mut impl FnMut(&str)) {
        let mut start = 0;
        // lines of the index pass are ~450 bytes: a vectorised search for their ends
        while let Some(i) = memchr::memchr(b'\n', &data[start..]) {
            let end = start + i;
            if self.pending.is_empty() {
                Self::emit(on_line, &data[start..end]);
            } else {
                self.pending.extend_from_slice(&data[start..end]);
                Self::emit(on_line, &self.pending);
                self.pending.clear();
            }
            start = end + 1;
        }
        self.pending.extend_from_slice(&data[start..]);
    }

    /// A last line without a newline.
    fn end(&mut self, on_line: &mut impl FnMut(&str)) {
        if !self.pending.is_empty() {
            Self::emit(on_line, &self.pending);
            self.pending.clear();
        }
    }
}

impl<F: FnMut(&str)> Output for LineSink<F> {
    fn data(&mut self, data: &[u8]) -> Result<(), String> {
        self.lines.feed(data, &mut self.on_line);
        Ok(())
    }
    fn end(&mut self) {
        self.lines.end(&mut self.on_line);
    }
}

/// Copies stdout into a file the server created, up to a byte limit.
struct FileSink {
    out: std::io::BufWriter<std::fs::File>,
    written: u64,
    limit: u64,
}

impl Output for FileSink {
    fn data(&mut self, data: &[u8]) -> Result<(), String> {
        use std::io::Write;
        self.written += data.len() as u64;
        if self.written > self.limit {
            return Err(format!(
                "the output grew past {} MB and was stopped; narrow the selection",
                self.limit >> 20
            ));
        }
        self.out
            .write_all(data)
            .map_err(|e| format!("writing the output file failed: {e}"))
    }
}

/// The `n` names of `names` (one per line) closest to `unknown` by edit distance, ties
/// by name; only names no further than half the unknown's length.
pub fn close_names(unknown: &str, names: &str, n: usize) -> Vec<String> {
    let u: Vec<char> = unknown.to_ascii_lowercase().chars().collect();
    let limit = (u.len() / 2).max(2);
    let mut scored: Vec<(usize, &str)> = names
        .lines()
        .filter(|c| c.len().abs_diff(u.len()) <= limit)
        .map(|c| (edit_distance(&u, c), c))
        .filter(|(d, _)| *d <= limit)
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(n)
        .map(|(_, c)| c.to_string())
        .collect()
}

fn edit_distance(a: &[char], b: &str) -> usize {
    let b: Vec<char> = b.to_ascii_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
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
    fn close_field_names_are_suggested() {
        let names = "ip.src\nip.dst\nip.src_host\ntcp.srcport\nhttp.request.uri\n";
        assert_eq!(close_names("ip.srcx", names, 2), ["ip.src"]);
        assert_eq!(
            close_names("http.request.url", names, 5),
            ["http.request.uri"]
        );
        assert!(close_names("zzzzzzzzzz", names, 5).is_empty());
    }

    #[test]
    fn quoting_is_shell_safe() {
        assert_eq!(shell_quote("-Y"), "-Y");
        assert_eq!(shell_quote("tcp.port == 80"), "'tcp.port == 80'");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote("aggregator=\u{1f}"), r"$'aggregator=\x1f'");
    }

    #[test]
    fn memory_ceiling_is_recognised() {
        // recorded: tshark under RLIMIT_AS when GLib cannot allocate, then aborts
        let msg = "(process:4242): GLib-ERROR **: 15:01:02.123: ../../../glib/gmem.c:112: failed to allocate 34359738368 bytes";
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            let aborted = std::process::ExitStatus::from_raw(libc::SIGTRAP);
            assert!(out_of_memory(msg, &aborted));
            let ok = std::process::ExitStatus::from_raw(0);
            assert!(!out_of_memory(
                "tshark: Unexpected end of filter expression.",
                &ok
            ));
        }
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
