# cf2bq — every entry point. Tools install themselves into project-local folders:
#   .venv/        moto + bqemulator (scripts/stack.sh)
#   .venv-lint/   cfn-lint, checkov (scripts/lint.sh); make deploy uses the AWS CLI v2 on PATH
#   .venv-build/  cargo-lambda + zig (make build)
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: help demo test test-unit test-integration lint stack-up stack-down stack-env \
        build deploy bench replay fmt clippy chaos scale test-deploy

help:
	@echo "make demo    - the whole pipeline on a local stack, counts per day checked"
	@echo "make test    - every test (unit, integration against local emulators, lint, fuzz)"
	@echo "make test-deploy - the arm64 bootstrap from make build, under qemu, through the Lambda Runtime API"
	@echo "make chaos   - exactly-once fault campaign (RUNS=1000, SEED=random; SEED=X RUNS=1 replays one run)"
	@echo "make scale   - 20,000 objects in bursts: API calls counted, rows checked, 1M objects/day extrapolated (OBJECTS, BUILD=debug)"
	@echo "make bench   - ingest transform vs zcat vs a Python reference, 1 GiB object"
	@echo "make build   - release arm64 bootstrap.zip per Lambda (cargo-lambda)"
	@echo "make deploy  - package + deploy infra/cf2bq.yaml (see docs/deploy.md)"
	@echo "make lint    - cfn-lint + checkov on infra/"
	@echo "make replay  - cf2bq replay (ARGS='--bucket B --from 2026-11-01 --to 2026-11-02')"
	@echo "make stack-up / stack-down / stack-env - the local emulators"

demo:
	scripts/demo.sh

test:
	scripts/test.sh

test-deploy:
	scripts/test-deploy.sh

lint:
	scripts/lint.sh

stack-up:
	scripts/stack.sh up

stack-down:
	scripts/stack.sh down

stack-env:
	@scripts/stack.sh env

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build:
	scripts/build-lambdas.sh

deploy: build
	scripts/deploy.sh

bench:
	scripts/bench.sh

chaos:
	scripts/chaos.sh

scale:
	scripts/scale.sh

replay:
	$(CARGO) run --quiet --bin cf2bq -- replay $(ARGS)
