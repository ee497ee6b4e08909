# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps demo test lint typecheck unit clean

install: $(STAMP)

# Reinstall only when the project's dependency list changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# Debian packages whose binaries the tests and benchmarks run (wrk: the collector load test;
# chromium: the report screenshot; docker-compose: validating docker-compose.yml;
# prometheus, prometheus-alertmanager: promtool and amtool check deploy/prometheus and
# deploy/alertmanager).
SYSTEM_PACKAGES ?= wrk chromium docker-compose prometheus prometheus-alertmanager
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Idempotent: asks apt only for the packages that are not installed yet.
system-deps:
	@missing=""; for pkg in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: install
	$(BIN)/xp demo

lint: install
	$(BIN)/ruff check pipeline schemas tests
	$(BIN)/ruff format --check pipeline schemas tests

typecheck: install
	$(BIN)/mypy

test: system-deps lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) .xp-data
