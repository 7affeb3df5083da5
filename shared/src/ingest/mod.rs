//! Ingesting one log object, exactly once, top to bottom:
//!
//! 1. **resolve** the object version: bucket + key + ETag (HeadObject when the caller did not
//!    say), the ledger identity every entry point shares;
//! 2. **claim** it in the ledger ([`crate::ledger`]): already DONE → acknowledged; a live
//!    claim elsewhere → retry later; a dead attempt's plan → resume at step 5;
//! 3. **stage** ([`stage`]): stream it from S3 (pinned to the ETag), gunzip, parse, route
//!    each row by its own date, append to one PENDING stream per table, finalize;
//! 4. **plan**: record the finalized streams in the ledger;
//! 5. **commit** ([`commit`]) each table, recording progress; recover streams that expired;
//!    a forced replay then deletes the object's older rows;
//! 6. **DONE**, with the report.
//!
//! Nothing is visible in BigQuery before step 5, so a failure before it leaves nothing
//! behind. A crash during step 5 is finished by the next attempt from the plan.

mod commit;
mod report;
mod stage;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Instant;

use tracing::Instrument;

use crate::bigquery::{BigQuery, BigQueryError};
use crate::config::Config;
use crate::event::ObjectRef;
use crate::fault::fault_point;
use crate::ledger::{object_id, Claim, CommitPlan, Ledger, LedgerError};
use crate::quarantine::{QuarantineError, QuarantineTarget};
use crate::retry::Transient;
use crate::route::Layout;
use crate::source::{self, LogObject, SourceError};

use commit::Tracking;
pub use report::{ObjectReport, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{object}: {source}")]
    Read {
        object: String,
        #[source]
        source: crate::cloudfront::ReadError,
    },
    #[error("{object}: {source}")]
    BigQuery {
        object: String,
        #[source]
        source: BigQueryError,
    },
    #[error("{object}: {source}")]
    Quarantine {
        object: String,
        #[source]
        source: QuarantineError,
    },
    #[error("{object}: the parsing thread failed: {detail}")]
    Worker { object: String, detail: String },
    #[error("{object}: {source}")]
    Ledger {
        object: String,
        #[source]
        source: LedgerError,
    },
    #[error(
        "{object} is being ingested by {owner} (lease ends in {lease_seconds_left} s): retry later"
    )]
    Busy {
        object: String,
        owner: String,
        lease_seconds_left: i64,
    },
    #[error("{object}: recovering table {table}: {detail}")]
    Recovery {
        object: String,
        table: String,
        detail: String,
    },
}

impl Transient for IngestError {
    /// Whether a later attempt can succeed without anyone changing anything: a busy claim,
    /// a network or service failure. A corrupt object or an impossible recovery cannot.
    fn is_transient(&self) -> bool {
        match self {
            IngestError::Source(e) => e.is_transient(),
            IngestError::Read { source, .. } => {
                matches!(source, crate::cloudfront::ReadError::Io { source, .. } if !is_corrupt_data(source))
            }
            IngestError::BigQuery { source, .. } => source.is_transient(),
            IngestError::Quarantine { .. } | IngestError::Busy { .. } => true,
            IngestError::Ledger { source, .. } => source.is_transient(),
            IngestError::Worker { .. } | IngestError::Recovery { .. } => false,
        }
    }
}

/// gzip reports bad data as InvalidInput/InvalidData/UnexpectedEof; anything else reading
/// the stream (a reset connection) is the network's fault.
fn is_corrupt_data(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), InvalidInput | InvalidData | UnexpectedEof)
}

/// Everything ingestion needs, built once per process (a warm Lambda reuses it).
pub struct Ingestor {
    s3: aws_sdk_s3::Client,
    bq: BigQuery,
    layout: Layout,
    partition_expiration_days: Option<u32>,
    batch_bytes: usize,
    max_line_bytes: usize,
    quarantine: Option<QuarantineTarget>,
    /// Exactly-once bookkeeping for S3 objects (local files are not tracked).
    ledger: Option<Ledger>,
    /// Tables known to exist, so warm invocations skip the check.
    known_tables: Mutex<HashSet<String>>,
}

impl Ingestor {
    pub fn new(
        config: &Config,
        s3: aws_sdk_s3::Client,
        bq: BigQuery,
    ) -> Result<Self, QuarantineError> {
        Ok(Ingestor {
            s3,
            bq,
            layout: config.layout.clone(),
            partition_expiration_days: config.partition_expiration_days,
            batch_bytes: config
                .batch_bytes
                .min(crate::bigquery::write::MAX_REQUEST_BYTES / 2),
            max_line_bytes: config.max_line_bytes,
            quarantine: config
                .quarantine
                .as_deref()
                .map(QuarantineTarget::parse)
                .transpose()?,
            ledger: None,
            known_tables: Mutex::new(HashSet::new()),
        })
    }

    /// The ingestor as every entry point builds it: BigQuery, S3 and the DynamoDB ledger, all
    /// from `config` and the AWS environment.
    pub async fn from_config(
        config: &Config,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, SetupError> {
        let bq = BigQuery::connect(&config.bigquery, aws).await?;
        let ledger = Ledger::new(
            aws_sdk_dynamodb::Client::new(aws),
            &config.ledger_table,
            config.lease,
        );
        Ok(Ingestor::new(config, crate::aws::s3(aws), bq)?.with_ledger(ledger))
    }

    /// Tracks S3 objects in `ledger`.
    pub fn with_ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    pub fn bigquery(&self) -> &BigQuery {
        &self.bq
    }

    pub fn s3(&self) -> &aws_sdk_s3::Client {
        &self.s3
    }

    /// Ingests one object, in its own tracing span.
    pub async fn ingest(&self, object: &LogObject) -> Result<ObjectReport, IngestError> {
        self.ingest_with(object, false).await
    }

    /// Ingests one object; `force` re-ingests an object already done, replacing its rows.
    pub async fn ingest_with(
        &self,
        object: &LogObject,
        force: bool,
    ) -> Result<ObjectReport, IngestError> {
        let uri = object.uri();
        let span = tracing::info_span!("object", object = %uri);
        async {
            let started = Instant::now();
            let result = match (object, &self.ledger) {
                (LogObject::S3(o), Some(ledger)) => {
                    self.ingest_tracked(o, &uri, ledger, force).await
                }
                _ => self.ingest_untracked(object, &uri).await,
            };
            match &result {
                Ok(report) => tracing::info!(
                    outcome = ?report.outcome,
                    rows = report.rows,
                    rejected = report.rejected,
                    tables = ?report.tables,
                    bytes = report.bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "object done"
                ),
                Err(e) => {
                    tracing::error!(error = %e, retryable = e.is_transient(), "object failed")
                }
            }
            result
        }
        .instrument(span)
        .await
    }

    /// Ingests an S3 object under the ledger's protocol: resolve → claim → stage → plan →
    /// commit → DONE.
    async fn ingest_tracked(
        &self,
        object: &ObjectRef,
        uri: &str,
        ledger: &Ledger,
        force: bool,
    ) -> Result<ObjectReport, IngestError> {
        let Some(object) = self.resolve(object).await? else {
            tracing::warn!("object is gone; acknowledging");
            return Ok(ObjectReport::empty(uri.to_string(), Outcome::Gone));
        };
        let etag = object
            .etag
            .as_deref()
            .expect("resolved objects have an ETag");
        let id = object_id(&object.bucket, &object.key, etag);
        let owner = format!("{}-{}", std::process::id(), crate::clock::now_micros());
        let ledger_error = |source| IngestError::Ledger {
            object: uri.to_string(),
            source,
        };
        let claim = ledger
            .claim(&id, &owner, force)
            .await
            .map_err(ledger_error)?;
        fault_point("after_claim");
        let log_object = LogObject::S3(object.clone());
        let tracking = || Tracking {
            ledger,
            id: &id,
            owner: &owner,
        };
        let report = match claim {
            Claim::Done(report) => {
                tracing::info!("already ingested: redelivery skipped");
                let mut report: ObjectReport = serde_json::from_value(report)
                    .unwrap_or_else(|_| ObjectReport::empty(uri.to_string(), Outcome::Loaded));
                report.outcome = Outcome::AlreadyDone;
                return Ok(report);
            }
            Claim::Busy {
                owner,
                lease_seconds_left,
            } => {
                return Err(IngestError::Busy {
                    object: uri.to_string(),
                    owner,
                    lease_seconds_left,
                })
            }
            Claim::Resume(plan) => {
                tracing::warn!(tables = ?plan.streams.keys(), "finishing a commit an earlier attempt started");
                self.finish(&log_object, uri, plan, true, Some(tracking()))
                    .await?
            }
            Claim::Fresh { replace_tables } => {
                let ingest_micros = crate::clock::now_micros();
                let staged = match self.stage(&log_object, uri, ingest_micros, None).await {
                    Ok(staged) => staged,
                    Err(e) => {
                        // Let the retry start at once instead of waiting out the lease.
                        let _ = ledger.release(&id, &owner).await;
                        return Err(e);
                    }
                };
                let replaces_rows = replace_tables.as_ref().is_some_and(|r| !r.is_empty());
                if replaces_rows && staged.report.rows == 0 {
                    // Deleting the earlier rows and writing nothing would lose them.
                    tracing::warn!(
                        outcome = ?staged.report.outcome,
                        "forced replay refused: the object is gone or empty now; earlier rows kept"
                    );
                    ledger.keep_done(&id, &owner).await.map_err(ledger_error)?;
                    return Ok(ObjectReport::empty(uri.to_string(), Outcome::ReplayRefused));
                }
                if staged.streams.is_empty() && replace_tables.is_none() {
                    ledger
                        .done(&id, &owner, &staged.report.to_json())
                        .await
                        .map_err(ledger_error)?;
                    return Ok(staged.report);
                }
                let plan = CommitPlan {
                    replace_tables,
                    ..staged.into_plan(ingest_micros)
                };
                ledger
                    .committing(&id, &owner, &plan)
                    .await
                    .map_err(ledger_error)?;
                fault_point("after_plan_recorded");
                self.finish(&log_object, uri, plan, false, Some(tracking()))
                    .await?
            }
        };
        ledger
            .done(&id, &owner, &report.to_json())
            .await
            .map_err(ledger_error)?;
        Ok(report)
    }

    /// The version to ingest, with its ETag: as announced, or asked of S3 (`None`: gone).
    async fn resolve(&self, object: &ObjectRef) -> Result<Option<ObjectRef>, IngestError> {
        if object.etag.is_some() {
            return Ok(Some(object.clone()));
        }
        Ok(source::head(&self.s3, object).await?)
    }

    /// Ingests without a ledger (local files, or no ledger configured): stage, then commit.
    async fn ingest_untracked(
        &self,
        object: &LogObject,
        uri: &str,
    ) -> Result<ObjectReport, IngestError> {
        let ingest_micros = crate::clock::now_micros();
        let staged = self.stage(object, uri, ingest_micros, None).await?;
        let plan = staged.into_plan(ingest_micros);
        self.finish(object, uri, plan, false, None).await
    }
}

/// Why an ingestor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    BigQuery(#[from] BigQueryError),
    #[error(transparent)]
    Quarantine(#[from] QuarantineError),
}
