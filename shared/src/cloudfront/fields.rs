//! The CloudFront standard-log fields we know, and how each one becomes a BigQuery column.
//!
//! Files are mapped **by their `#Fields` header**, never by position: files from different
//! years carry 12, 18, 19, 24, 26 or 33 fields and AWS appends new ones over time. A field
//! that is not in this catalog is still kept, in the `extra_fields` JSON column.

/// How the text of a field is turned into a typed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// `YYYY-MM-DD`, UTC.
    Date,
    /// `HH:MM:SS`, UTC.
    Time,
    /// Plain text, stored as logged.
    Text,
    /// Text carrying CloudFront's URL-encoding, decoded by the rule in [`super::decode`].
    Encoded(Encoding),
    /// A signed 64-bit integer (`000` parses as 0).
    Int,
    /// A decimal number (seconds with millisecond precision).
    Float,
    /// A Unix time in milliseconds (`timestamp(ms)` of standard logging v2).
    EpochMillis,
    /// A Unix time in seconds with a millisecond fraction (`timestamp` of real-time logs).
    EpochSeconds,
}

/// Which decoding rule applies to an encoded field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Values the client sent already percent-encoded (URI stem, query): CloudFront adds one
    /// layer; we remove exactly one, giving back the bytes on the request line.
    OneLayer,
    /// Header values the client sent as raw text (User-Agent, Referer): CloudFront encodes them
    /// once or twice depending on the era; we remove up to two layers.
    UpToTwoLayers,
}

/// One known CloudFront field.
#[derive(Debug, Clone, Copy)]
pub struct LogField {
    /// Name in the `#Fields` header.
    pub log_name: &'static str,
    /// BigQuery column name.
    pub column: &'static str,
    pub kind: FieldKind,
}

const fn field(log_name: &'static str, column: &'static str, kind: FieldKind) -> LogField {
    LogField {
        log_name,
        column,
        kind,
    }
}

use Encoding::*;
use FieldKind::*;

/// Every field of the legacy 33-field format, in header order, then the fields standard
/// logging v2 added (access-log fields 34 and 35, and the real-time fields v2 can carry).
/// The index of a field in this array is its [`FieldId`]; new fields are only ever appended.
pub const LOG_FIELDS: [LogField; 41] = [
    field("date", "log_date", Date),
    field("time", "log_time", Time),
    field("x-edge-location", "x_edge_location", Text),
    field("sc-bytes", "sc_bytes", Int),
    field("c-ip", "c_ip", Text),
    field("cs-method", "cs_method", Text),
    field("cs(Host)", "cs_host", Text),
    field("cs-uri-stem", "cs_uri_stem", Encoded(OneLayer)),
    field("sc-status", "sc_status", Int),
    field("cs(Referer)", "cs_referer", Encoded(UpToTwoLayers)),
    field("cs(User-Agent)", "cs_user_agent", Encoded(UpToTwoLayers)),
    field("cs-uri-query", "cs_uri_query", Encoded(OneLayer)),
    field("cs(Cookie)", "cs_cookie", Text),
    field("x-edge-result-type", "x_edge_result_type", Text),
    field("x-edge-request-id", "x_edge_request_id", Text),
    field("x-host-header", "x_host_header", Text),
    field("cs-protocol", "cs_protocol", Text),
    field("cs-bytes", "cs_bytes", Int),
    field("time-taken", "time_taken", Float),
    field("x-forwarded-for", "x_forwarded_for", Text),
    field("ssl-protocol", "ssl_protocol", Text),
    field("ssl-cipher", "ssl_cipher", Text),
    field(
        "x-edge-response-result-type",
        "x_edge_response_result_type",
        Text,
    ),
    field("cs-protocol-version", "cs_protocol_version", Text),
    field("fle-status", "fle_status", Text),
    field("fle-encrypted-fields", "fle_encrypted_fields", Int),
    field("c-port", "c_port", Int),
    field("time-to-first-byte", "time_to_first_byte", Float),
    field(
        "x-edge-detailed-result-type",
        "x_edge_detailed_result_type",
        Text,
    ),
    field("sc-content-type", "sc_content_type", Text),
    field("sc-content-len", "sc_content_len", Int),
    field("sc-range-start", "sc_range_start", Int),
    field("sc-range-end", "sc_range_end", Int),
    // Standard logging v2 (2024) and later.
    field("distribution-tenant-id", "distribution_tenant_id", Text),
    field("connection-id", "connection_id", Text),
    field("timestamp(ms)", "timestamp", EpochMillis),
    field("c-country", "c_country", Text),
    field("asn", "asn", Int),
    field("origin-fbl", "origin_fbl", Float),
    field("origin-lbl", "origin_lbl", Float),
    field(
        "cache-behavior-path-pattern",
        "cache_behavior_path_pattern",
        Text,
    ),
];

/// How many fields the legacy format has at most: [`LOG_FIELDS`] up to `sc-range-end`.
pub const LEGACY_FIELDS: usize = 33;

/// Index into [`LOG_FIELDS`].
pub type FieldId = usize;

pub const DATE: FieldId = 0;
pub const TIME: FieldId = 1;
pub const COOKIE: FieldId = 12;
pub const C_IP: FieldId = 4;
pub const X_FORWARDED_FOR: FieldId = 19;
/// `timestamp(ms)`: what dates a row when the file has no `date` and `time`.
pub const TIMESTAMP: FieldId = 35;

/// Looks a `#Fields` name up in the catalog.
pub fn field_id(log_name: &str) -> Option<FieldId> {
    LOG_FIELDS.iter().position(|f| f.log_name == log_name)
}

/// Looks a field name up as any v2 output spells it: the `#Fields` name (`cs(Host)`,
/// `timestamp(ms)`), the BigQuery column, or the underscored form of the Parquet output and
/// of JSON (`cs_host`, `timestamp_ms`), in any case. Real-time logs' `timestamp` (seconds
/// with a fraction) is the same column as `timestamp(ms)`, read with its own kind.
pub fn lookup(name: &str) -> Option<(FieldId, FieldKind)> {
    if let Some(id) = field_id(name) {
        return Some((id, LOG_FIELDS[id].kind));
    }
    let wanted = underscored(name);
    if wanted == "timestamp" {
        return Some((TIMESTAMP, EpochSeconds));
    }
    let id = LOG_FIELDS
        .iter()
        .position(|f| underscored(f.log_name) == wanted || f.column == wanted)?;
    Some((id, LOG_FIELDS[id].kind))
}

/// `cs(User-Agent)` → `cs_user_agent`: lower case, runs of `-`, `(`, `)`, `_` or spaces
/// become one `_`, none at either end.
pub fn underscored(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_names_are_unique_and_dates_come_first() {
        for (i, a) in LOG_FIELDS.iter().enumerate() {
            for b in &LOG_FIELDS[i + 1..] {
                assert_ne!(a.log_name, b.log_name);
                assert_ne!(a.column, b.column);
            }
        }
        assert_eq!(field_id("date"), Some(DATE));
        assert_eq!(field_id("time"), Some(TIME));
        assert_eq!(field_id("sc-range-end"), Some(LEGACY_FIELDS - 1));
        assert_eq!(field_id("timestamp(ms)"), Some(TIMESTAMP));
        for (id, name) in [(COOKIE, "cs(Cookie)"), (C_IP, "c-ip")] {
            assert_eq!(LOG_FIELDS[id].log_name, name);
        }
        assert_eq!(LOG_FIELDS[X_FORWARDED_FOR].log_name, "x-forwarded-for");
    }

    #[test]
    fn names_are_found_hyphenated_underscored_or_as_columns() {
        let id = |name| lookup(name).map(|(id, _)| LOG_FIELDS[id].column);
        assert_eq!(id("cs(User-Agent)"), Some("cs_user_agent"));
        assert_eq!(id("cs_user_agent"), Some("cs_user_agent"));
        assert_eq!(id("CS_HOST"), Some("cs_host"));
        assert_eq!(id("x_edge_location"), Some("x_edge_location"));
        assert_eq!(id("log_date"), Some("log_date"));
        assert_eq!(id("date"), Some("log_date"));
        assert_eq!(id("timestamp_ms"), Some("timestamp"));
        assert_eq!(id("c_country"), Some("c_country"));
        assert_eq!(
            id("cache_behavior_path_pattern"),
            Some("cache_behavior_path_pattern")
        );
        assert_eq!(id("x-future-field"), None);
        assert_eq!(lookup("timestamp(ms)"), Some((TIMESTAMP, EpochMillis)));
        assert_eq!(lookup("timestamp"), Some((TIMESTAMP, EpochSeconds)));
    }
}
