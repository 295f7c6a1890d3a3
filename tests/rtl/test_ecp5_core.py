"""The device core as ECP5 boards build it: PEs on the carry cells (``TernaryPE(adder="ccu2c")``),
simulated in Verilator with yosys' own model of ``CCU2C`` (``sim.verilator_device``).

tests/formal proves one such PE equal to the naive model; this runs the netlist the bitstream
is made from (the array's inverted activation per row, every PE's carry chain, the drain) on
whole layers and checks the results against the golden model and the cycle counters against the
cycle model, which must not care which adder the PEs use.
"""

import numpy as np
import pytest

from host import open_device
from sim import numerics
from sim.cocotb_runner import tool_missing


@pytest.fixture(scope="module", params=[(2, 4), (4, 4)], ids=lambda s: f"{s[0]}x{s[1]}")
def device(request):
    missing = tool_missing("verilator")
    if missing:
        pytest.skip(missing)
    rows, cols = request.param
    with open_device("sim", rows=rows, cols=cols, pe_adder="ccu2c", weight_words=2048,
                     act_bytes=4096, result_rows=256, progress=lambda msg: None) as dev:
        yield dev


@pytest.mark.parametrize("M,N,K", [(1, 21, 700), (3, 16, 255), (2, 5, 1)])
def test_random_layers_are_exact_and_take_the_modelled_cycles(device, M, N, K):
    rng = np.random.default_rng(M * 10_000 + N * 1000 + K)
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    before = device.stats
    h = device.load(w)
    try:
        assert np.array_equal(device.linear(h, x), numerics.ternary_matmul(w, x))
    finally:
        device.free(h)
    after = device.stats
    counted = sum(after[n] - before[n]
                  for n in ("busy", "stall_input", "stall_drain", "drain_tail"))
    assert counted == after["model_cycles"] - before["model_cycles"] > 0


def test_extreme_sums_carry_through_every_bit(device):
    """A pass of 255 steps (the 16-bit partial sum's longest) at the activation's extremes:
    +-32,640 and +-32,385 reach the partial sum's top bits through every carry cell; the zero
    weights and mixed signs check the skip and the carry-in of subtraction."""
    K = numerics.max_exact_k(16)
    pes = device.info["rows"] * device.info["cols"]
    w = np.zeros((pes, K), dtype=np.int8)
    w[0::4] = 1
    w[1::4] = -1
    w[2::4, ::2] = -1                      # alternating -1 and 0
    w[3::4] = np.where(np.arange(K) % 3 == 0, 1, -1)
    h = device.load(w)
    try:
        for value in (-128, 127, -1):
            x = np.full((1, K), value, dtype=np.int8)
            assert np.array_equal(device.linear(h, x), numerics.ternary_matmul(w, x)), value
    finally:
        device.free(h)
