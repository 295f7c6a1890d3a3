"""Block RAM floorplan of the adder-tree device on an ECP5 85k die: each lane's weight and
result block RAMs side by side, the lanes in order along the die's rows of block RAM.

Why (docs/architecture.md, "Boards", stop 38): left to itself, nextpnr's HeAP placer put each
lane of the ULX3S-85F's 32x64 trees by the block RAMs its weights come from and its
accumulator by the block RAMs its sums go to, which it placed apart: the top sum's register
hop spanned up to 94 tiles in every placement of stops 36 and 37, whatever the result path
(537 nets of 40 tiles or more). Placing the lanes' block RAMs in lane order first, by
nextpnr's ``BEL`` attribute (a cell that has one is placed there and not moved), leaves the
placer only the logic, which it puts by its lane's memories: with the same netlist no net
inside a lane spanned 40 tiles.

A block RAM is a lane's by what it holds: the bits of the weight or result memory's read data
that its outputs drive (the device core's read ports: nets named ``weight_r__data`` and
``result_r__data``, or ``weight_mem.read__data`` and ``result_mem.read__data`` when the
memories are sliced, ``rtl.sliced_memory``). Bit ``i`` of a memory ``width`` bits wide is at
``i * lanes / width`` in lanes (both memories are lane-major,
``rtl.adder_tree.tree_weight_layout``), and a block RAM
at the mean of its bits'. The other block RAMs (activations, payload, the base-3 table) are
left to the placer, with the sites nearest the die's middle kept free for them: the
activations' feed every lane (spread evenly among the lanes' instead, they went wherever a
site was free, up to 78 tiles from their read registers).

``python -m boards.floorplan top.json --lanes 64`` rewrites a synthesized netlist in place;
``tritium build --engine tree`` runs it between synthesis and place and route on the parts
in :data:`DIES`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .netspan import bel_tile

#: read-data nets of the memories whose block RAMs belong to lanes, weights' first: a memory's
#: read port, or a sliced memory's (``rtl.sliced_memory``)
LANE_MEMORIES = ("weight_r__data", "weight_mem.read__data", "result_r__data",
                 "result_mem.read__data")

#: The DP16KD sites of a die, as nextpnr names them (``X{x}/Y{y}/EBR{n}``): rows of block RAM
#: at these y, each with a block RAM at these x, whose ``EBR`` index counts 0 to 3 along the
#: row. Read off nextpnr's placement of the 85F tree device (181 block RAMs in 4 rows of 52;
#: every x had one index in every row) and checked by placing a block RAM on every site
#: (tests/boards/test_floorplan.py).
EBR_GRID = {
    "85k": ((22, 46, 70, 82),
            (4, 6, 8, 10, 13, 15, 17, 19, 22, 24, 26, 28, 31, 33, 35, 37, 40, 42, 44, 46,
             49, 51, 53, 55, 58, 60, 62, 64, 69, 71, 73, 75, 78, 80, 82, 84, 87, 89, 91, 93,
             96, 98, 100, 102, 105, 107, 109, 111, 114, 116, 118, 120)),
}

#: nextpnr's die of each ECP5 part that has a grid above
DIES = {"LFE5U-85F": "85k", "LFE5UM-85F": "85k", "LFE5UM5G-85F": "85k"}


def ebr_sites(die: str) -> list[str]:
    """The die's block RAM sites in the order lanes take them: along the first row, back
    along the second and so on, so that consecutive sites are neighbours (a group of lanes
    sharing a copy of the activations stays together). (Bands of 4 columns, down one and up
    the next, put some lanes' block RAMs in two rows 24 tiles apart and their weights'
    registers up to 86 tiles from their trees; docs/architecture.md, "Boards".)"""
    rows, columns = EBR_GRID[die]
    sites = []
    for r, y in enumerate(rows):
        row = [f"X{x}/Y{y}/EBR{i % 4}" for i, x in enumerate(columns)]
        sites += row[::-1] if r % 2 else row
    return sites


def lane_block_rams(netlist: dict, lanes: int, module: str = "top") -> list[tuple[float, str]]:
    """``(lane, cell name)`` of every DP16KD whose outputs drive a lane memory's read data,
    ``lane`` the mean place in lanes of the bits it holds, in lane order (at a tie, weights
    before sums)."""
    mod = netlist["modules"][module]
    where = {}      # bit -> (memory, index, width)
    for name, net in mod["netnames"].items():
        memory = next((m for m in LANE_MEMORIES if name == m or name.endswith("." + m)), None)
        if memory is not None:
            for i, bit in enumerate(net["bits"]):
                if isinstance(bit, int):
                    where[bit] = (memory, i, len(net["bits"]))
    found = []
    for name, cell in mod["cells"].items():
        if cell["type"] != "DP16KD":
            continue
        held = [where[bit] for port, bits in cell["connections"].items()
                if port.startswith("DO") for bit in bits if bit in where]
        if held:
            lane = sum(i * lanes / width for _, i, width in held) / len(held)
            found.append((lane, LANE_MEMORIES.index(held[0][0]), name))
    return [(lane, name) for lane, _, name in sorted(found)]


def central_sites(sites: list[str], n: int) -> set[str]:
    """The ``n`` sites nearest the middle of them all (Manhattan distance, ties by order)."""
    tiles = {site: bel_tile(site) for site in sites}
    cx = sum(x for x, _ in tiles.values()) / len(sites)
    cy = sum(y for _, y in tiles.values()) / len(sites)
    return set(sorted(sites, key=lambda s: abs(tiles[s][0] - cx) + abs(tiles[s][1] - cy))[:n])


def pin_lane_block_rams(netlist: dict, lanes: int, sites: list[str],
                        module: str = "top") -> dict[str, str]:
    """Give each lane block RAM a ``BEL`` attribute. The other block RAMs (the activations',
    which feed every lane, the payload's and the base-3 table's, which serve the link) are
    left the sites nearest the die's middle; the lane block RAMs are spread evenly over the
    rest in lane order. Returns ``{cell: site}``; refuses a netlist with more block RAMs
    than sites, or no lane block RAMs."""
    brams = lane_block_rams(netlist, lanes, module)
    if not brams:
        raise ValueError(f"no block RAM holds {' or '.join(LANE_MEMORIES)}: not an "
                         f"adder-tree device's netlist?")
    cells = netlist["modules"][module]["cells"]
    others = sum(1 for cell in cells.values() if cell["type"] == "DP16KD") - len(brams)
    if len(brams) + others > len(sites):
        raise ValueError(f"{len(brams) + others} block RAMs do not fit the die's "
                         f"{len(sites)} sites")
    kept = central_sites(sites, others)
    free = [site for site in sites if site not in kept]
    pinned = {}
    for n, (_, name) in enumerate(brams):
        site = free[n * len(free) // len(brams)]
        cells[name].setdefault("attributes", {})["BEL"] = site
        pinned[name] = site
    return pinned


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boards.floorplan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("netlist", type=Path, help="yosys' JSON netlist, rewritten in place")
    parser.add_argument("--lanes", type=int, required=True, help="the trees' lanes")
    parser.add_argument("--die", choices=sorted(EBR_GRID), default="85k")
    args = parser.parse_args(argv)
    netlist = json.loads(args.netlist.read_text())
    sites = ebr_sites(args.die)
    pinned = pin_lane_block_rams(netlist, args.lanes, sites)
    partial = args.netlist.with_suffix(".floorplan.tmp")
    partial.write_text(json.dumps(netlist))
    os.replace(partial, args.netlist)       # a half-written netlist is never left behind
    print(f"floorplan: {len(pinned)} block RAMs of {args.lanes} lanes pinned in lane order "
          f"on the {args.die} die's {len(sites)} sites")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
