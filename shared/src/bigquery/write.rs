//! Storage Write API: PENDING streams written with explicit offsets, then finalized and
//! committed atomically. Rows of a stream that is never committed are discarded by BigQuery,
//! which is what makes a crashed attempt leave nothing behind.
//!
//! Every call has a deadline, and transient failures are retried in place: unary calls with
//! [`retry::retry`], appends by reconnecting and resending every unacknowledged request at
//! its offset (ALREADY_EXISTS for a resent offset means it was written before).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::{
    append_rows_response, big_query_write_client::BigQueryWriteClient,
    storage_error::StorageErrorCode, write_stream, AppendRowsResponse,
    BatchCommitWriteStreamsRequest, BatchCommitWriteStreamsResponse, CreateWriteStreamRequest,
    FinalizeWriteStreamRequest, GetWriteStreamRequest, StorageError, WriteStream,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status, Streaming};

use prost_types::DescriptorProto;

use super::append::{encode_schema, AppendCodec, AppendRequest};
use super::rows::Rows;
use super::schema::proto_descriptor;
use super::BigQueryError;
use crate::retry::{self, Backoff, Transient};

/// The Storage Write service and its AppendRows method.
const APPEND_SERVICE: &str = "google.cloud.bigquery.storage.v1.BigQueryWrite";
const APPEND_ROWS_PATH: &str = "/google.cloud.bigquery.storage.v1.BigQueryWrite/AppendRows";

/// Append requests in flight on one stream before we wait for an acknowledgement.
const MAX_IN_FLIGHT: usize = 4;
/// BigQuery's own limit on one request, which batches must stay under.
pub const MAX_REQUEST_BYTES: usize = 10 * 1000 * 1000;
/// Deadline of one unary call (CreateWriteStream, GetWriteStream, FinalizeWriteStream,
/// BatchCommitWriteStreams).
pub const UNARY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one AppendRows acknowledgement (or for the call to open); longer counts
/// as a dropped connection.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a closed AppendRows call's remaining answers are read (and discarded).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The Storage Write API client: one channel, shared by every stream of the process.
#[derive(Clone)]
pub struct WriteApi {
    client: BigQueryWriteClient<Channel>,
    /// The same channel, for AppendRows calls sending [`AppendRequest`]s.
    appends: tonic::client::Grpc<Channel>,
    auth: Arc<dyn Authenticator>,
    #[cfg(feature = "fault-injection")]
    faults: Option<Arc<FaultPlan>>,
}

/// A fault the adapter can inject (fault-injection builds only; see [`FaultPlan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
enum Fault {
    AppendDrop,
    CommitLost,
    UnaryUnavailable,
}

/// `limit`, or less when the invocation's deadline is nearer: a call ends before the time
/// kept to record progress and answer ([`retry::RESERVE`]), and gets at least a second.
fn call_timeout(limit: Duration) -> Duration {
    match retry::time_left() {
        Some(left) => limit
            .min(left.saturating_sub(retry::RESERVE))
            .max(Duration::from_secs(1)),
        None => limit,
    }
}

fn grpc_error(call: &str, status: Status) -> BigQueryError {
    BigQueryError::Grpc {
        call: call.to_string(),
        status: Box::new(status),
    }
}

impl WriteApi {
    /// Sets up a lazily connected channel (`http://` = plaintext, for the emulator), with
    /// requests gzip-compressed on the wire when `gzip` (whatever the scheme).
    ///
    /// In fault-injection builds, `CF2BQ_GRPC_FAULTS` and `CF2BQ_FAULT_SEED` add a
    /// [`FaultPlan`] (see there for the syntax).
    pub fn connect(
        url: &str,
        gzip: bool,
        auth: Arc<dyn Authenticator>,
    ) -> Result<WriteApi, BigQueryError> {
        let (client, appends) = Self::client(url, gzip)?;
        #[cfg(feature = "fault-injection")]
        {
            let faults = FaultPlan::from_env().map_err(|message| BigQueryError::Connect {
                url: url.to_string(),
                message,
            })?;
            if let Some(plan) = &faults {
                tracing::warn!(faults = %plan, "Storage Write faults injected");
            }
            Ok(WriteApi {
                client,
                appends,
                auth,
                faults: faults.map(Arc::new),
            })
        }
        #[cfg(not(feature = "fault-injection"))]
        Ok(WriteApi {
            client,
            appends,
            auth,
        })
    }

    /// Like [`connect`](Self::connect), with the given fault plan instead of the
    /// environment's (tests running side by side in one process; the caller keeps a handle
    /// to read [`FaultPlan::injected`]).
    #[cfg(feature = "fault-injection")]
    pub fn with_faults(
        url: &str,
        gzip: bool,
        auth: Arc<dyn Authenticator>,
        faults: Arc<FaultPlan>,
    ) -> Result<WriteApi, BigQueryError> {
        let (client, appends) = Self::client(url, gzip)?;
        Ok(WriteApi {
            client,
            appends,
            auth,
            faults: Some(faults),
        })
    }

    #[allow(clippy::type_complexity)]
    fn client(
        url: &str,
        gzip: bool,
    ) -> Result<(BigQueryWriteClient<Channel>, tonic::client::Grpc<Channel>), BigQueryError> {
        let connect_error = |message: String| BigQueryError::Connect {
            url: url.to_string(),
            message,
        };
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| connect_error(e.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .http2_keep_alive_interval(Duration::from_secs(30));
        if url.starts_with("https://") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_enabled_roots())
                .map_err(|e| connect_error(e.to_string()))?;
        }
        let channel = endpoint.connect_lazy();
        let mut client = BigQueryWriteClient::new(channel.clone())
            .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
            .max_decoding_message_size(2 * MAX_REQUEST_BYTES);
        let mut appends = tonic::client::Grpc::new(channel)
            .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
            .max_decoding_message_size(2 * MAX_REQUEST_BYTES);
        if gzip {
            // Log rows compress several-fold, and bytes leaving AWS are billed as egress.
            // (The local emulator does not take gzip: the stack turns it off.)
            client = client
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
            appends = appends
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        Ok((client, appends))
    }

    /// Opens an AppendRows call sending `requests` (what the generated client's
    /// `append_rows` does, with [`AppendCodec`] in place of prost's `AppendRowsRequest`).
    async fn append_rows(
        &self,
        requests: tonic::Request<ReceiverStream<AppendRequest>>,
    ) -> Result<tonic::Response<Streaming<AppendRowsResponse>>, Status> {
        let mut grpc = self.appends.clone();
        grpc.ready()
            .await
            .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
        let mut requests = requests;
        requests
            .extensions_mut()
            .insert(tonic::GrpcMethod::new(APPEND_SERVICE, "AppendRows"));
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(APPEND_ROWS_PATH);
        grpc.streaming(requests, path, AppendCodec).await
    }

    /// Whether to inject `fault` now (never, without the fault-injection feature).
    #[cfg(feature = "fault-injection")]
    fn inject(&self, fault: Fault) -> bool {
        self.faults.as_ref().is_some_and(|plan| plan.roll(fault))
    }

    #[cfg(not(feature = "fault-injection"))]
    #[inline(always)]
    fn inject(&self, _fault: Fault) -> bool {
        false
    }

    /// Whether `stream` is to be treated as garbage-collected (fault-injection builds only).
    #[cfg(feature = "fault-injection")]
    fn expired(&self, stream: &str) -> bool {
        self.faults
            .as_ref()
            .is_some_and(|plan| plan.is_expired(stream))
    }

    #[cfg(not(feature = "fault-injection"))]
    #[inline(always)]
    fn expired(&self, _stream: &str) -> bool {
        false
    }

    #[cfg(feature = "fault-injection")]
    fn created(&self, stream: &str) {
        if let Some(plan) = &self.faults {
            plan.record_created(stream);
        }
    }

    #[cfg(not(feature = "fault-injection"))]
    #[inline(always)]
    fn created(&self, _stream: &str) {}

    /// A request carrying the bearer token and Google's routing header.
    async fn request<T>(
        &self,
        message: T,
        routing: &str,
    ) -> Result<tonic::Request<T>, BigQueryError> {
        let token = self
            .auth
            .access_token()
            .await
            .map_err(|e| BigQueryError::Credentials(e.to_string()))?;
        let mut request = tonic::Request::new(message);
        let meta = request.metadata_mut();
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| BigQueryError::Credentials("token is not a valid header value".into()))?;
        meta.insert("authorization", bearer);
        if let Ok(value) = routing.replace('/', "%2F").parse() {
            meta.insert("x-goog-request-params", value);
        }
        Ok(request)
    }

    /// One unary call with a deadline, retried on transient failures within the
    /// invocation's deadline. `send` performs the call on a client.
    async fn unary<M, R, F, Fut>(
        &self,
        call: &str,
        routing: &str,
        message: M,
        send: F,
    ) -> Result<R, BigQueryError>
    where
        M: Clone,
        F: Fn(BigQueryWriteClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        retry::retry(call, Backoff::STANDARD, || {
            self.unary_once(call, routing, message.clone(), &send)
        })
        .await
    }

    async fn unary_once<M, R, F, Fut>(
        &self,
        call: &str,
        routing: &str,
        message: M,
        send: &F,
    ) -> Result<R, BigQueryError>
    where
        F: Fn(BigQueryWriteClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        crate::calls::count(&format!(
            "BigQuery.{}",
            call.split(' ').next().unwrap_or(call)
        ));
        if self.inject(Fault::UnaryUnavailable) {
            return Err(grpc_error(
                call,
                Status::unavailable("injected fault: the call did not reach the service"),
            ));
        }
        let mut request = self.request(message, routing).await?;
        let timeout = call_timeout(UNARY_TIMEOUT);
        request.set_timeout(timeout);
        // The grpc-timeout header bounds the wait for the answer's headers; this bounds the
        // whole call.
        let answer = send(self.client.clone(), request);
        match tokio::time::timeout(timeout + Duration::from_secs(1), answer).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(grpc_error(call, status)),
            Err(_) => Err(grpc_error(
                call,
                Status::deadline_exceeded(format!("no answer within {} s", timeout.as_secs())),
            )),
        }
    }

    /// Creates a PENDING stream on `table_path`. A just-created table can briefly be "not
    /// found" to the write API: that is retried with backoff, as are transient failures (a
    /// stream created by a call whose answer was lost is never committed: BigQuery discards
    /// it).
    pub async fn create_pending_stream(&self, table_path: &str) -> Result<String, BigQueryError> {
        let call = format!("CreateWriteStream {table_path}");
        let message = CreateWriteStreamRequest {
            parent: table_path.to_string(),
            write_stream: Some(WriteStream {
                r#type: write_stream::Type::Pending as i32,
                ..Default::default()
            }),
        };
        let mut delay = Duration::from_millis(250);
        let mut not_found = 0;
        loop {
            let created = self
                .unary(
                    &call,
                    &format!("parent={table_path}"),
                    message.clone(),
                    |mut client, request| async move { client.create_write_stream(request).await },
                )
                .await;
            match created {
                Ok(stream) => {
                    self.created(&stream.name);
                    return Ok(stream.name);
                }
                Err(BigQueryError::Grpc { status, .. })
                    if status.code() == Code::NotFound && not_found < 5 =>
                {
                    not_found += 1;
                    tracing::debug!(
                        table = table_path,
                        attempt = not_found,
                        "table not yet visible to the write API, retrying"
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A writer of log rows appending to `stream` from offset 0; it connects on the first append.
    pub fn writer(&self, stream: String) -> StreamWriter {
        self.writer_with(stream, proto_descriptor())
    }

    /// A writer of rows described by `descriptor` (e.g. the quarantine table's).
    pub fn writer_with(&self, stream: String, descriptor: DescriptorProto) -> StreamWriter {
        StreamWriter {
            api: self.clone(),
            schema: encode_schema(&descriptor),
            stream: stream.into(),
            connection: None,
            unacked: VecDeque::with_capacity(MAX_IN_FLIGHT + 1),
            next_offset: 0,
            rows: 0,
            acknowledged: 0,
            window: MAX_IN_FLIGHT,
        }
    }

    /// Finalizes a stream (no more appends); returns its row count. Finalizing twice is
    /// harmless, so a lost answer is retried.
    pub async fn finalize(&self, stream: &str) -> Result<i64, BigQueryError> {
        let call = format!("FinalizeWriteStream {stream}");
        if self.expired(stream) {
            return Err(grpc_error(&call, expired_status(stream)));
        }
        let message = FinalizeWriteStreamRequest {
            name: stream.to_string(),
        };
        let response = self
            .unary(
                &call,
                &format!("name={stream}"),
                message,
                |mut client, request| async move { client.finalize_write_stream(request).await },
            )
            .await?;
        Ok(response.row_count)
    }

    /// BatchCommitWriteStreams with its answer as is, retried on transient failures. A
    /// repeat after a lost answer meets the streams already committed (stream errors).
    async fn batch_commit_response(
        &self,
        table_path: &str,
        streams: &[String],
    ) -> Result<BatchCommitWriteStreamsResponse, BigQueryError> {
        let expired: Vec<StorageError> = streams
            .iter()
            .filter(|s| self.expired(s))
            .map(|s| StorageError {
                code: StorageErrorCode::StreamNotFound as i32,
                entity: s.clone(),
                error_message: expired_status(s).message().to_string(),
            })
            .collect();
        if !expired.is_empty() {
            // Atomic: one unknown stream and nothing is committed.
            return Ok(BatchCommitWriteStreamsResponse {
                commit_time: None,
                stream_errors: expired,
            });
        }
        let message = BatchCommitWriteStreamsRequest {
            parent: table_path.to_string(),
            write_streams: streams.to_vec(),
        };
        self.unary(
            &format!("BatchCommitWriteStreams {table_path}"),
            &format!("parent={table_path}"),
            message,
            |mut client, request| async move {
                let response = client.batch_commit_write_streams(request).await?;
                let committed = response.get_ref().commit_time.is_some()
                    && response.get_ref().stream_errors.is_empty();
                if committed && self.inject(Fault::CommitLost) {
                    return Err(Status::unavailable(
                        "injected fault: the commit was applied but its answer was lost",
                    ));
                }
                Ok(response)
            },
        )
        .await
    }

    /// Commits one finalized stream of `table_path`, telling apart "committed now", "was
    /// already committed" (a lost answer, or a resume), and "the stream is gone"
    /// (garbage-collected after its expiry, unknown, or in a state the service does not
    /// explain): only the data can tell then. Transient failures are retried; one that
    /// outlasts the retries is an error.
    pub async fn commit_stream(
        &self,
        table_path: &str,
        stream: &str,
    ) -> Result<CommitOutcome, BigQueryError> {
        self.commit_streams(table_path, &[stream.to_string()]).await
    }

    /// Commits the finalized streams of one table atomically (all or none), classified as
    /// [`commit_stream`](Self::commit_stream) does: already committed if any was (they are
    /// only ever committed together), gone if every error says so.
    pub async fn commit_streams(
        &self,
        table_path: &str,
        streams: &[String],
    ) -> Result<CommitOutcome, BigQueryError> {
        let response = match self.batch_commit_response(table_path, streams).await {
            Ok(response) => response,
            Err(BigQueryError::Grpc { status, .. }) if status.code() == Code::NotFound => {
                return Ok(CommitOutcome::Gone(status.message().to_string()))
            }
            Err(e) => return Err(e),
        };
        classify_commit(table_path, &response)
    }

    /// Whether `stream` was committed, from the stream itself (`commit_time`, free and exact).
    pub async fn stream_status(&self, stream: &str) -> Result<StreamStatus, BigQueryError> {
        match self.get_stream(stream).await {
            Ok(s) if s.commit_time.is_some() => Ok(StreamStatus::Committed),
            Ok(_) => Ok(StreamStatus::NotCommitted),
            Err(BigQueryError::Grpc { status, .. }) if status.code() == Code::NotFound => {
                Ok(StreamStatus::Gone)
            }
            Err(e) => Err(e),
        }
    }

    /// The stream's state (for recovery: was it committed?).
    pub async fn get_stream(&self, stream: &str) -> Result<WriteStream, BigQueryError> {
        let call = format!("GetWriteStream {stream}");
        if self.expired(stream) {
            return Err(grpc_error(&call, expired_status(stream)));
        }
        let message = GetWriteStreamRequest {
            name: stream.to_string(),
            ..Default::default()
        };
        self.unary(
            &call,
            &format!("name={stream}"),
            message,
            |mut client, request| async move { client.get_write_stream(request).await },
        )
        .await
    }
}

/// What a garbage-collected stream answers (injected `expired` fault).
fn expired_status(stream: &str) -> Status {
    Status::not_found(format!(
        "injected fault: stream expired (garbage-collected). Entity: {stream}"
    ))
}

/// Stream errors as `entity (CODE): message; …`.
fn describe(errors: &[StorageError]) -> String {
    errors
        .iter()
        .map(|e| {
            let code = StorageErrorCode::try_from(e.code)
                .map(|c| c.as_str_name().to_string())
                .unwrap_or_else(|_| e.code.to_string());
            format!("{} ({code}): {}", e.entity, e.error_message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One stream's BatchCommitWriteStreams answer → what it says about the stream.
fn classify_commit(
    table_path: &str,
    response: &BatchCommitWriteStreamsResponse,
) -> Result<CommitOutcome, BigQueryError> {
    let codes: Vec<Option<StorageErrorCode>> = response
        .stream_errors
        .iter()
        .map(|e| StorageErrorCode::try_from(e.code).ok())
        .collect();
    let error = |message: String| BigQueryError::Write {
        call: format!("BatchCommitWriteStreams {table_path}"),
        message,
    };
    if codes.is_empty() {
        return match response.commit_time {
            Some(_) => Ok(CommitOutcome::Committed),
            None => Err(error("no commit time and no stream error returned".into())),
        };
    }
    if codes.contains(&Some(StorageErrorCode::StreamAlreadyCommitted)) {
        return Ok(CommitOutcome::AlreadyCommitted);
    }
    let gone = codes.iter().all(|c| {
        matches!(
            c,
            Some(StorageErrorCode::StreamNotFound | StorageErrorCode::InvalidStreamState)
        )
    });
    if gone {
        Ok(CommitOutcome::Gone(describe(&response.stream_errors)))
    } else {
        Err(error(describe(&response.stream_errors)))
    }
}

/// What committing one stream found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Committed by this call.
    Committed,
    /// Committed earlier (STREAM_ALREADY_COMMITTED).
    AlreadyCommitted,
    /// Not committable: not found, expired, or in a state the service does not explain
    /// (whether its rows are in the table must be read from the data).
    Gone(String),
}

/// What the stream itself says about its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    Committed,
    /// Exists and has no `commit_time` (not committed, or a service that does not fill it).
    NotCommitted,
    /// Garbage-collected or never existed.
    Gone,
}

/// One AppendRows request: `rows` at `offset`, with the writer schema when it is the first
/// request of a connection. The stream is named on every request (only required on the
/// first) so any server can route it.
pub fn append_request(
    stream: &str,
    offset: i64,
    rows: Rows,
    schema: Option<&DescriptorProto>,
) -> AppendRequest {
    let request = AppendRequest::new(stream.into(), offset, rows);
    match schema {
        Some(d) => request.with_schema(encode_schema(d)),
        None => request,
    }
}

/// An append sent (or to be sent) and not yet acknowledged: kept to be resent on a new
/// connection.
struct Unacked {
    offset: i64,
    request: AppendRequest,
    /// Connections it was sent on.
    sends: u32,
}

struct Connection {
    requests: mpsc::Sender<AppendRequest>,
    responses: Streaming<AppendRowsResponse>,
    /// How many of the oldest unacknowledged requests this connection has carried.
    sent: usize,
}

/// Appends batches of encoded rows to one PENDING stream, with explicit offsets and a small
/// window of requests in flight. The unacknowledged requests (at most `MAX_IN_FLIGHT + 1`)
/// are kept: when the connection fails transiently they are resent, at their offsets, on a
/// new one.
pub struct StreamWriter {
    api: WriteApi,
    /// The writer schema, encoded once for the first request of every connection.
    schema: bytes::Bytes,
    stream: Arc<str>,
    connection: Option<Connection>,
    unacked: VecDeque<Unacked>,
    next_offset: i64,
    rows: i64,
    /// Acknowledgements received (progress, which resets the reconnection backoff).
    acknowledged: u64,
    /// Requests kept in flight (fewer when the table's rows are spread over several writers).
    window: usize,
}

impl StreamWriter {
    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// Rows appended and acknowledged or in flight.
    pub fn rows(&self) -> i64 {
        self.rows
    }

    /// Appends one batch of encoded rows at the next offset.
    pub async fn append(&mut self, rows: Rows) -> Result<(), BigQueryError> {
        let count = rows.len() as i64;
        let request = AppendRequest::new(self.stream.clone(), self.next_offset, rows);
        self.unacked.push_back(Unacked {
            offset: self.next_offset,
            request,
            sends: 0,
        });
        self.next_offset += count;
        self.rows += count;
        self.settle(self.window).await
    }

    /// This writer is one of `writers` for its table: they share one writer's unacknowledged
    /// requests (`MAX_IN_FLIGHT + 1`, each about 1 MiB and kept for resending), so a table
    /// spread over two streams holds no more memory than one; past that, one each.
    pub fn share_window(&mut self, writers: usize) {
        self.window = ((MAX_IN_FLIGHT + 1) / writers.max(1))
            .saturating_sub(1)
            .max(1);
    }

    /// Waits for every acknowledgement and closes the connection; returns the row count.
    pub async fn flush(&mut self) -> Result<i64, BigQueryError> {
        self.settle(0).await?;
        self.close_connection();
        Ok(self.rows)
    }

    /// Ends the current AppendRows call, if any, gracefully: half-closes it and reads what
    /// the server still sends, in the background, so the server finishes the call instead of
    /// seeing it cancelled with answers pending (the emulator loses a worker thread for each
    /// call cancelled that way).
    fn close_connection(&mut self) {
        let Some(Connection {
            requests,
            mut responses,
            ..
        }) = self.connection.take()
        else {
            return;
        };
        drop(requests);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let drain = async { while let Ok(Some(_)) = responses.message().await {} };
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
            });
        }
    }

    fn call(&self) -> String {
        format!("AppendRows {}", self.stream)
    }

    /// Sends every unacknowledged request and reads acknowledgements until at most `keep`
    /// remain. A transient failure (the connection dropped or timed out, a transient
    /// status) drops the connection and, after a backoff, resends every unacknowledged
    /// request on a new one; the backoff starts over after each acknowledgement, and stops
    /// by [`retry`]'s rules (the invocation's deadline, or a number of attempts).
    async fn settle(&mut self, keep: usize) -> Result<(), BigQueryError> {
        let backoff = Backoff::STANDARD;
        let mut failures = 0;
        let mut progress_mark = self.acknowledged;
        loop {
            let error = match self.advance(keep).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            self.close_connection();
            if !error.is_transient() {
                return Err(error);
            }
            if self.acknowledged != progress_mark {
                progress_mark = self.acknowledged;
                failures = 0;
            }
            failures += 1;
            let delay = backoff.delay(failures);
            let another = match retry::time_left() {
                Some(left) => left > delay + retry::RESERVE,
                None => failures < backoff.attempts_without_deadline,
            };
            if !another {
                return Err(error);
            }
            tracing::warn!(
                stream = %self.stream,
                attempt = failures,
                unacknowledged = self.unacked.len(),
                error = %error,
                delay_ms = delay.as_millis() as u64,
                "append connection failed; reconnecting to resend unacknowledged rows"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection's share of [`settle`](Self::settle).
    async fn advance(&mut self, keep: usize) -> Result<(), BigQueryError> {
        if self.unacked.is_empty() {
            return Ok(());
        }
        if self.connection.is_none() {
            self.open().await?;
        }
        loop {
            let connection = self.connection.as_mut().expect("opened above");
            let Some(next) = self.unacked.get_mut(connection.sent) else {
                break;
            };
            next.sends += 1;
            if connection
                .requests
                .send(next.request.clone())
                .await
                .is_err()
            {
                // The call ended: its acknowledgements so far, then its status, are in the
                // responses.
                loop {
                    let response = self.next_response().await?;
                    self.acknowledge(response)?;
                }
            }
            connection.sent += 1;
            crate::calls::count("BigQuery.AppendRows");
            crate::calls::add(
                "BigQuery.AppendRowsBytes",
                next.request.encoded_len() as u64,
            );
        }
        while self.unacked.len() > keep {
            let response = self.next_response().await?;
            self.acknowledge(response)?;
        }
        Ok(())
    }

    /// Opens an AppendRows call whose first request (with the writer schema) is the oldest
    /// unacknowledged one.
    async fn open(&mut self) -> Result<(), BigQueryError> {
        let oldest = self.unacked.front_mut().expect("something to send");
        oldest.sends += 1;
        let first = oldest.request.with_schema(self.schema.clone());
        crate::calls::count("BigQuery.AppendRowsConnections");
        crate::calls::count("BigQuery.AppendRows");
        crate::calls::add("BigQuery.AppendRowsBytes", first.encoded_len() as u64);
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT + 1);
        tx.send(first).await.expect("receiver is alive");
        let request = self
            .api
            .request(
                ReceiverStream::new(rx),
                &format!("write_stream={}", self.stream),
            )
            .await?;
        let wait = call_timeout(ACK_TIMEOUT);
        let opened = tokio::time::timeout(wait, self.api.append_rows(request));
        let responses = match opened.await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(grpc_error(&self.call(), status)),
            Err(_) => {
                return Err(grpc_error(
                    &self.call(),
                    Status::deadline_exceeded(format!(
                        "the call did not open within {} s",
                        wait.as_secs()
                    )),
                ))
            }
        };
        self.connection = Some(Connection {
            requests: tx,
            responses,
            sent: 1,
        });
        Ok(())
    }

    /// The next response of the connection, within [`ACK_TIMEOUT`]. The stream ending, or
    /// no answer in time, is a transient failure (the connection is gone).
    async fn next_response(&mut self) -> Result<AppendRowsResponse, BigQueryError> {
        let call = self.call();
        let connection = self
            .connection
            .as_mut()
            .expect("responses are read on an open connection");
        let wait = call_timeout(ACK_TIMEOUT);
        match tokio::time::timeout(wait, connection.responses.message()).await {
            Ok(Ok(Some(response))) => Ok(response),
            Ok(Ok(None)) => Err(grpc_error(
                &call,
                Status::unavailable("the stream ended before every append was acknowledged"),
            )),
            Ok(Err(status)) => Err(grpc_error(&call, status)),
            Err(_) => Err(grpc_error(
                &call,
                Status::deadline_exceeded(format!(
                    "no acknowledgement within {} s",
                    wait.as_secs()
                )),
            )),
        }
    }

    /// Applies the response to the oldest unacknowledged request: acknowledged (or already
    /// written: ALREADY_EXISTS for a resent offset), or failed.
    fn acknowledge(&mut self, response: AppendRowsResponse) -> Result<(), BigQueryError> {
        let Some(oldest) = self.unacked.front() else {
            return Err(self.write_error("a response with no append awaiting one".into()));
        };
        let (offset, resent) = (oldest.offset, oldest.sends > 1);
        if !response.row_errors.is_empty() {
            let first = &response.row_errors[0];
            return Err(self.write_error(format!(
                "offset {offset}: {} row error(s), first at index {}: {}",
                response.row_errors.len(),
                first.index,
                first.message
            )));
        }
        match response.response {
            Some(append_rows_response::Response::Error(status)) => {
                let code = Code::from(status.code);
                if code == Code::AlreadyExists && resent {
                    tracing::debug!(stream = %self.stream, offset, "resent append already written");
                } else if matches!(
                    code,
                    Code::Unavailable
                        | Code::Internal
                        | Code::ResourceExhausted
                        | Code::Aborted
                        | Code::DeadlineExceeded
                ) {
                    // Later requests of this connection fail too (their offsets are beyond
                    // the stream's end): all are resent on a new connection.
                    return Err(grpc_error(
                        &self.call(),
                        Status::new(code, format!("offset {offset}: {}", status.message)),
                    ));
                } else {
                    return Err(
                        self.write_error(format!("offset {offset}: {code:?}: {}", status.message))
                    );
                }
            }
            Some(append_rows_response::Response::AppendResult(result)) => {
                if let Some(acknowledged) = result.offset.filter(|o| *o != offset) {
                    return Err(self.write_error(format!(
                        "acknowledged offset {acknowledged}, expected {offset}"
                    )));
                }
            }
            None => {}
        }
        if self.api.inject(Fault::AppendDrop) {
            return Err(grpc_error(
                &self.call(),
                Status::unavailable(format!(
                    "injected fault: connection dropped, acknowledgement of offset {offset} lost"
                )),
            ));
        }
        self.unacked.pop_front();
        if let Some(connection) = self.connection.as_mut() {
            connection.sent = connection.sent.saturating_sub(1);
        }
        self.acknowledged += 1;
        Ok(())
    }

    fn write_error(&self, message: String) -> BigQueryError {
        BigQueryError::Write {
            call: self.call(),
            message,
        }
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        self.close_connection();
    }
}

#[cfg(feature = "fault-injection")]
pub use faults::{FaultPlan, Injected};

#[cfg(feature = "fault-injection")]
mod faults {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::Fault;

    /// Storage Write faults injected in the adapter, below the writer's and the committer's
    /// recovery, as BigQuery presents them (fault-injection builds only; release builds do not
    /// have this code). [`WriteApi::connect`](super::WriteApi::connect) builds one from:
    ///
    /// * `CF2BQ_GRPC_FAULTS`: comma-separated `name=value`, e.g.
    ///   `append_drop=0.05,commit_lost=0.3,unary_unavailable=0.05,expired=1`:
    ///   - `append_drop=P`: after the service acknowledged an append, with probability P the
    ///     acknowledgement is lost and the connection reported dropped (UNAVAILABLE): the
    ///     writer reconnects and resends, and the service answers ALREADY_EXISTS for it;
    ///   - `commit_lost=P`: a BatchCommitWriteStreams that succeeded is reported as
    ///     UNAVAILABLE (its answer lost) with probability P;
    ///   - `unary_unavailable=P`: a unary call (CreateWriteStream, GetWriteStream,
    ///     FinalizeWriteStream, BatchCommitWriteStreams) fails with UNAVAILABLE before
    ///     reaching the service, with probability P;
    ///   - `expired=1`: every stream this process did not create is treated as
    ///     garbage-collected, as BigQuery does hours after its creation: GetWriteStream and
    ///     FinalizeWriteStream answer NOT_FOUND, BatchCommitWriteStreams a STREAM_NOT_FOUND
    ///     stream error (without calling the service).
    /// * `CF2BQ_FAULT_SEED`: the u64 seed of the decisions (default: random; logged).
    pub struct FaultPlan {
        append_drop: f64,
        commit_lost: f64,
        unary_unavailable: f64,
        expired: bool,
        seed: u64,
        rng: Mutex<ChaCha8Rng>,
        /// Streams created through this plan's clients (never "expired").
        created: Arc<Mutex<HashSet<String>>>,
        /// Faults injected so far: append_drop, commit_lost, unary_unavailable, expired.
        counts: [AtomicU64; 4],
    }

    /// How many faults of each kind a plan injected.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Injected {
        pub append_drop: u64,
        pub commit_lost: u64,
        pub unary_unavailable: u64,
        /// Calls answered as for a garbage-collected stream.
        pub expired: u64,
    }

    /// Streams created by this process, shared by every plan built from the environment.
    fn process_streams() -> Arc<Mutex<HashSet<String>>> {
        static CREATED: OnceLock<Arc<Mutex<HashSet<String>>>> = OnceLock::new();
        CREATED.get_or_init(Default::default).clone()
    }

    impl FaultPlan {
        /// A plan from `spec` (the `CF2BQ_GRPC_FAULTS` syntax) and `seed`. Only streams
        /// created through a `WriteApi` holding this plan count as created by this process.
        pub fn parse(spec: &str, seed: u64) -> Result<FaultPlan, String> {
            let mut plan = FaultPlan {
                append_drop: 0.0,
                commit_lost: 0.0,
                unary_unavailable: 0.0,
                expired: false,
                seed,
                rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
                created: Default::default(),
                counts: Default::default(),
            };
            for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (name, value) = item
                    .split_once('=')
                    .ok_or_else(|| format!("CF2BQ_GRPC_FAULTS: {item:?} is not name=value"))?;
                let probability = || -> Result<f64, String> {
                    value
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|p| (0.0..=1.0).contains(p))
                        .ok_or_else(|| {
                            format!("CF2BQ_GRPC_FAULTS: {name}={value:?}: expected a probability in [0, 1]")
                        })
                };
                match name.trim() {
                    "append_drop" => plan.append_drop = probability()?,
                    "commit_lost" => plan.commit_lost = probability()?,
                    "unary_unavailable" => plan.unary_unavailable = probability()?,
                    "expired" => {
                        plan.expired = match value.trim() {
                            "1" | "true" => true,
                            "0" | "false" => false,
                            other => {
                                return Err(format!(
                                    "CF2BQ_GRPC_FAULTS: expired={other:?}: expected 1 or 0"
                                ))
                            }
                        }
                    }
                    other => {
                        return Err(format!(
                            "CF2BQ_GRPC_FAULTS: unknown fault {other:?} (known: append_drop, \
                             commit_lost, unary_unavailable, expired)"
                        ))
                    }
                }
            }
            Ok(plan)
        }

        /// The plan of `CF2BQ_GRPC_FAULTS` and `CF2BQ_FAULT_SEED`; `None` when no fault is set.
        pub fn from_env() -> Result<Option<FaultPlan>, String> {
            let spec = std::env::var("CF2BQ_GRPC_FAULTS").unwrap_or_default();
            if spec.trim().is_empty() {
                return Ok(None);
            }
            let seed = match std::env::var("CF2BQ_FAULT_SEED") {
                Ok(s) if !s.trim().is_empty() => s
                    .trim()
                    .parse()
                    .map_err(|_| format!("CF2BQ_FAULT_SEED={s:?}: expected an unsigned integer"))?,
                _ => rand::random(),
            };
            let mut plan = FaultPlan::parse(&spec, seed)?;
            plan.created = process_streams();
            Ok(Some(plan))
        }

        pub fn seed(&self) -> u64 {
            self.seed
        }

        /// Faults injected so far.
        pub fn injected(&self) -> Injected {
            let n = |i: usize| self.counts[i].load(Ordering::Relaxed);
            Injected {
                append_drop: n(0),
                commit_lost: n(1),
                unary_unavailable: n(2),
                expired: n(3),
            }
        }

        /// Whether to inject `fault` now.
        pub(super) fn roll(&self, fault: Fault) -> bool {
            let (p, count) = match fault {
                Fault::AppendDrop => (self.append_drop, 0),
                Fault::CommitLost => (self.commit_lost, 1),
                Fault::UnaryUnavailable => (self.unary_unavailable, 2),
            };
            let hit = p > 0.0 && self.rng.lock().expect("not poisoned").random_bool(p);
            if hit {
                self.counts[count].fetch_add(1, Ordering::Relaxed);
            }
            hit
        }

        pub(super) fn record_created(&self, stream: &str) {
            self.created
                .lock()
                .expect("not poisoned")
                .insert(stream.to_string());
        }

        pub(super) fn is_expired(&self, stream: &str) -> bool {
            let expired =
                self.expired && !self.created.lock().expect("not poisoned").contains(stream);
            if expired {
                self.counts[3].fetch_add(1, Ordering::Relaxed);
            }
            expired
        }
    }

    impl std::fmt::Display for FaultPlan {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "append_drop={},commit_lost={},unary_unavailable={},expired={} (seed {})",
                self.append_drop,
                self.commit_lost,
                self.unary_unavailable,
                u8::from(self.expired),
                self.seed
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(commit_time: bool, codes: &[StorageErrorCode]) -> BatchCommitWriteStreamsResponse {
        BatchCommitWriteStreamsResponse {
            commit_time: commit_time.then(prost_types::Timestamp::default),
            stream_errors: codes
                .iter()
                .map(|c| StorageError {
                    code: *c as i32,
                    entity: "projects/p/datasets/d/tables/t/streams/s".into(),
                    error_message: "detail".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn commit_answers_are_classified() {
        use StorageErrorCode::*;
        let classify = |a| classify_commit("projects/p/datasets/d/tables/t", &a);
        assert_eq!(
            classify(answer(true, &[])).unwrap(),
            CommitOutcome::Committed
        );
        assert_eq!(
            classify(answer(false, &[StreamAlreadyCommitted])).unwrap(),
            CommitOutcome::AlreadyCommitted
        );
        for code in [StreamNotFound, InvalidStreamState] {
            match classify(answer(false, &[code])).unwrap() {
                CommitOutcome::Gone(detail) => {
                    assert!(detail.contains(code.as_str_name()), "{detail}")
                }
                other => panic!("{code:?}: {other:?}"),
            }
        }
        // Anything else is not an answer about the stream's fate: an error.
        for code in [InvalidStreamType, SchemaMismatchExtraFields, TableNotFound] {
            let e = classify(answer(false, &[code])).unwrap_err();
            assert!(e.to_string().contains(code.as_str_name()), "{e}");
            assert!(!e.is_transient());
        }
        assert!(
            classify(answer(false, &[])).is_err(),
            "no commit time, no error"
        );
    }

    #[test]
    fn only_the_first_request_of_a_connection_carries_the_schema() {
        use gcp_bigquery_client::google::cloud::bigquery::storage::v1::{
            append_rows_request, AppendRowsRequest,
        };
        use prost::Message;
        let schema = proto_descriptor();
        let rows: Rows = [vec![1u8, 2]].iter().collect();
        let plain = append_request("s", 7, rows.clone(), None);
        let first = append_request("s", 7, rows, Some(&schema));
        let decoded = |r: &AppendRequest| {
            let r = AppendRowsRequest::decode(r.encode_to_vec().as_slice()).unwrap();
            assert_eq!(r.offset, Some(7));
            match r.rows {
                Some(append_rows_request::Rows::ProtoRows(d)) => d,
                _ => panic!("proto rows"),
            }
        };
        assert!(decoded(&plain).writer_schema.is_none());
        assert_eq!(
            decoded(&first).writer_schema.unwrap().proto_descriptor,
            Some(schema)
        );
        assert_eq!(decoded(&first).rows, decoded(&plain).rows);
        assert_eq!(decoded(&plain).rows.unwrap().serialized_rows, [vec![1, 2]]);
    }

    #[test]
    fn call_timeouts_shrink_to_the_invocation_deadline() {
        assert_eq!(call_timeout(UNARY_TIMEOUT), UNARY_TIMEOUT);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let within = |left: Duration| {
            let deadline = std::time::Instant::now() + left;
            rt.block_on(retry::within(deadline, async {
                call_timeout(UNARY_TIMEOUT)
            }))
        };
        let t = within(retry::RESERVE + Duration::from_secs(20));
        assert!(
            t <= Duration::from_secs(20) && t > Duration::from_secs(19),
            "{t:?}"
        );
        assert_eq!(
            within(Duration::from_secs(5)),
            Duration::from_secs(1),
            "at least 1 s"
        );
    }

    #[cfg(feature = "fault-injection")]
    #[test]
    fn fault_plans_parse_and_decide_from_their_seed() {
        let plan = FaultPlan::parse(
            "append_drop=0.05, commit_lost=0.3,unary_unavailable=0,expired=1",
            42,
        )
        .unwrap();
        assert_eq!(
            plan.to_string(),
            "append_drop=0.05,commit_lost=0.3,unary_unavailable=0,expired=1 (seed 42)"
        );
        assert!(!(0..1000).any(|_| plan.roll(Fault::UnaryUnavailable)));
        let decisions = |seed| {
            let plan = FaultPlan::parse("commit_lost=0.5", seed).unwrap();
            (0..64)
                .map(|_| plan.roll(Fault::CommitLost))
                .collect::<Vec<_>>()
        };
        assert_eq!(decisions(7), decisions(7), "same seed, same faults");
        assert_ne!(decisions(7), decisions(8));
        let hits = decisions(7).iter().filter(|d| **d).count();
        assert!((16..=48).contains(&hits), "{hits} of 64 at p=0.5");

        assert!(plan.is_expired("projects/p/datasets/d/tables/t/streams/old"));
        plan.record_created("projects/p/datasets/d/tables/t/streams/new");
        assert!(!plan.is_expired("projects/p/datasets/d/tables/t/streams/new"));
        let no_expiry = FaultPlan::parse("append_drop=1", 1).unwrap();
        assert!(!no_expiry.is_expired("projects/p/datasets/d/tables/t/streams/old"));

        for bad in [
            "append_drop",
            "append_drop=2",
            "commit_lost=x",
            "expired=maybe",
            "drop=0.1",
        ] {
            assert!(FaultPlan::parse(bad, 1).is_err(), "{bad}");
        }
    }
}
