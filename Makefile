# xferlab: the commands a newcomer needs. Each target sets up .venv on first use and skips it after.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.xferlab-installed
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: help install lock demo notebook readme-results test test-all test-cluster docs docs-serve dashboard bench bench-scale weights pretrain wheel clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

LOCK   := requirements.lock

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "installing xferlab and its dependencies at the versions of $(LOCK) into $(VENV) (a few minutes the first time)"
	$(PY) -m pip install --progress-bar on -c $(LOCK) -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install xferlab with its dev extras, versions from requirements.lock (skipped when up to date)

lock: $(STAMP)  ## rewrite requirements.lock from the versions installed in .venv (after changing pyproject.toml)
	$(PY) -m pip install --quiet -e '.[dev,notebook]'
	$(PY) tools/lock.py

DEMO_DIR ?= outputs/sweeps/demo/make-$(shell date +%Y-%m-%d_%H-%M-%S)

DEMO_LATEST := outputs/sweeps/demo/latest

demo: $(STAMP)  ## run the main job (a five-seed sweep per backbone), print its result table; outputs/sweeps/demo/latest points to it
	$(PY) -m xferlab.train -m experiment=demo hydra.sweep.dir=$(DEMO_DIR)
	@mkdir -p $(dir $(DEMO_LATEST)) && ln -sfn "$(abspath $(DEMO_DIR))" $(DEMO_LATEST)
	$(PY) -m xferlab.report $(DEMO_LATEST)

notebook: $(STAMP)  ## execute notebooks/results.ipynb on the latest demo's report (make demo first); HTML copy in outputs/notebooks/
	@test -d $(DEMO_LATEST)/report || { echo "no report at $(DEMO_LATEST)/report: run make demo first"; exit 2; }
	$(PY) -m jupyter nbconvert --to notebook --execute --inplace notebooks/results.ipynb
	$(PY) -m jupyter nbconvert --to html notebooks/results.ipynb --output-dir outputs/notebooks
	@echo "executed notebooks/results.ipynb; HTML copy: outputs/notebooks/results.html"

REPORTS ?= $(DEMO_LATEST)/report

readme-results: $(STAMP)  ## copy the latest demo's tables (or those of REPORTS="<report dir> ...") into docs/results/, the README and the docs pages
	$(PY) tools/readme.py update $(REPORTS)

dashboard: $(STAMP)  ## the latest demo as a W&B report (offline: writes its definition to <sweep>/report/wandb_report.json)
	$(PY) -m xferlab.dashboard $(DEMO_LATEST)

docs: $(STAMP)  ## build the documentation site into site/ (mkdocs build --strict: a broken link or anchor fails)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

docs-serve: $(STAMP)  ## serve the documentation site at http://127.0.0.1:8000, rebuilt on every change
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

test: $(STAMP)  ## the default test suite (fast; slow tests excluded)
	$(PY) -m pytest -q

test-all: $(STAMP)  ## every test, slow ones included
	$(PY) -m pytest -q -m ''

test-cluster: $(STAMP)  ## the SLURM tests: a one-node cluster started and stopped by the tests (root; installs slurm-wlm and munge; minutes)
	$(PY) -m pytest -q -m slurm

bench: $(STAMP)  ## speed benchmarks: prints a table, saves outputs/bench/<timestamp>.json
	$(PY) -m xferlab.bench

bench-scale: $(STAMP)  ## the real path at scale: 100 targets x 4 real-field FOVs, S3 on the loopback -> fetch -> import -> extraction -> head -> report (~15 min on 2 cores); record in docs/bench/
	$(PY) -m xferlab.benchmarks.scale --record docs/bench/scale-$$(date +%Y-%m-%d).json --table docs/results/scale.md

weights: $(STAMP)  ## download and verify the study's public checkpoints into the weights folder (needs network)
	$(PY) -m xferlab.fetch weights

pretrain: $(STAMP)  ## rebuild the shipped backbones: 3 pretraining seeds per source + the domain-gap series (tools/pretrain_shipped.sh; ~6 min each on 2 cores, ONLY=<name> for one)
	PY=$(PY) tools/pretrain_shipped.sh

wheel: $(STAMP)  ## build the wheel into dist/
	$(PY) -m build --wheel --no-isolation --outdir dist .

clean:  ## remove build artefacts (keeps .venv and outputs/)
	rm -rf build dist site src/*.egg-info .pytest_cache
