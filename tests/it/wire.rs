//! gzip on the Storage Write wire (`CF2BQ_GRPC_GZIP`), whatever the URL scheme: an object
//! from S3 (moto) ingested into the local Storage Write sink over plaintext `http://`, with
//! the setting on and off. The sink sees compressed appends only when it is on, and the same
//! committed rows either way: every line once, in its table.

use std::collections::BTreeMap;

use cf2bq_tests::write_sink::{field_varint, WriteSink};
use cf2bq_tests::Harness;
use shared::bigquery::schema::{columns, Source};
use shared::generate::{write_object, GenOptions};
use shared::source::LogObject;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_gzip_compressed_when_the_setting_is_on_and_plain_when_off() {
    let source_line = columns()
        .iter()
        .position(|c| c.source == Source::SourceLine)
        .expect("a source_line column") as u32
        + 1;
    for gzip in [true, false] {
        let sink = WriteSink::start("127.0.0.1:0", true).await.unwrap();
        let setting = gzip.to_string();
        let h = Harness::with(
            "wire",
            &[
                ("CF2BQ_BQ_GRPC_URL", sink.url.as_str()),
                ("CF2BQ_GRPC_GZIP", setting.as_str()),
                // Several appends per table.
                ("CF2BQ_BATCH_BYTES", "65536"),
            ],
        )
        .await;
        let bucket = h.bucket("wire").await;
        let options = GenOptions {
            objects: 1,
            lines_per_object: 3000,
            late_percent: 20,
            ..GenOptions::default()
        };
        let mut body = Vec::new();
        let object = write_object(&options, 0, &mut body).unwrap();
        h.put(&bucket, &object.key, body).await;
        let announced = h.announced(&bucket, &object.key).await;
        let report = h
            .ingestor()
            .await
            .ingest(&LogObject::S3(announced))
            .await
            .expect("ingest into the sink");

        let seen = sink.seen();
        assert_eq!(report.rows, 3000);
        assert_eq!(seen.committed_rows, report.tables, "gzip {gzip}");
        assert_eq!(seen.rows, 3000, "gzip {gzip}: rows appended");
        assert!(seen.append_requests >= 4, "{seen:?}");
        if gzip {
            assert_eq!(seen.gzip_requests, seen.append_requests, "{seen:?}");
            // Log rows compress several-fold.
            assert!(
                seen.append_message_bytes * 3 < seen.append_plain_bytes,
                "{seen:?}"
            );
        } else {
            assert_eq!(seen.gzip_requests, 0, "{seen:?}");
            assert_eq!(seen.append_message_bytes, seen.append_plain_bytes);
        }

        // Every data line (after `#Version` and `#Fields`) exactly once, in its table.
        let mut lines = Vec::new();
        let mut per_table = BTreeMap::new();
        for table in report.tables.keys() {
            let rows = sink.committed(table);
            per_table.insert(table.clone(), rows.len() as u64);
            lines.extend(
                rows.iter()
                    .map(|row| field_varint(row, source_line).expect("source_line")),
            );
        }
        lines.sort_unstable();
        assert_eq!(lines, (3..3003).collect::<Vec<u64>>(), "gzip {gzip}");
        assert_eq!(per_table, report.tables);
        assert!(report.tables.len() >= 2, "late lines: {:?}", report.tables);
    }
}
