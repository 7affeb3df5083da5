//! The CloudFront standard access log format: fields, decoding, parsing, streaming.

mod bytemask;
pub mod decode;
pub mod fields;
#[cfg(test)]
mod fuzz;
pub mod json;
pub mod parquet;
pub mod parse;
pub mod reader;
#[cfg(test)]
mod v2_tests;

pub use fields::{Encoding, FieldKind, LogField, LEGACY_FIELDS, LOG_FIELDS};
pub use parse::{Header, LineError, LineParser, Row, Value};
pub use reader::{Item, LogReader, ReadError, ReadStats, Rejected, DEFAULT_MAX_LINE_BYTES};
