# lmlab: `make run` (set up + full pipeline on the embedded data), `make test`, `make bench`.
PYTHON ?= python3
VENV ?= .venv
# PyTorch first and pinned: the CPU build by default; GPU users choose theirs, e.g.
#   make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# The suite on both cores, a test file per worker (its module fixtures built once): 11m24s against 17m01s on
# one core, this 2-core machine. `make test PYTEST_ARGS=` runs it on one. xdist hands the files out by test count
# (most first); the minute-long pipeline modules first instead (--no-loadscope-reorder and that order) made CI
# slower here, 15m17s against 14m05s (one clean-clone run each, 2026-12-07), so xdist's order stays.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: setup run test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
# W&B's sweep engine (`lmlab sweep`), without its dependencies: sweeps 0.3.0 declares numpy<2 but works with
# numpy 2 (its own test suite passes), which pyarrow and the rest need; its other dependencies are in
# pyproject.toml. `pip check` reports the declared pin; docs/sweeps.md says why it is ignored.
	$(BIN)/python -m pip install --quiet --no-deps sweeps==0.3.0
	touch $(STAMP)

# What only the tests need beyond `make run`'s: the extras for a model outside lmlab (export, Hub, harness) and
# the submitit launcher (cluster); and transformers, in a folder of its own (TRANSFORMERS_DIR: a test reads an
# export with it there), not in the environment, where torchmetrics would import it in every Lightning process.
TRANSFORMERS_DIR := $(VENV)/transformers
# (accelerate: lm-evaluation-harness's `hf` model needs it)
TRANSFORMERS_SPEC ?= transformers==5.25.0 tokenizers==0.23.3 accelerate==1.16.0
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,hub,harness,cluster]"
	$(BIN)/python -m pip install --quiet --upgrade --no-deps --target $(TRANSFORMERS_DIR) $(TRANSFORMERS_SPEC)
	touch $(TEST_STAMP)

# The pipeline's stages JOBS at a time, one thread each (`lmlab fanout`: each as soon as the stages it needs are
# committed, as `dvc repro` records them; the tiny models are overhead-bound, so two one-thread runs beat one
# two-thread run: docs/benchmarks.md). `make run JOBS=1` runs them one at a time; `dvc repro` does too.
JOBS ?= 2
run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/lmlab fanout dvc.yaml -j $(JOBS)
	@echo; awk '/^## Results/{on=1} /^## Plots/{on=0} on && !/^- \*\*/' reports/comparison.md
	@echo "report: $(CURDIR)/reports/comparison.md (plots beside it; metrics/seed<k>/<family>.json; \`dvc plots show\` for curves)"

test: setup $(TEST_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	PATH="$(CURDIR)/$(BIN):$$PATH" LMLAB_TRANSFORMERS_PATH="$(CURDIR)/$(TRANSFORMERS_DIR)" \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/tokenize_throughput.py

clean:
	rm -rf $(VENV) outputs
