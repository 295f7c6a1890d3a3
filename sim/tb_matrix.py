"""cocotb bench for ``rtl.systolic.MatrixEngine``: random layers, tiling, extremes, idle and
back-pressure, exact results and exact cycle counts against the golden model.

Run through ``sim.cocotb_runner.run_bench`` (see ``tests/cocotb``); the configuration (array
shape, widths, seed, how many layers) arrives as JSON in the environment.
"""

from __future__ import annotations

import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from rtl.systolic import activation_layout
from sim import cycles, numerics, packing, schedule
from sim.cocotb_runner import bench_config


class Pattern:
    """A reproducible per-cycle yes/no pattern: ``p`` is the probability of *yes*."""

    def __init__(self, rng: np.random.Generator, p: float, length: int = 1 << 16):
        self.p = p
        self.bits = rng.random(length) < p if p < 1.0 else None

    def __call__(self, t: int) -> bool:
        return True if self.bits is None else bool(self.bits[t % len(self.bits)])


class EngineTB:
    """Owns the clock, reset, the two operand sources and the result sink of an engine with
    ``act`` and ``weights`` streams in and a ``result`` stream out (``rtl.systolic``'s and
    ``rtl.adder_tree``'s); :class:`TB` and ``sim.tb_tree.TreeTB`` add their beats."""

    def __init__(self, dut):
        self.dut = dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    async def reset(self):
        d = self.dut
        d.act__valid.value = 0
        d.weights__valid.value = 0
        d.result__ready.value = 0
        d.rst.value = 1
        for _ in range(3):
            await RisingEdge(d.clk)
        d.rst.value = 0

    @staticmethod
    def weight_beat(trits: np.ndarray) -> int:
        """A (rows, cols) trit block as the weight bus carries it: the 2bit code of PE (r, c)
        at bits 2*(r*cols + c), which is exactly the 2bit packing of the row-major block."""
        value = int.from_bytes(packing.pack_2bit(trits.ravel()).tobytes(), "little")
        return value & ((1 << (2 * trits.size)) - 1)     # drop the padding of the last byte

    async def drive(self, ws: list[int], acts: list[int], n_out: int, act_offer, weight_offer,
                    out_ready) -> tuple[list[int], int]:
        """Offer the beats ``ws`` and ``acts`` (bus values) as the patterns say and take
        ``n_out`` result payloads; return them and the cycles, where cycle 0 is the first cycle
        a source may offer and the count runs to the cycle the last result beat is taken,
        inclusive. Both operand streams must be taken in the same cycles."""
        d = self.dut
        out: list[int] = []
        next_beat = 0
        act_pending = weight_pending = False
        t = 0
        await RisingEdge(d.clk)
        while len(out) < n_out:
            # Cycle t begins: sources start offering (and keep offering until taken).
            if next_beat < len(ws):
                if not act_pending and act_offer(t):
                    d.act__payload.value = acts[next_beat]
                    d.act__valid.value = 1
                    act_pending = True
                if not weight_pending and weight_offer(t):
                    d.weights__payload.value = ws[next_beat]
                    d.weights__valid.value = 1
                    weight_pending = True
            d.result__ready.value = int(out_ready(t))
            await ReadOnly()
            act_taken = act_pending and int(d.act__ready.value)
            weight_taken = weight_pending and int(d.weights__ready.value)
            assert act_taken == weight_taken, f"cycle {t}: operand streams taken apart"
            if int(d.result__valid.value) and int(d.result__ready.value):
                out.append(int(d.result__payload.value))
            await RisingEdge(d.clk)
            if act_taken:
                next_beat += 1
                act_pending = weight_pending = False
                d.act__valid.value = 0
                d.weights__valid.value = 0
            t += 1
            assert t < 10**7, "no progress"
        d.result__ready.value = 0
        return out, t


class TB(EngineTB):
    """The matrix engine's bench: its beats, results and plans (``sim.schedule.plan_linear``)."""

    def __init__(self, dut, config: dict):
        super().__init__(dut)
        self.cfg = schedule.ArrayConfig(rows=config["rows"], cols=config["cols"],
                                        psum_bits=config["psum_width"],
                                        acc_bits=config["acc_width"])
        self.act_layout = activation_layout(self.cfg.rows, self.cfg.act_bits)

    # -- beat encoding: offsets come from the RTL's own layouts, the trits from the 2bit format

    def act_beat(self, acts: np.ndarray, last: bool, first_chunk: bool, last_chunk: bool) -> int:
        lay = self.act_layout
        value = 0
        for r, a in enumerate(acts):
            value |= (int(a) & 0xFF) << (lay["data"].offset + r * self.cfg.act_bits)
        value |= int(last) << lay["last"].offset
        value |= int(first_chunk) << lay["first_chunk"].offset
        value |= int(last_chunk) << lay["last_chunk"].offset
        return value

    def decode_result(self, value: int) -> list[int]:
        bits = self.cfg.acc_bits
        mask = (1 << bits) - 1
        out = []
        for c in range(self.cfg.cols):
            v = (value >> (c * bits)) & mask
            out.append(v - (1 << bits) if v >> (bits - 1) else v)
        return out

    def beats(self, plan: schedule.Plan, w: np.ndarray, x: np.ndarray):
        """Every (weight, activation) bus value of a plan, in order."""
        ws, acts = [], []
        for p in plan.passes:
            wt, xa = schedule.pass_operands(p, w, x)
            for k in range(p.length):
                last = k == p.length - 1
                ws.append(self.weight_beat(wt[k]))
                acts.append(self.act_beat(xa[k], last, p.first_chunk and last,
                                          p.last_chunk and last))
        return ws, acts

    async def run(self, plan, w, x, act_offer, weight_offer, out_ready):
        """Drive a whole plan; return (y, cycles) as :meth:`EngineTB.drive` counts them."""
        ws, acts = self.beats(plan, w, x)
        n_out = sum(p.last_chunk for p in plan.passes) * self.cfg.rows
        payloads, t = await self.drive(ws, acts, n_out, act_offer, weight_offer, out_ready)
        rows_out = [self.decode_result(v) for v in payloads]
        y = np.zeros((plan.M, plan.N), dtype=np.int64)
        i = 0
        for p in plan.passes:
            if p.last_chunk:
                schedule.scatter_tile(plan, p, np.array(rows_out[i:i + self.cfg.rows]), y)
                i += self.cfg.rows
        return y, t

    async def check_layer(self, w, x, rng, *, mapping=None, idle=0.0, backpressure=0.0,
                          label=""):
        """Run one layer, compare results and cycles with the golden model; return the report."""
        M, K = x.shape
        N = w.shape[0]
        plan = schedule.plan_linear(self.cfg, M, N, K, mapping=mapping)
        act_offer = Pattern(rng, 1.0 - idle)
        weight_offer = Pattern(rng, 1.0 - idle)
        out_ready = Pattern(rng, 1.0 - backpressure)
        start = time.perf_counter()
        y, measured = await self.run(plan, w, x, act_offer, weight_offer, out_ready)
        seconds = time.perf_counter() - start
        expected_y = numerics.ternary_matmul(w, x)
        bad = np.argwhere(y != expected_y)
        assert bad.size == 0, (f"{label}: {len(bad)} wrong results, first at {tuple(bad[0])}: "
                               f"got {y[tuple(bad[0])]}, expected {expected_y[tuple(bad[0])]}")
        model = cycles.simulate(self.cfg, plan.lengths, plan.finals,
                                act_offer, weight_offer, out_ready)
        assert measured == model.total, (f"{label}: RTL took {measured} cycles, "
                                         f"cycle model says {model.total}")
        if idle == 0.0 and backpressure == 0.0:
            closed = cycles.plan_cycles(plan)
            assert measured == closed, f"{label}: {measured} cycles, closed form {closed}"
        self.dut._log.info("%s: M=%d N=%d K=%d mapping=%s passes=%d cycles=%d "
                           "utilization=%.3f (%.0f cycles/s)", label, M, N, K, plan.mapping,
                           len(plan.passes), measured, cycles.utilization(plan, measured),
                           measured / seconds)
        return {"cycles": measured, "seconds": seconds, "plan": plan}


def _setup(dut):
    config = bench_config()
    rng = np.random.default_rng(config["seed"])
    return TB(dut, config), config, rng


def _random_layer(rng, M, N, K, zero_fraction=1 / 3):
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    w[rng.random((N, K)) < zero_fraction - 1 / 3] = 0
    x = rng.integers(numerics.ACT_MIN, numerics.ACT_MAX + 1, (M, K)).astype(np.int8)
    return w, x


@cocotb.test()
async def random_layers(dut):
    """Random shapes with K and N tiling, both mappings, idle and back-pressure on every stream."""
    tb, config, rng = _setup(dut)
    await tb.reset()
    R, C, pk = tb.cfg.rows, tb.cfg.cols, tb.cfg.pass_k_max
    for i in range(config.get("layers", 4)):
        M = int(rng.choice([1, R + int(rng.integers(0, 3))]))
        N = int(rng.integers(1, 2 * R * C + 2))
        K = int(rng.integers(1, min(3 * pk, 600)))
        w, x = _random_layer(rng, M, N, K)
        for mapping in ("outputs", "tokens"):
            idle, bp = [(0.0, 0.0), (0.3, 0.0), (0.0, 0.5), (0.4, 0.4)][i % 4]
            await tb.check_layer(w, x, rng, mapping=mapping, idle=idle, backpressure=bp,
                                 label=f"layer {i} {mapping} idle={idle} bp={bp} "
                                       f"seed={config['seed']}")


@cocotb.test()
async def extremes(dut):
    """Every weight +1 or -1 against activations -128 and +127, K up to 16384: the partial sums
    and the accumulator must not overflow."""
    tb, config, rng = _setup(dut)
    await tb.reset()
    K = config.get("extreme_k", 16384)
    N = tb.cfg.rows * tb.cfg.cols
    for wv in (-1, 1):
        for av in (numerics.ACT_MIN, numerics.ACT_MAX):
            w = np.full((N, K), wv, dtype=np.int8)
            x = np.full((1, K), av, dtype=np.int8)
            await tb.check_layer(w, x, rng, label=f"extreme w={wv} x={av} K={K}")


@cocotb.test()
async def full_rate(dut):
    """Operands at full rate: cycles equal the closed form; utilization on decode and prefill."""
    tb, config, rng = _setup(dut)
    await tb.reset()
    R, C = tb.cfg.rows, tb.cfg.cols
    K = config.get("full_rate_k", 4 * tb.cfg.pass_k_max)
    for label, M, N in (("decode", 1, 2 * R * C), ("prefill", 2 * R, 2 * C)):
        w, x = _random_layer(rng, M, N, K)
        report = await tb.check_layer(w, x, rng, label=f"{label} full rate")
        util = cycles.utilization(report["plan"], report["cycles"])
        assert util >= config.get("min_utilization", 0.0), f"{label}: utilization {util:.3f}"
