//! The ingest Lambda: S3 notifications (via SQS, SNS, EventBridge or direct) → BigQuery.
//!
//! `ingest --poll-queue URL` runs the same handler off a real SQS queue, the way Lambda's
//! event source mapping would (local stack, demo, tests); `ingest --invoke FILE` runs it once
//! on an event and prints the response.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use shared::{event, sqs, Config, Ingestor};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::allocator::keep_freed_memory();
    shared::telemetry::init();
    let config = Config::from_env()?;
    let aws = shared::aws::load().await;
    let ingestor = Arc::new(Ingestor::from_config(&config, &aws).await?);

    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--poll-queue") {
        let queue_url = args.get(i + 1).ok_or("--poll-queue needs a queue URL")?;
        let sqs_client = aws_sdk_sqs::Client::new(&aws);
        let (invocation, reserve) = (config.poll_invocation, config.deadline_reserve);
        let stats = sqs::poll_queue(&sqs_client, queue_url, 3, |payload| {
            let ingestor = ingestor.clone();
            let deadline = sqs::Deadline {
                at: Instant::now() + invocation,
                reserve,
            };
            async move {
                handle(&ingestor, payload, deadline)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await?;
        eprintln!(
            "ingest: {} message(s) processed, {} failed attempt(s)",
            stats.processed, stats.failed
        );
        return Ok(());
    }
    let reserve = config.deadline_reserve;
    // One invocation of the handler on an event read from a file (`-`: stdin), the batch
    // response printed: what the Lambda runtime would do with one event (tests, chaos runs).
    if let Some(i) = args.iter().position(|a| a == "--invoke") {
        let path = args
            .get(i + 1)
            .ok_or("--invoke needs an event file (or -)")?;
        let text = if path == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?
        };
        let deadline = sqs::Deadline {
            at: Instant::now() + config.poll_invocation,
            reserve: config.deadline_reserve,
        };
        let response = handle(&ingestor, serde_json::from_str(&text)?, deadline).await?;
        println!("{response}");
        return Ok(());
    }
    lambda_runtime::run(service_fn(|e: LambdaEvent<Value>| {
        let ingestor = ingestor.clone();
        let deadline = sqs::Deadline {
            at: instant_of(e.context.deadline),
            reserve,
        };
        async move { handle(&ingestor, e.payload, deadline).await }
    }))
    .await
}

/// SQS batches get a partial-failure response; any other shape is processed whole and
/// fails the invocation on error (so Lambda's own retry applies).
async fn handle(
    ingestor: &Ingestor,
    payload: Value,
    deadline: sqs::Deadline,
) -> Result<Value, Error> {
    let response = handle_event(ingestor, payload, deadline).await;
    shared::metrics::calls(&shared::calls::take());
    response
}

async fn handle_event(
    ingestor: &Ingestor,
    payload: Value,
    deadline: sqs::Deadline,
) -> Result<Value, Error> {
    let is_sqs = payload["Records"][0]["eventSource"] == "aws:sqs";
    if is_sqs {
        let batch: SqsEvent = serde_json::from_value(payload)?;
        let messages: Vec<(String, String)> = batch
            .records
            .into_iter()
            .map(|m| (m.message_id.unwrap_or_default(), m.body.unwrap_or_default()))
            .collect();
        let (failed, _) = sqs::process_batch(ingestor, &messages, Some(deadline)).await;
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failed
            .into_iter()
            .map(|id| {
                let mut f = BatchItemFailure::default();
                f.item_identifier = id;
                f
            })
            .collect();
        return Ok(serde_json::to_value(response)?);
    }
    let body = serde_json::to_string(&event::decode_value(&payload).map(|_| &payload)?)?;
    let reports = shared::retry::within(
        deadline.at,
        sqs::process_message(ingestor, &body, Some(deadline)),
    )
    .await?;
    Ok(serde_json::to_value(reports)?)
}

/// Lambda's deadline (milliseconds since the epoch) as an `Instant`.
fn instant_of(deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}
