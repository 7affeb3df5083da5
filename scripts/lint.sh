#!/usr/bin/env bash
# Static checks of the CloudFormation templates in infra/:
#   cfn-lint  - schema, intrinsic functions, best practices
#   checkov   - security misconfigurations (suppressions live in the template, each with a reason)
# Tools come from a project-local venv .venv-lint/ built from requirements-lint.txt with every
# transitive package pinned by constraints-lint.txt; it is rebuilt only when one of them (or
# the Python version) changes (their sha256 is stamped in the venv).
#
# usage: scripts/lint.sh            # set up the venv if needed, run both checks
#        scripts/lint.sh --setup    # only set up the venv
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-lint
REQ=requirements-lint.txt
CONSTRAINTS=constraints-lint.txt
STAMP=$VENV/.requirements.sha256
PYTHON=${PYTHON:-python3}

want=$({ sha256sum "$REQ" "$CONSTRAINTS"; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
if [[ ! -x $VENV/bin/python || "$(cat "$STAMP" 2>/dev/null)" != "$want" ]]; then
    echo "lint: installing $REQ (pinned by $CONSTRAINTS) into $VENV/"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    log=$(mktemp)
    if ! "$VENV/bin/pip" install --disable-pip-version-check -q -r "$REQ" -c "$CONSTRAINTS" >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"
        echo "lint: pip install failed" >&2
        exit 1
    fi
    rm -f "$log"
    echo "$want" >"$STAMP"
fi
[[ ${1:-} == --setup ]] && exit 0

status=0

if "$VENV/bin/cfn-lint" infra/*.yaml; then
    echo "cfn-lint: ok"
else
    echo "cfn-lint: FAILED" >&2; status=1
fi

# --skip-download: no calls to the Prisma Cloud API (offline; guideline links only).
out=$(CKV_SKIP_PACKAGE_UPDATE_CHECK=true "$VENV/bin/checkov" -d infra --framework cloudformation \
    --quiet --compact --skip-download 2>&1) && rc=0 || rc=$?
if [[ $rc -eq 0 ]]; then
    # One line: "Passed checks: N, Failed checks: 0, Skipped checks: M"
    echo "checkov: ok ($(grep -m1 -o 'Passed checks.*' <<<"$out" || echo 'no templates'))"
else
    echo "$out" >&2
    echo "checkov: FAILED" >&2; status=1
fi

exit $status
