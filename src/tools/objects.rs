//! `export_objects`: the files a capture carried (HTTP downloads and uploads, SMB, FTP
//! data, TFTP, IMF mail, DICOM), with frame, host/URI, MIME type, size and SHA-256,
//! and, on request, the files themselves in a new folder in storage.
//!
//! tshark's `--export-objects` is the engine: its bytes are what Wireshark's File >
//! Export Objects saves, so the hashes are those of the files an analyst would get.
//! It writes into a scratch folder inside storage, each file capped by RLIMIT_FSIZE;
//! nothing there outlives the call unless `extract` moves it into its own new folder.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::objects::{
    HTTP_BODY_ARGS, HttpBody, generic_name_frame, hex_lower, http_bodies, is_signature_type,
    sniff_mime, storage_name,
};
use crate::engine::{Analysis, Span};
use crate::report::{Evidence, Finding, Report, Severity, thousands};
use crate::server::PcapServer;
use crate::tools::{clamp_limit, clamp_offset};

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectProtocol {
    #[default]
    Http,
    Smb,
    FtpData,
    Tftp,
    Imf,
    Dicom,
}

impl ObjectProtocol {
    /// tshark's name for the export.
    fn tshark(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Smb => "smb",
            Self::FtpData => "ftp-data",
            Self::Tftp => "tftp",
            Self::Imf => "imf",
            Self::Dicom => "dicom",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ObjectParams {
    /// Capture: its name in storage or a path in an allowed directory.
    pub pcap_file: String,
    /// Which protocol's objects: http (default), smb, ftp-data, tftp, imf (e-mail), dicom.
    #[serde(default)]
    pub protocol: ObjectProtocol,
    /// Display filter: only objects in the packets it selects, e.g. `tcp.stream == 3`.
    #[serde(default)]
    pub display_filter: Option<String>,
    /// Time range of the analysis (start_time, end_time, timezone).
    #[serde(flatten)]
    pub time: crate::timescope::TimeScope,
    /// Also save the objects into a new folder in PCAP_STORAGE_DIR (never overwriting;
    /// names made safe) and return each as a resource (default false: list only).
    #[serde(default)]
    pub extract: Option<bool>,
    /// Objects to list (default 25, max 500); all are counted (and extracted).
    #[serde(default)]
    pub limit: Option<i64>,
    /// Objects to skip, for paging.
    #[serde(default)]
    pub offset: Option<i64>,
}

crate::file_args!(ObjectParams);

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExportedObject {
    /// The frame that completed the object (HTTP: the message carrying the body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
    /// The name tshark's export gave it (from the URI or file name; `%xx` escapes,
    /// `(n)` for repeats, `object<frame>` when there is none). Objects with identical
    /// bytes are paired with their messages in frame order.
    pub name: String,
    pub size_bytes: u64,
    /// SHA-256 of the object's bytes; absent when it was cut at PCAP_MAX_EXPORT_MB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The declared type (HTTP Content-Type) when there is one, else the type
    /// recognised from the bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// The type the first bytes carry the signature of (PNG, ZIP, PE executable, ...),
    /// when it differs from the declared one: an executable served as image/gif is
    /// worth a look.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_sniffed: Option<String>,
    /// HTTP: "response" (a download) or "request" (an upload: POST/PUT body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// HTTP response: the frame of its request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_frame: Option<u64>,
    /// The object was larger than PCAP_MAX_EXPORT_MB and is cut there.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// With extract: the file's name in the new folder, and its resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_as: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_uri: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExportedObjects {
    pub protocol: ObjectProtocol,
    /// Objects found (all of them, whatever the page).
    pub total: usize,
    pub total_bytes: u64,
    pub offset: usize,
    pub objects: Vec<ExportedObject>,
    /// Objects left out of this page: call again with this offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
    /// With extract: the new folder in PCAP_STORAGE_DIR holding every object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
}

#[tool_router(router = objects_router, vis = "pub(crate)")]
impl PcapServer {
    /// Files a capture carried (HTTP, SMB, FTP data, TFTP, IMF, DICOM), each with its
    /// frame, host and URI, MIME type, size and SHA-256 (for a malware database).
    /// extract=true also saves them into a new folder in PCAP_STORAGE_DIR as resources.
    #[tool(
        name = "export_objects",
        annotations(
            title = "Export objects",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    pub async fn export_objects(
        &self,
        Parameters(p): Parameters<ObjectParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<ExportedObjects>>, String> {
        self.engine.analyze("export_objects", p, rc, export).await
    }
}

/// A written file, as found in the scratch folder.
struct Written {
    name: String,
    path: PathBuf,
    size: u64,
    sha256: String,
    sniffed: Option<&'static str>,
}

async fn export(mut a: Analysis, p: ObjectParams) -> Result<Report<ExportedObjects>, String> {
    let cap = a.engine.cfg.max_export_bytes;
    let scratch = a.engine.sandbox().scratch_dir()?;
    let out_dir = scratch.path().join("objects");
    let listing = scratch.path().join("messages.json");
    let mut args = vec![
        "--export-objects".to_string(),
        format!("{},{}", p.protocol.tshark(), out_dir.display()),
    ];
    let http = p.protocol == ObjectProtocol::Http;
    if http {
        args.extend(HTTP_BODY_ARGS.iter().map(|s| s.to_string()));
    } else {
        args.push("-q".into());
    }
    let out = std::fs::File::create(&listing).map_err(|e| {
        disk_hint(
            &a,
            format!("cannot create a scratch file in PCAP_STORAGE_DIR: {e}"),
        )
    })?;
    // The listing carries each body three times (its text, its raw hex, the reassembled
    // segments' hex): bodies within the cap fit in a dozen times the cap.
    let listing_limit = cap.saturating_mul(12).saturating_add(64 << 20);
    let (_, end) = a
        .run_read_filtered_to_file(&args, out, listing_limit, cap)
        .await
        .map_err(|e| {
            if e.contains("grew past") {
                format!(
                    "the HTTP bodies in this capture are far larger than PCAP_MAX_EXPORT_MB ({} MB) allows; nothing was kept. Narrow the export with a display_filter (one host, one tcp.stream) or a time range, or the operator can raise PCAP_MAX_EXPORT_MB",
                    cap >> 20
                )
            } else {
                disk_hint(&a, e)
            }
        })?;
    let mut too_large = HashSet::new();
    for (path, reason) in write_failures(&end.messages) {
        let name = Path::new(&path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if reason.contains("too large") {
            too_large.insert(name);
        } else {
            return Err(disk_hint(
                &a,
                format!("tshark could not write the exported object '{name}': {reason}"),
            ));
        }
    }
    let files = tokio::task::spawn_blocking({
        let dir = out_dir.clone();
        move || written_files(&dir)
    })
    .await
    .map_err(|e| format!("reading the exported objects failed: {e}"))??;
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    if total_bytes > cap {
        return Err(format!(
            "the objects add up to more than PCAP_MAX_EXPORT_MB ({} MB); nothing was kept. Narrow the export with a display_filter (e.g. one host or tcp.stream) or a time range, or the operator can raise PCAP_MAX_EXPORT_MB",
            cap >> 20
        ));
    }
    let bodies = if http {
        let f = std::fs::File::open(&listing)
            .map_err(|e| format!("cannot reopen the HTTP message list: {e}"))?;
        tokio::task::spawn_blocking(move || http_bodies(f))
            .await
            .map_err(|e| format!("reading the HTTP message list failed: {e}"))??
    } else {
        Vec::new()
    };
    let mut objects = join(&files, bodies, &too_large, cap);

    let folder = if p.extract.unwrap_or(false) {
        Some(save(&a, &files, &mut objects)?)
    } else {
        None
    };
    // the scratch folder is gone when the call ends: the command names the folder
    // tshark would write into when run by hand
    let scratch_out = out_dir.display().to_string();
    for c in a.commands.iter_mut() {
        *c = c.replace(&scratch_out, "objects");
    }
    drop(scratch);

    let total = objects.len();
    let limit = clamp_limit(p.limit, 25);
    let offset = clamp_offset(p.offset).min(total);
    let findings = findings(&objects);
    let summary = summarize(p.protocol, &objects, total_bytes, folder.as_deref());
    let page: Vec<ExportedObject> = objects.iter().skip(offset).take(limit).cloned().collect();
    let next_offset = (offset + page.len() < total).then_some(offset + page.len());
    let span = match (&a.filter, a.summary().await) {
        (None, Ok(s)) => Span::of_file(&s),
        _ => Span::default(),
    };
    let data = ExportedObjects {
        protocol: p.protocol,
        total,
        total_bytes,
        offset,
        objects: page,
        next_offset,
        folder,
    };
    a.report(summary, findings, data, span, None).await
}

/// A failed write, with what to do about it; nothing of the call is kept (the scratch
/// folder goes when the call ends).
fn disk_hint(a: &Analysis, e: String) -> String {
    format!(
        "{e}. Nothing was kept; free space in PCAP_STORAGE_DIR ({}) or narrow the export with a display_filter or a time range",
        a.engine.cfg.storage_dir.display()
    )
}

/// tshark's "An error occurred while writing to the file "PATH": REASON." lines.
fn write_failures(messages: &str) -> Vec<(String, String)> {
    const HEAD: &str = "An error occurred while writing to the file \"";
    messages
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find(HEAD)? + HEAD.len()..];
            let (path, reason) = rest.rsplit_once("\": ")?;
            Some((path.to_string(), reason.trim_end_matches('.').to_string()))
        })
        .collect()
}

/// Every regular file tshark wrote, hashed; none when the export wrote nothing (tshark
/// creates the folder only when there is an object).
fn written_files(dir: &Path) -> Result<Vec<Written>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot list the exported objects: {e}")),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else { continue };
        if !kind.is_file() {
            continue;
        }
        let path = e.path();
        let mut f = std::fs::File::open(&path)
            .map_err(|err| format!("cannot read an exported object: {err}"))?;
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let mut head = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|err| format!("cannot read an exported object: {err}"))?;
            if n == 0 {
                break;
            }
            if head.len() < 512 {
                head.extend_from_slice(&buf[..n.min(512 - head.len())]);
            }
            sha2::Digest::update(&mut hasher, &buf[..n]);
            size += n as u64;
        }
        let digest = sha2::Digest::finalize(hasher);
        out.push(Written {
            name: e.file_name().to_string_lossy().into_owned(),
            path,
            size,
            sha256: hex_lower(&digest),
            sniffed: sniff_mime(&head),
        });
    }
    // tshark's own order: a name, then its repeats (1), (2), ... in number order
    out.sort_by_key(|w| natural_key(&w.name));
    Ok(out)
}

/// "%2f(10)" after "%2f(9)": the digits of a repeat counter compared as numbers.
fn natural_key(name: &str) -> (String, u64) {
    if let Some(open) = name.rfind('(')
        && let Some(close) = name[open..].find(')')
        && let Ok(n) = name[open + 1..open + close].parse::<u64>()
    {
        let mut base = name[..open].to_string();
        base.push_str(&name[open + close + 1..]);
        return (base, n);
    }
    (name.to_string(), 0)
}

/// Each written file with what is known of it: for HTTP, the message whose body has
/// the same bytes (a file named after its frame goes to that frame's message first;
/// equal bodies are handed out in frame order).
fn join(
    files: &[Written],
    mut bodies: Vec<HttpBody>,
    too_large: &HashSet<String>,
    cap: u64,
) -> Vec<ExportedObject> {
    bodies.sort_by_key(|b| b.frame);
    // many objects can share one body (the same icon, an empty answer): lookups by
    // hash and frame stay constant-time, so thousands of equal bodies are not quadratic
    let mut by_hash: HashMap<&str, VecDeque<usize>> = HashMap::new();
    let mut by_hash_frame: HashMap<(&str, u64), usize> = HashMap::new();
    for (i, b) in bodies.iter().enumerate() {
        by_hash.entry(b.sha256.as_str()).or_default().push_back(i);
        by_hash_frame
            .entry((b.sha256.as_str(), b.frame))
            .or_insert(i);
    }
    let mut taken = vec![false; bodies.len()];
    let mut matched: Vec<Option<usize>> = vec![None; files.len()];
    for (fi, f) in files.iter().enumerate() {
        if let Some(frame) = generic_name_frame(&f.name)
            && let Some(&bi) = by_hash_frame.get(&(f.sha256.as_str(), frame))
            && !taken[bi]
        {
            taken[bi] = true;
            matched[fi] = Some(bi);
        }
    }
    for (fi, f) in files.iter().enumerate() {
        if matched[fi].is_none()
            && let Some(q) = by_hash.get_mut(f.sha256.as_str())
        {
            while let Some(bi) = q.pop_front() {
                if !taken[bi] {
                    taken[bi] = true;
                    matched[fi] = Some(bi);
                    break;
                }
            }
        }
    }
    let mut out: Vec<ExportedObject> = files
        .iter()
        .zip(matched)
        .map(|(f, m)| {
            let body = m.map(|i| &bodies[i]);
            let truncated = too_large.contains(&f.name) || f.size >= cap;
            let declared = body.and_then(|b| b.content_type.clone());
            let sniffed = f.sniffed.map(str::to_string);
            let content_sniffed = match (&declared, &sniffed) {
                (Some(d), Some(s))
                    if is_signature_type(s) && !d.to_ascii_lowercase().starts_with(s.as_str()) =>
                {
                    Some(s.clone())
                }
                _ => None,
            };
            ExportedObject {
                frame: body
                    .map(|b| b.frame)
                    .or_else(|| generic_name_frame(&f.name)),
                name: f.name.clone(),
                size_bytes: f.size,
                sha256: (!truncated).then(|| f.sha256.clone()),
                mime_type: declared.or(sniffed),
                content_sniffed,
                direction: body.map(|b| if b.is_request { "request" } else { "response" }),
                method: body.and_then(|b| b.method.clone()),
                status: body.and_then(|b| b.status),
                host: body.and_then(|b| b.host.clone()),
                uri: body.and_then(|b| b.uri.clone()),
                request_frame: body.and_then(|b| b.request_frame),
                truncated,
                saved_as: None,
                resource_uri: None,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (a.frame.is_none(), a.frame, natural_key(&a.name)).cmp(&(
            b.frame.is_none(),
            b.frame,
            natural_key(&b.name),
        ))
    });
    out
}

/// Moves every object into a new folder in storage under a safe, unique name. A
/// hard link never replaces an existing file; on failure the folder is removed.
fn save(a: &Analysis, files: &[Written], objects: &mut [ExportedObject]) -> Result<String, String> {
    let folder =
        crate::sandbox::generated_name(&a.file.display_name, crate::resources::OBJECT_FOLDER, "");
    let dir = a.engine.sandbox().create_output_dir(&folder)?;
    let paths: BTreeMap<&str, &Path> = files
        .iter()
        .map(|f| (f.name.as_str(), f.path.as_path()))
        .collect();
    let mut taken = HashSet::new();
    for o in objects.iter_mut() {
        let safe = storage_name(&o.name, &mut taken);
        let from = paths[o.name.as_str()];
        let to = dir.join(&safe);
        let linked = std::fs::hard_link(from, &to).and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
        });
        if let Err(e) = linked {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!(
                "saving '{safe}' into {folder} in PCAP_STORAGE_DIR failed: {e}; nothing was kept"
            ));
        }
        o.resource_uri = Some(format!("{}{folder}/{safe}", crate::resources::SCHEME));
        o.saved_as = Some(safe);
    }
    Ok(folder)
}

fn findings(objects: &[ExportedObject]) -> Vec<Finding> {
    let mut out = Vec::new();
    let exe: Vec<&ExportedObject> = objects
        .iter()
        .filter(|o| {
            let t = o.content_sniffed.as_deref().or(o.mime_type.as_deref());
            matches!(
                t,
                Some("application/x-msdownload" | "application/x-executable")
            )
        })
        .collect();
    if !exe.is_empty() {
        let names: Vec<String> = exe
            .iter()
            .take(5)
            .map(|o| {
                format!(
                    "{} ({} bytes, sha256 {})",
                    o.uri.as_deref().unwrap_or(&o.name),
                    o.size_bytes,
                    o.sha256.as_deref().unwrap_or("not computed")
                )
            })
            .collect();
        out.push(Finding::new(
            Severity::Medium,
            format!("{} executable file(s) transferred", exe.len()),
            format!(
                "Windows or ELF executables by their first bytes: {}. Check the hashes against a malware database",
                names.join("; ")
            ),
            Evidence {
                frames: exe.iter().filter_map(|o| o.frame).take(5).collect(),
                display_filter: frame_filter(&exe),
                ..Default::default()
            },
        ));
    }
    let disguised: Vec<&ExportedObject> = objects
        .iter()
        .filter(|o| {
            o.content_sniffed.is_some()
                && o.mime_type
                    .as_deref()
                    .is_some_and(|m| !m.starts_with("text/"))
        })
        .collect();
    if !disguised.is_empty() {
        out.push(Finding::new(
            Severity::Low,
            format!(
                "{} object(s) whose bytes do not match their declared type",
                disguised.len()
            ),
            disguised
                .iter()
                .take(5)
                .map(|o| {
                    format!(
                        "frame {}: declared {}, content is {}",
                        o.frame.map_or("?".into(), |f| f.to_string()),
                        o.mime_type.as_deref().unwrap_or("?"),
                        o.content_sniffed.as_deref().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Evidence {
                frames: disguised.iter().filter_map(|o| o.frame).take(5).collect(),
                display_filter: frame_filter(&disguised),
                ..Default::default()
            },
        ));
    }
    let cut = objects.iter().filter(|o| o.truncated).count();
    if cut > 0 {
        out.push(Finding::new(
            Severity::Info,
            format!("{cut} object(s) cut at PCAP_MAX_EXPORT_MB"),
            "their size is the limit and they have no SHA-256; the operator can raise PCAP_MAX_EXPORT_MB",
            Evidence::default(),
        ));
    }
    out
}

fn frame_filter(objects: &[&ExportedObject]) -> String {
    let frames: Vec<u64> = objects.iter().filter_map(|o| o.frame).take(20).collect();
    if frames.is_empty() {
        String::new()
    } else {
        crate::report::in_set("frame.number", frames)
    }
}

fn summarize(
    protocol: ObjectProtocol,
    objects: &[ExportedObject],
    total_bytes: u64,
    folder: Option<&str>,
) -> String {
    let name = protocol.tshark().to_uppercase();
    if objects.is_empty() {
        return format!(
            "No {name} objects in this capture (or scope): tshark's export found nothing to save"
        );
    }
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    for o in objects {
        let t = o.mime_type.as_deref().unwrap_or("unknown");
        *types.entry(crate::model::http::media_type(t)).or_default() += 1;
    }
    let mut ranked: Vec<(&str, usize)> = types.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let kinds: Vec<String> = ranked
        .iter()
        .take(5)
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    let uploads = objects
        .iter()
        .filter(|o| o.direction == Some("request"))
        .count();
    let biggest = objects.iter().max_by_key(|o| o.size_bytes);
    format!(
        "{} {name} object(s), {} bytes: {}{}{}{}",
        objects.len(),
        thousands(total_bytes),
        kinds.join(", "),
        if uploads > 0 {
            format!("; {uploads} sent by clients (request bodies)")
        } else {
            String::new()
        },
        biggest
            .map(|o| format!(
                "; largest {} ({} bytes{})",
                o.uri.as_deref().unwrap_or(&o.name),
                thousands(o.size_bytes),
                o.frame.map_or(String::new(), |f| format!(", frame {f}"))
            ))
            .unwrap_or_default(),
        folder.map_or(String::new(), |f| format!(
            ". Saved into {f} in PCAP_STORAGE_DIR"
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_failures_are_read_from_tshark_messages() {
        // recorded: tshark 4.0 exporting into a full tmpfs
        let m = "tshark: An error occurred while writing to the file \"/s/objects/%2f(1)\": No space left on device.\ntshark: something else";
        assert_eq!(
            write_failures(m),
            vec![(
                "/s/objects/%2f(1)".to_string(),
                "No space left on device".to_string()
            )]
        );
    }

    #[test]
    fn repeat_counters_sort_as_numbers() {
        let mut names = vec!["%2f(10)", "%2f", "%2f(9)", "a"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names, ["%2f", "%2f(9)", "%2f(10)", "a"]);
    }
}
