//! One place that decides how a secret seen in a capture is shown: masked as
//! `<masked, N chars>` unless the call asked to reveal it. Used for credential findings
//! and for every text a result copies out of packets (search snippets, info columns).

use std::sync::LazyLock;

use regex::Regex;

/// A secret as results show it.
pub fn mask(secret: &str, reveal: bool) -> String {
    if reveal {
        secret.to_string()
    } else {
        format!("<masked, {} chars>", secret.chars().count())
    }
}

/// Cleartext secrets in protocol text, the secret in group `s`: FTP/POP3 `PASS`, IMAP
/// `LOGIN user pass`, HTTP Basic/NTLM-free `Authorization`, SMTP `AUTH PLAIN/LOGIN`
/// payloads, and form or URL fields named like a password.
static SECRETS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"(?i)\bPASS\s+(?P<s>[^\s.]\S*)",
        r"(?i)\bLOGIN\s+\S+\s+(?P<s>\S+)",
        r"(?i)\bAuthorization:\s*(?:Basic|Bearer|Digest)\s+(?P<s>[^\s.][^\r\n.]*)",
        r"(?i)\bAUTH\s+(?:PLAIN|LOGIN)\s+(?P<s>[A-Za-z0-9+/=]{4,})",
        r"(?i)\b(?:pass(?:word)?|passwd|pwd|secret|token)=(?P<s>[^&\s.;]+)",
    ]
    .iter()
    .map(|p| Regex::new(p).expect("secret patterns compile"))
    .collect()
});

/// `text` with every secret it shows masked (unless `reveal`).
pub fn mask_text(text: &str, reveal: bool) -> String {
    if reveal {
        return text.to_string();
    }
    let mut out = text.to_string();
    for re in SECRETS.iter() {
        out = re
            .replace_all(&out, |c: &regex::Captures<'_>| {
                let whole = c.get(0).expect("a match has group 0");
                let s = c.name("s").expect("every pattern names its secret");
                if s.as_str().starts_with("<masked") {
                    return whole.as_str().to_string();
                }
                format!(
                    "{}{}{}",
                    &whole.as_str()[..s.start() - whole.start()],
                    mask(s.as_str(), false),
                    &whole.as_str()[s.end() - whole.start()..]
                )
            })
            .into_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_protocol_text_are_masked() {
        assert_eq!(mask("qwerty", false), "<masked, 6 chars>");
        assert_eq!(mask("qwerty", true), "qwerty");
        assert_eq!(
            mask_text("Request: PASS hunter2", false),
            "Request: PASS <masked, 7 chars>"
        );
        assert_eq!(
            mask_text("..Authorization: Basic dGVzdDp0ZXN0..Host", false),
            "..Authorization: Basic <masked, 12 chars>..Host"
        );
        assert_eq!(
            mask_text("user=admin&password=s3cret&x=1", false),
            "user=admin&password=<masked, 6 chars>&x=1"
        );
        assert_eq!(
            mask_text("a1 LOGIN bob pw123", false),
            "a1 LOGIN bob <masked, 5 chars>"
        );
        assert_eq!(mask_text("PASS hunter2", true), "PASS hunter2");
        // text without secrets is left alone
        assert_eq!(
            mask_text("GET /index.html HTTP/1.1", false),
            "GET /index.html HTTP/1.1"
        );
    }
}
