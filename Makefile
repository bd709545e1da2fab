# retrain-mesh: `make demo` runs the whole loop on embedded defaults; `make test` runs every test.
# Only Python >= 3.11 is needed: uv is installed into .tools/, the locked environment into .venv/.

PYTHON ?= python3
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.DEFAULT_GOAL := help
.PHONY: help install demo up down status logs test test-chaos test-observability test-unit test-integration test-e2e lint bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-17s\033[0m %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==0.13.8

$(STAMP): $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	@touch $(STAMP)

install: $(STAMP) ## install the locked environment into .venv (uv, from uv.lock)

demo: install ## start the stack on embedded defaults, run the loop end to end, print where to look
	$(BIN)/mesh demo

up: install ## start the local stack (embedded Redis-compatible server, MLflow, every service)
	$(BIN)/mesh up

down: ## stop exactly what `make up` started
	@if [ -x $(BIN)/mesh ]; then $(BIN)/mesh down; else echo "nothing installed, nothing running"; fi

status: install ## the mesh at a glance: services, replicas, stream lag and pending, dead letters, models
	$(BIN)/mesh status

logs: install ## tail the local stack's logs (.mesh/logs/)
	$(BIN)/mesh logs

test: install lint ## lint, then every test: unit, integration (real Redis, MLflow, HTTP) and e2e
	$(BIN)/python -m pytest

test-chaos: install ## faults and hostile input over the whole stack; report in tests/reports/chaos.json
	$(BIN)/python -m pytest -m chaos tests/chaos

test-observability: install ## a real Prometheus scrapes the stack, every dashboard panel has data, Chromium renders the pages
	@command -v prometheus >/dev/null && command -v chromium >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus chromium)
	$(BIN)/python -m pytest -m observability tests/observability

test-unit: install ## unit tests only (no servers)
	$(BIN)/python -m pytest tests/unit

test-integration: install ## integration tests only
	$(BIN)/python -m pytest tests/integration

test-e2e: install ## end-to-end tests over the whole stack as processes
	$(BIN)/python -m pytest tests/e2e

lint: install ## ruff on everything, mypy on shared/, services/ and bench/
	$(BIN)/ruff check shared services tests bench
	$(BIN)/ruff format --check shared services tests bench
	$(BIN)/mypy shared services bench

docs: install ## regenerate docs/asyncapi.yaml (every stream, its event, publishers and consumer groups)
	$(BIN)/python -m shared.ops.asyncapi docs/asyncapi.yaml
.PHONY: docs

bench: install ## benchmarks, each against a baseline in the same run; JSON and SUMMARY.md under bench/results/
	$(BIN)/python -m bench.bus
	$(BIN)/python -m bench.serving
	$(BIN)/python -m bench.features
	$(BIN)/python -m bench.drift
	$(BIN)/python -m bench.event_to_live
	$(BIN)/python -m bench.footprint
	$(BIN)/python -m bench.summary

clean: down ## remove local state (.mesh/), keep the environments
	rm -rf .mesh
