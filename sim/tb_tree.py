"""cocotb bench for ``rtl.adder_tree.TreeEngine``: random layers, extremes, idle and
back-pressure, exact results and exact cycle counts against the golden model
(``sim.schedule.plan_tree``, ``sim.cycles.tree_simulate``).

Run through ``sim.cocotb_runner.run_bench`` (see ``tests/cocotb``); the configuration (k, lanes,
widths, seed, how many layers) arrives as JSON in the environment.
"""

from __future__ import annotations

import cocotb
import numpy as np

from rtl.accumulator import result_row_layout
from rtl.adder_tree import inverted_activations, tree_activation_layout
from sim import cycles, numerics, schedule
from sim.cocotb_runner import bench_config
from sim.tb_matrix import EngineTB, Pattern, _random_layer


class TreeTB(EngineTB):
    """The tree engine's bench: its beats, results and plans (``sim.schedule.plan_tree``)."""

    def __init__(self, dut, config: dict):
        super().__init__(dut)
        self.cfg = schedule.TreeConfig(k=config["k"], lanes=config["lanes"],
                                       acc_bits=config["acc_width"])
        self.act_copies = config.get("act_copies", 1)
        self.inverted = inverted_activations(config.get("adder", "generic"))   # ~x, data_n
        self.act_layout = tree_activation_layout(self.cfg.k, self.cfg.act_bits, self.act_copies,
                                                 inverted=self.inverted)
        self.result_layout = result_row_layout(self.cfg.lanes, self.cfg.acc_bits)

    # -- beat encoding: offsets from the RTL's own layouts; a weight beat is a (lanes, k) block
    # raveled, lane-major (rtl.adder_tree.tree_weight_layout), so EngineTB.weight_beat packs it
    def act_beat(self, acts: np.ndarray, last: bool) -> int:
        """The step's activations, the same in every copy (each copy feeds its lanes);
        one's complemented for a ``ccu2c`` engine."""
        lay, bits = self.act_layout, self.cfg.act_bits
        copy = 0
        for i, a in enumerate(acts):
            copy |= (int(~a if self.inverted else a) & ((1 << bits) - 1)) << (i * bits)
        field = lay["data_n" if self.inverted else "data"]
        value = 0
        for c in range(self.act_copies):
            value |= copy << (field.offset + c * self.cfg.k * bits)
        return value | (int(last) << lay["last"].offset)

    def decode_result(self, payload: int) -> np.ndarray:
        assert payload >> self.result_layout["last"].offset & 1, "a result beat without last"
        value = payload >> self.result_layout["data"].offset
        bits = self.cfg.acc_bits
        mask = (1 << bits) - 1
        out = []
        for lane in range(self.cfg.lanes):
            v = (value >> (lane * bits)) & mask
            out.append(v - (1 << bits) if v >> (bits - 1) else v)
        return np.array(out, dtype=np.int64)

    async def run(self, plan, w, x, act_offer, weight_offer, out_ready):
        """Drive a whole plan; return (y, cycles) as :meth:`EngineTB.drive` counts them."""
        ws, acts = [], []
        for p in plan.passes:
            wt, xa = schedule.tree_pass_operands(plan, p, w, x)
            for s in range(p.length):
                ws.append(self.weight_beat(wt[s]))
                acts.append(self.act_beat(xa[s], s == p.length - 1))
        payloads, t = await self.drive(ws, acts, len(plan.passes), act_offer, weight_offer,
                                       out_ready)
        y = np.zeros((plan.M, plan.N), dtype=np.int64)
        for p, payload in zip(plan.passes, payloads):
            schedule.scatter_tree_result(p, self.decode_result(payload), y)
        return y, t

    async def check_layer(self, w, x, rng, *, idle=0.0, backpressure=0.0, label=""):
        """Run one layer, compare results and cycles with the golden model; return the report."""
        M, K = x.shape
        plan = schedule.plan_tree(self.cfg, M, w.shape[0], K)
        act_offer = Pattern(rng, 1.0 - idle)
        weight_offer = Pattern(rng, 1.0 - idle)
        out_ready = Pattern(rng, 1.0 - backpressure)
        y, measured = await self.run(plan, w, x, act_offer, weight_offer, out_ready)
        expected_y = numerics.ternary_matmul(w, x)
        bad = np.argwhere(y != expected_y)
        assert bad.size == 0, (f"{label}: {len(bad)} wrong results, first at {tuple(bad[0])}: "
                               f"got {y[tuple(bad[0])]}, expected {expected_y[tuple(bad[0])]}")
        model = cycles.tree_simulate(self.cfg, plan.lengths, act_offer, weight_offer, out_ready)
        assert measured == model.total, (f"{label}: RTL took {measured} cycles, "
                                         f"cycle model says {model.total}")
        if idle == 0.0 and backpressure == 0.0:
            closed = cycles.tree_plan_cycles(plan)
            assert measured == closed, f"{label}: {measured} cycles, closed form {closed}"
        self.dut._log.info("%s: M=%d N=%d K=%d passes=%d cycles=%d utilization=%.3f", label,
                           M, w.shape[0], K, len(plan.passes), measured,
                           cycles.tree_utilization(plan, measured))
        return {"cycles": measured, "plan": plan}


def _setup(dut):
    config = bench_config()
    rng = np.random.default_rng(config["seed"])
    return TreeTB(dut, config), config, rng


async def check_random_layers(tb, config: dict, rng, max_steps: int) -> None:
    """``config["layers"]`` random layers through a tree bench's ``check_layer``: up to 3
    tokens, N up to two tiles and a lane more, K up to ``max_steps`` steps of k (neither a
    multiple of the tree), in turn at full rate, with idle sources, with back-pressure and
    with both."""
    k, lanes = tb.cfg.k, tb.cfg.lanes
    for i in range(config.get("layers", 4)):
        M = int(rng.integers(1, 4))
        N = int(rng.integers(1, 2 * lanes + 2))
        K = int(rng.integers(1, max_steps * k))
        w, x = _random_layer(rng, M, N, K)
        idle, bp = [(0.0, 0.0), (0.3, 0.0), (0.0, 0.5), (0.4, 0.4)][i % 4]
        await tb.check_layer(w, x, rng, idle=idle, backpressure=bp,
                             label=f"layer {i} idle={idle} bp={bp} seed={config['seed']}")


async def check_extremes(tb, K: int, rng) -> None:
    """Every weight +1 or -1 against activations -128 and +127 over K, a tile of lanes."""
    for wv in (-1, 1):
        for av in (numerics.ACT_MIN, numerics.ACT_MAX):
            w = np.full((tb.cfg.lanes, K), wv, dtype=np.int8)
            x = np.full((1, K), av, dtype=np.int8)
            await tb.check_layer(w, x, rng, label=f"extreme w={wv} x={av} K={K}")


@cocotb.test()
async def random_layers(dut):
    """Random shapes: K not a multiple of k, N not of lanes, several tokens, short passes that
    wait for the result register; idle and back-pressure on every stream."""
    tb, config, rng = _setup(dut)
    await tb.reset()
    await check_random_layers(tb, config, rng, max_steps=12)


@cocotb.test()
async def extremes(dut):
    """Every weight +1 or -1 against activations -128 and +127 (the one's complement of -128
    and the count of left-out ones at their limits), K up to 16384."""
    tb, config, rng = _setup(dut)
    await tb.reset()
    await check_extremes(tb, config.get("extreme_k", 16384), rng)


@cocotb.test()
async def full_rate(dut):
    """Operands at full rate: cycles equal the closed form; utilization of a decode layer."""
    tb, config, rng = _setup(dut)
    await tb.reset()
    K = config.get("full_rate_k", 2000)
    w, x = _random_layer(rng, 1, 2 * tb.cfg.lanes, K)
    report = await tb.check_layer(w, x, rng, label="decode full rate")
    util = cycles.tree_utilization(report["plan"], report["cycles"])
    assert util >= config.get("min_utilization", 0.0), f"utilization {util:.3f}"
