#!/usr/bin/env bash
# Release arm64 (Graviton, provided.al2023) bootstrap.zip for each Lambda function:
#   target/lambda-arm64/ingest/bootstrap.zip
#   target/lambda-arm64/table-keeper/bootstrap.zip      (scripts/deploy.sh reads these)
#
# Tools install themselves project-locally:
#   .venv-build/   cargo-lambda + zig from requirements-build.txt, pinned by
#                  constraints-build.txt; rebuilt only when one of them (or the Python
#                  version) changes: their hash is stamped in the venv.
#   rustup target  aarch64-unknown-linux-gnu, added if missing.
#
# Only the two function packages are built (-p ingest -p table-keeper), never the whole
# workspace: the tests crate enables cf2bq-shared's `fault-injection` feature, which must
# never reach a release build (and shared refuses to compile with it in release).
# The build uses its own target dir, target/lambda-build/, so it does not wait on the lock
# of target/ that everyday `cargo build/test` use.
#
# usage: scripts/build-lambdas.sh            # set up tools if needed, build, verify
#        scripts/build-lambdas.sh --setup    # only set up the tools
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

VENV=$ROOT/.venv-build
REQ=requirements-build.txt
CONSTRAINTS=constraints-build.txt
STAMP=$VENV/.requirements.sha256
PYTHON=${PYTHON:-python3}
RUST_TARGET=aarch64-unknown-linux-gnu
LAMBDA_DIR=$ROOT/target/lambda-arm64
FUNCTIONS=(ingest table-keeper)

say() { echo "build: $*" >&2; }
die() { say "$*"; exit 1; }

# --- tools -------------------------------------------------------------------------------
want=$({ sha256sum "$REQ" "$CONSTRAINTS"; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
if [[ ! -x $VENV/bin/cargo-lambda || "$(cat "$STAMP" 2>/dev/null)" != "$want" ]]; then
    say "installing $REQ into ${VENV#"$ROOT"/}/"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    log=$(mktemp)
    if ! "$VENV/bin/pip" install --disable-pip-version-check -q -r "$REQ" -c "$CONSTRAINTS" >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"
        die "pip install failed"
    fi
    rm -f "$log"
    echo "$want" >"$STAMP"
fi
# cargo finds `cargo lambda` on PATH, and cargo-lambda finds zig as `python3 -m ziglang`:
# both only when the venv's bin/ comes first.
export PATH=$VENV/bin:$PATH

command -v rustup >/dev/null || die "rustup not found (needed to add the $RUST_TARGET target)"
if ! rustup target list --installed | grep -qx "$RUST_TARGET"; then
    say "rustup target add $RUST_TARGET"
    rustup target add "$RUST_TARGET"
fi
[[ ${1:-} == --setup ]] && exit 0

# --- build -------------------------------------------------------------------------------
export CARGO_TARGET_DIR=$ROOT/target/lambda-build
pkgs=()
for f in "${FUNCTIONS[@]}"; do pkgs+=(-p "$f"); done

say "cargo lambda build --release --arm64 (${FUNCTIONS[*]}); target dir target/lambda-build/"
marker=$(mktemp)   # zips must come out newer than this: no stale zip passes the checks
trap 'rm -f "$marker"' EXIT
start=$SECONDS
cargo lambda build --release --arm64 --output-format zip \
    --lambda-dir "$LAMBDA_DIR" "${pkgs[@]}"
say "built in $((SECONDS - start)) s"

# --- verify ------------------------------------------------------------------------------
zips=()
for f in "${FUNCTIONS[@]}"; do
    z=$LAMBDA_DIR/$f/bootstrap.zip
    [[ -s $z ]] || die "${z#"$ROOT"/} was not produced"
    [[ $z -nt $marker ]] || die "${z#"$ROOT"/} is stale (not rewritten by this build)"
    zips+=("$z")
done
# Each zip must hold an executable `bootstrap` that is a 64-bit little-endian aarch64 ELF
# (e_machine 0xB7 = EM_AARCH64) and needs no glibc newer than 2.34 (Amazon Linux 2023).
"$VENV/bin/python" - "$ROOT" "${zips[@]}" <<'PY'
import os, re, struct, sys, zipfile
root, zips = sys.argv[1], sys.argv[2:]
bad = False
for path in zips:
    rel = os.path.relpath(path, root)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        if "bootstrap" not in names:
            print(f"{rel}: no 'bootstrap' entry ({names})"); bad = True; continue
        info = zf.getinfo("bootstrap")
        data = zf.read("bootstrap")
    problems = []
    if data[:4] != b"\x7fELF": problems.append("not an ELF file")
    elif data[4] != 2 or data[5] != 1: problems.append("not a 64-bit little-endian ELF")
    else:
        e_machine = struct.unpack_from("<H", data, 18)[0]
        if e_machine != 0xB7: problems.append(f"e_machine 0x{e_machine:X}, not aarch64 (0xB7)")
    mode = info.external_attr >> 16
    if not mode & 0o111: problems.append(f"not executable (mode {oct(mode)})")
    glibc = max((tuple(map(int, v.split(b"."))) for v in re.findall(rb"GLIBC_(\d+\.\d+(?:\.\d+)?)", data)), default=())
    if glibc > (2, 34): problems.append(f"needs glibc {'.'.join(map(str, glibc))} > 2.34")
    size = os.path.getsize(path)
    if problems:
        print(f"{rel}: " + "; ".join(problems)); bad = True
    else:
        print(f"{rel}: {size} bytes ({size / 2**20:.1f} MiB); bootstrap: aarch64 ELF, "
              f"{len(data)} bytes, mode {oct(mode & 0o7777)}, needs glibc {'.'.join(map(str, glibc)) or 'none'}")
sys.exit(1 if bad else 0)
PY
