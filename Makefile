# The README's commands. Each target sets up .venv by itself on first use.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTHON ?= python3
TORCH_VERSION := 2.13.0

export PATH := $(BIN):$(PATH)
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: help venv run test test-all lint format dvc-deps lock clean mlflow-ui

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# requirements.lock pins every other package (make lock): a fresh install gets the tested versions
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: a CPU build unless a GPU is present (an unpinned torch pulls GBs of CUDA wheels)
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install -q torch==$(TORCH_VERSION); \
	else \
		$(BIN)/pip install -q torch==$(TORCH_VERSION)+cpu 2>/dev/null || \
		$(BIN)/pip install -q torch==$(TORCH_VERSION) --index-url https://download.pytorch.org/whl/cpu \
			--extra-index-url https://pypi.org/simple; \
	fi
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check  # a dependency added to pyproject.toml but not to the lock fails here: run make lock
	touch $@

venv: $(VENV)/.installed  ## create .venv with the project and its tools

run: venv  ## run the pipeline (dvc repro): the offline demo corpus and the quick profile by default (train.profile)
	dvc repro

test: venv  ## fast test suite (unit, data, small end-to-end)
	pytest -q

test-all: venv  ## every test, slow ones included
	pytest -q -m "slow or not slow"

lint: venv  ## ruff lint and format check
	ruff check .
	ruff format --check .

format: venv  ## apply ruff's fixes and formatting
	ruff check --fix .
	ruff format .

dvc-deps: venv  ## rewrite dvc.yaml's code deps to each stage's import closure (tests/unit/imports.py)
	python -m tests.unit.imports

lock: venv  ## re-resolve requirements.lock from pyproject.toml, keeping its pins (UPGRADE=1: newest; TORCH_WHEELS=DIR: offline torch)
	$(BIN)/pip install -q uv
	# torch is installed by the recipe above; its CPU build (--torch-backend cpu, or a +cpu wheel in the
	# folder TORCH_WHEELS where download.pytorch.org cannot be reached) needs no CUDA packages
	uv pip compile pyproject.toml --extra dev --no-emit-package torch \
		$(if $(TORCH_WHEELS),--find-links $(TORCH_WHEELS),--torch-backend cpu) --python-version 3.11 \
		--custom-compile-command "make lock" $(if $(UPGRADE),--upgrade) -o requirements.lock
	@! grep -E '^(nvidia-|cuda-|triton)' requirements.lock || { echo "error: requirements.lock pins CUDA packages"; exit 1; }

clean:  ## remove the virtual environment
	rm -rf $(VENV)

mlflow-ui: venv  ## MLflow UI on http://127.0.0.1:5000 over the pipeline's store
	mkdir -p mlflow/artifacts
	mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(CURDIR)/mlflow/mlflow.db \
		--default-artifact-root $(CURDIR)/mlflow/artifacts

.PHONY: prefect-ui flows
PREFECT_PORT ?= 4200

prefect-ui: venv  ## Prefect server and UI on http://127.0.0.1:4200 (deployments, runs, schedules, artifacts)
	PREFECT_UI_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

flows: venv  ## serve the deployments (retrain on its schedule, evaluate, predict-batch) to the Prefect server
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PREFECT_PORT)/api} SER_PROJECT_DIR=$(CURDIR) \
		python -m flows.deploy

.PHONY: serve app
# the champion of params.yaml's tracking.model_name; override with SERVE_MODEL=models:/<name>/<version>
SERVE_MODEL ?= models:/$(shell python -c "import yaml; print(yaml.safe_load(open('params.yaml'))['tracking']['model_name'])")@champion
SERVE_PORT ?= 5001
SERVE_CONFIG ?=  # JSON model_config overrides, e.g. {"allow_paths": true, "max_audio_dur": 60}
APP_PORT ?= 8501
STORE := $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow/mlflow.db}

serve: venv  ## REST API of the champion: POST base64 WAV to http://127.0.0.1:5001/invocations
	MLFLOW_TRACKING_URI=$(STORE) $(if $(strip $(SERVE_CONFIG)),SERVING_MODEL_CONFIG='$(strip $(SERVE_CONFIG))') \
		mlflow models serve -m $(SERVE_MODEL) --env-manager local --host 127.0.0.1 --port $(SERVE_PORT)

app: venv  ## web demo on http://127.0.0.1:8501: upload or record a clip, see the emotion and the model
	MLFLOW_TRACKING_URI=$(STORE) streamlit run app/demo.py --server.address 127.0.0.1 \
		--server.port $(APP_PORT) --server.headless true --browser.gatherUsageStats false --client.toolbarMode viewer

.PHONY: prefect-yaml
prefect-yaml: venv  ## regenerate prefect.yaml from the deployment table in flows/deploy.py (after editing retrain.schedule)
	python -m flows.deploy --write-prefect-yaml
