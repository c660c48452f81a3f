# The two commands a new user needs: `make run` and `make test`. Both install what they need.
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup run bench soak test test-fast check lint typecheck imports protos protos-check buf-lint buf-breaking clean

setup:
	@scripts/bootstrap.sh

## Start a local cluster (redis-server, scheduler, gateway, 2 workers) and run a short demo.
run: setup
	$(VENV)/bin/maas up --workers 2

## Benchmarks against baselines measured in the same run (bench/results/<date>.json + PNGs).
bench: setup
	$(PY) -m bench.serving
	$(PY) -m bench.training
	$(PY) -m bench.memory

## A bounded soak under faults (worker kills, a Redis restart): accepted, completed, lost, duplicated.
soak: setup
	$(PY) -m bench.soak --seconds 120

## Every test, fault-injection ones included (what CI runs).
test: setup
	$(PY) -m pytest -q

## The fast subset while developing (skips tests marked slow).
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

BUF := npx --yes @bufbuild/buf@1.75.0

check: lint typecheck imports protos-check buf-lint buf-breaking

## buf STANDARD lint and format of our own protos, public and internal (buf.yaml; the v2
## contract is excluded).
buf-lint:
	$(BUF) lint && $(BUF) format --exit-code > /dev/null

## buf's FILE rules: protos/ against its last released image. After a release, rebuild it:
## $(BUF) build protos --exclude-source-info -o protos/contract/protos-v<version>.binpb
buf-breaking:
	$(BUF) breaking protos --against protos/contract/protos-v1.0.0.binpb

lint: setup
	$(VENV)/bin/ruff check maas runtime gateway scheduler worker console tests bench

typecheck: setup
	$(VENV)/bin/mypy

## The layers (pyproject.toml [tool.importlinter]): who may import whom, and torch never in the gateway.
imports: setup
	$(VENV)/bin/lint-imports

## Regenerate the Python stubs of protos/ and internal/protos/ (the only generator), and
## materialise protos/third_party/ from the pip packages (protoc -I protos -I protos/third_party).
protos: setup
	PYTHON=$(PY) scripts/gen_protos.sh
	$(PY) scripts/third_party_protos.py

## Fails when the committed stubs differ from what protos/ generates.
protos-check: protos
	git diff --exit-code -- maas/inference maas/v1 runtime/queue

clean:
	rm -rf $(VENV) maas-data .pytest_cache
