//! Structured logs: JSON in Lambda (CloudWatch parses it), readable text elsewhere.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber. `CF2BQ_LOG_FORMAT` = `json` | `text`; the default is JSON
/// inside Lambda and text elsewhere. Logs go to stderr so CLI output on stdout stays clean.
pub fn init() {
    init_with_writer(std::io::stderr);
}

/// [`init`], writing through `writer` instead of straight to stderr: the CLI passes one that
/// hides its progress bars while a line is written. Colours still follow whether stderr is a
/// terminal, since that is where the writer ends up.
pub fn init_with_writer<W>(writer: W)
where
    W: for<'a> fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let json = match std::env::var("CF2BQ_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => in_lambda,
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(writer);
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .without_time()
            .try_init()
    } else {
        use std::io::IsTerminal;
        builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
