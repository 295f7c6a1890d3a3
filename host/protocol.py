"""Frames of the link protocol (docs/protocol.md): encoder, incremental decoder, errors.

A frame is ``sync, code, seq, len (u16 LE), payload, crc (u16 LE)``; the CRC is
``firmware.commands.FRAME_CRC`` over ``code .. payload``. Requests start with
``REQUEST_SYNC``, responses with ``RESPONSE_SYNC``; otherwise both directions are the same, so
one encoder and one decoder serve the host (responses) and the emulated device (requests).

:class:`FrameDecoder` is fed arbitrary chunks of a byte stream and returns the complete frames
in them. It behaves like the device's receiver: it hunts for the sync byte (skipping garbage),
reads the header, rejects a length above ``max_payload`` right after the header (then hunts
again from the next byte), and checks the CRC of a complete frame (a bad frame is reported and
hunting resumes after it). Bad frames are counted and reported as :class:`BadFrame` events.
"""

from __future__ import annotations

import binascii
import enum
import struct
from collections import deque
from dataclasses import dataclass

from firmware.commands import (CRC_SIZE, FRAME_CRC, HEADER_FORMAT, HEADER_SIZE, MAX_LENGTH, REQUEST_SYNC,
                               RESPONSE_SYNC, Command, Status)

__all__ = [
    "ProtocolError", "FrameError", "PayloadTooLarge", "TransportError", "DeviceNotFound",
    "DeviceBusy", "DeviceTimeout", "DeviceError",
    "frame_crc", "encode_frame", "encode_request", "encode_response",
    "Frame", "BadFrame", "FrameDecoder",
]


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

class ProtocolError(Exception):
    """Base of every error the host runtime raises about the link or the device."""


class FrameError(ProtocolError, ValueError):
    """A frame cannot be built (bad seq, code or payload)."""


class PayloadTooLarge(FrameError):
    """A payload exceeds the ``len`` field or the device's ``max_payload``."""


class TransportError(ProtocolError, OSError):
    """The link itself failed (open, read or write)."""


class DeviceNotFound(TransportError):
    """The device node of a link does not exist."""


class DeviceBusy(TransportError):
    """The device node exists but another process holds it."""


class DeviceTimeout(ProtocolError, TimeoutError):
    """No valid response after the bounded number of retries."""


class DeviceError(ProtocolError):
    """The device answered a request with an error status (not retried)."""

    def __init__(self, message: str, status: Status | None = None,
                 command: Command | None = None):
        super().__init__(message)
        self.status = status
        self.command = command


# ---------------------------------------------------------------------------------------------
# CRC
# ---------------------------------------------------------------------------------------------

_CRC_MODEL = FRAME_CRC(data_width=8)
_alg = FRAME_CRC
# binascii.crc_hqx is the CRC-CCITT family (poly 0x1021, MSB first, no final xor) in C with a
# free initial value; when FRAME_CRC is a member of that family it computes exactly
# FRAME_CRC's software model, about 100x faster. Anything else falls back to the model.
_FAST = (_alg.crc_width == 16 and _alg.polynomial == 0x1021 and not _alg.reflect_input
         and not _alg.reflect_output and _alg.xor_output == 0)
_CRC_INIT = _alg.initial_crc


def frame_crc(data) -> int:
    """``FRAME_CRC`` of ``data`` (bytes-like): the CRC of a frame's code .. payload bytes."""
    if _FAST:
        return binascii.crc_hqx(data, _CRC_INIT)
    return _CRC_MODEL.compute(bytes(data))


# Proved once at import against the algorithm's own software model (check value of the
# catalogue plus a longer vector), so the fast path cannot silently diverge from FRAME_CRC.
for _v in (b"123456789", bytes(range(256)) * 3):
    assert frame_crc(_v) == _CRC_MODEL.compute(_v), "frame_crc disagrees with FRAME_CRC"
del _v


# ---------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------

_HEADER = struct.Struct(HEADER_FORMAT)
_CRC = struct.Struct("<H")      # the CRC trails the payload, little-endian


def encode_frame(sync: int, code: int, seq: int, payload=b"", max_payload: int | None = None
                 ) -> bytes:
    """One frame: ``sync, code, seq, len, payload, crc``.

    ``max_payload`` (default: the u16 limit of ``len``) raises :class:`PayloadTooLarge` for a
    longer payload.
    """
    payload = bytes(payload)
    limit = MAX_LENGTH if max_payload is None else min(int(max_payload), MAX_LENGTH)
    if len(payload) > limit:
        raise PayloadTooLarge(f"payload of {len(payload)} bytes exceeds the limit of {limit} "
                              f"bytes per frame")
    code = code.value if isinstance(code, enum.Enum) else int(code)
    if not (0 <= code <= 0xFF and 0 <= sync <= 0xFF):
        raise FrameError(f"code and sync must be bytes, got code {code}, sync {sync}")
    if not isinstance(seq, int) or not 0 <= seq <= 0xFF:
        raise FrameError(f"seq must be an int in 0..255, got {seq!r}")
    header = _HEADER.pack(sync, code, seq, len(payload))
    crc = frame_crc(header[1:] + payload)
    return header + payload + _CRC.pack(crc)


def encode_request(cmd: Command | int, seq: int, payload=b"",
                   max_payload: int | None = None) -> bytes:
    """A request frame (host to device)."""
    return encode_frame(REQUEST_SYNC, cmd, seq, payload, max_payload)


def encode_response(status: Status | int, seq: int, payload=b"") -> bytes:
    """A response frame (device to host)."""
    return encode_frame(RESPONSE_SYNC, status, seq, payload)


# ---------------------------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """A complete frame with a good CRC and length. ``code`` is the raw byte."""
    code: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class BadFrame:
    """A frame that was framed but rejected: ``kind`` is ``"bad_crc"`` or ``"over_length"``.

    ``code`` and ``seq`` are as received (possibly corrupted); ``length`` is the ``len`` field.
    """
    kind: str
    code: int
    seq: int
    length: int


class FrameDecoder:
    """Incremental frame decoder for one direction of the link.

    ``sync`` is ``REQUEST_SYNC`` (device side) or ``RESPONSE_SYNC`` (host side).
    ``feed(chunk)`` returns the good frames completed by ``chunk``; ``feed_events(chunk)``
    returns good frames and :class:`BadFrame` events in stream order. Counters:
    ``frames`` (good), ``bad_crc``, ``over_length``, ``skipped`` (garbage bytes dropped while
    hunting for sync), ``dropped`` (partial frames dropped by :meth:`reset`). The last
    ``history`` bad-frame events are kept in ``events`` as well.
    """

    def __init__(self, sync: int, max_payload: int = MAX_LENGTH, history: int = 64):
        if not 0 <= sync <= 0xFF:
            raise ValueError(f"sync must be a byte, got {sync}")
        if not 0 <= max_payload <= MAX_LENGTH:
            raise ValueError(f"max_payload must be in 0..{MAX_LENGTH}, got {max_payload}")
        self.sync = sync
        self.max_payload = max_payload
        self._buf = bytearray()
        self._sync_byte = bytes([sync])
        self.frames = self.bad_crc = self.over_length = self.skipped = self.dropped = 0
        self.events: deque[BadFrame] = deque(maxlen=history)

    @property
    def partial(self) -> bool:
        """A frame has started (sync seen) but is not complete."""
        return bool(self._buf)

    def reset(self) -> None:
        """Drop a partial frame (the counterpart of the device's frame timeout)."""
        if self._buf:
            self.dropped += 1
        self._buf.clear()

    def feed(self, data) -> list[Frame]:
        """Consume ``data``; return the good frames it completed, in order."""
        return [e for e in self.feed_events(data) if isinstance(e, Frame)]

    def feed_events(self, data) -> list[Frame | BadFrame]:
        """Consume ``data``; return good frames and bad-frame events, in stream order."""
        buf = self._buf
        buf += data
        out: list[Frame | BadFrame] = []
        while buf:
            if buf[0] != self.sync:
                i = buf.find(self._sync_byte)
                if i < 0:
                    self.skipped += len(buf)
                    buf.clear()
                    break
                self.skipped += i
                del buf[:i]
            if len(buf) < HEADER_SIZE:
                break
            _, code, seq, length = _HEADER.unpack_from(buf)
            if length > self.max_payload:
                # Like the device: reject right after the header, then hunt from the next byte.
                ev = BadFrame("over_length", code, seq, length)
                self.over_length += 1
                self.events.append(ev)
                out.append(ev)
                del buf[:HEADER_SIZE]
                continue
            end = HEADER_SIZE + length
            if len(buf) < end + CRC_SIZE:
                break
            (crc,) = _CRC.unpack_from(buf, end)
            if crc == frame_crc(buf[1:end]):
                self.frames += 1
                out.append(Frame(code, seq, bytes(buf[HEADER_SIZE:end])))
            else:
                ev = BadFrame("bad_crc", code, seq, length)
                self.bad_crc += 1
                self.events.append(ev)
                out.append(ev)
            del buf[:end + CRC_SIZE]
        return out

    def counters(self) -> dict:
        return {"frames": self.frames, "bad_crc": self.bad_crc,
                "over_length": self.over_length, "skipped": self.skipped,
                "dropped": self.dropped}
