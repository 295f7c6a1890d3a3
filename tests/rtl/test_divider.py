"""rtl.divider.Divider against Python's divmod (Amaranth simulator)."""

import random

from amaranth.sim import Simulator

from rtl.divider import Divider


def test_divider_matches_divmod():
    dut = Divider(24)
    rng = random.Random(1)
    cases = [(0, 1), (1, 1), (255, 255), (256, 255), (16384 + 254, 255), (2**24 - 1, 1),
             (2**24 - 1, 2**24 - 1), (7, 3), (10, 4)]
    cases += [(rng.randrange(2**24), rng.randrange(1, 2**24)) for _ in range(25)]
    cases += [(rng.randrange(2**24), rng.randrange(1, 300)) for _ in range(25)]
    got = []

    async def bench(ctx):
        for a, b in cases:
            ctx.set(dut.dividend, a)
            ctx.set(dut.divisor, b)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await ctx.tick().until(dut.done)
            got.append((ctx.get(dut.quotient), ctx.get(dut.remainder)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for (a, b), qr in zip(cases, got):
        assert qr == divmod(a, b), f"divmod({a}, {b}) gave {qr}"
