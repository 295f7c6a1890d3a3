"""cocotb bench for ``rtl.uart`` on ``UARTLoopback``: a third-party UART model
(``cocotbext.uart``) sends on ``rx`` and receives on ``tx``, so every byte goes through the
receiver, its FIFO and the transmitter.

Run through ``sim.cocotb_runner.run_bench`` (see ``tests/cocotb/test_uart_cocotb.py``); the
configuration arrives as JSON: ``divisor`` (clock cycles per bit of the design), ``baud`` (the
nominal rate the design was built for: the divisor is ``round(clk_hz / baud)``, so the design's
actual rate may be off by the rounding), ``clk_period_ns`` and ``seed``.

Two things about the model to keep in mind when reading the numbers: it waits in whole
nanoseconds (``Timer(int(1e9 / baud), 'ns')``), so its bit time is truncated; and its sink only
samples the data bits (it does not check the stop bit), which is why the framing and gap checks
here look at the pins themselves.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, RisingEdge, Timer
from cocotbext.uart import UartSink, UartSource

from sim.cocotb_runner import bench_config


class TB:
    """Owns the clock, the reset and the two UART models of one loopback."""

    def __init__(self, dut, config: dict):
        self.dut = dut
        self.divisor = config["divisor"]
        self.baud = config["baud"]
        self.clk_ns = config.get("clk_period_ns", 10)
        self.bit_ns = self.divisor * self.clk_ns            # the design's bit time
        self.frame_ns = 10 * self.bit_ns
        self.rng = random.Random(config["seed"])
        self.source = self.sink = None
        cocotb.start_soon(Clock(dut.clk, self.clk_ns, unit="ns").start())

    async def reset(self):
        d = self.dut
        d.rx.value = 1
        d.rst.value = 1
        for _ in range(3):
            await RisingEdge(d.clk)
        d.rst.value = 0
        await RisingEdge(d.clk)

    def attach_models(self, baud: float):
        """A UartSource on ``rx`` and a UartSink on ``tx``, both at ``baud``."""
        self.source = UartSource(self.dut.rx, baud=baud, bits=8, stop_bits=1)
        self.sink = UartSink(self.dut.tx, baud=baud, bits=8, stop_bits=1)
        model_bit_ns = int(1e9 / baud)      # what the model really waits per bit
        self.dut._log.info("model at %.0f baud (bit %d ns), design %.0f baud (bit %d ns): "
                           "model bit time %+.2f%% off the design's", baud, model_bit_ns,
                           1e9 / self.bit_ns, self.bit_ns,
                           100 * (model_bit_ns / self.bit_ns - 1))

    async def receive(self, count: int, *, timeout_ns: float) -> bytes:
        """Wait for ``count`` bytes at the sink, then two more frame times to make sure no
        extra byte follows; return everything it got."""
        deadline = get_sim_time("ns") + timeout_ns
        while self.sink.count() < count:
            assert get_sim_time("ns") < deadline, (
                f"only {self.sink.count()} of {count} bytes came back in {timeout_ns:.0f} ns")
            await Timer(self.bit_ns, "ns")
        await Timer(2 * self.frame_ns, "ns")
        return bytes(self.sink.read_nowait())

    def check_counters(self, framing_errors: int = 0):
        assert int(self.dut.framing_errors.value) == framing_errors, (
            f"framing_errors = {int(self.dut.framing_errors.value)}, expected {framing_errors}")
        assert int(self.dut.overruns.value) == 0, f"overruns = {int(self.dut.overruns.value)}"

    def timeout_for(self, nbytes: int, model_baud: float) -> float:
        """Generous: the model's time to send them, plus the echo of the last one, plus 20%."""
        return 1.2 * (nbytes * 10 * 1e9 / model_baud + 2 * self.frame_ns)

    async def drive_frame(self, byte: int, *, stop: int, stop_bits: float = 1.0):
        """Send one frame by hand on ``rx`` at the design's bit time (the model cannot make a bad
        stop bit). ``stop_bits`` stretches the stop level: a break is a 0x00 with a long 0."""
        d = self.dut
        for bit in [0] + [(byte >> i) & 1 for i in range(8)]:
            d.rx.value = bit
            await Timer(self.bit_ns, "ns")
        d.rx.value = stop
        await Timer(round(stop_bits * self.bit_ns), "ns")
        d.rx.value = 1

    def random_bytes(self, n: int) -> bytes:
        return bytes(self.rng.randrange(256) for _ in range(n))


async def _setup(dut, baud_factor: float = 1.0):
    tb = TB(dut, bench_config())
    await tb.reset()
    tb.attach_models(tb.baud * baud_factor)
    return tb


async def _echo(tb: TB, data: bytes, *, chunked: bool):
    """Send ``data`` (in chunks with random idle times between them, or all back to back) and
    check that exactly it comes back."""
    if chunked:
        i = 0
        while i < len(data):
            n = tb.rng.randint(1, 48)
            await tb.source.write(data[i:i + n])
            await tb.source.wait()
            # Idle for a random time, not a whole number of clock cycles: every phase of the
            # next start bit against our clock gets tried.
            await Timer(tb.rng.randrange(0, 3 * tb.bit_ns * 1000) + 1, "ps")
            i += n
    else:
        await tb.source.write(data)
    got = await tb.receive(len(data), timeout_ns=tb.timeout_for(len(data), tb.source.baud))
    assert got == data, _diff(got, data)
    tb.check_counters()


def _diff(got: bytes, expected: bytes) -> str:
    for i, (g, e) in enumerate(zip(got, expected)):
        if g != e:
            return f"byte {i}: got {g:#04x}, expected {e:#04x} ({len(got)} of {len(expected)})"
    return f"got {len(got)} bytes, expected {len(expected)}"


@cocotb.test()
async def random_bytes(dut):
    """Every byte value once in random order, plus random bytes, at the nominal baud, in
    chunks separated by random idle times."""
    tb = await _setup(dut)
    values = list(range(256))
    tb.rng.shuffle(values)
    data = bytes(values) + tb.random_bytes(bench_config().get("extra_bytes", 32))
    await _echo(tb, data, chunked=True)


@cocotb.test()
async def back_to_back(dut):
    """A burst with no idle time at the design's exact rate: the receiver takes a start bit
    right after a stop bit, and the transmitter sends the echo without a gap (each start bit
    falls exactly one frame after the previous one)."""
    tb = TB(dut, bench_config())
    await tb.reset()
    # The model truncates its bit time to whole ns: aim half a ns above the design's bit time.
    tb.attach_models(1e9 / (tb.bit_ns + 0.5))
    n = bench_config().get("burst_bytes", 64)
    data = bytes([0x00, 0xFF]) + tb.random_bytes(n - 2)
    falls = []

    async def watch_tx():
        while True:
            await FallingEdge(dut.tx)
            falls.append(round(get_sim_time("ps")))

    watcher = cocotb.start_soon(watch_tx())
    await tb.source.write(data)
    got = await tb.receive(len(data), timeout_ns=tb.timeout_for(len(data), tb.source.baud))
    watcher.cancel()
    assert got == data, _diff(got, data)
    tb.check_counters()
    frame_ps = tb.frame_ns * 1000
    edges = set(falls)
    missing = [k for k in range(len(data)) if falls[0] + k * frame_ps not in edges]
    assert not missing, (f"tx: no start bit exactly {missing[0]} frames after the first one: "
                         f"the echo has idle time between frames")


async def _off_rate(dut, factor: float):
    tb = await _setup(dut, factor)
    data = bytes([0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80]) + tb.random_bytes(
        bench_config().get("off_rate_bytes", 64))
    await _echo(tb, data, chunked=False)


@cocotb.test()
async def baud_fast(dut):
    """The model runs 2% faster than the nominal baud (both directions), back to back."""
    await _off_rate(dut, 1.02)


@cocotb.test()
async def baud_slow(dut):
    """The model runs 2% slower than the nominal baud (both directions), back to back."""
    await _off_rate(dut, 0.98)


@cocotb.test()
async def framing_error(dut):
    """A frame with a 0 stop bit and a break (line low for three frame times) are each
    dropped and counted; the bytes after them come back intact and nothing else does."""
    tb = await _setup(dut)
    await Timer(tb.frame_ns, "ns")
    await tb.drive_frame(0xA7, stop=0)
    await Timer(2 * tb.bit_ns, "ns")
    assert int(dut.framing_errors.value) == 1, "the 0 stop bit was not counted"
    await tb.source.write(b"\x5a")
    await tb.source.wait()
    await tb.drive_frame(0x00, stop=0, stop_bits=21)     # 30 bit times low
    await Timer(2 * tb.bit_ns, "ns")
    await tb.source.write(b"\xc3\x3c")
    got = await tb.receive(3, timeout_ns=tb.timeout_for(8, tb.source.baud))
    assert got == b"\x5a\xc3\x3c", _diff(got, b"\x5a\xc3\x3c")
    tb.check_counters(framing_errors=2)
