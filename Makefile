# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv when it is missing and installs the package into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= cifar10
DEMO_OUT ?= runs/demo
TTA_MINUTES ?= 40

.PHONY: demo test lint bench bench-quick clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/resnetlab reproduce degradation --dataset $(DATA) --out $(DEMO_OUT)

test: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks hubconf.py
	OMP_NUM_THREADS=2 $(PY) -m pytest -q

# PASSIVE: OpenMP threads sleep instead of spinning, which keeps timings sane on a shared machine.
bench: $(VENV)/.installed-dev
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/run_all.py --tta-minutes $(TTA_MINUTES)

bench-quick: $(VENV)/.installed-dev
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/run_all.py --quick

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
