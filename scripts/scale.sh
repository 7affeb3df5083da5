#!/usr/bin/env bash
# The scale simulation: many small log objects, delivered in bursts with late and duplicated
# notifications, through the real ingest binary on the local stack; every external API call
# counted, every row checked exactly once, and the counts extrapolated to 1,000,000 objects a
# day: peak CreateWriteStream per hour against the quota, DML per table, cost per TB
# (tests/src/bin/scale.rs).
#
#   make scale                          20,000 objects through a release build of ingest
#                                       (its CPU time is what the Lambda cost comes from)
#   make scale OBJECTS=1000 BUILD=debug a short run (make test runs one; its CPU figures
#                                       are a debug build's, not representative)
#   make scale ARGS='--batch-size 50'   any option of the simulation
set -euo pipefail
cd "$(dirname "$0")/.."

OBJECTS=${OBJECTS:-20000}
BUILD=${BUILD:-release}

if [[ $BUILD == release ]]; then
  cargo build --quiet --release --bin ingest
  ingest=$PWD/target/release/ingest
else
  cargo build --quiet --bin ingest --features cf2bq-shared/fault-injection
  ingest=$PWD/target/debug/ingest
fi
cargo build --quiet -p cf2bq-tests --bin scale

started_here=false
if [[ ${CF2BQ_STACK_STARTED:-} != 1 ]]; then
  scripts/stack.sh up
  started_here=true
fi
$started_here && trap 'scripts/stack.sh down' EXIT
eval "$(scripts/stack.sh env)"

# shellcheck disable=SC2086 # ARGS is a list of options
CF2BQ_SCALE_INGEST=$ingest target/debug/scale --objects "$OBJECTS" ${ARGS:-}
