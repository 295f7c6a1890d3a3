"""The tritium host runtime: talk to a device over the link protocol (docs/protocol.md), and
run BitNet models on it.

``open_device(spec)`` opens ``"emu"`` (the Python emulator), ``"sim"`` (the RTL device core in
Verilator), ``"serial:PATH[@BAUD]"`` or ``"pcie:/dev/xdmaN"`` and returns a
:class:`Device` with ``load(w)``, ``linear(h, x)``, ``info`` and ``stats``.
``run_model(folder, prompt, device=...)`` generates tokens from a BitNet b1.58 checkpoint with
every ternary projection on the device (``load_checkpoint`` reads one: safetensors and JSON
only).
"""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .device import Device, WeightHandle, open_device
from .emu import EmulatedDevice
from .model import RunResult, run_model
from .protocol import (DeviceBusy, DeviceError, DeviceNotFound, DeviceTimeout, FrameError,
                       PayloadTooLarge, ProtocolError, TransportError)
from .transport import EmulatorTransport, PcieTransport, SerialTransport, SimTransport, Transport

__all__ = [
    "open_device", "Device", "WeightHandle", "EmulatedDevice",
    "Transport", "EmulatorTransport", "SimTransport", "SerialTransport", "PcieTransport",
    "ProtocolError", "FrameError", "PayloadTooLarge", "TransportError", "DeviceNotFound",
    "DeviceBusy", "DeviceTimeout", "DeviceError",
    "run_model", "RunResult", "load_checkpoint", "save_checkpoint", "Checkpoint",
    "CheckpointError",
]
