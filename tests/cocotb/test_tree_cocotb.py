"""cocotb benches of the adder-tree engine (``rtl.adder_tree.TreeEngine``), one build per shape.

Verilator by default; ``SIM=icarus`` selects Icarus, ``WAVES=1`` records a waveform per test.
The ``ccu2c`` shapes simulate the ECP5 build's pair adders with yosys' model of ``CCU2C``.
"""

import pytest

from rtl.adder_tree import TreeEngine
from rtl.synth import ecp5_carry_model
from sim.cocotb_runner import run_bench

# (k, lanes, adder, act_copies): the smallest tree (one pair, no upper level), odd lane counts,
# the 85F design's k = 32 with few lanes, and activations in several copies (rtl.fanout).
SHAPES = [
    (2, 1, "generic", 1),
    (4, 3, "generic", 3),
    (8, 5, "ccu2c", 2),
    (16, 2, "generic", 1),
    (32, 3, "ccu2c", 1),
]
TESTCASES = ["random_layers", "extremes", "full_rate"]


@pytest.mark.cocotb
@pytest.mark.parametrize("testcase", TESTCASES)
@pytest.mark.parametrize("k,lanes,adder,act_copies", SHAPES, ids=lambda v: str(v))
def test_tree_engine(simulator, k, lanes, adder, act_copies, testcase):
    """One cocotb test per pytest test, so that WAVES=1 gives one waveform each."""
    config = {
        "k": k, "lanes": lanes, "acc_width": 32, "seed": 100 * k + lanes, "layers": 4,
        "extreme_k": 16384, "full_rate_k": 2000, "min_utilization": 0.9,
        "act_copies": act_copies, "adder": adder,
    }
    result = run_bench(lambda: TreeEngine(k=k, lanes=lanes, adder=adder, act_copies=act_copies),
                       name=f"tree_{k}x{lanes}_{adder}_c{act_copies}", test_module="sim.tb_tree",
                       config=config, testcase=testcase,
                       models=ecp5_carry_model() if adder == "ccu2c" else "")
    assert result.tests == 1, f"ran {result.tests} tests, see {result.log}"
    assert result.failed == 0, f"{result.failed} cocotb test(s) failed, see {result.log}"
