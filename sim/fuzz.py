"""The RTL device core and the emulator fed the same bytes, and random malformed requests.

:class:`DevicePair` runs ``rtl.core.DeviceCore`` compiled by :mod:`sim.verilator_device` next
to ``host.emu.EmulatedDevice`` of the same configuration and checks that every response is
identical, byte for byte. :func:`fuzz` sends random valid and malformed requests (bad CRC,
over-long lengths, unknown commands, wrong argument sizes, out-of-range addresses and sizes,
invalid base3 bytes, truncated frames, garbage between frames), each followed by a valid
``INFO`` that must be answered: the device never hangs on garbage. ``tests/rtl`` runs a few
hundred, ``make bench`` (``fuzz``) 10^4.
"""

from __future__ import annotations

import os
import select
import struct
import time

import numpy as np

from firmware.commands import RESPONSE_SYNC, Command, Status
from firmware.programs import linear_args
from host.emu import EmulatedDevice
from host.protocol import FrameDecoder, encode_request

from .verilator_device import spawn

__all__ = ["FuzzFailure", "DevicePair", "KINDS", "fuzz"]


class FuzzFailure(AssertionError):
    """The RTL answered differently from the emulator, or not at all."""


class DevicePair:
    """One RTL device process and one emulator of ``config`` (``verilator_device.core_config``),
    fed the same bytes; the RTL's ``tx.ready`` low in ``tx_stall_percent`` of its cycles."""

    def __init__(self, config: dict, *, tx_stall_percent: int = 0):
        self.config = config
        self.proc = spawn(config, tx_stall_percent=tx_stall_percent, progress=lambda msg: None)
        self.emu = EmulatedDevice(rows=config["rows"], cols=config["cols"],
                                  psum_bits=config["psum_width"], acc_bits=config["acc_width"],
                                  weight_words=config["weight_words"],
                                  act_bytes=config["act_bytes"],
                                  result_rows=config["result_rows"],
                                  max_payload=config["max_payload"],
                                  frame_timeout=config["frame_timeout"],
                                  program_words=config.get("program_words", 64),
                                  control=config.get("control", "processor"),
                                  engine=config.get("engine", "array"))
        self.decoder = FrameDecoder(RESPONSE_SYNC)
        self.seq = 0

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)

    def _read_rtl(self, n_frames: int, timeout: float = 20.0) -> bytes:
        data = bytearray()
        deadline = time.monotonic() + timeout
        got = 0
        while got < n_frames:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FuzzFailure(f"the RTL device sent {got} of {n_frames} responses within "
                                  f"{timeout} s: {data.hex()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                data += chunk
                got += len(self.decoder.feed(chunk))
        return bytes(data)

    def send(self, raw: bytes, responses: int = 1, truncated: bool = False) -> bytes:
        """Send ``raw`` to both; compare the responses; return them. ``truncated``: the frame
        stops arriving, and the silence after it (the device's frame timeout) drops it."""
        self.proc.stdin.write(raw)
        self.emu.feed(raw)
        if truncated:
            time.sleep(0.25)          # the harness forwards the silence as idle cycles
            self.emu.idle()
        rtl = self._read_rtl(responses) if responses else b""
        emu = self.emu.read()
        if rtl != emu:
            raise FuzzFailure(f"request {raw.hex()}:\n RTL {rtl.hex()}\n emu {emu.hex()}")
        return rtl

    def request(self, cmd, payload=b"") -> tuple[Status, bytes]:
        self.seq = (self.seq + 1) & 0xFF
        raw = self.send(encode_request(cmd, self.seq, payload))
        (frame,) = FrameDecoder(RESPONSE_SYNC).feed(raw)
        return Status(frame.code), frame.payload


KINDS = ("bad_crc", "over_long", "unknown_command", "wrong_size", "out_of_range", "bad_weights",
         "truncated", "garbage_first", "valid")


def _one(pair: DevicePair, kind: str, rng: np.random.Generator) -> None:
    maxp = pair.config["max_payload"]
    commands = [c.value for c in Command]
    seq = int(rng.integers(0, 256))
    if kind == "bad_crc":
        raw = bytearray(encode_request(Command.INFO, seq))
        raw[-1] ^= 1 << int(rng.integers(0, 8))
        pair.send(bytes(raw))
    elif kind == "over_long":
        pair.send(bytes([0xA5, Command.WRITE_ACTS.value, seq]) +
                  struct.pack("<H", maxp + 1 + int(rng.integers(0, 100))))
    elif kind == "unknown_command":
        code = int(rng.integers(0, 256))
        while code in commands:
            code = int(rng.integers(0, 256))
        pair.send(encode_request(code, seq, rng.bytes(int(rng.integers(0, 8)))))
    elif kind == "wrong_size":          # any command with a payload of random size
        cmd = commands[int(rng.integers(0, len(commands)))]
        pair.send(encode_request(cmd, seq, rng.bytes(int(rng.integers(0, 30)))))
    elif kind == "out_of_range":        # a layer that falls outside the memories, or is empty
        args = linear_args(weights=int(rng.integers(0, 1 << 32)),
                           acts=int(rng.integers(0, 2000)), results=int(rng.integers(0, 100)),
                           M=int(rng.integers(0, 4)), N=int(rng.integers(0, 20)),
                           K=int(rng.integers(0, 2000)))
        pair.send(encode_request(Command.RUN, seq, args.to_bytes()))
    elif kind == "bad_weights":         # an invalid base3 byte or a partial word
        pair.send(encode_request(Command.WRITE_WEIGHTS, seq,
                                 struct.pack("<I", int(rng.integers(0, 600))) +
                                 rng.bytes(int(rng.integers(0, 12)))))
    elif kind == "truncated":           # no answer; silence drops it
        raw = encode_request(Command.WRITE_ACTS, seq, struct.pack("<I", 0) + b"\x01" * 8)
        pair.send(raw[:int(rng.integers(1, len(raw)))], responses=0, truncated=True)
    elif kind == "garbage_first":
        junk = bytes(b for b in rng.bytes(int(rng.integers(1, 20))) if b != 0xA5)
        pair.send(junk + encode_request(Command.INFO, seq))
    else:                               # valid small writes
        pair.send(encode_request(Command.WRITE_ACTS, seq,
                                 struct.pack("<I", int(rng.integers(0, 900))) + b"\x05" * 3))


def fuzz(pair: DevicePair, count: int, seed: int = 0, progress=None) -> dict:
    """``count`` random requests of :data:`KINDS`, each followed by an ``INFO`` that must be
    answered ``OK``; raises :class:`FuzzFailure` on any difference from the emulator or a
    missing answer. Returns how many of each kind were sent."""
    rng = np.random.default_rng(seed)
    sent = dict.fromkeys(KINDS, 0)
    for i in range(count):
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
        _one(pair, kind, rng)
        sent[kind] += 1
        status, _ = pair.request(Command.INFO)
        if status is not Status.OK:
            raise FuzzFailure(f"request {i} ({kind}): the device answered the next valid "
                              f"request with {status.name}")
        if progress and (i + 1) % 1000 == 0:
            progress(f"{i + 1} of {count} requests")
    return sent
