#!/usr/bin/env bash
# The deploy artifact itself, tested: the arm64 `bootstrap` that `make build` zips for Lambda
# runs under qemu-aarch64 through its lambda_runtime entry point, against a Runtime API
# stand-in, on the local stack (tests/it/deploy_artifact.rs).
#
# Installs project-locally, once (a stamp names the packages):
#   .tools/arm64/   Debian's qemu-user-static, and the arm64 C runtime (libc6 and libgcc-s1
#                   cross packages) as the sysroot qemu loads the bootstrap's libraries from;
#                   fetched with `apt-get download` and unpacked with `dpkg -x` (no root).
# Then `make build` (release arm64, cargo-lambda), the parser's unit tests built for arm64 and
# run under the same qemu, and the test.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n==> [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

TOOLS=$ROOT/.tools/arm64
PACKAGES=(qemu-user-static libc6-arm64-cross libgcc-s1-arm64-cross)
STAMP=$TOOLS/.packages
if [[ "$(cat "$STAMP" 2>/dev/null)" != "${PACKAGES[*]}" ]]; then
  step "fetching ${PACKAGES[*]} into .tools/arm64/"
  rm -rf "$TOOLS"
  mkdir -p "$TOOLS/debs"
  (cd "$TOOLS/debs" && apt-get download "${PACKAGES[@]}")
  for deb in "$TOOLS"/debs/*.deb; do dpkg -x "$deb" "$TOOLS"; done
  echo "${PACKAGES[*]}" >"$STAMP"
fi
export CF2BQ_QEMU_AARCH64=$TOOLS/usr/bin/qemu-aarch64-static
export CF2BQ_ARM64_SYSROOT=$TOOLS/usr/aarch64-linux-gnu
[[ -x $CF2BQ_QEMU_AARCH64 ]] || { echo "test-deploy: no $CF2BQ_QEMU_AARCH64" >&2; exit 1; }

step "make build (release arm64 bootstrap.zip per function)"
scripts/build-lambdas.sh
unpacked=$ROOT/target/lambda-arm64/ingest/unpacked
rm -rf "$unpacked" && mkdir -p "$unpacked"
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
  target/lambda-arm64/ingest/bootstrap.zip "$unpacked"
chmod +x "$unpacked/bootstrap"
export CF2BQ_ARM64_BOOTSTRAP=$unpacked/bootstrap

# Lambda runs arm64, CI x86-64: this runs the NEON path of cloudfront/bytemask.rs and the
# byte-for-byte parser and transform tests on the architecture that ships. cargo-lambda builds
# the test binary as it builds the bootstrap (zig as linker and C compiler), in
# target/lambda-build/; -p cf2bq-shared only, so the tests crate's fault-injection feature stays
# out. Dev profile as in `make test`, minus debug info (a 9 MiB binary, not 150); opt-level 0
# builds faster, but then these tests take 2-4 min under qemu instead of 25 s.
step "the parser's unit tests (cloudfront::, transform::) for arm64, under qemu"
arm64_tests=$(PATH=$ROOT/.venv-build/bin:$PATH CARGO_TARGET_DIR=$ROOT/target/lambda-build \
  CARGO_PROFILE_DEV_DEBUG=false \
  cargo lambda build --arm64 --tests -p cf2bq-shared --message-format json-render-diagnostics |
  python3 -c '
import json, sys
for line in sys.stdin:  # cargo messages, one JSON object a line (and cargo-lambda notes)
    m = json.loads(line) if line.startswith("{") else {}
    if m.get("reason") == "compiler-artifact" and m["profile"]["test"] and m["executable"]:
        print(m["executable"])')
[[ -x $arm64_tests ]] || { echo "test-deploy: no arm64 unit-test binary ($arm64_tests)" >&2; exit 1; }
QEMU_LD_PREFIX=$CF2BQ_ARM64_SYSROOT "$CF2BQ_QEMU_AARCH64" "$arm64_tests" -q cloudfront:: transform::

started_here=false
if [[ ${CF2BQ_STACK_STARTED:-} != 1 ]]; then
  step "starting the local stack"
  scripts/stack.sh up
  started_here=true
fi
$started_here && trap 'scripts/stack.sh down' EXIT
eval "$(scripts/stack.sh env)"

step "the arm64 bootstrap under qemu against the Runtime API stand-in"
cargo test -p cf2bq-tests --quiet --test deploy_artifact -- --ignored
