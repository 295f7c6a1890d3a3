"""Tests of rtl.uart in Amaranth's simulator, against a naive bit-level model of an 8N1 line.

The model is a list of line levels, one per clock cycle: a frame is ``divisor`` cycles of the
start bit (0), ``divisor`` cycles of each data bit, LSB first, and ``divisor`` cycles of the
stop bit (1). The transmitter's ``tx`` must match it cycle for cycle; the receiver is driven
from it (also with a bit period a few percent off, to check the mid-bit sampling).

Cycle convention: a testbench sets the inputs of cycle ``t``, reads the settled outputs, then
awaits the clock edge that ends cycle ``t``; a stream transfer happens in cycle ``t`` when
``valid & ready`` hold at that point.
"""

from __future__ import annotations

import gc
import random
import warnings

import pytest
from amaranth.hdl import Fragment, Module, UnusedElaboratable
from amaranth.lib import stream, wiring
from amaranth.sim import Simulator

from rtl.uart import (UART, UARTLoopback, UARTReceiver, UARTTransmitter, divisor_for)


# -- the model -------------------------------------------------------------------------------

def frame_bits(byte: int, stop: int = 1) -> list[int]:
    """The ten line levels of one 8N1 frame: start, data LSB first, stop."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


def frame_levels(byte: int, divisor: int, stop: int = 1) -> list[int]:
    """One frame as per-cycle line levels, each bit ``divisor`` cycles."""
    return [level for bit in frame_bits(byte, stop) for level in [bit] * divisor]


def line_levels(frames: list[list[int]], period: float, *, phase: float = 0.0,
                idle_bits: float = 0.0) -> list[int]:
    """Frames of bits sent back to back (with ``idle_bits`` of idle line between them) by a
    sender whose bit lasts ``period`` cycles (fractional: an unsynchronized, off-rate sender),
    sampled once per cycle. ``phase`` delays the first edge by a fraction of a cycle."""
    edges = []          # (time, level) of every bit start
    t = phase
    for bits in frames:
        for bit in bits:
            edges.append((t, bit))
            t += period
        edges.append((t, 1))
        t += idle_bits * period
    levels = []
    i = 0
    for c in range(int(t) + 2):
        while i < len(edges) and edges[i][0] <= c:   # level on the pin during cycle c
            i += 1
        levels.append(edges[i - 1][1] if i else 1)
    return levels


def decode_levels(levels: list[int], divisor: int) -> list[int]:
    """Naive receiver: find a falling edge, read each bit in the middle of its ``divisor``
    cycles, require a high stop bit."""
    out = []
    c = 1
    while c < len(levels):
        if levels[c - 1] == 1 and levels[c] == 0:
            mid = c + divisor // 2
            bits = [levels[mid + k * divisor] for k in range(10)]
            assert bits[0] == 0 and bits[9] == 1, f"bad frame at cycle {c}: {bits}"
            out.append(sum(b << i for i, b in enumerate(bits[1:9])))
            c += 10 * divisor - divisor // 2    # into the stop bit
        else:
            c += 1
    return out


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# -- divisor_for -----------------------------------------------------------------------------

@pytest.mark.parametrize("clk_hz,baud,divisor", [
    (100e6, 1_000_000, 100),
    (100e6, 3_000_000, 33),         # 3.03 Mbaud: +1.0%
    (100e6, 12_500_000, 8),
    (100e6, 25_000_000, 4),         # the smallest divisor
    (12e6, 115_200, 104),
    (48e6, 115_200, 417),
    (100e6, 100e6 / 10.19, 10),     # +1.9%: still accepted
])
def test_divisor_for(clk_hz, baud, divisor):
    assert divisor_for(clk_hz, baud) == divisor
    assert divisor == round(clk_hz / baud)


@pytest.mark.parametrize("clk_hz,baud,message", [
    (100e6, 30e6, "at least 4"),            # 3.33 cycles per bit
    (100e6, 50e6, "at least 4"),
    (10e6, 1.8e6, "off"),                   # 5.56 -> 6: -7.4%
    (100e6, 22e6, "off"),                   # 4.55 -> 5: -9.1%
    (100e6, 100e6 / 10.21, "off"),          # +2.1%
    (100e6, 0, "positive"),
])
def test_divisor_for_errors(clk_hz, baud, message):
    with pytest.raises(ValueError, match=message):
        divisor_for(clk_hz, baud)


def test_parameter_checks():
    # The half-built objects would warn (UnusedElaboratable) when collected: collect them here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="at least 4"):
            UARTReceiver(3)
        with pytest.raises(ValueError, match="at least 4"):
            UARTTransmitter(0)
        with pytest.raises(TypeError, match="integer"):
            UART(8.0)
        with pytest.raises(ValueError, match="fifo_depth"):
            UARTReceiver(8, fifo_depth=0)
        gc.collect()
    uart = UART(33, fifo_depth=4)
    assert uart.rx_data.signature == stream.Signature(8)
    assert uart.tx_data.signature == stream.Signature(8).flip()
    Fragment.get(uart, None)


# -- transmitter -----------------------------------------------------------------------------

def run_transmitter(divisor: int, data: list[int], cycles: int):
    """Offer ``data`` back to back from cycle 0; return the per-cycle ``tx`` levels and the
    cycles in which bytes were taken."""
    dut = UARTTransmitter(divisor)
    wave, taken = [], []

    async def bench(ctx):
        queue = list(data)
        for t in range(cycles):
            ctx.set(dut.input.valid, bool(queue))
            if queue:
                ctx.set(dut.input.payload, queue[0])
            if queue and ctx.get(dut.input.ready):
                taken.append(t)
                queue.pop(0)
            wave.append(ctx.get(dut.tx))
            await ctx.tick()

    simulate(dut, bench)
    return wave, taken


@pytest.mark.parametrize("divisor", [4, 5, 33])
def test_transmitter_waveform(divisor):
    """One byte: idle high, then exactly the model's frame, then idle again."""
    byte = 0x4B         # 0b01001011: not a palindrome, so bit order shows
    wave, taken = run_transmitter(divisor, [byte], 12 * divisor)
    assert taken == [0]
    assert wave[0] == 1                                         # the start bit follows the edge
    assert wave[1:1 + 10 * divisor] == frame_levels(byte, divisor)
    assert set(wave[1 + 10 * divisor:]) == {1}


def test_transmitter_back_to_back():
    """Bytes offered continuously leave without a single idle cycle between frames."""
    divisor, data = 6, [0x00, 0xFF, 0x55, 0x81, 0x7E]
    frame = 10 * divisor
    wave, taken = run_transmitter(divisor, data, (len(data) + 2) * frame)
    assert taken == [i * frame for i in range(len(data))]       # the last cycle of each stop bit
    expected = [1] + [level for b in data for level in frame_levels(b, divisor)]
    assert wave[:len(expected)] == expected
    assert set(wave[len(expected):]) == {1}


# -- receiver --------------------------------------------------------------------------------

def run_receiver(divisor: int, levels: list[int], *, fifo_depth: int = 16,
                 ready_from: int = 0, extra: int = 0):
    """Drive ``rx`` with ``levels`` (one per cycle), then idle for ``extra`` cycles; ``ready``
    is held low until cycle ``ready_from``. Returns (bytes, framing_errors, overruns) where the
    counters are read at the end."""
    dut = UARTReceiver(divisor, fifo_depth=fifo_depth)
    got, counters = [], {}

    async def bench(ctx):
        total = max(len(levels) + extra, ready_from + 3 * fifo_depth)
        for t in range(total):
            ctx.set(dut.rx, levels[t] if t < len(levels) else 1)
            ctx.set(dut.output.ready, t >= ready_from)
            if ctx.get(dut.output.valid) and t >= ready_from:
                got.append(ctx.get(dut.output.payload))
            await ctx.tick()
        counters["framing"] = ctx.get(dut.framing_errors)
        counters["overruns"] = ctx.get(dut.overruns)

    simulate(dut, bench)
    return got, counters["framing"], counters["overruns"]


@pytest.mark.parametrize("divisor,rate_error", [
    (4, 0.0), (5, 0.0), (8, 0.0), (33, 0.0),
    (5, +0.02), (5, -0.02),
    (7, +0.02), (7, -0.02),
    (4, +0.02), (4, -0.02),         # the iCEBreaker's 6 Mbaud at 24 MHz, 2% off either way
    (8, +0.03), (8, -0.03),         # 12 Mbaud at 96 MHz (the ECPIX-5's clock before 120)
    (10, +0.03), (10, -0.03),       # the ECPIX-5's 12 Mbaud at 120 MHz, 3% off either way
    (25, +0.03), (25, -0.03),       # 3 Mbaud at 75 MHz (the ULX3S-85F's clock before 84.375)
    (27, +0.03), (27, -0.03),       # 3 Mbaud at the ULX3S-85F's 81.25 MHz
    (28, +0.03), (28, -0.03),       # 3 Mbaud at 84.375 MHz (the ULX3S-85F's clock before 81.25)
    (30, +0.03), (30, -0.03),       # 3 Mbaud at 90 MHz (the ULX3S-12F's and -25F's before 100)
    (32, +0.03), (32, -0.03),       # 3 Mbaud at the OrangeCrab's 96 MHz (its clock before 108)
    (36, +0.03), (36, -0.03),       # 3 Mbaud at the OrangeCrab's 108 MHz (as before its 120)
    (40, +0.03), (40, -0.03),       # 3 Mbaud at 120 MHz (the OrangeCrab's clock before 108)
    (16, +0.04), (16, -0.04),
    (33, +0.04), (33, -0.04),       # 3 Mbaud at 100 MHz: the ULX3S-85F and -25F (33.3 cycles a bit)
])
def test_receiver_rate_tolerance(divisor, rate_error):
    """Back-to-back frames from a sender whose bits last ``divisor * (1 - rate_error)`` cycles,
    at a few phases against our clock: every byte arrives, no errors."""
    rng = random.Random(divisor * 100 + int(rate_error * 1000))
    data = [0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(4)]
    period = divisor / (1 + rate_error)
    for phase in (0.0, 0.3, 0.7):
        levels = [1] * 3 + line_levels([frame_bits(b) for b in data], period, phase=phase)
        got, framing, overruns = run_receiver(divisor, levels, extra=2 * divisor)
        assert (got, framing, overruns) == (data, 0, 0), f"phase {phase}"


def test_receiver_framing_error():
    """A 0 stop bit drops the byte and counts it, and so does a break (line held low for three
    frames); the bytes after each are received."""
    d = 8
    levels = ([1] * 5 + frame_levels(0x3C, d, stop=0) + [1] * (2 * d)
              + frame_levels(0xC3, d)
              + [0] * (30 * d) + [1] * (2 * d)                  # break
              + frame_levels(0x5A, d) + [1] * d)
    got, framing, overruns = run_receiver(d, levels)
    assert (got, framing, overruns) == ([0xC3, 0x5A], 2, 0)


def test_receiver_glitch_is_not_a_start_bit():
    """A low pulse shorter than half a bit is ignored."""
    d = 16
    levels = [1] * 5 + [0] * 3 + [1] * (2 * d) + frame_levels(0x96, d) + [1] * d
    assert run_receiver(d, levels) == ([0x96], 0, 0)


def test_receiver_fifo_and_overrun():
    """With the consumer stalled the FIFO keeps ``fifo_depth`` bytes; further bytes are dropped
    and counted; once the consumer is ready the kept bytes come out in order."""
    d, depth = 5, 4
    data = [0x10, 0x21, 0x32, 0x43, 0x54, 0x65]
    levels = [1] * 3 + [lv for b in data for lv in frame_levels(b, d)] + [1] * d
    got, framing, overruns = run_receiver(d, levels, fifo_depth=depth, ready_from=len(levels))
    assert (got, framing, overruns) == (data[:depth], 0, len(data) - depth)


# -- loopback --------------------------------------------------------------------------------

class TxToRx(wiring.Component):
    """A transmitter wired to a receiver."""

    def __init__(self, divisor):
        self.transmitter = UARTTransmitter(divisor)
        self.receiver = UARTReceiver(divisor)
        super().__init__({
            "input": wiring.In(stream.Signature(8)),
            "output": wiring.Out(self.receiver.output.signature),
            "tx": wiring.Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.transmitter = self.transmitter
        m.submodules.receiver = self.receiver
        wiring.connect(m, wiring.flipped(self.input), self.transmitter.input)
        wiring.connect(m, self.receiver.output, wiring.flipped(self.output))
        m.d.comb += [self.receiver.rx.eq(self.transmitter.tx), self.tx.eq(self.transmitter.tx)]
        return m


@pytest.mark.parametrize("divisor", [4, 7, 33])
def test_transmitter_to_receiver(divisor):
    """Bytes through the transmitter and back in through the receiver; the line checked
    against the model on the way (the first frame exactly, all frames by the naive decoder)."""
    data = [0xA5, 0x00, 0xFF, 0x01, 0x80, 0x3C]
    dut = TxToRx(divisor)
    wave, got = [], []

    async def bench(ctx):
        queue = list(data)
        ctx.set(dut.output.ready, 1)
        for _ in range((len(data) + 2) * 10 * divisor):
            ctx.set(dut.input.valid, bool(queue))
            if queue:
                ctx.set(dut.input.payload, queue[0])
                if ctx.get(dut.input.ready):
                    queue.pop(0)
            if ctx.get(dut.output.valid):
                got.append(ctx.get(dut.output.payload))
            wave.append(ctx.get(dut.tx))
            await ctx.tick()

    simulate(dut, bench)
    assert got == data
    assert wave[1:1 + 10 * divisor] == frame_levels(data[0], divisor)
    assert decode_levels(wave, divisor) == data


def test_loopback_component():
    """UARTLoopback echoes what it receives."""
    d = 6
    data = [0x42, 0x00, 0xFF, 0x99]
    dut = UARTLoopback(d, fifo_depth=4)
    wave = []
    levels = [1] * 3 + [lv for b in data for lv in frame_levels(b, d)]

    async def bench(ctx):
        for t in range(len(levels) + 12 * d):
            ctx.set(dut.rx, levels[t] if t < len(levels) else 1)
            wave.append(ctx.get(dut.tx))
            await ctx.tick()
        assert ctx.get(dut.framing_errors) == 0
        assert ctx.get(dut.overruns) == 0

    simulate(dut, bench)
    assert decode_levels(wave, d) == data
