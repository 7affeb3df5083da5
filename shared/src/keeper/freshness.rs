//! When rows last arrived in a table, judged from its metadata alone (`tables.get`: free, no
//! query job, the same cost whatever the table holds) and what the previous run saw.
//!
//! Why `tables.get` for both layouts, and not `INFORMATION_SCHEMA.PARTITIONS` for the
//! partitioned one: the view's per-partition `last_modified_time` changes with data only,
//! which would be exact, but reading it is a query job (`jobs.query`, the `jobUser` role, and
//! on-demand billing with a minimum per query), which is what the keeper must not run every
//! hour. `tables.get` answers for the whole table: `numRows` (committed rows, not the
//! streaming buffer), `streamingBuffer` (a lower-bound estimate of buffered rows and the time
//! of the oldest), and `lastModifiedTime`.
//!
//! `lastModifiedTime` is not a data timestamp: creating a table, patching its schema, or a
//! label change moves it too. So it counts only when the row count says data changed:
//!
//! - an empty table has no arrival, whatever its `lastModifiedTime` (the keeper's own
//!   creations ahead, and the tables it creates for missing days);
//! - a table whose row count is what the previous run saw keeps the arrival that run
//!   remembered (its `lastModifiedTime` may be a schema patch since);
//! - a table with more rows than the previous run saw had rows arrive since then: its
//!   `lastModifiedTime` is that arrival, or a metadata change in the same interval, so at
//!   most one run period late;
//! - with no memory of the table (first run, a new table), a non-empty table's
//!   `lastModifiedTime` is the best there is. The keeper reads it before patching the table,
//!   so its own patch in the same run cannot move it;
//! - rows in the streaming buffer are data: the oldest buffered entry is a time rows surely
//!   arrived.
//!
//! Fewer rows than before (partition expiration, a forced replay's DELETE) is not an arrival;
//! in the partitioned layout with partition expiration, the run in which a day expires can
//! miss that hour's new rows, so the previous arrival stands for one run. Keep
//! `CF2BQ_STALE_HOURS` above one schedule period (the default, 3 h for hourly runs, is).

use std::collections::BTreeMap;

use gcp_bigquery_client::model::table::Table;
use serde::{Deserialize, Serialize};

/// The part of a table's metadata that says something about its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableMeta {
    /// Committed rows plus the streaming buffer's estimate.
    pub rows: u64,
    pub last_modified_micros: Option<i64>,
    /// The oldest entry in the streaming buffer, if it holds any.
    pub buffered_since_micros: Option<i64>,
}

impl TableMeta {
    pub fn from_table(table: &Table) -> TableMeta {
        let number = |v: Option<&String>| v.and_then(|v| v.parse::<i64>().ok());
        let buffer = table.streaming_buffer.as_ref();
        let committed = number(table.num_rows.as_ref()).unwrap_or(0).max(0) as u64;
        let buffered = number(buffer.and_then(|b| b.estimated_rows.as_ref()))
            .unwrap_or(0)
            .max(0) as u64;
        TableMeta {
            rows: committed + buffered,
            last_modified_micros: number(table.last_modified_time.as_ref()).map(|ms| ms * 1000),
            buffered_since_micros: number(buffer.and_then(|b| b.oldest_entry_time.as_ref()))
                .map(|ms| ms * 1000),
        }
    }
}

/// What the keeper remembers of one table between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub rows: u64,
    /// The latest time rows are known to have arrived; `None`: never, as far as it knows.
    pub last_arrival_micros: Option<i64>,
}

/// Table → what the last run saw of it.
pub type Memory = BTreeMap<String, Seen>;

/// The latest time rows are known to have arrived in a table with metadata `meta`, given what
/// the previous run saw of it (the rules are in the module documentation). Never later than
/// `now_micros` (a clock ahead of ours must not make data look fresh for longer).
pub fn last_arrival(meta: &TableMeta, previous: Option<&Seen>, now_micros: i64) -> Option<i64> {
    if meta.rows == 0 {
        return None;
    }
    let remembered = previous.and_then(|seen| seen.last_arrival_micros);
    let modified = match previous {
        Some(seen) if meta.rows <= seen.rows => None,
        _ => meta.last_modified_micros,
    };
    [remembered, modified, meta.buffered_since_micros]
        .into_iter()
        .flatten()
        .max()
        .map(|t| t.min(now_micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000;
    const NOW: i64 = 1_773_100_000_000_000;

    fn meta(rows: u64, modified: i64) -> TableMeta {
        TableMeta {
            rows,
            last_modified_micros: Some(modified),
            buffered_since_micros: None,
        }
    }

    #[test]
    fn an_empty_table_has_no_arrival_though_it_was_just_created_or_patched() {
        assert_eq!(last_arrival(&meta(0, NOW), None, NOW), None);
        let seen = Seen {
            rows: 0,
            last_arrival_micros: None,
        };
        assert_eq!(last_arrival(&meta(0, NOW), Some(&seen), NOW), None);
    }

    #[test]
    fn a_patch_of_a_table_whose_rows_did_not_change_keeps_the_remembered_arrival() {
        let seen = Seen {
            rows: 500,
            last_arrival_micros: Some(NOW - 5 * HOUR),
        };
        // The keeper patched the schema an hour ago: lastModifiedTime moved, numRows did not.
        let patched = meta(500, NOW - HOUR);
        assert_eq!(
            last_arrival(&patched, Some(&seen), NOW),
            Some(NOW - 5 * HOUR)
        );
    }

    #[test]
    fn more_rows_than_last_run_means_the_last_modification_was_an_arrival() {
        let seen = Seen {
            rows: 500,
            last_arrival_micros: Some(NOW - 5 * HOUR),
        };
        assert_eq!(
            last_arrival(&meta(620, NOW - 10 * 60_000_000), Some(&seen), NOW),
            Some(NOW - 10 * 60_000_000)
        );
    }

    #[test]
    fn fewer_rows_than_last_run_is_not_an_arrival() {
        // A day expired out of the partitioned table (lastModifiedTime moved).
        let seen = Seen {
            rows: 900,
            last_arrival_micros: Some(NOW - 2 * HOUR),
        };
        assert_eq!(
            last_arrival(&meta(300, NOW), Some(&seen), NOW),
            Some(NOW - 2 * HOUR)
        );
    }

    #[test]
    fn without_memory_a_non_empty_table_is_as_fresh_as_its_last_modification() {
        assert_eq!(
            last_arrival(&meta(3, NOW - 2 * HOUR), None, NOW),
            Some(NOW - 2 * HOUR)
        );
        // A server clock ahead of ours is capped at now.
        assert_eq!(last_arrival(&meta(3, NOW + HOUR), None, NOW), Some(NOW));
    }

    #[test]
    fn rows_in_the_streaming_buffer_are_an_arrival_and_count_as_rows() {
        let table: Table = serde_json::from_value(serde_json::json!({
            "tableReference": {"projectId": "p", "datasetId": "d", "tableId": "t"},
            "schema": {"fields": []},
            "numRows": "0",
            "lastModifiedTime": ((NOW - 6 * HOUR) / 1000).to_string(),
            "streamingBuffer": {
                "estimatedRows": "40",
                "oldestEntryTime": ((NOW - 20 * 60_000_000) / 1000).to_string()
            }
        }))
        .unwrap();
        let meta = TableMeta::from_table(&table);
        assert_eq!(meta.rows, 40);
        let seen = Seen {
            rows: 40,
            last_arrival_micros: Some(NOW - 6 * HOUR),
        };
        assert_eq!(
            last_arrival(&meta, Some(&seen), NOW),
            Some(NOW - 20 * 60_000_000)
        );
    }

    #[test]
    fn metadata_is_read_from_the_rest_answer() {
        let table: Table = serde_json::from_value(serde_json::json!({
            "tableReference": {"projectId": "p", "datasetId": "d", "tableId": "t"},
            "schema": {"fields": []},
            "numRows": "12",
            "numBytes": "3400",
            "lastModifiedTime": "1773099000000"
        }))
        .unwrap();
        assert_eq!(
            TableMeta::from_table(&table),
            TableMeta {
                rows: 12,
                last_modified_micros: Some(1_773_099_000_000_000),
                buffered_since_micros: None,
            }
        );
        let bare: Table = serde_json::from_value(serde_json::json!({
            "tableReference": {"projectId": "p", "datasetId": "d", "tableId": "t"},
            "schema": {}
        }))
        .unwrap();
        assert_eq!(TableMeta::from_table(&bare), TableMeta::default());
    }
}
