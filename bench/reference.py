#!/usr/bin/env python3
"""Python reference for `make bench`: the same work as cf2bq's transform, done the usual way.

    python3 bench/reference.py FILE.gz

This is what a typical Python Lambda that loads CloudFront logs into BigQuery does with one
object, minus the network: stream the gzip, read the `#Fields` header, split each line with
the csv module, build one dict per row (`-` → None, numbers converted, URL-encoded fields
decoded), pick the daily table from the row's own date, serialise the row to JSON and
accumulate it into per-table insertAll-shaped batches (at most 500 rows / 10 MB each), which
are built and then dropped instead of being POSTed.

It is meant to be honest, not slow: the field → converter lookup is done once per file, the
inner loop is plain idiomatic Python, stdlib only (Python ≥ 3.11).

Prints one JSON line on stdout, shaped like `cf2bq bench transform`:
    {"uncompressed_bytes": N, "rows": N, "rejected": N, "requests": N,
     "request_bytes": N, "seconds": F, "python": "3.11.7"}
"""

import csv
import gzip
import json
import platform
import sys
import time
from urllib.parse import unquote

INT_FIELDS = {
    "sc-bytes",
    "sc-status",
    "cs-bytes",
    "fle-encrypted-fields",
    "c-port",
    "sc-content-len",
    "sc-range-start",
    "sc-range-end",
}
FLOAT_FIELDS = {"time-taken", "time-to-first-byte"}
# The client sent these percent-encoded already; CloudFront adds one layer: remove one.
ONE_LAYER_FIELDS = {"cs-uri-stem", "cs-uri-query"}
# Header values CloudFront encodes twice today (a space is %2520): remove up to two layers,
# as cf2bq does, so both sides do the same work.
TWO_LAYER_FIELDS = {"cs(Referer)", "cs(User-Agent)"}

MAX_BATCH_ROWS = 500  # insertAll's recommended maximum
MAX_BATCH_BYTES = 10 * 1000 * 1000  # insertAll's request size limit
TABLE_PREFIX = "cloudfront_"

# csv must not treat '"' specially: CloudFront fields are never quoted.
csv.field_size_limit(1 << 24)


def unquote_twice(value):
    value = unquote(value)
    if "%" in value:
        value = unquote(value)
    return value


def converter(name):
    if name in INT_FIELDS:
        return int
    if name in FLOAT_FIELDS:
        return float
    if name in ONE_LAYER_FIELDS:
        return unquote
    if name in TWO_LAYER_FIELDS:
        return unquote_twice
    return None


class Loader:
    """Per-table batches, flushed like insertAll requests (built, then discarded)."""

    def __init__(self):
        self.batches = {}  # table -> [json rows, bytes]
        self.requests = 0
        self.request_bytes = 0

    def add(self, table, row_json):
        batch = self.batches.get(table)
        if batch is None:
            batch = self.batches[table] = [[], 0]
        size = len(row_json) + 10  # + '{"json":' '}' ','
        if batch[0] and (len(batch[0]) >= MAX_BATCH_ROWS or batch[1] + size > MAX_BATCH_BYTES):
            self.flush(table, batch)
        batch[0].append(row_json)
        batch[1] += size

    def flush(self, table, batch):
        rows, _ = batch
        body = ('{"rows":[' + ",".join('{"json":' + r + "}" for r in rows) + "]}").encode()
        # A real loader would POST body to .../tables/{table}/insertAll here.
        self.requests += 1
        self.request_bytes += len(body)
        batch[0] = []
        batch[1] = 0

    def close(self):
        for table, batch in self.batches.items():
            if batch[0]:
                self.flush(table, batch)


def transform(path):
    rows = rejected = 0
    loader = Loader()
    fields = None
    plan = None
    with gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for values in reader:
            if not values:
                continue
            first = values[0]
            if first.startswith("#"):
                if first.startswith("#Fields:"):
                    # "#Fields: date time ..." — split by whitespace, whatever the separator.
                    fields = "\t".join(values)[len("#Fields:") :].split()
                    plan = [(name, converter(name)) for name in fields]
                continue
            if plan is None or len(values) != len(plan):
                rejected += 1
                continue
            record = {}
            try:
                for (name, convert), value in zip(plan, values):
                    if value == "-":
                        record[name] = None
                    elif convert is None:
                        record[name] = value
                    else:
                        record[name] = convert(value)
            except ValueError:
                rejected += 1
                continue
            date = record["date"]
            if date is None or len(date) != 10:
                rejected += 1
                continue
            table = TABLE_PREFIX + date.replace("-", "")
            loader.add(table, json.dumps(record))
            rows += 1
        # The text wrapper's buffer is the GzipFile: its position is the uncompressed size.
        uncompressed = f.buffer.tell()
    loader.close()
    return {
        "uncompressed_bytes": uncompressed,
        "rows": rows,
        "rejected": rejected,
        "requests": loader.requests,
        "request_bytes": loader.request_bytes,
    }


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: reference.py FILE.gz")
    started = time.perf_counter()
    result = transform(sys.argv[1])
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["python"] = platform.python_version()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
