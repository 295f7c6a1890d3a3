# tritium: every target creates .venv and installs the project into it when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SIM    ?= verilator
WAVES  ?= 0
# With WAVES=1 let the benches print where each waveform went.
PYTEST_WAVES := $(if $(filter-out 0,$(WAVES)),-s,)

.PHONY: all install test sim bench clean

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

# The whole test suite: golden model, Amaranth-simulator unit tests and the cocotb benches.
test: $(STAMP)
	SIM=$(SIM) WAVES=$(WAVES) $(BIN)/python -m pytest $(PYTEST_WAVES) tests

# Only the cocotb benches (Verilator by default; SIM=icarus, WAVES=1 for one waveform per test).
sim: $(STAMP)
	SIM=$(SIM) WAVES=$(WAVES) $(BIN)/python -m pytest $(PYTEST_WAVES) tests/cocotb -m cocotb

# Benchmarks: JSON into bench/results/ (not timed tests).
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf build sim_build .pytest_cache
