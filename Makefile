# Quick start: `make run` (set up and run the relay), `make test` (set up and run the tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/relay.toml

.PHONY: run test soak check-config bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "relay needs Python 3.11+"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Without PROFOUND_API_KEY the relay delivers to a local `relay mock-upstream` it starts itself.
run: $(STAMP)
	$(BIN)/relay serve -c $(CONFIG) --with-mock-upstream

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Long crash/outage soak tests, skipped in CI.
soak: $(STAMP)
	RELAY_SOAK=1 $(BIN)/python -m pytest -q -m soak

check-config: $(STAMP)
	$(BIN)/relay check-config -c $(CONFIG)

bench: $(STAMP)
	$(BIN)/relay bench

# Optional Debian packages for the tests that drive real shippers, and haproxy for the
# scale-out test (as root; CI runs it).
system-deps:
	command -v syslog-ng >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends syslog-ng-core syslog-ng-mod-http >/dev/null; }
	command -v haproxy >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends haproxy >/dev/null; }

clean:
	rm -rf $(VENV) data build *.egg-info
