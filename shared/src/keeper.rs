//! The table keeper: tables exist before their day starts, a missing one is noticed (and
//! created, so late logs have a home), older tables gain new columns, and a silence in the
//! data is alerted. Run on a schedule; [`alerts`] decides which runs send a message (a new
//! problem, a reminder, a resolution) and remembers the open problems between runs.
//!
//! Every check reads table metadata only (`tables.get`, free): a run issues no query job,
//! so it costs nothing however much data the tables hold. [`freshness`] says how rows'
//! arrival is told from metadata that table creations and schema patches also change.

pub mod alerts;
pub mod freshness;
pub mod state_item;

use std::collections::BTreeMap;

use crate::bigquery::{BigQuery, BigQueryError, TableSpec, TableStatus};
use crate::route::{IsoDate, Layout};
use freshness::{Memory, Seen, TableMeta};

#[derive(Debug, Clone)]
pub struct KeeperOptions {
    pub layout: Layout,
    pub partition_expiration_days: Option<u32>,
    /// Tables for today + this many days are created ahead.
    pub create_ahead_days: u32,
    /// Days before today checked for their table.
    pub lookback_days: u32,
    /// No new rows for this many hours is an alert.
    pub stale_hours: u32,
    /// `false`: only look (CLI `tables check`); nothing is created or patched.
    pub repair: bool,
}

/// One table's state, as the check saw it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TableState {
    pub date: String,
    pub table: String,
    /// `None`: the table did not exist when checked. Committed rows plus the streaming
    /// buffer's estimate, from the table's metadata (the partitioned layout: every day).
    pub rows: Option<u64>,
    /// The latest time rows are known to have arrived ([`freshness::last_arrival`]).
    pub last_ingest_micros: Option<i64>,
}

/// Everything one keeper run found and did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct KeeperReport {
    pub checked_at_micros: i64,
    /// Tables created ahead of their day (expected, not an alert).
    pub created_ahead: Vec<String>,
    /// Tables of past days (or today) that did not exist: an alert.
    pub missing: Vec<String>,
    /// Of those, created by this run.
    pub created_missing: Vec<String>,
    /// Table → columns added to match the current schema.
    pub patched: BTreeMap<String, Vec<String>>,
    /// Latest arrival of rows over the checked tables.
    pub last_ingest_micros: Option<i64>,
    pub stale: bool,
    pub stale_hours: u32,
    pub tables: Vec<TableState>,
}

impl KeeperReport {
    /// Whether something needs a human.
    pub fn has_problems(&self) -> bool {
        !self.missing.is_empty() || self.stale
    }

    /// What to remember for the next run: each checked table's rows and last arrival.
    pub fn memory(&self) -> Memory {
        self.tables
            .iter()
            .filter_map(|t| {
                let rows = t.rows?;
                let seen = Seen {
                    rows,
                    last_arrival_micros: t.last_ingest_micros,
                };
                Some((t.table.clone(), seen))
            })
            .collect()
    }

    /// Hours since the last ingest, if any row was ever seen.
    pub fn hours_since_last_ingest(&self) -> Option<f64> {
        self.last_ingest_micros
            .map(|t| (self.checked_at_micros - t) as f64 / 3_600_000_000.0)
    }
}

/// Runs the checks for `today` (days since the epoch) at `now_micros`; `memory` is what the
/// previous run saw ([`KeeperReport::memory`]; empty when there is none).
pub async fn run(
    bq: &BigQuery,
    options: &KeeperOptions,
    memory: &Memory,
    today: i32,
    now_micros: i64,
) -> Result<KeeperReport, BigQueryError> {
    let mut report = KeeperReport {
        checked_at_micros: now_micros,
        stale_hours: options.stale_hours,
        ..Default::default()
    };
    let first = today - options.lookback_days as i32;
    let last = today + options.create_ahead_days as i32;
    let mut seen = std::collections::BTreeSet::new();
    for day in first..=last {
        let spec = TableSpec::for_date(&options.layout, day, options.partition_expiration_days);
        if !seen.insert(spec.name.clone()) {
            continue; // the partitioned layout: one table for every day
        }
        // Read before any patch below, which moves lastModifiedTime.
        let meta = bq
            .get_table(&spec.name)
            .await?
            .map(|t| TableMeta::from_table(&t));
        match &meta {
            None => {
                if day <= today {
                    report.missing.push(spec.name.clone());
                }
                if options.repair && bq.ensure_table(&spec).await? == TableStatus::Created {
                    if day > today {
                        report.created_ahead.push(spec.name.clone());
                    } else {
                        report.created_missing.push(spec.name.clone());
                    }
                }
            }
            Some(_) if options.repair => {
                let added = bq.add_missing_columns(&spec.name).await?;
                if !added.is_empty() {
                    report.patched.insert(spec.name.clone(), added);
                }
            }
            Some(_) => {}
        }
        report.tables.push(TableState {
            date: match options.layout {
                Layout::Sharded { .. } => IsoDate(day).to_string(),
                Layout::Partitioned { .. } => "all days".into(),
            },
            table: spec.name.clone(),
            rows: meta.map(|m| m.rows),
            last_ingest_micros: meta
                .and_then(|m| freshness::last_arrival(&m, memory.get(&spec.name), now_micros)),
        });
    }
    report.last_ingest_micros = report
        .tables
        .iter()
        .filter_map(|t| t.last_ingest_micros)
        .max();
    let stale_after = i64::from(options.stale_hours) * 3_600_000_000;
    report.stale = match report.last_ingest_micros {
        Some(t) => now_micros - t > stale_after,
        None => true,
    };
    Ok(report)
}

/// The alert for a report with problems: (subject, body). The body says what is wrong and
/// what to do, then carries the details as JSON.
pub fn alert_text(report: &KeeperReport, dataset: &str) -> (String, String) {
    let mut findings = Vec::new();
    let mut body = String::new();
    if !report.missing.is_empty() {
        findings.push(format!(
            "{} missing table{}",
            report.missing.len(),
            if report.missing.len() == 1 { "" } else { "s" }
        ));
        body += &format!(
            "MISSING TABLES in {dataset}: {}.\n{}\
             Logs for those days either never arrived or were written elsewhere. Check the ingest \
             queue's DLQ and the ingest function's errors, then replay the days: \
             cf2bq replay --bucket <log bucket> --from <date> --to <date>\n\n",
            report.missing.join(", "),
            if report.created_missing.is_empty() {
                String::new()
            } else {
                format!(
                    "The keeper created {} so late logs have a home.\n",
                    report.created_missing.join(", ")
                )
            }
        );
    }
    if report.stale {
        let since = match report.hours_since_last_ingest() {
            Some(h) => format!(
                "no new rows for {h:.1} hours (threshold {} h)",
                report.stale_hours
            ),
            None => format!(
                "no rows at all in the checked tables (threshold {} h)",
                report.stale_hours
            ),
        };
        findings.push(match report.hours_since_last_ingest() {
            Some(h) => format!("no data for {h:.0} h"),
            None => "no data".into(),
        });
        body += &format!(
            "STALE DATA in {dataset}: {since}.\n\
             CloudFront may have stopped delivering logs, the bucket notification may be broken, or \
             ingest is failing. Check the ingest queue's age of oldest message and DLQ, the function's \
             errors, and that new .gz objects still arrive in the log bucket.\n\n"
        );
    }
    let subject = format!("cf2bq ALERT ({dataset}): {}", findings.join(", "));
    body += "Details (JSON):\n";
    body += &serde_json::to_string_pretty(report).expect("reports serialize");
    // SNS subjects: at most 100 characters.
    let subject: String = subject.chars().take(100).collect();
    (subject, body)
}

/// Options from the configuration.
impl KeeperOptions {
    pub fn from_config(config: &crate::Config, repair: bool) -> Self {
        KeeperOptions {
            layout: config.layout.clone(),
            partition_expiration_days: config.partition_expiration_days,
            create_ahead_days: config.create_ahead_days,
            lookback_days: config.lookback_days,
            stale_hours: config.stale_hours,
            repair,
        }
    }
}

/// The ledger item holding the keeper's [`Memory`] of the tables it checks.
pub fn memory_store(aws: &aws_config::SdkConfig, config: &crate::Config) -> state_item::StateItem {
    let key = state_item::key(
        "tables",
        &config.bigquery.project,
        &config.bigquery.dataset,
        &config.layout,
    );
    state_item::StateItem::new(aws, &config.ledger_table, key)
}

/// Today's UTC date in days since the epoch.
pub fn today() -> i32 {
    (crate::clock::now_micros() / 86_400_000_000) as i32
}

/// Publishes the alert for `report` to `topic_arn` if it has problems; returns whether it did.
/// Every call with problems alerts: the keeper function goes through [`alerts::notify`],
/// which remembers what it already said.
pub async fn alert(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    report: &KeeperReport,
    dataset: &str,
) -> Result<bool, String> {
    if !report.has_problems() {
        return Ok(false);
    }
    let (subject, body) = alert_text(report, dataset);
    publish(sns, topic_arn, subject, body).await?;
    Ok(true)
}

/// Publishes one message to `topic_arn`.
pub async fn publish(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    subject: String,
    body: String,
) -> Result<(), String> {
    sns.publish()
        .topic_arn(topic_arn)
        .subject(subject)
        .message(body)
        .send()
        .await
        .map_err(|e| {
            format!(
                "publishing to {topic_arn}: {}",
                crate::bigquery::auth::aws_error(&e)
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_text_says_what_and_what_to_do() {
        let report = KeeperReport {
            checked_at_micros: 10 * 3_600_000_000,
            missing: vec!["cloudfront_20260301".into()],
            created_missing: vec!["cloudfront_20260301".into()],
            last_ingest_micros: Some(3_600_000_000),
            stale: true,
            stale_hours: 3,
            ..Default::default()
        };
        let (subject, body) = alert_text(&report, "logs");
        assert_eq!(
            subject,
            "cf2bq ALERT (logs): 1 missing table, no data for 9 h"
        );
        assert!(body.contains("MISSING TABLES in logs: cloudfront_20260301."));
        assert!(body.contains("cf2bq replay --bucket"));
        assert!(body.contains("STALE DATA in logs: no new rows for 9.0 hours (threshold 3 h)."));
        let json = &body[body.find("Details (JSON):\n").unwrap() + 16..];
        let parsed: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(parsed["missing"][0], "cloudfront_20260301");
        assert!(report.has_problems());
        assert!(!KeeperReport {
            last_ingest_micros: Some(1),
            ..Default::default()
        }
        .has_problems());
    }
}
