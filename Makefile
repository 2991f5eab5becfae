# `make demo` and `make test` do all the set-up on a fresh machine (README).
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo_out

.PHONY: demo test bench-shard clean

$(VENV)/.installed: requirements.txt setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	$(PY) tools/demo.py --out $(DEMO_OUT)

# tests/leftovers.py fails the run if any process of it outlives it, or it leaves entries in /dev/shm.
test: $(VENV)/.installed
	$(PY) tests/leftovers.py -- $(PY) -m pytest -q tests

bench-shard: $(VENV)/.installed
	$(PY) tools/bench_shard.py --json bench_out/shard.json

clean:
	rm -rf $(DEMO_OUT) bench_out
