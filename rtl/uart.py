"""A plain 8N1 UART (8 data bits, LSB first, no parity, one stop bit) with byte streams.

This is the host link: the board's USB-serial bridge talks to it, and everything above it
(``docs/protocol.md``) only sees bytes. So the two halves are built to be boring and exact:

* Both sides count a fixed number of clock cycles per bit, ``divisor`` = clk_hz / baud rounded
  to an integer (:func:`divisor_for` checks that the rounding leaves the rate within 2%).
* The receiver synchronizes ``rx`` with two flip-flops, starts on the first low level after
  idle, and samples every bit in its middle. The synchronizer's latency is taken off the wait
  for the middle of the start bit, so the sampling point is centred on the bit as it is on the
  pin: a sender whose rate differs from ours by a few percent (the host's rate is the requested
  baud, ours the rounded one) still lands every sample, stop bit included, inside its bit.
* A byte whose stop bit reads 0 is a framing error: it is dropped and counted, and the receiver
  waits for the line to go high again (a break holds it low for many bit times) before looking
  for the next start bit.
* Received bytes go through a small FIFO, so the consumer may stall for a while (up to
  ``fifo_depth`` byte times) without losing anything; a byte that finds the FIFO full is dropped
  and counted as an overrun.
* The transmitter takes the next byte in the last cycle of the current stop bit, so a stream
  that stays valid is sent back to back at exactly the line rate.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

#: Smallest supported divisor: the receiver needs a few cycles to centre its samples.
MIN_DIVISOR = 4
#: Largest rate error :func:`divisor_for` accepts. Mid-bit sampling tolerates about 5% between
#: the two ends in total; the rounding gets at most 2% of it, the rest is for the host's clock.
MAX_RATE_ERROR = 0.02
#: Width of the error counters.
COUNTER_WIDTH = 16
#: Bytes the receiver's FIFO holds by default: what may arrive while the core is busy with a
#: frame (the host paces requests it sends ahead by it, ``host.plan.RequestPlanner``).
DEFAULT_FIFO_DEPTH = 16


def divisor_for(clk_hz: float, baud: float) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_hz``: ``round(clk_hz / baud)``.

    Raises :exc:`ValueError` when the resulting rate, ``clk_hz / divisor``, is more than 2% away
    from ``baud`` or the divisor is below 4 (the UART would not work reliably).
    """
    if clk_hz <= 0 or baud <= 0:
        raise ValueError(f"clock ({clk_hz} Hz) and baud rate ({baud}) must be positive")
    divisor = round(clk_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"{baud} baud at {clk_hz} Hz needs {clk_hz / baud:.2f} cycles per bit; "
                         f"the UART needs at least {MIN_DIVISOR}")
    error = (clk_hz / divisor - baud) / baud
    if abs(error) > MAX_RATE_ERROR:
        raise ValueError(f"{baud} baud at {clk_hz} Hz: divisor {divisor} gives "
                         f"{clk_hz / divisor:.1f} baud, {error:+.2%} off (limit "
                         f"{MAX_RATE_ERROR:.0%})")
    return divisor


def _check_divisor(divisor) -> int:
    if not isinstance(divisor, int) or isinstance(divisor, bool):
        raise TypeError(f"divisor must be an integer number of clock cycles per bit, "
                        f"not {divisor!r}")
    if divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be at least {MIN_DIVISOR}, not {divisor}")
    return divisor


class UARTReceiver(wiring.Component):
    """8N1 receiver with a FIFO on its output.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4: clk_hz / baud rounded (see :func:`divisor_for`).
    fifo_depth : int
        Bytes the output FIFO holds while the consumer is not ready.

    Members
    -------
    rx : In(1)
        The serial line, asynchronous to the clock (it is synchronized here); idles high.
    output : Out(stream.Signature(8))
        Received bytes, in order.
    framing_errors : Out(16)
        Bytes dropped because their stop bit was 0 (saturates at 0xFFFF).
    overruns : Out(16)
        Bytes dropped because the FIFO was full (saturates at 0xFFFF).
    """

    def __init__(self, divisor: int, *, fifo_depth: int = DEFAULT_FIFO_DEPTH):
        self.divisor = _check_divisor(divisor)
        if not isinstance(fifo_depth, int) or fifo_depth < 1:
            raise ValueError(f"fifo_depth must be a positive integer, not {fifo_depth!r}")
        self.fifo_depth = fifo_depth
        super().__init__({
            "rx": In(1, init=1),
            "output": Out(stream.Signature(8)),
            "framing_errors": Out(COUNTER_WIDTH),
            "overruns": Out(COUNTER_WIDTH),
        })

    def elaborate(self, platform):
        m = Module()
        divisor = self.divisor

        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1, stages=2)
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=8, depth=self.fifo_depth)

        # A low level on the pin reaches `rx` after the synchronizer's two edges (1 to 2 cycles
        # after the pin, depending on where in the cycle it fell); seeing it in IDLE costs one
        # more edge. Waiting `first_wait` more cycles puts the start bit's sample (divisor - 3)//2
        # + 1.5 cycles, i.e. half a bit on average, after the edge on the pin.
        first_wait = (divisor - 3) // 2
        timer = Signal(range(divisor))
        bits = Signal(range(8))
        shreg = Signal(8)
        done = Signal()           # a byte with a good stop bit, this cycle
        bad_stop = Signal()       # a byte with a bad stop bit, this cycle

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(first_wait)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.next = "IDLE"         # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(divisor - 1), bits.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [
                        shreg.eq(Cat(shreg[1:], rx)),   # LSB first: shift in from the top
                        bits.eq(bits + 1),
                        timer.eq(divisor - 1),
                    ]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.d.comb += done.eq(1)
                    m.next = "IDLE"         # half a stop bit early: tolerates a fast sender
                with m.Else():
                    m.d.comb += bad_stop.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                # The line is low where it should idle: wait until it is released.
                with m.If(rx):
                    m.next = "IDLE"

        m.d.comb += [
            fifo.w_data.eq(shreg),
            fifo.w_en.eq(done),
            self.output.payload.eq(fifo.r_data),
            self.output.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.output.ready),
        ]
        with m.If(bad_stop & (self.framing_errors != (1 << COUNTER_WIDTH) - 1)):
            m.d.sync += self.framing_errors.eq(self.framing_errors + 1)
        with m.If(done & ~fifo.w_rdy & (self.overruns != (1 << COUNTER_WIDTH) - 1)):
            m.d.sync += self.overruns.eq(self.overruns + 1)
        return m


class UARTTransmitter(wiring.Component):
    """8N1 transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4: clk_hz / baud rounded (see :func:`divisor_for`).

    Members
    -------
    input : In(stream.Signature(8))
        Bytes to send. A byte is taken when the line is idle or in the last cycle of the
        previous stop bit, so bytes offered back to back leave without idle time between them.
    tx : Out(1)
        The serial line, driven from a flip-flop (no glitches); high when idle.
    """

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(divisor)
        super().__init__({
            "input": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        divisor = self.divisor

        busy = Signal()
        timer = Signal(range(divisor))
        bits_left = Signal(range(10))     # bits still to send after the one on the line
        shreg = Signal(9)                 # data bits then the stop bit, next bit at the bottom
        bit_ends = Signal()

        m.d.comb += [
            bit_ends.eq(timer == 0),
            self.input.ready.eq(~busy | (bit_ends & (bits_left == 0))),
        ]
        with m.If(self.input.valid & self.input.ready):
            m.d.sync += [
                busy.eq(1),
                self.tx.eq(0),                          # start bit
                shreg.eq(Cat(self.input.payload, 1)),
                bits_left.eq(9),
                timer.eq(divisor - 1),
            ]
        with m.Elif(busy & ~bit_ends):
            m.d.sync += timer.eq(timer - 1)
        with m.Elif(busy & (bits_left != 0)):
            m.d.sync += [
                self.tx.eq(shreg[0]),
                shreg.eq(shreg >> 1),
                bits_left.eq(bits_left - 1),
                timer.eq(divisor - 1),
            ]
        with m.Elif(busy):
            m.d.sync += [busy.eq(0), self.tx.eq(1)]     # end of the stop bit, nothing queued
        return m


class UART(wiring.Component):
    """Receiver and transmitter at the same rate.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4: clk_hz / baud rounded (see :func:`divisor_for`).
    fifo_depth : int
        Depth of the receive FIFO.

    Members
    -------
    rx : In(1)
    tx : Out(1)
        The pins.
    rx_data : Out(stream.Signature(8))
        Received bytes (see :class:`UARTReceiver`).
    tx_data : In(stream.Signature(8))
        Bytes to send (see :class:`UARTTransmitter`).
    framing_errors, overruns : Out(16)
        The receiver's error counters.
    """

    def __init__(self, divisor: int, fifo_depth: int = DEFAULT_FIFO_DEPTH):
        self.divisor = _check_divisor(divisor)
        self.fifo_depth = fifo_depth
        self.receiver = UARTReceiver(divisor, fifo_depth=fifo_depth)
        self.transmitter = UARTTransmitter(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "rx_data": Out(stream.Signature(8)),
            "tx_data": In(stream.Signature(8)),
            "framing_errors": Out(COUNTER_WIDTH),
            "overruns": Out(COUNTER_WIDTH),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = rxr = self.receiver
        m.submodules.transmitter = txr = self.transmitter
        m.d.comb += [
            rxr.rx.eq(self.rx),
            self.tx.eq(txr.tx),
            self.framing_errors.eq(rxr.framing_errors),
            self.overruns.eq(rxr.overruns),
        ]
        wiring.connect(m, rxr.output, wiring.flipped(self.rx_data))
        wiring.connect(m, wiring.flipped(self.tx_data), txr.input)
        return m


class UARTLoopback(wiring.Component):
    """Echo: every byte received on ``rx`` is sent back on ``tx``, through the receive FIFO.

    The test top for the UART benches (a UART model on each pin); also a first bring-up design
    for a board's serial link.

    Members
    -------
    rx : In(1)
    tx : Out(1)
    framing_errors, overruns : Out(16)
        The receiver's error counters.
    """

    def __init__(self, divisor: int, fifo_depth: int = DEFAULT_FIFO_DEPTH):
        self.divisor = _check_divisor(divisor)
        self.uart = UART(divisor, fifo_depth=fifo_depth)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "framing_errors": Out(COUNTER_WIDTH),
            "overruns": Out(COUNTER_WIDTH),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = self.uart
        m.d.comb += [
            uart.rx.eq(self.rx),
            self.tx.eq(uart.tx),
            self.framing_errors.eq(uart.framing_errors),
            self.overruns.eq(uart.overruns),
        ]
        wiring.connect(m, uart.rx_data, uart.tx_data)
        return m
