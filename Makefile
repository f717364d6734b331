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

.PHONY: venv demo demo-cli test test-all lint bench clean

venv:
	@bash scripts/ensure_venv.sh

# Shared example photo and clip for `make demo-cli` (used when ../shared is there).
REALFACES := ../shared/data/realfaces
DEMO_PHOTO := $(REALFACES)/p07_frontal_woman-smiling-aligned_p4d-zoe.jpg
DEMO_CLIP := $(REALFACES)/v01_man-expressions-greenscreen_lp-d0.mp4

demo: venv
	@echo "FHAvatar app (built-in default, nothing downloaded): open http://127.0.0.1:7860 (Ctrl+C to stop)."
	$(PY) app.py --host 127.0.0.1 --port 7860

# The command-line main job without a browser: a real photo + driving clip when the shared examples are there,
# else the packaged example photo (orbit + avatar.ply).
demo-cli: venv
	@if [ -d "$(REALFACES)" ]; then \
		$(PY) -m fhavatar "$(DEMO_PHOTO)" --driving "$(DEMO_CLIP)" --out $(OUT); \
	else \
		$(PY) -m fhavatar examples/astronaut.png --out $(OUT); \
	fi

test: venv
	@bash scripts/ensure_chromium.sh
	$(PY) -m pytest -q

# Also run the `slow` tests.
test-all: venv
	$(PY) -m pytest -q --runslow

lint: venv
	$(PY) -m ruff check fhavatar training tests benchmarks app.py

# Every benchmark script with cheap settings, < 10 minutes; writes benchmarks/RESULTS.md.
bench: venv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(OUT) .pytest_cache
