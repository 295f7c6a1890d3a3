"""The digit-serial adder-tree engine: ``k x lanes`` ternary products a step, a step in
``act_bits / digit_bits`` cycles, for the iCE40 UP5K.

Why (docs/architecture.md, "What the goals need"): the UP5K's weights live in its four SPRAMs,
which give 64 bits a cycle, 32 trits. A 128-product engine that took a whole step a cycle
would wait three cycles of four for its weights, and its 8-bit products and their tree would
not fit beside the device (5,280 cells; :class:`rtl.adder_tree.TreeEngine` of 32 x 4 alone
takes 2,514 LUT4 on iCE40). Here each lane takes its activations ``digit_bits`` at a time,
most significant digit first, so a step of ``k`` activations takes ``D = act_bits /
digit_bits`` cycles, and it reads one *group* of ``lanes / D`` lanes' trits a cycle: at
``k = 32``, 4 lanes and 2-bit digits that is 64 bits, what the SPRAMs give.

The arithmetic is :class:`rtl.adder_tree.TreeLane`'s on digits: a digit is ``b + 1`` bits
signed (the top digit carries the sign, the others are unsigned), the pair level
(:func:`rtl.adder_tree.pair_level`) and the tree (:func:`rtl.adder_tree.reduce_pairs`) add
the digit's ``k`` products, and a Horner register per lane takes ``h = h * 2**b + top`` a
digit, so after the last digit it holds the step's ``k``-product sum exactly; the accumulator
adds it.

**Beats and slots.** The input is a stream of beats, ``D`` to a *slot*. Beat ``c`` of slot
``j`` carries lane group ``c``'s trits of step ``j`` and digit ``c`` (from the top) of step
``j - 1``'s activations:

* the trits of groups ``0 .. D-2`` wait in a staging register, and with the last beat every
  lane's trits of step ``j`` move into the working register together;
* so while slot ``j`` comes in, the lanes compute step ``j - 1`` from the working register
  and the digits on the bus: nothing else holds a step's operands, and beats may come with
  idle cycles between them anywhere (a lane's Horner register moves only with a beat);
* a sweep's first slot has no step to compute (``step`` clear) and its last slot no trits
  (what the weights field then holds is never used). ``step`` and ``last`` (the step ends its
  pass) are read on a slot's first beat.

A slot whose step ends a pass waits, at its first beat, while the previous pass's result is
pending (from its own first beat until its result beat leaves), as the parallel engine's last
step does; no other beat waits. Timing rules: ``sim.cycles.serial_tree_*``; the beats a layer
makes: ``sim.schedule.serial_tree_beats``.

**Without back-pressure** (``backpressure=False``, the device core's): the result's sink
takes a row in the cycle it comes, as the core's result buffer does. The row then comes
straight from the accumulators' adders in the capture cycle, a cycle earlier, with no result
registers (128 flip-flops at 32 x 4), and no beat ever waits: both streams are
``always_ready``, so the core's operands need no stage that holds them through a wait.
Captures are ``D`` cycles apart at least, and each row leaves with its own.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sim.schedule import TreeConfig

from .accumulator import result_row_layout
from .adder_tree import accumulate, pair_level, reduce_pairs
from .ternary_pe import Trit


def serial_beat_layout(config: TreeConfig) -> data.StructLayout:
    """One beat of :class:`SerialTreeEngine`: ``digits[i]``, digit ``c`` (from the top) of
    activation ``i`` of the step being computed, and ``weights[g][i]``, trit ``i`` of lane
    ``c * lanes / D + g`` of the step being loaded (module docstring)."""
    group = config.lanes // config.cycles_per_step
    return data.StructLayout({
        "digits": data.ArrayLayout(unsigned(config.digit_bits), config.k),
        "weights": data.ArrayLayout(data.ArrayLayout(Trit, config.k), group),
        "step": 1,          # the slot's digits are a step's (not a sweep's first slot)
        "last": 1,          # ... and that step ends its pass: the totals become the result
    })


class SerialTreeLane(wiring.Component):
    """One output lane: products of one digit of ``k`` activations with ``k`` trits, their
    tree, the Horner register and the accumulator.

    Members
    -------
    digits : In(ArrayLayout(unsigned(digit_bits), k))
        One digit of each activation.
    top : In(1)
        The digits are the activations' top digits (signed): a new step starts.
    weights : In(ArrayLayout(Trit, k))
        The lane's trits of the step.
    shift : In(1)
        The tree's sum now leaving it is a digit's (``levels`` cycles after its beat): the
        Horner register takes it.
    first : In(1)
        ... and that digit is a top digit: the Horner register restarts from it.
    add : In(1)
        The Horner register holds a whole step's sum: add it to the accumulator.
    capture : In(1)
        ... and the step ends its pass (implies ``add``): the total goes to ``result`` and the
        accumulator restarts from 0.
    result : Out(signed(acc_width))
        The total of the last finished pass, held until the next capture; with
        ``held_result=False`` the total in the capture cycle only (no result register).
    """

    def __init__(self, *, config: TreeConfig, held_result: bool = True):
        if config.digit_bits is None:
            raise ValueError("a serial lane needs a TreeConfig with digit_bits")
        self.config, self.held_result = config, held_result
        super().__init__({
            "digits": In(data.ArrayLayout(unsigned(config.digit_bits), config.k)),
            "top": In(1),
            "weights": In(data.ArrayLayout(Trit, config.k)),
            "shift": In(1),
            "first": In(1),
            "add": In(1),
            "capture": In(1),
            "result": Out(signed(config.acc_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        b = cfg.digit_bits
        # A digit as a b + 1 bit signed value: the top digit's own top bit is its sign.
        operands = [Cat(d, d[-1] & self.top).as_signed() for d in self.digits]
        pairs, ones_left = pair_level(m, operands, self.weights, b + 1)
        tree_sum, tree_one, depth = reduce_pairs(m, pairs, ones_left, b + 2)
        assert depth == cfg.levels

        # Horner: after the last digit h is the step's sum (a partial h is the sum over the
        # activations' top digits). That is one bit wider than the parallel tree's top sum,
        # which leaves its last left-out one to the accumulator: k products of -1 and -128
        # sum to 2**(act_bits - 1 + levels).
        h = Signal(signed(cfg.act_bits + cfg.levels + 1), reset_less=True)
        with m.If(self.shift):
            m.d.sync += h.eq(Mux(self.first, 0, h << b) + tree_sum + tree_one)

        # The accumulator has a reset (a reset between passes must not leave a partial sum);
        # at 24 MHz its reset net costs nothing that matters.
        accumulate(m, Signal(signed(cfg.acc_bits), name="acc"), h, self.result, self.add,
                   self.capture, held=self.held_result)
        return m


class SerialTreeEngine(wiring.Component):
    """``lanes`` :class:`SerialTreeLane` s fed slot by slot (module docstring).

    Parameters
    ----------
    k : int
        Products per lane and digit: a power of two, at least 2.
    lanes : int
        Outputs per pass: a multiple of ``D = act_width / digit_bits``, so that a beat carries
        the trits of ``lanes / D`` of them.
    act_width, digit_bits, acc_width : int
        Widths of the activations, of a digit, of the accumulators (and results).
    backpressure : bool
        False: the result's sink takes every row as it comes (module docstring); both
        streams are then ``always_ready``.

    Members
    -------
    beat : In(stream.Signature(serial_beat_layout(config)))
        ``D`` beats to a slot. A slot whose ``step`` ends its pass (``last``) waits at its
        first beat while the previous pass's result is pending; other beats never wait.
    result : Out(stream.Signature(rtl.accumulator.result_row_layout(lanes, acc_width)))
        One beat per pass, its lanes' totals (``sim.cycles.serial_tree_*`` gives when);
        ``last`` is always set.
    """

    def __init__(self, *, k: int, lanes: int, act_width: int = 8, digit_bits: int = 2,
                 acc_width: int = 32, backpressure: bool = True):
        self.config = config = TreeConfig(k=k, lanes=lanes, act_bits=act_width,
                                          acc_bits=acc_width, digit_bits=digit_bits,
                                          backpressure=backpressure)
        if lanes % config.cycles_per_step:
            raise ValueError(f"lanes ({lanes}) must be a multiple of the {config.cycles_per_step} "
                             f"digits of an activation: a beat carries a group of lanes' trits")
        self.k, self.lanes = k, lanes
        free = not backpressure
        super().__init__({
            "beat": In(stream.Signature(serial_beat_layout(config), always_ready=free)),
            "result": Out(stream.Signature(result_row_layout(lanes, acc_width),
                                           always_ready=free)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        D = cfg.cycles_per_step
        group = self.lanes // D
        beat, result = self.beat, self.result
        payload = beat.payload

        # Where the beat falls in its slot, and the slot's flags (read on its first beat).
        digit = Signal(range(D))
        slot_step, slot_last = Signal(), Signal()
        first_beat = digit == 0
        step = Mux(first_beat, payload.step, slot_step)
        last = Mux(first_beat, payload.last, slot_last)
        pending = Signal()
        fire = Signal()
        if cfg.backpressure:
            m.d.comb += beat.ready.eq(~(first_beat & payload.step & payload.last & pending))
        m.d.comb += fire.eq(beat.valid & beat.ready)
        with m.If(fire):
            m.d.sync += digit.eq(Mux(digit == D - 1, 0, digit + 1))
            with m.If(first_beat):
                m.d.sync += [slot_step.eq(payload.step), slot_last.eq(payload.last)]

        # The trits: groups 0 .. D-2 staged, all moved to the working register on the last.
        staged = Signal(data.ArrayLayout(data.ArrayLayout(Trit, cfg.k), group * (D - 1)),
                        reset_less=True)
        working = Signal(data.ArrayLayout(data.ArrayLayout(Trit, cfg.k), self.lanes),
                         reset_less=True)
        for c in range(D - 1):
            with m.If(fire & (digit == c)):
                m.d.sync += Cat(staged[g] for g in range(c * group, (c + 1) * group)).eq(
                    payload.weights)
        with m.If(fire & (digit == D - 1)):
            m.d.sync += working.eq(Cat(staged, payload.weights))

        # The digit's flags travel down beside the tree's sums, one register a level; one
        # more to the accumulator, which takes the Horner register after its last digit.
        computes = fire & step
        shift, first, whole, ends = computes, first_beat, digit == D - 1, last
        for level in range(1, cfg.levels + 1):
            regs = [Signal(name=f"{n}_{level}") for n in ("shift", "first", "whole", "ends")]
            m.d.sync += [r.eq(v) for r, v in zip(regs, (shift, first, shift & whole,
                                                        shift & whole & ends))]
            shift, first, whole, ends = regs
        add, capture = Signal(), Signal()
        m.d.sync += [add.eq(whole), capture.eq(ends)]

        for lane in range(self.lanes):
            unit = SerialTreeLane(config=cfg, held_result=cfg.backpressure)
            m.submodules[f"lane_{lane}"] = unit
            m.d.comb += [
                unit.digits.eq(payload.digits),
                unit.top.eq(first_beat),
                unit.weights.eq(working[lane]),
                unit.shift.eq(shift),
                unit.first.eq(first),
                unit.add.eq(add),
                unit.capture.eq(capture),
                result.payload.data[lane].eq(unit.result),
            ]

        m.d.comb += result.payload.last.eq(1)
        if not cfg.backpressure:        # the row in the capture cycle, taken then
            m.d.comb += result.valid.eq(capture)
            return m
        with m.If(result.valid & result.ready):
            m.d.sync += [result.valid.eq(0), pending.eq(0)]
        with m.If(capture):
            m.d.sync += result.valid.eq(1)
        with m.If(fire & first_beat & payload.step & payload.last):
            m.d.sync += pending.eq(1)
        return m
