//! The exactly-once ledger: one DynamoDB item per object version, moved through
//! CLAIMED → COMMITTING → DONE with conditional writes, and one item per **batch**: the
//! objects of one invocation staged into shared PENDING streams (one per table, a few for a
//! large table, not one per object: CreateWriteStream is a scarce quota) and committed
//! together.
//!
//! * **Identity**: `s3://bucket/key#etag`, the same from every entry point (live events,
//!   replay listings, the CLI): S3 events carry the ETag, listings carry it, and the CLI asks
//!   HeadObject. A version id would differ between entry points (listings have none).
//! * **CLAIMED** (with a lease): an invocation is reading and appending to PENDING streams.
//!   Nothing is visible yet; if it dies, the lease expires and the next attempt starts over
//!   (the dead attempt's streams are never committed, so BigQuery discards them).
//! * **COMMITTING**: every stream is finalized and the batch's plan recorded on its own item
//!   (`batch#<owner>`: streams, the attempt's `ingest_time`, each object's rows), then every
//!   object of the batch moves to COMMITTING naming that batch, in **one transaction**: the
//!   batch's streams are committed only if every object in them is bound to it, so no object
//!   can be staged again elsewhere while its rows wait in a stream. A retry after a crash in
//!   this state does not re-read the object: it claims the batch and finishes its plan, for
//!   every object in it.
//! * **DONE**: rows per table and rejected lines. A redelivery is acknowledged without writing.
//!
//! A forced replay claims a DONE item again and records, in the same conditional write, which
//! tables hold rows to replace (`replace_tables`). That intent stays on the item through any
//! crash or lease expiry until the object is DONE again, so a later attempt (forced or not)
//! still replaces instead of adding a second copy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use crate::bigquery::auth::aws_error;
use crate::clock::now_secs;
use crate::route::DaySpan;
use crate::source::LogObject;

/// DynamoDB's limit on the items of one transaction: the most objects one batch can bind.
pub const MAX_BATCH_OBJECTS: usize = 100;

/// Ledger items outlive any realistic replay window, then expire (DynamoDB TTL).
const RETENTION_DAYS: u64 = 400;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// DynamoDB failed after the SDK's own retries (throttling, network): retry later.
    #[error("ledger table {table}: {detail}")]
    Dynamo { table: String, detail: String },
    #[error("ledger item {id} is malformed: {detail}")]
    Malformed { id: String, detail: String },
    #[error("lost the claim on {id}: another invocation took it over")]
    LostClaim { id: String },
}

impl crate::retry::Transient for LedgerError {
    fn is_transient(&self) -> bool {
        !matches!(self, LedgerError::Malformed { .. })
    }
}

/// The ledger key of one object version.
pub fn object_id(bucket: &str, key: &str, etag: &str) -> String {
    format!("s3://{bucket}/{key}#{}", etag.trim_matches('"'))
}

/// Tables whose earlier rows of an object a forced replay replaces, with the dates those rows
/// have (`None`: unknown, the whole table is searched).
pub type Replace = BTreeMap<String, Option<DaySpan>>;

/// What a batch recorded before committing: enough to finish without re-reading.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CommitPlan {
    /// The `ingest_time` (µs) of the attempt that staged first: every row this plan commits
    /// is stamped with it or later, every row it replaces earlier.
    pub ingest_micros: i64,
    /// Table → its finalized PENDING streams (several for a large table, committed together),
    /// holding the rows of every object of the batch.
    #[serde(deserialize_with = "one_or_many")]
    pub streams: BTreeMap<String, Vec<String>>,
    /// Table → rows in its streams.
    pub rows: BTreeMap<String, u64>,
    /// Table → the stamp of its rows, where a table was staged again after its stream expired.
    #[serde(default)]
    pub stamps: BTreeMap<String, i64>,
    /// Table → the log dates of its rows (the partition filter for checks).
    #[serde(default)]
    pub days: BTreeMap<String, DaySpan>,
    /// Tables whose stream is known committed.
    pub committed: BTreeSet<String>,
    /// The objects whose rows the streams hold, by ledger id.
    pub objects: BTreeMap<String, PlannedObject>,
}

/// Plans recorded before tables could have several streams name one stream per table.
fn one_or_many<'de, D>(deserializer: D) -> Result<BTreeMap<String, Vec<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Streams {
        One(String),
        Many(Vec<String>),
    }
    let tables: BTreeMap<String, Streams> = serde::Deserialize::deserialize(deserializer)?;
    Ok(tables
        .into_iter()
        .map(|(table, streams)| match streams {
            Streams::One(stream) => (table, vec![stream]),
            Streams::Many(streams) => (table, streams),
        })
        .collect())
}

/// One object's share of a batch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlannedObject {
    /// Where to read it again if a stream expires before its commit.
    pub object: LogObject,
    /// Table → this object's rows in the table's stream.
    pub rows: BTreeMap<String, u64>,
    /// A forced replay: after committing, delete the object's older rows from these tables.
    pub replace_tables: Option<Replace>,
    /// The object's report, returned (and recorded) when the batch is done.
    pub report: serde_json::Value,
}

impl CommitPlan {
    /// The `ingest_time` stamped on `table`'s rows.
    pub fn stamp(&self, table: &str) -> i64 {
        self.stamps
            .get(table)
            .copied()
            .unwrap_or(self.ingest_micros)
    }

    /// The lineage (`source_object`) of the objects with rows in `table`, with their ids.
    pub fn objects_in<'a>(
        &'a self,
        table: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a PlannedObject)> + 'a {
        self.objects
            .iter()
            .filter(move |(_, o)| o.rows.get(table).is_some_and(|&n| n > 0))
    }
}

/// The outcome of claiming an object.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Ours to ingest. `replace_tables`: a forced replay of these previously loaded tables.
    Fresh { replace_tables: Option<Replace> },
    /// The object is bound to a batch whose invocation died while committing: claim that
    /// batch ([`Ledger::claim_batch`]) and finish its plan.
    InBatch(String),
    /// Already ingested: the report recorded then.
    Done(serde_json::Value),
    /// Another invocation holds a live lease: retry later.
    Busy {
        owner: String,
        lease_seconds_left: i64,
    },
}

/// The outcome of claiming a batch to finish it.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchClaim {
    /// Ours now: finish its plan.
    Resume(CommitPlan),
    /// Finished already; some of its objects may still need marking DONE from the plan.
    Done(CommitPlan),
    /// Another invocation is finishing it: retry later.
    Busy {
        owner: String,
        lease_seconds_left: i64,
    },
}

/// The ledger id of the batch `owner` stages.
pub fn batch_id(owner: &str) -> String {
    format!("batch#{owner}")
}

#[derive(Clone)]
pub struct Ledger {
    client: aws_sdk_dynamodb::Client,
    table: String,
    lease: Duration,
}

const CLAIMED: &str = "CLAIMED";
const COMMITTING: &str = "COMMITTING";
const DONE: &str = "DONE";

type Item = HashMap<String, AttributeValue>;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn number(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// The SET clause every claim shares: ours, for one lease.
const CLAIM_SET: &str = "SET #owner = :owner, lease_until = :until, \
     attempts = if_not_exists(attempts, :zero) + :one, claimed_at = :now, expires_at = :expires";

impl Ledger {
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        lease: Duration,
    ) -> Self {
        Ledger {
            client,
            table: table.into(),
            lease,
        }
    }

    fn error<E: std::error::Error + 'static>(&self, e: &E) -> LedgerError {
        LedgerError::Dynamo {
            table: self.table.clone(),
            detail: aws_error(e),
        }
    }

    /// Claims `id` for `owner`: a new object, an expired lease, or (with `force`) a DONE one.
    pub async fn claim(&self, id: &str, owner: &str, force: bool) -> Result<Claim, LedgerError> {
        if force {
            if let Some(item) = self.get(id).await? {
                if text(&item, "status") == Some(DONE) {
                    return self.claim_for_replacement(id, owner, &item).await;
                }
            }
        }
        self.claim_open(id, owner).await
    }

    /// A claim that takes a new object or an expired lease, never a DONE item.
    async fn claim_open(&self, id: &str, owner: &str) -> Result<Claim, LedgerError> {
        let now = now_secs();
        let result = self
            .claim_request(id, owner, now)
            .update_expression(format!(
                "{CLAIM_SET}, #status = if_not_exists(#status, :claimed)"
            ))
            .condition_expression(
                "attribute_not_exists(object_id) OR (lease_until < :now AND #status <> :done)",
            )
            .expression_attribute_values(":claimed", s(CLAIMED))
            .expression_attribute_values(":done", s(DONE))
            .send()
            .await;
        match result {
            Ok(out) => claimed(id, &out.attributes.unwrap_or_default()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                refused(id, owner, now, &self.item_after_refusal(id, e.err()).await?)
            }
            Err(e) => Err(self.error(&e)),
        }
    }

    /// A forced replay's claim of a DONE item: CLAIMED again, with the tables to replace
    /// recorded in the same write. Conditional on the item being as read (optimistic).
    async fn claim_for_replacement(
        &self,
        id: &str,
        owner: &str,
        item: &Item,
    ) -> Result<Claim, LedgerError> {
        let now = now_secs();
        let mut replace = replace_of(id, item)?.unwrap_or_default();
        let report = report_of(item);
        let days: BTreeMap<String, DaySpan> =
            serde_json::from_value(report["days"].clone()).unwrap_or_default();
        if let Some(tables) = report["tables"].as_object() {
            for table in tables.keys() {
                let span = days.get(table).copied();
                let entry = replace.entry(table.clone()).or_insert(span);
                *entry = match (*entry, span) {
                    (Some(a), Some(b)) => Some(a.union(b)),
                    _ => None,
                };
            }
        }
        let seen = number(item, "attempts").unwrap_or(0);
        let result = self
            .claim_request(id, owner, now)
            .update_expression(format!(
                "{CLAIM_SET}, #status = :claimed, replace_tables = :replace"
            ))
            .condition_expression("#status = :done AND attempts = :seen")
            .expression_attribute_values(":claimed", s(CLAIMED))
            .expression_attribute_values(":done", s(DONE))
            .expression_attribute_values(":seen", n(seen))
            .expression_attribute_values(
                ":replace",
                s(serde_json::to_string(&replace).expect("maps serialize")),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(Claim::Fresh {
                replace_tables: Some(replace),
            }),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                refused(id, owner, now, &self.item_after_refusal(id, e.err()).await?)
            }
            Err(e) => Err(self.error(&e)),
        }
    }

    fn claim_request(
        &self,
        id: &str,
        owner: &str,
        now: i64,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("object_id", s(id))
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":until", n(now + self.lease.as_secs() as i64))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":expires", n(now + (RETENTION_DAYS * 86_400) as i64))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
    }

    /// The item whose state refused a claim: returned with the refusal, or read again.
    async fn item_after_refusal(
        &self,
        id: &str,
        e: &aws_sdk_dynamodb::operation::update_item::UpdateItemError,
    ) -> Result<Item, LedgerError> {
        match failed_item(e) {
            Some(item) => Ok(item),
            None => Ok(self.get(id).await?.unwrap_or_default()),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Item>, LedgerError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("object_id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map(|o| o.item)
            .map_err(|e| self.error(&e))
    }

    /// Records the batch's plan (all streams finalized) before the first commit, then binds
    /// every object in it to the batch in one transaction, conditional on each still being
    /// ours: if any was taken over, nothing is bound and the streams are never committed.
    /// Repeating it after a lost answer finds the objects bound already, and succeeds.
    pub async fn record_batch(
        &self,
        batch: &str,
        owner: &str,
        plan: &CommitPlan,
    ) -> Result<(), LedgerError> {
        assert!(
            plan.objects.len() <= MAX_BATCH_OBJECTS,
            "a batch binds at most {MAX_BATCH_OBJECTS} objects"
        );
        let now = now_secs();
        let plan_json = serde_json::to_string(plan).expect("plans serialize");
        self.client
            .put_item()
            .table_name(&self.table)
            .item("object_id", s(batch))
            .item("status", s(COMMITTING))
            .item("owner", s(owner))
            .item("lease_until", n(now + self.lease.as_secs() as i64))
            .item("commit_plan", s(plan_json))
            .item("expires_at", n(now + (RETENTION_DAYS * 86_400) as i64))
            .send()
            .await
            .map_err(|e| self.error(&e))?;
        crate::fault::fault_point("after_batch_recorded");
        let updates = plan.objects.keys().map(|id| {
            self.transact_update(id)
                .update_expression("SET #status = :committing, batch_id = :batch")
                .condition_expression(
                    "#owner = :me AND (#status = :claimed \
                     OR (#status = :committing AND batch_id = :batch))",
                )
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":me", s(owner))
                .expression_attribute_values(":claimed", s(CLAIMED))
                .expression_attribute_values(":committing", s(COMMITTING))
                .expression_attribute_values(":batch", s(batch))
        });
        self.transact(batch, updates).await
    }

    /// Marks the objects of a finished batch DONE with their reports, in transactions; an
    /// object some other attempt marked already (a concurrent resume) is left as it is.
    pub async fn batch_objects_done(
        &self,
        batch: &str,
        reports: &[(String, serde_json::Value)],
    ) -> Result<(), LedgerError> {
        let now = now_secs();
        let update = |id: &str, report: &serde_json::Value| {
            self.transact_update(id)
                .update_expression(
                    "SET #status = :done, object_report = :report, lease_until = :zero, \
                     done_at = :now REMOVE batch_id, replace_tables",
                )
                .condition_expression("#status = :committing AND batch_id = :batch")
                .expression_attribute_values(":done", s(DONE))
                .expression_attribute_values(":report", s(report.to_string()))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":committing", s(COMMITTING))
                .expression_attribute_values(":batch", s(batch))
        };
        for chunk in reports.chunks(MAX_BATCH_OBJECTS) {
            let updates = chunk.iter().map(|(id, report)| update(id, report));
            match self.transact(batch, updates).await {
                Ok(()) => {}
                Err(LedgerError::LostClaim { .. }) => {
                    // Some are DONE already: mark the others one by one.
                    for (id, report) in chunk {
                        let single = update(id, report).build().expect("key and expression set");
                        let result = self
                            .client
                            .update_item()
                            .table_name(single.table_name())
                            .set_key(Some(single.key().clone()))
                            .update_expression(single.update_expression())
                            .set_condition_expression(
                                single.condition_expression().map(str::to_string),
                            )
                            .set_expression_attribute_names(
                                single.expression_attribute_names().cloned(),
                            )
                            .set_expression_attribute_values(
                                single.expression_attribute_values().cloned(),
                            )
                            .send()
                            .await;
                        match result {
                            Ok(_) => {}
                            Err(SdkError::ServiceError(e))
                                if e.err().is_conditional_check_failed_exception() => {}
                            Err(e) => return Err(self.error(&e)),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Marks a batch finished (its objects are DONE); a resume that finds it so only marks
    /// the objects still left.
    pub async fn batch_done(&self, batch: &str, owner: &str) -> Result<(), LedgerError> {
        self.update_owned(
            batch,
            owner,
            "SET #status = :status, lease_until = :zero",
            vec![(":status", s(DONE)), (":zero", n(0))],
        )
        .await
    }

    /// Claims a batch whose invocation died while committing (its lease expired), to finish
    /// its plan.
    pub async fn claim_batch(&self, batch: &str, owner: &str) -> Result<BatchClaim, LedgerError> {
        let now = now_secs();
        let result = self
            .claim_request(batch, owner, now)
            .update_expression(CLAIM_SET)
            .condition_expression(
                "attribute_exists(object_id) AND lease_until < :now AND #status = :committing",
            )
            .expression_attribute_values(":committing", s(COMMITTING))
            .send()
            .await;
        let item = match result {
            Ok(out) => {
                return Ok(BatchClaim::Resume(plan_of(
                    batch,
                    &out.attributes.unwrap_or_default(),
                )?))
            }
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                self.item_after_refusal(batch, e.err()).await?
            }
            Err(e) => return Err(self.error(&e)),
        };
        if item.is_empty() {
            return Err(LedgerError::Malformed {
                id: batch.to_string(),
                detail: "objects are bound to a batch that has no item".into(),
            });
        }
        match text(&item, "status") {
            Some(DONE) => Ok(BatchClaim::Done(plan_of(batch, &item)?)),
            // A retry of a claim that had succeeded.
            _ if text(&item, "owner") == Some(owner) => {
                Ok(BatchClaim::Resume(plan_of(batch, &item)?))
            }
            _ => Ok(BatchClaim::Busy {
                owner: text(&item, "owner").unwrap_or_default().to_string(),
                lease_seconds_left: (number(&item, "lease_until").unwrap_or(0) - now).max(0),
            }),
        }
    }

    /// One conditional update of a transaction, on the item `id`.
    fn transact_update(&self, id: &str) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        Update::builder()
            .table_name(&self.table)
            .key("object_id", s(id))
            .expression_attribute_names("#status", "status")
    }

    /// Runs `updates` as one transaction; a failed condition anywhere is `LostClaim`.
    async fn transact(
        &self,
        batch: &str,
        updates: impl Iterator<Item = aws_sdk_dynamodb::types::builders::UpdateBuilder>,
    ) -> Result<(), LedgerError> {
        let items: Vec<TransactWriteItem> = updates
            .map(|u| {
                TransactWriteItem::builder()
                    .update(u.build().expect("key and expression set"))
                    .build()
            })
            .collect();
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if condition_failed(e.err()) => {
                Err(LedgerError::LostClaim {
                    id: batch.to_string(),
                })
            }
            Err(e) => Err(self.error(&e)),
        }
    }

    /// Records progress: the plan with more tables committed (or streams staged again).
    pub async fn progress(
        &self,
        id: &str,
        owner: &str,
        plan: &CommitPlan,
    ) -> Result<(), LedgerError> {
        let plan_json = serde_json::to_string(plan).expect("plans serialize");
        self.update_owned(
            id,
            owner,
            "SET commit_plan = :plan",
            vec![(":plan", s(plan_json))],
        )
        .await
    }

    /// Marks the object done with its report; releases the lease and forgets the plan and
    /// any replace intent (fulfilled now).
    pub async fn done(
        &self,
        id: &str,
        owner: &str,
        report: &serde_json::Value,
    ) -> Result<(), LedgerError> {
        self.update_owned(
            id,
            owner,
            "SET #status = :status, object_report = :report, lease_until = :zero, done_at = :now \
             REMOVE commit_plan, replace_tables",
            vec![
                (":status", s(DONE)),
                (":report", s(report.to_string())),
                (":zero", n(0)),
                (":now", n(now_secs())),
            ],
        )
        .await
    }

    /// A forced replay that must not happen (the object is gone or empty now): DONE again
    /// with the earlier report, so the rows it describes stay.
    pub async fn keep_done(&self, id: &str, owner: &str) -> Result<(), LedgerError> {
        self.update_owned(
            id,
            owner,
            "SET #status = :status, lease_until = :zero REMOVE commit_plan, replace_tables",
            vec![(":status", s(DONE)), (":zero", n(0))],
        )
        .await
    }

    /// Gives the claim up early (a failed attempt), so a retry need not wait for the lease.
    pub async fn release(&self, id: &str, owner: &str) -> Result<(), LedgerError> {
        self.update_owned(id, owner, "SET lease_until = :zero", vec![(":zero", n(0))])
            .await
    }

    /// An update that only applies while `owner` still holds the claim.
    async fn update_owned(
        &self,
        id: &str,
        owner: &str,
        expression: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<(), LedgerError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("object_id", s(id))
            .update_expression(expression)
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", s(owner));
        if expression.contains("#status") {
            request = request.expression_attribute_names("#status", "status");
        }
        for (k, v) in values {
            request = request.expression_attribute_values(k, v);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Err(LedgerError::LostClaim { id: id.to_string() })
            }
            Err(e) => Err(self.error(&e)),
        }
    }

    /// Whether the object is DONE (for replay's skip of already-ingested objects).
    pub async fn is_done(&self, id: &str) -> Result<bool, LedgerError> {
        Ok(self
            .get(id)
            .await?
            .is_some_and(|item| text(&item, "status") == Some(DONE)))
    }
}

/// What a successful claim took over, from the item as it was before.
fn claimed(id: &str, before: &Item) -> Result<Claim, LedgerError> {
    match text(before, "status") {
        None | Some(CLAIMED) => Ok(Claim::Fresh {
            replace_tables: replace_of(id, before)?,
        }),
        Some(COMMITTING) => Ok(Claim::InBatch(
            text(before, "batch_id")
                .ok_or_else(|| LedgerError::Malformed {
                    id: id.to_string(),
                    detail: "COMMITTING without a batch".into(),
                })?
                .to_string(),
        )),
        Some(other) => Err(LedgerError::Malformed {
            id: id.to_string(),
            detail: format!("claimed an item in status {other}"),
        }),
    }
}

/// Why a claim's condition failed, from the item as it is now.
fn refused(id: &str, owner: &str, now: i64, item: &Item) -> Result<Claim, LedgerError> {
    // An SDK retry of a claim that succeeded (its response was lost) fails its own
    // condition: the item is already ours, in the state our claim left it.
    if text(item, "owner") == Some(owner) && text(item, "status") != Some(DONE) {
        tracing::info!(id, "the claim had succeeded before its retry: it is ours");
        return claimed(id, item);
    }
    if text(item, "status") == Some(DONE) {
        return Ok(Claim::Done(report_of(item)));
    }
    Ok(Claim::Busy {
        owner: text(item, "owner").unwrap_or_default().to_string(),
        lease_seconds_left: (number(item, "lease_until").unwrap_or(0) - now).max(0),
    })
}

fn plan_of(id: &str, item: &Item) -> Result<CommitPlan, LedgerError> {
    let text = text(item, "commit_plan").ok_or_else(|| LedgerError::Malformed {
        id: id.to_string(),
        detail: "COMMITTING without a plan".into(),
    })?;
    serde_json::from_str(text).map_err(|e| LedgerError::Malformed {
        id: id.to_string(),
        detail: e.to_string(),
    })
}

/// Whether a transaction was cancelled because a condition failed (rather than by a
/// conflict or throttling, which a retry can get past).
fn condition_failed(
    e: &aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
) -> bool {
    match e {
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => c
            .cancellation_reasons()
            .iter()
            .any(|r| r.code() == Some("ConditionalCheckFailed")),
        _ => false,
    }
}

/// The item as it was when a condition failed (ReturnValuesOnConditionCheckFailure).
fn failed_item(e: &aws_sdk_dynamodb::operation::update_item::UpdateItemError) -> Option<Item> {
    match e {
        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
            c,
        ) => c.item.clone(),
        _ => None,
    }
}

fn report_of(item: &Item) -> serde_json::Value {
    text(item, "object_report")
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The replace intent a forced replay recorded on the item, if any.
fn replace_of(id: &str, item: &Item) -> Result<Option<Replace>, LedgerError> {
    text(item, "replace_tables")
        .map(|t| {
            serde_json::from_str(t).map_err(|e| LedgerError::Malformed {
                id: id.to_string(),
                detail: format!("replace_tables: {e}"),
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, &str)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| {
                let value = if *k == "lease_until" { n(v) } else { s(*v) };
                (k.to_string(), value)
            })
            .collect()
    }

    #[test]
    fn a_retried_claim_that_had_succeeded_is_recognised_as_ours() {
        let replace = r#"{"cf_20260301":{"first":20513,"last":20513}}"#;
        let ours = item(&[
            ("owner", "me"),
            ("status", "CLAIMED"),
            ("lease_until", "2000"),
            ("replace_tables", replace),
        ]);
        let Claim::Fresh { replace_tables } = refused("id", "me", 1000, &ours).unwrap() else {
            panic!("our own claim must not come back as busy");
        };
        assert_eq!(
            replace_tables.unwrap().keys().collect::<Vec<_>>(),
            ["cf_20260301"],
            "the forced replay's intent comes with it"
        );
        let committing = item(&[
            ("owner", "me"),
            ("status", "COMMITTING"),
            ("batch_id", "batch#me"),
        ]);
        assert_eq!(
            refused("id", "me", 1000, &committing).unwrap(),
            Claim::InBatch("batch#me".into())
        );
    }

    #[test]
    fn someone_elses_live_claim_is_busy_and_done_is_done() {
        let theirs = item(&[
            ("owner", "them"),
            ("status", "CLAIMED"),
            ("lease_until", "1030"),
        ]);
        assert_eq!(
            refused("id", "me", 1000, &theirs).unwrap(),
            Claim::Busy {
                owner: "them".into(),
                lease_seconds_left: 30
            }
        );
        let done = item(&[("owner", "me"), ("status", "DONE"), ("object_report", "{}")]);
        assert!(matches!(
            refused("id", "me", 1000, &done).unwrap(),
            Claim::Done(_)
        ));
    }

    #[test]
    fn a_plan_names_several_streams_per_table_and_reads_older_single_stream_plans() {
        let older = r#"{"ingest_micros":1,"streams":{"t":"s1"},"rows":{"t":3},"committed":[],"objects":{}}"#;
        let plan = plan_of("batch", &item(&[("commit_plan", older)])).unwrap();
        assert_eq!(plan.streams["t"], ["s1"]);

        let mut spread = plan.clone();
        spread
            .streams
            .insert("t".into(), vec!["s1".into(), "s2".into()]);
        let text = serde_json::to_string(&spread).unwrap();
        let read = plan_of("batch", &item(&[("commit_plan", &text)])).unwrap();
        assert_eq!(read, spread);
    }
}
