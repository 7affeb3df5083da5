//! BigQuery: table management over REST, row writing over the Storage Write API (gRPC).

pub mod append;
pub mod auth;
pub mod encode;
pub mod rows;
pub mod schema;
pub mod tables;
pub mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::{
    error_proto::ErrorProto, get_query_results_parameters::GetQueryResultsParameters,
    get_query_results_response::GetQueryResultsResponse, job_reference::JobReference,
    query_parameter::QueryParameter, query_parameter_type::QueryParameterType,
    query_parameter_value::QueryParameterValue, query_request::QueryRequest, table_row::TableRow,
};

use crate::config::BigQueryConfig;
use crate::retry::{self, Backoff};

pub use tables::{TableSpec, TableStatus};
pub use write::{CommitOutcome, StreamStatus, StreamWriter, WriteApi};
#[cfg(feature = "fault-injection")]
pub use write::{FaultPlan, Injected};

#[derive(Debug, thiserror::Error)]
pub enum BigQueryError {
    #[error("BigQuery credentials: {0}")]
    Credentials(String),
    #[error("BigQuery REST {call}: {message}")]
    Rest {
        call: String,
        /// The HTTP status of the answer (`None`: no answer was read).
        status: Option<u16>,
        /// Google's error reason (`rateLimitExceeded`, `backendError`, `notFound`, …).
        reason: Option<String>,
        /// The call failed in transport (connect, reset, timeout): the request may or may
        /// not have reached the service.
        transport: bool,
        message: String,
    },
    #[error("BigQuery Storage Write {call}: {status}")]
    Grpc {
        call: String,
        status: Box<tonic::Status>,
    },
    #[error("BigQuery Storage Write {call}: {message}")]
    Write { call: String, message: String },
    #[error("connecting to the Storage Write endpoint {url}: {message}")]
    Connect { url: String, message: String },
}

impl crate::retry::Transient for BigQueryError {
    /// Errors a repeat of the same call can clear: transport failures, throttling, and
    /// server-side trouble. Everything else (bad request, permission, not found) is permanent.
    fn is_transient(&self) -> bool {
        match self {
            BigQueryError::Grpc { status, .. } => grpc_transient(status.code()),
            BigQueryError::Rest {
                status,
                reason,
                transport,
                ..
            } => {
                *transport
                    || matches!(status, Some(429 | 500 | 502 | 503 | 504))
                    || matches!(
                        reason.as_deref(),
                        Some("rateLimitExceeded" | "backendError" | "internalError")
                    )
            }
            BigQueryError::Credentials(_)
            | BigQueryError::Write { .. }
            | BigQueryError::Connect { .. } => false,
        }
    }
}

/// gRPC codes worth retrying (Google's Storage Write guidance, plus transport failures,
/// which tonic reports as UNKNOWN or CANCELLED when a connection drops).
pub fn grpc_transient(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unavailable
            | Internal
            | ResourceExhausted
            | DeadlineExceeded
            | Aborted
            | Unknown
            | Cancelled
    )
}

impl BigQueryError {
    pub(crate) fn rest(call: impl Into<String>, e: BQError) -> Self {
        let call = call.into();
        match e {
            BQError::ResponseError { error } => {
                let error = error.error;
                let reason = error.errors.iter().find_map(|e| e.get("reason").cloned());
                let mut message = format!("HTTP {}", error.code);
                if !error.status.is_empty() {
                    message += &format!(" {}", error.status);
                }
                if let Some(reason) = &reason {
                    message += &format!(" ({reason})");
                }
                message += &format!(": {}", error.message);
                BigQueryError::Rest {
                    call,
                    status: u16::try_from(error.code).ok(),
                    reason,
                    transport: false,
                    message,
                }
            }
            BQError::RequestError(e) => {
                let transport = e.is_connect() || e.is_timeout() || e.is_request() || e.is_body();
                BigQueryError::Rest {
                    call,
                    status: e.status().map(|s| s.as_u16()),
                    reason: None,
                    transport,
                    message: error_chain(&e),
                }
            }
            other => BigQueryError::Rest {
                call,
                status: None,
                reason: None,
                transport: false,
                message: other.to_string(),
            },
        }
    }

    /// The HTTP status of a REST error.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            BigQueryError::Rest { status, .. } => *status,
            _ => None,
        }
    }
}

/// An error and its causes on one line (reqwest's own message omits the cause).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text += &format!(": {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// Longest wait for one REST answer; a hung connection then counts as a transport failure.
const REST_TIMEOUT: Duration = Duration::from_secs(60);

/// One REST call, repeated (with backoff, within the invocation's deadline) while it fails
/// transiently: transport failures, HTTP 429 and 5xx, `rateLimitExceeded`, `backendError`.
/// Only for calls whose repetition is harmless: reads, queries with a `requestId`, and
/// creations whose repeat answers 409.
pub(crate) async fn rest_call<T, F, Fut>(call: &str, mut attempt: F) -> Result<T, BigQueryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BQError>>,
{
    let api = format!("BigQuery.{}", call.split(' ').next().unwrap_or(call));
    let dml = ["DELETE", "UPDATE", "INSERT", "MERGE"]
        .iter()
        .any(|verb| call.starts_with(&format!("jobs.query `{verb}")));
    retry::retry(call, Backoff::STANDARD, || {
        crate::calls::count(&api);
        if dml {
            crate::calls::count("BigQuery.DML");
        }
        let answer = tokio::time::timeout(REST_TIMEOUT, attempt());
        async move {
            match answer.await {
                Ok(result) => result.map_err(|e| BigQueryError::rest(call, e)),
                Err(_) => Err(BigQueryError::Rest {
                    call: call.to_string(),
                    status: None,
                    reason: None,
                    transport: true,
                    message: format!("no answer within {} s", REST_TIMEOUT.as_secs()),
                }),
            }
        }
    })
    .await
}

/// One connection to a BigQuery dataset: REST for tables and queries, gRPC for writes.
#[derive(Clone)]
pub struct BigQuery {
    rest: gcp_bigquery_client::Client,
    write: WriteApi,
    pub project: String,
    pub dataset: String,
}

impl BigQuery {
    pub async fn connect(
        config: &BigQueryConfig,
        aws: &aws_config::SdkConfig,
    ) -> Result<BigQuery, BigQueryError> {
        install_crypto_provider();
        let auth: Arc<dyn Authenticator> = auth::authenticator(&config.auth, aws).await?;
        let rest = gcp_bigquery_client::client_builder::ClientBuilder::new()
            .with_v2_base_url(config.rest_url.trim_end_matches('/').to_string())
            .build_from_authenticator(auth.clone())
            .await
            .map_err(|e| BigQueryError::rest("client", e))?;
        let write = WriteApi::connect(&config.grpc_url, config.grpc_gzip, auth)?;
        Ok(BigQuery {
            rest,
            write,
            project: config.project.clone(),
            dataset: config.dataset.clone(),
        })
    }

    pub fn write_api(&self) -> &WriteApi {
        &self.write
    }

    /// `projects/P/datasets/D/tables/T`, as the Storage Write API names tables.
    pub fn table_path(&self, table: &str) -> String {
        format!(
            "projects/{}/datasets/{}/tables/{}",
            self.project, self.dataset, table
        )
    }

    /// Runs a standard-SQL query and returns its rows as optional strings, in column order.
    pub async fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, BigQueryError> {
        self.query_with(sql, &[]).await
    }

    /// Like [`query`](Self::query), with named parameters `(name, type, value)` (`@name` in SQL).
    pub async fn query_with(
        &self,
        sql: &str,
        params: &[(&str, &str, String)],
    ) -> Result<Vec<Vec<Option<String>>>, BigQueryError> {
        let result = self.run_query(sql, params).await?;
        Ok(result
            .rows
            .into_iter()
            .map(|row| {
                row.columns
                    .unwrap_or_default()
                    .into_iter()
                    .map(|cell| {
                        cell.value.and_then(|v| match v {
                            serde_json::Value::Null => None,
                            serde_json::Value::String(s) => Some(s),
                            other => Some(other.to_string()),
                        })
                    })
                    .collect()
            })
            .collect())
    }

    /// Runs a DML statement with named parameters; returns the number of rows it affected.
    pub async fn execute_dml(
        &self,
        sql: &str,
        params: &[(&str, &str, String)],
    ) -> Result<u64, BigQueryError> {
        let result = self.run_query(sql, params).await?;
        Ok(result
            .num_dml_affected_rows
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }

    /// Runs a query to completion: jobs.query, then, when the job outlives that request
    /// (`jobComplete: false`; the job keeps running), jobs.getQueryResults until it completes.
    /// The `requestId` makes a resubmission after a lost answer return the first job instead
    /// of starting a second one; the query cache is off, so a check reads the table as it is.
    async fn run_query(
        &self,
        sql: &str,
        params: &[(&str, &str, String)],
    ) -> Result<QueryResult, BigQueryError> {
        let call = format!("query `{sql}`");
        let mut request = QueryRequest::new(sql);
        request.use_legacy_sql = false;
        request.use_query_cache = Some(false);
        request.request_id = Some(request_id());
        request.timeout_ms = Some(QUERY_WAIT.as_millis() as i32);
        if !params.is_empty() {
            request.parameter_mode = Some("NAMED".into());
            request.query_parameters = Some(query_parameters(params));
        }
        let response = rest_call(&format!("jobs.query `{sql}`"), || {
            self.rest.job().query(&self.project, request.clone())
        })
        .await?;
        let job = response.job_reference.clone();
        let mut result = if response.job_complete == Some(false) {
            let job = job.as_ref().ok_or_else(|| BigQueryError::Rest {
                call: call.clone(),
                status: None,
                reason: None,
                transport: false,
                message: "the query did not complete and its answer names no job".into(),
            })?;
            self.wait_for_job(&call, job).await?
        } else {
            QueryResult::complete(
                &call,
                response.errors,
                response.rows,
                response.num_dml_affected_rows,
            )?
            .with_page_token(response.page_token)
        };
        // Later pages of a large result.
        while let Some(token) = result.page_token.take() {
            let job = job.as_ref().ok_or_else(|| BigQueryError::Rest {
                call: call.clone(),
                status: None,
                reason: None,
                transport: false,
                message: "more result pages, but the answer names no job".into(),
            })?;
            let page = self
                .query_results(&call, job, Some(token), QUERY_WAIT)
                .await?;
            result.rows.extend(page.rows.unwrap_or_default());
            result.page_token = page.page_token.filter(|t| !t.is_empty());
        }
        Ok(result)
    }

    /// Polls jobs.getQueryResults until the job completes, within the invocation's deadline
    /// (or [`QUERY_MAX_WITHOUT_DEADLINE`] without one). Each poll waits server-side.
    async fn wait_for_job(
        &self,
        call: &str,
        job: &JobReference,
    ) -> Result<QueryResult, BigQueryError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let wait = match retry::time_left() {
                Some(left) => left.saturating_sub(retry::RESERVE).min(QUERY_WAIT),
                None => QUERY_MAX_WITHOUT_DEADLINE
                    .saturating_sub(started.elapsed())
                    .min(QUERY_WAIT),
            };
            if wait.is_zero() {
                return Err(BigQueryError::Rest {
                    call: call.to_string(),
                    status: None,
                    reason: None,
                    transport: false,
                    message: format!(
                        "job {} still running after {} s; no time left to wait for it",
                        job.job_id.as_deref().unwrap_or("?"),
                        started.elapsed().as_secs()
                    ),
                });
            }
            let page = self.query_results(call, job, None, wait).await?;
            if page.job_complete == Some(true) {
                return Ok(QueryResult::complete(
                    call,
                    page.errors,
                    page.rows,
                    page.num_dml_affected_rows,
                )?
                .with_page_token(page.page_token));
            }
            tracing::debug!(
                call,
                job = job.job_id.as_deref().unwrap_or("?"),
                "query job still running"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// One jobs.getQueryResults call (retried on transient failures).
    async fn query_results(
        &self,
        call: &str,
        job: &JobReference,
        page_token: Option<String>,
        wait: Duration,
    ) -> Result<GetQueryResultsResponse, BigQueryError> {
        let job_id = job.job_id.clone().unwrap_or_default();
        let project = job
            .project_id
            .clone()
            .unwrap_or_else(|| self.project.clone());
        let parameters = GetQueryResultsParameters {
            location: job.location.clone(),
            page_token,
            timeout_ms: Some(wait.as_millis().max(1) as i32),
            ..Default::default()
        };
        rest_call(&format!("jobs.getQueryResults {job_id} ({call})"), || {
            self.rest
                .job()
                .get_query_results(&project, &job_id, parameters.clone())
        })
        .await
    }
}

/// How long one jobs.query or jobs.getQueryResults request waits for the job to complete
/// (the job itself runs on).
const QUERY_WAIT: Duration = Duration::from_secs(10);
/// How long a query may run when no invocation deadline bounds it (the CLI).
const QUERY_MAX_WITHOUT_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// A completed query's rows and, for DML, the rows it affected.
struct QueryResult {
    rows: Vec<TableRow>,
    num_dml_affected_rows: Option<String>,
    page_token: Option<String>,
}

impl QueryResult {
    /// The result of a completed job; errors reported with it fail the query (a job that
    /// failed can also answer this way instead of with an HTTP error).
    fn complete(
        call: &str,
        errors: Option<Vec<ErrorProto>>,
        rows: Option<Vec<TableRow>>,
        num_dml_affected_rows: Option<String>,
    ) -> Result<QueryResult, BigQueryError> {
        if let Some(first) = errors.as_ref().and_then(|e| e.first()) {
            return Err(BigQueryError::Rest {
                call: call.to_string(),
                status: None,
                reason: first.reason.clone(),
                transport: false,
                message: format!(
                    "the job failed: {}{}",
                    first.message.as_deref().unwrap_or("(no message)"),
                    first
                        .reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ),
            });
        }
        Ok(QueryResult {
            rows: rows.unwrap_or_default(),
            num_dml_affected_rows,
            page_token: None,
        })
    }

    fn with_page_token(mut self, token: Option<String>) -> Self {
        self.page_token = token.filter(|t| !t.is_empty());
        self
    }
}

/// A fresh `requestId` (a random UUID): the same for every retry of one logical query.
fn request_id() -> String {
    let bits: u128 = rand::random();
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn query_parameters(params: &[(&str, &str, String)]) -> Vec<QueryParameter> {
    params
        .iter()
        .map(|(name, kind, value)| QueryParameter {
            name: Some(name.to_string()),
            parameter_type: Some(QueryParameterType {
                r#type: kind.to_string(),
                array_type: None,
                struct_types: None,
            }),
            parameter_value: Some(QueryParameterValue {
                value: Some(value.clone()),
                array_values: None,
                struct_values: None,
            }),
        })
        .collect()
}

/// rustls 0.23 with both `ring` and `aws-lc-rs` compiled in needs one provider chosen per
/// process, or the first TLS connection panics.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Transient;

    fn rest(status: Option<u16>, reason: Option<&str>, transport: bool) -> BigQueryError {
        BigQueryError::Rest {
            call: "jobs.query".into(),
            status,
            reason: reason.map(str::to_string),
            transport,
            message: String::new(),
        }
    }

    #[test]
    fn rest_errors_are_transient_by_status_reason_or_transport() {
        for status in [429, 500, 502, 503, 504] {
            assert!(rest(Some(status), None, false).is_transient(), "{status}");
        }
        for status in [400, 401, 403, 404, 409] {
            assert!(!rest(Some(status), None, false).is_transient(), "{status}");
        }
        assert!(rest(Some(403), Some("rateLimitExceeded"), false).is_transient());
        assert!(rest(Some(400), Some("backendError"), false).is_transient());
        assert!(!rest(Some(403), Some("accessDenied"), false).is_transient());
        assert!(rest(None, None, true).is_transient(), "no answer");
        assert!(!rest(None, None, false).is_transient(), "unreadable answer");
    }

    #[test]
    fn rest_errors_keep_status_reason_and_message() {
        let body = serde_json::json!({"error": {
            "code": 503, "status": "UNAVAILABLE", "message": "try later",
            "errors": [{"reason": "backendError", "message": "try later"}]
        }});
        let e = BigQueryError::rest(
            "tables.get t",
            BQError::ResponseError {
                error: serde_json::from_value(body).unwrap(),
            },
        );
        assert_eq!(e.http_status(), Some(503));
        assert_eq!(
            e.to_string(),
            "BigQuery REST tables.get t: HTTP 503 UNAVAILABLE (backendError): try later"
        );
        assert!(e.is_transient());
    }

    #[test]
    fn request_ids_are_fresh_uuids() {
        let (a, b) = (request_id(), request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn a_completed_job_with_errors_fails() {
        let error = ErrorProto {
            reason: Some("invalidQuery".into()),
            message: Some("Unrecognized name: x".into()),
            ..Default::default()
        };
        let e = QueryResult::complete("query `x`", Some(vec![error]), None, None)
            .err()
            .expect("an error");
        assert!(
            e.to_string()
                .contains("Unrecognized name: x (invalidQuery)"),
            "{e}"
        );
        assert!(QueryResult::complete("q", Some(vec![]), None, Some("3".into())).is_ok());
    }
}
