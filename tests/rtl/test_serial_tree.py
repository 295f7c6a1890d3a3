"""Tests of ``rtl.serial_tree`` besides its cocotb benches
(tests/cocotb/test_serial_tree_cocotb.py): parameter checks, a reset in the middle of a pass, and what synthesis makes of it."""

import gc
import warnings

import pytest
from amaranth.hdl import Fragment, UnusedElaboratable

from rtl.serial_tree import SerialTreeEngine, SerialTreeLane
from rtl.ternary_pe import Trit
from sim import schedule
from sim.schedule import TreeConfig


def test_serial_tree_engine_refuses_bad_parameters():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="multiple of the 4 digits"):
            SerialTreeEngine(k=4, lanes=6, digit_bits=2)
        with pytest.raises(ValueError, match="digit_bits"):
            SerialTreeEngine(k=4, lanes=6, digit_bits=3)
        with pytest.raises(ValueError, match="k must be a power of two"):
            SerialTreeEngine(k=6, lanes=4)
        with pytest.raises(ValueError, match="needs a TreeConfig with digit_bits"):
            SerialTreeLane(config=TreeConfig(k=4, lanes=1))
        gc.collect()


def test_serial_tree_engine_ports_follow_the_parameters():
    # 2 digits a step, so a beat carries 3 lanes' trits
    engine = SerialTreeEngine(k=8, lanes=6, digit_bits=4, acc_width=24)
    beat = engine.beat.payload.shape()
    assert beat["digits"].shape.length == 8 and beat["digits"].shape.elem_shape.width == 4
    assert beat["weights"].shape.length == 3 and beat["weights"].shape.elem_shape.length == 8
    assert engine.result.payload.shape()["data"].shape.length == 6
    assert engine.config.cycles_per_step == 2 and engine.config.pes == 48
    Fragment.get(engine, None)      # it elaborates


def test_without_backpressure_both_streams_are_always_ready():
    """The device core's engine: neither stream has a ``ready`` to wait on (the core's result
    buffer takes every row as it comes), and its timing model says so."""
    engine = SerialTreeEngine(k=4, lanes=4, digit_bits=2, backpressure=False)
    assert engine.beat.signature.always_ready and engine.result.signature.always_ready
    assert not engine.config.backpressure
    held = SerialTreeEngine(k=4, lanes=4)
    assert not held.beat.signature.always_ready and held.config.backpressure
    for e in (engine, held):
        Fragment.get(e, None)       # they elaborate


def _simulate(top, bench):
    from amaranth.sim import Simulator
    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_a_reset_in_the_middle_of_a_pass_clears_the_accumulators():
    """A pass is cut by a reset after a step's sum reached the accumulators; the next pass's
    results are its own sums alone (and the beat counter starts a slot again)."""
    from amaranth.hdl import Module, ResetInserter, Signal
    cfg = TreeConfig(k=4, lanes=4, digit_bits=2)
    rst = Signal()
    m = Module()
    m.submodules.dut = dut = ResetInserter(rst)(SerialTreeEngine(k=4, lanes=4, digit_bits=2))
    ones = [[1] * 4] * 4
    got = []

    async def slots(ctx, weights, acts, lasts):
        trits = schedule.np.array(weights, dtype=schedule.np.int8)
        for beat in schedule.serial_tree_beats(cfg, trits, schedule.np.array(acts, "int8"),
                                               lasts):
            for i, d in enumerate(beat.digits):
                ctx.set(dut.beat.payload.digits[i], int(d))
            for g, row in enumerate(beat.weights):
                for i, t in enumerate(row):
                    ctx.set(dut.beat.payload.weights[g][i], Trit(int(t) + 1))
            ctx.set(dut.beat.payload.step, beat.step)
            ctx.set(dut.beat.payload.last, beat.last)
            ctx.set(dut.beat.valid, 1)
            await ctx.tick()
        ctx.set(dut.beat.valid, 0)

    async def bench(ctx):
        ctx.set(dut.result.ready, 1)
        await slots(ctx, [ones, ones], [[100, 20, 3, 1], [9, 9, 9, 9]], [False, False])
        await ctx.tick().repeat(cfg.levels + 3)      # the steps' sums are in the accumulators
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        await slots(ctx, [ones], [[5, -6, 7, -128]], [True])
        for _ in range(3 * cfg.levels + 8):
            if ctx.get(dut.result.valid):
                got.append([ctx.get(dut.result.payload.data[lane]) for lane in range(4)])
            await ctx.tick()

    _simulate(m, bench)
    assert got == [[5 - 6 + 7 - 128] * 4]


@pytest.mark.synth
@pytest.mark.parametrize("family", ["ecp5", "ice40"])
def test_serial_tree_synthesis_has_no_multiplier_and_holds_a_step_of_trits_twice_less_a_group(
        family):
    """0 DSP blocks; kept as modules, every lane counts what a lane alone counts, and the
    engine's own flip-flops are the trits (a working step of ``k x lanes`` and the staged
    groups but the last, 2 bits each) and a handful of flags."""
    from rtl.synth import synthesize, synthesize_modules
    k, lanes, digit_bits = 8, 4, 2
    engine = lambda: SerialTreeEngine(k=k, lanes=lanes, digit_bits=digit_bits)  # noqa: E731
    flat = synthesize(engine(), family)
    assert flat["dsp"] == 0, flat["cells"]
    modules = synthesize_modules(engine(), family)
    cfg = TreeConfig(k=k, lanes=lanes, digit_bits=digit_bits)
    alone = synthesize(SerialTreeLane(config=cfg), family)
    assert sorted(modules) == ["top"] + [f"top.lane_{i}" for i in range(lanes)]
    for i in range(lanes):
        assert modules[f"top.lane_{i}"]["ff"] == alone["ff"], (modules, alone)
    # the pair level (k/2 sums of digit_bits + 2 bits, k/2 left-out ones), the upper levels
    # (2 x 5 and 1 x 6 bits; the ones not yet taken wait a level: 2, then 1), the Horner
    # register (act_bits + levels + 1), the accumulator and the result
    assert alone["ff"] == 4 * 4 + 4 + 2 * 5 + 2 + 6 + 1 + 12 + 2 * 32
    D = cfg.cycles_per_step
    trits = 2 * k * lanes + 2 * k * lanes * (D - 1) // D
    assert trits <= modules["top"]["ff"] <= trits + 4 * cfg.levels + 8
    # without back-pressure (the device core's) a lane has no result register
    free = synthesize(SerialTreeLane(config=cfg, held_result=False), family)
    assert free["ff"] == alone["ff"] - 32 and free["dsp"] == 0
