"""The ternary processing element: add, subtract or skip an activation. No multiplier.

A BitNet b1.58 weight is a trit, so ``psum + w * x`` is one of ``psum + x``, ``psum - x`` or
``psum``. The PE computes all three with a single adder: the operand is ``x``, ``~x`` or 0 and
the carry-in is 1 only for ``-1`` (two's complement: ``-x = ~x + 1``). Above the activation's
width the operand is just its sign bit, so the operand logic costs ``act_width`` LUTs whatever
the partial-sum width; the rest is the carry chain, one LUT per partial-sum bit.

On ECP5 (``adder="ccu2c"``) the operand logic goes into the carry chain itself: each half of a
``CCU2C`` cell is a LUT4 whose output is the carry's "propagate" and whose LUT2 part (the LUT4's
entries with C = D = 0) is its "generate". With the partial-sum bit on A, the weight's two code
bits on B and C and the row's inverted activation bit on D, every entry with C = D = 0 is a
skip (ZERO, or NEG of an activation bit 1), so the LUT2 is just A, which is the right generate
whenever propagate is 0 (the two addends are then equal). One more half makes the carry-in. A
PE is then 1 LUT4 (its partial sum's enable) + 9 CCU2C: 19 LUT4 sites instead of 10 LUT4 +
8 CCU2C, 26.
"""

from amaranth.hdl import Const, Instance, Module, Mux, Signal, signed
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
        Accumulate, and this is the last step of a pass (implies ``step``). The finished sum goes to
        ``pass_sum`` and the partial sum restarts from 0, so the next pass starts on the next cycle
        while ``pass_sum`` is being read out.
    act_n : In(signed(act_width))
        Only with ``adder="ccu2c"``: ``~act``, inverted once for the whole row by the array.
    psum : Out(signed(psum_width))
        The running partial sum (observable for tests and debugging; costs nothing).
    pass_sum : Out(signed(psum_width))
        The sum of the last finished pass, held until the next capture. The name sorts before
        ``psum`` on purpose: both registers take the adder's sum, and nextpnr's ECP5 packer
        gives the flip-flops beside each carry cell to the register whose name sorts last,
        which must be the partial sum (its accumulate loop then stays inside the slice; the
        result is written once a pass). ``tests/rtl/test_pe.py`` checks where they land.

    ``adder`` is ``"generic"`` (any family, and the simulated devices) or ``"ccu2c"`` (ECP5
    carry cells, for ECP5 builds; proven equal to the naive model with yosys' model of the
    cell in tests/formal).
    """

    ADDERS = ("generic", "ccu2c")

    @classmethod
    def check_adder(cls, adder: str) -> str:
        if adder not in cls.ADDERS:
            raise ValueError(f"adder must be one of {', '.join(cls.ADDERS)}, not {adder!r}")
        return adder

    def __init__(self, *, act_width: int = 8, psum_width: int = 16, adder: str = "generic"):
        self.adder = self.check_adder(adder)
        if act_width < 2:
            raise ValueError(f"act_width must be at least 2, not {act_width}")
        if psum_width <= act_width:
            raise ValueError(f"psum_width ({psum_width}) must exceed act_width ({act_width}): "
                             f"-(-2**(act_width-1)) must fit")
        self.act_width = act_width
        self.psum_width = psum_width
        members = {"act": In(signed(act_width))}
        if adder == "ccu2c":
            members["act_n"] = In(signed(act_width))
        super().__init__({
            **members,
            "weight": In(Trit),
            "step": In(1),
            "capture": In(1),
            "psum": Out(signed(psum_width)),
            "pass_sum": Out(signed(psum_width)),
        })

    def elaborate(self, platform):
        m = Module()

        total = Signal(signed(self.psum_width))
        if self.adder == "ccu2c":
            ccu2c_ternary_sum(m, self.psum, self.weight.as_value(), self.act_n, total)
        else:
            # The codes are NEG 0b00, ZERO 0b01, POS 0b10 (invalid 0b11): bit 0 set means
            # "skip", otherwise bit 1 picks act over ~act. Written as a choice between two
            # values that are the same for the whole row (act, ~act) and then a mask, the
            # operand becomes branch-free C++ in Verilator. The form "POS ? act : (NEG ? ~act :
            # 0)" compiled to a branch on the weight, mispredicted for about every other PE on
            # random weights: the 16x16 core simulated at 0.69 M cycles/s, 1.25 M with this
            # form. Both are one LUT4 per operand bit of (act, code).
            code = self.weight.as_value()
            subtract = Signal()
            operand = Signal(signed(self.psum_width))
            m.d.comb += [
                subtract.eq(self.weight == Trit.NEG),
                # ~act sign-extends to ~(sign-extended act), so -act = operand + carry-in.
                operand.eq(Mux(code[0], 0, Mux(code[1], self.act, ~self.act))),
            ]
            m.d.comb += total.eq(self.psum + operand + subtract)

        # The pass's sum has no reset: a capture writes it before the drain reads it. On the
        # ULX3S-85F's 16x32 core the PEs' results were 8,192 of the 17,764 flip-flops that
        # the domain's reset reached, its widest net (docs/architecture.md, "Data registers
        # without a reset").
        pass_sum = Signal.like(self.pass_sum, reset_less=True)
        m.d.comb += self.pass_sum.eq(pass_sum)

        # Capture takes priority over step so that yosys maps "psum <= 0" onto the flip-flops'
        # synchronous reset (free on ECP5 and iCE40) instead of a LUT per bit.
        with m.If(self.capture):
            m.d.sync += [
                pass_sum.eq(total),
                self.psum.eq(0),
            ]
        with m.Elif(self.step):
            m.d.sync += self.psum.eq(total)

        return m


def ccu2c_ternary_sum(m, a, code, act_n, total, *, prefix: str = ""):
    """``total = a + w * act`` as a chain of ECP5 ``CCU2C`` cells (module docstring): ``code``
    is the weight's 2bit code, ``act_n`` is ``~act``, and ``a`` (sign-extended, as ``act_n``)
    takes the partial sum's place. The PE adds into its partial sum; the adder-tree engine
    (:mod:`rtl.adder_tree`) adds a pair's second product to its first. Cells and nets are named
    ``{prefix}ccu2c_N``, ``{prefix}carry_N``: nextpnr's packing follows names, so the PE's
    (empty prefix) stay what its placement was measured with."""
    # Half 0 makes the carry-in: C tied high selects entries that are all 0 (propagate 0),
    # and the LUT2 (entries C = D = 0, inputs A = code bit 0, B = code bit 1) is "NEG".
    halves = [(CARRY_IN_INIT, code[0], code[1], Const(1), Const(0), None)]
    for i in range(len(total)):
        a_bit = a[min(i, len(a) - 1)]
        act_n_bit = act_n[min(i, len(act_n) - 1)]
        halves.append((SUM_INIT, a_bit, code[0], code[1], act_n_bit, total[i]))
    if len(halves) % 2:
        halves.append((0, Const(0), Const(0), Const(0), Const(0), None))
    carry = Const(0)
    for k in range(0, len(halves), 2):
        cout = Signal(name=f"{prefix}carry_{k // 2}")
        ports = {"i_CIN": carry, "o_COUT": cout}
        for j, (init, a_bit, b, c, d, s) in enumerate(halves[k:k + 2]):
            ports.update({f"p_INIT{j}": Const(init, 16), f"p_INJECT1_{j}": "NO",
                          f"i_A{j}": a_bit, f"i_B{j}": b, f"i_C{j}": c, f"i_D{j}": d,
                          f"o_S{j}": s if s is not None
                          else Signal(name=f"{prefix}unused_{k}_{j}")})
        m.submodules[f"{prefix}ccu2c_{k // 2}"] = Instance("CCU2C", **ports)
        carry = cout


def _lut_init(f) -> int:
    """The INIT of a Lattice LUT4 computing ``f(a, b, c, d)`` (entry ``d*8 + c*4 + b*2 + a``)."""
    return sum(f((i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1, (i >> 3) & 1) << i for i in range(16))


def _sum_bit(a, code0, code1, act_n):
    """Propagate of one partial-sum bit: psum bit ``a`` XOR the operand bit (0 when skipping,
    the activation bit ``~act_n`` for POS, ``act_n`` for NEG; codes as :class:`Trit`)."""
    operand = 0 if code0 else ((1 - act_n) if code1 else act_n)
    return a ^ operand


SUM_INIT = _lut_init(_sum_bit)
# Entries with C = 1 (the tied input) are 0; entry 0 (A = B = 0: code NEG) is the LUT2's 1.
CARRY_IN_INIT = _lut_init(lambda a, b, c, d: int(c == 0 and d == 0 and a == 0 and b == 0))
assert SUM_INIT & 0xF == 0b1010, "the LUT2 of a sum half must be its A input"
