"""The device core behind a UART: what a board with a USB-serial bridge runs.

Boards wrap this with their pins, clock and LEDs; ``tritium sim-serve`` runs it bit for bit in
Verilator behind a pseudo-terminal.
"""

from amaranth.hdl import Module
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from .core import DeviceCore
from .uart import COUNTER_WIDTH, DEFAULT_FIFO_DEPTH, UART


class UARTDevice(wiring.Component):
    """:class:`rtl.core.DeviceCore` with its byte streams on a :class:`rtl.uart.UART`.

    Parameters
    ----------
    divisor : int
        Clock cycles per UART bit (``rtl.uart.divisor_for(clk_hz, baud)``).
    **core : the :class:`DeviceCore` parameters.

    Members
    -------
    rx : In(1)
    tx : Out(1)
        The UART pins.
    busy : Out(1)
        A frame is arriving or being answered, or bytes wait in the UART's receive FIFO or
        the transmit buffer (for a "busy" LED, and so that a simulation knows when it may
        sleep).
    framing_errors, overruns : Out(16)
        The UART receiver's error counters.
    """

    def __init__(self, *, divisor: int, fifo_depth: int = DEFAULT_FIFO_DEPTH, **core):
        self.uart = UART(divisor, fifo_depth=fifo_depth)
        self.core = DeviceCore(**core)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "busy": Out(1),
            "framing_errors": Out(COUNTER_WIDTH),
            "overruns": Out(COUNTER_WIDTH),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = self.uart
        m.submodules.core = core = self.core
        wiring.connect(m, uart.rx_data, core.rx)
        # Two bytes of buffer between the core's response bytes and the transmitter: the
        # core picks each byte from several sources by its index, and without a register
        # behind it that choice ran on into the transmitter's shift register (the longest
        # path of a 2x2 ULX3S build at 100 MHz once control was pipelined).
        m.submodules.tx_buffer = tx_buffer = fifo.SyncFIFO(width=8, depth=2)
        wiring.connect(m, core.tx, tx_buffer.w_stream)
        wiring.connect(m, tx_buffer.r_stream, uart.tx_data)
        m.d.comb += [
            uart.rx.eq(self.rx),
            self.tx.eq(uart.tx),
            self.busy.eq(core.busy | uart.rx_data.valid | tx_buffer.r_rdy),
            self.framing_errors.eq(uart.framing_errors),
            self.overruns.eq(uart.overruns),
        ]
        return m
