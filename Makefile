# The two set-up commands: `make demo` (the embedded stack and a real fine-tuning job) and
# `make test` (the suite). Both create .venv and install what they need on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml setup.py constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/trainyard demo

test: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check trainyard tests bench migrations setup.py
	$(BIN)/ruff format --check trainyard tests bench migrations setup.py
	$(BIN)/mypy trainyard

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .trainyard bench/results
