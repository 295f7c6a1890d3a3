"""A small sequential unsigned divider (restoring, one quotient bit per cycle).

The device core needs two divisions per ``RUN`` (how many chunks of K, and how long each is);
a multiplier-free design should not spend a combinational divider on them.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class Divider(wiring.Component):
    """``quotient, remainder = divmod(dividend, divisor)`` in ``width`` cycles.

    Members
    -------
    start : In(1)
        Latch the operands and begin (ignored while busy).
    dividend, divisor : In(width)
    busy : Out(1)
    done : Out(1)
        High for one cycle when the results are valid; they stay valid until the next start.
    quotient, remainder : Out(width)
        A zero divisor gives an all-ones quotient (callers check the divisor themselves).
    """

    def __init__(self, width: int):
        self.width = width
        super().__init__({
            "start": In(1),
            "dividend": In(width),
            "divisor": In(width),
            "busy": Out(1),
            "done": Out(1),
            "quotient": Out(width),
            "remainder": Out(width),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.width
        divisor = Signal(w)
        count = Signal(range(w + 1))
        partial = Signal(w + 1)
        shifted = Signal(w + 1)
        # Bring down the next dividend bit (the quotient register holds the remaining bits).
        m.d.comb += shifted.eq(Cat(self.quotient[w - 1], partial[:w]))
        m.d.sync += self.done.eq(0)
        with m.If(self.busy):
            with m.If(shifted >= divisor):
                m.d.sync += [partial.eq(shifted - divisor),
                             self.quotient.eq(Cat(1, self.quotient[:w - 1]))]
            with m.Else():
                m.d.sync += [partial.eq(shifted),
                             self.quotient.eq(Cat(0, self.quotient[:w - 1]))]
            m.d.sync += count.eq(count - 1)
            with m.If(count == 1):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.Elif(self.start):
            m.d.sync += [
                divisor.eq(self.divisor),
                self.quotient.eq(self.dividend),
                partial.eq(0),
                count.eq(w),
                self.busy.eq(1),
            ]
        m.d.comb += self.remainder.eq(partial[:w])
        return m
