# Set-up commands: each works on a fresh machine (creates .venv, installs, runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint format install clean

$(BIN)/freebits: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch>=2.1,<3" "torchvision>=0.16"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/freebits

demo: install
	$(BIN)/freebits sweep --out results
	$(BIN)/freebits report results/default

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --dist loadfile  # two workers, each test file in one of them

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
