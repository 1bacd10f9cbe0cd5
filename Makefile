# abcscribe: the two entry points are `make demo` and `make test`; both set up what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
SYSPKGS = abcmidi abcm2ps musescore3 fluidsynth timgm6mb-soundfont fluid-soundfont-gm csound-soundfont

.PHONY: setup sysdeps test test-fast demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(MAKE) --no-print-directory sysdeps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	@# torchcrepe depends on torchaudio, and pip may pick a torchaudio built for another torch;
	@# a torchaudio that cannot load breaks transformers' processors. abcscribe never needs it
	@# (torchcrepe is imported without it), so such a build is removed.
	$(BIN)/python -c "import torchaudio" 2>/dev/null || $(BIN)/python -m pip uninstall -y -q torchaudio
	touch $@

# abcmidi (round-trip tests), fluidsynth + GM soundfonts (render; the demo trains with TimGM6mb and
# sf_GMbank, and tests with FluidR3_GM); installed when we are root
# and apt is there, otherwise left to the user (the tests that need them say so).
sysdeps:
	@if command -v abc2midi >/dev/null && command -v fluidsynth >/dev/null && command -v abcm2ps >/dev/null && command -v mscore3 >/dev/null \
	    && [ -e /usr/share/sounds/sf2/TimGM6mb.sf2 ] && [ -e /usr/share/sounds/sf2/FluidR3_GM.sf2 ] && [ -e /usr/share/sounds/sf2/sf_GMbank.sf2 ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $(SYSPKGS)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSPKGS) >/dev/null; \
	else echo "note: install $(SYSPKGS) for the full test suite"; fi

# two workers (pytest-xdist), each test file on one of them (module fixtures built once)
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"

# two steps at a time (make -j): single-process steps (rendering, scoring, the baseline, most
# transcriptions) overlap instead of leaving a core idle; sft, ppo and embed use both anyway
DEMO_JOBS ?= 2
demo: setup
	$(MAKE) -C examples demo -j$(DEMO_JOBS) ABCSCRIBE=$(abspath $(BIN))/abcscribe PYTHON=$(abspath $(BIN))/python

bench: setup
	$(BIN)/python examples/bench/run_all.py

clean:
	rm -rf $(VENV) examples/runs .pytest_cache
