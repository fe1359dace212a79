//! Which files a client may make us read or write.
//!
//! Every path a client names is resolved to its canonical form (symlinks followed) and
//! must then lie under `PCAP_STORAGE_DIR` or a `PCAP_ALLOWED_DIRS` root. The first bytes
//! must be a pcap or pcapng header: tshark also reads JSON and several text formats, so
//! without this check a client could read arbitrary files through it.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use crate::config::Config;

/// A file the server opened after checking it: children read this open file (inherited
/// as a descriptor), never the path again, so what was checked is what is read.
#[derive(Debug, Clone)]
pub struct OpenedFile {
    pub file: Arc<File>,
    /// The real path of what was opened (for messages and reproducible commands).
    pub path: PathBuf,
}

impl OpenedFile {
    /// A new, independent read position on the same open file: concurrent readers must
    /// not share one file offset.
    pub fn reopen(&self) -> std::io::Result<File> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            File::open(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
        }
        #[cfg(not(target_os = "linux"))]
        {
            File::open(&self.path)
        }
    }

    /// Bytes in the file now (it may be growing).
    pub fn current_size(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

/// A capture file that passed every check; the only way tools get a file to give tshark.
#[derive(Debug, Clone)]
pub struct CaptureFile {
    pub opened: OpenedFile,
    /// What the client called it, echoed in results.
    pub display_name: String,
    pub format: CaptureFormat,
    /// Size when it was opened: the snapshot every reader of ours stops at.
    pub size: u64,
    pub mtime_ns: u128,
    /// Device and inode: a file replaced under the same name is another file.
    pub inode: (u64, u64),
}

impl CaptureFile {
    /// A capture the server wrote itself (a page of search matches): read as the
    /// client's file is, named after it in messages.
    pub fn internal(file: File, path: &Path, display_name: &str) -> Self {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Self {
            opened: OpenedFile {
                file: Arc::new(file),
                path: path.to_path_buf(),
            },
            display_name: display_name.to_string(),
            format: CaptureFormat::Pcap,
            size,
            mtime_ns: 0,
            inode: (0, 0),
        }
    }

    /// File identity for caches: a rewritten file gets a new size, mtime or inode.
    pub fn identity(&self) -> String {
        format!(
            "{}|{}|{}|{}:{}",
            self.opened.path.display(),
            self.size,
            self.mtime_ns,
            self.inode.0,
            self.inode.1
        )
    }

    pub fn path(&self) -> &Path {
        &self.opened.path
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

/// The capture format of an open file, from its first bytes (read without moving the
/// file's own offset).
pub fn format_of(f: &File) -> Option<CaptureFormat> {
    let mut head = [0u8; 4];
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        f.read_exact_at(&mut head, 0).ok()?;
    }
    #[cfg(not(unix))]
    {
        let mut f = f.try_clone().ok()?;
        f.read_exact(&mut head).ok()?;
    }
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
    pub opened: OpenedFile,
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

    /// Whether `path`, with `.` and `..` folded lexically, lies under a root: decides
    /// only how helpful an error may be, never whether a file is read.
    fn lexically_inside(&self, path: &Path) -> bool {
        let mut folded = PathBuf::new();
        for c in path.components() {
            match c {
                Component::ParentDir => {
                    folded.pop();
                }
                Component::CurDir => {}
                c => folded.push(c),
            }
        }
        self.roots().any(|root| folded.starts_with(root))
    }

    /// The one answer for anything outside the roots, whether or not it exists, so
    /// that errors do not reveal which paths exist or where symlinks point.
    fn refused(&self, requested: &str, what: &str) -> String {
        format!(
            "{what} '{requested}' is not a file this server may read: it does not exist, or it is not inside the directories this server reads ({}). \
             A bare name is looked up in PCAP_STORAGE_DIR (list_captured_files shows what is there); the operator can allow another directory by adding it to PCAP_ALLOWED_DIRS",
            self.roots_text()
        )
    }

    /// Opens a client-named file inside the roots: `what` names the parameter in
    /// messages. The path is checked before the open (nothing outside the roots is ever
    /// opened) and the opened file's real path after it (a directory swapped for a
    /// symlink in between is caught); readers then use this open file, never the path.
    fn resolve(
        &self,
        requested: &str,
        what: &str,
    ) -> Result<(OpenedFile, std::fs::Metadata), String> {
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
        let inside = self.lexically_inside(&candidate);
        let canonical = match candidate.canonicalize() {
            Ok(c) => c,
            Err(e) if inside => {
                return Err(format!(
                    "cannot open {what} '{requested_trim}': {e}. Bare names are looked up in PCAP_STORAGE_DIR ({}); call list_captured_files to see what is there",
                    self.cfg.storage_dir.display()
                ));
            }
            Err(_) => return Err(self.refused(requested_trim, what)),
        };
        if !self.in_roots(&canonical) {
            return Err(self.refused(requested_trim, what));
        }
        let file = open_read(&canonical)
            .map_err(|e| format!("cannot open {what} '{requested_trim}': {e}"))?;
        let real = real_path(&file).unwrap_or(canonical);
        if !self.in_roots(&real) {
            return Err(self.refused(requested_trim, what));
        }
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read '{requested_trim}': {e}"))?;
        if !meta.is_file() {
            return Err(format!("'{requested_trim}' ({what}) is not a regular file"));
        }
        Ok((
            OpenedFile {
                file: Arc::new(file),
                path: real,
            },
            meta,
        ))
    }

    fn in_roots(&self, path: &Path) -> bool {
        self.roots().any(|root| path.starts_with(root))
    }

    /// The regular files directly in PCAP_STORAGE_DIR, newest first (names break ties,
    /// so the order never depends on the directory), and the names of the symbolic
    /// links there, which are listed and never followed.
    pub fn storage_entries(&self) -> Result<(Vec<StoredEntry>, Vec<String>), String> {
        let dir = &self.cfg.storage_dir;
        let read = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read PCAP_STORAGE_DIR {}: {e}", dir.display()))?;
        let mut found = Vec::new();
        let mut links = Vec::new();
        for entry in read.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.file_type().is_symlink() {
                links.push(name);
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            found.push(StoredEntry {
                name,
                modified: meta.modified().unwrap_or(UNIX_EPOCH),
                size: meta.len(),
            });
        }
        links.sort();
        found.sort_by(|a, b| {
            b.modified
                .cmp(&a.modified)
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok((found, links))
    }

    /// The files a glob names: wildcards (`*`, `?`) only in the last component, the
    /// directory before it inside the roots (a bare pattern means PCAP_STORAGE_DIR).
    /// Regular files only, sorted by name; symbolic links are skipped like the storage
    /// listing's. Each name still goes through [`Self::open_capture`] before it is read.
    pub fn glob(&self, pattern: &str) -> Result<Vec<String>, String> {
        let pattern = pattern.trim();
        let (dir, name_pattern) = match pattern.rsplit_once('/') {
            Some((d, n)) => (Some(if d.is_empty() { "/" } else { d }), n),
            None => (None, pattern),
        };
        if dir.is_some_and(|d| d.contains(['*', '?'])) || name_pattern.is_empty() {
            return Err(format!(
                "glob {pattern:?}: wildcards (* and ?) may only stand in the file name, e.g. `*.pcapng` or `/data/captures/day1-*.pcap`"
            ));
        }
        let dir_path = match dir {
            Some(d) if Path::new(d).is_absolute() => PathBuf::from(d),
            Some(d) => self.cfg.storage_dir.join(d),
            None => self.cfg.storage_dir.clone(),
        };
        let canonical = dir_path
            .canonicalize()
            .ok()
            .filter(|c| self.in_roots(c))
            .ok_or_else(|| self.refused(dir.unwrap_or("."), "glob directory"))?;
        let read = std::fs::read_dir(&canonical)
            .map_err(|e| format!("cannot list {}: {e}", dir.unwrap_or(".")))?;
        let mut names: Vec<String> = read
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| wildcard_match(name_pattern.as_bytes(), n.as_bytes()))
            .map(|n| match dir {
                Some(d) => format!("{}/{n}", d.trim_end_matches('/')),
                None => n,
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Any file inside the roots by name or path (the same checks as a capture), for
    /// what the server wrote into storage besides captures (I/O-graph pictures).
    pub fn open_file(
        &self,
        requested: &str,
        what: &str,
    ) -> Result<(OpenedFile, std::fs::Metadata), String> {
        self.resolve(requested, what)
    }

    /// Resolves a client-supplied capture name to a readable capture file.
    pub fn open_capture(&self, requested: &str) -> Result<CaptureFile, String> {
        let requested_trim = requested.trim();
        let (opened, meta) = self.resolve(requested, "pcap_file")?;
        let format = format_of(&opened.file).ok_or_else(|| {
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
            opened,
            format,
            size: meta.len(),
            mtime_ns,
            inode: inode_of(&meta),
        })
    }

    /// A TLS key log (SSLKEYLOGFILE format) inside the roots. Its first line must look
    /// like one, so the setting cannot be used to feed tshark some other file.
    pub fn open_keylog(&self, requested: &str, what: &str) -> Result<KeyLog, String> {
        let (opened, meta) = self.resolve(requested, what)?;
        let path = opened.path.clone();
        let mut bytes = Vec::new();
        opened
            .reopen()
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
            opened,
        })
    }

    /// Creates a new file in storage for the server to write: a safe bare name, created
    /// with O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600, so an existing file, or a symlink
    /// planted under that name, is never written through.
    pub fn create_output(&self, name: &str) -> Result<(File, PathBuf), String> {
        if !is_safe_file_name(name) {
            return Err(format!(
                "output file name '{name}' is not allowed: use a bare name of letters, digits, '.', '_' and '-' \
                 (no '/', no '..', not starting with '.', at most 128 characters); it is written into PCAP_STORAGE_DIR"
            ));
        }
        let path = self.cfg.storage_dir.join(name);
        match create_private(&path) {
            Ok(f) => Ok((f, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(format!(
                "'{name}' already exists in PCAP_STORAGE_DIR and is never overwritten; choose another name or omit it for a generated one"
            )),
            Err(e) => Err(format!("cannot create '{name}' in PCAP_STORAGE_DIR: {e}")),
        }
    }
}

impl Sandbox<'_> {
    /// Creates a new directory in storage (a safe bare name; an existing one, or a
    /// symlink under that name, is refused, never reused).
    pub fn create_output_dir(&self, name: &str) -> Result<PathBuf, String> {
        if !is_safe_file_name(name) {
            return Err(format!(
                "folder name '{name}' is not allowed: use a bare name of letters, digits, '.', '_' and '-'"
            ));
        }
        let path = self.cfg.storage_dir.join(name);
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        match b.create(&path) {
            Ok(()) => Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(format!(
                "'{name}' already exists in PCAP_STORAGE_DIR and is never reused; choose another name"
            )),
            Err(e) => Err(format!("cannot create '{name}' in PCAP_STORAGE_DIR: {e}")),
        }
    }

    /// A scratch directory inside storage (hidden, removed when dropped): what a child
    /// writes there counts against the same disk as the results it becomes, and moving
    /// a file from it into storage is a rename on one file system.
    pub fn scratch_dir(&self) -> Result<tempfile::TempDir, String> {
        tempfile::Builder::new()
            .prefix(".scratch-")
            .tempdir_in(&self.cfg.storage_dir)
            .map_err(|e| {
                format!(
                    "cannot create a scratch folder in PCAP_STORAGE_DIR ({}): {e}",
                    self.cfg.storage_dir.display()
                )
            })
    }
}

/// `*` (any run of characters) and `?` (one character) against a file name. Greedy
/// with one backtrack point, so a hostile pattern of many stars stays linear per star.
fn wildcard_match(p: &[u8], n: &[u8]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A new name in storage for something made from a capture: `<stem><what><ns><ext>`,
/// the capture's file stem in safe characters (at most 80, no leading '.') and the
/// time in nanoseconds, so two calls never pick the same name.
/// Creates `path` for the server to write: O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600, so
/// an existing file, or a symlink planted under that name, is never written through.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    o.open(path)
}

pub fn generated_name(display_name: &str, what: &str, ext: &str) -> String {
    let stem: String = Path::new(display_name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}{what}{now}{ext}", stem.trim_start_matches('.'))
}

/// A regular file in PCAP_STORAGE_DIR.
pub struct StoredEntry {
    pub name: String,
    pub modified: std::time::SystemTime,
    pub size: u64,
}

/// Opens for reading without blocking on a FIFO or acquiring a terminal.
fn open_read(path: &Path) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    o.open(path)
}

/// Where an open file really is (Linux: /proc/self/fd), whatever happened to the path.
fn real_path(f: &File) -> Option<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = f;
        None
    }
}

fn inode_of(meta: &std::fs::Metadata) -> (u64, u64) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_names() {
        assert!(wildcard_match(b"*.pcap", b"day1.pcap"));
        assert!(!wildcard_match(b"*.pcap", b"day1.pcapng"));
        assert!(wildcard_match(b"day?-*.pcap*", b"day1-a.pcapng"));
        assert!(wildcard_match(b"*", b""));
        assert!(!wildcard_match(b"a*b*c", b"aXbY"));
        // many stars against a long name answers at once
        let long = vec![b'a'; 10_000];
        assert!(!wildcard_match(b"*a*a*a*a*a*a*a*a*a*a*b", &long));
    }

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
