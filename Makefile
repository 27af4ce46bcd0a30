# arresearch: `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV   := .venv
PY     := $(VENV)/bin/python
AR     := $(VENV)/bin/arresearch
STAMP  := $(VENV)/.installed
DEMO   := data/raw/demo
MONTH  ?=
INVOICES ?=
CUSTOMERS ?=
MAPPING ?=
CONFIG ?=
ORIGINS ?=
SECTIONS ?=

# Find a Python >= 3.12: python3.12, python3.13, a pyenv install, then python3.
# Each candidate is run, so a pyenv shim that is not activated is skipped.
PYTHON_CANDIDATES := python3.12 python3.13 $(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3) python3
BASE_PYTHON ?= $(firstword $(foreach p,$(PYTHON_CANDIDATES),$(shell $(p) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1 && echo $(p))))

REPORT_ARGS := $(if $(MONTH),--month $(MONTH)) $(if $(INVOICES),--invoices $(INVOICES)) \
	$(if $(CUSTOMERS),--customers $(CUSTOMERS)) $(if $(MAPPING),--mapping $(MAPPING)) $(if $(CONFIG),--config $(CONFIG))

.PHONY: help setup data report backtest bench test lint lab clean

help: ## show this list of targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@if [ -z "$(BASE_PYTHON)" ]; then echo "error: arresearch needs Python >= 3.12; install it (e.g. 'pyenv install 3.12') and run make again" >&2; exit 1; fi
	@echo ">> creating $(VENV) with $(BASE_PYTHON) and installing arresearch[dev] (first run only, a few minutes)"
	@test -x $(PY) || $(BASE_PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install the package with its dev extras

$(DEMO)/invoices.csv: | $(STAMP)
	@$(AR) synth --out $(DEMO)

data: $(STAMP) ## write the seeded synthetic demo ledger into data/raw/demo/
	@$(AR) synth --out $(DEMO)

report: $(STAMP) $(DEMO)/invoices.csv ## build reports/YYYY-MM/ (MONTH=YYYY-MM, INVOICES=, CUSTOMERS=, MAPPING=, CONFIG=)
	@$(AR) report $(REPORT_ARGS)

backtest: $(STAMP) $(DEMO)/invoices.csv ## score past predictions against baselines (ORIGINS=d1,d2 INVOICES=...)
	@$(AR) backtest $(if $(ORIGINS),--origins $(ORIGINS)) $(if $(INVOICES),--invoices $(INVOICES)) \
		$(if $(CUSTOMERS),--customers $(CUSTOMERS)) $(if $(MAPPING),--mapping $(MAPPING))

bench: $(STAMP) ## benchmarks: delay model vs per-invoice version, scaling 10k-1M, report timings (~18 min)
	@$(PY) benchmarks/bench.py $(SECTIONS)

test: $(STAMP) ## run the test suite (unit, statistical recovery, notebooks)
	@$(PY) -m pytest

lint: $(STAMP) ## ruff on the package, tests and benchmarks; notebooks carry no outputs
	@$(VENV)/bin/ruff check src tests benchmarks
	@$(VENV)/bin/nbstripout --verify notebooks/*.ipynb

lab: $(STAMP) ## start JupyterLab in notebooks/
	@$(VENV)/bin/jupyter lab notebooks/

clean: ## remove caches, built reports and the virtual environment
	rm -rf $(VENV) .cache reports/20* .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
