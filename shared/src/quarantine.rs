//! Rejected lines, kept with their object, line number, reason and exact bytes, so that none
//! is silently lost. Two targets:
//! * `s3://bucket/prefix/`: JSON lines, in parts of bounded size, under names derived from
//!   the source object: a retry rewrites the same parts instead of adding more;
//! * `bq:<table>`: rows of a quarantine table, written through a PENDING stream that is part
//!   of the object's commit plan, so rejected lines are recorded exactly once as well.

use base64::Engine;
use gcp_bigquery_client::model::{
    field_type::FieldType, table_field_schema::TableFieldSchema, table_schema::TableSchema,
};
use prost_types::{field_descriptor_proto, DescriptorProto};

use crate::bigquery::auth::aws_error;
use crate::transform::RejectedLine;

/// Flush a part when it reaches this size, so memory stays flat on a badly broken object.
const PART_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("CF2BQ_QUARANTINE={0:?}: expected s3://bucket/prefix/ or bq:<table>")]
    BadTarget(String),
    #[error("writing quarantine part s3://{bucket}/{key}: {detail}")]
    Write {
        bucket: String,
        key: String,
        detail: String,
    },
}

/// Where rejected lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuarantineTarget {
    S3 { bucket: String, prefix: String },
    Table(String),
}

impl QuarantineTarget {
    pub fn parse(target: &str) -> Result<Self, QuarantineError> {
        let bad = || QuarantineError::BadTarget(target.to_string());
        if let Some(table) = target.strip_prefix("bq:") {
            let valid = !table.is_empty()
                && table
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            return if valid {
                Ok(QuarantineTarget::Table(table.to_string()))
            } else {
                Err(bad())
            };
        }
        let rest = target.strip_prefix("s3://").ok_or_else(bad)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad());
        }
        Ok(QuarantineTarget::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

/// Columns of a quarantine table: (name, BigQuery type, protobuf type).
const TABLE_COLUMNS: [(&str, FieldType, field_descriptor_proto::Type); 7] = [
    (
        "source_object",
        FieldType::String,
        field_descriptor_proto::Type::String,
    ),
    (
        "source_line",
        FieldType::Integer,
        field_descriptor_proto::Type::Int64,
    ),
    (
        "reason_code",
        FieldType::String,
        field_descriptor_proto::Type::String,
    ),
    (
        "reason",
        FieldType::String,
        field_descriptor_proto::Type::String,
    ),
    (
        "raw",
        FieldType::String,
        field_descriptor_proto::Type::String,
    ),
    (
        "raw_base64",
        FieldType::String,
        field_descriptor_proto::Type::String,
    ),
    (
        "ingest_time",
        FieldType::Timestamp,
        field_descriptor_proto::Type::Int64,
    ),
];

/// The quarantine table's schema.
pub fn table_schema() -> TableSchema {
    TableSchema::new(
        TABLE_COLUMNS
            .iter()
            .map(|(name, kind, _)| TableFieldSchema::new(name, kind.clone()))
            .collect(),
    )
}

/// The quarantine table's Storage Write descriptor.
pub fn proto_descriptor() -> DescriptorProto {
    crate::bigquery::schema::descriptor(
        "RejectedLine",
        TABLE_COLUMNS.iter().map(|(name, _, kind)| (*name, *kind)),
    )
}

/// One rejected line as a quarantine-table row (protobuf, fields as in `TABLE_COLUMNS`).
pub fn encode_row(object_uri: &str, line: &RejectedLine, ingest_micros: i64) -> Vec<u8> {
    use crate::bigquery::encode::{put_int, put_str};
    let mut out = Vec::with_capacity(line.raw.len() * 2 + 200);
    put_str(1, object_uri, &mut out);
    put_int(2, line.line_no as i64, &mut out);
    put_str(3, line.reason_code, &mut out);
    put_str(4, &line.reason, &mut out);
    put_str(5, &String::from_utf8_lossy(&line.raw), &mut out);
    put_str(
        6,
        &base64::engine::general_purpose::STANDARD.encode(&line.raw),
        &mut out,
    );
    put_int(7, ingest_micros, &mut out);
    out
}

/// One JSON line of the quarantine.
pub fn record(object_uri: &str, line: &RejectedLine) -> serde_json::Value {
    serde_json::json!({
        "object": object_uri,
        "line": line.line_no,
        "reason_code": line.reason_code,
        "reason": line.reason,
        "raw": String::from_utf8_lossy(&line.raw),
        "raw_base64": base64::engine::general_purpose::STANDARD.encode(&line.raw),
    })
}

/// Collects one object's rejected lines and writes them out in parts.
pub struct QuarantineWriter {
    s3: aws_sdk_s3::Client,
    bucket: String,
    object_uri: String,
    /// Key stem for this object's parts: `<prefix><bucket>/<key>.<version>`.
    stem: String,
    buffer: Vec<u8>,
    parts: Vec<String>,
    lines: u64,
}

impl QuarantineWriter {
    pub fn new(
        s3: aws_sdk_s3::Client,
        bucket: &str,
        prefix: &str,
        object_uri: &str,
        version: &str,
    ) -> Self {
        let path = object_uri.split_once("://").map_or(object_uri, |(_, p)| p);
        let stem = format!("{prefix}{}.{version}", path.trim_start_matches('/'));
        QuarantineWriter {
            s3,
            bucket: bucket.to_string(),
            object_uri: object_uri.to_string(),
            stem,
            buffer: Vec::new(),
            parts: Vec::new(),
            lines: 0,
        }
    }

    pub async fn add(&mut self, line: &RejectedLine) -> Result<(), QuarantineError> {
        serde_json::to_writer(&mut self.buffer, &record(&self.object_uri, line))
            .expect("JSON values always serialize");
        self.buffer.push(b'\n');
        self.lines += 1;
        if self.buffer.len() >= PART_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the last part; returns the `s3://` URIs of every part written.
    pub async fn finish(mut self) -> Result<Vec<String>, QuarantineError> {
        self.flush().await?;
        Ok(self.parts)
    }

    async fn flush(&mut self) -> Result<(), QuarantineError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let key = format!("{}.rejected-{:04}.jsonl", self.stem, self.parts.len() + 1);
        let body = std::mem::take(&mut self.buffer);
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/x-ndjson")
            .body(body.into())
            .send()
            .await
            .map_err(|e| QuarantineError::Write {
                bucket: self.bucket.clone(),
                key: key.clone(),
                detail: aws_error(&e),
            })?;
        self.parts.push(format!("s3://{}/{}", self.bucket, key));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_records() {
        let s3 = QuarantineTarget::S3 {
            bucket: "b".into(),
            prefix: "q/".into(),
        };
        assert_eq!(QuarantineTarget::parse("s3://b/q/").unwrap(), s3);
        assert_eq!(
            QuarantineTarget::parse("bq:cf2bq_quarantine").unwrap(),
            QuarantineTarget::Table("cf2bq_quarantine".into())
        );
        assert!(QuarantineTarget::parse("bq:").is_err());
        assert!(QuarantineTarget::parse("bq:a.b").is_err());
        assert!(QuarantineTarget::parse("/tmp/q").is_err());
        let line = RejectedLine {
            line_no: 7,
            reason_code: "column_count",
            reason: "line has 2 columns".into(),
            raw: b"a\tb\xff".to_vec(),
        };
        let r = record("s3://b/k.gz", &line);
        assert_eq!(r["line"], 7);
        assert_eq!(r["raw"], "a\tb\u{fffd}");
        assert_eq!(r["raw_base64"], "YQli/w==");
    }
}
