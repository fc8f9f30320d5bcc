# The one list of commands. `make run` and `make test` set everything up themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV := CAMPAIGN_ENV=development

.PHONY: run test test-fast worker beat lint typecheck bench install clean translations

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Gettext catalogs (issue 5): .po files are the source, .mo files are built, never committed.
MO_FILES := $(patsubst %.po,%.mo,$(wildcard campaign/translations/*/LC_MESSAGES/messages.po))

%.mo: %.po $(STAMP)
	$(BIN)/pybabel compile --use-fuzzy -i $< -o $@

install: $(STAMP) $(MO_FILES)

## Re-extract the messages after changing supporter-facing strings, then translate the .po files.
translations: install
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext --no-location --omit-header -o campaign/translations/messages.pot .
	$(BIN)/pybabel update -i campaign/translations/messages.pot -d campaign/translations --no-location --omit-header

## Start the app on the embedded default: SQLite, a Celery worker on a filesystem broker,
## and a local SMTP sink readable at http://127.0.0.1:5000/dev/mailbox. Ctrl-C stops all.
run: install
	$(DEV) $(BIN)/flask --app app db upgrade
	$(DEV) $(BIN)/flask --app app seed-demo
	@$(DEV) $(BIN)/flask --app app demo-credentials
	@echo "Open http://127.0.0.1:5000/petitions/g20-chechnya  (emails: http://127.0.0.1:5000/dev/mailbox)"
	$(DEV) $(BIN)/honcho -f Procfile.dev start

## The whole suite, in parallel. Needs PostgreSQL and Redis on 127.0.0.1 and Debian's Chromium;
## without them those tests are skipped with a line saying so (and fail when CI=true).
# One worker more than cores: the integration tests spend most of their time waiting on workers,
# SMTP and the browser, so a third process keeps two cores busy.
test: install
	$(BIN)/python -m pytest -n $${PYTEST_WORKERS:-$$(( $$(nproc) + 1 ))} $(PYTEST_ARGS)

## Unit and web tests on SQLite only: no services needed.
test-fast: install
	$(BIN)/python -m pytest -n $${PYTEST_WORKERS:-auto} -m "not integration and not browser" $(PYTEST_ARGS)

## A worker or beat on their own, in development unless CAMPAIGN_ENV says otherwise.
worker: install
	CAMPAIGN_ENV=$${CAMPAIGN_ENV:-development} $(BIN)/celery -A worker worker --loglevel INFO

beat: install
	CAMPAIGN_ENV=$${CAMPAIGN_ENV:-development} $(BIN)/celery -A worker beat --loglevel INFO

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

## Benchmarks (about 15 minutes; never part of `make test`). Needs PostgreSQL and Redis on 127.0.0.1;
## figures print and go to bench/results/*.json. Each script runs alone too: bench/<name>.py --help.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP)
	$(BIN)/python bench/sign.py --clients 1,8,32,128 --seconds 15 --warmup 3
	$(BIN)/python bench/surge.py --rate 330 --seconds 60 --sample 300
	$(BIN)/python bench/page.py --rows 1000000 --seconds 15
	$(BIN)/python bench/reach.py --rows 1000000 --mail 5000 --suppressed 100
	@if [ -f bench/restore_drill.py ]; then $(BIN)/python bench/restore_drill.py; fi
	$(BIN)/python bench/letters.py --signatures 10000 --concurrency 4
	$(BIN)/python bench/letters_kill.py --letters 2000 --kills 3 --child-kills 1
	$(BIN)/python bench/mailings_pg_restart.py --every 25

## The fault suite (RELIABILITY.md A1-A12, B13-B19; about 45 minutes): workers killed, a private Redis
## stopped, PostgreSQL cut off through a proxy, an SMTP sink that refuses. Shared services are never stopped.
## Figures go to bench/results/faults-*.json and docs/reliability.md; bench/faults/<name>.py --help.
.PHONY: bench-faults
bench-faults: install
	$(BIN)/python bench/faults/run_all.py $(FAULTS_ARGS)

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache test-artifacts
