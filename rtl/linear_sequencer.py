"""The ``linear`` program hardwired: a control for boards with no room for the processor.

``rtl.controller.Controller`` runs any program of ``firmware.isa`` and takes about 1,900 LUT4
on iCE40, over a third of an iCE40 UP5K; the host only ever runs ``firmware/programs/linear.s``
on such a board. :class:`LinearSequencer` does what ``linear`` does, on the adder-tree engine's
parameters (``firmware.hardwired.hardwired_supported``), with the Controller's ports for it, so
it drops in where the core has ``Controller(registered_checks=False)``.
``firmware.hardwired.run_linear`` is its reference, cycle for cycle.

One adder does all the arithmetic: the three bounds of ``linear`` as running sums of K or M
(acts + M*K, results + tiles*M, weights + tiles*K, each abandoned in the cycle it passes its
limit), then the sweeps' weight words (weights + t*K), one sweep a cycle. On these parameters
``SPLIT`` always makes one pass of the whole K, so the split is K itself and no divider is
needed; the tile count ceil(N / PES) is N's high bits, and its rounding up is folded into where
the tile counter starts.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from firmware.commands import Status
from firmware.hardwired import hardwired_supported, kept_widths
from firmware.isa import (ARG_REGISTERS, WORD_BITS, Fault, Param, register_bits,
                          split_layout, sweep_layout)

__all__ = ["LinearSequencer"]


def above(value, limit: int):
    """``value > limit`` for a constant ``limit``, as a chain of ANDs and ORs from the least
    significant bit up. Written as ``>``, yosys makes each compare an iCE40 carry chain, a
    logic cell per bit with nothing else in it (15 for the iCEBreaker's three limits); as
    logic, the compares cost no more LUT4 than before."""
    if limit >= 1 << len(value):
        return Const(0)
    greater = Const(0)          # value[:i] > limit[:i]
    for i, bit in enumerate(value):
        greater = bit & greater if (limit >> i) & 1 else bit | greater
    return greater


class LinearSequencer(wiring.Component):
    """``linear`` on fixed hardware, with the ports of ``Controller(registered_checks=False)``
    that it needs (no program memory, no entry point: there is only the one program).

    Parameters
    ----------
    params : dict[Param, int]
        What ``CFG`` would read; ValueError unless ``hardwired_supported`` accepts them.

    Members
    -------
    start, args : In
        Run ``linear`` with ``args`` as r0..r5 (ignored while running). The arguments are
        taken in the start cycle.
    done : Out(1)
        One cycle when the run has ended and the sequencer is idle; ``status`` then holds OK
        or BAD_ARGUMENT. ``fault_pc`` and ``fault_cause`` are always 0 (``Fault.NONE``):
        ``linear`` answers bad arguments itself and never faults on these parameters.
    split : Out(split_layout(bits))
        K in one pass (n 1, q K, r 0). It changes only at a start, which comes after a done,
        and so when the sequencer is idle, as a SPLIT would wait for.
    set_results, results : Out
        One cycle of ``set_results`` (once the sequencer is idle) moves the sequencer's result
        pointer to ``results``.
    sweep : Out(stream.Signature(sweep_layout(bits)))
        One sweep per tile, back to back while ``ready`` holds.
    idle : In(1)
        The sequencer has nothing in flight.
    """

    def __init__(self, *, params: dict):
        self.params = {Param(k): int(v) for k, v in params.items()}
        hardwired_supported(self.params)
        self.bits = bits = register_bits(self.params)
        super().__init__({
            "start": In(1),
            "args": In(data.ArrayLayout(WORD_BITS, ARG_REGISTERS)),
            "done": Out(1),
            "status": Out(Status),
            "fault_pc": Out(16),
            "fault_cause": Out(Fault),
            "split": Out(split_layout(bits)),
            "set_results": Out(1),
            "results": Out(bits),
            "sweep": Out(stream.Signature(sweep_layout(bits))),
            "idle": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        params, kept = self.params, kept_widths(self.params)
        words, act_bytes, result_rows, k_max = (
            params[p] for p in (Param.WEIGHT_WORDS, Param.ACT_BYTES, Param.RESULT_ROWS,
                                Param.K_MAX))

        # Only the bits a passing run can have are kept (firmware.hardwired.kept_widths): an
        # argument with a bit above them fails a check of the program whatever the rest is, so
        # it is refused at the start, and below them exact sums give the program's saturating
        # verdicts. That is also why no argument is saturated: at 32 bits or at ``bits``, a
        # value with a high bit set is refused either way.
        args = [self.args[i] for i in range(ARG_REGISTERS)]
        weights, acts, results = (Signal(w, name=n) for w, n in
                                  ((kept.weights, "weights"), (kept.acts, "acts"),
                                   (kept.results, "results")))
        tokens, k = Signal(kept.tokens, name="tokens"), Signal(kept.k, name="k")
        shift = kept.pes_shift
        n_in = args[4][:kept.outputs]
        tiles_high = Signal(kept.tiles)     # N >> shift: the tile count, rounded down
        partial = Signal()                  # N % PES != 0: one tile more
        refused = Signal()
        m.d.comb += refused.eq(
            Cat(a[w:].any() for a, w in zip(args, kept.args())).any() |
            (args[3][:kept.tokens] == 0) | (n_in == 0) | (args[5][:kept.k] == 0) |
            # a K_MAX below the largest K kept needs a compare of its own (when K_MAX is what
            # limits K, kept_widths keeps just its bits, and on the iCEBreaker the buffer does)
            (args[5][:kept.k] > k_max if k_max < (1 << kept.k) - 1 else 0))

        # The running sum: a bound's partial sum, then the sweep's weight word. Wide enough for
        # a limit plus a step, as a sum is abandoned once it passes its limit.
        acc = Signal(range(max(act_bytes + (1 << kept.k), result_rows + (1 << kept.tokens),
                               words + (1 << kept.k))))
        # Counts the additions of a sum (or the sweeps) up to M or to the tile count. A count of
        # tiles starts at 0 when N % PES != 0 and at 1 otherwise, so that it ends at N >> shift
        # either way: the rounding up of ceil(N / PES) costs no adder.
        count = Signal(max(kept.tiles, kept.tokens))
        bad = Signal()

        # One-hot states, none while stopped: their decode is the selects of the adder's
        # operand and of what the sum is loaded with (binary, they took 24 more LUT4).
        s_acts, s_results, s_weights, s_setr, s_sweep, s_finish = (
            Signal(name=f"s_{n}")
            for n in ("acts", "results", "weights", "setr", "sweep", "finish"))
        stopped = ~(s_acts | s_results | s_weights | s_setr | s_sweep | s_finish)
        go = stopped & self.start
        checking = s_acts | s_results | s_weights       # the bounds, in this order

        step = Mux(s_results, tokens, k)
        total = acc + step
        over = Signal()     # the sum has passed its limit: BAD_ARGUMENT
        last = Signal()     # the last addition of a sum, or the last sweep
        m.d.comb += [
            over.eq(checking & Mux(s_acts, above(total, act_bytes),
                                   Mux(s_results, above(total, result_rows),
                                       above(total, words)))),
            last.eq(count == Mux(s_acts, tokens, tiles_high)),
        ]
        moves_on = checking & last      # (when not over) to the next sum, or to SETR

        with m.If(go):
            m.d.sync += [weights.eq(args[0]), acts.eq(args[1]), results.eq(args[2]),
                         tokens.eq(args[3]), k.eq(args[5]),
                         tiles_high.eq(n_in[shift:]), partial.eq(n_in[:shift].any()),
                         bad.eq(refused),
                         acc.eq(args[1][:kept.acts]), count.eq(1)]
        with m.Elif(moves_on):
            # the weights' sum, and after it the sweeps, start from the first weight word
            m.d.sync += [acc.eq(Mux(s_acts, results, weights)), count.eq(~partial)]
        with m.Elif(checking | (s_sweep & self.sweep.ready)):
            m.d.sync += [acc.eq(total), count.eq(count + 1)]
        with m.If(over):
            m.d.sync += bad.eq(1)

        stays = ~(over | last)
        taken_last = s_sweep & self.sweep.ready & last
        m.d.sync += [
            s_acts.eq((go & ~refused) | (s_acts & stays)),
            s_results.eq((s_acts & last & ~over) | (s_results & stays)),
            s_weights.eq((s_results & last & ~over) | (s_weights & stays)),
            s_setr.eq((s_weights & last & ~over) | (s_setr & ~self.idle)),
            s_sweep.eq((s_setr & self.idle) | (s_sweep & ~taken_last)),
            s_finish.eq((go & refused) | over | taken_last | (s_finish & ~self.idle)),
        ]

        m.d.comb += [
            self.status.eq(Mux(bad, Status.BAD_ARGUMENT, Status.OK)),
            self.done.eq(s_finish & self.idle),
            self.split.k.eq(k), self.split.n.eq(1), self.split.q.eq(k), self.split.r.eq(0),
            self.set_results.eq(s_setr & self.idle),
            self.results.eq(results),
            self.sweep.valid.eq(s_sweep),
            self.sweep.payload.weights.eq(acc[:kept.weights]),
            self.sweep.payload.acts.eq(acts),
            self.sweep.payload.tokens.eq(tokens),
        ]
        return m
