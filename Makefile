# paycell: the two commands that matter on a fresh machine are `make demo` and `make test`.
# Both create (or reuse) .venv, install paycell with its development tools, and make sure a
# PostgreSQL server binary (pg_ctl) is available for the tests that start their own server.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DB ?= demo.paycell.db

# python-alipay-sdk is imported as `alipay`, like the official SDK installed in the venv by
# the dev extras, so it gets a directory of its own; tests/alipay put it on the path of the
# subprocess that drives it.
ALIPAY_COMMUNITY_SDK := python-alipay-sdk==3.4.0
ALIPAY_COMMUNITY_DIR := $(VENV)/sdk-community

.PHONY: venv postgres alipay-sdks demo test lint bench clean

venv: $(STAMP)

# setup.py builds the one compiled module (src/paycell/core/_fastpath.c) into the source tree;
# a change to it installs again.
$(STAMP): pyproject.toml setup.py src/paycell/core/_fastpath.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@$(BIN)/python -c 'import paycell.core._fastpath' 2>/dev/null || echo "*** paycell.core._fastpath \
	was not built (no C compiler or Python headers?): the ledger runs its pure-Python path, \
	and make test fails on it. Run: $(BIN)/python -m pip install -v -e . to see why." >&2
	touch $(STAMP)

alipay-sdks: venv
	test -f $(ALIPAY_COMMUNITY_DIR)/alipay/__init__.py || \
		$(BIN)/python -m pip install --quiet --no-deps --target $(ALIPAY_COMMUNITY_DIR) \
		'$(ALIPAY_COMMUNITY_SDK)' < /dev/null

# PostgreSQL is a real server in the tests; install Debian's package when no pg_ctl is found.
postgres:
	@bash scripts/ensure-postgres.sh

# The demo starts from a fresh database each time.
demo: venv
	rm -f $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
	$(BIN)/paycell demo --database $(DEMO_DB)

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: venv postgres alipay-sdks lint
	$(BIN)/python -m pytest -n 2 tests

bench: venv postgres
	$(BIN)/paycell bench ledger

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
	rm -f src/paycell/core/_fastpath*.so
