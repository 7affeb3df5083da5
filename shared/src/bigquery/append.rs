//! AppendRows requests encoded by hand around a batch's already framed [`Rows`], and the
//! gRPC codec that sends them. prost's `AppendRowsRequest` holds a `Vec<Vec<u8>>` (one
//! allocation per row) and resending it meant cloning every row; here a request shares its
//! rows (`Bytes`), and encoding it copies them once, into the gRPC frame. The bytes on the
//! wire are exactly prost's (a unit test compares them).

use bytes::{BufMut, Bytes};
use gcp_bigquery_client::google::cloud::bigquery::storage::v1::{AppendRowsResponse, ProtoSchema};
use prost::Message;
use prost_types::DescriptorProto;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use super::encode::varint_len;
use super::rows::Rows;

/// Length-delimited keys of the fields written here (all are field 1, 2 or 4).
const fn len_key(field: u8) -> u8 {
    field << 3 | 2
}

/// One AppendRows request: a batch of rows for `stream` at `offset`, with the writer schema
/// when it opens a connection. Cloning it shares the rows.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    stream: std::sync::Arc<str>,
    offset: i64,
    /// The encoded `ProtoSchema`, on the first request of a connection.
    schema: Option<Bytes>,
    /// The encoded `ProtoRows` message.
    rows: Bytes,
    count: usize,
}

impl AppendRequest {
    pub fn new(stream: std::sync::Arc<str>, offset: i64, rows: Rows) -> AppendRequest {
        let count = rows.len();
        AppendRequest {
            stream,
            offset,
            schema: None,
            rows: Bytes::from(rows.into_body()),
            count,
        }
    }

    /// This request carrying the writer schema (encoded by [`encode_schema`]).
    pub fn with_schema(&self, schema: Bytes) -> AppendRequest {
        AppendRequest {
            schema: Some(schema),
            ..self.clone()
        }
    }

    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Rows in the request.
    pub fn rows(&self) -> usize {
        self.count
    }

    pub fn has_schema(&self) -> bool {
        self.schema.is_some()
    }

    /// The `Int64Value` of the offset: its field 1, omitted when 0 (proto3 default).
    fn offset_len(&self) -> usize {
        match self.offset {
            0 => 0,
            v => 1 + varint_len(v as u64),
        }
    }

    fn proto_data_len(&self) -> usize {
        let schema = self.schema.as_ref().map_or(0, |s| field_len(s.len()));
        schema + field_len(self.rows.len())
    }

    /// Size of the encoded request.
    pub fn encoded_len(&self) -> usize {
        let stream = match self.stream.len() {
            0 => 0,
            n => field_len(n),
        };
        stream + field_len(self.offset_len()) + field_len(self.proto_data_len())
    }

    /// Writes the request as prost encodes `AppendRowsRequest`: fields in tag order, an
    /// empty `write_stream` omitted, `offset` always present.
    pub fn encode(&self, out: &mut impl BufMut) {
        if !self.stream.is_empty() {
            put_bytes(out, 1, self.stream.as_bytes());
        }
        out.put_u8(len_key(2));
        put_varint_buf(out, self.offset_len() as u64);
        if self.offset != 0 {
            out.put_u8(1 << 3);
            put_varint_buf(out, self.offset as u64);
        }
        out.put_u8(len_key(4));
        put_varint_buf(out, self.proto_data_len() as u64);
        if let Some(schema) = &self.schema {
            put_bytes(out, 1, schema);
        }
        put_bytes(out, 2, &self.rows);
    }

    pub fn encode_to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }
}

/// The writer schema as a request carries it (an encoded `ProtoSchema`).
pub fn encode_schema(descriptor: &DescriptorProto) -> Bytes {
    Bytes::from(
        ProtoSchema {
            proto_descriptor: Some(descriptor.clone()),
        }
        .encode_to_vec(),
    )
}

/// Key, length and `len` bytes of a length-delimited field.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn put_bytes(out: &mut impl BufMut, field: u8, bytes: &[u8]) {
    out.put_u8(len_key(field));
    put_varint_buf(out, bytes.len() as u64);
    out.put_slice(bytes);
}

fn put_varint_buf(out: &mut impl BufMut, mut v: u64) {
    let mut tmp = [0u8; 10];
    let mut n = 0;
    while v >= 0x80 {
        tmp[n] = v as u8 | 0x80;
        v >>= 7;
        n += 1;
    }
    tmp[n] = v as u8;
    out.put_slice(&tmp[..=n]);
}

/// Sends [`AppendRequest`]s and reads prost-decoded responses.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AppendCodec;

pub(crate) struct RequestEncoder;

pub(crate) struct ResponseDecoder;

impl Codec for AppendCodec {
    type Encode = AppendRequest;
    type Decode = AppendRowsResponse;
    type Encoder = RequestEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RequestEncoder {
        RequestEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl Encoder for RequestEncoder {
    type Item = AppendRequest;
    type Error = Status;

    fn encode(&mut self, item: AppendRequest, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = AppendRowsResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<AppendRowsResponse>, Status> {
        AppendRowsResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bigquery::schema::proto_descriptor;
    use gcp_bigquery_client::google::cloud::bigquery::storage::v1::{
        append_rows_request, AppendRowsRequest, ProtoRows,
    };

    fn prost_request(
        stream: &str,
        offset: i64,
        rows: &[Vec<u8>],
        schema: Option<&DescriptorProto>,
    ) -> AppendRowsRequest {
        AppendRowsRequest {
            write_stream: stream.to_string(),
            offset: Some(offset),
            rows: Some(append_rows_request::Rows::ProtoRows(
                append_rows_request::ProtoData {
                    writer_schema: schema.map(|d| ProtoSchema {
                        proto_descriptor: Some(d.clone()),
                    }),
                    rows: Some(ProtoRows {
                        serialized_rows: rows.to_vec(),
                    }),
                },
            )),
            ..Default::default()
        }
    }

    #[test]
    fn requests_encode_byte_for_byte_as_prost() {
        let descriptor = proto_descriptor();
        let schema = encode_schema(&descriptor);
        let batches: [Vec<Vec<u8>>; 3] = [
            vec![],
            vec![vec![1, 2, 3]],
            (0..300).map(|i| vec![i as u8; i * 7]).collect(),
        ];
        let long_stream = "projects/p/datasets/d/tables/t/streams/".repeat(5);
        for stream in ["", "s", long_stream.as_str()] {
            for offset in [0i64, 1, 127, 128, 1 << 40] {
                for rows in &batches {
                    let ours = AppendRequest::new(stream.into(), offset, rows.iter().collect());
                    assert_eq!(ours.rows(), rows.len());
                    for (ours, schema_in) in [
                        (ours.clone(), None),
                        (ours.with_schema(schema.clone()), Some(&descriptor)),
                    ] {
                        let theirs = prost_request(stream, offset, rows, schema_in);
                        let bytes = ours.encode_to_vec();
                        assert_eq!(bytes, theirs.encode_to_vec(), "{stream} {offset}");
                        assert_eq!(ours.encoded_len(), theirs.encoded_len());
                        assert_eq!(AppendRowsRequest::decode(bytes.as_slice()).unwrap(), theirs);
                    }
                }
            }
        }
    }
}
