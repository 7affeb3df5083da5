//! Which reader an object needs, decided per object from its first bytes and its key:
//! gzip text (legacy W3C, and v2 W3C with any delimiter or JSON lines, told apart by content
//! in [`crate::cloudfront::LogReader`]) goes through [`crate::transform`]; v2 Parquet is
//! read a row group at a time through ranged reads, never streamed whole.

use std::io::Read;

use crate::bigquery::encode::RowEncoder;
use crate::bigquery::rows::Rows;
use crate::cloudfront::parquet::{read_parquet, ParquetItem, RangeSource};
use crate::cloudfront::{ReadError, ReadStats};
use crate::transform::{
    transform_gzip_threaded, BatchSink, RejectedLine, TransformError, TransformOptions,
    TransformStats,
};

/// The container of a log object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFormat {
    /// gzip-compressed text (legacy, and v2 W3C, JSON and plain).
    GzipText,
    /// Standard logging v2 Parquet.
    Parquet,
}

const PARQUET_MAGIC: &[u8] = b"PAR1";
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];

/// The format of an object from its first bytes, else its key: content wins, so a renamed
/// object is still read right; an unrecognised object is tried as gzip and fails naming it.
pub fn detect(key: &str, head: &[u8]) -> ObjectFormat {
    if head.starts_with(PARQUET_MAGIC) {
        ObjectFormat::Parquet
    } else if head.starts_with(GZIP_MAGIC) {
        ObjectFormat::GzipText
    } else if key.ends_with(".parquet") {
        ObjectFormat::Parquet
    } else {
        ObjectFormat::GzipText
    }
}

/// Whether a key can hold CloudFront logs cf2bq reads (replay and the CLI list by it).
pub fn is_log_key(key: &str) -> bool {
    key.ends_with(".gz") || key.ends_with(".parquet")
}

/// Transforms one object. `stream` is the object from its start; `ranges` opens random
/// access to it, used instead of the stream (which is then dropped unread) for Parquet.
pub fn transform_object<S: RangeSource>(
    key: &str,
    stream: impl Read + Send + 'static,
    ranges: impl FnOnce() -> std::io::Result<S>,
    options: &TransformOptions,
    encoder: &RowEncoder,
    sink: &mut impl BatchSink,
) -> Result<TransformStats, TransformError> {
    let mut stream = stream;
    let mut head = Vec::with_capacity(PARQUET_MAGIC.len());
    stream
        .by_ref()
        .take(PARQUET_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(|source| ReadError::Io { line_no: 1, source })?;
    match detect(key, &head) {
        ObjectFormat::GzipText => {
            let whole = std::io::Cursor::new(head).chain(stream);
            transform_gzip_threaded(whole, options, encoder, sink)
        }
        ObjectFormat::Parquet => {
            drop(stream);
            let source = ranges().map_err(|source| ReadError::Io { line_no: 1, source })?;
            transform_parquet(source, options, encoder, sink)
        }
    }
}

/// Transforms a Parquet object: rows routed by their own date into batches per table.
pub fn transform_parquet<S: RangeSource>(
    source: S,
    options: &TransformOptions,
    encoder: &RowEncoder,
    sink: &mut impl BatchSink,
) -> Result<TransformStats, TransformError> {
    let mut batches = Batches::default();
    let mut latest: Option<i64> = None;
    let mut stopped = false;
    let mut encoded = Vec::new();
    let read = read_parquet(source, |item| {
        let result = match item {
            ParquetItem::Row { line_no, row } => {
                latest = latest.max(Some(row.timestamp_micros()));
                encoded.clear();
                encoder.encode(&row, line_no, &mut encoded);
                batches.push(row.date, &encoded, options, sink)
            }
            ParquetItem::Rejected {
                line_no,
                error,
                raw,
            } => sink
                .rejected(RejectedLine {
                    line_no,
                    reason_code: error.code(),
                    reason: error.to_string(),
                    raw,
                })
                .map_err(|_| ()),
        };
        stopped = result.is_err();
        result
    });
    let read: ReadStats = match read {
        Ok(stats) => stats,
        Err(_) if stopped => return Err(TransformError::Stopped),
        Err(e) => return Err(TransformError::Read(ReadError::Parquet(e))),
    };
    batches.flush(sink)?;
    Ok(TransformStats {
        read,
        latest_request_micros: latest,
    })
}

/// Rows of each log date being gathered into a Storage Write batch.
#[derive(Default)]
struct Batches {
    open: Vec<(i32, String, Rows, usize)>,
}

impl Batches {
    fn push(
        &mut self,
        date: i32,
        row: &[u8],
        options: &TransformOptions,
        sink: &mut impl BatchSink,
    ) -> Result<(), ()> {
        let index = match self.open.iter().position(|b| b.0 == date) {
            Some(i) => i,
            None => {
                let table = options.layout.table_for(date);
                self.open.push((date, table, Rows::new(), 0));
                self.open.len() - 1
            }
        };
        let (date, table, rows, bytes) = &mut self.open[index];
        *bytes += row.len() + 8;
        rows.push(row);
        if *bytes >= options.batch_bytes {
            *bytes = 0;
            sink.batch(table, *date, std::mem::take(rows))
                .map_err(|_| ())?;
        }
        Ok(())
    }

    fn flush(self, sink: &mut impl BatchSink) -> Result<(), TransformError> {
        for (date, table, rows, _) in self.open {
            if !rows.is_empty() {
                sink.batch(&table, date, rows)
                    .map_err(|_| TransformError::Stopped)?;
            }
        }
        Ok(())
    }
}
