//! The PENDING streams one staging round writes: at least one per table, and more for a
//! table whose rows are many, within a connection budget.
//!
//! One Storage Write connection carries roughly 1–10 MB/s, far less than one object parses
//! at, so a large table's rows are spread over several streams (each its own connection),
//! committed together by one atomic BatchCommitWriteStreams. Streams are cheap to write to
//! but not to create (CreateWriteStream: 10,000 an hour per project and region), and
//! concurrent connections are a regional quota every concurrent Lambda shares: another
//! stream is opened only once a table's streams each carry `spread_bytes`, and never beyond
//! the budget. Small batches therefore keep exactly one stream per table.

use std::collections::BTreeMap;

use crate::bigquery::rows::Rows;
use crate::bigquery::{BigQueryError, StreamWriter, WriteApi};

/// How a round spreads its tables' rows over streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    /// A table gets another stream once each of its streams carries this many bytes.
    pub spread_bytes: u64,
    /// The most streams (connections) a round holds open; every table gets one regardless.
    pub budget: usize,
}

impl Spread {
    /// Whether a table with `streams` streams carrying `bytes` should open another, while the
    /// round holds `open` streams in all.
    fn wants_another(&self, open: usize, streams: usize, bytes: u64) -> bool {
        open < self.budget && bytes >= self.spread_bytes.saturating_mul(streams as u64)
    }
}

/// One table's streams, appended to in turn.
struct TableStreams {
    writers: Vec<StreamWriter>,
    bytes: u64,
    next: usize,
}

/// Every stream of a round, by table.
pub(super) struct RoundStreams {
    spread: Spread,
    tables: BTreeMap<String, TableStreams>,
}

impl RoundStreams {
    pub fn new(spread: Spread) -> Self {
        RoundStreams {
            spread,
            tables: BTreeMap::new(),
        }
    }

    /// Whether `table` needs a stream (opened by the caller, then [`add`](Self::add)ed)
    /// before its next append: it has none, or its streams are full enough to spread.
    pub fn needs_stream(&self, table: &str) -> bool {
        match self.tables.get(table) {
            None => true,
            Some(t) => self
                .spread
                .wants_another(self.open(), t.writers.len(), t.bytes),
        }
    }

    pub fn has(&self, table: &str) -> bool {
        self.tables.contains_key(table)
    }

    /// Streams open in this round, all tables together.
    fn open(&self) -> usize {
        self.tables.values().map(|t| t.writers.len()).sum()
    }

    pub fn add(&mut self, table: &str, writer: StreamWriter) {
        let streams = self
            .tables
            .entry(table.to_string())
            .or_insert_with(|| TableStreams {
                writers: Vec::new(),
                bytes: 0,
                next: 0,
            });
        // The new stream takes the next append.
        streams.next = streams.writers.len();
        streams.writers.push(writer);
        let count = streams.writers.len();
        for writer in &mut streams.writers {
            writer.share_window(count);
        }
    }

    /// Appends a batch of encoded rows to the table's next stream in turn. The table must
    /// have a stream ([`needs_stream`](Self::needs_stream)).
    pub async fn append(&mut self, table: &str, rows: Rows) -> Result<(), BigQueryError> {
        let streams = self
            .tables
            .get_mut(table)
            .expect("a stream is opened before the first append");
        streams.bytes += rows.row_bytes() as u64;
        let i = streams.next % streams.writers.len();
        streams.next = (i + 1) % streams.writers.len();
        streams.writers[i].append(rows).await
    }

    /// Waits for every acknowledgement, ignoring failures: the round is being abandoned.
    pub async fn abandon(&mut self) {
        for writer in self.tables.values_mut().flat_map(|t| &mut t.writers) {
            let _ = writer.flush().await;
        }
    }

    /// Flushes and finalizes every stream; returns rows per table. A stream that holds other
    /// than what was appended fails the round.
    pub async fn finalize(
        &mut self,
        api: &WriteApi,
    ) -> Result<BTreeMap<String, u64>, BigQueryError> {
        let mut tables = BTreeMap::new();
        for (table, streams) in &mut self.tables {
            let mut total = 0;
            for writer in &mut streams.writers {
                let rows = writer.flush().await?;
                let count = api.finalize(writer.stream_name()).await?;
                if count != rows {
                    return Err(BigQueryError::Write {
                        call: format!("FinalizeWriteStream {}", writer.stream_name()),
                        message: format!("stream holds {count} rows, {rows} were appended"),
                    });
                }
                total += rows as u64;
            }
            tables.insert(table.clone(), total);
        }
        Ok(tables)
    }

    /// Table → its streams' names, in the order they were opened.
    pub fn into_names(self) -> BTreeMap<String, Vec<String>> {
        self.tables
            .into_iter()
            .map(|(table, t)| {
                let names = t
                    .writers
                    .iter()
                    .map(|w| w.stream_name().to_string())
                    .collect();
                (table, names)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_table_spreads_only_when_its_streams_are_full_and_the_budget_allows() {
        let spread = Spread {
            spread_bytes: 32 * MIB,
            budget: 4,
        };
        // One stream, not yet carrying its share: no second.
        assert!(!spread.wants_another(1, 1, 32 * MIB - 1));
        // Full: a second one.
        assert!(spread.wants_another(1, 1, 32 * MIB));
        // Two streams need twice the bytes before a third.
        assert!(!spread.wants_another(2, 2, 63 * MIB));
        assert!(spread.wants_another(2, 2, 64 * MIB));
        // The budget is for the whole round, every table counted.
        assert!(!spread.wants_another(4, 2, 1 << 40));
    }

    #[test]
    fn a_budget_of_one_never_spreads() {
        let spread = Spread {
            spread_bytes: 1,
            budget: 1,
        };
        assert!(!spread.wants_another(1, 1, u64::MAX));
    }
}
