//! The CloudFront standard access log format: fields, decoding, parsing, streaming.

pub mod decode;
pub mod fields;
#[cfg(test)]
mod fuzz;
pub mod parse;
pub mod reader;

pub use fields::{Encoding, FieldKind, LogField, LOG_FIELDS};
pub use parse::{Header, LineError, LineParser, Row, Value};
pub use reader::{Item, LogReader, ReadError, ReadStats, Rejected, DEFAULT_MAX_LINE_BYTES};
