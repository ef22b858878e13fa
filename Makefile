# xdr-responder: one-command set-up, demo, tests and benchmarks on a fresh Debian machine.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install browser demo test lint bench package clean

# Debian packages, as root or through sudo (a sudo user). `env` carries DEBIAN_FRONTEND through sudo
# (which resets the environment) and still works when SUDO is empty (as root): a bare `VAR=value`
# after an empty expansion would be taken as the command name (exit 127).
APT_INSTALL = if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

# Debian's python3 has no ensurepip (so no `python3 -m venv`) until python3-venv is installed.
$(PY):
	@python3 -c 'import ensurepip' 2>/dev/null || { $(APT_INSTALL) python3-venv >/dev/null; }
	python3 -m venv $(VENV)

$(STAMP): requirements.txt requirements-dev.txt package.json package-lock.json | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium renders the Teams cards (tests and demo). Debian's package; needs root or sudo.
browser:
	@command -v chromium >/dev/null || { $(APT_INSTALL) chromium >/dev/null; }

demo: install
	$(PY) -m responder demo

test: install browser
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) -m responder.bench --write BENCHMARKS.md

# The deployment zip (docs/deploy.md): the app and nothing else (.funcignore). Needs no venv.
PACKAGE ?= out/app.zip
package:
	python3 infra/scripts/package_app.py $(PACKAGE)

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache demo-output out
