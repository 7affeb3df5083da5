//! Ingesting log objects exactly once, a batch at a time (the objects of one invocation),
//! top to bottom:
//!
//! 1. **resolve** each object version: bucket + key + ETag (HeadObject when the caller did
//!    not say), the ledger identity every entry point shares; notifications naming the same
//!    version become one member of the batch;
//! 2. **claim** each in the ledger ([`crate::ledger`]): already DONE → acknowledged; a live
//!    claim elsewhere → retry later; bound to a batch that died while committing → claim
//!    that batch and finish it (step 5);
//! 3. **stage** ([`stage`]): stream every object from S3 (pinned to its ETag), several at
//!    once, gunzip, parse, route each row by its own date, append to one PENDING stream per
//!    table for the whole batch (more for a large table, [`streams`]), finalize; an object
//!    that fails alone is left out;
//! 4. **plan**: record the streams and each object's share, and bind the objects to the
//!    batch, in one transaction;
//! 5. **commit** ([`commit`]) each table once, recording progress; recover streams that
//!    expired; forced replays then delete their objects' older rows, one statement a table;
//! 6. **DONE**, each object with its report.
//!
//! Nothing is visible in BigQuery before step 5, so a failure before it leaves nothing
//! behind. A crash during step 5 is finished by the next attempt from the plan.

mod commit;
mod report;
mod stage;
mod streams;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::Instrument;

use crate::bigquery::{BigQuery, BigQueryError};
use crate::config::Config;
use crate::event::ObjectRef;
use crate::fault::fault_point;
use crate::ledger::{
    batch_id, object_id, BatchClaim, Claim, CommitPlan, Ledger, LedgerError, PlannedObject,
    MAX_BATCH_OBJECTS,
};
use crate::quarantine::{QuarantineError, QuarantineTarget};
use crate::retry::Transient;
use crate::route::Layout;
use crate::source::{self, LogObject, SourceError};

use commit::Tracking;
pub use report::{ObjectReport, Outcome};
use streams::Spread;

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
    /// A failure of the object's whole batch (a stream, a commit, the ledger).
    #[error("{object}: its batch failed: {source}")]
    Batch {
        object: String,
        #[source]
        source: Arc<IngestError>,
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
            IngestError::Batch { source, .. } => source.is_transient(),
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
    /// Objects of a batch read and parsed at once.
    parallel_objects: usize,
    /// How a large table's rows spread over several streams.
    spread: Spread,
    /// Tables known to exist, so warm invocations skip the check.
    known_tables: Mutex<HashSet<String>>,
    /// Applied to every row before it leaves AWS.
    privacy: crate::privacy::Privacy,
    /// The fields of a v2 plain delivery (its objects have no header).
    plain_fields: Option<std::sync::Arc<crate::cloudfront::Header>>,
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
            parallel_objects: config.parallel_objects,
            spread: Spread {
                spread_bytes: config.stream_spread_bytes,
                budget: config.max_connections,
            },
            known_tables: Mutex::new(HashSet::new()),
            privacy: config.privacy.clone(),
            plain_fields: config.plain_fields.clone().map(std::sync::Arc::new),
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
            crate::aws::dynamodb(aws),
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

    /// Ingests one object.
    pub async fn ingest(&self, object: &LogObject) -> Result<ObjectReport, IngestError> {
        self.ingest_with(object, false).await
    }

    /// Ingests one object; `force` re-ingests an object already done, replacing its rows.
    pub async fn ingest_with(
        &self,
        object: &LogObject,
        force: bool,
    ) -> Result<ObjectReport, IngestError> {
        let item = BatchItem {
            object: object.clone(),
            force,
        };
        self.ingest_batch(std::slice::from_ref(&item))
            .await
            .pop()
            .expect("one result per object")
    }

    /// Ingests `items` as batches of up to [`MAX_BATCH_OBJECTS`] sharing their streams; the
    /// results come in the order given. One object's failure is its own: its neighbours
    /// commit.
    pub async fn ingest_batch(
        &self,
        items: &[BatchItem],
    ) -> Vec<Result<ObjectReport, IngestError>> {
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(MAX_BATCH_OBJECTS) {
            let span = tracing::info_span!("batch", objects = chunk.len());
            let started = Instant::now();
            let chunk_results = self.ingest_chunk(chunk).instrument(span.clone()).await;
            let _entered = span.enter();
            for (item, result) in chunk.iter().zip(&chunk_results) {
                let uri = item.object.uri();
                match result {
                    Ok(report) => tracing::info!(
                        object = %uri,
                        outcome = ?report.outcome,
                        rows = report.rows,
                        rejected = report.rejected,
                        tables = ?report.tables,
                        bytes = report.bytes,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "object done"
                    ),
                    Err(e) => tracing::error!(
                        object = %uri,
                        error = %e,
                        retryable = e.is_transient(),
                        "object failed"
                    ),
                }
            }
            results.extend(chunk_results);
        }
        results
    }

    /// One batch: S3 objects under the ledger's protocol, the others (local files, or no
    /// ledger configured) staged and committed untracked.
    async fn ingest_chunk(&self, items: &[BatchItem]) -> Vec<Result<ObjectReport, IngestError>> {
        let mut results: Vec<Option<Result<ObjectReport, IngestError>>> =
            items.iter().map(|_| None).collect();
        let mut tracked = Vec::new();
        let mut untracked = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match (&item.object, &self.ledger) {
                (LogObject::S3(o), Some(_)) => tracked.push((i, o.clone(), item.force)),
                _ => untracked.push((i, item.object.clone())),
            }
        }
        if let Some(ledger) = &self.ledger {
            if !tracked.is_empty() {
                let outcomes = self.ingest_tracked(&tracked, ledger).await;
                for ((i, ..), outcome) in tracked.iter().zip(outcomes) {
                    results[*i] = Some(outcome);
                }
            }
        }
        if !untracked.is_empty() {
            let objects: Vec<LogObject> = untracked.iter().map(|(_, o)| o.clone()).collect();
            let outcomes = self.ingest_untracked(&objects).await;
            for ((i, _), outcome) in untracked.iter().zip(outcomes) {
                results[*i] = Some(outcome);
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every object has a result"))
            .collect()
    }

    /// S3 objects under the ledger's protocol: resolve → claim → finish dead batches →
    /// stage → plan → commit → DONE.
    async fn ingest_tracked(
        &self,
        items: &[(usize, ObjectRef, bool)],
        ledger: &Ledger,
    ) -> Vec<Result<ObjectReport, IngestError>> {
        let owner = format!("{}-{}", std::process::id(), crate::clock::now_micros());
        let mut outcomes: Vec<Option<Outcome_>> = items.iter().map(|_| None).collect();

        // One claim per object version, however many notifications name it.
        let mut members: BTreeMap<String, Member> = BTreeMap::new();
        for (slot, (_, object, force)) in items.iter().enumerate() {
            match self.resolve(object).await {
                Ok(None) => {
                    tracing::warn!(object = %object, "object is gone; acknowledging");
                    outcomes[slot] =
                        Some(Ok(ObjectReport::empty(object.to_string(), Outcome::Gone)));
                }
                Err(e) => outcomes[slot] = Some(Err(Arc::new(e))),
                Ok(Some(resolved)) => {
                    let etag = resolved
                        .etag
                        .as_deref()
                        .expect("resolved objects have an ETag");
                    let id = object_id(&resolved.bucket, &resolved.key, etag);
                    let member = members.entry(id).or_insert_with(|| Member {
                        object: resolved,
                        force: false,
                        slots: Vec::new(),
                    });
                    member.force |= *force;
                    member.slots.push(slot);
                }
            }
        }

        let mut results: BTreeMap<String, Outcome_> = BTreeMap::new();
        let mut fresh = Vec::new();
        let mut dead_batches: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, member) in &members {
            let uri = member.object.to_string();
            match ledger.claim(id, &owner, member.force).await {
                Err(source) => {
                    results.insert(
                        id.clone(),
                        Err(Arc::new(IngestError::Ledger {
                            object: uri,
                            source,
                        })),
                    );
                }
                Ok(Claim::Done(report)) => {
                    tracing::info!(object = %uri, "already ingested: redelivery skipped");
                    let mut report: ObjectReport = serde_json::from_value(report)
                        .unwrap_or_else(|_| ObjectReport::empty(uri, Outcome::Loaded));
                    report.outcome = Outcome::AlreadyDone;
                    results.insert(id.clone(), Ok(report));
                }
                Ok(Claim::Busy {
                    owner,
                    lease_seconds_left,
                }) => {
                    results.insert(
                        id.clone(),
                        Err(Arc::new(IngestError::Busy {
                            object: uri,
                            owner,
                            lease_seconds_left,
                        })),
                    );
                }
                Ok(Claim::InBatch(batch)) => {
                    dead_batches.entry(batch).or_default().push(id.clone())
                }
                Ok(Claim::Fresh { replace_tables }) => fresh.push(Fresh {
                    id: id.clone(),
                    object: member.object.clone(),
                    replace_tables,
                }),
            }
        }
        fault_point("after_claim");

        for (batch, ids) in dead_batches {
            let finished = self
                .resume_batch(ledger, &batch, &owner)
                .await
                .map_err(Arc::new);
            for id in ids {
                let outcome = match &finished {
                    Ok(reports) => reports.get(&id).cloned().ok_or_else(|| {
                        Arc::new(IngestError::Ledger {
                            object: members[&id].object.to_string(),
                            source: LedgerError::Malformed {
                                id: id.clone(),
                                detail: format!("bound to {batch}, which does not list it"),
                            },
                        })
                    }),
                    Err(e) => {
                        // Let the retry start at once instead of waiting out the lease.
                        let _ = ledger.release(&id, &owner).await;
                        Err(e.clone())
                    }
                };
                results.insert(id, outcome);
            }
        }

        if !fresh.is_empty() {
            results.extend(self.stage_and_commit(ledger, &owner, fresh).await);
        }

        for (id, member) in members {
            let outcome = results.remove(&id).expect("every member has a result");
            for slot in member.slots {
                outcomes[slot] = Some(outcome.clone());
            }
        }
        items
            .iter()
            .zip(outcomes)
            .map(|((_, object, _), outcome)| {
                unshare(
                    object.to_string(),
                    outcome.expect("every object has a result"),
                )
            })
            .collect()
    }

    /// The version to ingest, with its ETag: as announced, or asked of S3 (`None`: gone).
    async fn resolve(&self, object: &ObjectRef) -> Result<Option<ObjectRef>, IngestError> {
        if object.etag.is_some() {
            return Ok(Some(object.clone()));
        }
        Ok(source::head(&self.s3, object).await?)
    }

    /// Finishes a batch whose invocation died while committing; returns the reports of every
    /// object in it.
    async fn resume_batch(
        &self,
        ledger: &Ledger,
        batch: &str,
        owner: &str,
    ) -> Result<BTreeMap<String, ObjectReport>, IngestError> {
        let ledger_error = |source| IngestError::Ledger {
            object: batch.to_string(),
            source,
        };
        let reports = match ledger
            .claim_batch(batch, owner)
            .await
            .map_err(ledger_error)?
        {
            BatchClaim::Busy {
                owner,
                lease_seconds_left,
            } => {
                return Err(IngestError::Busy {
                    object: batch.to_string(),
                    owner,
                    lease_seconds_left,
                })
            }
            BatchClaim::Done(plan) => commit::reports_of(&plan)?,
            BatchClaim::Resume(plan) => {
                tracing::warn!(batch, objects = plan.objects.len(), tables = ?plan.streams.keys(), "finishing a commit an earlier attempt started");
                let tracking = Tracking {
                    ledger,
                    id: batch,
                    owner,
                };
                self.finish(plan, true, Some(tracking)).await?
            }
        };
        self.mark_done(ledger, batch, owner, &reports).await?;
        Ok(reports)
    }

    /// Stages the claimed objects into shared streams, records the plan that binds them to
    /// the batch, commits it and marks them DONE.
    async fn stage_and_commit(
        &self,
        ledger: &Ledger,
        owner: &str,
        mut fresh: Vec<Fresh>,
    ) -> BTreeMap<String, Outcome_> {
        let mut results: BTreeMap<String, Outcome_> = BTreeMap::new();
        let ledger_error = |object: String| move |source| IngestError::Ledger { object, source };
        let stamp = crate::clock::now_micros();
        let staged = loop {
            let objects: Vec<LogObject> = fresh
                .iter()
                .map(|f| LogObject::S3(f.object.clone()))
                .collect();
            let staged = match self.stage(&objects, stamp, None).await {
                Ok(staged) => staged,
                Err(e) => {
                    for f in &fresh {
                        let _ = ledger.release(&f.id, owner).await;
                    }
                    let e = Arc::new(e);
                    results.extend(fresh.into_iter().map(|f| (f.id, Err(e.clone()))));
                    return results;
                }
            };
            // A forced replay of an object that is gone or holds no rows now must not
            // delete the earlier rows: refused, and kept out of the batch.
            let refused: Vec<usize> = fresh
                .iter()
                .zip(&staged.objects)
                .enumerate()
                .filter(|(_, (f, staged))| {
                    f.replace_tables.as_ref().is_some_and(|r| !r.is_empty())
                        && matches!(staged, Ok(s) if s.report.rows == 0)
                })
                .map(|(i, _)| i)
                .collect();
            if refused.is_empty() {
                break staged;
            }
            let appended = refused
                .iter()
                .any(|&i| matches!(&staged.objects[i], Ok(s) if s.rows.values().any(|&n| n > 0)));
            for &i in refused.iter().rev() {
                let f = fresh.remove(i);
                let uri = f.object.to_string();
                tracing::warn!(object = %uri, "forced replay refused: the object is gone or empty now; earlier rows kept");
                let outcome = match ledger.keep_done(&f.id, owner).await {
                    Ok(()) => Ok(ObjectReport::empty(uri, Outcome::ReplayRefused)),
                    Err(source) => Err(Arc::new(ledger_error(uri)(source))),
                };
                results.insert(f.id, outcome);
            }
            if !appended && fresh.is_empty() {
                return results;
            }
            if !appended {
                let mut staged = staged;
                for &i in refused.iter().rev() {
                    drop(staged.objects.remove(i));
                }
                break staged;
            }
            // Its quarantined lines are in the streams: stage the others again without them.
        };

        let mut plan = CommitPlan {
            ingest_micros: stamp,
            streams: staged.streams,
            rows: staged.rows,
            days: staged.days,
            ..Default::default()
        };
        for (f, result) in fresh.into_iter().zip(staged.objects) {
            match result {
                Err(e) => {
                    let _ = ledger.release(&f.id, owner).await;
                    results.insert(f.id, Err(Arc::new(e)));
                }
                Ok(staged) => {
                    plan.objects.insert(
                        f.id,
                        PlannedObject {
                            object: LogObject::S3(f.object),
                            rows: staged.rows,
                            replace_tables: f.replace_tables,
                            report: staged.report.to_json(),
                        },
                    );
                }
            }
        }
        if plan.objects.is_empty() {
            return results;
        }
        let ids: Vec<String> = plan.objects.keys().cloned().collect();
        let committed = self.commit_batch(ledger, owner, plan).await;
        match committed {
            Ok(reports) => results.extend(reports.into_iter().map(|(id, r)| (id, Ok(r)))),
            Err(e) => {
                let e = Arc::new(e);
                results.extend(ids.into_iter().map(|id| (id, Err(e.clone()))));
            }
        }
        results
    }

    /// Records the plan (binding its objects to the batch), commits it, marks it DONE.
    async fn commit_batch(
        &self,
        ledger: &Ledger,
        owner: &str,
        plan: CommitPlan,
    ) -> Result<BTreeMap<String, ObjectReport>, IngestError> {
        let batch = batch_id(owner);
        let ledger_error = |source| IngestError::Ledger {
            object: batch.clone(),
            source,
        };
        if plan.streams.is_empty() {
            // Nothing to commit (empty objects): each is simply done.
            let reports = commit::reports_of(&plan)?;
            for (id, report) in &reports {
                ledger
                    .done(id, owner, &report.to_json())
                    .await
                    .map_err(ledger_error)?;
            }
            return Ok(reports);
        }
        if let Err(e) = ledger.record_batch(&batch, owner, &plan).await {
            for id in plan.objects.keys() {
                let _ = ledger.release(id, owner).await;
            }
            return Err(ledger_error(e));
        }
        fault_point("after_plan_recorded");
        let tracking = Tracking {
            ledger,
            id: &batch,
            owner,
        };
        let reports = self.finish(plan, false, Some(tracking)).await?;
        self.mark_done(ledger, &batch, owner, &reports).await?;
        Ok(reports)
    }

    /// Marks a committed batch's objects DONE, then the batch.
    async fn mark_done(
        &self,
        ledger: &Ledger,
        batch: &str,
        owner: &str,
        reports: &BTreeMap<String, ObjectReport>,
    ) -> Result<(), IngestError> {
        let ledger_error = |source| IngestError::Ledger {
            object: batch.to_string(),
            source,
        };
        let done: Vec<(String, serde_json::Value)> = reports
            .iter()
            .map(|(id, r)| (id.clone(), r.to_json()))
            .collect();
        ledger
            .batch_objects_done(batch, &done)
            .await
            .map_err(ledger_error)?;
        match ledger.batch_done(batch, owner).await {
            // Another attempt took the batch over meanwhile: it finds the objects done.
            Ok(()) | Err(LedgerError::LostClaim { .. }) => Ok(()),
            Err(e) => Err(ledger_error(e)),
        }
    }

    /// Ingests without a ledger (local files, or no ledger configured): stage, then commit.
    async fn ingest_untracked(
        &self,
        objects: &[LogObject],
    ) -> Vec<Result<ObjectReport, IngestError>> {
        let stamp = crate::clock::now_micros();
        let staged = match self.stage(objects, stamp, None).await {
            Ok(staged) => staged,
            Err(e) => {
                let e = Arc::new(e);
                return objects
                    .iter()
                    .map(|o| unshare(o.uri(), Err(e.clone())))
                    .collect();
            }
        };
        let mut plan = CommitPlan {
            ingest_micros: stamp,
            streams: staged.streams,
            rows: staged.rows,
            days: staged.days,
            ..Default::default()
        };
        let key = |i: usize| format!("{i:05}");
        let mut outcomes: Vec<Option<Outcome_>> = objects.iter().map(|_| None).collect();
        for (i, (object, result)) in objects.iter().zip(staged.objects).enumerate() {
            match result {
                Err(e) => outcomes[i] = Some(Err(Arc::new(e))),
                Ok(staged) => {
                    plan.objects.insert(
                        key(i),
                        PlannedObject {
                            object: object.clone(),
                            rows: staged.rows,
                            replace_tables: None,
                            report: staged.report.to_json(),
                        },
                    );
                }
            }
        }
        match self.finish(plan, false, None).await {
            Ok(mut reports) => {
                for (i, outcome) in outcomes.iter_mut().enumerate() {
                    if let Some(report) = reports.remove(&key(i)) {
                        *outcome = Some(Ok(report));
                    }
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
                    *outcome = Some(Err(e.clone()));
                }
            }
        }
        objects
            .iter()
            .zip(outcomes)
            .map(|(o, outcome)| unshare(o.uri(), outcome.expect("every object has a result")))
            .collect()
    }
}

/// One object of a batch to ingest.
#[derive(Debug, Clone)]
pub struct BatchItem {
    pub object: LogObject,
    /// Re-ingest an object already done, replacing the rows it loaded then.
    pub force: bool,
}

/// An object's result while its batch runs: an error may be its batch's, shared by all.
type Outcome_ = Result<ObjectReport, Arc<IngestError>>;

/// One object version of a batch, and the notifications (slots) that named it.
struct Member {
    object: ObjectRef,
    force: bool,
    slots: Vec<usize>,
}

/// An object claimed fresh: to stage.
struct Fresh {
    id: String,
    object: ObjectRef,
    replace_tables: Option<crate::ledger::Replace>,
}

/// An object's own error, or its batch's, naming the object.
fn unshare(object: String, outcome: Outcome_) -> Result<ObjectReport, IngestError> {
    outcome.map_err(|e| match Arc::try_unwrap(e) {
        Ok(own) => own,
        Err(shared) => IngestError::Batch {
            object,
            source: shared,
        },
    })
}

/// Why an ingestor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    BigQuery(#[from] BigQueryError),
    #[error(transparent)]
    Quarantine(#[from] QuarantineError),
}
