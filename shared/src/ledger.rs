//! The exactly-once ledger: one DynamoDB item per object version, moved through
//! CLAIMED → COMMITTING → DONE with conditional writes.
//!
//! * **CLAIMED** (with a lease): an invocation is reading and appending to PENDING streams.
//!   Nothing is visible yet; if it dies, the lease expires and the next attempt starts over
//!   (the dead attempt's streams are never committed, so BigQuery discards them).
//! * **COMMITTING**: every stream is finalized and recorded here, with the attempt's
//!   `ingest_time`, before the first commit. A retry after a crash in this state does not
//!   re-read the object: it finishes committing the recorded streams. Whether a table was
//!   committed before the crash is decided by the data itself (rows of this object stamped
//!   with this attempt's `ingest_time`), not by error codes that differ between services.
//! * **DONE**: rows per table and rejected lines. A redelivery is acknowledged without writing.
//!
//! A forced replay claims a DONE item again; after committing the new rows, the object's
//! older rows are deleted, so the table converges to exactly one copy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use crate::bigquery::auth::aws_error;
use crate::event::ObjectRef;

/// Ledger items outlive any realistic replay window, then expire (DynamoDB TTL).
const RETENTION_DAYS: u64 = 400;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger table {table}: {detail}")]
    Dynamo { table: String, detail: String },
    #[error("ledger item {id} is malformed: {detail}")]
    Malformed { id: String, detail: String },
    #[error("lost the claim on {id}: another invocation took it over")]
    LostClaim { id: String },
}

/// What an attempt recorded before committing: enough to finish without re-reading.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitPlan {
    /// The `ingest_time` (µs) stamped on every row of this attempt.
    pub ingest_micros: i64,
    /// Table → finalized PENDING stream.
    pub streams: BTreeMap<String, String>,
    /// Table → rows in its stream.
    pub rows: BTreeMap<String, u64>,
    /// Tables whose stream is known committed.
    pub committed: BTreeSet<String>,
    /// A forced replay: after committing, delete the object's rows older than this attempt
    /// from these tables.
    pub replace_tables: Option<BTreeSet<String>>,
    /// The attempt's report, returned when the object is done.
    pub report: serde_json::Value,
}

/// The outcome of claiming an object.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Ours to ingest. `replace_tables`: a forced replay of these previously loaded tables.
    Fresh {
        replace_tables: Option<BTreeSet<String>>,
    },
    /// A previous attempt died while committing: finish its plan.
    Resume(CommitPlan),
    /// Already ingested: the report recorded then.
    Done(serde_json::Value),
    /// Another invocation holds a live lease: retry later.
    Busy {
        owner: String,
        lease_seconds_left: i64,
    },
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

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn now_secs() -> i64 {
    crate::ingest::now_micros() / 1_000_000
}

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

    /// The ledger key of an object version: bucket, key and version id or ETag.
    pub fn object_id(object: &ObjectRef) -> String {
        let version = object
            .version_id
            .as_deref()
            .or(object.etag.as_deref())
            .unwrap_or("unversioned");
        format!("s3://{}/{}#{}", object.bucket, object.key, version)
    }

    fn error<E: std::error::Error + 'static>(&self, e: &E) -> LedgerError {
        LedgerError::Dynamo {
            table: self.table.clone(),
            detail: aws_error(e),
        }
    }

    /// Claims `id` for `owner`: a new object, an expired lease, or (with `force`) a DONE one.
    pub async fn claim(&self, id: &str, owner: &str, force: bool) -> Result<Claim, LedgerError> {
        let now = now_secs();
        let condition = if force {
            "attribute_not_exists(object_id) OR lease_until < :now"
        } else {
            "attribute_not_exists(object_id) OR (lease_until < :now AND #status <> :done)"
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("object_id", s(id))
            .update_expression(
                "SET #owner = :owner, lease_until = :until, attempts = if_not_exists(attempts, :zero) + :one, \
                 claimed_at = :now, expires_at = :expires, #status = if_not_exists(#status, :claimed)",
            )
            .condition_expression(condition)
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":until", n(now + self.lease.as_secs() as i64))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":claimed", s(CLAIMED))
            .expression_attribute_values(":expires", n(now + (RETENTION_DAYS * 86_400) as i64))
            .return_values(ReturnValue::AllOld);
        if !force {
            request = request.expression_attribute_values(":done", s(DONE));
        }
        let result = request.send().await;
        match result {
            Ok(out) => {
                let old = out.attributes.unwrap_or_default();
                let status = old
                    .get("status")
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str);
                match status {
                    None | Some(CLAIMED) => Ok(Claim::Fresh {
                        replace_tables: None,
                    }),
                    Some(COMMITTING) => Ok(Claim::Resume(self.plan_of(id, &old)?)),
                    Some(DONE) => {
                        // Forced replay: the tables the earlier load wrote get their old rows
                        // of this object replaced.
                        let report = report_of(&old);
                        let tables = report["tables"]
                            .as_object()
                            .map(|t| t.keys().cloned().collect())
                            .unwrap_or_default();
                        self.set_status(id, owner, CLAIMED).await?;
                        Ok(Claim::Fresh {
                            replace_tables: Some(tables),
                        })
                    }
                    Some(other) => Err(LedgerError::Malformed {
                        id: id.to_string(),
                        detail: format!("unknown status {other}"),
                    }),
                }
            }
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let item = self.get(id).await?.unwrap_or_default();
                let status = item
                    .get("status")
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default();
                if status == DONE {
                    return Ok(Claim::Done(report_of(&item)));
                }
                let lease_until = item
                    .get("lease_until")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0);
                Ok(Claim::Busy {
                    owner: item
                        .get("owner")
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .unwrap_or_default(),
                    lease_seconds_left: (lease_until - now).max(0),
                })
            }
            Err(e) => Err(self.error(&e)),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<HashMap<String, AttributeValue>>, LedgerError> {
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

    fn plan_of(
        &self,
        id: &str,
        item: &HashMap<String, AttributeValue>,
    ) -> Result<CommitPlan, LedgerError> {
        let text = item
            .get("commit_plan")
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| LedgerError::Malformed {
                id: id.to_string(),
                detail: "COMMITTING without a plan".into(),
            })?;
        serde_json::from_str(text).map_err(|e| LedgerError::Malformed {
            id: id.to_string(),
            detail: e.to_string(),
        })
    }

    async fn set_status(&self, id: &str, owner: &str, status: &str) -> Result<(), LedgerError> {
        self.update_owned(
            id,
            owner,
            "SET #status = :status",
            vec![(":status", s(status))],
        )
        .await
    }

    /// Records the plan (all streams finalized) before the first commit.
    pub async fn committing(
        &self,
        id: &str,
        owner: &str,
        plan: &CommitPlan,
    ) -> Result<(), LedgerError> {
        let plan_json = serde_json::to_string(plan).expect("plans serialize");
        self.update_owned(
            id,
            owner,
            "SET #status = :status, commit_plan = :plan",
            vec![(":status", s(COMMITTING)), (":plan", s(plan_json))],
        )
        .await
    }

    /// Records progress: the plan with more tables committed.
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

    /// Marks the object done with its report; releases the lease.
    pub async fn done(
        &self,
        id: &str,
        owner: &str,
        report: &serde_json::Value,
    ) -> Result<(), LedgerError> {
        self.update_owned(
            id,
            owner,
            "SET #status = :status, object_report = :report, lease_until = :zero, done_at = :now REMOVE commit_plan",
            vec![
                (":status", s(DONE)),
                (":report", s(report.to_string())),
                (":zero", n(0)),
                (":now", n(now_secs())),
            ],
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

    /// Whether each object is DONE (for replay's skip of already-ingested objects).
    pub async fn is_done(&self, id: &str) -> Result<bool, LedgerError> {
        Ok(self
            .get(id)
            .await?
            .and_then(|item| item.get("status").and_then(|v| v.as_s().ok()).cloned())
            .as_deref()
            == Some(DONE))
    }
}

fn report_of(item: &HashMap<String, AttributeValue>) -> serde_json::Value {
    item.get("object_report")
        .and_then(|v| v.as_s().ok())
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(serde_json::Value::Null)
}
