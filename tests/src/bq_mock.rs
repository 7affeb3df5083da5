//! A loopback mock of the BigQuery REST API (HTTP/1.1 on a tokio listener) that records every
//! request and answers with a handler: a script (tests/it/bigquery_faults.rs) or a small
//! model of tables (tests/it/keeper.rs), for behaviour the emulator does not show. Any
//! JSON-over-HTTP peer can be played with it: tests/it/deploy_artifact.rs plays Lambda's
//! Runtime API.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use shared::bigquery::BigQuery;
use shared::config::{BigQueryAuth, BigQueryConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const PROJECT: &str = "mock-project";
pub const DATASET: &str = "mock_dataset";

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query string.
    pub target: String,
    pub body: Value,
}

impl Seen {
    /// A query job call: jobs.query, jobs.insert, jobs.getQueryResults, jobs.get.
    pub fn is_job(&self) -> bool {
        let path = self.target.split('?').next().unwrap_or_default();
        path.contains("/queries") || path.contains("/jobs")
    }
}

/// What the mock does with one request.
pub enum Answer {
    Json(u16, Value),
    /// A JSON answer with extra response headers.
    JsonWithHeaders(u16, Vec<(String, String)>, Value),
    /// Close the connection without answering (a reset or dropped connection).
    Hangup,
}

type Handler = dyn Fn(&Seen) -> Answer + Send + Sync;

pub struct MockServer {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockServer {
    pub async fn start(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/bigquery/v2", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let recorded = seen.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(socket, handler.clone(), recorded.clone()));
            }
        });
        MockServer { url, seen }
    }

    /// `host:port` the mock listens on.
    pub fn authority(&self) -> &str {
        let rest = self.url.trim_start_matches("http://");
        rest.split('/').next().unwrap_or(rest)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// A `BigQuery` whose REST calls go to the mock (no credentials; gRPC unused).
    pub async fn client(&self) -> BigQuery {
        let config = BigQueryConfig {
            project: PROJECT.into(),
            dataset: DATASET.into(),
            rest_url: self.url.clone(),
            grpc_url: "http://127.0.0.1:9".into(),
            grpc_gzip: false,
            auth: BigQueryAuth::None,
        };
        let aws = aws_config::SdkConfig::builder().build();
        BigQuery::connect(&config, &aws).await.expect("client")
    }
}

/// Serves HTTP/1.1 requests on one connection (keep-alive) until it closes.
async fn serve(mut socket: TcpStream, handler: Arc<Handler>, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buffer = Vec::new();
    loop {
        // Head.
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let mut lines = head.lines();
        let mut request_line = lines.next().unwrap_or_default().split_whitespace();
        let method = request_line.next().unwrap_or_default().to_string();
        let target = request_line.next().unwrap_or_default().to_string();
        let length: usize = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.trim().parse().unwrap())
            .unwrap_or(0);
        // Body.
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Value =
            serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap_or(Value::Null);
        buffer.drain(..head_end + length);
        let request = Seen {
            method,
            target,
            body,
        };
        seen.lock().unwrap().push(request.clone());
        let (status, headers, value) = match handler(&request) {
            Answer::Hangup => return,
            Answer::Json(status, value) => (status, Vec::new(), value),
            Answer::JsonWithHeaders(status, headers, value) => (status, headers, value),
        };
        let text = value.to_string();
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let response = format!(
            "HTTP/1.1 {status} Mock\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{text}",
            text.len()
        );
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Google's JSON error body.
pub fn error_body(code: u16, status: &str, message: &str, reason: &str) -> Value {
    json!({"error": {
        "code": code,
        "status": status,
        "message": message,
        "errors": [{"reason": reason, "message": message, "domain": "global"}]
    }})
}
