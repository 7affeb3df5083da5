//! CloudWatch metrics in Embedded Metric Format: one JSON line on stdout per event, which
//! Lambda forwards to CloudWatch Logs and CloudWatch turns into metrics (namespace `cf2bq`,
//! dimension `Function`). Outside Lambda nothing is printed.

use serde_json::{json, Map, Value};

use crate::ingest::ObjectReport;
use crate::keeper::KeeperReport;

fn emit(function: &str, metrics: &[(&str, f64, &str)], extra: Map<String, Value>) {
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_none() {
        return;
    }
    let doc = document(function, metrics, extra, crate::clock::now_micros() / 1000);
    println!("{doc}");
}

/// One EMF document: the metrics (name, value, unit) of `function` at `timestamp_millis`.
fn document(
    function: &str,
    metrics: &[(&str, f64, &str)],
    extra: Map<String, Value>,
    timestamp_millis: i64,
) -> Value {
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_millis,
            "CloudWatchMetrics": [{
                "Namespace": "cf2bq",
                "Dimensions": [["Function"]],
                "Metrics": metrics.iter().map(|(name, _, unit)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    doc.insert("Function".into(), json!(function));
    for (name, value, _) in metrics {
        doc.insert((*name).into(), json!(value));
    }
    doc.extend(extra);
    Value::Object(doc)
}

/// Per object: rows, bytes, rejected lines, lag from the newest request to now.
pub fn object(report: &ObjectReport) {
    use crate::ingest::Outcome;
    let mut metrics = vec![];
    match report.outcome {
        Outcome::AlreadyDone => metrics.push(("RedeliveriesSkipped", 1.0, "Count")),
        Outcome::Loaded | Outcome::Empty => {
            metrics.push(("ObjectsIngested", 1.0, "Count"));
            metrics.push(("RowsLoaded", report.rows as f64, "Count"));
            metrics.push(("BytesRead", report.bytes as f64, "Bytes"));
            metrics.push(("LinesQuarantined", report.rejected as f64, "Count"));
            if let Some(latest) = report.latest_request_micros {
                let lag = (crate::clock::now_micros() - latest) as f64 / 1e6;
                metrics.push(("CommitLagSeconds", lag, "Seconds"));
            }
        }
        Outcome::Gone => metrics.push(("ObjectsGone", 1.0, "Count")),
        Outcome::ReplayRefused => metrics.push(("ReplaysRefused", 1.0, "Count")),
    }
    let mut extra = Map::new();
    extra.insert("object".into(), json!(report.object));
    extra.insert("rowsPerTable".into(), json!(report.tables));
    emit("ingest", &metrics, extra);
}

/// An object that failed (it will be retried, then dead-lettered): `ObjectsFailed` (Count),
/// the metric the `ObjectsFailedAlarm` in `infra/cf2bq.yaml` watches. Per-object failures are
/// partial batch failures, so Lambda's own `Errors` metric stays at 0 for them.
pub fn object_failed(object: &str) {
    let (metrics, extra) = failed(object);
    emit("ingest", &metrics, extra);
}

/// Per invocation: the external API calls it made ([`crate::calls`]) as `Calls.<Service.Operation>`
/// (Count; `…Bytes` in Bytes). `Calls.BigQuery.CreateWriteStream` summed per hour is what the
/// project's 10,000-an-hour quota is held against.
pub fn calls(counts: &std::collections::BTreeMap<String, u64>) {
    if counts.is_empty() {
        return;
    }
    let names: Vec<String> = counts.keys().map(|api| format!("Calls.{api}")).collect();
    let metrics: Vec<(&str, f64, &str)> = names
        .iter()
        .zip(counts)
        .map(|(name, (api, n))| {
            let unit = if api.ends_with("Bytes") {
                "Bytes"
            } else {
                "Count"
            };
            (name.as_str(), *n as f64, unit)
        })
        .collect();
    emit("ingest", &metrics, Map::new());
}

/// (name, value, unit).
type Metric = (&'static str, f64, &'static str);

fn failed(object: &str) -> (Vec<Metric>, Map<String, Value>) {
    let mut extra = Map::new();
    extra.insert("object".into(), json!(object));
    (vec![("ObjectsFailed", 1.0, "Count")], extra)
}

/// Per keeper run: findings, missing tables, hours since the last row.
pub fn keeper(report: &KeeperReport) {
    let findings = report.missing.len() + usize::from(report.stale) + report.patched.len();
    let mut metrics = vec![
        ("KeeperFindings", findings as f64, "Count"),
        ("TablesMissing", report.missing.len() as f64, "Count"),
    ];
    if let Some(hours) = report.hours_since_last_ingest() {
        metrics.push(("HoursSinceLastRow", hours, "None"));
    }
    emit("table-keeper", &metrics, Map::new());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the `ObjectsFailed` alarm depends on: namespace, metric name, unit and the
    /// `Function=ingest` dimension.
    #[test]
    fn a_failed_object_counts_in_objects_failed() {
        let (metrics, extra) = failed("s3://logs/cf/a.gz");
        let doc = document("ingest", &metrics, extra, 1_700_000_000_000);
        let spec = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(spec["Namespace"], "cf2bq");
        assert_eq!(spec["Dimensions"], json!([["Function"]]));
        assert_eq!(
            spec["Metrics"],
            json!([{"Name": "ObjectsFailed", "Unit": "Count"}])
        );
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000i64);
        assert_eq!(doc["Function"], "ingest");
        assert_eq!(doc["ObjectsFailed"], 1.0);
        assert_eq!(doc["object"], "s3://logs/cf/a.gz");
    }
}
