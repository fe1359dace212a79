//! stdin for the MCP transport with a bound on the size of one message.
//!
//! rmcp reads newline-delimited JSON-RPC and would buffer a line of any length (a
//! 64 MB line went unanswered). This reader passes lines through unchanged up to
//! PCAP_MAX_REQUEST_BYTES; a longer line is dropped as it streams in (never held whole)
//! and replaced by a small well-formed JSON object that is not a JSON-RPC message, which
//! rmcp answers with an "Invalid request" error (id null) before it goes on serving.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

pub struct LimitedLines<R> {
    inner: R,
    max: usize,
    /// The line being assembled (held back until its newline arrives).
    line: Vec<u8>,
    /// Bytes ready for the reader.
    out: Vec<u8>,
    out_pos: usize,
    /// Inside an over-long line: its bytes are dropped until the newline.
    skipping: Option<usize>,
    eof: bool,
}

impl<R> LimitedLines<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            max,
            line: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            skipping: None,
            eof: false,
        }
    }

    fn take_chunk(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let nl = rest.iter().position(|&b| b == b'\n');
            let (part, more) = match nl {
                Some(i) => (&rest[..=i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            rest = more;
            if let Some(seen) = self.skipping.as_mut() {
                *seen += part.len();
                if nl.is_some() {
                    let seen = *seen;
                    self.skipping = None;
                    tracing::warn!(
                        bytes = seen,
                        limit = self.max,
                        "a request larger than PCAP_MAX_REQUEST_BYTES was discarded"
                    );
                    self.out.extend_from_slice(
                        format!(
                            "{{\"error\":\"request of {seen} bytes exceeds PCAP_MAX_REQUEST_BYTES ({})\"}}\n",
                            self.max
                        )
                        .as_bytes(),
                    );
                }
                continue;
            }
            self.line.extend_from_slice(part);
            if self.line.len() > self.max {
                self.skipping = Some(self.line.len());
                self.line = Vec::new();
                if nl.is_some() {
                    // the newline arrived in this very part: close the skip now
                    self.take_chunk(b"\n");
                    // that counted one byte too many for the message; harmless
                }
                continue;
            }
            if nl.is_some() {
                self.out.append(&mut self.line);
            }
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LimitedLines<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let this = &mut *self;
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 64 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let got = rb.filled().len();
                    if got == 0 {
                        this.eof = true;
                        // a last line without a newline still goes through
                        if this.skipping.is_none() {
                            let mut line = std::mem::take(&mut this.line);
                            this.out.append(&mut line);
                        }
                    } else {
                        let data = rb.filled().to_vec();
                        this.take_chunk(&data);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn long_lines_are_replaced_short_ones_pass() {
        let mut input = b"{\"a\":1}\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 1000));
        input.extend_from_slice(b"\n{\"b\":2}\n{\"c\":3}");
        let mut r = LimitedLines::new(&input[..], 100);
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert_eq!(lines[0], "{\"a\":1}");
        assert!(lines[1].contains("exceeds PCAP_MAX_REQUEST_BYTES"));
        assert_eq!(lines[2], "{\"b\":2}");
        assert_eq!(lines[3], "{\"c\":3}");
    }
}
