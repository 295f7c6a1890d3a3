"""Shared fixtures of the cocotb benches."""

import pytest

from sim.cocotb_runner import selected_simulator, tool_missing


@pytest.fixture(scope="session")
def simulator():
    """The simulator chosen with SIM (Verilator by default); skips when it is not installed."""
    sim = selected_simulator()
    missing = tool_missing(sim)
    if missing:
        pytest.skip(missing)
    return sim
