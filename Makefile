# Shortcuts; the README's two commands work without make.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint format bench clean

$(VENV)/bin/quantmesh: pyproject.toml
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -q -e '.[dev]'

run: $(VENV)/bin/quantmesh
	$(VENV)/bin/quantmesh run -c config/config.yaml

test: $(VENV)/bin/quantmesh
	$(VENV)/bin/pytest

lint: $(VENV)/bin/quantmesh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict quantmesh
	$(VENV)/bin/mypy tests bench
	$(VENV)/bin/lint-imports --no-cache

format: $(VENV)/bin/quantmesh
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(VENV)/bin/quantmesh
	$(PY) -m bench

clean:
	rm -rf data .pytest_cache .mypy_cache .ruff_cache
