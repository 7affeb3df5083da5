//! Wall-clock time as the ledger and the rows record it.

/// Microseconds since the Unix epoch (the `ingest_time` stamped on rows).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch (ledger leases).
pub fn now_secs() -> i64 {
    now_micros() / 1_000_000
}
