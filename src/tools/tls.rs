//! The TLS tools: handshakes, SNI against certificates, certificate health, alerts and
//! cipher grades. All read the shared TLS session model (`crate::model::tls`).

use std::collections::BTreeMap;

use rmcp::{Json, RoleServer, handler::server::wrapper::Parameters, service::RequestContext};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::Serialize;

use crate::analysis::tls::{CertRow, Parsed, grade, parse_cert, suite_name};
use crate::model::tls::{Session, TlsModel, version_name};
use crate::report::{
    CountRow, Evidence, Finding, Report, Severity, Table, counts, ms, rfc3339, thousands,
};
use crate::server::PcapServer;
use crate::tools::TcpParams;
use crate::tools::{clamp_limit, clamp_offset};

type Reduced<T> = (String, Vec<Finding>, T);

impl PcapServer {
    async fn tls_tool<T>(
        &self,
        tool: &'static str,
        p: TcpParams,
        rc: RequestContext<RoleServer>,
        reduce: fn(&TlsModel, &TcpParams) -> Reduced<T>,
    ) -> Result<Json<Report<T>>, String>
    where
        T: Clone + Send + Sync + 'static,
    {
        self.engine
            .analyze(tool, p, rc, move |mut a, p| async move {
                let m = a.part::<TlsModel>().await?;
                let (summary, findings, data) = reduce(&m, &p);
                a.report(summary, findings, data, m.span, None).await
            })
            .await
    }
}

fn page<T>(rows: Vec<T>, p: &TcpParams) -> Table<T> {
    Table::page(rows, clamp_offset(p.offset), clamp_limit(p.limit, 20))
}

fn no_tls(m: &TlsModel) -> String {
    format!(
        "No TLS handshakes in {} packets (TLS on a non-standard port may need Decode As; QUIC handshakes are included).",
        thousands(m.span.packets)
    )
}

fn session_evidence(s: &Session, frames: Vec<u64>) -> Evidence {
    Evidence {
        frames,
        streams: vec![s.stream],
        endpoints: vec![s.endpoint(0), s.endpoint(1)],
        time: s.client_hello.map(|c| rfc3339(c.0)),
        display_filter: s.filter(),
    }
}

// ---------------------------------------------------------------- cipher suites

// ---------------------------------------------------------------- alerts

use crate::analysis::tls::alert_name;

// ---------------------------------------------------------------- handshakes

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HandshakeRow {
    /// `tcp:N` or `udp:N` (QUIC).
    pub session: String,
    pub transport: String,
    /// The connection's Community ID, to join Zeek, Suricata or Arkime records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    pub client: String,
    pub server: String,
    pub sni: Option<String>,
    pub offered_versions: Vec<String>,
    pub negotiated_version: Option<String>,
    pub cipher_suite: Option<String>,
    pub alpn_offered: Vec<String>,
    pub alpn_selected: Option<String>,
    pub ja3: Option<String>,
    pub ja3s: Option<String>,
    /// JA4 of the ClientHello (computed; tshark 4.0 has no field for it).
    pub ja4: Option<String>,
    pub handshake_ms: Option<f64>,
    /// complete, alert, reset, incomplete, or no_handshake (the capture began after it).
    pub outcome: String,
    pub resumed: bool,
    pub hello_retry_request: bool,
    pub alerts: usize,
    pub client_hello_frame: Option<u64>,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Handshakes {
    pub versions: Vec<CountRow>,
    pub outcomes: Vec<CountRow>,
    pub sessions: Table<HandshakeRow>,
}

fn offered(s: &Session) -> Vec<String> {
    if s.offered_versions.is_empty() {
        s.client_version.map(version_name).into_iter().collect()
    } else {
        s.offered_versions
            .iter()
            .map(|v| version_name(u64::from(*v)))
            .collect()
    }
}

pub(crate) fn handshakes(m: &TlsModel, p: &TcpParams) -> Reduced<Handshakes> {
    let rows: Vec<HandshakeRow> = m
        .sessions
        .iter()
        .map(|s| HandshakeRow {
            session: s.key.clone(),
            transport: if s.quic { "quic".into() } else { "tcp".into() },
            community_id: s.community_id(),
            client: s.endpoint(0),
            server: s.endpoint(1),
            sni: s.sni.clone(),
            offered_versions: offered(s),
            negotiated_version: s.negotiated.map(version_name),
            cipher_suite: s.cipher.map(suite_name),
            alpn_offered: s.alpn_offered.clone(),
            alpn_selected: s.alpn_selected.clone(),
            ja3: s.ja3.clone(),
            ja3s: s.ja3s.clone(),
            ja4: crate::model::tls::ja4(s),
            handshake_ms: s.handshake_s().map(ms),
            outcome: s.outcome().into(),
            resumed: s.resumed(),
            hello_retry_request: s.hello_retry,
            alerts: s.alerts.len(),
            client_hello_frame: s.client_hello.map(|c| c.1),
            display_filter: s.filter(),
        })
        .collect();
    let versions = counts(rows.iter().map(|r| {
        r.negotiated_version
            .clone()
            .unwrap_or_else(|| "not negotiated".into())
    }));
    let outcomes = counts(rows.iter().map(|r| r.outcome.clone()));
    let mut findings = Vec::new();
    let old: Vec<&Session> = m
        .sessions
        .iter()
        .filter(|s| s.negotiated.is_some_and(|v| v <= 0x0302))
        .collect();
    if !old.is_empty() {
        findings.push(Finding::new(
            Severity::Medium,
            format!("{} session(s) negotiated TLS 1.1 or older", old.len()),
            format!("Deprecated versions (RFC 8996), e.g. {} with {}.", old[0].endpoint(1), old[0].negotiated.map(version_name).unwrap_or_default()),
            Evidence { streams: old.iter().map(|s| s.stream).take(10).collect(), display_filter: "tls.handshake.type == 2 && tls.handshake.version <= 0x0302 && !tls.handshake.extensions.supported_version".into(), ..Default::default() },
        ));
    }
    for (outcome, sev, what) in [
        (
            "alert",
            Severity::Medium,
            "ended by an alert before completing (see analyze_tls_alerts)",
        ),
        ("reset", Severity::Medium, "were reset during the handshake"),
        (
            "incomplete",
            Severity::Low,
            "did not complete within the capture",
        ),
    ] {
        let v: Vec<&Session> = m
            .sessions
            .iter()
            .filter(|s| s.outcome() == outcome)
            .collect();
        if let Some(first) = v.first() {
            findings.push(Finding::new(
                sev,
                format!("{} TLS handshake(s) {what}", v.len()),
                format!(
                    "E.g. {} -> {}{}.",
                    first.endpoint(0),
                    first.endpoint(1),
                    first
                        .sni
                        .as_ref()
                        .map(|s| format!(" (SNI {s})"))
                        .unwrap_or_default()
                ),
                session_evidence(first, first.client_hello.map(|c| c.1).into_iter().collect()),
            ));
        }
    }
    let summary = if m.sessions.is_empty() {
        no_tls(m)
    } else {
        format!(
            "{} TLS session(s): versions {}; outcomes {}; {} resumed.",
            m.sessions.len(),
            versions
                .iter()
                .map(|c| format!("{} {}", c.count, c.key))
                .collect::<Vec<_>>()
                .join(", "),
            outcomes
                .iter()
                .map(|c| format!("{} {}", c.count, c.key))
                .collect::<Vec<_>>()
                .join(", "),
            rows.iter().filter(|r| r.resumed).count()
        )
    };
    (
        summary,
        findings,
        Handshakes {
            versions,
            outcomes,
            sessions: page(rows, p),
        },
    )
}

// ---------------------------------------------------------------- certificates

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Certificates {
    /// Validity is judged at the moment each certificate was presented (its first
    /// frame); this is the first packet of the capture, RFC 3339.
    pub checked_at: String,
    pub certificates: Table<CertRow>,
    /// TLS 1.3 sessions whose certificates are encrypted (not checkable without keys).
    pub encrypted_certificate_sessions: u64,
}

pub(crate) fn certificates(m: &TlsModel, p: &TcpParams) -> Reduced<Certificates> {
    let at = m.span.first.unwrap_or(0.0);
    let mut rows: Vec<CertRow> = m
        .certificates
        .iter()
        .filter_map(|(fp, c)| parse_cert(fp, c).map(|x| x.row))
        .collect();
    let rank = |r: &CertRow| match r.status.as_str() {
        "expired" | "not_yet_valid" => 0,
        "expires_soon" => 1,
        _ if r.weak_signature || r.self_signed && r.chain_positions.contains(&0) => 2,
        _ => 3,
    };
    rows.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then(a.chain_positions.cmp(&b.chain_positions))
            .then(a.subject.cmp(&b.subject))
    });
    let tls13 = m
        .sessions
        .iter()
        .filter(|s| s.negotiated.is_some_and(|v| v >= 0x0304) && s.chain.is_empty())
        .count() as u64;
    let mut findings = Vec::new();
    for r in &rows {
        let ev = Evidence {
            frames: vec![r.first_frame],
            endpoints: r.servers.iter().take(10).cloned().collect(),
            display_filter: r.display_filter.clone(),
            ..Default::default()
        };
        let leaf = r.chain_positions.contains(&0);
        match r.status.as_str() {
            "expired" => findings.push(Finding::new(
                Severity::High,
                format!("Expired certificate: {}", r.subject),
                format!(
                    "Expired {} ({} days before it was presented), presented by {}.",
                    r.not_after,
                    -r.days_left,
                    crate::report::some_of_total(&r.servers, r.servers_total as usize, 5)
                ),
                ev.clone(),
            )),
            "not_yet_valid" => findings.push(Finding::new(
                Severity::High,
                format!("Certificate not yet valid: {}", r.subject),
                format!(
                    "Valid only from {}: a wrong clock on the server or the client.",
                    r.not_before
                ),
                ev.clone(),
            )),
            "expires_soon" => findings.push(Finding::new(
                Severity::Medium,
                format!("Certificate expires in {} days: {}", r.days_left, r.subject),
                format!("Not after {}; renew it.", r.not_after),
                ev.clone(),
            )),
            _ => {}
        }
        if r.weak_signature && !r.self_signed {
            findings.push(Finding::new(
                Severity::Medium,
                format!(
                    "Weak signature ({}) on {}",
                    r.signature_algorithm, r.subject
                ),
                "SHA-1 and MD5 signatures are forgeable; browsers reject them.".to_string(),
                ev.clone(),
            ));
        }
        if r.self_signed && leaf {
            findings.push(Finding::new(Severity::Medium, format!("Self-signed server certificate: {}", r.subject), format!("No CA vouches for {}; clients will reject it unless it is pinned or trusted locally.", crate::report::some_of_total(&r.servers, r.servers_total as usize, 5)), ev.clone()));
        }
        if r.key_type == "RSA" && r.key_bits.is_some_and(|b| b < 2048) && leaf {
            findings.push(Finding::new(
                Severity::Medium,
                format!("{}-bit RSA key: {}", r.key_bits.unwrap_or(0), r.subject),
                "RSA keys below 2048 bits are deprecated.".to_string(),
                ev.clone(),
            ));
        }
    }
    if tls13 > 0 {
        findings.push(Finding::new(
            Severity::Info,
            format!("{tls13} TLS 1.3 session(s): certificates encrypted, not checkable"),
            "TLS 1.3 encrypts the Certificate message; with a key log file (SSLKEYLOGFILE) they become visible.".to_string(),
            Evidence { display_filter: "tls.handshake.type == 2 && tls.handshake.extensions.supported_version == 0x0304".into(), ..Default::default() },
        ));
    }
    let incomplete = incomplete_chains(m);
    for c in &incomplete {
        findings.push(Finding::new(
            Severity::Medium,
            format!("Incomplete certificate chain from {}", c.server),
            format!(
                "The server sends {} without its issuer \"{}\" ({} session(s)): clients that do not already hold that intermediate fail with \"unable to get local issuer certificate\". Install the full chain (leaf + intermediates) on the server.",
                c.leaf_subject, c.issuer, c.sessions.len()
            ),
            Evidence {
                frames: c.frames.clone(),
                streams: c.sessions.iter().copied().take(10).collect(),
                endpoints: vec![c.server.clone()],
                display_filter: format!(
                    "tls.handshake.type == 11 && {}",
                    crate::report::host_filter(&c.addr, "src")
                ),
                ..Default::default()
            },
        ));
    }
    let summary = if rows.is_empty() {
        if m.sessions.is_empty() {
            no_tls(m)
        } else {
            format!(
                "No certificates visible in {} TLS session(s) ({tls13} TLS 1.3 with encrypted certificates).",
                m.sessions.len()
            )
        }
    } else {
        format!(
            "{} distinct certificate(s), each checked when it was presented: {} expired, {} expiring within 30 days, {} self-signed, {} with SHA-1/MD5 signatures, {} server(s) sending an incomplete chain.",
            rows.len(),
            rows.iter().filter(|r| r.status == "expired").count(),
            rows.iter().filter(|r| r.status == "expires_soon").count(),
            rows.iter().filter(|r| r.self_signed).count(),
            rows.iter().filter(|r| r.weak_signature).count(),
            incomplete.len()
        )
    };
    (
        summary,
        findings,
        Certificates {
            checked_at: rfc3339(at),
            // a certificate row is about 1 KB (names, SANs, fingerprints): half a page
            certificates: Table::page(rows, clamp_offset(p.offset), clamp_limit(p.limit, 10)),
            encrypted_certificate_sessions: tls13,
        },
    )
}

/// A server whose chain stops before the leaf's issuer.
struct IncompleteChain {
    server: String,
    addr: String,
    leaf_subject: String,
    issuer: String,
    sessions: Vec<u64>,
    frames: Vec<u64>,
}

/// Chains judged from what was sent (no trust store): a leaf whose issuer is neither
/// itself nor any certificate sent with it means the intermediate is missing, since
/// public roots do not sign server certificates directly. A chain that ends at an
/// intermediate whose issuer (the root) is not sent is normal.
fn incomplete_chains(m: &TlsModel) -> Vec<IncompleteChain> {
    let mut by_server: BTreeMap<(String, String), IncompleteChain> = BTreeMap::new();
    for s in &m.sessions {
        let parsed: Vec<Parsed> = s
            .chain
            .iter()
            .filter_map(|fp| m.certificates.get(fp).and_then(|c| parse_cert(fp, c)))
            .collect();
        let Some(leaf) = parsed.first() else { continue };
        let issued_by_sent = parsed[1..].iter().any(|c| c.row.subject == leaf.row.issuer);
        if leaf.row.self_signed || issued_by_sent {
            continue;
        }
        let server = s.endpoint(1);
        let e = by_server
            .entry((server.clone(), leaf.row.sha256.clone()))
            .or_insert_with(|| IncompleteChain {
                server,
                addr: s.addr[1].clone(),
                leaf_subject: leaf.row.subject.clone(),
                issuer: leaf.row.issuer.clone(),
                sessions: Vec::new(),
                frames: vec![leaf.row.first_frame],
            });
        e.sessions.push(s.stream);
    }
    by_server.into_values().collect()
}

// ---------------------------------------------------------------- SNI

/// RFC 6125 matching: case-insensitive; a `*` only in the left-most label, standing for
/// exactly one label (never the registered domain itself).
pub fn name_matches(pattern: &str, host: &str) -> bool {
    let p = pattern.trim_end_matches('.').to_ascii_lowercase();
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    if !p.contains('*') {
        return p == h;
    }
    let (Some((pl, prest)), Some((hl, hrest))) = (p.split_once('.'), h.split_once('.')) else {
        return false;
    };
    if prest.contains('*') || prest.split('.').count() < 2 || prest != hrest || hl.is_empty() {
        return false;
    }
    // partial wildcards (f*.example.com) match within the one label
    let (pre, post) = pl.split_once('*').unwrap_or((pl, ""));
    hl.len() >= pre.len() + post.len()
        && hl.starts_with(pre)
        && hl.ends_with(post)
        && !hl.starts_with("xn--")
        || pl == "*"
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SniRow {
    pub session: String,
    pub client: String,
    pub server: String,
    pub sni: Option<String>,
    /// match, mismatch, missing_sni, ip_literal_sni, not_verifiable (TLS 1.3 or no certificate).
    pub verdict: String,
    /// The leaf's names (CN and SANs), the ones matching the SNI first, at most
    /// [`NAMES_SHOWN`]; `certificate_name_count` says how many it has.
    pub certificate_names: Vec<String>,
    pub certificate_name_count: usize,
    pub certificate_subject: Option<String>,
    /// The session then ended with an alert or reset.
    pub failed_after: Option<String>,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SniCheck {
    pub verdicts: Vec<CountRow>,
    pub sessions: Table<SniRow>,
}

/// Names listed per certificate in the SNI table (a CDN certificate carries 100+).
const NAMES_SHOWN: usize = 10;

pub(crate) fn sni_mismatches(m: &TlsModel, p: &TcpParams) -> Reduced<SniCheck> {
    let rows: Vec<SniRow> = m
        .sessions
        .iter()
        .map(|s| {
            let leaf = s
                .chain
                .first()
                .and_then(|fp| m.certificates.get(fp).and_then(|c| parse_cert(fp, c)));
            let names = leaf.as_ref().map(|l| l.names.clone()).unwrap_or_default();
            let verdict = match (&s.sni, &leaf) {
                (Some(sni), _) if sni.parse::<std::net::IpAddr>().is_ok() => "ip_literal_sni",
                (None, _) => "missing_sni",
                (Some(_), None) => "not_verifiable",
                (Some(sni), Some(l)) => {
                    if l.names.iter().any(|n| name_matches(n, sni)) {
                        "match"
                    } else {
                        "mismatch"
                    }
                }
            };
            let failed_after = match s.outcome() {
                "alert" => s
                    .alerts
                    .iter()
                    .find_map(|a| a.description)
                    .map(|d| alert_name(d).0.to_string())
                    .or(Some("alert".into())),
                "reset" => Some("reset".into()),
                _ => None,
            };
            let count = names.len();
            let mut names = names;
            if let Some(sni) = &s.sni {
                // stable: the matching names first, the rest in their order
                names.sort_by_key(|n| !name_matches(n, sni));
            }
            names.truncate(NAMES_SHOWN);
            SniRow {
                session: s.key.clone(),
                client: s.endpoint(0),
                server: s.endpoint(1),
                sni: s.sni.clone(),
                verdict: verdict.into(),
                certificate_names: names,
                certificate_name_count: count,
                certificate_subject: leaf.map(|l| l.row.subject),
                failed_after,
                display_filter: s.filter(),
            }
        })
        .collect();
    let verdicts = counts(rows.iter().map(|r| r.verdict.clone()));
    let mut findings = Vec::new();
    let pick = |v: &str| -> Vec<&SniRow> { rows.iter().filter(|r| r.verdict == v).collect() };
    let ev = |rs: &[&SniRow]| Evidence {
        streams: m
            .sessions
            .iter()
            .filter(|s| rs.iter().any(|r| r.session == s.key))
            .map(|s| s.stream)
            .take(10)
            .collect(),
        endpoints: rs.iter().map(|r| r.server.clone()).take(5).collect(),
        display_filter: rs
            .first()
            .map(|r| r.display_filter.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    let mism = pick("mismatch");
    if let Some(r) = mism.first() {
        findings.push(Finding::new(
            Severity::High,
            format!("{} session(s) where the certificate does not cover the SNI", mism.len()),
            format!(
                "E.g. SNI {} but the certificate names {}{}: clients will refuse (name mismatch), or they are talking to the wrong virtual host / an interceptor.",
                r.sni.clone().unwrap_or_default(),
                crate::report::some_of(&r.certificate_names, 10),
                r.failed_after.as_ref().map(|f| format!("; the session then ended with {f}")).unwrap_or_default()
            ),
            ev(&mism),
        ));
    }
    let ipl = pick("ip_literal_sni");
    if !ipl.is_empty() {
        findings.push(Finding::new(
            Severity::Low,
            format!("{} session(s) send an IP address as SNI", ipl.len()),
            "RFC 6066 forbids IP literals in server_name; some servers reject or misroute them."
                .to_string(),
            ev(&ipl),
        ));
    }
    let missing = pick("missing_sni");
    if !missing.is_empty() {
        findings.push(Finding::new(Severity::Info, format!("{} session(s) without SNI", missing.len()), "Without SNI the server presents its default certificate; virtual hosting and many CDNs need it.".to_string(), ev(&missing)));
    }
    let nv = pick("not_verifiable");
    if !nv.is_empty() {
        findings.push(Finding::new(Severity::Info, format!("{} session(s) not verifiable", nv.len()), "No certificate is visible: TLS 1.3 encrypts it, or the handshake did not get that far. A key log file makes TLS 1.3 certificates checkable.".to_string(), ev(&nv)));
    }
    let summary = if m.sessions.is_empty() {
        no_tls(m)
    } else {
        format!(
            "SNI checked against the server certificate (SAN, else CN; RFC 6125 wildcards) in {} session(s): {}.",
            m.sessions.len(),
            verdicts
                .iter()
                .map(|c| format!("{} {}", c.count, c.key))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    (
        summary,
        findings,
        SniCheck {
            verdicts,
            sessions: page(rows, p),
        },
    )
}

// ---------------------------------------------------------------- alerts tool

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AlertRow {
    pub frame: u64,
    pub time: String,
    /// warning, fatal, or encrypted (level and description not visible).
    pub level: String,
    pub description: Option<String>,
    pub meaning: Option<String>,
    /// client or server.
    pub sent_by: String,
    pub sender: String,
    pub session: String,
    pub sni: Option<String>,
    pub during_handshake: bool,
    pub display_filter: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Alerts {
    pub by_description: Vec<CountRow>,
    pub alerts: Table<AlertRow>,
}

pub(crate) fn alerts(m: &TlsModel, p: &TcpParams) -> Reduced<Alerts> {
    let mut rows = Vec::new();
    for s in &m.sessions {
        for a in &s.alerts {
            let (name, meaning) = a.description.map(alert_name).unzip();
            rows.push(AlertRow {
                frame: a.frame,
                time: rfc3339(a.time),
                level: match a.level {
                    Some(1) => "warning".into(),
                    Some(2) => "fatal".into(),
                    _ => "encrypted".into(),
                },
                description: name.map(str::to_string),
                meaning: meaning.map(str::to_string),
                sent_by: if a.from_server {
                    "server".into()
                } else {
                    "client".into()
                },
                sender: s.endpoint(if a.from_server { 1 } else { 0 }),
                session: s.key.clone(),
                sni: s.sni.clone(),
                during_handshake: a.during_handshake,
                display_filter: format!("frame.number == {}", a.frame),
            });
        }
    }
    let by_description = counts(
        rows.iter()
            .map(|r| r.description.clone().unwrap_or_else(|| "encrypted".into())),
    );
    let mut findings = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<&AlertRow>> = BTreeMap::new();
    for r in &rows {
        groups
            .entry((
                r.description.clone().unwrap_or_else(|| "encrypted".into()),
                r.sent_by.clone(),
            ))
            .or_default()
            .push(r);
    }
    for ((desc, by), rs) in &groups {
        let fatal = rs.iter().any(|r| r.level == "fatal");
        let benign =
            desc == "close_notify" || desc == "encrypted" && rs.iter().all(|r| !r.during_handshake);
        findings.push(Finding::new(
            if benign { Severity::Info } else if fatal && rs[0].during_handshake { Severity::High } else { Severity::Medium },
            format!("{} {desc} alert(s) sent by the {by}", rs.len()),
            format!(
                "{}{}",
                rs[0].meaning.clone().unwrap_or_else(|| "Encrypted alert after the handshake: usually close_notify, an orderly close.".into()),
                rs[0].sni.as_ref().map(|s| format!(" (SNI {s})")).unwrap_or_default()
            ),
            Evidence {
                frames: rs.iter().map(|r| r.frame).take(10).collect(),
                endpoints: vec![rs[0].sender.clone()],
                time: Some(rs[0].time.clone()),
                display_filter: if desc == "encrypted" { "tls.record.content_type == 21 && !tls.alert_message.desc".into() } else { format!("tls.alert_message.desc == {}", rs.iter().find_map(|r| r.description.as_ref()).and_then(|d| (0..=255u64).find(|c| alert_name(*c).0 == d)).unwrap_or(0)) },
                ..Default::default()
            },
        ));
    }
    rows.sort_by(|a, b| {
        b.during_handshake
            .cmp(&a.during_handshake)
            .then(a.frame.cmp(&b.frame))
    });
    let summary = if rows.is_empty() {
        if m.sessions.is_empty() {
            no_tls(m)
        } else {
            format!("No TLS alerts in {} TLS session(s).", m.sessions.len())
        }
    } else {
        format!(
            "{} TLS alert(s) in {} session(s): {}.",
            rows.len(),
            m.sessions.iter().filter(|s| !s.alerts.is_empty()).count(),
            by_description
                .iter()
                .map(|c| format!("{} {}", c.count, c.key))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    (
        summary,
        findings,
        Alerts {
            by_description,
            alerts: page(rows, p),
        },
    )
}

// ---------------------------------------------------------------- ciphers

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SuiteRow {
    pub suite: String,
    pub code: String,
    /// insecure, weak, modern, signalling or unknown.
    pub grade: String,
    pub reason: String,
    /// Clients that offered it / sessions where a server chose it.
    pub offered_by_clients: u64,
    pub chosen_in_sessions: u64,
    pub chosen_by_servers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CipherAnalysis {
    pub chosen_grades: Vec<CountRow>,
    pub suites: Table<SuiteRow>,
    /// Sessions that failed before a suite was chosen, with their alert.
    pub negotiation_failures: Vec<SniRow>,
}

fn ciphers(m: &TlsModel, p: &TcpParams) -> Reduced<CipherAnalysis> {
    let mut suites: BTreeMap<
        u64,
        (
            std::collections::BTreeSet<String>,
            u64,
            std::collections::BTreeSet<String>,
        ),
    > = BTreeMap::new();
    for s in &m.sessions {
        for c in &s.offered_ciphers {
            suites
                .entry(u64::from(*c))
                .or_default()
                .0
                .insert(s.addr[0].clone());
        }
        if let Some(c) = s.cipher {
            let e = suites.entry(c).or_default();
            e.1 += 1;
            e.2.insert(s.endpoint(1));
        }
    }
    let mut rows: Vec<SuiteRow> = suites
        .into_iter()
        .map(|(code, (clients, chosen, servers))| {
            let (g, why) = grade(code);
            SuiteRow {
                suite: suite_name(code),
                code: format!("0x{code:04x}"),
                grade: g.into(),
                reason: why.into(),
                offered_by_clients: clients.len() as u64,
                chosen_in_sessions: chosen,
                chosen_by_servers: servers.into_iter().take(10).collect(),
            }
        })
        .collect();
    let rank = |g: &str| match g {
        "insecure" => 0,
        "weak" => 1,
        "unknown" => 2,
        "modern" => 3,
        _ => 4,
    };
    rows.sort_by(|a, b| {
        b.chosen_in_sessions
            .min(1)
            .cmp(&a.chosen_in_sessions.min(1))
            .then(rank(&a.grade).cmp(&rank(&b.grade)))
            .then(b.chosen_in_sessions.cmp(&a.chosen_in_sessions))
    });
    let chosen_grades = counts(
        m.sessions
            .iter()
            .filter_map(|s| s.cipher)
            .map(|c| grade(c).0.to_string()),
    );
    let mut findings = Vec::new();
    for (g, sev) in [("insecure", Severity::High), ("weak", Severity::Medium)] {
        let chosen: Vec<&SuiteRow> = rows
            .iter()
            .filter(|r| r.grade == g && r.chosen_in_sessions > 0)
            .collect();
        if let Some(r) = chosen.first() {
            findings.push(Finding::new(
                sev,
                format!(
                    "Servers chose {g} suites in {} session(s)",
                    chosen.iter().map(|r| r.chosen_in_sessions).sum::<u64>()
                ),
                format!(
                    "E.g. {} ({}) chosen by {}.",
                    r.suite,
                    r.reason,
                    crate::report::some_of(&r.chosen_by_servers, 5)
                ),
                Evidence {
                    endpoints: r.chosen_by_servers.iter().take(10).cloned().collect(),
                    display_filter: format!(
                        "tls.handshake.type == 2 && tls.handshake.ciphersuite == {}",
                        r.code
                    ),
                    ..Default::default()
                },
            ));
        }
    }
    let offered_insecure: Vec<&SuiteRow> = rows
        .iter()
        .filter(|r| r.grade == "insecure" && r.offered_by_clients > 0)
        .collect();
    if !offered_insecure.is_empty() {
        findings.push(Finding::new(
            Severity::Low,
            format!(
                "Clients still offer {} insecure suite(s)",
                offered_insecure.len()
            ),
            format!(
                "E.g. {}; harmless while servers refuse them, a downgrade risk otherwise.",
                offered_insecure
                    .iter()
                    .take(3)
                    .map(|r| r.suite.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Evidence {
                display_filter: format!(
                    "tls.handshake.type == 1 && tls.handshake.ciphersuite in {{{}}}",
                    offered_insecure
                        .iter()
                        .take(10)
                        .map(|r| r.code.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                ..Default::default()
            },
        ));
    }
    let failures: Vec<SniRow> = m
        .sessions
        .iter()
        .filter(|s| s.cipher.is_none() && s.client_hello.is_some() && s.outcome() != "incomplete")
        .map(|s| SniRow {
            session: s.key.clone(),
            client: s.endpoint(0),
            server: s.endpoint(1),
            sni: s.sni.clone(),
            verdict: "negotiation_failed".into(),
            certificate_names: Vec::new(),
            certificate_name_count: 0,
            certificate_subject: None,
            failed_after: s
                .alerts
                .iter()
                .find_map(|a| a.description)
                .map(|d| alert_name(d).0.to_string())
                .or_else(|| s.reset.map(|_| "reset".into())),
            display_filter: s.filter(),
        })
        .collect();
    if let Some(f) = failures.first() {
        findings.push(Finding::new(
            Severity::Medium,
            format!(
                "{} negotiation(s) failed before a suite was chosen",
                failures.len()
            ),
            format!(
                "E.g. {} -> {} ended with {}: no common version or cipher suite.",
                f.client,
                f.server,
                f.failed_after.clone().unwrap_or_else(|| "nothing".into())
            ),
            Evidence {
                display_filter: f.display_filter.clone(),
                endpoints: vec![f.server.clone()],
                ..Default::default()
            },
        ));
    }
    let summary = if m.sessions.is_empty() {
        no_tls(m)
    } else {
        format!(
            "{} distinct suites offered or chosen in {} session(s); chosen suites by grade: {}.",
            rows.len(),
            m.sessions.len(),
            if chosen_grades.is_empty() {
                "none".to_string()
            } else {
                chosen_grades
                    .iter()
                    .map(|c| format!("{} {}", c.count, c.key))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    };
    (
        summary,
        findings,
        CipherAnalysis {
            chosen_grades,
            suites: page(rows, p),
            negotiation_failures: failures,
        },
    )
}

#[tool_router(router = tls_router, vis = "pub(crate)")]
impl PcapServer {
    /// Per TLS session (TCP and QUIC): client, server, SNI, versions offered and negotiated
    /// (TLS 1.3 via supported_versions), cipher suite, ALPN, JA3/JA3S, handshake time,
    /// outcome (complete, alert, reset, incomplete), resumption; version and outcome counts.
    #[tool(
        name = "analyze_tls_handshakes",
        annotations(
            title = "TLS handshakes",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_tls_handshakes(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Handshakes>>, String> {
        self.tls_tool("analyze_tls_handshakes", p, rc, handshakes)
            .await
    }

    /// SNI against the server certificate's names (SAN, else CN; RFC 6125 wildcards):
    /// mismatches, missing SNI, IP-literal SNI, sessions that then failed; TLS 1.3
    /// certificates are encrypted and reported as not verifiable.
    #[tool(
        name = "analyze_sni_mismatches",
        annotations(
            title = "SNI vs certificate",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn analyze_sni_mismatches(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<SniCheck>>, String> {
        self.tls_tool("analyze_sni_mismatches", p, rc, sni_mismatches)
            .await
    }

    /// Each distinct certificate once (SHA-256; 10 per page by default): subject, issuer,
    /// serial, validity at presentation, SANs, key, signature algorithm (SHA-1/MD5
    /// flagged), self-signed, chain position, and which servers and SNIs presented it.
    #[tool(
        name = "extract_certificate_details",
        annotations(
            title = "TLS certificates",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn extract_certificate_details(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Certificates>>, String> {
        self.tls_tool("extract_certificate_details", p, rc, certificates)
            .await
    }

    /// Each TLS alert: level, description by name and what it usually means, who sent
    /// it, session and SNI, during or after the handshake; encrypted alerts marked.
    #[tool(
        name = "analyze_tls_alerts",
        annotations(title = "TLS alerts", read_only_hint = true, open_world_hint = false)
    )]
    pub async fn analyze_tls_alerts(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<Alerts>>, String> {
        self.tls_tool("analyze_tls_alerts", p, rc, alerts).await
    }

    /// Cipher suites offered by clients and chosen by servers, graded insecure (NULL,
    /// EXPORT, RC4, DES/3DES, anon), weak (CBC-SHA1, no forward secrecy) or modern (AEAD
    /// with ECDHE, TLS 1.3); negotiation failures with their alerts.
    #[tool(
        name = "extract_tls_cipher_analysis",
        annotations(
            title = "TLS cipher suites",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn extract_tls_cipher_analysis(
        &self,
        Parameters(p): Parameters<TcpParams>,
        rc: RequestContext<RoleServer>,
    ) -> Result<Json<Report<CipherAnalysis>>, String> {
        self.tls_tool("extract_tls_cipher_analysis", p, rc, ciphers)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6125_wildcards() {
        assert!(name_matches("*.example.com", "www.example.com"));
        assert!(name_matches("*.EXAMPLE.com", "Www.example.com."));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.com", "example.com"));
        assert!(!name_matches("www.*.com", "www.example.com"));
        assert!(name_matches("f*.example.com", "foo.example.com"));
        assert!(!name_matches("f*.example.com", "bar.example.com"));
        assert!(name_matches("www.example.com", "WWW.EXAMPLE.COM"));
        assert!(!name_matches("www.example.com", "example.com"));
    }

    #[test]
    fn grades() {
        assert_eq!(grade(0x0004).0, "insecure"); // RC4_128_MD5
        assert_eq!(grade(0x000a).0, "insecure"); // 3DES
        assert_eq!(grade(0x002f).0, "weak"); // RSA kx
        assert_eq!(grade(0xc014).0, "weak"); // CBC-SHA1
        assert_eq!(grade(0xc02f).0, "modern");
        assert_eq!(grade(0x1301).0, "modern");
        assert_eq!(grade(0x00ff).0, "signalling");
        assert_eq!(alert_name(48).0, "unknown_ca");
    }
}
