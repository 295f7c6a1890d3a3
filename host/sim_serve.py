"""``tritium sim-serve``: the simulated board behind a pseudo-terminal.

The device core and its UART (``rtl.uart_device.UARTDevice``) run in Verilator with the bytes
crossing the UART pins bit by bit; this process shuttles them between the simulator and the
master side of a pseudo-terminal. ``open_device("serial:<slave path>")`` then talks to it
exactly as to a board on a USB-serial port.
"""

from __future__ import annotations

import os
import select
import sys
import tty

from sim import verilator_device

from .transport import DEFAULT_BAUD

DEFAULT_DIVISOR = 8     # cycles per UART bit in simulation (fast, and within the UART's range)


class SimServer:
    """A simulated UART board on a fresh pseudo-terminal (``path``)."""

    def __init__(self, *, divisor: int = DEFAULT_DIVISOR, progress=None, **config):
        say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
        # A partial frame keeps the simulation running at full speed, so its frame timeout
        # passes in a few milliseconds of wall time; make it long enough for a host that
        # writes a frame in pieces (about a second of simulation).
        config.setdefault("frame_timeout", 1 << 22)
        # The board's clock as INFO tells it: the rate at which a UART of ``divisor`` cycles a
        # bit runs at the host's default baud. The host then times the device against the
        # line (``host.plan``: which requests it may send ahead) as it would a real board's.
        config.setdefault("clock_hz", divisor * DEFAULT_BAUD)
        self.config = verilator_device.core_config(**config)
        self.proc = verilator_device.spawn(self.config, uart_divisor=divisor, progress=say)
        self.master, slave = os.openpty()
        tty.setraw(slave)           # bytes pass unchanged: no echo, no line discipline
        self.path = os.ttyname(slave)
        self._slave = slave         # kept open so the pty survives clients coming and going

    def serve(self, stop=lambda: False) -> None:
        """Shuttle bytes until ``stop()`` is true or the simulator exits."""
        sim_out = self.proc.stdout.fileno()
        while not stop() and self.proc.poll() is None:
            ready, _, _ = select.select([self.master, sim_out], [], [], 0.1)
            if self.master in ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    data = b""
                if data:
                    self.proc.stdin.write(data)
            if sim_out in ready:
                data = os.read(sim_out, 65536)
                if not data:
                    break
                os.write(self.master, data)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except Exception:
                self.proc.kill()
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
