"""The tritium host runtime: talk to a device over the link protocol (docs/protocol.md).

``open_device(spec)`` opens ``"emu"`` (the Python emulator), ``"sim"`` (the RTL device core in
Verilator), ``"serial:PATH[@BAUD]"`` or ``"pcie:/dev/xdmaN"`` and returns a
:class:`Device` with ``load(w)``, ``linear(h, x)``, ``info`` and ``stats``.
"""

from .device import Device, WeightHandle, open_device
from .emu import EmulatedDevice
from .protocol import (DeviceBusy, DeviceError, DeviceNotFound, DeviceTimeout, FrameError,
                       PayloadTooLarge, ProtocolError, TransportError)
from .transport import EmulatorTransport, PcieTransport, SerialTransport, SimTransport, Transport

__all__ = [
    "open_device", "Device", "WeightHandle", "EmulatedDevice",
    "Transport", "EmulatorTransport", "SimTransport", "SerialTransport", "PcieTransport",
    "ProtocolError", "FrameError", "PayloadTooLarge", "TransportError", "DeviceNotFound",
    "DeviceBusy", "DeviceTimeout", "DeviceError",
]
