"""cocotb bench for ``rtl.serial_tree.SerialTreeEngine``: random layers, extremes, idle and
back-pressure, exact results and exact cycle counts against the golden model
(``sim.schedule.plan_tree`` and ``serial_tree_beats``, ``sim.cycles.serial_tree_simulate``).

Run through ``sim.cocotb_runner.run_bench`` (see ``tests/cocotb``); the configuration (k, lanes,
digit bits, widths, seed, how many layers) arrives as JSON in the environment.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from rtl.accumulator import result_row_layout
from rtl.serial_tree import serial_beat_layout
from sim import cycles, numerics, schedule
from sim.cocotb_runner import bench_config
from sim.tb_matrix import EngineTB, Pattern, _random_layer
from sim.tb_tree import check_extremes, check_random_layers


class SerialTreeTB:
    """Clock, reset, the beat source and the result sink of the serial tree engine."""

    def __init__(self, dut, config: dict):
        self.dut = dut
        self.cfg = schedule.TreeConfig(k=config["k"], lanes=config["lanes"],
                                       acc_bits=config["acc_width"],
                                       digit_bits=config["digit_bits"],
                                       backpressure=config.get("backpressure", True))
        self.layout = serial_beat_layout(self.cfg)
        self.result_layout = result_row_layout(self.cfg.lanes, self.cfg.acc_bits)
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    async def reset(self):
        d = self.dut
        d.beat__valid.value = 0
        if self.cfg.backpressure:       # (else both streams are always ready: no such port)
            d.result__ready.value = 0
        d.rst.value = 1
        for _ in range(3):
            await RisingEdge(d.clk)
        d.rst.value = 0

    def encode(self, beat: schedule.SerialBeat) -> int:
        """A beat's bus value, at the offsets of the RTL's own layout; the trits as the 2bit
        packing of the (group, k) block, lane-major as the layout nests them."""
        lay, b = self.layout, self.cfg.digit_bits
        value = 0
        for i, d in enumerate(beat.digits):
            value |= int(d) << (lay["digits"].offset + i * b)
        value |= EngineTB.weight_beat(beat.weights) << lay["weights"].offset
        value |= int(beat.step) << lay["step"].offset
        return value | int(beat.last) << lay["last"].offset

    def decode_result(self, payload: int) -> np.ndarray:
        assert payload >> self.result_layout["last"].offset & 1, "a result beat without last"
        value = payload >> self.result_layout["data"].offset
        bits = self.cfg.acc_bits
        out = [(value >> (lane * bits)) & ((1 << bits) - 1) for lane in range(self.cfg.lanes)]
        return np.array([v - (1 << bits) if v >> (bits - 1) else v for v in out], np.int64)

    async def drive(self, beats: list[int], n_out: int, offer, out_ready):
        """Offer ``beats`` as ``offer`` says (a beat offered stays offered until taken) and take
        ``n_out`` results as ``out_ready`` says (every one as it comes from an engine without
        back-pressure); return the payloads and the cycles, from the first cycle a beat may be
        offered to the cycle the last result is taken, inclusive."""
        d = self.dut
        bp = self.cfg.backpressure
        out, next_beat, pending, t = [], 0, False, 0
        await RisingEdge(d.clk)
        while len(out) < n_out:
            if next_beat < len(beats) and not pending and offer(t):
                d.beat__payload.value = beats[next_beat]
                d.beat__valid.value = 1
                pending = True
            if bp:
                d.result__ready.value = int(out_ready(t))
            await ReadOnly()
            taken = pending and (int(d.beat__ready.value) if bp else True)
            if int(d.result__valid.value) and (int(d.result__ready.value) if bp else True):
                out.append(int(d.result__payload.value))
            await RisingEdge(d.clk)
            if taken:
                next_beat += 1
                pending = False
                d.beat__valid.value = 0
            t += 1
            assert t < 10**7, "no progress"
        if bp:
            d.result__ready.value = 0
        assert next_beat == len(beats), f"{len(beats) - next_beat} beats left at the end"
        return out, t

    async def check_layer(self, w, x, rng, *, idle=0.0, backpressure=0.0, label=""):
        """Run one layer as one run of slots; compare results and cycles with the golden
        model; return the cycles and the plan."""
        M, K = x.shape
        plan = schedule.plan_tree(self.cfg, M, w.shape[0], K)
        ws, xs, lasts = [], [], []
        for p in plan.passes:
            wt, xa = schedule.tree_pass_operands(plan, p, w, x)
            ws.append(wt)
            xs.append(xa)
            lasts += [False] * (p.length - 1) + [True]
        beats = schedule.serial_tree_beats(self.cfg, np.concatenate(ws), np.concatenate(xs),
                                           lasts)
        offer = Pattern(rng, 1.0 - idle)
        out_ready = Pattern(rng, 1.0 - backpressure)
        payloads, measured = await self.drive([self.encode(b) for b in beats],
                                              len(plan.passes), offer, out_ready)
        y = np.zeros((plan.M, plan.N), dtype=np.int64)
        for p, payload in zip(plan.passes, payloads):
            schedule.scatter_tree_result(p, self.decode_result(payload), y)
        expected = numerics.ternary_matmul(w, x)
        bad = np.argwhere(y != expected)
        assert bad.size == 0, (f"{label}: {len(bad)} wrong results, first at {tuple(bad[0])}: "
                               f"got {y[tuple(bad[0])]}, expected {expected[tuple(bad[0])]}")
        model = cycles.serial_tree_simulate(self.cfg, plan.lengths, offer, out_ready)
        assert measured == model.total, (f"{label}: RTL took {measured} cycles, "
                                         f"cycle model says {model.total}")
        if idle == 0.0 and backpressure == 0.0:
            closed = cycles.serial_tree_full_rate_cycles(self.cfg, plan.lengths)
            assert measured == closed, f"{label}: {measured} cycles, closed form {closed}"
        self.dut._log.info("%s: M=%d N=%d K=%d passes=%d cycles=%d", label, M, w.shape[0], K,
                           len(plan.passes), measured)
        return {"cycles": measured, "plan": plan}


def _setup(dut):
    config = bench_config()
    rng = np.random.default_rng(config["seed"])
    return SerialTreeTB(dut, config), config, rng


@cocotb.test()
async def random_layers(dut):
    """Random shapes: K not a multiple of k, N not of lanes, several tokens, one-step passes
    that wait for the result register; idle between any beats and back-pressure."""
    tb, config, rng = _setup(dut)
    await tb.reset()
    await check_random_layers(tb, config, rng, max_steps=6)


@cocotb.test()
async def short_passes(dut):
    """Passes of one step (K <= k), shorter than a result's trip: each pass's slot waits at
    its first beat until the previous result has left, with and without back-pressure."""
    tb, config, rng = _setup(dut)
    await tb.reset()
    for bp in (0.0, 0.6):
        w, x = _random_layer(rng, 5, 2 * tb.cfg.lanes, tb.cfg.k)
        await tb.check_layer(w, x, rng, backpressure=bp, label=f"one-step passes bp={bp}")


@cocotb.test()
async def extremes(dut):
    """Every weight +1 or -1 against activations -128 and +127: every digit at its limits
    (the top digit's sign, the left-out ones), K up to the bench's ``extreme_k``."""
    tb, config, rng = _setup(dut)
    await tb.reset()
    await check_extremes(tb, config.get("extreme_k", 4096), rng)


@cocotb.test()
async def full_rate(dut):
    """Beats at full rate: cycles equal the closed form, and a decode layer keeps the
    products busy (its steps over all cycles, at least the bench's ``min_utilization``)."""
    tb, config, rng = _setup(dut)
    await tb.reset()
    K = config.get("full_rate_k", 1000)
    w, x = _random_layer(rng, 1, 2 * tb.cfg.lanes, K)
    report = await tb.check_layer(w, x, rng, label="decode full rate")
    plan = report["plan"]
    util = plan.useful_macs / (tb.cfg.pes * report["cycles"] / tb.cfg.cycles_per_step)
    assert util >= config.get("min_utilization", 0.0), f"utilization {util:.3f}"
