# Two entry points on a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing, installs torch==2.13.0 first (a CPU build lies on disk; any other
# spec pulls CUDA packages), then the package. A stamp file makes the second run fast.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
OUT ?= runs/demo
# The demo's offline dataset (Minari's format) stays inside the repository, not in ~/.minari.
DATASETS ?= runs/datasets
TWOPATH := gendm/twopath/expert-v0

.PHONY: demo test lint bench-sb3 clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,ray,bench,lm,text]"
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

demo: export MINARI_DATASETS_PATH := $(abspath $(DATASETS))
demo: $(STAMP)
	@test -f $(DATASETS)/$(TWOPATH)/data/metadata.json || $(BIN)/gendm data collect \
		--env gendm/TwoPathReach-v0 --policy expert --episodes 100 --out $(TWOPATH) --no-progress
	$(BIN)/gendm bench demo --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports --no-cache --no-logo

clean:
	rm -rf $(VENV) runs
