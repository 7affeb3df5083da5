//! Standard logging v2's JSON output: one object per line, keyed by field name.
//!
//! Names may be hyphenated as in the field list (`cs(User-Agent)`, `timestamp(ms)`) or
//! underscored (`cs_user_agent`, `timestamp_ms`); values may be strings or numbers. Each line
//! names its own fields, so the mapping is looked up per key (and cached per file).

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::fields::FieldId;
use super::parse::{check_dated, Column, HeaderError, LineError, Row, RowBuilder};

/// Parses the JSON lines of one file. Reuse it for every line: its buffers are kept.
#[derive(Debug, Default)]
pub struct JsonParser {
    builder: RowBuilder,
    /// Every value of the line, one after another: what the row's text slices point into.
    text: String,
    /// (name, where its value is in `text`; `None` for JSON `null`).
    cells: Vec<(String, Option<Range<usize>>)>,
    columns: HashMap<String, Column>,
}

impl JsonParser {
    /// Parses one line (without its line end).
    pub fn parse<'a>(&'a mut self, line: &[u8]) -> Result<Row<'a>, LineError> {
        let line = std::str::from_utf8(line).map_err(|e| LineError::InvalidUtf8 {
            offset: e.valid_up_to(),
        })?;
        self.read_cells(line)?;
        self.builder.clear();
        for (name, range) in &self.cells {
            let column = self
                .columns
                .entry(name.clone())
                .or_insert_with(|| Column::named(name));
            match range {
                Some(r) => self.builder.put(column, &self.text[r.clone()], r.start)?,
                None => self.builder.put_null(column),
            }
        }
        self.builder.finish(&self.text)
    }

    /// Checks that a file's first line names fields that can date its rows: JSON output
    /// without `date`/`time` and without a timestamp cannot be routed, so the whole object is
    /// refused (a later line that lacks them is only that line's error).
    pub fn check_first_line(&mut self, line: &[u8]) -> Result<(), HeaderError> {
        let Ok(text) = std::str::from_utf8(line) else {
            return Ok(());
        };
        if self.read_cells(text).is_err() {
            return Ok(());
        }
        let ids: Vec<FieldId> = self
            .cells
            .iter()
            .filter_map(|(name, _)| match Column::named(name) {
                Column::Known(id, _) => Some(id),
                Column::Unknown(_) => None,
            })
            .collect();
        check_dated(ids.into_iter())
    }

    /// Reads the line's members into `cells` and `text`, in their order.
    fn read_cells(&mut self, line: &str) -> Result<(), LineError> {
        self.text.clear();
        self.cells.clear();
        let bad = |e: serde_json::Error| LineError::BadJson {
            detail: e.to_string(),
        };
        let mut de = serde_json::Deserializer::from_str(line);
        Members {
            text: &mut self.text,
            cells: &mut self.cells,
        }
        .deserialize(&mut de)
        .map_err(bad)?;
        de.end().map_err(bad)
    }
}

/// Collects an object's members: strings as they are, numbers and booleans as their JSON
/// text, nested values as JSON text.
struct Members<'p> {
    text: &'p mut String,
    cells: &'p mut Vec<(String, Option<Range<usize>>)>,
}

impl<'de> DeserializeSeed<'de> for Members<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Members<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde_json::Value;
        while let Some(name) = map.next_key::<String>()? {
            let value: Value = map.next_value()?;
            let start = self.text.len();
            match value {
                Value::Null => {
                    self.cells.push((name, None));
                    continue;
                }
                Value::String(s) => self.text.push_str(&s),
                other => self.text.push_str(&other.to_string()),
            }
            self.cells.push((name, Some(start..self.text.len())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudfront::fields::{field_id, lookup};
    use crate::cloudfront::Value;

    fn get<'a>(row: &Row<'a>, name: &str) -> Value<'a> {
        row.get(lookup(name).unwrap().0)
    }

    #[test]
    fn hyphenated_or_underscored_names_and_string_or_number_values() {
        let mut parser = JsonParser::default();
        for line in [
            r#"{"timestamp(ms)":"1768040121123","c-ip":"203.0.113.10","sc-status":"200","time-taken":"0.002","cs(User-Agent)":"Mozilla/5.0%20(X11)","asn":"2516","x-new":"v"}"#,
            r#"{"timestamp_ms":1768040121123,"c_ip":"203.0.113.10","sc_status":200,"time_taken":0.002,"cs_user_agent":"Mozilla/5.0%20(X11)","asn":2516,"x-new":"v"}"#,
        ] {
            let row = parser.parse(line.as_bytes()).unwrap();
            assert_eq!(get(&row, "sc-status"), Value::Int(200));
            assert_eq!(get(&row, "time-taken"), Value::Float(0.002));
            assert_eq!(get(&row, "asn"), Value::Int(2516));
            assert_eq!(get(&row, "c-ip"), Value::Text("203.0.113.10"));
            assert_eq!(
                get(&row, "cs(User-Agent)"),
                Value::Text("Mozilla/5.0 (X11)")
            );
            assert_eq!(
                row.get(field_id("timestamp(ms)").unwrap()),
                Value::Timestamp(1_768_040_121_123_000)
            );
            // No date and time in the line: both come from the timestamp.
            assert_eq!(get(&row, "date").to_string(), "2026-01-10");
            assert_eq!(get(&row, "time").to_string(), "10:15:21");
            assert_eq!(row.timestamp_micros(), 1_768_040_121_123_000);
            assert_eq!(row.extra_fields(), Some(r#"{"x-new":"v"}"#));
        }
    }

    #[test]
    fn escaped_strings_nulls_and_bad_lines() {
        let mut parser = JsonParser::default();
        let row = parser
            .parse(br#"{"date":"2026-01-10","time":"10:15:21","cs-uri-query":"a=\"b\"","cs(Cookie)":null,"x-new":null}"#)
            .unwrap();
        assert_eq!(get(&row, "cs-uri-query"), Value::Text("a=\"b\""));
        assert_eq!(get(&row, "cs(Cookie)"), Value::Null);
        assert_eq!(row.extra_fields(), Some(r#"{"x-new":null}"#));
        assert_eq!(row.timestamp_micros(), 1_768_040_121_000_000);

        let error = parser.parse(b"[1,2]").unwrap_err();
        assert_eq!(error.code(), "bad_json");
        let error = parser
            .parse(br#"{"date":"2026-01-10","time":"10:15:21"} x"#)
            .unwrap_err();
        assert_eq!(error.code(), "bad_json");
        let error = parser
            .parse(br#"{"date":"2026-01-10","time":"10:15:21","sc-bytes":"12x"}"#)
            .unwrap_err();
        assert_eq!(error.to_string(), "sc-bytes: `12x` is not a valid integer");
        let error = parser.parse(br#"{"timestamp(ms)":null}"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "timestamp(ms) is `-` but every row needs a date and time"
        );
    }

    #[test]
    fn a_first_line_that_cannot_be_dated_refuses_the_file() {
        let mut parser = JsonParser::default();
        assert_eq!(
            parser.check_first_line(br#"{"c-ip":"192.0.2.1","sc-status":200}"#),
            Err(HeaderError::NoTimestamp)
        );
        assert_eq!(
            parser.check_first_line(br#"{"timestamp":1768040121.5}"#),
            Ok(())
        );
        assert_eq!(
            parser.check_first_line(br#"{"date":"2026-01-10","time":"10:00:00"}"#),
            Ok(())
        );
    }
}
