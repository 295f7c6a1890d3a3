"""The PE array and the matrix engine around it.

Dataflow (see docs/architecture.md): output-stationary with streamed weights.

* Every cycle a *weight beat* brings one trit per PE (``rows x cols``) from weight memory and an
  *activation beat* brings one int8 per row, broadcast along the row. Each PE adds, subtracts or
  skips its row's activation into its own partial sum: one step of K for ``rows x cols`` outputs.
  Nothing has to be preloaded, so decode (M = 1, every weight used once) keeps every PE busy just
  as prefill does.
* A *pass* is a run of steps over one chunk of K, closed by a beat with ``last`` set. The last
  step moves every sum into the PE's result register and clears the partial sum, so the next pass
  starts on the very next cycle while the results drain: one row per cycle through a per-column
  multiplexer into a register. The next pass can only be captured once that drain is done, so passes longer than
  ``rows`` steps never wait.
* :class:`MatrixEngine` adds the accumulator (:mod:`rtl.accumulator`) that sums the chunks of K
  in 32 bits, so the PE's partial sum can stay narrow (16 bits: 255 steps per pass).

The golden definitions of the mapping and of the timing are ``sim.schedule`` and ``sim.cycles``.
"""

from amaranth.hdl import Array, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .accumulator import ResultAccumulator, psum_row_layout
from .ternary_pe import TernaryPE, Trit

#: columns whose drain multiplexers share a copy of the drain row counter (``drained_register``)
DRAIN_GROUP = 2


def activation_layout(rows: int, act_width: int) -> data.StructLayout:
    """One activation beat: an int per row plus the flags that describe the pass."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(act_width), rows),
        "last": 1,          # last step of the pass: capture the sums
        "first_chunk": 1,   # (on the last step) this pass starts its tile's accumulation
        "last_chunk": 1,    # (on the last step) this pass completes its tile
    })


def weight_layout(rows: int, cols: int) -> data.ArrayLayout:
    """One weight beat: a trit per PE, indexed ``[row][col]``."""
    return data.ArrayLayout(data.ArrayLayout(Trit, cols), rows)


class SystolicArray(wiring.Component):
    """A ``rows x cols`` grid of :class:`TernaryPE` with streamed operands and drained results.

    Parameters
    ----------
    rows, cols : int
        Shape of the PE grid.
    act_width : int
        Width of the signed activations (8 for BitNet).
    psum_width : int
        Width of each PE's partial sum; bounds the length of a pass.
    adder : str
        The PEs' adder (:class:`TernaryPE`): ``"generic"``, or ``"ccu2c"`` for ECP5 builds.
    drained_register : bool
        Keep "the previous pass is drained" in a register rather than compare the drain
        counter with zero in front of the step enable (the same behaviour; large arrays'
        clock wants it, a UP5K's cells do not).

    Members
    -------
    act : In(stream.Signature(activation_layout(rows, act_width)))
    weights : In(stream.Signature(weight_layout(rows, cols)))
        Taken together: a step happens when both are valid (and, for a ``last`` beat, when the
        previous pass has drained).
    result : Out(stream.Signature(psum_row_layout(rows, cols, psum_width)))
        ``rows`` beats per pass, row 0 first, from a register: row 0 is offered two cycles
        after the pass's last step.
    """

    def __init__(self, *, rows: int, cols: int, act_width: int = 8, psum_width: int = 16,
                 adder: str = "generic", drained_register: bool = True):
        self.adder = TernaryPE.check_adder(adder)     # refused now, not at elaboration
        self.drained_register = drained_register
        if rows < 1 or cols < 1:
            raise ValueError(f"the array needs at least one row and column, not {rows}x{cols}")
        self.rows, self.cols = rows, cols
        self.act_width, self.psum_width = act_width, psum_width
        super().__init__({
            "act": In(stream.Signature(activation_layout(rows, act_width))),
            "weights": In(stream.Signature(weight_layout(rows, cols))),
            "result": Out(stream.Signature(psum_row_layout(rows, cols, psum_width))),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols

        drain_left = Signal(range(rows + 1))    # result rows still to send
        drain_row = Signal(range(max(rows, 2)))
        # With ``drained_register``, each group of DRAIN_GROUP columns selects its row with a
        # copy of ``drain_row`` of its own: one counter fanned out to every column's
        # multiplexer was the longest path of a 16x16 ULX3S-12F build at 84 MHz (10.1 ns),
        # and one per 8 columns the 25F's at 100 MHz (10.05 ns). Each copy counts on its own
        # (yosys merges flip-flops with the same inputs, not counters fed back from
        # themselves), and they always hold the same value. ``drain_row`` is the first group's.
        group = DRAIN_GROUP if self.drained_register else cols
        row_copies = [drain_row, *(Signal.like(drain_row, name=f"drain_row_{g}")
                                   for g in range(1, -(-cols // group)))]
        drain_first = Signal()
        drain_final = Signal()

        # A step needs both operands; the capturing step also needs the result registers free.
        # With ``drained_register``, ``drain_left == 0`` is a register of its own (set below
        # with the counter): the step enable reaches every PE and, in the core, the operand
        # memories' read enables, so no compare sits in front of it.
        drained = Signal(init=1)
        if not self.drained_register:
            drained = drain_left == 0
        may_step = ~self.act.payload.last | drained
        step = Signal()
        capture = Signal()
        m.d.comb += [
            self.act.ready.eq(self.weights.valid & may_step),
            self.weights.ready.eq(self.act.valid & may_step),
            step.eq(self.act.valid & self.act.ready),
            capture.eq(step & self.act.payload.last),
        ]
        # With ``drained_register`` every row also decides its step and capture itself, from
        # a copy of "drained" of its own: the capture resets every PE's partial sum, and one
        # capture fanned out to all of them ("drained" -> step -> capture -> 8,192 partial-sum
        # resets across the die) was the longest path of the ULX3S-85F's 16x32 build at
        # 84.375 MHz (11.62 ns, 4.85 of it the last net). Each copy is set and cleared by its
        # own row's capture, so yosys cannot merge them, and they always agree with
        # ``drained``, which keeps driving the handshake and the drain.
        # (register, the capture that clears it): "drained" and, below, each row's copy
        drained_copies = [(drained, capture)] if self.drained_register else []
        row_steps, row_captures = [step] * rows, [capture] * rows
        if self.drained_register:
            both_valid = self.act.valid & self.weights.valid
            for r in range(rows):
                copy = Signal(init=1, name=f"drained_{r}")
                row_steps[r] = Signal(name=f"step_{r}")
                row_captures[r] = Signal(name=f"capture_{r}")
                m.d.comb += [
                    row_steps[r].eq(both_valid & (~self.act.payload.last | copy)),
                    row_captures[r].eq(both_valid & self.act.payload.last & copy),
                ]
                drained_copies.append((copy, row_captures[r]))

        results = [[None] * cols for _ in range(rows)]
        for r in range(rows):
            if self.adder == "ccu2c":      # its PEs take ~act, inverted once for the row
                act_n = Signal(signed(self.act_width), name=f"act_n_{r}")
                m.d.comb += act_n.eq(~self.act.payload.data[r])
            for c in range(cols):
                pe = TernaryPE(act_width=self.act_width, psum_width=self.psum_width,
                               adder=self.adder)
                if self.adder == "ccu2c":
                    m.d.comb += pe.act_n.eq(act_n)
                m.submodules[f"pe_{r}_{c}"] = pe
                m.d.comb += [
                    pe.act.eq(self.act.payload.data[r]),
                    pe.weight.eq(self.weights.payload[r][c]),
                    pe.step.eq(row_steps[r]),
                    pe.capture.eq(row_captures[r]),
                ]
                results[r][c] = pe.pass_sum

        # Drain: one row per cycle through a rows:1 multiplexer per column into a register that
        # drives the result stream. The multiplexer is the deep part (4 LUT levels and a counter
        # fanned out to every column at 16 rows) and the accumulator's adder and memory write
        # come after it: in one cycle the two were the longest path of a 16x16 core asked for
        # 100 MHz (14.3 ns). The register costs the final drain one cycle (``sim.cycles``).
        # The result registers are free once their last row is in the drain register.
        result = self.result
        # The drained row's data is a register without a reset that drives the port: the
        # stream leaves the payload free while ``valid`` is low, so a reset on these cols x
        # psum bits would only load the die-wide reset net (512 flip-flops on the 85F).
        drain_data = Signal.like(result.payload.data, reset_less=True)
        m.d.comb += result.payload.data.eq(drain_data)
        take_row = Signal()
        m.d.comb += take_row.eq((drain_left != 0) & (~result.valid | result.ready))
        with m.If(result.valid & result.ready):
            m.d.sync += result.valid.eq(0)
        with m.If(take_row):
            m.d.sync += [copy.eq(drain_left == 1) for copy, _ in drained_copies]
            m.d.sync += [
                result.valid.eq(1),
                result.payload.row.eq(drain_row),
                result.payload.first_chunk.eq(drain_first),
                result.payload.last_chunk.eq(drain_final),
                result.payload.last.eq(drain_left == 1),
                drain_left.eq(drain_left - 1),
                *(copy.eq(copy + 1) for copy in row_copies),
            ]
            for c in range(cols):
                column = Array(results[r][c] for r in range(rows))
                m.d.sync += drain_data[c].eq(column[row_copies[c // group]])
        with m.If(capture):     # only when drain_left == 0, so no conflict with the above
            m.d.sync += [
                drain_left.eq(rows),
                *(copy.eq(0) for copy in row_copies),
                drain_first.eq(self.act.payload.first_chunk),
                drain_final.eq(self.act.payload.last_chunk),
            ]
        for copy, clear in drained_copies:
            with m.If(clear):
                m.d.sync += copy.eq(0)
        return m


class MatrixEngine(wiring.Component):
    """The array plus the accumulator: exact int32 dot products for K up to ``sim.schedule``'s
    ``ArrayConfig.k_max``, fed pass by pass as ``sim.schedule.plan_linear`` lays them out.

    ``drained_register`` goes to the array, and to the accumulator as ``counted_reads``: the
    variant for large arrays' clocks (ECP5 builds), the same behaviour cycle for cycle.

    Members
    -------
    act, weights : as :class:`SystolicArray`.
    result : Out(stream.Signature(ResultAccumulator's output layout))
        ``rows`` beats per finished tile (after its last chunk of K), ``cols`` sums each.
    """

    def __init__(self, *, rows: int, cols: int, act_width: int = 8, psum_width: int = 16,
                 acc_width: int = 32, accumulator_ram_style: str | None = None,
                 adder: str = "generic", drained_register: bool = True):
        self.array = SystolicArray(rows=rows, cols=cols, act_width=act_width,
                                   psum_width=psum_width, adder=adder,
                                   drained_register=drained_register)
        self.accumulator = ResultAccumulator(rows=rows, cols=cols, psum_width=psum_width,
                                             acc_width=acc_width,
                                             ram_style=accumulator_ram_style,
                                             counted_reads=drained_register)
        self.rows, self.cols = rows, cols
        self.act_width, self.psum_width, self.acc_width = act_width, psum_width, acc_width
        super().__init__({
            "act": In(stream.Signature(activation_layout(rows, act_width))),
            "weights": In(stream.Signature(weight_layout(rows, cols))),
            "result": Out(self.accumulator.output.signature),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = self.array
        m.submodules.accumulator = self.accumulator
        wiring.connect(m, wiring.flipped(self.act), self.array.act)
        wiring.connect(m, wiring.flipped(self.weights), self.array.weights)
        wiring.connect(m, self.array.result, self.accumulator.input)
        wiring.connect(m, self.accumulator.output, wiring.flipped(self.result))
        return m
