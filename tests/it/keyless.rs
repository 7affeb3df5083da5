//! Keyless BigQuery auth (`CF2BQ_BQ_AUTH=external_account`, Workload Identity Federation) end
//! to end: the real `cf2bq` binary, no key anywhere, exchanges its AWS credentials at a
//! loopback stand-in for Google's STS (which verifies the signed GetCallerIdentity request),
//! optionally impersonates a service account, and loads rows into the emulator through a
//! relay that records which bearer token each BigQuery REST request carried.

use std::time::Duration;

use cf2bq_tests::google_standin::{Expect, GoogleStandin, RecordingRelay};
use cf2bq_tests::{gzip, header_33, Harness};

const AUDIENCE: &str = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/cf2bq-pool/providers/aws-prod";
const SESSION_TOKEN: &str = "keyless-test-session-token";

fn lines(date: &str, n: usize) -> String {
    let mut text = header_33();
    for i in 0..n {
        text += &format!(
            "{date}\t10:00:{:02}\tFRA56-P1\t512\t2001:db8::1\tGET\td111111abcdef8.cloudfront.net\t/k{i}\t200\t-\tcurl/8.5.0\t-\t-\tHit\tAbCdEf==\td111111abcdef8.cloudfront.net\thttps\t34\t0.002\t-\tTLSv1.3\tTLS_AES_128_GCM_SHA256\tHit\tHTTP/2.0\t-\t-\t50432\t0.001\tHit\ttext/plain\t512\t-\t-\n",
            i % 60
        );
    }
    text
}

/// Two local objects of two dates.
fn objects(name: &str) -> Vec<String> {
    let dir = std::env::temp_dir().join(cf2bq_tests::unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    [("2026-02-01", 3), ("2026-02-02", 2)]
        .iter()
        .enumerate()
        .map(|(i, (date, n))| {
            let path = dir.join(format!("E2QWRUHAPOMQZL.{date}-10.keyless{i}.gz"));
            std::fs::write(&path, gzip(&lines(date, *n))).unwrap();
            path.to_str().unwrap().to_string()
        })
        .collect()
}

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (run `make test`)"))
}

fn expect(lifetimes: Vec<u64>) -> Expect {
    Expect {
        audience: AUDIENCE.into(),
        access_key_id: env_var("AWS_ACCESS_KEY_ID"),
        secret_access_key: env_var("AWS_SECRET_ACCESS_KEY"),
        session_token: Some(SESSION_TOKEN.into()),
        region: env_var("AWS_REGION"),
        lifetimes,
    }
}

/// What `gcloud iam workload-identity-pools create-cred-config --aws` writes, pointed at the
/// stand-in.
fn credential_config(sts: &GoogleStandin, impersonate: Option<&str>) -> String {
    let mut config = serde_json::json!({
        "universe_domain": "googleapis.com",
        "type": "external_account",
        "audience": AUDIENCE,
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
        "token_url": sts.token_url(),
        "credential_source": {
            "environment_id": "aws1",
            "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone",
            "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials",
            "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"
        }
    });
    if let Some(email) = impersonate {
        config["service_account_impersonation_url"] = sts.impersonation_url(email).into();
    }
    config.to_string()
}

fn rest_upstream() -> std::net::SocketAddr {
    let url = env_var("CF2BQ_BQ_REST_URL");
    let authority = url.trim_start_matches("http://").split('/').next().unwrap();
    authority
        .parse()
        .expect("CF2BQ_BQ_REST_URL is http://127.0.0.1:PORT/…")
}

/// Runs `cf2bq ingest` keyless: no key, no secret, no GOOGLE_APPLICATION_CREDENTIALS.
fn ingest_keyless(
    h: &Harness,
    config: &str,
    relay: &RecordingRelay,
    objects: &[String],
) -> (bool, String, String) {
    ingest_keyless_with(
        h,
        &[
            ("CF2BQ_BQ_AUTH", "external_account"),
            ("CF2BQ_GCP_CREDENTIAL_CONFIG", config),
        ],
        relay,
        objects,
    )
}

fn ingest_keyless_with(
    h: &Harness,
    auth: &[(&str, &str)],
    relay: &RecordingRelay,
    objects: &[String],
) -> (bool, String, String) {
    let rest_url = format!("http://{}/bigquery/v2", relay.addr);
    let mut args = vec!["ingest"];
    args.extend(objects.iter().map(String::as_str));
    assert!(h
        .env
        .iter()
        .all(|(k, _)| k != "CF2BQ_GCP_SA_SECRET_ID" && k != "GOOGLE_APPLICATION_CREDENTIALS"));
    let (ok, stdout, stderr, _) = h.run_binary_with(
        "cf2bq",
        &args,
        &[
            auth,
            &[
                ("CF2BQ_BQ_REST_URL", &rest_url),
                ("AWS_SESSION_TOKEN", SESSION_TOKEN),
            ],
        ]
        .concat(),
    );
    (ok, stdout, stderr)
}

/// The first token lives 8 s; the relay holds BigQuery's first request 9 s, so every later
/// request falls after that expiry. The same process must then fetch a second token (the
/// cache refreshes in the background) and use it; no request may carry an expired token.
#[tokio::test]
async fn federated_tokens_load_rows_and_are_refreshed_before_use_after_expiry() {
    let h = Harness::new("keyless").await;
    let sts = GoogleStandin::start(expect(vec![8, 3600]));
    let relay = RecordingRelay::start(rest_upstream(), Duration::from_secs(9));
    let config = credential_config(&sts, None);

    let (ok, stdout, stderr) = ingest_keyless(&h, &config, &relay, &objects("keyless"));
    assert!(
        ok,
        "keyless ingest failed:\n{stdout}\n{stderr}\nrefused: {:?}",
        sts.rejected()
    );
    assert_eq!(sts.rejected(), Vec::<String>::new());
    assert_eq!(h.count("cloudfront_20260201").await, 3);
    assert_eq!(h.count("cloudfront_20260202").await, 2);

    let issued = sts.issued();
    let seen = relay.seen();
    assert!(issued.len() >= 2, "no refresh: {issued:?}");
    assert!(!seen.is_empty());
    for (at, token) in &seen {
        let grant = issued
            .iter()
            .find(|i| &i.token == token)
            .unwrap_or_else(|| panic!("BigQuery got {token:?}, not a token the STS issued"));
        assert!(
            *at <= grant.at + grant.lifetime,
            "BigQuery got {token:?} after it expired"
        );
    }
    assert_eq!(seen[0].1, issued[0].token, "the first token is used first");
    assert!(
        seen.iter().any(|(_, t)| *t == issued[1].token),
        "the refreshed token reached BigQuery: {seen:?} / {issued:?}"
    );
}

/// With `service_account_impersonation_url` the federated token only buys the service
/// account's token; BigQuery sees only the latter.
#[tokio::test]
async fn impersonation_hands_bigquery_the_service_accounts_token() {
    let h = Harness::new("keyless_sa").await;
    let sts = GoogleStandin::start(expect(vec![3600]));
    let relay = RecordingRelay::start(rest_upstream(), Duration::ZERO);
    let config = credential_config(&sts, Some("loader@p.iam.gserviceaccount.com"));

    let (ok, stdout, stderr) = ingest_keyless(&h, &config, &relay, &objects("keyless-sa"));
    assert!(
        ok,
        "keyless ingest failed:\n{stdout}\n{stderr}\nrefused: {:?}",
        sts.rejected()
    );
    assert_eq!(sts.rejected(), Vec::<String>::new());
    assert_eq!(h.count("cloudfront_20260201").await, 3);

    let issued = sts.issued();
    let kinds: Vec<&str> = issued.iter().map(|i| i.kind).collect();
    assert_eq!(kinds, ["sts", "impersonation"]);
    let seen = relay.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|(_, t)| *t == issued[1].token),
        "BigQuery must see only the service account's token: {seen:?}"
    );
}

/// A refused exchange fails the run with the pool, the provider and what to check.
#[tokio::test]
async fn a_refused_exchange_names_the_pool_and_provider() {
    let h = Harness::new("keyless_refused").await;
    let mut wrong = expect(vec![3600]);
    wrong.audience = AUDIENCE.replace("aws-prod", "another-provider");
    let sts = GoogleStandin::start(wrong);
    let relay = RecordingRelay::start(rest_upstream(), Duration::ZERO);
    let config = credential_config(&sts, None);

    let (ok, stdout, stderr) = ingest_keyless(&h, &config, &relay, &objects("keyless-refused"));
    assert!(!ok, "must fail:\n{stdout}\n{stderr}");
    for part in [
        "pool \"cf2bq-pool\"",
        "provider \"aws-prod\"",
        "attribute condition",
        "audience",
    ] {
        assert!(stderr.contains(part), "{part:?} missing:\n{stderr}");
    }
    assert!(sts.issued().is_empty());
    assert!(relay.seen().is_empty(), "nothing reached BigQuery");
}

/// No CF2BQ_BQ_AUTH: a GOOGLE_APPLICATION_CREDENTIALS file holding an external_account
/// configuration is recognised and used keyless.
#[tokio::test]
async fn an_external_account_file_is_recognised_without_an_auth_mode() {
    let h = Harness::new("keyless_file").await;
    let sts = GoogleStandin::start(expect(vec![3600]));
    let relay = RecordingRelay::start(rest_upstream(), Duration::ZERO);
    let file = std::env::temp_dir().join(cf2bq_tests::unique("wif-config"));
    std::fs::write(&file, credential_config(&sts, None)).unwrap();

    let (ok, stdout, stderr) = ingest_keyless_with(
        &h,
        &[
            ("CF2BQ_BQ_AUTH", ""),
            ("GOOGLE_APPLICATION_CREDENTIALS", file.to_str().unwrap()),
        ],
        &relay,
        &objects("keyless-file"),
    );
    assert!(
        ok,
        "keyless ingest failed:\n{stdout}\n{stderr}\nrefused: {:?}",
        sts.rejected()
    );
    assert_eq!(h.count("cloudfront_20260202").await, 2);
    let issued = sts.issued();
    assert_eq!(issued.len(), 1);
    let seen = relay.seen();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|(_, t)| *t == issued[0].token), "{seen:?}");
}
