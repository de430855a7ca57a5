# Two commands for a new machine: `make run` (demo session) and `make test` (the whole suite).
# Each installs what it needs: Debian packages listed in .ci/apt-packages (when missing, as root),
# then a .venv with examrec and its Python dependencies.

VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PYTHON  ?= python3

.PHONY: run test bench soak apt venv clean

apt:
	@missing=$$(grep -v '^\s*#' .ci/apt-packages | grep -v '^\s*$$' | while read -r p; do \
	    dpkg -s "$$p" >/dev/null 2>&1 || echo "$$p"; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: apt $(STAMP)
	$(VENV)/bin/examrec record --profile hw-profiles/replay.toml --duration 20 --out recordings
	@echo
	@echo "The session folder above holds manifest.json, events.jsonl and one folder of MP4 segments per stream."
	@echo "Look inside with: $(VENV)/bin/examrec info <session folder>"

test: apt $(STAMP)
	$(PY) -m pytest -q

# About 50 minutes on the 2-core machine, 35 of them the vehicle rounds (three exams of 10 minutes).
bench: apt $(STAMP)
	$(PY) bench/throughput.py
	$(PY) bench/console.py
	$(PY) bench/memory.py
	$(PY) bench/vehicle.py

# Prints the seeds (replay: EXAMREC_CRASH_SEED=<seed> make soak) and the loss per stream and rate.
soak: apt $(STAMP)
	$(PY) -m pytest -q -s -m soak -o addopts="" tests/test_crash.py

clean:
	rm -rf $(VENV) recordings .pytest_cache
