#!/usr/bin/env bash
# The exactly-once fault campaign: randomized runs of the real ingest binary against the local
# stack, through a fault-injecting proxy, with crash points and adapter-level faults; rows
# compared exactly with what each run generated (tests/src/bin/chaos.rs).
#
#   make chaos                       1000 runs from a random seed (about 25 minutes here)
#   make chaos RUNS=50               a short campaign (make test runs one)
#   make chaos SEED=1234 RUNS=1      replay one run exactly (a failing run prints its seed)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-1000}
JOBS=${JOBS:-4}

cargo build --quiet --bin ingest --features cf2bq-shared/fault-injection
cargo build --quiet -p cf2bq-faultproxy -p cf2bq-tests --bins

started_here=false
if [[ ${CF2BQ_STACK_STARTED:-} != 1 ]]; then
  scripts/stack.sh up
  started_here=true
fi
$started_here && trap 'scripts/stack.sh down' EXIT
eval "$(scripts/stack.sh env)"

args=(--runs "$RUNS" --jobs "$JOBS")
[[ -n ${SEED:-} ]] && args+=(--seed "$SEED")
[[ -n ${VERBOSE:-} ]] && args+=(--verbose)
target/debug/chaos "${args[@]}"
