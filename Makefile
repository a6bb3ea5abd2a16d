# chainrule: `make demo` runs the demo, `make test` the tests; each installs what it needs.
# pip runs with -qq: its errors show, its warnings (a machine's unreachable index, setuptools' notes on
# editable installs) do not, so that the first `make demo` prints only the demo.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo demo-distributed test lint bench notebooks clean dot

install: $(STAMP) dot

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -qq -e '.[dev,notebooks]'
	touch $(STAMP)

# Graphviz's `dot` renders the graph pictures: installed where we can, explained where we cannot.
dot:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Graphviz (dot) with apt-get"; \
	    (apt-get install -y -qq graphviz >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq graphviz >/dev/null 2>&1)) || \
	    echo "could not install Graphviz; run: sudo apt-get install graphviz"; \
	  else \
	    echo "Graphviz's dot is missing; run: sudo apt-get install graphviz  (macOS: brew install graphviz)"; \
	  fi; }

# the demo installs only its extra: scikit-learn (it ships the 8x8 digits), tqdm and matplotlib
$(VENV)/.demo: pyproject.toml | $(PY)
	$(PY) -m pip install -qq -e '.[demo]'
	touch $(VENV)/.demo

demo: $(VENV)/.demo dot
	$(VENV)/bin/chainrule demo

# the distributed extra (mpi4py, and MPICH's wheel with mpiexec): where it cannot be installed
# (no PyPI, no wheel for this platform) make test goes on and the multi-process tests skip
$(VENV)/.distributed: $(STAMP)
	$(PY) -m pip install -qq --timeout 15 --retries 1 -e '.[distributed]' && touch $@ || \
	  echo "could not install the distributed extra (mpi4py, mpich); tests/test_distributed.py will skip"

demo-distributed: install $(VENV)/.demo $(VENV)/.distributed
	$(VENV)/bin/mpiexec -n 2 $(VENV)/bin/chainrule demo --distributed

test: install $(VENV)/.distributed
	$(PY) -m pytest -q

# execute every notebook in place, storing its outputs (make test executes copies)
notebooks: install
	$(PY) notebooks/execute.py --in-place

lint: install
	$(PY) -m ruff check autograd nn optim chainrule tests benchmarks docs notebooks

# BENCH_ARGS, e.g. --json out.json or --only value_engine deep_chain (benchmarks/README.md)
bench: install
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
