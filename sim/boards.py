"""Boards: the array, clock, link and weight memory each is built with, and what a model's
tokens would cost on it.

One table for everything that projects onto a board (``run_model``'s stats, the benchmarks).
Two kinds of rows: the **targets** of issue #4 (``basis="target"``: what the design is meant to
do on the ULX3S-85F and the iCEBreaker, not yet built at that size), and boards built and
measured at their default (``basis="measured"``: ``boards/sweeps/``, ``tritium build``), from
which ``boards`` takes its defaults.

Projection of one decode token (M = 1 through every projection):

* **compute**: the golden cycle model (:mod:`sim.cycles`) for each projection on the board's
  array, with the device's resident layout (``outputs`` mapping); control cycles not counted;
* **weight memory**: the words the array reads, at the memory's width per cycle: with the
  iCE40's SPRAM (4 x 16 bits) a word of 128 trits (256 bits) takes 4 cycles. The array waits
  for the slower of compute and memory;
* **link**: the bytes the host and device exchanged per token (measured on the device that ran
  the model: activations, results and framing) at ``baud`` with 10 bits per byte (8N1); host
  time and USB latency are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from . import cycles, packing, schedule

#: bits a trit takes in weight memory (2-bit codes: base3 is decoded at the link)
TRIT_BITS = 2
#: UART bits per byte: start, 8 data, stop
UART_BITS_PER_BYTE = 10
#: weight memory depth of the ECPIX-5 build (words of 16x16 trits)
ECPIX5_WORDS = 4096


@dataclass(frozen=True)
class Board:
    name: str
    fpga: str
    rows: int
    cols: int
    clock_hz: float
    baud: int                   # UART rate of the board's USB bridge
    weight_trits: int           # resident weight capacity
    memory_bits_per_cycle: int  # weight memory read width
    basis: str                  # "target" (issue #4's goals) or "measured" (a build's report)
    note: str = ""

    @property
    def array(self) -> schedule.ArrayConfig:
        return schedule.ArrayConfig(rows=self.rows, cols=self.cols)

    @property
    def pes(self) -> int:
        return self.rows * self.cols


BOARDS: dict[str, Board] = {b.name: b for b in (
    Board("ulx3s-85f", "ECP5 LFE5U-85F", rows=32, cols=64, clock_hz=100e6, baud=3_000_000,
          # 2048 trits x 2 bits per word: 114 of the 208 DP16KD blocks at 36 x 512
          weight_trits=512 * 2048, memory_bits_per_cycle=114 * 36, basis="target",
          note="FT231X bridge at 3 Mbaud"),
    Board("icebreaker", "iCE40 UP5K", rows=8, cols=16, clock_hz=24e6, baud=12_000_000,
          # the four 256-kbit SPRAMs side by side: 64 bits per cycle
          weight_trits=4 * 262144 // TRIT_BITS, memory_bits_per_cycle=4 * 16, basis="target",
          note="FT2232H bridge at 12 Mbaud"),
    # Built: boards/sweeps/ulx3s-12f.json (16x16 at 30 MHz: 50.0 MHz achieved); a weight word
    # (512 bits) is read whole every cycle.
    Board("ulx3s-12f", "ECP5 LFE5U-12F", rows=16, cols=16, clock_hz=30e6, baud=3_000_000,
          weight_trits=512 * 256, memory_bits_per_cycle=512, basis="measured",
          note="FT231X bridge at 3 Mbaud"),
    # Built: 16x16 at 60 MHz with 4096 words of 256 trits (87.9 MHz achieved, 134 DP16KD),
    # which hold the bundled model resident (docs/architecture.md, "Boards").
    Board("ecpix5-85f", "ECP5 LFE5UM5G-85F", rows=16, cols=16, clock_hz=60e6, baud=3_000_000,
          weight_trits=ECPIX5_WORDS * 256, memory_bits_per_cycle=512, basis="measured",
          note="FT2232H bridge at 3 Mbaud"),
)}


def board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known: {', '.join(BOARDS)}") from None


def project_decode(b: Board, shapes: Iterable[tuple[int, int]], link_bytes_per_token: float
                   ) -> dict:
    """Seconds and tokens per second for one decode token on board ``b``.

    ``shapes`` are the ``(N, K)`` of every projection a token passes through (all layers);
    ``link_bytes_per_token`` both directions together.
    """
    cfg = b.array
    compute = words = 0
    for N, K in shapes:
        compute += cycles.plan_cycles(schedule.plan_linear(cfg, 1, N, K, mapping="outputs"))
        words += schedule.resident_words(cfg, N, K)
    memory = words * math.ceil(b.pes * TRIT_BITS / b.memory_bits_per_cycle)
    resident = words * b.pes <= b.weight_trits
    if not resident:
        # Every token then streams all weights: base3 words, padded to whole bytes.
        link_bytes_per_token += words * packing.packed_size(b.pes, "base3")
    array_seconds = max(compute, memory) / b.clock_hz
    link_seconds = link_bytes_per_token * UART_BITS_PER_BYTE / b.baud
    seconds = array_seconds + link_seconds
    bound = ("link" if link_seconds >= array_seconds
             else "memory" if memory > compute else "compute")
    return {
        "board": b.name, "basis": b.basis, "array": f"{b.rows}x{b.cols}",
        "clock_mhz": b.clock_hz / 1e6, "baud": b.baud,
        "resident": resident,
        "compute_cycles": compute, "memory_cycles": memory,
        "array_seconds": array_seconds, "link_seconds": link_seconds,
        "tokens_per_second": 1.0 / seconds if seconds > 0 else None,
        "bound": bound,
    }
