//! The table keeper Lambda, run on a schedule: tables created ahead, missing tables and
//! stale data alerted to SNS — once when a problem starts, as a reminder every
//! `CF2BQ_ALERT_REPEAT_HOURS`, and when it is resolved (state kept in the ledger table).
//! `table-keeper --once` runs it once outside Lambda.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use shared::bigquery::BigQuery;
use shared::keeper::alerts::{self, AlertStore};
use shared::keeper::freshness::Memory;
use shared::keeper::state_item::StateItem;
use shared::keeper::{self, KeeperOptions};
use shared::Config;

struct Keeper {
    config: Config,
    bq: BigQuery,
    sns: aws_sdk_sns::Client,
    alerts: AlertStore,
    /// What the previous run saw of each table (freshness from metadata needs it).
    memory: StateItem,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config = Config::from_env()?;
    let aws = shared::aws::load().await;
    let keeper = Keeper {
        bq: BigQuery::connect(&config.bigquery, &aws).await?,
        sns: aws_sdk_sns::Client::new(&aws),
        alerts: AlertStore::new(
            &aws,
            &config.ledger_table,
            alerts::state_key(
                &config.bigquery.project,
                &config.bigquery.dataset,
                &config.layout,
            ),
        ),
        memory: keeper::memory_store(&aws, &config),
        config,
    };
    if std::env::args().any(|a| a == "--once") {
        println!("{}", serde_json::to_string_pretty(&run(&keeper).await?)?);
        return Ok(());
    }
    lambda_runtime::run(service_fn(|_: LambdaEvent<Value>| run(&keeper))).await
}

async fn run(keeper: &Keeper) -> Result<Value, Error> {
    let options = KeeperOptions::from_config(&keeper.config, true);
    let now = shared::clock::now_micros();
    // Without the memory, freshness falls back to lastModifiedTime, which is still better
    // than not checking at all.
    let memory: Memory = keeper.memory.load().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "table memory unreadable; judging freshness without it");
        Memory::default()
    });
    let report = keeper::run(&keeper.bq, &options, &memory, keeper::today(), now).await?;
    let seen = report.memory();
    if seen != memory {
        // Not fatal: the next run then compares with an older memory, which only makes a
        // patch since then look like an arrival; the alerts below still go out.
        if let Err(e) = keeper.memory.save(&seen, now).await {
            tracing::error!(error = %e, "table memory not saved");
        }
    }
    shared::metrics::keeper(&report);
    let notice = match &keeper.config.alert_topic_arn {
        Some(topic) => {
            alerts::notify(
                &keeper.sns,
                topic,
                &keeper.alerts,
                &report,
                &keeper.config.bigquery.dataset,
                keeper.config.alert_repeat_hours,
                now,
            )
            .await?
        }
        None => None,
    };
    tracing::info!(
        missing = ?report.missing,
        created_ahead = ?report.created_ahead,
        patched = ?report.patched,
        stale = report.stale,
        notice = ?notice,
        alert_state = keeper.alerts.key(),
        "keeper run done"
    );
    Ok(serde_json::to_value(&report)?)
}
