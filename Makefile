# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# The Python that makes .venv (`make install PYTHON=python3.11` where python3 is older).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The oldest Python the code runs on: pyproject.toml's requires-python (">=3.11").
MIN_PYTHON := $(shell sed -n 's/^requires-python = ">=\([0-9.]*\)"$$/\1/p' pyproject.toml)
$(if $(MIN_PYTHON),,$(error pyproject.toml: no requires-python = ">=X.Y"))
# Python code that exits 0 only under MIN_PYTHON or newer.
NEW_ENOUGH := import sys; sys.exit(sys.version_info < tuple(map(int, "$(MIN_PYTHON)".split("."))))

.PHONY: demo test test-fast test-aws lint chaos interleave mutate bench bench-rss bench-load bench-reconcile verify-units install install-dev clean

demo: $(VENV)/.installed-dev
	$(PY) -m util.local demo

test: $(VENV)/.installed-dev
	$(PY) -m pytest

# The unit tests but the exhaustive explorations: under a minute, for every change.
test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest -m "unit and not exhaustive" tests/unit

# The contract suite against a real account: a disposable stack, deleted after (docs/testing.md).
test-aws: $(VENV)/.installed-dev
	@if $(PY) -c 'import boto3, sys; sys.exit(boto3.session.Session().get_credentials() is None)'; \
	then GAS_TEST_AWS=1 $(PY) -m pytest -n 0 --timeout 3600 tests/contract; \
	else echo "make test-aws: no AWS credentials in the standard chain; nothing was run"; fi

# ruff (lint and format check) over the repository, mypy over util/ and localaws/ (pyproject.toml).
lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# Both back ends, workers killed and frozen, the sweep running during traffic; the S3 one with
# SSE-KMS buckets (ETags not MD5s) and a user_id_index 5 s behind the table.
CHAOS := $(PY) -m tests.chaos --jobs 200 --freeze-every 10 --sweep-every 10
chaos: $(VENV)/.installed-dev
	$(CHAOS) --backend vault
	$(CHAOS) --backend s3 --encryption aws:kms --index-lag 5

# Every handler pair under 200 seeded random schedules (besides every one-preemption order).
interleave: $(VENV)/.installed-dev
	INTERLEAVE_RANDOM=200 $(PY) -m pytest -n 0 tests/unit/test_interleavings.py

# Remove each guard of the product code in turn (tests/mutate.py): the tests must notice.
mutate: $(VENV)/.installed-dev
	$(PY) -m tests.mutate

# Runtime figures behind a slow proxy: head-of-line, transfer rates and RSS, calls and CPU per job.
bench: $(VENV)/.installed-dev
	$(PY) -m bench.runtime

# Peak RSS of archive and thaw moving one large result, at full local speed.
bench-rss: $(VENV)/.installed-dev
	$(PY) -m bench.worker_rss

bench-load: $(VENV)/.installed-dev
	$(PY) -m bench.ann_load_rate
	$(PY) -m bench.open_loop

# One reconcile pass over 10,000 jobs in the local stack: its time and AWS calls by operation.
bench-reconcile: $(VENV)/.installed-dev
	$(PY) -m bench.reconcile

# systemd's own check of deploy/systemd (needs systemd-analyze: apt-get install systemd).
verify-units:
	tmp=$$(mktemp -d) && cp deploy/systemd/gas-worker@.service deploy/systemd/gas-workers.target $$tmp \
	&& ln -s gas-worker@.service $$tmp/gas-worker@archive.service \
	&& ln -s gas-worker@.service $$tmp/gas-worker@thaw-2.service \
	&& cd $$tmp && systemd-analyze verify --man=no ./gas-worker@archive.service \
	   ./gas-worker@thaw-2.service ./gas-workers.target \
	&& cp $(CURDIR)/deploy/systemd/gas-reconcile.service $(CURDIR)/deploy/systemd/gas-reconcile.timer . \
	&& systemd-analyze verify --man=no ./gas-reconcile.service ./gas-reconcile.timer \
	&& echo "units verified"

# A production host: the workers' requirements only (boto3).
install: $(VENV)/.installed

# The demo and the tests: the runtime plus moto, pytest, cfn-lint (requirements-dev.txt).
install-dev: $(VENV)/.installed-dev

# .venv is kept while its Python is new enough and imports boto3. Otherwise (no venv, one of
# another Python, an install that failed) it is made anew with $(PYTHON), which is refused in
# one line, before anything is changed, if it is older than MIN_PYTHON. (`python -m venv`
# over an existing venv keeps its old bin/python.) The stamp is written last: after any
# failure the next `make install` starts again.
$(VENV)/.installed: requirements.txt
	@$(PY) -c 'import boto3; $(NEW_ENOUGH)' 2>/dev/null || { \
	  $(PYTHON) -c '$(NEW_ENOUGH)' 2>/dev/null || { \
	    version=$$($(PYTHON) -V 2>/dev/null) || version="not found"; \
	    echo "make install: GAS needs Python $(MIN_PYTHON) or newer; PYTHON=$(PYTHON) is $$version (give one: make install PYTHON=python$(MIN_PYTHON))" >&2; \
	    exit 1; }; \
	  echo "rm -rf $(VENV) && $(PYTHON) -m venv $(VENV)"; rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -c 'import boto3, ijson'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
