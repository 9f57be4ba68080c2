# The two commands of the README: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test venv system-deps bench clean

# .venv takes about 4 GiB (torch, triton, onnxruntime, tritonserver) and pip unpacks its downloads in
# TMPDIR: check for room first, or a full disk shows up as pip's "Connection interrupted while downloading".
NEED_GIB ?= 5

# torch==2.13.0 goes in first and alone: it is the CPU build the machine's pip finds;
# any looser requirement resolved later would pull the CUDA build (GBs).
$(STAMP): pyproject.toml
	@for dir in "$(CURDIR)" "$${TMPDIR:-/tmp}"; do \
	  [ -d "$$dir" ] || { echo "error: $$dir (TMPDIR) is not a directory: create it, or point TMPDIR at one" >&2; \
	    exit 1; }; \
	  free=$$(df -Pk "$$dir" | awk 'NR == 2 { print int($$4 / 1048576) }'); \
	  [ "$$free" -ge $(NEED_GIB) ] || { echo "error: $$dir has $$free GiB free; building $(VENV) needs about" \
	    "$(NEED_GIB) GiB there: free some disk space, then run make again" >&2; exit 1; }; \
	done
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Headless Chromium and poppler for the report tests (Debian packages; needs root, as on CI).
system-deps:
	@command -v chromium >/dev/null && command -v pdftoppm >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium poppler-utils >/dev/null; }

demo: $(STAMP)
	$(VENV)/bin/edgeinfer demo

test: $(STAMP) system-deps
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info demo-output
