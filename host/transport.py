"""Byte transports under the link protocol: emulator, serial (UART), PCIe (XDMA streams).

A :class:`Transport` moves bytes, nothing more: framing, CRCs and retries live in
:mod:`host.protocol` and :mod:`host.device`. ``read(max_bytes, timeout)`` waits up to
``timeout`` seconds for at least one byte and returns what has arrived (``b""`` on timeout).
"""

from __future__ import annotations

import abc
import errno
import os
import select
import time
from typing import Callable

from rtl.uart import DEFAULT_FIFO_DEPTH as UART_FIFO_DEPTH

from .protocol import DeviceBusy, DeviceNotFound, TransportError

__all__ = ["Transport", "EmulatorTransport", "SimTransport", "SerialTransport", "PcieTransport",
           "DEFAULT_BAUD", "parse_serial_spec"]

DEFAULT_BAUD = 3_000_000


class Transport(abc.ABC):
    """A bidirectional byte stream to one device."""

    #: how the device was named when opened (used in error messages)
    name: str = "transport"
    #: sustained link rate, used to stretch timeouts for long frames (None: fast enough)
    bytes_per_second: float | None = None
    #: bytes the device can take while it is busy, on a link without flow control (a UART's
    #: receive FIFO); None: the link holds the host back itself (``host.plan``)
    rx_buffer: int | None = None

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send all of ``data``."""

    @abc.abstractmethod
    def read(self, max_bytes: int, timeout: float) -> bytes:
        """Up to ``max_bytes`` received bytes; waits at most ``timeout`` s for the first one."""

    def close(self) -> None:
        """Release the link (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"


# ---------------------------------------------------------------------------------------------
# In-process emulator
# ---------------------------------------------------------------------------------------------

Fault = Callable[[str, bytes], bytes]


class EmulatorTransport(Transport):
    """An :class:`host.emu.EmulatedDevice` in this process.

    ``fault``, if given, is called as ``fault(direction, data)`` with direction ``"h2c"``
    (request bytes on their way to the device) or ``"c2h"`` (response bytes on their way back)
    and returns the bytes that actually arrive: tests use it to corrupt, drop or truncate
    traffic. A read that finds nothing pending is a timeout: the device sees silence
    (:meth:`~host.emu.EmulatedDevice.idle`), as a real device would after ``frame_timeout``.
    """

    def __init__(self, device=None, *, fault: Fault | None = None, name: str = "emu",
                 **config):
        if device is None:
            from .emu import EmulatedDevice
            device = EmulatedDevice(**config)
        elif config:
            raise TypeError(f"EmulatorTransport: device given, unexpected arguments "
                            f"{sorted(config)}")
        self.device = device
        self.fault = fault
        self.name = name
        self._closed = False

    def _check_open(self):
        if self._closed:
            raise TransportError(f"{self.name}: transport is closed")

    def write(self, data: bytes) -> None:
        self._check_open()
        data = bytes(data)
        if self.fault is not None:
            data = self.fault("h2c", data)
        if data:
            self.device.feed(data)

    def read(self, max_bytes: int, timeout: float) -> bytes:
        self._check_open()
        data = self.device.read(max_bytes)
        if self.fault is not None and data:
            data = self.fault("c2h", data)
        if not data:
            self.device.idle()    # the timeout elapsed: the device saw frame_timeout of silence
        return data

    def close(self) -> None:
        self._closed = True


# ---------------------------------------------------------------------------------------------
# The RTL device core in Verilator
# ---------------------------------------------------------------------------------------------

class SimTransport(Transport):
    """The device core's RTL compiled by Verilator (:mod:`sim.verilator_device`), in a child
    process whose stdin/stdout are the link. Keyword arguments are the emulator's
    (``rows``, ``cols``, ``psum_bits``, ``acc_bits``, ``weight_words``, ``act_bytes``,
    ``result_rows``, ``max_payload``, ``frame_timeout``), so ``emu`` and ``sim`` devices of the
    same configuration answer byte for byte alike; ``weight_ram="spram"`` builds the core with its
    weights in the UP5K's SPRAMs (:mod:`rtl.spram`, simulated with yosys' model of the
    primitive), as iCE40 boards run it, and ``pe_adder="ccu2c"`` with its PEs on ECP5's carry
    cells (:mod:`rtl.ternary_pe`, yosys' model of ``CCU2C``), as ECP5 boards run it;
    ``registered_ports=False`` leaves out the registers large ECP5 arrays put in front of their
    memory ports and step enable (:class:`rtl.core.DeviceCore`), as iCE40 boards do;
    ``engine="tree"`` builds the core with the adder-tree engine (``rows`` = its k),
    ``engine="serial"`` with the digit-serial trees (the UP5K's: ``registered_ports=False``),
    and ``control="hardwired"`` with ``linear`` hardwired in place of the control processor
    (:mod:`rtl.linear_sequencer`; tree engines, ``cols`` a power of two). The first
    use of a configuration builds it (about 20 s for 16x16)."""

    def __init__(self, *, name: str = "sim", rows: int = 16, cols: int = 16,
                 psum_bits: int = 16, acc_bits: int = 32, weight_words: int = 8192,
                 act_bytes: int = 65536, result_rows: int = 4096, max_payload: int = 1024,
                 frame_timeout: int = 1 << 20, weight_ram: str | None = None,
                 pe_adder: str | None = None, registered_ports: bool | None = None,
                 engine: str | None = None, control: str | None = None, progress=None):
        import sys

        from sim import verilator_device
        self.name = name
        self.config = verilator_device.core_config(
            rows, cols, psum_width=psum_bits, acc_width=acc_bits, weight_words=weight_words,
            act_bytes=act_bytes, result_rows=result_rows, max_payload=max_payload,
            frame_timeout=frame_timeout, weight_ram=weight_ram, pe_adder=pe_adder,
            registered_ports=registered_ports, engine=engine, control=control)
        say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
        try:
            self.proc = verilator_device.spawn(self.config, progress=say)
        except (RuntimeError, OSError) as e:
            raise DeviceNotFound(f"{name}: could not start the simulated device: {e}") from e

    def write(self, data: bytes) -> None:
        if self.proc.poll() is not None:
            raise TransportError(f"{self.name}: the simulator exited "
                                 f"(code {self.proc.returncode})")
        try:
            self.proc.stdin.write(bytes(data))
        except BrokenPipeError as e:
            raise TransportError(f"{self.name}: the simulator closed its input") from e

    def read(self, max_bytes: int, timeout: float) -> bytes:
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
        if not ready:
            return b""
        return os.read(fd, max_bytes)

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.stdin.close()
                proc.wait(timeout=5)
            except Exception:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


# ---------------------------------------------------------------------------------------------
# Serial (UART)
# ---------------------------------------------------------------------------------------------

def parse_serial_spec(rest: str) -> tuple[str, int]:
    """``"PATH"`` or ``"PATH@BAUD"`` (the part after ``serial:``) -> ``(path, baud)``."""
    path, baud = rest, DEFAULT_BAUD
    if "@" in rest:
        path, b = rest.rsplit("@", 1)
        try:
            baud = int(b)
        except ValueError:
            raise ValueError(f"serial:{rest}: baud rate {b!r} is not an integer") from None
        if baud <= 0:
            raise ValueError(f"serial:{rest}: baud rate must be positive")
    if not path:
        raise ValueError("serial: spec needs a port, e.g. serial:/dev/ttyUSB1@3000000")
    return path, baud


class SerialTransport(Transport):
    """A UART through pyserial, 8N1, opened exclusively, with DTR and RTS off.

    Off, because pyserial would assert both on opening and some boards wire them to more
    than the UART: the UPduino v3's FT232H drives its flash's chip select from DTR, with the
    flash's clock and data on the UART's lines. The port is put in low-latency mode where it
    has one (``low_latency`` says whether it took): an FTDI bridge then answers in about 1 ms
    instead of up to 16.

    A port that does not exist raises :class:`DeviceNotFound`, one that another process holds
    :class:`DeviceBusy`; both name the port.
    """

    def __init__(self, port: str, baud: int = DEFAULT_BAUD):
        try:
            import serial
        except ImportError as e:   # pragma: no cover - pyserial is a dev dependency
            raise TransportError("serial transport needs pyserial (pip install pyserial)") from e
        self.port, self.baud = port, int(baud)
        self.name = f"serial:{port}@{self.baud}"
        self.bytes_per_second = self.baud / 10      # start + 8 data + stop bits
        # no flow control on the boards' UARTs: what the gateware's receiver FIFO holds
        self.rx_buffer = UART_FIFO_DEPTH
        try:
            self._ser = serial.Serial(None, self.baud, timeout=0, exclusive=True)
            self._ser.dtr = self._ser.rts = False      # applied by open()
            self._ser.port = port
            self._ser.open()
        except serial.SerialException as e:
            code = getattr(e, "errno", None)
            if code == errno.ENOENT:
                raise DeviceNotFound(f"{self.name}: no such serial port {port!r} (is the board "
                                     f"plugged in?)") from e
            if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK):
                raise DeviceBusy(f"{self.name}: port {port!r} is in use by another process") \
                    from e
            if code == errno.EACCES:
                raise TransportError(f"{self.name}: permission denied on {port!r} (add "
                                     f"yourself to the port's group, e.g. dialout)") from e
            raise TransportError(f"{self.name}: cannot open {port!r}: {e}") from e
        self._timeout = 0.0
        # A USB-serial bridge holds a short answer until its latency timer runs out (16 ms by
        # default on FTDI chips, FTDI AN232B-04), and the host waits for the answers of every
        # window of requests it sends (host.plan).
        # Linux's ftdi_sio sets the timer to its 1 ms minimum for a port in low-latency mode.
        # Ports that have no such mode (a pty, CDC-ACM) refuse it, and that is fine.
        try:
            self._ser.set_low_latency_mode(True)
            self.low_latency = True
        except (ValueError, OSError, NotImplementedError, AttributeError):
            self.low_latency = False

    def write(self, data: bytes) -> None:
        try:
            self._ser.write(bytes(data))
        except Exception as e:
            raise TransportError(f"{self.name}: write failed: {e}") from e

    def read(self, max_bytes: int, timeout: float) -> bytes:
        try:
            if timeout != self._timeout:
                self._ser.timeout = self._timeout = timeout
            first = self._ser.read(1)
            if not first:
                return b""
            n = min(self._ser.in_waiting, max_bytes - 1)
            return first + (self._ser.read(n) if n > 0 else b"")
        except Exception as e:
            raise TransportError(f"{self.name}: read failed: {e}") from e

    def close(self) -> None:
        ser = getattr(self, "_ser", None)
        if ser is not None:
            ser.close()
            self._ser = None


# ---------------------------------------------------------------------------------------------
# PCIe (Xilinx XDMA streams)
# ---------------------------------------------------------------------------------------------

class PcieTransport(Transport):
    """The byte stream over a PCIe DMA engine's character devices.

    ``pcie:/dev/xdma0`` uses ``/dev/xdma0_h2c_0`` (host to card) and ``/dev/xdma0_c2h_0``
    (card to host). ``h2c`` / ``c2h`` name the two nodes explicitly (tests serve a simulated
    endpoint on two FIFOs). Reads wait with ``select`` and take what has arrived.
    """

    def __init__(self, device: str = "/dev/xdma0", *, h2c: str | None = None,
                 c2h: str | None = None, channel: int = 0):
        self.h2c_path = h2c or f"{device}_h2c_{channel}"
        self.c2h_path = c2h or f"{device}_c2h_{channel}"
        self.name = f"pcie:{device}"
        self._h2c = self._c2h = None
        # c2h first and non-blocking: opening a FIFO's read end then never waits, and the
        # (blocking) open of h2c waits only for the endpoint to open its read end.
        self._c2h = self._open(self.c2h_path, os.O_RDONLY | os.O_NONBLOCK, "card-to-host")
        try:
            self._h2c = self._open(self.h2c_path, os.O_WRONLY, "host-to-card")
        except BaseException:
            os.close(self._c2h)
            self._c2h = None
            raise

    def _open(self, path: str, flags: int, what: str) -> int:
        try:
            return os.open(path, flags)
        except FileNotFoundError as e:
            raise DeviceNotFound(f"{self.name}: {what} DMA node {path} does not exist (is the "
                                 f"xdma driver loaded and the card enumerated?)") from e
        except PermissionError as e:
            raise TransportError(f"{self.name}: permission denied on {path}") from e
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise DeviceBusy(f"{self.name}: {path} is in use by another process") from e
            raise TransportError(f"{self.name}: cannot open {path}: {e}") from e

    def write(self, data: bytes) -> None:
        if self._h2c is None:
            raise TransportError(f"{self.name}: transport is closed")
        view = memoryview(bytes(data))
        try:
            while view:
                n = os.write(self._h2c, view)
                view = view[n:]
        except OSError as e:
            raise TransportError(f"{self.name}: write to {self.h2c_path} failed: {e}") from e

    def read(self, max_bytes: int, timeout: float) -> bytes:
        if self._c2h is None:
            raise TransportError(f"{self.name}: transport is closed")
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            left = deadline - time.monotonic()
            try:
                ready, _, _ = select.select([self._c2h], [], [], max(left, 0.0))
                data = os.read(self._c2h, max_bytes) if ready else b""
            except BlockingIOError:
                data = b""
            except OSError as e:
                raise TransportError(f"{self.name}: read from {self.c2h_path} failed: {e}") \
                    from e
            if data or left <= 0:
                return data
            if ready:
                # Readable but empty: no writer on the other end (yet). Do not spin.
                time.sleep(min(0.001, max(left, 0.0)))

    def close(self) -> None:
        for attr in ("_h2c", "_c2h"):
            fd = getattr(self, attr, None)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)
