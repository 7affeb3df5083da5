"""API calls for scripts/stack.sh, run with the stack venv's python.

Subcommands:
  install-spatial  install DuckDB's spatial extension from the wheel's files (HOME must be
                   the emulator's private home), so bqemulator never tries to download it
  dataset          create the BigQuery dataset in bqemulator (409 = already there)
  ledger           create the DynamoDB ledger table in moto (already exists = fine)
  reset-aws        wipe moto's state, then re-create the ledger table

Settings come from the environment that stack.sh exports (same names as the README configuration table).
"""

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path


def env(name, default):
    return os.environ.get(name) or default


MOTO_URL = f"http://127.0.0.1:{env('CF2BQ_MOTO_PORT', '5055')}"
BQ_REST_URL = f"http://127.0.0.1:{env('CF2BQ_BQ_REST_PORT', '9050')}/bigquery/v2"
PROJECT = env("CF2BQ_BQ_PROJECT", "local-project")
DATASET = env("CF2BQ_BQ_DATASET", "cf2bq")
LEDGER = env("CF2BQ_LEDGER_TABLE", "cf2bq-ledger")


def install_spatial():
    import duckdb
    import duckdb_extension_spatial

    pkg = Path(duckdb_extension_spatial.__file__).parent
    # The wheel holds extensions/v<duckdb version>/spatial.duckdb_extension.
    ext = pkg / "extensions" / f"v{duckdb.__version__}" / "spatial.duckdb_extension"
    if not ext.is_file():
        sys.exit(f"spatial extension for duckdb {duckdb.__version__} not found under {pkg}")
    con = duckdb.connect()
    # INSTALL from a local file copies it into $HOME/.duckdb/extensions; LOAD proves it works.
    con.execute(f"INSTALL '{ext}'")
    con.execute("LOAD spatial")
    print(f"spatial extension installed from {ext}", file=sys.stderr)


def create_dataset():
    body = {"datasetReference": {"projectId": PROJECT, "datasetId": DATASET}}
    req = urllib.request.Request(
        f"{BQ_REST_URL}/projects/{PROJECT}/datasets",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        urllib.request.urlopen(req, timeout=10).close()
        print(f"dataset {PROJECT}.{DATASET} created", file=sys.stderr)
    except urllib.error.HTTPError as e:
        if e.code != 409:
            sys.exit(f"create dataset failed: HTTP {e.code}: {e.read().decode(errors='replace')}")
        print(f"dataset {PROJECT}.{DATASET} already exists", file=sys.stderr)


def dynamodb():
    import boto3

    # Explicit endpoint/keys so this never talks to real AWS, whatever the caller's env holds.
    return boto3.client(
        "dynamodb",
        endpoint_url=MOTO_URL,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def create_ledger():
    ddb = dynamodb()
    try:
        ddb.create_table(
            TableName=LEDGER,
            AttributeDefinitions=[{"AttributeName": "object_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "object_id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        print(f"ledger table {LEDGER} created", file=sys.stderr)
    except ddb.exceptions.ResourceInUseException:
        print(f"ledger table {LEDGER} already exists", file=sys.stderr)


def reset_aws():
    req = urllib.request.Request(f"{MOTO_URL}/moto-api/reset", data=b"", method="POST")
    urllib.request.urlopen(req, timeout=10).close()
    print("moto state reset", file=sys.stderr)
    create_ledger()


COMMANDS = {
    "install-spatial": install_spatial,
    "dataset": create_dataset,
    "ledger": create_ledger,
    "reset-aws": reset_aws,
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(COMMANDS)}}}")
    COMMANDS[sys.argv[1]]()
