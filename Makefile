# The two commands of the README. Both create .venv on first use and reinstall only when
# pyproject.toml changed (the stamp file records the last install), so a second run installs
# nothing. The package is installed editable: code changes need no reinstall.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.s2i-bench-installed

.PHONY: demo test lint bench clean-demo demo-reference

demo: $(STAMP)
	$(BIN)/s2i-bench demo

test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
		echo "note: the labelling page's browser tests need Chromium: apt-get install -y chromium chromium-driver (skipped until then; CI installs it)"
	$(BIN)/python -m pytest -q

# ruff comes with the test extra; the rules are in pyproject.toml ([tool.ruff]). CI runs it before the tests.
lint: $(STAMP)
	$(BIN)/ruff check s2i_bench baselines benchmarks examples tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	touch $(STAMP)

# The committed study (results/demo/) changes only here, on purpose: copy the finished
# demo-work/report over it.
demo-reference: $(STAMP)
	$(BIN)/s2i-bench demo --update-reference

clean-demo:
	rm -rf demo-work
