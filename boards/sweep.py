"""``python -m boards.sweep --board NAME`` (``make sweep BOARD=NAME``): build a board at
growing array shapes and keep the figures, to choose its default configuration.

Each shape is a full build (``boards.build``); the table goes to ``boards/sweeps/NAME.json``
with every build's report and which shape is the largest that fits and meets timing. Square
shapes first, doubling, then the wide one between (4x4, 4x8, 8x8, ...), until a build fails
to fit or to meet timing, or a shape cannot be built on the board at all. With the board's
engine: for adder trees a shape is k x lanes; the digit-serial trees keep one lane a digit
(4, the fewest a beat can group: each lane is an accumulator and a Horner register) and
double k (2x4, 4x4, 8x4, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from firmware.commands import SERIAL_DIGIT_BITS
from sim import numerics

from . import PLACERS, ROUTERS, board
from .build import BuildFailed, build

SWEEPS = Path(__file__).resolve().parent / "sweeps"


def shapes(start: int = 2, stop: int = 64, engine: str = "array"):
    if engine == "serial":
        lanes, k = numerics.ACT_BITS // SERIAL_DIGIT_BITS, start
        while k <= stop:
            yield k, lanes
            k *= 2
        return
    r = start
    while r <= stop:
        yield r, r
        if 2 * r <= stop:
            yield r, 2 * r
        r *= 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m boards.sweep", description=__doc__)
    ap.add_argument("--board", required=True)
    ap.add_argument("--freq", type=float, help="clock in MHz (default: the board's)")
    ap.add_argument("--start", type=int, default=2, help="first (square) shape's rows")
    ap.add_argument("--stop", type=int, default=64, help="largest rows or columns to try")
    ap.add_argument("--placer", choices=PLACERS, help="nextpnr's placer (default: the board's)")
    ap.add_argument("--router", choices=ROUTERS, help="nextpnr's router (default: the board's)")
    ap.add_argument("--seed", type=int, help="nextpnr's seed (default: the board's)")
    ap.add_argument("--out", type=Path, default=Path("build/sweep"))
    a = ap.parse_args(argv)
    b = board(a.board)
    freq = a.freq or b.freq_mhz
    runs, best = [], None
    path = SWEEPS / f"{a.board}.json"

    def save():
        # After every build, so that a long sweep stopped half way keeps what it measured.
        table = {"board": a.board, "freq_mhz": freq, "largest_that_meets_timing": best,
                 "runs": runs, "command": f"python -m boards.sweep --board {a.board}"
                 + (f" --freq {a.freq:g}" if a.freq else "")
                 + (f" --start {a.start}" if a.start != 2 else "")
                 + (f" --stop {a.stop}" if a.stop != 64 else "")
                 + (f" --placer {a.placer}" if a.placer else "")
                 + (f" --router {a.router}" if a.router else "")
                 + (f" --seed {a.seed}" if a.seed is not None else "")}
        SWEEPS.mkdir(exist_ok=True)
        path.write_text(json.dumps(table, indent=2) + "\n")

    for rows, cols in shapes(a.start, a.stop, b.engine):
        print(f"sweep {a.board}: {rows}x{cols} at {freq:g} MHz", file=sys.stderr, flush=True)
        try:
            r = build(a.board, rows=rows, cols=cols, freq_mhz=freq,
                      out=a.out / f"{a.board}_{rows}x{cols}", placer=a.placer, router=a.router,
                      seed=a.seed,
                      progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
        except (BuildFailed, ValueError) as e:
            # ValueError: the shape cannot be built at all on this board (a weight word wider
            # than the UP5K's SPRAMs give in a cycle), which ends the sweep as a failed build
            runs.append({"rows": rows, "cols": cols, "built": False, "error": str(e)})
            save()
            break
        r.pop("bitstream")
        runs.append({"built": True, **r})
        if r["timing_met"]:
            best = {"rows": rows, "cols": cols}
        save()
        if not r["timing_met"]:
            break
    print(json.dumps({"board": a.board, "best": best, "table": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
