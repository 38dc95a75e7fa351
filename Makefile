# One entry point. Every target installs what it needs into .venv first.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export OPENBLAS_NUM_THREADS := 1
export OMP_NUM_THREADS := 1

.PHONY: setup demo test test-fast bench mypyc clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock requirements-models.txt scripts/setup.sh \
          tests/net/js/package.json tests/net/js/package-lock.json
	bash scripts/setup.sh
	touch $(STAMP)

demo: setup            ## the main job: a local testnet embedding real text end to end
	$(VENV)/bin/moenode testnet demo --nodes 5 --submissions 20 --json demo.json

test: setup            ## the whole suite, slow end-to-end tests included
	$(PY) -m pytest -q -ra --durations=25

test-fast: setup       ## skip the slow end-to-end tests
	$(PY) -m pytest -q -m "not slow"

bench: setup
	for b in bench/[!_]*.py; do $(PY) $$b --json || exit 1; done

mypyc: setup           ## optional: the core's hot modules compiled with mypyc into build/mypyc (bench/sim.py runs both)
	$(PY) scripts/build_mypyc.py

clean:
	rm -rf $(VENV) build *.egg-info
