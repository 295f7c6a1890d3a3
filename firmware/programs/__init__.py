"""The control programs the host loads into the device (``WRITE_PROGRAM``) and runs (``RUN``).

Each program is an assembly file in this folder (``firmware.asm`` syntax, ``firmware.isa``
instructions). :data:`FIRMWARE` is all of them assembled back to back from program address 0;
``host.Device`` loads it when it opens a device, and the device core's program memory starts
with the same image, so a device works before any host has loaded anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..asm import Program, assemble
from ..commands import RunArgs

__all__ = ["Firmware", "FIRMWARE", "PROGRAM_NAMES", "build_firmware", "linear_args"]

HERE = Path(__file__).parent
PROGRAM_NAMES = ("linear",)


@dataclass(frozen=True)
class Firmware:
    """Programs assembled from address 0: the image and each program's entry point."""
    words: tuple[int, ...]
    entries: dict

    def __len__(self) -> int:
        return len(self.words)


def build_firmware(names=PROGRAM_NAMES) -> Firmware:
    words: list[int] = []
    entries = {}
    for name in names:
        path = HERE / f"{name}.s"
        prog: Program = assemble(path.read_text(), base=len(words), source=str(path))
        entries[name] = len(words)
        words += prog.words
    return Firmware(tuple(words), entries)


FIRMWARE = build_firmware()


def linear_args(weights: int, acts: int, results: int, M: int, N: int, K: int) -> RunArgs:
    """``RUN`` arguments for the ``linear`` program (memory layout in docs/protocol.md)."""
    return RunArgs(FIRMWARE.entries["linear"], (weights, acts, results, M, N, K))
