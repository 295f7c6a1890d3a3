"""Transports: PCIe against a simulated XDMA endpoint (two FIFOs served by an emulator thread),
serial against a pseudo-terminal, and the errors for missing and busy devices."""

from __future__ import annotations

import contextlib
import os
import select
import threading

import numpy as np
import pytest

from host import (DeviceBusy, DeviceNotFound, DeviceTimeout, EmulatedDevice, PcieTransport,
                  open_device)
from sim import numerics


def serve(dev: EmulatedDevice, rx: int, tx: int, stop: threading.Event,
          silence: float = 0.05, drop: frozenset = frozenset()) -> None:
    """Pump bytes between a file descriptor pair and an emulated device until EOF or stop.

    ``silence`` seconds without input stand for the device's frame timeout; the responses
    numbered in ``drop`` (counting output chunks from 0) are lost on the way back."""
    chunk = 0
    while not stop.is_set():
        ready, _, _ = select.select([rx], [], [], silence)
        if not ready:
            dev.idle()
            continue
        try:
            data = os.read(rx, 65536)
        except OSError:           # pty master after the slave closed
            return
        if not data:
            return
        dev.feed(data)
        out = memoryview(dev.read())
        if out:
            chunk += 1
            if chunk - 1 in drop:
                continue
        while out:
            out = out[os.write(tx, out):]


@contextlib.contextmanager
def fifo_endpoint(tmp_path, dev: EmulatedDevice, name="xdma0"):
    """A simulated XDMA endpoint: FIFOs ``<name>_h2c_0`` and ``<name>_c2h_0`` in tmp_path."""
    h2c, c2h = tmp_path / f"{name}_h2c_0", tmp_path / f"{name}_c2h_0"
    os.mkfifo(h2c)
    os.mkfifo(c2h)
    stop = threading.Event()
    fds = []

    def run():
        rx = os.open(h2c, os.O_RDONLY)      # waits for the host to open its write end
        fds.append(rx)
        tx = os.open(c2h, os.O_WRONLY)
        fds.append(tx)
        serve(dev, rx, tx, stop)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield str(tmp_path / name), str(h2c), str(c2h)
    finally:
        stop.set()
        t.join(timeout=2)
        for fd in fds:
            os.close(fd)


def check_linear(dev, M=3, N=21, K=70, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    assert (dev.linear(dev.load(w), x) == numerics.ternary_matmul(w, x)).all()


# ---------------------------------------------------------------------------------------------
# PCIe
# ---------------------------------------------------------------------------------------------

def test_pcie_against_fifo_endpoint(tmp_path):
    emu = EmulatedDevice(rows=4, cols=4, max_payload=256)
    with fifo_endpoint(tmp_path, emu) as (node, _, _):
        with open_device(f"pcie:{node}", timeout=2.0) as dev:
            assert dev.name == f"pcie:{node}"
            assert dev.info["rows"] == 4 and dev.info["max_payload"] == 256
            check_linear(dev)
            assert dev.stats["retries"] == 0 and dev.stats["runs"] == 1


def test_pcie_explicit_paths_and_large_response(tmp_path):
    # READ_RESULTS of 1023 rows x 64 bytes (K > 255: int32 sums): a response larger than a
    # pipe's buffer.
    emu = EmulatedDevice(rows=16, cols=16)
    with fifo_endpoint(tmp_path, emu, name="ep") as (_, h2c, c2h):
        with open_device("pcie:/dev/xdma9", h2c=h2c, c2h=c2h, timeout=2.0) as dev:
            check_linear(dev, M=70, N=300, K=300)
            assert dev.stats["bytes_received"] > 70000


def test_pcie_missing_node_is_a_clear_error(tmp_path):
    with pytest.raises(DeviceNotFound, match=r"xdma7_c2h_0 does not exist"):
        open_device(f"pcie:{tmp_path}/xdma7")
    with pytest.raises(DeviceNotFound, match="pcie:"):
        PcieTransport(h2c=str(tmp_path / "a"), c2h=str(tmp_path / "b"))


# ---------------------------------------------------------------------------------------------
# Serial
# ---------------------------------------------------------------------------------------------

def test_serial_missing_port_is_a_clear_error():
    with pytest.raises(DeviceNotFound, match=r"/dev/ttyTRITIUM_NONE") as e:
        open_device("serial:/dev/ttyTRITIUM_NONE@115200")
    assert "no such serial port" in str(e.value)


@contextlib.contextmanager
def pty_endpoint(dev: EmulatedDevice, **serve_args):
    master, slave = os.openpty()
    path = os.ttyname(slave)
    stop = threading.Event()
    t = threading.Thread(target=serve, args=(dev, master, master, stop), kwargs=serve_args,
                         daemon=True)
    t.start()
    try:
        yield path
    finally:
        stop.set()
        t.join(timeout=2)
        os.close(master)
        os.close(slave)


def test_serial_over_pty(capsys):
    pytest.importorskip("serial")
    with pty_endpoint(EmulatedDevice(rows=2, cols=3, max_payload=128)) as path:
        with open_device(f"serial:{path}", timeout=2.0) as dev:
            assert dev.name == f"serial:{path}@3000000"
            check_linear(dev, M=2, N=9, K=50)
            # The port is held exclusively while open.
            with pytest.raises(DeviceBusy, match=path):
                open_device(f"serial:{path}")
            # ... and the CLI says so in one line (docs/bad-input.md).
            from host.cli import main
            assert main(["selftest", "--device", f"serial:{path}"]) == 2
            err = capsys.readouterr().err
            assert "in use by another process" in err and "Traceback" not in err


def test_serial_silence_names_the_baud_rate():
    """A port where nothing answers (no bitstream, or a board at another UART rate, such as
    the ECPIX-5's 12 Mbaud opened at the default 3 Mbaud): the timeout says which rate was
    tried and where each board's is listed, and the port is released."""
    pytest.importorskip("serial")
    master, slave = os.openpty()
    path = os.ttyname(slave)
    try:
        with pytest.raises(DeviceTimeout, match=r"no valid response to INFO.*is 3000000 baud "
                                                r"its UART rate\? `tritium boards`"):
            open_device(f"serial:{path}", timeout=0.05, retries=0)
        # the port was released, and opens at the ECPIX-5's rate
        from host.transport import SerialTransport
        SerialTransport(path, 12_000_000).close()
    finally:
        os.close(master)
        os.close(slave)


def test_serial_opens_with_dtr_and_rts_off(monkeypatch):
    """pyserial asserts DTR and RTS on opening unless told otherwise; the UPduino v3 wires
    DTR to its flash's chip select (boards/__init__.py), so the port opens with both off."""
    serial = pytest.importorskip("serial")
    from host.transport import SerialTransport
    applied = []
    monkeypatch.setattr(serial.Serial, "_update_dtr_state",
                        lambda self: applied.append(("dtr", self._dtr_state)))
    monkeypatch.setattr(serial.Serial, "_update_rts_state",
                        lambda self: applied.append(("rts", self._rts_state)))
    with pty_endpoint(EmulatedDevice(rows=2, cols=2)) as path:
        SerialTransport(path, 115200).close()
    assert sorted(applied) == [("dtr", False), ("rts", False)]


def test_serial_asks_for_low_latency(monkeypatch, capsys):
    """The port is put in low-latency mode (ftdi_sio: a 1 ms latency timer, not 16); a port
    without one (a pty refuses TIOCSSERIAL) still opens and says so."""
    serial = pytest.importorskip("serial")
    from host.transport import SerialTransport
    with pty_endpoint(EmulatedDevice(rows=2, cols=2)) as path:
        t = SerialTransport(path, 115200)
        assert t.low_latency is False
        t.close()
        asked = []
        monkeypatch.setattr(serial.Serial, "set_low_latency_mode",
                            lambda self, on: asked.append(on), raising=False)
        t = SerialTransport(path, 115200)
        assert (asked, t.low_latency) == ([True], True)
        t.close()
        monkeypatch.undo()
        # selftest reports the mode: a pty has none
        from host.cli import main
        assert main(["selftest", "--device", f"serial:{path}", "--frames", "3"]) == 0
        out = capsys.readouterr().out
        assert "port without a low-latency mode" in out and "PASS" in out


def test_serial_retry_after_lost_response():
    pytest.importorskip("serial")
    # Responses 0 (INFO) and 3 are lost: the host waits out its timeout and asks again.
    with pty_endpoint(EmulatedDevice(rows=2, cols=3, max_payload=128),
                      drop=frozenset({0, 3})) as path:
        with open_device(f"serial:{path}@1000000", timeout=0.2) as dev:
            check_linear(dev, M=1, N=4, K=20)
            assert dev.stats["timeouts"] == 2 and dev.stats["retries"] == 2
