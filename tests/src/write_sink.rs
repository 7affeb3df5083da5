//! A fast local stand-in for the BigQuery Storage Write API, for benchmarks and wire tests:
//! CreateWriteStream, AppendRows (plain or gzip), FinalizeWriteStream, BatchCommitWriteStreams
//! and GetWriteStream, answered at once over plaintext HTTP/2, counting what arrives — TCP
//! bytes, gRPC message bytes, gzip-compressed messages, rows per table. Rows are counted,
//! not stored (unless asked), and appends are walked in place without decoding each row, so
//! the sink costs little CPU beside the process it measures.
//!
//! gRPC over HTTP/2 is framed by hand on `h2` (already in the tree under tonic): a
//! generated server would need protoc, and the framing is five bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::{
    append_rows_response, storage_error::StorageErrorCode, write_stream, AppendRowsResponse,
    BatchCommitWriteStreamsRequest, BatchCommitWriteStreamsResponse, CreateWriteStreamRequest,
    FinalizeWriteStreamRequest, FinalizeWriteStreamResponse, GetWriteStreamRequest, StorageError,
    WriteStream,
};
use gcp_bigquery_client::google::rpc::Status as RpcStatus;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, HeaderValue, Request, Response};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

const SERVICE: &str = "/google.cloud.bigquery.storage.v1.BigQueryWrite/";

/// What the sink has seen, counted as it arrives.
#[derive(Debug, Default)]
pub struct Counters {
    /// TCP bytes received: HTTP/2 framing and headers included — the bytes on the wire.
    pub wire_bytes: AtomicU64,
    /// AppendRows messages as sent (after compression, without the 5-byte gRPC prefix).
    pub append_message_bytes: AtomicU64,
    /// The same messages decompressed.
    pub append_plain_bytes: AtomicU64,
    pub append_requests: AtomicU64,
    /// AppendRows messages that arrived gzip-compressed.
    pub gzip_requests: AtomicU64,
    pub rows: AtomicU64,
    pub connections: AtomicU64,
}

/// A snapshot of the counters and the streams.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Seen {
    pub wire_bytes: u64,
    pub append_message_bytes: u64,
    pub append_plain_bytes: u64,
    pub append_requests: u64,
    pub gzip_requests: u64,
    pub rows: u64,
    pub connections: u64,
    pub streams_created: u64,
    /// Table (`projects/…/tables/T` → `T`) → rows in committed streams.
    pub committed_rows: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Stream {
    table: String,
    rows: i64,
    finalized: bool,
    commit_time: Option<prost_types::Timestamp>,
    /// Kept only when the sink was started with `keep_rows`.
    kept: Vec<Bytes>,
}

#[derive(Debug, Default)]
struct State {
    streams: HashMap<String, Stream>,
    created: u64,
    committed_rows: BTreeMap<String, u64>,
    /// Table → committed rows, when kept.
    committed: BTreeMap<String, Vec<Bytes>>,
}

struct Shared {
    counters: Counters,
    state: Mutex<State>,
    keep_rows: bool,
}

/// A running sink. It serves until the process ends (or the runtime shuts down).
#[derive(Clone)]
pub struct WriteSink {
    pub url: String,
    shared: Arc<Shared>,
}

impl WriteSink {
    /// Listens on `bind` (e.g. `127.0.0.1:0`). `keep_rows` keeps committed rows for
    /// [`committed`](Self::committed) (tests; a benchmark only counts).
    pub async fn start(bind: &str, keep_rows: bool) -> std::io::Result<WriteSink> {
        let listener = TcpListener::bind(bind).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            state: Mutex::new(State::default()),
            keep_rows,
        });
        let serving = shared.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let _ = socket.set_nodelay(true);
                serving.counters.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(socket, serving.clone()));
            }
        });
        Ok(WriteSink { url, shared })
    }

    pub fn seen(&self) -> Seen {
        let c = &self.shared.counters;
        let state = self.shared.state.lock().unwrap();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Seen {
            wire_bytes: get(&c.wire_bytes),
            append_message_bytes: get(&c.append_message_bytes),
            append_plain_bytes: get(&c.append_plain_bytes),
            append_requests: get(&c.append_requests),
            gzip_requests: get(&c.gzip_requests),
            rows: get(&c.rows),
            connections: get(&c.connections),
            streams_created: state.created,
            committed_rows: state.committed_rows.clone(),
        }
    }

    /// Committed rows of `table` (serialized protobuf rows), when started with `keep_rows`.
    pub fn committed(&self, table: &str) -> Vec<Bytes> {
        let state = self.shared.state.lock().unwrap();
        state.committed.get(table).cloned().unwrap_or_default()
    }
}

/// Counts the bytes read from a socket.
struct Counted {
    socket: TcpStream,
    shared: Arc<Shared>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.socket).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.shared
            .counters
            .wire_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

async fn serve(socket: TcpStream, shared: Arc<Shared>) {
    let io = Counted {
        socket,
        shared: shared.clone(),
    };
    // Wide flow-control windows: the client never waits for window updates.
    let handshake = h2::server::Builder::new()
        .initial_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .max_frame_size(1 << 20)
        .handshake::<_, Bytes>(io);
    let Ok(mut connection) = handshake.await else {
        return;
    };
    while let Some(Ok((request, respond))) = connection.accept().await {
        tokio::spawn(call(request, respond, shared.clone()));
    }
}

/// A gRPC error status.
struct Status(i32, String);

async fn call(request: Request<RecvStream>, mut respond: SendResponse<Bytes>, shared: Arc<Shared>) {
    let method = request
        .uri()
        .path()
        .strip_prefix(SERVICE)
        .unwrap_or_default()
        .to_string();
    let gzip = request
        .headers()
        .get("grpc-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let headers = Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .expect("static response");
    let Ok(mut send) = respond.send_response(headers, false) else {
        return;
    };
    let mut body = request.into_body();
    let mut pending = BytesMut::new();
    let mut stream_name = String::new();
    let mut status = Ok(());
    'read: while let Some(Ok(data)) = body.data().await {
        let _ = body.flow_control().release_capacity(data.len());
        pending.extend_from_slice(&data);
        while let Some((compressed, message)) = next_message(&mut pending) {
            if method == "AppendRows" {
                shared
                    .counters
                    .append_message_bytes
                    .fetch_add(message.len() as u64, Ordering::Relaxed);
            }
            let message = match unpack(compressed, gzip, message) {
                Ok(m) => m,
                Err(e) => {
                    status = Err(e);
                    break 'read;
                }
            };
            let answer = match method.as_str() {
                "AppendRows" => {
                    shared
                        .counters
                        .gzip_requests
                        .fetch_add(u64::from(compressed), Ordering::Relaxed);
                    append(&shared, &message, &mut stream_name)
                }
                "CreateWriteStream" => create(&shared, &message),
                "FinalizeWriteStream" => finalize(&shared, &message),
                "BatchCommitWriteStreams" => commit(&shared, &message),
                "GetWriteStream" => get(&shared, &message),
                other => Err(Status(12, format!("{other} is not implemented here"))),
            };
            match answer {
                Ok(reply) => {
                    if send.send_data(reply, false).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    status = Err(e);
                    break 'read;
                }
            }
        }
    }
    let mut trailers = HeaderMap::new();
    let (code, message) = match status {
        Ok(()) => (0, String::new()),
        Err(Status(code, message)) => (code, message),
    };
    trailers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(value) = HeaderValue::from_str(&message.replace(['\r', '\n'], " ")) {
        trailers.insert("grpc-message", value);
    }
    let _ = send.send_trailers(trailers);
}

/// One length-prefixed gRPC message off the front of `pending`, when whole.
fn next_message(pending: &mut BytesMut) -> Option<(bool, Bytes)> {
    if pending.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
    if pending.len() < 5 + len {
        return None;
    }
    let compressed = pending[0] == 1;
    pending.advance(5);
    Some((compressed, pending.split_to(len).freeze()))
}

fn unpack(compressed: bool, gzip: bool, message: Bytes) -> Result<Bytes, Status> {
    if !compressed {
        return Ok(message);
    }
    if !gzip {
        return Err(Status(
            12,
            "compressed message without grpc-encoding".into(),
        ));
    }
    let mut plain = Vec::with_capacity(message.len() * 4);
    flate2::read::GzDecoder::new(&message[..])
        .read_to_end(&mut plain)
        .map_err(|e| Status(13, format!("gunzip: {e}")))?;
    Ok(plain.into())
}

fn frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut out = Vec::with_capacity(5 + len);
    out.push(0);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    message.encode(&mut out).expect("a Vec grows");
    out.into()
}

fn decode<M: Message + Default>(message: &[u8]) -> Result<M, Status> {
    M::decode(message).map_err(|e| Status(3, format!("bad request: {e}")))
}

fn now() -> prost_types::Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

fn table_of(parent: &str) -> String {
    parent.rsplit('/').next().unwrap_or(parent).to_string()
}

fn create(shared: &Shared, message: &[u8]) -> Result<Bytes, Status> {
    let request: CreateWriteStreamRequest = decode(message)?;
    let mut state = shared.state.lock().unwrap();
    state.created += 1;
    let name = format!("{}/streams/sink{}", request.parent, state.created);
    state.streams.insert(
        name.clone(),
        Stream {
            table: table_of(&request.parent),
            ..Stream::default()
        },
    );
    Ok(frame(&WriteStream {
        name,
        r#type: write_stream::Type::Pending as i32,
        create_time: Some(now()),
        ..WriteStream::default()
    }))
}

fn finalize(shared: &Shared, message: &[u8]) -> Result<Bytes, Status> {
    let request: FinalizeWriteStreamRequest = decode(message)?;
    let mut state = shared.state.lock().unwrap();
    let stream = state
        .streams
        .get_mut(&request.name)
        .ok_or_else(|| Status(5, format!("no stream {}", request.name)))?;
    stream.finalized = true;
    Ok(frame(&FinalizeWriteStreamResponse {
        row_count: stream.rows,
    }))
}

fn commit(shared: &Shared, message: &[u8]) -> Result<Bytes, Status> {
    let request: BatchCommitWriteStreamsRequest = decode(message)?;
    let mut state = shared.state.lock().unwrap();
    let mut errors = Vec::new();
    for name in &request.write_streams {
        let code = match state.streams.get(name) {
            None => Some(StorageErrorCode::StreamNotFound),
            Some(s) if s.commit_time.is_some() => Some(StorageErrorCode::StreamAlreadyCommitted),
            Some(s) if !s.finalized => Some(StorageErrorCode::InvalidStreamState),
            Some(_) => None,
        };
        if let Some(code) = code {
            errors.push(StorageError {
                code: code as i32,
                entity: name.clone(),
                error_message: code.as_str_name().to_string(),
            });
        }
    }
    if !errors.is_empty() {
        // Atomic: nothing is committed.
        return Ok(frame(&BatchCommitWriteStreamsResponse {
            commit_time: None,
            stream_errors: errors,
        }));
    }
    let time = now();
    for name in &request.write_streams {
        let stream = state.streams.get_mut(name).expect("checked above");
        stream.commit_time = Some(time);
        let (table, rows, kept) = (
            stream.table.clone(),
            stream.rows as u64,
            std::mem::take(&mut stream.kept),
        );
        *state.committed_rows.entry(table.clone()).or_default() += rows;
        if shared.keep_rows {
            state.committed.entry(table).or_default().extend(kept);
        }
    }
    Ok(frame(&BatchCommitWriteStreamsResponse {
        commit_time: Some(time),
        stream_errors: Vec::new(),
    }))
}

fn get(shared: &Shared, message: &[u8]) -> Result<Bytes, Status> {
    let request: GetWriteStreamRequest = decode(message)?;
    let state = shared.state.lock().unwrap();
    let stream = state
        .streams
        .get(&request.name)
        .ok_or_else(|| Status(5, format!("no stream {}", request.name)))?;
    Ok(frame(&WriteStream {
        name: request.name.clone(),
        r#type: write_stream::Type::Pending as i32,
        commit_time: stream.commit_time,
        ..WriteStream::default()
    }))
}

/// One AppendRows request, walked in place: stream name, offset and the rows.
fn append(shared: &Shared, message: &Bytes, stream_name: &mut String) -> Result<Bytes, Status> {
    let counters = &shared.counters;
    counters.append_requests.fetch_add(1, Ordering::Relaxed);
    counters
        .append_plain_bytes
        .fetch_add(message.len() as u64, Ordering::Relaxed);
    let bad = |what: &str| Status(3, format!("bad AppendRowsRequest: {what}"));
    let mut offset = None;
    let mut rows: Vec<Bytes> = Vec::new();
    let mut count = 0i64;
    for field in Fields::new(message.clone()) {
        match field.map_err(|_| bad("wire format"))? {
            (1, Value::Bytes(name)) => {
                *stream_name = String::from_utf8(name.to_vec()).map_err(|_| bad("stream name"))?
            }
            (2, Value::Bytes(wrapper)) => {
                for inner in Fields::new(wrapper) {
                    if let (1, Value::Varint(v)) = inner.map_err(|_| bad("offset"))? {
                        offset = Some(v as i64);
                    }
                }
                offset.get_or_insert(0);
            }
            (4, Value::Bytes(proto_data)) => {
                for inner in Fields::new(proto_data) {
                    if let (2, Value::Bytes(proto_rows)) = inner.map_err(|_| bad("proto_data"))? {
                        for row in Fields::new(proto_rows) {
                            if let (1, Value::Bytes(row)) = row.map_err(|_| bad("rows"))? {
                                count += 1;
                                if shared.keep_rows {
                                    rows.push(row);
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let mut state = shared.state.lock().unwrap();
    let stream = state
        .streams
        .get_mut(stream_name.as_str())
        .ok_or_else(|| Status(5, format!("no stream {stream_name:?}")))?;
    if stream.finalized {
        return Err(Status(9, format!("stream {stream_name} is finalized")));
    }
    let at = offset.unwrap_or(stream.rows);
    let response = if at != stream.rows {
        // As BigQuery: ALREADY_EXISTS for an offset written before, OUT_OF_RANGE past the end.
        let code = if at < stream.rows { 6 } else { 11 };
        append_rows_response::Response::Error(RpcStatus {
            code,
            message: format!("offset {at}, stream holds {} rows", stream.rows),
            details: Vec::new(),
        })
    } else {
        stream.rows += count;
        stream.kept.extend(rows);
        counters.rows.fetch_add(count as u64, Ordering::Relaxed);
        append_rows_response::Response::AppendResult(append_rows_response::AppendResult {
            offset: Some(at),
        })
    };
    Ok(frame(&AppendRowsResponse {
        response: Some(response),
        write_stream: stream_name.clone(),
        ..AppendRowsResponse::default()
    }))
}

enum Value {
    Varint(u64),
    /// A 32- or 64-bit fixed-width value (skipped).
    Fixed,
    Bytes(Bytes),
}

/// The top-level fields of a protobuf message, without decoding nested ones.
struct Fields {
    data: Bytes,
}

impl Fields {
    fn new(data: Bytes) -> Fields {
        Fields { data }
    }
}

impl Iterator for Fields {
    type Item = Result<(u32, Value), ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        let item = (|| {
            let key = prost::encoding::decode_varint(&mut self.data).map_err(|_| ())?;
            let (number, wire) = ((key >> 3) as u32, key & 7);
            let value = match wire {
                0 => Value::Varint(prost::encoding::decode_varint(&mut self.data).map_err(|_| ())?),
                1 | 5 => {
                    let n = if wire == 1 { 8 } else { 4 };
                    if self.data.len() < n {
                        return Err(());
                    }
                    self.data.advance(n);
                    Value::Fixed
                }
                2 => {
                    let len =
                        prost::encoding::decode_varint(&mut self.data).map_err(|_| ())? as usize;
                    if self.data.len() < len {
                        return Err(());
                    }
                    Value::Bytes(self.data.split_to(len))
                }
                _ => return Err(()),
            };
            Ok((number, value))
        })();
        if item.is_err() {
            self.data.clear();
        }
        Some(item)
    }
}

/// The varint field `number` of a serialized row (e.g. `source_line`), for checks.
pub fn field_varint(row: &[u8], number: u32) -> Option<u64> {
    Fields::new(Bytes::copy_from_slice(row)).find_map(|field| match field {
        Ok((n, Value::Varint(v))) if n == number => Some(v),
        _ => None,
    })
}
