# tripwire: two commands for a newcomer, `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast bench bench-memory schema package-data lint clean

venv: $(STAMP)

## make venv: the service (worker), the embedded broker and the test tools (README "Install")
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[worker,broker,dev]'
	@touch $(STAMP)

## make demo: embedded broker + worker + synthetic agent traffic + metrics (Ctrl-C stops all)
demo: venv
	$(BIN)/tripwire up

## make test: the whole suite, against a real embedded broker
test: venv
	$(BIN)/python -m pytest -q

## make test-fast: unit tests only (no broker)
test-fast: venv
	$(BIN)/python -m pytest -q -m "not broker and not e2e"

## make bench: throughput and latency benchmarks, ratios against a same-run baseline
bench: venv
	$(BIN)/python bench/run.py
	$(BIN)/python bench/bench_series.py --agents 1000 --tools 50

## make bench-memory: RSS while 1,000,000 distinct agent ids arrive (in-process, ~5 min)
bench-memory: venv
	$(BIN)/python bench/bench_memory.py --agents 1000000

## make schema: regenerate schemas/trace-event-v1.json from the pydantic model (and its packaged copy)
schema: venv
	$(BIN)/python -c "import json,streams.contract.schema as s; print(json.dumps(s.json_schema(), indent=2))" > schemas/trace-event-v1.json
	$(MAKE) package-data

## make package-data: copy the default policy and the schema into the packages (the wheel ships these copies)
package-data:
	cp deploy/policy/default.yaml breakers/data/default-policy.yaml
	cp schemas/trace-event-v1.json streams/contract/data/trace-event-v1.json

clean:
	rm -rf $(VENV) .tripwire .pytest_cache .hypothesis build *.egg-info
