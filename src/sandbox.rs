//! Which files a client may make us read or write.
//!
//! Every path a client names is resolved to its canonical form (symlinks followed) and
//! must then lie under `PCAP_STORAGE_DIR` or a `PCAP_ALLOWED_DIRS` root. The first bytes
//! must be a pcap or pcapng header: tshark also reads JSON and several text formats, so
//! without this check a client could read arbitrary files through it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::config::Config;

/// A capture file that passed every check; the only way tools get a path to give tshark.
#[derive(Debug, Clone)]
pub struct CaptureFile {
    pub path: PathBuf,
    /// What the client called it, echoed in results.
    pub display_name: String,
    pub format: CaptureFormat,
    pub size: u64,
    pub mtime_ns: u128,
}

impl CaptureFile {
    /// File identity for caches: a rewritten file gets a new size or mtime.
    pub fn identity(&self) -> String {
        format!("{}|{}|{}", self.path.display(), self.size, self.mtime_ns)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CaptureFormat {
    Pcap,
    Pcapng,
}

/// Reads the magic number. pcap: 0xa1b2c3d4 (microseconds) and 0xa1b23c4d (nanoseconds)
/// in either byte order; pcapng: the Section Header Block type 0x0a0d0d0a.
pub fn sniff_format(head: &[u8]) -> Option<CaptureFormat> {
    if head.len() < 4 {
        return None;
    }
    match [head[0], head[1], head[2], head[3]] {
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d] => Some(CaptureFormat::Pcap),
        [0x0a, 0x0d, 0x0d, 0x0a] => Some(CaptureFormat::Pcapng),
        _ => None,
    }
}

pub fn format_of(path: &Path) -> Option<CaptureFormat> {
    let mut head = [0u8; 4];
    let mut f = File::open(path).ok()?;
    f.read_exact(&mut head).ok()?;
    sniff_format(&head)
}

/// Characters allowed in a file name the server writes.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A validated TLS key log.
#[derive(Debug, Clone)]
pub struct KeyLog {
    pub path: PathBuf,
    /// Path, size and mtime: a key log that grows invalidates cached results.
    pub identity: String,
}

pub struct Sandbox<'a> {
    cfg: &'a Config,
}

impl<'a> Sandbox<'a> {
    pub fn new(cfg: &'a Config) -> Self {
        Self { cfg }
    }

    fn roots(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.cfg.storage_dir).chain(self.cfg.allowed_dirs.iter())
    }

    fn roots_text(&self) -> String {
        self.roots()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Resolves a client-supplied capture name to a readable capture file.
    /// Resolves a client-named file to a canonical path inside the roots: `what` names
    /// the parameter in messages.
    fn resolve(&self, requested: &str, what: &str) -> Result<(PathBuf, std::fs::Metadata), String> {
        let requested_trim = requested.trim();
        if requested_trim.is_empty() {
            return Err(format!(
                "{what} is empty: give a file name in PCAP_STORAGE_DIR (see list_captured_files) or a path inside PCAP_ALLOWED_DIRS"
            ));
        }
        if requested_trim.contains('\0') {
            return Err(format!(
                "{what} contains a NUL byte; give a plain file name or path"
            ));
        }
        let raw = Path::new(requested_trim);
        let candidate = if raw.is_absolute() {
            raw.to_path_buf()
        } else {
            self.cfg.storage_dir.join(raw)
        };
        let canonical = candidate.canonicalize().map_err(|e| {
            format!(
                "cannot open {what} '{requested_trim}': {e}. Bare names are looked up in PCAP_STORAGE_DIR ({}); call list_captured_files to see what is there",
                self.cfg.storage_dir.display()
            )
        })?;
        if !self.roots().any(|root| canonical.starts_with(root)) {
            return Err(format!(
                "'{requested_trim}' resolves to {}, which is outside the directories this server may read ({}). \
                 The operator can allow it by adding its directory to PCAP_ALLOWED_DIRS",
                canonical.display(),
                self.roots_text()
            ));
        }
        let meta = std::fs::metadata(&canonical)
            .map_err(|e| format!("cannot read '{requested_trim}': {e}"))?;
        if !meta.is_file() {
            return Err(format!("'{requested_trim}' ({what}) is not a regular file"));
        }
        Ok((canonical, meta))
    }

    /// Resolves a client-supplied capture name to a readable capture file.
    pub fn open_capture(&self, requested: &str) -> Result<CaptureFile, String> {
        let requested_trim = requested.trim();
        let (canonical, meta) = self.resolve(requested, "pcap_file")?;
        let format = format_of(&canonical).ok_or_else(|| {
            format!(
                "'{requested_trim}' is not a pcap or pcapng capture (its first bytes are not a capture file header{}). \
                 Only pcap and pcapng files are analysed, whatever their extension",
                if meta.len() == 0 { "; the file is empty" } else { "" }
            )
        })?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Ok(CaptureFile {
            display_name: requested_trim.to_string(),
            path: canonical,
            format,
            size: meta.len(),
            mtime_ns,
        })
    }

    /// A TLS key log (SSLKEYLOGFILE format) inside the roots. Its first line must look
    /// like one, so the setting cannot be used to feed tshark some other file.
    pub fn open_keylog(&self, requested: &str, what: &str) -> Result<KeyLog, String> {
        let (path, meta) = self.resolve(requested, what)?;
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(4096).read_to_end(&mut bytes))
            .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
        let head = String::from_utf8_lossy(&bytes);
        let first = head
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'));
        const LABELS: &[&str] = &[
            "CLIENT_RANDOM",
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
            "SERVER_HANDSHAKE_TRAFFIC_SECRET",
            "CLIENT_TRAFFIC_SECRET_0",
            "SERVER_TRAFFIC_SECRET_0",
            "EXPORTER_SECRET",
            "EARLY_EXPORTER_SECRET",
            "CLIENT_EARLY_TRAFFIC_SECRET",
            "RSA",
        ];
        match first {
            Some(l) if LABELS.iter().any(|p| l.starts_with(p)) => {}
            _ => {
                return Err(format!(
                    "{what} {} is not a TLS key log: expected lines like `CLIENT_RANDOM <hex> <hex>` (the SSLKEYLOGFILE format browsers, curl and openssl -keylogfile write)",
                    path.display()
                ));
            }
        }
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Ok(KeyLog {
            identity: format!("{}|{}|{mtime_ns}", path.display(), meta.len()),
            path,
        })
    }

    /// A path for a new file the server writes into storage, or why it is refused.
    pub fn new_output_path(&self, name: &str) -> Result<PathBuf, String> {
        if !is_safe_file_name(name) {
            return Err(format!(
                "output file name '{name}' is not allowed: use a bare name of letters, digits, '.', '_' and '-' \
                 (no '/', no '..', not starting with '.', at most 128 characters); it is written into PCAP_STORAGE_DIR"
            ));
        }
        let path = self.cfg.storage_dir.join(name);
        if path.exists() {
            return Err(format!(
                "'{name}' already exists in PCAP_STORAGE_DIR and is never overwritten; choose another name or omit it for a generated one"
            ));
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers() {
        assert_eq!(
            sniff_format(&[0xd4, 0xc3, 0xb2, 0xa1]),
            Some(CaptureFormat::Pcap)
        );
        assert_eq!(
            sniff_format(&[0xa1, 0xb2, 0xc3, 0xd4]),
            Some(CaptureFormat::Pcap)
        );
        assert_eq!(
            sniff_format(&[0x4d, 0x3c, 0xb2, 0xa1]),
            Some(CaptureFormat::Pcap)
        );
        assert_eq!(
            sniff_format(&[0xa1, 0xb2, 0x3c, 0x4d]),
            Some(CaptureFormat::Pcap)
        );
        assert_eq!(
            sniff_format(&[0x0a, 0x0d, 0x0d, 0x0a]),
            Some(CaptureFormat::Pcapng)
        );
        assert_eq!(sniff_format(b"{\"a\""), None);
        assert_eq!(sniff_format(b""), None);
    }

    #[test]
    fn safe_names() {
        assert!(is_safe_file_name("capture-1_a.pcapng"));
        for bad in ["", "../x", "a/b", ".hidden", "a b", "x\\y", "é.pcap"] {
            assert!(!is_safe_file_name(bad), "{bad}");
        }
    }
}
