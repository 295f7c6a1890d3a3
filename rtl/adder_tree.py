"""The adder-tree engine: ``k x lanes`` ternary products a cycle with no sum kept per product.

Why a second engine (docs/architecture.md, "What the goals need"): the output-stationary array
keeps two sums in every PE and reads them out through a rows:1 multiplexer per column, which at
2048 PEs needs more flip-flops than the ULX3S-85F has. Here every *lane* (one output) takes
``k`` activations of one token and its ``k`` trits each cycle, adds the ``k`` products in a
pipelined adder tree and accumulates the tree's sums in ``acc_width`` bits, so

* a product costs its share of the tree, not a register of its own, and nothing is drained;
* K is never split into chunks: the accumulator is as wide as the result;
* a weight beat is the ``k x lanes`` trits of a step, as wide as the array's with ``rows =
  k``, ``cols = lanes``, so weight words and memory are the array's, but *lane-major*
  (:func:`tree_weight_layout`): a lane's ``k`` trits are adjacent in the word, so each lane
  reads its own one or two block RAMs of the weight memory rather than a trit from every
  one; the activation beat is ``k`` int8s, here ``k`` consecutive elements of K of one token.

Arithmetic, the same in both adders so that the simulated engine is the built one:

* the *pair level* adds products two by two: ``ones(w1, x1) + w2 * x2``, where ``ones`` is
  ``x1``, ``~x1`` (one's complement) or 0, the second product an exact one with its carry-in.
  Each pair sum fits ``act_width + 1`` bits (``~x1`` is at most ``2**(act_width-1) - 1``). The
  ``-1`` trits on the first operand leave out a 1 each, kept as a bit beside the pair's sum;
* then one register level per halving, one bit wider each, to a single sum ``log2(k)`` cycles
  after the step, and one register more to carry it to the accumulator: ``log2(k) + 1``
  cycles (``sim.schedule.TreeConfig.latency``). Every adder above the pair level, and
  the accumulator, takes one of the left-out ones as its carry-in: there are ``k/2`` of each,
  so the result is exact and the ones cost no adder of their own;
* the accumulator adds the sum; a pass's last step moves the total into the
  result register and clears the accumulator (the flip-flops' synchronous reset), so the next
  pass accumulates from its first step.

With ``adder="ccu2c"`` (ECP5 builds) the pair's adder is a chain of ``CCU2C`` carry cells that
computes the second product's operand inside its own LUTs, as the carry-cell PE does
(``rtl.ternary_pe.ccu2c_ternary_sum``; its LUT contents are proven in tests/formal). The cells
take the activation's one's complement, so such an engine takes its activations inverted
(``data_n``, :func:`tree_activation_layout`): the producer's registers hold ``~x`` and drive
the lanes' carry cells with no inverter between them (one there was placed a route away
from both, two trips across the die in one cycle), and the pair's first operand, a LUT
either way, inverts it back for free. The tree's upper levels
and the accumulator are plain additions, which yosys maps onto carry chains.

Timing rules and the mapping of a layer are ``sim.cycles.tree_*`` and ``sim.schedule.plan_tree``.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sim.schedule import TreeConfig

from .accumulator import result_row_layout
from .fanout import fanout_levels, replicas
from .ternary_pe import TernaryPE, Trit, ccu2c_ternary_sum


def tree_weight_layout(k: int, lanes: int) -> data.ArrayLayout:
    """One weight beat: ``k`` trits for each lane, indexed ``[lane][i]`` (trit ``lane*k + i``
    of the word, ``sim.schedule.tree_pass_operands``). Row-major, as the array's beat, lane
    l's trits were spread over the whole word: on the ULX3S-85F's 32x64 device the placer
    then stretched each lane across the die towards the 114 block RAMs its 32 trits came
    from (nets inside a lane 81 tiles long)."""
    return data.ArrayLayout(data.ArrayLayout(Trit, k), lanes)


def tree_activation_layout(k: int, act_width: int, copies: int = 1, *,
                           inverted: bool = False) -> data.StructLayout:
    """One activation beat of the tree engine: ``k`` elements of K of one token, ``data[c][i]``
    in ``copies`` equal copies. Copy ``c`` feeds the lanes ``l`` with ``l * copies // lanes
    == c`` (:func:`lane_groups`), so that a producer can drive each group of lanes from a
    register of its own (``rtl.fanout``) rather than all of them from one. ``inverted`` (the
    ``ccu2c`` engine's): the field is ``data_n`` and holds each element's one's complement
    ``~x``."""
    return data.StructLayout({
        "data_n" if inverted else "data":
            data.ArrayLayout(data.ArrayLayout(signed(act_width), k), copies),
        "last": 1,          # last step of the pass: the lanes' totals become the result
    })


def inverted_activations(adder: str) -> bool:
    """Whether lanes with this pair adder take the activations one's complemented (``act_n``,
    a beat's ``data_n``): the carry cells' (module docstring)."""
    return adder == "ccu2c"


def lane_groups(lanes: int, groups: int) -> list[range]:
    """The lanes each copy of the activations feeds, copy ``c`` the lanes ``l`` with
    ``l * groups // lanes == c``: ``groups`` runs of adjacent lanes, as even as they go."""
    return [range(-(-c * lanes // groups), -(-(c + 1) * lanes // groups))
            for c in range(groups)]


def ones_product(code, x):
    """``x``, ``~x`` (one's complement) or 0 for the trit ``code`` (``Trit``: bit 0 set means
    skip, else bit 1 picks ``x`` over ``~x``): a product that leaves out the 1 of a -1."""
    return Mux(code[0], 0, Mux(code[1], x, ~x))


def pair_level(m: Module, operands: list, weights, width: int, add_pair=None) -> tuple:
    """The tree's pair level: ``ones(w1, x1) + w2 * x2`` for each pair of the ``width``-bit
    signed ``operands`` and their trits, registered as ``width + 1`` bits, and the 1 each -1
    on a first operand leaves out, registered beside it (:func:`reduce_pairs` adds them).
    The second product is exact: its 1 is the pair adder's carry-in. ``add_pair(p, ones,
    code2, j, total)`` builds the pair adder instead of the plain sum (the carry cells')."""
    pairs, ones_left = [], []
    for p in range(len(operands) // 2):
        i, j = 2 * p, 2 * p + 1
        code2 = weights[j].as_value()
        ones = Signal(signed(width), name=f"ones_{p}")
        m.d.comb += ones.eq(ones_product(weights[i].as_value(), operands[i]))
        total = Signal(signed(width + 1), name=f"pair_sum_{p}")
        if add_pair is None:
            m.d.comb += total.eq(ones + ones_product(code2, operands[j]) +
                                 (weights[j] == Trit.NEG))
        else:
            add_pair(p, ones, code2, j, total)
        pair = Signal(signed(width + 1), name=f"pair_{p}", reset_less=True)
        left_out = Signal(name=f"one_{p}", reset_less=True)
        m.d.sync += [pair.eq(total), left_out.eq(weights[i] == Trit.NEG)]
        pairs.append(pair)
        ones_left.append(left_out)
    return pairs, ones_left


def reduce_pairs(m: Module, level: list, ones_left: list, width: int) -> tuple:
    """Add the pair level's registered sums (``width`` bits each) in a tree with a register
    level per halving, one bit wider each; returns the top sum, the last left-out one and
    the tree's depth (the pair level counted).

    Each adder above the pair level takes one of the left-out ones as its carry-in (free:
    yosys gives a one-bit addend the carry chain's input) and whoever takes the top sum the
    last: ``k/2 - 1`` adders and one more, ``k/2`` ones. The others wait a register a level.
    Counting them instead and adding the count with the accumulator cost a lane of 32 on
    ECP5 587 LUT4 sites rather than 503. Every level still fits its width: a first operand
    is ``-2**(w-1) .. 2**(w-1) - 1`` (``w = width - 1``), a product ``-2**(w-1) ..
    2**(w-1)``, so a subtree of ``2**d`` products and the ``2**(d-1) - 1`` carry-ins of its
    adders sum to ``-2**(w-1+d) .. 2**(d-1) * (2**w - 1) + 2**(d-1) - 1``, that is
    ``2**(w-1+d) - 1``: a signed ``w + d`` bits."""
    ones_left = list(ones_left)
    depth = 1
    while len(level) > 1:
        depth += 1
        width += 1
        nxt = []
        for p in range(0, len(level), 2):
            s = Signal(signed(width), name=f"sum_{depth}_{p // 2}", reset_less=True)
            m.d.sync += s.eq(level[p] + level[p + 1] + ones_left.pop())
            nxt.append(s)
        level = nxt
        later = [Signal(name=f"one_{depth}_{i}", reset_less=True)
                 for i in range(len(ones_left))]
        m.d.sync += [a.eq(b) for a, b in zip(later, ones_left)]
        ones_left = later
    assert len(ones_left) == 1
    return level[0], ones_left[0], depth


def accumulate(m: Module, acc: Signal, addend, result_out, add, capture, *,
               held: bool = True) -> None:
    """A lane's accumulator stage: ``add`` adds ``addend`` to ``acc``; ``capture`` moves the
    total into a result register (driving ``result_out``) and clears ``acc``. The result
    has no reset: a capture writes it before the engine offers it. The clear takes priority
    so that yosys maps it onto the flip-flops' synchronous reset, as the PE's partial sum.
    ``held=False``: no result register, ``result_out`` is the total in the capture cycle
    (for a sink that takes it then: ``rtl.serial_tree`` without back-pressure)."""
    total = Signal(signed(len(acc)), name="acc_total")
    m.d.comb += total.eq(acc + addend)
    if held:
        result = Signal.like(result_out, name="result", reset_less=True)
        m.d.comb += result_out.eq(result)
        with m.If(capture):
            m.d.sync += result.eq(total)
    else:
        m.d.comb += result_out.eq(total)
    with m.If(capture):
        m.d.sync += acc.eq(0)
    with m.Elif(add):
        m.d.sync += acc.eq(total)


class TreeLane(wiring.Component):
    """One output lane: the pair level, the adder tree and the accumulator.

    The tree's registers take a new sum every cycle whether or not a step was taken (no
    enable to fan out); only the accumulator looks at whether its sum is a step's.

    Members
    -------
    act : In(ArrayLayout(signed(act_width), k))
        The step's activations (its copy of them, shared with the other lanes of the copy).
        With ``adder="ccu2c"`` the lane has ``act_n`` instead, their one's complements
        (``~x``, what the carry cells take; module docstring).
    weights : In(ArrayLayout(Trit, k))
        This lane's trits for the step.
    add : In(1)
        The sum now leaving the tree is a step's (the step ``latency`` cycles ago): add it.
    capture : In(1)
        ... and it is its pass's last step (implies ``add``): the total goes to ``result``, the
        accumulator restarts from 0. The accumulator has no reset: ``capture`` clears it, and
        the driver holds ``capture`` in a reset (as :class:`TreeEngine` does).
    acc : Out(signed(acc_width))
        The running sum of the current pass (observable for tests; costs nothing).
    result : Out(signed(acc_width))
        The total of the last finished pass, held until the next capture.
    """

    def __init__(self, *, k: int, act_width: int = 8, acc_width: int = 32,
                 adder: str = "generic"):
        self.config = TreeConfig(k=k, lanes=1, act_bits=act_width, acc_bits=acc_width)
        self.adder = TernaryPE.check_adder(adder)
        self.inverted = inverted_activations(adder)
        self.k, self.act_width, self.acc_width = k, act_width, acc_width
        acts = data.ArrayLayout(signed(act_width), k)
        super().__init__({
            "act_n" if self.inverted else "act": In(acts),
            "weights": In(data.ArrayLayout(Trit, k)),
            "add": In(1),
            "capture": In(1),
            "acc": Out(signed(acc_width)),
            "result": Out(signed(acc_width)),
        })

    def elaborate(self, platform):
        m = Module()
        k, w = self.k, self.act_width

        # the activations as the pair's first operand takes them (a LUT inverts for free)
        act = [~self.act_n[i] if self.inverted else self.act[i] for i in range(k)]
        add_pair = None
        if self.adder == "ccu2c":
            def add_pair(p, ones, code2, j, total):
                ccu2c_ternary_sum(m, ones, code2, self.act_n[j], total, prefix=f"pair_{p}_")
        pairs, ones_left = pair_level(m, act, self.weights, w, add_pair)
        tree_top, tree_one, depth = reduce_pairs(m, pairs, ones_left, w + 1)
        assert depth == self.config.levels

        # A register between the tree's top and the accumulator: the placer can then put the
        # accumulator (and the result register it feeds) apart from the tree. On the
        # ULX3S-85F's 32x64 device these hops were the longest nets left, up to 92 tiles
        # (each lane's accumulator sits near the result buffer, docs/architecture.md,
        # "Boards"); with the register the hop is a route with no logic after it.
        top = Signal.like(tree_top, name="top_sum", reset_less=True)
        top_one = Signal(name="top_one", reset_less=True)
        m.d.sync += [top.eq(tree_top), top_one.eq(tree_one)]

        # The accumulator (``accumulate``) has no reset of its own: the engine holds
        # ``capture`` high in a reset, which clears it, so its synchronous reset is
        # ``capture`` alone rather than a gate of ``capture`` and the domain's reset, a net
        # that reached every lane (TreeEngine, "the lanes' flags").
        acc = Signal.like(self.acc, reset_less=True)
        m.d.comb += self.acc.eq(acc)
        accumulate(m, acc, top + top_one, self.result, self.add, self.capture)
        return m


class TreeEngine(wiring.Component):
    """``lanes`` :class:`TreeLane` s fed pass by pass as ``sim.schedule.plan_tree`` lays them out.

    Parameters
    ----------
    k : int
        Products per lane and cycle: a power of two, at least 2.
    lanes : int
        Outputs per pass.
    act_width, acc_width : int
        Widths of the activations and of the accumulators (and results).
    adder : str
        The pair level's adder: ``"generic"``, or ``"ccu2c"`` for ECP5 builds.
    act_copies : int
        Copies of the activations in a beat (:func:`tree_activation_layout`), 1 to ``lanes``;
        each feeds its group of lanes.

    Members
    -------
    act : In(stream.Signature(tree_activation_layout(k, act_width, act_copies, inverted=...)))
        ``inverted`` with ``adder="ccu2c"``: the beat's field is then ``data_n``, the
        activations' one's complements (module docstring).
    weights : In(stream.Signature(tree_weight_layout(k, lanes)))
        Taken together: a step happens when both are valid, except that a ``last`` beat waits
        while the previous pass's result is pending (from its last step until its result beat
        leaves).
    result : Out(stream.Signature(rtl.accumulator.result_row_layout(lanes, acc_width)))
        One beat per pass, its lanes' totals, offered ``latency + 1`` cycles after the pass's
        last step; ``last`` is always set (a beat completes its tile).
    """

    def __init__(self, *, k: int, lanes: int, act_width: int = 8, acc_width: int = 32,
                 adder: str = "generic", act_copies: int = 1):
        self.config = TreeConfig(k=k, lanes=lanes, act_bits=act_width, acc_bits=acc_width)
        self.adder = TernaryPE.check_adder(adder)
        if not 1 <= act_copies <= lanes:
            raise ValueError(f"act_copies must be 1 to lanes ({lanes}), not {act_copies}")
        self.inverted = inverted_activations(adder)
        self.k, self.lanes, self.act_copies = k, lanes, act_copies
        self.act_width, self.acc_width = act_width, acc_width
        act_layout = tree_activation_layout(k, act_width, act_copies, inverted=self.inverted)
        super().__init__({
            "act": In(stream.Signature(act_layout)),
            "weights": In(stream.Signature(tree_weight_layout(k, lanes))),
            "result": Out(stream.Signature(result_row_layout(lanes, acc_width))),
        })

    def elaborate(self, platform):
        m = Module()
        act, weights, result = self.act, self.weights, self.result

        # A last step reserves the result register until its beat has left: one register, so
        # no path from the sink's ready reaches the sources' (sim.cycles' timing rules).
        pending = Signal()
        may_step = ~act.payload.last | ~pending
        step = Signal()
        m.d.comb += [
            act.ready.eq(weights.valid & may_step),
            weights.ready.eq(act.valid & may_step),
            step.eq(act.valid & act.ready),
        ]

        # The step and its last flag travel down beside the sums, one register a level.
        add, last = step, act.payload.last
        for level in range(1, self.config.latency + 1):
            add_l = Signal(name=f"add_{level}")
            last_l = Signal(name=f"last_{level}")
            m.d.sync += [add_l.eq(add), last_l.eq(last & add)]
            add, last = add_l, last_l
        groups = lane_groups(self.lanes, self.act_copies)
        lane_add, lane_capture = self._lane_flags(m, step, step & act.payload.last, len(groups))

        copies = act.payload.data_n if self.inverted else act.payload.data
        for copy, lanes in enumerate(groups):
            for lane in lanes:
                unit = TreeLane(k=self.k, act_width=self.act_width, acc_width=self.acc_width,
                                adder=self.adder)
                m.submodules[f"lane_{lane}"] = unit
                m.d.comb += [
                    (unit.act_n if self.inverted else unit.act).eq(copies[copy]),
                    unit.weights.eq(weights.payload[lane]),
                    unit.add.eq(lane_add[copy]),
                    unit.capture.eq(lane_capture[copy]),
                    result.payload.data[lane].eq(unit.result),
                ]

        m.d.comb += result.payload.last.eq(1)
        with m.If(result.valid & result.ready):
            m.d.sync += [result.valid.eq(0), pending.eq(0)]
        with m.If(last):
            m.d.sync += result.valid.eq(1)
        with m.If(step & act.payload.last):
            m.d.sync += pending.eq(1)
        return m

    def _lane_flags(self, m: Module, add, capture, groups: int) -> tuple[list, list]:
        """The lanes' ``add`` and ``capture``, one of each for every group of lanes: delayed as
        the engine's own flags (``latency`` registers), but each level of the delay in more
        copies than the one before, one per group at the last (``rtl.fanout.fanout_levels``),
        so that no flip-flop drives lanes across the die: the one pair that enabled and cleared all
        2,048 accumulator flip-flops of the ULX3S-85F's trees spanned 93 and 99 tiles of its
        placement, and the gate of ``capture`` and the domain's reset in front of their
        synchronous reset 100. A fan-out tree in the delay costs no cycle. The last level's
        ``capture`` copies start at 1, so a reset clears the accumulators (which have no
        reset of their own, :class:`TreeLane`)."""
        adds, captures = [add], [capture]
        latency = self.config.latency
        for level, n in enumerate(fanout_levels(groups, latency), start=1):
            next_adds = replicas(Signal(), n, name=f"lane_add_{level}", reset_less=False)
            next_captures = replicas(Signal(), n, name=f"lane_capture_{level}",
                                     reset_less=False, init=int(level == latency))
            for c in range(n):
                source = c * len(adds) // n
                m.d.sync += [next_adds[c].eq(adds[source]),
                             next_captures[c].eq(captures[source])]
            adds, captures = next_adds, next_captures
        return ([adds[g * len(adds) // groups] for g in range(groups)],
                [captures[g * len(captures) // groups] for g in range(groups)])
