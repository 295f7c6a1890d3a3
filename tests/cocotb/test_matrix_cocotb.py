"""cocotb benches of the matrix engine (array + accumulator), one build per array shape.

Verilator by default; ``SIM=icarus`` selects Icarus, ``WAVES=1`` records a waveform per test.
"""

import pytest

from rtl.systolic import MatrixEngine
from sim.cocotb_runner import run_bench

# (rows, cols, psum_width): the shapes the issue asks for, plus non-square ones and a narrow
# partial sum that forces many chunks of K even for short layers.
SHAPES = [
    (1, 1, 16),
    (2, 3, 10),
    (4, 4, 16),
    (8, 8, 16),
    (16, 16, 16),
    (3, 8, 12),
]
TESTCASES = ["random_layers", "extremes", "full_rate"]


@pytest.mark.cocotb
@pytest.mark.parametrize("testcase", TESTCASES)
@pytest.mark.parametrize("rows,cols,psum_width", SHAPES, ids=lambda v: str(v))
def test_matrix_engine(simulator, rows, cols, psum_width, testcase):
    """One cocotb test per pytest test, so that WAVES=1 gives one waveform each."""
    config = {
        "rows": rows, "cols": cols, "psum_width": psum_width, "acc_width": 32,
        "seed": 1000 * rows + cols, "layers": 4, "extreme_k": 16384,
        # The goal: at least 90% of PE-cycles useful on a long stream at full rate.
        "min_utilization": 0.9,
        "full_rate_k": 2000,
    }
    name = f"matrix_{rows}x{cols}_p{psum_width}"
    result = run_bench(lambda: MatrixEngine(rows=rows, cols=cols, psum_width=psum_width),
                       name=name, test_module="sim.tb_matrix", config=config,
                       testcase=testcase)
    assert result.tests == 1, f"ran {result.tests} tests, see {result.log}"
    assert result.failed == 0, f"{result.failed} cocotb test(s) failed, see {result.log}"
