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


def test_requests_sent_ahead_fit_the_uart_fifo(served):
    """The host sends requests ahead of their answers only as far as the UART's receive FIFO
    holds what arrives while the core is busy (host.plan.RequestPlanner.fits): over the bit
    level UART no byte is lost (no retry), and calls take fewer waits than requests."""
    rng = np.random.default_rng(4)
    with open_device(f"serial:{served}", timeout=20) as dev:
        assert dev.info["clock_hz"] == 8 * 3_000_000      # divisor 8 at the default baud
        for M, N, K in ((1, 12, 40), (1, 6, 128), (3, 13, 64), (1, 7, 300)):
            w = rng.integers(-1, 2, (N, K)).astype(np.int8)
            x = rng.integers(-128, 128, (M, K)).astype(np.int8)
            h = dev.load(w)
            before = dev.stats
            assert np.array_equal(dev.linear(h, x), numerics.ternary_matmul(w, x))
            after = dev.stats
            c = dev.planner.cost(M, N, K, resident=h.resident,
                                 scratch_words=dev.memory.largest()[1])
            assert after["waits"] - before["waits"] == c.waits
            assert after["frames"] - before["frames"] == c.frames
            dev.free(h)
        stats = dev.stats
        assert stats["retries"] == 0 and stats["timeouts"] == 0
        assert stats["waits"] < stats["frames"]


def test_garbage_on_the_line_then_a_valid_request(served):
    """Bytes of noise and a truncated frame on the serial line: the board still answers."""
    fd = os.open(served, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, bytes(range(0, 0xA5)) + encode_request(Command.INFO, 1)[:4])
    finally:
        os.close(fd)
    with open_device(f"serial:{served}", timeout=20, retries=5) as dev:
        assert dev.info["version"] == PROTOCOL_VERSION
