"""Tests of rtl.ternary_pe.TernaryPE in Amaranth's simulator, plus its synthesis cost.

The PE is checked exhaustively against plain Python ints: every trit x every int8 activation
at partial-sum corners. ``psum`` has no load input, so each corner is reached by accumulating
(steps of +-128 and a remainder); from the corner, every (trit, act) step is applied, checked
and undone by the inverse step (-trit, act). One simulation covers all corners of a width.
"""

from __future__ import annotations

import gc
import warnings

import pytest
from amaranth.hdl import Fragment, UnusedElaboratable
from amaranth.sim import Simulator

from rtl.ternary_pe import TernaryPE, Trit

ACT_WIDTH = 8
ACTS = range(-(1 << (ACT_WIDTH - 1)), 1 << (ACT_WIDTH - 1))     # -128..127
TRITS = {Trit.NEG: -1, Trit.ZERO: 0, Trit.POS: 1}
INVERSE = {Trit.NEG: Trit.POS, Trit.ZERO: Trit.ZERO, Trit.POS: Trit.NEG}
INVALID_CODE = 3


def corners(psum_width: int) -> list[int]:
    """The extreme partial sums that still leave room for one more +-128 step, and -1, 0, 1.

    psum_width=16: -32768 + 128 = -32640 and 32767 - 128 = 32639.
    psum_width=10: -512 + 128 = -384 and 511 - 128 = 383.
    """
    lo, hi = -(1 << (psum_width - 1)), (1 << (psum_width - 1)) - 1
    return [lo + 128, hi - 128, -1, 0, 1]


def path_to(start: int, target: int) -> list[tuple[Trit, int]]:
    """(trit, act) steps that take the partial sum from ``start`` to ``target``:
    +-128 steps (NEG x -128 = +128, POS x -128 = -128), then one remainder step (|r| < 128)."""
    steps = []
    d = target - start
    while d >= 128:
        steps.append((Trit.NEG, -128))
        d -= 128
    while d <= -128:
        steps.append((Trit.POS, -128))
        d += 128
    if d:
        steps.append((Trit.POS, d))
    return steps


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


async def apply(ctx, pe, trit, act, *, step=1, capture=0):
    """Drive one cycle; ``trit`` is a Trit or a raw 2-bit code."""
    if isinstance(trit, Trit):
        ctx.set(pe.weight, trit)
    else:
        ctx.set(pe.weight.as_value(), trit)
    ctx.set(pe.act, act)
    ctx.set(pe.step, step)
    ctx.set(pe.capture, capture)
    await ctx.tick()


@pytest.mark.parametrize("psum_width", [10, 16])
def test_pe_exhaustive_at_corners(psum_width):
    pe = TernaryPE(act_width=ACT_WIDTH, psum_width=psum_width)
    checked = []

    async def bench(ctx):
        assert ctx.get(pe.psum) == 0, "psum must reset to 0"
        model = 0
        for corner in corners(psum_width):
            for trit, act in path_to(model, corner):
                await apply(ctx, pe, trit, act)
                model += TRITS[trit] * act
                assert ctx.get(pe.psum) == model, (trit, act, model)
            assert model == corner
            for trit, t in TRITS.items():
                for act in ACTS:
                    await apply(ctx, pe, trit, act)
                    got = ctx.get(pe.psum)
                    assert got == corner + t * act, \
                        f"width {psum_width}: psum {corner} + {t}*{act} gave {got}"
                    await apply(ctx, pe, INVERSE[trit], act)
                    got = ctx.get(pe.psum)
                    assert got == corner, \
                        f"width {psum_width}: inverse step {-t}*{act} from " \
                        f"{corner + t * act} gave {got}, expected {corner}"
                    checked.append((corner, t, act))

    run(pe, bench)
    assert len(checked) == len(corners(psum_width)) * 3 * 256


@pytest.mark.parametrize("psum_width", [10, 16])
def test_pe_step_zero_holds_and_invalid_code_is_zero(psum_width):
    pe = TernaryPE(act_width=ACT_WIDTH, psum_width=psum_width)

    async def bench(ctx):
        model = 0
        for corner in corners(psum_width):
            for trit, act in path_to(model, corner):
                await apply(ctx, pe, trit, act)
            model = corner
            assert ctx.get(pe.psum) == corner
            # step=0 (and capture=0): nothing changes, whatever the operands.
            for trit in (Trit.NEG, Trit.ZERO, Trit.POS, INVALID_CODE):
                for act in (-128, -1, 0, 1, 127):
                    await apply(ctx, pe, trit, act, step=0)
                    assert ctx.get(pe.psum) == corner, (trit, act)
            # The invalid code 3 reads as zero: a step leaves the partial sum unchanged.
            for act in ACTS:
                await apply(ctx, pe, INVALID_CODE, act)
                assert ctx.get(pe.psum) == corner, f"code 3 with act {act} changed psum"

    run(pe, bench)


@pytest.mark.parametrize("psum_width", [10, 16])
def test_pe_capture(psum_width):
    pe = TernaryPE(act_width=ACT_WIDTH, psum_width=psum_width)

    async def bench(ctx):
        assert ctx.get(pe.pass_sum) == 0
        ops = [(trit, act) for trit in (Trit.NEG, Trit.ZERO, Trit.POS, INVALID_CODE)
               for act in (-128, -127, -1, 0, 1, 127)]
        for corner in corners(psum_width):
            for trit, act in ops:
                for s, a in path_to(0, corner):
                    await apply(ctx, pe, s, a)
                assert ctx.get(pe.psum) == corner
                t = TRITS.get(trit, 0)
                await apply(ctx, pe, trit, act, capture=1)
                expected = corner + t * act
                assert ctx.get(pe.pass_sum) == expected, (corner, trit, act)
                assert ctx.get(pe.psum) == 0, "capture must restart the partial sum at 0"
                # result holds while the next pass accumulates (and while idle).
                await apply(ctx, pe, Trit.POS, 5)
                await apply(ctx, pe, Trit.NEG, 3, step=0)
                assert ctx.get(pe.psum) == 5
                assert ctx.get(pe.pass_sum) == expected
                await apply(ctx, pe, Trit.NEG, 5)      # back to 0 for the next corner
                assert ctx.get(pe.psum) == 0

    run(pe, bench)


def test_pe_rejects_narrow_psum():
    # A constructor that raises still leaves an elaboratable object behind, which would warn
    # (UnusedElaboratable) whenever it is collected: collect them here, with the warning off.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        for psum_width in (8, 7, 1):
            with pytest.raises(ValueError, match="psum_width"):
                TernaryPE(act_width=8, psum_width=psum_width)
        with pytest.raises(ValueError, match="act_width"):
            TernaryPE(act_width=1, psum_width=9)
        with pytest.raises(ValueError, match="adder"):
            TernaryPE(adder="dsp")
        gc.collect()
    Fragment.get(TernaryPE(act_width=8, psum_width=9), None)    # the narrowest legal width


@pytest.mark.synth
@pytest.mark.parametrize("family", ["ecp5", "ice40"])
def test_pe_synthesis_has_no_multiplier(family):
    from rtl.synth import synthesize
    psum_width = 16
    stats = synthesize(TernaryPE(psum_width=psum_width), family)
    assert stats["dsp"] == 0, stats["cells"]
    if family == "ecp5":
        luts = stats["lut4"] + 2 * stats["carry"]    # each CCU2C holds two LUT4s
    else:
        luts = stats["lut4"]
    assert luts / psum_width <= 2.0, f"{family}: {luts} LUT4 for {psum_width} bits: {stats['cells']}"
    if family == "ice40":
        # iCE40 names a flip-flop by its controls: the partial sum has a synchronous reset
        # (the domain's, or a capture's clear) and an enable (SB_DFFESR); the result only an
        # enable (SB_DFFE), because a capture writes it before anything reads it, which
        # keeps the domain's reset off the array's result bits.
        assert stats["cells"].get("SB_DFFESR") == psum_width, stats["cells"]
        assert stats["cells"].get("SB_DFFE") == psum_width, stats["cells"]


@pytest.mark.synth
@pytest.mark.parametrize("family", ["ecp5", "ice40"])
def test_per_module_synthesis_counts_each_pe_by_itself(family):
    """``synthesize_modules`` (``python -m bench --only breakdown``) keeps the hierarchy: every
    PE of an array is a module of its own that counts what the PE alone counts, and the
    modules' flip-flops add up to the flattened array's."""
    from rtl.synth import synthesize, synthesize_modules
    from rtl.systolic import SystolicArray
    modules = synthesize_modules(SystolicArray(rows=2, cols=3), family)
    assert sorted(modules) == ["top"] + [f"top.pe_{r}_{c}" for r in range(2) for c in range(3)]
    alone = synthesize(TernaryPE(), family)
    for path in modules.keys() - {"top"}:
        assert [modules[path][k] for k in ("lut4", "ff", "carry")] == \
            [alone[k] for k in ("lut4", "ff", "carry")], (path, modules[path], alone)
    flat = synthesize(SystolicArray(rows=2, cols=3), family)
    assert sum(m["ff"] for m in modules.values()) == flat["ff"]
    assert modules["top"]["ff"] == flat["ff"] - 6 * alone["ff"] > 0
    with pytest.raises(ValueError, match="unknown family"):
        synthesize_modules(None, "gowin")     # refused before anything is elaborated


@pytest.mark.synth
def test_ecp5_carry_chain_pe_holds_its_operand_logic_in_the_carry_cells():
    """The ECP5 PE (``adder="ccu2c"``): one CCU2C half per partial-sum bit plus one for the
    carry-in, no multiplier, and fewer LUT4 sites than the generic PE on the same family.
    Its arithmetic is proven in tests/formal/test_formal.py."""
    from rtl.synth import synthesize
    psum_width = 16
    fast = synthesize(TernaryPE(psum_width=psum_width, adder="ccu2c"), "ecp5")
    plain = synthesize(TernaryPE(psum_width=psum_width), "ecp5")
    assert fast["dsp"] == 0 and fast["carry"] == (psum_width + 1 + 1) // 2, fast["cells"]
    sites = fast["lut4"] + 2 * fast["carry"]
    assert sites < plain["lut4"] + 2 * plain["carry"] - psum_width // 4, (fast, plain)
    assert fast["ff"] == plain["ff"] == 2 * psum_width


@pytest.mark.synth
def test_ecp5_partial_sum_sits_beside_its_carry_cells(tmp_path):
    """Placed by nextpnr, the carry-cell PE keeps its partial sum in the flip-flops of its own
    carry cells' slices, so the accumulate loop never leaves them. The sum feeds the pass's
    sum register too, and nextpnr's ECP5 packer gives those flip-flops to the register whose
    name sorts last: with the result named ``result`` (after ``psum``) it took them and every
    partial-sum bit went out and back through the fabric (the ULX3S-12F's longest path at
    90 MHz, 9.17 ns of routing inside one PE)."""
    import json
    import os
    import shutil
    import subprocess

    from amaranth.back import rtlil
    from rtl.synth import SYNTH_SCRIPTS, _run_yosys, setup_yowasp_env

    netlist = _run_yosys(rtlil.convert(TernaryPE(adder="ccu2c"), name="top"),
                         SYNTH_SCRIPTS["ecp5"].format(top="top") + "; write_json pe.json",
                         ["pe.json"], "synthesis of one PE")["pe.json"]
    (tmp_path / "pe.json").write_text(netlist)
    setup_yowasp_env()
    nextpnr = shutil.which(os.environ["NEXTPNR_ECP5"])
    subprocess.run([nextpnr, "--quiet", "--25k", "--package", "CABGA381", "--json", "pe.json",
                    "--write", "placed.json", "--freq", "100"], cwd=tmp_path, check=True,
                   capture_output=True)
    cells = json.loads((tmp_path / "placed.json").read_text())["modules"]["top"]["cells"]

    def slice_of(cell):                     # "X29/Y28/SLICEB.FF1" -> "X29/Y28/SLICEB"
        return cell["attributes"]["NEXTPNR_BEL"].rsplit(".", 1)[0]
    carry_slices = {slice_of(c) for name, c in cells.items() if name.startswith("ccu2c_")}
    ffs = {name: slice_of(c) for name, c in cells.items() if c["type"] == "TRELLIS_FF"}
    psum = [s for name, s in ffs.items() if name.startswith("psum_")]
    passed = [s for name, s in ffs.items() if name.startswith("pass_sum_")]
    assert len(psum) == len(passed) == 16, sorted(ffs)
    assert all(s in carry_slices for s in psum), (psum, carry_slices)
    assert not any(s in carry_slices for s in passed)
