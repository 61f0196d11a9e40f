# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast lint chaos interleave mutate bench bench-load verify-units install clean

demo: $(VENV)/.installed
	$(PY) -m util.local demo

test: $(VENV)/.installed
	$(PY) -m pytest

# The unit tests but the exhaustive explorations: under a minute, for every change.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "unit and not exhaustive" tests/unit

# ruff (lint and format check) over the repository, mypy over util/ (pyproject.toml).
lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy util

chaos: $(VENV)/.installed
	$(PY) -m tests.chaos --backend both --jobs 200

# Every handler pair under 200 seeded random schedules (besides every one-preemption order).
interleave: $(VENV)/.installed
	INTERLEAVE_RANDOM=200 $(PY) -m pytest -n 0 tests/unit/test_interleavings.py

# Remove each guard of the product code in turn (tests/mutate.py): the tests must notice.
mutate: $(VENV)/.installed
	$(PY) -m tests.mutate

bench: $(VENV)/.installed
	$(PY) -m bench.worker_rss

bench-load: $(VENV)/.installed
	$(PY) -m bench.ann_load_rate
	$(PY) -m bench.open_loop

# systemd's own check of deploy/systemd (needs systemd-analyze: apt-get install systemd).
verify-units:
	tmp=$$(mktemp -d) && cp deploy/systemd/gas-worker@.service deploy/systemd/gas-workers.target $$tmp \
	&& ln -s gas-worker@.service $$tmp/gas-worker@archive.service \
	&& ln -s gas-worker@.service $$tmp/gas-worker@thaw-2.service \
	&& cd $$tmp && systemd-analyze verify --man=no ./gas-worker@archive.service \
	   ./gas-worker@thaw-2.service ./gas-workers.target && echo "units verified"

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
