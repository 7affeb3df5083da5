//! What happened to one object: the outcome and the counts an operator checks.

use std::collections::BTreeMap;

use crate::route::DaySpan;

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Rows committed (or nothing to commit: only rejected lines).
    Loaded,
    /// A zero-byte object or one with no data lines.
    Empty,
    /// The object no longer exists: acknowledged, nothing to do.
    Gone,
    /// Already ingested (a redelivery or replay): acknowledged without writing.
    AlreadyDone,
    /// A forced replay of an object that is gone or empty now: refused, the rows loaded
    /// earlier are kept.
    ReplayRefused,
}

/// The result of ingesting one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectReport {
    pub object: String,
    pub outcome: Outcome,
    /// Rows committed per table.
    pub tables: BTreeMap<String, u64>,
    /// Per table, the log dates of those rows (what a forced replay's DELETE filters on).
    #[serde(default)]
    pub days: BTreeMap<String, DaySpan>,
    pub data_lines: u64,
    pub rows: u64,
    pub rejected: u64,
    /// Decompressed bytes.
    pub bytes: u64,
    /// Quarantine parts written (`s3://` URIs).
    pub quarantine: Vec<String>,
    /// Latest request time among the rows, microseconds since the epoch.
    pub latest_request_micros: Option<i64>,
}

impl ObjectReport {
    pub fn empty(object: String, outcome: Outcome) -> Self {
        ObjectReport {
            object,
            outcome,
            tables: BTreeMap::new(),
            days: BTreeMap::new(),
            data_lines: 0,
            rows: 0,
            rejected: 0,
            bytes: 0,
            quarantine: Vec::new(),
            latest_request_micros: None,
        }
    }

    /// The report as the ledger stores it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("reports serialize")
    }
}
