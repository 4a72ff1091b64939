# The two set-up commands of the README. Both work on a fresh machine with Python >= 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/xpusim: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/xpusim

demo: $(BIN)/xpusim
	$(BIN)/xpusim demo

test: $(BIN)/xpusim
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n auto tests

bench: $(BIN)/xpusim
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) results
