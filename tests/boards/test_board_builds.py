"""Board builds: the PLL settings, the board list, and one small real build per family (YoWASP
yosys, nextpnr-ecp5 and ecppack; nextpnr-ice40 and icepack) checked through its report."""

import json

import pytest

from boards.build import source_commit
from boards.floorplan import ebr_sites
from boards.pll import ecp5_pll, ice40_pll
from host.cli import main


@pytest.mark.parametrize("f_out", [30e6, 50e6, 100e6, 125e6])
def test_ecp5_pll_hits_the_target_within_the_limits(f_out):
    p = ecp5_pll(25e6, f_out)
    assert p.f_out == pytest.approx(f_out)
    assert 400e6 <= p.f_vco <= 800e6 and 3.125e6 <= 25e6 / p.clki_div <= 400e6


def test_ecp5_pll_closest_and_refusal():
    p = ecp5_pll(25e6, 33.3e6)             # 25 * 4 / 3 = 33.33 is the closest setting
    assert p.f_out == pytest.approx(100e6 / 3)
    with pytest.raises(ValueError, match="cannot make 2000 MHz"):
        ecp5_pll(25e6, 2e9)


def test_ice40_pll_matches_icepll_and_the_limits():
    # icepll -i 12 -o 24: DIVR 0, DIVF 63, DIVQ 5, FILTER_RANGE 1 (the iCEBreaker examples')
    p = ice40_pll(12e6, 24e6)
    assert (p.divr, p.divf, p.divq, p.filter_range) == (0, 63, 5, 1)
    for f_out in (16e6, 18e6, 48e6, 100e6):
        p = ice40_pll(12e6, f_out)
        assert p.f_out == pytest.approx(f_out, rel=0.01)
        assert 533e6 <= p.f_vco <= 1066e6 and 10e6 <= p.f_pfd <= 133e6 and 1 <= p.divq <= 6
    with pytest.raises(ValueError, match=r"cannot make 15 MHz .*closest: 16.125 MHz"):
        ice40_pll(12e6, 15e6)                      # below the PLL's 16 MHz output floor


@pytest.mark.parametrize("name", sorted(__import__("boards").BOARDS))
def test_every_board_elaborates_with_its_pins(name):
    """Each board's top (PLL, UART, LEDs or RGB LEDs) against its platform's pins, without
    the tools: a wrong resource name or a clock the PLL cannot make fails here, in a second."""
    import re

    from boards import board
    from sim.boards import core_config
    from boards.pll import PLLS
    from boards.top import BoardTop
    from rtl.uart import divisor_for
    b = board(name)
    platform = b.platform()
    pll = PLLS[b.family](platform.default_clk_frequency, b.freq_mhz * 1e6)
    top = BoardTop(pll, divisor_for(pll.f_out, b.baud), core_config(2, 2, 16, b.family),
                   pll_from_pad=b.pll_from_pad)
    files = platform.prepare(top, name="top").files
    primitive = {"ecp5": "EHXPLLL",
                 "ice40": "SB_PLL40_PAD" if b.pll_from_pad else "SB_PLL40_CORE"}[b.family]
    assert primitive in files["top.il"]
    pins = files.get("top.lpf") or files["top.pcf"]       # the pin constraints
    placed = set(re.findall(r'(?:COMP "|set_io )(\w+?)__io', pins))
    assert {"uart_0__rx", "uart_0__tx"} <= placed
    leds = {p for p in placed if re.fullmatch(r"led_\d+|rgb_led_\d+__[rgb]", p)}
    assert len(leds) >= 2, placed                       # activity and busy at least


@pytest.mark.parametrize("name", ["ulx3s-85f", "icebreaker"])
def test_a_board_elaborates_with_the_adder_trees(name):
    """``tritium build --engine tree``: the board's core with the adder-tree engine (ECP5: its
    pairs on CCU2C cells; iCE40: weights in SPRAM, no registered ports), without the tools."""
    from boards import board
    from boards.build import _board_parts
    from boards.top import BoardTop
    b = board(name)
    platform, pll, core, divisor = _board_parts(b, 4, 2, None, 64, "tree")
    assert core["engine"] == "tree" and core["act_bytes"] % 4 == 0
    top = BoardTop(pll, divisor, core, pll_from_pad=b.pll_from_pad)
    assert top.device.core.info.tree
    files = platform.prepare(top, name="top").files
    assert ("CCU2C" in files["top.il"]) == (b.family == "ecp5")


def test_upduino_pins_and_clock():
    """The UPduino v3 runs from its 12 MHz oscillator on pin 20 (not a PLL pad, hence
    SB_PLL40_CORE) and talks on the FT232H's lines: rx pin 15, tx pin 14
    (tinyvision-ai-inc/UPduino-v3.0's netlist)."""
    from boards import board
    b = board("upduino-v3")
    platform = b.platform()
    assert platform.default_clk == "clk12" and platform.default_clk_frequency == 12e6
    uart = platform.lookup("uart", 0)
    pins = {sub.name: sub.ios[0].names for sub in uart.ios}
    assert pins == {"rx": ["15"], "tx": ["14"]}
    assert not b.pll_from_pad and board("icesugar").pll_from_pad


def test_every_board_names_a_programmer():
    from boards import BOARDS
    for b in BOARDS.values():
        assert b.programmers and all(isinstance(cmd[0], str) for cmd in b.programmers), b.name


def test_boards_list(capsys):
    assert main(["boards", "--json"]) == 0
    listed = {b["board"]: b for b in json.loads(capsys.readouterr().out)}
    assert set(listed) == set(__import__("boards").BOARDS)
    assert all(b["basis"] == "measured" for b in listed.values())
    # the UP5K boards' trees run linear hardwired (no room for the control processor)
    assert {n for n, b in listed.items() if b["control"] == "hardwired"} == {
        "icebreaker", "icesugar", "upduino-v3"}


@pytest.mark.parametrize("name", sorted(__import__("boards").BOARDS))
def test_every_default_is_a_checked_in_build(name):
    """A board's default (shape, clock, weight memory) is what a build in ``boards/sweeps``
    made and met timing with, at zero DSP blocks: changing a default needs a build."""
    from pathlib import Path

    from boards import board
    b = board(name)
    sweeps = Path(__file__).resolve().parents[2] / "boards" / "sweeps"
    path = sweeps / f"{name}-default.json"
    table = json.loads((path if path.exists() else sweeps / f"{name}.json").read_text())
    if "report" in table:
        built = table["report"]
    else:
        best = table["largest_that_meets_timing"]
        built = next(r for r in table["runs"]
                     if r.get("built") and (r["rows"], r["cols"]) == (best["rows"], best["cols"]))
    assert built["board"] == name and (built["rows"], built["cols"]) == (b.rows, b.cols)
    assert built["target_mhz"] == pytest.approx(b.freq_mhz, abs=0.01)
    assert built["timing_met"] and built["achieved_mhz"] >= built["target_mhz"]
    assert built["dsp"] == 0 and built["baud"] == b.baud
    assert built["resident_weight_trits"] == b.weight_words * b.word_trits
    # (the serial trees' word is one lane group: a quarter of a step's k x lanes trits)
    assert b.word_trits == b.rows * b.cols // (4 if b.engine == "serial" else 1)
    # Reports from before --placer and --router were built with nextpnr's defaults.
    assert (built.get("placer", "heap"), built.get("router", "router1")) == (b.placer, b.router)
    # and those from before --engine with the array, before --seed with nextpnr's own, before
    # the report named the control with the processor
    assert built.get("engine", "array") == b.engine and built.get("seed") == b.seed
    assert built.get("control", "processor") == b.control


@pytest.mark.parametrize("name", ["ulx3s-85f", "icebreaker"])
def test_default_builds_hold_the_bundled_model(name):
    """The two boards whose projections are issue #4's goals build the goal's weight memory
    (the ULX3S-85F the goal itself, the iCEBreaker its 128 PEs as digit-serial trees): the
    bundled model stays resident on what they build."""
    from pathlib import Path

    from boards import board
    from host import estimate, load_checkpoint
    from sim import boards as targets
    b, goal = board(name), targets.board(f"{name}-goal")
    assert b.weight_words * b.word_trits == goal.weight_trits
    tiny = Path(__file__).resolve().parents[2] / "models" / "tiny"
    work = estimate.workload_of(load_checkpoint(tiny), "tiny", str(tiny))
    r = estimate.estimate(work, board=name, rows=b.rows, cols=b.cols)
    assert r["residency"]["all_resident"]


def test_build_mistakes(capsys):
    assert main(["build", "--board", "nope"]) == 2
    assert "unknown board 'nope'" in capsys.readouterr().err
    # 3 Mbaud from 25 MHz is 8.33 cycles a bit: the UART would be 4% off.
    assert main(["build", "--board", "ulx3s-12f", "--freq", "25"]) == 2
    assert "4.17% off" in capsys.readouterr().err
    # --baud: 5 Mbaud from the iCEBreaker's 24 MHz is 4.8 cycles a bit (divisor 5 is 4% slow).
    assert main(["build", "--board", "icebreaker", "--baud", "5000000"]) == 2
    assert "-4.00% off" in capsys.readouterr().err
    assert main(["build", "--board", "ulx3s-12f", "--weight-words", "0"]) == 2
    assert "weight_words must be at least 1, not 0" in capsys.readouterr().err
    # nextpnr's placer and router: argparse refuses names it does not know, build() too.
    from boards.build import build
    with pytest.raises(SystemExit):
        main(["build", "--board", "ulx3s-12f", "--placer", "fast"])
    assert "invalid choice: 'fast'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="placer must be one of heap, static, sa, not 'fast'"):
        build("ulx3s-12f", placer="fast")
    with pytest.raises(ValueError, match="router must be one of router1, router2, not 'r3'"):
        build("ulx3s-12f", router="r3")


@pytest.mark.synth
def test_small_ulx3s_build(tmp_path, capsys):
    """A small ECP5 build, with nextpnr's other placer and router and a seed of our own (the
    iCEBreaker's build below takes the defaults)."""
    out = tmp_path / "ulx3s"
    assert main(["build", "--board", "ulx3s-12f", "--rows", "2", "--cols", "2", "--freq", "30",
                 "--weight-words", "256", "--placer", "static", "--router", "router2",
                 "--seed", "3", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((out / "report.json").read_text())
    assert printed == report
    assert report["timing_met"] and report["achieved_mhz"] >= report["target_mhz"] == 30
    assert report["dsp"] == 0 and report["pes"] == 4
    assert 0 < report["lut4"] < report["lut4_available"]
    assert report["resident_weight_trits"] == 256 * 4           # --weight-words 256 of 2x2
    assert (out / "top.bit").stat().st_size > 100_000
    assert report["source"] == source_commit()
    assert (report["placer"], report["router"], report["seed"]) == ("static", "router2", 3)
    assert " --seed 3" in (out / "build_top.sh").read_text()
    assert report["floorplan"] is False        # the array engine: no lane block RAMs
    log = (out / "top.tim").read_text()
    assert "Running Static placer" in log and "Running router2" in log


@pytest.mark.synth
def test_small_tree_build_on_an_85k_die_pins_the_lanes_block_rams(tmp_path, capsys):
    """An adder-tree build on an 85F runs ``boards.floorplan`` between synthesis and place
    and route: the lanes' block RAMs (here one of weights and two of results) go to sites
    in lane order, and the build still meets its clock."""
    out = tmp_path / "tree"
    assert main(["build", "--board", "ulx3s-85f", "--engine", "tree", "--rows", "2",
                 "--cols", "2", "--freq", "30", "--weight-words", "256",
                 "--out", str(out)]) == 0
    assert "block RAMs are pinned in lane order" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["floorplan"] is True and report["engine"] == "tree"
    assert report["timing_met"] and report["dsp"] == 0 and report["pes"] == 4
    assert "floorplan: 3 block RAMs of 2 lanes pinned" in (out / "build.log").read_text()
    cells = json.loads((out / "top.json").read_text())["modules"]["top"]["cells"]
    pinned = sorted(c["attributes"]["BEL"] for c in cells.values()
                    if c["type"] == "DP16KD" and "BEL" in c["attributes"])
    assert len(pinned) == 3 and set(pinned) <= set(ebr_sites("85k"))


def test_source_commit_names_the_commit_and_changes(tmp_path):
    """A report names the commit its design came from, and says when the design's files
    differed from it (docs, tests and the sweep tables do not count)."""
    import subprocess

    assert source_commit(tmp_path) is None                      # not a checkout

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t",
                               "-c", "user.email=t@t", *args], capture_output=True,
                              text=True, check=True).stdout.strip()
    git("init", "-q")
    for path in ("rtl/core.py", "docs/notes.md", "boards/sweeps/x.json"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("1\n")
    git("add", ".")
    git("commit", "-qm", "first")
    head = git("rev-parse", "--short=12", "HEAD")
    assert source_commit(tmp_path) == head
    (tmp_path / "docs/notes.md").write_text("2\n")
    (tmp_path / "boards/sweeps/x.json").write_text("2\n")
    assert source_commit(tmp_path) == head
    (tmp_path / "rtl/core.py").write_text("2\n")
    assert source_commit(tmp_path) == head + "-modified"


@pytest.mark.synth
def test_small_icebreaker_build(tmp_path, capsys, monkeypatch):
    """The iCEBreaker's default (digit-serial adder trees of k = 32 for 4 lanes, 128 PEs, with
    ``linear`` hardwired, their weights in the four SPRAMs), built as a user would, with its
    progress and summary printed."""
    import boards.build
    monkeypatch.setattr(boards.build, "PROGRESS_EVERY", 0)     # a "still in" line each poll
    out = tmp_path / "icebreaker"
    assert main(["build", "--board", "icebreaker", "--out", str(out)]) == 0
    said = capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert f"{report['achieved_mhz']} MHz achieved" in said.out
    # Place and route's progress comes from nextpnr's log: the placer's, then the router's.
    assert "still in place and route (nextpnr)" in said.err
    assert ": placing (analytic placement, iteration " in said.err, said.err
    assert " arcs to go (placement estimate " in said.err, said.err
    assert report["fpga"] == "ice40" and report["pes"] == 128
    assert (report["placer"], report["router"], report["seed"]) == ("heap", "router1", None)
    assert report["floorplan"] is False and report["engine"] == "serial"
    assert report["control"] == "hardwired"
    assert report["timing_met"] and report["achieved_mhz"] >= report["target_mhz"] == 24
    assert report["baud"] == 6_000_000                 # 4 cycles a bit
    assert report["dsp"] == 0 and 0 < report["lut4"] <= report["lut4_available"] == 5280
    assert 0 < report["ff"] < report["lut4"]           # flip-flops counted in the netlist
    # The weights fill the four SPRAMs of 16K x 16 bits, 2 bits a trit.
    assert report["spram"] == 4
    assert report["resident_weight_trits"] == 4 * 16384 * 16 // 2
    # A lane group's 32 trits a cycle: each PE does a quarter of a product (2 of 8 bits).
    assert report["peak_ternary_macs_per_second"] == 32 * 24e6
    assert (out / "top.bin").stat().st_size > 100_000


def test_sweep_shapes_grow_square_then_wide():
    from boards.sweep import shapes
    assert list(shapes(2, 16)) == [(2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16)]
    # the serial trees: one lane a digit, k doubling
    assert list(shapes(2, 64, "serial")) == [(2, 4), (4, 4), (8, 4), (16, 4), (32, 4), (64, 4)]


def test_sweep_ends_on_a_shape_the_board_cannot_build(tmp_path, monkeypatch, capsys):
    """A shape the board refuses before any tool runs (the UP5K's SPRAMs give 64 bits a
    cycle: the serial trees of 64 x 4 need 128 for a lane's trits) ends the sweep as a failed
    build; the largest shape that met timing stays the answer. The builds themselves are
    stand-ins here."""
    import boards.sweep as sweep
    from boards import board
    from boards.build import _board_parts

    def fake_build(name, *, rows, cols, **kw):
        b = board(name)
        _board_parts(b, rows, cols, None, None, b.engine)      # refuses as build() does
        return {"board": name, "rows": rows, "cols": cols, "timing_met": True,
                "bitstream": "x"}
    monkeypatch.setattr(sweep, "build", fake_build)
    monkeypatch.setattr(sweep, "SWEEPS", tmp_path)
    assert sweep.main(["--board", "icebreaker", "--out", str(tmp_path / "b")]) == 0
    table = json.loads((tmp_path / "icebreaker.json").read_text())
    assert table["largest_that_meets_timing"] == {"rows": 32, "cols": 4}
    assert [(r["rows"], r["cols"], r["built"]) for r in table["runs"]] == [
        (2, 4, True), (4, 4, True), (8, 4, True), (16, 4, True), (32, 4, True), (64, 4, False)]
    assert "SPRAM weight words must be" in table["runs"][-1]["error"]


# Lines of nextpnr's own logs (``--log top.tim``): HeAP with router1 on the ULX3S-85F's core
# at 84.375 MHz (its last line from the same core at 90 MHz), the electrostatic placer with
# router2 on the same core at 90 MHz.
HEAP_ROUTER1_LOG = """\
Info: Running main analytical placer, max placement attempts per cell = 407165916.
Info:     at iteration #1, type ALL: wirelen solved = 26261, spread = 1171657, legal = 1308650; time = 19.05s
Info:     at iteration #22, type ALL: wirelen solved = 249292, spread = 491706, legal = 611252; time = 8.14s
Info: HeAP Placer Time: 347.26s
Info: Running simulated annealing placer for refinement.
Info:   at iteration #1: temp = 0.000000, timing cost = 3659, wirelen = 608723
Info:   at iteration #42: temp = 0.000000, timing cost = 13535, wirelen = 459904 
Info: SA placement time 235.67s
Info: Max frequency for clock '$glbnet$clk': 61.12 MHz (FAIL at 84.38 MHz)
Info: Routing..
Info: Routing 163326 arcs.
Info:            |   (re-)routed arcs  |   delta    | remaining|       time spent     |
Info:    IterCnt |  w/ripup   wo/ripup |  w/r  wo/r |      arcs| batch(sec) total(sec)|
Info:       1000 |      359        640 |  359   640 |    162766|       4.10       4.10|
Info:     441000 |    83878     357121 |  271   729 |     92148|       4.71    1213.03|
Info: Routing complete.
"""
STATIC_ROUTER2_LOG = """\
Info: Running Static placer...
Info: iter=0 steplen=1.405075 a=1.000000 penalty=[0.00, 0.00, 0.00, 0.00]
Info: iter=544 steplen=1.816237 a=274.400055 penalty=[23.78, 23.78, 23.78, 23.78]
Info: Max frequency for clock '$glbnet$clk': 53.93 MHz (FAIL at 90.00 MHz)
Info: Running router2...
Info:     iter=1 wires=695007 overused=51274 overuse=60036 archfail=NA
Info:     iter=116 wires=752338 overused=0 overuse=0 archfail=0
Info: Routing..
Info: Routing 0 arcs.
Info: Routing complete.
"""


@pytest.mark.parametrize("log, lines, status", [
    (HEAP_ROUTER1_LOG, 0, None),
    (HEAP_ROUTER1_LOG, 2, "placing (analytic placement, iteration 1)"),
    (HEAP_ROUTER1_LOG, 3, "placing (analytic placement, iteration 22)"),
    (HEAP_ROUTER1_LOG, 7, "placing (annealing, iteration 42)"),
    (HEAP_ROUTER1_LOG, 11, "routing 163,326 arcs (placement estimate 61.12 MHz against 84.38)"),
    (HEAP_ROUTER1_LOG, 15,
     "routing, 92,148 of 163,326 arcs to go (placement estimate 61.12 MHz against 84.38)"),
    (HEAP_ROUTER1_LOG, 17, "routed, timing the result"),
    (STATIC_ROUTER2_LOG, 3, "placing (electrostatic placement, iteration 544)"),
    (STATIC_ROUTER2_LOG, 6, "routing, 51,274 wires overused after iteration 1 "
                            "(placement estimate 53.93 MHz against 90.00)"),
    # router2 hands what is left to router1, which has nothing to route
    (STATIC_ROUTER2_LOG, 9,
     "routing, 0 wires overused after iteration 116 (placement estimate 53.93 MHz against 90.00)"),
    (STATIC_ROUTER2_LOG, 10, "routed, timing the result"),
])
def test_place_and_route_progress_from_nextpnr_log(log, lines, status):
    """A build's "still in place and route" lines say where nextpnr is, from its log so far."""
    from boards.build import pnr_status
    assert pnr_status("\n".join(log.splitlines()[:lines])) == status

