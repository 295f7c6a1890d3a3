"""The tritium host runtime: talk to a device over the link protocol (docs/protocol.md).

``open_device(spec)`` opens ``"emu"`` (the Python emulator), ``"serial:PATH[@BAUD]"``,
``"pcie:/dev/xdmaN"`` (and later ``"sim"``, the RTL core in simulation) and returns a
:class:`Device` with ``load(w)``, ``linear(h, x)``, ``info`` and ``stats``.
"""

from .device import Device, WeightHandle, open_device
from .emu import EmulatedDevice
from .protocol import (DeviceBusy, DeviceError, DeviceNotFound, DeviceTimeout, FrameError,
                       PayloadTooLarge, ProtocolError, TransportError)
from .transport import EmulatorTransport, PcieTransport, SerialTransport, Transport

__all__ = [
    "open_device", "Device", "WeightHandle", "EmulatedDevice",
    "Transport", "EmulatorTransport", "SerialTransport", "PcieTransport",
    "ProtocolError", "FrameError", "PayloadTooLarge", "TransportError", "DeviceNotFound",
    "DeviceBusy", "DeviceTimeout", "DeviceError",
]
