"""Tests of rtl.systolic (SystolicArray, MatrixEngine) in Amaranth's simulator.

Each case plans a product with ``sim.schedule.plan_linear``, streams the passes' operand beats
into the design with random idle cycles on both operand streams and random back-pressure on the
result stream, and checks

* the results exactly against ``sim.numerics.ternary_matmul`` (MatrixEngine) or against the
  per-pass partial sums of ``sim.schedule.pass_operands`` (SystolicArray alone), and
* the cycle count exactly against ``sim.cycles.simulate`` fed the very same per-cycle
  offer/ready patterns.

Cycle alignment: cycle 0 is the first clock period of the simulation (there is no reset phase
in Amaranth's simulator, every register starts at its reset value), i.e. the period before the
first ``ctx.tick()``. In cycle ``t`` a source with no pending beat starts offering its next beat
iff its pattern says so, the sink drives ``ready = out_ready(t)``, and a transfer happens if
``valid & ready`` hold before the clock edge that ends cycle ``t``. ``total`` is the index of the
cycle in which the last result beat is taken, plus one (inclusive count).
"""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from rtl.systolic import (DRAIN_GROUP, MatrixEngine, SystolicArray, activation_layout,
                          weight_layout)
from sim import cycles, numerics, packing, schedule
from sim.schedule import ArrayConfig

PSUM_WIDTH = 10                         # pass_k_max = 511 // 128 = 3: K tiling everywhere
# (3, 2 * DRAIN_GROUP + 1): three groups of columns, the last one short, each with its copy
# of the drain row counter
SHAPES = [(1, 1), (2, 3), (3, 2), (4, 4), (3, 2 * DRAIN_GROUP + 1)]
BASE_SEED = 0x7217


class Pattern:
    """A per-cycle boolean pattern: random with probability ``p`` for ``n`` cycles, then True."""

    def __init__(self, rng, p: float, n: int = 2000):
        self.bits = (rng.random(n) < p).tolist() if p < 1.0 else []
        self.p = p

    def __call__(self, t: int) -> bool:
        return self.bits[t] if t < len(self.bits) else True

    def __repr__(self):
        return f"Pattern(p={self.p:.2f})"


class StreamBench:
    """Owns the simulator, the two operand drivers and the result monitor for one run.

    ``act_beats`` / ``weight_beats`` are raw payload integers. The whole bench is one async
    testbench that, every cycle, drives the sources and the sink, observes the (settled)
    handshakes, records result beats and checks the stream rules on the result stream.
    """

    def __init__(self, dut, act_beats, weight_beats, n_results, *, act_offer, weight_offer,
                 out_ready, seed, max_cycles=20000):
        assert len(act_beats) == len(weight_beats)
        self.dut = dut
        self.act_beats, self.weight_beats = act_beats, weight_beats
        self.n_results = n_results
        self.act_offer, self.weight_offer, self.out_ready = act_offer, weight_offer, out_ready
        self.seed = seed
        self.max_cycles = max_cycles
        self.results = []           # decoded payloads (data.Const) of the taken result beats
        self.last_cycle = None      # cycle in which the last result beat was taken
        self.step_cycles = []       # cycles in which an operand pair was taken

    def run(self):
        sim = Simulator(self.dut)
        sim.add_clock(1e-6)
        sim.add_testbench(self._bench)
        sim.run()
        return self

    @property
    def total(self) -> int:
        return self.last_cycle + 1

    async def _bench(self, ctx):
        dut, seed = self.dut, self.seed
        act_raw, w_raw = dut.act.payload.as_value(), dut.weights.payload.as_value()
        res_raw = dut.result.payload.as_value()
        ia = iw = 0
        a_valid = w_valid = False
        held = None                 # (payload) of a result beat offered but not taken
        t = 0
        while len(self.results) < self.n_results:
            assert t < self.max_cycles, f"seed {seed}: no progress after {t} cycles " \
                f"({len(self.results)}/{self.n_results} results, {ia} steps)"
            # drivers: a source holding no beat starts offering when its pattern says so
            if not a_valid and ia < len(self.act_beats) and self.act_offer(t):
                a_valid = True
                ctx.set(act_raw, self.act_beats[ia])
            if not w_valid and iw < len(self.weight_beats) and self.weight_offer(t):
                w_valid = True
                ctx.set(w_raw, self.weight_beats[iw])
            ctx.set(dut.act.valid, a_valid)
            ctx.set(dut.weights.valid, w_valid)
            ready = self.out_ready(t)
            ctx.set(dut.result.ready, ready)
            # observe the handshakes of this cycle
            a_fire = a_valid and bool(ctx.get(dut.act.ready))
            w_fire = w_valid and bool(ctx.get(dut.weights.ready))
            assert a_fire == w_fire, f"seed {seed}: cycle {t}: act taken {a_fire}, " \
                f"weights taken {w_fire} (a step takes both)"
            r_valid = bool(ctx.get(dut.result.valid))
            if held is not None:
                assert r_valid and ctx.get(res_raw) == held, \
                    f"seed {seed}: cycle {t}: result beat withdrawn or changed before taken"
            if r_valid:
                if ready:
                    self.results.append(ctx.get(dut.result.payload))
                    self.last_cycle = t
                    held = None
                else:
                    held = ctx.get(res_raw)
            await ctx.tick()
            if a_fire:
                self.step_cycles.append(t)
                ia += 1
                iw += 1
                a_valid = w_valid = False
            t += 1
        assert ia == len(self.act_beats), f"seed {seed}: results done after {ia} steps"
        # nothing more comes out once the expected beats are in
        for _ in range(self.dut.rows + 2):
            ctx.set(dut.result.ready, 1)
            assert not ctx.get(dut.result.valid), f"seed {seed}: spurious result beat"
            await ctx.tick()


# ---------------------------------------------------------------------------------------------
# Beats from a plan
# ---------------------------------------------------------------------------------------------

def plan_beats(plan, w, x, rng):
    """Raw payload integers of every operand beat of ``plan``, in order.

    ``first_chunk``/``last_chunk`` are only meaningful on a pass's last beat; on the others
    they carry random junk, which the design must ignore.
    """
    R, C = plan.config.rows, plan.config.cols
    a_layout = activation_layout(R, plan.config.act_bits)
    w_layout = weight_layout(R, C)
    acts, weights = [], []
    for p in plan.passes:
        wt, xa = schedule.pass_operands(p, w, x)
        for k in range(p.length):
            last = k == p.length - 1
            weights.append(w_layout.const(
                [[packing.trit_code(int(t)) for t in row] for row in wt[k]]).as_value().value)
            acts.append(a_layout.const({
                "data": [int(v) for v in xa[k]],
                "last": last,
                "first_chunk": p.first_chunk if last else bool(rng.integers(2)),
                "last_chunk": p.last_chunk if last else bool(rng.integers(2)),
            }).as_value().value)
    return acts, weights


def patterns(rng, idle: bool):
    if not idle:
        return Pattern(rng, 1.0), Pattern(rng, 1.0), Pattern(rng, 1.0)
    pa, pw, pr = rng.uniform(0.3, 0.95, size=3)
    return Pattern(rng, pa), Pattern(rng, pw), Pattern(rng, pr)


def run_engine(R, C, M, N, K, mapping, seed, *, idle=True, w=None, x=None):
    rng = np.random.default_rng(seed)
    cfg = ArrayConfig(R, C, psum_bits=PSUM_WIDTH)
    plan = schedule.plan_linear(cfg, M, N, K, mapping)
    if w is None:
        w = rng.integers(-1, 2, size=(N, K)).astype(np.int8)
    if x is None:
        x = rng.integers(-128, 128, size=(M, K)).astype(np.int8)
    acts, weights = plan_beats(plan, w, x, rng)
    act_offer, weight_offer, out_ready = patterns(rng, idle)
    n_tiles = sum(plan.finals)
    dut = MatrixEngine(rows=R, cols=C, psum_width=PSUM_WIDTH)
    tb = StreamBench(dut, acts, weights, n_tiles * R, act_offer=act_offer,
                     weight_offer=weight_offer, out_ready=out_ready, seed=seed).run()
    what = (f"seed {seed}: {R}x{C} M={M} N={N} K={K} {mapping} "
            f"({act_offer}, {weight_offer}, ready {out_ready})")

    # results: rows beats per finished tile, row 0 first, last on the tile's last row
    y = np.full((M, N), np.iinfo(np.int64).min, dtype=np.int64)
    finals = [p for p in plan.passes if p.last_chunk]
    for i, p in enumerate(finals):
        beats = tb.results[i * R:(i + 1) * R]
        assert [int(b.last) for b in beats] == [0] * (R - 1) + [1], what
        tile = np.array([[int(v) for v in b.data] for b in beats], dtype=np.int64)
        schedule.scatter_tile(plan, p, tile, y)
    expected = numerics.ternary_matmul(w, x)
    assert np.array_equal(y, expected), f"{what}\ngot\n{y}\nexpected\n{expected}"

    # cycles: exactly the model's, fed the same patterns
    model = cycles.simulate(cfg, plan.lengths, plan.finals, act_offer=act_offer,
                            weight_offer=weight_offer, out_ready=out_ready)
    assert tb.total == model.total, f"{what}: RTL took {tb.total} cycles, model {model}"
    assert len(tb.step_cycles) == model.busy == sum(plan.lengths), what
    if not idle:
        assert tb.total == cycles.full_rate_cycles(cfg, plan.lengths), what
    return plan, tb


def case_seed(*parts) -> int:
    """A reproducible per-case seed (printed in every assertion message)."""
    return int(np.random.SeedSequence([BASE_SEED, *parts]).generate_state(1)[0])


# ---------------------------------------------------------------------------------------------
# MatrixEngine
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mapping", schedule.MAPPINGS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_engine_random_with_idle_and_back_pressure(shape, mapping):
    R, C = shape
    midx = schedule.MAPPINGS.index(mapping)
    for case, M_kind in enumerate(("one", "many", "one", "many")):
        seed = case_seed(R, C, midx, case)
        rng = np.random.default_rng(seed)
        M = 1 if M_kind == "one" else int(rng.integers(R + 1, 2 * R + 2))
        N = int(rng.integers(1, 2 * R * C + 2)) if mapping == "outputs" else \
            int(rng.integers(1, 2 * C + 2))
        if (N % C == 0 or N % (R * C) == 0) and R * C > 1:
            N += 1                                     # not a multiple of the array
        K = int(rng.integers(4, 12 if case < 2 else 20))
        if K % 3 == 0:
            K += 1                                     # not a multiple of pass_k_max (3)
        plan, _ = run_engine(R, C, M, N, K, mapping, seed)
        assert len(plan.chunks) >= 2


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_engine_full_rate(shape):
    R, C = shape
    seed = case_seed(R, C, 7)
    # 'tokens' with M > rows and a short last chunk: passes shorter than rows + 1 stall
    run_engine(R, C, R + 1, C + 1, 7, "tokens", seed, idle=False)


@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("shape", [(1, 1), (4, 4)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_engine_single_chunk(shape, K):
    # K <= pass_k_max: one pass per tile with first_chunk and last_chunk both set; K=1 makes
    # every pass a single step, so (rows > 1) each one waits for the previous drain.
    R, C = shape
    for mapping in schedule.MAPPINGS:
        seed = case_seed(R, C, K, 200 + schedule.MAPPINGS.index(mapping))
        plan, _ = run_engine(R, C, R + 2, R * C + 1, K, mapping, seed)
        assert len(plan.chunks) == 1


@pytest.mark.parametrize("weight", [-1, 1])
@pytest.mark.parametrize("shape", [(2, 3), (4, 4)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_engine_extremes(shape, weight):
    R, C = shape
    kmax = ArrayConfig(R, C, psum_bits=PSUM_WIDTH).pass_k_max
    K = 3 * kmax + 1                                   # 10: chunks 2, 3, 2, 3
    M, N = R + 1, C + 2
    w = np.full((N, K), weight, np.int8)
    x = np.full((M, K), -128, np.int8)
    seed = case_seed(R, C, weight + 10)
    for mapping in schedule.MAPPINGS:
        run_engine(R, C, M, N, K, mapping, seed, w=w, x=x)
    # y = -weight * 128 * K = +-1280, and each pass sum reaches +-384 of the +-511 available
    assert (numerics.ternary_matmul(w, x) == -weight * 128 * K).all()


# ---------------------------------------------------------------------------------------------
# SystolicArray alone: every pass's rows come out, each waiting for the sink
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("idle", [False, True], ids=["full_rate", "idle"])
def test_array_alone(idle):
    R, C = 3, 2
    M, N, K = 4, 5, 8
    seed = case_seed(R, C, 100 + idle)
    rng = np.random.default_rng(seed)
    cfg = ArrayConfig(R, C, psum_bits=PSUM_WIDTH)
    plan = schedule.plan_linear(cfg, M, N, K, "tokens")
    w = rng.integers(-1, 2, size=(N, K)).astype(np.int8)
    x = rng.integers(-128, 128, size=(M, K)).astype(np.int8)
    x[0, :] = -128
    w[0, :] = -1                                       # one PE at the extreme
    acts, weights = plan_beats(plan, w, x, rng)
    act_offer, weight_offer, out_ready = patterns(rng, idle)
    dut = SystolicArray(rows=R, cols=C, psum_width=PSUM_WIDTH)
    tb = StreamBench(dut, acts, weights, len(plan.passes) * R, act_offer=act_offer,
                     weight_offer=weight_offer, out_ready=out_ready, seed=seed).run()
    what = f"seed {seed}: array {R}x{C} ({act_offer}, {weight_offer}, ready {out_ready})"
    for i, p in enumerate(plan.passes):
        wt, xa = schedule.pass_operands(p, w, x)
        psum = np.einsum("krc,kr->rc", wt.astype(np.int64), xa.astype(np.int64))
        for r in range(R):
            b = tb.results[i * R + r]
            got = (int(b.row), int(b.first_chunk), int(b.last_chunk), int(b.last),
                   [int(v) for v in b.data])
            exp = (r, int(p.first_chunk), int(p.last_chunk), int(r == R - 1),
                   psum[r].tolist())
            assert got == exp, f"{what}: pass {i} row {r}: got {got}, expected {exp}"
    # Without the accumulator every drain waits for the sink: the model with all finals True.
    model = cycles.simulate(cfg, plan.lengths, [True] * len(plan.passes),
                            act_offer=act_offer, weight_offer=weight_offer,
                            out_ready=out_ready)
    assert tb.total == model.total, f"{what}: RTL took {tb.total} cycles, model {model}"
    if not idle:
        assert tb.total == cycles.full_rate_cycles(cfg, plan.lengths)


def test_array_rejects_empty_shape():
    # The half-built object would warn (UnusedElaboratable) when collected: collect it here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        for rows, cols in ((0, 2), (2, 0)):
            with pytest.raises(ValueError, match="at least one row and column"):
                SystolicArray(rows=rows, cols=cols)
        gc.collect()
