//! Storage Write API: PENDING streams written with explicit offsets, then finalized and
//! committed atomically. Rows of a stream that is never committed are discarded by BigQuery,
//! which is what makes a crashed attempt leave nothing behind.

use std::sync::Arc;
use std::time::Duration;

use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::{
    append_rows_request, append_rows_response, big_query_write_client::BigQueryWriteClient,
    storage_error,
    write_stream, AppendRowsRequest, AppendRowsResponse, BatchCommitWriteStreamsRequest,
    CreateWriteStreamRequest, FinalizeWriteStreamRequest, GetWriteStreamRequest, ProtoRows,
    ProtoSchema, WriteStream,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Streaming;

use prost_types::DescriptorProto;

use super::schema::proto_descriptor;
use super::BigQueryError;

/// Append requests in flight on one stream before we wait for an acknowledgement.
const MAX_IN_FLIGHT: usize = 4;
/// BigQuery's own limit on one request, which batches must stay under.
pub const MAX_REQUEST_BYTES: usize = 10 * 1000 * 1000;

/// The Storage Write API client: one channel, shared by every stream of the process.
#[derive(Clone)]
pub struct WriteApi {
    client: BigQueryWriteClient<Channel>,
    auth: Arc<dyn Authenticator>,
}

impl WriteApi {
    /// Sets up a lazily connected channel (`http://` = plaintext, for the emulator).
    pub fn connect(url: &str, auth: Arc<dyn Authenticator>) -> Result<WriteApi, BigQueryError> {
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
        let mut client = BigQueryWriteClient::new(endpoint.connect_lazy())
            .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
            .max_decoding_message_size(2 * MAX_REQUEST_BYTES);
        if url.starts_with("https://") {
            // Log rows compress several-fold; the emulator does not take gzip.
            client = client
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        Ok(WriteApi { client, auth })
    }

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

    /// Creates a PENDING stream on `table_path`. A just-created table can briefly be "not
    /// found" to the write API: that is retried with backoff.
    pub async fn create_pending_stream(&self, table_path: &str) -> Result<String, BigQueryError> {
        let mut delay = Duration::from_millis(250);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let message = CreateWriteStreamRequest {
                parent: table_path.to_string(),
                write_stream: Some(WriteStream {
                    r#type: write_stream::Type::Pending as i32,
                    ..Default::default()
                }),
            };
            let request = self
                .request(message, &format!("parent={table_path}"))
                .await?;
            match self.client.clone().create_write_stream(request).await {
                Ok(response) => return Ok(response.into_inner().name),
                Err(status) if status.code() == tonic::Code::NotFound && attempt < 6 => {
                    tracing::debug!(
                        table = table_path,
                        attempt,
                        "table not yet visible to the write API, retrying"
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(status) => {
                    return Err(BigQueryError::Grpc {
                        call: format!("CreateWriteStream {table_path}"),
                        status: Box::new(status),
                    })
                }
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
            descriptor,
            stream,
            connection: None,
            next_offset: 0,
            in_flight: 0,
            rows: 0,
        }
    }

    /// Finalizes a stream (no more appends); returns its row count.
    pub async fn finalize(&self, stream: &str) -> Result<i64, BigQueryError> {
        let message = FinalizeWriteStreamRequest {
            name: stream.to_string(),
        };
        let request = self.request(message, &format!("name={stream}")).await?;
        let response = self
            .client
            .clone()
            .finalize_write_stream(request)
            .await
            .map_err(|status| BigQueryError::Grpc {
                call: format!("FinalizeWriteStream {stream}"),
                status: Box::new(status),
            })?;
        Ok(response.into_inner().row_count)
    }

    /// Commits finalized streams of one table atomically.
    pub async fn batch_commit(
        &self,
        table_path: &str,
        streams: &[String],
    ) -> Result<(), BigQueryError> {
        let message = BatchCommitWriteStreamsRequest {
            parent: table_path.to_string(),
            write_streams: streams.to_vec(),
        };
        let request = self
            .request(message, &format!("parent={table_path}"))
            .await?;
        let response = self
            .client
            .clone()
            .batch_commit_write_streams(request)
            .await
            .map_err(|status| BigQueryError::Grpc {
                call: format!("BatchCommitWriteStreams {table_path}"),
                status: Box::new(status),
            })?
            .into_inner();
        if !response.stream_errors.is_empty() || response.commit_time.is_none() {
            let errors: Vec<String> = response
                .stream_errors
                .iter()
                .map(|e| {
                    let code = storage_error::StorageErrorCode::try_from(e.code)
                        .map(|c| c.as_str_name().to_string())
                        .unwrap_or_else(|_| e.code.to_string());
                    format!("{} ({code}): {}", e.entity, e.error_message)
                })
                .collect();
            return Err(BigQueryError::Write {
                call: format!("BatchCommitWriteStreams {table_path}"),
                message: if errors.is_empty() {
                    "no commit time returned".into()
                } else {
                    errors.join("; ")
                },
            });
        }
        Ok(())
    }

    /// Commits one finalized stream of `table_path`, telling apart "committed now", "was
    /// already committed" (a lost response, or a resume), and "the stream is gone"
    /// (garbage-collected after its expiry, or unknown): only the data can tell then.
    pub async fn commit_stream(
        &self,
        table_path: &str,
        stream: &str,
    ) -> Result<CommitOutcome, BigQueryError> {
        match self.batch_commit(table_path, &[stream.to_string()]).await {
            Ok(()) => Ok(CommitOutcome::Committed),
            Err(BigQueryError::Write { message, .. }) if message.contains("STREAM_ALREADY_COMMITTED") => {
                Ok(CommitOutcome::AlreadyCommitted)
            }
            Err(BigQueryError::Write { message, .. }) => Ok(CommitOutcome::Gone(message)),
            Err(BigQueryError::Grpc { status, .. }) if status.code() == tonic::Code::NotFound => {
                Ok(CommitOutcome::Gone(status.message().to_string()))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether `stream` was committed, from the stream itself (`commit_time`, free and exact).
    pub async fn stream_status(&self, stream: &str) -> Result<StreamStatus, BigQueryError> {
        match self.get_stream(stream).await {
            Ok(s) if s.commit_time.is_some() => Ok(StreamStatus::Committed),
            Ok(_) => Ok(StreamStatus::NotCommitted),
            Err(BigQueryError::Grpc { status, .. }) if status.code() == tonic::Code::NotFound => {
                Ok(StreamStatus::Gone)
            }
            Err(e) => Err(e),
        }
    }

    /// The stream's state (for recovery: was it committed?).
    pub async fn get_stream(&self, stream: &str) -> Result<WriteStream, BigQueryError> {
        let message = GetWriteStreamRequest {
            name: stream.to_string(),
            ..Default::default()
        };
        let request = self.request(message, &format!("name={stream}")).await?;
        self.client
            .clone()
            .get_write_stream(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|status| BigQueryError::Grpc {
                call: format!("GetWriteStream {stream}"),
                status: Box::new(status),
            })
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
/// request of a connection.
pub fn append_request(
    stream: &str,
    offset: i64,
    rows: Vec<Vec<u8>>,
    schema: Option<&DescriptorProto>,
) -> AppendRowsRequest {
    AppendRowsRequest {
        // Sent on every request (only required on the first) so any server can route it.
        write_stream: stream.to_string(),
        offset: Some(offset),
        rows: Some(append_rows_request::Rows::ProtoRows(
            append_rows_request::ProtoData {
                writer_schema: schema.map(|d| ProtoSchema {
                    proto_descriptor: Some(d.clone()),
                }),
                rows: Some(ProtoRows {
                    serialized_rows: rows,
                }),
            },
        )),
        ..Default::default()
    }
}

struct Connection {
    requests: mpsc::Sender<AppendRowsRequest>,
    responses: Streaming<AppendRowsResponse>,
}

/// Appends batches of encoded rows to one PENDING stream, with explicit offsets and a small
/// window of requests in flight.
pub struct StreamWriter {
    api: WriteApi,
    descriptor: DescriptorProto,
    stream: String,
    connection: Option<Connection>,
    next_offset: i64,
    in_flight: usize,
    rows: i64,
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
    pub async fn append(&mut self, rows: Vec<Vec<u8>>) -> Result<(), BigQueryError> {
        let count = rows.len() as i64;
        let first = self.connection.is_none();
        let request = append_request(
            &self.stream,
            self.next_offset,
            rows,
            first.then_some(&self.descriptor),
        );
        if first {
            self.open_connection(request).await?;
        } else {
            let connection = self.connection.as_mut().expect("opened on first append");
            if connection.requests.send(request).await.is_err() {
                // The server closed the stream: its reason is in the responses.
                self.drain(self.in_flight + 1).await?;
                return Err(self.write_error("append connection closed by the server".into()));
            }
        }
        self.next_offset += count;
        self.rows += count;
        self.in_flight += 1;
        if self.in_flight > MAX_IN_FLIGHT {
            self.drain(1).await?;
        }
        Ok(())
    }

    /// Waits for every acknowledgement and closes the connection; returns the row count.
    pub async fn flush(&mut self) -> Result<i64, BigQueryError> {
        self.drain(self.in_flight).await?;
        self.connection = None;
        Ok(self.rows)
    }

    async fn open_connection(&mut self, first: AppendRowsRequest) -> Result<(), BigQueryError> {
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT + 1);
        tx.send(first).await.expect("receiver is alive");
        let request = self
            .api
            .request(
                ReceiverStream::new(rx),
                &format!("write_stream={}", self.stream),
            )
            .await?;
        let responses = self
            .api
            .client
            .clone()
            .append_rows(request)
            .await
            .map_err(|status| BigQueryError::Grpc {
                call: format!("AppendRows {}", self.stream),
                status: Box::new(status),
            })?
            .into_inner();
        self.connection = Some(Connection {
            requests: tx,
            responses,
        });
        Ok(())
    }

    /// Reads `n` acknowledgements, failing on the first error response.
    async fn drain(&mut self, n: usize) -> Result<(), BigQueryError> {
        for _ in 0..n.min(self.in_flight) {
            let connection = self
                .connection
                .as_mut()
                .expect("in-flight requests have a connection");
            let response = connection
                .responses
                .message()
                .await
                .map_err(|status| BigQueryError::Grpc {
                    call: format!("AppendRows {}", self.stream),
                    status: Box::new(status),
                })?
                .ok_or_else(|| {
                    self.write_error("stream ended before every append was acknowledged".into())
                })?;
            self.in_flight -= 1;
            if !response.row_errors.is_empty() {
                let first = &response.row_errors[0];
                return Err(self.write_error(format!(
                    "{} row error(s), first at index {}: {}",
                    response.row_errors.len(),
                    first.index,
                    first.message
                )));
            }
            if let Some(append_rows_response::Response::Error(status)) = response.response {
                return Err(self.write_error(format!("code {}: {}", status.code, status.message)));
            }
        }
        Ok(())
    }

    fn write_error(&self, message: String) -> BigQueryError {
        BigQueryError::Write {
            call: format!("AppendRows {}", self.stream),
            message,
        }
    }
}
