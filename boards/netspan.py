"""How far a placement stretches each net: ``python -m boards.netspan placed.json [--min 40]``.

nextpnr's placement estimate says how fast a design will be, not where it is slow, and on the
ULX3S-85F its routing can take longer than a session. A placed netlist says where every cell
went: write one with the build's own nextpnr command (``build_top.sh`` in the build folder)
plus ``--no-route --write placed.json``, and this lists, for every net, the Manhattan distance
in tiles from its driver to its farthest sink, grouped by the net's name with indices folded
(``lane_12.sum_5_0[3]`` counts as ``lane_N.sum_N_N``). A net that crosses the die costs
several nanoseconds of routing whatever the logic behind it (docs/architecture.md, "Boards").
With ``--log`` (nextpnr's log of the same run) it also prints the estimate and how many
endpoints fail, read from the slack histogram: one placement's estimate varies by several MHz
with the seed, the count of failing endpoints much less.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

_BEL = re.compile(r"X(\d+)/Y(\d+)/")


def bel_tile(bel: str) -> tuple[int, int] | None:
    """The tile ``(x, y)`` of a nextpnr BEL name (``X12/Y34/SLICEA``), or None."""
    m = _BEL.match(bel)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _placed(cell: dict) -> tuple[int, int] | None:
    """The tile ``(x, y)`` nextpnr placed a cell at, or None."""
    return bel_tile(cell.get("attributes", {}).get("NEXTPNR_BEL", ""))


def net_spans(netlist: dict, module: str = "top") -> list[tuple[int, str, str, str]]:
    """``(tiles, net, driver cell type, farthest sink's cell type)`` for every net with a
    placed driver and at least one placed sink, longest first."""
    mod = netlist["modules"][module]
    where, kind = {}, {}
    for name, cell in mod["cells"].items():
        tile = _placed(cell)
        if tile:
            where[name], kind[name] = tile, cell["type"]
    driver, sinks = {}, defaultdict(list)
    for name, cell in mod["cells"].items():
        if name not in where:
            continue
        directions = cell.get("port_directions", {})
        for port, bits in cell["connections"].items():
            for bit in bits:
                if not isinstance(bit, int):
                    continue                        # a constant
                if directions.get(port) == "output":
                    driver[bit] = name
                elif directions.get(port) == "input":
                    sinks[bit].append(name)
    names: dict[int, str] = {}
    for name, net in mod["netnames"].items():
        for bit in net["bits"]:
            if isinstance(bit, int) and (bit not in names or len(name) < len(names[bit])):
                names[bit] = name                   # the shortest of a bit's names
    spans = []
    for bit, source in driver.items():
        if not sinks.get(bit):
            continue
        x0, y0 = where[source]
        far = max(sinks[bit], key=lambda s: abs(where[s][0] - x0) + abs(where[s][1] - y0))
        tiles = abs(where[far][0] - x0) + abs(where[far][1] - y0)
        spans.append((tiles, names.get(bit, f"${bit}"), kind[source], kind[far]))
    spans.sort(reverse=True)
    return spans


def cell_spread(netlist: dict, pattern: str, module: str = "top") -> dict:
    r"""Where the placed cells whose names match ``pattern`` (a regular expression, searched)
    went: ``{key: (cells, (x min, median, max), (y min, median, max))}``, keyed by the
    pattern's first group (or ``"all"``). ``r"engine\.lane_5\.(one|sum|acc)"`` says where
    lane 5's tree and its accumulator are."""
    where = defaultdict(list)
    regex = re.compile(pattern)
    for name, cell in netlist["modules"][module]["cells"].items():
        m, tile = regex.search(name), _placed(cell)
        if m and tile:
            where[m.group(1) if regex.groups else "all"].append(tile)

    def spread(values):
        values = sorted(values)
        return values[0], values[len(values) // 2], values[-1]
    return {key: (len(ps), spread(p[0] for p in ps), spread(p[1] for p in ps))
            for key, ps in sorted(where.items())}


def group(name: str) -> str:
    """A net's name with bit indices and numbers folded: its group."""
    return re.sub(r"_\d+", "_N", re.sub(r"\[\d+\]", "", name))


def summary(spans, minimum: int) -> list[tuple[int, int, str, str, str]]:
    """``(nets, longest, group, driver type, sink type)`` of the nets spanning ``minimum``
    tiles or more, largest groups first."""
    count, longest = Counter(), {}
    for tiles, name, source, sink in spans:
        if tiles >= minimum:
            key = (group(name), source, sink)
            count[key] += 1
            longest[key] = max(longest.get(key, 0), tiles)
    return [(n, longest[key], *key) for key, n in count.most_common()]


_FMAX = re.compile(r"Max frequency for clock '([^']+)': ([\d.]+) MHz")
_LEGEND = re.compile(r"\* represents (\d+) endpoint")
_BUCKET = re.compile(r"\[\s*(-?\d+),\s*(-?\d+)\) \|([*+ ]*)")


def slack_summary(log: str) -> dict:
    """What nextpnr's log says of a placement's (or routing's) timing, from its last report:
    ``fmax_mhz`` of the first clock, ``worst_ps`` (the lower edge of the slack histogram's
    first bucket) and the endpoints with negative slack as a range, ``failing`` =
    ``(at least, at most)``: a ``*`` is ``legend`` endpoints and a ``+`` 1 to ``legend - 1``,
    and a bucket that straddles 0 counts as failing only in the upper bound."""
    fmax = _FMAX.findall(log)
    legends = _LEGEND.findall(log)
    if not fmax or not legends:
        raise ValueError("no timing report (Max frequency and slack histogram) in the log")
    legend = int(legends[-1])
    histogram = log[log.rindex("Slack histogram"):]
    buckets = _BUCKET.findall(histogram)
    low = high = 0
    for lo, hi, bar in buckets:
        lo, hi = int(lo), int(hi)
        stars, plus = bar.count("*"), "+" in bar
        if lo >= 0:
            break
        if hi <= 0:
            low += stars * legend + plus
        high += stars * legend + plus * (legend - 1)
    return {"fmax_mhz": float(fmax[-1][1]), "worst_ps": int(buckets[0][0]),
            "failing": (low, high)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boards.netspan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("placed", type=Path, help="nextpnr's --write JSON of a placed design")
    parser.add_argument("--min", type=int, default=40, help="tiles a net must span (40)")
    parser.add_argument("--top", type=int, default=30, help="groups to list (30)")
    parser.add_argument("--log", type=Path,
                        help="nextpnr's log of that run: also print its estimate and how many "
                             "endpoints fail")
    parser.add_argument("--where", metavar="REGEX",
                        help="instead, where the cells whose names match went (by the "
                             "pattern's first group)")
    args = parser.parse_args(argv)
    if args.where:
        for key, (n, xs, ys) in cell_spread(json.loads(args.placed.read_text()),
                                            args.where).items():
            print(f"{key}: {n} cells, x {xs[0]}..{xs[2]} (median {xs[1]}), "
                  f"y {ys[0]}..{ys[2]} (median {ys[1]})")
        return 0
    if args.log:
        t = slack_summary(args.log.read_text())
        print(f"{t['fmax_mhz']:.2f} MHz; worst slack {t['worst_ps'] / 1000:.3f} ns; "
              f"{t['failing'][0]:,} to {t['failing'][1]:,} endpoints failing")
    spans = net_spans(json.loads(args.placed.read_text()))
    rows = summary(spans, args.min)
    print(f"{sum(r[0] for r in rows)} of {len(spans)} nets span {args.min} tiles or more")
    print("nets  longest  group (driver -> farthest sink)")
    for n, tiles, name, source, sink in rows[:args.top]:
        print(f"{n:5d}  {tiles:7d}  {name} ({source} -> {sink})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
