//! Standard logging v2's W3C output and the new fields: any subset of fields in any order,
//! any delimiter, no `#Version` line, rows dated by `timestamp(ms)` when there is no `date`
//! and `time`.

use super::fields::{field_id, lookup};
use super::reader::{Item, LogReader, ReadError};
use super::Value;

/// Every row of `text` as `(line_no, [(field, value as text)])` for the fields asked, and
/// the rejected lines as `(line_no, reason)`.
type Rows = Vec<(u64, Vec<String>)>;
type Rejected = Vec<(u64, String)>;

fn read(text: &str, fields: &[&str]) -> (Rows, Rejected) {
    let mut reader = LogReader::new(text.as_bytes(), 65536);
    let (mut rows, mut rejected) = (Vec::new(), Vec::new());
    while let Some(item) = reader.next_item().unwrap() {
        match item {
            Item::Row { line_no, row } => rows.push((
                line_no,
                fields
                    .iter()
                    .map(|f| row.get(lookup(f).unwrap().0).to_string())
                    .collect(),
            )),
            Item::Rejected(r) => rejected.push((r.line_no, r.error.to_string())),
        }
    }
    (rows, rejected)
}

const LEGACY_ORDER: &str =
    "#Version: 1.0\n#Fields: date time x-edge-location sc-bytes c-ip sc-status time-taken\n\
    2026-01-10\t10:15:21\tICN1\t512\t203.0.113.10\t200\t0.002\n";

#[test]
fn a_legacy_header_in_another_order_maps_by_name() {
    // The same request, its fields listed in a different order: a positional parser would
    // put the status in sc-bytes and fail on the edge location.
    let reordered =
        "#Version: 1.0\n#Fields: sc-status c-ip time-taken x-edge-location time date sc-bytes\n\
        200\t203.0.113.10\t0.002\tICN1\t10:15:21\t2026-01-10\t512\n";
    let fields = [
        "date",
        "time",
        "x-edge-location",
        "sc-bytes",
        "c-ip",
        "sc-status",
        "time-taken",
    ];
    let expected = vec![(
        3,
        [
            "2026-01-10",
            "10:15:21",
            "ICN1",
            "512",
            "203.0.113.10",
            "200",
            "0.002",
        ]
        .map(String::from)
        .to_vec(),
    )];
    assert_eq!(read(LEGACY_ORDER, &fields), (expected.clone(), vec![]));
    assert_eq!(read(reordered, &fields), (expected, vec![]));
}

#[test]
fn v2_w3c_with_any_delimiter_and_no_version_line() {
    let fields = [
        "date",
        "time",
        "timestamp(ms)",
        "c-ip",
        "sc-status",
        "c-country",
        "asn",
        "origin-fbl",
    ];
    let expected = vec![(
        2,
        [
            "2026-01-10",
            "10:15:21",
            "2026-01-10T10:15:21.123000Z",
            "203.0.113.10",
            "200",
            "JP",
            "2516",
            "0.25",
        ]
        .map(String::from)
        .to_vec(),
    )];
    for delimiter in ["\t", " ", ",", "|", ";"] {
        let line = ["1768040121123", "JP", "203.0.113.10", "2516", "200", "0.25"].join(delimiter);
        // The #Fields line is space-separated; no date, no time, no #Version.
        let text =
            format!("#Fields: timestamp(ms) c-country c-ip asn sc-status origin-fbl\n{line}\n");
        assert_eq!(
            read(&text, &fields),
            (expected.clone(), vec![]),
            "delimiter {delimiter:?}"
        );
        // The same with date and time: they date the row.
        let text = format!(
            "#Fields: time asn date c-country c-ip timestamp(ms) sc-status origin-fbl\n{}\n",
            [
                "10:15:21",
                "2516",
                "2026-01-10",
                "JP",
                "203.0.113.10",
                "1768040121123",
                "200",
                "0.25"
            ]
            .join(delimiter)
        );
        assert_eq!(
            read(&text, &fields),
            (expected.clone(), vec![]),
            "delimiter {delimiter:?}"
        );
    }
}

#[test]
fn a_bad_first_line_does_not_fix_the_delimiter() {
    let text = "#Fields: timestamp(ms),c-ip,sc-status\n1768040121123,203.0.113.10\n\
        1768040121123,203.0.113.10,200\n";
    let (rows, rejected) = read(text, &["c-ip", "sc-status"]);
    assert_eq!(
        rows,
        vec![(3, vec!["203.0.113.10".to_string(), "200".to_string()])]
    );
    assert_eq!(
        rejected,
        vec![(
            2,
            "line has 1 columns, the #Fields header has 3".to_string()
        )]
    );
}

#[test]
fn rows_are_routed_by_their_timestamp_and_a_missing_one_is_that_lines_error() {
    let text = "#Fields: timestamp c-ip\n1768003199.999\t192.0.2.1\n-\t192.0.2.2\n";
    let mut reader = LogReader::new(text.as_bytes(), 65536);
    let Some(Item::Row { row, .. }) = reader.next_item().unwrap() else {
        panic!("a row")
    };
    // 2026-01-09 23:59:59.999: its own day, whatever the file's hour.
    assert_eq!(row.get(field_id("date").unwrap()).to_string(), "2026-01-09");
    assert_eq!(
        row.get(field_id("time").unwrap()),
        Value::Time(86_399, "23:59:59")
    );
    assert_eq!(row.timestamp_micros(), 1_768_003_199_999_000);
    let Some(Item::Rejected(r)) = reader.next_item().unwrap() else {
        panic!("rejected")
    };
    assert_eq!(r.error.code(), "missing_timestamp");
    assert_eq!(
        r.error.to_string(),
        "timestamp(ms) is `-` but every row needs a date and time"
    );
}

#[test]
fn fields_that_cannot_date_rows_refuse_the_whole_object() {
    for text in [
        "#Fields: c-ip sc-status\n192.0.2.1\t200\n",
        "{\"c-ip\":\"192.0.2.1\",\"sc-status\":200}\n",
    ] {
        let mut reader = LogReader::new(text.as_bytes(), 65536);
        let error = reader.next_item().unwrap_err();
        assert!(matches!(error, ReadError::BadHeader { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains("neither `date` and `time` nor `timestamp(ms)`"),
            "{error}"
        );
    }
}

#[test]
fn new_access_log_fields_and_values_are_typed() {
    let text = "#Fields: date time cs-protocol cs-protocol-version x-edge-detailed-result-type distribution-tenant-id connection-id origin-lbl cache-behavior-path-pattern\n\
        2026-01-10\t10:15:21\tgrpcs\tHTTP/3.0\tLambdaExecutionError\tdt_2abc\tconn-77\t1.5\t/api/*\n";
    let fields = [
        "cs-protocol",
        "cs-protocol-version",
        "x-edge-detailed-result-type",
        "distribution-tenant-id",
        "connection-id",
        "origin-lbl",
        "cache-behavior-path-pattern",
        "timestamp(ms)",
    ];
    let (rows, rejected) = read(text, &fields);
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(
        rows[0].1,
        [
            "grpcs",
            "HTTP/3.0",
            "LambdaExecutionError",
            "dt_2abc",
            "conn-77",
            "1.5",
            "/api/*",
            "NULL"
        ]
        .map(String::from)
        .to_vec()
    );
}
