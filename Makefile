# The README's two commands: `make demo` (the whole system on this machine) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
CODE := crds presets webhook reconciler hack tests

.PHONY: bootstrap test lint unit demo down cluster-up cluster-down golden bench

bootstrap:
	@bash hack/bootstrap.sh

lint: bootstrap
	$(BIN)/ruff check $(CODE)
	$(BIN)/mypy $(CODE)
	$(BIN)/lint-imports

# The whole gate: lint, types, import contracts, every test tier (the control plane is
# built and started by the session fixture on first use).
test: lint
	$(BIN)/pytest

demo: bootstrap
	$(BIN)/python hack/demo.py up

down: bootstrap
	$(BIN)/python hack/demo.py down

cluster-up: bootstrap
	bash hack/local-cluster.sh up

cluster-down: bootstrap
	bash hack/local-cluster.sh down

# Regenerate the golden files (expansions, desired objects, vLLM arguments).
golden: bootstrap
	$(BIN)/pytest --update-golden tests/presets tests/reconciler -q
