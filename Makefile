# Every target sets itself up: .venv from requirements.txt, the pinned CDK CLI
# from package-lock.json, and Node 22 for jsii when the system node is older.
# Set-up steps re-run only when their lock files change.

SHELL := /bin/bash
.DEFAULT_GOAL := help
ENV ?= dev
# PIPELINE=1: synth, diff and deploy the delivery pipeline's stack instead of ENV's.
PIPELINE ?=
PIPELINE_ON := $(filter-out 0 false no,$(PIPELINE))
APP_CONTEXT := $(if $(PIPELINE_ON),--context pipeline=true,--context environment=$(ENV))
PYTHON ?= python3
VENV := .venv
NODE22_BIN := $(CURDIR)/tools/node22/node_modules/.bin

# `make invoke` must start in a blink: it looks for Node (and the handler Python) only in the
# sub-make that synthesizes the environment's template again, when its sources changed.
FAST_GOALS := invoke
ifneq ($(filter-out $(FAST_GOALS),$(or $(MAKECMDGOALS),help)),)
SYSTEM_NODE_MAJOR := $(shell node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
ifeq ($(shell [ $(SYSTEM_NODE_MAJOR) -lt 22 ] && echo old),old)
NODE_SETUP := $(NODE22_BIN)/node
export PATH := $(NODE22_BIN):$(PATH)
endif
endif
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/node_modules/.bin:$(PATH)
export CDK_DISABLE_CLI_TELEMETRY := true
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Python caches compiled modules (gitignored __pycache__), so a second synth or test run
# does not compile opskit, stacks and the tests again, whatever the shell says.
unexport PYTHONDONTWRITEBYTECODE

CDK := npx --no-install cdk
SETUP := $(NODE_SETUP) node_modules/.installed $(VENV)/.installed

# Lambda runs a newer Python than the tools: `make test-handlers` runs the handler and layer
# tests on this one too (CI: 3.13 and 3.14). Not part of `make test`, whose 90 s it would break.
HANDLER_PYTHON_VERSION ?= 3.13
HANDLER_VENV := .venv$(subst .,,$(HANDLER_PYTHON_VERSION))
ifneq ($(filter-out $(FAST_GOALS),$(or $(MAKECMDGOALS),help)),)
HANDLER_PYTHON := $(shell command -v python$(HANDLER_PYTHON_VERSION) >/dev/null 2>&1 \
	&& python$(HANDLER_PYTHON_VERSION) -c '' 2>/dev/null && command -v python$(HANDLER_PYTHON_VERSION) \
	|| ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$(HANDLER_PYTHON_VERSION)*/bin/python$(HANDLER_PYTHON_VERSION) 2>/dev/null | tail -1)
endif
HANDLER_TEST_DEPS := boto3 'moto[server]' aws-lambda-powertools pytest pytest-xdist requests schemathesis
# One worker per core; a test module stays on one worker, so it synthesizes once.
PYTEST_PARALLEL ?= -n auto --dist loadfile
# checkov's own dependency pins clash with the app's: it gets a virtualenv of its own.
SCAN_VENV := .venv-scan
# Every environment's stack, the pipeline's, and the stacks of the pipeline's stages.
SCANNED_TEMPLATES := cdk.out/*/*.template.json cdk.out/pipeline/assembly-*/*.template.json

.PHONY: help setup synth synth-all test test-handlers scan diff deploy bench lint golden lock clean api \
	package-check local invoke local-template

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(SETUP) ## Install pinned Python and Node dependencies (idempotent)

$(NODE22_BIN)/node: tools/node22/package-lock.json
	npm ci --prefix tools/node22 --no-audit --no-fund --loglevel=error
	@touch $@

node_modules/.installed: package-lock.json $(NODE_SETUP)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(VENV)/.installed: requirements.txt pyproject.toml $(NODE_SETUP)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	@touch $@

synth: $(SETUP) ## Synthesize one environment (make synth ENV=prod) or the pipeline (PIPELINE=1)
	$(CDK) synth $(APP_CONTEXT) --quiet
	$(if $(PIPELINE_ON),$(VENV)/bin/python scripts/compact_templates.py cdk.out)

synth-all: $(SETUP) ## Synthesize every environment into cdk.out/<env>, the pipeline into cdk.out/pipeline
	@for env in $$($(VENV)/bin/python -c 'import json; print(*json.load(open("cdk.json"))["context"]["environments"])'); do \
		echo "synth $$env"; $(CDK) synth --context environment=$$env --quiet --output cdk.out/$$env || exit 1; \
	done
	@echo "synth pipeline"; $(CDK) synth --context pipeline=true --quiet --output cdk.out/pipeline

test: $(SETUP) $(SCAN_VENV)/.installed ## Run the test suite
	$(VENV)/bin/python -m pytest $(PYTEST_PARALLEL)

test-handlers: ## Run the handler and layer tests on Python $(HANDLER_PYTHON_VERSION)
ifeq ($(HANDLER_PYTHON),)
	@echo "warning: no python$(HANDLER_PYTHON_VERSION) found; handler tests ran on $$($(PYTHON) -V) only" >&2
else
	@$(MAKE) --no-print-directory $(HANDLER_VENV)/.installed
	$(HANDLER_VENV)/bin/python -m pytest tests/functions -q -p no:cacheprovider $(PYTEST_PARALLEL)
endif

$(SCAN_VENV)/.installed: requirements-scan.txt
	test -x $(SCAN_VENV)/bin/python || $(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SCAN_VENV)/bin/python -m pip install --quiet -r requirements-scan.txt
	@touch $@

scan: synth-all $(SCAN_VENV)/.installed ## What security teams scan with: checkov and cfn-lint's serverless rules
	$(SCAN_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation \
		$$(for t in $(SCANNED_TEMPLATES); do printf -- '-f %s ' $$t; done)
	$(VENV)/bin/cfn-lint --append-rules cfn_lint_serverless.rules --ignore-checks W3005 -- $(SCANNED_TEMPLATES)

$(HANDLER_VENV)/.installed: requirements.txt
	test -x $(HANDLER_VENV)/bin/python || $(HANDLER_PYTHON) -m venv $(HANDLER_VENV)
	grep -v '^-e' requirements.txt > $(HANDLER_VENV)/constraints.txt
	$(HANDLER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(HANDLER_VENV)/bin/python -m pip install --quiet -c $(HANDLER_VENV)/constraints.txt $(HANDLER_TEST_DEPS)
	@touch $@

diff: $(SETUP) ## Compare an environment (or PIPELINE=1) with what is deployed (AWS credentials)
	$(CDK) diff $(APP_CONTEXT)

deploy: $(SETUP) ## Deploy an environment, make deploy ENV=prod, or the pipeline, PIPELINE=1
	$(CDK) deploy $(APP_CONTEXT)

package-check: $(SETUP) ## Build sdist and wheel into dist/, twine check, install and use the wheel
	$(VENV)/bin/python scripts/package_check.py --dist dist $(PACKAGE_CHECK_ARGS)

API_PORT ?= 8080

api: $(SETUP) ## Serve the user-service API on 127.0.0.1, AWS emulated: make api [API_PORT=8080]
	$(VENV)/bin/python -u -m opskit_local.user_service --port $(API_PORT)

local: $(SETUP) ## An environment's resources on a local emulator, up until Ctrl-C: make local [ENV=dev]
	$(VENV)/bin/python -u -m opskit_local.serve --env $(ENV) $(if $(TEMPLATE),--template $(TEMPLATE))

# The environment's template, kept in .opskit-local/ and synthesized again (by a sub-make that
# sets Node up) when one of its sources is newer.
LOCAL_SOURCES := cdk.json app.py requirements.txt $(wildcard stacks/*.py opskit/*.py opskit/constructs/*.py opskit/constructs/*/*.py)

.opskit-local/%.template.json: $(LOCAL_SOURCES)
	@$(MAKE) --no-print-directory local-template ENV=$*

local-template: $(SETUP)
	$(VENV)/bin/python -m opskit_local.template --env $(ENV)

invoke: $(if $(TEMPLATE),,.opskit-local/$(ENV).template.json) $(VENV)/.installed ## Run one function locally: make invoke FN=<function> [EVENT=<file, sample or JSON>] [ENV=dev]
	@test -n "$$FN" || { echo "usage: make invoke FN=<function> [EVENT=<file, sample or JSON>] [ENV=dev]" >&2; exit 2; }
	@$(VENV)/bin/python -m opskit_local.invoke "$$FN" $${EVENT:+"$$EVENT"} --env $(ENV) $(if $(TEMPLATE),--template $(TEMPLATE))

bench: $(SETUP) ## Run the benchmarks and print their figures
	$(VENV)/bin/python benchmarks/run.py

lint: $(SETUP) ## ruff, mypy on opskit/, opskit_local/, stacks/, scripts/, tests/, benchmarks/ and each handler, then `make scan`
	$(VENV)/bin/ruff check opskit opskit_local stacks tests benchmarks scripts app.py
	$(VENV)/bin/ruff format --check opskit opskit_local stacks tests benchmarks scripts app.py
	$(VENV)/bin/mypy
	cd benchmarks && MYPYPATH=. $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml \
		--cache-dir $(CURDIR)/.mypy_cache --explicit-package-bases *.py
	@for function in opskit/functions/*/; do \
		(cd $$function && MYPYPATH=$(CURDIR)/opskit/layers/common/python:. \
			$(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml --cache-dir $(CURDIR)/.mypy_cache \
			$$(ls *.py | sed 's/\.py$$//; s/^/-m /')) || exit 1; \
	done
	@$(MAKE) --no-print-directory scan

golden: $(SETUP) ## Refresh the golden templates in tests/golden after an intended change
	OPSKIT_UPDATE_GOLDEN=1 $(VENV)/bin/python -m pytest tests/test_environments.py -q -k golden

lock: ## Re-pin requirements.txt from a fresh resolve of pyproject.toml's ranges, and checkov's requirements-scan.txt
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet '.[dev]'
	{ echo "# Exact pins for this repository's app, tests and CI; library consumers get the ranges in pyproject.toml."; \
	  echo "# Refresh with: make lock"; echo "-e .[dev]"; \
	  .lock-venv/bin/pip freeze --all --exclude-editable | grep -vE '^(cdk-opskit|pip)( @|==)' | sort -f; } > requirements.txt
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet checkov
	{ echo "# Exact pins for the checkov scanner, which make lint and make test run in .venv-scan:"; \
	  echo "# its own dependency pins (boto3, networkx, ...) clash with the app's. Refresh with: make lock"; \
	  .lock-venv/bin/pip freeze --all | grep -vE '^(pip|setuptools)==' | sort -f; } > requirements-scan.txt
	rm -rf .lock-venv

clean: ## Remove build output (keeps .venv and node_modules)
	rm -rf cdk.out dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache .bench .opskit-local
