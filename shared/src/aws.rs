//! AWS SDK clients, configured once from the environment.

/// Loads the shared AWS configuration (region, credentials, `AWS_ENDPOINT_URL`).
pub async fn load() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// An S3 client. With an endpoint override (a local emulator) buckets are addressed by path,
/// since `bucket.127.0.0.1` does not resolve.
pub fn s3(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let mut builder = aws_sdk_s3::config::Builder::from(config);
    if config.endpoint_url().is_some() {
        builder = builder.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}
