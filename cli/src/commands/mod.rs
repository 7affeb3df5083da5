pub mod bench;
pub mod counts;
pub mod gen;
pub mod ingest;
pub mod replay;
pub mod tables;

use shared::{Config, Ingestor};

pub type CliResult = Result<i32, Box<dyn std::error::Error>>;

/// The configured ingestor, as the Lambda builds it.
pub async fn ingestor() -> Result<Ingestor, Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    let aws = shared::aws::load().await;
    Ok(Ingestor::from_config(&config, &aws).await?)
}
