#!/usr/bin/env bash
# Deploy infra/cf2bq.yaml with the function zips built by `make build`.
#
# 1. upload target/lambda-arm64/{ingest,table-keeper}/bootstrap.zip to ARTIFACT_BUCKET under
#    content-hashed keys (like `cloudformation package` does: a changed zip gets a new key,
#    so CloudFormation sees the change and updates the function code; an unchanged one is
#    not uploaded again);
# 2. `aws cloudformation deploy` (creates or updates the stack through a change set).
#
# Required: STACK_NAME, ARTIFACT_BUCKET (same region as the stack), and on the first deploy
#           LOG_BUCKET, BQ_PROJECT, BQ_DATASET.
# Optional (unset = template default on create, previous value on update):
#   CREATE_BUCKET (true|false)   LOG_PREFIX            QUARANTINE_PREFIX
#   NOTIFICATION_MODE (s3|eventbridge)                 LOG_BUCKET_ACCOUNT_ID
#   LOG_BUCKET_KMS_KEY_ARN       QUARANTINE_EXPIRATION_DAYS
#   TABLE_PREFIX                 TABLE_LAYOUT          PARTITIONED_TABLE
#   GCP_SECRET_ARN               ALERT_EMAIL           KEEPER_SCHEDULE
#   INGEST_MEMORY_MB             INGEST_TIMEOUT_SECONDS INGEST_MAX_CONCURRENCY
#   KEEPER_MEMORY_MB             KEEPER_TIMEOUT_SECONDS LOG_RETENTION_DAYS
#   CREATE_AHEAD_DAYS            LOOKBACK_DAYS         STALE_HOURS
#   ALERT_REPEAT_HOURS           INGEST_BATCH_SIZE     INGEST_BATCHING_WINDOW_SECONDS
#   FUNCTION_NAME_PREFIX  functions <prefix>-ingest, <prefix>-table-keeper; unset = the stack
#                         name when it has at most 51 characters; empty = CloudFormation names
#   INGEST_ZIP, KEEPER_ZIP (other zip paths), AWS_REGION / AWS_PROFILE (usual AWS CLI
#   settings), AWS_ENDPOINT_URL (an emulator), AWS_CLI (the AWS CLI v2 to run; default aws).
# Names differ from the CF2BQ_* runtime variables on purpose, so that a shell set up for
# the local stack cannot leak emulator values into a real deployment.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "deploy: $*" >&2; exit 1; }
: "${STACK_NAME:?set STACK_NAME (the CloudFormation stack)}"
: "${ARTIFACT_BUCKET:?set ARTIFACT_BUCKET (an S3 bucket in the stack region for code zips)}"
INGEST_ZIP=${INGEST_ZIP:-target/lambda-arm64/ingest/bootstrap.zip}
KEEPER_ZIP=${KEEPER_ZIP:-target/lambda-arm64/table-keeper/bootstrap.zip}
for z in "$INGEST_ZIP" "$KEEPER_ZIP"; do
    [[ -s $z ]] || die "$z not found: run 'make build' first"
done

# The AWS CLI v2 (v1 is in maintenance mode, and not what docs/deploy.md describes).
AWS_CLI=${AWS_CLI:-aws}
version=$("$AWS_CLI" --version 2>&1) ||
    die "'$AWS_CLI' not found: install the AWS CLI v2 (docs/deploy.md, Prerequisites)"
[[ $version == aws-cli/2.* ]] ||
    die "'$AWS_CLI' is $version; make deploy needs the AWS CLI v2 (docs/deploy.md, Prerequisites)"
aws() { "$AWS_CLI" "$@"; } # v2 reads AWS_REGION, AWS_PROFILE and AWS_ENDPOINT_URL itself

# The stack's own S3 notification takes one prefix (CloudFormation cannot add one
# destination per list entry); several prefixes need the EventBridge mode.
if [[ ${CREATE_BUCKET:-true} == true && ${NOTIFICATION_MODE:-s3} == s3 && ${LOG_PREFIX:-} == *,* ]]; then
    die "LOG_PREFIX '$LOG_PREFIX' holds several prefixes: the bucket's S3 notification filters on one; set NOTIFICATION_MODE=eventbridge (or CREATE_BUCKET=false for an existing bucket)"
fi
# Function names: the stack name when it fits (<stack>-table-keeper within Lambda's 64).
if [[ -z ${FUNCTION_NAME_PREFIX+x} && ${#STACK_NAME} -le 51 ]]; then
    FUNCTION_NAME_PREFIX=$STACK_NAME
fi

# Upload a zip as <prefix>/<name>-<sha256>.zip unless that key is already there.
upload() {
    local name=$1 zip=$2 key
    key="cf2bq/$STACK_NAME/$name-$(sha256sum "$zip" | cut -c1-64).zip"
    if ! aws s3api head-object --bucket "$ARTIFACT_BUCKET" --key "$key" >/dev/null 2>&1; then
        aws s3 cp --only-show-errors "$zip" "s3://$ARTIFACT_BUCKET/$key" >&2
        echo "deploy: uploaded s3://$ARTIFACT_BUCKET/$key" >&2
    fi
    echo "$key"
}
ingest_key=$(upload ingest "$INGEST_ZIP")
keeper_key=$(upload table-keeper "$KEEPER_ZIP")

# Parameter overrides: the code location always, the rest only when set.
params=("CodeBucket=$ARTIFACT_BUCKET" "IngestCodeKey=$ingest_key" "KeeperCodeKey=$keeper_key")
add() { [[ -n ${!2+x} ]] && params+=("$1=${!2}"); return 0; }
add CreateBucket CREATE_BUCKET
add LogBucketName LOG_BUCKET
add LogKeyPrefix LOG_PREFIX
add QuarantinePrefix QUARANTINE_PREFIX
add QuarantineExpirationDays QUARANTINE_EXPIRATION_DAYS
add NotificationMode NOTIFICATION_MODE
add LogBucketAccountId LOG_BUCKET_ACCOUNT_ID
add LogBucketKmsKeyArn LOG_BUCKET_KMS_KEY_ARN
add FunctionNamePrefix FUNCTION_NAME_PREFIX
add BigQueryProject BQ_PROJECT
add BigQueryDataset BQ_DATASET
add TablePrefix TABLE_PREFIX
add TableLayout TABLE_LAYOUT
add PartitionedTableName PARTITIONED_TABLE
add GcpServiceAccountSecretArn GCP_SECRET_ARN
add BigQueryAuth BQ_AUTH
add GcpCredentialConfigParameter GCP_CREDENTIAL_CONFIG_PARAMETER
add AlertEmail ALERT_EMAIL
add KeeperSchedule KEEPER_SCHEDULE
add IngestMemoryMB INGEST_MEMORY_MB
add IngestTimeoutSeconds INGEST_TIMEOUT_SECONDS
add IngestMaxConcurrency INGEST_MAX_CONCURRENCY
add IngestBatchSize INGEST_BATCH_SIZE
add IngestBatchingWindowSeconds INGEST_BATCHING_WINDOW_SECONDS
add IngestMaxConnections INGEST_MAX_CONNECTIONS
add KeeperMemoryMB KEEPER_MEMORY_MB
add KeeperTimeoutSeconds KEEPER_TIMEOUT_SECONDS
add LogRetentionDays LOG_RETENTION_DAYS
add DropCookies DROP_COOKIES
add IpPrivacy IP_PRIVACY
add V2DeliveryDistributionId V2_DISTRIBUTION_ID
add V2DeliveryFormat V2_FORMAT
add V2DeliveryHivePaths V2_HIVE_PATHS
add V2DeliveryFields V2_FIELDS
add PlainFields PLAIN_FIELDS
add CreateAheadDays CREATE_AHEAD_DAYS
add LookbackDays LOOKBACK_DAYS
add StaleHours STALE_HOURS
add AlertRepeatHours ALERT_REPEAT_HOURS

# Templates over 51,200 bytes must go through S3.
via_s3=()
if (($(wc -c <infra/cf2bq.yaml) > 51200)); then
    via_s3=(--s3-bucket "$ARTIFACT_BUCKET" --s3-prefix "cf2bq/$STACK_NAME")
fi
aws cloudformation deploy \
    --stack-name "$STACK_NAME" \
    --template-file infra/cf2bq.yaml \
    ${via_s3[@]+"${via_s3[@]}"} \
    --capabilities CAPABILITY_IAM \
    --no-fail-on-empty-changeset \
    --parameter-overrides "${params[@]}"

aws cloudformation describe-stacks --stack-name "$STACK_NAME" \
    --query 'Stacks[0].Outputs[].[OutputKey,OutputValue]' --output text
if [[ ${BQ_AUTH:-secret} == external_account ]]; then
    echo "deploy: done. Keyless: bind IngestRoleArn and KeeperRoleArn on the Google side" \
         "(docs/deploy.md, 'Keyless: Workload Identity Federation')."
else
    echo "deploy: done. If GcpServiceAccountSecretArn is the stack's own secret, put the key in it" \
         "(docs/deploy.md, 'Store the key')."
fi
