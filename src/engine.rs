//! Shared mechanics of every file-analysis tool: open the capture through the sandbox,
//! check the client's display filter, run the analysis as a cached job, and hand the
//! tool an [`Analysis`] through which it runs tshark.

use std::future::Future;
use std::sync::{Arc, Mutex};

use rmcp::{Json, RoleServer, service::RequestContext};
use serde::Serialize;

use crate::capture::CaptureManager;
use crate::config::Config;
use crate::index::{CaptureIndex, Part, PartMaker};
use crate::jobs::{Jobs, Outcome, ProgressReporter, release_freed_memory};
use crate::lru::Lru;
use crate::pcapfile::CaptureSummary;
use crate::report::{CaptureFacts, Evidence, Finding, Report, Scope, Severity, rfc3339};
use crate::sandbox::{CaptureFile, KeyLog, Sandbox};
use crate::timescope::{TimeRange, TimeScope};
use crate::tshark::fields::{FromRow, field_args};
use crate::tshark::{Control, RunEnd, Runner};

pub struct Engine {
    pub cfg: Arc<Config>,
    pub tshark: Runner,
    pub jobs: Jobs,
    pub captures: CaptureManager,
    /// Capture indexes by file identity and scope: every analysis tool reads one, so a
    /// capture and scope cost one tshark pass; concurrent callers wait for the one being
    /// built. Bounded by their estimated bytes (PCAP_CACHE_MB).
    indexes: Mutex<Lru<IndexCell>>,
    /// The parts every index holds (declared with the tools that read them).
    parts: &'static [PartMaker],
    /// Our own reader's facts per file identity (cheap, but a full read of the file).
    summaries: Mutex<Lru<Arc<CaptureSummary>>>,
    /// Results a tool pages through (a followed stream), so that the next page does not
    /// re-read the capture. Bounded by their bytes, least recently used first out.
    memos: Mutex<Lru<Arc<dyn std::any::Any + Send + Sync>>>,
}

/// The bytes the paged-result cache (`Engine::memo_put`) may hold.
const MEMO_BYTES: usize = 64 << 20;

type IndexCell = Arc<tokio::sync::OnceCell<Arc<CaptureIndex>>>;

/// The arguments every file-analysis tool shares; the rest of its parameters only
/// need to serialize (they key the cache).
pub trait FileArgs: Serialize + Send + 'static {
    fn pcap_file(&self) -> &str;
    fn display_filter(&self) -> Option<&str>;
    /// A per-call TLS key log, for tools that offer one.
    fn tls_keylog_file(&self) -> Option<&str> {
        None
    }
    /// The time range the client asked for, as written.
    fn time_scope(&self) -> Option<&TimeScope> {
        None
    }
}

/// Implements [`FileArgs`] for parameter structs with `pcap_file` and `display_filter` fields.
#[macro_export]
macro_rules! file_args {
    ($($t:ty),+ $(,)?) => {$(
        impl $crate::engine::FileArgs for $t {
            fn pcap_file(&self) -> &str {
                &self.pcap_file
            }
            fn display_filter(&self) -> Option<&str> {
                self.display_filter.as_deref()
            }
            fn time_scope(&self) -> Option<&$crate::timescope::TimeScope> {
                Some(&self.time)
            }
        }
    )+};
    (keylog: $($t:ty),+ $(,)?) => {$(
        impl $crate::engine::FileArgs for $t {
            fn pcap_file(&self) -> &str {
                &self.pcap_file
            }
            fn display_filter(&self) -> Option<&str> {
                self.display_filter.as_deref()
            }
            fn tls_keylog_file(&self) -> Option<&str> {
                self.tls_keylog_file.as_deref().filter(|s| !s.trim().is_empty())
            }
            fn time_scope(&self) -> Option<&$crate::timescope::TimeScope> {
                Some(&self.time)
            }
        }
    )+};
}

/// What a tool's result type is: a report that also serializes as the tool's output.
pub type ToolResult<T> = Result<Json<Report<T>>, String>;

impl Engine {
    pub fn new(cfg: Config, parts: &'static [PartMaker]) -> anyhow::Result<Arc<Self>> {
        let cfg = Arc::new(cfg);
        Ok(Arc::new(Self {
            tshark: Runner::new(cfg.clone())?,
            jobs: Jobs::default(),
            captures: CaptureManager::new(cfg.clone()),
            indexes: Mutex::new(Lru::with_bytes(64, cfg.cache_bytes)),
            parts,
            summaries: Mutex::new(Lru::new(256)),
            memos: Mutex::new(Lru::with_bytes(32, MEMO_BYTES)),
            cfg,
        }))
    }

    pub fn sandbox(&self) -> Sandbox<'_> {
        Sandbox::new(&self.cfg)
    }

    /// The facts of a capture from our own record walk, up to its size at open.
    pub async fn summary(&self, file: &CaptureFile) -> Result<Arc<CaptureSummary>, String> {
        let key = file.identity();
        if let Some(hit) = self.summaries.lock().unwrap().get(&key) {
            return Ok(hit);
        }
        let reader = file
            .opened
            .reopen()
            .map_err(|e| format!("cannot read {}: {e}", file.display_name))?;
        let size = file.size;
        let s = tokio::task::spawn_blocking(move || crate::pcapfile::summarize(reader, size))
            .await
            .map_err(|e| format!("reading the capture failed: {e}"))?
            .map_err(|e| format!("cannot read {}: {e}", file.display_name))?;
        let s = Arc::new(s);
        self.summaries.lock().unwrap().put(key, s.clone());
        Ok(s)
    }

    /// A result cached by `memo_put` under `key`, if still there.
    pub fn memo_get<T: Send + Sync + 'static>(&self, key: &str) -> Option<Arc<T>> {
        self.memos.lock().unwrap().get(key)?.downcast::<T>().ok()
    }

    /// Caches a result of about `bytes` for `memo_get`; older ones beyond the budget go.
    pub fn memo_put<T: Send + Sync + 'static>(&self, key: String, v: Arc<T>, bytes: usize) {
        let mut m = self.memos.lock().unwrap();
        m.put(key.clone(), v);
        m.weigh(&key, bytes.max(1));
    }

    /// Stops every tshark child; called when the server exits.
    pub async fn shutdown(&self) {
        self.captures.shutdown().await;
        self.tshark.kill_all();
    }

    /// Runs one tool's analysis of one capture: sandbox, filter check, cache, background
    /// continuation past the call deadline, progress and cancellation.
    pub async fn analyze<T, P, F, Fut>(
        self: &Arc<Self>,
        tool: &str,
        params: P,
        rc: RequestContext<RoleServer>,
        run: F,
    ) -> ToolResult<T>
    where
        T: Clone + Send + Sync + 'static,
        P: FileArgs,
        F: FnOnce(Analysis, P) -> Fut,
        Fut: Future<Output = Result<Report<T>, String>> + Send + 'static,
    {
        let keylog = match (params.tls_keylog_file(), &self.cfg.tls_keylog_file) {
            (Some(k), _) => Some(self.sandbox().open_keylog(k, "tls_keylog_file")?),
            (None, Some(k)) => Some(self.sandbox().open_keylog(k, "PCAP_TLS_KEYLOG_FILE")?),
            (None, None) => None,
        };
        let pcap_file = params.pcap_file().to_string();
        let display_filter = params.display_filter().map(str::to_string);
        let args = serde_json::to_string(&params).unwrap_or_default();
        // a caller who asked for a bigger page gets it, within the larger budget
        let asked_for_more = serde_json::from_str::<serde_json::Value>(&args)
            .ok()
            .is_some_and(|v| crate::fit::SIZE_PARAMETERS.iter().any(|k| !v[*k].is_null()));
        let pcap_file = pcap_file.as_str();
        let display_filter = display_filter.as_deref();
        let file = self.sandbox().open_capture(pcap_file)?;
        let filter = display_filter
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_string);
        if let Some(f) = &filter {
            self.tshark.check_display_filter(f).await?;
        }
        // a time range is resolved against the capture's own clock, then becomes one
        // more clause of the scope's filter: the index of a time range is the index of
        // that filter, keyed by absolute bounds whatever form the client wrote
        let time = match params
            .time_scope()
            .filter(|t| !t.is_empty() || t.timezone.is_some())
        {
            Some(t) => {
                let s = self.summary(&file).await?;
                match (s.first_ns, s.last_ns) {
                    (Some(first), Some(last)) => t.resolve(first, last)?.map(|r| (r, first)),
                    _ => None,
                }
            }
            None => None,
        };
        let user_filter = filter.clone();
        let filter = match (&filter, &time) {
            (_, None) => filter,
            (None, Some((r, _))) => Some(r.filter_clause()),
            (Some(u), Some((r, _))) => Some(format!("({u}) && {}", r.filter_clause())),
        };
        let check_file = file.clone();
        let check_engine = self.clone();
        let key = format!(
            "{tool}|{}|{args}|{}",
            file.identity(),
            keylog.as_ref().map(|k| k.identity.as_str()).unwrap_or("")
        );
        let progress = rc.meta.get_progress_token().map(|token| ProgressReporter {
            peer: rc.peer.clone(),
            token,
            of_what: "of the capture read",
        });
        let engine = self.clone();
        let file_for_job = file.clone();
        let filter_for_job = filter.clone();
        let user_filter_for_job = user_filter.clone();
        let outcome = self
            .jobs
            .run(
                key,
                self.cfg.call_deadline,
                rc.ct.clone(),
                progress,
                move |ctl| {
                    let analysis = Analysis {
                        engine,
                        file: file_for_job,
                        filter: filter_for_job,
                        user_filter: user_filter_for_job,
                        time,
                        ctl,
                        commands: Vec::new(),
                        warning: None,
                        keylog,
                        time_budget: None,
                    };
                    let analysed = run(analysis, params);
                    async move {
                        // a file with nothing tshark can read gets an error, not an empty
                        // "healthy" result
                        let summary = check_engine.summary(&check_file).await?;
                        if summary.packets == 0 {
                            return Err(unreadable(&check_file, &summary));
                        }
                        analysed.await
                    }
                },
            )
            .await?;
        match outcome {
            Outcome::Done(mut report) => {
                if asked_for_more {
                    report.budget = crate::fit::ASKED_BUDGET;
                }
                Ok(Json(report))
            }
            Outcome::Running(pct) => {
                let facts = CaptureFacts {
                    file: file.display_name.clone(),
                    format: format!("{:?}", file.format).to_lowercase(),
                    size_bytes: file.size,
                    ..Default::default()
                };
                Ok(Json(Report::running(
                    facts,
                    Scope {
                        display_filter: user_filter,
                        time_range: time.map(|(r, first)| r.scope(first)),
                        note: None,
                    },
                    pct,
                )))
            }
        }
    }
}

/// The error for a capture that holds no frame tshark can read.
fn unreadable(file: &CaptureFile, s: &CaptureSummary) -> String {
    match &s.damaged {
        Some(why) => format!(
            "{} holds no packet that can be read: {why}. Check that the file was copied whole; `capinfos` and `tshark -r` report the same",
            file.display_name
        ),
        None => format!(
            "{} holds no packets (only a file header, {} bytes): there is nothing to analyse. If it is a capture still being written, call again once packets have arrived",
            file.display_name, s.file_bytes
        ),
    }
}

/// One tool's view of one capture while its analysis runs.
pub struct Analysis {
    pub engine: Arc<Engine>,
    pub file: CaptureFile,
    /// The scope as one display filter: the client's filter (already compiled on its
    /// own) and the time range's clause. Every pass of this analysis runs with it.
    pub filter: Option<String>,
    /// The client's display filter alone, for the result's scope and next steps.
    pub user_filter: Option<String>,
    /// The time range in effect and the capture's first packet time (nanoseconds) it
    /// was resolved against.
    pub time: Option<(TimeRange, i128)>,
    pub ctl: Control,
    /// Every tshark command line run, for the report.
    pub commands: Vec<String>,
    /// Set when tshark could read the file only in part.
    pub warning: Option<String>,
    /// TLS key log in effect: tshark decrypts TLS with it.
    pub keylog: Option<KeyLog>,
    /// A time budget of its own for this analysis' tshark runs (and the setting that
    /// holds it), instead of PCAP_TSHARK_TIMEOUT.
    pub time_budget: Option<(std::time::Duration, &'static str)>,
}

/// Time span and count of what a pass saw, for the capture facts.
#[derive(Debug, Default, Clone, Copy)]
pub struct Span {
    pub packets: u64,
    pub first: Option<f64>,
    pub last: Option<f64>,
}

impl Span {
    /// The whole file, as its own record walk counted it.
    pub fn of_file(s: &CaptureSummary) -> Self {
        Self {
            packets: s.packets,
            first: s.first_epoch,
            last: s.last_epoch,
        }
    }

    pub fn add(&mut self, t: Option<f64>) {
        self.packets += 1;
        if let Some(t) = t {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
    }
    pub fn duration(&self) -> f64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) => (b - a).max(0.0),
            _ => 0.0,
        }
    }
}

impl Analysis {
    /// Another view of the same capture and scope (the triage runs every family's
    /// check through one), sharing its index and cancellation.
    pub fn sibling(&self) -> Analysis {
        Analysis {
            engine: self.engine.clone(),
            file: self.file.clone(),
            filter: self.filter.clone(),
            user_filter: self.user_filter.clone(),
            time: self.time,
            ctl: self.ctl.clone(),
            commands: Vec::new(),
            warning: None,
            keylog: self.keylog.clone(),
            time_budget: self.time_budget,
        }
    }

    /// The same display filter over another capture (the second file of a comparison),
    /// sharing this call's cancellation. No time range: two captures keep two clocks,
    /// and a range written for one means nothing in the other.
    pub async fn other_capture(&self, pcap_file: &str) -> Result<Analysis, String> {
        let file = self.engine.sandbox().open_capture(pcap_file)?;
        let summary = self.engine.summary(&file).await?;
        if summary.packets == 0 {
            return Err(unreadable(&file, &summary));
        }
        Ok(Analysis {
            file,
            filter: self.user_filter.clone(),
            time: None,
            ..self.sibling()
        })
    }

    /// The client's filter combined with the tool's own. Both compile on their own,
    /// so parenthesising keeps each one's meaning.
    pub fn combined_filter(&self, tool_filter: Option<&str>) -> Option<String> {
        match (self.filter.as_deref(), tool_filter) {
            (Some(u), Some(t)) => Some(format!("({u}) && ({t})")),
            (Some(u), None) => Some(u.to_string()),
            (None, Some(t)) => Some(t.to_string()),
            (None, None) => None,
        }
    }

    /// tshark's whole argument list for `args` on this capture and scope.
    async fn full_args(&self, tool_filter: Option<&str>, args: &[String]) -> Vec<String> {
        self.full_args_as(tool_filter, args, false).await
    }

    /// `full_args`, with the filter as a two-pass read filter (`-2 -R`) when `read`.
    async fn full_args_as(
        &self,
        tool_filter: Option<&str>,
        args: &[String],
        read: bool,
    ) -> Vec<String> {
        let mut full = self.engine.tshark.read_args(&self.file).await;
        if let Some(k) = &self.keylog {
            // a server-built preference from a sandbox-checked file, never client text
            full.push("-o".into());
            full.push(format!("tls.keylog_file:{}", k.opened.path.display()));
        }
        if let Some(f) = self.combined_filter(tool_filter) {
            if read {
                full.extend(["-2".into(), "-R".into()]);
            } else {
                full.push("-Y".into());
            }
            full.push(f);
        }
        full.extend_from_slice(args);
        full
    }

    /// The tshark command that reproduces a result the server computed another way
    /// (its own record walk): listed with the commands run.
    pub async fn note_equivalent(&mut self, tool_filter: Option<&str>, args: &[String]) {
        let full = self.full_args(tool_filter, args).await;
        self.commands.push(self.engine.tshark.command_line(&full));
    }

    /// Runs tshark with `args` after the read arguments and the combined filter,
    /// streaming each stdout line to `on_line`.
    pub async fn run_lines(
        &mut self,
        tool_filter: Option<&str>,
        args: &[String],
        on_line: impl FnMut(&str),
    ) -> Result<(), String> {
        let full = self.full_args(tool_filter, args).await;
        self.commands.push(self.engine.tshark.command_line(&full));
        let RunEnd { warning, .. } = self
            .engine
            .tshark
            .run(
                &full,
                &self.file,
                self.keylog.as_ref().map(|k| &k.opened),
                self.time_budget,
                &self.ctl,
                on_line,
            )
            .await
            .map_err(|e| self.explain(e))?;
        if warning.is_some() {
            self.warning = warning;
        }
        Ok(())
    }

    /// How many tsharks the index pass of this analysis may split the capture across
    /// (1: one pass). Only a whole-capture scope splits: a display filter prints a
    /// partition's rows only when they match, so a partition with none left could hold
    /// back every other one's rows for the length of the pass; and a filter may name
    /// frame numbers, which a partition numbers its own way.
    pub fn split_workers(&self, summary: &CaptureSummary) -> usize {
        let cfg = &self.engine.cfg;
        let workers = cfg.workers.min(cfg.max_tshark);
        if workers < 2
            || self.filter.is_some()
            || self.file.size < cfg.split_min_bytes
            || summary.damaged.is_some()
            || summary.packets < 2
        {
            return 1;
        }
        workers
    }

    /// Runs the index's tshark arguments over the capture split by flow across
    /// `workers` tsharks (see `split`), each line to `on_line` with its partition and
    /// the table mapping the partition's frames back. The command listed is the one
    /// pass whose output the merged lines reproduce.
    pub async fn run_split_lines(
        &mut self,
        args: &[String],
        workers: usize,
        routing: Arc<crate::split::Routing>,
        ctl: &Control,
        on_line: impl FnMut(usize, &str, &crate::tshark::FrameMap),
    ) -> Result<Arc<crate::tshark::FrameMap>, String> {
        let mut full = self.full_args(None, args).await;
        // the command whose output the merged lines reproduce: what the client can
        // paste, and the same answer (its size included) whatever PCAP_WORKERS is
        self.commands.push(self.engine.tshark.command_line(&full));
        tracing::info!(
            workers,
            file = %self.file.display_name,
            "index pass split by flow across tsharks"
        );
        // every tshark reads its partition from stdin
        let path = self.file.path().display().to_string();
        for a in full.iter_mut() {
            if *a == path {
                *a = "-".into();
            }
        }
        let (end, frames) = self
            .engine
            .tshark
            .run_split(
                &full,
                &self.file,
                self.keylog.as_ref().map(|k| &k.opened),
                workers,
                routing,
                self.time_budget,
                ctl,
                on_line,
            )
            .await
            .map_err(|e| self.explain(e))?;
        if end.warning.is_some() {
            self.warning = end.warning;
        }
        Ok(frames)
    }

    /// Runs tshark with `args` after the read arguments and the scope's filter, its
    /// stdout (a capture written with `-w -`) copied into `out`, at most `limit` bytes.
    pub async fn run_to_file(
        &mut self,
        args: &[String],
        out: std::fs::File,
        limit: u64,
    ) -> Result<u64, String> {
        let full = self.full_args(None, args).await;
        self.run_full_to_file(full, out, limit, None)
            .await
            .map(|(n, _)| n)
    }

    /// Like `run_to_file`, but the scope's filter is a read filter of a two-pass run
    /// (`-2 -R`): what taps such as `--export-objects` see, which `-Y` does not narrow.
    /// Files the child writes itself are capped at `child_file_limit` bytes each.
    pub async fn run_read_filtered_to_file(
        &mut self,
        args: &[String],
        out: std::fs::File,
        limit: u64,
        child_file_limit: u64,
    ) -> Result<(u64, RunEnd), String> {
        let full = self.full_args_as(None, args, true).await;
        self.run_full_to_file(full, out, limit, Some(child_file_limit))
            .await
    }

    async fn run_full_to_file(
        &mut self,
        full: Vec<String>,
        out: std::fs::File,
        limit: u64,
        child_file_limit: Option<u64>,
    ) -> Result<(u64, RunEnd), String> {
        self.commands.push(self.engine.tshark.command_line(&full));
        self.engine
            .tshark
            .run_to_file(
                &full,
                &self.file,
                self.keylog.as_ref().map(|k| &k.opened),
                &self.ctl,
                out,
                limit,
                child_file_limit,
            )
            .await
            .map_err(|e| self.explain(e))
    }

    /// One `-T fields` pass parsed into typed rows.
    pub async fn fields<R: FromRow>(
        &mut self,
        tool_filter: Option<&str>,
        extra: &[&str],
        mut on_row: impl FnMut(R),
    ) -> Result<(), String> {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend(field_args(R::FIELDS));
        self.run_lines(tool_filter, &args, |line| {
            if let Some(r) = R::parse_line(line) {
                on_row(r);
            }
        })
        .await
    }

    fn explain(&self, e: String) -> String {
        if e == "cancelled" {
            return "the analysis was cancelled".into();
        }
        if e.contains("Some fields aren't valid") {
            return format!(
                "{e}\nThis tshark ({}) does not know a field this tool needs; install Wireshark 4.0 or newer",
                self.engine.tshark.tshark_path().display()
            );
        }
        format!("tshark could not analyse {}: {e}", self.file.display_name)
    }

    /// Our own reader's facts about the whole file (as it was when the call began).
    pub async fn summary(&self) -> Result<Arc<CaptureSummary>, String> {
        self.engine.summary(&self.file).await
    }

    /// Capture facts for the report: the file's own facts, `span` for what this
    /// analysis looked at.
    pub async fn capture_facts(&self, span: Span) -> CaptureFacts {
        let info = self.summary().await.ok();
        let (first, last) = match (&info, self.filter.is_some()) {
            (Some(i), false) if i.first_epoch.is_some() => (i.first_epoch, i.last_epoch),
            _ => (span.first, span.last),
        };
        let duration_s = match (first, last) {
            (Some(a), Some(b)) => crate::report::round((b - a).max(0.0), 6),
            _ => 0.0,
        };
        let mut warnings = Vec::new();
        if let Some(w) = info.as_ref().and_then(|i| i.time_warning()) {
            warnings.push(w);
        }
        let now = self.file.opened.current_size();
        if now != self.file.size {
            warnings.push(format!(
                "the file changed size while it was analysed ({} -> {} bytes; a capture still being written?): packets_in_file counts the {} packets of the first {} bytes, while tshark read on, so packets_analysed may include later packets. Call again once the capture has finished for consistent numbers",
                self.file.size,
                now,
                info.as_ref().map_or(0, |i| i.packets),
                self.file.size
            ));
        }
        CaptureFacts {
            file: self.file.display_name.clone(),
            format: format!("{:?}", self.file.format).to_lowercase(),
            size_bytes: self.file.size,
            packets_in_file: info.as_ref().map(|i| i.packets),
            packets_analysed: span.packets,
            first_packet_time: first.map(rfc3339),
            last_packet_time: last.map(rfc3339),
            duration_s,
            read_warning: self
                .warning
                .clone()
                .or_else(|| info.as_ref().and_then(|i| i.damaged.clone())),
            warnings,
        }
    }

    /// The scope's time window: where buckets start and the span they cover.
    pub async fn window(&self) -> crate::index::Window {
        match self.summary().await {
            Ok(s) => {
                crate::index::Window::of(&s, self.user_filter.is_some(), self.time.map(|t| t.0))
            }
            Err(_) => crate::index::Window::default(),
        }
    }

    /// The capture index of this file and scope, built by one pass on first use and
    /// shared by every tool.
    pub async fn index(&mut self) -> Result<Arc<CaptureIndex>, String> {
        // every scope of one file shares this prefix (room is made per file below)
        let file_prefix = format!("{}|", self.file.identity());
        let key = format!(
            "{file_prefix}{:?}|{}",
            self.filter,
            self.keylog
                .as_ref()
                .map(|k| k.identity.as_str())
                .unwrap_or("")
        );
        let cell = {
            let mut indexes = self.engine.indexes.lock().unwrap();
            match indexes.get(&key) {
                Some(c) => c,
                None => {
                    // another scope of a file indexed already is about as large as the
                    // largest one: make room before building, not after, so that peak
                    // memory is one index plus the budget, not two indexes plus it
                    let expected = indexes.largest_with_prefix(&file_prefix);
                    if indexes.make_room(&key, expected) {
                        release_freed_memory();
                    }
                    let c = IndexCell::default();
                    indexes.put(key.clone(), c.clone());
                    c
                }
            }
        };
        let mut built = None;
        let parts = self.engine.parts;
        let index = cell
            .get_or_try_init(|| async {
                let i = CaptureIndex::build(self, parts).await?;
                built = Some(i.approx_bytes());
                Ok::<_, String>(Arc::new(i))
            })
            .await?
            .clone();
        if let Some(bytes) = built {
            // weigh it now that its size is known; older indexes beyond the budget go
            self.engine.indexes.lock().unwrap().weigh(&key, bytes);
            // and the pass's own scaffolding (hashed tables moved into ordered ones,
            // row vectors grown by doubling, then shrunk) goes back to the system
            release_freed_memory();
        }
        // a cached index still reports the pass that built it
        for c in &index.commands {
            if !self.commands.contains(c) {
                self.commands.push(c.clone());
            }
        }
        if self.warning.is_none() {
            self.warning = index.warning.clone();
        }
        Ok(index)
    }

    /// One family's part of the capture index.
    pub async fn part<P: Part>(&mut self) -> Result<Arc<P>, String> {
        self.index().await?.get::<P>()
    }

    /// The finished report: capture facts for `span`, this analysis' scope and commands.
    pub async fn report<T>(
        self,
        summary: String,
        findings: Vec<Finding>,
        data: T,
        span: Span,
        note: Option<String>,
    ) -> Result<Report<T>, String> {
        let capture = self.capture_facts(span).await;
        let scope = self.scope(note);
        let mut findings = findings;
        findings.extend(self.clock_finding().await);
        Ok(Report::complete(
            summary,
            findings,
            data,
            capture,
            scope,
            self.commands,
        ))
    }

    /// A finding for a capture whose clock jumps, which every tool's result carries.
    pub async fn clock_finding(&self) -> Option<Finding> {
        let s = self.summary().await.ok()?;
        let j = s.time_jump.or(s.time_reversal)?;
        let before = j.frame.saturating_sub(1).max(1);
        // a caveat about the capture, not a network problem: low
        Some(Finding::new(
            Severity::Low,
            "The capture clock jumps",
            s.time_warning().unwrap_or_default(),
            Evidence {
                frames: vec![before, j.frame],
                display_filter: format!("frame.number == {before} || frame.number == {}", j.frame),
                ..Default::default()
            },
        ))
    }

    pub fn scope(&self, note: Option<String>) -> Scope {
        Scope {
            display_filter: self.user_filter.clone(),
            time_range: self.time.map(|(r, first)| r.scope(first)),
            note,
        }
    }
}
