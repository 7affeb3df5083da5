//! The table keeper Lambda, run on a schedule: tables created ahead, missing tables and
//! stale data alerted to SNS. `table-keeper --once` runs it once outside Lambda.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use shared::bigquery::BigQuery;
use shared::keeper::{self, KeeperOptions};
use shared::Config;

struct Keeper {
    config: Config,
    bq: BigQuery,
    sns: aws_sdk_sns::Client,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config = Config::from_env()?;
    let aws = shared::aws::load().await;
    let keeper = Keeper {
        bq: BigQuery::connect(&config.bigquery, &aws).await?,
        sns: aws_sdk_sns::Client::new(&aws),
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
    let report = keeper::run(
        &keeper.bq,
        &options,
        keeper::today(),
        shared::clock::now_micros(),
    )
    .await?;
    shared::metrics::keeper(&report);
    let alerted = match &keeper.config.alert_topic_arn {
        Some(topic) => {
            keeper::alert(&keeper.sns, topic, &report, &keeper.config.bigquery.dataset).await?
        }
        None => false,
    };
    tracing::info!(
        missing = ?report.missing,
        created_ahead = ?report.created_ahead,
        patched = ?report.patched,
        stale = report.stale,
        alerted,
        "keeper run done"
    );
    Ok(serde_json::to_value(&report)?)
}
