"""boards.netspan: the span of each net of a placed design, on a netlist written by hand."""

from boards.netspan import group, main, net_spans, summary


def _cell(kind, bel, **ports):
    """A cell at ``bel`` whose ports are ``name=(direction, bits)``."""
    return {"type": kind, "attributes": {"NEXTPNR_BEL": bel} if bel else {},
            "port_directions": {p: d for p, (d, _) in ports.items()},
            "connections": {p: b for p, (_, b) in ports.items()}}


NETLIST = {"modules": {"top": {
    "cells": {
        "ff_a": _cell("TRELLIS_FF", "X2/Y3/SLICEA", Q=("output", [10]), DI=("input", ["0"])),
        "lut_near": _cell("TRELLIS_COMB", "X4/Y3/SLICEB", A=("input", [10]), Z=("output", [11])),
        "lut_far": _cell("TRELLIS_COMB", "X40/Y13/SLICEC", A=("input", [10])),
        "ram": _cell("DP16KD", "X50/Y20/DP16K", DI0=("input", [11]), DO0=("output", [12])),
        "unplaced": _cell("TRELLIS_FF", None, DI=("input", [12])),
    },
    "netnames": {"lane_12.sum_5_0": {"bits": [10]}, "a_long_alias_of_net_10": {"bits": [10]},
                 "n[3]": {"bits": [11]}, "orphan": {"bits": [12]}},
}}}


def test_spans_reach_the_farthest_placed_sink():
    spans = net_spans(NETLIST)
    # net 10 from (2, 3): its farthest sink is (40, 13), 38 + 10 tiles; net 11 from (4, 3)
    # to the block RAM at (50, 20); net 12's only sink is not placed, so it is left out
    assert spans == [(48, "lane_12.sum_5_0", "TRELLIS_FF", "TRELLIS_COMB"),
                     (63, "n[3]", "TRELLIS_COMB", "DP16KD")][::-1]


def test_groups_fold_indices_and_count_long_nets():
    assert group("device.core.engine.lane_12.sum_5_0[3]") == "device.core.engine.lane_N.sum_N_N"
    spans = net_spans(NETLIST)
    assert summary(spans, 50) == [(1, 63, "n", "TRELLIS_COMB", "DP16KD")]
    assert len(summary(spans, 40)) == 2 and summary(spans, 64) == []


def test_command_line(tmp_path, capsys):
    import json
    path = tmp_path / "placed.json"
    path.write_text(json.dumps(NETLIST))
    assert main([str(path), "--min", "48"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 of 2 nets span 48 tiles or more")
    assert "lane_N.sum_N_N (TRELLIS_FF -> TRELLIS_COMB)" in out
