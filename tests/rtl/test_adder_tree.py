"""Tests of ``rtl.adder_tree`` besides its cocotb benches (tests/cocotb/test_tree_cocotb.py):
parameter checks, which lanes read which copy of the activations, and what synthesis makes of
it."""

import gc
import warnings

import pytest
from amaranth.hdl import Fragment, UnusedElaboratable

from rtl.adder_tree import TreeEngine, TreeLane, lane_groups
from rtl.ternary_pe import Trit
from sim.schedule import TreeConfig


async def _result_beats(ctx, dut, cycles: int) -> list[list[int]]:
    """The engine's result beats (its lanes' sums) over ``cycles`` cycles."""
    beats = []
    for _ in range(cycles):
        if ctx.get(dut.result.valid):
            beats.append([ctx.get(dut.result.payload.data[lane]) for lane in range(dut.lanes)])
        await ctx.tick()
    return beats


def _simulate(top, bench):
    from amaranth.sim import Simulator
    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_tree_engine_refuses_bad_parameters():
    # (a constructor that raises leaves an elaboratable behind: collected here, unwarned)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        for k in (1, 3, 12):
            with pytest.raises(ValueError, match="k must be a power of two"):
                TreeEngine(k=k, lanes=2)
        with pytest.raises(ValueError, match="lanes"):
            TreeEngine(k=4, lanes=0)
        with pytest.raises(ValueError, match="adder"):
            TreeEngine(k=4, lanes=2, adder="dsp")
        for copies in (0, 3):
            with pytest.raises(ValueError, match="act_copies"):
                TreeEngine(k=4, lanes=2, act_copies=copies)
        with pytest.raises(ValueError, match="acc_bits"):
            TreeLane(k=64, acc_width=14)
        gc.collect()


def test_tree_engine_ports_follow_the_parameters():
    engine = TreeEngine(k=8, lanes=5, act_width=6, acc_width=24)
    assert engine.act.payload.shape()["data"].shape.length == 1            # one copy ...
    assert engine.act.payload.shape()["data"].shape.elem_shape.length == 8  # ... of k
    assert engine.weights.payload.shape().length == 5               # one per lane ...
    assert engine.weights.payload.shape().elem_shape.length == 8    # ... of k trits each
    assert engine.result.payload.shape()["data"].shape.length == 5
    assert engine.config.latency == 4 and engine.config.pes == 40
    Fragment.get(engine, None)          # and it elaborates at these widths
    copied = TreeEngine(k=8, lanes=5, act_copies=2)
    assert copied.act.payload.shape()["data"].shape.length == 2             # copies ...
    assert copied.act.payload.shape()["data"].shape.elem_shape.length == 8  # ... of k
    Fragment.get(copied, None)
    # the ECP5 engine takes the activations' one's complements, and says so by the name
    ecp5 = TreeEngine(k=8, lanes=5, adder="ccu2c", act_copies=2)
    inverted = ecp5.act.payload.shape()
    assert "data" not in inverted.members and inverted["data_n"].shape.length == 2
    Fragment.get(ecp5, None)


def test_lane_groups_are_runs_of_adjacent_lanes_as_the_copies_feed_them():
    assert lane_groups(5, 2) == [range(0, 3), range(3, 5)]
    assert lane_groups(3, 2) == [range(0, 2), range(2, 3)]
    assert lane_groups(64, 8) == [range(8 * g, 8 * g + 8) for g in range(8)]
    for lanes in range(1, 12):
        for groups in range(1, lanes + 1):
            runs = lane_groups(lanes, groups)
            assert [lane for run in runs for lane in run] == list(range(lanes))
            assert all(lane * groups // lanes == c for c, run in enumerate(runs) for lane in run)


def test_each_lane_reads_its_own_copy_of_the_activations():
    """Copy c feeds lanes l with l * copies // lanes == c: 5 lanes, 2 copies, so lanes 0..2
    read copy 0 and lanes 3, 4 copy 1. Each copy gets different activations (a producer
    never does this), so each lane's result says which copy it added. One pass of one step,
    each lane's first trit +1 and its second -1: lane l adds x0 - x1. (Generic adders: the
    ``ccu2c`` ones are instances that Amaranth's simulator cannot run; their lanes take the
    copy and its inverse by the same index.)"""
    k, lanes, copies = 2, 5, 2
    dut = TreeEngine(k=k, lanes=lanes, act_copies=copies)
    acts = [(7, 3), (-20, 5)]
    expected = [acts[lane * copies // lanes][0] - acts[lane * copies // lanes][1]
                for lane in range(lanes)]
    assert expected == [4, 4, 4, -25, -25]
    got = []

    async def bench(ctx):
        for c, (x0, x1) in enumerate(acts):
            ctx.set(dut.act.payload.data[c][0], x0)
            ctx.set(dut.act.payload.data[c][1], x1)
        for lane in range(lanes):
            ctx.set(dut.weights.payload[lane][0], Trit.POS)
            ctx.set(dut.weights.payload[lane][1], Trit.NEG)
        ctx.set(dut.act.payload.last, 1)
        ctx.set(dut.act.valid, 1)
        ctx.set(dut.weights.valid, 1)
        await ctx.tick()
        ctx.set(dut.act.valid, 0)
        ctx.set(dut.weights.valid, 0)
        ctx.set(dut.result.ready, 1)
        got.extend(await _result_beats(ctx, dut, 2 * TreeConfig(k=k, lanes=lanes).latency + 2))

    _simulate(dut, bench)
    assert got == [expected]


@pytest.mark.synth
@pytest.mark.parametrize("family", ["ecp5", "ice40"])
def test_tree_engine_synthesis_has_no_multiplier_and_lanes_cost_alike(family):
    """0 DSP blocks; kept as modules, every lane counts what a lane alone counts, and the
    engine's own logic (the flags' pipeline and the handshake) is a handful of cells."""
    from rtl.synth import synthesize, synthesize_modules
    k, lanes = 8, 3
    flat = synthesize(TreeEngine(k=k, lanes=lanes), family)
    assert flat["dsp"] == 0, flat["cells"]
    modules = synthesize_modules(TreeEngine(k=k, lanes=lanes), family)
    alone = synthesize(TreeLane(k=k), family)
    assert sorted(modules) == ["top"] + [f"top.lane_{i}" for i in range(lanes)]
    for i in range(lanes):
        assert modules[f"top.lane_{i}"]["ff"] == alone["ff"], (modules, alone)
    # the pair level (k/2 sums of 9 bits and k/2 left-out ones), the upper levels (2 x 10,
    # 1 x 11 bits; each adder takes a one, the others wait a level: 2 bits, then 1), the
    # register to the accumulator (11 bits and the last one), the accumulator and the result:
    # nothing per product besides
    assert alone["ff"] == 4 * 9 + 4 + 2 * 10 + 2 + 11 + 1 + 11 + 1 + 2 * 32
    # the engine's own: the step and last flags a register each per cycle of latency, the
    # lanes' copies of them (one group of lanes: one copy a level), the pending flag and the
    # result's valid
    assert modules["top"]["ff"] <= 4 * TreeConfig(k=k, lanes=lanes).latency + 2


@pytest.mark.synth
def test_ecp5_pair_level_holds_the_second_operand_in_the_carry_cells():
    """``adder="ccu2c"``: the same carry cells as the generic pair adder, and the second
    product's operand logic gone into them. ABC packs the generic pair's two operands and
    carry-in differently with the tree around it: the ECP5 adder saves 5 LUT4 a pair here
    (16 x 2) and 7 at 32 x 4."""
    from rtl.synth import synthesize
    k, lanes = 16, 2
    generic = synthesize(TreeEngine(k=k, lanes=lanes), "ecp5")
    cells = synthesize(TreeEngine(k=k, lanes=lanes, adder="ccu2c"), "ecp5")
    pairs = k // 2 * lanes
    assert cells["ff"] == generic["ff"] and cells["dsp"] == 0
    assert cells["carry"] <= generic["carry"] + pairs, (cells, generic)
    assert cells["lut4"] <= generic["lut4"] - 4 * pairs, (cells, generic)


@pytest.mark.synth
@pytest.mark.parametrize("k", [16, 32])
def test_ecp5_lane_is_its_first_operands_plus_carry_chains(k):
    """A lane's LUT4s outside its carry cells are the first operands' (one per bit) and a few
    for the accumulator's controls: the left-out ones ride the adders' carry-ins rather than
    being counted and added (a count and its add took 94 LUT4 more at k = 32)."""
    from rtl.synth import synthesize
    lane = synthesize(TreeLane(k=k, adder="ccu2c"), "ecp5")
    assert k // 2 * 8 <= lane["lut4"] <= k // 2 * 8 + 24, lane


def test_a_reset_in_the_middle_of_a_pass_clears_the_accumulators():
    """The lanes' accumulators have no reset of their own: the engine's copies of
    ``capture`` hold them clear in a reset (``TreeEngine._lane_flags``). A pass is cut by a
    reset after its partial sums reached the accumulators; the next pass's results are its
    own sums alone. Three groups of lanes, so every level of the flags' fan-out is there."""
    from amaranth.hdl import Module, ResetInserter, Signal
    k, lanes = 4, 3
    rst = Signal()
    m = Module()
    m.submodules.dut = dut = ResetInserter(rst)(TreeEngine(k=k, lanes=lanes, act_copies=3))
    latency = TreeConfig(k=k, lanes=lanes).latency
    got = []

    async def step(ctx, acts, last):
        for c in range(3):
            for i, x in enumerate(acts):
                ctx.set(dut.act.payload.data[c][i], x)
        for lane in range(lanes):
            for i in range(k):
                ctx.set(dut.weights.payload[lane][i], Trit.POS)
        ctx.set(dut.act.payload.last, last)
        ctx.set(dut.act.valid, 1)
        ctx.set(dut.weights.valid, 1)
        await ctx.tick()
        ctx.set(dut.act.valid, 0)
        ctx.set(dut.weights.valid, 0)

    async def bench(ctx):
        ctx.set(dut.result.ready, 1)
        for _ in range(2):                      # two steps of a pass that never ends
            await step(ctx, [100, 20, 3, 1], last=0)
        await ctx.tick().repeat(latency + 1)    # their sums are in the accumulators
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        await step(ctx, [5, 6, 7, 8], last=1)   # a pass of one step
        got.extend(await _result_beats(ctx, dut, 2 * latency + 2))

    _simulate(m, bench)
    assert got == [[5 + 6 + 7 + 8] * lanes]
