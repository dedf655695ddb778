# Every target creates (or refreshes) the virtualenv at .venv/ when it is missing or older than pyproject.toml.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
RUN_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_AUTH_MODE=disabled TOKENIZERS_PARALLELISM=false
PYTEST_ARGS ?=

.PHONY: demo serve test proto bench lint clean browser

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	@touch $(STAMP)

demo: $(STAMP)
	$(RUN_ENV) $(VENV)/bin/triptych demo

serve: $(STAMP)
	$(RUN_ENV) $(VENV)/bin/triptych serve

# tests/test_web_page.py drives Debian's Chromium: installed with apt when missing (as root, as CI runs).
# If that cannot happen the browser tests skip on a developer's machine and fail under CI=true.
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { if [ "$$(id -u)" = 0 ]; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else echo "not root: run 'sudo apt-get install -y chromium'"; false; fi; } \
	  || echo "warning: $(CHROMIUM) could not be installed: the browser tests will skip (fail under CI=true)" >&2

test: $(STAMP) browser
	$(RUN_ENV) $(PY) -m pytest $(PYTEST_ARGS)

proto: $(STAMP)
	$(PY) -m triptych.protogen

bench: $(STAMP)
	$(RUN_ENV) $(PY) -m benchmarks.chat --threads 1
	$(RUN_ENV) $(PY) -m benchmarks.text_to_image --threads 1
	$(RUN_ENV) $(PY) -m benchmarks.efficiency --threads 1
	$(RUN_ENV) $(PY) -m benchmarks.quality --threads 1

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache
