//! Standard logging v2's Parquet output, read a row group at a time with ranged reads.
//!
//! AWS documents string-typed columns with underscored names (`x_edge_location`, `cs_host`,
//! `timestamp_ms`…); other primitive types are read too. Columns are mapped by name like a
//! `#Fields` header, so any subset in any order works. Only the footer and one row group's
//! column chunks are ever in memory: [`RangeSource`] fetches exactly those byte ranges (S3
//! `Range` GETs), so memory stays flat however large the object.

use std::io::{self, Read};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use parquet::file::reader::{ChunkReader, FileReader, Length};
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::record::Field;

use super::parse::{Column, Header, HeaderError, LineError, Row, RowBuilder};
use super::reader::ReadStats;

/// Random access to an object's bytes: S3 ranged GETs, or a local file.
pub trait RangeSource: Send + Sync + 'static {
    /// The object's size in bytes.
    fn size(&self) -> u64;
    /// `len` bytes from `start` (exactly, unless the object ends first).
    fn read_range(&self, start: u64, len: u64) -> io::Result<Bytes>;
}

/// Bytes in memory (tests, and objects already read whole).
impl RangeSource for Bytes {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_range(&self, start: u64, len: u64) -> io::Result<Bytes> {
        let start = (start as usize).min(self.len());
        let end = start.saturating_add(len as usize).min(self.len());
        Ok(self.slice(start..end))
    }
}

/// Why a Parquet object cannot be read as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("reading Parquet row group {row_group}: {source}")]
    Read {
        row_group: usize,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("reading the Parquet footer: {0}")]
    Footer(#[source] parquet::errors::ParquetError),
    #[error("Parquet columns: {0}")]
    Columns(#[source] HeaderError),
    #[error("stopped by the consumer")]
    Stopped,
}

/// One row of a Parquet object, or why it was refused.
pub enum ParquetItem<'a> {
    Row {
        line_no: u64,
        row: Row<'a>,
    },
    Rejected {
        line_no: u64,
        error: LineError,
        /// The row's cells as a JSON object (what quarantine keeps).
        raw: Vec<u8>,
    },
}

/// Reads every row of a Parquet object, one row group in memory at a time, handing each to
/// `each` (which returns `Err(())` to stop). Rows are numbered from 1 in file order: the
/// `source_line` of a Parquet row.
pub fn read_parquet<S: RangeSource>(
    source: S,
    mut each: impl FnMut(ParquetItem<'_>) -> Result<(), ()>,
) -> Result<ReadStats, ParquetError> {
    let ranged = Ranged {
        source: Arc::new(source),
        window: Arc::new(Mutex::new(None)),
    };
    let size = ranged.source.size();
    let reader = SerializedFileReader::new(ranged.clone()).map_err(ParquetError::Footer)?;
    let metadata = reader.metadata();
    let names: Vec<String> = metadata
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    // Checks the columns like a #Fields header: they must be able to date the rows.
    Header::from_names(names.iter().map(String::as_str)).map_err(ParquetError::Columns)?;

    let mut stats = ReadStats {
        bytes: size,
        ..ReadStats::default()
    };
    let mut builder = RowBuilder::default();
    let mut text = String::new();
    let mut cells: Vec<(Column, Option<Range<usize>>)> = Vec::new();
    let mut line_no = 0u64;
    for index in 0..metadata.num_row_groups() {
        let group = metadata.row_group(index);
        // One ranged read for the row group's column chunks, served from memory after.
        let span = group
            .columns()
            .iter()
            .fold(None, |span: Option<Range<u64>>, c| {
                let (start, len) = c.byte_range();
                let range = start..start + len;
                Some(match span {
                    Some(s) => s.start.min(range.start)..s.end.max(range.end),
                    None => range,
                })
            });
        ranged.load(span).map_err(|source| ParquetError::Read {
            row_group: index,
            source,
        })?;
        let read_error = |source| ParquetError::Read {
            row_group: index,
            source,
        };
        let group_reader = reader.get_row_group(index).map_err(read_error)?;
        let rows = group_reader.get_row_iter(None).map_err(read_error)?;
        for record in rows {
            let record = record.map_err(read_error)?;
            line_no += 1;
            stats.data_lines += 1;
            text.clear();
            cells.clear();
            for (name, field) in record.get_column_iter() {
                let start = text.len();
                let present = push_field(field, &mut text);
                cells.push((Column::named(name), present.then_some(start..text.len())));
            }
            builder.clear();
            let parsed = cells
                .iter()
                .try_for_each(|(column, range)| match range {
                    Some(r) => builder.put(column, &text[r.clone()], r.start),
                    None => {
                        builder.put_null(column);
                        Ok(())
                    }
                })
                .and_then(|()| builder.finish(&text));
            let item = match parsed {
                Ok(row) => {
                    stats.rows += 1;
                    ParquetItem::Row { line_no, row }
                }
                Err(error) => {
                    stats.rejected += 1;
                    let raw = raw_json(&record);
                    ParquetItem::Rejected {
                        line_no,
                        error,
                        raw,
                    }
                }
            };
            each(item).map_err(|()| ParquetError::Stopped)?;
        }
    }
    ranged.load(None).map_err(ParquetError::Footer)?;
    Ok(stats)
}

/// Appends a cell's text as the W3C output would log it; `false` for a null.
fn push_field(field: &Field, text: &mut String) -> bool {
    use std::fmt::Write;
    match field {
        Field::Null => return false,
        Field::Str(s) => text.push_str(s),
        Field::Bytes(b) => text.push_str(&String::from_utf8_lossy(b.data())),
        Field::Date(days) => {
            let (y, m, d) = super::parse::civil_from_days(*days);
            let _ = write!(text, "{y:04}-{m:02}-{d:02}");
        }
        // A typed timestamp column: written as the whole milliseconds `timestamp(ms)` has.
        Field::TimestampMillis(ms) => {
            let _ = write!(text, "{ms}");
        }
        Field::TimestampMicros(us) => {
            let _ = write!(text, "{}", us.div_euclid(1000));
        }
        other => {
            let _ = write!(text, "{other}");
        }
    }
    true
}

/// A refused row as a JSON object of its cells, for quarantine.
fn raw_json(record: &parquet::record::Row) -> Vec<u8> {
    let mut object = serde_json::Map::new();
    for (name, field) in record.get_column_iter() {
        let mut text = String::new();
        let value = if push_field(field, &mut text) {
            serde_json::Value::String(text)
        } else {
            serde_json::Value::Null
        };
        object.insert(name.clone(), value);
    }
    serde_json::Value::Object(object).to_string().into_bytes()
}

/// The Parquet reader's view of a [`RangeSource`]: reads inside the loaded window (one row
/// group's column chunks) are served from memory; anything else (the footer) is a ranged
/// read of its own.
struct Ranged<S> {
    source: Arc<S>,
    window: Arc<Mutex<Option<(u64, Bytes)>>>,
}

impl<S> Clone for Ranged<S> {
    fn clone(&self) -> Self {
        Ranged {
            source: Arc::clone(&self.source),
            window: Arc::clone(&self.window),
        }
    }
}

impl<S: RangeSource> Ranged<S> {
    /// Replaces the window with `span` (or frees it).
    fn load(&self, span: Option<Range<u64>>) -> parquet::errors::Result<()> {
        let mut window = self.window.lock().expect("window lock");
        *window = None;
        if let Some(span) = span {
            let bytes = self.source.read_range(span.start, span.end - span.start)?;
            *window = Some((span.start, bytes));
        }
        Ok(())
    }

    fn bytes(&self, start: u64, len: u64) -> io::Result<Bytes> {
        if let Some((at, bytes)) = self.window.lock().expect("window lock").as_ref() {
            let end = at + bytes.len() as u64;
            if start >= *at && start + len <= end {
                let from = (start - at) as usize;
                return Ok(bytes.slice(from..from + len as usize));
            }
        }
        self.source.read_range(start, len)
    }
}

impl<S: RangeSource> Length for Ranged<S> {
    fn len(&self) -> u64 {
        self.source.size()
    }
}

impl<S: RangeSource> ChunkReader for Ranged<S> {
    type T = RangedRead<S>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<RangedRead<S>> {
        Ok(RangedRead {
            ranged: self.clone(),
            position: start,
            buffer: Bytes::new(),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let bytes = self.bytes(start, length as u64)?;
        if bytes.len() != length {
            return Err(parquet::errors::ParquetError::EOF(format!(
                "{length} bytes at {start}: the object ends first"
            )));
        }
        Ok(bytes)
    }
}

/// A reader from an offset (page headers): from the window when it holds the offset, else
/// in ranged reads of 64 KiB.
struct RangedRead<S> {
    ranged: Ranged<S>,
    position: u64,
    buffer: Bytes,
}

impl<S: RangeSource> Read for RangedRead<S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.buffer.is_empty() {
            let size = self.ranged.source.size();
            if self.position >= size {
                return Ok(0);
            }
            let window = self.ranged.window.lock().expect("window lock").clone();
            self.buffer = match window {
                Some((at, bytes))
                    if self.position >= at && self.position < at + bytes.len() as u64 =>
                {
                    bytes.slice((self.position - at) as usize..)
                }
                _ => self
                    .ranged
                    .source
                    .read_range(self.position, (64 * 1024).min(size - self.position))?,
            };
            if self.buffer.is_empty() {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buffer.len());
        out[..n].copy_from_slice(&self.buffer[..n]);
        self.buffer = self.buffer.slice(n..);
        self.position += n as u64;
        Ok(n)
    }
}

/// Legacy log text (TAB-separated, all 33 fields, `#` lines skipped) as the same requests in
/// v2 Parquet: columns named as AWS documents them, values as logged (`-` is null).
pub fn legacy_text_as_parquet(
    text: &str,
    rows_per_group: usize,
) -> parquet::errors::Result<Vec<u8>> {
    let rows: Vec<Vec<Option<String>>> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            l.split('\t')
                .map(|v| (v != "-").then(|| v.to_string()))
                .collect()
        })
        .collect();
    let names: Vec<String> = super::LOG_FIELDS[..super::LEGACY_FIELDS]
        .iter()
        .map(|f| super::fields::underscored(f.log_name))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    write_parquet(&names, &rows, rows_per_group)
}

/// Writes string-typed rows as Parquet the way AWS documents the v2 output (one OPTIONAL
/// UTF8 column per field, named as given; `None` is null), `rows_per_group` rows to a row
/// group, Snappy-compressed. For tests, the corpus and `cf2bq gen`.
pub fn write_parquet(
    names: &[&str],
    rows: &[Vec<Option<String>>],
    rows_per_group: usize,
) -> parquet::errors::Result<Vec<u8>> {
    use parquet::basic::{Compression, ConvertedType, Repetition, Type as Physical};
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::types::Type;

    let fields = names
        .iter()
        .map(|name| {
            Type::primitive_type_builder(name, Physical::BYTE_ARRAY)
                .with_repetition(Repetition::OPTIONAL)
                .with_converted_type(ConvertedType::UTF8)
                .build()
                .map(Arc::new)
        })
        .collect::<parquet::errors::Result<Vec<_>>>()?;
    let schema = Arc::new(
        Type::group_type_builder("cloudfront_access_log")
            .with_fields(fields)
            .build()?,
    );
    let properties = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, properties)?;
    for group in rows.chunks(rows_per_group.max(1)) {
        let mut group_writer = writer.next_row_group()?;
        let mut column = 0;
        while let Some(mut column_writer) = group_writer.next_column()? {
            let values: Vec<ByteArray> = group
                .iter()
                .filter_map(|row| row[column].as_deref().map(ByteArray::from))
                .collect();
            let levels: Vec<i16> = group
                .iter()
                .map(|row| i16::from(row[column].is_some()))
                .collect();
            column_writer
                .typed::<ByteArrayType>()
                .write_batch(&values, Some(&levels), None)?;
            column_writer.close()?;
            column += 1;
        }
        group_writer.close()?;
    }
    writer.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudfront::fields::lookup;

    /// Counts the bytes each ranged read asks for.
    struct Counting {
        bytes: Bytes,
        reads: Mutex<Vec<(u64, u64)>>,
    }

    impl RangeSource for Arc<Counting> {
        fn size(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn read_range(&self, start: u64, len: u64) -> io::Result<Bytes> {
            self.reads.lock().unwrap().push((start, len));
            self.bytes.read_range(start, len)
        }
    }

    fn cell(s: &str) -> Option<String> {
        (s != "-").then(|| s.to_string())
    }

    #[test]
    fn rows_are_read_by_name_a_row_group_at_a_time() {
        let names = [
            "sc_status",
            "timestamp_ms",
            "c_ip",
            "cs_user_agent",
            "asn",
            "x_new",
        ];
        let rows: Vec<Vec<Option<String>>> = (0..10)
            .map(|i| {
                [
                    "200",
                    &format!("{}", 1_768_040_121_000i64 + i),
                    "203.0.113.10",
                    "Mozilla/5.0%20(X11)",
                    if i == 3 { "-" } else { "2516" },
                    "v",
                ]
                .map(cell)
                .to_vec()
            })
            .collect();
        let file = write_parquet(&names, &rows, 4).unwrap();
        let source = Arc::new(Counting {
            bytes: Bytes::from(file.clone()),
            reads: Mutex::new(Vec::new()),
        });
        let mut seen = Vec::new();
        let stats = read_parquet(Arc::clone(&source), |item| {
            let ParquetItem::Row { line_no, row } = item else {
                panic!("a row")
            };
            let get = |name| row.get(lookup(name).unwrap().0).to_string();
            seen.push((
                line_no,
                get("sc-status"),
                get("date"),
                get("time"),
                get("cs(User-Agent)"),
                get("asn"),
                row.timestamp_micros(),
                row.extra_fields().map(str::to_string),
            ));
            Ok(())
        })
        .unwrap();
        assert_eq!((stats.data_lines, stats.rows, stats.rejected), (10, 10, 0));
        assert_eq!(
            seen[3],
            (
                4,
                "200".to_string(),
                "2026-01-10".to_string(),
                "10:15:21".to_string(),
                "Mozilla/5.0 (X11)".to_string(),
                "NULL".to_string(),
                1_768_040_121_003_000,
                Some(r#"{"x_new":"v"}"#.to_string())
            )
        );
        // Three row groups (4 + 4 + 2 rows): each read whole in one ranged read, and no read
        // ever asks for the whole object.
        let reads = source.reads.lock().unwrap().clone();
        assert!(
            reads.iter().all(|(_, len)| *len < file.len() as u64),
            "{reads:?}"
        );
        let metadata = SerializedFileReader::new(Bytes::from(file))
            .unwrap()
            .metadata()
            .clone();
        assert_eq!(metadata.num_row_groups(), 3);
        for group in metadata.row_groups() {
            let start = group
                .columns()
                .iter()
                .map(|c| c.byte_range().0)
                .min()
                .unwrap();
            let end = group
                .columns()
                .iter()
                .map(|c| c.byte_range().0 + c.byte_range().1)
                .max()
                .unwrap();
            assert!(reads.contains(&(start, end - start)), "{reads:?}");
        }
    }

    #[test]
    fn bad_cells_reject_their_row_only_and_undatable_columns_refuse_the_object() {
        let names = ["date", "time", "sc_bytes"];
        let rows = vec![
            ["2026-01-10", "10:15:21", "12x"].map(cell).to_vec(),
            ["2026-01-10", "10:15:22", "512"].map(cell).to_vec(),
        ];
        let file = Bytes::from(write_parquet(&names, &rows, 100).unwrap());
        let mut items = Vec::new();
        read_parquet(file, |item| {
            items.push(match item {
                ParquetItem::Row { line_no, .. } => (line_no, "row".to_string(), Vec::new()),
                ParquetItem::Rejected {
                    line_no,
                    error,
                    raw,
                } => (line_no, error.to_string(), raw),
            });
            Ok(())
        })
        .unwrap();
        assert_eq!(
            items,
            vec![
                (
                    1,
                    "sc-bytes: `12x` is not a valid integer".to_string(),
                    br#"{"date":"2026-01-10","sc_bytes":"12x","time":"10:15:21"}"#.to_vec()
                ),
                (2, "row".to_string(), Vec::new()),
            ]
        );

        let file = Bytes::from(write_parquet(&["c_ip", "sc_status"], &[], 10).unwrap());
        let error = read_parquet(file, |_| Ok(())).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("neither `date` and `time` nor `timestamp(ms)`"),
            "{error}"
        );
        let error = read_parquet(Bytes::from_static(b"PAR1 not really"), |_| Ok(())).unwrap_err();
        assert!(matches!(error, ParquetError::Footer(_)), "{error}");
    }
}
