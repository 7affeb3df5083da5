//! BigQuery credentials: a service-account key (from Secrets Manager or a file), or none for
//! the local emulator. One token source serves both REST and gRPC calls.

use std::sync::Arc;

use async_trait::async_trait;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::yup_oauth2;

use super::BigQueryError;
use crate::config::BigQueryAuth;

const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";

/// Builds the token source for `auth`.
pub async fn authenticator(
    auth: &BigQueryAuth,
    aws: &aws_config::SdkConfig,
) -> Result<Arc<dyn Authenticator>, BigQueryError> {
    let key_json = match auth {
        BigQueryAuth::None => return Ok(Arc::new(NoCredentials)),
        BigQueryAuth::File(path) => tokio::fs::read_to_string(path)
            .await
            .map_err(|e| BigQueryError::Credentials(format!("reading {path}: {e}")))?,
        BigQueryAuth::Secret(id) => {
            let secrets = aws_sdk_secretsmanager::Client::new(aws);
            let out = secrets
                .get_secret_value()
                .secret_id(id)
                .send()
                .await
                .map_err(|e| {
                    BigQueryError::Credentials(format!("reading secret {id}: {}", aws_error(&e)))
                })?;
            out.secret_string()
                .ok_or_else(|| {
                    BigQueryError::Credentials(format!("secret {id} has no string value"))
                })?
                .to_string()
        }
    };
    let key = yup_oauth2::parse_service_account_key(key_json)
        .map_err(|e| BigQueryError::Credentials(format!("service-account key: {e}")))?;
    let auth = yup_oauth2::ServiceAccountAuthenticator::builder(key)
        .build()
        .await
        .map_err(|e| BigQueryError::Credentials(format!("service-account authenticator: {e}")))?;
    Ok(Arc::new(ServiceAccount { auth }))
}

/// The emulator accepts any bearer token.
#[derive(Clone)]
struct NoCredentials;

#[async_trait]
impl Authenticator for NoCredentials {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok("local-emulator".to_string())
    }
}

/// A service-account key; yup-oauth2 caches and refreshes the token.
#[derive(Clone)]
struct ServiceAccount {
    auth: yup_oauth2::authenticator::DefaultAuthenticator,
}

#[async_trait]
impl Authenticator for ServiceAccount {
    async fn access_token(&self) -> Result<String, BQError> {
        let token = self.auth.token(&[SCOPE]).await?;
        token.token().map(str::to_string).ok_or(BQError::NoToken)
    }
}

/// The most useful text of an AWS SDK error (the service's message, not just "service error").
pub fn aws_error<E: std::error::Error + 'static>(e: &E) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
