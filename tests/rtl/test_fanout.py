"""``rtl.fanout.replicas``: register copies that synthesis keeps apart."""

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.fanout import replicas


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
