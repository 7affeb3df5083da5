//! BigQuery: table management over REST, row writing over the Storage Write API (gRPC).

pub mod auth;
pub mod encode;
pub mod schema;
pub mod tables;
pub mod write;

use std::sync::Arc;

use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::query_request::QueryRequest;

use crate::config::BigQueryConfig;

pub use tables::{TableSpec, TableStatus};
pub use write::{CommitOutcome, StreamStatus, StreamWriter, WriteApi};

#[derive(Debug, thiserror::Error)]
pub enum BigQueryError {
    #[error("BigQuery credentials: {0}")]
    Credentials(String),
    #[error("BigQuery REST {call}: {message}")]
    Rest { call: String, message: String },
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
            BigQueryError::Rest { message, .. } => {
                ["HTTP 429", "HTTP 500", "HTTP 502", "HTTP 503", "HTTP 504", "rateLimitExceeded", "backendError", "error sending request"]
                    .iter()
                    .any(|m| message.contains(m))
            }
            BigQueryError::Credentials(_) | BigQueryError::Write { .. } | BigQueryError::Connect { .. } => false,
        }
    }
}

/// gRPC codes worth retrying (Google's Storage Write guidance, plus transport failures,
/// which tonic reports as UNKNOWN or CANCELLED when a connection drops).
pub fn grpc_transient(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unavailable | Internal | ResourceExhausted | DeadlineExceeded | Aborted | Unknown | Cancelled
    )
}

impl BigQueryError {
    pub(crate) fn rest(call: impl Into<String>, e: BQError) -> Self {
        let message = match &e {
            BQError::ResponseError { error } => {
                format!(
                    "HTTP {} {}: {}",
                    error.error.code, error.error.status, error.error.message
                )
            }
            other => other.to_string(),
        };
        BigQueryError::Rest {
            call: call.into(),
            message,
        }
    }
}

/// Runs a REST call again when it failed without an HTTP answer (a dropped or reset
/// connection, as pooled connections to any endpoint sometimes are). Only for calls whose
/// repetition is harmless: reads, queries that count or delete an object's older rows, and
/// creations whose repeat answers 409.
pub(crate) async fn retry_transport<T, F, Fut>(call: &str, mut attempt: F) -> Result<T, BQError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BQError>>,
{
    let mut delay = std::time::Duration::from_millis(200);
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(BQError::RequestError(e)) if tries < 4 => {
                tracing::warn!(call, error = %e, tries, "BigQuery REST call failed in transport; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                tries += 1;
            }
            result => return result,
        }
    }
}

/// HTTP status of a REST error, if it was one.
pub(crate) fn http_status(e: &BQError) -> Option<i64> {
    match e {
        BQError::ResponseError { error } => Some(error.error.code),
        _ => None,
    }
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
        let write = WriteApi::connect(&config.grpc_url, auth)?;
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
        let response = self.run_query(sql, params).await?;
        let rows = response.rows.unwrap_or_default();
        Ok(rows
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
        let response = self.run_query(sql, params).await?;
        Ok(response
            .num_dml_affected_rows
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }

    async fn run_query(
        &self,
        sql: &str,
        params: &[(&str, &str, String)],
    ) -> Result<gcp_bigquery_client::model::query_response::QueryResponse, BigQueryError> {
        use gcp_bigquery_client::model::{
            query_parameter::QueryParameter, query_parameter_type::QueryParameterType,
            query_parameter_value::QueryParameterValue,
        };
        let mut request = QueryRequest::new(sql);
        request.use_legacy_sql = false;
        if !params.is_empty() {
            request.parameter_mode = Some("NAMED".into());
            request.query_parameters = Some(
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
                    .collect(),
            );
        }
        let response = retry_transport("jobs.query", || {
            self.rest.job().query(&self.project, request.clone())
        })
        .await
        .map_err(|e| BigQueryError::rest(format!("query `{sql}`"), e))?;
        if response.job_complete == Some(false) {
            return Err(BigQueryError::Rest {
                call: format!("query `{sql}`"),
                message: "the query did not complete within the request".into(),
            });
        }
        Ok(response)
    }
}

/// rustls 0.23 with both `ring` and `aws-lc-rs` compiled in needs one provider chosen per
/// process, or the first TLS connection panics.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
