"""``rtl.fanout``: register copies that synthesis keeps apart; a fan-out tree's copies a level."""

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.fanout import fanout_levels, replicas


class Copies(wiring.Component):
    """``copies`` registers of ``width`` bits all loaded from ``d``, each driving an output of
    its own: made by :func:`replicas`, or (``plain``) as ordinary signals."""

    def __init__(self, copies: int, width: int = 8, plain: bool = False):
        self.copies, self.width, self.plain = copies, width, plain
        super().__init__({"d": In(width), **{f"q{i}": Out(width) for i in range(copies)}})

    def elaborate(self, platform):
        m = Module()
        regs = ([Signal(self.width, name=f"r{i}") for i in range(self.copies)] if self.plain
                else replicas(self.d, self.copies, name="r"))
        for i, r in enumerate(regs):
            m.d.sync += r.eq(self.d)
            m.d.comb += getattr(self, f"q{i}").eq(r)
        return m


@pytest.mark.synth
@pytest.mark.parametrize("family", ["ecp5", "ice40"])
def test_synthesis_keeps_the_copies_apart(family):
    """Plain registers with the same input become one (yosys' opt_merge), which is why the
    copies need the attribute; the copies stay three registers of 8 flip-flops."""
    from rtl.synth import synthesize
    assert synthesize(Copies(3, plain=True), family)["ff"] == 8
    assert synthesize(Copies(3), family)["ff"] == 3 * 8


def test_replicas_refuses_no_copies():
    with pytest.raises(ValueError, match="copies"):
        replicas(Signal(4), 0, name="x")


def test_replicas_of_a_flag_keep_its_reset_and_initial_value():
    plain = replicas(Signal(4), 2, name="d")
    assert all(r.reset_less and r.init == 0 for r in plain)
    flags = replicas(Signal(), 3, name="f", reset_less=False, init=1)
    assert [(r.reset_less, r.init, r.name) for r in flags] == [
        (False, 1, f"f_copy_{i}") for i in range(3)]


def test_fanout_levels_multiply_alike_and_end_in_the_copies():
    assert fanout_levels(32, 3) == [4, 11, 32]      # 4**3 >= 32, 11**3 >= 32**2
    assert fanout_levels(8, 3) == [2, 4, 8]
    assert fanout_levels(1, 6) == [1] * 6
    assert fanout_levels(32, 6) == [2, 4, 6, 11, 18, 32]
    for copies in range(1, 70):
        for levels in range(1, 7):
            counts = fanout_levels(copies, levels)
            assert counts[-1] == copies and counts == sorted(counts)
            # each the fewest that keeps up with the even factor copies ** (1 / levels)
            assert all(c ** levels >= copies ** n > (c - 1) ** levels
                       for n, c in enumerate(counts, start=1))
    with pytest.raises(ValueError, match="at least 1"):
        fanout_levels(0, 3)
