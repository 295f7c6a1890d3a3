"""cocotb benches of the digit-serial tree engine (``rtl.serial_tree.SerialTreeEngine``), one
build per shape.

Verilator by default; ``SIM=icarus`` selects Icarus, ``WAVES=1`` records a waveform per test.
"""

import pytest

from rtl.serial_tree import SerialTreeEngine
from sim.cocotb_runner import run_bench

# (k, lanes, digit_bits): the smallest tree with two digits a step, a lane a beat with 1-bit
# digits (8 beats a slot), two lanes a beat, and the iCEBreaker's 32 x 4 with 2-bit digits.
SHAPES = [
    (2, 2, 4),
    (4, 8, 1),
    (8, 8, 2),
    (32, 4, 2),
]
TESTCASES = ["random_layers", "short_passes", "extremes", "full_rate"]


@pytest.mark.cocotb
@pytest.mark.parametrize("testcase", TESTCASES)
@pytest.mark.parametrize("k,lanes,digit_bits", SHAPES, ids=lambda v: str(v))
def test_serial_tree_engine(simulator, k, lanes, digit_bits, testcase):
    """One cocotb test per pytest test, so that WAVES=1 gives one waveform each."""
    config = {
        "k": k, "lanes": lanes, "digit_bits": digit_bits, "acc_width": 32,
        "seed": 100 * k + 10 * lanes + digit_bits, "layers": 4, "extreme_k": 4096,
        "full_rate_k": 1000, "min_utilization": 0.9,
    }
    result = run_bench(lambda: SerialTreeEngine(k=k, lanes=lanes, digit_bits=digit_bits),
                       name=f"serial_tree_{k}x{lanes}_d{digit_bits}",
                       test_module="sim.tb_serial_tree", config=config, testcase=testcase)
    assert result.tests == 1, f"ran {result.tests} tests, see {result.log}"
    assert result.failed == 0, f"{result.failed} cocotb test(s) failed, see {result.log}"
