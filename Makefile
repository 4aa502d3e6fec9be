# Two entry points, both self-sufficient on a fresh clone:
#   make demo   - create/refresh .venv, then predict a land-cover map of the shipped sample scene
#   make test   - create/refresh .venv, then run the test suite
# and for contributors (CI runs it before the tests):
#   make lint   - ruff (style, import order), mypy (types), import-linter (the layers of docs/design.md)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.geoseg-installed
DEMO_OUT ?= demo-output

.PHONY: demo test lint venv clean bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,lint]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m geoseg.demo $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check geoseg tests benchmarks workflows
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) benchmarks/predict_throughput.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
