# Two commands on a fresh machine (Python 3.11, pip, Debian's apt):
#   make run    virtualenv + install + embedded Redis + gateway + worker
#   make test   the same install plus test dependencies, then pytest
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXAMPLE := examples/signed_webhook_channel
LINE_EXAMPLE := examples/line_channel
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(EXAMPLE)/pyproject.toml $(LINE_EXAMPLE)/pyproject.toml | sha1sum | cut -c1-12)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_UPDATED := /tmp/.complaint-gateway-apt-updated

.PHONY: run test bench bench-deps clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(EXAMPLE)/pyproject.toml $(LINE_EXAMPLE)/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,bench]"
	# the example external plugins, installed as an integrator's packages would be (their entry points)
	$(BIN)/python -m pip install -q --no-deps -e $(EXAMPLE)
	$(BIN)/python -m pip install -q --no-deps -e $(LINE_EXAMPLE)
	rm -f $(VENV)/.installed-* && touch $@

# Debian packages the gateway and its tests need; installed only when missing.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	[ -x /usr/sbin/dovecot ] || missing="$$missing dovecot-imapd"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	[ -f /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] || missing="$$missing fonts-noto-cjk"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  [ -f $(APT_UPDATED) ] || { $(SUDO) apt-get update -q && touch $(APT_UPDATED); }; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

run: $(STAMP) system-deps
	$(BIN)/python -m gateway run --host $${HOST:-127.0.0.1} --port $${PORT:-8000}

# the suite in PYTEST_WORKERS processes (pytest-xdist; 0 = in this one): its tests mostly wait on
# Redis, IMAP, browsers and subprocesses, so two keep two cores busy; a process that runs out of
# tests takes some of the other's (worksteal), so that the run does not end on one process's long tail
PYTEST_WORKERS ?= 2
test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# wrk, the closed-loop load generator bench/intake.py uses where it is installed (benchmarks only)
bench-deps:
	@command -v wrk >/dev/null 2>&1 || { \
	  [ -f $(APT_UPDATED) ] || { $(SUDO) apt-get update -q && touch $(APT_UPDATED); }; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends wrk; }

bench: $(STAMP) system-deps bench-deps
	$(BIN)/python bench/intake.py

clean:
	rm -rf $(VENV) var .pytest_cache
