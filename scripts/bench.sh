#!/usr/bin/env bash
# `make bench`: the ingest transform against zcat, zlib-rs inflate alone and a plain Python
# reference, on one deterministic ~1 GiB CloudFront log object, with 1 and all parser threads;
# then end-to-end: the object from S3 (moto) through `cf2bq ingest` into a local Storage Write
# sink that counts the bytes on the wire. A benchmark, not a test: it reports, it never fails
# on timing. See bench/README.md.
#
# Knobs (environment):
#   BENCH_SIZE_MIB=1024      uncompressed size of the benchmark object
#   BENCH_SEED=1             generator seed (object is reused while seed and size are the same)
#   BENCH_REPEAT=3           runs of zcat and cf2bq each, the fastest is reported (Python: 1 run)
#   BENCH_E2E=1              0 skips the end-to-end part
#   BENCH_E2E_SIZE_MIB=BENCH_SIZE_MIB  object size for the end-to-end part
#   BENCH_CF2BQ=target/release/cf2bq   the binary under test
#   BENCH_SINK=target/debug/write-sink   the local Storage Write sink (tests crate, dev profile
#                            as `make test` builds it: its hot dependencies are optimised)
#   BENCH_BUILD=1            0 skips building both (release)
#   BENCH_PYTHON=python3     interpreter for the Python reference
#   BENCH_RSS_METHOD=auto    `rusage` forces bench/measure.py's fallback (see there)
# Output: a table on stdout, everything in .bench/results.json; logs in .bench/logs/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZE_MIB=${BENCH_SIZE_MIB:-1024}
SEED=${BENCH_SEED:-1}
REPEAT=${BENCH_REPEAT:-3}
E2E=${BENCH_E2E:-1}
E2E_SIZE_MIB=${BENCH_E2E_SIZE_MIB:-$SIZE_MIB}
CF2BQ=${BENCH_CF2BQ:-target/release/cf2bq}
SINK=${BENCH_SINK:-target/debug/write-sink}
BUILD=${BENCH_BUILD:-1}
CARGO=${CARGO:-cargo}

OUT=.bench
RUN=$OUT/run
LOGS=$OUT/logs

step() { printf '\n==> %s\n' "$*" >&2; }
say() { echo "bench: $*" >&2; }
die() { say "$*"; exit 1; }

for v in SIZE_MIB SEED REPEAT E2E_SIZE_MIB; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "BENCH_$v must be a whole number, not '${!v}'"
done
((SIZE_MIB > 0 && REPEAT > 0 && E2E_SIZE_MIB > 0)) || die "sizes and BENCH_REPEAT must be > 0"
# The real interpreter, not a pyenv shim script: the shim would add its own start-up to
# the Python reference's wall time.
PY=$("${BENCH_PYTHON:-python3}" -c 'import sys; print(sys.executable)') ||
  die "no Python interpreter ('${BENCH_PYTHON:-python3}')"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PY is older than Python 3.11"

rm -rf "$RUN"
mkdir -p "$RUN" "$LOGS"
# Keep the multi-GiB benchmark data out of git (the /.bench line of .gitignore covers it too).
[[ -e $OUT/.gitignore ]] || echo '*' >"$OUT/.gitignore"

measure() { "$PY" bench/measure.py "$@"; }

if [[ $BUILD == 1 ]]; then
  # -p cf2bq: only the CLI package's features. Without it cargo resolves features for every
  # workspace member, and the tests crate turns on shared's debug-only fault-injection.
  step "building $CF2BQ (cargo build --release -p cf2bq --bin cf2bq)"
  "$CARGO" build --release --quiet -p cf2bq --bin cf2bq
  # Separately: the tests crate turns on shared's fault-injection, which must stay out of
  # the binary under test. The dev profile shares what `make test` has built already.
  if [[ $E2E == 1 ]]; then
    step "building $SINK (cargo build -p cf2bq-tests --bin write-sink)"
    "$CARGO" build --quiet -p cf2bq-tests --bin write-sink
  fi
fi
[[ -x $CF2BQ ]] || die "$CF2BQ not found (build it, or set BENCH_CF2BQ)"

# gen_object SIZE_MIB → prints the path of the one .gz object for (seed, size), generating it
# only when it is not there yet. Written to a temporary folder first, so an interrupted run
# never leaves a half-written object that a later run would reuse.
gen_object() {
  local size=$1 dir=$OUT/data/seed$SEED-${1}mib objs
  if [[ ! -e $dir/.complete ]]; then
    say "generating a ${size} MiB object (seed $SEED) into $dir"
    rm -rf "$dir" "$dir.tmp"
    mkdir -p "$dir.tmp"
    "$CF2BQ" gen --out "$dir.tmp" --objects 1 --size-mib "$size" --days 1 --seed "$SEED" \
      >"$dir.tmp/gen.txt"
    mv "$dir.tmp" "$dir"
    touch "$dir/.complete"
  else
    say "reusing $dir (rm -rf $OUT/data to regenerate)"
  fi
  objs=("$dir"/*.gz)
  ((${#objs[@]} == 1)) && [[ -f ${objs[0]} ]] || die "expected exactly one .gz in $dir"
  echo "${objs[0]}"
}

step "benchmark object: ${SIZE_MIB} MiB uncompressed, seed $SEED"
FILE=$(gen_object "$SIZE_MIB")
say "$FILE ($(du -h "$FILE" | cut -f1) gzip)"
# Read it once so every tool starts with the compressed file in the page cache.
cat "$FILE" >/dev/null

"$PY" - "$RUN/context.json" "$FILE" "$SIZE_MIB" "$SEED" "$REPEAT" "$CF2BQ" "$PY" <<'EOF'
import json, os, platform, subprocess, sys, time
out, file, size_mib, seed, repeat, cf2bq, py = sys.argv[1:]
def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)
json.dump({
    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "file": file, "gzip_bytes": os.path.getsize(file), "size_mib": int(size_mib),
    "seed": int(seed), "repeat": int(repeat), "cf2bq": cf2bq,
    "cf2bq_version": sh(cf2bq, "--version"), "python": py,
    "python_version": sh(py, "-c", "import platform; print(platform.python_version())"),
    "git_commit": sh("git", "rev-parse", "--short", "HEAD"),
    "machine": {"cpus": os.cpu_count(), "cpu_model": cpu, "system": platform.platform(),
                "loadavg_at_start": open("/proc/loadavg").read().split()[:3]},
}, open(out, "w"), indent=2)
EOF

# run_tool NAME LOG [measure.py args...]: one measured run, its JSON into $RUN/NAME.json.
run_tool() {
  local name=$1 log=$2; shift 2
  measure "$@" >"$RUN/$name.json" 2>>"$log"
}

# Side by side in each round, so a neighbour's load shifts them alike.
for i in $(seq "$REPEAT"); do
  step "zcat > /dev/null (run $i/$REPEAT)"
  run_tool "zcat.$i" "$LOGS/zcat.log" --stdout /dev/null -- zcat "$FILE"
  step "zlib-rs inflate alone: cf2bq bench transform --inflate-only (run $i/$REPEAT)"
  run_tool "inflate.$i" "$LOGS/inflate.log" -- "$CF2BQ" bench transform --inflate-only "$FILE"
  step "cf2bq bench transform --workers 1 (run $i/$REPEAT)"
  run_tool "cf2bq1.$i" "$LOGS/cf2bq-transform-1.log" -- "$CF2BQ" bench transform --workers 1 "$FILE"
  step "cf2bq bench transform --workers $(nproc), a parser thread per core (run $i/$REPEAT)"
  run_tool "cf2bqN.$i" "$LOGS/cf2bq-transform-n.log" -- "$CF2BQ" bench transform --workers "$(nproc)" "$FILE"
  step "cf2bq bench transform, parser threads as ingest runs them (run $i/$REPEAT)"
  run_tool "cf2bq.$i" "$LOGS/cf2bq-transform.log" -- "$CF2BQ" bench transform "$FILE"
done
step "Python reference (bench/reference.py, one run)"
run_tool python.1 "$LOGS/python.log" -- "$PY" bench/reference.py "$FILE"

# ---- end-to-end: S3 (moto) → cf2bq ingest → the local Storage Write sink ----
e2e_skip() { echo "$*" >"$RUN/e2e_skipped.txt"; say "end-to-end skipped: $*"; }
STARTED_STACK=0
SINK_PID=
stop_sink() { if [[ -n $SINK_PID ]]; then kill -TERM "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=; fi; }
stop_stack() { stop_sink; if [[ $STARTED_STACK == 1 ]]; then step "stopping the local stack (started here)"; scripts/stack.sh down || true; fi; }
trap stop_stack EXIT

if [[ $E2E != 1 ]]; then
  e2e_skip "BENCH_E2E=$E2E"
elif [[ ! -x $SINK ]]; then
  e2e_skip "$SINK not found (build it, or set BENCH_SINK)"
else
  step "end-to-end: ${E2E_SIZE_MIB} MiB object in S3 (moto) → cf2bq ingest → local Storage Write sink"
  E2E_FILE=$(gen_object "$E2E_SIZE_MIB")
  status=$(scripts/stack.sh status 2>&1 || true)
  if grep -q '^moto: running' <<<"$status" && grep -q '^bqemulator: running' <<<"$status"; then
    say "local stack already running: using it, leaving it running"
  else
    say "starting the local stack (stopped again at the end; log $LOGS/stack.log)"
    STARTED_STACK=1
    if ! scripts/stack.sh up >>"$LOGS/stack.log" 2>&1; then
      e2e_skip "the local stack did not start: $(grep -v '^\s*$' "$LOGS/stack.log" | tail -n 3 | tr '\n' ' ')"
      stop_stack; STARTED_STACK=0
    fi
  fi
  if [[ ! -e $RUN/e2e_skipped.txt ]]; then
    # The sink answers Storage Write calls; tables are still created in the emulator (REST).
    "$SINK" --stats "$RUN/sink.json" >"$RUN/sink.out" 2>>"$LOGS/sink.log" &
    SINK_PID=$!
    for _ in $(seq 100); do grep -q '^listening on ' "$RUN/sink.out" 2>/dev/null && break; sleep 0.1; done
    SINK_URL=$(sed -n 's/^listening on //p' "$RUN/sink.out")
    if [[ -z $SINK_URL ]]; then
      e2e_skip "the local Storage Write sink did not start (see $LOGS/sink.log)"
    # A subshell: the stack's environment (and the fresh dataset) stays out of the rest.
    elif ! (
      eval "$(scripts/stack.sh env)"
      export CF2BQ_BQ_DATASET=bench_$(date +%s)
      export CF2BQ_BQ_GRPC_URL=$SINK_URL CF2BQ_GRPC_GZIP=${CF2BQ_GRPC_GZIP_BENCH:-true}
      echo "$CF2BQ_BQ_DATASET" >"$RUN/e2e_dataset.txt"
      .venv/bin/python scripts/stack_bootstrap.py dataset >>"$LOGS/stack.log" 2>&1
      bucket=bench-$(date +%s) key=cf/$(basename "$E2E_FILE")
      say "uploading $(du -h "$E2E_FILE" | cut -f1) to s3://$bucket/$key (moto)"
      .venv/bin/python - "$bucket" "$key" "$E2E_FILE" <<'PY' >>"$LOGS/stack.log" 2>&1
import os, sys, boto3
bucket, key, path = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
s3.create_bucket(Bucket=bucket)
s3.upload_file(path, bucket, key)
PY
      echo "s3://$bucket/$key" >"$RUN/e2e_object.txt"
      run_tool e2e "$LOGS/e2e-ingest.log" -- "$CF2BQ" ingest --json "s3://$bucket/$key"
    ); then
      e2e_skip "could not upload the object or run cf2bq ingest (see $LOGS/)"
    fi
    stop_sink
    echo "$E2E_FILE" >"$RUN/e2e_file.txt"
  fi
fi
stop_stack; STARTED_STACK=0

step "results"
"$PY" bench/report.py "$RUN" "$OUT/results.json" "$LOGS"
