"""Synthesis, place and route and packing of one board with the YoWASP tools; ``report.json``.

The flow is amaranth-boards' own (``platform.build``), with two changes: the YoWASP tools are
set up here (no environment variables asked of the user), and yosys maps LUTs with classic ABC
instead of ABC9 (YoWASP's ABC9 exits without a message on designs of a few thousand cells;
``rtl/synth.py``). nextpnr writes a JSON report; the build's report takes its cell use and
its fmax for the array's clock from there.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from rtl.synth import KEEP_REPLICAS_SCRIPT, SYNTH_SCRIPTS, setup_yowasp_env
from rtl.spram import spram_words
from rtl.uart import divisor_for
from rtl.uart_device import UARTDevice

from sim.boards import core_config, word_trits

from . import PLACERS, ROUTERS, board as board_def
from .floorplan import DIES
from .pll import PLLS
from .top import BoardTop, device_for

#: nextpnr cell types: (LUTs, flip-flops, block RAM, multipliers) per family. An iCE40 logic
#: cell holds a LUT4, a flip-flop and a carry: nextpnr counts cells (``ICESTORM_LC``), and the
#: flip-flops are counted in the synthesized netlist instead (None here).
CELLS = {"ecp5": ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD", "MULT18X18D"),
         "ice40": ("ICESTORM_LC", None, "ICESTORM_RAM", "ICESTORM_DSP")}

#: what each stage of a family's build script leaves behind, in order
STAGES = {
    "ecp5": (("synthesis (yosys)", "top.json"), ("place and route (nextpnr)", "top.config"),
             ("packing (ecppack)", "top.bit")),
    "ice40": (("synthesis (yosys)", "top.json"), ("place and route (nextpnr)", "top.asc"),
              ("packing (icepack)", "top.bin")),
}

#: what place and route (each family's second stage) leaves behind: while it is missing,
#: nextpnr's log says how far it is
PNR_PRODUCTS = {stages[1][1] for stages in STAGES.values()}

#: the project's checkout, whose commit a report names
CHECKOUT = Path(__file__).resolve().parent.parent


def source_commit(checkout: Path = CHECKOUT) -> str | None:
    """The commit the design comes from, with "-modified" when its files (anything but
    docs, tests and the sweep tables, which a sweep writes as it goes) differ from it; None
    outside a git checkout. A table built before a change to the core says so."""
    def git(*args):
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True,
                              text=True, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                      ":(exclude)docs", ":(exclude)tests", ":(exclude)boards/sweeps",
                      ":(exclude)*.md")
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-modified" if changed else "")


class BuildFailed(RuntimeError):
    """A tool failed; the message names the log to read."""


def build(name: str, *, rows: int | None = None, cols: int | None = None,
          freq_mhz: float | None = None, out: Path | str = "build/boards",
          weight_words: int | None = None, baud: int | None = None,
          placer: str | None = None, router: str | None = None, engine: str | None = None,
          seed: int | None = None, progress=print) -> dict:
    """Build board ``name``; write the bitstream and ``report.json`` into ``out``; return the
    report. Array shape, frequency, UART rate, weight memory, nextpnr's placer, router and
    seed, and the engine default to the board's (``boards.BOARDS``): ``engine="tree"`` builds
    the core with the adder-tree engine, ``rows`` its k and ``cols`` its lanes
    (``rtl.core.DeviceCore``), ``"array"`` with the PE array."""
    b = board_def(name)
    engine = engine or b.engine
    if weight_words is not None and weight_words < 1:
        raise ValueError(f"weight_words must be at least 1, not {weight_words}")
    placer, router = placer or b.placer, router or b.router
    seed = b.seed if seed is None else seed
    if placer not in PLACERS:
        raise ValueError(f"placer must be one of {', '.join(PLACERS)}, not {placer!r}")
    if router not in ROUTERS:
        raise ValueError(f"router must be one of {', '.join(ROUTERS)}, not {router!r}")
    source = source_commit()            # now: the build elaborates the files as they are now
    if baud is not None:
        b = dataclasses.replace(b, baud=baud)
    rows = rows or b.rows
    cols = cols or b.cols
    # A UART rate the clock cannot make is refused here, before anything runs.
    platform, pll, core, divisor = _board_parts(b, rows, cols, freq_mhz, weight_words, engine)
    top = BoardTop(pll, divisor, core, pll_from_pad=b.pll_from_pad)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    setup_yowasp_env()
    synth = SYNTH_SCRIPTS[b.family].split("; ")
    # platform.build's script runs "synth_<family> {synth_opts} -top top": stop it before LUT
    # mapping, then map with classic ABC and finish, as rtl.synth does; before it, register
    # copies are marked to stay apart (rtl.fanout), as rtl.synth does too.
    plan = platform.build(
        top, name="top", build_dir=str(out), do_build=False,
        script_after_read=KEEP_REPLICAS_SCRIPT,
        synth_opts=synth[0].split("-top {top} ", 1)[1],
        script_after_synth="; ".join(synth[1:]).format(top="top"),
        # pnr.json is relative: WASI sees only the cwd
        nextpnr_opts=f"--report pnr.json --timing-allow-fail --placer {placer} --router {router}"
                     + ("" if seed is None else f" --seed {seed}"))
    shape = {"tree": f"adder trees of {rows} for {cols} outputs",
             "serial": f"digit-serial adder trees of {rows} for {cols} outputs"}.get(
                 engine, f"{rows}x{cols} array")
    progress(f"{name}: {shape} ({rows * cols} PEs) at {pll.f_out / 1e6:g} MHz, "
             f"UART {b.baud} baud, nextpnr's {placer} placer and {router}"
             f"{'' if seed is None else f', seed {seed}'}, building in {out}")
    t0 = time.perf_counter()
    plan.extract(str(out))
    die = DIES.get(platform.device) if engine == "tree" else None
    if die:
        _add_floorplan_step(out, lanes=cols, die=die)
        progress(f"{name}: the lanes' block RAMs are pinned in lane order before place and "
                 f"route (boards.floorplan)")
    stages = STAGES[b.family]
    returncode = _run_with_progress(out, progress, name, stages)
    seconds = time.perf_counter() - t0
    bitstream = out / stages[-1][1]
    if returncode != 0 or not bitstream.exists():
        raise BuildFailed(f"{name}: the build failed after {seconds:.0f} s; see "
                          f"{out / 'build.log'} and {out / 'top.tim'}")
    report = _report(name, b, rows, cols, engine, core["weight_words"], pll.f_out, out,
                     bitstream, seconds, source)
    report.update(placer=placer, router=router, seed=seed, engine=engine, floorplan=bool(die),
                  control=core["control"])
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _add_floorplan_step(out: Path, *, lanes: int, die: str) -> None:
    """Run ``boards.floorplan`` on the synthesized netlist before nextpnr reads it: a line
    after yosys' in the build script, with this interpreter (its packages are the build's)."""
    script = out / "build_top.sh"
    lines = script.read_text().splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if "top.ys" in line), None)
    if at is None:
        raise BuildFailed(f"{script}: no yosys step (top.ys) to put the floorplan after")
    lines.insert(at + 1, f"{shlex.quote(sys.executable)} -m boards.floorplan top.json "
                         f"--lanes {lanes} --die {die}\n")
    script.write_text("".join(lines))


def _board_parts(b, rows: int, cols: int, freq_mhz: float | None, weight_words: int | None,
                 engine: str = "array"):
    """The platform, the PLL setting, the core's parameters and the UART's divisor of a build
    of board ``b`` (``divisor_for`` refuses a rate the clock cannot make)."""
    platform = b.platform()
    pll = PLLS[b.family](platform.default_clk_frequency, (freq_mhz or b.freq_mhz) * 1e6)
    if weight_words is None:
        weight_words = b.weight_words
        if b.family == "ice40" and (rows, cols) != (b.rows, b.cols):
            # Another shape, the same SPRAMs: as many words of its width as they hold.
            weight_words = spram_words(2 * word_trits(engine, rows, cols))
    core = core_config(rows, cols, weight_words, b.family, engine)
    return platform, pll, core, divisor_for(pll.f_out, b.baud)


def board_device(name: str) -> UARTDevice:
    """The device (core and UART) inside board ``name``'s default build, without the board's
    pins and PLL: what ``rtl.synth`` can synthesize by itself (``python -m bench --only
    breakdown``)."""
    b = board_def(name)
    _, pll, core, divisor = _board_parts(b, b.rows, b.cols, None, None, b.engine)
    return device_for(pll, divisor, core)


#: seconds between "still running" lines
PROGRESS_EVERY = 60

# Lines of nextpnr's log (``--log top.tim``) that say how far place and route has come.
_HEAP = re.compile(r"at iteration #(\d+), type ")                 # HeAP's analytic placement
_ANNEAL = re.compile(r"at iteration #(\d+): temp = ")             # its annealing refinement
_STATIC = re.compile(r"\biter=(\d+) steplen=")                     # the electrostatic placer
_ESTIMATE = re.compile(r"Max frequency for clock '[^']*': ([\d.]+) MHz \((?:PASS|FAIL) at ([\d.]+)")
_ARCS = re.compile(r"Routing (\d+) arcs\.")
_ROUTER1 = re.compile(r"^Info:\s+\d+ \|\s+\d+\s+\d+ \|\s+\d+\s+\d+ \|\s+(\d+)\|")  # arcs left
_ROUTER2 = re.compile(r"\biter=(\d+) wires=\d+ overused=(\d+)")


def pnr_status(log: str) -> str | None:
    """Where place and route stands, from nextpnr's log so far: the placer's iteration, then
    the router's arcs still to route (router1) or wires still overused (router2), with the
    placement's clock estimate. None before the log says anything of the kind."""
    status = estimate = arcs = None
    for line in log.splitlines():
        if m := _HEAP.search(line):
            status = f"placing (analytic placement, iteration {m[1]})"
        elif m := _ANNEAL.search(line):
            status = f"placing (annealing, iteration {m[1]})"
        elif m := _STATIC.search(line):
            status = f"placing (electrostatic placement, iteration {m[1]})"
        elif (m := _ESTIMATE.search(line)) and estimate is None:
            # the first is the placement's estimate; the routed design's comes at the end
            estimate = f"placement estimate {m[1]} MHz against {m[2]}"
        elif (m := _ARCS.search(line)) and int(m[1]):     # router2 ends with "Routing 0 arcs."
            arcs = int(m[1])
            status = f"routing {arcs:,} arcs"
        elif (m := _ROUTER1.search(line)) and arcs:
            status = f"routing, {int(m[1]):,} of {arcs:,} arcs to go"
        elif m := _ROUTER2.search(line):
            status = f"routing, {int(m[2]):,} wires overused after iteration {m[1]}"
        elif "Routing complete." in line:
            status = "routed, timing the result"
    if status and status.startswith("routing") and estimate:
        status += f" ({estimate})"
    return status


def _run_with_progress(out: Path, progress, name: str, stages) -> int:
    """Run the build script, saying which stage it is in (from the files each stage writes)
    and, during long stages, how long it has been running. Its output goes to build.log."""
    for _, product in stages:
        (out / product).unlink(missing_ok=True)       # a previous build's files mislead
    (out / "pnr.json").unlink(missing_ok=True)
    with open(out / "build.log", "w") as log:
        proc = subprocess.Popen(["sh", "build_top.sh"], cwd=out, stdout=log,
                                stderr=subprocess.STDOUT)
        stage, since, said = -1, time.perf_counter(), time.perf_counter()
        while True:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            now = sum(1 for _, product in stages if (out / product).exists())
            if proc.returncode is None and now != stage and now < len(stages):
                stage, since, said = now, time.perf_counter(), time.perf_counter()
                progress(f"{name}: {stages[stage][0]} ...")
            elif proc.returncode is None and time.perf_counter() - said >= PROGRESS_EVERY:
                said = time.perf_counter()
                where = ""
                if stages[stage][1] in PNR_PRODUCTS:
                    try:
                        status = pnr_status((out / "top.tim").read_text(errors="replace"))
                    except FileNotFoundError:
                        status = None
                    where = f": {status}" if status else ""
                progress(f"{name}: still in {stages[stage][0]}, "
                         f"{time.perf_counter() - since:.0f} s so far{where}")
            if proc.returncode is not None:
                return proc.returncode


def _report(name, b, rows, cols, engine, weight_words, f_target, out: Path, bitstream: Path,
            seconds: float, source: str | None) -> dict:
    """``lut4`` counts nextpnr's logic cells: on ECP5 TRELLIS_COMB (LUT4s and halves of carry
    cells, CCU2C), on iCE40 ICESTORM_LC (a LUT4 with its flip-flop and carry). The peak is
    the products the engine does a cycle, a weight-memory word's trits (``word_trits``: the
    serial trees' 128 PEs do a quarter product each a cycle)."""
    pnr = json.loads((out / "pnr.json").read_text())
    luts, ffs, brams, dsps = CELLS[b.family]
    use = pnr.get("utilization", {})

    def used(cell):
        return use.get(cell, {}).get("used", 0), use.get(cell, {}).get("available", 0)

    # One clock domain: the PLL's output (nextpnr names it after the global net, "$glbnet$clk").
    fmax = [v["achieved"] for v in pnr.get("fmax", {}).values()]
    achieved = min(fmax) * 1e6 if fmax else None
    pes = rows * cols
    return {
        "board": name, "fpga": b.family, "rows": rows, "cols": cols, "pes": pes,
        "lut4": used(luts)[0], "lut4_available": used(luts)[1],
        "ff": used(ffs)[0] if ffs else _netlist_ffs(out / "top.json"),
        "ebr": used(brams)[0], "ebr_available": used(brams)[1],
        "spram": used("ICESTORM_SPRAM")[0],
        "dsp": used(dsps)[0],
        "lut4_per_pe": round(used(luts)[0] / pes, 1),
        "target_mhz": round(f_target / 1e6, 3),
        "achieved_mhz": None if achieved is None else round(achieved / 1e6, 2),
        "timing_met": achieved is not None and achieved >= f_target,
        "peak_ternary_macs_per_second": word_trits(engine, rows, cols) * f_target,
        "baud": b.baud,
        "resident_weight_trits": weight_words * word_trits(engine, rows, cols),
        "seconds": round(seconds, 1),
        "source": source,
        "bitstream": str(bitstream.resolve()),
    }


def _netlist_ffs(netlist: Path) -> int:
    """Flip-flops in yosys' iCE40 netlist (SB_DFF* cells), which nextpnr packs into cells."""
    modules = json.loads(netlist.read_text())["modules"]
    return sum(1 for mod in modules.values() for cell in mod.get("cells", {}).values()
               if cell["type"].startswith("SB_DFF"))

