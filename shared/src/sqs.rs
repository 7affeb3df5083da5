//! SQS batches: one message at a time through [`Ingestor::process_message`], failures
//! reported per message (partial batch failure) so only those are retried and, after the
//! queue's maxReceiveCount, dead-lettered.
//!
//! Also a local event loop that receives from a real queue and drives the same Lambda
//! handler as the Lambda runtime would, for the demo and integration tests.

use std::future::Future;
use std::time::Duration;

use serde_json::{json, Value};
use tracing::Instrument;

use crate::bigquery::auth::aws_error;
use crate::ingest::{Ingestor, ObjectReport};

/// The message ids of a batch that failed and must be retried.
pub async fn process_batch(
    ingestor: &Ingestor,
    messages: &[(String, String)],
) -> (Vec<String>, Vec<ObjectReport>) {
    let mut failed = Vec::new();
    let mut reports = Vec::new();
    for (message_id, body) in messages {
        let span = tracing::info_span!("message", message_id = %message_id);
        match ingestor.process_message(body).instrument(span).await {
            Ok(r) => {
                r.iter().for_each(crate::metrics::object);
                reports.extend(r);
            }
            Err(e) => {
                tracing::error!(error = %e, "message failed; it will be retried");
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
