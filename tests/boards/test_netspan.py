"""boards.netspan: the span of each net of a placed design, on a netlist written by hand."""

import json

from boards.netspan import cell_spread, group, main, net_spans, slack_summary, summary


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
    path = tmp_path / "placed.json"
    path.write_text(json.dumps(NETLIST))
    assert main([str(path), "--min", "48"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 of 2 nets span 48 tiles or more")
    assert "lane_N.sum_N_N (TRELLIS_FF -> TRELLIS_COMB)" in out


# the tail of a nextpnr placement log, as it prints it (the legend, then buckets in ps)
LOG = """Info: Max frequency for clock '$glbnet$clk': 61.63 MHz (FAIL at 100.00 MHz)

Info: Slack histogram:
Info:  legend: * represents 188 endpoint(s)
Info:          + represents [1,188) endpoint(s)
Info: [ -6225,  -5451) |+
Info: [ -5451,  -4677) |*+
Info: [  -807,    -33) |***
Info: [   -33,    741) |**+
Info: [   741,   1515) |**********+
"""


def test_slack_summary_counts_the_failing_buckets():
    t = slack_summary(LOG)
    assert t["fmax_mhz"] == 61.63 and t["worst_ps"] == -6225
    # at least: a + is 1, so 1 + (188 + 1) + 3 * 188; at most: a + is 187, and the bucket
    # that straddles 0 counts whole, (187) + (188 + 187) + (3 * 188) + (2 * 188 + 187)
    assert t["failing"] == (1 + 189 + 3 * 188, 187 + 375 + 3 * 188 + 563)


def test_slack_summary_refuses_a_log_without_timing():
    import pytest
    with pytest.raises(ValueError, match="no timing report"):
        slack_summary("Info: Program finished normally.")


def test_command_line_with_the_log(tmp_path, capsys):
    (tmp_path / "placed.json").write_text(json.dumps(NETLIST))
    (tmp_path / "place.out").write_text(LOG)
    assert main([str(tmp_path / "placed.json"), "--log", str(tmp_path / "place.out")]) == 0
    assert capsys.readouterr().out.startswith(
        "61.63 MHz; worst slack -6.225 ns; 754 to 1,689 endpoints failing")


def test_cell_spread_by_the_patterns_group(tmp_path, capsys):
    assert cell_spread(NETLIST, r"^(ff|lut)_") == {
        "ff": (1, (2, 2, 2), (3, 3, 3)),
        "lut": (2, (4, 40, 40), (3, 13, 13)),     # unplaced cells are left out
    }
    assert cell_spread(NETLIST, "ram") == {"all": (1, (50, 50, 50), (20, 20, 20))}
    (tmp_path / "placed.json").write_text(json.dumps(NETLIST))
    assert main([str(tmp_path / "placed.json"), "--where", "^(lut)_"]) == 0
    assert capsys.readouterr().out == "lut: 2 cells, x 4..40 (median 40), y 3..13 (median 13)\n"
