# Clinical encoder pipeline. `make help` lists the targets; `make train-morE` and `make test` are
# all a newcomer needs. Settings live in configs/*.yaml (override with ARGS="key=value ...").

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMPS  := .stamps
SETUP   := $(VENV)/.setup-stamp
RUN     := $(PY) -m pipelines
ARGS    ?=            # key=value settings for the stage you invoke (train, evaluate, ...)
DEMO_ARGS ?=          # settings for demo-data when it runs as a dependency
PREPROCESS_ARGS ?=    # settings for the preprocess-* stages
DATASET ?= demo
FORGET  ?= data/raw/demo/withdrawn.txt   # make unlearn: subjects who withdrew (the demo's 5% by default)
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1

PIPELINE_SRC := $(shell find pipelines encoders configs -type f \( -name '*.py' -o -name '*.yaml' \) 2>/dev/null)
# What each stamp is made from: editing one of these files makes `make` redo that stage and what follows
# (e.g. an edit under encoders/ retrains). `src_under` keeps the PIPELINE_SRC files under the given paths.
src_under = $(filter $(addsuffix %,$(1)),$(PIPELINE_SRC))
CORE_SRC       := $(call src_under,pipelines/__init__.py pipelines/__main__.py pipelines/cli.py pipelines/config.py \
                    pipelines/errors.py pipelines/env.py)
DEMO_SRC       := $(CORE_SRC) $(call src_under,pipelines/demo_data.py pipelines/demo/)
DATA_SRC       := $(call src_under,pipelines/data/ pipelines/resources/)
PREPROCESS_SRC := $(CORE_SRC) $(DATA_SRC) $(call src_under,pipelines/preprocess.py)
TRAIN_SRC      := $(CORE_SRC) $(DATA_SRC) $(call src_under,encoders/ pipelines/train.py pipelines/training/ \
                    pipelines/evaluate.py pipelines/evaluation/ pipelines/registry/)

.PHONY: help setup demo-data preprocess preprocess-xray preprocess-ecg preprocess-speech preprocess-reports \
        train-morE train-more train-MoRE train-speech evaluate report report-speech continual unlearn promote rollback serve \
        evidence mlflow-ui mlflow-server test lint format bench bench-preprocess bench-train-step bench-serving clean clean-data

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "}; /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(SETUP) ## create .venv and install pinned dependencies (+ espeak-ng, postgresql, chromium via apt when root)

$(SETUP): pyproject.toml scripts/ensure-espeak.sh
	@echo ">> creating $(VENV) and installing pinned dependencies (first time: a few minutes)"
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored: it is neither" || true
	set -o pipefail; $(PY) -m pip install -q -e '.[dev,scale]' 2>&1 | { grep -v "is ignored: it is neither" || true; }
	bash scripts/ensure-espeak.sh
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-chromium.sh
	touch $@

$(STAMPS):
	mkdir -p $@

demo-data: $(STAMPS)/demo-data ## synthesise the demo cohort (DICOM, WFDB, WAV, reports) under data/raw/demo
$(STAMPS)/demo-data: $(SETUP) configs/demo_data.yaml $(DEMO_SRC) | $(STAMPS)
	$(RUN) demo-data --config configs/demo_data.yaml $(DEMO_ARGS)
	touch $@

preprocess: preprocess-xray preprocess-ecg preprocess-speech preprocess-reports ## all preprocessing stages on the demo cohort

preprocess-xray: $(STAMPS)/preprocess-xray ## DICOM/PNG chest X-rays -> shards + manifest + rejections + data card
preprocess-ecg: $(STAMPS)/preprocess-ecg ## WFDB / DICOM ECGs -> shards + manifest + rejections + data card
preprocess-speech: $(STAMPS)/preprocess-speech ## WAV/FLAC/OGG speech -> shards + manifest + rejections + data card
preprocess-reports: $(STAMPS)/preprocess-reports ## reports -> sections, scrubbed text, rule labels

$(STAMPS)/preprocess-%: $(STAMPS)/demo-data configs/preprocess.yaml $(PREPROCESS_SRC)
	$(RUN) preprocess-$* --config configs/preprocess.yaml $(PREPROCESS_ARGS)
	touch $@

train-morE: $(STAMPS)/train-more ## the main job: setup, demo data, preprocess, train X-ray+ECG+report with CWCL, register
train-more: train-morE ## alias of train-morE
train-MoRE: train-morE ## alias of train-morE
$(STAMPS)/train-more: $(STAMPS)/preprocess-xray $(STAMPS)/preprocess-ecg $(STAMPS)/preprocess-reports \
                      configs/train_more.yaml configs/evaluate.yaml $(TRAIN_SRC)
	$(RUN) train-more --config configs/train_more.yaml $(ARGS)
	$(RUN) report --config configs/evaluate.yaml model_ref=latest
	touch $@

train-speech: $(STAMPS)/train-speech ## speech <-> transcript alignment with CWCL, register, intent zero-shot report
$(STAMPS)/train-speech: $(STAMPS)/preprocess-speech configs/train_speech.yaml configs/evaluate_speech.yaml $(TRAIN_SRC)
	$(RUN) train-speech --config configs/train_speech.yaml $(ARGS)
	$(RUN) report --config configs/evaluate_speech.yaml model_ref=latest
	touch $@

evaluate: $(SETUP) ## zero-shot evaluation of a model version (default: champion, else latest)
	$(RUN) evaluate --config configs/evaluate.yaml $(ARGS)

report: $(SETUP) ## evaluation + the self-contained HTML report under reports/
	$(RUN) report --config configs/evaluate.yaml $(ARGS)

report-speech: $(SETUP) ## the same for the speech model: zero-shot spoken intents (multi-class)
	$(RUN) report --config configs/evaluate_speech.yaml $(ARGS)

continual: $(SETUP) ## learn the demo task sequence from the champion with replay + distillation
	$(RUN) continual --config configs/continual.yaml $(ARGS)

unlearn: $(SETUP) ## remove subjects in FORGET=file (default: the demo's withdrawn.txt) from data, buffer, model; verify
	$(RUN) unlearn --config configs/unlearn.yaml forget_list=$(FORGET) $(ARGS)

promote: $(SETUP) ## gate a candidate against the champion and move aliases
	$(RUN) promote --config configs/promote.yaml $(ARGS)

rollback: $(SETUP) ## move champion back to previous
	$(RUN) rollback --config configs/promote.yaml $(ARGS)

mlflow-ui: $(SETUP) ## MLflow UI on 127.0.0.1:5000 against the local store
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

mlflow-server: $(SETUP) ## team MLflow server: PostgreSQL + basic auth on 127.0.0.1:5001, state and 0600 credentials in data/mlflow-server
	PY=$(PY) bash scripts/mlflow-server.sh $(ARGS)

lint: $(SETUP) ## ruff lint + format check
	$(VENV)/bin/ruff check pipelines encoders tests
	$(VENV)/bin/ruff format --check pipelines encoders tests

format: $(SETUP) ## apply ruff formatting and fixes
	$(VENV)/bin/ruff check --fix pipelines encoders tests
	$(VENV)/bin/ruff format pipelines encoders tests

test: $(SETUP) lint ## lint + the test suite (no tests collected counts as failure)
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: bench-preprocess bench-train-step bench-serving ## all benchmarks (ratios against baselines measured in the same run)

BENCH_PEERS = $(PY) -c "import open_clip, torchxrayvision, pyloudnorm" 2>/dev/null || $(PY) -m pip install -q -e '.[dev,scale,bench]'

bench-preprocess: $(SETUP) ## preprocessing files/s vs decode + its required processing (1 core), and torchxrayvision
	@$(BENCH_PEERS)
	$(PY) -m pipelines.bench.preprocess $(ARGS)
	$(PY) -m pipelines.bench.ray_executor modality=speech workers=2

bench-train-step: $(SETUP) ## training step vs open_clip's CLIP at equal sizes (fp32, bf16), GFLOP/s vs GEMM; losses vs ClipLoss
	@$(BENCH_PEERS)
	$(PY) -m pipelines.bench.train_step $(ARGS)

bench-serving: $(SETUP) ## served pyfunc: X-ray DICOM / ECG inputs/s (single, batched); mlflow models serve p50/p99 under 8 clients
	$(PY) -m pipelines.bench.serving $(ARGS)

clean-data: ## remove generated data, stamps, MLflow store and reports
	rm -rf data $(STAMPS) mlflow.db mlflow.db-wal mlflow.db-shm mlflow.db.*lock mlruns mlartifacts reports checkpoints

clean: clean-data ## also remove the virtual environment
	rm -rf $(VENV)

serve: $(SETUP) ## serve the champion on 127.0.0.1 (PORT=5001); requests carry file content, never server paths
	$(PY) -m pipelines.registry.serve --port $${PORT:-5001} $(ARGS)

evidence: $(SETUP) ## the pipeline on the real samples in ../shared/data (FSDD, CinC/WFDB ECGs, NIH, DICOMs)
	$(RUN) evidence --config configs/evidence.yaml $(ARGS)
