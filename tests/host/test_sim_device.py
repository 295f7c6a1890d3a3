"""``open_device("sim")``: the RTL device core in Verilator behind the same host API.

``linear`` must be exact against the golden model for M = 1 and M > rows, K and N that are not
multiples of the array, K = 16384 at the extremes, resident and streamed weights; the device's
own cycle counters must equal the cycle model; and the same requests give the same answers as
the emulator (see also tests/rtl/test_core_verilator.py for the byte-level comparison).

Every test runs on the core twice: with the generic PE (the default ``sim`` device) and as ECP5
boards build it, its PEs on the carry cells (``pe_adder="ccu2c"``, yosys' model of ``CCU2C`` in
Verilator), so the netlist ECP5 bitstreams are made from runs whole layers too (tests/formal
proves one such PE).
"""

import numpy as np
import pytest

from host import open_device
from sim import cycles, numerics, schedule
from sim.cocotb_runner import tool_missing

SIM_CONFIG = dict(rows=3, cols=4, weight_words=2048, act_bytes=20000, result_rows=512,
                  max_payload=512)


@pytest.fixture(scope="module", params=["generic", "ccu2c"])
def dev(request):
    missing = tool_missing("verilator")
    if missing:
        pytest.skip(missing)
    with open_device("sim", progress=lambda msg: None, pe_adder=request.param,
                     **SIM_CONFIG) as d:
        yield d


def _layer(rng, M, N, K, extreme=None):
    if extreme is None:
        w = rng.integers(-1, 2, (N, K)).astype(np.int8)
        x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    else:
        wv, xv = extreme
        w = np.full((N, K), wv, dtype=np.int8)
        x = np.full((M, K), xv, dtype=np.int8)
    return w, x


@pytest.mark.parametrize("M,N,K", [(1, 13, 700), (5, 12, 255), (4, 29, 257), (1, 1, 1)])
def test_linear_exact_and_counters(dev, M, N, K):
    rng = np.random.default_rng(M * 7 + N * 13 + K)
    w, x = _layer(rng, M, N, K)
    before = dev.stats
    h = dev.load(w)
    y = dev.linear(h, x)
    assert np.array_equal(y, numerics.ternary_matmul(w, x))
    after = dev.stats
    plan = schedule.plan_linear(schedule.ArrayConfig(SIM_CONFIG["rows"], SIM_CONFIG["cols"]),
                                M, N, K, mapping="outputs")
    busy = after["busy"] - before["busy"]
    total = busy + sum(after[k] - before[k] for k in ("stall_input", "stall_drain",
                                                      "drain_tail"))
    assert busy == sum(plan.lengths)
    assert total == cycles.plan_cycles(plan)
    dev.free(h)


@pytest.mark.parametrize("extreme", [(-1, -128), (1, -128), (1, 127), (-1, 127)])
def test_k16384_extremes(dev, extreme):
    rng = np.random.default_rng(1)
    w, x = _layer(rng, 1, 5, 16384, extreme)
    y = dev.linear(w, x)        # 5 outputs x 16384: 16384 words, more than the memory holds
    assert np.array_equal(y, numerics.ternary_matmul(w, x))
    assert abs(int(y[0, 0])) == (128 if extreme[1] == -128 else 127) * 16384


def test_streamed_layer_matches_emulator(dev):
    """A layer larger than the weight memory streams through it; emu and sim agree exactly."""
    rng = np.random.default_rng(2)
    w, x = _layer(rng, 3, 40, 600)        # 4 tiles x 600 = 2400 words > 2048
    y_sim = dev.linear(w, x)
    with open_device("emu", **SIM_CONFIG) as emu:
        y_emu = emu.linear(w, x)
    assert np.array_equal(y_sim, y_emu)
    assert np.array_equal(y_sim, numerics.ternary_matmul(w, x))


def test_programs_load_into_a_core_of_one_byte_words():
    """``WRITE_PROGRAM`` on a 2x2 core, the iCE40 boards' array, whose weight word is one base3
    byte. The byte counter it shares with ``WRITE_WEIGHTS`` was sized for the weight word (one
    bit here), never reached an instruction's fourth byte, and so wrote nothing while answering
    OK. A program that fails and one that halts, loaded in turn at the same address, tell
    whether each write landed."""
    from firmware.asm import assemble
    from firmware.programs import FIRMWARE
    from host.device import DeviceError
    missing = tool_missing("verilator")
    if missing:
        pytest.skip(missing)
    fails, halts = (assemble(f"entry: {op}", base=len(FIRMWARE)) for op in ("FAIL", "HALT"))
    with open_device("sim", rows=2, cols=2, progress=lambda msg: None) as small:
        for _ in range(2):
            small.load_program(fails.words, at=fails.base)
            with pytest.raises(DeviceError, match="BAD_ARGUMENT"):
                small.run_program(fails.labels["entry"])
            small.load_program(halts.words, at=halts.base)
            small.run_program(halts.labels["entry"])
        w = np.random.default_rng(3).integers(-1, 2, (5, 9)).astype(np.int8)
        x = np.random.default_rng(4).integers(-128, 128, (2, 9)).astype(np.int8)
        assert np.array_equal(small.linear(w, x), numerics.ternary_matmul(w, x))
