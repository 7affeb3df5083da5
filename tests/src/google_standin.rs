//! Loopback stand-ins for the keyless (Workload Identity Federation) path: Google's STS token
//! exchange and IAM Credentials `generateAccessToken`, and a recording relay in front of the
//! BigQuery emulator's REST port that notes which bearer token each request carried.
//!
//! The STS stand-in checks what Google checks before it asks AWS: the subject token is a
//! URL-encoded JSON GetCallerIdentity request (url, method, headers) for the configured
//! audience, signed with AWS Signature V4; it verifies the signature itself with the AWS
//! secret key the test gave the function.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// One token the stand-in issued.
#[derive(Clone, Debug)]
pub struct Issued {
    pub token: String,
    pub at: Instant,
    pub lifetime: Duration,
    /// `sts` (the exchange) or `impersonation`.
    pub kind: &'static str,
}

#[derive(Default)]
struct State {
    issued: Vec<Issued>,
    rejected: Vec<String>,
}

/// Google's STS and IAM Credentials endpoints on a loopback port, stopped with the test.
pub struct GoogleStandin {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

/// What the stand-in expects and hands out.
#[derive(Clone)]
pub struct Expect {
    pub audience: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub region: String,
    /// Lifetimes of the tokens handed out, in order (the last one repeats).
    pub lifetimes: Vec<u64>,
}

impl GoogleStandin {
    pub fn start(expect: Expect) -> GoogleStandin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (state, expect) = (shared.clone(), expect.clone());
                std::thread::spawn(move || {
                    let Some((head, body)) = read_request(&mut conn) else {
                        return;
                    };
                    let (status, answer) = answer(&head, &body, &expect, &state);
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                });
            }
        });
        GoogleStandin { addr, state }
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/v1/token", self.addr)
    }

    pub fn impersonation_url(&self, email: &str) -> String {
        format!(
            "http://{}/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
            self.addr
        )
    }

    pub fn issued(&self) -> Vec<Issued> {
        self.state.lock().unwrap().issued.clone()
    }

    /// Requests refused, with why (a correct client has none).
    pub fn rejected(&self) -> Vec<String> {
        self.state.lock().unwrap().rejected.clone()
    }
}

fn answer(head: &str, body: &[u8], expect: &Expect, state: &Mutex<State>) -> (String, String) {
    let request_line = head.lines().next().unwrap_or_default().to_string();
    let headers = header_map(head);
    let result = if request_line.starts_with("POST /v1/token ") {
        check_exchange(body, expect).map(|()| "sts")
    } else if request_line.starts_with("POST /v1/projects/-/serviceAccounts/")
        && request_line.contains(":generateAccessToken ")
    {
        check_impersonation(&headers, body, state).map(|()| "impersonation")
    } else {
        Err(format!("unexpected request {request_line}"))
    };
    let mut state = state.lock().unwrap();
    match result {
        Err(why) => {
            state.rejected.push(why.clone());
            let body = serde_json::json!({"error": "invalid_grant", "error_description": why});
            ("400 Bad Request".into(), body.to_string())
        }
        Ok(kind) => {
            let n = state.issued.len();
            let lifetime = expect.lifetimes[n.min(expect.lifetimes.len() - 1)];
            let token = format!("{kind}-token-{n}-{}", std::process::id());
            state.issued.push(Issued {
                token: token.clone(),
                at: Instant::now(),
                lifetime: Duration::from_secs(lifetime),
                kind,
            });
            let body = if kind == "sts" {
                serde_json::json!({
                    "access_token": token,
                    "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    "token_type": "Bearer",
                    "expires_in": lifetime,
                })
            } else {
                let expire = chrono::Utc::now() + chrono::Duration::seconds(lifetime as i64);
                serde_json::json!({
                    "accessToken": token,
                    "expireTime": expire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                })
            };
            ("200 OK".into(), body.to_string())
        }
    }
}

/// The token-exchange form and its subject token: a signed GetCallerIdentity request.
fn check_exchange(body: &[u8], expect: &Expect) -> Result<(), String> {
    let form = form_decode(&String::from_utf8_lossy(body));
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    for (name, want) in [
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        (
            "subject_token_type",
            "urn:ietf:params:aws:token-type:aws4_request",
        ),
        ("audience", expect.audience.as_str()),
    ] {
        if field(name) != want {
            return Err(format!("{name} is {:?}, expected {want:?}", field(name)));
        }
    }
    if !field("scope").contains("https://www.googleapis.com/auth/") {
        return Err(format!("scope {:?}", field("scope")));
    }
    // The subject token is URL-encoded JSON (form encoding: a space is '+').
    let token = field("subject_token");
    if token.contains('{') {
        return Err("subject_token is not URL-encoded".into());
    }
    let json: serde_json::Value =
        serde_json::from_str(&percent_decode(&token.replace('+', " ")))
            .map_err(|e| format!("subject_token is not URL-encoded JSON: {e}"))?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let url = text(&json["url"]);
    let method = text(&json["method"]);
    if method != "POST" {
        return Err(format!("method {method:?}"));
    }
    let host = format!("sts.{}.amazonaws.com", expect.region);
    let rest = url
        .strip_prefix(&format!("https://{host}"))
        .ok_or_else(|| format!("url {url:?} is not regional STS for {}", expect.region))?;
    let query = rest.trim_start_matches('/').trim_start_matches('?');
    let mut query_pairs: Vec<(String, String)> = form_decode(query).into_iter().collect();
    query_pairs.sort();
    if query_pairs
        != [
            ("Action".to_string(), "GetCallerIdentity".to_string()),
            ("Version".to_string(), "2011-06-15".to_string()),
        ]
    {
        return Err(format!("url {url:?} is not GetCallerIdentity"));
    }
    if !text(&json["body"]).is_empty() {
        return Err("GetCallerIdentity with a body".into());
    }
    let mut headers = BTreeMap::new();
    for h in json["headers"].as_array().ok_or("no headers")? {
        headers.insert(text(&h["key"]).to_lowercase(), text(&h["value"]));
    }
    let get = |name: &str| {
        headers
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no {name} header"))
    };
    if get("x-goog-cloud-target-resource")? != expect.audience {
        return Err("x-goog-cloud-target-resource is not the audience".into());
    }
    if get("host")? != host {
        return Err(format!("host {:?}", get("host")?));
    }
    match (&expect.session_token, headers.get("x-amz-security-token")) {
        (Some(want), Some(got)) if want == got => {}
        (None, None) => {}
        (want, got) => return Err(format!("x-amz-security-token {got:?}, expected {want:?}")),
    }
    let amz_date = get("x-amz-date")?;
    let now = chrono::Utc::now();
    let signed_at = chrono::NaiveDateTime::parse_from_str(&amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|e| format!("x-amz-date {amz_date:?}: {e}"))?
        .and_utc();
    if (now - signed_at).num_seconds().abs() > 300 {
        return Err(format!("x-amz-date {amz_date} is not now"));
    }
    // AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/sts/aws4_request, SignedHeaders=a;b, Signature=hex
    let authorization = get("authorization")?;
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("Authorization is not AWS4-HMAC-SHA256")?;
    let mut parts = BTreeMap::new();
    for part in rest.split(", ") {
        let (k, v) = part.split_once('=').ok_or("malformed Authorization")?;
        parts.insert(k, v);
    }
    let scope = format!("{}/{}/sts/aws4_request", &amz_date[..8], expect.region);
    if parts.get("Credential").copied() != Some(&format!("{}/{scope}", expect.access_key_id)) {
        return Err(format!("Credential {:?}", parts.get("Credential")));
    }
    let signed_headers = parts.get("SignedHeaders").ok_or("no SignedHeaders")?;
    for required in ["host", "x-amz-date", "x-goog-cloud-target-resource"] {
        if !signed_headers.split(';').any(|h| h == required) {
            return Err(format!("{required} is not signed"));
        }
    }
    // Signature V4, recomputed from the request as AWS would.
    let mut canonical_headers = String::new();
    for name in signed_headers.split(';') {
        canonical_headers.push_str(&format!("{name}:{}\n", get(name)?.trim()));
    }
    let canonical_query = query_pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_request = format!(
        "POST\n/\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{}",
        hex(&Sha256::digest(b""))
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = format!("AWS4{}", expect.secret_access_key).into_bytes();
    for part in [&amz_date[..8], &expect.region, "sts", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    if parts.get("Signature").copied() != Some(signature.as_str()) {
        return Err("Signature does not verify".into());
    }
    Ok(())
}

/// `generateAccessToken` must carry a token this stand-in issued by exchange.
fn check_impersonation(
    headers: &BTreeMap<String, String>,
    body: &[u8],
    state: &Mutex<State>,
) -> Result<(), String> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("impersonation without a bearer token")?;
    let known = state
        .lock()
        .unwrap()
        .issued
        .iter()
        .any(|i| i.kind == "sts" && i.token == bearer);
    if !known {
        return Err(format!("impersonation with unknown token {bearer:?}"));
    }
    let body: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("impersonation body: {e}"))?;
    if !body["scope"].to_string().contains("auth/bigquery") {
        return Err(format!("impersonation scope {}", body["scope"]));
    }
    Ok(())
}

/// A relay in front of a TCP service that records each `Authorization: Bearer` token sent
/// through it, with when it was seen. The first request carrying a token can be held back
/// for a while (so that later requests fall after that token's expiry).
pub struct RecordingRelay {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl RecordingRelay {
    pub fn start(upstream: SocketAddr, hold_first: Duration) -> RecordingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = seen.clone();
        let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_read, mut c_write) = (server, client);
                let seen = shared.clone();
                let held = held.clone();
                std::thread::spawn(move || {
                    // Client → server: scan the request heads for bearer tokens.
                    let mut window = Vec::new();
                    let mut buf = [0u8; 16384];
                    loop {
                        let n = match c_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        window.extend_from_slice(&buf[..n]);
                        let consumed = record_bearers(&window, &seen);
                        window.drain(..consumed);
                        if !seen.lock().unwrap().is_empty()
                            && !held.swap(true, std::sync::atomic::Ordering::SeqCst)
                        {
                            std::thread::sleep(hold_first);
                        }
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        RecordingRelay { addr, seen }
    }

    /// The bearer tokens seen, in order, with when.
    pub fn seen(&self) -> Vec<(Instant, String)> {
        self.seen.lock().unwrap().clone()
    }
}

/// Records every complete `authorization: bearer X\r\n` line in `window`; returns how many
/// bytes can be dropped (all but a tail that may hold the start of a split line).
fn record_bearers(window: &[u8], seen: &Mutex<Vec<(Instant, String)>>) -> usize {
    let lower = window.to_ascii_lowercase();
    let needle = b"\nauthorization: bearer ";
    let mut at = 0;
    loop {
        let Some(i) = find(&lower[at..], needle) else {
            // Keep a tail that may be the start of the next header line.
            return window.len().saturating_sub(needle.len()).max(at);
        };
        let start = at + i + needle.len();
        let Some(end) = find(&window[start..], b"\r\n") else {
            return at + i;
        };
        let token = String::from_utf8_lossy(&window[start..start + end]).to_string();
        seen.lock().unwrap().push((Instant::now(), token));
        at = start + end;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn read_request(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&data, b"\r\n\r\n") {
            break i;
        }
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let length: usize = header_map(&head)
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some((head, body))
}

fn header_map(head: &str) -> BTreeMap<String, String> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect()
}

fn form_decode(text: &str) -> BTreeMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) =
                u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("-"), 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_found_across_reads() {
        let seen = Mutex::new(Vec::new());
        let mut window = b"GET / HTTP/1.1\r\nAuthorization: Bearer abc\r\nhost: x\r\n\r\nPOST / HTTP/1.1\r\nauthorization: Bea".to_vec();
        let consumed = record_bearers(&window, &seen);
        window.drain(..consumed);
        window.extend_from_slice(b"rer def\r\n\r\n");
        record_bearers(&window, &seen);
        let tokens: Vec<String> = seen
            .into_inner()
            .unwrap()
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        assert_eq!(tokens, ["abc", "def"]);
    }

    #[test]
    fn percent_and_form_decoding() {
        assert_eq!(percent_decode("a%20b%7B%22"), "a b{\"");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(form_decode("a=1+2&b=%3D")["b"], "=");
        assert_eq!(form_decode("a=1+2&b=%3D")["a"], "1 2");
    }
}
