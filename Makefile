# FHAvatar: `make demo` and `make test` are the two set-up commands (README.md).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# The checkout is put on the path rather than installed, so one cached environment serves every clone.
export PYTHONPATH := $(CURDIR)
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export GRADIO_ANALYTICS_ENABLED := False
OUT ?= out

.PHONY: venv demo test test-all lint bench clean

venv:
	@bash scripts/ensure_venv.sh

# A real photo + driving clip when the shared examples are there (photo -> avatar -> orbit + re-enactment),
# else the synthetic renderer demo.
REALFACES := ../shared/data/realfaces
DEMO_PHOTO := $(REALFACES)/p07_frontal_woman-smiling-aligned_p4d-zoe.jpg
DEMO_CLIP := $(REALFACES)/v01_man-expressions-greenscreen_lp-d0.mp4

demo: venv
	@if [ -d "$(REALFACES)" ]; then \
		$(PY) -m fhavatar "$(DEMO_PHOTO)" --driving "$(DEMO_CLIP)" --out $(OUT); \
	else \
		$(PY) -m fhavatar.demo --out $(OUT); \
	fi

test: venv
	@bash scripts/ensure_chromium.sh
	$(PY) -m pytest -q

# Also run the `slow` tests.
test-all: venv
	$(PY) -m pytest -q --runslow

lint: venv
	$(PY) -m ruff check fhavatar training tests benchmarks app.py

bench: venv
	$(PY) benchmarks/render_bench.py

clean:
	rm -rf $(OUT) .pytest_cache
