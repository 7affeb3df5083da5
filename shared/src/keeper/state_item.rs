//! One JSON document the keeper keeps between runs, as an item of the DynamoDB ledger table
//! under a reserved key (`keeper#…`; object ids are `s3://…`, so it cannot collide):
//! `object_id` = the key, `state` = the JSON, `updated_at`.

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::route::Layout;

/// The reserved key of the `kind` state (`alerts`, `tables`) of the tables one keeper checks.
pub fn key(kind: &str, project: &str, dataset: &str, layout: &Layout) -> String {
    let target = match layout {
        Layout::Sharded { prefix } => format!("{prefix}*"),
        Layout::Partitioned { table } => table.clone(),
    };
    format!("keeper#{kind}#{project}.{dataset}.{target}")
}

pub struct StateItem {
    client: aws_sdk_dynamodb::Client,
    table: String,
    key: String,
}

impl StateItem {
    pub fn new(aws: &aws_config::SdkConfig, table: &str, key: String) -> StateItem {
        StateItem {
            client: aws_sdk_dynamodb::Client::new(aws),
            table: table.to_string(),
            key,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The kept document; the default when there is none yet.
    pub async fn load<T: DeserializeOwned + Default>(&self) -> Result<T, String> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("object_id", AttributeValue::S(self.key.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "reading {} from {}: {}",
                    self.key,
                    self.table,
                    DisplayErrorContext(&e)
                )
            })?;
        let Some(item) = out.item else {
            return Ok(T::default());
        };
        match item.get("state") {
            Some(AttributeValue::S(json)) => serde_json::from_str(json)
                .map_err(|e| format!("{} in {}: bad state: {e}", self.key, self.table)),
            _ => Ok(T::default()),
        }
    }

    pub async fn save<T: Serialize>(&self, state: &T, now_micros: i64) -> Result<(), String> {
        let json = serde_json::to_string(state).expect("states serialize");
        self.client
            .put_item()
            .table_name(&self.table)
            .item("object_id", AttributeValue::S(self.key.clone()))
            .item("state", AttributeValue::S(json))
            .item("updated_at", AttributeValue::N(now_micros.to_string()))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "writing {} to {}: {}",
                    self.key,
                    self.table,
                    DisplayErrorContext(&e)
                )
            })?;
        Ok(())
    }
}
