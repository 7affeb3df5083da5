//! cf2bq: CloudFront standard access logs from S3 into BigQuery, exactly once.
//!
//! The Lambda functions and the `cf2bq` CLI are thin shells over this library.
//! Follow one object from event to committed rows by reading [`ingest`] top to bottom.

pub mod allocator;
pub mod aws;
pub mod bigquery;
pub mod calls;
pub mod clock;
pub mod cloudfront;
pub mod config;
pub mod event;
pub mod fault;
pub mod formats;
pub mod generate;
pub mod ingest;
pub mod keeper;
pub mod ledger;
pub mod metrics;
pub mod privacy;
pub mod quarantine;
pub mod replay;
pub mod retry;
pub mod route;
pub mod source;
pub mod sqs;
pub mod telemetry;
pub mod transform;

pub use config::Config;
pub use ingest::{Ingestor, ObjectReport, Outcome};
