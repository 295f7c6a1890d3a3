"""The device core behind a UART: what a board with a USB-serial bridge runs.

Boards wrap this with their pins, clock and LEDs; ``tritium sim-serve`` runs it bit for bit in
Verilator behind a pseudo-terminal.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
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
        A frame is arriving or being answered, or received bytes wait in the UART's FIFO
        (for a "busy" LED, and so that a simulation knows when it may sleep).
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
        wiring.connect(m, core.tx, uart.tx_data)
        m.d.comb += [
            uart.rx.eq(self.rx),
            self.tx.eq(uart.tx),
            self.busy.eq(core.busy | uart.rx_data.valid),
            self.framing_errors.eq(uart.framing_errors),
            self.overruns.eq(uart.overruns),
        ]
        return m
