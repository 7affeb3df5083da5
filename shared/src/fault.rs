//! Fault points: named places between two steps of the exactly-once protocol where a test
//! can crash the process (`CF2BQ_FAULT=<name>`). Compiled in only with the
//! `fault-injection` feature, which release builds never enable.

/// Aborts the process here when `CF2BQ_FAULT` names this point (fault-injection builds only).
#[cfg(feature = "fault-injection")]
pub fn fault_point(name: &str) {
    if std::env::var("CF2BQ_FAULT").as_deref() == Ok(name) {
        eprintln!("cf2bq: fault injected at {name}: aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn fault_point(_name: &str) {}

/// Every fault point, in protocol order (tests iterate over them).
pub const FAULT_POINTS: &[&str] = &[
    "after_claim",
    "after_append",
    "after_finalize",
    "after_batch_recorded",
    "after_plan_recorded",
    "after_table_commit",
    "after_all_commits",
];

/// Fault points only some attempts reach (a resume that finds its streams expired).
pub const RECOVERY_FAULT_POINTS: &[&str] = &["after_restage"];

// Fault points must never reach a deployed binary.
#[cfg(all(feature = "fault-injection", not(debug_assertions)))]
compile_error!("the fault-injection feature is for debug (test) builds only");
