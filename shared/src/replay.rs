//! Replay: put objects back on the ingest queue, through the same path as live traffic.
//!
//! Objects are chosen by prefix and by the UTC date-hour in CloudFront key names; objects
//! the ledger already has as DONE are skipped unless forced (a forced replay replaces the
//! object's earlier rows). Dead-lettered messages can be moved back to the queue.

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::bigquery::auth::aws_error;
use crate::event::{replay_notification, ObjectRef};
use crate::ledger::{object_id, Ledger};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Aws(String),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
}

/// Which objects to replay.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub bucket: String,
    pub prefix: String,
    /// Inclusive UTC date range (days since the epoch) on the key's date-hour.
    pub from: Option<i32>,
    pub to: Option<i32>,
}

/// The UTC date (days since the epoch) in a CloudFront key: the legacy file name
/// `…/<dist>.YYYY-MM-DD-HH.<id>.gz`, or a standard logging v2 partitioned path, plain
/// (`…/{DistributionId}/{yyyy}/{MM}/{dd}/{HH}/…`) or Hive-style
/// (`…/distributionid=…/year=…/month=…/day=…/hour=…/…`).
pub fn key_date(key: &str) -> Option<i32> {
    legacy_key_date(key).or_else(|| partitioned_key_date(key))
}

fn legacy_key_date(key: &str) -> Option<i32> {
    let name = key.rsplit('/').next()?;
    let mut parts = name.split('.');
    parts.next()?; // distribution id
    let date_hour = parts.next()?;
    if date_hour.len() != 13 || date_hour.as_bytes()[10] != b'-' {
        return None;
    }
    crate::cloudfront::parse::parse_date(&date_hour[..10])
}

/// The date of a v2 partitioned path: Hive-style `year=`/`month=`/`day=` segments, or else
/// the last run of `yyyy/MM/dd` segments among the folders (the file name is not a folder).
fn partitioned_key_date(key: &str) -> Option<i32> {
    let folders: Vec<&str> = key.split('/').collect();
    let folders = &folders[..folders.len().saturating_sub(1)];
    let hive = |name: &str| {
        folders.iter().rev().find_map(|f| {
            let (k, v) = f.split_once('=')?;
            k.eq_ignore_ascii_case(name).then_some(v)
        })
    };
    if let (Some(y), Some(m), Some(d)) = (hive("year"), hive("month"), hive("day")) {
        return ymd(y, m, d);
    }
    folders
        .windows(3)
        .rev()
        .find_map(|w| (w[0].len() == 4).then(|| ymd(w[0], w[1], w[2])).flatten())
}

fn ymd(y: &str, m: &str, d: &str) -> Option<i32> {
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    crate::cloudfront::parse::parse_date(&format!("{y}-{m}-{d}"))
}

impl Selection {
    pub fn matches(&self, key: &str) -> bool {
        if self.from.is_none() && self.to.is_none() {
            return true;
        }
        match key_date(key) {
            Some(d) => self.from.is_none_or(|f| d >= f) && self.to.is_none_or(|t| d <= t),
            None => false,
        }
    }
}

/// What a replay did (or, dry, would do).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReplaySummary {
    pub listed: u64,
    pub selected: u64,
    pub skipped_done: u64,
    pub sent: u64,
    pub failed: u64,
}

/// Lists the selected objects (ListObjectsV2, all pages); `progress` is called after each page
/// with the number of keys listed so far. Returns (listed, selected).
pub async fn list(
    s3: &aws_sdk_s3::Client,
    selection: &Selection,
    mut progress: impl FnMut(u64),
) -> Result<(u64, Vec<ObjectRef>), ReplayError> {
    let mut pages = s3
        .list_objects_v2()
        .bucket(&selection.bucket)
        .prefix(&selection.prefix)
        .into_paginator()
        .send();
    let mut listed = 0;
    let mut objects = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            ReplayError::Aws(format!(
                "listing s3://{}/{}: {}",
                selection.bucket,
                selection.prefix,
                aws_error(&e)
            ))
        })?;
        for object in page.contents() {
            listed += 1;
            let Some(key) = object.key() else { continue };
            if !crate::formats::is_log_key(key) || !selection.matches(key) {
                continue;
            }
            objects.push(ObjectRef {
                bucket: selection.bucket.clone(),
                key: key.to_string(),
                size: object.size().and_then(|s| u64::try_from(s).ok()),
                etag: object.e_tag().map(|t| t.trim_matches('"').to_string()),
                version_id: None,
            });
        }
        progress(listed);
    }
    Ok((listed, objects))
}

/// Drops objects the ledger has as DONE (unless `force`); returns the rest and how many were
/// skipped. `progress` is called after each ledger lookup with the number checked so far.
pub async fn without_done(
    ledger: &Ledger,
    objects: Vec<ObjectRef>,
    force: bool,
    mut progress: impl FnMut(u64),
) -> Result<(Vec<ObjectRef>, u64), ReplayError> {
    if force {
        return Ok((objects, 0));
    }
    let mut keep = Vec::with_capacity(objects.len());
    let mut skipped = 0;
    for (checked, object) in (1..).zip(objects) {
        let etag = object.etag.as_deref().unwrap_or_default();
        if ledger
            .is_done(&object_id(&object.bucket, &object.key, etag))
            .await?
        {
            skipped += 1;
        } else {
            keep.push(object);
        }
        progress(checked);
    }
    Ok((keep, skipped))
}

/// Sends S3-notification-shaped messages for `objects`, ten per batch; `progress` is called
/// after each batch with the number sent so far. Returns (sent, failed).
pub async fn send(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    objects: &[ObjectRef],
    force: bool,
    mut progress: impl FnMut(u64),
) -> Result<(u64, u64), ReplayError> {
    let (mut sent, mut failed) = (0, 0);
    for batch in objects.chunks(10) {
        let entries = batch
            .iter()
            .enumerate()
            .map(|(i, o)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(replay_notification(o, force).to_string())
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let out = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| ReplayError::Aws(format!("sending to {queue_url}: {}", aws_error(&e))))?;
        sent += out.successful().len() as u64;
        for f in out.failed() {
            tracing::error!(id = f.id(), code = f.code(), message = ?f.message(), "replay message not sent");
            failed += 1;
        }
        progress(sent);
    }
    Ok((sent, failed))
}

/// The DLQ of `queue_url`, from its redrive policy.
pub async fn dead_letter_queue(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<String, ReplayError> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(|e| ReplayError::Aws(format!("reading {queue_url}: {}", aws_error(&e))))?;
    let policy = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
        .ok_or_else(|| ReplayError::Aws(format!("{queue_url} has no redrive policy (no DLQ)")))?;
    let arn = serde_json::from_str::<serde_json::Value>(policy)
        .ok()
        .and_then(|p| p["deadLetterTargetArn"].as_str().map(str::to_string))
        .ok_or_else(|| ReplayError::Aws(format!("unreadable redrive policy on {queue_url}")))?;
    let name = arn.rsplit(':').next().unwrap_or_default();
    let url = sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| ReplayError::Aws(format!("finding DLQ {name}: {}", aws_error(&e))))?;
    Ok(url.queue_url().unwrap_or_default().to_string())
}

/// Moves every message from `dlq_url` back to `queue_url` (sent first, then deleted, so a
/// crash can duplicate a message but never lose one; the ledger absorbs duplicates).
/// `progress` is called after each message moved with the number moved so far.
pub async fn redrive(
    sqs: &aws_sdk_sqs::Client,
    dlq_url: &str,
    queue_url: &str,
    dry_run: bool,
    mut progress: impl FnMut(u64),
) -> Result<u64, ReplayError> {
    let mut moved = 0;
    loop {
        let received = sqs
            .receive_message()
            .queue_url(dlq_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(if dry_run { 1 } else { 60 })
            .send()
            .await
            .map_err(|e| {
                ReplayError::Aws(format!("receiving from {dlq_url}: {}", aws_error(&e)))
            })?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(moved);
        }
        if dry_run {
            return Ok(messages.len() as u64);
        }
        for m in &messages {
            sqs.send_message()
                .queue_url(queue_url)
                .message_body(m.body().unwrap_or_default())
                .send()
                .await
                .map_err(|e| {
                    ReplayError::Aws(format!("sending to {queue_url}: {}", aws_error(&e)))
                })?;
            sqs.delete_message()
                .queue_url(dlq_url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .map_err(|e| {
                    ReplayError::Aws(format!("deleting from {dlq_url}: {}", aws_error(&e)))
                })?;
            moved += 1;
            progress(moved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudfront::parse::parse_date;

    #[test]
    fn dates_come_from_cloudfront_key_names() {
        assert_eq!(
            key_date("logs/E2QWRUHAPOMQZL.2026-11-20-07.a1b2c3d4.gz"),
            parse_date("2026-11-20")
        );
        assert_eq!(
            key_date("E2QWRUHAPOMQZL.2026-11-20-07.a1b2c3d4.gz"),
            parse_date("2026-11-20")
        );
        assert_eq!(key_date("logs/other-file.gz"), None);
        let selection = Selection {
            bucket: "b".into(),
            from: parse_date("2026-11-20"),
            to: parse_date("2026-11-21"),
            ..Default::default()
        };
        assert!(selection.matches("p/D.2026-11-21-23.x.gz"));
        assert!(!selection.matches("p/D.2026-11-22-00.x.gz"));
        assert!(!selection.matches("p/D.2026-11-19-23.x.gz"));
        assert!(!selection.matches("p/not-a-cloudfront-key.gz"));
        assert!(Selection::default().matches("anything"));
    }

    #[test]
    fn dates_come_from_v2_partitioned_paths() {
        let day = parse_date("2026-11-20");
        for key in [
            "AWSLogs/123456789012/CloudFront/E2QWRUHAPOMQZL/2026/11/20/07/E2QWRUHAPOMQZL.a1b2.log.gz",
            "cf/E2QWRUHAPOMQZL/2026/11/20/07/part-0001.parquet",
            "cf/E2QWRUHAPOMQZL/2026/11/20/file.gz",
            "AWSLogs/123456789012/CloudFront/distributionid=E2QWRUHAPOMQZL/year=2026/month=11/day=20/hour=07/x.log.gz",
            "cf/DistributionId=E2/Year=2026/Month=11/Day=20/Hour=23/x.parquet",
        ] {
            assert_eq!(key_date(key), day, "{key}");
        }
        for key in [
            "cf/E2QWRUHAPOMQZL/2026/11/x.gz",
            "cf/E2QWRUHAPOMQZL/2026/11/32/07/x.gz",
            "cf/year=2026/month=11/x.gz",
            // A date-like file name is not a folder.
            "cf/2026/11/20.gz",
        ] {
            assert_eq!(key_date(key), None, "{key}");
        }
        let selection = Selection {
            bucket: "b".into(),
            from: parse_date("2026-11-20"),
            to: parse_date("2026-11-20"),
            ..Default::default()
        };
        assert!(selection.matches("cf/year=2026/month=11/day=20/hour=00/x.parquet"));
        assert!(!selection.matches("cf/year=2026/month=11/day=21/hour=00/x.parquet"));
        assert!(selection.matches("cf/E1/2026/11/20/23/x.gz"));
    }
}
