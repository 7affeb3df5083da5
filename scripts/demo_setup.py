"""Wire a fresh demo bucket to a fresh ingest queue (with a DLQ) on the local moto stack,
the way infra/cf2bq.yaml wires them on AWS. Prints shell `export` lines for the demo."""

import json
import os
import sys
import time

import boto3

endpoint = os.environ["AWS_ENDPOINT_URL"]
if "127.0.0.1" not in endpoint and "localhost" not in endpoint:
    sys.exit(f"refusing to set up the demo against {endpoint}: local stack only")

run = os.environ.get("DEMO_RUN") or str(int(time.time()))
bucket = f"cf2bq-demo-{run}"
session = boto3.session.Session(region_name=os.environ.get("AWS_REGION", "us-east-1"))
s3 = session.client("s3", endpoint_url=endpoint)
sqs = session.client("sqs", endpoint_url=endpoint)

s3.create_bucket(Bucket=bucket)
dlq_url = sqs.create_queue(QueueName=f"cf2bq-demo-{run}-dlq")["QueueUrl"]
dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
queue_url = sqs.create_queue(
    QueueName=f"cf2bq-demo-{run}",
    Attributes={
        "VisibilityTimeout": "30",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}),
    },
)["QueueUrl"]
queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
s3.put_bucket_notification_configuration(
    Bucket=bucket,
    NotificationConfiguration={
        "QueueConfigurations": [
            {
                "QueueArn": queue_arn,
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": suffix}]}},
            }
            # Legacy and v2 text logs, and v2 Parquet (as infra/cf2bq.yaml wires them).
            for suffix in (".gz", ".parquet")
        ]
    },
)
print(f"export DEMO_BUCKET={bucket}")
print(f"export DEMO_QUEUE_URL={queue_url}")
print(f"export DEMO_DLQ_URL={dlq_url}")
print(f"export CF2BQ_INGEST_QUEUE_URL={queue_url}")
