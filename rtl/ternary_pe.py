"""The ternary processing element: add, subtract or skip an activation. No multiplier.

A BitNet b1.58 weight is a trit, so ``psum + w * x`` is one of ``psum + x``, ``psum - x`` or
``psum``. The PE computes all three with a single adder: the operand is ``x``, ``~x`` or 0 and
the carry-in is 1 only for ``-1`` (two's complement: ``-x = ~x + 1``). Above the activation's
width the operand is just its sign bit, so the operand logic costs ``act_width`` LUTs whatever
the partial-sum width; the rest is the carry chain, one LUT per partial-sum bit.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from sim import packing


class Trit(enum.Enum, shape=2):
    """A weight as the hardware stores it: the 2bit packing code ``t + 1`` (3 is invalid).

    Using the packing code directly means weight memory holds 2bit-format words as they are.
    An invalid code (3) reads as 0: it never reaches the array because the host refuses it.
    """
    NEG = packing.trit_code(-1)
    ZERO = packing.trit_code(0)
    POS = packing.trit_code(1)


# TernaryPE decodes the codes bit by bit (bit 0: skip; bit 1: add rather than subtract).
assert (Trit.NEG.value, Trit.ZERO.value, Trit.POS.value) == (0b00, 0b01, 0b10)


class TernaryPE(wiring.Component):
    """One processing element of the array (output-stationary).

    Parameters
    ----------
    act_width : int
        Width of the signed activation.
    psum_width : int
        Width of the signed partial sum; a pass of K steps is exact while
        ``K * 2**(act_width-1) < 2**(psum_width-1)`` (``sim.numerics.max_exact_k``).

    Members
    -------
    act : In(signed(act_width))
        Activation of this step (broadcast along the PE's row).
    weight : In(Trit)
        This PE's weight for this step (streamed from weight memory every cycle).
    step : In(1)
        Accumulate ``weight * act`` this cycle.
    capture : In(1)
        Accumulate, and this is the last step of a pass (implies ``step``). The finished sum goes to ``result``
        and the partial sum restarts from 0, so the next pass starts on the next cycle while
        ``result`` is being read out.
    psum : Out(signed(psum_width))
        The running partial sum (observable for tests and debugging; costs nothing).
    result : Out(signed(psum_width))
        The sum of the last finished pass, held until the next capture.
    """

    def __init__(self, *, act_width: int = 8, psum_width: int = 16):
        if act_width < 2:
            raise ValueError(f"act_width must be at least 2, not {act_width}")
        if psum_width <= act_width:
            raise ValueError(f"psum_width ({psum_width}) must exceed act_width ({act_width}): "
                             f"-(-2**(act_width-1)) must fit")
        self.act_width = act_width
        self.psum_width = psum_width
        super().__init__({
            "act": In(signed(act_width)),
            "weight": In(Trit),
            "step": In(1),
            "capture": In(1),
            "psum": Out(signed(psum_width)),
            "result": Out(signed(psum_width)),
        })

    def elaborate(self, platform):
        m = Module()

        # The codes are NEG 0b00, ZERO 0b01, POS 0b10 (invalid 0b11): bit 0 set means "skip",
        # otherwise bit 1 picks act over ~act. Written as a choice between two values that are
        # the same for the whole row (act, ~act) and then a mask, the operand becomes
        # branch-free C++ in Verilator. The form "POS ? act : (NEG ? ~act : 0)" compiled to a
        # branch on the weight, mispredicted for about every other PE on random weights: the
        # 16x16 core simulated at 0.69 M cycles/s, 1.25 M with this form. Both are one LUT4 per
        # operand bit of (act, code).
        code = self.weight.as_value()
        subtract = Signal()
        operand = Signal(signed(self.psum_width))
        m.d.comb += [
            subtract.eq(self.weight == Trit.NEG),
            # ~act sign-extends to ~(sign-extended act), so -act = operand + carry-in.
            operand.eq(Mux(code[0], 0, Mux(code[1], self.act, ~self.act))),
        ]
        total = Signal(signed(self.psum_width))
        m.d.comb += total.eq(self.psum + operand + subtract)

        # Capture takes priority over step so that yosys maps "psum <= 0" onto the flip-flops'
        # synchronous reset (free on ECP5 and iCE40) instead of a LUT per bit.
        with m.If(self.capture):
            m.d.sync += [
                self.result.eq(total),
                self.psum.eq(0),
            ]
        with m.Elif(self.step):
            m.d.sync += self.psum.eq(total)

        return m
