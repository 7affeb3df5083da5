//! AWS SDK clients, configured once from the environment.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Loads the shared AWS configuration (region, credentials, `AWS_ENDPOINT_URL`), with
/// bounded attempts: a stalled connection fails and is retried instead of hanging the
/// invocation, and throttling or a 5xx is retried a few more times than the SDK's default.
pub async fn load() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(6))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(30))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        )
        .load()
        .await
}

/// An S3 client, its calls counted. With an endpoint override (a local emulator) buckets are
/// addressed by path, since `bucket.127.0.0.1` does not resolve.
pub fn s3(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let mut builder = aws_sdk_s3::config::Builder::from(config).interceptor(CountCalls);
    if config.endpoint_url().is_some() {
        builder = builder.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// A DynamoDB client, its calls counted.
pub fn dynamodb(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    let builder = aws_sdk_dynamodb::config::Builder::from(config).interceptor(CountCalls);
    aws_sdk_dynamodb::Client::from_conf(builder.build())
}

/// Counts every attempt sent (retries included: each is a billed request) as
/// `Service.Operation` in [`crate::calls`].
#[derive(Debug)]
struct CountCalls;

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "CountCalls"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        config: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(operation) = config.load::<Metadata>() {
            crate::calls::count(&format!("{}.{}", operation.service(), operation.name()));
        }
        Ok(())
    }
}
