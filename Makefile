# Set-up commands: each works on a fresh machine (creates .venv, installs, runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test docs lint format install clean gpu-check

# TORCH=cpu installs PyTorch's CPU-only wheels from PyTorch's own index (no CUDA libraries or
# triton: a few GB less on a machine without a GPU); the default takes torch from the normal
# index. The choice is made when .venv is created: `make clean` before switching.
TORCH ?= default
TORCH_INDEX_default :=
TORCH_INDEX_cpu := --index-url https://download.pytorch.org/whl/cpu
ifeq ($(filter $(TORCH),default cpu),)
$(error TORCH=$(TORCH): use TORCH=cpu (CPU-only wheels) or leave it unset (the default index))
endif

$(BIN)/freebits: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_INDEX_$(TORCH)) "torch>=2.1,<3" "torchvision>=0.16"
	$(BIN)/pip install --quiet -e ".[dev,tensorboard,mlflow]"
	touch $@

install: $(BIN)/freebits

demo: install
	$(BIN)/freebits sweep --out results
	$(BIN)/freebits report results/default

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --dist loadfile  # two workers, each test file in one of them

# The GPU checks (benchmarks/gpu_check.py) with the Python already there: no venv, no install.
# PYTHON=... on the command line or in the environment wins; else .venv's if it exists, else python3.
ifeq ($(origin PYTHON),file)
CHECK_PYTHON := $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
else
CHECK_PYTHON := $(PYTHON)
endif

gpu-check:
	PYTHONPATH=.$(if $(PYTHONPATH),:$(PYTHONPATH)) $(CHECK_PYTHON) benchmarks/gpu_check.py \
		$(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(DRY_RUN),--dry-run) $(GPU_CHECK_ARGS)

docs: install  # the spec reference, from the spec's field docstrings
	$(BIN)/python -m freebits_cli.spec.docs

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
