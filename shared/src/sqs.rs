//! SQS batches: each message's objects through [`Ingestor::ingest_with`], failures reported
//! per message (partial batch failure) so only those are retried and, after the queue's
//! maxReceiveCount, dead-lettered. No object starts close to the invocation's deadline: the
//! messages not started are reported failed, so a timeout never returns the whole batch
//! (which would grow every message's receive count, healthy neighbours included).
//!
//! Also a local event loop that receives from a real queue and drives the same Lambda
//! handler as the Lambda runtime would, for the demo and integration tests.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tracing::Instrument;

use crate::bigquery::auth::aws_error;
use crate::event::{decode_body, Notification};
use crate::ingest::{IngestError, Ingestor, ObjectReport};
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

/// Processes one SQS message body: every object it announces. `Ok` means the message can
/// be deleted (done, skipped, or nothing to do); `Err` means it must be retried.
pub async fn process_message(
    ingestor: &Ingestor,
    body: &str,
    deadline: Option<Deadline>,
) -> Result<Vec<ObjectReport>, MessageError> {
    match decode_body(body).map_err(MessageError::Event)? {
        Notification::TestEvent => {
            tracing::info!("s3:TestEvent acknowledged");
            Ok(Vec::new())
        }
        Notification::Ignored(why) => {
            tracing::info!(%why, "notification ignored");
            Ok(Vec::new())
        }
        Notification::Objects { objects, force } => {
            let mut reports = Vec::with_capacity(objects.len());
            for object in objects {
                if let Some(deadline) = deadline {
                    deadline.check()?;
                }
                let report = ingestor
                    .ingest_with(&LogObject::S3(object), force)
                    .await
                    .map_err(MessageError::Ingest)?;
                reports.push(report);
            }
            Ok(reports)
        }
    }
}

/// Processes a batch; returns the message ids that failed and must be retried, and the
/// reports of the objects done.
pub async fn process_batch(
    ingestor: &Ingestor,
    messages: &[(String, String)],
    deadline: Option<Deadline>,
) -> (Vec<String>, Vec<ObjectReport>) {
    dispatch(messages, deadline, |body| {
        process_message(ingestor, body, deadline)
    })
    .await
}

/// The batch loop, apart from what a message does (unit-tested without AWS).
async fn dispatch<'a, F, Fut>(
    messages: &'a [(String, String)],
    deadline: Option<Deadline>,
    mut process: F,
) -> (Vec<String>, Vec<ObjectReport>)
where
    F: FnMut(&'a str) -> Fut,
    Fut: Future<Output = Result<Vec<ObjectReport>, MessageError>>,
{
    let mut failed = Vec::new();
    let mut reports = Vec::new();
    for (message_id, body) in messages {
        let span = tracing::info_span!("message", message_id = %message_id);
        let result = match deadline.map(|d| d.check()).transpose() {
            Err(e) => Err(e),
            Ok(_) => match deadline {
                Some(d) => {
                    crate::retry::within(d.at, process(body))
                        .instrument(span.clone())
                        .await
                }
                None => process(body).instrument(span.clone()).await,
            },
        };
        match result {
            Ok(r) => {
                r.iter().for_each(crate::metrics::object);
                reports.extend(r);
            }
            Err(e) => {
                let _entered = span.enter();
                tracing::error!(error = %e, retryable = e.is_transient(), "message failed; it will be retried");
                crate::metrics::object_failed(&e.to_string());
                failed.push(message_id.clone());
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
    use std::cell::RefCell;

    fn batch(n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("m{i}"), format!("body{i}")))
            .collect()
    }

    #[tokio::test]
    async fn near_the_deadline_no_message_starts_and_each_is_reported_failed() {
        let started = RefCell::new(Vec::new());
        let messages = batch(3);
        let deadline = Deadline {
            at: Instant::now() + Duration::from_millis(200),
            reserve: Duration::from_millis(100),
        };
        let (failed, _) = dispatch(&messages, Some(deadline), |body| {
            started.borrow_mut().push(body.to_string());
            async {
                // The first message uses up the time the others would need.
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok(Vec::new())
            }
        })
        .await;
        assert_eq!(*started.borrow(), vec!["body0"]);
        assert_eq!(failed, vec!["m1", "m2"]);
    }

    #[tokio::test]
    async fn without_a_deadline_every_message_runs_and_failures_are_per_message() {
        let messages = batch(3);
        let (failed, _) = dispatch(&messages, None, |body| async move {
            if body == "body1" {
                Err(MessageError::Deadline(Duration::ZERO))
            } else {
                Ok(Vec::new())
            }
        })
        .await;
        assert_eq!(failed, vec!["m1"]);
    }
}
