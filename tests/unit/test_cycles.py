"""Tests of sim.cycles: the closed form, the cycle-by-cycle model and their agreement."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from firmware.commands import device_trees
from sim import cycles, schedule
from sim.schedule import ArrayConfig

SEED = 5150


def pattern(rng, p_true: float, n: int = 4000):
    """A per-cycle boolean pattern (True with probability ``p_true``); True beyond its end."""
    bits = (rng.random(n) < p_true).tolist()
    return lambda t: bits[t] if t < len(bits) else True


def random_lengths(rng, rows):
    n = int(rng.integers(1, 12))
    # a mix of passes shorter than rows + 1 (the drain stalls them) and longer ones
    hi = int(rng.choice([rows + 1, 2 * rows + 3, 40]))
    return [int(v) for v in rng.integers(1, hi + 1, size=n)]


# ---------------------------------------------------------------------------------------------
# Full rate: simulate == closed form
# ---------------------------------------------------------------------------------------------

def test_full_rate_simulate_equals_closed_form_random():
    rng = np.random.default_rng(SEED)
    for i in range(300):
        rows = int(rng.integers(1, 17))
        cfg = ArrayConfig(rows, int(rng.integers(1, 17)))
        lengths = random_lengths(rng, rows)
        finals = [bool(b) for b in rng.integers(0, 2, size=len(lengths))]
        c = cycles.simulate(cfg, lengths, finals)
        assert c.total == cycles.full_rate_cycles(cfg, lengths), (i, rows, lengths)
        assert c.busy == sum(lengths) and c.stall_input == 0
        assert c.drain_tail == rows + 1       # the drain register's cycle
        assert c.total == c.busy + c.stall_input + c.stall_drain + c.drain_tail
        # only passes shorter than rows+1 wait for the drain: rows+1-L cycles each
        assert c.stall_drain == sum(max(0, rows + 1 - L) for L in lengths[1:])


def test_full_rate_simulate_equals_closed_form_on_plans():
    rng = np.random.default_rng(SEED + 1)
    for _ in range(40):
        cfg = ArrayConfig(int(rng.integers(1, 6)), int(rng.integers(1, 6)),
                          psum_bits=int(rng.choice([10, 11, 12, 16])))
        M, N, K = int(rng.integers(1, 12)), int(rng.integers(1, 30)), int(rng.integers(1, 80))
        for mapping in schedule.MAPPINGS:
            plan = schedule.plan_linear(cfg, M, N, K, mapping)
            c = cycles.simulate(cfg, plan.lengths, plan.finals)
            assert c.total == cycles.plan_cycles(plan) == \
                cycles.full_rate_cycles(cfg, plan.lengths)


def test_hand_computed_rows4():
    # rows = 4, lengths [3, 2, 10], full rate:
    #   cycles 0..2    pass 0 steps; its last step (cycle 2) captures
    #   cycles 3..6    pass 0's rows move into the drain register (4 rows), and leave at 4..7
    #   cycle 3        pass 1 step 0; its last step must wait for the rows to move out:
    #   cycles 4..6    stall_drain (3 cycles); cycle 7: pass 1's last step (drain_left == 0)
    #   cycles 8..11   drain of pass 1, hidden behind
    #   cycles 8..17   pass 2's 10 steps (its last step at 17: drain long done)
    #   cycles 18..21  final rows move, leaving at 19..22 (drain_tail = 5)
    # total = 23 = 3 + max(2, 5) + max(10, 5) + 4 + 1; busy = 15
    cfg = ArrayConfig(4, 4)
    c = cycles.simulate(cfg, [3, 2, 10], [False, False, True])
    assert c == cycles.CycleCount(total=23, busy=15, stall_input=0, stall_drain=3, drain_tail=5)
    assert cycles.full_rate_cycles(cfg, [3, 2, 10]) == 23
    assert c.as_dict() == {"total": 23, "busy": 15, "stall_input": 0, "stall_drain": 3,
                           "drain_tail": 5}


def test_hand_computed_rows1_and_single_pass():
    # rows = 1, lengths [1, 1, 1]: step at 0 captures, the row moves into the drain register at
    # 1 (and leaves at 2); next pass's only (last) step waits until drain_left == 0, i.e. cycle
    # 2; move 3; step 4; move 5; leave 6: total 7 = 1 + max(1, 2) + max(1, 2) + 1 + 1
    cfg = ArrayConfig(1, 3)
    c = cycles.simulate(cfg, [1, 1, 1], [True] * 3)
    assert c == cycles.CycleCount(total=7, busy=3, stall_input=0, stall_drain=2, drain_tail=2)
    # single pass of length 5 on 3 rows: 5 steps + 3 rows moved + the last one's leaving
    assert cycles.simulate(ArrayConfig(3, 3), [5], [True]).total == 9
    assert cycles.full_rate_cycles(ArrayConfig(3, 3), []) == 0


def test_hand_computed_with_idle_and_back_pressure():
    # rows = 2, lengths [2, 3], finals [True, True]
    # act offers at every cycle except 1; weights always; sink not ready at cycles 3 and 4.
    #   cycle 0: step (pass 0, k=0)
    #   cycle 1: act not offered -> stall_input
    #   cycle 2: step (pass 0, last) -> capture, drain_left = 2
    #   cycle 3: step (pass 1, k=0); row 0 moves into the empty drain register
    #   cycle 4: step (pass 1, k=1); row 0 not taken (not ready), so row 1 cannot move
    #   cycle 5: pass 1's last step waits (drain_left 1) -> stall_drain; row 0 taken, row 1
    #            moves in its place
    #   cycle 6: last step of pass 1 (drain_left 0) -> capture; row 1 taken
    #   cycles 7..9: pass 1's rows move (7, 8) and leave (8, 9): drain_tail 3
    # total = 10, busy = 5, stall_input = 1, stall_drain = 1, drain_tail = 3
    cfg = ArrayConfig(2, 2)
    c = cycles.simulate(cfg, [2, 3], [True, True],
                        act_offer=lambda t: t != 1,
                        out_ready=lambda t: t not in (3, 4))
    assert c == cycles.CycleCount(total=10, busy=5, stall_input=1, stall_drain=1, drain_tail=3)
    # the same with finals [False, True]: pass 0's rows do not wait for ready: they move at 3
    # and 4 and leave at 4 and 5, so pass 1's last step goes at cycle 5 and its rows move at
    # 6, 7 and leave at 7, 8: total 9
    c = cycles.simulate(cfg, [2, 3], [False, True],
                        act_offer=lambda t: t != 1,
                        out_ready=lambda t: t not in (3, 4))
    assert c == cycles.CycleCount(total=9, busy=5, stall_input=1, stall_drain=0, drain_tail=3)


def test_offer_is_held_until_taken():
    # A source that offers only in cycle 0 keeps its beat valid until taken, then never offers
    # again: with 1 step it completes; the weight stream offers late (cycle 3).
    cfg = ArrayConfig(1, 1)
    c = cycles.simulate(cfg, [1], [True], act_offer=lambda t: t == 0,
                        weight_offer=lambda t: t >= 3)
    assert c == cycles.CycleCount(total=6, busy=1, stall_input=3, stall_drain=0, drain_tail=2)


# ---------------------------------------------------------------------------------------------
# Random idle and back-pressure: counter identities, monotonicity
# ---------------------------------------------------------------------------------------------

def test_counters_with_random_idle_and_back_pressure():
    rng = np.random.default_rng(SEED + 2)
    for i in range(200):
        rows = int(rng.integers(1, 9))
        cfg = ArrayConfig(rows, int(rng.integers(1, 9)))
        lengths = random_lengths(rng, rows)
        finals = [bool(b) for b in rng.integers(0, 2, size=len(lengths))]
        ps = rng.uniform(0.2, 1.0, size=3)
        c = cycles.simulate(cfg, lengths, finals, act_offer=pattern(rng, ps[0]),
                            weight_offer=pattern(rng, ps[1]), out_ready=pattern(rng, ps[2]))
        assert c.total == c.busy + c.stall_input + c.stall_drain + c.drain_tail, (i, c)
        assert c.busy == sum(lengths)
        assert c.total >= cycles.full_rate_cycles(cfg, lengths), (i, c)
        assert c.drain_tail >= rows


def test_monotonic_in_idle_and_back_pressure():
    """Removing offers (or ready cycles) from a pattern never makes the run shorter."""
    rng = np.random.default_rng(SEED + 3)
    for i in range(150):
        rows = int(rng.integers(1, 7))
        cfg = ArrayConfig(rows, 2)
        lengths = random_lengths(rng, rows)
        finals = [bool(b) for b in rng.integers(0, 2, size=len(lengths))]
        n = 3000
        base = [rng.random(n) < rng.uniform(0.4, 1.0) for _ in range(3)]
        fns = [lambda t, b=b: bool(b[t]) if t < n else True for b in base]
        ref = cycles.simulate(cfg, lengths, finals, *fns)
        for which in range(3):
            # a sub-pattern: every True of the base pattern may become False
            sub = base[which] & (rng.random(n) < 0.7)
            more = list(fns)
            more[which] = lambda t, b=sub: bool(b[t]) if t < n else True
            c = cycles.simulate(cfg, lengths, finals, *more)
            assert c.total >= ref.total, (i, which, lengths, c, ref)
        # and full rate is the fastest of all
        assert ref.total >= cycles.full_rate_cycles(cfg, lengths)


def test_simulate_rejects_bad_input():
    cfg = ArrayConfig(2, 2)
    with pytest.raises(ValueError, match="differ in length"):
        cycles.simulate(cfg, [1, 2], [True])
    with pytest.raises(ValueError, match="at least one step"):
        cycles.simulate(cfg, [3, 0], [False, True])
    with pytest.raises(RuntimeError, match="did not finish"):
        cycles.simulate(cfg, [3], [True], act_offer=lambda t: False, max_cycles=100)
    with pytest.raises(RuntimeError, match="did not finish"):
        cycles.simulate(cfg, [3], [True], out_ready=lambda t: False, max_cycles=100)
    assert cycles.simulate(cfg, [], []).total == 0


# ---------------------------------------------------------------------------------------------
# Utilization
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("M", [1, 64])
def test_utilization_decode_and_prefill(M):
    cfg = ArrayConfig(16, 16)
    plan = schedule.plan_linear(cfg, M, 2560, 2560)
    if M == 1:
        assert plan.mapping == "outputs"
    u = cycles.utilization(plan)
    assert 0.9 <= u <= 1.0, u
    assert u == plan.useful_macs / (cfg.pes * cycles.plan_cycles(plan))
    assert cycles.utilization(plan, 2 * cycles.plan_cycles(plan)) == pytest.approx(u / 2)


def test_fill_and_drain_overhead_is_bounded():
    rng = np.random.default_rng(SEED + 4)
    for _ in range(60):
        cfg = ArrayConfig(int(rng.integers(1, 17)), int(rng.integers(1, 17)),
                          psum_bits=int(rng.choice([10, 12, 16])))
        M, N, K = int(rng.integers(1, 40)), int(rng.integers(1, 300)), int(rng.integers(1, 700))
        plan = schedule.plan_linear(cfg, M, N, K)
        overhead = cycles.plan_cycles(plan) - sum(plan.lengths)
        assert 0 <= overhead <= len(plan.passes) * (cfg.rows + cfg.cols), (cfg, M, N, K)
        assert 0 < cycles.utilization(plan) <= 1.0


# ---------------------------------------------------------------------------------------------
# The adder-tree engine: tree_simulate and its closed form
# ---------------------------------------------------------------------------------------------

def test_tree_full_rate_simulate_equals_closed_form():
    rng = np.random.default_rng(SEED + 20)
    for i in range(300):
        cfg = schedule.TreeConfig(k=int(2 ** rng.integers(1, 7)), lanes=2)
        P = cfg.latency
        lengths = [int(v) for v in rng.integers(1, int(rng.choice([P + 2, 3 * P, 40])) + 1,
                                                size=int(rng.integers(1, 12)))]
        c = cycles.tree_simulate(cfg, lengths)
        assert c == cycles.tree_full_rate_count(cfg, lengths), (i, cfg.k, lengths)
        assert c.total == cycles.tree_full_rate_cycles(cfg, lengths)
        assert c.busy == sum(lengths) and c.stall_input == 0 and c.drain_tail == P + 1
        # only last steps wait: a pass shorter than latency + 2 waits the difference
        assert c.stall_drain == sum(max(0, P + 2 - L) for L in lengths[1:])


def test_tree_hand_computed_k4():
    # k = 4: two tree levels and the register to the accumulator, latency 3. One pass of 3
    # steps: steps in cycles 0..2, the last step's sum reaches the accumulator in cycle 5,
    # whose end writes the result register; its beat is offered and taken in cycle 6.
    cfg = schedule.TreeConfig(k=4, lanes=1)
    assert cycles.tree_full_rate_cycles(cfg, [3]) == 7
    # Two passes of 1 step: the second last step waits until the first result has left
    # (cycle 4 is its beat), so it fires in cycle 5 (4 cycles waited) and its beat leaves in
    # cycle 9.
    assert cycles.tree_full_rate_cycles(cfg, [1, 1]) == 10
    # The sink holding ready low for 3 cycles delays the result, and the next pass, by 3.
    late = cycles.tree_simulate(cfg, [1, 1], out_ready=lambda t: not 4 <= t < 7)
    assert late.total == 13 and late.stall_drain == 4 + 3


def test_tree_simulate_with_idle_and_backpressure_accounts_every_cycle():
    rng = np.random.default_rng(SEED + 21)
    for _ in range(200):
        cfg = schedule.TreeConfig(k=int(2 ** rng.integers(1, 6)), lanes=1)
        lengths = [int(v) for v in rng.integers(1, 20, size=int(rng.integers(1, 8)))]
        c = cycles.tree_simulate(cfg, lengths, pattern(rng, 0.6), pattern(rng, 0.7),
                                 pattern(rng, 0.5))
        assert c.total == c.busy + c.stall_input + c.stall_drain + c.drain_tail
        assert c.busy == sum(lengths)
        assert c.total >= cycles.tree_full_rate_cycles(cfg, lengths)


def test_tree_utilization_of_a_decode_layer():
    # 2048 products a cycle, the BitNet-like decode layer N = 2560, K = 2560: 40 passes of 80
    # steps back to back, then the last result latency + 1 = 7 cycles later.
    plan = schedule.plan_tree(schedule.TreeConfig(k=32, lanes=64), 1, 2560, 2560)
    assert cycles.tree_plan_cycles(plan) == 40 * 80 + 7
    assert cycles.tree_utilization(plan) == pytest.approx(2560 * 2560 / (2048 * 3207))


# ---------------------------------------------------------------------------------------------
# The digit-serial tree engine: serial_tree_simulate and its closed form
# ---------------------------------------------------------------------------------------------

def test_serial_tree_full_rate_simulate_equals_closed_form():
    rng = np.random.default_rng(SEED + 22)
    for i in range(300):
        cfg = schedule.TreeConfig(k=int(2 ** rng.integers(1, 7)), lanes=8,
                                  digit_bits=int(rng.choice([1, 2, 4])))
        D = cfg.cycles_per_step
        lengths = [int(v) for v in rng.integers(1, int(rng.choice([2, 5, 30])) + 1,
                                                size=int(rng.integers(1, 12)))]
        c = cycles.serial_tree_simulate(cfg, lengths)
        assert c.total == cycles.serial_tree_full_rate_cycles(cfg, lengths), (i, cfg, lengths)
        # S steps take S + 1 slots; only a pass's last slot waits, for the previous result
        assert c.busy == D * (sum(lengths) + 1) and c.stall_input == 0
        wait = D + cfg.levels + 2
        assert c.stall_drain == sum(max(0, wait - D * L) for L in lengths[1:])
        assert c.drain_tail == cfg.levels + 2


def test_serial_tree_hand_computed_k4_two_bit_digits():
    # k = 4, 2-bit digits: 4 beats a slot, 2 tree levels. One pass of 1 step: slot 0 (no step)
    # in cycles 0..3, the step's slot in 4..7; its last digit's sum leaves the tree in cycle 9,
    # the Horner register takes it at that cycle's end, the capture in cycle 10 writes the
    # result, offered and taken in cycle 11.
    cfg = schedule.TreeConfig(k=4, lanes=4, digit_bits=2)
    assert cycles.serial_tree_full_rate_cycles(cfg, [1]) == 12
    # A second one-step pass waits at its first beat (cycles 8..11) until the first result
    # has left (cycle 11), so its slot runs in 12..15 and its result leaves in cycle 19.
    assert cycles.serial_tree_full_rate_cycles(cfg, [1, 1]) == 20
    assert cycles.serial_tree_simulate(cfg, [1, 1]).stall_drain == 4
    # The sink holding ready low for 3 cycles delays the result, and the next pass, by 3.
    late = cycles.serial_tree_simulate(cfg, [1, 1], out_ready=lambda t: not 11 <= t < 14)
    assert late.total == 23 and late.stall_drain == 4 + 3


def test_serial_tree_simulate_with_idle_and_backpressure_accounts_every_cycle():
    rng = np.random.default_rng(SEED + 23)
    for _ in range(200):
        cfg = schedule.TreeConfig(k=int(2 ** rng.integers(1, 6)), lanes=4, digit_bits=2)
        lengths = [int(v) for v in rng.integers(1, 10, size=int(rng.integers(1, 8)))]
        c = cycles.serial_tree_simulate(cfg, lengths, pattern(rng, 0.6), pattern(rng, 0.5))
        assert c.total == c.busy + c.stall_input + c.stall_drain + c.drain_tail
        assert c.busy == 4 * (sum(lengths) + 1)
        assert c.total >= cycles.serial_tree_full_rate_cycles(cfg, lengths)


def test_serial_tree_simulate_refuses_a_parallel_config_and_empty_passes():
    with pytest.raises(ValueError, match="digit_bits"):
        cycles.serial_tree_simulate(schedule.TreeConfig(k=4, lanes=4), [1])
    with pytest.raises(ValueError, match="at least one step"):
        cycles.serial_tree_simulate(schedule.TreeConfig(k=4, lanes=4, digit_bits=2), [2, 0])
    assert cycles.serial_tree_full_rate_cycles(
        schedule.TreeConfig(k=4, lanes=4, digit_bits=2), []) == 0


def test_serial_tree_full_rate_count_equals_simulate():
    """The closed form the emulator counts with is the cycle-by-cycle model at full rate,
    every counter of it, for random k, lanes, digits and passes (short ones that wait for
    the previous result among them)."""
    rng = np.random.default_rng(SEED + 24)
    for i in range(300):
        digit_bits = int(rng.choice([1, 2, 4]))
        D = 8 // digit_bits
        cfg = schedule.TreeConfig(k=int(2 ** rng.integers(1, 7)),
                                  lanes=D * int(rng.integers(1, 4)), digit_bits=digit_bits,
                                  backpressure=bool(rng.integers(2)))
        lengths = [int(v) for v in rng.integers(1, int(rng.choice([2, 5, 30])) + 1,
                                                size=int(rng.integers(0, 12)))]
        want = (cycles.serial_tree_simulate(cfg, lengths) if lengths
                else cycles.CycleCount(0, 0, 0, 0, 0))
        assert cycles.serial_tree_full_rate_count(cfg, lengths) == want, (i, cfg, lengths)
        assert cycles.stream_count(cfg, lengths) == want


def test_serial_tree_plan_by_hand():
    # k = 32, 4 lanes, 2-bit digits (the UP5K's): 5 tree levels, a step in 4 cycles. A decode
    # layer of 128 x 128 is 32 tiles of one pass of 4 steps, streamed in a row: 128 steps in
    # 129 slots of 4 beats (the first slot carries no digits), none waiting (a pass's 16
    # cycles exceed the 4 + 5 + 2 from one pass's last slot to the next's); the last result
    # leaves 4 + 5 + 2 = 11 cycles after the last slot starts, in cycle 128 * 4 + 10.
    cfg = schedule.TreeConfig(k=32, lanes=4, digit_bits=2)
    plan = schedule.plan_tree(cfg, 1, 128, 128)
    assert cycles.serial_tree_plan_cycles(plan) == 128 * 4 + 11
    assert cycles.tree_plan_cycles(plan) == 523        # the trees' entry point picks the model
    # 32 products a cycle (a step's 128 in 4): every one useful but in the 523 - 512 cycles
    assert cycles.products_per_cycle(cfg) == 32
    assert cycles.tree_utilization(plan) == pytest.approx(128 * 128 / (32 * 523))
    count = cycles.stream_count(cfg, plan.lengths)
    assert (count.busy, count.drain_tail, count.stall_drain) == (4 * (128 + 1), 7, 0)


def test_serial_tree_without_backpressure_by_hand():
    """The device core's serial trees (no back-pressure): no beat waits, and a result leaves
    in its capture cycle. k = 4, 2-bit digits, 2 levels: two one-step passes are 3 slots,
    cycles 0..11; the last beat's digit leaves the tree in cycle 13, the Horner register
    takes it then, and the capture in cycle 14 is the result's: 15 cycles, where the
    engine with back-pressure waits 4 cycles and takes 20 (the hand count above)."""
    cfg = replace(schedule.TreeConfig(k=4, lanes=4, digit_bits=2), backpressure=False)
    c = cycles.serial_tree_simulate(cfg, [1, 1])
    assert (c.total, c.busy, c.stall_drain, c.drain_tail) == (15, 12, 0, 3)
    assert cycles.serial_tree_full_rate_cycles(cfg, [1, 1]) == 15
    # the sink is not asked: the result leaves as it comes
    assert cycles.serial_tree_simulate(cfg, [1, 1], out_ready=lambda t: False) == c
    # idle between beats only moves the beats: the tail after the last one is the same
    idle = cycles.serial_tree_simulate(cfg, [1, 1], beat_offer=lambda t: t % 3 == 0)
    assert idle.busy == 12 and idle.stall_drain == 0 and idle.drain_tail == 3
    # the UP5K's 32 x 4 (5 levels) on a 128 x 128 decode layer: 129 slots, then 6 cycles
    up5k = device_trees("serial", 32, 4)
    assert not up5k.backpressure
    plan = schedule.plan_tree(up5k, 1, 128, 128)
    assert cycles.tree_plan_cycles(plan) == 129 * 4 + 6


def test_stream_count_is_each_engines_model():
    """``stream_count`` (what the emulator and the planner count a stream with) is each
    engine's cycle-by-cycle model at full rate."""
    rng = np.random.default_rng(SEED + 25)
    for _ in range(50):
        lengths = [int(v) for v in rng.integers(1, 20, size=int(rng.integers(1, 8)))]
        array = ArrayConfig(int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        tree = schedule.TreeConfig(k=int(2 ** rng.integers(1, 6)), lanes=3)
        serial = schedule.TreeConfig(k=tree.k, lanes=4, digit_bits=2)
        assert cycles.stream_count(array, lengths) == cycles.simulate(
            array, lengths, [True] * len(lengths))
        assert cycles.stream_count(tree, lengths) == cycles.tree_simulate(tree, lengths)
        assert cycles.stream_count(serial, lengths) == cycles.serial_tree_simulate(serial,
                                                                                   lengths)
    assert cycles.products_per_cycle(ArrayConfig(4, 8)) == 32
    assert cycles.products_per_cycle(schedule.TreeConfig(k=4, lanes=8)) == 32


def test_serial_closed_forms_refuse_a_parallel_config():
    tree = schedule.TreeConfig(k=4, lanes=4)
    with pytest.raises(ValueError, match="serial_tree_full_rate_count needs a TreeConfig "
                                         "with digit_bits"):
        cycles.serial_tree_full_rate_count(tree, [1])
    with pytest.raises(ValueError, match="serial_tree_plan_cycles needs"):
        cycles.serial_tree_plan_cycles(schedule.plan_tree(tree, 1, 4, 4))
