"""Reproducible link faults: a transport wrapper that damages bytes on their way.

``open_device(SPEC, faults=RATE)`` (or ``faults=FaultSpec(...)``) wraps any transport in a
:class:`FaultyTransport`: each byte, in either direction, is hit with probability ``rate`` by
one fault drawn from ``kinds``:

* ``flip``: one bit of the byte inverted;
* ``drop``: the byte never arrives;
* ``duplicate``: the byte arrives twice;
* ``truncate``: the byte and the rest of that write (or read) never arrive;
* ``delay``: the byte and the rest of that write (or read) arrive late, with the next one
  (after the host may already have given up on the frame).

The same seed gives the same faults for the same traffic. The protocol must turn every one
of them into a retry or a clear error (``DeviceTimeout``), never a wrong result:
``tritium selftest --faults RATE`` and ``make bench`` (``faults``) measure that.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from .transport import Transport

__all__ = ["KINDS", "FaultSpec", "FaultyTransport"]

KINDS = ("flip", "drop", "duplicate", "truncate", "delay")


@dataclass(frozen=True)
class FaultSpec:
    """What to inject: ``rate`` faults per byte (0 <= rate < 1), drawn from ``kinds`` with a
    ``random.Random(seed)``, in the ``directions`` "h2c" (requests) and "c2h" (responses)."""
    rate: float
    seed: int = 0
    kinds: tuple = KINDS
    directions: tuple = ("h2c", "c2h")

    def __post_init__(self):
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) \
                or not 0 <= self.rate < 1:
            raise ValueError(f"fault rate must be a number in [0, 1), got {self.rate!r}")
        kinds = tuple(self.kinds)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(KINDS)}")
        object.__setattr__(self, "kinds", kinds)
        directions = tuple(self.directions)
        if not directions or any(d not in ("h2c", "c2h") for d in directions):
            raise ValueError(f"fault directions must be among 'h2c', 'c2h', got {directions}")
        object.__setattr__(self, "directions", directions)

    @classmethod
    def of(cls, value) -> "FaultSpec":
        """A spec from a rate, a dict of the fields, or a spec."""
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls(**value)
        return cls(rate=value)


@dataclass
class _Direction:
    """Where the next fault falls in one direction's byte stream, and what is held back."""
    until_fault: int = 0                 # clean bytes before the next fault
    held: bytearray = field(default_factory=bytearray)


class FaultyTransport(Transport):
    """``inner`` with :class:`FaultSpec` faults on its bytes; ``injected`` counts them by kind."""

    def __init__(self, inner: Transport, spec):
        self.inner = inner
        self.spec = FaultSpec.of(spec)
        self.name = inner.name
        self.bytes_per_second = inner.bytes_per_second
        self.rx_buffer = inner.rx_buffer
        self._rng = random.Random(self.spec.seed)
        self._dirs = {d: _Direction() for d in ("h2c", "c2h")}
        for d in self._dirs.values():
            d.until_fault = self._gap()
        self.injected = dict.fromkeys(KINDS, 0)
        self._arrived = bytearray()          # damaged response bytes not yet read

    def _gap(self) -> int:
        """Clean bytes before the next fault: geometric with parameter ``rate`` (drawing once
        per fault rather than once per byte keeps long transfers cheap)."""
        p = self.spec.rate
        if p <= 0:
            return math.inf
        return int(math.log(1.0 - self._rng.random()) / math.log(1.0 - p))

    def _damage(self, direction: str, data: bytes) -> bytes:
        d = self._dirs[direction]
        data = bytes(d.held) + bytes(data)
        d.held.clear()
        if direction not in self.spec.directions:
            return data
        out = bytearray()
        i = 0
        while i < len(data):
            clean = min(d.until_fault, len(data) - i)
            out += data[i:i + clean]
            i += clean
            d.until_fault -= clean
            if i == len(data):
                break
            kind = self._rng.choice(self.spec.kinds)
            self.injected[kind] += 1
            d.until_fault = self._gap()
            byte = data[i]
            if kind == "flip":
                out.append(byte ^ (1 << self._rng.randrange(8)))
            elif kind == "duplicate":
                out += bytes([byte, byte])
            elif kind == "truncate":
                break
            elif kind == "delay":
                d.held += data[i:]
                break
            i += 1                                   # "drop" emits nothing
        return bytes(out)

    def write(self, data: bytes) -> None:
        data = self._damage("h2c", data)
        if data:
            self.inner.write(data)

    def read(self, max_bytes: int, timeout: float) -> bytes:
        if not self._arrived:
            if self._dirs["c2h"].held:               # late bytes arrive first
                self._arrived += self._damage("c2h", b"")
            else:
                data = self.inner.read(max_bytes, timeout)
                if data:
                    self._arrived += self._damage("c2h", data)
        # A duplicated byte can make more than max_bytes arrive: the rest waits its turn.
        data = bytes(self._arrived[:max_bytes])
        del self._arrived[:max_bytes]
        return data

    def close(self) -> None:
        self.inner.close()

    def __repr__(self):
        return f"<FaultyTransport {self.name} rate={self.spec.rate} seed={self.spec.seed}>"
