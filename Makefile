# The README's two commands: `make demo` (the whole system on this machine) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
CODE := crds presets runtime kaito webhook reconciler hack tests

.PHONY: bootstrap test lint unit demo down cluster-up cluster-down golden bench images push

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
	$(BIN)/python -m rig.images stop

# Every image in images/ (a local dockerd and the Debian base are made when missing;
# unchanged images are reused by content hash). `make push REGISTRY=myreg.azurecr.io/kaito`
# retags them under REGISTRY and pushes.
images: bootstrap
	$(BIN)/python -m rig.images build

push: images
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=<registry>/<path>"; exit 2; }
	$(BIN)/python -m rig.images push $(REGISTRY)

cluster-up: bootstrap
	bash hack/local-cluster.sh up

cluster-down: bootstrap
	bash hack/local-cluster.sh down

# Regenerate the golden files (expansions, desired objects, vLLM arguments).
golden: bootstrap
	$(BIN)/pytest --update-golden tests/presets tests/reconciler -q
