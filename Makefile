# Quick start: `make run` (set up and run the relay), `make test` (set up and run the tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/relay.toml
# Exact versions with hashes, made by `make lock` from the ranges in pyproject.toml:
# requirements.lock is what the relay runs on (the container image installs it),
# requirements-dev.lock adds the test and lint tools at versions agreeing with it.
LOCK     := requirements.lock
DEV_LOCK := requirements-dev.lock
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --upgrade --generate-hashes --universal \
             --python-version 3.11

.PHONY: run test lint lock soak check-config bench bench-peer system-deps clean

# Plain pip installs the lock: no other tool is needed to install, only to lock.
$(STAMP): pyproject.toml $(DEV_LOCK)
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "relay needs Python 3.11+"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Without PROFOUND_API_KEY the relay delivers to a local `relay mock-upstream` it starts itself.
run: $(STAMP)
	$(BIN)/relay serve -c $(CONFIG) --with-mock-upstream

# Four pytest-xdist workers: most e2e tests wait on real processes and timers, not on the CPU,
# so even two cores run the suite in half the time (it is over 1,600 tests).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 4 --durations=15

# Long crash/outage soak tests, skipped in CI.
soak: $(STAMP)
	RELAY_SOAK=1 $(BIN)/python -m pytest -q -m soak

lint: $(STAMP)
	$(BIN)/ruff check relay tests
	$(BIN)/mypy relay

# Re-resolve every dependency to the newest release the ranges in pyproject.toml allow.
# The lock tool (uv) goes into the venv on demand; nothing needs it to install.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet 'uv>=0.4'
	$(UV_COMPILE) --extra test --extra dev -o $(DEV_LOCK)
	$(UV_COMPILE) --constraint $(DEV_LOCK) -o $(LOCK)

check-config: $(STAMP)
	$(BIN)/relay check-config -c $(CONFIG)

bench: $(STAMP)
	$(BIN)/relay bench

# The relay and the real Fluent Bit on the same load, turn about. The binary: FLUENT_BIT_BIN,
# else fluent-bit on PATH, else ../shared/peers/fluent-bit beside a development checkout.
PEER_BIN ?= $(or $(FLUENT_BIT_BIN),$(shell command -v fluent-bit),$(wildcard ../shared/peers/fluent-bit))
bench-peer: $(STAMP)
	FLUENT_BIT_BIN=$(PEER_BIN) $(BIN)/relay bench --peer fluent-bit

# Optional Debian packages for the tests that drive real shippers, haproxy for the
# scale-out test, and Chromium + ChromeDriver for the console's browser tests (as root; CI runs it).
system-deps:
	command -v syslog-ng >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends syslog-ng-core syslog-ng-mod-http >/dev/null; }
	command -v haproxy >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends haproxy >/dev/null; }
	command -v chromedriver >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }

clean:
	rm -rf $(VENV) data build *.egg-info
