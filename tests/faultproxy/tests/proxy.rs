//! Runs the built proxy between a raw HTTP/1.1 client and a tiny upstream server, both
//! written here (independently of the proxy's own framing code).

use std::collections::HashMap;
use std::io::{self, BufRead};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

// ---- one HTTP/1.1 message, read the simple way -------------------------------------------

#[derive(Debug)]
struct Msg {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Msg {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }
    fn status(&self) -> u16 {
        self.start.split(' ').nth(1).unwrap().parse().unwrap()
    }
    fn path(&self) -> &str {
        self.start.split(' ').nth(1).unwrap()
    }
}

async fn read_head<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Option<Msg>> {
    let mut start = String::new();
    if r.read_line(&mut start).await? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if line.trim().is_empty() {
            break;
        }
        let (n, v) = line.split_once(':').unwrap();
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let start = start.trim().to_string();
    Ok(Some(Msg {
        start,
        headers,
        body: Vec::new(),
    }))
}

/// Reads a message; `no_body` for responses to HEAD. Requests without a length have no body,
/// responses without one run to EOF.
async fn read_msg<R: AsyncBufRead + Unpin>(r: &mut R, no_body: bool) -> io::Result<Option<Msg>> {
    let Some(mut msg) = read_head(r).await? else {
        return Ok(None);
    };
    let is_response = msg.start.starts_with("HTTP/");
    if no_body {
        return Ok(Some(msg));
    }
    if msg.header("transfer-encoding") == Some("chunked") {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await?;
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).await?;
            if size == 0 {
                break;
            }
            msg.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = msg.header("content-length") {
        msg.body = vec![0; len.parse().unwrap()];
        r.read_exact(&mut msg.body).await?;
    } else if is_response {
        r.read_to_end(&mut msg.body).await?;
    }
    Ok(Some(msg))
}

// ---- the upstream ---------------------------------------------------------------------

/// Answers by path: /echo echoes the body, /cl is "hello world", /big 10000 bytes, /chunked a
/// chunked "abcdefgh", /missing a 404; anything else "ok".
struct Upstream {
    port: u16,
    /// Request line, X-Amz-Target (or -), whether Expect came through, body.
    seen: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, c) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_upstream(stream, s.clone()));
            }
        });
        Upstream {
            port,
            seen,
            connections,
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_upstream(stream: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let mut conn = BufReader::new(stream);
    while let Ok(Some(req)) = read_msg(&mut conn, false).await {
        let target = req.header("x-amz-target").unwrap_or("-").to_string();
        let expect = if req.header("expect").is_some() {
            "expect"
        } else {
            "-"
        };
        let body = String::from_utf8_lossy(&req.body);
        seen.lock()
            .unwrap()
            .push(format!("{} {target} {expect} {body}", req.start));
        let head_req = req.start.starts_with("HEAD ");
        let reply: Vec<u8> = match req.path() {
            "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                            3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"
                .to_vec(),
            path => {
                let (status, body) = match path {
                    "/echo" => ("200 OK", req.body.clone()),
                    "/cl" => ("200 OK", b"hello world".to_vec()),
                    "/big" => ("200 OK", (0..10_000).map(|i| (i % 251) as u8).collect()),
                    "/missing" => (
                        "404 Not Found",
                        b"<Error><Code>NoSuchKey</Code></Error>".to_vec(),
                    ),
                    _ => ("200 OK", b"ok".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let mut out = head.into_bytes();
                if !head_req {
                    out.extend_from_slice(&body);
                }
                out
            }
        };
        if conn.get_mut().write_all(&reply).await.is_err() {
            return;
        }
    }
}

// ---- the proxy --------------------------------------------------------------------------

struct Proxy {
    child: Child,
    ports: HashMap<String, u16>,
    log: PathBuf,
}

impl Proxy {
    /// Starts the proxy with a fresh log file and waits for its `ready` line.
    fn start(name: &str, args: &[String]) -> Proxy {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("faultproxy-{name}.log"));
        let _ = std::fs::remove_file(&log);
        let mut child = Command::new(env!("CARGO_BIN_EXE_faultproxy"))
            .args(args)
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ports = HashMap::new();
        let mut lines = io::BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("proxy exited before ready").unwrap();
            if line == "ready" {
                break;
            }
            let (name, port) = line.split_once(' ').unwrap();
            ports.insert(name.to_string(), port.parse().unwrap());
        }
        Proxy { child, ports, log }
    }

    fn http(name: &str, upstream: &Upstream, faults: &[&str], extra: &[&str]) -> Proxy {
        let mut args = vec![
            "--route".to_string(),
            format!("aws=0:127.0.0.1:{}:http", upstream.port),
        ];
        for f in faults {
            args.extend(["--fault".to_string(), format!("aws:{f}")]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Proxy::start(name, &args)
    }

    fn log(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().map(str::to_string).collect()
    }

    async fn connect(&self) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", self.ports["aws"]))
            .await
            .unwrap();
        Client(BufReader::new(stream))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client(BufReader<TcpStream>);

impl Client {
    /// Sends a raw request and reads its response (Ok(None): the connection closed first).
    async fn ask(&mut self, raw: &str) -> io::Result<Option<Msg>> {
        self.0.get_mut().write_all(raw.as_bytes()).await?;
        read_msg(&mut self.0, raw.starts_with("HEAD ")).await
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
}

// ---- tests --------------------------------------------------------------------------------

#[tokio::test]
async fn relays_bodies_over_one_keep_alive_connection() {
    let up = Upstream::start().await;
    let proxy = Proxy::http("passthrough", &up, &[], &[]);
    let mut c = proxy.connect().await;

    let r = c
        .ask("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let r = r.unwrap().unwrap();
    assert_eq!((r.status(), r.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(r.header("content-length"), Some("5"));

    let chunked = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                   4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n";
    let r = c.ask(chunked).await.unwrap().unwrap();
    assert_eq!(r.body, b"wikipedia");

    let r = c.ask(&get("/chunked")).await.unwrap().unwrap();
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body, b"abcdefgh");

    // A HEAD response announces a length but has no body: the next response must still
    // line up.
    let r = c
        .ask("HEAD /cl HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.status(), r.header("content-length")), (200, Some("11")));
    let r = c.ask(&get("/cl")).await.unwrap().unwrap();
    assert_eq!(r.body, b"hello world");

    // Expect: 100-continue is answered by the proxy, and not passed on.
    let w = c.0.get_mut();
    w.write_all(
        b"PUT /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
    )
    .await
    .unwrap();
    let interim = read_head(&mut c.0).await.unwrap().unwrap();
    assert_eq!(interim.start, "HTTP/1.1 100 Continue");
    let r = c.ask("abc").await.unwrap().unwrap();
    assert_eq!((r.status(), r.body.as_slice()), (200, &b"abc"[..]));

    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
    let seen = up.seen();
    assert_eq!(seen.len(), 6);
    assert_eq!(seen[5], "PUT /echo HTTP/1.1 - - abc");
    assert!(proxy.log().is_empty());
}

#[tokio::test]
async fn status_answers_like_the_service_and_keeps_the_connection() {
    let up = Upstream::start().await;
    let proxy = Proxy::http("status", &up, &["status=1"], &[]);
    let mut c = proxy.connect().await;

    let r = c.ask(&get("/bucket/key")).await.unwrap().unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.header("content-type"), Some("application/xml"));
    assert!(String::from_utf8(r.body)
        .unwrap()
        .contains("<Code>SlowDown</Code>"));

    let dynamo = "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: DynamoDB_20120810.PutItem\r\n\
                  Content-Length: 2\r\n\r\n{}";
    let r = c.ask(dynamo).await.unwrap().unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.0"));
    assert!(String::from_utf8(r.body)
        .unwrap()
        .contains("#ThrottlingException"));

    let r = c
        .ask(&get("/bigquery/v2/projects/p/queries/j"))
        .await
        .unwrap()
        .unwrap();
    assert!([429, 503].contains(&r.status()), "{}", r.start);
    assert!(String::from_utf8(r.body)
        .unwrap()
        .starts_with(r#"{"error":{"code":"#));

    // HEAD gets the status without a body, and the connection stays in step.
    let r = c
        .ask("HEAD /bucket/key HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = c.ask(&get("/bucket/key")).await.unwrap().unwrap();
    assert_eq!(r.status(), 503);

    assert!(up.seen().is_empty(), "nothing may reach the upstream");
    let log = proxy.log();
    assert_eq!(log.len(), 5);
    assert_eq!(
        log[1],
        "aws status POST / HTTP/1.1 DynamoDB_20120810.PutItem"
    );
}

#[tokio::test]
async fn lost_response_reaches_the_service_but_not_the_client() {
    let up = Upstream::start().await;
    let proxy = Proxy::http("lost", &up, &["lost_response=1@UpdateItem"], &[]);
    let update = "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: DynamoDB_20120810.UpdateItem\r\n\
                  Content-Length: 4\r\n\r\n{\"a\"";

    let mut c = proxy.connect().await;
    let r = c.ask(update).await;
    assert!(matches!(r, Ok(None) | Err(_)), "got a response: {r:?}");
    assert_eq!(
        up.seen(),
        ["POST / HTTP/1.1 DynamoDB_20120810.UpdateItem - {\"a\""]
    );

    // The filter spares other requests.
    let mut c = proxy.connect().await;
    let get_item = update.replace("UpdateItem", "GetItem");
    let r = c.ask(&get_item).await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.seen().len(), 2);
    assert_eq!(
        proxy.log(),
        ["aws lost_response POST / HTTP/1.1 DynamoDB_20120810.UpdateItem"]
    );
}

#[tokio::test]
async fn not_found_becomes_access_denied_for_object_reads_only() {
    let up = Upstream::start().await;
    let proxy = Proxy::http("403", &up, &["not_found_as_403=1"], &[]);
    let mut c = proxy.connect().await;

    let r = c.ask(&get("/bucket/missing")).await.unwrap().unwrap();
    assert_eq!(r.status(), 200, "only a 404 is rewritten");
    let r = c.ask(&get("/missing")).await.unwrap().unwrap();
    assert_eq!(r.status(), 403);
    assert!(String::from_utf8(r.body)
        .unwrap()
        .contains("<Code>AccessDenied</Code>"));
    let r = c
        .ask("HEAD /missing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 403);
    // Not a read, or a JSON-protocol call: the 404 passes.
    let r = c
        .ask("DELETE /missing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 404);
    let json = "GET /missing HTTP/1.1\r\nHost: x\r\nX-Amz-Target: AmazonSQS.GetQueueUrl\r\n\r\n";
    let r = c.ask(json).await.unwrap().unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.body, b"<Error><Code>NoSuchKey</Code></Error>");

    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
    assert_eq!(proxy.log().len(), 2);
}

#[tokio::test]
async fn truncate_cuts_the_body_short() {
    let up = Upstream::start().await;
    let proxy = Proxy::http("truncate", &up, &["truncate=1@GET"], &[]);
    for path in ["/big", "/chunked"] {
        let mut c = proxy.connect().await;
        c.0.get_mut().write_all(get(path).as_bytes()).await.unwrap();
        let head = read_head(&mut c.0).await.unwrap().unwrap();
        let announced: usize = head.header("content-length").unwrap().parse().unwrap();
        let mut body = Vec::new();
        let _ = c.0.read_to_end(&mut body).await;
        assert!(
            body.len() < announced,
            "{path}: {} of {announced} bytes",
            body.len()
        );
        if path == "/big" {
            let expected: Vec<u8> = (0..body.len()).map(|i| (i % 251) as u8).collect();
            assert_eq!(body, expected, "the part sent is the start of the body");
        }
    }
    // Not a GET: untouched.
    let mut c = proxy.connect().await;
    let r = c
        .ask("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        .await;
    assert_eq!(r.unwrap().unwrap().body, b"hi");
    assert_eq!(proxy.log().len(), 2);
}

#[tokio::test]
async fn stall_delays_the_request() {
    let up = Upstream::start().await;
    let proxy = Proxy::http("stall", &up, &["stall=1@/slow"], &["--stall-ms", "400"]);
    let mut c = proxy.connect().await;
    let t = Instant::now();
    assert_eq!(c.ask(&get("/fast")).await.unwrap().unwrap().status(), 200);
    assert!(t.elapsed() < Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(c.ask(&get("/slow")).await.unwrap().unwrap().status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(400));
}

/// Sends a fixed sequence of requests, reconnecting after each broken one; returns what the
/// client saw and the proxy's log.
async fn campaign(seed: u64) -> (Vec<String>, Vec<String>) {
    let up = Upstream::start().await;
    let faults = [
        "reset=0.15",
        "status=0.2",
        "lost_response=0.3@POST",
        "truncate=0.3@GET",
    ];
    let seed = seed.to_string();
    let proxy = Proxy::http(&format!("seed-{seed}"), &up, &faults, &["--seed", &seed]);
    let mut seen = Vec::new();
    let mut c = proxy.connect().await;
    for i in 0..40 {
        let req = match i % 3 {
            0 => get("/cl"),
            1 => get("/chunked"),
            _ => "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi".to_string(),
        };
        match c.ask(&req).await {
            Ok(Some(r)) => seen.push(format!("{} {}", r.status(), r.body.len())),
            _ => {
                seen.push("broken".to_string());
                c = proxy.connect().await;
            }
        }
    }
    (seen, proxy.log())
}

#[tokio::test]
async fn same_seed_same_faults() {
    let (seen_a, log_a) = campaign(42).await;
    let (seen_b, log_b) = campaign(42).await;
    let (_, log_c) = campaign(43).await;
    assert_eq!(seen_a, seen_b);
    assert_eq!(log_a, log_b);
    assert_ne!(log_a, log_c, "another seed, other faults");
    for kind in ["reset", "status", "lost_response", "truncate"] {
        let n = log_a
            .iter()
            .filter(|l| l.split(' ').nth(1) == Some(kind))
            .count();
        assert!(n > 0, "no {kind} in {log_a:#?}");
    }
    let broken = seen_a.iter().filter(|s| *s == "broken").count();
    let by_log = log_a.iter().filter(|l| !l.contains(" status ")).count();
    assert_eq!(broken, by_log, "every broken request is a logged fault");
}

async fn echo_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// Writes `len` bytes through the tcp route while reading the echo; returns bytes echoed.
async fn echo_through(proxy: &Proxy, len: usize) -> Vec<u8> {
    let stream = TcpStream::connect(("127.0.0.1", proxy.ports["grpc"]))
        .await
        .unwrap();
    let (mut r, mut w) = stream.into_split();
    let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&data).await;
        let _ = w.shutdown().await;
    });
    let mut got = Vec::new();
    let _ = r.read_to_end(&mut got).await;
    let _ = writer.await;
    got
}

#[tokio::test]
async fn tcp_relays_bytes_and_cuts_connections() {
    let port = echo_upstream().await;
    let route = |name: &str| format!("{name}=0:127.0.0.1:{port}:tcp");
    let args: Vec<String> = [
        "--route",
        &route("grpc"),
        "--route",
        &route("cut"),
        "--fault",
        "cut:reset=1",
    ]
    .map(String::from)
    .to_vec();
    let mut proxy = Proxy::start("tcp", &args);

    let len = 1 << 20;
    let got = echo_through(&proxy, len).await;
    assert_eq!(got.len(), len);
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 253) as u8));

    proxy.ports.insert("grpc".into(), proxy.ports["cut"]);
    let got = echo_through(&proxy, len).await;
    assert!(got.len() < 256 * 1024, "{} bytes came back", got.len());
    let log = proxy.log();
    assert_eq!(log.len(), 1);
    assert!(
        log[0].starts_with("cut reset connection 0 byte "),
        "{log:?}"
    );
}
