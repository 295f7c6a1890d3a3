"""boards.top.hold_reset_until_locked: the device leaves reset a few cycles after the PLL
locks, and goes back into it when the lock is lost. (Before stop 39 the reset counter sat in
the domain it reset, cleared itself, and held every board's device in reset for good.)"""

from amaranth.hdl import ClockDomain, Module, Signal
from amaranth.sim import Simulator

from boards.top import RESET_CYCLES, hold_reset_until_locked


def test_the_device_leaves_reset_after_the_pll_locks_and_returns_when_it_is_lost():
    m = Module()
    m.domains.sync = sync = ClockDomain("sync")
    locked = Signal()
    hold_reset_until_locked(m, locked)
    running = Signal(8)         # a register of the device: counts while out of reset
    m.d.sync += running.eq(running + 1)
    seen = []

    async def testbench(ctx):
        for cycle in range(40):
            lock = 5 <= cycle < 30          # locks at cycle 5, loses the lock at 30
            ctx.set(locked, lock)
            seen.append((cycle, ctx.get(sync.rst), ctx.get(running)))
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    in_reset = [cycle for cycle, reset, _ in seen if reset]
    # held from the start until RESET_CYCLES cycles of lock have passed, and again once the
    # lock is lost
    released = 5 + RESET_CYCLES
    assert in_reset == list(range(released)) + list(range(31, 40))
    counts = {cycle: count for cycle, _, count in seen}
    assert counts[released] == 0 and counts[29] == 29 - released
    assert counts[31] == counts[30] + 1 and counts[39] == 0      # cleared by the reset again
