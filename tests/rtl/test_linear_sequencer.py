"""rtl.linear_sequencer.LinearSequencer against firmware.hardwired.run_linear and the ``linear``
program on firmware.machine (Amaranth sim).

The bench plays the sequencer downstream, as tests/rtl/test_controller.py's does: it takes
sweeps with random back-pressure, reports ``idle`` only some cycles after the last sweep, and
records the sweeps (with the split in force), the result pointer moves and the ending. For
argument sets at and around every bound of ``linear``, and on several parameter sets, the RTL
must issue what both references issue; with a sequencer that never holds it up, it must take
``run_linear``'s cycles, its sweeps back to back.
"""

from __future__ import annotations

import gc
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from firmware import machine
from firmware.commands import Status
from firmware.hardwired import hardwired_supported, kept_widths, run_linear
from firmware.isa import Fault, Param, param_values, register_bits, tree_param_values
from firmware.programs import FIRMWARE
from rtl.linear_sequencer import LinearSequencer
from sim import numerics

#: The iCEBreaker's tree core (k = 32, 4 lanes) and small ones whose bounds random shapes hit
#: often: K_MAX below the buffer (with and without a compare of its own), K_MAX above the
#: buffer but below the largest K kept (a compare of its own), PES 1 and 8.
PARAMS = {
    "icebreaker": tree_param_values(k=32, lanes=4, weight_words=16384, act_bytes=2048,
                                    result_rows=512, k_max=numerics.max_exact_k(32, 8)),
    "tiny": tree_param_values(k=2, lanes=2, weight_words=40, act_bytes=24, result_rows=12,
                              k_max=16),
    "one_lane": tree_param_values(k=4, lanes=1, weight_words=7, act_bytes=40, result_rows=3,
                                  k_max=400),
    "eight_lanes": tree_param_values(k=1, lanes=8, weight_words=9, act_bytes=20,
                                     result_rows=30, k_max=7),
    "k_max_above_buffer": tree_param_values(k=1, lanes=2, weight_words=50, act_bytes=20,
                                            result_rows=25, k_max=25),
}


class SequencerBench:
    """One LinearSequencer: run it once per argument set, record what it does."""

    def __init__(self, params, seed: int, ready_p: float = 0.6, busy_cycles: int = 3):
        self.dut = LinearSequencer(params=params)
        self.rng = random.Random(seed)
        self.ready_p, self.busy_cycles = ready_p, busy_cycles

    def run(self, runs, max_cycles: int = 20000, restart_every: int = 0):
        """``runs``: argument sets, run one after the other in one simulation. Returns
        (status, events, cycles, the cycles at which sweeps were taken) per run, cycles
        counted from the start cycle (1) to the done cycle. With ``restart_every``, a start
        with other arguments comes every that many cycles while running (and is ignored)."""
        dut, rng = self.dut, self.rng
        results = []

        async def bench(ctx):
            for args in runs:
                # Stopped, nothing happens whatever the arguments say, until a start.
                for _ in range(rng.randint(0, 2)):
                    for i in range(len(args)):
                        ctx.set(dut.args[i], rng.randrange(2**32))
                    ctx.set(dut.idle, rng.random() < 0.5)
                    ctx.set(dut.sweep.ready, rng.random() < 0.5)
                    assert not (ctx.get(dut.done) or ctx.get(dut.sweep.valid) or
                                ctx.get(dut.set_results)), "activity without a start"
                    await ctx.tick()
                # The sequencer may still be busy for a while when a run starts, and then SETR
                # waits for it (not when never held up: busy_cycles 0).
                busy = rng.randint(0, 12) if self.busy_cycles else 0
                events, taken = [], []
                for i, v in enumerate(args):
                    ctx.set(dut.args[i], v)
                ctx.set(dut.start, 1)
                await ctx.tick()
                ctx.set(dut.start, 0)
                cycles = 1                      # the start cycle
                held = None                     # a sweep offered and not taken last cycle
                for _ in range(max_cycles):
                    cycles += 1
                    if restart_every:
                        restart = cycles % restart_every == 0
                        ctx.set(dut.start, restart)
                        for i in range(len(args)):
                            ctx.set(dut.args[i], rng.randrange(2**32) if restart else args[i])
                    ready = rng.random() < self.ready_p
                    ctx.set(dut.sweep.ready, ready)
                    ctx.set(dut.idle, busy == 0)
                    valid = ctx.get(dut.sweep.valid)
                    payload = ctx.get(dut.sweep.payload)
                    if held is not None:        # a stream may not take back what it offers
                        assert valid and payload == held, (args, cycles)
                    held = payload if valid and not ready else None
                    if valid and ready:
                        s = ctx.get(dut.split)
                        events.append(machine.Sweep(payload.weights, payload.acts,
                                                    payload.tokens,
                                                    machine.Split(s.k, s.n, s.q, s.r)))
                        taken.append(cycles)
                        busy = self.busy_cycles
                    elif busy:
                        busy -= 1
                    if ctx.get(dut.set_results):
                        assert ctx.get(dut.idle), "SETR waits for the sequencer"
                        events.append(machine.SetResults(ctx.get(dut.results)))
                    if ctx.get(dut.done):
                        assert ctx.get(dut.idle), "done waits for the sequencer"
                        assert not valid, "done with a sweep offered"
                        status = Status(ctx.get(dut.status))
                        assert ctx.get(dut.fault_pc) == 0
                        assert Fault(ctx.get(dut.fault_cause)) is Fault.NONE
                        ctx.set(dut.start, 0)
                        await ctx.tick()
                        break
                    await ctx.tick()
                else:
                    raise AssertionError(f"no done within {max_cycles} cycles: {args}")
                results.append((status, events, cycles, taken))

        sim = Simulator(self.dut)
        sim.add_clock(1e-6)
        sim.add_testbench(bench)
        sim.run()
        return results


def linear(args, params):
    return machine.run(FIRMWARE.words, FIRMWARE.entries["linear"], args, params)


def without_splits(events):
    """The bench sees the split only in the sweeps it rides on."""
    return [e for e in events if not isinstance(e, machine.Split)]


def argument_sets(params, rng: random.Random, n_random: int = 40):
    """RUN arguments (r0 weights, r1 acts, r2 results, r3 M, r4 N, r5 K): random shapes, empty
    ones, K at and past K_MAX, each bound just fitting and one over, values at the widths the
    sequencer keeps and at the registers', and huge ones that saturate."""
    ww, ab, rr, pes, k_max = (params[p] for p in (Param.WEIGHT_WORDS, Param.ACT_BYTES,
                                                  Param.RESULT_ROWS, Param.PES, Param.K_MAX))
    bits = register_bits(params)
    kept = kept_widths(params)
    runs = []

    def shape():
        """A shape whose every bound holds with zero bases."""
        while True:
            m, k = rng.randint(1, min(ab, rr)), rng.randint(1, min(k_max, ab, ww))
            tiles = rng.randint(1, max(1, min(ww // k, rr // m)))
            n = rng.randint((tiles - 1) * pes + 1, tiles * pes)
            if m * k <= ab and tiles * k <= ww and tiles * m <= rr:
                return m, n, k, tiles

    for _ in range(n_random):
        m, n, k, tiles = shape()
        runs.append([rng.randint(0, ww - tiles * k), rng.randint(0, ab - m * k),
                     rng.randint(0, rr - tiles * m), m, n, k])
        # anything, near the memories' sizes
        runs.append([rng.randint(0, ww + 2), rng.randint(0, ab + 2), rng.randint(0, rr + 2),
                     rng.randint(0, ab + 2), rng.randint(0, pes * (rr + 2)),
                     rng.randint(0, min(k_max, ab) + 2)])
    for over in (0, 1):
        for _ in range(4):
            m, n, k, tiles = shape()
            runs.append([ww - tiles * k + over, 0, 0, m, n, k])
            runs.append([0, ab - m * k + over, 0, m, n, k])
            runs.append([0, 0, rr - tiles * m + over, m, n, k])
    runs += [[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 0, 1], [0, 0, 0, 1, 1, 0],
             [0, 0, 0, 1, 1, k_max], [0, 0, 0, 1, 1, k_max + 1],
             [0, 0, 0, 1, 1, 2**32 - 1], [0, 0, 0, 1, 2**32 - 1, 1],
             [0, 0, 0, 2**32 - 1, 1, 1], [2**32 - 1] * 6, [2**bits] * 6,
             [0, 0, 0, 1, 2**bits - 1, 2**bits - 1]]
    # each argument at the top of the bits kept and just above, the others a small shape
    for i, w in enumerate(kept.args()):
        for v in (2**w - 1, 2**w, 2**bits - 1, 2**bits, 2**31):
            args = [0, 0, 0, 1, 1, 1]
            args[i] = v
            runs.append(args)
    return runs


@pytest.mark.parametrize("name", PARAMS)
def test_run_linear_matches_the_program(name):
    """The reference against the interpreter on the shipped program: same status and events,
    and the argument sets reach every ending (a run, and each way to be refused)."""
    params = PARAMS[name]
    endings = set()
    for args in argument_sets(params, random.Random(1), n_random=400):
        want = linear(args, params)
        got = run_linear(args, params)
        assert (got.status, got.events) == (want.status, want.events), args
        assert want.status in (Status.OK, Status.BAD_ARGUMENT)
        endings.add(want.status)
    assert endings == {Status.OK, Status.BAD_ARGUMENT}


@pytest.mark.parametrize("name", PARAMS)
def test_sequencer_matches_references(name):
    params = PARAMS[name]
    runs = argument_sets(params, random.Random(2))
    got = SequencerBench(params, seed=3).run(runs)
    statuses = []
    for args, (status, events, _, _) in zip(runs, got):
        want = linear(args, params)
        ref = run_linear(args, params)
        assert (ref.status, ref.events) == (want.status, want.events), args
        assert status is want.status, args
        assert events == without_splits(want.events), args
        statuses.append(status)
    assert statuses.count(Status.OK) >= 20 and statuses.count(Status.BAD_ARGUMENT) >= 20


@pytest.mark.parametrize("name", PARAMS)
def test_cycles_match_run_linear(name):
    """Never held up (always ready, always idle), start to done takes ``run_linear``'s cycles,
    and the sweeps come one a cycle."""
    params = PARAMS[name]
    runs = argument_sets(params, random.Random(4), n_random=20)
    got = SequencerBench(params, seed=5, ready_p=1.0, busy_cycles=0).run(runs)
    for args, (status, events, cycles, taken) in zip(runs, got):
        want = run_linear(args, params)
        assert status is want.status, args
        assert events == without_splits(want.events), args
        assert cycles == want.cycles, args
        assert taken == list(range(taken[0] if taken else 0, (taken[0] if taken else 0) +
                                   len(taken))), args


def test_sweeps_back_to_back_while_busy():
    """Ready held high, the sweeps go out one a cycle even while the sequencer is busy with the
    previous ones (idle low): only SETR and the end wait for it."""
    params = PARAMS["tiny"]
    args = [0, 0, 0, 1, 11, 2]          # 6 tiles
    (status, events, _, taken), = SequencerBench(params, seed=6, ready_p=1.0,
                                                 busy_cycles=4).run([args])
    assert status is Status.OK and len(taken) == 6
    assert taken == list(range(taken[0], taken[0] + 6))
    assert events == without_splits(linear(args, params).events)


def test_start_while_running_is_ignored():
    params = PARAMS["tiny"]
    runs = argument_sets(params, random.Random(7), n_random=10)
    got = SequencerBench(params, seed=8).run(runs, restart_every=3)
    for args, (status, events, _, _) in zip(runs, got):
        want = linear(args, params)
        assert (status, events) == (want.status, without_splits(want.events)), args


def test_unsupported_parameters_are_refused():
    good = PARAMS["tiny"]
    hardwired_supported(good)
    bad = [
        (param_values(rows=2, cols=2, weight_words=40, act_bytes=12, result_rows=12,
                      pass_k_max=12, k_max=8), "ROWS"),
        ({**good, Param.PES: 3, Param.COLS: 3}, "power of two"),
        ({**good, Param.PASS_K_MAX: 7}, "PASS_K_MAX"),      # min(K_MAX, ACT_BYTES) is 8
        ({p: v for p, v in good.items() if p is not Param.K_MAX}, "missing"),
        ({**good, Param.RESULT_ROWS: 0}, "RESULT_ROWS"),
        ({**good, Param.WEIGHT_WORDS: 2**31}, "32 bits"),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        for params, match in bad:
            with pytest.raises(ValueError, match=match):
                hardwired_supported(params)
            with pytest.raises(ValueError, match=match):
                LinearSequencer(params=params)
            with pytest.raises(ValueError, match=match):
                run_linear([0, 0, 0, 1, 1, 1], params)
        gc.collect()


@pytest.mark.synth
def test_ice40_resources():
    from rtl.synth import synthesize
    stats = synthesize(LinearSequencer(params=PARAMS["icebreaker"]), "ice40")
    print(f"\nLinearSequencer, iCEBreaker parameters, iCE40: {stats['lut4']} LUT4, "
          f"{stats['ff']} FF, {stats['carry']} carry")
    assert stats["dsp"] == 0, stats["cells"]
    assert stats["lut4"] < 300, stats["cells"]      # the Controller takes about 1,900
