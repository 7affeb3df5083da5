//! Rejected lines, kept with their object, line number, reason and exact bytes, so that none
//! is silently lost. Written as JSON lines to S3, in parts of bounded size, under names
//! derived from the source object: a retry rewrites the same parts instead of adding more.

use base64::Engine;

use crate::bigquery::auth::aws_error;
use crate::transform::RejectedLine;

/// Flush a part when it reaches this size, so memory stays flat on a badly broken object.
const PART_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("CF2BQ_QUARANTINE={0:?}: expected s3://bucket/prefix")]
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
pub struct QuarantineTarget {
    pub bucket: String,
    pub prefix: String,
}

impl QuarantineTarget {
    pub fn parse(target: &str) -> Result<Self, QuarantineError> {
        let rest = target
            .strip_prefix("s3://")
            .ok_or_else(|| QuarantineError::BadTarget(target.to_string()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(QuarantineError::BadTarget(target.to_string()));
        }
        Ok(QuarantineTarget {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
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
    target: QuarantineTarget,
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
        target: QuarantineTarget,
        object_uri: &str,
        version: &str,
    ) -> Self {
        let path = object_uri.split_once("://").map_or(object_uri, |(_, p)| p);
        let stem = format!(
            "{}{}.{}",
            target.prefix,
            path.trim_start_matches('/'),
            version
        );
        QuarantineWriter {
            s3,
            target,
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
            .bucket(&self.target.bucket)
            .key(&key)
            .content_type("application/x-ndjson")
            .body(body.into())
            .send()
            .await
            .map_err(|e| QuarantineError::Write {
                bucket: self.target.bucket.clone(),
                key: key.clone(),
                detail: aws_error(&e),
            })?;
        self.parts
            .push(format!("s3://{}/{}", self.target.bucket, key));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_records() {
        let t = QuarantineTarget::parse("s3://b/q/").unwrap();
        assert_eq!((t.bucket.as_str(), t.prefix.as_str()), ("b", "q/"));
        assert!(QuarantineTarget::parse("bq:table").is_err());
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
