# Two commands set everything up on a fresh machine (Python 3.11, no GPU, no Fortran compiler):
#   make test   - create .venv if missing, install, run pytest (unit tests + nbval over book/)
#   make book   - create .venv if missing, install, build the HTML book into _build/html
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP  := $(VENV)/.installed
VENDOR := _build/vendor

.PHONY: test book setup clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -r requirements.txt
	$(PIP) --no-deps escnn==1.0.11
	$(PIP) --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	GFLOWS_PROFILE=quick $(PY) -m pytest -n auto --dist loadfile   # every core; a notebook stays on one worker

book: $(STAMP)
	$(PY) book/_tools/vendor.py $(VENDOR)   # MathJax & co. from npm, served by the book itself
	$(VENV)/bin/jupyter-book build --all --warningiserror --keep-going .
	@echo "book written to _build/html/index.html"

clean:
	rm -rf _build
