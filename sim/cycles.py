"""The cycle model of the array: the golden definition of how many cycles a plan takes.

Timing rules of ``rtl.systolic.SystolicArray`` with its accumulator (``rtl.accumulator``):

* A step (one weight beat and one activation beat) is taken in any cycle where both operand
  streams are valid, except that the last step of a pass waits until the previous pass has been
  drained completely (its results sit in the PEs' result registers until then).
* Capturing a pass starts its drain on the next cycle: ``rows`` result beats, one row per cycle,
  each moved from the result registers into a one-row drain register, which offers it on the
  following cycle. A row moves in when the drain register is empty or its beat leaves in the same
  cycle. Beats of a pass that is not the last chunk of its tile go into the accumulator and need
  nothing from outside; beats of a last chunk leave as output and wait for the sink's ``ready``.

At full rate (operands always valid, sink always ready) this gives the closed form
``L_1 + sum_{i>=2} max(L_i, rows + 1) + rows + 1`` for passes of lengths ``L_i``: a pass costs its
length, the drain hides behind the next pass when that pass is longer than ``rows``, and only the
final drain (``rows`` cycles, and one for the drain register) is exposed. ``simulate`` follows the same rules cycle by cycle for
arbitrary idle and back-pressure patterns; the RTL benches compare against both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from .schedule import ArrayConfig, Plan, TreeConfig, TreePlan

#: cycles the drain register (``rtl.systolic.SystolicArray``) adds to the final drain
DRAIN_REGISTER = 1


@dataclass(frozen=True)
class CycleCount:
    total: int          # cycles from the first step to the last result beat, inclusive
    busy: int           # cycles in which the array took a step (every PE accumulates)
    stall_input: int    # cycles with work left but an operand stream not valid
    stall_drain: int    # cycles in which the last step of a pass waited for the previous drain
    drain_tail: int     # cycles after the last step, draining the final pass

    def as_dict(self) -> dict:
        return asdict(self)


def full_rate_cycles(config: ArrayConfig, lengths: Sequence[int]) -> int:
    """Total cycles of passes of ``lengths`` at full rate (closed form)."""
    if not lengths:
        return 0
    R = config.rows
    return lengths[0] + sum(max(L, R + 1) for L in lengths[1:]) + R + DRAIN_REGISTER


def full_rate_count(plan: Plan) -> CycleCount:
    """The :class:`CycleCount` of ``plan`` at full rate, in closed form: what
    ``simulate(cfg, plan.lengths, plan.finals)`` returns, without stepping every cycle."""
    return full_rate_count_of(plan.config, plan.lengths)


def full_rate_count_of(config: ArrayConfig, lengths: Sequence[int]) -> CycleCount:
    """The :class:`CycleCount` of passes of ``lengths`` streamed back to back at full rate.

    Every step is busy, no input stalls, the final drain is ``rows + 1`` cycles, and the rest of
    :func:`full_rate_cycles` is the wait of short passes for the previous drain.
    """
    total = full_rate_cycles(config, lengths)
    if not lengths:
        return CycleCount(total=0, busy=0, stall_input=0, stall_drain=0, drain_tail=0)
    busy = sum(lengths)
    tail = config.rows + DRAIN_REGISTER
    return CycleCount(total=total, busy=busy, stall_input=0, stall_drain=total - busy - tail,
                      drain_tail=tail)


def plan_cycles(plan: Plan) -> int:
    return full_rate_cycles(plan.config, plan.lengths)


def utilization(plan: Plan, cycles: int | None = None) -> float:
    """Fraction of PE-cycles doing useful multiply-accumulates."""
    cycles = plan_cycles(plan) if cycles is None else cycles
    return plan.useful_macs / (plan.config.pes * cycles)


def _always(_t: int) -> bool:
    return True


def simulate(config: ArrayConfig, lengths: Sequence[int], finals: Sequence[bool],
             act_offer: Callable[[int], bool] = _always,
             weight_offer: Callable[[int], bool] = _always,
             out_ready: Callable[[int], bool] = _always,
             max_cycles: int = 10**8) -> CycleCount:
    """Cycle-by-cycle model of the array's handshakes.

    ``act_offer(t)`` / ``weight_offer(t)``: whether that source, holding no pending beat, starts
    offering its next beat in cycle ``t`` (once offered, a beat stays valid until taken, as the
    stream rules require). ``out_ready(t)``: the sink's ready in cycle ``t``. Cycle 0 is the first
    cycle in which a source may offer.
    """
    if len(lengths) != len(finals):
        raise ValueError("lengths and finals differ in length")
    if any(L < 1 for L in lengths):
        raise ValueError("every pass needs at least one step")
    R = config.rows
    last_flags = []
    for L in lengths:
        last_flags += [False] * (L - 1) + [True]
    pass_of_step = []
    for i, L in enumerate(lengths):
        pass_of_step += [i] * L
    steps = len(last_flags)

    next_step = 0
    act_valid = weight_valid = False
    drain_left, drain_final = 0, False
    held = None     # the drain register: empty, or whether its row is a final chunk's
    busy = stall_input = stall_drain = drain_tail = 0
    t = 0
    while next_step < steps or drain_left or held is not None:
        if t >= max_cycles:
            raise RuntimeError(f"cycle model did not finish within {max_cycles} cycles")
        if next_step < steps:
            act_valid = act_valid or act_offer(t)
            weight_valid = weight_valid or weight_offer(t)
        out_fire = held is not None and (not held or out_ready(t))
        row_moves = drain_left > 0 and (held is None or out_fire)
        operands = next_step < steps and act_valid and weight_valid
        step_fire = operands and (not last_flags[next_step] or drain_left == 0)
        if step_fire:
            busy += 1
        elif next_step < steps:
            if operands:
                stall_drain += 1
            else:
                stall_input += 1
        else:
            drain_tail += 1
        if out_fire:
            held = None
        if row_moves:
            held = drain_final
            drain_left -= 1
        if step_fire:
            if last_flags[next_step]:
                drain_left, drain_final = R, finals[pass_of_step[next_step]]
            next_step += 1
            act_valid = weight_valid = False
        t += 1
    return CycleCount(total=t, busy=busy, stall_input=stall_input,
                      stall_drain=stall_drain, drain_tail=drain_tail)


# ---------------------------------------------------------------------------------------------
# The adder-tree engine (rtl.adder_tree.TreeEngine)
# ---------------------------------------------------------------------------------------------
#
# Timing rules:
#
# * A step is taken in any cycle where both operand streams are valid, except that the last step
#   of a pass waits while the previous pass's result is pending: from the cycle after its own
#   last step until the cycle its result beat leaves (the engine keeps one result register).
# * A step's sum reaches the accumulator ``latency`` (= log2(k) + 1) cycles after the step; a
#   last step's total is then written into the result register, offered on the following
#   cycle.
#
# At full rate the last step of pass i + 1 can follow pass i's by ``latency + 2`` cycles at the
# soonest, so ``L_1 + sum_{i>=2} max(L_i, latency + 2) + latency + 1`` cycles run from the first
# step to the last result beat: the array's closed form with ``latency`` in place of ``rows``
# and one cycle more between short passes (the pending flag is a register).


def tree_full_rate_cycles(config: TreeConfig, lengths: Sequence[int]) -> int:
    """Total cycles of tree passes of ``lengths`` at full rate (closed form)."""
    if not lengths:
        return 0
    P = config.latency
    return lengths[0] + sum(max(L, P + 2) for L in lengths[1:]) + P + 1


def tree_full_rate_count(config: TreeConfig, lengths: Sequence[int]) -> CycleCount:
    """The :class:`CycleCount` of tree passes of ``lengths`` at full rate, in closed form:
    ``stall_drain`` counts the last steps' waits for the previous result, ``drain_tail`` the
    cycles from the last step to the last result beat."""
    total = tree_full_rate_cycles(config, lengths)
    if not lengths:
        return CycleCount(total=0, busy=0, stall_input=0, stall_drain=0, drain_tail=0)
    busy, tail = sum(lengths), config.latency + 1
    return CycleCount(total=total, busy=busy, stall_input=0, stall_drain=total - busy - tail,
                      drain_tail=tail)


def tree_plan_cycles(plan: TreePlan) -> int:
    """Full-rate cycles of a tree plan on the engine its config describes: the parallel
    trees, or with ``digit_bits`` the serial ones (:func:`serial_tree_plan_cycles`)."""
    if plan.config.digit_bits is not None:
        return serial_tree_plan_cycles(plan)
    return tree_full_rate_cycles(plan.config, plan.lengths)


def tree_utilization(plan: TreePlan, cycles: int | None = None) -> float:
    """Fraction of product-cycles doing useful multiply-accumulates (padding of K and unused
    lanes count as idle). The serial trees do ``pes / D`` products a cycle (a step's in ``D``
    cycles), so that is their 100%."""
    cycles = tree_plan_cycles(plan) if cycles is None else cycles
    return plan.useful_macs / (products_per_cycle(plan.config) * cycles)


def tree_simulate(config: TreeConfig, lengths: Sequence[int],
                  act_offer: Callable[[int], bool] = _always,
                  weight_offer: Callable[[int], bool] = _always,
                  out_ready: Callable[[int], bool] = _always,
                  max_cycles: int = 10**8) -> CycleCount:
    """Cycle-by-cycle model of the tree engine's handshakes (arguments as :func:`simulate`)."""
    if any(L < 1 for L in lengths):
        raise ValueError("every pass needs at least one step")
    last_flags = []
    for L in lengths:
        last_flags += [False] * (L - 1) + [True]
    steps = len(last_flags)
    P = config.latency

    next_step = 0
    act_valid = weight_valid = False
    pending = False     # a result is on its way or in the result register
    arrival = None      # the cycle whose end writes the pending result into the register
    held = False        # the result register is full (its beat is offered)
    busy = stall_input = stall_drain = drain_tail = 0
    t = 0
    while next_step < steps or pending:
        if t >= max_cycles:
            raise RuntimeError(f"cycle model did not finish within {max_cycles} cycles")
        if next_step < steps:
            act_valid = act_valid or act_offer(t)
            weight_valid = weight_valid or weight_offer(t)
        out_fire = held and out_ready(t)
        operands = next_step < steps and act_valid and weight_valid
        step_fire = operands and (not last_flags[next_step] or not pending)
        if step_fire:
            busy += 1
        elif next_step < steps:
            if operands:
                stall_drain += 1
            else:
                stall_input += 1
        else:
            drain_tail += 1
        if out_fire:
            held = pending = False
        if arrival == t:
            held, arrival = True, None
        if step_fire:
            if last_flags[next_step]:
                pending, arrival = True, t + P
            next_step += 1
            act_valid = weight_valid = False
        t += 1
    return CycleCount(total=t, busy=busy, stall_input=stall_input,
                      stall_drain=stall_drain, drain_tail=drain_tail)


# ---------------------------------------------------------------------------------------------
# The digit-serial tree engine (rtl.serial_tree.SerialTreeEngine)
# ---------------------------------------------------------------------------------------------
#
# Timing rules (``D = config.cycles_per_step`` beats to a slot; ``S`` steps in a row take
# ``S + 1`` slots, ``sim.schedule.serial_tree_beats``):
#
# * A beat is taken in any cycle it is offered, except that the first beat of a slot whose step
#   ends a pass waits while the previous pass's result is pending: from that slot's first beat
#   until the cycle its result beat leaves.
# * A pass's total is written into the result register ``levels + 1`` cycles after its last
#   slot's last beat (the tree's registers, the Horner register), and offered on the next.
#
# At full rate the last slot of pass i + 1 can start ``D + levels + 2`` cycles after pass i's
# at the soonest, so ``D * L_1 + sum_{i>=2} max(D * L_i, D + levels + 2) + D + levels + 2``
# cycles run from the first beat to the last result beat.
#
# Without back-pressure (``config.backpressure`` False, the device core's engine) no beat
# waits, and a pass's total leaves in the cycle it is captured, ``levels + 1`` cycles after
# its last beat: ``D * (sum L_i + 1) + levels + 1`` cycles.


def serial_tree_full_rate_cycles(config: TreeConfig, lengths: Sequence[int]) -> int:
    """Total cycles of serial tree passes of ``lengths`` (steps) in a row at full rate."""
    if not lengths:
        return 0
    D = config.cycles_per_step
    if not config.backpressure:
        return D * (sum(lengths) + 1) + config.levels + 1
    wait = D + config.levels + 2
    return D * lengths[0] + sum(max(D * L, wait) for L in lengths[1:]) + wait


def _check_serial(config: TreeConfig, what: str) -> None:
    if config.digit_bits is None:
        raise ValueError(f"{what} needs a TreeConfig with digit_bits")


def serial_tree_full_rate_count(config: TreeConfig, lengths: Sequence[int]) -> CycleCount:
    """The :class:`CycleCount` of serial tree passes of ``lengths`` steps in a row at full
    rate, in closed form (what :func:`serial_tree_simulate` counts): every beat is busy, ``D``
    for each of the ``S + 1`` slots of ``S`` steps; the final result leaves ``levels + 2``
    cycles after the last beat (``levels + 1`` without back-pressure); the rest is the wait of
    short passes' last slots (none without back-pressure)."""
    _check_serial(config, "serial_tree_full_rate_count")
    total = serial_tree_full_rate_cycles(config, lengths)
    if not lengths:
        return CycleCount(total=0, busy=0, stall_input=0, stall_drain=0, drain_tail=0)
    busy = config.cycles_per_step * (sum(lengths) + 1)
    tail = config.levels + (2 if config.backpressure else 1)
    return CycleCount(total=total, busy=busy, stall_input=0, stall_drain=total - busy - tail,
                      drain_tail=tail)


def serial_tree_plan_cycles(plan: TreePlan) -> int:
    """Full-rate cycles of a tree plan on the serial trees (its passes one run of steps)."""
    _check_serial(plan.config, "serial_tree_plan_cycles")
    return serial_tree_full_rate_cycles(plan.config, plan.lengths)


def serial_tree_simulate(config: TreeConfig, lengths: Sequence[int],
                         beat_offer: Callable[[int], bool] = _always,
                         out_ready: Callable[[int], bool] = _always,
                         max_cycles: int = 10**8) -> CycleCount:
    """Cycle-by-cycle model of the serial tree engine's handshakes for passes of ``lengths``
    steps in a row. ``busy`` counts the cycles a beat is taken, ``stall_input`` those with none
    offered, ``stall_drain`` a first beat waiting for the previous result, ``drain_tail`` the
    cycles after the last beat. Without ``config.backpressure`` no beat waits and the result
    leaves as it is captured (``out_ready`` is not asked: that engine's sink is always
    ready)."""
    _check_serial(config, "serial_tree_simulate")
    if any(L < 1 for L in lengths):
        raise ValueError("every pass needs at least one step")
    D = config.cycles_per_step
    slot_last = [False]          # slot 0 computes nothing
    for L in lengths:
        slot_last += [False] * (L - 1) + [True]
    beats = len(slot_last) * D if lengths else 0

    taken = 0
    offered = False              # a beat offered stays offered until it is taken
    pending = False
    arrival = None               # the cycle whose end writes a result into the register
    held = False
    busy = stall_input = stall_drain = drain_tail = 0
    t = 0
    # (without back-pressure a pass's result may still be on its way when the next pass's
    # first beat sets ``pending``, and it then clears it: the run ends with the last result)
    while taken < beats or pending or arrival is not None or held:
        if t >= max_cycles:
            raise RuntimeError(f"cycle model did not finish within {max_cycles} cycles")
        slot, c = divmod(taken, D)
        offered = taken < beats and (offered or beat_offer(t))
        waits = (config.backpressure and c == 0 and taken < beats and slot_last[slot]
                 and pending)
        fire = offered and not waits
        if fire:
            busy += 1
        elif taken < beats:
            if offered:
                stall_drain += 1
            else:
                stall_input += 1
        else:
            drain_tail += 1
        if held and (out_ready(t) or not config.backpressure):
            held = pending = False
        if arrival == t:
            held, arrival = True, None
        if fire:
            if slot_last[slot]:
                if c == 0:
                    pending = True
                if c == D - 1:      # (the capture's cycle is the result's, without a register)
                    arrival = t + config.levels + (1 if config.backpressure else 0)
            taken += 1
            offered = False
        t += 1
    return CycleCount(total=t, busy=busy, stall_input=stall_input,
                      stall_drain=stall_drain, drain_tail=drain_tail)


# ---------------------------------------------------------------------------------------------
# Any engine
# ---------------------------------------------------------------------------------------------

def products_per_cycle(config: ArrayConfig | TreeConfig) -> int:
    """Ternary products the engine does a cycle at full rate: its PEs (the array, the
    parallel trees), or a step's ``pes`` in ``D`` cycles on the serial trees; as many as the
    trits of a weight-memory word (``TreeConfig.word_trits``)."""
    if isinstance(config, TreeConfig):
        return config.word_trits
    return config.pes


def stream_count(config: ArrayConfig | TreeConfig, lengths: Sequence[int]) -> CycleCount:
    """The full-rate :class:`CycleCount` of one stream of passes of ``lengths`` on the engine
    ``config`` describes (the array, the trees, or with ``digit_bits`` the serial trees): what
    the device's cycle counters add for it."""
    if isinstance(config, ArrayConfig):
        return full_rate_count_of(config, lengths)
    if config.digit_bits is not None:
        return serial_tree_full_rate_count(config, lengths)
    return tree_full_rate_count(config, lengths)
