# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test chaos interleave bench bench-rss bench-load verify-units install clean

demo: $(VENV)/.installed
	$(PY) -m util.local demo

test: $(VENV)/.installed
	$(PY) -m pytest

chaos: $(VENV)/.installed
	$(PY) -m tests.chaos --backend both --jobs 200

# Every handler pair under 200 seeded random schedules (besides every one-preemption order).
interleave: $(VENV)/.installed
	INTERLEAVE_RANDOM=200 $(PY) -m pytest -n 0 tests/unit/test_interleavings.py

# Runtime figures behind a slow proxy: head-of-line, transfer rates and RSS, calls and CPU per job.
bench: $(VENV)/.installed
	$(PY) -m bench.runtime

# Peak RSS of archive and thaw moving one large result, at full local speed.
bench-rss: $(VENV)/.installed
	$(PY) -m bench.worker_rss

bench-load: $(VENV)/.installed
	$(PY) -m bench.ann_load_rate

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
