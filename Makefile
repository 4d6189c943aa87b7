# Two entry points: `make demo` (the main job on the embedded digits data) and `make test`.
# Both create the virtual environment on first use; `make test` also installs the Debian
# packages the tests need (tools/install-system-packages), so a fresh machine needs only Python
# and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck check install system-packages clean

$(BIN)/conun: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,timm,hf,ray]"
	touch $(BIN)/conun

install: $(BIN)/conun

demo: install
	$(BIN)/conun demo --out runs/demo --force

system-packages:
	@sh tools/install-system-packages

test: install system-packages
	$(BIN)/python -m pytest -q -n auto --dist loadfile

lint: install
	$(BIN)/ruff check src tests experiments
	$(BIN)/ruff format --check src tests experiments

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
