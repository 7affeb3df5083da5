//! Environment → one `Config`. The README's configuration table mirrors this file.

use std::env;
use std::time::Duration;

use crate::cloudfront::Header;
use crate::privacy::{IpPrivacy, Privacy};
use crate::route::Layout;

/// Default size of one AppendRows request: large enough to amortise each round trip, small
/// enough that the requests in flight keep an ingest under 64 MiB. Batches are queued,
/// kept until acknowledged and gzipped whole, so memory follows this size: a 256 MiB object
/// ingested at line rate peaked at 75 MiB with 2 MiB batches, 58 MiB with 1 MiB.
pub const DEFAULT_BATCH_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required but not set")]
    Missing(&'static str),
    #[error("{name}={value:?}: {why}")]
    Invalid {
        name: &'static str,
        value: String,
        why: String,
    },
}

/// How to authenticate to BigQuery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BigQueryAuth {
    /// A service-account key JSON stored in AWS Secrets Manager.
    Secret(String),
    /// A service-account key JSON file.
    File(String),
    /// Workload Identity Federation: the function's own AWS credentials are exchanged for a
    /// Google token. The credential configuration (`"type": "external_account"`) holds no
    /// secret. (A secret or file that turns out to hold one is used the same way.)
    ExternalAccount(CredentialConfig),
    /// No credentials (the local emulator).
    None,
}

/// Where the external-account credential configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialConfig {
    /// The JSON itself (`CF2BQ_GCP_CREDENTIAL_CONFIG`; the template fills it from an SSM
    /// parameter).
    Inline(String),
    /// A JSON file (`GOOGLE_APPLICATION_CREDENTIALS`).
    File(String),
}

#[derive(Debug, Clone)]
pub struct BigQueryConfig {
    pub project: String,
    pub dataset: String,
    pub rest_url: String,
    pub grpc_url: String,
    /// gzip on the Storage Write wire (requests sent compressed, answers accepted so).
    pub grpc_gzip: bool,
    pub auth: BigQueryAuth,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bigquery: BigQueryConfig,
    pub layout: Layout,
    pub partition_expiration_days: Option<u32>,
    pub ledger_table: String,
    pub lease: Duration,
    pub quarantine: Option<String>,
    pub ingest_queue_url: Option<String>,
    pub alert_topic_arn: Option<String>,
    pub create_ahead_days: u32,
    pub lookback_days: u32,
    pub stale_hours: u32,
    /// A keeper problem that stays open is alerted again after this many hours (0 = every run).
    pub alert_repeat_hours: u32,
    /// Target size of one AppendRows request (BigQuery's limit is 10 MB).
    pub batch_bytes: usize,
    pub max_line_bytes: usize,
    /// Objects of one invocation read and parsed at once (memory grows with it).
    pub parallel_objects: usize,
    /// A table's rows go to another stream (connection) once each of its streams carries
    /// this many bytes.
    pub stream_spread_bytes: u64,
    /// The most Storage Write connections one invocation holds open (the regional quota is
    /// shared by every concurrent Lambda); each table gets one regardless.
    pub max_connections: usize,
    /// No object starts with less than this left before the invocation's deadline.
    pub deadline_reserve: Duration,
    /// `ingest --poll-queue`: the deadline each simulated invocation gets (Lambda's timeout).
    pub poll_invocation: Duration,
    /// What is removed from rows before they leave AWS.
    pub privacy: Privacy,
    /// The fields of a v2 plain delivery, in order (`CF2BQ_PLAIN_FIELDS`): plain objects
    /// carry no header, so without them such an object is refused.
    pub plain_fields: Option<Header>,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Builds a config from any name → value lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));
        let or = |name: &str, default: &str| get(name).unwrap_or_else(|| default.to_string());
        let auth = bigquery_auth(&get)?;
        let layout = match or("CF2BQ_TABLE_LAYOUT", "sharded").as_str() {
            "sharded" => Layout::Sharded {
                prefix: or("CF2BQ_TABLE_PREFIX", "cloudfront_"),
            },
            "partitioned" => Layout::Partitioned {
                table: or("CF2BQ_PARTITIONED_TABLE", "cloudfront_logs"),
            },
            other => {
                return Err(ConfigError::Invalid {
                    name: "CF2BQ_TABLE_LAYOUT",
                    value: other.to_string(),
                    why: "expected sharded or partitioned".into(),
                })
            }
        };
        Ok(Config {
            bigquery: BigQueryConfig {
                project: required("CF2BQ_BQ_PROJECT")?,
                dataset: required("CF2BQ_BQ_DATASET")?,
                rest_url: or(
                    "CF2BQ_BQ_REST_URL",
                    "https://bigquery.googleapis.com/bigquery/v2",
                ),
                grpc_url: or(
                    "CF2BQ_BQ_GRPC_URL",
                    "https://bigquerystorage.googleapis.com",
                ),
                grpc_gzip: flag(&get, "CF2BQ_GRPC_GZIP")?.unwrap_or(true),
                auth,
            },
            layout,
            partition_expiration_days: number(&get, "CF2BQ_PARTITION_EXPIRATION_DAYS")?,
            ledger_table: or("CF2BQ_LEDGER_TABLE", "cf2bq-ledger"),
            lease: Duration::from_secs(number(&get, "CF2BQ_LEASE_SECONDS")?.unwrap_or(900)),
            quarantine: get("CF2BQ_QUARANTINE"),
            ingest_queue_url: get("CF2BQ_INGEST_QUEUE_URL"),
            alert_topic_arn: get("CF2BQ_ALERT_TOPIC_ARN"),
            create_ahead_days: number(&get, "CF2BQ_CREATE_AHEAD_DAYS")?.unwrap_or(1),
            lookback_days: number(&get, "CF2BQ_LOOKBACK_DAYS")?.unwrap_or(7),
            stale_hours: number(&get, "CF2BQ_STALE_HOURS")?.unwrap_or(3),
            alert_repeat_hours: number(&get, "CF2BQ_ALERT_REPEAT_HOURS")?
                .unwrap_or(crate::keeper::alerts::DEFAULT_REPEAT_HOURS),
            batch_bytes: number(&get, "CF2BQ_BATCH_BYTES")?.unwrap_or(DEFAULT_BATCH_BYTES),
            max_line_bytes: number(&get, "CF2BQ_MAX_LINE_BYTES")?
                .unwrap_or(crate::cloudfront::DEFAULT_MAX_LINE_BYTES),
            parallel_objects: number(&get, "CF2BQ_PARALLEL_OBJECTS")?
                .unwrap_or(DEFAULT_PARALLEL_OBJECTS)
                .max(1),
            stream_spread_bytes: number(&get, "CF2BQ_STREAM_SPREAD_BYTES")?
                .unwrap_or(DEFAULT_STREAM_SPREAD_BYTES)
                .max(1),
            max_connections: number(&get, "CF2BQ_MAX_CONNECTIONS")?
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            deadline_reserve: Duration::from_secs(
                number(&get, "CF2BQ_DEADLINE_RESERVE_SECONDS")?.unwrap_or(120),
            ),
            poll_invocation: Duration::from_secs(
                number(&get, "CF2BQ_POLL_INVOCATION_SECONDS")?.unwrap_or(900),
            ),
            privacy: privacy(&get)?,
            plain_fields: plain_fields(&get)?,
        })
    }
}

/// `CF2BQ_DROP_COOKIES`, `CF2BQ_IP_PRIVACY` and its `CF2BQ_IP_HASH_KEY`.
fn privacy(get: &impl Fn(&str) -> Option<String>) -> Result<Privacy, ConfigError> {
    let drop_cookies = match get("CF2BQ_DROP_COOKIES").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ConfigError::Invalid {
                name: "CF2BQ_DROP_COOKIES",
                value: other.to_string(),
                why: "expected true or false".into(),
            })
        }
    };
    let ip = match get("CF2BQ_IP_PRIVACY").as_deref() {
        None | Some("keep") => IpPrivacy::Keep,
        Some("truncate") => IpPrivacy::Truncate,
        Some("hash") => {
            let key = get("CF2BQ_IP_HASH_KEY").ok_or(ConfigError::Missing("CF2BQ_IP_HASH_KEY"))?;
            // The key is never echoed: only its length is judged.
            if key.len() < 16 {
                return Err(ConfigError::Invalid {
                    name: "CF2BQ_IP_HASH_KEY",
                    value: format!("({} bytes)", key.len()),
                    why: "a hash key needs at least 16 bytes (32 random bytes recommended)".into(),
                });
            }
            IpPrivacy::Hash(key.into_bytes())
        }
        Some(other) => {
            return Err(ConfigError::Invalid {
                name: "CF2BQ_IP_PRIVACY",
                value: other.to_string(),
                why: "expected keep, truncate or hash".into(),
            })
        }
    };
    Ok(Privacy { drop_cookies, ip })
}

/// `CF2BQ_PLAIN_FIELDS`: the delivery's field list (commas, spaces or TABs between names),
/// checked now so a list that cannot date rows fails at start-up, not on every object.
fn plain_fields(get: &impl Fn(&str) -> Option<String>) -> Result<Option<Header>, ConfigError> {
    const NAME: &str = "CF2BQ_PLAIN_FIELDS";
    get(NAME)
        .map(|list| {
            Header::parse(&list).map_err(|e| ConfigError::Invalid {
                name: NAME,
                value: list.clone(),
                why: e.to_string(),
            })
        })
        .transpose()
}

/// An on/off setting: `true`/`false`, `1`/`0`, `on`/`off`.
fn flag(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<bool>, ConfigError> {
    let Some(value) = get(name) else {
        return Ok(None);
    };
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "on" => Ok(Some(true)),
        "false" | "0" | "off" => Ok(Some(false)),
        _ => Err(ConfigError::Invalid {
            name,
            value,
            why: "expected true or false".into(),
        }),
    }
}

/// Objects parsed at once: each holds a few MiB of batches in flight, and small objects
/// spend most of their time waiting on S3, so four keep two cores busy.
const DEFAULT_PARALLEL_OBJECTS: usize = 4;

/// 32 MiB of rows take a connection (1–10 MB/s) several seconds: past that, another stream
/// pays for its CreateWriteStream call. Small objects never reach it.
const DEFAULT_STREAM_SPREAD_BYTES: u64 = 32 << 20;

/// Two connections per invocation: a large object loads about twice as fast, its streams
/// share one connection's window of requests in flight (each request is about 1 MiB, kept
/// until acknowledged), so memory stays flat; 500 concurrent invocations stay within a
/// region's ~1,000 connections. More connections buy speed with memory.
const DEFAULT_MAX_CONNECTIONS: usize = 2;

const CREDENTIAL_CONFIG: &str = "CF2BQ_GCP_CREDENTIAL_CONFIG";

fn bigquery_auth(get: &impl Fn(&str) -> Option<String>) -> Result<BigQueryAuth, ConfigError> {
    let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));
    let inline = || {
        get(CREDENTIAL_CONFIG)
            .map(|json| check_external_account(&json).map(|()| CredentialConfig::Inline(json)))
            .transpose()
    };
    Ok(match get("CF2BQ_BQ_AUTH").as_deref() {
        Some("none") => BigQueryAuth::None,
        Some("secret") => BigQueryAuth::Secret(required("CF2BQ_GCP_SA_SECRET_ID")?),
        Some("file") => BigQueryAuth::File(required("GOOGLE_APPLICATION_CREDENTIALS")?),
        Some("external_account") => BigQueryAuth::ExternalAccount(
            match (inline()?, get("GOOGLE_APPLICATION_CREDENTIALS")) {
                (Some(config), _) => config,
                (None, Some(file)) => CredentialConfig::File(file),
                (None, None) => return Err(ConfigError::Missing(CREDENTIAL_CONFIG)),
            },
        ),
        None => match (
            inline()?,
            get("CF2BQ_GCP_SA_SECRET_ID"),
            get("GOOGLE_APPLICATION_CREDENTIALS"),
        ) {
            (Some(config), _, _) => BigQueryAuth::ExternalAccount(config),
            // The secret or file may hold an external_account config: decided when read.
            (None, Some(secret), _) => BigQueryAuth::Secret(secret),
            (None, None, Some(file)) => BigQueryAuth::File(file),
            (None, None, None) => return Err(ConfigError::Missing("CF2BQ_GCP_SA_SECRET_ID")),
        },
        Some(other) => {
            return Err(ConfigError::Invalid {
                name: "CF2BQ_BQ_AUTH",
                value: other.to_string(),
                why: "expected secret, file, external_account or none".into(),
            })
        }
    })
}

/// `CF2BQ_GCP_CREDENTIAL_CONFIG` must be an external-account configuration. Its value is never
/// echoed: a service-account key pasted there by mistake must not reach the logs.
fn check_external_account(json: &str) -> Result<(), ConfigError> {
    let invalid = |why: String| ConfigError::Invalid {
        name: CREDENTIAL_CONFIG,
        value: "(not shown)".into(),
        why,
    };
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| invalid(format!("not JSON: {e}")))?;
    match value.get("type").and_then(|t| t.as_str()) {
        Some("external_account") => {}
        Some("service_account") => {
            return Err(invalid(
                "this is a service-account key (a secret): store it in Secrets Manager and set \
                 CF2BQ_GCP_SA_SECRET_ID, or generate a keyless configuration with \
                 `gcloud iam workload-identity-pools create-cred-config --aws`"
                    .into(),
            ))
        }
        other => {
            return Err(invalid(format!(
                "\"type\" is {other:?}, expected \"external_account\""
            )))
        }
    }
    for field in ["audience", "token_url", "credential_source"] {
        if value.get(field).is_none() {
            return Err(invalid(format!("no \"{field}\"")));
        }
    }
    Ok(())
}

fn number<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    get(name)
        .map(|v| {
            v.parse::<T>().map_err(|e| ConfigError::Invalid {
                name,
                value: v.clone(),
                why: e.to_string(),
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_and_required_values() {
        let base = [
            ("CF2BQ_BQ_PROJECT", "p"),
            ("CF2BQ_BQ_DATASET", "d"),
            ("CF2BQ_BQ_AUTH", "none"),
        ];
        let c = config(&base).unwrap();
        assert_eq!(
            c.layout,
            Layout::Sharded {
                prefix: "cloudfront_".into()
            }
        );
        assert_eq!(c.bigquery.auth, BigQueryAuth::None);
        assert_eq!(c.batch_bytes, DEFAULT_BATCH_BYTES);
        assert!(matches!(
            config(&[base[0], base[2]]),
            Err(ConfigError::Missing("CF2BQ_BQ_DATASET"))
        ));
        let bad = config(&[
            ("CF2BQ_BQ_PROJECT", "p"),
            ("CF2BQ_BQ_DATASET", "d"),
            ("CF2BQ_BQ_AUTH", "none"),
            ("CF2BQ_LEASE_SECONDS", "soon"),
        ]);
        assert!(bad.unwrap_err().to_string().contains("CF2BQ_LEASE_SECONDS"));
    }

    #[test]
    fn privacy_settings() {
        let base = [
            ("CF2BQ_BQ_PROJECT", "p"),
            ("CF2BQ_BQ_DATASET", "d"),
            ("CF2BQ_BQ_AUTH", "none"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            config(&pairs)
        };
        assert_eq!(with(&[]).unwrap().privacy, Privacy::default());
        let c = with(&[
            ("CF2BQ_DROP_COOKIES", "true"),
            ("CF2BQ_IP_PRIVACY", "truncate"),
        ])
        .unwrap();
        assert_eq!(
            c.privacy,
            Privacy {
                drop_cookies: true,
                ip: IpPrivacy::Truncate
            }
        );
        let c = with(&[
            ("CF2BQ_IP_PRIVACY", "hash"),
            ("CF2BQ_IP_HASH_KEY", "0123456789abcdef0123"),
        ])
        .unwrap();
        assert_eq!(
            c.privacy.ip,
            IpPrivacy::Hash(b"0123456789abcdef0123".to_vec())
        );
        assert!(matches!(
            with(&[("CF2BQ_IP_PRIVACY", "hash")]),
            Err(ConfigError::Missing("CF2BQ_IP_HASH_KEY"))
        ));
        let short = with(&[
            ("CF2BQ_IP_PRIVACY", "hash"),
            ("CF2BQ_IP_HASH_KEY", "secret"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            short.contains("16 bytes") && !short.contains("secret\""),
            "{short}"
        );
        for (name, value) in [
            ("CF2BQ_IP_PRIVACY", "anonymize"),
            ("CF2BQ_DROP_COOKIES", "yes"),
        ] {
            let error = with(&[(name, value)]).unwrap_err().to_string();
            assert!(error.contains(name), "{error}");
        }
    }

    #[test]
    fn plain_fields_are_read_in_order_and_must_date_rows() {
        let base = [
            ("CF2BQ_BQ_PROJECT", "p"),
            ("CF2BQ_BQ_DATASET", "d"),
            ("CF2BQ_BQ_AUTH", "none"),
        ];
        let with = |list: &'static str| {
            let mut pairs = base.to_vec();
            pairs.push(("CF2BQ_PLAIN_FIELDS", list));
            config(&pairs)
        };
        assert_eq!(config(&base).unwrap().plain_fields, None);
        let fields = with("timestamp(ms),c-ip, sc-status").unwrap().plain_fields;
        assert_eq!(
            fields,
            Some(Header::parse("timestamp(ms) c-ip sc-status").unwrap())
        );
        let error = with("c-ip,sc-status").unwrap_err().to_string();
        assert!(
            error.contains("CF2BQ_PLAIN_FIELDS") && error.contains("cannot be dated"),
            "{error}"
        );
    }

    #[test]
    fn grpc_gzip_is_on_by_default_whatever_the_scheme_and_can_be_turned_off() {
        let base = [
            ("CF2BQ_BQ_PROJECT", "p"),
            ("CF2BQ_BQ_DATASET", "d"),
            ("CF2BQ_BQ_AUTH", "none"),
            ("CF2BQ_BQ_GRPC_URL", "http://127.0.0.1:9060"),
        ];
        assert!(config(&base).unwrap().bigquery.grpc_gzip);
        for (value, on) in [
            ("false", false),
            ("0", false),
            ("OFF", false),
            ("true", true),
        ] {
            let c = config(&[
                base[0],
                base[1],
                base[2],
                base[3],
                ("CF2BQ_GRPC_GZIP", value),
            ]);
            assert_eq!(c.unwrap().bigquery.grpc_gzip, on, "{value}");
        }
        let err = config(&[base[0], base[1], base[2], ("CF2BQ_GRPC_GZIP", "gzip")]).unwrap_err();
        assert!(err.to_string().contains("CF2BQ_GRPC_GZIP"), "{err}");
    }

    #[test]
    fn auth_falls_back_to_secret_then_file() {
        let c = config(&[
            ("CF2BQ_BQ_PROJECT", "p"),
            ("CF2BQ_BQ_DATASET", "d"),
            ("CF2BQ_GCP_SA_SECRET_ID", "arn:s"),
        ])
        .unwrap();
        assert_eq!(c.bigquery.auth, BigQueryAuth::Secret("arn:s".into()));
        let c = config(&[
            ("CF2BQ_BQ_PROJECT", "p"),
            ("CF2BQ_BQ_DATASET", "d"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/k.json"),
        ])
        .unwrap();
        assert_eq!(c.bigquery.auth, BigQueryAuth::File("/k.json".into()));
    }

    const WIF: &str = r#"{"type": "external_account",
        "audience": "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/cf2bq/providers/aws",
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
        "token_url": "https://sts.googleapis.com/v1/token",
        "credential_source": {"environment_id": "aws1",
            "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"}}"#;

    #[test]
    fn external_account_from_the_environment_or_a_file() {
        let base = [("CF2BQ_BQ_PROJECT", "p"), ("CF2BQ_BQ_DATASET", "d")];
        // Chosen by the presence of the inline config, even next to a secret id.
        let c = config(&[
            base[0],
            base[1],
            ("CF2BQ_GCP_CREDENTIAL_CONFIG", WIF),
            ("CF2BQ_GCP_SA_SECRET_ID", "arn:s"),
        ])
        .unwrap();
        assert_eq!(
            c.bigquery.auth,
            BigQueryAuth::ExternalAccount(CredentialConfig::Inline(WIF.into()))
        );
        let c = config(&[
            base[0],
            base[1],
            ("CF2BQ_BQ_AUTH", "external_account"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/wif.json"),
        ])
        .unwrap();
        assert_eq!(
            c.bigquery.auth,
            BigQueryAuth::ExternalAccount(CredentialConfig::File("/wif.json".into()))
        );
        let missing = config(&[base[0], base[1], ("CF2BQ_BQ_AUTH", "external_account")]);
        assert!(matches!(
            missing,
            Err(ConfigError::Missing("CF2BQ_GCP_CREDENTIAL_CONFIG"))
        ));
    }

    #[test]
    fn a_key_in_the_credential_config_variable_is_refused_without_echoing_it() {
        let base = [("CF2BQ_BQ_PROJECT", "p"), ("CF2BQ_BQ_DATASET", "d")];
        let key = r#"{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----MIIEvQIBADANBg"}"#;
        let err = config(&[base[0], base[1], ("CF2BQ_GCP_CREDENTIAL_CONFIG", key)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CF2BQ_GCP_CREDENTIAL_CONFIG"), "{err}");
        assert!(err.contains("service-account key"), "{err}");
        assert!(!err.contains("MIIEvQIBADANBg"), "{err}");
        for (bad, why) in [
            ("{not json", "not JSON"),
            (
                r#"{"type": "authorized_user"}"#,
                "expected \"external_account\"",
            ),
            (
                r#"{"type": "external_account", "audience": "a"}"#,
                "no \"token_url\"",
            ),
        ] {
            let err = config(&[
                base[0],
                base[1],
                ("CF2BQ_BQ_AUTH", "external_account"),
                ("CF2BQ_GCP_CREDENTIAL_CONFIG", bad),
            ])
            .unwrap_err()
            .to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
