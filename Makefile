# Kronos Exec: the two commands are `make demo` and `make test` (see README.md).
# Everything installs into .venv from the project's own files; nothing else is assumed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXT_SRC := $(wildcard ext/*.pyx ext/*.pxd) setup.py pyproject.toml

# Debian packages the Cython core links against: ext/journalframe hashes
# journal records with libsodium's BLAKE2b and libdeflate's CRC-32.
DEBS   := libsodium-dev libdeflate-dev
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup debs build demo serve test test-fast bench bench-quick annotate debug clean

# Installed only when missing; apt's package lists are refreshed only if the
# first attempt cannot find them.
debs:
	@dpkg -s $(DEBS) >/dev/null 2>&1 || { \
	  echo "installing Debian packages: $(DEBS)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get install -y -q --no-install-recommends $(DEBS) || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $(DEBS); }; }

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=68" wheel "cython>=3.0.10" "numpy>=1.26"

$(STAMP): $(PY) pyproject.toml setup.py | debs
	$(PY) -m pip install --quiet --no-build-isolation -e '.[dev]'
	touch $(STAMP)

# Rebuild the Cython core in place whenever a .pyx/.pxd changes.
build: $(STAMP) $(EXT_SRC) | debs
	$(PY) setup.py --quiet build_ext --inplace

setup: build

demo: build
	$(VENV)/bin/kronos-exec demo

test: build
	$(PY) -m pytest -q

test-fast: build
	$(PY) -m pytest -q -x -m "not slow"

bench: build
	$(VENV)/bin/kronos-exec bench

bench-quick: build
	$(VENV)/bin/kronos-exec bench --quick

# HTML annotation (cython -a) of every core module: yellow lines call into Python.
annotate: $(STAMP)
	KRONOS_ANNOTATE=1 $(PY) setup.py --quiet build_ext --inplace --force
	@ls ext/*.html

# Bounds checks and line tracing on, for debugging and coverage of the core.
debug: $(STAMP)
	KRONOS_DEBUG=1 $(PY) setup.py --quiet build_ext --inplace --force

clean:
	rm -rf build ext/*.c ext/*.so ext/*.html *.egg-info
