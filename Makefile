# tritium: every target creates .venv and installs the project into it when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SIM    ?= verilator
WAVES  ?= 0
# With WAVES=1 let the benches print where each waveform went.
PYTEST_WAVES := $(if $(filter-out 0,$(WAVES)),-s,)

.PHONY: all install demo test sim formal bench model bitstream sweep clean

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

# The main job: the bundled model (models/tiny) writes text on the simulated device (the RTL
# device core in Verilator, built on first use), then prints where cycles, bytes and time went.
DEMO_PROMPT ?= The with statement
demo: $(STAMP)
	$(BIN)/tritium run models/tiny --device sim --prompt "$(DEMO_PROMPT)" --max-new-tokens 64 \
		--temperature 0.8 --top-k 40 --seed 1

# The whole test suite: golden model, Amaranth-simulator unit tests and the cocotb benches.
test: $(STAMP)
	SIM=$(SIM) WAVES=$(WAVES) $(BIN)/python -m pytest $(PYTEST_WAVES) tests

# Only the cocotb benches (Verilator by default; SIM=icarus, WAVES=1 for one waveform per test).
sim: $(STAMP)
	SIM=$(SIM) WAVES=$(WAVES) $(BIN)/python -m pytest $(PYTEST_WAVES) tests/cocotb -m cocotb

formal: $(STAMP)
	$(BIN)/python -m pytest tests/formal

# Benchmarks: JSON into bench/results/ (not timed tests).
bench: $(STAMP)
	$(BIN)/python -m bench

# A board's bitstream and report (tritium boards lists them): make bitstream BOARD=ulx3s-12f
BOARD ?= ulx3s-12f
bitstream: $(STAMP)
	$(BIN)/tritium build --board $(BOARD)

# Build BOARD at growing array shapes; the figures go to boards/sweeps/BOARD.json.
sweep: $(STAMP)
	$(BIN)/python -m boards.sweep --board $(BOARD)

# Retrain the bundled model from scratch (python -m train; about 17 minutes on 2 cores).
model: $(STAMP)
	$(BIN)/python -m train --out models/tiny

clean:
	rm -rf build sim_build .pytest_cache
