//! HTTP/1.1 framing: message heads, and bodies delimited by Content-Length, chunked coding or
//! the connection closing. Just enough to know where each message ends on a keep-alive
//! connection, so faults hit single requests.

use std::io::{self, ErrorKind};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Heads beyond this are refused rather than buffered without bound.
const MAX_HEAD: usize = 64 * 1024;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg.into())
}

/// A start line and its header fields, in their original order and spelling.
#[derive(Debug, Clone)]
pub struct Head {
    pub start: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// Reads one head. `Ok(None)`: the peer closed before sending a byte of it, the normal
    /// end of a keep-alive connection.
    pub async fn read<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Option<Head>> {
        let mut raw = Vec::new();
        loop {
            let line_start = raw.len();
            if r.read_until(b'\n', &mut raw).await? == 0 {
                return match raw.is_empty() {
                    true => Ok(None),
                    false => Err(ErrorKind::UnexpectedEof.into()),
                };
            }
            if raw.len() > MAX_HEAD {
                return Err(invalid("message head too large"));
            }
            if raw[line_start..].trim_ascii().is_empty() {
                if line_start == 0 {
                    // A stray CRLF between messages is to be ignored (RFC 9112 section 2.2).
                    raw.clear();
                    continue;
                }
                break;
            }
        }
        // Lossy: header values are nearly always ASCII, and these are test emulators.
        let text = String::from_utf8_lossy(&raw);
        let mut lines = text.lines();
        let start = lines.next().unwrap_or_default().trim().to_string();
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("malformed header line {line:?}")))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        Ok(Some(Head { start, headers }))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header (Connection, Transfer-Encoding, Expect) holds `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.headers.push((name.to_string(), value.into()));
    }

    /// Request method (first word of a request line).
    pub fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or_default()
    }

    /// Response status, 0 when the start line is not a status line.
    pub fn status(&self) -> u16 {
        let mut words = self.start.split(' ');
        match (words.next(), words.next()) {
            (Some(v), Some(code)) if v.starts_with("HTTP/") => code.parse().unwrap_or(0),
            _ => 0,
        }
    }

    /// Whether the connection ends after this message: `Connection: close`, or HTTP/1.0
    /// without keep-alive.
    pub fn closes(&self) -> bool {
        let http10 = self.start.starts_with("HTTP/1.0") || self.start.ends_with("HTTP/1.0");
        self.has_token("connection", "close")
            || (http10 && !self.has_token("connection", "keep-alive"))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        out.push_str(&self.start);
        out.push_str("\r\n");
        for (name, value) in &self.headers {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes: responses with neither length nor chunked coding.
    UntilClose,
}

fn content_length(head: &Head) -> io::Result<Option<u64>> {
    head.get("content-length")
        .map(|v| {
            v.parse()
                .map_err(|_| invalid(format!("bad Content-Length {v:?}")))
        })
        .transpose()
}

pub fn request_body(req: &Head) -> io::Result<BodyKind> {
    if req.get("transfer-encoding").is_some() {
        // Chunked must be the final coding of a request (RFC 9112 section 6.3).
        return match req.has_token("transfer-encoding", "chunked") {
            true => Ok(BodyKind::Chunked),
            false => Err(invalid("request Transfer-Encoding without chunked")),
        };
    }
    Ok(match content_length(req)? {
        Some(n) => BodyKind::Length(n),
        None => BodyKind::None,
    })
}

pub fn response_body(request_method: &str, resp: &Head) -> io::Result<BodyKind> {
    let status = resp.status();
    if request_method == "HEAD" || status < 200 || status == 204 || status == 304 {
        return Ok(BodyKind::None);
    }
    if resp.has_token("transfer-encoding", "chunked") {
        return Ok(BodyKind::Chunked);
    }
    Ok(match content_length(resp)? {
        Some(n) => BodyKind::Length(n),
        None => BodyKind::UntilClose,
    })
}

/// Reads a body's payload, whatever its framing, piece by piece.
pub struct BodyReader {
    kind: BodyKind,
    /// Bytes left in the body (Length) or in the current chunk (Chunked).
    left: u64,
    /// Chunked: a chunk was read, so its trailing CRLF comes before the next size line.
    in_chunks: bool,
    done: bool,
}

impl BodyReader {
    pub fn new(kind: BodyKind) -> BodyReader {
        BodyReader {
            kind,
            left: if let BodyKind::Length(n) = kind { n } else { 0 },
            in_chunks: false,
            done: matches!(kind, BodyKind::None | BodyKind::Length(0)),
        }
    }

    /// Reads payload bytes into `buf`; 0 means the body is complete. A connection closing
    /// before a delimited body ends is an `UnexpectedEof` error.
    pub async fn read<R>(&mut self, r: &mut R, buf: &mut [u8]) -> io::Result<usize>
    where
        R: AsyncBufRead + Unpin,
    {
        if self.done {
            return Ok(0);
        }
        if self.kind == BodyKind::UntilClose {
            let n = r.read(buf).await?;
            self.done = n == 0;
            return Ok(n);
        }
        if self.kind == BodyKind::Chunked && self.left == 0 {
            if self.in_chunks {
                expect_crlf(r).await?;
            }
            self.in_chunks = true;
            self.left = chunk_size(r).await?;
            if self.left == 0 {
                skip_trailers(r).await?;
                self.done = true;
                return Ok(0);
            }
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = r.read(&mut buf[..max]).await?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        self.done = self.kind != BodyKind::Chunked && self.left == 0;
        Ok(n)
    }
}

async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<String> {
    let mut line = Vec::new();
    // A chunk-size line is short; stop a runaway one from growing without bound.
    if (&mut *r).take(4096).read_until(b'\n', &mut line).await? == 0 || !line.ends_with(b"\n") {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    Ok(String::from_utf8_lossy(&line).trim().to_string())
}

async fn expect_crlf<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<()> {
    match read_line(r).await?.is_empty() {
        true => Ok(()),
        false => Err(invalid("chunk data longer than its size")),
    }
}

async fn chunk_size<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<u64> {
    let line = read_line(r).await?;
    let hex = line.split(';').next().unwrap_or_default().trim();
    u64::from_str_radix(hex, 16).map_err(|_| invalid(format!("bad chunk size {line:?}")))
}

/// Trailer fields are dropped: nothing in this stack sends any.
async fn skip_trailers<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<()> {
    while !read_line(r).await?.is_empty() {}
    Ok(())
}

/// Copies a body from `r` to `w`, framed as it came: chunked stays chunked (one chunk per
/// read), anything else is copied as is. Flushes `w` at the end.
pub async fn relay_body<R, W>(r: &mut R, kind: BodyKind, w: &mut W) -> io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut body = BodyReader::new(kind);
    let mut buf = vec![0u8; 64 * 1024];
    let chunked = kind == BodyKind::Chunked;
    loop {
        let n = body.read(r, &mut buf).await?;
        if n == 0 {
            break;
        }
        if chunked {
            w.write_all(format!("{n:x}\r\n").as_bytes()).await?;
            w.write_all(&buf[..n]).await?;
            w.write_all(b"\r\n").await?;
        } else {
            w.write_all(&buf[..n]).await?;
        }
    }
    if chunked {
        w.write_all(b"0\r\n\r\n").await?;
    }
    w.flush().await
}

/// Reads a whole body's payload.
pub async fn read_body<R: AsyncBufRead + Unpin>(r: &mut R, kind: BodyKind) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut body = BodyReader::new(kind);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match body.read(r, &mut buf).await? {
            0 => return Ok(out),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A complete response with a Content-Length body (no body sent for HEAD requests).
pub fn simple_response(
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    send_body: bool,
    close: bool,
) -> Vec<u8> {
    let mut head = Head {
        start: format!("HTTP/1.1 {status}"),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    };
    head.set("Content-Length", body.len().to_string());
    if close {
        head.set("Connection", "close");
    }
    let mut out = head.to_bytes();
    if send_body {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(raw: &[u8]) -> (Head, Vec<u8>, usize) {
        let mut r = raw;
        let head = Head::read(&mut r).await.unwrap().unwrap();
        let kind = match head.status() {
            0 => request_body(&head).unwrap(),
            _ => response_body("GET", &head).unwrap(),
        };
        let body = read_body(&mut r, kind).await.unwrap();
        (head, body, r.len())
    }

    #[tokio::test]
    async fn frames_bodies() {
        let raw = b"\r\nPOST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        let (head, body, rest) = parse(raw).await;
        assert_eq!(head.method(), "POST");
        assert_eq!(head.get("host"), Some("a"));
        assert_eq!(body, b"abcde");
        assert_eq!(rest, 4);

        let (head, body, rest) = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhiNEXT").await;
        assert_eq!(head.status(), 200);
        assert_eq!(body, b"hi");
        assert_eq!(rest, 4);

        let (_, body, _) = parse(b"HTTP/1.0 200 OK\r\n\r\nto the end").await;
        assert_eq!(body, b"to the end");
    }

    #[tokio::test]
    async fn reframes_chunked_and_reports_short_bodies() {
        let mut src: &[u8] = b"5\r\nhello\r\n0\r\n\r\n";
        let mut out = Vec::new();
        relay_body(&mut src, BodyKind::Chunked, &mut out)
            .await
            .unwrap();
        assert_eq!(out, b"5\r\nhello\r\n0\r\n\r\n");

        let mut short: &[u8] = b"abc";
        let err = read_body(&mut short, BodyKind::Length(5))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    }

    #[test]
    fn no_body_responses() {
        let resp = |start: &str| Head {
            start: start.into(),
            headers: vec![("Content-Length".into(), "9".into())],
        };
        assert_eq!(
            response_body("HEAD", &resp("HTTP/1.1 200 OK")).unwrap(),
            BodyKind::None
        );
        for s in [
            "HTTP/1.1 204 No Content",
            "HTTP/1.1 304 Not Modified",
            "HTTP/1.1 100 Continue",
        ] {
            assert_eq!(response_body("GET", &resp(s)).unwrap(), BodyKind::None);
        }
        assert!(resp("HTTP/1.0 200 OK").closes());
        assert!(!resp("HTTP/1.1 200 OK").closes());
    }
}
