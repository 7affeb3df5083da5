pub mod bench;
pub mod counts;
pub mod gen;
pub mod ingest;
pub mod replay;
pub mod tables;

use shared::{Config, Ingestor};

/// A command's exit status (0, or 1 when a check found a problem), or the failure that
/// stopped it (main prints it and exits 1).
pub type CliResult = Result<u8, Box<dyn std::error::Error>>;

/// The configured ingestor, as the Lambda builds it.
pub async fn ingestor() -> Result<Ingestor, Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    let aws = shared::aws::load().await;
    Ok(Ingestor::from_config(&config, &aws).await?)
}

/// An error and its causes on one line, `outer: inner: root`. A cause whose text the outer
/// message already quotes (errors that format their source into their own message) is not
/// repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let line = e.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Wrapped {
        message: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn the_chain_names_every_cause_once() {
        let root = || std::io::Error::other("connection refused");
        let separate = Wrapped {
            message: "reading s3://b/k",
            source: root(),
        };
        assert_eq!(
            error_chain(&separate),
            "reading s3://b/k: connection refused"
        );
        let quoting = Wrapped {
            message: "reading s3://b/k: connection refused",
            source: root(),
        };
        assert_eq!(
            error_chain(&quoting),
            "reading s3://b/k: connection refused"
        );
    }
}
