//! Calls to external APIs, counted in the process: what quotas (CreateWriteStream per hour
//! and project) and bills (DynamoDB writes, S3 GETs, BigQuery queries) are made of. Each
//! ingest invocation reports its counts with its metrics ([`crate::metrics::calls`]).

use std::collections::BTreeMap;
use std::sync::Mutex;

static COUNTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// One call to `api` (`Service.Operation`); `amount` is 1, or bytes for a `…Bytes` entry.
pub fn add(api: &str, amount: u64) {
    let mut counts = COUNTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *counts.entry(api.to_string()).or_default() += amount;
}

/// One call to `api`.
pub fn count(api: &str) {
    add(api, 1);
}

/// The counts since the last take, reset.
pub fn take() -> BTreeMap<String, u64> {
    std::mem::take(
        &mut *COUNTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_reset_when_taken() {
        take();
        count("S3.GetObject");
        count("S3.GetObject");
        add("BigQuery.AppendRowsBytes", 300);
        let counts = take();
        assert_eq!(counts["S3.GetObject"], 2);
        assert_eq!(counts["BigQuery.AppendRowsBytes"], 300);
        assert!(take().is_empty());
    }
}
