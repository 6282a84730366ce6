# The two set-up commands of the README: `make demo` and `make test`.
PY ?= python3

.PHONY: test demo install redis-server chromium bench

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# The dashboard's browser tests drive Debian's Chromium through Playwright
# (never `playwright install`, which downloads a browser build).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

install:
	$(PY) -m pip install -q -e '.[test]'

# mypy --strict first: the package is kept at 0 errors ([tool.mypy] in pyproject.toml).
# The default suite (everything not marked slow, under 10 minutes) first,
# then the long soak and failover runs: CI runs both.
test: redis-server chromium install
	$(PY) -m mypy --strict taskmesh
	$(PY) -m pytest -m "not slow"
	$(PY) -m pytest -m slow

demo: redis-server install
	$(PY) -m taskmesh demo

bench: redis-server install
	$(PY) -m benchmarks
