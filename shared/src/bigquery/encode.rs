//! A parsed row → its Storage Write protobuf encoding, written straight into a reused buffer
//! (no intermediate message structs). Field numbers follow [`super::schema::columns`].
//!
//! This runs once per log line, so it is kept tight: columns and their field numbers are
//! laid out once per object, varints are written by hand (prost's generic writer goes
//! through `BufMut` a byte at a time), and the buffer grows at most once per row.

use super::schema::{columns, Source};
use crate::cloudfront::{Row, Value};
use crate::privacy::Privacy;

/// Protobuf wire types used here.
pub(crate) const VARINT: u32 = 0;
pub(crate) const FIXED64: u32 = 1;
pub(crate) const LEN: u32 = 2;

/// Encodes rows of one object. Lineage values are fixed per object.
#[derive(Debug, Clone)]
pub struct RowEncoder {
    /// Every column's source with its field number, in table order.
    plan: Vec<(Source, u32)>,
    /// The two per-object columns, encoded once (tag, length and bytes).
    source_object: Vec<u8>,
    ingest_time: Vec<u8>,
    /// Privacy controls, when any is on.
    privacy: Option<std::sync::Arc<Privacy>>,
}

impl RowEncoder {
    pub fn new(source_object: impl Into<String>, ingest_micros: i64) -> Self {
        let (mut source_object_field, mut ingest_time) = (Vec::new(), Vec::new());
        put_str(
            field_number(Source::SourceObject),
            &source_object.into(),
            &mut source_object_field,
        );
        put_int(
            field_number(Source::IngestTime),
            ingest_micros,
            &mut ingest_time,
        );
        RowEncoder {
            plan: columns()
                .iter()
                .enumerate()
                .map(|(i, c)| (c.source, i as u32 + 1))
                .collect(),
            source_object: source_object_field,
            ingest_time,
            privacy: None,
        }
    }

    /// Applies `privacy` to every row before it is encoded (what is removed never leaves).
    pub fn with_privacy(mut self, privacy: &Privacy) -> Self {
        self.privacy = privacy
            .is_on()
            .then(|| std::sync::Arc::new(privacy.clone()));
        self
    }

    /// Whether privacy controls change rows before they are encoded.
    pub(crate) fn has_privacy(&self) -> bool {
        self.privacy.is_some()
    }

    /// The encoded `source_object` and `ingest_time` columns (key, length, bytes), the same
    /// for every row of the object.
    pub(crate) fn lineage(&self) -> (&[u8], &[u8]) {
        (&self.source_object, &self.ingest_time)
    }

    /// Appends the encoded row to `out`.
    pub fn encode(&self, row: &Row<'_>, line_no: u64, out: &mut Vec<u8>) {
        // Every string of the row plus each column's key, length or number: one reserve,
        // then no push reallocates.
        out.reserve(
            row.text_bytes()
                + self.plan.len() * 16
                + self.source_object.len()
                + self.ingest_time.len(),
        );
        let mut private = String::new();
        for &(source, tag) in &self.plan {
            match source {
                // Without privacy controls (the usual case) the value goes straight from the
                // row's slot to its encoding, which the compiler then does in one dispatch.
                Source::Field(id) => match &self.privacy {
                    Some(privacy) => {
                        private.clear();
                        put_value(tag, privacy.apply(id, row.get(id), &mut private), out)
                    }
                    None => put_value(tag, row.get(id), out),
                },
                Source::RequestTime => put_int(tag, row.timestamp_micros(), out),
                Source::ExtraFields => {
                    if let Some(json) = row.extra_fields() {
                        put_str(tag, json, out)
                    }
                }
                Source::RawFields => {
                    if let Some(json) = row.raw_fields() {
                        put_str(tag, json, out)
                    }
                }
                Source::SourceObject => out.extend_from_slice(&self.source_object),
                Source::SourceLine => put_int(tag, line_no as i64, out),
                Source::IngestTime => out.extend_from_slice(&self.ingest_time),
            }
        }
    }
}

#[inline(always)]
fn put_value(tag: u32, value: Value<'_>, out: &mut Vec<u8>) {
    match value {
        Value::Null => {}
        Value::Text(s) | Value::Time(_, s) => put_str(tag, s, out),
        Value::Int(v) => put_int(tag, v, out),
        Value::Float(v) => {
            put_varint(u64::from(tag << 3 | FIXED64), out);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::Date(d) => put_int(tag, i64::from(d), out),
        Value::Timestamp(micros) => put_int(tag, micros, out),
    }
}

/// The protobuf field number of a column: its place in table order, from 1.
pub(crate) fn field_number(source: Source) -> u32 {
    columns()
        .iter()
        .position(|c| c.source == source)
        .expect("every source has a column") as u32
        + 1
}

#[inline(always)]
pub(crate) fn put_str(tag: u32, s: &str, out: &mut Vec<u8>) {
    put_varint(u64::from(tag << 3 | LEN), out);
    put_varint(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

/// Varint of the two's-complement value: how protobuf encodes int32 and int64 alike.
#[inline(always)]
pub(crate) fn put_int(tag: u32, v: i64, out: &mut Vec<u8>) {
    put_varint(u64::from(tag << 3 | VARINT), out);
    put_varint(v as u64, out);
}

/// Bytes of the varint of `v`.
#[inline]
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline(always)]
pub(crate) fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_keys_match_prost() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
            (-5i64) as u64,
        ] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_varint(v, &mut ours);
            prost::encoding::encode_varint(v, &mut theirs);
            assert_eq!(ours, theirs, "{v}");
            assert_eq!(varint_len(v), theirs.len(), "{v}");
        }
        for tag in [1u32, 15, 16, 40, 2047] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            put_str(tag, "abc", &mut ours);
            prost::encoding::encode_key(
                tag,
                prost::encoding::WireType::LengthDelimited,
                &mut theirs,
            );
            prost::encoding::encode_varint(3, &mut theirs);
            theirs.extend_from_slice(b"abc");
            assert_eq!(ours, theirs, "{tag}");
        }
    }
}
