# Two commands do all the set-up: `make demo` (run the app) and `make test` (run the tests).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_ENV := VERCEL_API_URL=http://127.0.0.1:8765 VERCEL_CLIENT_SECRET=demo-webhook-secret \
	ROTATION_EXPIRE_SAFETY_DELAY_MINUTES=0 \
	VERCEL_OIDC_JWKS_URL=http://127.0.0.1:8765/.well-known/jwks \
	VERCEL_OIDC_ISSUER=http://127.0.0.1:8765 VERCEL_CLIENT_ID=demo-client

.PHONY: demo test lint format check install clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The app with demo data, the local Vercel stand-in and a qcluster worker; Ctrl-C stops all.
demo: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	@echo "Admin: http://127.0.0.1:8000/admin/   Vercel stand-in: http://127.0.0.1:8765/"
	@$(DEMO_ENV) bash -c 'trap "kill 0" INT TERM EXIT; \
		$(BIN)/python manage.py fake_vercel --port 8765 $(FAKE_VERCEL_OPTIONS) & \
		$(BIN)/python manage.py qcluster & \
		$(BIN)/python manage.py runserver 127.0.0.1:8000 & \
		wait'

# The browser tests drive Debian's chromium: install it where it is missing (apt as root,
# else Playwright's own build, which the tests then use).
browser: $(STAMP)
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		$(BIN)/playwright install chromium; \
	fi

# The whole test suite on the database DATABASE_URL names (SQLite when unset).
test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python manage.py check
	$(BIN)/python manage.py makemigrations --check --dry-run

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) db.sqlite3 db.sqlite3-* var staticfiles artifacts .pytest_cache .ruff_cache
