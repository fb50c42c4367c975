# Set-up contract: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test demo bench reproduce reproduce-check gpu-wheels clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# pytest exits 5 when it collected no test: that must fail the run, and it does (non-zero).
test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	bash scripts/demo.sh

# BENCH_ARGS go to benchmarks/speed/run.py: `make bench BENCH_ARGS=--compiled` adds the issue-22 sections
# (compiled encoders and train step, op profile, compile check), `BENCH_ARGS=--quick` the short grid.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) benchmarks/speed/run.py $(BENCH_ARGS)

# The paper's claims at CPU scale (8 arms x 3 seeds, estimated ~1.3 h and capped at 2.5 h on 2 cores; see the
# docstring of benchmarks/reproduce/reproduce.py): bench-results/reproduce/ and REPRODUCTION.md.
# scikit-learn and matplotlib only supply more held-out photos (china, flower, grace_hopper).
reproduce: $(STAMP)
	$(PY) -m pip install -q -e '.[test,repro]'
	$(PY) benchmarks/reproduce/reproduce.py --out bench-results/reproduce --report REPRODUCTION.md

# Fast (no training): fails when REPRODUCTION.md's recipe fingerprint differs from what `make reproduce` would
# run now, naming the arms that changed; a file with the explicit stale marker passes with a warning.
# tests/test_reproduce_check.py runs it inside `make test`.
reproduce-check: $(STAMP)
	$(PY) benchmarks/reproduce/reproduce_check.py REPRODUCTION.md

# The GPU check's dependencies as wheels in wheels/ (git-ignored), for a GPU machine without package registries:
# scripts/gpu_check.sh installs them from there with --no-index. GPU_WHEELS_ARGS: e.g. --lean (no lpips/scipy,
# fits a 64 MiB carry), --python-version 3.10 --platform manylinux2014_x86_64 (another interpreter). README "GPU check".
gpu-wheels: $(STAMP)
	$(PY) scripts/gpu_wheels.py download --dest wheels $(GPU_WHEELS_ARGS)

clean:
	rm -rf $(VENV) runs build *.egg-info
