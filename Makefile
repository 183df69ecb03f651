# Two commands set everything up and run it: `make demo` and `make test`.
# Each creates .venv on first use and reinstalls only when pyproject.toml changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
PYTEST_ARGS ?=
# promtool checks and unit-tests the chart's alert rules (tests/helm/test_monitoring.py).
PROMTOOL ?= $(BIN)/promtool

.PHONY: install test lint typecheck unit demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m worker.dev.photos  # the real photos of the tests and the demo, fetched here so both stay offline
	touch $(STAMP)

# checkov pins versions that clash with ours, so it lives in its own venv (used by the Helm chart tests).
$(CHECKOV):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov>=3.2'

# promtool from Debian's prometheus package, unpacked into the venv: `apt-get download` needs no root and installs
# nothing, so no Prometheus server is set up or started. apt-get update only when the package lists lack it.
$(BIN)/promtool: | $(BIN)/python
	@command -v apt-get >/dev/null || { echo "no apt-get: install Prometheus' promtool and pass PROMTOOL=<path>" >&2; exit 1; }
	rm -rf $(VENV)/prometheus-deb && mkdir -p $(VENV)/prometheus-deb
	cd $(VENV)/prometheus-deb && { apt-get download -q prometheus 2>/dev/null || { apt-get update -q && apt-get download -q prometheus; }; }
	dpkg-deb -x $(VENV)/prometheus-deb/prometheus_*.deb $(VENV)/prometheus-deb/root
	install -m 0755 $(VENV)/prometheus-deb/root/usr/bin/promtool $@
	rm -rf $(VENV)/prometheus-deb
	$@ --version >/dev/null

install: $(STAMP) $(CHECKOV) $(PROMTOOL)

lint: $(STAMP)
	$(BIN)/ruff check worker tests bench
	$(BIN)/ruff format --check worker tests bench

typecheck: $(STAMP)
	$(BIN)/mypy
	MYPYPATH=bench $(BIN)/mypy bench

unit: $(STAMP) $(CHECKOV) $(PROMTOOL)
	PROMTOOL=$(PROMTOOL) $(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck unit

# `make demo API=iai` runs it against the emulator's IAI (SearchFaces) instead of v1 (multidentify);
# `make demo REAL=1` on real photos with the real face engine (dlib).
demo: $(STAMP)
	$(BIN)/multidentify-worker demo $(if $(API),--api $(API)) $(if $(REAL),--real-faces)

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .pytest_cache .mypy_cache .ruff_cache
