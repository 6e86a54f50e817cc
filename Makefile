# The README's two commands: `make demo` (the main job end to end) and `make test` (all tests).
# Both bootstrap .venv and the Fashion-MNIST data; both are safe to run again.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
# Re-install only when the dependency declarations change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
FMNIST := /usr/share/datasets/fashion-mnist
DEMO_STUDY ?= jobs/studies/fashion_mnist_demo.yaml
PYTEST_ARGS ?=

.PHONY: demo test bootstrap data lint clean-venv

DEMO_OUTPUT ?= runs/fashion-mnist-demo

# Trains the demo study's members on a local Ray (finished members are kept on a re-run),
# then builds every ensemble and prints the report (a re-run adds report-2, never overwrites).
demo: bootstrap data
	$(VENV)/bin/ensemble run $(DEMO_STUDY) --output $(DEMO_OUTPUT)
	$(VENV)/bin/ensemble aggregate $(DEMO_OUTPUT) --bn-batches 20

test: bootstrap data
	$(PY) -m pytest $(PYTEST_ARGS)

bootstrap: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

# The Debian package holds the real Fashion-MNIST files; without apt the data module falls
# back to data.dir or torchvision's download.
data:
	@if [ -d $(FMNIST) ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo "apt-get not available: set data.dir or allow download"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else \
	  echo "not root: run 'sudo apt-get install dataset-fashion-mnist' for the offline data"; exit 0; fi; \
	$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist

lint: bootstrap
	$(VENV)/bin/ruff check orchestrator tests benchmarks jobs

clean-venv:
	rm -rf $(VENV)
