//! `analyze_batch`: one read-only analysis over many captures (a list, or a glob inside
//! storage or an allowed directory), a row per file and the findings across files.
//!
//! Each file is analysed by the tool itself, in process, exactly as a direct call would
//! (`PcapServer::call_read_only`: same validation, same capture index and cache), at
//! most PCAP_MAX_TSHARK files at a time. The batch is a background job like any long
//! analysis: past the call deadline it answers "running" with the share of files done,
//! and the same call later gets the finished result.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::jobs::Outcome;
use crate::report::{
    CaptureFacts, Evidence, Finding, NextStep, Report, Scope, Severity, Table, finding_kind,
    some_of,
};
use crate::server::PcapServer;
use crate::tools::clamp_limit;

/// The most captures one batch takes: beyond it, narrow the glob or split the batch.
const MAX_FILES: usize = 500;
/// Files named in one cross-file finding row.
const FILES_LISTED: usize = 10;
/// Characters of each file's own summary kept in its row.
const SUMMARY_CHARS: usize = 160;
/// Cross-file findings raised (the most severe and widespread kinds); the rest are rows
/// of `by_finding`.
const FINDINGS_RAISED: usize = 10;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BatchParams {
    /// The analysis to run on each capture, e.g. `analyze_pcap_file`.
    pub tool: String,
    /// Captures: names in PCAP_STORAGE_DIR or paths in allowed directories.
    #[serde(default)]
    pub files: Option<Vec<String>>,
    /// Or a glob over one directory (wildcards in the file name only), e.g. `*.pcapng`.
    #[serde(default)]
    pub glob: Option<String>,
    /// The tool's other arguments, the same for every file (no `pcap_file`).
    #[serde(default)]
    pub arguments: Option<Map<String, Value>>,
    /// Rows listed per table (default 20, max 500).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// One capture's outcome.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BatchFile {
    pub file: String,
    /// complete, or failed (with `error`).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Findings by severity.
    pub high: usize,
    pub medium: usize,
    pub low: usize,
    pub info: usize,
    /// The most severe finding's title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_finding: Option<String>,
    /// The tool's own summary (shortened).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One kind of finding (its title with the numbers taken out) and the files that have it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FindingAcross {
    /// The title with numbers as `#`.
    pub kind: String,
    /// One real title of this kind.
    pub example: String,
    /// The most severe instance.
    pub severity: Severity,
    pub file_count: usize,
    /// The first files that have it.
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BatchResult {
    pub tool: String,
    /// Captures analysed, most severe first.
    pub files: Table<BatchFile>,
    /// Which files have which findings, most widespread and severe first.
    pub by_finding: Table<FindingAcross>,
    /// Glob matches that are not pcap/pcapng captures, skipped.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub skipped: Vec<String>,
}

/// What one file's analysis gave, as the batch keeps it.
#[derive(Clone)]
struct FileOutcome {
    file: String,
    result: Result<Value, String>,
}

impl PcapServer {
    async fn analyze_batch_impl(
        &self,
        p: BatchParams,
        rc: RequestContext<RoleServer>,
    ) -> Result<Report<BatchResult>, String> {
        let tool = p.tool.trim().to_string();
        if tool == "analyze_batch" {
            return Err(
                "analyze_batch cannot run itself: name an analysis tool, e.g. analyze_pcap_file"
                    .into(),
            );
        }
        if !self.tool_takes("pcap_file", &tool)? {
            return Err(format!(
                "{tool} does not analyse one capture file (it has no pcap_file parameter): a batch runs a file analysis tool, e.g. analyze_pcap_file"
            ));
        }
        let arguments = p.arguments.clone().unwrap_or_default();
        if arguments.contains_key("pcap_file") {
            return Err("arguments must not name pcap_file: the batch gives each file its own (list them in `files` or a `glob`)".into());
        }
        let sandbox = self.engine.sandbox();
        let mut names: Vec<String> = p.files.clone().unwrap_or_default();
        let mut skipped = Vec::new();
        if let Some(g) = p.glob.as_deref().filter(|g| !g.trim().is_empty()) {
            let matched = sandbox.glob(g)?;
            // each match is opened to tell captures from the rest: bound that work too
            if matched.len() > 4 * MAX_FILES {
                return Err(format!(
                    "the glob {g:?} matches {} files; one batch takes at most {MAX_FILES} captures: narrow the glob (e.g. `day1-*.pcapng`)",
                    matched.len()
                ));
            }
            for name in matched {
                // a glob sweeps up what sits beside the captures; only captures count
                match sandbox.open_capture(&name) {
                    Ok(_) => names.push(name),
                    Err(_) => skipped.push(name),
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        if names.is_empty() {
            return Err(match &p.glob {
                Some(g) => format!(
                    "the glob {g:?} matches no capture{}: list_captured_files shows what is in storage",
                    if skipped.is_empty() {
                        String::new()
                    } else {
                        format!(" (only other files: {})", some_of(&skipped, 5))
                    }
                ),
                None => {
                    "no captures given: name them in `files` or give a `glob` such as `*.pcapng`"
                        .into()
                }
            });
        }
        if names.len() > MAX_FILES {
            return Err(format!(
                "{} captures match; one batch takes at most {MAX_FILES}: narrow the glob or split the list",
                names.len()
            ));
        }
        // the job's key: the tool, its arguments and every file's identity, so a file
        // that changed is a new batch; a file that cannot be opened keys by its name
        let identities: Vec<String> = names
            .iter()
            .map(|n| {
                sandbox
                    .open_capture(n)
                    .map_or_else(|e| format!("{n}:{e}"), |f| f.identity())
            })
            .collect();
        let key = format!(
            "analyze_batch|{tool}|{}|{}",
            Value::Object(arguments.clone()),
            identities.join("|")
        );
        let limit = clamp_limit(p.limit, 20);
        let total = names.len();
        let server = self.clone();
        let job_tool = tool.clone();
        let job_names = names.clone();
        let job_rc = rc.clone();
        let workers = self.engine.cfg.max_tshark;
        let outcome = self
            .engine
            .jobs
            .run(
                key,
                self.engine.cfg.call_deadline,
                rc.ct.clone(),
                // the client's progress token hears the share of files done
                rc.meta
                    .get_progress_token()
                    .map(|token| crate::jobs::ProgressReporter {
                        peer: rc.peer.clone(),
                        token,
                        of_what: "of the files analysed",
                    }),
                move |ctl| async move {
                    let gate = Arc::new(tokio::sync::Semaphore::new(workers));
                    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                    let mut set = tokio::task::JoinSet::new();
                    for (i, file) in job_names.into_iter().enumerate() {
                        let (server, tool, gate, done, ctl) = (
                            server.clone(),
                            job_tool.clone(),
                            gate.clone(),
                            done.clone(),
                            ctl.clone(),
                        );
                        let mut args = arguments.clone();
                        args.insert("pcap_file".into(), Value::String(file.clone()));
                        // each file's call: cancelled with the batch, no progress of its own
                        let mut rc = job_rc.clone();
                        rc.ct = ctl.cancel.child_token();
                        rc.meta = Default::default();
                        set.spawn(async move {
                            let _permit = gate.acquire_owned().await;
                            let result = run_to_completion(&server, &tool, args, rc).await;
                            let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                            ctl.permille
                                .store((n * 1000 / total) as u32, Ordering::Relaxed);
                            (i, FileOutcome { file, result })
                        });
                    }
                    let mut out: Vec<Option<FileOutcome>> = vec![None; total];
                    while let Some(joined) = set.join_next().await {
                        let (i, o) = joined.map_err(|e| format!("a batch task failed: {e}"))?;
                        out[i] = Some(o);
                    }
                    Ok(out.into_iter().flatten().collect::<Vec<FileOutcome>>())
                },
            )
            .await?;
        let facts = CaptureFacts {
            file: format!("{total} capture(s)"),
            ..Default::default()
        };
        let scope = Scope {
            note: Some(format!(
                "{tool} with {}",
                Value::Object(p.arguments.unwrap_or_default())
            )),
            ..Default::default()
        };
        let outcomes = match outcome {
            Outcome::Done(o) => o,
            Outcome::Running(pct) => {
                let mut r = Report::running(facts, scope, pct);
                r.summary = format!(
                    "The batch of {tool} over {total} capture(s) is still running ({pct:.0}% of the files done). It continues in the background: call analyze_batch again with exactly the same arguments to get the result."
                );
                return Ok(r);
            }
        };
        // arguments the tool refuses fail every file alike: one error says it once
        if let [first, rest @ ..] = outcomes.as_slice()
            && let Err(e) = &first.result
            && !rest.is_empty()
            && rest.iter().all(|o| o.result.as_ref().err() == Some(e))
        {
            return Err(format!("every file failed the same way: {e}"));
        }
        let mut report = summarise(&tool, outcomes, skipped, limit, facts, scope);
        if p.limit.is_some() {
            report.budget = crate::fit::ASKED_BUDGET;
        }
        Ok(report)
    }

    /// Whether `tool` is a read-only analysis here whose input has the parameter `param`.
    fn tool_takes(&self, param: &str, tool: &str) -> Result<bool, String> {
        let schema = self.read_only_tool(tool)?;
        Ok(schema
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| p.contains_key(param)))
    }
}

/// Calls `tool` until it finishes: past the call deadline a tool answers "running" and
/// keeps going in the background, and the same call joins it again.
async fn run_to_completion(
    server: &PcapServer,
    tool: &str,
    args: Map<String, Value>,
    rc: RequestContext<RoleServer>,
) -> Result<Value, String> {
    loop {
        if rc.ct.is_cancelled() {
            return Err("cancelled".into());
        }
        let v = server
            .call_read_only(tool, args.clone(), rc.clone())
            .await?;
        if v.get("status").and_then(Value::as_str) != Some("running") {
            return Ok(v);
        }
    }
}

fn severity_of(f: &Value) -> Option<Severity> {
    Some(match f.get("severity")?.as_str()? {
        "high" => Severity::High,
        "medium" => Severity::Medium,
        "low" => Severity::Low,
        _ => Severity::Info,
    })
}

/// The rows, the cross-file view and the findings of a finished batch.
fn summarise(
    tool: &str,
    outcomes: Vec<FileOutcome>,
    skipped: Vec<String>,
    limit: usize,
    mut facts: CaptureFacts,
    scope: Scope,
) -> Report<BatchResult> {
    let total = outcomes.len();
    let mut rows = Vec::new();
    // kind -> (example, severity, files, first file's filter)
    let mut kinds: BTreeMap<String, (String, Severity, Vec<String>, String)> = BTreeMap::new();
    let (mut packets, mut bytes) = (0u64, 0u64);
    for o in &outcomes {
        let v = match &o.result {
            Ok(v) => v,
            Err(e) => {
                rows.push(BatchFile {
                    file: o.file.clone(),
                    status: "failed".into(),
                    packets: None,
                    duration_s: None,
                    high: 0,
                    medium: 0,
                    low: 0,
                    info: 0,
                    top_finding: None,
                    summary: String::new(),
                    error: Some(e.clone()),
                });
                continue;
            }
        };
        let findings: &[Value] = v
            .get("findings")
            .and_then(Value::as_array)
            .map_or(&[], |a| a);
        let mut count = [0usize; 4];
        let mut top: Option<(Severity, String)> = None;
        let mut seen_here = std::collections::BTreeSet::new();
        for f in findings {
            let Some(sev) = severity_of(f) else { continue };
            count[sev as usize] += 1;
            let title = f
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if top.as_ref().is_none_or(|(s, _)| sev > *s) {
                top = Some((sev, title.clone()));
            }
            let kind = finding_kind(&title);
            let filter = f["evidence"]["display_filter"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let e = kinds
                .entry(kind.clone())
                .or_insert_with(|| (title.clone(), sev, Vec::new(), filter));
            if sev > e.1 {
                e.0 = title;
                e.1 = sev;
            }
            if seen_here.insert(kind) {
                e.2.push(o.file.clone());
            }
        }
        let cap = &v["capture"];
        packets += cap["packets_analysed"].as_u64().unwrap_or(0);
        bytes += cap["size_bytes"].as_u64().unwrap_or(0);
        let summary = v.get("summary").and_then(Value::as_str).unwrap_or("");
        rows.push(BatchFile {
            file: o.file.clone(),
            status: "complete".into(),
            packets: cap["packets_analysed"].as_u64(),
            duration_s: cap["duration_s"].as_f64(),
            high: count[Severity::High as usize],
            medium: count[Severity::Medium as usize],
            low: count[Severity::Low as usize],
            info: count[Severity::Info as usize],
            top_finding: top.map(|(_, t)| t),
            summary: shorten(summary, SUMMARY_CHARS),
            error: None,
        });
    }
    facts.packets_analysed = packets;
    facts.size_bytes = bytes;
    let failed = rows.iter().filter(|r| r.error.is_some()).count();
    // most severe files first; failures after the analysed ones; then by name
    rows.sort_by(|a, b| {
        (
            a.error.is_some(),
            std::cmp::Reverse((a.high, a.medium, a.low)),
            &a.file,
        )
            .cmp(&(
                b.error.is_some(),
                std::cmp::Reverse((b.high, b.medium, b.low)),
                &b.file,
            ))
    });
    let mut across: Vec<(FindingAcross, String)> = kinds
        .into_iter()
        .map(|(kind, (example, severity, files, filter))| {
            (
                FindingAcross {
                    kind,
                    example,
                    severity,
                    file_count: files.len(),
                    files: files.into_iter().take(FILES_LISTED).collect(),
                },
                filter,
            )
        })
        .collect();
    across.sort_by(|(a, _), (b, _)| {
        (b.severity, b.file_count, &a.kind).cmp(&(a.severity, a.file_count, &b.kind))
    });
    let mut findings = Vec::new();
    for (a, filter) in across
        .iter()
        .filter(|(a, _)| a.severity >= Severity::Medium)
        .take(FINDINGS_RAISED)
    {
        let first = a.files[0].clone();
        let mut f = Finding::new(
            a.severity,
            format!("{} (in {} of {total} files)", a.example, a.file_count),
            format!(
                "Files: {}. The display filter is the one {tool} gave for {first}; run {tool} on each file for its own frames.",
                some_of(&a.files, 5)
            ),
            Evidence {
                display_filter: filter.clone(),
                ..Default::default()
            },
        );
        let mut args = BTreeMap::new();
        args.insert("pcap_file".to_string(), Value::String(first));
        f.next_step = Some(NextStep {
            tool: tool.to_string(),
            arguments: args,
        });
        findings.push(f);
    }
    if failed > 0 {
        let names: Vec<String> = rows
            .iter()
            .filter(|r| r.error.is_some())
            .map(|r| r.file.clone())
            .collect();
        findings.push(Finding::new(
            Severity::Low,
            format!("{failed} of {total} file(s) could not be analysed"),
            format!("{}: see each row's error.", some_of(&names, FILES_LISTED)),
            Evidence::default(),
        ));
    }
    let with_high = rows.iter().filter(|r| r.high > 0).count();
    let commonest = across
        .iter()
        .filter(|(a, _)| a.severity > Severity::Info)
        .max_by_key(|(a, _)| (a.severity >= Severity::Medium, a.file_count, a.severity))
        .map(|(a, _)| {
            format!(
                " Most widespread problem: \"{}\" in {} of {total} files.",
                a.example, a.file_count
            )
        })
        .unwrap_or_default();
    let summary = format!(
        "{tool} over {total} capture(s) ({packets} packets): {} complete, {failed} failed{}. {with_high} file(s) with high-severity findings{}.{commonest}",
        total - failed,
        if skipped.is_empty() {
            String::new()
        } else {
            format!(", {} non-capture file(s) skipped", skipped.len())
        },
        if with_high > 0 {
            format!(
                " ({})",
                some_of(
                    &rows
                        .iter()
                        .filter(|r| r.high > 0)
                        .map(|r| r.file.clone())
                        .collect::<Vec<_>>(),
                    5
                )
            )
        } else {
            String::new()
        }
    );
    let data = BatchResult {
        tool: tool.to_string(),
        files: Table::page(rows, 0, limit),
        by_finding: Table::page(across.into_iter().map(|(a, _)| a).collect(), 0, limit),
        skipped,
    };
    Report::complete(summary, findings, data, facts, scope, Vec::new())
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}…")
}

#[tool_router(router = batch_router, vis = "pub(crate)")]
impl PcapServer {
    /// Runs one read-only file analysis (e.g. analyze_pcap_file) over many captures, a
    /// list or a glob, PCAP_MAX_TSHARK at a time: a row per file and which files share
    /// which findings. Long batches answer "running" with progress; call again.
    #[tool(
        name = "analyze_batch",
        annotations(
            title = "Analyse many captures",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_batch(
        &self,
        Parameters(p): Parameters<BatchParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<BatchResult>>, String> {
        self.analyze_batch_impl(p, rc).await.map(Json)
    }
}
