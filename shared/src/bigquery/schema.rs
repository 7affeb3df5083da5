//! The table schema: one column per CloudFront field, the request timestamp, a catch-all for
//! fields this version does not know, and lineage. The same list drives the REST table
//! definition and the Storage Write protobuf descriptor, so the two cannot drift apart.

use gcp_bigquery_client::model::{
    field_type::FieldType, table_field_schema::TableFieldSchema, table_schema::TableSchema,
};
use prost_types::{field_descriptor_proto, DescriptorProto, FieldDescriptorProto};

use crate::cloudfront::fields::{FieldId, FieldKind, LEGACY_FIELDS, LOG_FIELDS};

/// BigQuery column types we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Date,
    Time,
    Timestamp,
    String,
    Int64,
    Float64,
    Json,
}

/// Where a column's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A CloudFront field.
    Field(FieldId),
    /// The request's date and time combined.
    RequestTime,
    /// Fields this version does not know, as a JSON object.
    ExtraFields,
    /// Raw logged values whose decoding was ambiguous, as a JSON object.
    RawFields,
    /// `s3://bucket/key` (or a local path) of the object the row came from.
    SourceObject,
    /// 1-based line number in the decompressed object.
    SourceLine,
    /// When the row was written.
    IngestTime,
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub column_type: ColumnType,
    pub source: Source,
    pub description: &'static str,
}

impl ColumnType {
    fn field_type(self) -> FieldType {
        match self {
            ColumnType::Date => FieldType::Date,
            ColumnType::Time => FieldType::Time,
            ColumnType::Timestamp => FieldType::Timestamp,
            ColumnType::String => FieldType::String,
            ColumnType::Int64 => FieldType::Integer,
            ColumnType::Float64 => FieldType::Float,
            ColumnType::Json => FieldType::Json,
        }
    }

    /// The protobuf type of the Storage Write encoding: DATE is int32 days since the epoch,
    /// TIMESTAMP int64 microseconds, TIME and JSON their canonical strings.
    fn proto_type(self) -> field_descriptor_proto::Type {
        use field_descriptor_proto::Type;
        match self {
            ColumnType::Date => Type::Int32,
            ColumnType::Timestamp | ColumnType::Int64 => Type::Int64,
            ColumnType::Float64 => Type::Double,
            ColumnType::Time | ColumnType::String | ColumnType::Json => Type::String,
        }
    }

    fn of_field(kind: FieldKind) -> ColumnType {
        match kind {
            FieldKind::Date => ColumnType::Date,
            FieldKind::Time => ColumnType::Time,
            FieldKind::Text | FieldKind::Encoded(_) => ColumnType::String,
            FieldKind::Int => ColumnType::Int64,
            FieldKind::Float => ColumnType::Float64,
            FieldKind::EpochMillis | FieldKind::EpochSeconds => ColumnType::Timestamp,
        }
    }
}

/// All columns, in table order: the legacy fields, the extra columns and lineage, then the
/// fields standard logging v2 added. New fields are appended, so a new table and an older
/// one patched by the keeper (which adds missing columns at the end) have the same order.
pub fn columns() -> &'static [Column] {
    static COLUMNS: std::sync::OnceLock<Vec<Column>> = std::sync::OnceLock::new();
    COLUMNS.get_or_init(|| {
        let mut columns = Vec::with_capacity(LOG_FIELDS.len() + 6);
        let field_column = |id: FieldId| Column {
            name: LOG_FIELDS[id].column,
            column_type: ColumnType::of_field(LOG_FIELDS[id].kind),
            source: Source::Field(id),
            description: LOG_FIELDS[id].log_name,
        };
        columns.push(field_column(0));
        columns.push(field_column(1));
        columns.push(Column {
            name: "request_time",
            column_type: ColumnType::Timestamp,
            source: Source::RequestTime,
            description: "date + time of the request, UTC",
        });
        columns.extend((2..LEGACY_FIELDS).map(field_column));
        columns.extend([
            Column {
                name: "extra_fields",
                column_type: ColumnType::Json,
                source: Source::ExtraFields,
                description: "#Fields this cf2bq version does not know yet: {name: value}",
            },
            Column {
                name: "raw_fields",
                column_type: ColumnType::Json,
                source: Source::RawFields,
                description: "raw logged values whose URL-decoding was ambiguous: {column: raw}",
            },
            Column {
                name: "source_object",
                column_type: ColumnType::String,
                source: Source::SourceObject,
                description: "s3://bucket/key the row was read from",
            },
            Column {
                name: "source_line",
                column_type: ColumnType::Int64,
                source: Source::SourceLine,
                description: "1-based line number in the decompressed object",
            },
            Column {
                name: "ingest_time",
                column_type: ColumnType::Timestamp,
                source: Source::IngestTime,
                description: "when cf2bq wrote the row",
            },
        ]);
        columns.extend((LEGACY_FIELDS..LOG_FIELDS.len()).map(field_column));
        columns
    })
}

/// The REST table schema.
pub fn table_schema() -> TableSchema {
    TableSchema::new(
        columns()
            .iter()
            .map(|c| {
                let mut f = TableFieldSchema::new(c.name, c.column_type.field_type());
                f.description = Some(c.description.to_string());
                f
            })
            .collect(),
    )
}

/// The Storage Write writer schema: field number = column position + 1.
pub fn proto_descriptor() -> DescriptorProto {
    descriptor(
        "CloudFrontLogRow",
        columns()
            .iter()
            .map(|c| (c.name, c.column_type.proto_type())),
    )
}

/// A flat proto2 message of optional fields numbered from 1, as Storage Write expects.
pub(crate) fn descriptor<'a>(
    name: &str,
    fields: impl Iterator<Item = (&'a str, field_descriptor_proto::Type)>,
) -> DescriptorProto {
    DescriptorProto {
        name: Some(name.to_string()),
        field: fields
            .enumerate()
            .map(|(i, (name, kind))| FieldDescriptorProto {
                name: Some(name.to_string()),
                number: Some(i as i32 + 1),
                label: Some(field_descriptor_proto::Label::Optional as i32),
                r#type: Some(kind as i32),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}
