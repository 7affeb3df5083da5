//! Event shapes that announce new log objects → the objects to ingest.
//!
//! Parsed tolerantly from JSON, reading only the fields we use: real S3 sends more fields
//! than some emulators do, and we must not depend on them.

use std::fmt;

use serde_json::Value;

/// An S3 object announced for ingestion.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectRef {
    pub bucket: String,
    /// The key, decoded (S3 notifications URL-encode it).
    pub key: String,
    pub size: Option<u64>,
    /// ETag without quotes.
    pub etag: Option<String>,
    pub version_id: Option<String>,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// What one notification asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// Objects to ingest (an S3 notification can carry several records). `force`: a replay
    /// asking to re-ingest objects already done, replacing their rows.
    Objects {
        objects: Vec<ObjectRef>,
        force: bool,
    },
    /// `s3:TestEvent`, sent when a bucket notification is wired: acknowledge and skip.
    TestEvent,
    /// Not an object-created event (e.g. a delete): acknowledge and skip, saying why.
    Ignored(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("message body is not JSON: {0}")]
    NotJson(String),
    #[error("unrecognised event shape: {0}")]
    UnknownShape(String),
    #[error("S3 record {index} lacks {field}")]
    MissingField { index: usize, field: &'static str },
}

/// Decodes an SQS message body (S3 notification, SNS envelope, EventBridge event).
pub fn decode_body(body: &str) -> Result<Notification, EventError> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    decode_value(&value)
}

/// Decodes one notification already parsed as JSON.
pub fn decode_value(value: &Value) -> Result<Notification, EventError> {
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notification::TestEvent);
    }
    // SNS envelope (through SQS: Type=Notification; direct: Records[].Sns).
    if value.get("Type").and_then(Value::as_str) == Some("Notification") {
        let message = value
            .get("Message")
            .and_then(Value::as_str)
            .ok_or_else(|| EventError::UnknownShape("SNS notification without a Message".into()))?;
        return decode_body(message);
    }
    if let Some(detail_type) = value.get("detail-type").and_then(Value::as_str) {
        return decode_eventbridge(detail_type, value);
    }
    if let Some(records) = value.get("Records").and_then(Value::as_array) {
        if let Some(sns) = records.first().and_then(|r| r.get("Sns")) {
            let message = sns
                .get("Message")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return decode_body(message);
        }
        let force = value
            .pointer("/cf2bq/force")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        return decode_s3_records(records, force);
    }
    Err(EventError::UnknownShape(shape_hint(value)))
}

fn decode_s3_records(records: &[Value], force: bool) -> Result<Notification, EventError> {
    let mut objects = Vec::new();
    let mut ignored = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let name = record
            .get("eventName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !name.starts_with("ObjectCreated:") {
            ignored.push(name.to_string());
            continue;
        }
        let s3 = record
            .get("s3")
            .ok_or(EventError::MissingField { index, field: "s3" })?;
        let text = |path: &[&str]| -> Option<&str> {
            path.iter().try_fold(s3, |v, k| v.get(*k))?.as_str()
        };
        let bucket = text(&["bucket", "name"]).ok_or(EventError::MissingField {
            index,
            field: "s3.bucket.name",
        })?;
        let key = text(&["object", "key"]).ok_or(EventError::MissingField {
            index,
            field: "s3.object.key",
        })?;
        objects.push(ObjectRef {
            bucket: bucket.to_string(),
            key: decode_notification_key(key),
            size: s3.pointer("/object/size").and_then(Value::as_u64),
            etag: text(&["object", "eTag"]).map(unquote),
            version_id: text(&["object", "versionId"]).map(str::to_string),
        });
    }
    if objects.is_empty() {
        return Ok(Notification::Ignored(format!(
            "no ObjectCreated record (events: {})",
            ignored.join(", ")
        )));
    }
    Ok(Notification::Objects { objects, force })
}

fn decode_eventbridge(detail_type: &str, value: &Value) -> Result<Notification, EventError> {
    if detail_type != "Object Created" {
        return Ok(Notification::Ignored(format!(
            "EventBridge {detail_type:?}"
        )));
    }
    let detail = value.get("detail").ok_or(EventError::MissingField {
        index: 0,
        field: "detail",
    })?;
    let text = |ptr: &str| detail.pointer(ptr).and_then(Value::as_str);
    let bucket = text("/bucket/name").ok_or(EventError::MissingField {
        index: 0,
        field: "detail.bucket.name",
    })?;
    let key = text("/object/key").ok_or(EventError::MissingField {
        index: 0,
        field: "detail.object.key",
    })?;
    Ok(Notification::Objects {
        objects: vec![ObjectRef {
            bucket: bucket.to_string(),
            // EventBridge delivers keys as they are, not URL-encoded.
            key: key.to_string(),
            size: detail.pointer("/object/size").and_then(Value::as_u64),
            etag: text("/object/etag").map(unquote),
            version_id: text("/object/version-id").map(str::to_string),
        }],
        force: false,
    })
}

/// S3 notification keys are URL-encoded with `+` for space: `+` first, then `%XX`.
pub fn decode_notification_key(key: &str) -> String {
    let spaced = key.replace('+', " ");
    let bytes = spaced.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = &bytes[i + 1..i + 3];
            if hex.iter().all(u8::is_ascii_hexdigit) {
                let text = std::str::from_utf8(hex).expect("hex digits are ASCII");
                out.push(u8::from_str_radix(text, 16).expect("two hex digits"));
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or(spaced)
}

/// The inverse, as S3 (and moto) encode keys: used when we build notifications for replay.
pub fn encode_notification_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An S3 `ObjectCreated:Put` notification body for `object`, as S3 sends it. A replay with
/// `force` adds `{"cf2bq": {"force": true}}`, which S3 itself never sends.
pub fn replay_notification(object: &ObjectRef, force: bool) -> Value {
    let mut body = s3_notification(object, "ObjectCreated:Put");
    if force {
        body["cf2bq"] = serde_json::json!({"force": true});
    }
    body
}

/// An S3 notification body for `object`, as S3 sends it.
pub fn s3_notification(object: &ObjectRef, event_name: &str) -> Value {
    let mut obj = serde_json::json!({ "key": encode_notification_key(&object.key) });
    // An unknown size is left out: a 0 would mean "empty object, nothing to do".
    if let Some(size) = object.size {
        obj["size"] = Value::from(size);
    }
    if let Some(etag) = &object.etag {
        obj["eTag"] = Value::from(etag.clone());
    }
    if let Some(v) = &object.version_id {
        obj["versionId"] = Value::from(v.clone());
    }
    serde_json::json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": event_name,
        "s3": {"bucket": {"name": object.bucket}, "object": obj},
    }]})
}

fn unquote(s: &str) -> String {
    s.trim_matches('"').to_string()
}

fn shape_hint(value: &Value) -> String {
    match value.as_object() {
        Some(map) => format!(
            "object with keys [{}]",
            map.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        None => format!("JSON {}", if value.is_array() { "array" } else { "scalar" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S3_BODY: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put",
      "s3":{"bucket":{"name":"logs"},"object":{"key":"cf/E2ABC.2026-01-10-10.a1b2c3%3Ax+y.gz","size":512,"eTag":"0123abcd"}}}]}"#;

    fn expected() -> ObjectRef {
        ObjectRef {
            bucket: "logs".into(),
            key: "cf/E2ABC.2026-01-10-10.a1b2c3:x y.gz".into(),
            size: Some(512),
            etag: Some("0123abcd".into()),
            version_id: None,
        }
    }

    #[test]
    fn s3_notification_keys_are_decoded() {
        assert_eq!(
            decode_body(S3_BODY),
            Ok(Notification::Objects {
                objects: vec![expected()],
                force: false
            })
        );
    }

    #[test]
    fn sns_wrapped_and_eventbridge_shapes() {
        let sns = serde_json::json!({"Type": "Notification", "MessageId": "m", "Message": S3_BODY})
            .to_string();
        assert_eq!(
            decode_body(&sns),
            Ok(Notification::Objects {
                objects: vec![expected()],
                force: false
            })
        );
        let direct_sns = serde_json::json!({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": S3_BODY}}]});
        assert_eq!(
            decode_value(&direct_sns),
            Ok(Notification::Objects {
                objects: vec![expected()],
                force: false
            })
        );
        let eb = r#"{"version":"0","detail-type":"Object Created","source":"aws.s3",
            "detail":{"bucket":{"name":"logs"},"object":{"key":"cf/E2ABC.2026-01-10-10.a1b2c3:x y.gz","size":512,"etag":"0123abcd"}}}"#;
        assert_eq!(
            decode_body(eb),
            Ok(Notification::Objects {
                objects: vec![expected()],
                force: false
            })
        );
    }

    #[test]
    fn test_events_deletes_and_garbage() {
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-01-01T00:00:00Z","Bucket":"logs"}"#;
        assert_eq!(decode_body(test), Ok(Notification::TestEvent));
        let delete = r#"{"Records":[{"eventName":"ObjectRemoved:Delete","s3":{}}]}"#;
        assert!(matches!(decode_body(delete), Ok(Notification::Ignored(_))));
        assert!(matches!(
            decode_body("not json"),
            Err(EventError::NotJson(_))
        ));
        assert!(matches!(
            decode_body("{\"a\":1}"),
            Err(EventError::UnknownShape(_))
        ));
    }

    #[test]
    fn replayed_notifications_round_trip() {
        let body = s3_notification(&expected(), "ObjectCreated:Put").to_string();
        assert_eq!(
            decode_body(&body),
            Ok(Notification::Objects {
                objects: vec![expected()],
                force: false
            })
        );
    }
}
