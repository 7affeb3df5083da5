pub mod counts;
pub mod gen;
pub mod ingest;

use shared::bigquery::BigQuery;
use shared::{Config, Ingestor};

pub type CliResult = Result<i32, Box<dyn std::error::Error>>;

/// The configured ingestor, as the Lambda builds it.
pub async fn ingestor() -> Result<Ingestor, Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    let aws = shared::aws::load().await;
    let bq = BigQuery::connect(&config.bigquery, &aws).await?;
    Ok(Ingestor::new(&config, shared::aws::s3(&aws), bq)?)
}
