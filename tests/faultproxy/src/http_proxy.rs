//! The HTTP/1.1 route: relays requests one at a time from a client connection to one
//! upstream connection, drawing faults per request.

use std::io::{self, ErrorKind};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;

use crate::config::Kind;
use crate::faults::{HttpPlan, RouteFaults};
use crate::http::{
    read_body, relay_body, request_body, response_body, simple_response, BodyKind, Head,
};

/// Buffered both ways: reads to find message ends, writes so a head and a small body go out
/// in one segment. Flushed after every message.
type Conn = BufReader<BufWriter<TcpStream>>;

fn socket(c: &Conn) -> &TcpStream {
    c.get_ref().get_ref()
}

pub async fn serve(client: TcpStream, upstream: Arc<str>, route: Arc<RouteFaults>) {
    let _ = client.set_nodelay(true);
    let mut proxy = Proxy {
        client: BufReader::new(BufWriter::new(client)),
        upstream_addr: upstream,
        upstream: None,
        route,
    };
    // Errors here end one client connection (usually the client or upstream going away):
    // nothing to report beyond closing it.
    let _ = proxy.run().await;
}

struct Proxy {
    client: Conn,
    upstream_addr: Arc<str>,
    upstream: Option<Conn>,
    route: Arc<RouteFaults>,
}

/// What becomes of the client connection after a request.
enum Next {
    KeepAlive,
    Close,
    /// A fault closed it with a reset.
    Abort,
}

impl Proxy {
    async fn run(&mut self) -> io::Result<()> {
        while let Some(req) = Head::read(&mut self.client).await? {
            match self.exchange(req).await? {
                Next::KeepAlive => {}
                Next::Close => return self.client.shutdown().await,
                Next::Abort => {
                    // A reset rather than a FIN, as from a crashed or overloaded peer.
                    let _ = socket(&self.client).set_zero_linger();
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// One request and its response, with this request's faults.
    async fn exchange(&mut self, mut req: Head) -> io::Result<Next> {
        let target = req.get("x-amz-target").map(str::to_string);
        let subject = match &target {
            Some(t) => format!("{} {t}", req.start),
            None => req.start.clone(),
        };
        let (_, mut rng) = self.route.next_rng();
        let plan = HttpPlan::draw(&self.route.faults, &subject, &mut rng);
        let route = self.route.clone();
        let line = req.start.clone();
        let record = |kind| route.record(kind, &line, target.as_deref());

        if plan.reset {
            record(Kind::Reset);
            return Ok(Next::Abort);
        }
        let body = request_body(&req)?;
        if req.has_token("expect", "100-continue") {
            // Answer it here, so the body is in hand whatever then happens to the request.
            req.remove("expect");
            if body != BodyKind::None {
                self.client
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await?;
                self.client.flush().await?;
            }
        }
        let client_close = req.closes();
        if plan.status {
            relay_body(&mut self.client, body, &mut tokio::io::sink()).await?;
            record(Kind::Status);
            let reply = throttled(&req, target.is_some(), plan.rate_limited, client_close);
            self.client.write_all(&reply).await?;
            self.client.flush().await?;
            return Ok(if client_close {
                Next::Close
            } else {
                Next::KeepAlive
            });
        }
        if plan.stall {
            record(Kind::Stall);
            tokio::time::sleep(route.stall).await;
        }

        let Some(mut up) = self.upstream().await else {
            relay_body(&mut self.client, body, &mut tokio::io::sink()).await?;
            let reply =
                simple_response("502 Bad Gateway", &[], b"upstream unreachable", true, true);
            self.client.write_all(&reply).await?;
            return Ok(Next::Close);
        };
        up.write_all(&req.to_bytes()).await?;
        relay_body(&mut self.client, body, &mut up).await?;
        let resp = final_response(&mut up).await?;
        let method = req.method();
        let resp_body = response_body(method, &resp)?;
        // The upstream connection ends with this response: don't reuse it.
        let upstream_close = resp.closes() || resp_body == BodyKind::UntilClose;
        let close = client_close || upstream_close;
        let next = if close { Next::Close } else { Next::KeepAlive };

        if plan.lost_response {
            relay_body(&mut up, resp_body, &mut tokio::io::sink()).await?;
            record(Kind::LostResponse);
            return Ok(Next::Abort);
        }
        if plan.not_found_as_403
            && resp.status() == 404
            && (method == "GET" || method == "HEAD")
            && target.is_none()
        {
            relay_body(&mut up, resp_body, &mut tokio::io::sink()).await?;
            record(Kind::NotFoundAs403);
            let reply = access_denied(method == "HEAD", close);
            self.client.write_all(&reply).await?;
            self.client.flush().await?;
        } else if plan.truncate && resp_body != BodyKind::None {
            // An empty body has nothing to cut: it went out whole, no fault.
            let on_cut = || record(Kind::Truncate);
            if truncate(&mut self.client, &mut up, resp, resp_body, plan.cut, on_cut).await? {
                return Ok(Next::Close);
            }
        } else {
            self.client.write_all(&resp.to_bytes()).await?;
            relay_body(&mut up, resp_body, &mut self.client).await?;
        }
        if !upstream_close {
            self.upstream = Some(up);
        }
        Ok(next)
    }

    /// The upstream connection, taken out for one exchange (an error midway drops it) and
    /// put back once a response ends cleanly. Reused only if the upstream has not closed it
    /// meanwhile: servers drop idle keep-alive connections, which must not turn into
    /// unlogged faults.
    async fn upstream(&mut self) -> Option<Conn> {
        let alive = |c: &Conn| {
            c.buffer().is_empty()
                && matches!(socket(c).try_read(&mut [0u8; 1]),
                            Err(e) if e.kind() == ErrorKind::WouldBlock)
        };
        if let Some(c) = self.upstream.take().filter(alive) {
            return Some(c);
        }
        match TcpStream::connect(&*self.upstream_addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                Some(BufReader::new(BufWriter::new(s)))
            }
            Err(e) => {
                let (route, addr) = (&self.route.name, &self.upstream_addr);
                eprintln!("faultproxy: {route}: connecting to {addr}: {e}");
                None
            }
        }
    }
}

/// The upstream's final response head. Interim 1xx ones are dropped: the client already had
/// its 100 Continue from us.
async fn final_response(up: &mut Conn) -> io::Result<Head> {
    loop {
        let head = Head::read(up).await?.ok_or(ErrorKind::UnexpectedEof)?;
        match head.status() {
            100 | 102..=199 => continue,
            // Nothing here upgrades a connection, and a relay of one would need a byte pipe.
            0 | 101 => return Err(io::Error::new(ErrorKind::InvalidData, head.start)),
            _ => return Ok(head),
        }
    }
}

/// Sends the response head and part of its body, then closes: a body cut mid-stream. The
/// close is a FIN after the partial body, so the client surely receives what was sent and
/// then finds the body short of its announced length. Returns false (response sent whole)
/// when the body turns out empty; `on_cut` runs just before a cut body is sent.
async fn truncate(
    client: &mut Conn,
    up: &mut Conn,
    mut resp: Head,
    kind: BodyKind,
    cut: f64,
    on_cut: impl FnOnce(),
) -> io::Result<bool> {
    let cut_at = |len: u64| ((len as f64 * cut) as u64).min(len - 1);
    if let BodyKind::Length(len) = kind {
        if len == 0 {
            client.write_all(&resp.to_bytes()).await?;
            client.flush().await?;
            return Ok(false);
        }
        // Streamed: a large object need not be held in memory to be cut.
        on_cut();
        client.write_all(&resp.to_bytes()).await?;
        tokio::io::copy(&mut (&mut *up).take(cut_at(len)), client).await?;
        client.shutdown().await?;
        return Ok(true);
    }
    // Chunked or until-close: the length is only known once read. Announced as a
    // Content-Length so the client can tell the body is short (a FIN ends an until-close
    // body cleanly).
    let body = read_body(up, kind).await?;
    resp.remove("transfer-encoding");
    resp.set("Content-Length", body.len().to_string());
    client.write_all(&resp.to_bytes()).await?;
    if body.is_empty() {
        client.flush().await?;
        return Ok(false);
    }
    on_cut();
    client
        .write_all(&body[..cut_at(body.len() as u64) as usize])
        .await?;
    client.shutdown().await?;
    Ok(true)
}

/// The throttling answer the real service behind this request would give.
fn throttled(req: &Head, aws_json: bool, rate_limited: bool, close: bool) -> Vec<u8> {
    let send_body = req.method() != "HEAD";
    if aws_json {
        // DynamoDB and JSON-protocol SQS: the SDKs read the error code after the '#'.
        let body = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate exceeded"}"#;
        let ct = [("Content-Type", "application/x-amz-json-1.0")];
        return simple_response("400 Bad Request", &ct, body, send_body, close);
    }
    if req.start.contains("/bigquery/v2") {
        let ct = [("Content-Type", "application/json; charset=UTF-8")];
        return match rate_limited {
            true => {
                let body = br#"{"error":{"code":429,"message":"Exceeded rate limits","status":"RESOURCE_EXHAUSTED","errors":[{"reason":"rateLimitExceeded","message":"Exceeded rate limits"}]}}"#;
                simple_response("429 Too Many Requests", &ct, body, send_body, close)
            }
            false => {
                let body = br#"{"error":{"code":503,"message":"backend error","status":"UNAVAILABLE","errors":[{"reason":"backendError","message":"backend error"}]}}"#;
                simple_response("503 Service Unavailable", &ct, body, send_body, close)
            }
        };
    }
    // S3 and query-protocol SQS.
    let body = br#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"#;
    let ct = [("Content-Type", "application/xml")];
    simple_response("503 Service Unavailable", &ct, body, send_body, close)
}

/// What S3 answers for a missing key to a caller without s3:ListBucket.
fn access_denied(head_request: bool, close: bool) -> Vec<u8> {
    let ct = [("Content-Type", "application/xml")];
    let body: &[u8] = match head_request {
        true => b"",
        false => b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
    };
    simple_response("403 Forbidden", &ct, body, true, close)
}
