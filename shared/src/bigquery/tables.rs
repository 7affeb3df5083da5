//! Creating, checking and patching log tables over the REST API.

use std::collections::HashMap;

use gcp_bigquery_client::model::{
    clustering::Clustering, table::Table, table_list::TableList,
    time_partitioning::TimePartitioning,
};
use gcp_bigquery_client::table::ListOptions;

use super::schema::{columns, table_schema};
use super::{rest_call, BigQuery, BigQueryError};
use crate::route::Layout;

/// What a log table should look like.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: String,
    /// DAY-partitioned on `log_date` and clustered (the partitioned layout).
    pub partitioned: bool,
    pub partition_expiration_days: Option<u32>,
    pub description: String,
}

impl TableSpec {
    /// The table `layout` uses for log date `days`.
    pub fn for_date(
        layout: &Layout,
        days: i32,
        partition_expiration_days: Option<u32>,
    ) -> TableSpec {
        let name = layout.table_for(days);
        match layout {
            Layout::Sharded { .. } => TableSpec {
                description: format!(
                    "CloudFront access logs for {} (UTC), loaded by cf2bq",
                    crate::route::IsoDate(days)
                ),
                name,
                partitioned: false,
                partition_expiration_days: None,
            },
            Layout::Partitioned { .. } => TableSpec {
                description:
                    "CloudFront access logs, partitioned by log_date (UTC), loaded by cf2bq".into(),
                name,
                partitioned: true,
                partition_expiration_days,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableStatus {
    Existed,
    Created,
}

impl BigQuery {
    /// Creates the dataset unless it exists (the local stack and tests; in production the
    /// operator creates it, see docs/deploy.md).
    pub async fn ensure_dataset(&self) -> Result<(), BigQueryError> {
        let dataset =
            gcp_bigquery_client::model::dataset::Dataset::new(&self.project, &self.dataset);
        let call = format!("datasets.insert {}", self.dataset);
        match rest_call(&call, || self.rest.dataset().create(dataset.clone())).await {
            Ok(_) => Ok(()),
            Err(e) if e.http_status() == Some(409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The table's metadata, or `None` when it does not exist.
    pub async fn get_table(&self, table: &str) -> Result<Option<Table>, BigQueryError> {
        let get = || {
            self.rest
                .table()
                .get(&self.project, &self.dataset, table, None)
        };
        match rest_call(&format!("tables.get {table}"), get).await {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.http_status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the table with the full schema unless it exists. Safe to race: a concurrent
    /// creator's 409 counts as "existed".
    pub async fn ensure_table(&self, spec: &TableSpec) -> Result<TableStatus, BigQueryError> {
        self.ensure_table_with_schema(spec, table_schema()).await
    }

    /// [`ensure_table`](Self::ensure_table) for a table of another schema (the quarantine).
    pub async fn ensure_table_with_schema(
        &self,
        spec: &TableSpec,
        schema: gcp_bigquery_client::model::table_schema::TableSchema,
    ) -> Result<TableStatus, BigQueryError> {
        if self.get_table(&spec.name).await?.is_some() {
            return Ok(TableStatus::Existed);
        }
        let mut table = Table::new(&self.project, &self.dataset, &spec.name, schema)
            .description(&spec.description)
            .label("managed-by", "cf2bq")
            .label("source", "cloudfront-access-logs");
        if spec.partitioned {
            table = table
                .time_partitioning(TimePartitioning {
                    r#type: "DAY".into(),
                    field: Some("log_date".into()),
                    expiration_ms: spec
                        .partition_expiration_days
                        .map(|d| (u64::from(d) * 86_400_000).to_string()),
                    require_partition_filter: None,
                })
                .clustering(Clustering {
                    fields: Some(vec!["x_host_header".into(), "sc_status".into()]),
                });
        }
        let call = format!("tables.insert {}", spec.name);
        match rest_call(&call, || self.rest.table().create(table.clone())).await {
            Ok(_) => Ok(TableStatus::Created),
            Err(e) if e.http_status() == Some(409) => Ok(TableStatus::Existed),
            Err(e) => Err(e),
        }
    }

    /// Adds the columns of the current schema that `table` lacks; returns their names.
    pub async fn add_missing_columns(&self, table: &str) -> Result<Vec<String>, BigQueryError> {
        let Some(mut existing) = self.get_table(table).await? else {
            return Ok(Vec::new());
        };
        let present: Vec<String> = existing
            .schema
            .fields
            .iter()
            .flatten()
            .map(|f| f.name.clone())
            .collect();
        let wanted = table_schema().fields.unwrap_or_default();
        let missing: Vec<_> = wanted
            .into_iter()
            .filter(|f| !present.contains(&f.name))
            .collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let names = missing.iter().map(|f| f.name.clone()).collect();
        existing
            .schema
            .fields
            .get_or_insert_with(Vec::new)
            .extend(missing);
        // The same patch again is harmless: retried like a read.
        rest_call(&format!("tables.patch {table}"), || {
            self.rest
                .table()
                .patch(&self.project, &self.dataset, table, existing.clone())
        })
        .await?;
        Ok(names)
    }

    /// Names of all tables in the dataset that start with `prefix`.
    pub async fn list_tables(&self, prefix: &str) -> Result<Vec<String>, BigQueryError> {
        let mut names = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let list = || {
                let mut options = ListOptions::default().max_results(1000);
                if let Some(token) = &page_token {
                    options = options.page_token(token.clone());
                }
                self.rest
                    .table()
                    .list(&self.project, &self.dataset, options)
            };
            let page: TableList = rest_call("tables.list", list).await?;
            names.extend(
                page.tables
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| t.table_reference.table_id)
                    .filter(|name| name.starts_with(prefix)),
            );
            match page.next_page_token {
                Some(token) if !token.is_empty() => page_token = Some(token),
                _ => break,
            }
        }
        Ok(names)
    }
}

/// Column name → BigQuery type of the current schema (for checks and tests).
pub fn expected_column_types() -> HashMap<&'static str, &'static str> {
    use super::schema::ColumnType::*;
    columns()
        .iter()
        .map(|c| {
            let t = match c.column_type {
                Date => "DATE",
                Time => "TIME",
                Timestamp => "TIMESTAMP",
                String => "STRING",
                Int64 => "INTEGER",
                Float64 => "FLOAT",
                Json => "JSON",
            };
            (c.name, t)
        })
        .collect()
}
