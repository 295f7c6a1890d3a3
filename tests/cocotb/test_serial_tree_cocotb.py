"""cocotb benches of the digit-serial tree engine (``rtl.serial_tree.SerialTreeEngine``), one
build per shape.

Verilator by default; ``SIM=icarus`` selects Icarus, ``WAVES=1`` records a waveform per test.
"""

import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.accumulator import result_row_layout
from rtl.serial_tree import SerialTreeEngine, serial_beat_layout
from sim.cocotb_runner import run_bench


class ReadyPorts(wiring.Component):
    """A serial engine without back-pressure behind streams with ``ready`` ports: Amaranth
    does not make a top-level port of an ``always_ready`` stream's constant ``ready``. The
    beat's ``ready`` is 1; the result's is not read (the bench takes every row as it comes)."""

    def __init__(self, engine: SerialTreeEngine):
        self.engine = engine
        cfg = engine.config
        super().__init__({
            "beat": In(stream.Signature(serial_beat_layout(cfg))),
            "result": Out(stream.Signature(result_row_layout(cfg.lanes, cfg.acc_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self.engine
        m.d.comb += [engine.beat.valid.eq(self.beat.valid),
                     engine.beat.payload.eq(self.beat.payload), self.beat.ready.eq(1),
                     self.result.valid.eq(engine.result.valid),
                     self.result.payload.eq(engine.result.payload)]
        return m

# (k, lanes, digit_bits, backpressure): the smallest tree with two digits a step, a lane a
# beat with 1-bit digits (8 beats a slot), two lanes a beat, and the iCEBreaker's 32 x 4 with
# 2-bit digits; the last two also without back-pressure, as the device core builds them.
SHAPES = [
    (2, 2, 4, True),
    (4, 8, 1, True),
    (8, 8, 2, True),
    (32, 4, 2, True),
    (8, 8, 2, False),
    (32, 4, 2, False),
]
TESTCASES = ["random_layers", "short_passes", "extremes", "full_rate"]


@pytest.mark.cocotb
@pytest.mark.parametrize("testcase", TESTCASES)
@pytest.mark.parametrize("k,lanes,digit_bits,backpressure", SHAPES, ids=lambda v: str(v))
def test_serial_tree_engine(simulator, k, lanes, digit_bits, backpressure, testcase):
    """One cocotb test per pytest test, so that WAVES=1 gives one waveform each."""
    config = {
        "k": k, "lanes": lanes, "digit_bits": digit_bits, "backpressure": backpressure,
        "acc_width": 32,
        "seed": 100 * k + 10 * lanes + digit_bits, "layers": 4, "extreme_k": 4096,
        "full_rate_k": 1000, "min_utilization": 0.9,
    }
    def build():
        engine = SerialTreeEngine(k=k, lanes=lanes, digit_bits=digit_bits,
                                  backpressure=backpressure)
        return engine if backpressure else ReadyPorts(engine)
    result = run_bench(build,
                       name=f"serial_tree_{k}x{lanes}_d{digit_bits}"
                            f"{'' if backpressure else '_free'}",
                       test_module="sim.tb_serial_tree", config=config, testcase=testcase)
    assert result.tests == 1, f"ran {result.tests} tests, see {result.log}"
    assert result.failed == 0, f"{result.failed} cocotb test(s) failed, see {result.log}"
