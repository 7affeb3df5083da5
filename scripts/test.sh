#!/usr/bin/env bash
# Every test: format and lint checks, unit tests, then integration tests against real moto and
# bqemulator processes started here and stopped at the end, the CloudFormation checks, and a
# bounded fuzz run. Timing never fails a test; the benchmark is `make bench`.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

step "format and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "unit tests (no network) and a bounded fuzz run (proptest, PROPTEST_CASES per property)"
export PROPTEST_CASES=${PROPTEST_CASES:-2048}
cargo test --workspace --lib --bins --quiet

step "starting the local stack"
scripts/stack.sh up
trap 'scripts/stack.sh down' EXIT
eval "$(scripts/stack.sh env)"

step "the fault proxy's own tests"
cargo test -p cf2bq-faultproxy --quiet

step "integration tests against moto + bqemulator"
cargo build --quiet --bin cf2bq --bin ingest --features cf2bq-shared/fault-injection
cargo build --quiet -p cf2bq-faultproxy -p cf2bq-tests --bins
cargo test -p cf2bq-tests --quiet -- --test-threads 2 --skip peak_memory

step "exactly-once fault campaign, short (make chaos runs 1000)"
CF2BQ_STACK_STARTED=1 RUNS=${CHAOS_RUNS:-50} scripts/chaos.sh

step "scale simulation, short (make scale runs 20,000 objects): every row once, calls counted"
CF2BQ_STACK_STARTED=1 OBJECTS=${SCALE_OBJECTS:-1000} BUILD=debug ARGS="--lines 10 --bursts 5" \
  scripts/scale.sh

step "flat memory while ingesting a 210 MiB object (alone: it loads the emulator hard)"
cargo test -p cf2bq-tests --quiet --test pipeline -- peak_memory

step "CloudFormation: deploy to moto"
.venv/bin/python tests/infra/test_moto_deploy.py

step "CloudFormation: cfn-lint + checkov"
scripts/lint.sh
