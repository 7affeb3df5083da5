#!/usr/bin/env bash
# Local stack for cf2bq, no Docker: moto (AWS: S3, SQS, SNS, DynamoDB, ...) and bqemulator
# (BigQuery REST v2 + Storage Write gRPC), both from PyPI in a project-local venv.
#
#   scripts/stack.sh install     venv + pip install (skipped when requirements unchanged)
#   scripts/stack.sh up          start both, wait until ready, create dataset + ledger table
#   scripts/stack.sh down        stop both (whole process groups)
#   scripts/stack.sh env         export lines only: eval "$(scripts/stack.sh env)"
#   scripts/stack.sh status      what is running
#   scripts/stack.sh reset-aws   wipe moto state, re-create the ledger table
#
# Ports and names follow the README configuration table; any value already in the environment wins.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

VENV=$ROOT/.venv
STACK=$ROOT/.stack
# Private HOME for bqemulator: DuckDB keeps its extensions under $HOME/.duckdb, and we
# pre-install spatial there so it never tries to download it (no network here).
BQHOME=$STACK/bqhome
REQ=requirements-stack.txt
# Every transitive package pinned (scripts/freeze-constraints.sh).
CONSTRAINTS=constraints-stack.txt
TIMEOUT=${CF2BQ_STACK_TIMEOUT:-60}

export CF2BQ_MOTO_PORT=${CF2BQ_MOTO_PORT:-5055}
export CF2BQ_BQ_REST_PORT=${CF2BQ_BQ_REST_PORT:-9050}
export CF2BQ_BQ_GRPC_PORT=${CF2BQ_BQ_GRPC_PORT:-9060}
export CF2BQ_BQ_PROJECT=${CF2BQ_BQ_PROJECT:-local-project}
export CF2BQ_BQ_DATASET=${CF2BQ_BQ_DATASET:-cf2bq}
export CF2BQ_LEDGER_TABLE=${CF2BQ_LEDGER_TABLE:-cf2bq-ledger}
# moto is region-scoped: the ledger table is created in the same region `env` exports.
export AWS_REGION=${AWS_REGION:-us-east-1}

say() { echo "stack: $*" >&2; }
die() { say "$*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Print the pid of service $1 if its pid file names a live process that is really that
# service (guards against a stale pid file whose pid was reused).
pid_of() {
  local pid
  pid=$(cat "$STACK/$1.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$1" || return 1
  echo "$pid"
}

# True while process group $1 has a member that is not a zombie (PID 1 in a container may
# never reap, so `kill -0` alone would see dead processes as alive).
group_alive() { ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {f = 1} END {exit !f}'; }

# Start service $1 (ports in $PORTS) as command $2...: own session (so `down` can kill the whole group and
# closing the terminal does not kill it), output to .stack/$1.log. The child writes its own
# pid because setsid may fork, which would make $! the wrong pid.
start() {
  local name=$1; shift
  rm -f "$STACK/$name.pid"
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$STACK/$name.pid" "$@" \
    >"$STACK/$name.log" 2>&1 </dev/null &
  echo "$PORTS" >"$STACK/$name.ports"
  for _ in $(seq 50); do [[ -s $STACK/$name.pid ]] && break; sleep 0.1; done
  say "$name started (pid $(cat "$STACK/$name.pid" 2>/dev/null || echo '?'), log .stack/$name.log)"
}

stop() {
  local name=$1 pid
  if pid=$(pid_of "$name"); then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 50); do group_alive "$pid" || break; sleep 0.2; done
    if group_alive "$pid"; then
      say "$name did not stop within 10 s, sending KILL"
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    # PID 1 here reaps orphans only every second or so; wait (briefly) for the zombie to go
    # so that `pgrep` right after `down` shows nothing.
    for _ in $(seq 30); do [[ -e /proc/$pid ]] || break; sleep 0.1; done
    say "$name stopped"
  fi
  rm -f "$STACK/$name.pid" "$STACK/$name.ports"
}

# A service already running on other ports than asked for: we would check and bootstrap the
# wrong thing, so stop rather than guess.
check_same_ports() {
  local had; had=$(cat "$STACK/$1.ports" 2>/dev/null || true)
  [[ $had == "$PORTS" ]] || die "$1 is running with ports '$had', not '$PORTS'; run scripts/stack.sh down first"
}

# Refuse to start when someone else holds a port: our service would die on bind and the
# readiness check could be fooled by the stranger answering.
check_free() {
  local name=$1 port=$2
  if port_open "$port"; then
    ss -ltnp "sport = :$port" >&2 2>/dev/null || true
    die "port $port is already in use by another process (not our $name); stop it or set a different port (see the README configuration table)"
  fi
}

moto_ready() { curl -s -o /dev/null -m 2 "http://127.0.0.1:$CF2BQ_MOTO_PORT/"; } # any HTTP answer
bq_ready() {
  curl -sf -o /dev/null -m 2 "http://127.0.0.1:$CF2BQ_BQ_REST_PORT/readyz" && port_open "$CF2BQ_BQ_GRPC_PORT"
}

# Wait for service $1 until check $2 passes; on death or timeout show the log and fail.
wait_ready() {
  local name=$1 check=$2 t0=$SECONDS
  until $check; do
    if ! pid_of "$name" >/dev/null; then
      say "$name exited during startup; last log lines:"; tail -n 30 "$STACK/$name.log" >&2
      stop "$name"; exit 1
    fi
    if ((SECONDS - t0 >= TIMEOUT)); then
      say "$name not ready after ${TIMEOUT}s; last log lines:"; tail -n 30 "$STACK/$name.log" >&2
      stop "$name"; exit 1
    fi
    sleep 0.2
  done
  say "$name ready ($(awk -v a="$UP_T0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}') s after up)"
}

bootstrap() { "$VENV/bin/python" scripts/stack_bootstrap.py "$@"; }

cmd_install() {
  # The stamp holds the hash of the requirements and constraints files: pip runs only when
  # one of them changes (and then needs no network for what is already installed).
  local want pins; want=$(sha256sum "$REQ" | cut -d' ' -f1)
  pins=$(cat "$REQ" "$CONSTRAINTS" | sha256sum | cut -d' ' -f1)
  [[ -x $VENV/bin/pip ]] || { say "creating $VENV"; python3 -m venv "$VENV"; }
  if [[ $(cat "$VENV/.stack-stamp" 2>/dev/null) != "$pins" ]]; then
    say "pip install -r $REQ -c $CONSTRAINTS (about 90 s the first time)"
    "$VENV/bin/pip" install --progress-bar off -r "$REQ" -c "$CONSTRAINTS" >&2
    echo "$pins" >"$VENV/.stack-stamp"
  fi
  # The requirements' hash for the spatial extension: a new duckdb pin needs a matching one.
  if [[ $(cat "$BQHOME/.spatial-stamp" 2>/dev/null) != "$want" ]] ||
    ! compgen -G "$BQHOME/.duckdb/extensions/*/*/spatial.duckdb_extension" >/dev/null; then
    mkdir -p "$BQHOME"
    HOME=$BQHOME "$VENV/bin/python" scripts/stack_bootstrap.py install-spatial
    echo "$want" >"$BQHOME/.spatial-stamp"
  fi
}

cmd_up() {
  local pid PORTS
  cmd_install
  mkdir -p "$STACK"
  UP_T0=$EPOCHREALTIME
  # Start both before waiting for either: their start-up times overlap.
  PORTS=$CF2BQ_MOTO_PORT
  if pid=$(pid_of moto); then check_same_ports moto; say "moto already running (pid $pid)"; else
    check_free moto "$CF2BQ_MOTO_PORT"
    # The wrapper patches moto so that its memory stays flat under many DynamoDB
    # transactions (it kept a deep copy of the whole ledger table per transaction item).
    start moto "$VENV/bin/python" "$ROOT/scripts/moto_start.py" -H 127.0.0.1 -p "$CF2BQ_MOTO_PORT"
  fi
  PORTS="$CF2BQ_BQ_REST_PORT $CF2BQ_BQ_GRPC_PORT"
  if pid=$(pid_of bqemulator); then check_same_ports bqemulator; say "bqemulator already running (pid $pid)"; else
    check_free bqemulator "$CF2BQ_BQ_REST_PORT"
    check_free bqemulator "$CF2BQ_BQ_GRPC_PORT"
    # Format extensions (avro, ...) would be downloaded at boot: turn them off (offline).
    # The wrapper gives the emulator threads for more than six concurrent AppendRows calls.
    start bqemulator env HOME="$BQHOME" BQEMU_ENABLE_FORMAT_EXTENSIONS=false \
      "$VENV/bin/python" "$ROOT/scripts/bqemulator_start.py" start \
      --rest-host 127.0.0.1 --rest-port "$CF2BQ_BQ_REST_PORT" \
      --grpc-host 127.0.0.1 --grpc-port "$CF2BQ_BQ_GRPC_PORT" --project "$CF2BQ_BQ_PROJECT"
  fi
  wait_ready moto moto_ready
  wait_ready bqemulator bq_ready
  # Both calls are idempotent (already-exists is fine), so a second `up` changes nothing.
  bootstrap dataset
  bootstrap ledger
}

cmd_down() {
  stop moto
  stop bqemulator
}

cmd_env() {
  # stdout must hold export lines only (it is eval'd); %q quotes values safely.
  e() { printf 'export %s=%q\n' "$1" "$2"; }
  e AWS_ENDPOINT_URL "${AWS_ENDPOINT_URL:-http://127.0.0.1:$CF2BQ_MOTO_PORT}"
  e AWS_ACCESS_KEY_ID "${AWS_ACCESS_KEY_ID:-testing}"
  e AWS_SECRET_ACCESS_KEY "${AWS_SECRET_ACCESS_KEY:-testing}"
  e AWS_REGION "$AWS_REGION"
  e AWS_DEFAULT_REGION "${AWS_DEFAULT_REGION:-$AWS_REGION}"
  e CF2BQ_BQ_PROJECT "$CF2BQ_BQ_PROJECT"
  e CF2BQ_BQ_DATASET "$CF2BQ_BQ_DATASET"
  e CF2BQ_BQ_REST_URL "${CF2BQ_BQ_REST_URL:-http://127.0.0.1:$CF2BQ_BQ_REST_PORT/bigquery/v2}"
  e CF2BQ_BQ_GRPC_URL "${CF2BQ_BQ_GRPC_URL:-http://127.0.0.1:$CF2BQ_BQ_GRPC_PORT}"
  # The emulator's Storage Write server does not take gzip-compressed requests.
  e CF2BQ_GRPC_GZIP "${CF2BQ_GRPC_GZIP:-false}"
  e CF2BQ_BQ_AUTH "${CF2BQ_BQ_AUTH:-none}"
  e CF2BQ_LEDGER_TABLE "$CF2BQ_LEDGER_TABLE"
  e CF2BQ_MOTO_PORT "$CF2BQ_MOTO_PORT"
  e CF2BQ_BQ_REST_PORT "$CF2BQ_BQ_REST_PORT"
  e CF2BQ_BQ_GRPC_PORT "$CF2BQ_BQ_GRPC_PORT"
  # So the freshly built `cf2bq` CLI is found; not repeated when eval'd twice.
  [[ $PATH == "$ROOT/target/debug:"* ]] || printf 'export PATH=%q:"$PATH"\n' "$ROOT/target/debug"
}

cmd_status() {
  local name pid
  for name in moto bqemulator; do
    if pid=$(pid_of "$name"); then echo "$name: running (pid $pid)"; else echo "$name: not running"; fi
  done
  moto_ready && echo "moto: answering on 127.0.0.1:$CF2BQ_MOTO_PORT" \
    || echo "moto: nothing answering on 127.0.0.1:$CF2BQ_MOTO_PORT"
  bq_ready && echo "bqemulator: ready on REST 127.0.0.1:$CF2BQ_BQ_REST_PORT, gRPC 127.0.0.1:$CF2BQ_BQ_GRPC_PORT" \
    || echo "bqemulator: not ready on REST 127.0.0.1:$CF2BQ_BQ_REST_PORT / gRPC 127.0.0.1:$CF2BQ_BQ_GRPC_PORT"
}

cmd_reset_aws() {
  pid_of moto >/dev/null || die "moto is not running (scripts/stack.sh up)"
  bootstrap reset-aws
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  reset-aws) cmd_reset_aws ;;
  *) die "usage: scripts/stack.sh {install|up|down|env|status|reset-aws}" ;;
esac
