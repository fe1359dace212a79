//! TLS facts several views read: cipher suite names and grades, and certificates parsed
//! from their DER bytes (the TLS tools show them, the threat view judges them).

use schemars::JsonSchema;
use serde::Serialize;
use x509_parser::prelude::*;

use crate::model::tls::Certificate;
use crate::report::rfc3339;

/// IANA names of the cipher suites seen in practice.
const SUITES: &[(u64, &str)] = &[
    (0x0001, "TLS_RSA_WITH_NULL_MD5"),
    (0x0002, "TLS_RSA_WITH_NULL_SHA"),
    (0x0003, "TLS_RSA_EXPORT_WITH_RC4_40_MD5"),
    (0x0004, "TLS_RSA_WITH_RC4_128_MD5"),
    (0x0005, "TLS_RSA_WITH_RC4_128_SHA"),
    (0x0006, "TLS_RSA_EXPORT_WITH_RC2_CBC_40_MD5"),
    (0x0007, "TLS_RSA_WITH_IDEA_CBC_SHA"),
    (0x0008, "TLS_RSA_EXPORT_WITH_DES40_CBC_SHA"),
    (0x0009, "TLS_RSA_WITH_DES_CBC_SHA"),
    (0x000a, "TLS_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0x0011, "TLS_DHE_DSS_EXPORT_WITH_DES40_CBC_SHA"),
    (0x0012, "TLS_DHE_DSS_WITH_DES_CBC_SHA"),
    (0x0013, "TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA"),
    (0x0014, "TLS_DHE_RSA_EXPORT_WITH_DES40_CBC_SHA"),
    (0x0015, "TLS_DHE_RSA_WITH_DES_CBC_SHA"),
    (0x0016, "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0x0018, "TLS_DH_anon_WITH_RC4_128_MD5"),
    (0x001b, "TLS_DH_anon_WITH_3DES_EDE_CBC_SHA"),
    (0x002f, "TLS_RSA_WITH_AES_128_CBC_SHA"),
    (0x0032, "TLS_DHE_DSS_WITH_AES_128_CBC_SHA"),
    (0x0033, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA"),
    (0x0034, "TLS_DH_anon_WITH_AES_128_CBC_SHA"),
    (0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA"),
    (0x0038, "TLS_DHE_DSS_WITH_AES_256_CBC_SHA"),
    (0x0039, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA"),
    (0x003a, "TLS_DH_anon_WITH_AES_256_CBC_SHA"),
    (0x003b, "TLS_RSA_WITH_NULL_SHA256"),
    (0x003c, "TLS_RSA_WITH_AES_128_CBC_SHA256"),
    (0x003d, "TLS_RSA_WITH_AES_256_CBC_SHA256"),
    (0x0040, "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256"),
    (0x0041, "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA"),
    (0x0044, "TLS_DHE_DSS_WITH_CAMELLIA_128_CBC_SHA"),
    (0x0045, "TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA"),
    (0x0067, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256"),
    (0x006a, "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256"),
    (0x006b, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256"),
    (0x0084, "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA"),
    (0x0087, "TLS_DHE_DSS_WITH_CAMELLIA_256_CBC_SHA"),
    (0x0088, "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA"),
    (0x0096, "TLS_RSA_WITH_SEED_CBC_SHA"),
    (0x009c, "TLS_RSA_WITH_AES_128_GCM_SHA256"),
    (0x009d, "TLS_RSA_WITH_AES_256_GCM_SHA384"),
    (0x009e, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"),
    (0x009f, "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384"),
    (0x00a2, "TLS_DHE_DSS_WITH_AES_128_GCM_SHA256"),
    (0x00a3, "TLS_DHE_DSS_WITH_AES_256_GCM_SHA384"),
    (0x00ff, "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"),
    (0x1301, "TLS_AES_128_GCM_SHA256"),
    (0x1302, "TLS_AES_256_GCM_SHA384"),
    (0x1303, "TLS_CHACHA20_POLY1305_SHA256"),
    (0x1304, "TLS_AES_128_CCM_SHA256"),
    (0x1305, "TLS_AES_128_CCM_8_SHA256"),
    (0x5600, "TLS_FALLBACK_SCSV"),
    (0xc006, "TLS_ECDHE_ECDSA_WITH_NULL_SHA"),
    (0xc007, "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"),
    (0xc008, "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA"),
    (0xc009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"),
    (0xc00a, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"),
    (0xc010, "TLS_ECDHE_RSA_WITH_NULL_SHA"),
    (0xc011, "TLS_ECDHE_RSA_WITH_RC4_128_SHA"),
    (0xc012, "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0xc013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
    (0xc014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"),
    (0xc015, "TLS_ECDH_anon_WITH_NULL_SHA"),
    (0xc016, "TLS_ECDH_anon_WITH_RC4_128_SHA"),
    (0xc017, "TLS_ECDH_anon_WITH_3DES_EDE_CBC_SHA"),
    (0xc018, "TLS_ECDH_anon_WITH_AES_128_CBC_SHA"),
    (0xc019, "TLS_ECDH_anon_WITH_AES_256_CBC_SHA"),
    (0xc023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"),
    (0xc024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384"),
    (0xc027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"),
    (0xc028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384"),
    (0xc02b, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    (0xc02c, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    (0xc02f, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    (0xc030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    (0xcca8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
    (0xcca9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    (0xccaa, "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
];

pub fn suite_name(code: u64) -> String {
    SUITES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("0x{code:04x}"))
}

/// insecure, weak, modern, signalling (SCSV) or unknown, with the reason.
pub fn grade(code: u64) -> (&'static str, &'static str) {
    let name = suite_name(code);
    if name.ends_with("_SCSV") {
        return ("signalling", "not a cipher: a signalling value");
    }
    if name.starts_with("0x") {
        return ("unknown", "suite not in this server's table");
    }
    if name.contains("_NULL_") {
        ("insecure", "NULL cipher: no encryption")
    } else if name.contains("EXPORT") {
        ("insecure", "EXPORT-grade keys, breakable")
    } else if name.contains("_anon_") {
        (
            "insecure",
            "anonymous key exchange: no server authentication",
        )
    } else if name.contains("RC4") {
        ("insecure", "RC4 is broken (RFC 7465)")
    } else if name.contains("_DES_") || name.contains("3DES") || name.contains("DES40") {
        ("insecure", "DES/3DES: 64-bit blocks (Sweet32)")
    } else if name.starts_with("TLS_AES_") || name.starts_with("TLS_CHACHA20") {
        ("modern", "TLS 1.3 AEAD suite")
    } else if name.starts_with("TLS_RSA_") {
        ("weak", "RSA key exchange: no forward secrecy")
    } else if name.ends_with("_CBC_SHA") || name.contains("CBC") && name.ends_with("SHA") {
        ("weak", "CBC with SHA-1 MAC")
    } else if name.contains("GCM") || name.contains("CHACHA20") || name.contains("CCM") {
        ("modern", "AEAD with forward-secret key exchange")
    } else {
        ("weak", "CBC mode (padding-oracle prone)")
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CertRow {
    pub sha256: String,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    /// valid, expired, not_yet_valid or expires_soon (within 30 days), when it was presented (first_frame).
    pub status: String,
    pub days_left: i64,
    pub san_dns: Vec<String>,
    pub san_ip: Vec<String>,
    pub key_type: String,
    pub key_bits: Option<u64>,
    pub signature_algorithm: String,
    pub weak_signature: bool,
    pub self_signed: bool,
    pub is_ca: bool,
    /// Positions in the chains where it appeared (0 = leaf).
    pub chain_positions: Vec<usize>,
    /// The first [`CERT_NAMES`] servers (`addr:port`) that presented it, in order of
    /// first presentation; `servers_total` counts them all.
    pub servers: Vec<String>,
    pub servers_total: u64,
    /// The first [`CERT_NAMES`] SNIs it was presented for; `snis_total` counts them all.
    pub snis: Vec<String>,
    pub snis_total: u64,
    pub first_frame: u64,
    pub display_filter: String,
}

/// Servers and SNIs listed per certificate: a CDN's certificate fronts thousands, and
/// the whole list would crowd every other row out of the answer.
pub const CERT_NAMES: usize = 20;

/// What a certificate says, parsed from its DER bytes.
pub struct Parsed {
    pub row: CertRow,
    /// Names for matching: SAN dNSNames, or the CNs when there is no SAN.
    pub names: Vec<String>,
}

/// A certificate's facts, its validity judged when it was first presented.
pub fn parse_cert(fp: &str, c: &Certificate) -> Option<Parsed> {
    let at = c.first_time;
    let (_, x) = X509Certificate::from_der(&c.der).ok()?;
    let nb = x.validity().not_before.timestamp() as f64;
    let na = x.validity().not_after.timestamp() as f64;
    let days_left = ((na - at) / 86_400.0).floor() as i64;
    let status = if at > na {
        "expired"
    } else if at < nb {
        "not_yet_valid"
    } else if days_left < 30 {
        "expires_soon"
    } else {
        "valid"
    };
    let mut san_dns = Vec::new();
    let mut san_ip = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => san_dns.push(d.to_string()),
                GeneralName::IPAddress(b) => san_ip.push(match b.len() {
                    4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        std::net::Ipv6Addr::from(a).to_string()
                    }
                    _ => continue,
                }),
                _ => {}
            }
        }
    }
    let cns: Vec<String> = x
        .subject()
        .iter_common_name()
        .filter_map(|c| c.as_str().ok().map(str::to_string))
        .collect();
    let (key_type, key_bits) = match x.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(r)) => {
            ("RSA".to_string(), Some(r.key_size() as u64))
        }
        Ok(x509_parser::public_key::PublicKey::EC(e)) => {
            ("EC".to_string(), Some(e.key_size() as u64))
        }
        Ok(x509_parser::public_key::PublicKey::DSA(_)) => ("DSA".to_string(), None),
        _ => (x.public_key().algorithm.algorithm.to_id_string(), None),
    };
    let sig_oid = x.signature_algorithm.algorithm.to_id_string();
    let signature_algorithm = match sig_oid.as_str() {
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassaPss",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.3.101.112" => "Ed25519",
        other => other,
    }
    .to_string();
    let weak =
        signature_algorithm.contains("md5") || signature_algorithm.to_lowercase().contains("sha1");
    let self_signed = x.subject().as_raw() == x.issuer().as_raw();
    let is_ca = x
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca);
    let mut positions = c.positions.clone();
    positions.sort_unstable();
    positions.dedup();
    let names = if san_dns.is_empty() {
        cns
    } else {
        san_dns.clone()
    };
    Some(Parsed {
        names,
        row: CertRow {
            sha256: fp.to_string(),
            subject: x.subject().to_string(),
            issuer: x.issuer().to_string(),
            serial: x.raw_serial_as_string(),
            not_before: rfc3339(nb),
            not_after: rfc3339(na),
            status: status.into(),
            days_left,
            san_dns,
            san_ip,
            key_type,
            key_bits,
            signature_algorithm,
            weak_signature: weak,
            self_signed,
            is_ca,
            chain_positions: positions,
            servers: c.servers.iter().take(CERT_NAMES).cloned().collect(),
            servers_total: c.servers.len() as u64,
            snis: c.snis.iter().take(CERT_NAMES).cloned().collect(),
            snis_total: c.snis.len() as u64,
            first_frame: c.first_frame,
            display_filter: format!("frame.number == {}", c.first_frame),
        },
    })
}

/// An alert description's name and what it usually means (RFC 8446 6.2 and its
/// predecessors).
pub fn alert_name(d: u64) -> (&'static str, &'static str) {
    match d {
        0 => (
            "close_notify",
            "orderly shutdown of the session, not an error",
        ),
        10 => (
            "unexpected_message",
            "a peer received a message out of order: implementation bug or interference",
        ),
        20 => (
            "bad_record_mac",
            "a record failed integrity check: corruption, a middlebox altering traffic, or a key mismatch",
        ),
        21 => ("decryption_failed", "obsolete: decryption failed"),
        22 => ("record_overflow", "a record was too long"),
        30 => (
            "decompression_failure",
            "compressed data could not be decompressed",
        ),
        40 => (
            "handshake_failure",
            "no acceptable set of parameters: usually no common cipher suite or version",
        ),
        41 => ("no_certificate", "SSLv3: no client certificate"),
        42 => (
            "bad_certificate",
            "a certificate was corrupt or its signature did not verify",
        ),
        43 => (
            "unsupported_certificate",
            "a certificate of an unsupported type",
        ),
        44 => (
            "certificate_revoked",
            "a certificate was revoked by its issuer",
        ),
        45 => (
            "certificate_expired",
            "a certificate has expired or is not yet valid",
        ),
        46 => (
            "certificate_unknown",
            "the certificate was not accepted for some other reason (often an untrusted or mismatched name)",
        ),
        47 => (
            "illegal_parameter",
            "a handshake field was out of range or inconsistent",
        ),
        48 => (
            "unknown_ca",
            "the client does not trust the CA that issued the chain (self-signed, private CA, missing intermediate)",
        ),
        49 => (
            "access_denied",
            "valid certificate, but access control refused the peer",
        ),
        50 => ("decode_error", "a message could not be parsed"),
        51 => (
            "decrypt_error",
            "a handshake cryptographic check failed (signature, Finished)",
        ),
        60 => ("export_restriction", "obsolete export restriction"),
        70 => (
            "protocol_version",
            "the peer does not support the offered TLS version",
        ),
        71 => (
            "insufficient_security",
            "the server requires stronger cipher suites than the client offered",
        ),
        80 => (
            "internal_error",
            "an error in the peer unrelated to the protocol",
        ),
        86 => (
            "inappropriate_fallback",
            "a version downgrade was detected (TLS_FALLBACK_SCSV)",
        ),
        90 => (
            "user_canceled",
            "the handshake was cancelled by the application",
        ),
        100 => ("no_renegotiation", "renegotiation refused"),
        109 => ("missing_extension", "a required extension was absent"),
        110 => ("unsupported_extension", "an extension was not expected"),
        112 => (
            "unrecognized_name",
            "the server has no certificate for the requested SNI",
        ),
        113 => (
            "bad_certificate_status_response",
            "an invalid OCSP response",
        ),
        115 => ("unknown_psk_identity", "the PSK identity is unknown"),
        116 => (
            "certificate_required",
            "the server requires a client certificate",
        ),
        120 => (
            "no_application_protocol",
            "no common ALPN protocol (e.g. h2 vs http/1.1)",
        ),
        _ => ("unknown", "an alert code this server does not know"),
    }
}
