"""``tritium sim-serve``: the simulated board (device core + UART, bit level) behind a
pseudo-terminal, driven through ``open_device("serial:<path>")`` like a real board."""

import os
import subprocess
import sys

import numpy as np
import pytest

from host import open_device
from host.protocol import encode_request
from firmware.commands import PROTOCOL_VERSION, Command
from sim import numerics
from sim.cocotb_runner import tool_missing


@pytest.fixture(scope="module")
def served():
    missing = tool_missing("verilator")
    if missing:
        pytest.skip(missing)
    proc = subprocess.Popen([sys.executable, "-m", "host.cli", "sim-serve", "--rows", "2",
                             "--cols", "3"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    path = proc.stdout.readline().strip()
    assert path.startswith("/dev/"), f"sim-serve printed {path!r}"
    yield path
    proc.terminate()
    proc.wait(timeout=10)


def test_linear_over_the_pty_is_exact(served):
    rng = np.random.default_rng(3)
    with open_device(f"serial:{served}", timeout=20) as dev:
        assert (dev.info["rows"], dev.info["cols"]) == (2, 3)
        for M, N, K in ((1, 7, 300), (4, 5, 513)):
            w = rng.integers(-1, 2, (N, K)).astype(np.int8)
            x = rng.integers(-128, 128, (M, K)).astype(np.int8)
            assert np.array_equal(dev.linear(w, x), numerics.ternary_matmul(w, x))
        stats = dev.stats
        assert stats["retries"] == 0 and stats["busy"] == 300 * 2 + 513 * 4


def test_garbage_on_the_line_then_a_valid_request(served):
    """Bytes of noise and a truncated frame on the serial line: the board still answers."""
    fd = os.open(served, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, bytes(range(0, 0xA5)) + encode_request(Command.INFO, 1)[:4])
    finally:
        os.close(fd)
    with open_device(f"serial:{served}", timeout=20, retries=5) as dev:
        assert dev.info["version"] == PROTOCOL_VERSION
