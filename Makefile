# The two commands of the README: `make run` and `make test`. Both set everything up first.
.PHONY: run test bench lint setup

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/genre-bot

# espeak-ng and sox synthesise the speech and noise clips some tests use; redis-server runs the
# fleet's work queue in tests/test_fleet_queue.py; postgresql the label store's tests.
test:
	@scripts/setup.sh espeak-ng sox redis-server postgresql
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python -m bench

lint: setup
	.venv/bin/ruff check .
