# The two commands of the README. Both create and use the virtual environment in .venv/.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test setup lint

$(BIN)/workbench: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(BIN)/workbench

setup: $(BIN)/workbench

run: setup  ## the main job on the embedded defaults: demo data loaded, model trained, workbench started
	$(BIN)/workbench demo

test: lint  ## lint and type check, then the whole test suite, real model and real servers included
	bash scripts/system-deps.sh
	bash scripts/airflow-venv.sh
	$(BIN)/pytest

lint: setup  ## ruff on every Python folder, mypy on the library and the API (configured in pyproject.toml)
	$(BIN)/ruff check core api cli workbench pages dags tests bench
	$(BIN)/mypy
