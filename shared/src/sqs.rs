//! SQS batches: the objects of all the messages ingested together through
//! [`Ingestor::ingest_batch`] (one stream per table for the whole batch), failures reported
//! per message (partial batch failure) so only those are retried and, after the queue's
//! maxReceiveCount, dead-lettered. No batch starts close to the invocation's deadline: the
//! messages not started are reported failed, so a timeout never returns the whole batch
//! (which would grow every message's receive count, healthy neighbours included).
//!
//! Also a local event loop that receives from a real queue and drives the same Lambda
//! handler as the Lambda runtime would, for the demo and integration tests.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bigquery::auth::aws_error;
use crate::event::{decode_body, Notification};
use crate::ingest::{BatchItem, IngestError, Ingestor, ObjectReport};
use crate::ledger::MAX_BATCH_OBJECTS;
use crate::retry::Transient;
use crate::source::LogObject;

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("undecodable message: {0}")]
    Event(crate::event::EventError),
    #[error(transparent)]
    Ingest(IngestError),
    #[error("not started: {0:?} left before the invocation's deadline")]
    Deadline(Duration),
}

impl Transient for MessageError {
    fn is_transient(&self) -> bool {
        match self {
            MessageError::Event(_) => false,
            MessageError::Ingest(e) => e.is_transient(),
            MessageError::Deadline(_) => true,
        }
    }
}

/// When the invocation must answer, and how much of it to keep free: no object starts with
/// less than `reserve` left.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub reserve: Duration,
}

impl Deadline {
    /// Time left if it is enough to start another object.
    fn check(&self) -> Result<(), MessageError> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left < self.reserve {
            Err(MessageError::Deadline(left))
        } else {
            Ok(())
        }
    }
}

/// What a message asks for: the objects it announces (none for a test event).
fn decode(body: &str) -> Result<Vec<BatchItem>, MessageError> {
    match decode_body(body).map_err(MessageError::Event)? {
        Notification::TestEvent => {
            tracing::info!("s3:TestEvent acknowledged");
            Ok(Vec::new())
        }
        Notification::Ignored(why) => {
            tracing::info!(%why, "notification ignored");
            Ok(Vec::new())
        }
        Notification::Objects { objects, force } => Ok(objects
            .into_iter()
            .map(|object| BatchItem {
                object: LogObject::S3(object),
                force,
            })
            .collect()),
    }
}

/// Processes one message body outside an SQS batch (SNS, EventBridge or direct shapes):
/// every object it announces, as one batch. `Err`: it must be retried.
pub async fn process_message(
    ingestor: &Ingestor,
    body: &str,
    deadline: Option<Deadline>,
) -> Result<Vec<ObjectReport>, MessageError> {
    if let Some(deadline) = deadline {
        deadline.check()?;
    }
    let items = decode(body)?;
    ingestor
        .ingest_batch(&items)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(MessageError::Ingest)
}

/// Processes a batch: the objects of all its messages ingested as batches sharing their
/// streams. Returns the message ids that failed and must be retried, and the reports of
/// the objects done.
pub async fn process_batch(
    ingestor: &Ingestor,
    messages: &[(String, String)],
    deadline: Option<Deadline>,
) -> (Vec<String>, Vec<ObjectReport>) {
    dispatch(messages, deadline, MAX_BATCH_OBJECTS, |items| async move {
        ingestor.ingest_batch(&items).await
    })
    .await
}

/// The batch loop, apart from what ingesting does (unit-tested without AWS): messages are
/// decoded, grouped into batches of at most `max_objects` objects (a message is never
/// split), and a batch starts only while the deadline leaves enough time.
async fn dispatch<F, Fut>(
    messages: &[(String, String)],
    deadline: Option<Deadline>,
    max_objects: usize,
    mut ingest: F,
) -> (Vec<String>, Vec<ObjectReport>)
where
    F: FnMut(Vec<BatchItem>) -> Fut,
    Fut: Future<Output = Vec<Result<ObjectReport, IngestError>>>,
{
    let mut failed = Vec::new();
    let mut reports = Vec::new();
    let fail = |failed: &mut Vec<String>, message_id: &str, e: &MessageError| {
        let span = tracing::info_span!("message", message_id = %message_id);
        let _entered = span.enter();
        tracing::error!(error = %e, retryable = e.is_transient(), "message failed; it will be retried");
        crate::metrics::object_failed(&e.to_string());
        failed.push(message_id.to_string());
    };

    // Decode every message; the undecodable fail alone.
    let mut decoded: Vec<(&str, Vec<BatchItem>)> = Vec::new();
    for (message_id, body) in messages {
        match decode(body) {
            Ok(items) => decoded.push((message_id, items)),
            Err(e) => fail(&mut failed, message_id, &e),
        }
    }

    let mut rest = decoded.as_slice();
    while !rest.is_empty() {
        let mut take = 1;
        let mut objects = rest[0].1.len();
        while take < rest.len() && objects + rest[take].1.len() <= max_objects {
            objects += rest[take].1.len();
            take += 1;
        }
        let (batch, later) = rest.split_at(take);
        rest = later;
        if let Some(Err(e)) = deadline.map(|d| d.check()) {
            for (message_id, _) in batch.iter().chain(rest) {
                fail(&mut failed, message_id, &e);
            }
            break;
        }
        let items: Vec<BatchItem> = batch.iter().flat_map(|(_, items)| items.clone()).collect();
        let mut results = match deadline {
            Some(d) => crate::retry::within(d.at, ingest(items)).await,
            None => ingest(items).await,
        }
        .into_iter();
        for (message_id, items) in batch {
            let mut error = None;
            for result in results.by_ref().take(items.len()) {
                match result {
                    Ok(report) => {
                        crate::metrics::object(&report);
                        reports.push(report);
                    }
                    Err(e) => error = error.or(Some(e)),
                }
            }
            if let Some(e) = error {
                fail(&mut failed, message_id, &MessageError::Ingest(e));
            }
        }
    }
    (failed, reports)
}

/// Receives from `queue_url` and calls `handler` with SQS-event-shaped payloads, deleting
/// the messages it did not report as failed — what Lambda's event source mapping does.
/// Stops after `idle_polls` empty receives in a row.
pub async fn poll_queue<F, Fut>(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    idle_polls: u32,
    mut handler: F,
) -> Result<PollStats, String>
where
    F: FnMut(Value) -> Fut,
    Fut: Future<Output = Result<Value, String>>,
{
    let mut stats = PollStats::default();
    let mut idle = 0;
    while idle < idle_polls {
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .send()
            .await
            .map_err(|e| format!("receiving from {queue_url}: {}", aws_error(&e)))?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            idle += 1;
            continue;
        }
        idle = 0;
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": {},
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": queue_url,
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        let response = handler(json!({ "Records": records })).await?;
        let failed: Vec<&str> = response["batchItemFailures"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["itemIdentifier"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        for m in &messages {
            if failed.contains(&m.message_id().unwrap_or_default()) {
                stats.failed += 1;
                // Make it visible again soon (Lambda would wait for the visibility timeout).
                let _ = sqs
                    .change_message_visibility()
                    .queue_url(queue_url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .visibility_timeout(1)
                    .send()
                    .await;
                continue;
            }
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .map_err(|e| format!("deleting a message from {queue_url}: {}", aws_error(&e)))?;
            stats.processed += 1;
        }
        if !failed.is_empty() {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    }
    Ok(stats)
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PollStats {
    pub processed: u64,
    pub failed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{s3_notification, ObjectRef};
    use crate::ingest::Outcome;
    use std::cell::RefCell;

    fn object(key: &str) -> ObjectRef {
        ObjectRef {
            bucket: "logs".into(),
            key: key.into(),
            size: Some(10),
            etag: Some("e".into()),
            version_id: None,
        }
    }

    /// Messages `m0..`, each announcing one object `k0..`.
    fn messages(n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| {
                (
                    format!("m{i}"),
                    s3_notification(&object(&format!("k{i}")), "ObjectCreated:Put").to_string(),
                )
            })
            .collect()
    }

    fn key_of(item: &BatchItem) -> String {
        match &item.object {
            LogObject::S3(o) => o.key.clone(),
            LogObject::File(p) => p.display().to_string(),
        }
    }

    fn loaded(item: &BatchItem) -> Result<ObjectReport, IngestError> {
        Ok(ObjectReport::empty(item.object.uri(), Outcome::Loaded))
    }

    fn failure(item: &BatchItem) -> Result<ObjectReport, IngestError> {
        Err(IngestError::Busy {
            object: item.object.uri(),
            owner: "someone".into(),
            lease_seconds_left: 1,
        })
    }

    #[tokio::test]
    async fn the_objects_of_all_messages_are_ingested_as_one_batch() {
        let batches = RefCell::new(Vec::new());
        let (failed, reports) = dispatch(&messages(3), None, MAX_BATCH_OBJECTS, |items| {
            batches
                .borrow_mut()
                .push(items.iter().map(key_of).collect::<Vec<_>>());
            async move { items.iter().map(loaded).collect() }
        })
        .await;
        assert_eq!(*batches.borrow(), vec![vec!["k0", "k1", "k2"]]);
        assert!(failed.is_empty());
        assert_eq!(reports.len(), 3);
    }

    #[tokio::test]
    async fn batches_hold_at_most_max_objects_and_never_split_a_message() {
        let mut all = messages(3);
        let two = json!({"Records": [
            s3_notification(&object("a"), "ObjectCreated:Put")["Records"][0],
            s3_notification(&object("b"), "ObjectCreated:Put")["Records"][0],
        ]});
        all.insert(1, ("pair".into(), two.to_string()));
        let batches = RefCell::new(Vec::new());
        dispatch(&all, None, 2, |items| {
            batches
                .borrow_mut()
                .push(items.iter().map(key_of).collect::<Vec<_>>());
            async move { items.iter().map(loaded).collect() }
        })
        .await;
        assert_eq!(
            *batches.borrow(),
            vec![vec!["k0"], vec!["a", "b"], vec!["k1", "k2"]]
        );
    }

    #[tokio::test]
    async fn an_object_that_fails_fails_only_its_own_message() {
        let mut all = messages(3);
        all.push(("junk".into(), "not json".into()));
        let (failed, reports) = dispatch(&all, None, MAX_BATCH_OBJECTS, |items| async move {
            items
                .iter()
                .map(|i| {
                    if key_of(i) == "k1" {
                        failure(i)
                    } else {
                        loaded(i)
                    }
                })
                .collect()
        })
        .await;
        assert_eq!(failed, vec!["junk", "m1"]);
        assert_eq!(reports.len(), 2);
    }

    #[tokio::test]
    async fn near_the_deadline_no_batch_starts_and_each_message_is_reported_failed() {
        let started = RefCell::new(Vec::new());
        let deadline = Deadline {
            at: Instant::now() + Duration::from_millis(200),
            reserve: Duration::from_millis(100),
        };
        let (failed, _) = dispatch(&messages(3), Some(deadline), 1, |items| {
            started.borrow_mut().extend(items.iter().map(key_of));
            async move {
                // The first batch uses up the time the others would need.
                tokio::time::sleep(Duration::from_millis(150)).await;
                items.iter().map(loaded).collect()
            }
        })
        .await;
        assert_eq!(*started.borrow(), vec!["k0"]);
        assert_eq!(failed, vec!["m1", "m2"]);
    }
}
