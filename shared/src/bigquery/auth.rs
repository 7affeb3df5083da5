//! BigQuery credentials: a service-account key (from Secrets Manager or a file), Workload
//! Identity Federation from the function's own AWS role (no key anywhere), or none for the
//! local emulator. One token source serves both REST and gRPC calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::BoxFuture;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::yup_oauth2;
use google_cloud_auth::credentials::{external_account, AccessTokenCredentials};

use super::BigQueryError;
use crate::config::{BigQueryAuth, CredentialConfig};

const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";

/// A key that failed is re-read at most this often (a revoked key must not turn every
/// request into a Secrets Manager call).
const REREAD_INTERVAL: Duration = Duration::from_secs(60);

/// Builds the token source for `auth`.
pub async fn authenticator(
    auth: &BigQueryAuth,
    aws: &aws_config::SdkConfig,
) -> Result<Arc<dyn Authenticator>, BigQueryError> {
    let source = match auth {
        BigQueryAuth::None => return Ok(Arc::new(NoCredentials)),
        BigQueryAuth::ExternalAccount(CredentialConfig::Inline(json)) => {
            return federated(json).await
        }
        BigQueryAuth::ExternalAccount(CredentialConfig::File(path)) => {
            return federated(&KeySource::File(path.clone()).read(aws).await?).await
        }
        BigQueryAuth::File(path) => KeySource::File(path.clone()),
        BigQueryAuth::Secret(id) => KeySource::Secret(id.clone()),
    };
    let json = source.read(aws).await?;
    if is_external_account(&json) {
        // The configured secret or file holds a keyless configuration: federate.
        return federated(&json).await;
    }
    let first = service_account(json.clone()).await?;
    let aws = aws.clone();
    let load: Loader = Arc::new(move || {
        let (source, aws) = (source.clone(), aws.clone());
        Box::pin(async move {
            let json = source.read(&aws).await?;
            let auth = service_account(json.clone()).await?;
            Ok((json, auth))
        })
    });
    Ok(Arc::new(Reloading::new(json, first, load)))
}

/// Where a key (or a configuration) is read from.
#[derive(Clone, Debug)]
enum KeySource {
    File(String),
    Secret(String),
}

impl KeySource {
    async fn read(&self, aws: &aws_config::SdkConfig) -> Result<String, BigQueryError> {
        match self {
            KeySource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| BigQueryError::Credentials(format!("reading {path}: {e}"))),
            KeySource::Secret(id) => {
                let secrets = aws_sdk_secretsmanager::Client::new(aws);
                let out = secrets
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|e| {
                        BigQueryError::Credentials(format!(
                            "reading secret {id}: {}",
                            aws_error(&e)
                        ))
                    })?;
                Ok(out
                    .secret_string()
                    .ok_or_else(|| {
                        BigQueryError::Credentials(format!("secret {id} has no string value"))
                    })?
                    .to_string())
            }
        }
    }
}

fn is_external_account(json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| Some(v.get("type")?.as_str()? == "external_account"))
        .unwrap_or(false)
}

async fn service_account(key_json: String) -> Result<Arc<dyn Authenticator>, BigQueryError> {
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

/// Reads the key again and builds a token source from it.
type Loader = Arc<
    dyn Fn() -> BoxFuture<'static, Result<(String, Arc<dyn Authenticator>), BigQueryError>>
        + Send
        + Sync,
>;

/// Key rotation: when a token cannot be had with the key read at start, the key is read
/// again (once per failure, at most every `REREAD_INTERVAL`) and, if it changed, used from
/// then on. Without this a warm container keeps a rotated-out key until it recycles.
#[derive(Clone)]
struct Reloading {
    current: Arc<tokio::sync::RwLock<(String, Arc<dyn Authenticator>)>>,
    last_reread: Arc<std::sync::Mutex<Option<Instant>>>,
    load: Loader,
}

impl Reloading {
    fn new(json: String, auth: Arc<dyn Authenticator>, load: Loader) -> Reloading {
        Reloading {
            current: Arc::new(tokio::sync::RwLock::new((json, auth))),
            last_reread: Arc::new(std::sync::Mutex::new(None)),
            load,
        }
    }
}

#[async_trait]
impl Authenticator for Reloading {
    async fn access_token(&self) -> Result<String, BQError> {
        let (json, auth) = self.current.read().await.clone();
        let failed = match auth.access_token().await {
            Ok(token) => return Ok(token),
            Err(e) => e,
        };
        {
            let mut last = self.last_reread.lock().unwrap();
            if last.is_some_and(|t| t.elapsed() < REREAD_INTERVAL) {
                return Err(failed);
            }
            *last = Some(Instant::now());
        }
        let (fresh_json, fresh) = match (self.load)().await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::warn!(error = %e, "re-reading the BigQuery key after an authentication failure");
                return Err(failed);
            }
        };
        if fresh_json == json {
            return Err(failed);
        }
        tracing::info!("the BigQuery key changed; using the new one");
        let token = fresh.access_token().await?;
        *self.current.write().await = (fresh_json, fresh);
        Ok(token)
    }
}

/// Workload Identity Federation: google-cloud-auth signs an AWS STS GetCallerIdentity request
/// with the function's AWS credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
/// AWS_SESSION_TOKEN, which Lambda sets; AWS_REGION), exchanges it at the configuration's
/// `token_url`, optionally impersonates a service account, caches the token and refreshes
/// it in the background before it expires.
async fn federated(json: &str) -> Result<Arc<dyn Authenticator>, BigQueryError> {
    let config: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        BigQueryError::Credentials(format!("external_account configuration is not JSON: {e}"))
    })?;
    let federation = Federation::from_config(&config);
    let creds = external_account::Builder::new(config)
        .with_scopes([SCOPE])
        .build_access_token_credentials()
        .map_err(|e| BigQueryError::Credentials(format!("external_account configuration: {e}")))?;
    let auth = Federated { creds, federation };
    // Fail at start, with the explanation, rather than on the first write.
    auth.token().await.map_err(BigQueryError::Credentials)?;
    Ok(Arc::new(auth))
}

#[derive(Clone)]
struct Federated {
    creds: AccessTokenCredentials,
    federation: Federation,
}

impl Federated {
    async fn token(&self) -> Result<String, String> {
        self.creds
            .access_token()
            .await
            .map(|t| t.token)
            .map_err(|e| self.federation.explain(&aws_error(&e)))
    }
}

#[async_trait]
impl Authenticator for Federated {
    async fn access_token(&self) -> Result<String, BQError> {
        self.token().await.map_err(|message| {
            BQError::YupAuthError(yup_oauth2::Error::LowLevelError(std::io::Error::other(
                message,
            )))
        })
    }
}

/// What an external-account configuration names, for error messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Federation {
    project_number: Option<String>,
    pool: Option<String>,
    provider: Option<String>,
    token_url: Option<String>,
    service_account: Option<String>,
}

impl Federation {
    fn from_config(config: &serde_json::Value) -> Federation {
        let text = |field: &str| {
            config
                .get(field)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let mut federation = Federation {
            token_url: text("token_url"),
            // …/projects/-/serviceAccounts/EMAIL:generateAccessToken
            service_account: text("service_account_impersonation_url").map(|url| {
                let tail = url.rsplit('/').next().unwrap_or(&url);
                tail.split(':').next().unwrap_or(tail).to_string()
            }),
            ..Federation::default()
        };
        // //iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/providers/PROVIDER
        let audience = text("audience").unwrap_or_default();
        let parts: Vec<&str> = audience.split('/').collect();
        let after = |name: &str| {
            parts
                .iter()
                .position(|p| *p == name)
                .and_then(|i| parts.get(i + 1))
                .map(|s| s.to_string())
        };
        federation.project_number = after("projects");
        federation.pool = after("workloadIdentityPools");
        federation.provider = after("providers");
        federation
    }

    /// A failed exchange, with what it was for and what to check.
    fn explain(&self, error: &str) -> String {
        let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
        let (pool, provider) = (or_unknown(&self.pool), or_unknown(&self.provider));
        let mut text = format!(
            "Workload Identity Federation failed: pool {pool:?}, provider {provider:?} \
             (project number {}, token URL {}){}: {error}. Check: ",
            or_unknown(&self.project_number),
            or_unknown(&self.token_url),
            match &self.service_account {
                Some(sa) => format!(", impersonating {sa}"),
                None => String::new(),
            },
        );
        text.push_str(&format!(
            "provider {provider:?} in pool {pool:?} is an AWS provider for this function's AWS \
             account; its attribute condition admits this function's role (the stack's role ARN \
             outputs; attribute.aws_role is the assumed-role ARN); the function has its role's \
             credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) and \
             AWS_REGION; "
        ));
        match &self.service_account {
            Some(sa) => text.push_str(&format!(
                "the federated principal has roles/iam.workloadIdentityUser on {sa}, and {sa} has \
                 the BigQuery roles (docs/deploy.md)"
            )),
            None => text.push_str(
                "the federated principal (principalSet://…/attribute.aws_role/…) has the \
                 BigQuery roles on the project and dataset (docs/deploy.md)",
            ),
        }
        text
    }
}

/// The most useful text of an AWS SDK error (the service's message, not just "service error"),
/// or of any error with sources.
pub fn aws_error<E: std::error::Error + 'static>(e: &E) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const AUDIENCE: &str = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/cf2bq-pool/providers/aws-prod";

    #[test]
    fn federation_names_the_pool_provider_and_what_to_check() {
        let config = serde_json::json!({
            "type": "external_account",
            "audience": AUDIENCE,
            "token_url": "https://sts.googleapis.com/v1/token",
            "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/loader@p.iam.gserviceaccount.com:generateAccessToken",
            "credential_source": {"environment_id": "aws1"}
        });
        let f = Federation::from_config(&config);
        assert_eq!(f.project_number.as_deref(), Some("123456"));
        assert_eq!(f.pool.as_deref(), Some("cf2bq-pool"));
        assert_eq!(f.provider.as_deref(), Some("aws-prod"));
        assert_eq!(
            f.service_account.as_deref(),
            Some("loader@p.iam.gserviceaccount.com")
        );
        let text = f.explain("permission denied: invalid_grant");
        for part in [
            "pool \"cf2bq-pool\"",
            "provider \"aws-prod\"",
            "project number 123456",
            "invalid_grant",
            "attribute condition",
            "roles/iam.workloadIdentityUser on loader@p.iam.gserviceaccount.com",
            "AWS_SESSION_TOKEN",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
        // Without impersonation the roles belong to the federated principal.
        let direct = Federation::from_config(&serde_json::json!({"audience": AUDIENCE}));
        assert_eq!(direct.service_account, None);
        assert!(direct.explain("x").contains("the federated principal"));
        // A malformed audience still gives a message.
        let odd = Federation::from_config(&serde_json::json!({"audience": "nonsense"}));
        assert!(odd.explain("x").contains("pool \"?\""));
    }

    #[test]
    fn external_account_json_is_recognised() {
        assert!(is_external_account(r#"{"type":"external_account"}"#));
        assert!(!is_external_account(r#"{"type":"service_account"}"#));
        assert!(!is_external_account("not json"));
    }

    /// A token source that answers with a fixed result.
    #[derive(Clone)]
    struct Fixed(Option<&'static str>);

    #[async_trait]
    impl Authenticator for Fixed {
        async fn access_token(&self) -> Result<String, BQError> {
            self.0.map(str::to_string).ok_or(BQError::NoToken)
        }
    }

    fn loader(key: &'static str, token: Option<&'static str>, reads: Arc<AtomicUsize>) -> Loader {
        Arc::new(move || {
            reads.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let auth: Arc<dyn Authenticator> = Arc::new(Fixed(token));
                Ok((key.to_string(), auth))
            })
        })
    }

    #[tokio::test]
    async fn a_failing_key_is_re_read_once_and_a_rotated_key_is_used() {
        let reads = Arc::new(AtomicUsize::new(0));
        let auth = Reloading::new(
            "old".into(),
            Arc::new(Fixed(None)),
            loader("new", Some("t-new"), reads.clone()),
        );
        assert_eq!(auth.access_token().await.unwrap(), "t-new");
        assert_eq!(auth.access_token().await.unwrap(), "t-new");
        assert_eq!(
            reads.load(Ordering::SeqCst),
            1,
            "read again only on failure"
        );
    }

    #[tokio::test]
    async fn an_unchanged_key_keeps_its_error_and_is_not_re_read_in_a_loop() {
        let reads = Arc::new(AtomicUsize::new(0));
        let auth = Reloading::new(
            "same".into(),
            Arc::new(Fixed(None)),
            loader("same", Some("unused"), reads.clone()),
        );
        assert!(matches!(auth.access_token().await, Err(BQError::NoToken)));
        assert!(matches!(auth.access_token().await, Err(BQError::NoToken)));
        assert_eq!(reads.load(Ordering::SeqCst), 1, "at most once per interval");
    }

    #[tokio::test]
    async fn a_working_key_is_never_re_read() {
        let reads = Arc::new(AtomicUsize::new(0));
        let auth = Reloading::new(
            "k".into(),
            Arc::new(Fixed(Some("t"))),
            loader("k2", Some("t2"), reads.clone()),
        );
        assert_eq!(auth.access_token().await.unwrap(), "t");
        assert_eq!(reads.load(Ordering::SeqCst), 0);
    }
}
